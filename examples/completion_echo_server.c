/*
 * completion_echo_server: echo_server on completion I/O (amio.h "Completion
 * I/O"). The poll thread accepts (amio_accept) and deals connections out to
 * N workers round-robin through a channel each (completion_common.h says
 * why the poll thread). Each worker has an AMIO_INBOX registrar and its own
 * buffer pool, runs a multishot amio_recv per connection, sends each
 * received buffer straight back with amio_send and gives it back to the
 * pool at the send's DONE. Workers make no socket call but close() at a
 * connection's end: the poll thread makes them, a worker only consumes
 * results. Its only other syscalls sleep on an empty inbox or wake a
 * sleeping poll thread (scripts/demo.sh counts them per thread).
 *
 * Run:  ./completion_echo_server [-p port] [-w workers] [-m msg_bytes]
 *                                [-b buffer_bytes] [-n buffers_per_worker] [-s spin_us]
 *       -p 0 picks a free port (printed); -s: how long an idle worker looks
 *       at its inbox before it sleeps (default 0: sleep at once).
 * Try:  ./completion_echo_server -p 9002 & ./echo_client -p 9002 -c 64 -d 5; kill -INT %1
 * SIGINT or SIGTERM shuts down cleanly and prints statistics; SIGUSR1 prints
 * the bytes echoed so far (scripts/demo.sh uses it to time a window); -m
 * only turns byte counts into messages.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <string.h>

#include "completion_common.h"

/* Sends in flight on one connection before its recv pauses (cancelled, and
 * started again once half of them are done): a peer that does not read
 * must not drain the worker's pool, which all its connections share. */
#define MAX_INFLIGHT 16

struct conn {
	struct conn *prev, *next; /* the worker's connections */
	int fd;
	int64_t rid;    /* the running recv, 0 when none runs */
	int ended;      /* the recv ended for good (EOF, error, shutdown) */
	unsigned sends; /* sends in flight */
};

struct worker {
	struct cc_sends sends;
	struct conn *conns;
	amio_registrar *r;
	amio_pool *pool;
	amio_channel *ch;
	amio_poller *p;
	pthread_t thread;
	int index, stopping;
	atomic_uint_fast64_t echoed; /* bytes; read by main for SIGUSR1 */
};

static uint32_t buf_bytes = 4096, nbufs = 512, spin_us = 0;
static sem_t ready; /* a worker's channel exists */

static void conn_recv(struct worker *w, struct conn *c)
{
	int64_t id;

	CC_RETRY(w->r, id, amio_recv(w->r, c->fd, w->pool, c));
	if (id < 0) /* only -ESHUTDOWN (or -ENOSPC: too many ids) is left */
		cc_die("amio_recv", (int)id);
	c->rid = id;
}

/* Closed once it is over, its recv has delivered its DONE and so has its
 * last send: the fd must stay open (and c allocated, it is their data)
 * until every operation on it is done. */
static void conn_maybe_close(struct worker *w, struct conn *c)
{
	if (!c->ended || c->sends || c->rid)
		return;
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	close(c->fd);
	free(c); /* nothing more can name c: every DONE came */
}

static void conn_new(struct worker *w, int fd)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c || w->stopping) {
		close(fd);
		free(c);
		return;
	}
	c->fd = fd;
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	conn_recv(w, c);
}

static void on_recv(struct worker *w, struct conn *c, const amio_notification *n)
{
	struct cc_send *s;
	int64_t id;

	if (n->events & AMIO_DONE) {
		c->rid = 0;
		/* -ECANCELED from our own pause: not the end, unless stopping. */
		c->ended = n->res != -ECANCELED || w->stopping || c->ended;
		if (!c->ended && c->sends <= MAX_INFLIGHT / 2)
			conn_recv(w, c); /* the sends went out while the cancel was on its way */
		conn_maybe_close(w, c);
		return;
	}
	atomic_fetch_add_explicit(&w->echoed, (uint64_t)n->res, memory_order_relaxed);
	if (c->ended || !(s = cc_send_get(&w->sends, c))) {
		amio_pool_put(w->pool, n->buf); /* broken or out of memory: drop */
		return;
	}
	s->buf = n->buf; /* the pool buffer itself goes out: no copy */
	CC_RETRY(w->r, id, amio_send(w->r, c->fd, n->buf, (size_t)n->res, 0, s));
	if (id < 0)
		cc_die("amio_send", (int)id);
	s->id = id;
	if (++c->sends == MAX_INFLIGHT && c->rid > 0) {
		int rc;

		CC_RETRY(w->r, rc, amio_cancel(w->r, (uint64_t)c->rid)); /* pause */
		(void)rc; /* -ENOENT: its DONE is on its way anyway */
	}
}

