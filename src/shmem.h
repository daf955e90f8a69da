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

#endif							/* GDPRCRM_SHMEM_H */
