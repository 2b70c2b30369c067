/*
 * frame_echo_server: echo_server with length-prefixed frames (amio/frame.h).
 * A poll thread runs amio_poller_run(); each worker thread owns an AMIO_INBOX
 * registrar, its own SO_REUSEPORT listener and the connections it accepts.
 * A connection embeds a frame reader and a frame writer and echoes each frame
 * back as a frame. It is registered for AMIO_READ only: write readiness is
 * asked for only while the writer holds queued bytes, and reading pauses until
 * they are sent (backpressure: a peer that does not read cannot grow our queue).
 * Hostile peers are bounded too: a header over -f is refused before its payload
 * is buffered, and connections that make no progress for -i ms are closed (the
 * idle sweep); frame_echo_conns.h keeps the connections and counts why each closed.
 *
 * Run:  ./frame_echo_server [-p port] [-w workers] [-f max_frame_bytes] [-s sndbuf_bytes]
 *                          [-i idle_ms]
 *       -p 0 picks a free port (printed); -i 0 turns the idle timeout off (default 30000).
 * Try:  ./frame_echo_server -p 9001 & ./frame_client -p 9001 -c 64 -d 5; kill -INT %1
 * Ctrl-C (SIGINT) or SIGTERM shuts down cleanly and prints poller statistics
 * and one parseable line: "frame_echo_server: stats accepted=N frames=N idle=N ...".
 */
#define _GNU_SOURCE
#include <amio.h>
#include <amio/frame.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame_echo_conns.h"

struct worker {
	struct conns conns; /* every connection, the spares, the counters */
	amio_registrar *r;
	amio_poller *p;
	pthread_t thread;
	int lfd; /* the listener, created by main */
};

static atomic_int stopping;      /* set by main on SIGINT/SIGTERM */
static size_t max_frame = 65536; /* -f, bytes */
static size_t max_queued;        /* bytes a writer may hold */
static int sndbuf;               /* -s: SO_SNDBUF bytes, 0 = the kernel's */
static uint64_t idle_ms = 30000; /* -i: 0 = no idle timeout */
static uint64_t sweep_ms;        /* the idle sweep's period: idle_ms / 4 */
static char sweep_tag;           /* the notification data of the idle timer */
#define U(x) ((unsigned long long)(x))

static void die(const char *what, int err)
{
	fprintf(stderr, "frame_echo_server: %s: %s\n", what, amio_strerror(err));
	exit(1);
}

/* Port 0: an ephemeral port, stored back into *port for the other workers. */
static int listen_on(uint16_t *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons(*port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4096) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		die("listen", -errno);
	*port = ntohs(a.sin_port);
	return fd;
}

/* A full command queue (-EAGAIN) means the poller is behind: sleep until it
 * has drained it (amio_registrar_wait_room), then retry. */
static int set_events(struct worker *w, struct conn *c, uint32_t events)
{
	int rc;

	while ((rc = amio_reregister(w->r, (uint64_t)c->id, events)) == -EAGAIN)
		(void)amio_registrar_wait_room(w->r, -1);
	return rc;
}

/* why: CONN_SHUTDOWN, CONN_EOF, CONN_IDLE or a -errno. The struct
 * becomes a spare, freed only when the worker stops waiting: a later
 * notification of this batch, or one already in the inbox, may still point
 * to it, and its stale id says "skip". */
static void conn_close(struct worker *w, struct conn *c, int why)
{
	/* Counted, not logged: a flood of hostile peers must not flood stderr. */
	if (conns_count_close(&w->conns, why) == CLOSE_ERROR && why != -ECONNRESET && why != -EPIPE)
		fprintf(stderr, "frame_echo_server: closing a connection: %s\n",
		        amio_strerror(why));
	/* Deregister first: only then does close() send FIN. */
	while (c->id > 0 && amio_deregister(w->r, (uint64_t)c->id) == -EAGAIN)
		(void)amio_registrar_wait_room(w->r, -1);
	close(c->fd);
	conns_put(&w->conns, c);
}

/* Paused (the writer held bytes, AMIO_WRITE came): flush, and resume only once
 * the queue is empty, reading what arrived meanwhile. Then echo the frames
 * already buffered and read until -EAGAIN (edge-triggered), stopping early if
 * the writer queues bytes: frames not yet handed out wait in the reader.
 * Each complete frame in, and each queued echo fully out, is progress for the
 * idle sweep. At EOF (a half-close too) every complete frame has been echoed
 * and the queue is empty: read() is reached only then.
 * Returns 0, CONN_EOF, or -errno. */
