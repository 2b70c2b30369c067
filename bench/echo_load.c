/*
 * echo_load: single-threaded epoll load generator for the echo servers.
 *
 * C connections each keep D messages of S bytes in flight; a message is done
 * when all its bytes came back, then the next one is sent. Every byte is
 * checked against a per-connection pattern. After a warm-up of W seconds,
 * T seconds are measured: requests/s and a log-linear latency histogram.
 * Integrity mode (-i) sends messages of 1 B to 64 KiB written in random split
 * pieces, over sockets with a 4 KiB receive buffer and reads paused now and
 * then (so the server's writes come back partial), then waits for every byte to come back.
 *
 * Run:   echo_load -p 9000 -c 64 -s 64 -d 1 -w 1 -t 5 [-i]
 * Prints one line: RESULT rps=... p50_us=... p99_us=... p999_us=... msgs=...
 *                  total=... mismatches=... lost=... client_cpu_pct=...
 * (msgs: completed in the measured window; total: in the whole run, warm-up
 * and final drain included, for per-request costs sampled outside.)
 * Exits 1 on any mismatch, lost byte, or connection error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_MSG   65536
#define SUB_BITS  4 /* 16 linear sub-buckets per power of two */
#define N_BUCKETS (64 << SUB_BITS)

struct conn {
	int fd;
	uint32_t seed;     /* pattern key */
	uint64_t sent;     /* stream bytes written */
	uint64_t queued;   /* stream bytes of messages started */
	uint64_t received; /* stream bytes read and checked */
	uint64_t *end;     /* ring of D outstanding messages: end offset */
	uint64_t *start;   /* and send time (ns) */
	unsigned head, count;
	uint64_t stall_until; /* integrity: not read before this time (ns), 0 = none */
};

static int depth = 1, integrity;
static size_t msg_bytes = 64;
static uint64_t mismatches, completed, all_done, hist[N_BUCKETS];
static int measuring, sending = 1;
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static struct conn *conns_all; /* for the integrity stalls */
static int nconns_all;
static unsigned char scratch[MAX_MSG];

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Byte k of connection c's stream. */
static inline unsigned char pattern(const struct conn *c, uint64_t k)
{
	uint64_t x = (k + c->seed) * 0x9e3779b97f4a7c15ull;
	return (unsigned char)(x >> 56);
}

static unsigned bucket(uint64_t v)
{
	unsigned e;

	if (v < (1u << SUB_BITS))
		return (unsigned)v;
	e = 63u - (unsigned)__builtin_clzll(v);
	return ((e - SUB_BITS + 1) << SUB_BITS) + (unsigned)((v >> (e - SUB_BITS)) & 15u);
}

/* Midpoint of a bucket, in ns. */
static double bucket_value(unsigned b)
{
	unsigned e, sub;
	double lo, width;

	if (b < (1u << SUB_BITS))
		return b;
	e = (b >> SUB_BITS) + SUB_BITS - 1;
	sub = b & 15u;
	width = (double)(1ull << (e - SUB_BITS));
	lo = (double)(1ull << e) + sub * width;
	return lo + width / 2;
}

static double percentile(double q)
{
	uint64_t total = 0, seen = 0, want;

	for (unsigned b = 0; b < N_BUCKETS; b++)
		total += hist[b];
	if (!total)
		return 0;
	want = (uint64_t)(q * (double)total);
	if (want >= total)
		want = total - 1;
	for (unsigned b = 0; b < N_BUCKETS; b++) {
		seen += hist[b];
		if (seen > want)
			return bucket_value(b) / 1000.0;
	}
	return 0;
}

static size_t next_size(void)
{
	if (!integrity)
		return msg_bytes;
	/* Log-uniform 1 B .. 64 KiB, with both ends hit often. */
	switch (rnd() % 8) {
	case 0:
		return 1;
	case 1:
		return MAX_MSG;
	default:
		return 1 + (size_t)(rnd() % (1ull << (rnd() % 17))) % MAX_MSG;
	}
}

static void fail(const char *what)
{
	fprintf(stderr, "echo_load: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Write what the socket takes of [sent, queued); returns -1 on error. */
static int flush(struct conn *c)
{
	while (c->sent < c->queued) {
		size_t len = (size_t)(c->queued - c->sent);
		ssize_t n;

		if (len > sizeof(scratch))
			len = sizeof(scratch);
		if (integrity && rnd() % 2)
			len = 1 + (size_t)(rnd() % len); /* a split piece */
		for (size_t i = 0; i < len; i++)
			scratch[i] = pattern(c, c->sent + i);
		n = send(c->fd, scratch, len, MSG_NOSIGNAL);
		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		c->sent += (uint64_t)n;
	}
	return 0;
}

static void start_messages(struct conn *c)
{
	while (sending && c->count < (unsigned)depth) {
		unsigned slot = (c->head + c->count) % (unsigned)depth;

		c->queued += next_size();
		c->end[slot] = c->queued;
		c->start[slot] = now_ns();
		c->count++;
	}
}

/* Read and check until EAGAIN; completes messages. Returns -1 on EOF/error. */
static int drain(struct conn *c)
{
	static unsigned char buf[MAX_MSG];

	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);

		if (n == 0) {
			errno = ECONNRESET;
			return -1;
		}
		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != pattern(c, c->received + (uint64_t)i))
				mismatches++;
		c->received += (uint64_t)n;
		if (c->received > c->queued)
			mismatches++; /* more bytes than were sent */
		while (c->count && c->received >= c->end[c->head]) {
			all_done++;
			if (measuring) {
				hist[bucket(now_ns() - c->start[c->head])]++;
				completed++;
			}
			c->head = (c->head + 1) % (unsigned)depth;
			c->count--;
		}
		start_messages(c);
		if (flush(c) < 0)
			return -1;
	}
}

