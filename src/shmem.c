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
 * that a backend refreshes exactly those subjects (subject_state.c).
 * Writers append under an exclusive lock and advance the sequence inside
 * it; a reader reads the sequence without the lock and then copies the
 * entries under a shared lock, so it never sees a number before its entry.
 *
 * Changes awaiting their commit, on a standby: the
 * startup process replays a record of the subjects a transaction changed
 * (announce.c) before the transaction's commit record, so it parks them
 * here with the transaction id.  Once that transaction is known to have
 * committed, and its commit is visible to new snapshots, the subjects are
 * published to the ring and, when keys were destroyed, the epoch advances,
 * exactly as the primary did at commit; when it aborted, they are dropped.
 * Entries are compacted to one per transaction when space runs short.
 * AWAIT_SIZE transactions can wait at once: more than the primary can run
 * at once with any usual max_connections (a hot standby needs at least the
 * primary's); beyond that the startup process stops the standby rather
 * than drop an announcement.
 *
 * Shared memory exists only when gdprcrm is preloaded, which is also the
 * only way keys exist; without it the epoch reads as 0 and never moves.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xlogutils.h"
#include "miscadmin.h"
#include "storage/procarray.h"
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

/* Room for changes awaiting commit; at least one per transaction. */
#define AWAIT_SIZE 16384

typedef struct AwaitedChange
{
	TransactionId xid;
	Oid			db;
	bool		keys_destroyed;
	int64		subject;		/* SHMEM_ALL_SUBJECTS: all of them */
} AwaitedChange;

typedef struct GdprcrmShared
{
	pg_atomic_uint64 key_destroy_epoch;
	pg_atomic_uint64 state_seq;
	LWLock	   *ring_lock;
	StateChange ring[STATE_RING_SIZE];
	LWLock	   *await_lock;
	pg_atomic_uint32 await_count;	/* read without the lock as a hint */
	pg_atomic_uint64 settled_upto;	/* replay position last settled for */
	AwaitedChange await[AWAIT_SIZE];
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
	RequestNamedLWLockTranche("gdprcrm", 2);
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
		shared->ring_lock = &(GetNamedLWLockTranche("gdprcrm"))[0].lock;
		shared->await_lock = &(GetNamedLWLockTranche("gdprcrm"))[1].lock;
		pg_atomic_init_u32(&shared->await_count, 0);
		pg_atomic_init_u64(&shared->settled_upto, 0);
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
	RequestNamedLWLockTranche("gdprcrm", 2);
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

/*
 * resolve_awaited
 *	  With await_lock held: publish the changes of transactions that
 *	  committed, drop those of transactions that aborted, keep the rest.
 *	  in_startup: called by the startup process while it replays.  Before
 *	  hot standby is ready, TransactionIdIsInProgress is not reliable there:
 *	  a transaction it has seen commit is visible, one it has seen abort is
 *	  gone, and any other is kept.  Otherwise (and in backends) a
 *	  transaction is over once no snapshot can see it running, and then its
 *	  commit is visible; so one whose primary crashed before its commit
 *	  record is dropped once the standby learns it is not running.
 */
static void
resolve_awaited(bool in_startup)
{
	int			n = (int) pg_atomic_read_u32(&shared->await_count);
	int			kept = 0;
	bool		keys_destroyed = false;

	for (int i = 0; i < n; i++)
	{
		AwaitedChange *c = &shared->await[i];
		bool		committed;

		if (in_startup && standbyState != STANDBY_SNAPSHOT_READY)
		{
			if (TransactionIdDidCommit(c->xid))
				committed = true;
			else if (TransactionIdDidAbort(c->xid))
				committed = false;
			else
			{
				shared->await[kept++] = *c;
				continue;
			}
		}
		else
		{
			if (TransactionIdIsInProgress(c->xid))
			{
				shared->await[kept++] = *c;
				continue;
			}
			committed = TransactionIdDidCommit(c->xid);
		}
		if (committed)
		{
			shmem_publish_state_changes(&c->subject, 1, c->db);
			keys_destroyed |= c->keys_destroyed;
		}
	}
	pg_atomic_write_u32(&shared->await_count, (uint32) kept);
	if (keys_destroyed)
		shmem_advance_key_destroy_epoch();
}

/*
 * compact_awaited
 *	  With await_lock held: one entry per transaction, standing for all
 *	  subjects.  Makes room when a flood of changes awaits commit.
 */
static void
compact_awaited(void)
{
	int			n = (int) pg_atomic_read_u32(&shared->await_count);
	int			kept = 0;

	for (int i = 0; i < n; i++)
	{
		AwaitedChange *c = &shared->await[i];
		int			j;

		for (j = 0; j < kept; j++)
			if (shared->await[j].xid == c->xid && shared->await[j].db == c->db)
				break;
		if (j < kept)
			shared->await[j].keys_destroyed |= c->keys_destroyed;
		else
		{
			shared->await[kept] = *c;
			shared->await[kept].subject = SHMEM_ALL_SUBJECTS;
			kept++;
		}
	}
	pg_atomic_write_u32(&shared->await_count, (uint32) kept);
}

/*
 * shmem_await_changes
 *	  Called by the startup process replaying a record of changes made by
 *	  transaction xid: keep them until that transaction ends (see the file
 *	  header).  First settles what earlier records left.
 */
void
shmem_await_changes(TransactionId xid, Oid db, bool keys_destroyed,
					const int64 *subjects, int count)
{
	int			n;

	if (shared == NULL)
		return;
	LWLockAcquire(shared->await_lock, LW_EXCLUSIVE);
	resolve_awaited(true);
	n = (int) pg_atomic_read_u32(&shared->await_count);
	if (n + count > AWAIT_SIZE)
	{
		compact_awaited();
		n = (int) pg_atomic_read_u32(&shared->await_count);
		count = 1;
		subjects = NULL;
	}
	if (n + count > AWAIT_SIZE)
		elog(PANIC, "gdprcrm: more transactions await commit than there is room for");
	for (int i = 0; i < count; i++)
	{
		AwaitedChange *c = &shared->await[n + i];

		c->xid = xid;
		c->db = db;
		c->keys_destroyed = keys_destroyed;
		c->subject = subjects != NULL ? subjects[i] : SHMEM_ALL_SUBJECTS;
	}
	pg_atomic_write_u32(&shared->await_count, (uint32) (n + count));
	LWLockRelease(shared->await_lock);
}

/*
 * shmem_changes_awaiting
 *	  Whether some replayed changes still await their transaction's end.
 *	  A hint, read without a lock.
 */
bool
shmem_changes_awaiting(void)
{
	return shared != NULL && pg_atomic_read_u32(&shared->await_count) > 0;
}

/*
 * shmem_settle_awaited
 *	  Called by a backend: publish the awaiting changes of transactions
 *	  that have committed and are visible, drop those that aborted.  With
 *	  upto (a replay position read before the call; 0 out of recovery), a
 *	  settling done by any backend for that position or a later one counts:
 *	  one backend settles per advance of replay while the others wait for
 *	  it at most, instead of each of them scanning the entries per row.
 */
void
shmem_settle_awaited(uint64 upto)
{
	if (!shmem_changes_awaiting())
		return;
	if (upto != 0 && pg_atomic_read_u64(&shared->settled_upto) >= upto)
		return;
	LWLockAcquire(shared->await_lock, LW_EXCLUSIVE);
	if (upto == 0 || pg_atomic_read_u64(&shared->settled_upto) < upto)
	{
		resolve_awaited(false);
		if (upto != 0)
			pg_atomic_write_u64(&shared->settled_upto, upto);
	}
	LWLockRelease(shared->await_lock);
}
