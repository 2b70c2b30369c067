/* Poller semantics on one thread: readiness modes, deregistration, errors,
 * waiting rules (DESIGN rules 1, 3, 4, 5, 8 and Amy's socket behaviours). */
#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <sched.h>

#include <poll.h>

#include "amio_test.h"

struct fixture {
	amio_poller *p;
	amio_registrar *r;
	int fds_before;
};

static void setup(struct fixture *f, const struct amio_poller_config *cfg)
{
	f->fds_before = t_count_fds();
	f->p = t_poller(cfg);
	ck_assert_int_eq(amio_registrar_new(f->p, 0, &f->r), 0);
}

static void teardown(struct fixture *f)
{
	amio_registrar_free(f->r);
	amio_poller_free(f->p);
	ck_assert_int_eq(t_count_fds(), f->fds_before);
}

/* ---- Lifecycle and arguments -------------------------------------------- */

START_TEST(poller_with_bad_config_is_refused)
{
	struct amio_poller_config cfg = {.flags = 1u << 30};
	amio_poller *p = NULL;

	ck_assert_int_eq(amio_poller_new(&p, &cfg), -EINVAL);
	cfg = (struct amio_poller_config){.max_registrations = 1u << 24};
	ck_assert_int_eq(amio_poller_new(&p, &cfg), -EINVAL);
	ck_assert_int_eq(amio_poller_new(NULL, NULL), -EINVAL);
}
END_TEST

START_TEST(wait_rejects_bad_arguments_and_returns_nothing_when_idle)
{
	struct fixture f;
	amio_notification n[4];
	int64_t t0;

	setup(&f, NULL);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 0, 0), -EINVAL);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, -2), -EINVAL);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 0), 0);
	t0 = t_now_ms();
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 50), 0);
	ck_assert_int_ge(t_now_ms() - t0, 50);
	teardown(&f);
}
END_TEST

START_TEST(bad_registrations_fail_at_once)
{
	struct fixture f;
	int fds[2];

	setup(&f, NULL);
	t_tcp_pair(fds);
	ck_assert_int_eq(amio_register(f.r, -1, AMIO_READ, NULL), -EBADF);
	ck_assert_int_eq(amio_register(f.r, fds[0], 0, NULL), -EINVAL);
	ck_assert_int_eq(amio_register(f.r, fds[0], AMIO_READ | AMIO_TIMER, NULL), -EINVAL);
	ck_assert_int_eq(amio_register(f.r, fds[0], AMIO_READ | AMIO_LEVEL | AMIO_ONESHOT, NULL),
	                 -EINVAL);
	ck_assert_int_eq(amio_deregister(f.r, 12345), -ENOENT);
	ck_assert_int_eq(amio_deregister(f.r, 0), -ENOENT);
	ck_assert_int_eq(amio_reregister(f.r, 999, AMIO_READ), -ENOENT);
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

/* ---- Readiness ------------------------------------------------------------ */

START_TEST(readiness_present_at_registration_is_reported_at_once)
{
	struct fixture f;
	amio_notification n[4];
	int fds[2], tag;
	int64_t id;

	setup(&f, NULL);
	t_tcp_pair(fds);
	t_write_str(fds[0], "hello\n");
	usleep(10000);
	id = amio_register(f.r, fds[1], AMIO_READ, &tag);
	ck_assert_int_gt(id, 0);
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)id);
	ck_assert_ptr_eq(n[0].data, &tag);
	ck_assert_uint_eq(n[0].events, AMIO_READ);
	ck_assert_int_eq(n[0].error, 0);
	ck_assert_int_eq(amio_deregister(f.r, (uint64_t)id), 0);
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

/* Amy: a connected socket registered for write is reported exactly once. */
START_TEST(connected_socket_registered_for_write_is_reported_exactly_once)
{
	struct fixture f;
	amio_notification n[4];
	int fds[2];
	int64_t id;

	setup(&f, NULL);
	t_tcp_pair(fds);
	id = amio_register(f.r, fds[0], AMIO_WRITE, NULL);
	ck_assert_int_gt(id, 0);
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)id);
	ck_assert_uint_eq(n[0].events, AMIO_WRITE);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 250), 0);
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

