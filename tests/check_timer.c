/* Timers: Amy's timer behaviours (never early, intervals re-armed), plus what
 * Amy gets wrong (set_timeout(0), the caller's clock), cancel, coalescing and
 * 100,000 live timers. */
#include <pthread.h>

#include "amio_test.h"

struct fixture {
	amio_poller *p;
	amio_registrar *r;
	int fds_before;
};

static void setup(struct fixture *f)
{
	f->fds_before = t_count_fds();
	f->p = t_poller(NULL);
	ck_assert_int_eq(amio_registrar_new(f->p, 0, &f->r), 0);
}

static void teardown(struct fixture *f)
{
	amio_registrar_free(f->r);
	amio_poller_free(f->p);
	ck_assert_int_eq(t_count_fds(), f->fds_before);
}

START_TEST(a_50ms_timeout_fires_once_and_never_early)
{
	struct fixture f;
	amio_notification n[4];
	int64_t t0, id;
	int tag;

	setup(&f);
	t0 = t_now_ms();
	id = amio_set_timeout(f.r, 50, &tag);
	ck_assert_int_gt(id, 0);
	ck_assert_int_eq(t_collect(f.p, n, 1, 2000), 1);
	ck_assert_int_ge(t_now_ms() - t0, 50);
	ck_assert_uint_eq(n[0].id, (uint64_t)id);
	ck_assert_uint_eq(n[0].events, AMIO_TIMER);
	ck_assert_ptr_eq(n[0].data, &tag);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 200), 0);
	ck_assert_int_eq(amio_cancel_timer(f.r, (uint64_t)id), -ENOENT); /* finished */
	teardown(&f);
}
END_TEST

/* Amy refuses 0; here it is due at the call. It fires (how soon is a
 * latency, measured by bench/properties.sh: row timeout-0). */
START_TEST(a_zero_timeout_fires)
{
	struct fixture f;
	amio_notification n[4];
	int64_t id;

	setup(&f);
	id = amio_set_timeout(f.r, 0, NULL);
	ck_assert_int_gt(id, 0);
	ck_assert_int_eq(t_collect(f.p, n, 1, 5000), 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)id);
	ck_assert_uint_eq(n[0].events, AMIO_TIMER);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 50), 0); /* once */
	teardown(&f);
}
END_TEST

START_TEST(a_50ms_interval_fires_on_time_until_cancelled)
{
	struct fixture f;
	amio_notification n[4];
	int64_t t0, id;

	setup(&f);
	t0 = t_now_ms();
	id = amio_set_interval(f.r, 50, NULL);
	ck_assert_int_gt(id, 0);
	for (int i = 1; i <= 4; i++) {
		ck_assert_int_eq(t_collect(f.p, n, 1, 2000), 1);
		ck_assert_uint_eq(n[0].id, (uint64_t)id);
		ck_assert_int_ge(t_now_ms() - t0, i * 50);
	}
	ck_assert_int_eq(amio_cancel_timer(f.r, (uint64_t)id), 0);
	t0 = t_now_ms();
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 250), 0);
	ck_assert_int_ge(t_now_ms() - t0, 250);
	ck_assert_int_eq(amio_cancel_timer(f.r, (uint64_t)id), -ENOENT);
	teardown(&f);
}
END_TEST

START_TEST(a_cancelled_timeout_never_fires)
{
	struct fixture f;
	amio_notification n[4];
	int64_t id;

	setup(&f);
	/* Armed (a wait applies the command), then cancelled before it is
	 * due. A wait that ran 100 ms late on a busy machine hands it out
	 * first: then it was not cancelled in time, and we try again. */
	for (int tries = 0;; tries++) {
		int rc;

		id = amio_set_timeout(f.r, 100, NULL);
		ck_assert_int_gt(id, 0);
		rc = amio_poller_wait(f.p, n, 4, 10);
		if (rc == 0)
			break;
		ck_assert_int_eq(rc, 1);
		ck_assert_uint_eq(n[0].id, (uint64_t)id);
		ck_assert_msg(tries < 20, "20 waits of 10 ms each took over 100 ms");
	}
	ck_assert_int_eq(amio_cancel_timer(f.r, (uint64_t)id), 0);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 250), 0);
	ck_assert_int_eq(amio_cancel_timer(f.r, (uint64_t)id), -ENOENT);
	teardown(&f);
}
END_TEST

