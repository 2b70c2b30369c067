/*
 * echo_client: a load client for echo_server, and amio used from a single
 * thread (poller and registrar on the same thread). C connections each send an
 * M-byte message, wait for its echo, check every byte, and send the next.
 * Prints messages/s, p50/p99 round-trip latency and mismatches (must be 0).
 *
 * Run:  ./echo_client [-p port] [-c connections] [-m msg_bytes] [-d seconds]
 * Try:  ./echo_server -p 9000 & ./echo_client -p 9000 -c 64 -m 64 -d 5
 * Exit status: 0 when every byte came back right, 1 otherwise.
 */
#define _GNU_SOURCE
#include <amio.h>
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

#define HIST_US 100000 /* latency histogram: 1 us buckets up to 100 ms */

struct conn {
	int fd;
	int64_t id;
	uint32_t index, seq;
	size_t sent, got; /* bytes of the current message */
	int64_t t0;       /* when the current message was first sent, ns */
};

static size_t msg_bytes = 64;
static uint32_t hist[HIST_US];
static uint64_t messages, mismatches;

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Byte i of message seq on connection index: every echo is checkable. */
static uint8_t pattern(const struct conn *c, size_t i)
{
	return (uint8_t)(c->seq * 31u + c->index * 7u + (uint32_t)i);
}

static int send_more(struct conn *c)
{
	uint8_t buf[65536];

	while (c->sent < msg_bytes) {
		size_t len = msg_bytes - c->sent < sizeof(buf) ? msg_bytes - c->sent : sizeof(buf);
		ssize_t n;

		for (size_t i = 0; i < len; i++)
			buf[i] = pattern(c, c->sent + i);
		n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		c->sent += (size_t)n;
	}
	return 0;
}

static void next_message(struct conn *c)
{
	int64_t us = (now_ns() - c->t0) / 1000;

	hist[us < HIST_US ? us : HIST_US - 1]++;
	messages++;
	c->seq++;
	c->sent = c->got = 0;
	c->t0 = now_ns();
}

/* Edge-triggered: read until EAGAIN, checking each byte against the pattern. */
static int on_ready(struct conn *c, int collect)
{
	uint8_t buf[65536];

	for (;;) {
		ssize_t n;

		if (send_more(c) < 0)
			return -1;
		n = recv(c->fd, buf, sizeof(buf), 0);
		if (n == 0 || (n < 0 && errno != EAGAIN))
			return -1;
		if (n < 0)
			return 0;
		for (ssize_t i = 0; i < n; i++) {
			if (c->got >= c->sent || buf[i] != pattern(c, c->got))
				mismatches++;
			if (++c->got == msg_bytes) {
				if (collect)
					next_message(c);
				else { /* warm-up: keep going, do not count */
					c->seq++;
					c->sent = c->got = 0;
					c->t0 = now_ns();
				}
				if (send_more(c) < 0)
					return -1;
			}
		}
	}
}

static int connect_to(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons(port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	for (int tries = 0; fd >= 0 && tries < 50; tries++) {
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
			return fd;
		}
		usleep(100000); /* the server may still be starting */
	}
	perror("echo_client: connect");
	exit(1);
}

static uint32_t percentile(double q)
{
	uint64_t want = (uint64_t)((double)messages * q), seen = 0;

	for (uint32_t us = 0; us < HIST_US; us++)
		if ((seen += hist[us]) > want)
			return us;
	return HIST_US;
}

int main(int argc, char **argv)
{
	int nconn = 64, seconds = 5, opt, rc;
	uint16_t port = 9000;
	amio_notification n[256];
	amio_registrar *r;
	amio_poller *p;
	struct conn *conns;
	int64_t warm_end, end;

	while ((opt = getopt(argc, argv, "p:c:m:d:")) != -1) {
		if (opt == 'p')
			port = (uint16_t)atoi(optarg);
		else if (opt == 'c')
			nconn = atoi(optarg);
		else if (opt == 'm')
			msg_bytes = (size_t)atol(optarg);
		else if (opt == 'd')
			seconds = atoi(optarg);
		else
			return fprintf(stderr, "usage: %s [-p port] [-c conns] [-m bytes] [-d s]\n",
			               argv[0]),
			       2;
	}
	if (nconn < 1 || msg_bytes < 1 || seconds < 1)
		return fprintf(stderr, "echo_client: bad arguments\n"), 2;
	if ((rc = amio_poller_new(&p, NULL)) < 0 || (rc = amio_registrar_new(p, 0, &r)) < 0)
		return fprintf(stderr, "echo_client: %s\n", amio_strerror(rc)), 1;
	conns = calloc((size_t)nconn, sizeof(*conns));
	for (int i = 0; i < nconn; i++) {
		struct conn *c = &conns[i];

		c->fd = connect_to(port);
		c->index = (uint32_t)i;
		c->id = amio_register(r, c->fd, AMIO_BOTH, c);
		if (c->id < 0)
			return fprintf(stderr, "echo_client: %s\n", amio_strerror((int)c->id)), 1;
		c->t0 = now_ns();
	}
	/* 1 s of warm-up, then the measured window. */
	warm_end = now_ns() + 1000000000;
	end = warm_end + (int64_t)seconds * 1000000000;
	while (now_ns() < end) {
		int collect = now_ns() >= warm_end;

		rc = amio_poller_wait(p, n, 256, 100);
		if (rc < 0)
			return fprintf(stderr, "echo_client: wait: %s\n", amio_strerror(rc)), 1;
		for (int i = 0; i < rc; i++)
			if (on_ready(n[i].data, collect) < 0) {
				fprintf(stderr, "echo_client: connection lost\n");
				mismatches++;
				end = 0;
			}
	}
	for (int i = 0; i < nconn; i++) {
		/* Same thread as the poller: a full queue drains by polling. */
		while (amio_deregister(r, (uint64_t)conns[i].id) == -EAGAIN)
			amio_poller_wait(p, n, 256, 0);
		close(conns[i].fd);
	}
	amio_registrar_free(r);
	amio_poller_free(p);
	free(conns);
	printf("echo_client: %d connections, %zu-byte messages, %d s: %.0f messages/s, "
	       "p50 %u us, p99 %u us, mismatches %llu\n",
	       nconn, msg_bytes, seconds, (double)messages / seconds, percentile(0.50),
	       percentile(0.99), (unsigned long long)mismatches);
	return mismatches == 0 && messages > 0 ? 0 : 1;
}