START_TEST(edge_triggered_reports_each_new_arrival_once)
{
	struct fixture f;
	amio_notification n[4];
	char buf[64];
	int fds[2];
	int64_t id;

	setup(&f, NULL);
	t_tcp_pair(fds);
	id = amio_register(f.r, fds[1], AMIO_READ, NULL);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 50), 0);
	t_write_str(fds[0], "a");
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)id);
	/* Not drained, but no new edge: nothing more. */
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 100), 0);
	t_write_str(fds[0], "b");
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
	ck_assert_int_eq(read(fds[1], buf, sizeof(buf)), 2);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 100), 0);
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

START_TEST(level_triggered_reports_every_wait_until_drained)
{
	struct fixture f;
	amio_notification n[4];
	char buf[64];
	int fds[2];
	int64_t id;

	setup(&f, NULL);
	t_tcp_pair(fds);
	id = amio_register(f.r, fds[1], AMIO_READ | AMIO_LEVEL, NULL);
	t_write_str(fds[0], "abc");
	for (int i = 0; i < 3; i++) {
		ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
		ck_assert_uint_eq(n[0].id, (uint64_t)id);
		ck_assert_uint_eq(n[0].events, AMIO_READ);
	}
	ck_assert_int_eq(read(fds[1], buf, sizeof(buf)), 3);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 100), 0);
	t_write_str(fds[0], "d");
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

START_TEST(oneshot_reports_once_until_reregistered)
{
	struct fixture f;
	amio_notification n[4];
	int fds[2];
	int64_t id;

	setup(&f, NULL);
	t_tcp_pair(fds);
	id = amio_register(f.r, fds[1], AMIO_READ | AMIO_ONESHOT, NULL);
	t_write_str(fds[0], "a");
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
	t_write_str(fds[0], "b");
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 100), 0);
	/* Re-arming reports the readiness that is there now. */
	ck_assert_int_eq(amio_reregister(f.r, (uint64_t)id, AMIO_READ | AMIO_ONESHOT), 0);
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)id);
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

START_TEST(reregister_for_write_reports_writability_at_once)
{
	struct fixture f;
	amio_notification n[4];
	char buf[16];
	int fds[2];
	int64_t id;

	setup(&f, NULL);
	t_tcp_pair(fds);
	id = amio_register(f.r, fds[1], AMIO_READ, NULL);
	t_write_str(fds[0], "ping\n");
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
	ck_assert_int_eq(read(fds[1], buf, sizeof(buf)), 5);
	ck_assert_int_eq(amio_reregister(f.r, (uint64_t)id, AMIO_WRITE), 0);
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
	ck_assert_uint_eq(n[0].events, AMIO_WRITE);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 250), 0);
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

START_TEST(half_close_by_the_peer_reports_hup_and_read)
{
	struct fixture f;
	amio_notification n[4];
	int fds[2];

	setup(&f, NULL);
	t_tcp_pair(fds);
	amio_register(f.r, fds[1], AMIO_READ, NULL);
	ck_assert_int_eq(shutdown(fds[0], SHUT_WR), 0);
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
	ck_assert_uint_eq(n[0].events & (AMIO_READ | AMIO_HUP), AMIO_READ | AMIO_HUP);
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

/* A half-close (POLLRDHUP) is AMIO_HUP for a reader only, on both backends
 * (io_uring's poll carried it to a WRITE-only registration; epoll did not):
 * a writer hears of the peer's half-close only when the socket is fully
 * hung up. Found by the outside attacker. */
START_TEST(half_close_is_hup_for_readers_only)
{
	struct fixture f;
	amio_notification n[4];
	int fds[2];

	setup(&f, NULL);
	t_tcp_pair(fds);
	ck_assert_int_gt(amio_register(f.r, fds[1], AMIO_WRITE, NULL), 0);
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1); /* writable at once */
	ck_assert_uint_eq(n[0].events, AMIO_WRITE);
	ck_assert_int_eq(shutdown(fds[0], SHUT_WR), 0);
	for (int k = t_collect(f.p, n, 4, 100), i = 0; i < k; i++)
		ck_assert_msg(!(n[i].events & AMIO_HUP), "a WRITE-only registration got %#x",
		              n[i].events);
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

/* ---- Deregistration ------------------------------------------------------ */

static bool peer_sees_eof(int fd, int within_ms)
{
	int64_t end = t_now_ms() + within_ms;
	char c;

	while (t_now_ms() < end) {
		ssize_t rc = read(fd, &c, 1);
		if (rc == 0)
			return true;
		usleep(1000);
	}
	return false;
}

START_TEST(deregister_then_close_makes_the_peer_see_eof)
{
	struct fixture f;
	amio_notification n[4];
	int fds[2];
	int64_t id;

	setup(&f, NULL);
	t_tcp_pair(fds);
	id = amio_register(f.r, fds[1], AMIO_READ, NULL);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 10), 0);
	ck_assert_int_eq(amio_deregister(f.r, (uint64_t)id), 0);
	close(fds[1]);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 10), 0); /* submits the removal */
	t_nonblock(fds[0]);
	ck_assert(peer_sees_eof(fds[0], 5000)); /* a budget, not a speed */
	close(fds[0]);
	teardown(&f);
}
END_TEST

