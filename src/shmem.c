/*-------------------------------------------------------------------------
 * shmem.c
 *	  gdprcrm's shared memory: what every backend must see at once.
 *
 * Today that is one counter, the key destruction epoch.  Each committed
 * transaction that destroyed subject keys advances it; every backend
 * compares it with the value it last saw before using a cached key, and
 * drops its cache when it moved.  A read of an atomic counter is the only
 * cost a decrypt pays for this.
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

typedef struct GdprcrmShared
{
	pg_atomic_uint64 key_destroy_epoch;
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
		pg_atomic_init_u64(&shared->key_destroy_epoch, 0);
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
