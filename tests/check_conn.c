/*
 * Connections (issue 19): the calls that take bookkeeping off programs.
 * Waking an inbox owner (amio_registrar_wake), calls that wait for room
 * instead of -EAGAIN (amio_registrar_set_queue_wait), an accept that keeps
 * listening through -EMFILE. Public API only, real sockets and threads;
 * the suite runs again on epoll (AMIO_BACKEND=epoll). Nothing here
 * measures a speed: "never early" bounds only, and stalls of 20 s.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "amio_test.h"

#define STALL_MS 20000

/* ---- amio_registrar_wake --------------------------------------------------- */

struct waker_case {
	amio_registrar *r;
	int returns; /* __atomic: waits that returned */
	int stop;    /* __atomic: the owner's own flag */
	int notes;   /* __atomic: notifications taken */
};

static void *wake_owner(void *arg)
{
	struct waker_case *w = arg;
	amio_notification n[4];

	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
		int rc = amio_registrar_wait(w->r, n, 4, -1);

		if (rc < 0)
			break;
		__atomic_add_fetch(&w->notes, rc, __ATOMIC_RELEASE);
		__atomic_add_fetch(&w->returns, 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

/* Each wake ends a wait without limit, whether the owner sleeps already or
 * not yet; the stop flag set before the last wake is seen. */
START_TEST(each_wake_ends_a_wait_without_limit)
{
	amio_poller *p = t_poller(NULL);
	pthread_t poll, owner;
	struct waker_case w = {0};
	int rounds = t_scale(2000);

	pthread_create(&poll, NULL, t_run_poller, p);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &w.r), 0);
	pthread_create(&owner, NULL, wake_owner, &w);
	for (int i = 0; i < rounds; i++) {
		int64_t end = t_now_ms() + STALL_MS;

		ck_assert_int_eq(amio_registrar_wake(w.r), 0);
		while (__atomic_load_n(&w.returns, __ATOMIC_ACQUIRE) <= i) {
			ck_assert_msg(t_now_ms() < end, "wake %d ended no wait", i);
			if (i % 2)
				sched_yield();
		}
	}
	__atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
	ck_assert_int_eq(amio_registrar_wake(w.r), 0);
	pthread_join(owner, NULL);
	ck_assert_int_eq(w.notes, 0);
	amio_registrar_free(w.r);
	t_stop_poller(p, poll);
	amio_poller_free(p);
}
END_TEST

/* A wake before the wait ends the next wait, once: the wait after it runs
 * its whole timeout (never early), and a wait that returns notifications
 * uses the wake up too. */
START_TEST(a_wake_ends_one_wait_only)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r, *amy;
	amio_notification n[4];
	pthread_t poll;
	int64_t t0, id;
	int got = 0;

	pthread_create(&poll, NULL, t_run_poller, p);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	ck_assert_int_eq(amio_registrar_new(p, 0, &amy), 0);
	ck_assert_int_eq(amio_registrar_wake(NULL), -EINVAL);
	ck_assert_int_eq(amio_registrar_wake(amy), -EINVAL);
	ck_assert_int_eq(amio_registrar_wake(r), 0);
	ck_assert_int_eq(amio_registrar_wake(r), 0); /* before a return: counts once */
	ck_assert_int_eq(amio_registrar_wait(r, n, 4, -1), 0);
	t0 = t_now_ms();
	ck_assert_int_eq(amio_registrar_wait(r, n, 4, 100), 0);
	ck_assert_int_ge(t_now_ms() - t0, 100);
	/* A wait that returns a notification ends the wake's wait too. */
	id = amio_set_timeout(r, 0, NULL);
	ck_assert_int_gt(id, 0);
	for (int64_t end = t_now_ms() + STALL_MS; !got && t_now_ms() < end;)
		got = amio_registrar_wait(r, n, 4, 10);
	ck_assert_int_eq(got, 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)id);
	id = amio_set_timeout(r, 0, NULL);
	ck_assert_int_gt(id, 0);
	usleep(20000);
	ck_assert_int_eq(amio_registrar_wake(r), 0);
	for (int64_t end = t_now_ms() + STALL_MS; !(got = amio_registrar_wait(r, n, 4, -1));)
		ck_assert_msg(t_now_ms() < end, "the timer never came"); /* woken before it */
	ck_assert_int_eq(got, 1);
	t0 = t_now_ms();
	ck_assert_int_eq(amio_registrar_wait(r, n, 4, 100), 0);
	ck_assert_int_ge(t_now_ms() - t0, 100);
	amio_registrar_free(amy);
	amio_registrar_free(r);
	t_stop_poller(p, poll);
	amio_poller_free(p);
}
END_TEST

