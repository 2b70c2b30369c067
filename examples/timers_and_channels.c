/*
 * timers_and_channels: a line server whose poll thread does the socket I/O
 * (Amy mode) and hands each request to worker threads through channels; the
 * workers hand results back through one channel. An idle timer closes a
 * connection silent for 2 s; a 1 s interval prints statistics.
 * Protocol: send a number n and a newline; the reply is the count of primes
 * below n and a newline.
 *
 * Run:  ./timers_and_channels [-p port] [-w workers] [-t]   (-t: self-test, exits)
 * Ctrl-C arrives through a signalfd registered like any socket: clean shutdown.
 * Try:  ./timers_and_channels -p 9100 & (echo 100000; sleep 3) | nc 127.0.0.1 9100
 */
#define _GNU_SOURCE
#include <amio.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 64
#define IDLE_MS   2000

struct conn {
	int fd; /* -1: free */
	int64_t id, timer;
	uint32_t gen; /* tells a result for a closed connection from a new one */
	size_t len;
	char line[64];
};
struct job {
	uint32_t conn, gen;
	uint64_t n, result;
};
struct worker {
	pthread_t thread;
	amio_poller *p;
	amio_channel *jobs, *results;
	int ready; /* atomic: jobs is set up */
};

static struct conn conns[MAX_CONNS];
static uint64_t served, idle_closed;
static int stats_tag, results_tag, signal_tag;

static void check(int64_t rc, const char *what)
{
	if (rc < 0) {
		fprintf(stderr, "timers_and_channels: %s: %s\n", what, amio_strerror((int)rc));
		exit(1);
	}
}

static uint64_t primes_below(uint64_t n)
{
	uint64_t count = 0;

	for (uint64_t i = 2; i < n; i++) {
		uint64_t d = 2;
		while (d * d <= i && i % d)
			d++;
		count += d * d > i;
	}
	return count;
}

/* A worker: its inbox receives its job channel's notifications. */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	amio_registrar *r;
	amio_notification n[8];
	struct job j;

	check(amio_registrar_new(w->p, AMIO_INBOX, &r), "registrar");
	check(amio_channel_new(r, 256, sizeof(struct job), NULL, &w->jobs), "channel");
	__atomic_store_n(&w->ready, 1, __ATOMIC_RELEASE);
	for (;;) {
		int k = amio_registrar_wait(r, n, 8, -1);
		if (k < 0)
			break; /* -ESHUTDOWN: the poller is gone */
		while (amio_channel_try_recv(w->jobs, &j) == 0) {
			if (j.n == UINT64_MAX)
				goto out; /* the stop message */
			j.result = primes_below(j.n);
			check(amio_channel_send_wait(w->results, &j, -1), "send result");
		}
	}
out:
	amio_channel_free(w->jobs);
	amio_registrar_free(r);
	return NULL;
}

static void conn_close(amio_registrar *r, struct conn *c)
{
	amio_cancel_timer(r, (uint64_t)c->timer); /* -ENOENT if it fired: fine */
	amio_deregister(r, (uint64_t)c->id);
	close(c->fd);
	c->fd = -1;
	c->gen++;
}

static void conn_accept(amio_registrar *r, int lfd)
{
	int fd;

	while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		struct conn *c = NULL;

		for (int i = 0; i < MAX_CONNS && !c; i++)
			c = conns[i].fd < 0 ? &conns[i] : NULL;
		if (!c) {
			close(fd); /* full */
			continue;
		}
		c->fd = fd;
		c->len = 0;
		check(c->id = amio_register(r, fd, AMIO_READ, c), "register");
		check(c->timer = amio_set_timeout(r, IDLE_MS, c), "timer");
	}
}

/* Read lines; each one becomes a job for a worker. */
static void conn_read(amio_registrar *r, struct conn *c, struct worker *w, int nw)
{
	static unsigned next;
	ssize_t got;

	/* Activity: restart the idle timer. */
	amio_cancel_timer(r, (uint64_t)c->timer);
	check(c->timer = amio_set_timeout(r, IDLE_MS, c), "timer");
	while ((got = read(c->fd, c->line + c->len, sizeof(c->line) - 1 - c->len)) > 0) {
		char *nl;

		c->len += (size_t)got;
		while ((nl = memchr(c->line, '\n', c->len))) {
			struct job j = {.conn = (uint32_t)(c - conns), .gen = c->gen};

			*nl = 0;
			j.n = strtoull(c->line, NULL, 10);
			if (amio_channel_send(w[next++ % (unsigned)nw].jobs, &j) < 0)
				dprintf(c->fd, "busy\n");
			c->len -= (size_t)(nl + 1 - c->line);
			memmove(c->line, nl + 1, c->len);
		}
		if (c->len == sizeof(c->line) - 1)
			c->len = 0; /* a line too long: drop it */
	}
	if (got == 0 || (got < 0 && errno != EAGAIN))
		conn_close(r, c);
}

static void print_stats(amio_poller *p, int live)
{
	struct amio_poller_stats st;

	amio_poller_stats(p, &st);
	printf("stats: %d connections, %llu served, %llu idle-closed, %llu enters, "
	       "%llu wakeups\n",
	       live, (unsigned long long)served, (unsigned long long)idle_closed,
	       (unsigned long long)st.enters, (unsigned long long)st.wakeups_sent);
	fflush(stdout);
}

