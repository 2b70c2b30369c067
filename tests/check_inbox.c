/* Inbox mode: notifications routed by id to the registrar that registered it,
 * with the poll thread in amio_poller_run(). */
#include <pthread.h>

#include "amio_test.h"

enum { PER_WORKER = 50 };

struct worker {
	amio_poller *p;
	int seen[PER_WORKER];
	int foreign;
};

/* Registers PER_WORKER readable sockets and collects their notifications. */
static void *inbox_worker(void *arg)
{
	struct worker *w = arg;
	amio_registrar *r;
	amio_notification n[16];
	int pairs[PER_WORKER][2], got = 0;
	int64_t ids[PER_WORKER];

	ck_assert_int_eq(amio_registrar_new(w->p, AMIO_INBOX, &r), 0);
	for (int i = 0; i < PER_WORKER; i++) {
		ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pairs[i]), 0);
		ck_assert_int_eq(write(pairs[i][0], "x", 1), 1);
		ids[i] = amio_register(r, pairs[i][1], AMIO_READ, &w->seen[i]);
		ck_assert_int_gt(ids[i], 0);
	}
	while (got < PER_WORKER) {
		int rc = amio_registrar_wait(r, n, 16, 2000);
		ck_assert_int_gt(rc, 0);
		for (int k = 0; k < rc; k++) {
			int *s = n[k].data;
			if (s < w->seen || s >= w->seen + PER_WORKER) {
				w->foreign++;
				continue;
			}
			ck_assert_uint_eq(n[k].id, (uint64_t)ids[s - w->seen]);
			(*s)++;
			got++;
		}
	}
	ck_assert_int_eq(amio_registrar_wait(r, n, 16, 200), 0);
	for (int i = 0; i < PER_WORKER; i++) {
		ck_assert_int_eq(amio_deregister(r, (uint64_t)ids[i]), 0);
		close(pairs[i][0]);
		close(pairs[i][1]);
	}
	amio_registrar_free(r);
	return NULL;
}

START_TEST(two_inbox_registrars_each_receive_exactly_their_own_notifications)
{
	int fds_before = t_count_fds();
	amio_poller *p = t_poller(NULL);
	struct worker w[2] = {{.p = p}, {.p = p}};
	pthread_t pt, wt[2];

	ck_assert_int_eq(pthread_create(&pt, NULL, t_run_poller, p), 0);
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&wt[i], NULL, inbox_worker, &w[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(wt[i], NULL);
	t_stop_poller(p, pt);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(w[i].foreign, 0);
		for (int k = 0; k < PER_WORKER; k++)
			ck_assert_int_eq(w[i].seen[k], 1);
	}
	amio_poller_free(p);
	ck_assert_int_eq(t_count_fds(), fds_before);
}
END_TEST

START_TEST(a_full_inbox_holds_notifications_back_and_loses_none)
{
	enum { N = 300 };
	struct amio_poller_config cfg = {.inbox_entries = 8};
	int fds_before = t_count_fds();
	amio_poller *p = t_poller(&cfg);
	amio_registrar *r;
	amio_notification n[4];
	int(*pairs)[2] = calloc(N, sizeof(*pairs));
	int *seen = calloc(N, sizeof(int)), got = 0;
	pthread_t pt;

	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	ck_assert_int_eq(pthread_create(&pt, NULL, t_run_poller, p), 0);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pairs[i]), 0);
		ck_assert_int_eq(write(pairs[i][0], "x", 1), 1);
		ck_assert_int_gt(amio_register(r, pairs[i][1], AMIO_READ, &seen[i]), 0);
	}
	usleep(100000); /* the poller has far more than 7 for an inbox of 8 */
	while (got < N) {
		int rc = amio_registrar_wait(r, n, 4, 2000);
		ck_assert_int_gt(rc, 0);
		for (int k = 0; k < rc; k++)
			(*(int *)n[k].data)++;
		got += rc;
	}
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(seen[i], 1);
	ck_assert_int_eq(amio_registrar_wait(r, n, 4, 100), 0);
	amio_registrar_free(r);
	t_stop_poller(p, pt);
	amio_poller_free(p);
	for (int i = 0; i < N; i++) {
		close(pairs[i][0]);
		close(pairs[i][1]);
	}
	free(pairs);
	free(seen);
	ck_assert_int_eq(t_count_fds(), fds_before);
}
END_TEST

START_TEST(run_hands_amy_mode_notifications_back_to_wait)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification n[4];
	int fds[2];
	int64_t id;

	t_tcp_pair(fds);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	id = amio_register(r, fds[0], AMIO_WRITE, NULL);
	ck_assert_int_eq(amio_poller_run(p), 1);
	ck_assert_int_eq(amio_poller_wait(p, n, 4, 0), 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)id);
	ck_assert_uint_eq(n[0].events, AMIO_WRITE);
	amio_registrar_free(r);
	amio_poller_free(p);
	close(fds[0]);
	close(fds[1]);
}
END_TEST

START_TEST(freeing_an_inbox_registrar_deregisters_its_ids)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	pthread_t pt;
	int fds[2];
	char c;
	int64_t end;

	t_tcp_pair(fds);
	ck_assert_int_eq(pthread_create(&pt, NULL, t_run_poller, p), 0);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	ck_assert_int_gt(amio_register(r, fds[1], AMIO_READ, NULL), 0);
	usleep(20000);
	amio_registrar_free(r);
	close(fds[1]);
	/* Only a removed poll lets the close send FIN (the poll thread runs
	 * elsewhere: a budget, not a speed). */
	end = t_now_ms() + 5000;
	while (read(fds[0], &c, 1) != 0 && t_now_ms() < end)
		usleep(1000);
	ck_assert_int_lt(t_now_ms(), end);
	t_stop_poller(p, pt);
	amio_poller_free(p);
	close(fds[0]);
}
END_TEST

