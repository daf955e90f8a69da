/*-------------------------------------------------------------------------
 * secret_memory.c
 *	  Memory for unwrapped keys, and gdprcrm.key_memory() to show it.
 *
 * Every unwrapped key gdprcrm holds lives in a region of its own mapping:
 * whole pages between two inaccessible guard pages, so that no overrun of
 * a neighbouring buffer reads into it, marked MADV_DONTDUMP (left out of
 * core dumps) and locked with mlock(2) (never written to swap).  Each
 * region belongs to one area: root keys, database keys, the subject key
 * cache, transient buffers.
 *
 * Two kinds of memory:
 *	- regions (secret_memory_region) last as long as the process: the root
 *	  keys, the database keys, the chunks of the key cache.  Their owners
 *	  zero each key they stop using.
 *	- transient buffers (secret_memory_alloc) belong to a memory context,
 *	  like palloc'd memory: secret_memory_free zeroes and releases one, and
 *	  a reset or deletion of the context zeroes and releases every buffer
 *	  it still owns, so an error between allocation and free leaves no key
 *	  behind.  Buffers of up to one pool slot come from a pool page of this
 *	  process, so that a cache miss makes no system call; larger ones get a
 *	  region each.
 *
 * Locking.  RLIMIT_MEMLOCK bounds the locked bytes of each process: often
 * 8 MiB, on some systems 64 kB.  The root keys must be locked, or the server
 * does not start (keyring.c asks with SECRET_MUST_LOCK).  Any other region
 * that cannot be locked is used unlocked: still out of core dumps, still
 * zeroed, but the kernel may write it to swap.  The first such failure in
 * a process is logged, at LOG (the server log, not the client, which can do
 * nothing about it); later ones are not, so that a full cache does not
 * flood the log.  gdprcrm.key_memory() shows what is locked.
 *
 * Fork.  Backends are forked from the postmaster and must keep its root
 * keys: such regions are SECRET_INHERITED.  fork(2) does not pass memory
 * locks on, so a pthread_atfork child handler locks them again in every
 * child; their pages, read-only, stay shared with the postmaster.  Every
 * other region belongs to one process.  It is marked MADV_WIPEONFORK, so a
 * child made by fork(2) elsewhere (a procedural language, another
 * extension) finds it empty, and the child handler also drops its pages and
 * makes it inaccessible: without MADV_WIPEONFORK (before Linux 4.14) no key
 * reaches the child either, and code in the child still holding a pointer
 * into it faults instead of using a zeroed key.
 *
 * gdprcrm.key_memory() reads the kernel's own account of this process's
 * mappings (/proc/self/smaps), so it shows what the kernel does, not what
 * this file asked for.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <sodium.h>

#include "fmgr.h"
#include "funcapi.h"
#include "port/pg_bitutils.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "csprng.h"
#include "secret_memory.h"

/* One mapping: a guard page, size usable bytes, a guard page. */
typedef struct SecretRegion
{
	unsigned char *start;		/* first usable byte, page aligned */
	size_t		size;			/* usable bytes, whole pages */
	SecretArea	area;
	bool		used;			/* this entry describes a mapping */
	bool		inherited;		/* SECRET_INHERITED */
	bool		orphaned;		/* another process's, copied by fork(2) */
	MemoryContext owner;		/* a transient buffer's context, else NULL */
} SecretRegion;

/* Every region of this process, in ordinary memory: none of it is secret. */
static SecretRegion *regions = NULL;
static int	region_count = 0;	/* entries in use or free */
static int	region_capacity = 0;
static int	transient_regions = 0;	/* regions with an owner */

/*
 * The pool: one page of slots for transient buffers of one key, so that
 * unwrapping a key costs no system call.  A bitmap, not a stack, because
 * buffers are freed in any order (a key creation can run SQL that unwraps
 * other keys).
 */
#define POOL_SLOT_BYTES 64
#define POOL_SLOTS		64
static int	pool_region = -1;	/* index into regions, or -1 */
static uint64 pool_used = 0;	/* bit i: slot i is allocated */
static MemoryContext pool_owner[POOL_SLOTS];