/* ---- amio_registrar_set_queue_wait ----------------------------------------- */

/* queue_entries 2 holds one command: with a wait without limit, every call
 * gets through while the poll thread drains, and every timer fires. */
START_TEST(calls_that_wait_for_room_never_see_eagain)
{
	struct amio_poller_config cfg = {.queue_entries = 2};
	amio_poller *p = t_poller(&cfg);
	amio_registrar *r;
	pthread_t poll;
	int calls = t_scale(3000), fired = 0;

	pthread_create(&poll, NULL, t_run_poller, p);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	ck_assert_int_eq(amio_registrar_set_queue_wait(NULL, 0), -EINVAL);
	ck_assert_int_eq(amio_registrar_set_queue_wait(r, -2), -EINVAL);
	ck_assert_int_eq(amio_registrar_set_queue_wait(r, -1), 0);
	for (int i = 0; i < calls; i++) {
		int64_t id = amio_set_timeout(r, 0, NULL);

		ck_assert_msg(id > 0, "call %d: %s", i, amio_strerror((int)id));
	}
	for (int64_t end = t_now_ms() + STALL_MS; fired < calls;) {
		amio_notification n[64];
		int rc = amio_registrar_wait(r, n, 64, 10);

		ck_assert_int_ge(rc, 0);
		fired += rc;
		ck_assert_msg(t_now_ms() < end, "%d of %d timers fired", fired, calls);
	}
	amio_registrar_free(r);
	t_stop_poller(p, poll);
	amio_poller_free(p);
}
END_TEST

/* Nobody drains (the poller never ran): the default is -EAGAIN at once; a
 * bounded wait ends with -EAGAIN, never before its bound. */
START_TEST(a_bounded_wait_for_room_ends_with_eagain_never_early)
{
	struct amio_poller_config cfg = {.queue_entries = 2};
	amio_poller *p = t_poller(&cfg);
	amio_registrar *r;
	int64_t t0, tid;

	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	tid = amio_set_timeout(r, 1000, NULL);
	ck_assert_int_gt(tid, 0);
	ck_assert_int_eq(amio_set_timeout(r, 1000, NULL), -EAGAIN);
	ck_assert_int_eq(amio_registrar_set_queue_wait(r, 60), 0);
	for (int k = 0; k < 3; k++) {
		t0 = t_now_ms();
		switch (k) {
		case 0:
			ck_assert_int_eq(amio_set_timeout(r, 1000, NULL), -EAGAIN);
			break;
		case 1:
			ck_assert_int_eq(amio_cancel_timer(r, (uint64_t)tid), -EAGAIN);
			break;
		default:
			ck_assert_int_eq(amio_deregister(r, (uint64_t)tid), -EAGAIN);
			break;
		}
		ck_assert_int_ge(t_now_ms() - t0, 60);
	}
	ck_assert_int_eq(amio_registrar_set_queue_wait(r, 0), 0);
	ck_assert_int_eq(amio_set_timeout(r, 1000, NULL), -EAGAIN);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

struct blocked_call {
	amio_registrar *r;
	int64_t rc;
	int started; /* __atomic */
};

static void *blocked_call_fn(void *arg)
{
	struct blocked_call *b = arg;

	__atomic_store_n(&b->started, 1, __ATOMIC_RELEASE);
	b->rc = amio_set_timeout(b->r, 1000, NULL);
	return NULL;
}

/* A call waiting for room without limit ends with -ESHUTDOWN when the
 * poller is freed. */
START_TEST(a_call_waiting_for_room_ends_when_the_poller_is_freed)
{
	struct amio_poller_config cfg = {.queue_entries = 2};
	amio_poller *p = t_poller(&cfg);
	struct blocked_call b = {0};
	pthread_t t;

	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &b.r), 0);
	ck_assert_int_gt(amio_set_timeout(b.r, 1000, NULL), 0);
	ck_assert_int_eq(amio_registrar_set_queue_wait(b.r, -1), 0);
	pthread_create(&t, NULL, blocked_call_fn, &b);
	while (!__atomic_load_n(&b.started, __ATOMIC_ACQUIRE))
		sched_yield();
	usleep(20000); /* asleep in the call, most likely (either way it ends) */
	amio_poller_free(p);
	pthread_join(t, NULL);
	ck_assert_int_eq(b.rc, -ESHUTDOWN);
	amio_registrar_free(b.r);
}
END_TEST

