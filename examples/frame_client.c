/*
 * frame_client: a load client for frame_echo_server, on amio from a single
 * thread (poller and registrar on the same thread) with a frame reader and a
 * frame writer per connection. C connections each send a frame, wait for its
 * echo, check its length and every byte, and send the next. Frame sizes are a
 * fixed mix: 40% 0..64 bytes (empty frames included), 40% 1..4096, 20%
 * 0..max. Prints frames/s, MB/s (payload bytes, counted one way), p50/p99
 * round-trip latency and mismatches (wrong frames or lost connections).
 *
 * Run:  ./frame_client [-p port] [-c connections] [-d seconds] [-M max_frame_bytes]
 * Try:  ./frame_echo_server -p 9001 & ./frame_client -p 9001 -c 64 -d 5 -M 65536
 * Exit status: 0 when frames came back and every one was right, 1 otherwise.
 */
#define _GNU_SOURCE
#include <amio.h>
#include <amio/frame.h>
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
#define BATCH   256    /* notifications per amio_poller_wait */

struct conn {
	int fd;
	int64_t id;
	uint32_t index, seq; /* which frame is in flight: its bytes and length */
	size_t len;
	int want_write; /* the writer holds bytes: registered READ|WRITE */
	int64_t t0;     /* when the frame was sent, ns */
	struct amio_frame_reader fr;
	struct amio_frame_writer fw;
};

static amio_registrar *reg;
static size_t max_frame = 65536;
static unsigned char *tx; /* max_frame bytes: the frame being sent */
static uint32_t hist[HIST_US];
static uint64_t frames, bytes, mismatches;

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A well-mixed 64-bit value for frame seq of connection index. */
static uint64_t mix(const struct conn *c)
{
	uint64_t x = ((uint64_t)c->index << 32 | c->seq) * 0x9e3779b97f4a7c15u;

	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9u;
	return x ^ x >> 29;
}

static size_t frame_len(const struct conn *c)
{
	uint64_t x = mix(c), pick = x % 10, r = x >> 8;
	size_t len = pick < 4 ? r % 65 : pick < 8 ? 1 + r % 4096 : r % (max_frame + 1);

	return len < max_frame ? len : max_frame;
}

/* Byte i of the frame in flight; i >> 8 is mixed in so that bytes shifted by
 * a multiple of 256 do not compare equal. */
static unsigned char pattern(uint64_t x, size_t i)
{
	return (unsigned char)((x + i) ^ (i >> 8));
}

static int send_frame(struct conn *c)
{
	uint64_t x = mix(c);
	ssize_t n;

	c->len = frame_len(c);
	for (size_t i = 0; i < c->len; i++)
		tx[i] = pattern(x, i);
	c->t0 = now_ns();
	/* Depth 1: the previous frame is fully sent, the queue is empty. */
	n = amio_frame_writer_write(&c->fw, c->fd, tx, c->len);
	if (n <= 0 || c->want_write)
		return (int)(n < 0 ? n : 0);
	c->want_write = 1;
	return amio_reregister(reg, (uint64_t)c->id, AMIO_READ | AMIO_WRITE);
}

static void check_echo(struct conn *c, const struct iovec *f, int collect)
{
	const unsigned char *b = f->iov_base;
	uint64_t x = mix(c);
	int64_t us = (now_ns() - c->t0) / 1000;
	int bad = f->iov_len != c->len;

	for (size_t i = 0; !bad && i < c->len; i++)
		bad = b[i] != pattern(x, i);
	mismatches += (uint64_t)bad;
	if (collect) {
		hist[us < HIST_US ? us : HIST_US - 1]++;
		frames++;
		bytes += c->len;
	}
}

/* Flush if asked to, then read until -EAGAIN (edge-triggered), checking each
 * echo and sending the next frame. Returns 0, 1 at EOF, or -errno. */
static int on_ready(struct conn *c, const amio_notification *note, int collect)
{
	ssize_t n;
	int r;

	if (note->events & AMIO_ERROR) /* error 0: POLLERR, the server reset */
		return note->error ? note->error : -ECONNRESET;
	if (c->want_write && (note->events & AMIO_WRITE)) {
		n = amio_frame_writer_flush(&c->fw, c->fd);
		if (n < 0)
			return (int)n;
		if (n == 0) {
			c->want_write = 0;
			if ((r = amio_reregister(reg, (uint64_t)c->id, AMIO_READ)) < 0)
				return r;
		}
	}
	for (;;) {
		struct iovec f;

		while ((r = amio_frame_reader_next(&c->fr, &f)) == 1) {
			check_echo(c, &f, collect);
			c->seq++;
			if ((r = send_frame(c)) < 0)
				return r;
		}
		if (r < 0)
			return r;
		n = amio_frame_reader_read(&c->fr, c->fd);
		if (n == -EAGAIN)
			return 0;
		if (n <= 0)
			return n == 0 ? 1 : (int)n;
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
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			if (fcntl(fd, F_SETFL, O_NONBLOCK) == 0)
				return fd;
			break;
		}
		usleep(100000); /* the server may still be starting */
	}
	perror("frame_client: connect");
	exit(1);
}