/*
 * Memory contexts that carry our reset callback.  One callback per context,
 * however many buffers it owns, so that a loop of allocations in a context
 * that is not reset does not pile up callbacks.  Each watch is allocated in
 * its context and unlinked by its own callback.
 */
typedef struct ContextWatch
{
	MemoryContextCallback callback;
	MemoryContext context;
	struct ContextWatch *next;
} ContextWatch;

static ContextWatch *watches = NULL;

static size_t page_size = 0;
static bool lock_failure_logged = false;

static const char *const area_names[SECRET_AREA_COUNT] = {
	[SECRET_AREA_ROOT_KEYS] = "root keys",
	[SECRET_AREA_DATABASE_KEYS] = "database keys",
	[SECRET_AREA_KEY_CACHE] = "subject key cache",
	[SECRET_AREA_TRANSIENT] = "transient buffers",
	[SECRET_AREA_GENERATOR] = "random generator",
};

/*
 * child_after_fork
 *	  pthread_atfork child handler.  Runs in every child of fork(2): each
 *	  backend the postmaster starts, and any fork(2) made inside a backend.
 *	  System calls only; failures leave a region as the kernel made it, and
 *	  gdprcrm.key_memory() shows that.
 */
static void
child_after_fork(void)
{
	lock_failure_logged = false;

	for (int i = 0; i < region_count; i++)
	{
		SecretRegion *r = &regions[i];

		if (!r->used || r->orphaned)
			continue;
		if (r->inherited)
		{
			(void) mlock(r->start, r->size);
			continue;
		}
		/* The postmaster's empty pool: nothing can point into it. */
		if (i == pool_region && pool_used == 0)
		{
			(void) munmap(r->start - page_size, r->size + 2 * page_size);
			r->used = false;
			continue;
		}
		(void) madvise(r->start, r->size, MADV_DONTNEED);
		(void) mprotect(r->start, r->size, PROT_NONE);
		r->orphaned = true;
	}
	pool_region = -1;
	pool_used = 0;
	memset(pool_owner, 0, sizeof(pool_owner));
	transient_regions = 0;
}

/*
 * prepare
 *	  Once per process tree: the page size and the fork handler.
 */