/* The control for the test above: the kernel's poll holds the file, so
 * close() alone does not send FIN. If it did, deregister would be untested. */
START_TEST(close_without_deregister_does_not_close_the_connection)
{
	struct fixture f;
	amio_notification n[4];
	int fds[2];

	setup(&f, NULL);
	t_tcp_pair(fds);
	amio_register(f.r, fds[1], AMIO_READ, NULL);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 10), 0);
	close(fds[1]);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 10), 0);
	t_nonblock(fds[0]);
	ck_assert(!peer_sees_eof(fds[0], 200));
	amio_registrar_free(f.r);
	amio_poller_free(f.p); /* ring exit drops the poll: now FIN */
	/* The kernel's ring exit runs in a workqueue, after the free returns:
	 * on a busy machine the FIN took over 1 s. */
	ck_assert(peer_sees_eof(fds[0], 10000));
	close(fds[0]);
	ck_assert_int_eq(t_count_fds(), f.fds_before);
}
END_TEST

START_TEST(a_deregistered_id_reports_nothing_even_if_its_cqe_was_posted)
{
	struct fixture f;
	amio_notification n[4];
	int fds[2];
	int64_t id;

	setup(&f, NULL);
	t_tcp_pair(fds);
	id = amio_register(f.r, fds[1], AMIO_READ, NULL);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 10), 0);
	t_write_str(fds[0], "x");
	usleep(20000); /* the CQE (or its task work) is in the kernel now */
	ck_assert_int_eq(amio_deregister(f.r, (uint64_t)id), 0);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 100), 0);
	ck_assert_int_eq(amio_deregister(f.r, (uint64_t)id), -ENOENT);
	ck_assert_int_eq(amio_reregister(f.r, (uint64_t)id, AMIO_READ), -ENOENT);
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

START_TEST(ids_are_never_reused)
{
	struct fixture f;
	amio_notification n[8];
	enum { N = 20000 };
	uint64_t *ids = calloc(N, sizeof(*ids));
	int fds[2];

	setup(&f, NULL);
	t_tcp_pair(fds);
	for (int i = 0; i < N; i++) {
		int64_t id = amio_register(f.r, fds[1], AMIO_READ, NULL);
		if (id <= 0 || amio_deregister(f.r, (uint64_t)id) != 0)
			ck_abort_msg("register/deregister failed at %d", i);
		ids[i] = (uint64_t)id;
		if (i % 1000 == 999 && amio_poller_wait(f.p, n, 8, 0) != 0)
			ck_abort_msg("notification for a never-ready socket");
	}
	/* Sorted, neighbours differ: no id twice (one assertion: Check logs
	 * every ck_assert call). */
	qsort(ids, N, sizeof(*ids), cmp_u64);
	size_t dups = 0;
	for (int i = 1; i < N; i++)
		dups += ids[i - 1] == ids[i];
	ck_assert_uint_eq(dups, 0);
	free(ids);
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

/* ---- Errors --------------------------------------------------------------- */

START_TEST(registering_a_closed_fd_reports_ebadf_and_the_poller_keeps_working)
{
	struct fixture f;
	amio_notification n[4];
	int fds[2], dead;
	int64_t bad, good;

	setup(&f, NULL);
	t_tcp_pair(fds);
	dead = dup(fds[0]);
	close(dead);
	bad = amio_register(f.r, dead, AMIO_READ, &dead);
	ck_assert_int_gt(bad, 0);
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)bad);
	ck_assert_uint_eq(n[0].events, AMIO_ERROR);
	ck_assert_int_eq(n[0].error, -EBADF);
	ck_assert_ptr_eq(n[0].data, &dead);
	ck_assert_int_eq(amio_deregister(f.r, (uint64_t)bad), 0);
	good = amio_register(f.r, fds[1], AMIO_READ, NULL);
	t_write_str(fds[0], "z");
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)good);
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

