/*
 * Shutdown with live work: amio_poller_free while sockets, timers and a
 * channel are registered and registrar threads (Amy mode and inbox mode)
 * are still calling in. Proves: no crash (ASan/TSan builds run this too),
 * every call on a registrar or channel after the free returns -ESHUTDOWN
 * (the rule in amio.h), workers blocked in amio_registrar_wait wake up,
 * and once the handles are freed, fds and heap are back where they began.
 */
#include <pthread.h>

#include "amio_test.h"

#define WORKERS 4
#define SOCKS   16

struct shared {
	amio_poller *p;
	amio_channel *ch;
	int stop_polling;
	int freed; /* set once amio_poller_free returned */
};

struct worker {
	struct shared *sh;
	amio_registrar *r;
	pthread_t thread;
	int fds[SOCKS][2];
	uint64_t calls, ok, after; /* calls made; succeeded; -ESHUTDOWN after the free */
	int bad;                   /* a call after the free that did not return -ESHUTDOWN */
	int through;               /* set once a round got a call through (ok > 0) */
	int intervals;             /* interval timers started */
	bool inbox;                /* an AMIO_INBOX registrar */
};

/* One round of every registrar call; returns how many said -ESHUTDOWN. */
static int round_of_calls(struct worker *w, int i, bool freed)
{
	amio_notification out[8];
	int64_t rc[7];
	int64_t id;
	uint64_t msg = 1;
	int n = 0, shut = 0;

	id = amio_register(w->r, w->fds[i][1], AMIO_READ, w);
	rc[n++] = id;
	rc[n++] = amio_reregister(w->r, id > 0 ? (uint64_t)id : 1, AMIO_BOTH);
	rc[n++] = amio_deregister(w->r, id > 0 ? (uint64_t)id : 1);
	rc[n++] = amio_set_timeout(w->r, 1, w);
	/* A few intervals left running (the free must cancel them); after
	 * the free, every round tries one. */
	if (freed || w->intervals < 8) {
		rc[n] = amio_set_interval(w->r, 5, w);
		w->intervals += rc[n++] > 0;
	}
	rc[n++] = amio_channel_send(w->sh->ch, &msg);
	if (w->inbox)
		rc[n++] = amio_registrar_wait(w->r, out, 8, 0);
	for (int k = 0; k < n; k++) {
		w->calls++;
		shut += rc[k] == -ESHUTDOWN;
		w->ok += rc[k] >= 0;
	}
	if (freed) {
		w->after += (uint64_t)shut;
		w->bad += shut != n;
	}
	return shut;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	int i = 0;

	/* Run until the free, then keep calling: every call must refuse. */
	while (!ck_pr_load_int(&w->sh->freed)) {
		round_of_calls(w, i++ % SOCKS, false);
		if (w->ok && !ck_pr_load_int(&w->through))
			ck_pr_store_int(&w->through, 1);
	}
	for (int n = 0; n < 200; n++)
		round_of_calls(w, n % SOCKS, true);
	return NULL;
}

static void *poll_thread(void *arg)
{
	struct shared *sh = arg;
	amio_notification out[64];
	uint64_t msg;

	while (!ck_pr_load_int(&sh->stop_polling)) {
		int n = amio_poller_wait(sh->p, out, 64, 10);

		ck_assert_int_ge(n, 0);
		for (int i = 0; i < n; i++)
			if (out[i].events & AMIO_CHANNEL)
				while (amio_channel_try_recv(sh->ch, &msg) == 0)
					;
	}
	return NULL;
}

static void *idle(void *arg)
{
	return arg;
}