static void
prepare(void)
{
	long		n;

	if (page_size != 0)
		return;
	n = sysconf(_SC_PAGESIZE);
	if (n <= 0 || POOL_SLOTS * POOL_SLOT_BYTES > n)
		elog(ERROR, "unexpected page size %ld", n);
	if (pthread_atfork(NULL, NULL, child_after_fork) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Could not register the fork handler of gdprcrm key memory.")));
	page_size = (size_t) n;
}

/*
 * free_entry
 *	  Index of an unused registry entry, growing the registry if needed.
 *	  Called before mapping, so that running out of memory here leaves no
 *	  mapping unrecorded.
 */
static int
free_entry(void)
{
	for (int i = 0; i < region_count; i++)
		if (!regions[i].used)
			return i;
	if (region_count == region_capacity)
	{
		int			capacity = Max(16, region_capacity * 2);

		regions = regions == NULL ?
			MemoryContextAlloc(TopMemoryContext, capacity * sizeof(SecretRegion)) :
			repalloc(regions, capacity * sizeof(SecretRegion));
		region_capacity = capacity;
	}
	regions[region_count].used = false;
	return region_count++;
}

/*
 * report_lock_failure
 *	  Log the first failure to lock key memory in this process.  No address,
 *	  size or content of any key in it; errno is the failure.  The statement
 *	  and context are hidden: the statement succeeds, and its text, which
 *	  may hold personal data as literals, would otherwise be logged with
 *	  this line (LOG counts as more severe than ERROR for
 *	  log_min_error_statement).
 */
static void
report_lock_failure(void)
{
	if (lock_failure_logged)
		return;
	lock_failure_logged = true;
	ereport(LOG,
			(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
			 errmsg("could not lock gdprcrm key memory: %m"),
			 errdetail("Keys in this process stay out of core dumps and are zeroed when freed, but may be written to swap. This is logged once per process."),
			 errhint("Raise the locked-memory limit of the server (LimitMEMLOCK for systemd, ulimit -l) to at least 64 kB plus 32 bytes for each key of gdprcrm.key_cache_size, or lower that setting."),
			 errhidestmt(true),
			 errhidecontext(true)));
}

/*
 * secret_memory_init
 *	  At library load: the random generator, which maps and locks its own
 *	  state (csprng.c cannot log), reports a failure to lock it here.
 */
void
secret_memory_init(void)
{
	csprng_on_lock_failure(report_lock_failure);
}

/*
 * map_region
 *	  Map, guard, dump-exclude and lock a region of at least size bytes, and
 *	  record it.  Returns its registry index; -1 with errno set when
 *	  must_lock and it could not be locked (nothing is left mapped).  Errors
 *	  when no memory can be mapped.
 */
static int
map_region(SecretArea area, size_t size, bool inherited, bool must_lock)
{
	int			entry = free_entry();
	size_t		usable = ((size + page_size - 1) / page_size) * page_size;
	size_t		total = usable + 2 * page_size;
	unsigned char *base;
	SecretRegion *r;
	bool		locked;
	int			lock_errno;

	base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Could not map %zu bytes of gdprcrm key memory: %m.",
						   usable)));
	if (mprotect(base + page_size, usable, PROT_READ | PROT_WRITE) != 0)
	{
		int			saved = errno;

		(void) munmap(base, total);
		errno = saved;
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("Could not make gdprcrm key memory writable: %m.")));
	}
#ifdef MADV_DONTDUMP
	(void) madvise(base, total, MADV_DONTDUMP);
#endif
#ifdef MADV_WIPEONFORK
	if (!inherited)
		(void) madvise(base + page_size, usable, MADV_WIPEONFORK);
#endif
	locked = mlock(base + page_size, usable) == 0;
	lock_errno = errno;
	if (!locked && must_lock)
	{
		(void) munmap(base, total);
		errno = lock_errno;
		return -1;
	}

	r = &regions[entry];
	r->start = base + page_size;
	r->size = usable;
	r->area = area;
	r->inherited = inherited;
	r->orphaned = false;
	r->owner = NULL;
	r->used = true;

	/* Recorded first, so that nothing is left unrecorded if logging fails. */
	if (!locked)
	{
		errno = lock_errno;
		report_lock_failure();
	}
	return entry;
}

/*
 * unmap_region
 *	  Zero a region and give it back.  Never errors: it runs in memory
 *	  context callbacks, during error recovery too.
 */
static void
unmap_region(int entry)
{
	SecretRegion *r = &regions[entry];

	sodium_memzero(r->start, r->size);
	(void) munmap(r->start - page_size, r->size + 2 * page_size);
	r->used = false;
	if (r->owner != NULL)
		transient_regions--;
	r->owner = NULL;
}

/* The registry entry whose usable bytes contain p, or -1. */
static int
region_of(const void *p)
{
	const unsigned char *c = p;

	for (int i = 0; i < region_count; i++)
		if (regions[i].used && c >= regions[i].start &&
			c < regions[i].start + regions[i].size)
			return i;
	return -1;
}

/*
 * secret_memory_region
 *	  A zeroed region of at least size bytes for keys that live as long as
 *	  the process, in area; dump-excluded, guarded, and locked if the
 *	  locked-memory limit allows (else logged once and used unlocked).
 *	  With SECRET_INHERITED, children of fork(2) keep it and lock it again;
 *	  without, they get none of it.  With SECRET_MUST_LOCK, returns NULL
 *	  with errno set instead of unlocked memory.  Errors when no memory can
 *	  be mapped.  Never freed: the caller zeroes keys it stops using.
 */
