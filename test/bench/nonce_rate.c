/*-------------------------------------------------------------------------
 * nonce_rate.c
 *	  Nonces per second from the kernel, from libsodium and from csprng.c.
 *
 * Every encrypted value needs a fresh nonce, so the cost of drawing one is
 * paid on every INSERT and UPDATE of a protected column.  This program
 * draws nonces of 24 bytes (XChaCha20) and 12 bytes (AES-GCM) in a tight
 * loop and reports, side by side in one run:
 *
 *	  getrandom(2)       one raw system call per nonce;
 *	  randombytes_buf    libsodium's default generator, which on Linux is
 *	                     also one getrandom(2) call per request;
 *	  csprng_fill        our user-space fast key erasure generator.
 *
 * Each method runs for a fixed number of nonces (default 5,000,000, or
 * argv[1]) timed with CLOCK_MONOTONIC.  Every nonce is folded into a
 * checksum that is printed at the end, so the compiler cannot drop the
 * work.  The ratio column compares each rate with getrandom(2) at the same
 * nonce size.
 *
 * Speed is worthless if forked backends share nonces, so the program also
 * draws from csprng_fill, forks, and checks that parent and child then
 * draw different nonces, as a postmaster and its backends would.  It
 * prints "fork check: ok" or exits with status 1.
 *
 * Build and run with test/bench/nonces.sh.
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "csprng.h"

/* The one PostgreSQL global csprng.c reads; a backend sets it at start. */
extern int	MyProcPid;
int			MyProcPid;

#define DEFAULT_COUNT	5000000L
#define WARMUP_COUNT	10000L
#define MAX_NONCE		24

typedef void (*nonce_fn) (unsigned char *buf, size_t len);

typedef struct Method
{
	const char *name;
	size_t		len;			/* nonce size in bytes */
	nonce_fn	fn;
	double		seconds;		/* measured */
} Method;

/* XOR of every nonce drawn, printed at the end. */
static unsigned char checksum[MAX_NONCE];

static void
draw_getrandom(unsigned char *buf, size_t len)
{
	size_t		done = 0;

	while (done < len)
	{
		ssize_t		n = getrandom(buf + done, len - done, 0);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			perror("getrandom");
			exit(1);
		}
		done += (size_t) n;
	}
}

static void
draw_sodium(unsigned char *buf, size_t len)
{
	randombytes_buf(buf, len);
}

static void
draw_csprng(unsigned char *buf, size_t len)
{
	csprng_fill(buf, len);
}

static double
now_seconds(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
	{
		perror("clock_gettime");
		exit(1);
	}
	return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/*
 * run_method
 *	  Draw count nonces with m->fn and return the elapsed seconds.
 */
static double
run_method(const Method *m, long count)
{
	unsigned char buf[MAX_NONCE];
	double		start;
	long		i;
	size_t		j;

	for (i = 0; i < WARMUP_COUNT; i++)
		m->fn(buf, m->len);

	start = now_seconds();
	for (i = 0; i < count; i++)
	{
		m->fn(buf, m->len);
		for (j = 0; j < m->len; j++)
			checksum[j] ^= buf[j];
	}
	return now_seconds() - start;
}

/*
 * fork_check
 *	  Draw in the parent, fork, and have both processes draw again.  With a
 *	  generator that is not fork safe both would get the same bytes.  The
 *	  child sets MyProcPid as a PostgreSQL backend does after fork.
 */
static bool
fork_check(void)
{
	unsigned char before[MAX_NONCE];
	unsigned char parent[MAX_NONCE];
	unsigned char child[MAX_NONCE];
	int			fds[2];
	pid_t		pid;
	int			status;
	size_t		got = 0;

	csprng_fill(before, sizeof(before));

	if (pipe(fds) != 0)
	{
		perror("pipe");
		exit(1);
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0)
	{
		perror("fork");
		exit(1);
	}
	if (pid == 0)
	{
		ssize_t		n;

		close(fds[0]);
		MyProcPid = (int) getpid();
		csprng_fill(child, sizeof(child));
		n = write(fds[1], child, sizeof(child));
		_exit(n == (ssize_t) sizeof(child) ? 0 : 1);
	}

	close(fds[1]);
	csprng_fill(parent, sizeof(parent));
	while (got < sizeof(child))
	{
		ssize_t		n = read(fds[0], child + got, sizeof(child) - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t) n;
	}
	close(fds[0]);
	if (waitpid(pid, &status, 0) != pid ||
		!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
		got != sizeof(child))
	{
		fprintf(stderr, "fork check: child failed\n");
		return false;
	}

	return memcmp(parent, child, sizeof(child)) != 0 &&
		memcmp(before, parent, sizeof(parent)) != 0 &&
		memcmp(before, child, sizeof(child)) != 0;
}

int
main(int argc, char **argv)
{
	Method		methods[] = {
		{"getrandom(2)", 24, draw_getrandom, 0},
		{"randombytes_buf", 24, draw_sodium, 0},
		{"csprng_fill", 24, draw_csprng, 0},
		{"getrandom(2)", 12, draw_getrandom, 0},
		{"csprng_fill", 12, draw_csprng, 0},
	};
	int			nmethods = (int) (sizeof(methods) / sizeof(methods[0]));
	long		count = DEFAULT_COUNT;
	int			i;
	size_t		j;
	uint64_t	sum = 0;

	if (argc > 2)
	{
		fprintf(stderr, "usage: %s [count]\n", argv[0]);
		return 2;
	}
	if (argc == 2)
	{
		char	   *end;

		errno = 0;
		count = strtol(argv[1], &end, 10);
		if (errno != 0 || *argv[1] == '\0' || *end != '\0' || count <= 0)
		{
			fprintf(stderr, "%s: count must be a positive integer: \"%s\"\n",
					argv[0], argv[1]);
			return 2;
		}
	}

	MyProcPid = (int) getpid();
	if (sodium_init() < 0)
	{
		fprintf(stderr, "%s: sodium_init failed\n", argv[0]);
		return 1;
	}

	for (i = 0; i < nmethods; i++)
		methods[i].seconds = run_method(&methods[i], count);

	printf("%ld nonces per method\n\n", count);
	printf("%-18s %5s %14s %10s %14s\n",
		   "method", "bytes", "nonces/s", "ns/nonce", "vs getrandom");
	printf("%-18s %5s %14s %10s %14s\n",
		   "------------------", "-----", "--------------", "----------",
		   "--------------");
	for (i = 0; i < nmethods; i++)
	{
		const Method *m = &methods[i];
		double		base = 0;
		int			k;

		/* the getrandom(2) row of the same nonce size */
		for (k = 0; k < nmethods; k++)
			if (methods[k].fn == draw_getrandom && methods[k].len == m->len)
				base = methods[k].seconds;

		printf("%-18s %5zu %14.0f %10.1f %13.2fx\n",
			   m->name, m->len,
			   (double) count / m->seconds,
			   m->seconds * 1e9 / (double) count,
			   base / m->seconds);
	}
	printf("\n");

	if (!fork_check())
	{
		printf("fork check: FAILED (a nonce repeated across fork)\n");
		return 1;
	}
	printf("fork check: ok\n");

	for (j = 0; j < sizeof(checksum); j++)
		sum = (sum << 8 | sum >> 56) ^ checksum[j];
	printf("checksum: %016" PRIx64 "\n", sum);

	return 0;
}