START_TEST(freeing_the_poller_under_live_work)
{
	struct shared sh = {0};
	struct worker w[WORKERS];
	amio_registrar *main_r;
	amio_notification out[4];
	pthread_t poller, warm[WORKERS + 1];
	uint64_t calls = 0, after = 0;
	int fds0, bad = 0;
	size_t heap0;

	/* Once-per-process allocations: a poller, and glibc's per-thread
	 * state for as many threads as the test starts (reused later). */
	amio_poller_free(t_poller(NULL));
	for (int i = 0; i <= WORKERS; i++)
		ck_assert_int_eq(pthread_create(&warm[i], NULL, idle, NULL), 0);
	for (int i = 0; i <= WORKERS; i++)
		pthread_join(warm[i], NULL);
	fds0 = t_count_fds();
	heap0 = t_heap_in_use();
	sh.p = t_poller(NULL);
	ck_assert_int_eq(amio_registrar_new(sh.p, 0, &main_r), 0);
	ck_assert_int_eq(amio_channel_new(main_r, 1024, sizeof(uint64_t), NULL, &sh.ch), 0);
	for (int i = 0; i < WORKERS; i++) {
		w[i] = (struct worker){.sh = &sh, .inbox = i % 2};
		/* Half Amy mode, half inbox mode. */
		ck_assert_int_eq(amio_registrar_new(sh.p, w[i].inbox ? AMIO_INBOX : 0, &w[i].r), 0);
		for (int s = 0; s < SOCKS; s++) {
			t_tcp_pair(w[i].fds[s]);
			t_write_str(w[i].fds[s][0], "x"); /* readable at once */
		}
	}
	ck_assert_int_eq(pthread_create(&poller, NULL, poll_thread, &sh), 0);
	for (int i = 0; i < WORKERS; i++)
		ck_assert_int_eq(pthread_create(&w[i].thread, NULL, work, &w[i]), 0);
	/* Every worker has got a call through before the free (on a busy
	 * machine a thread may not have run at all after a fixed sleep), and
	 * the work goes on a while longer. */
	for (int i = 0; i < WORKERS; i++)
		for (int64_t end = t_now_ms() + 30000; !ck_pr_load_int(&w[i].through);) {
			ck_assert_msg(t_now_ms() < end, "worker %d never got a call through", i);
			usleep(1000);
		}
	usleep(200 * 1000);

	/* The poll thread stops using p; the free comes from another thread
	 * while the workers keep calling in. */
	ck_pr_store_int(&sh.stop_polling, 1);
	amio_poller_stop(sh.p);
	pthread_join(poller, NULL);
	amio_poller_free(sh.p);
	ck_pr_store_int(&sh.freed, 1);
	for (int i = 0; i < WORKERS; i++) {
		pthread_join(w[i].thread, NULL);
		calls += w[i].calls;
		after += w[i].after;
		bad += w[i].bad;
		ck_assert_msg(w[i].ok > 0, "worker %d never got a call through", i);
	}
	ck_assert_msg(bad == 0, "%d rounds after the free with a call not refused", bad);
	/* The handles stay valid until freed, and still refuse. */
	ck_assert_int_eq(amio_register(main_r, 0, AMIO_READ, NULL), -ESHUTDOWN);
	ck_assert_int_eq(amio_registrar_wait(w[1].r, out, 4, -1), -ESHUTDOWN);
	amio_channel_free(sh.ch);
	amio_registrar_free(main_r);
	for (int i = 0; i < WORKERS; i++) {
		amio_registrar_free(w[i].r);
		for (int s = 0; s < SOCKS; s++) {
			close(w[i].fds[s][0]);
			close(w[i].fds[s][1]);
		}
	}
	ck_assert_int_eq(t_count_fds(), fds0);
	ck_assert_uint_eq(t_heap_in_use(), heap0);
	t_report("shutdown",
	         "amio_poller_free with sockets, timers, intervals and a channel live; 4 registrar "
	         "threads (2 Amy, 2 inbox) calling in throughout",
	         "no crash; every call after the free returned -ESHUTDOWN; fds and heap back to "
	         "start",
	         "%llu calls, %llu refused after the free, fds %d->%d", (unsigned long long)calls,
	         (unsigned long long)after, fds0, t_count_fds());
}
END_TEST

/* Threads asleep when the poller goes away: a worker in
 * amio_registrar_wait(-1), a sender in amio_channel_send_wait(-1). */
static void *sleeper(void *arg)
{
	amio_notification out[4];

	return (void *)(intptr_t)amio_registrar_wait(arg, out, 4, -1);
}

static void *blocked_sender(void *arg)
{
	uint64_t msg = 8;

	return (void *)(intptr_t)amio_channel_send_wait(arg, &msg, -1);
}

START_TEST(the_free_releases_blocked_waiters_and_senders)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r, *inbox;
	amio_channel *ch;
	pthread_t t1, t2;
	void *rc1, *rc2;
	uint64_t msg = 7;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &inbox), 0);
	ck_assert_int_eq(amio_channel_new(r, 1, sizeof(msg), NULL, &ch), 0);
	ck_assert_int_eq(amio_channel_send(ch, &msg), 0); /* now full */
	ck_assert_int_eq(pthread_create(&t1, NULL, sleeper, inbox), 0);
	ck_assert_int_eq(pthread_create(&t2, NULL, blocked_sender, ch), 0);
	usleep(50 * 1000);
	amio_poller_free(p);
	pthread_join(t1, &rc1);
	pthread_join(t2, &rc2);
	ck_assert_int_eq((int)(intptr_t)rc1, -ESHUTDOWN);
	ck_assert_int_eq((int)(intptr_t)rc2, -ESHUTDOWN);
	ck_assert_int_eq(amio_channel_send_wait(ch, &msg, 100), -ESHUTDOWN);
	amio_channel_free(ch);
	amio_registrar_free(inbox);
	amio_registrar_free(r);
	t_report("shutdown",
	         "amio_poller_free with a worker blocked in amio_registrar_wait(-1) and a "
	         "sender blocked in amio_channel_send_wait(-1) on a full channel",
	         "both woken with -ESHUTDOWN", "2 blocked threads");
}
END_TEST

int main(int argc, char **argv)
{
	Suite *s = suite_create("shutdown");
	TCase *tc = tcase_create("live");

	(void)argc;
	t_exact_heap(argv);
	t_require_io_uring();
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, freeing_the_poller_under_live_work);
	tcase_add_test(tc, the_free_releases_blocked_waiters_and_senders);
	suite_add_tcase(s, tc);
	return t_run(s);
}