void *
secret_memory_region(SecretArea area, size_t size, int flags)
{
	int			entry;

	Assert(area >= 0 && area < SECRET_AREA_COUNT && size > 0);
	prepare();
	entry = map_region(area, size, (flags & SECRET_INHERITED) != 0,
					   (flags & SECRET_MUST_LOCK) != 0);
	return entry < 0 ? NULL : regions[entry].start;
}

/*
 * secret_memory_protect_readonly
 *	  Make a region from secret_memory_region read-only; false with errno
 *	  set on failure.
 */
bool
secret_memory_protect_readonly(void *region)
{
	int			entry = region_of(region);

	if (entry < 0 || regions[entry].start != region)
		elog(ERROR, "gdprcrm key memory to protect is not a region");
	return mprotect(regions[entry].start, regions[entry].size, PROT_READ) == 0;
}

static void
release_slot(int slot)
{
	sodium_memzero(regions[pool_region].start + slot * POOL_SLOT_BYTES,
				   POOL_SLOT_BYTES);
	pool_used &= ~(UINT64CONST(1) << slot);
	pool_owner[slot] = NULL;
}

/*
 * release_context_buffers
 *	  Reset callback: zero and release every transient buffer the context
 *	  still owns, and forget the watch, which the reset frees.
 */
static void
release_context_buffers(void *arg)
{
	ContextWatch *watch = arg;
	MemoryContext context = watch->context;

	for (ContextWatch **w = &watches; *w != NULL; w = &(*w)->next)
		if (*w == watch)
		{
			*w = watch->next;
			break;
		}

	if (pool_region >= 0)
		for (int slot = 0; slot < POOL_SLOTS; slot++)
			if ((pool_used & (UINT64CONST(1) << slot)) != 0 &&
				pool_owner[slot] == context)
				release_slot(slot);
	for (int i = 0; transient_regions > 0 && i < region_count; i++)
		if (regions[i].used && !regions[i].orphaned &&
			regions[i].owner == context)
			unmap_region(i);
}

/* Make sure a reset or deletion of context releases its buffers. */
static void
watch_context(MemoryContext context)
{
	ContextWatch *watch;

	for (watch = watches; watch != NULL; watch = watch->next)
		if (watch->context == context)
			return;
	watch = MemoryContextAlloc(context, sizeof(ContextWatch));
	watch->context = context;
	watch->callback.func = release_context_buffers;
	watch->callback.arg = watch;
	MemoryContextRegisterResetCallback(context, &watch->callback);
	watch->next = watches;
	watches = watch;
}

/*
 * secret_memory_alloc
 *	  A zeroed transient buffer of size bytes for keys, owned by context:
 *	  secret_memory_free or a reset or deletion of context zeroes and
 *	  releases it, whichever comes first.  Dump-excluded and locked like a
 *	  region (a failure to lock is logged once and the buffer used
 *	  unlocked).  Errors when size is 0 or over MaxAllocSize, or when no
 *	  memory can be mapped.
 */
void *
secret_memory_alloc(MemoryContext context, size_t size)
{
	int			entry;

	if (size == 0 || size > MaxAllocSize)
		elog(ERROR, "invalid memory alloc request size %zu", size);
	prepare();
	/* First, so that no buffer can exist that a reset would not release. */
	watch_context(context);

	if (size <= POOL_SLOT_BYTES && pool_used != PG_UINT64_MAX)
	{
		int			slot;

		if (pool_region < 0)
			pool_region = map_region(SECRET_AREA_TRANSIENT,
									 POOL_SLOTS * POOL_SLOT_BYTES,
									 false, false);
		slot = pg_rightmost_one_pos64(~pool_used);
		pool_used |= UINT64CONST(1) << slot;
		pool_owner[slot] = context;
		return regions[pool_region].start + slot * POOL_SLOT_BYTES;
	}

	entry = map_region(SECRET_AREA_TRANSIENT, size, false, false);
	regions[entry].owner = context;
	transient_regions++;
	return regions[entry].start;
}

