/*
 * frame_echo_server: echo_server with length-prefixed frames (amio/frame.h).
 * A poll thread runs amio_poller_run(); each worker thread owns an AMIO_INBOX
 * registrar, its own SO_REUSEPORT listener and the connections it accepts.
 * A connection embeds a frame reader and a frame writer and echoes each frame
 * back as a frame. It is registered for AMIO_READ only: write readiness is
 * asked for only while the writer holds queued bytes, and reading pauses until
 * they are sent (backpressure: a peer that does not read cannot grow our queue).
 *
 * Run:  ./frame_echo_server [-p port] [-w workers] [-f max_frame_bytes] [-s sndbuf_bytes]
 * Try:  ./frame_echo_server -p 9001 & ./frame_client -p 9001 -c 64 -d 5; kill -INT %1
 * Ctrl-C (SIGINT) or SIGTERM shuts down cleanly and prints poller statistics.
 */
#define _GNU_SOURCE
#include <amio.h>
#include <amio/frame.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
	struct conn *all;   /* every struct the worker allocated, live or spare */
	struct conn *spare; /* the worker's spares, for the next accept */
	int fd;
	int64_t id; /* 0 while spare; every notification is checked against it */
	int paused; /* the writer holds bytes: registered READ|WRITE, not reading */
	struct amio_frame_reader fr;
	struct amio_frame_writer fw;
};

struct worker {
	struct conn *all, *spares;
	amio_registrar *r;
	amio_poller *p;
	pthread_t thread;
	uint16_t port;
	uint64_t frames, pauses; /* frames echoed; times the writer queued */
};

static atomic_int stopping;      /* set by main on SIGINT/SIGTERM */
static size_t max_frame = 65536; /* -f, bytes */
static size_t max_queued;        /* bytes a writer may hold */
static int sndbuf;               /* -s: SO_SNDBUF bytes, 0 = the kernel's */
#define U(x) ((unsigned long long)(x))

static void die(const char *what, int err)
{
	fprintf(stderr, "frame_echo_server: %s: %s\n", what, amio_strerror(err));
	exit(1);
}

static int listen_on(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons(port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4096) < 0)
		die("listen", -errno);
	return fd;
}

/* A full command queue (-EAGAIN) means the poller is behind: let it run. */
static int set_events(struct worker *w, struct conn *c, uint32_t events)
{
	int rc;

	while ((rc = amio_reregister(w->r, (uint64_t)c->id, events)) == -EAGAIN)
		sched_yield();
	return rc;
}

/* err: why (0 shutdown, 1 EOF, -errno). The struct becomes a spare, freed only
 * when the worker stops waiting: a later notification of this batch, or one
 * already in the inbox, may still point to it, and its stale id says "skip". */
static void conn_close(struct worker *w, struct conn *c, int err)
{
	if (err < 0 && err != -ECONNRESET && err != -EPIPE)
		fprintf(stderr, "frame_echo_server: closing a connection: %s\n",
		        amio_strerror(err));
	/* Deregister first: only then does close() send FIN. */
	while (c->id > 0 && amio_deregister(w->r, (uint64_t)c->id) == -EAGAIN)
		sched_yield();
	close(c->fd);
	amio_frame_writer_destroy(&c->fw);
	amio_frame_reader_destroy(&c->fr);
	c->id = 0;
	c->spare = w->spares;
	w->spares = c;
}

/* Paused (the writer held bytes, AMIO_WRITE came): flush, and resume only once
 * the queue is empty, reading what arrived meanwhile. Then echo the frames
 * already buffered and read until -EAGAIN (edge-triggered), stopping early if
 * the writer queues bytes: frames not yet handed out wait in the reader.
 * Returns 0, 1 at EOF, or -errno. */
static int pump(struct worker *w, struct conn *c)
{
	struct iovec f;
	ssize_t n;
	int r;

	if (c->paused) {
		if ((n = amio_frame_writer_flush(&c->fw, c->fd)) != 0)
			return n < 0 ? (int)n : 0; /* still queued: wait for AMIO_WRITE */
		c->paused = 0;
		if ((r = set_events(w, c, AMIO_READ)) < 0)
			return r;
	}
	for (;;) {
		while ((r = amio_frame_reader_next(&c->fr, &f)) == 1) {
			/* The queue is empty here, so -ENOBUFS cannot happen. */
			n = amio_frame_writer_write(&c->fw, c->fd, f.iov_base, f.iov_len);
			if (n < 0)
				return (int)n;
			w->frames++;
			if (n > 0) {
				w->pauses++;
				c->paused = 1;
				return set_events(w, c, AMIO_READ | AMIO_WRITE);
			}
		}
		if (r < 0)
			return r; /* -EMSGSIZE (over -f) or -EPROTO (truncated at EOF) */
		n = amio_frame_reader_read(&c->fr, c->fd);
		if (n == -EAGAIN)
			return 0;
		if (n <= 0)
			return n == 0 ? 1 : (int)n; /* -ENOBUFS cannot follow next() == 0 */
	}
}