/* Amy mode on one thread: the poll thread's own full queue is applied by
 * the call itself, so a program that never waits in between still gets
 * every id; each timer fires once. */
START_TEST(on_the_poll_thread_a_full_queue_is_applied_by_the_call)
{
	struct amio_poller_config cfg = {.queue_entries = 2};
	amio_poller *p = t_poller(&cfg);
	amio_registrar *r;
	amio_notification n[64];
	int calls = 500, fired = 0;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_poller_wait(p, n, 64, 0), 0); /* this is the poll thread */
	ck_assert_int_eq(amio_registrar_set_queue_wait(r, -1), 0);
	for (int i = 0; i < calls; i++) {
		int64_t id = amio_set_timeout(r, 0, NULL);

		ck_assert_msg(id > 0, "call %d: %s", i, amio_strerror((int)id));
	}
	for (int64_t end = t_now_ms() + STALL_MS; fired < calls;) {
		int rc = amio_poller_wait(p, n, 64, 10);

		ck_assert_int_ge(rc, 0);
		for (int k = 0; k < rc; k++)
			ck_assert_uint_eq(n[k].events, AMIO_TIMER);
		fired += rc;
		ck_assert_msg(t_now_ms() < end, "%d of %d timers fired", fired, calls);
	}
	ck_assert_int_eq(amio_poller_wait(p, n, 64, 20), 0); /* none twice */
	ck_assert_int_eq(amio_registrar_set_queue_wait(r, 0), 0);
	ck_assert_int_gt(amio_set_timeout(r, 0, NULL), 0);
	ck_assert_int_eq(amio_set_timeout(r, 0, NULL), -EAGAIN); /* the default again */
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- An accept that keeps listening ------------------------------------------ */

/* Amy mode: the next notification of id within STALL_MS. */
static amio_notification next_note(amio_poller *p, uint64_t id)
{
	amio_notification n[1];
	int64_t end = t_now_ms() + STALL_MS;

	for (;;) {
		int rc = amio_poller_wait(p, n, 1, 10);

		ck_assert_int_ge(rc, 0);
		if (rc) {
			ck_assert_uint_eq(n[0].id, id);
			return n[0];
		}
		ck_assert_msg(t_now_ms() < end, "no notification for id %llu",
		              (unsigned long long)id);
	}
}

/* The process at its fd limit: a connection that comes gives a note with
 * -EMFILE (no DONE); once fds are free again it is accepted from the
 * backlog, on the same id. _i 0: then cancelled; 1: cancelled during the
 * back-off, which ends it at once. */
