/*
 * completion_common.h: what completion_echo_server.c and
 * completion_frame_echo_server.c share: the poll thread, which also accepts
 * and deals connections out to the workers, the per-send records, and the
 * worker's end of the hand-off channel.
 *
 * Who accepts: the poll thread, through an Amy-mode registrar of its own
 * (its notifications come back from amio_poller_wait). It
 * makes the socket calls anyway (accept4 on epoll, the multishot accept's
 * CQEs on io_uring), so an accepted fd reaches a worker with one channel
 * message and no extra wakeup, TCP_NODELAY is set there rather than by a
 * worker, and every worker is alike: none of them makes a socket call while
 * it serves connections (its only syscalls sleep on its inbox or wake the
 * poll thread).
 */
#ifndef COMPLETION_COMMON_H
#define COMPLETION_COMMON_H

#include <amio.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CC_MAX_WORKERS 64
#define CC_CHANNEL_FDS 1024 /* connections handed to a worker and not yet taken */
#define CC_STOP_FD     (-1) /* the channel message that tells a worker to stop */

static const char *cc_prog = "completion";

static void cc_die(const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", cc_prog, what, amio_strerror(err));
	exit(1);
}

/* Port 0: an ephemeral port, stored back into *port. */
static int cc_listen(uint16_t *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons(*port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	/* O_NONBLOCK: amio_accept requires it (the epoll backend calls accept4). */
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4096) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		cc_die("listen", -errno);
	*port = ntohs(a.sin_port);
	return fd;
}

/* ---- The poll thread -------------------------------------------------- */

struct cc_acceptor {
	amio_poller *p;
	int lfd;
	int nworkers;
	int sndbuf; /* SO_SNDBUF of accepted sockets, bytes; 0 = the kernel's */
	amio_channel *ch[CC_MAX_WORKERS]; /* each worker's inbox of new fds */
	atomic_int stop;                  /* 1: stop accepting; 2: leave amio_poller_run */
	sem_t accept_done;                /* posted at the accept's DONE */
	uint64_t accepted, shed;          /* read after the poll thread is joined */
};

/* Round-robin; a worker whose channel is full is skipped, and a connection
 * no worker can take is closed (shed) rather than waited for: the poll
 * thread must never block, the workers depend on it. */
static void cc_deal(struct cc_acceptor *a, int fd, int *next)
{
	int one = 1;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* best effort */
	if (a->sndbuf) /* small: sends come up short, amio finishes them */
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &a->sndbuf, sizeof(a->sndbuf));
	for (int k = 0; k < a->nworkers; k++) {
		int i = (*next + k) % a->nworkers;

		if (amio_channel_send(a->ch[i], &fd) == 0) {
			*next = i + 1;
			a->accepted++;
			return;
		}
	}
	close(fd);
	a->shed++;
}

static void *cc_poll_main(void *arg)
{
	struct cc_acceptor *a = arg;
	amio_notification n[64];
	amio_registrar *r;
	int64_t aid;
	int rc, next = 0, cancelled = 0;

	(void)pthread_setname_np(pthread_self(), "amio-poll");
	if ((rc = amio_registrar_new(a->p, 0, &r)) < 0)
		cc_die("amio_registrar_new", rc);
	if ((aid = amio_accept(r, a->lfd, NULL)) < 0)
		cc_die("amio_accept", (int)aid);
	for (;;) {
		int stop;

		/* This thread is the poll thread and the consumer of its own
		 * (Amy-mode) accept: amio_poller_wait returns the accept's
		 * notifications and delivers the workers' inboxes in the same
		 * call. 0: a stop. */
		rc = amio_poller_wait(a->p, n, 64, -1);
		if (rc < 0)
			cc_die("amio_poller_wait", rc);
		for (int i = 0; i < rc; i++) {
			if (!(n[i].events & AMIO_DONE)) {
				cc_deal(a, n[i].res, &next);
				continue;
			}
			if (n[i].res != -ECANCELED)
				fprintf(stderr, "%s: accepting ended: %s\n", cc_prog,
				        amio_strerror(n[i].res));
			sem_post(&a->accept_done);
		}
		stop = atomic_load(&a->stop);
		if (stop >= 2)
			break;
		if (stop == 1 && !cancelled) {
			cancelled = 1;
			/* Our own queue, drained by our next run: no room to wait for. */
			rc = amio_cancel(r, (uint64_t)aid);
			if (rc < 0 && rc != -ENOENT) /* -ENOENT: it had ended already */
				cc_die("amio_cancel", rc);
		}
	}
	amio_registrar_free(r);
	return NULL;
}

