/*-------------------------------------------------------------------------
 * csprng.c
 *	  Fast, fork-safe random bytes for nonces and data keys.
 *
 * libsodium's default generator makes one getrandom(2) system call per
 * request, which dominates the cost of encrypting a short value.  This is
 * a user-space generator in the "fast key erasure" style: a ChaCha20 key
 * produces a block of output, the first 32 bytes of which replace the key
 * at once, and every byte handed out is wiped from the buffer.  Nothing in
 * the state can reproduce output already given out.
 *
 * Fork safety is the point.  Backends are forked from the postmaster, so
 * any state seeded before the fork would hand identical nonces to every
 * backend.  The state therefore lives in its own mapping, marked
 * MADV_WIPEONFORK where the kernel has it (a child sees it zeroed), and is
 * tied to the process that seeded it: a state whose owner is not MyProcPid
 * is reseeded from getrandom(2) before use.  PostgreSQL sets MyProcPid in
 * every child it forks; for a fork(2) made by other code (a procedural
 * language, another extension), a pthread_atfork child handler forgets the
 * owner too, so no kernel feature is needed for safety.
 *
 * The unread part of the block is the next nonces and keys this process
 * will hand out, and the key every later block: the state is locked in
 * memory where the locked-memory limit allows, so that it is never written
 * to swap, and left out of core dumps.  A failure to lock is reported
 * through a callback (secret_memory.c logs it); the generator works on.
 *
 * This file uses no palloc or ereport so that test/bench can link it.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <sodium.h>

#include "miscadmin.h"

#include "csprng.h"

/*
 * Output produced per ChaCha20 call; the first KEY bytes of each block
 * become the next key.  4 kB amortises the call over about 170 nonces.
 */
#define CSPRNG_BLOCK_BYTES 4096

typedef struct CsprngState
{
	int			owner_pid;		/* process that seeded it; 0 when wiped */
	size_t		unread;			/* bytes at the end of block not yet used */
	unsigned char key[crypto_stream_chacha20_KEYBYTES];
	unsigned char block[CSPRNG_BLOCK_BYTES];
} CsprngState;

static CsprngState *state = NULL;
static bool mapping_failed = false;
static void (*lock_failure_report) (void) = NULL;

/* In a forked child: the inherited state must be reseeded before use. */
static void
forget_owner_in_child(void)
{
	if (state != NULL)
		state->owner_pid = 0;
}

/*
 * state_for_this_process
 *	  The generator state, seeded by this process; NULL if no mapping could
 *	  be made, in which case callers fall back to getrandom(2).
 */
static CsprngState *
state_for_this_process(void)
{
	if (state == NULL)
	{
		void	   *p;

		if (mapping_failed)
			return NULL;
		p = mmap(NULL, sizeof(CsprngState), PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
		{
			mapping_failed = true;
			return NULL;
		}
		(void) pthread_atfork(NULL, NULL, forget_owner_in_child);
#ifdef MADV_WIPEONFORK
		(void) madvise(p, sizeof(CsprngState), MADV_WIPEONFORK);
#endif
#ifdef MADV_DONTDUMP
		(void) madvise(p, sizeof(CsprngState), MADV_DONTDUMP);
#endif
		state = p;
	}

	if (state->owner_pid != MyProcPid || state->owner_pid == 0)
	{
		/*
		 * Once per process: fork(2) does not pass memory locks on, so a
		 * child locks the state again before seeding it.
		 */
		if (mlock(state, sizeof(CsprngState)) != 0 && lock_failure_report != NULL)
			lock_failure_report();
		randombytes_buf(state->key, sizeof(state->key));
		sodium_memzero(state->block, sizeof(state->block));
		state->unread = 0;
		state->owner_pid = MyProcPid;
	}
	return state;
}

/*
 * refill
 *	  Produce the next block and erase the key that produced it.  Each key
 *	  is used for exactly one block, so a fixed nonce is safe.
 */
static void
refill(CsprngState *s)
{
	static const unsigned char nonce[crypto_stream_chacha20_NONCEBYTES];

	crypto_stream_chacha20(s->block, sizeof(s->block), nonce, s->key);
	memcpy(s->key, s->block, sizeof(s->key));
	sodium_memzero(s->block, sizeof(s->key));
	s->unread = sizeof(s->block) - sizeof(s->key);
}

/*
 * csprng_fill
 *	  Fill buf with len cryptographically secure random bytes.  Never fails:
 *	  without a state mapping it asks the kernel directly.
 */
void
csprng_fill(void *buf, size_t len)
{
	unsigned char *out = buf;
	CsprngState *s = state_for_this_process();

	if (s == NULL)
	{
		randombytes_buf(buf, len);
		return;
	}

	while (len > 0)
	{
		unsigned char *from;
		size_t		n;

		if (s->unread == 0)
			refill(s);
		n = Min(len, s->unread);
		from = s->block + sizeof(s->block) - s->unread;
		memcpy(out, from, n);
		sodium_memzero(from, n);
		s->unread -= n;
		out += n;
		len -= n;
	}
}

/*
 * csprng_state_memory
 *	  Where this process's generator state lives, in whole pages, for
 *	  gdprcrm.key_memory(); false when it has none yet.
 */
bool
csprng_state_memory(const void **start, size_t *size)
{
	long		page = sysconf(_SC_PAGESIZE);

	if (state == NULL || state->owner_pid != MyProcPid || page <= 0)
		return false;
	*start = state;
	*size = (sizeof(CsprngState) + page - 1) / page * page;
	return true;
}

/*
 * csprng_on_lock_failure
 *	  Call report (with errno set) whenever the state cannot be locked.
 */
void
csprng_on_lock_failure(void (*report) (void))
{
	lock_failure_report = report;
}