START_TEST(a_full_command_queue_returns_eagain_and_loses_nothing)
{
	struct amio_poller_config cfg = {.queue_entries = 64};
	struct fixture f;
	amio_notification n[128];
	int pairs[63][2], fds[2];
	int64_t ids[63];
	bool seen[63] = {false};

	setup(&f, &cfg);
	t_tcp_pair(fds);
	/* The poller does not run: 63 commands fit (a ck_ring of 64 holds 63). */
	for (int i = 0; i < 63; i++) {
		t_tcp_pair(pairs[i]);
		t_write_str(pairs[i][0], "r");
		ids[i] = amio_register(f.r, pairs[i][1], AMIO_READ, &seen[i]);
		ck_assert_int_gt(ids[i], 0);
	}
	ck_assert_int_eq(amio_register(f.r, fds[1], AMIO_READ, NULL), -EAGAIN);
	ck_assert_int_eq(amio_deregister(f.r, (uint64_t)ids[0]), -EAGAIN);
	ck_assert_int_eq(t_collect(f.p, n, 63, 2000), 63);
	for (int i = 0; i < 63; i++) {
		bool *s = n[i].data;
		ck_assert(!*s);
		*s = true;
		ck_assert_uint_eq(n[i].id, (uint64_t)ids[s - seen]);
	}
	/* Usable again. */
	ck_assert_int_eq(amio_deregister(f.r, (uint64_t)ids[0]), 0);
	for (int i = 0; i < 63; i++) {
		close(pairs[i][0]);
		close(pairs[i][1]);
	}
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

/* ---- Waiting rules ------------------------------------------------------- */

struct later {
	amio_poller *p;
	int fd;
	int delay_ms;
	int64_t id;
};

static void *register_later(void *arg)
{
	struct later *l = arg;
	amio_registrar *r;

	usleep((useconds_t)l->delay_ms * 1000);
	ck_assert_int_eq(amio_registrar_new(l->p, 0, &r), 0);
	l->id = amio_register(r, l->fd, AMIO_READ, NULL); /* not ready: wakes only */
	amio_registrar_free(r);
	return NULL;
}

START_TEST(internal_wakeups_never_end_a_wait_early)
{
	struct fixture f;
	amio_notification n[4];
	struct later l;
	pthread_t t;
	int fds[2];
	int64_t t0;

	setup(&f, NULL);
	t_tcp_pair(fds);
	l = (struct later){.p = f.p, .fd = fds[1], .delay_ms = 50};
	ck_assert_int_eq(pthread_create(&t, NULL, register_later, &l), 0);
	t0 = t_now_ms();
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 300), 0);
	ck_assert_int_ge(t_now_ms() - t0, 300);
	pthread_join(t, NULL);
	ck_assert_int_gt(l.id, 0);
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

static void *stop_later(void *arg)
{
	usleep(50000);
	ck_assert_int_eq(amio_poller_stop(arg), 0);
	return NULL;
}

START_TEST(stop_from_another_thread_ends_an_unbounded_wait)
{
	struct fixture f;
	amio_notification n[4];
	pthread_t t;
	int64_t t0;

	setup(&f, NULL);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, 0), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, stop_later, f.p), 0);
	t0 = t_now_ms();
	ck_assert_int_eq(amio_poller_wait(f.p, n, 4, -1), 0);
	ck_assert_int_lt(t_now_ms() - t0, 5000);
	pthread_join(t, NULL);
	teardown(&f);
}
END_TEST

static void *wait_elsewhere(void *arg)
{
	amio_notification n[1];
	return (void *)(intptr_t)amio_poller_wait(arg, n, 1, 0);
}

START_TEST(a_second_poll_thread_is_refused)
{
	struct fixture f;
	amio_notification n[1];
	pthread_t t;
	void *rc;

	setup(&f, NULL);
	ck_assert_int_eq(amio_poller_wait(f.p, n, 1, 0), 0);
	amio_register(f.r, 0, AMIO_READ, NULL); /* something to submit */
	ck_assert_int_eq(pthread_create(&t, NULL, wait_elsewhere, f.p), 0);
	pthread_join(t, &rc);
	ck_assert_int_eq((int)(intptr_t)rc, -EEXIST);
	teardown(&f);
}
END_TEST