/*
 * secret_memory_free
 *	  Zero and release a buffer from secret_memory_alloc.  A buffer that a
 *	  fork(2) copied from the parent is left alone: it is inaccessible here.
 */
void
secret_memory_free(void *buffer)
{
	unsigned char *p = buffer;
	int			entry;

	if (p == NULL)
		return;
	if (pool_region >= 0 && p >= regions[pool_region].start &&
		p < regions[pool_region].start + POOL_SLOTS * POOL_SLOT_BYTES)
	{
		int			slot = (p - regions[pool_region].start) / POOL_SLOT_BYTES;

		Assert((pool_used & (UINT64CONST(1) << slot)) != 0);
		release_slot(slot);
		return;
	}
	entry = region_of(p);
	if (entry < 0 || (!regions[entry].orphaned && regions[entry].owner == NULL))
		elog(ERROR, "gdprcrm key memory to free is not a transient buffer");
	if (!regions[entry].orphaned)
		unmap_region(entry);
}

/*
 * What the kernel says of one region: 1 yes, 0 no, -1 it did not say.
 */
typedef struct RegionView
{
	uintptr_t	start;
	uintptr_t	end;
	SecretArea	area;
	bool		seen;
	int			locked;
	int			excluded;
} RegionView;

static int
view_order(const void *a, const void *b)
{
	uintptr_t	x = ((const RegionView *) a)->start;
	uintptr_t	y = ((const RegionView *) b)->start;

	return (x > y) - (x < y);
}

/* Whether a VmFlags line lists the two-letter flag. */
static bool
has_vm_flag(const char *flags, const char *flag)
{
	for (const char *f = flags; *f != '\0'; f++)
		if (f[0] == flag[0] && f[1] == flag[1] &&
			(f == flags || f[-1] == ' ') &&
			(f[2] == ' ' || f[2] == '\n' || f[2] == '\0'))
			return true;
	return false;
}

/*
 * Parse "start-end ..." at the head of a mapping in smaps; start and end
 * are left alone for any other line ("Anonymous:" starts with a hex digit).
 */
static bool
parse_mapping(const char *line, uintptr_t *start, uintptr_t *end)
{
	char	   *after;
	unsigned long long from;
	unsigned long long to;

	if (!isxdigit((unsigned char) line[0]))
		return false;
	from = strtoull(line, &after, 16);
	if (*after != '-')
		return false;
	to = strtoull(after + 1, &after, 16);
	if (*after != ' ')
		return false;
	*start = (uintptr_t) from;
	*end = (uintptr_t) to;
	return true;
}

/*
 * read_kernel_view
 *	  Fill locked and excluded of views (sorted by start) from the VmFlags
 *	  of this process's mappings: "lo" locked, "dd" not dumped.  A region
 *	  counts as locked (excluded) only when every mapping over it is.
 *	  Without /proc or VmFlags (Linux before 3.8) nothing is seen.
 */
static void
read_kernel_view(RegionView *views, int count)
{
	FILE	   *file;
	char		line[1024];
	bool		line_start = true;
	uintptr_t	start = 0;
	uintptr_t	end = 0;
	int			first = 0;

	file = AllocateFile("/proc/self/smaps", "r");
	if (file == NULL)
		return;
	while (fgets(line, sizeof(line), file) != NULL)
	{
		bool		was_line_start = line_start;

		/* A line longer than the buffer: skip its rest. */
		line_start = strchr(line, '\n') != NULL;
		if (!was_line_start || parse_mapping(line, &start, &end))
			continue;
		if (strncmp(line, "VmFlags:", 8) != 0)
			continue;

		/* Mappings come in address order: regions below this one are done. */
		while (first < count && views[first].end <= start)
			first++;
		for (int i = first; i < count && views[i].start < end; i++)
		{
			views[i].seen = true;
			if (!has_vm_flag(line + 8, "lo"))
				views[i].locked = 0;
			if (!has_vm_flag(line + 8, "dd"))
				views[i].excluded = 0;
		}
	}
	FreeFile(file);

	for (int i = 0; i < count; i++)
		if (!views[i].seen)
			views[i].locked = views[i].excluded = -1;
}

