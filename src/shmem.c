/*-------------------------------------------------------------------------
 * shmem.c
 *	  gdprcrm's shared memory: what every backend must see at once.
 *
 * The key destruction epoch: each committed transaction that destroyed
 * subject keys advances it; every backend compares it with the value it
 * last saw before using a cached key, and drops its cache when it moved.
 * A read of an atomic counter is the only cost a decrypt pays for this.
 *
 * The state change ring: subjects whose consent, objections, restriction
 * or erasure changed, in commit order, each with a sequence number, so
 * that a backend's row filter refreshes exactly those subjects (consent.c).
 * Writers append under an exclusive lock and advance the sequence inside
 * it; a reader reads the sequence without the lock and then copies the
 * entries under a shared lock, so it never sees a number before its entry.
 *
 * Shared memory exists only when gdprcrm is preloaded, which is also the
 * only way keys exist; without it the epoch reads as 0 and never moves.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "compat.h"
#include "shmem.h"

/* Entries kept; a backend more than this many changes behind reloads. */
#define STATE_RING_SIZE 65536

typedef struct StateChange
{
	uint64		seq;
	Oid			db;
	int64		subject;
} StateChange;

typedef struct GdprcrmShared
{
	pg_atomic_uint64 key_destroy_epoch;
	pg_atomic_uint64 state_seq;
	LWLock	   *ring_lock;
	StateChange ring[STATE_RING_SIZE];
} GdprcrmShared;

static GdprcrmShared *shared = NULL;

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
#ifdef COMPAT_HAS_SHMEM_REQUEST_HOOK
static shmem_request_hook_type prev_shmem_request_hook = NULL;

static void
request_shmem(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(GdprcrmShared)));
	RequestNamedLWLockTranche("gdprcrm", 1);
}
#endif

static void
startup_shmem(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("gdprcrm", sizeof(GdprcrmShared), &found);
	if (!found)
	{
		pg_atomic_init_u64(&shared->key_destroy_epoch, 0);
		pg_atomic_init_u64(&shared->state_seq, 0);
		memset(shared->ring, 0, sizeof(shared->ring));
		shared->ring_lock = &(GetNamedLWLockTranche("gdprcrm"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * shmem_init
 *	  Ask for gdprcrm's shared memory while preloading; nothing otherwise.
 */
void
shmem_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
#ifdef COMPAT_HAS_SHMEM_REQUEST_HOOK
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = request_shmem;
#else
	RequestAddinShmemSpace(MAXALIGN(sizeof(GdprcrmShared)));
	RequestNamedLWLockTranche("gdprcrm", 1);
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = startup_shmem;
}

/*
 * shmem_key_destroy_epoch
 *	  The current key destruction epoch (0 without shared memory).
 */
uint64
shmem_key_destroy_epoch(void)
{
	return shared ? pg_atomic_read_u64(&shared->key_destroy_epoch) : 0;
}

/*
 * shmem_advance_key_destroy_epoch
 *	  Tell every backend that subject keys were destroyed.  Called after
 *	  the destroying transaction committed.
 */
void
shmem_advance_key_destroy_epoch(void)
{
	if (shared)
		pg_atomic_fetch_add_u64(&shared->key_destroy_epoch, 1);
}

/*
 * shmem_available
 *	  Whether gdprcrm's shared memory exists (gdprcrm was preloaded).
 */
bool
shmem_available(void)
{
	return shared != NULL;
}

/*
 * shmem_state_seq
 *	  The sequence number of the last published state change.
 */
uint64
shmem_state_seq(void)
{
	return pg_atomic_read_u64(&shared->state_seq);
}

/*
 * shmem_publish_state_changes
 *	  Append subjects of database db to the ring.  Called after commit.
 */
void
shmem_publish_state_changes(const int64 *subjects, int count, Oid db)
{
	if (shared == NULL)
		return;
	LWLockAcquire(shared->ring_lock, LW_EXCLUSIVE);
	for (int i = 0; i < count; i++)
	{
		uint64		seq = pg_atomic_read_u64(&shared->state_seq) + 1;
		StateChange *c = &shared->ring[seq % STATE_RING_SIZE];

		c->seq = seq;
		c->db = db;
		c->subject = subjects[i];
		pg_atomic_write_u64(&shared->state_seq, seq);
	}
	LWLockRelease(shared->ring_lock);
}

/*
 * shmem_state_changes
 *	  The subjects of database db changed with sequence numbers in
 *	  (after, upto], in a palloc'd array (count in *count); NULL when some
 *	  of them were already overwritten, so the caller must reload.
 */
int64 *
shmem_state_changes(uint64 after, uint64 upto, Oid db, int *count)
{
	int64	   *subjects;
	int			n = 0;

	*count = 0;
	if (upto - after > STATE_RING_SIZE)
		return NULL;
	subjects = palloc(sizeof(int64) * (upto - after));
	LWLockAcquire(shared->ring_lock, LW_SHARED);
	for (uint64 seq = after + 1; seq <= upto; seq++)
	{
		StateChange *c = &shared->ring[seq % STATE_RING_SIZE];

		if (c->seq != seq)
		{
			LWLockRelease(shared->ring_lock);
			pfree(subjects);
			return NULL;
		}
		if (c->db == db)
			subjects[n++] = c->subject;
	}
	LWLockRelease(shared->ring_lock);
	*count = n;
	return subjects;
}