/* A CQ ring far smaller than the burst: multishot polls lose F_MORE on
 * overflow and must be re-armed, or they go deaf. */
START_TEST(cq_overflow_ends_multishot_polls_and_they_are_rearmed)
{
	struct amio_poller_config cfg = {.sq_entries = 4, .cq_entries = 16};
	enum { N = 200 };
	struct fixture f;
	amio_notification n[N];
	int(*pairs)[2] = calloc(N, sizeof(*pairs));
	int *hits = calloc(N, sizeof(int));
	struct amio_poller_stats st;
	int got;

	setup(&f, &cfg);
	for (int i = 0; i < N; i++) {
		t_tcp_pair(pairs[i]);
		ck_assert_int_gt(amio_register(f.r, pairs[i][1], AMIO_READ, &hits[i]), 0);
	}
	ck_assert_int_eq(amio_poller_wait(f.p, n, N, 50), 0);
	for (int round = 0; round < 3; round++) {
		char buf[8];

		for (int i = 0; i < N; i++)
			t_write_str(pairs[i][0], "x");
		/* Every socket readable before the wait reaps: the CQEs pile
		 * up and the CQ overflows (waiting for it, not sleeping a
		 * while: loopback delivery can lag on a busy machine). */
		for (int i = 0; i < N; i++) {
			struct pollfd pf = {.fd = pairs[i][1], .events = POLLIN};

			ck_assert_int_eq(poll(&pf, 1, 5000), 1);
		}
		memset(hits, 0, N * sizeof(int));
		got = 0;
		while (got < N) {
			int rc = amio_poller_wait(f.p, n, N, 1000);
			ck_assert_int_gt(rc, 0);
			for (int k = 0; k < rc; k++)
				(*(int *)n[k].data)++;
			got += rc;
		}
		for (int i = 0; i < N; i++) {
			ck_assert_int_ge(hits[i], 1);
			while (read(pairs[i][1], buf, sizeof(buf)) > 0)
				;
		}
		while (amio_poller_wait(f.p, n, N, 50) > 0)
			;
	}
	amio_poller_stats(f.p, &st);
	/* epoll has no CQ to overflow: there only the delivery is checked. */
	if (strcmp(amio_poller_backend(f.p), "io_uring") == 0) {
		ck_assert_uint_gt(st.overflows, 0);
		ck_assert_uint_gt(st.rearms, 0);
	}
	for (int i = 0; i < N; i++) {
		close(pairs[i][0]);
		close(pairs[i][1]);
	}
	free(pairs);
	free(hits);
	teardown(&f);
}
END_TEST

START_TEST(stats_count_enters_and_notifications)
{
	struct fixture f;
	struct amio_poller_stats st;
	amio_notification n[4];
	int fds[2];

	setup(&f, NULL);
	t_tcp_pair(fds);
	amio_register(f.r, fds[0], AMIO_WRITE, NULL);
	ck_assert_int_eq(t_collect(f.p, n, 1, 1000), 1);
	amio_poller_stats(f.p, &st);
	ck_assert_uint_ge(st.enters, 1);
	ck_assert_uint_ge(st.sqes, 1);
	ck_assert_uint_ge(st.cqes, 1);
	ck_assert_uint_eq(st.notifications, 1);
	ck_assert_uint_eq(st.commands, 1);
	close(fds[0]);
	close(fds[1]);
	teardown(&f);
}
END_TEST

/* AMIO_POLLER_SCHED_BATCH: the first wait puts the poll thread (and only
 * it) in SCHED_BATCH; a poller without the flag leaves the policy alone. */
START_TEST(sched_batch_flag_moves_the_poll_thread_to_sched_batch)
{
	struct amio_poller_config cfg = {.flags = AMIO_POLLER_SCHED_BATCH};
	amio_poller *p = t_poller(NULL);
	amio_notification n[4];

	ck_assert_int_eq(amio_poller_wait(p, n, 4, 0), 0);
	ck_assert_int_eq(sched_getscheduler(0), SCHED_OTHER);
	amio_poller_free(p);
	p = t_poller(&cfg);
	ck_assert_int_eq(amio_poller_wait(p, n, 4, 0), 0);
	ck_assert_int_eq(sched_getscheduler(0), SCHED_BATCH);
	amio_poller_free(p);
	cfg.flags = 1u << 20;
	ck_assert_int_eq(amio_poller_new(&p, &cfg), -EINVAL);
}
END_TEST