static void accept_all(struct worker *w, int lfd)
{
	int one = 1, fd;

	while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		struct conn *c = w->spares ? w->spares : calloc(1, sizeof(*c));

		if (!c) {
			close(fd);
			continue;
		}
		if (c == w->spares) {
			w->spares = c->spare;
		} else {
			c->all = w->all;
			w->all = c;
		}
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* best effort */
		if (sndbuf) /* small: writes come up short, AMIO_WRITE gets used */
			(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
		c->fd = fd;
		c->paused = 0;
		/* Neither allocates before first use; main ruled out -EINVAL. */
		amio_frame_reader_init(&c->fr, max_frame);
		amio_frame_writer_init(&c->fw, max_queued);
		c->id = amio_register(w->r, fd, AMIO_READ, c);
		if (c->id < 0) /* -EAGAIN: queue full; shed the connection */
			conn_close(w, c, (int)c->id);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	amio_notification n[64];
	int lfd, rc;
	int64_t lid;

	rc = amio_registrar_new(w->p, AMIO_INBOX, &w->r);
	if (rc < 0)
		die("amio_registrar_new", rc);
	lfd = listen_on(w->port);
	lid = amio_register(w->r, lfd, AMIO_READ, NULL);
	if (lid < 0)
		die("amio_register", (int)lid);
	while (!stopping) {
		rc = amio_registrar_wait(w->r, n, 64, 200);
		if (rc < 0)
			die("amio_registrar_wait", rc);
		for (int i = 0; i < rc; i++) {
			struct conn *c = n[i].data;
			int err = 0;

			if (!c) {
				accept_all(w, lfd);
				continue;
			}
			if (c->id != (int64_t)n[i].id)
				continue; /* closed since (the struct may serve another) */
			if (n[i].events & AMIO_ERROR) /* error 0: POLLERR, the peer reset */
				err = n[i].error ? n[i].error : -ECONNRESET;
			else if (n[i].events & (c->paused ? AMIO_WRITE : AMIO_READ | AMIO_HUP))
				err = pump(w, c); /* paused: reading waits (backpressure) */
			if (err)
				conn_close(w, c, err);
		}
	}
	/* No more waits: no stale notification can name a struct now. */
	for (struct conn *c = w->all, *next; c; c = next) {
		next = c->all;
		if (c->id > 0)
			conn_close(w, c, 0);
		free(c);
	}
	while (amio_deregister(w->r, (uint64_t)lid) == -EAGAIN)
		sched_yield();
	close(lfd);
	amio_registrar_free(w->r);
	return NULL;
}

static void *poll_main(void *p)
{
	int rc;

	while ((rc = amio_poller_run(p)) == 1) {
		amio_notification n[16]; /* no Amy-mode ids here: drain anyway */
		amio_poller_wait(p, n, 16, 0);
	}
	if (rc < 0)
		die("amio_poller_run", rc);
	return NULL;
}

int main(int argc, char **argv)
{
	int nworkers = 2, opt, sig, rc;
	uint16_t port = 9001;
	struct amio_poller_stats st;
	uint64_t frames = 0, pauses = 0;
	static struct worker w[64];
	pthread_t poll_thread;
	amio_poller *p;
	sigset_t set;

	while ((opt = getopt(argc, argv, "p:w:f:s:")) != -1) {
		if (opt == 'p')
			port = (uint16_t)atoi(optarg);
		else if (opt == 'w')
			nworkers = atoi(optarg);
		else if (opt == 'f')
			max_frame = strtoul(optarg, NULL, 0);
		else if (opt == 's')
			sndbuf = atoi(optarg);
		else
			return fprintf(stderr,
			               "usage: %s [-p port] [-w workers] [-f bytes] [-s bytes]\n",
			               argv[0]),
			       2;
	}
	if (nworkers < 1 || nworkers > 64 || max_frame > UINT32_MAX || sndbuf < 0)
		return fprintf(stderr, "frame_echo_server: bad arguments\n"), 2;
	/* Frames go only to an empty queue: 4 MiB, or one largest frame. */
	max_queued = max_frame + 4 > (4u << 20) ? max_frame + 4 : (4u << 20);
	/* Signals go to main only, which turns them into a clean shutdown. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	if ((rc = amio_poller_new(&p, NULL)) < 0)
		die("amio_poller_new", rc);
	if ((rc = pthread_create(&poll_thread, NULL, poll_main, p)) != 0)
		die("pthread_create", -rc);
	for (int i = 0; i < nworkers; i++) {
		w[i] = (struct worker){.p = p, .port = port};
		if ((rc = pthread_create(&w[i].thread, NULL, worker_main, &w[i])) != 0)
			die("pthread_create", -rc);
	}
	printf("frame_echo_server: listening on 127.0.0.1:%u with %d workers, frames <= %zu B\n",
	       port, nworkers, max_frame);
	fflush(stdout);
	sigwait(&set, &sig);

	stopping = 1;
	for (int i = nworkers - 1; i >= 0; i--) {
		pthread_join(w[i].thread, NULL);
		frames += w[i].frames;
		pauses += w[i].pauses;
	}
	amio_poller_stop(p);
	pthread_join(poll_thread, NULL);
	amio_poller_stats(p, &st);
	amio_poller_free(p);
	printf("frame_echo_server: %s, echoed %llu frames; the writer queued bytes (AMIO_WRITE "
	       "asked for) %llu times\n",
	       sig == SIGINT ? "SIGINT" : "SIGTERM", U(frames), U(pauses));
	printf("frame_echo_server: io_uring_enter %llu, SQEs %llu, CQEs %llu, wakeups %llu/%llu, "
	       "rearms %llu; %.1f io_uring_enter calls per 1,000 frames\n",
	       U(st.enters), U(st.sqes), U(st.cqes), U(st.wakeups_sent), U(st.wakeups_received),
	       U(st.rearms), frames ? 1000.0 * (double)st.enters / (double)frames : 0.0);
	return 0;
}