/* The shutdown order: no new connections (the accept's DONE), then the
 * workers, then the poll thread they need until their last DONE. */
static void cc_stop_accepting(struct cc_acceptor *a)
{
	atomic_store(&a->stop, 1);
	amio_poller_stop(a->p);
	while (sem_wait(&a->accept_done) < 0 && errno == EINTR)
		;
}

static void cc_stop_poll_thread(struct cc_acceptor *a, pthread_t t)
{
	atomic_store(&a->stop, 2);
	amio_poller_stop(a->p);
	pthread_join(t, NULL);
}

/* An amio call that found r's command queue full (-EAGAIN) waits for room
 * (the poll thread drains it), then tries again; var gets the result. */
#define CC_RETRY(r, var, call)                                                                     \
	do {                                                                                       \
		while (((var) = (call)) == -EAGAIN)                                                \
			(void)amio_registrar_wait_room((r), -1);                                   \
	} while (0)

/* amio_registrar_wait that looks at the inbox for spin_us before sleeping.
 * Sleeping is a syscall (futex or io_uring_enter) and so is the poll
 * thread's wakeup of the sleeper; while work streams, the next notification
 * is usually microseconds away, so a short look (no syscall: an empty inbox
 * costs a ring read, the clock is the vDSO's) keeps the worker syscall-free.
 * It costs CPU when idle for spin_us per wait: keep it short when threads
 * share CPUs. No timeout after it: a stop comes as a channel message. */
static int cc_wait(amio_registrar *r, amio_notification *n, size_t cap, uint32_t spin_us)
{
	struct timespec t0, t;
	int rc = amio_registrar_wait(r, n, cap, 0);

	if (rc || !spin_us)
		return rc ? rc : amio_registrar_wait(r, n, cap, -1);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		if ((rc = amio_registrar_wait(r, n, cap, 0)) != 0)
			return rc;
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((t.tv_sec - t0.tv_sec) * 1000000 + (t.tv_nsec - t0.tv_nsec) / 1000 < spin_us);
	return amio_registrar_wait(r, n, cap, -1);
}

/* ---- Sends in flight ---------------------------------------------------
 * The data pointer of every amio_send/amio_sendv: what to give back at its
 * DONE. Records are recycled through a free list, so steady state allocates
 * nothing; the list of those in flight lets shutdown cancel them (a peer
 * that never reads would otherwise hold its send, and us, forever). */
struct cc_send {
	struct cc_send *prev, *next; /* in flight, or next free */
	void *conn;
	void *buf;  /* the pool buffer, or the record of one, to release at DONE */
	void *copy; /* a heap copy the send reads from, freed at DONE; or NULL */
	int64_t id;
	unsigned char hdr[4]; /* a frame header the send reads from */
};

struct cc_sends {
	struct cc_send *live, *free;
};

static struct cc_send *cc_send_get(struct cc_sends *s, void *conn)
{
	struct cc_send *x = s->free;

	if (x)
		s->free = x->next;
	else if (!(x = malloc(sizeof(*x))))
		return NULL;
	*x = (struct cc_send){.conn = conn, .next = s->live};
	if (s->live)
		s->live->prev = x;
	s->live = x;
	return x;
}

static void cc_send_put(struct cc_sends *s, struct cc_send *x)
{
	if (x->prev)
		x->prev->next = x->next;
	else
		s->live = x->next;
	if (x->next)
		x->next->prev = x->prev;
	x->next = s->free;
	s->free = x;
}

static void cc_sends_free(struct cc_sends *s)
{
	while (s->free) {
		struct cc_send *x = s->free;

		s->free = x->next;
		free(x);
	}
}

/* Cancel every send in flight: each still ends with its DONE. */
static void cc_sends_cancel(amio_registrar *r, struct cc_sends *s)
{
	int rc;

	for (struct cc_send *x = s->live; x; x = x->next)
		CC_RETRY(r, rc, amio_cancel(r, (uint64_t)x->id)); /* -ENOENT: DONE on its way */
}

#endif /* COMPLETION_COMMON_H */
