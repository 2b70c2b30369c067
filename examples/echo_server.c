/*
 * echo_server: the Poller/Registrar model in inbox mode. A dedicated poll
 * thread runs amio_poller_run(); each worker thread owns an AMIO_INBOX
 * registrar, its own listening socket (SO_REUSEPORT: the kernel spreads
 * connections) and every connection it accepts, and receives exactly their
 * notifications.
 *
 * Run:  ./echo_server [-p port] [-w workers] [-m msg_bytes]
 * Try:  ./echo_server -p 9000 & ./echo_client -p 9000 -c 64 -d 5; kill -INT %1
 * Ctrl-C (SIGINT) or SIGTERM shuts down cleanly and prints poller statistics;
 * -m only turns byte counts into "io_uring_enter (epoll_wait) calls per
 * 1,000 messages".
 */
#define _GNU_SOURCE
#include <amio.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_BYTES 65536

struct conn {
	struct conn *prev, *next; /* the owning worker's connections */
	int fd;
	int64_t id;
	size_t off, len; /* bytes of buf still to write back */
	char buf[BUF_BYTES];
};

struct worker {
	struct conn *conns;
	struct conn *dead; /* closed in this batch: freed after it */
	pthread_t thread;
	amio_poller *p;
	uint16_t port;
	uint64_t echoed; /* bytes */
};

static atomic_int stopping; /* set by main on SIGINT/SIGTERM */

static int die(const char *what, int err)
{
	fprintf(stderr, "echo_server: %s: %s\n", what, amio_strerror(err));
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

static void conn_close(struct worker *w, amio_registrar *r, struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	/* Deregister first: only then does close() send FIN. A full command
	 * queue means the poller is behind: sleep until it has drained it. */
	while (amio_deregister(r, (uint64_t)c->id) == -EAGAIN)
		(void)amio_registrar_wait_room(r, -1);
	close(c->fd);
	/* One batch may hold a second notification for c: free it after. */
	c->fd = -1;
	c->next = w->dead;
	w->dead = c;
}

static void free_dead(struct worker *w)
{
	while (w->dead) {
		struct conn *c = w->dead;
		w->dead = c->next;
		free(c);
	}
}

/* Write back what is buffered; returns -1 when the connection is dead. */
static int flush(struct conn *c)
{
	while (c->off < c->len) {
		ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		c->off += (size_t)n;
	}
	c->off = c->len = 0;
	return 0;
}

/* Edge-triggered: read until EAGAIN, or until the buffer waits for the peer
 * (then the next AMIO_WRITE resumes both). Returns -1 on EOF or error. */
static int echo(struct worker *w, struct conn *c)
{
	for (;;) {
		ssize_t n;

		if (flush(c) < 0)
			return -1;
		if (c->len)
			return 0; /* peer is slow: wait for AMIO_WRITE */
		n = recv(c->fd, c->buf, sizeof(c->buf), 0);
		if (n == 0)
			return -1;
		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		c->len = (size_t)n;
		w->echoed += (uint64_t)n;
	}
}

static void accept_all(struct worker *w, amio_registrar *r, int lfd)
{
	int one = 1, fd;

	while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		struct conn *c = calloc(1, sizeof(*c));

		if (!c) {
			close(fd);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->fd = fd;
		/* Both directions, edge-triggered: no reregister per message. */
		c->id = amio_register(r, fd, AMIO_BOTH, c);
		if (c->id < 0) { /* -EAGAIN: queue full; shed the connection */
			close(fd);
			free(c);
			continue;
		}
		c->next = w->conns;
		if (w->conns)
			w->conns->prev = c;
		w->conns = c;
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	amio_notification n[64];
	amio_registrar *r;
	int lfd, rc;
	int64_t lid;

	rc = amio_registrar_new(w->p, AMIO_INBOX, &r);
	if (rc < 0)
		die("amio_registrar_new", rc);
	lfd = listen_on(w->port);
	lid = amio_register(r, lfd, AMIO_READ, NULL);
	if (lid < 0)
		die("amio_register", (int)lid);
	while (!stopping) {
		rc = amio_registrar_wait(r, n, 64, 200);
		if (rc < 0)
			die("amio_registrar_wait", rc);
		for (int i = 0; i < rc; i++) {
			struct conn *c = n[i].data;

			if (!c) {
				accept_all(w, r, lfd);
			} else if (c->fd >= 0 && ((n[i].events & AMIO_ERROR) || echo(w, c) < 0)) {
				conn_close(w, r, c);
			}
		}
		free_dead(w);
	}
	while (w->conns)
		conn_close(w, r, w->conns);
	free_dead(w);
	amio_deregister(r, (uint64_t)lid);
	close(lfd);
	amio_registrar_free(r);
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

/* The syscall amio_poller_stats counts as enters on each backend. */
static const char *enter_name(const char *backend)
{
	return strcmp(backend, "epoll") == 0 ? "epoll_wait" : "io_uring_enter";
}

int main(int argc, char **argv)
{
	int nworkers = 2, msg = 64, opt, sig, rc;
	uint16_t port = 9000;
	struct amio_poller_stats st;
	struct worker *w;
	uint64_t echoed = 0;
	pthread_t poll_thread;
	amio_poller *p;
	const char *backend;
	sigset_t set;

	while ((opt = getopt(argc, argv, "p:w:m:")) != -1) {
		if (opt == 'p')
			port = (uint16_t)atoi(optarg);
		else if (opt == 'w')
			nworkers = atoi(optarg);
		else if (opt == 'm')
			msg = atoi(optarg);
		else
			return fprintf(stderr, "usage: %s [-p port] [-w workers] [-m bytes]\n",
			               argv[0]),
			       2;
	}
	/* Signals go to main only, which turns them into a clean shutdown. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	if ((rc = amio_poller_new(&p, NULL)) < 0)
		die("amio_poller_new", rc);
	pthread_create(&poll_thread, NULL, poll_main, p);
	w = calloc((size_t)nworkers, sizeof(*w));
	for (int i = 0; i < nworkers; i++) {
		w[i] = (struct worker){.p = p, .port = port};
		pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
	}
	backend = amio_poller_backend(p);
	printf("echo_server: listening on 127.0.0.1:%u with %d workers, backend %s\n", port,
	       nworkers, backend);
	fflush(stdout);
	sigwait(&set, &sig);

	stopping = 1;
	for (int i = 0; i < nworkers; i++) {
		pthread_join(w[i].thread, NULL);
		echoed += w[i].echoed;
	}
	amio_poller_stop(p);
	pthread_join(poll_thread, NULL);
	amio_poller_stats(p, &st);
	amio_poller_free(p);
	free(w);
	printf("echo_server: %s, echoed %llu bytes (%llu messages of %d bytes)\n",
	       sig == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long)echoed,
	       (unsigned long long)(echoed / (uint64_t)msg), msg);
	printf("echo_server: %s %llu, SQEs %llu, CQEs %llu, wakeups %llu/%llu, "
	       "rearms %llu\n",
	       enter_name(backend), (unsigned long long)st.enters, (unsigned long long)st.sqes,
	       (unsigned long long)st.cqes, (unsigned long long)st.wakeups_sent,
	       (unsigned long long)st.wakeups_received, (unsigned long long)st.rearms);
	if (echoed >= (uint64_t)msg)
		printf("echo_server: %.1f %s calls per 1,000 messages\n",
		       1000.0 * (double)st.enters / (double)(echoed / (uint64_t)msg),
		       enter_name(backend));
	return 0;
}
