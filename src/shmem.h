/*-------------------------------------------------------------------------
 * shmem.h
 *	  gdprcrm's shared memory (shmem.c).
 *-------------------------------------------------------------------------
 */
#ifndef GDPRCRM_SHMEM_H
#define GDPRCRM_SHMEM_H

extern void shmem_init(void);
extern uint64 shmem_key_destroy_epoch(void);
extern void shmem_advance_key_destroy_epoch(void);
extern bool shmem_available(void);
extern uint64 shmem_state_seq(void);
extern void shmem_publish_state_changes(const int64 *subjects, int count, Oid db);
extern int64 *shmem_state_changes(uint64 after, uint64 upto, Oid db, int *count);
extern void shmem_await_changes(TransactionId xid, Oid db, bool keys_destroyed,
								const int64 *subjects, int count);
extern bool shmem_changes_awaiting(void);
extern void shmem_settle_awaited(uint64 upto);

/* A state change that stands for every subject: reload them all. */
#define SHMEM_ALL_SUBJECTS PG_INT64_MIN

#endif							/* GDPRCRM_SHMEM_H */
