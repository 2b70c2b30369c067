/* Helpers shared by the framing tests: real socket pairs, a seeded PRNG whose
 * seed is printed, frame encoding, and buffers that end at a PROT_NONE page. */
#ifndef AMIO_TESTS_FRAME_UTIL_H
#define AMIO_TESTS_FRAME_UTIL_H

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "amio/frame.h"

#define FU_HDR 4u

/* ck_assert() reports every passing check to the parent through a pipe (a
 * syscall each): hot loops use this, which costs nothing until it fails. */
#define FU_CHECK(cond, ...)                                                                        \
	do {                                                                                       \
		if (!(cond))                                                                       \
			ck_abort_msg(__VA_ARGS__);                                                 \
	} while (0)

static inline void fu_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	ck_assert_int_ge(fl, 0);
	ck_assert_int_eq(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

/* An AF_UNIX stream pair; sv[0] is non-blocking (the side under test). */
static inline void fu_socketpair(int sv[2])
{
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	fu_set_nonblock(sv[0]);
}

/* A TCP connection on 127.0.0.1: *a is the non-blocking side under test,
 * *b the peer (blocking). sndbuf/rcvbuf > 0 shrink *a's send and *b's receive
 * buffers (the kernel clamps to its minimum) to force short writes. */
static inline void fu_tcp_pair(int *a, int *b, int sndbuf, int rcvbuf)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sa);
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;

	ck_assert_int_ge(lfd, 0);
	if (rcvbuf > 0) /* before listen: inherited by the accepted socket and its window */
		ck_assert_int_eq(setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)),
		                 0);
	ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(lfd, 1), 0);
	ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sa, &sl), 0);
	*a = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(*a, 0);
	if (sndbuf > 0)
		ck_assert_int_eq(setsockopt(*a, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
	ck_assert_int_eq(connect(*a, (struct sockaddr *)&sa, sizeof(sa)), 0);
	*b = accept(lfd, NULL, NULL);
	ck_assert_int_ge(*b, 0);
	close(lfd);
	setsockopt(*a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fu_set_nonblock(*a);
}

static inline void fu_wait(int fd, short events)
{
	struct pollfd p = {.fd = fd, .events = events};

	ck_assert_int_eq(poll(&p, 1, 10000), 1);
}

/* Sends all of buf on fd, waiting on poll when it is non-blocking and full. */
static inline void fu_send_all(int fd, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			fu_wait(fd, POLLOUT);
			continue;
		}
		ck_assert_msg(n > 0, "send: %s", strerror(errno));
		p += n;
		len -= (size_t)n;
	}
}

static inline void fu_put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* xorshift64*: fast, seedable, good enough to pick sizes and bytes. */
static inline uint64_t fu_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* A seed from AMIO_TEST_SEED, else from the clock; printed so a failure
 * can be replayed with AMIO_TEST_SEED=<seed>. */
static inline uint64_t fu_seed(const char *test)
{
	const char *env = getenv("AMIO_TEST_SEED");
	uint64_t seed;

	if (env)
		seed = strtoull(env, NULL, 0);
	else
		seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	if (seed == 0)
		seed = 1;
	printf("%s: seed %llu (AMIO_TEST_SEED to replay)\n", test, (unsigned long long)seed);
	fflush(stdout);
	return seed;
}

/* A stream of n frames with random sizes in [0, max_size] and random bytes. */
struct fu_stream {
	unsigned char *bytes; /* the encoded stream */
	size_t len;
	size_t n;
	size_t *off;  /* payload offset of frame i in bytes */
	size_t *size; /* payload size of frame i */
};

/* Encodes n frames of the given payload sizes (malloc'd; st owns it from
 * now) with random payload bytes. */
static inline void fu_stream_encode(struct fu_stream *st, size_t n, size_t *size, uint64_t *rng)
{
	size_t i, j, pos = 0;

	ck_assert_ptr_nonnull(size);
	st->n = n;
	st->size = size;
	st->off = calloc(n ? n : 1, sizeof(size_t));
	ck_assert_ptr_nonnull(st->off);
	for (i = 0, st->len = 0; i < n; i++)
		st->len += FU_HDR + size[i];
	st->bytes = malloc(st->len ? st->len : 1);
	ck_assert_ptr_nonnull(st->bytes);
	for (i = 0; i < n; i++) {
		fu_put_be32(st->bytes + pos, (uint32_t)size[i]);
		st->off[i] = pos + FU_HDR;
		for (j = 0; j < size[i]; j++)
			st->bytes[pos + FU_HDR + j] = (unsigned char)fu_rand(rng);
		pos += FU_HDR + size[i];
	}
}

/* n frames of random sizes in [0, max_size]. */
static inline void fu_stream_make(struct fu_stream *st, size_t n, size_t max_size, uint64_t *rng)
{
	size_t i, *size = calloc(n ? n : 1, sizeof(size_t));

	ck_assert_ptr_nonnull(size);
	for (i = 0; i < n; i++)
		size[i] = (size_t)(fu_rand(rng) % (max_size + 1));
	fu_stream_encode(st, n, size, rng);
}

/* As fu_stream_make, with as many frames as it takes to reach total bytes. */
static inline void fu_stream_make_total(struct fu_stream *st, size_t total, size_t max_size,
                                        uint64_t *rng)
{
	uint64_t probe = *rng; /* fu_stream_make draws all sizes first: replay them */
	size_t n = 0, len = 0;

	while (len < total) {
		len += FU_HDR + (size_t)(fu_rand(&probe) % (max_size + 1));
		n++;
	}
	fu_stream_make(st, n, max_size, rng);
}

static inline void fu_stream_free(struct fu_stream *st)
{
	free(st->bytes);
	free(st->off);
	free(st->size);
}

/* Asserts that got equals want byte by byte, naming the first difference. */
static inline void fu_assert_bytes(const void *got, size_t got_len, const void *want,
                                   size_t want_len, const char *what, size_t index)
{
	const unsigned char *g = got, *w = want;
	size_t i;

	FU_CHECK(got_len == want_len, "%s %zu: length %zu, want %zu", what, index, got_len,
	         want_len);
	if (want_len == 0 || memcmp(g, w, want_len) == 0)
		return;
	for (i = 0; i < want_len; i++)
		FU_CHECK(g[i] == w[i], "%s %zu: byte %zu is 0x%02x, want 0x%02x", what, index, i,
		         g[i], w[i]);
}

/* Two pages, the second PROT_NONE; returns the first byte of the guard page,
 * so `guard - n` is an n-byte region whose last byte is followed by it. */
static inline unsigned char *fu_guard_alloc(size_t *map_len)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	unsigned char *m =
	    mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(m, MAP_FAILED);
	ck_assert_int_eq(mprotect(m + pg, pg, PROT_NONE), 0);
	*map_len = 2 * pg;
	return m + pg;
}

/* A TCase with a timeout, as every TCase must have. */
static inline TCase *fu_tcase(Suite *s, const char *name, int timeout_s)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, timeout_s);
	suite_add_tcase(s, tc);
	return tc;
}

/* Runs the suite (forking per test); the exit status main() returns. */
static inline int fu_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif /* AMIO_TESTS_FRAME_UTIL_H */
