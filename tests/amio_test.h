/* Shared helpers for the Check suites: real sockets on 127.0.0.1, fd
 * accounting, timing, and the "no io_uring here" skip (exit 77). */
#ifndef AMIO_TEST_H
#define AMIO_TEST_H

#include <check.h>
#include <pthread.h>
/* ck_pr as the library sees it: TSan-visible atomics under TSan. */
#include "../src/ck.h"
#include <stdbool.h>
#include <stdint.h>
#include <dirent.h>
#include <malloc.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "amio.h"

static inline int64_t t_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int t_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the DIR's own fd */
}

static inline void t_nonblock(int fd)
{
	ck_assert_int_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

/* A listening TCP socket on 127.0.0.1 with an ephemeral port. */
static inline int t_listen(uint16_t *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(fd, 1024), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

static inline int t_connect(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons(port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

/* A connected TCP pair over 127.0.0.1: fds[0] client, fds[1] server side,
 * both non-blocking. */
static inline void t_tcp_pair(int fds[2])
{
	uint16_t port;
	int lfd = t_listen(&port);

	fds[0] = t_connect(port);
	do
		fds[1] = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	while (fds[1] < 0 && errno == EAGAIN);
	ck_assert_int_ge(fds[1], 0);
	close(lfd);
	t_nonblock(fds[0]);
}

static inline void t_write_str(int fd, const char *s)
{
	ck_assert_int_eq(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

/* Wait until n notifications arrive or timeout_ms passes; returns the count. */
static inline int t_collect(amio_poller *p, amio_notification *out, int n, int timeout_ms)
{
	int64_t end = t_now_ms() + timeout_ms;
	int got = 0;

	while (got < n) {
		int64_t left = end - t_now_ms();
		int rc;

		if (left <= 0)
			break;
		rc = amio_poller_wait(p, out + got, (size_t)(n - got), (int)left);
		ck_assert_int_ge(rc, 0);
		got += rc;
	}
	return got;
}

/* A poll thread in inbox mode (pthread start routine, arg: the poller):
 * amio_poller_run until amio_poller_stop; Amy-mode notifications that make
 * run return 1 are collected and dropped. Returns run's last result. */
static inline void *t_run_poller(void *arg)
{
	amio_poller *p = arg;
	amio_notification n[16];
	int rc;

	while ((rc = amio_poller_run(p)) == 1)
		if (amio_poller_wait(p, n, 16, 0) < 0)
			break;
	return (void *)(intptr_t)rc;
}

/* Stop a t_run_poller thread and check that run ended cleanly (0). */
static inline void t_stop_poller(amio_poller *p, pthread_t t)
{
	void *rc;

	ck_assert_int_eq(amio_poller_stop(p), 0);
	pthread_join(t, &rc);
	ck_assert_int_eq((int)(intptr_t)rc, 0);
}

/* Iteration counts times AMIO_TEST_SCALE (default 1). The TSan run lowers
 * it: TSan checks interleavings, not volume, and runs 10-50x slower. */
static inline int t_scale(int n)
{
	const char *s = getenv("AMIO_TEST_SCALE");
	double f = s ? strtod(s, NULL) : 1.0;
	int v = (int)(n * f);

	return v > 0 ? v : 1;
}

/* Create a poller, or exit 77 (skipped) where io_uring cannot be set up,
 * unless AMIO_REQUIRE_IO_URING=1 makes that a failure. */
static inline amio_poller *t_poller(const struct amio_poller_config *cfg)
{
	struct amio_poller_config c = {0};
	const char *flags = getenv("AMIO_TEST_POLLER_FLAGS");
	amio_poller *p = NULL;
	int rc;

	/* AMIO_TEST_POLLER_FLAGS runs a whole suite on the fallback paths
	 * (AMIO_POLLER_NO_DEFER_TASKRUN | AMIO_POLLER_NO_RINGLESS_MSG). */
	if (cfg)
		c = *cfg;
	if (flags)
		c.flags |= (uint32_t)strtoul(flags, NULL, 0);
	rc = amio_poller_new(&p, &c);

	ck_assert_msg(rc == 0, "amio_poller_new: %s", amio_strerror(rc));
	return p;
}

static inline void t_require_io_uring(void)
{
	amio_poller *p = NULL;
	const char *req = getenv("AMIO_REQUIRE_IO_URING");
	int rc = amio_poller_new(&p, NULL);

	if (rc == 0) {
		amio_poller_free(p);
		return;
	}
	fprintf(stderr, "io_uring unavailable: %s\n", amio_strerror(rc));
	exit(req && strcmp(req, "1") == 0 ? 1 : 77);
}

/* One row of docs/RELIABILITY.md, printed by the test that measured it:
 *   RELIABILITY|<area>|<what was tried>|<figure>|<result>
 * scripts/reliability.sh runs the tests and turns these lines into the
 * table, so the document only ever holds what a test printed. No '|'
 * inside a field: it separates the columns. */
#define t_report(area, tried, result, ...)                                                         \
	do {                                                                                       \
		printf("RELIABILITY|%s|%s|", (area), (tried));                                     \
		printf(__VA_ARGS__);                                                               \
		printf("|%s\n", (result));                                                         \
		fflush(stdout);                                                                    \
	} while (0)

/* Exact heap accounting: glibc's per-thread caches count freed chunks as in
 * use and threads get arenas mallinfo2() does not see. Re-exec the test
 * once with both off; call first thing in main(). */
static inline void t_exact_heap(char **argv)
{
	if (getenv("GLIBC_TUNABLES"))
		return;
	setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=1", 1);
	execv("/proc/self/exe", argv);
}

/* Bytes of heap in use (after t_exact_heap), or 0 under a sanitizer, whose
 * allocator mallinfo2() does not see (LeakSanitizer checks leaks there). */
static inline size_t t_heap_in_use(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	return 0;
#else
	return mallinfo2().uordblks;
#endif
}

/* Run one suite; returns the process exit code. */
static inline int t_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif /* AMIO_TEST_H */