/* A registrar freed while the poller is delivering to its inbox: the poller
 * must forget it everywhere (doorbell list included) before freeing it. */
START_TEST(freeing_an_inbox_registrar_mid_delivery_is_safe)
{
	int fds_before = t_count_fds();
	amio_poller *p = t_poller(NULL);
	pthread_t pt;

	ck_assert_int_eq(pthread_create(&pt, NULL, t_run_poller, p), 0);
	for (int round = 0; round < 300; round++) {
		amio_registrar *r;
		int sv[4][2];

		ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
		for (int i = 0; i < 4; i++) {
			ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv[i]),
			                 0);
			ck_assert_int_eq(write(sv[i][0], "x", 1), 1);
			ck_assert_int_gt(amio_register(r, sv[i][1], AMIO_BOTH, NULL), 0);
		}
		if (round % 2)
			usleep(200);
		amio_registrar_free(r);
		for (int i = 0; i < 4; i++) {
			close(sv[i][0]);
			close(sv[i][1]);
		}
	}
	t_stop_poller(p, pt);
	amio_poller_free(p);
	ck_assert_int_eq(t_count_fds(), fds_before);
}
END_TEST

/* Notifications already in an inbox when their id is deregistered are not
 * handed out: "once amio_deregister returns, nothing for the id". */
START_TEST(an_id_deregistered_while_queued_in_the_inbox_is_not_returned)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification n[4];
	int a[2], b[2], ta, tb;
	int64_t ida, idb;
	pthread_t pt;

	ck_assert_int_eq(pthread_create(&pt, NULL, t_run_poller, p), 0);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, a), 0);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, b), 0);
	ck_assert_int_eq(write(a[0], "x", 1), 1);
	ck_assert_int_eq(write(b[0], "x", 1), 1);
	ida = amio_register(r, a[1], AMIO_READ, &ta);
	idb = amio_register(r, b[1], AMIO_READ, &tb);
	usleep(200000); /* both notifications are in the inbox */
	ck_assert_int_eq(amio_registrar_wait(r, n, 1, 1000), 1);
	ck_assert_int_eq(
	    amio_deregister(r, n[0].id == (uint64_t)ida ? (uint64_t)idb : (uint64_t)ida), 0);
	ck_assert_int_eq(amio_registrar_wait(r, n, 4, 100), 0);
	amio_registrar_free(r);
	t_stop_poller(p, pt);
	amio_poller_free(p);
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
}
END_TEST

static void *wait_forever(void *r)
{
	amio_notification n[1];

	return (void *)(intptr_t)amio_registrar_wait(r, n, 1, -1);
}

/* Freeing the poller wakes workers blocked on their inbox: -ESHUTDOWN. */
START_TEST(freeing_the_poller_wakes_a_blocked_inbox_waiter)
{
	int fds_before = t_count_fds();
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification n[1];
	pthread_t t;
	void *rc;

	ck_assert_int_eq(amio_poller_wait(p, n, 1, 0), 0);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, wait_forever, r), 0);
	usleep(50000); /* most likely asleep by now; -ESHUTDOWN either way */
	amio_poller_free(p);
	pthread_join(t, &rc);
	/* Woken (a wait without limit: a lost wakeup hangs the join and the
	 * case's timeout fails it); how soon is bench/properties.sh's. */
	ck_assert_int_eq((int)(intptr_t)rc, -ESHUTDOWN);
	ck_assert_int_eq(amio_register(r, 0, AMIO_READ, NULL), -ESHUTDOWN);
	amio_registrar_free(r);
	ck_assert_int_eq(t_count_fds(), fds_before);
}
END_TEST

START_TEST(registrar_wait_checks_its_arguments_and_times_out)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *amy, *inbox;
	amio_notification n[1];
	int64_t t0;

	ck_assert_int_eq(amio_registrar_new(p, 0, &amy), 0);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &inbox), 0);
	ck_assert_int_eq(amio_registrar_new(p, 1u << 7, &amy), -EINVAL);
	ck_assert_int_eq(amio_registrar_wait(amy, n, 1, 0), -EINVAL);
	ck_assert_int_eq(amio_registrar_wait(inbox, n, 0, 0), -EINVAL);
	ck_assert_int_eq(amio_registrar_wait(inbox, n, 1, 0), 0);
	t0 = t_now_ms();
	ck_assert_int_eq(amio_registrar_wait(inbox, n, 1, 50), 0);
	ck_assert_int_ge(t_now_ms() - t0, 50);
	amio_registrar_free(amy);
	amio_registrar_free(inbox);
	amio_poller_free(p);
}
END_TEST

static Suite *inbox_suite(void)
{
	Suite *s = suite_create("inbox");
	TCase *tc = tcase_create("routing");

	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, two_inbox_registrars_each_receive_exactly_their_own_notifications);
	tcase_add_test(tc, a_full_inbox_holds_notifications_back_and_loses_none);
	tcase_add_test(tc, run_hands_amy_mode_notifications_back_to_wait);
	tcase_add_test(tc, freeing_an_inbox_registrar_deregisters_its_ids);
	tcase_add_test(tc, freeing_an_inbox_registrar_mid_delivery_is_safe);
	tcase_add_test(tc, an_id_deregistered_while_queued_in_the_inbox_is_not_returned);
	tcase_add_test(tc, freeing_the_poller_wakes_a_blocked_inbox_waiter);
	tcase_add_test(tc, registrar_wait_checks_its_arguments_and_times_out);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	t_require_io_uring();
	return t_run(inbox_suite());
}
