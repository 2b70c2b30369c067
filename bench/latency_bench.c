/*
 * latency_bench: how late do amio's timers, deadlines and shutdown wakeups
 * arrive? The unit tests assert only that none comes early and that each
 * comes at all; how soon is a property of the machine's load, measured here
 * (bench/properties.sh runs every row and compares it with the bound the
 * tests once asserted).
 *
 *   timeout-0         amio_set_timeout(0): call to its AMIO_TIMER
 *   late-poller       amio_set_timeout(10), the poll thread away 10 ms: how
 *                     long after the due time (call + 10 ms) it is reported
 *   deadline-0        amio_set_deadline(0) on an idle recv: call to its DONE
 *   deadline-earlier  a recv's deadline moved from 60 s to 10 ms: its DONE
 *                     after the new due time
 *   free-wakes-waiter amio_poller_free with a worker asleep in
 *                     amio_registrar_wait(-1): the call to the worker's return
 *   stop-doorbell     a channel send to a worker asleep on its inbox, then
 *                     amio_poller_stop before the poll thread's wait: the
 *                     send to the worker's return (the stopping wait must
 *                     still ring the doorbell of what it delivered)
 *
 * The poll thread is the main thread (Amy mode) except in free-wakes-waiter.
 * Usage: latency_bench -r row [-n samples]   (default 200)
 * Output: one human line, then `RESULT bench=latency row=... n=... p50_us=...
 * p99_us=... max_us=...`. Exit 1 on a wrong notification or one that never
 * comes (10 s).
 */
#define _GNU_SOURCE
#include <amio.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BENCH_NAME "latency_bench"
#include "micro_common.h"

#define HANG_MS 10000

/* A connected TCP pair on 127.0.0.1: fds[0] client, fds[1] server side. */
static void tcp_pair(int fds[2])
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &len) < 0)
		die("listen", errno);
	fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fds[0] < 0 || connect(fds[0], (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect", errno);
	fds[1] = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fds[1] < 0)
		die("accept", errno);
	close(l);
}

static amio_poller *new_poller(void)
{
	struct amio_poller_config cfg;
	amio_poller *p;
	int rc;

	poller_config(&cfg);
	if ((rc = amio_poller_new(&p, &cfg)) < 0)
		die_amio("amio_poller_new", rc);
	return p;
}

/* Amy mode: wait for id's notification (with AMIO_DONE if done); returns
 * the time it was handed out. */