static void on_send_done(struct worker *w, const amio_notification *n)
{
	struct cc_send *s = n->data;
	struct conn *c = s->conn;

	amio_pool_put(w->pool, s->buf);
	cc_send_put(&w->sends, s);
	c->sends--;
	if (n->res < 0) { /* -EPIPE, -ECONNRESET: how much went out is unknown */
		c->ended = 1;
		if (c->rid > 0) {
			int rc;

			CC_RETRY(w->r, rc, amio_cancel(w->r, (uint64_t)c->rid));
			(void)rc;
		}
	} else if (!c->ended && !c->rid && c->sends <= MAX_INFLIGHT / 2) {
		conn_recv(w, c); /* resume after a pause */
	}
	conn_maybe_close(w, c);
}

static void on_channel(struct worker *w)
{
	int fd, rc;

	while (amio_channel_try_recv(w->ch, &fd) == 0) {
		if (fd != CC_STOP_FD) {
			conn_new(w, fd);
			continue;
		}
		/* Stop: end every operation; each still delivers its DONE. */
		w->stopping = 1;
		for (struct conn *c = w->conns; c; c = c->next) {
			c->ended = 1;
			if (c->rid > 0)
				CC_RETRY(w->r, rc, amio_cancel(w->r, (uint64_t)c->rid));
		}
		cc_sends_cancel(w->r, &w->sends);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	amio_notification n[64];
	char name[16];
	int rc;

	snprintf(name, sizeof(name), "amio-worker%d", w->index);
	(void)pthread_setname_np(pthread_self(), name);
	if ((rc = amio_registrar_new(w->p, AMIO_INBOX, &w->r)) < 0)
		cc_die("amio_registrar_new", rc);
	if ((rc = amio_pool_new(w->r, nbufs, buf_bytes, &w->pool)) < 0)
		cc_die("amio_pool_new", rc);
	if ((rc = amio_channel_new(w->r, CC_CHANNEL_FDS, sizeof(int), NULL, &w->ch)) < 0)
		cc_die("amio_channel_new", rc);
	sem_post(&ready);
	while (!w->stopping || w->conns) {
		if ((rc = cc_wait(w->r, n, 64, spin_us)) < 0)
			cc_die("amio_registrar_wait", rc);
		for (int i = 0; i < rc; i++) {
			if (n[i].events & AMIO_CHANNEL)
				on_channel(w);
			else if (n[i].events & AMIO_RECV)
				on_recv(w, n[i].data, &n[i]);
			else if (n[i].events & AMIO_SEND)
				on_send_done(w, &n[i]);
		}
	}
	cc_sends_free(&w->sends);
	CC_RETRY(w->r, rc, amio_pool_free(w->pool)); /* every buffer is back */
	if (rc < 0)
		cc_die("amio_pool_free", rc);
	amio_channel_free(w->ch);
	amio_registrar_free(w->r);
	return NULL;
}

static uint64_t echoed_bytes(struct worker *w, int nworkers)
{
	uint64_t sum = 0;

	for (int i = 0; i < nworkers; i++)
		sum += atomic_load_explicit(&w[i].echoed, memory_order_relaxed);
	return sum;
}

int main(int argc, char **argv)
{
	static struct worker w[CC_MAX_WORKERS];
	static struct cc_acceptor a;
	int nworkers = 2, msg = 64, opt, sig, rc;
	uint16_t port = 9002;
	struct amio_poller_stats st;
	pthread_t poll_thread;
	const char *backend;
	sigset_t set;

	cc_prog = "completion_echo_server";
	while ((opt = getopt(argc, argv, "p:w:m:b:n:s:")) != -1) {
		if (opt == 'p')
			port = (uint16_t)atoi(optarg);
		else if (opt == 'w')
			nworkers = atoi(optarg);
		else if (opt == 'm')
			msg = atoi(optarg);
		else if (opt == 'b')
			buf_bytes = (uint32_t)strtoul(optarg, NULL, 0);
		else if (opt == 'n')
			nbufs = (uint32_t)strtoul(optarg, NULL, 0);
		else if (opt == 's')
			spin_us = (uint32_t)strtoul(optarg, NULL, 0);
		else
			return fprintf(stderr,
			               "usage: %s [-p port] [-w workers] [-m bytes] [-b bytes] "
			               "[-n buffers] [-s spin_us]\n",
			               argv[0]),
			       2;
	}
	if (nworkers < 1 || nworkers > CC_MAX_WORKERS || msg < 1)
		return fprintf(stderr, "%s: bad arguments\n", cc_prog), 2;
	/* Signals go to main only, which turns them into a clean shutdown. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	a.lfd = cc_listen(&port);
	a.nworkers = nworkers;
	sem_init(&a.accept_done, 0, 0);
	sem_init(&ready, 0, 0);
	if ((rc = amio_poller_new(&a.p, NULL)) < 0)
		cc_die("amio_poller_new", rc);
	/* Workers first: the poll thread deals connections into their channels. */
	for (int i = 0; i < nworkers; i++) {
		w[i].p = a.p;
		w[i].index = i;
		if ((rc = pthread_create(&w[i].thread, NULL, worker_main, &w[i])) != 0)
			cc_die("pthread_create", -rc);
	}
	for (int i = 0; i < nworkers; i++) {
		while (sem_wait(&ready) < 0)
			;
	}
	for (int i = 0; i < nworkers; i++)
		a.ch[i] = w[i].ch;
	if ((rc = pthread_create(&poll_thread, NULL, cc_poll_main, &a)) != 0)
		cc_die("pthread_create", -rc);
	printf("%s: listening on 127.0.0.1:%u with %d workers, %u x %u B buffers each, "
	       "backend %s\n",
	       cc_prog, port, nworkers, nbufs, buf_bytes, amio_poller_backend(a.p));
	fflush(stdout);
	while (sigwait(&set, &sig) == 0 && sig == SIGUSR1) {
		printf("%s: echoed %llu bytes so far\n", cc_prog,
		       (unsigned long long)echoed_bytes(w, nworkers));
		fflush(stdout);
	}

	cc_stop_accepting(&a);
	for (int i = 0; i < nworkers; i++) {
		int stop = CC_STOP_FD;

		if ((rc = amio_channel_send_wait(w[i].ch, &stop, -1)) < 0)
			cc_die("amio_channel_send_wait", rc);
	}
	for (int i = nworkers - 1; i >= 0; i--)
		pthread_join(w[i].thread, NULL);
	cc_stop_poll_thread(&a, poll_thread);
	amio_poller_stats(a.p, &st);
	backend = amio_poller_backend(a.p); /* a static string: outlives the poller */
	amio_poller_free(a.p);
	close(a.lfd); /* after the accept's DONE, never before */
	printf("%s: %s, %llu connections (%llu shed), echoed %llu bytes (%llu messages of %d "
	       "bytes)\n",
	       cc_prog, sig == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long)a.accepted,
	       (unsigned long long)a.shed, (unsigned long long)echoed_bytes(w, nworkers),
	       (unsigned long long)(echoed_bytes(w, nworkers) / (uint64_t)msg), msg);
	printf("%s: %s %llu, SQEs %llu, CQEs %llu, wakeups %llu/%llu, recv_starved %llu\n", cc_prog,
	       strcmp(backend, "epoll") == 0 ? "epoll_wait" : "io_uring_enter",
	       (unsigned long long)st.enters, (unsigned long long)st.sqes,
	       (unsigned long long)st.cqes, (unsigned long long)st.wakeups_sent,
	       (unsigned long long)st.wakeups_received, (unsigned long long)st.recv_starved);
	return 0;
}
