/*
 * Lifecycle regressions (issue 11) that need the fault seam (src/fault.h):
 * arms failing for lack of an SQE must not write past the caller's out[],
 * and a stuck IORING_SQ_TASKRUN must not hide completions from a caller
 * that only ever polls (timeout 0).
 */
#include <pthread.h>

#include "amio_test.h"
#include "../src/fault.h"

/* Room for the notifications, and past it a guard the library must not
 * touch. Under ASan exactly cap entries: the allocator itself guards. */
#if defined(__SANITIZE_ADDRESS__)
#define GUARD 0
#else
#define GUARD 64
#endif

/* ---- 3. Failed arms and the caller's out[] ------------------------------- */

START_TEST(failed_arms_never_write_past_cap_and_every_error_arrives)
{
	enum { CAP = 4, N = 40 };
	int fds_before = t_count_fds();
	amio_poller *p = t_poller(NULL);
	amio_notification *out = malloc((CAP + GUARD) * sizeof(*out));
	amio_notification guard[GUARD + 1];
	amio_registrar *r;
	int pairs[N][2], errors[N] = {0}, got = 0, waits = 0;
	int64_t ids[N];

	ck_assert_ptr_nonnull(out);
	memset(out, 0xa5, (CAP + GUARD) * sizeof(*out));
	memcpy(guard, out + CAP, GUARD * sizeof(*out));
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_poller_wait(p, out, CAP, 0), 0);
	for (int i = 0; i < N; i++)
		t_tcp_pair(pairs[i]);
	/* Every io_uring_get_sqe fails from now on: each arm turns into one
	 * AMIO_ERROR notification. */
	amio__fault_set(AMIO__FAULT_SQE, 0, 1);
	for (int i = 0; i < N; i++) {
		ids[i] = amio_register(r, pairs[i][1], AMIO_READ, &errors[i]);
		ck_assert_int_gt(ids[i], 0);
	}
	for (int64_t end = t_now_ms() + 3000; got < N && t_now_ms() < end; waits++) {
		int k = amio_poller_wait(p, out, CAP, 10);

		ck_assert_msg(k >= 0 && k <= CAP, "wait %d: amio_poller_wait(cap %d) returned %d",
		              waits, CAP, k);
		ck_assert_msg(memcmp(guard, out + CAP, GUARD * sizeof(*out)) == 0,
		              "wait %d: amio_poller_wait(cap %d) wrote past out[%d]", waits, CAP,
		              CAP - 1);
		for (int i = 0; i < k; i++) {
			int *e = out[i].data;

			ck_assert_ptr_nonnull(e);
			ck_assert_msg(e >= errors && e < errors + N,
			              "a notification for no socket");
			ck_assert_uint_eq(out[i].id, (uint64_t)ids[e - errors]);
			ck_assert_msg((out[i].events & AMIO_ERROR) && out[i].error < 0,
			              "socket %d: events 0x%x error %d, want AMIO_ERROR",
			              (int)(e - errors), out[i].events, out[i].error);
			ck_assert_msg((*e)++ == 0, "socket %d: AMIO_ERROR reported twice",
			              (int)(e - errors));
			got++;
		}
	}
	amio__fault_set(AMIO__FAULT_SQE, 0, 0);
	ck_assert_msg(got == N, "%d of %d failed arms reported AMIO_ERROR (%d waits)", got, N,
	              waits);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(amio_deregister(r, (uint64_t)ids[i]), 0);
		close(pairs[i][0]);
		close(pairs[i][1]);
	}
	ck_assert_int_ge(amio_poller_wait(p, out, CAP, 0), 0);
	amio_registrar_free(r);
	amio_poller_free(p);
	free(out);
	ck_assert_int_eq(t_count_fds(), fds_before);
}
END_TEST

/* ---- 7. A stuck IORING_SQ_TASKRUN and timeout 0 ------------------------- */