static int pump(struct worker *w, struct conn *c)
{
	struct iovec f;
	ssize_t n;
	int r;

	if (c->paused) {
		if ((n = amio_frame_writer_flush(&c->fw, c->fd)) != 0)
			return n < 0 ? (int)n : 0; /* still queued: wait for AMIO_WRITE */
		c->paused = 0;
		c->progress_ms = w->conns.now_ms;
		if ((r = set_events(w, c, AMIO_READ)) < 0)
			return r;
	}
	for (;;) {
		while ((r = amio_frame_reader_next(&c->fr, &f)) == 1) {
			c->progress_ms = w->conns.now_ms;
			/* The queue is empty here, so -ENOBUFS cannot happen. */
			n = amio_frame_writer_write(&c->fw, c->fd, f.iov_base, f.iov_len);
			if (n < 0)
				return (int)n;
			w->conns.frames++;
			if (n > 0) {
				w->conns.pauses++;
				c->paused = 1;
				return set_events(w, c, AMIO_READ | AMIO_WRITE);
			}
		}
		if (r < 0)
			return r; /* -EMSGSIZE (over -f, 4 GiB headers too) or -EPROTO */
		n = amio_frame_reader_read(&c->fr, c->fd);
		if (n == -EAGAIN)
			return 0;
		if (n <= 0)
			return n == 0 ? CONN_EOF : (int)n; /* no -ENOBUFS after next() == 0 */
	}
}