/* Self-test (-t): two clients get right answers; a silent one is closed. */
static void *self_test(void *arg)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons(*(uint16_t *)arg),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int busy = socket(AF_INET, SOCK_STREAM, 0), silent = socket(AF_INET, SOCK_STREAM, 0);
	char buf[64] = {0};
	int ok;

	connect(busy, (struct sockaddr *)&a, sizeof(a));
	connect(silent, (struct sockaddr *)&a, sizeof(a));
	dprintf(busy, "100\n");
	ok = read(busy, buf, sizeof(buf) - 1) > 0 && strcmp(buf, "25\n") == 0;
	ok = ok && read(silent, buf, sizeof(buf)) == 0; /* EOF after about 2 s */
	close(busy);
	close(silent);
	return (void *)(intptr_t)ok;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int nw = 2, opt, lfd, selftest = 0;
	uint16_t port = 9100;
	amio_notification n[64];
	struct worker *w;
	amio_registrar *r;
	amio_channel *results;
	amio_poller *p;
	pthread_t tester;
	void *passed = NULL;
	int sfd, stop = 0;
	sigset_t sigs;

	while ((opt = getopt(argc, argv, "p:w:t")) != -1)
		if (opt == 'p')
			port = (uint16_t)atoi(optarg);
		else if (opt == 'w')
			nw = atoi(optarg) > 0 ? atoi(optarg) : 1;
		else if (opt == 't')
			selftest = 1, port = 0;
	for (int i = 0; i < MAX_CONNS; i++)
		conns[i].fd = -1;
	check(amio_poller_new(&p, NULL), "poller");
	printf("timers_and_channels: backend %s\n", amio_poller_backend(p));
	check(amio_registrar_new(p, 0, &r), "registrar");
	check(amio_channel_new(r, 1024, sizeof(struct job), &results_tag, &results), "channel");
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	a.sin_port = htons(port);
	if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lfd, 64) < 0)
		return perror("timers_and_channels: listen"), 1;
	getsockname(lfd, (struct sockaddr *)&a, &alen);
	port = ntohs(a.sin_port);
	check(amio_register(r, lfd, AMIO_READ, NULL), "register");
	check(amio_set_interval(r, 1000, &stats_tag), "interval");
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* workers inherit the mask */
	sfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
	check(amio_register(r, sfd, AMIO_READ, &signal_tag), "signalfd");
	w = calloc((size_t)nw, sizeof(*w));
	for (int i = 0; i < nw; i++) {
		w[i] = (struct worker){.p = p, .results = results};
		pthread_create(&w[i].thread, NULL, worker_main, &w[i]);
	}
	/* The poll thread must run for workers to be set up: wait with it. */
	for (int i = 0; i < nw; i++)
		while (!__atomic_load_n(&w[i].ready, __ATOMIC_ACQUIRE))
			amio_poller_wait(p, n, 64, 10);
	printf("timers_and_channels: 127.0.0.1:%u, %d workers\n", port, nw);
	fflush(stdout);
	if (selftest)
		pthread_create(&tester, NULL, self_test, &port);
	for (int rounds = 0; !stop && (!selftest || rounds < 400); rounds++) {
		int k = amio_poller_wait(p, n, 64, 10), live = 0;
		struct job j;

		check(k, "wait");
		for (int i = 0; i < k; i++) {
			struct conn *c = n[i].data;

			if (n[i].data == &signal_tag) {
				stop = 1;
			} else if (n[i].data == &stats_tag) {
				for (int q = 0; q < MAX_CONNS; q++)
					live += conns[q].fd >= 0;
				print_stats(p, live);
			} else if (n[i].data == &results_tag) {
				while (amio_channel_try_recv(results, &j) == 0) {
					if (conns[j.conn].fd >= 0 && conns[j.conn].gen == j.gen)
						dprintf(conns[j.conn].fd, "%llu\n",
						        (unsigned long long)j.result);
					served++;
				}
			} else if (!c) {
				conn_accept(r, lfd);
			} else if (n[i].events & AMIO_TIMER) {
				if (c->fd >= 0 && (uint64_t)c->timer == n[i].id) {
					conn_close(r, c);
					idle_closed++;
				}
			} else if (c->fd >= 0) {
				conn_read(r, c, w, nw);
			}
		}
	}
	if (selftest)
		pthread_join(tester, &passed);
	for (int i = 0; i < nw; i++) { /* stop the workers, then free */
		struct job quit = {.n = UINT64_MAX};
		check(amio_channel_send_wait(w[i].jobs, &quit, -1), "stop");
	}
	for (int i = 0; i < nw; i++) {
		while (pthread_tryjoin_np(w[i].thread, NULL) != 0)
			amio_poller_wait(p, n, 64, 10); /* keep delivering to them */
	}
	for (int i = 0; i < MAX_CONNS; i++)
		if (conns[i].fd >= 0)
			conn_close(r, &conns[i]);
	close(lfd);
	close(sfd);
	amio_channel_free(results);
	amio_registrar_free(r);
	amio_poller_free(p);
	free(w);
	printf("timers_and_channels: %llu served, %llu idle-closed%s\n", (unsigned long long)served,
	       (unsigned long long)idle_closed,
	       selftest ? (passed ? ", self-test passed" : ", SELF-TEST FAILED") : "");
	return selftest && !passed;
}