/* The kernel may already have fired; cancel still wins if it returns first. */
START_TEST(a_timer_cancelled_after_it_fired_but_before_the_wait_is_not_reported)
{
	struct fixture f;
	amio_notification n[4];
	int64_t id;

	setup(&f);
	id = amio_set_interval(f.r, 10, NULL);
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
	usleep(50000); /* ticks are posted, not reaped */
	ck_assert_int_eq(amio_cancel_timer(f.r, (uint64_t)id), 0);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 100), 0);
	teardown(&f);
}
END_TEST

START_TEST(timer_arguments_are_checked)
{
	struct fixture f;
	int fds[2];
	int64_t sock;

	setup(&f);
	t_tcp_pair(fds);
	ck_assert_int_eq(amio_set_interval(f.r, 0, NULL), -EINVAL);
	ck_assert_int_eq(amio_set_timeout(f.r, UINT64_MAX, NULL), -EINVAL);
	ck_assert_int_eq(amio_cancel_timer(f.r, 424242), -ENOENT);
	sock = amio_register(f.r, fds[0], AMIO_READ, NULL);
	ck_assert_int_eq(amio_cancel_timer(f.r, (uint64_t)sock), -ENOENT); /* not a timer */
	ck_assert_int_eq(amio_deregister(f.r, (uint64_t)sock), 0);
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

/* Amy starts the clock when the poller gets the command; we start it at the
 * call: a poller that comes late finds the timer already due. A (100 ms) is
 * set, then B (50 ms) 100 ms later, and the poller sees both commands in
 * its first wait: from the call, A is due first (at least 50 ms before B,
 * however late the poller comes); from the poller, B would be. How late A
 * fires is a latency (bench/properties.sh: row late-poller). */
START_TEST(the_clock_starts_at_the_call_not_when_the_poller_runs)
{
	struct fixture f;
	amio_notification n[4];
	int64_t t0, tb, a, b;

	setup(&f);
	t0 = t_now_ms();
	a = amio_set_timeout(f.r, 100, NULL);
	ck_assert_int_gt(a, 0);
	usleep(100000);
	tb = t_now_ms();
	b = amio_set_timeout(f.r, 50, NULL);
	ck_assert_int_gt(b, 0);
	ck_assert_int_eq(t_collect(f.p, n, 2, 5000), 2);
	ck_assert_uint_eq(n[0].id, (uint64_t)a);
	ck_assert_uint_eq(n[1].id, (uint64_t)b);
	ck_assert_int_ge(t_now_ms() - t0, 100);
	ck_assert_int_ge(t_now_ms() - tb, 50); /* never early */
	teardown(&f);
}
END_TEST

START_TEST(missed_interval_ticks_coalesce_into_one_notification)
{
	struct fixture f;
	amio_notification n[16];
	struct amio_poller_stats st;
	int64_t id;

	setup(&f);
	id = amio_set_interval(f.r, 10, NULL);
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
	usleep(120000); /* about 12 ticks with nobody reaping */
	ck_assert_int_eq(amio_poller_wait(f.p, n, 16, 100), 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)id);
	amio_poller_stats(f.p, &st);
	ck_assert_int_eq(amio_cancel_timer(f.r, (uint64_t)id), 0);
	teardown(&f);
}
END_TEST