static int connect_one(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons(port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int one = 1, small = 4096, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		fail("socket");
	/* Integrity: a small receive buffer makes the server's writes partial. */
	if (integrity && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) < 0)
		fail("setsockopt");
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		fail("connect");
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
		fail("fcntl");
	return fd;
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
	       ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
}

/* One epoll_wait round; returns -1 (with errno) on a dead connection. */
static int poll_once(int ep, int timeout_ms)
{
	struct epoll_event ev[256];
	int n = epoll_wait(ep, ev, 256, timeout_ms);

	if (n < 0 && errno != EINTR)
		fail("epoll_wait");
	for (int i = 0; i < n; i++) {
		struct conn *c = ev[i].data.ptr;

		/* Integrity: now and then stop reading a connection for 20 ms, so
		 * the server's socket fills and its writes come back partial. */
		if (integrity && !c->stall_until && rnd() % 4 == 0) {
			c->stall_until = now_ns() + 20000000;
			continue;
		}
		if (!c->stall_until && (drain(c) < 0 || flush(c) < 0))
			return -1;
	}
	if (integrity) {
		uint64_t t = now_ns();

		for (int i = 0; i < nconns_all; i++) {
			struct conn *c = &conns_all[i];

			if (c->stall_until && t >= c->stall_until) {
				c->stall_until = 0;
				if (drain(c) < 0 || flush(c) < 0)
					return -1;
			}
		}
	}
	return 0;
}

static uint64_t outstanding(const struct conn *conns, int nconns)
{
	uint64_t left = 0;

	for (int i = 0; i < nconns; i++)
		left += conns[i].queued - conns[i].received;
	return left;
}

int main(int argc, char **argv)
{
	int nconns = 1, opt, ep;
	double warmup = 1, seconds = 5, cpu0, cpu1;
	uint16_t port = 9000;
	struct conn *conns;
	uint64_t t0, t1, deadline;

	while ((opt = getopt(argc, argv, "p:c:s:d:w:t:i")) != -1) {
		switch (opt) {
		case 'p':
			port = (uint16_t)atoi(optarg);
			break;
		case 'c':
			nconns = atoi(optarg);
			break;
		case 's':
			msg_bytes = (size_t)atol(optarg);
			break;
		case 'd':
			depth = atoi(optarg);
			break;
		case 'w':
			warmup = atof(optarg);
			break;
		case 't':
			seconds = atof(optarg);
			break;
		case 'i':
			integrity = 1;
			break;
		default:
			fprintf(stderr,
			        "usage: %s [-p port] [-c conns] [-s bytes] [-d depth] "
			        "[-w warmup_s] [-t seconds] [-i]\n",
			        argv[0]);
			return 2;
		}
	}
	if (nconns < 1 || depth < 1 || msg_bytes < 1 || msg_bytes > MAX_MSG) {
		fprintf(stderr, "echo_load: need -c >= 1, -d >= 1, 1 <= -s <= %d\n", MAX_MSG);
		return 2;
	}
	rng ^= (uint64_t)getpid() * 0x2545f4914f6cdd1dull;
	ep = epoll_create1(EPOLL_CLOEXEC);
	conns = calloc((size_t)nconns, sizeof(*conns));
	if (ep < 0 || !conns)
		fail("setup");
	for (int i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];
		struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};

		c->fd = connect_one(port);
		c->seed = (uint32_t)rnd();
		c->end = calloc((size_t)depth, sizeof(*c->end));
		c->start = calloc((size_t)depth, sizeof(*c->start));
		if (!c->end || !c->start || epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
			fail("setup");
	}
	conns_all = conns;
	nconns_all = nconns;
	for (int i = 0; i < nconns; i++) {
		start_messages(&conns[i]);
		if (flush(&conns[i]) < 0)
			fail("send");
	}
	t0 = now_ns();
	deadline = t0 + (uint64_t)(warmup * 1e9);
	while (now_ns() < deadline)
		if (poll_once(ep, integrity ? 1 : 10) < 0)
			fail("connection");
	measuring = 1;
	cpu0 = cpu_s();
	t0 = now_ns();
	deadline = t0 + (uint64_t)(seconds * 1e9);
	while (now_ns() < deadline)
		if (poll_once(ep, integrity ? 1 : 10) < 0)
			fail("connection");
	t1 = now_ns();
	cpu1 = cpu_s();
	measuring = 0;
	/* Stop sending; every byte sent must come back within 5 s. */
	sending = 0;
	deadline = now_ns() + 5000000000ull;
	while (outstanding(conns, nconns) && now_ns() < deadline)
		if (poll_once(ep, integrity ? 1 : 10) < 0)
			fail("connection");
	uint64_t lost = outstanding(conns, nconns);
	if (lost)
		fprintf(stderr, "echo_load: %llu bytes never came back\n",
		        (unsigned long long)lost);
	printf("RESULT rps=%.0f p50_us=%.1f p99_us=%.1f p999_us=%.1f msgs=%llu total=%llu "
	       "mismatches=%llu lost=%llu client_cpu_pct=%.0f\n",
	       (double)completed * 1e9 / (double)(t1 - t0), percentile(0.50), percentile(0.99),
	       percentile(0.999), (unsigned long long)completed, (unsigned long long)all_done,
	       (unsigned long long)mismatches, (unsigned long long)lost,
	       100.0 * (cpu1 - cpu0) * 1e9 / (double)(t1 - t0));
	for (int i = 0; i < nconns; i++) {
		close(conns[i].fd);
		free(conns[i].end);
		free(conns[i].start);
	}
	free(conns);
	close(ep);
	return mismatches || lost || !completed ? 1 : 0;
}
