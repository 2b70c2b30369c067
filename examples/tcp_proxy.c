/*
 * tcp_proxy: a TCP relay on completion I/O. Each worker thread has its own
 * poller (it is the poll thread), listening socket (SO_REUSEPORT spreads the
 * clients) and Amy-mode registrar. A client is accepted (amio_accept), the
 * upstream connected (amio_connect, 5 s deadline), then each direction runs
 * a multishot amio_recv into the worker's pool and sends every buffer on to
 * the other fd (amio_send); the send's DONE gives the buffer back. An EOF is
 * passed on as a half-close (amio_shutdown, after the queued sends); both
 * EOFs passed on, an error or a reset close both fds (amio_close).
 * Back-pressure: a direction with more than MAX_INFLIGHT buffers in sends
 * pauses its recv (amio_recv_pause) until half of them are done, so a slow
 * reader holds a few buffers, not the pool its worker's other clients need.
 *
 * Run:  ./tcp_proxy -p LISTEN_PORT -u HOST:PORT [-w WORKERS]   (-p 0: a free port, printed)
 * Try:  ./echo_server -p 9000 & ./tcp_proxy -p 9001 -u 127.0.0.1:9000 &
 *       ./echo_client -p 9001 -c 16 -d 3; kill -INT %2 %1
 * SIGINT or SIGTERM closes every connection and exits.
 */
#define _GNU_SOURCE
#include <amio.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_WORKERS  64
#define BUF_BYTES    16384
#define NBUFS        1024 /* per worker: 16 MiB, shared by its connections */
#define MAX_INFLIGHT 16   /* buffers of one direction in sends before its recv pauses */
#define CONNECT_MS   5000 /* upstream connect deadline: its DONE says -ETIME */

struct side {
	struct conn *c;
	int fd;
	int64_t rid;       /* the recv reading this fd; 0 once it ended */
	int inflight;      /* buffers received here, in sends on the other fd */
	bool paused, shut; /* shut: the other side's EOF was passed on here */
};

struct conn {
	struct side s[2]; /* the client, upstream */
	struct conn *prev, *next;
	int closed; /* CLOSE DONEs: each is its fd's last notification */
	bool closing;
};

struct worker {
	pthread_t thread;
	amio_poller *p;
	amio_registrar *r;
	amio_pool *pool;
	int lfd;
	int64_t aid; /* the accept; 0 once it ended */
	struct conn *conns;
	bool stopping;    /* the worker's own: closing everything */
	atomic_bool stop; /* set by main */
};

static struct sockaddr_storage up_addr;
static socklen_t up_len;

/* With amio_registrar_set_queue_wait(-1) a full queue is no error; what is
 * left (-ENOSPC: out of ids, -ESHUTDOWN, a bug) ends the program. */
static int64_t ck(int64_t rc, const char *what)
{
	if (rc >= 0)
		return rc;
	fprintf(stderr, "tcp_proxy: %s: %s\n", what, amio_strerror((int)rc));
	exit(1);
}

/* For calls on an id that may have ended meanwhile (-ENOENT: its DONE comes). */
static void ck_id(int rc, const char *what)
{
	if (rc != -ENOENT)
		ck(rc, what);
}

static struct side *peer(struct side *s)
{
	return s == &s->c->s[0] ? &s->c->s[1] : &s->c->s[0];
}

/* Every operation on both fds ends (sends and recvs with -ECANCELED), then
 * amio closes the fds; each operation still ends with its DONE. */
static void conn_close(struct worker *w, struct conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	for (int i = 0; i < 2; i++)
		ck(amio_close(w->r, c->s[i].fd, 0, &c->s[i]), "amio_close");
}