static void accept_all(struct worker *w)
{
	int one = 1, fd;

	while ((fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		struct conn *c = conns_get(&w->conns);

		if (!c) {
			close(fd);
			continue;
		}
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* best effort */
		if (sndbuf) /* small: writes come up short, AMIO_WRITE gets used */
			(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
		c->fd = fd;
		c->paused = 0;
		/* Its own clock read: the batch's may predate this connection. */
		c->progress_ms = conns_clock_ms(&w->conns);
		/* Neither allocates before first use; main ruled out -EINVAL. */
		amio_frame_reader_init(&c->fr, max_frame);
		amio_frame_writer_init(&c->fw, max_queued);
		c->id = amio_register(w->r, fd, AMIO_READ, c);
		if (c->id < 0) /* -EAGAIN: queue full; shed the connection */
			conn_close(w, c, (int)c->id);
	}
}

/* The idle timeout: one interval timer per worker, ticking every idle_ms / 4,
 * walks the worker's connections and closes those without progress for
 * idle_ms. Progress is a complete frame in or a queued echo fully out, so a
 * peer that trickles bytes (slowloris: one a second) is as idle as a silent
 * one, and so is a peer that never reads its echoes.
 * Why not one amio_set_timeout per connection: progress comes with every
 * frame, and each deadline move would cost a cancel plus a new timer (two
 * commands, a kernel timeout request and ~170 B of registry each), or a
 * fire-check-re-arm cycle per connection. The sweep costs one clock read per
 * batch and an O(connections) walk per tick, and nothing per connection.
 * Idle time is measured on an idle clock that skips stalls of the worker or
 * the machine (conns_sweep_clock), so a pause does not close every peer. */
static void sweep(struct worker *w)
{
	int64_t now = conns_sweep_clock(&w->conns, (int64_t)sweep_ms);

	w->conns.now_ms = now; /* the rest of the batch stamps on the new clock */
	for (struct conn *c = w->conns.all; c; c = c->all)
		if (c->id > 0 && now - c->progress_ms >= (int64_t)idle_ms)
			conn_close(w, c, CONN_IDLE);
}

static void dispatch(struct worker *w, const amio_notification *n)
{
	struct conn *c = n->data;
	int err = 0;

	if (n->data == &sweep_tag) {
		sweep(w);
		return;
	}
	if (!c) {
		accept_all(w);
		return;
	}
	if (c->id != (int64_t)n->id)
		return;             /* closed since (the struct may serve another) */
	if (n->events & AMIO_ERROR) /* error 0: POLLERR, the peer reset */
		err = n->error ? n->error : -ECONNRESET;
	else if (n->events & (c->paused ? AMIO_WRITE : AMIO_READ | AMIO_HUP))
		err = pump(w, c); /* paused: reading waits (backpressure) */
	if (err)
		conn_close(w, c, err);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	amio_notification n[64];
	int64_t lid, tid = 0;
	int rc;

	rc = amio_registrar_new(w->p, AMIO_INBOX, &w->r);
	if (rc < 0)
		die("amio_registrar_new", rc);
	lid = amio_register(w->r, w->lfd, AMIO_READ, NULL);
	if (lid < 0)
		die("amio_register", (int)lid);
	if (idle_ms && (tid = amio_set_interval(w->r, sweep_ms, &sweep_tag)) < 0)
		die("amio_set_interval", (int)tid);
	while (!stopping) {
		rc = amio_registrar_wait(w->r, n, 64, 200);
		if (rc < 0)
			die("amio_registrar_wait", rc);
		w->conns.now_ms = conns_clock_ms(&w->conns); /* one clock read per batch */
		for (int i = 0; i < rc; i++)
			dispatch(w, &n[i]);
	}
	/* No more waits: no stale notification can name a struct now. */
	for (struct conn *c = w->conns.all; c; c = c->all)
		if (c->id > 0)
			conn_close(w, c, CONN_SHUTDOWN);
	conns_free_all(&w->conns);
	while (tid > 0 && amio_cancel_timer(w->r, (uint64_t)tid) == -EAGAIN)
		(void)amio_registrar_wait_room(w->r, -1);
	while (amio_deregister(w->r, (uint64_t)lid) == -EAGAIN)
		(void)amio_registrar_wait_room(w->r, -1);
	close(w->lfd);
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

static void print_stats(int sig, struct worker *w, int nworkers, const struct amio_poller_stats *st,
                        const char *backend)
{
	struct conns sum = {0};

	for (int i = 0; i < nworkers; i++)
		conns_add(&sum, &w[i].conns);
	printf("frame_echo_server: %s, echoed %llu frames; the writer queued bytes (AMIO_WRITE "
	       "asked for) %llu times\n",
	       sig == SIGINT ? "SIGINT" : "SIGTERM", U(sum.frames), U(sum.pauses));
	const char *enter = strcmp(backend, "epoll") == 0 ? "epoll_wait" : "io_uring_enter";

	printf("frame_echo_server: %s %llu, SQEs %llu, CQEs %llu, wakeups %llu/%llu, "
	       "rearms %llu; %.1f %s calls per 1,000 frames\n",
	       enter, U(st->enters), U(st->sqes), U(st->cqes), U(st->wakeups_sent),
	       U(st->wakeups_received), U(st->rearms),
	       sum.frames ? 1000.0 * (double)st->enters / (double)sum.frames : 0.0, enter);
	conns_print_stats("frame_echo_server", &sum);
}

int main(int argc, char **argv)
{
	int nworkers = 2, opt, sig, rc;
	uint16_t port = 9001;
	struct amio_poller_stats st;
	static struct worker w[64];
	pthread_t poll_thread;
	struct rlimit rl;
	amio_poller *p;
	const char *backend;
	sigset_t set;

	while ((opt = getopt(argc, argv, "p:w:f:s:i:")) != -1) {
		if (opt == 'p')
			port = (uint16_t)atoi(optarg);
		else if (opt == 'w')
			nworkers = atoi(optarg);
		else if (opt == 'f')
			max_frame = strtoul(optarg, NULL, 0);
		else if (opt == 's')
			sndbuf = atoi(optarg);
		else if (opt == 'i')
			idle_ms = strtoull(optarg, NULL, 0);
		else
			return fprintf(stderr,
			               "usage: %s [-p port] [-w workers] [-f bytes] [-s bytes] "
			               "[-i idle_ms]\n",
			               argv[0]),
			       2;
	}
	/* Up to 1 GiB frames: a connection may hold two (reader and writer). */
	if (nworkers < 1 || nworkers > 64 || max_frame > (1u << 30) || sndbuf < 0 ||
	    idle_ms > (1ull << 40))
		return fprintf(stderr, "frame_echo_server: bad arguments\n"), 2;
	/* A connection closes between idle_ms and 1.25 x idle_ms after its
	 * last progress. */
	sweep_ms = idle_ms / 4 ? idle_ms / 4 : 1;
	/* Frames go only to an empty queue: 4 MiB, or one largest frame. */
	max_queued = max_frame + 4 > (4u << 20) ? max_frame + 4 : (4u << 20);
	/* Every connection is an fd: use all the hard limit allows. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	/* Signals go to main only, which turns them into a clean shutdown. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	/* Listeners before threads: connections are accepted once "listening"
	 * is printed, and -p 0 resolves to one port for every worker. */
	for (int i = 0; i < nworkers; i++)
		w[i].lfd = listen_on(&port);
	if ((rc = amio_poller_new(&p, NULL)) < 0)
		die("amio_poller_new", rc);
	if ((rc = pthread_create(&poll_thread, NULL, poll_main, p)) != 0)
		die("pthread_create", -rc);
	for (int i = 0; i < nworkers; i++) {
		w[i].p = p;
		if ((rc = pthread_create(&w[i].thread, NULL, worker_main, &w[i])) != 0)
			die("pthread_create", -rc);
	}
	printf("frame_echo_server: listening on 127.0.0.1:%u with %d workers, frames <= %zu B, "
	       "idle timeout %llu ms, backend %s\n",
	       port, nworkers, max_frame, U(idle_ms), amio_poller_backend(p));
	fflush(stdout);
	sigwait(&set, &sig);

	stopping = 1;
	for (int i = nworkers - 1; i >= 0; i--)
		pthread_join(w[i].thread, NULL);
	amio_poller_stop(p);
	pthread_join(poll_thread, NULL);
	amio_poller_stats(p, &st);
	backend = amio_poller_backend(p); /* a static string: outlives p */
	amio_poller_free(p);
	print_stats(sig, w, nworkers, &st, backend);
	return 0;
}