START_TEST(an_accept_out_of_fds_says_so_and_listens_again)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	struct amio_poller_stats st;
	struct rlimit orig, low;
	amio_notification n;
	uint16_t port;
	int lfd = t_listen(&port), cfd, maxfd = 0;
	int64_t id;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_poller_wait(p, &n, 1, 0), 0); /* enabled, with the fds it needs */
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(cfd, 0);
	for (int fd = 0; fd < 65536; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			maxfd = fd;
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &orig), 0);
	low = orig;
	low.rlim_cur = (rlim_t)maxfd + 1; /* every fd below it open, or above: none free */
	for (int fd = 0; fd <= maxfd; fd++)
		if (fcntl(fd, F_GETFD) < 0)
			ck_assert_int_ge(dup2(lfd, fd), 0); /* fill the holes */
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	/* Armed under the low limit: io_uring's accept takes RLIMIT_NOFILE
	 * when its request is prepared (io_accept_prep), not per connection. */
	id = amio_accept(r, lfd, NULL);
	ck_assert_int_gt(id, 0);
	{
		struct sockaddr_in a = {.sin_family = AF_INET,
		                        .sin_port = htons(port),
		                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

		ck_assert_int_eq(connect(cfd, (struct sockaddr *)&a, sizeof(a)), 0);
	}
	n = next_note(p, (uint64_t)id);
	ck_assert_uint_eq(n.events, AMIO_ACCEPT);
	ck_assert_int_eq(n.res, -EMFILE);
	amio_poller_stats(p, &st);
	ck_assert_uint_ge(st.accept_backoffs, 1);
	if (_i == 1) {
		ck_assert_int_eq(amio_cancel(r, (uint64_t)id), 0);
		do
			n = next_note(p, (uint64_t)id);
		while (!(n.events & AMIO_DONE) && n.res == -EMFILE);
		ck_assert_uint_eq(n.events, AMIO_ACCEPT | AMIO_DONE);
		ck_assert_int_eq(n.res, -ECANCELED);
		ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &orig), 0);
	} else {
		ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &orig), 0);
		do /* more back-offs may come before the limit was seen */
			n = next_note(p, (uint64_t)id);
		while (n.events == AMIO_ACCEPT && n.res == -EMFILE);
		ck_assert_uint_eq(n.events, AMIO_ACCEPT);
		ck_assert_int_ge(n.res, 0);
		ck_assert_int_eq(write(cfd, "x", 1), 1);
		{
			char c = 0;
			int64_t end = t_now_ms() + STALL_MS;

			while (read(n.res, &c, 1) != 1)
				ck_assert_msg(t_now_ms() < end,
				              "the accepted fd is not the client's");
			ck_assert_int_eq(c, 'x');
		}
		close(n.res);
		ck_assert_int_eq(amio_cancel(r, (uint64_t)id), 0);
		n = next_note(p, (uint64_t)id);
		ck_assert_uint_eq(n.events, AMIO_ACCEPT | AMIO_DONE);
		ck_assert_int_eq(n.res, -ECANCELED);
	}
	close(cfd);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

static Suite *conn_suite(void)
{
	Suite *s = suite_create("conn");
	TCase *tc;

	tc = tcase_create("wake");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, each_wake_ends_a_wait_without_limit);
	tcase_add_test(tc, a_wake_ends_one_wait_only);
	suite_add_tcase(s, tc);

	tc = tcase_create("queue wait");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, calls_that_wait_for_room_never_see_eagain);
	tcase_add_test(tc, a_bounded_wait_for_room_ends_with_eagain_never_early);
	tcase_add_test(tc, a_call_waiting_for_room_ends_when_the_poller_is_freed);
	tcase_add_test(tc, on_the_poll_thread_a_full_queue_is_applied_by_the_call);
	suite_add_tcase(s, tc);

	tc = tcase_create("accept");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, an_accept_out_of_fds_says_so_and_listens_again, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	t_require_io_uring();
	return t_run(conn_suite());
}