static void conn_new(struct worker *w, int cfd)
{
	int one = 1, ufd = -1;
	struct conn *c = NULL;
	int64_t id;

	if (w->stopping || !(c = calloc(1, sizeof(*c))) ||
	    (ufd = socket(up_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0) {
		if (!w->stopping) /* out of memory or fds: shed this client */
			fprintf(stderr, "tcp_proxy: new connection: %s\n", strerror(errno));
		close(cfd);
		free(c);
		return;
	}
	(void)setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* best effort */
	(void)setsockopt(ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->s[0] = (struct side){.c = c, .fd = cfd};
	c->s[1] = (struct side){.c = c, .fd = ufd};
	if ((c->next = w->conns))
		c->next->prev = c;
	w->conns = c;
	id = ck(amio_connect(w->r, ufd, (struct sockaddr *)&up_addr, up_len, &c->s[1]),
	        "amio_connect");
	ck_id(amio_set_deadline(w->r, (uint64_t)id, CONNECT_MS), "amio_set_deadline");
}

static void on_recv(struct worker *w, struct side *from, const amio_notification *n)
{
	struct conn *c = from->c;

	if (n->events & AMIO_DONE) {
		from->rid = 0;
		if (n->res == 0 && !c->closing) /* EOF: pass it on after the queued sends */
			ck(amio_shutdown(w->r, peer(from)->fd, peer(from)), "amio_shutdown");
		else
			conn_close(w, c); /* -ECONNRESET ..., or -ECANCELED by our close */
	} else if (c->closing) {
		ck(amio_pool_put(w->pool, n->buf), "amio_pool_put");
	} else { /* the send's data is this side: its DONE counts the buffer back */
		ck(amio_send(w->r, peer(from)->fd, n->buf, (size_t)n->res, 0, from), "amio_send");
		if (++from->inflight > MAX_INFLIGHT && !from->paused) {
			from->paused = true; /* buffers received before the pause still come */
			ck_id(amio_recv_pause(w->r, (uint64_t)from->rid), "amio_recv_pause");
		}
	}
}

static void on_send(struct worker *w, struct side *from, const amio_notification *n)
{
	ck(amio_pool_put(w->pool, n->buf), "amio_pool_put"); /* the recv's buffer we sent */
	from->inflight--;
	if (n->res < 0) { /* -EPIPE, -ECONNRESET: how much went out is unknown */
		conn_close(w, from->c);
	} else if (from->paused && from->inflight <= MAX_INFLIGHT / 2 && from->rid) {
		from->paused = false;
		ck_id(amio_recv_resume(w->r, (uint64_t)from->rid), "amio_recv_resume");
	}
}

static void on_notification(struct worker *w, const amio_notification *n)
{
	struct side *s = n->data; /* NULL for the accept */
	struct conn *c = s ? s->c : NULL;

	if (n->events & AMIO_ACCEPT) {
		if (n->res >= 0 && !(n->events & AMIO_DONE))
			conn_new(w, n->res);
		else if (n->res != -ECANCELED) /* out of fds: amio listens again after a back-off */
			fprintf(stderr, "tcp_proxy: accept%s: %s\n",
			        n->events & AMIO_DONE ? " ended" : "", amio_strerror(n->res));
		if (n->events & AMIO_DONE)
			w->aid = 0;
	} else if (n->events & AMIO_RECV) {
		on_recv(w, s, n);
	} else if (n->events & AMIO_SEND) {
		on_send(w, s, n);
	} else if (n->events & AMIO_CONNECT) {
		if (n->res < 0 && !c->closing) /* -ECONNREFUSED, -ETIME (the deadline) ... */
			fprintf(stderr, "tcp_proxy: upstream: %s\n", amio_strerror(n->res));
		if (n->res < 0 || c->closing)
			conn_close(w, c); /* a no-op if closing */
		else                      /* connected: both directions start */
			for (s = c->s; s < c->s + 2; s++)
				s->rid = ck(amio_recv(w->r, s->fd, w->pool, s), "amio_recv");
	} else if (n->events & AMIO_SHUTDOWN) {
		s->shut = n->res == 0;
		if (n->res < 0 || peer(s)->shut) /* an error, or both EOFs passed on: done */
			conn_close(w, c);
	} else if ((n->events & AMIO_CLOSE) && ++c->closed == 2) { /* nothing more names c */
		if (c->prev)
			c->prev->next = c->next;
		else
			w->conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
		free(c);
	}
}

static void *worker_main(void *arg)
{
	/* amio's flow control pauses a recv while ITS OWN fd has sends queued: a
	 * relay queues them on the other fd, and an echoing upstream that is not
	 * read stops reading too (a deadlock). Off: we pace ourselves. */
	struct amio_conn_config cfg = {.high_water = UINT64_MAX, .low_water = UINT64_MAX};
	struct worker *w = arg;
	amio_notification n[64];

	ck(amio_registrar_new(w->p, 0, &w->r), "amio_registrar_new");
	ck(amio_registrar_set_queue_wait(w->r, -1), "amio_registrar_set_queue_wait");
	ck(amio_registrar_set_conn(w->r, &cfg), "amio_registrar_set_conn");
	ck(amio_pool_new(w->r, NBUFS, BUF_BYTES, &w->pool), "amio_pool_new");
	w->aid = ck(amio_accept(w->r, w->lfd, NULL), "amio_accept");
	while (!w->stopping || w->aid || w->conns) {
		int k = (int)ck(amio_poller_wait(w->p, n, 64, -1), "amio_poller_wait");

		for (int i = 0; i < k; i++)
			on_notification(w, &n[i]);
		if (!w->stopping && atomic_load(&w->stop)) { /* end everything, then leave */
			w->stopping = true;
			if (w->aid)
				ck_id(amio_cancel(w->r, (uint64_t)w->aid), "amio_cancel");
			for (struct conn *c = w->conns; c; c = c->next)
				conn_close(w, c);
		}
	}
	ck(amio_pool_free(w->pool), "amio_pool_free"); /* every recv ended, every buffer back */
	amio_registrar_free(w->r);
	return NULL;
}

/* HOST:PORT (a name, an IPv4 or an IPv6 address) into up_addr. */
static void resolve(const char *hostport)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
	char host[256], *colon;
	int rc;

	snprintf(host, sizeof(host), "%s", hostport);
	if (!(colon = strrchr(host, ':')))
		ck(-EINVAL, "-u HOST:PORT");
	*colon = '\0';
	if ((rc = getaddrinfo(host, colon + 1, &hints, &ai)) != 0) {
		fprintf(stderr, "tcp_proxy: %s: %s\n", host, gai_strerror(rc));
		exit(1);
	}
	memcpy(&up_addr, ai->ai_addr, ai->ai_addrlen);
	up_len = ai->ai_addrlen;
	freeaddrinfo(ai);
}

/* One listening socket per worker on the same port (the first picks it if 0). */
static int listen_on(uint16_t *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons(*port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4096) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		ck(-errno, "listen");
	*port = ntohs(a.sin_port);
	return fd;
}

int main(int argc, char **argv)
{
	static struct worker w[MAX_WORKERS];
	int nworkers = 2, opt, sig, rc, bad = 0;
	const char *upstream = NULL;
	uint16_t port = 9001;
	sigset_t set;

	while ((opt = getopt(argc, argv, "p:u:w:")) != -1) {
		if (opt == 'p')
			port = (uint16_t)atoi(optarg);
		else if (opt == 'u')
			upstream = optarg;
		else if (opt == 'w')
			nworkers = atoi(optarg);
		else
			bad = 1;
	}
	if (bad || !upstream || nworkers < 1 || nworkers > MAX_WORKERS)
		return fprintf(stderr, "usage: %s -p port -u host:port [-w 1..64]\n", argv[0]), 2;
	resolve(upstream);
	/* Signals go to main only, which turns them into a clean shutdown. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	for (int i = 0; i < nworkers; i++) {
		w[i].lfd = listen_on(&port);
		ck(amio_poller_new(&w[i].p, NULL), "amio_poller_new");
		if ((rc = pthread_create(&w[i].thread, NULL, worker_main, &w[i])) != 0)
			ck(-rc, "pthread_create");
	}
	printf("tcp_proxy: listening on 127.0.0.1:%u, upstream %s, %d workers, backend %s\n", port,
	       upstream, nworkers, amio_poller_backend(w[0].p));
	fflush(stdout);
	while (sigwait(&set, &sig) != 0)
		;
	for (int i = 0; i < nworkers; i++) {
		atomic_store(&w[i].stop, true);
		ck(amio_poller_stop(w[i].p), "amio_poller_stop");
	}
	/* Reverse order: the threads, then (no poll thread left) the pollers,
	 * then the listening sockets, whose accepts have ended. */
	for (int i = nworkers - 1; i >= 0; i--) {
		pthread_join(w[i].thread, NULL);
		amio_poller_free(w[i].p);
		close(w[i].lfd);
	}
	printf("tcp_proxy: %s, stopped\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
	return 0;
}