static uint32_t percentile(double q)
{
	uint64_t want = (uint64_t)((double)frames * q), seen = 0;

	for (uint32_t us = 0; us < HIST_US; us++)
		if ((seen += hist[us]) > want)
			return us;
	return HIST_US;
}

int main(int argc, char **argv)
{
	int nconn = 64, seconds = 5, opt, rc;
	uint16_t port = 9001;
	struct amio_poller_config cfg = {0};
	amio_notification n[BATCH];
	struct conn *conns;
	int64_t warm_end, end;
	amio_poller *p;

	while ((opt = getopt(argc, argv, "p:c:d:M:")) != -1) {
		if (opt == 'p')
			port = (uint16_t)atoi(optarg);
		else if (opt == 'c')
			nconn = atoi(optarg);
		else if (opt == 'd')
			seconds = atoi(optarg);
		else if (opt == 'M')
			max_frame = (size_t)atol(optarg);
		else
			return fprintf(stderr, "usage: %s [-p port] [-c conns] [-d s] [-M bytes]\n",
			               argv[0]),
			       2;
	}
	if (nconn < 1 || nconn > 65536 || seconds < 1 || max_frame > (64u << 20))
		return fprintf(stderr, "frame_client: bad arguments\n"), 2;
	/* Room for the registers, then for two reregisters per notification of a
	 * batch: amio_reregister() can then never say -EAGAIN (queue full). */
	cfg.queue_entries = 4096 + 2 * (uint32_t)nconn;
	if ((rc = amio_poller_new(&p, &cfg)) < 0 || (rc = amio_registrar_new(p, 0, &reg)) < 0)
		return fprintf(stderr, "frame_client: %s\n", amio_strerror(rc)), 1;
	conns = calloc((size_t)nconn, sizeof(*conns));
	tx = malloc(max_frame ? max_frame : 1);
	if (!conns || !tx)
		return fprintf(stderr, "frame_client: out of memory\n"), 1;
	for (int i = 0; i < nconn; i++) {
		struct conn *c = &conns[i];

		c->fd = connect_to(port);
		c->index = (uint32_t)i;
		if (amio_frame_reader_init(&c->fr, max_frame) < 0 ||
		    amio_frame_writer_init(&c->fw, max_frame + 4) < 0)
			return fprintf(stderr, "frame_client: bad -M\n"), 2;
		c->id = amio_register(reg, c->fd, AMIO_READ, c);
		if (c->id < 0 || (rc = send_frame(c)) < 0)
			return fprintf(stderr, "frame_client: %s\n",
			               amio_strerror(c->id < 0 ? (int)c->id : rc)),
			       1;
	}
	/* 1 s of warm-up (checked, not counted), then the measured window. */
	warm_end = now_ns() + 1000000000;
	end = warm_end + (int64_t)seconds * 1000000000;
	while (now_ns() < end) {
		int collect = now_ns() >= warm_end;

		rc = amio_poller_wait(p, n, BATCH, 100);
		if (rc < 0)
			return fprintf(stderr, "frame_client: wait: %s\n", amio_strerror(rc)), 1;
		for (int i = 0; i < rc; i++) {
			int err = on_ready(n[i].data, &n[i], collect);

			if (err) {
				fprintf(stderr, "frame_client: connection lost: %s\n",
				        err == 1 ? "server closed it" : amio_strerror(err));
				mismatches++;
				end = 0;
				break;
			}
		}
	}
	for (int i = nconn - 1; i >= 0; i--) {
		/* Same thread as the poller: a full queue drains by polling. */
		while (amio_deregister(reg, (uint64_t)conns[i].id) == -EAGAIN)
			amio_poller_wait(p, n, BATCH, 0);
		close(conns[i].fd);
		amio_frame_writer_destroy(&conns[i].fw);
		amio_frame_reader_destroy(&conns[i].fr);
	}
	amio_registrar_free(reg);
	amio_poller_free(p);
	free(tx);
	free(conns);
	printf("frame_client: %d connections, frames 0..%zu bytes, %d s: %.0f frames/s, "
	       "%.1f MB/s of payload each way, p50 %u us, p99 %u us, mismatches %llu\n",
	       nconn, max_frame, seconds, (double)frames / seconds, (double)bytes / seconds / 1e6,
	       percentile(0.50), percentile(0.99), (unsigned long long)mismatches);
	return mismatches == 0 && frames > 0 ? 0 : 1;
}