START_TEST(timers_follow_inbox_routing)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification n[2];
	int64_t id;

	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	id = amio_set_timeout(r, 20, NULL);
	/* This thread polls too: deliveries go to the inbox, not to wait. */
	ck_assert_int_eq(amio_poller_wait(p, n, 2, 100), 0);
	ck_assert_int_eq(amio_registrar_wait(r, n, 2, 0), 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)id);
	ck_assert_uint_eq(n[0].events, AMIO_TIMER);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- 100,000 live timers ------------------------------------------------ */

static int TIMERS; /* 100,000 x AMIO_TEST_SCALE */

struct timer_rec {
	int64_t due_ms; /* call time + duration, by the registering thread */
	int fired;
};

struct many {
	amio_poller *p;
	struct timer_rec *rec;
	int registered;
};

static void *register_many(void *arg)
{
	struct many *m = arg;
	amio_registrar *r;
	unsigned seed = 42;

	ck_assert_int_eq(amio_registrar_new(m->p, 0, &r), 0);
	for (int i = 0; i < TIMERS; i++) {
		uint64_t ms = 1 + rand_r(&seed) % 300;
		int64_t id;

		m->rec[i].due_ms = t_now_ms() + (int64_t)ms;
		while ((id = amio_set_timeout(r, ms, &m->rec[i])) == -EAGAIN)
			sched_yield(); /* the queue holds 4095: let the poller run */
		if (id <= 0)
			ck_abort_msg("set_timeout: %s", amio_strerror((int)id));
	}
	ck_pr_store_int(&m->registered, 1);
	amio_registrar_free(r);
	return NULL;
}

START_TEST(a_hundred_thousand_live_timers_each_fire_once_on_time)
{
	struct many m = {.rec = calloc(TIMERS, sizeof(struct timer_rec))};
	amio_notification *n = calloc(1024, sizeof(*n));
	int fired = 0, early = 0, twice = 0;
	int64_t end = t_now_ms() + 30000;
	pthread_t t;

	m.p = t_poller(NULL);
	ck_assert_int_eq(pthread_create(&t, NULL, register_many, &m), 0);
	while (fired < TIMERS && t_now_ms() < end) {
		int rc = amio_poller_wait(m.p, n, 1024, 500);

		ck_assert_int_ge(rc, 0);
		for (int i = 0; i < rc; i++) {
			struct timer_rec *tr = n[i].data;
			/* due_ms is written before the id exists: the poller's
			 * notification happens after it. */
			early += t_now_ms() < tr->due_ms;
			twice += tr->fired++ > 0;
		}
		fired += rc;
	}
	pthread_join(t, NULL);
	fprintf(stderr, "timers: %d fired, %d early, %d twice\n", fired, early, twice);
	ck_assert_int_eq(fired, TIMERS);
	ck_assert_int_eq(early, 0);
	ck_assert_int_eq(twice, 0);
	ck_assert_int_eq(amio_poller_wait(m.p, n, 1024, 100), 0);
	amio_poller_free(m.p);
	free(n);
	free(m.rec);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("timer");
	TCase *tc = tcase_create("amy");

	t_require_io_uring();
	TIMERS = t_scale(100000);
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, a_50ms_timeout_fires_once_and_never_early);
	tcase_add_test(tc, a_50ms_interval_fires_on_time_until_cancelled);
	tcase_add_test(tc, a_cancelled_timeout_never_fires);
	suite_add_tcase(s, tc);

	tc = tcase_create("beyond_amy");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, a_zero_timeout_fires);
	tcase_add_test(tc, the_clock_starts_at_the_call_not_when_the_poller_runs);
	tcase_add_test(tc, a_timer_cancelled_after_it_fired_but_before_the_wait_is_not_reported);
	tcase_add_test(tc, missed_interval_ticks_coalesce_into_one_notification);
	tcase_add_test(tc, timer_arguments_are_checked);
	tcase_add_test(tc, timers_follow_inbox_routing);
	suite_add_tcase(s, tc);

	tc = tcase_create("scale");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, a_hundred_thousand_live_timers_each_fire_once_on_time);
	suite_add_tcase(s, tc);
	return t_run(s);
}