static int64_t wait_for(amio_poller *p, uint64_t id, bool done)
{
	int64_t end = now_ns() + (int64_t)HANG_MS * 1000000;
	amio_notification n[8];

	for (;;) {
		int rc = amio_poller_wait(p, n, 8, HANG_MS);
		int64_t t = now_ns();

		if (rc < 0)
			die_amio("amio_poller_wait", rc);
		for (int i = 0; i < rc; i++)
			if (n[i].id == id && (!done || (n[i].events & AMIO_DONE)))
				return t;
		if (t > end)
			die("no notification for 10 s", ETIMEDOUT);
	}
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- Rows: each fills lat_ns[0..n) ------------------------------------- */

static void timers(const char *row, int64_t *lat_ns, int n)
{
	bool late = !strcmp(row, "late-poller");
	uint64_t ms = late ? 10 : 0;
	amio_poller *p = new_poller();
	amio_notification none[1];
	amio_registrar *r;
	int rc;

	if ((rc = amio_registrar_new(p, 0, &r)) < 0)
		die_amio("amio_registrar_new", rc);
	(void)amio_poller_wait(p, none, 1, 0); /* this thread polls */
	for (int i = 0; i < n; i++) {
		int64_t t0 = now_ns(), id = amio_set_timeout(r, ms, NULL);

		if (id < 0)
			die_amio("amio_set_timeout", (int)id);
		if (late)
			sleep_ms((int)ms); /* the poll thread is away until it is due */
		lat_ns[i] = wait_for(p, (uint64_t)id, false) - t0 - (int64_t)ms * 1000000;
	}
	amio_registrar_free(r);
	amio_poller_free(p);
}

static void deadlines(const char *row, int64_t *lat_ns, int n)
{
	bool earlier = !strcmp(row, "deadline-earlier");
	int64_t due_ns = earlier ? 10 * 1000000 : 0;
	amio_poller *p = new_poller();
	amio_registrar *r;
	amio_pool *pool;
	int fds[2], rc;

	tcp_pair(fds);
	if ((rc = amio_registrar_new(p, 0, &r)) < 0 || (rc = amio_pool_new(r, 2, 64, &pool)) < 0)
		die_amio("setup", rc);
	for (int i = 0; i < n; i++) {
		int64_t id = amio_recv(r, fds[1], pool, NULL), t0;

		if (id < 0)
			die_amio("amio_recv", (int)id);
		if (earlier && (rc = amio_set_deadline(r, (uint64_t)id, 60000)) < 0)
			die_amio("amio_set_deadline", rc);
		t0 = now_ns();
		if ((rc = amio_set_deadline(r, (uint64_t)id, earlier ? 10 : 0)) < 0)
			die_amio("amio_set_deadline", rc);
		lat_ns[i] = wait_for(p, (uint64_t)id, true) - t0 - due_ns;
	}
	if ((rc = amio_pool_free(pool)) < 0)
		die_amio("amio_pool_free", rc);
	amio_registrar_free(r);
	amio_poller_free(p);
	close(fds[0]);
	close(fds[1]);
}

struct sleeper {
	amio_registrar *r;
	int rc;
	int64_t woke_ns; /* read after the join */
};

static void *sleeper_main(void *arg)
{
	struct sleeper *s = arg;
	amio_notification n[1];

	s->rc = amio_registrar_wait(s->r, n, 1, -1);
	s->woke_ns = now_ns();
	return NULL;
}

static void stop_doorbell(int64_t *lat_ns, int n)
{
	amio_poller *p = new_poller();
	amio_notification none[1];
	amio_channel *ch;
	struct sleeper s;
	int rc, msg = 1;

	if ((rc = amio_registrar_new(p, AMIO_INBOX, &s.r)) < 0 ||
	    (rc = amio_channel_new(s.r, 8, sizeof(msg), NULL, &ch)) < 0)
		die_amio("setup", rc);
	(void)amio_poller_wait(p, none, 1, 0); /* this thread polls; the channel is live */
	for (int i = 0; i < n; i++) {
		pthread_t t;
		int64_t t0;

		s.rc = 0;
		if ((rc = pthread_create(&t, NULL, sleeper_main, &s)))
			die("pthread_create", rc);
		sleep_ms(2); /* asleep by now, most likely */
		t0 = now_ns();
		if ((rc = amio_channel_send(ch, &msg)) < 0 || (rc = amio_poller_stop(p)) < 0)
			die_amio("send, stop", rc);
		if ((rc = amio_poller_wait(p, none, 1, HANG_MS)) < 0)
			die_amio("amio_poller_wait", rc);
		pthread_join(t, NULL);
		if (s.rc != 1)
			die_amio("the worker's wait", s.rc < 0 ? s.rc : -EPROTO);
		lat_ns[i] = s.woke_ns - t0;
		while (amio_channel_try_recv(ch, &msg) == 0)
			;
	}
	amio_channel_free(ch);
	amio_registrar_free(s.r);
	amio_poller_free(p);
}

static void free_wakes_waiter(int64_t *lat_ns, int n)
{
	for (int i = 0; i < n; i++) {
		amio_poller *p = new_poller();
		struct sleeper s = {.rc = 1};
		amio_notification none[1];
		pthread_t t;
		int64_t t0;
		int rc;

		(void)amio_poller_wait(p, none, 1, 0);
		if ((rc = amio_registrar_new(p, AMIO_INBOX, &s.r)) < 0)
			die_amio("amio_registrar_new", rc);
		if ((rc = pthread_create(&t, NULL, sleeper_main, &s)))
			die("pthread_create", rc);
		sleep_ms(2); /* asleep by now, most likely */
		t0 = now_ns();
		amio_poller_free(p);
		pthread_join(t, NULL);
		if (s.rc != -ESHUTDOWN)
			die_amio("amio_registrar_wait after the free", s.rc);
		lat_ns[i] = s.woke_ns - t0;
		amio_registrar_free(s.r);
	}
}

/* ---- Report ---------------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	const char *row = NULL;
	int n = 200, c, early;
	int64_t *lat;

	while ((c = getopt(argc, argv, "r:n:")) != -1) {
		if (c == 'r')
			row = optarg;
		else if (c == 'n')
			n = atoi(optarg);
		else
			row = NULL, n = 0;
	}
	if (!row || n < 1 || !(lat = calloc((size_t)n, sizeof(*lat)))) {
		fprintf(stderr, "usage: latency_bench -r timeout-0|late-poller|deadline-0|"
		                "deadline-earlier|free-wakes-waiter|stop-doorbell [-n samples]\n");
		return 2;
	}
	if (!strcmp(row, "timeout-0") || !strcmp(row, "late-poller"))
		timers(row, lat, n);
	else if (!strcmp(row, "deadline-0") || !strcmp(row, "deadline-earlier"))
		deadlines(row, lat, n);
	else if (!strcmp(row, "free-wakes-waiter"))
		free_wakes_waiter(lat, n);
	else if (!strcmp(row, "stop-doorbell"))
		stop_doorbell(lat, n);
	else
		return fprintf(stderr, "latency_bench: no row %s\n", row), 2;
	qsort(lat, (size_t)n, sizeof(*lat), cmp_i64);
	early = lat[0] < 0; /* a contract violation: check_timer would catch it too */
	if (early)
		fprintf(stderr, "latency_bench: %s: one came %.1f us early\n", row, -lat[0] / 1e3);
	printf("%s: %d samples: p50 %.1f us, p99 %.1f us, max %.1f us late\n", row, n,
	       lat[n / 2] / 1e3, lat[n * 99 / 100] / 1e3, lat[n - 1] / 1e3);
	printf("RESULT bench=latency row=%s n=%d p50_us=%.1f p99_us=%.1f max_us=%.1f early=%d\n",
	       row, n, lat[n / 2] / 1e3, lat[n * 99 / 100] / 1e3, lat[n - 1] / 1e3, early);
	free(lat);
	return early;
}