typedef struct KeyMemoryRow
{
	SecretArea	area;
	int64		bytes;
	int			locked;
	int			excluded;
} KeyMemoryRow;

/*
 * gdprcrm.key_memory() -> setof (area text, bytes bigint, locked boolean,
 *							   excluded_from_dumps boolean)
 *	  The memory of this backend that holds unwrapped keys, per area and
 *	  state, as the kernel reports it: bytes mapped (guard pages not
 *	  counted), whether locked and whether left out of core dumps (NULL when
 *	  the kernel does not say).  Areas holding no memory have no row.  No
 *	  addresses, no key material.  Not executable by PUBLIC.
 */
PG_FUNCTION_INFO_V1(gdprcrm_key_memory);
Datum
gdprcrm_key_memory(PG_FUNCTION_ARGS)
{
	static const int states[] = {1, 0, -1};
	FuncCallContext *funcctx;
	KeyMemoryRow *rows;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext old;
		TupleDesc	tupdesc;
		RegionView *views;
		int			count = 0;
		int			nrows = 0;
		const void *generator;
		size_t		generator_size;

		funcctx = SRF_FIRSTCALL_INIT();
		old = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		funcctx->tuple_desc = BlessTupleDesc(tupdesc);

		views = palloc0(sizeof(RegionView) * Max(region_count, 1));
		for (int i = 0; i < region_count; i++)
		{
			if (!regions[i].used || regions[i].orphaned)
				continue;
			views[count].start = (uintptr_t) regions[i].start;
			views[count].end = (uintptr_t) regions[i].start + regions[i].size;
			views[count].area = regions[i].area;
			views[count].locked = views[count].excluded = 1;
			count++;
		}
		if (csprng_state_memory(&generator, &generator_size))
		{
			views = repalloc(views, sizeof(RegionView) * (count + 1));
			views[count].start = (uintptr_t) generator;
			views[count].end = (uintptr_t) generator + generator_size;
			views[count].area = SECRET_AREA_GENERATOR;
			views[count].locked = views[count].excluded = 1;
			count++;
		}
		qsort(views, count, sizeof(RegionView), view_order);
		read_kernel_view(views, count);

		rows = palloc0(sizeof(KeyMemoryRow) * SECRET_AREA_COUNT * 9);
		for (int a = 0; a < SECRET_AREA_COUNT; a++)
			for (int l = 0; l < (int) lengthof(states); l++)
				for (int e = 0; e < (int) lengthof(states); e++)
				{
					KeyMemoryRow *row = &rows[nrows];

					row->area = a;
					row->locked = states[l];
					row->excluded = states[e];
					for (int i = 0; i < count; i++)
						if (views[i].area == row->area &&
							views[i].locked == row->locked &&
							views[i].excluded == row->excluded)
							row->bytes += views[i].end - views[i].start;
					if (row->bytes > 0)
						nrows++;
				}
		funcctx->user_fctx = rows;
		funcctx->max_calls = nrows;
		MemoryContextSwitchTo(old);
	}

	funcctx = SRF_PERCALL_SETUP();
	rows = funcctx->user_fctx;
	if (funcctx->call_cntr < funcctx->max_calls)
	{
		KeyMemoryRow *row = &rows[funcctx->call_cntr];
		Datum		values[4];
		bool		nulls[4] = {false, false, row->locked < 0, row->excluded < 0};

		values[0] = CStringGetTextDatum(area_names[row->area]);
		values[1] = Int64GetDatum(row->bytes);
		values[2] = BoolGetDatum(row->locked > 0);
		values[3] = BoolGetDatum(row->excluded > 0);
		SRF_RETURN_NEXT(funcctx,
						HeapTupleGetDatum(heap_form_tuple(funcctx->tuple_desc,
														  values, nulls)));
	}
	SRF_RETURN_DONE(funcctx);
}