START_TEST(a_caller_that_only_polls_sees_data_despite_a_stuck_taskrun_flag)
{
	amio_poller *p = t_poller(NULL);
	amio_notification n[8];
	amio_registrar *r;
	int fds[2], got = 0, polls = 0;
	int64_t id;

	amio__fault_set(AMIO__FAULT_TASKRUN, 0, 1); /* the flag always reads set */
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	t_tcp_pair(fds);
	id = amio_register(r, fds[1], AMIO_READ, NULL);
	ck_assert_int_gt(id, 0);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(amio_poller_wait(p, n, 8, 0), 0); /* armed, nothing to read */
	t_write_str(fds[0], "x");
	for (int64_t end = t_now_ms() + 1000; !got && t_now_ms() < end; polls++) {
		int k = amio_poller_wait(p, n, 8, 0);

		ck_assert_int_ge(k, 0);
		for (int i = 0; i < k; i++)
			got |= n[i].id == (uint64_t)id && (n[i].events & AMIO_READ);
		if (!got)
			usleep(1000);
	}
	ck_assert_msg(got,
	              "%d polls (timeout 0) over 1 s with IORING_SQ_TASKRUN stuck: the "
	              "readable socket was never reported",
	              polls);
	/* io_uring reads the flag; on epoll (no such flag) this checks that a
	 * caller polling with timeout 0 sees readiness at all. */
	if (strcmp(amio_poller_backend(p), "io_uring") == 0)
		ck_assert_uint_gt(amio__fault_count(AMIO__FAULT_TASKRUN), 0);
	amio__fault_set(AMIO__FAULT_TASKRUN, 0, 0);
	ck_assert_int_eq(amio_deregister(r, (uint64_t)id), 0);
	amio_registrar_free(r);
	amio_poller_free(p);
	close(fds[0]);
	close(fds[1]);
}
END_TEST

/* F2 (model test): a reregister whose removal of the old poll gets no SQE
 * must never let the old poll report: no notification with no events, none
 * with events the registration no longer asks for. */
START_TEST(a_reregister_whose_removal_gets_no_sqe_never_reports_the_old_poll)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification n[8];
	int sv[2], k;
	int64_t id;
	char c;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	id = amio_register(r, sv[1], AMIO_READ, NULL);
	ck_assert_int_gt(id, 0);
	ck_assert_int_eq(amio_poller_wait(p, n, 8, 50), 0); /* armed, nothing to read */
	amio__fault_set(AMIO__FAULT_SQE, 0, 1);             /* no SQE for the removal */
	ck_assert_int_eq(amio_reregister(r, (uint64_t)id, AMIO_WRITE), 0);
	k = amio_poller_wait(p, n, 8, 50);
	amio__fault_set(AMIO__FAULT_SQE, 0, 0);
	for (int i = 0; i < k; i++)
		ck_assert_msg(n[i].events == AMIO_ERROR, "events %#x while the SQ was full",
		              n[i].events);
	ck_assert_int_eq(write(sv[0], "x", 1), 1); /* the old READ poll would fire */
	for (int round = 0; round < 5; round++) {
		k = amio_poller_wait(p, n, 8, 50);
		for (int i = 0; i < k; i++)
			ck_assert_msg(n[i].events && !(n[i].events & AMIO_READ),
			              "events %#x after a reregister to WRITE", n[i].events);
	}
	ck_assert_int_eq(read(sv[1], &c, 1), 1);
	ck_assert_int_eq(amio_deregister(r, (uint64_t)id), 0);
	amio_registrar_free(r);
	amio_poller_free(p);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("lifecycle_fault");
	TCase *tc;

	t_require_io_uring();
	tc = tcase_create("failed arms");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, failed_arms_never_write_past_cap_and_every_error_arrives);
	suite_add_tcase(s, tc);
	tc = tcase_create("failed removals");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, a_reregister_whose_removal_gets_no_sqe_never_reports_the_old_poll);
	suite_add_tcase(s, tc);

	tc = tcase_create("stuck taskrun");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, a_caller_that_only_polls_sees_data_despite_a_stuck_taskrun_flag);
	suite_add_tcase(s, tc);
	return t_run(s);
}