/* ---- fork() ------------------------------------------------------------- */

/* A child that only exits, or execs /bin/true: what a program that forks
 * helpers does. Nothing else runs in the child (async-signal-safe only: the
 * parent may have threads). */
static pid_t spawn(bool exec)
{
	pid_t pid = fork();

	if (pid == 0) {
		if (exec)
			execl("/bin/true", "true", (char *)NULL);
		_exit(exec ? 127 : 0);
	}
	return pid;
}

static int reaped_status(pid_t pid)
{
	int st = -1;

	if (pid < 0 || waitpid(pid, &st, 0) != pid)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Another thread forks an exec'ing child while the poll thread sleeps in
 * its wait, then wakes it with a byte on the registered socket. */
struct forker {
	int status;
	int wake_fd;
};

static void *fork_while_the_poll_thread_waits(void *arg)
{
	struct forker *fk = arg;

	fk->status = reaped_status(spawn(true));
	if (write(fk->wake_fd, "x", 1) != 1)
		fk->status = -2;
	return NULL;
}

struct fork_seen {
	int64_t sid, rid, tick, once, late;
	amio_pool *pool;
	bool read, recvd, once_fired, late_read, done;
	int ticks, done_res;
};

static void fork_take(struct fork_seen *st, const amio_notification *n, int k)
{
	for (int i = 0; i < k; i++) {
		if (n[i].id == (uint64_t)st->sid && (n[i].events & AMIO_READ))
			st->read = true;
		else if (st->late && n[i].id == (uint64_t)st->late && (n[i].events & AMIO_READ))
			st->late_read = true;
		else if (n[i].id == (uint64_t)st->tick && n[i].events == AMIO_TIMER)
			st->ticks++;
		else if (n[i].id == (uint64_t)st->once && n[i].events == AMIO_TIMER)
			st->once_fired = true;
		else if (n[i].id == (uint64_t)st->rid && n[i].events == AMIO_RECV) {
			ck_assert_int_eq(n[i].res, 5);
			ck_assert_int_eq(memcmp(n[i].buf, "hello", 5), 0);
			ck_assert_int_eq(amio_pool_put(st->pool, n[i].buf), 0);
			st->recvd = true;
		} else if (n[i].id == (uint64_t)st->rid && n[i].events == (AMIO_RECV | AMIO_DONE)) {
			st->done = true;
			st->done_res = n[i].res;
		}
	}
}

/* fork() with registrations, timers and a recv live (amio.h, amio_poller_new):
 * the children share the ring or epoll set, and the O_CLOEXEC fds, until they
 * exit or exec; the parent's registrations, timers and operations go on. */
START_TEST(a_child_that_exits_or_execs_leaves_the_parent_working)
{
	struct fixture f;
	struct fork_seen st = {0};
	struct forker fk = {.status = -1};
	amio_notification n[16];
	int s[2], c[2], t[2], k;
	pthread_t th;

	setup(&f, NULL);
	ck_assert_int_eq(amio_pool_new(f.r, 4, 64, &st.pool), 0);
	t_tcp_pair(s);
	t_tcp_pair(c);
	t_tcp_pair(t);
	ck_assert_int_gt(st.sid = amio_register(f.r, s[1], AMIO_READ, s), 0);
	ck_assert_int_gt(st.rid = amio_recv(f.r, c[1], st.pool, c), 0);
	ck_assert_int_gt(st.tick = amio_set_interval(f.r, 10, NULL), 0);
	ck_assert_int_gt(st.once = amio_set_timeout(f.r, 50, NULL), 0);
	k = amio_poller_wait(f.p, n, 16, 0); /* all applied and armed */
	ck_assert_int_ge(k, 0);
	fork_take(&st, n, k);

	ck_assert_int_eq(reaped_status(spawn(false)), 0); /* exits */
	ck_assert_int_eq(reaped_status(spawn(true)), 0);  /* execs /bin/true */
	fk.wake_fd = s[0];
	ck_assert_int_eq(pthread_create(&th, NULL, fork_while_the_poll_thread_waits, &fk), 0);
	st.ticks = 0; /* only ticks after the forks count */
	t_write_str(c[0], "hello");
	for (int64_t end = t_now_ms() + 10000; t_now_ms() < end;) {
		if (st.read && st.recvd && st.once_fired && st.ticks >= 2)
			break;
		k = amio_poller_wait(f.p, n, 16, 100);
		ck_assert_int_ge(k, 0);
		fork_take(&st, n, k);
	}
	pthread_join(th, NULL);
	ck_assert_int_eq(fk.status, 0);
	ck_assert(st.read);       /* a readiness registration made before the forks */
	ck_assert(st.recvd);      /* a multishot recv started before them */
	ck_assert(st.once_fired); /* a one-shot timer armed before them */
	ck_assert_int_ge(st.ticks, 2);

	/* New work after the forks, then the whole teardown, as if none happened. */
	ck_assert_int_gt(st.late = amio_register(f.r, t[1], AMIO_READ, t), 0);
	t_write_str(t[0], "y");
	ck_assert_int_eq(amio_cancel(f.r, (uint64_t)st.rid), 0);
	ck_assert_int_eq(amio_cancel_timer(f.r, (uint64_t)st.tick), 0);
	for (int64_t end = t_now_ms() + 10000; t_now_ms() < end && !(st.late_read && st.done);) {
		k = amio_poller_wait(f.p, n, 16, 100);
		ck_assert_int_ge(k, 0);
		fork_take(&st, n, k);
	}
	ck_assert(st.late_read);
	ck_assert(st.done);
	ck_assert_int_eq(st.done_res, -ECANCELED);
	ck_assert_int_eq(amio_deregister(f.r, (uint64_t)st.sid), 0);
	ck_assert_int_eq(amio_deregister(f.r, (uint64_t)st.late), 0);
	ck_assert_int_eq(amio_pool_free(st.pool), 0);
	for (int i = 0; i < 2; i++) {
		close(s[i]);
		close(c[i]);
		close(t[i]);
	}
	teardown(&f);
}
END_TEST

static Suite *poller_suite(void)
{
	Suite *s = suite_create("poller");
	TCase *tc;

	tc = tcase_create("lifecycle");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, poller_with_bad_config_is_refused);
	tcase_add_test(tc, wait_rejects_bad_arguments_and_returns_nothing_when_idle);
	tcase_add_test(tc, bad_registrations_fail_at_once);
	tcase_add_test(tc, stats_count_enters_and_notifications);
	tcase_add_test(tc, sched_batch_flag_moves_the_poll_thread_to_sched_batch);
	suite_add_tcase(s, tc);

	tc = tcase_create("readiness");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, readiness_present_at_registration_is_reported_at_once);
	tcase_add_test(tc, connected_socket_registered_for_write_is_reported_exactly_once);
	tcase_add_test(tc, edge_triggered_reports_each_new_arrival_once);
	tcase_add_test(tc, level_triggered_reports_every_wait_until_drained);
	tcase_add_test(tc, oneshot_reports_once_until_reregistered);
	tcase_add_test(tc, reregister_for_write_reports_writability_at_once);
	tcase_add_test(tc, half_close_by_the_peer_reports_hup_and_read);
	tcase_add_test(tc, half_close_is_hup_for_readers_only);
	tcase_add_test(tc, cq_overflow_ends_multishot_polls_and_they_are_rearmed);
	suite_add_tcase(s, tc);

	tc = tcase_create("deregistration");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, deregister_then_close_makes_the_peer_see_eof);
	tcase_add_test(tc, close_without_deregister_does_not_close_the_connection);
	tcase_add_test(tc, a_deregistered_id_reports_nothing_even_if_its_cqe_was_posted);
	tcase_add_test(tc, ids_are_never_reused);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, registering_a_closed_fd_reports_ebadf_and_the_poller_keeps_working);
	tcase_add_test(tc, a_full_command_queue_returns_eagain_and_loses_nothing);
	suite_add_tcase(s, tc);

	tc = tcase_create("waiting");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, internal_wakeups_never_end_a_wait_early);
	tcase_add_test(tc, stop_from_another_thread_ends_an_unbounded_wait);
	tcase_add_test(tc, a_second_poll_thread_is_refused);
	suite_add_tcase(s, tc);

	tc = tcase_create("fork");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, a_child_that_exits_or_execs_leaves_the_parent_working);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	t_require_io_uring();
	return t_run(poller_suite());
}
