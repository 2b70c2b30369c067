/*
 * Fault injection (src/fault.h, -DAMIO_FAULT_INJECTION=ON): the poller's
 * io_uring calls fail on demand while 10,000 mixed commands (register,
 * reregister, deregister, writes that make sockets readable, one-shot
 * timers and their cancellation, channel sends) run through it. For each
 * fault the test keeps a model of what must come back and proves: every
 * command takes effect or yields exactly one AMIO_ERROR for its id; no
 * notification is lost (each byte written is reported, each timer fires,
 * each channel message arrives) or duplicated (no READ without a byte, no
 * second tick); no id is reported after its deregister; fds and heap are
 * back at their starting counts once the poller is freed.
 */
#include <pthread.h>

#include "amio_test.h"
#include "../src/fault.h"

#define NSOCK 64
#define NCMD  10000

enum kind { SOCK, TIMER, CHAN };

struct sock {
	enum kind kind; /* first: notifications' data points here */
	int cli, srv;
	int64_t id;   /* 0: not registered */
	bool pending; /* a byte was written and not yet reported */
};

struct tmr {
	enum kind kind;
	int64_t id;
	bool cancelled; /* amio_cancel_timer returned 0 */
	int fired, errors;
};

struct world {
	amio_poller *p;
	amio_registrar *r;
	amio_channel *ch;
	enum kind chan_kind;
	struct sock s[NSOCK];
	struct tmr *t;
	int nt;
	uint64_t sent, received; /* channel messages, by sequence number */
	uint64_t notes, errors, spurious, eagain;
};

struct fault {
	const char *name;
	enum amio__fault_site site;
	int err;
	uint32_t every;
	bool small_cq; /* no injection: a CQ ring that overflows */
};

static const struct fault faults[] = {
    {"SQ full: io_uring_get_sqe returns NULL (every 5th)", AMIO__FAULT_SQE, 0, 5, false},
    {"io_uring_enter fails -EBUSY (every 3rd)", AMIO__FAULT_ENTER, EBUSY, 3, false},
    {"io_uring_enter fails -EAGAIN (every 3rd)", AMIO__FAULT_ENTER, EAGAIN, 3, false},
    {"io_uring_enter fails -EINTR (every 3rd)", AMIO__FAULT_ENTER, EINTR, 3, false},
    {"io_uring_enter fails -ENOMEM (every 3rd)", AMIO__FAULT_ENTER, ENOMEM, 3, false},
    /* DEFER_TASKRUN rings post only what fits: the overflow needs the
     * other kind, where completions run as task work at any time. */
    {"CQ ring overflows (8 SQ / 32 CQ entries, no DEFER_TASKRUN, IORING_FEAT_NODROP)",
     AMIO__FAULT_SITES, 0, 0, true},
};

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(rng_state >> 33) % n;
}

/* Read what the socket holds; returns the byte count. */
static int drain_sock(int fd)
{
	char buf[256];
	int n = 0;
	ssize_t got;

	while ((got = read(fd, buf, sizeof(buf))) > 0)
		n += (int)got;
	ck_assert_msg(got < 0 && errno == EAGAIN, "read: %s", strerror(errno));
	return n;
}

static void deregister_sock(struct world *w, struct sock *s)
{
	int rc = amio_deregister(w->r, (uint64_t)s->id);

	ck_assert_msg(rc == 0, "deregister: %s", amio_strerror(rc));
	s->id = 0;
	s->pending = false;
	drain_sock(s->srv); /* a later register must not see old bytes */
}

static void on_sock(struct world *w, struct sock *s, const amio_notification *n)
{
	ck_assert_msg((int64_t)n->id == s->id, "id %llu reported after its deregister",
	              (unsigned long long)n->id);
	if (n->events & AMIO_ERROR) {
		/* The command's one AMIO_ERROR: the registration is parked. */
		w->errors++;
		deregister_sock(w, s);
		return;
	}
	ck_assert(n->events & AMIO_READ);
	if (drain_sock(s->srv) == 0)
		w->spurious++;
	s->pending = false;
}

static void on_timer(struct world *w, struct tmr *t, const amio_notification *n)
{
	ck_assert_msg((int64_t)n->id == t->id && !t->cancelled, "timer reported after cancel");
	ck_assert_msg(t->fired + t->errors == 0, "timer %llu reported twice",
	              (unsigned long long)n->id);
	if (n->events & AMIO_ERROR) {
		w->errors++;
		t->errors++;
		/* Parked, still registered: cancelling it must work. */
		ck_assert_int_eq(amio_cancel_timer(w->r, (uint64_t)t->id), 0);
		return;
	}
	ck_assert(n->events & AMIO_TIMER);
	t->fired++;
}

static void on_chan(struct world *w)
{
	uint64_t seq;

	while (amio_channel_try_recv(w->ch, &seq) == 0) {
		ck_assert_msg(seq == w->received, "channel message %llu, expected %llu",
		              (unsigned long long)seq, (unsigned long long)w->received);
		w->received++;
	}
}

static void poll_once(struct world *w, int timeout_ms)
{
	amio_notification out[32];
	int n = amio_poller_wait(w->p, out, 32, timeout_ms);

	ck_assert_msg(n >= 0, "amio_poller_wait: %s", amio_strerror(n));
	for (int i = 0; i < n; i++) {
		enum kind *k = out[i].data;

		w->notes++;
		if (*k == SOCK)
			on_sock(w, (struct sock *)(void *)k, &out[i]);
		else if (*k == TIMER)
			on_timer(w, (struct tmr *)(void *)k, &out[i]);
		else
			on_chan(w);
	}
}

/* A queue-full -EAGAIN is a documented answer: nothing was queued. */
static bool again(struct world *w, int64_t rc)
{
	if (rc != -EAGAIN)
		return false;
	w->eagain++;
	return true;
}

static void cmd_sock(struct world *w, struct sock *s)
{
	int64_t rc;

	if (s->id == 0) {
		rc = amio_register(w->r, s->srv, AMIO_READ, s);
		ck_assert_msg(rc > 0 || again(w, rc), "register: %s", amio_strerror((int)rc));
		s->id = rc > 0 ? rc : 0;
	} else if (rnd(4) == 0) {
		deregister_sock(w, s);
	} else if (rnd(3) == 0) {
		rc = amio_reregister(w->r, (uint64_t)s->id, AMIO_READ);
		ck_assert_msg(rc == 0 || again(w, rc), "reregister: %s", amio_strerror((int)rc));
	} else if (!s->pending) {
		ck_assert_int_eq(write(s->cli, "x", 1), 1);
		s->pending = true;
	}
}

static void cmd_timer(struct world *w)
{
	struct tmr *t;
	int64_t rc;

	if (w->nt && rnd(3) == 0) {
		t = &w->t[rnd((uint32_t)w->nt)];
		if (t->cancelled || t->fired || t->errors)
			return;
		rc = amio_cancel_timer(w->r, (uint64_t)t->id);
		/* -ENOENT: it fired and its notification is on the way. */
		ck_assert_msg(rc == 0 || rc == -ENOENT || again(w, rc), "cancel: %s",
		              amio_strerror((int)rc));
		t->cancelled = rc == 0;
		return;
	}
	t = &w->t[w->nt];
	t->kind = TIMER;
	rc = amio_set_timeout(w->r, rnd(3), t);
	ck_assert_msg(rc > 0 || again(w, rc), "set_timeout: %s", amio_strerror((int)rc));
	if (rc > 0) {
		t->id = rc;
		w->nt++;
	}
}

static void cmd_send(struct world *w)
{
	for (uint32_t i = 1 + rnd(4); i; i--) {
		int rc = amio_channel_send(w->ch, &w->sent);

		ck_assert_msg(rc == 0 || again(w, rc), "send: %s", amio_strerror(rc));
		if (rc)
			return;
		w->sent++;
	}
}

/* Every socket not yet reported becomes readable at once: with a small CQ
 * the completions outrun the ring. */
static void cmd_burst(struct world *w)
{
	for (int i = 0; i < NSOCK; i++)
		if (w->s[i].id && !w->s[i].pending) {
			ck_assert_int_eq(write(w->s[i].cli, "x", 1), 1);
			w->s[i].pending = true;
		}
}

static bool settled(const struct world *w)
{
	for (int i = 0; i < NSOCK; i++)
		if (w->s[i].pending)
			return false;
	for (int i = 0; i < w->nt; i++)
		if (!w->t[i].cancelled && w->t[i].fired + w->t[i].errors == 0)
			return false;
	return w->received == w->sent;
}

static void expect_settled(const struct world *w)
{
	int socks = 0, timers = 0;

	for (int i = 0; i < NSOCK; i++)
		socks += w->s[i].pending;
	for (int i = 0; i < w->nt; i++)
		timers += !w->t[i].cancelled && w->t[i].fired + w->t[i].errors == 0;
	ck_assert_msg(settled(w),
	              "lost: %d readable sockets unreported, %d timers never fired, "
	              "%llu of %llu channel messages",
	              socks, timers, (unsigned long long)(w->sent - w->received),
	              (unsigned long long)w->sent);
}

START_TEST(mixed_commands_survive_the_fault)
{
	const struct fault *f = &faults[_i];
	struct amio_poller_config cfg = {.sq_entries = f->small_cq ? 8 : 64,
	                                 .cq_entries = f->small_cq ? 32 : 0,
	                                 .flags = f->small_cq ? AMIO_POLLER_NO_DEFER_TASKRUN : 0};
	struct amio_poller_stats st;
	struct world w = {.chan_kind = CHAN};
	int fds0, fds1;
	size_t heap0, heap1;
	uint64_t injected;
	int64_t end;

	rng_state = 0x9e3779b97f4a7c15ull + (uint64_t)_i;
	/* One warm-up poller first: libc and liburing allocate once per process. */
	amio_poller_free(t_poller(NULL));
	fds0 = t_count_fds();
	heap0 = t_heap_in_use();

	w.t = calloc(NCMD, sizeof(*w.t));
	ck_assert_ptr_nonnull(w.t);
	w.p = t_poller(&cfg);
	ck_assert_int_eq(amio_registrar_new(w.p, 0, &w.r), 0);
	ck_assert_int_eq(amio_channel_new(w.r, 256, sizeof(uint64_t), &w.chan_kind, &w.ch), 0);
	for (int i = 0; i < NSOCK; i++) {
		int fds[2];

		t_tcp_pair(fds);
		w.s[i] = (struct sock){.kind = SOCK, .cli = fds[0], .srv = fds[1]};
	}
	if (f->every)
		amio__fault_set(f->site, f->err, f->every);

	for (int c = 0; c < NCMD; c++) {
		uint32_t op = rnd(20);

		if (op < 12)
			cmd_sock(&w, &w.s[rnd(NSOCK)]);
		else if (op < 16)
			cmd_timer(&w);
		else if (op < 19)
			cmd_send(&w);
		else
			cmd_burst(&w);
		if (rnd(4) == 0)
			poll_once(&w, rnd(8) == 0 ? 1 : 0);
	}
	/* Settle with the fault still on: it must not stop progress. */
	end = t_now_ms() + 10000;
	while (!settled(&w) && t_now_ms() < end)
		poll_once(&w, 5);
	injected = f->every ? amio__fault_count(f->site) : 0;
	if (f->every)
		amio__fault_set(f->site, 0, 0);
	expect_settled(&w);
	ck_assert_msg(w.spurious == 0, "%llu READ notifications with nothing to read",
	              (unsigned long long)w.spurious);
	amio_poller_stats(w.p, &st);
	if (f->every)
		ck_assert_msg(injected > 0, "the fault was never injected");
	else
		ck_assert_msg(st.overflows > 0, "the CQ never overflowed");
	if (f->site == AMIO__FAULT_SQE)
		ck_assert_msg(w.errors > 0, "no command failed for lack of an SQE");

	for (int i = 0; i < NSOCK; i++) {
		if (w.s[i].id)
			deregister_sock(&w, &w.s[i]);
		close(w.s[i].cli);
		close(w.s[i].srv);
	}
	amio_channel_free(w.ch);
	amio_registrar_free(w.r);
	amio_poller_free(w.p);
	free(w.t);
	fds1 = t_count_fds();
	heap1 = t_heap_in_use();
	ck_assert_int_eq(fds1, fds0);
	ck_assert_msg(heap1 == heap0, "heap in use %zu bytes before, %zu after", heap0, heap1);

	t_report("fault", f->name,
	         "every command took effect or got exactly one AMIO_ERROR; 0 lost, 0 duplicated, "
	         "0 after deregister; fds and heap back to start",
	         "%d commands, %llu faults injected (%llu CQ overflows), %llu AMIO_ERROR, %llu "
	         "notifications, %llu enters retried, %d timers, %llu channel messages, "
	         "%llu queue-full retries, fds %d->%d",
	         NCMD, (unsigned long long)injected, (unsigned long long)st.overflows,
	         (unsigned long long)w.errors, (unsigned long long)w.notes,
	         (unsigned long long)st.enter_errors, w.nt, (unsigned long long)w.sent,
	         (unsigned long long)w.eagain, fds0, fds1);
}
END_TEST

/* Inbox mode under a full SQ: a worker sleeping in amio_registrar_wait is
 * woken by a doorbell SQE (MSG_RING) the poll thread queues; when that SQE
 * cannot be had, the doorbell must be rung again before the poll thread
 * sleeps, or the worker sleeps on with notifications in its inbox. */
static void *run_poller(void *arg)
{
	amio_poller *p = arg;
	int rc;

	while ((rc = amio_poller_run(p)) == 1)
		;
	return (void *)(intptr_t)rc;
}

START_TEST(inbox_doorbells_survive_a_full_sq)
{
	/* ROUND_MS: a budget for a lost doorbell to show, not a speed. */
	enum { ROUNDS = 2000, ROUND_MS = 5000 };
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification out[NSOCK];
	struct sock s[NSOCK];
	pthread_t t;
	void *prc;
	uint64_t notes = 0, errors = 0;

	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	for (int i = 0; i < NSOCK; i++) {
		int fds[2];

		t_tcp_pair(fds);
		s[i] = (struct sock){.kind = SOCK, .cli = fds[0], .srv = fds[1]};
		s[i].id = amio_register(r, s[i].srv, AMIO_READ, &s[i]);
		ck_assert_int_gt(s[i].id, 0);
	}
	ck_assert_int_eq(pthread_create(&t, NULL, run_poller, p), 0);
	amio__fault_set(AMIO__FAULT_SQE, 0, 3);
	rng_state = 42;
	for (int round = 0; round < ROUNDS; round++) {
		int want = 0;
		int64_t end = t_now_ms() + ROUND_MS;

		for (int k = 0; k < 4; k++) {
			struct sock *x = &s[rnd(NSOCK)];

			if (!x->pending) {
				ck_assert_int_eq(write(x->cli, "x", 1), 1);
				x->pending = true;
				want++;
			}
		}
		/* Every byte written this round must be reported in time: the
		 * poll thread has nothing else to wake it. */
		while (want > 0) {
			int64_t left = end - t_now_ms();
			int n = amio_registrar_wait(r, out, NSOCK, left > 0 ? (int)left : 0);

			/* Woken by its timeout, not a doorbell: the doorbell was
			 * lost. (Woken with n > 0 counts however late: a busy
			 * machine may run us after the round's end.) */
			ck_assert_msg(n > 0,
			              "round %d: %d sockets not reported within %d ms (a lost "
			              "doorbell)",
			              round, want, ROUND_MS);
			for (int i = 0; i < n; i++) {
				struct sock *x = out[i].data;

				notes++;
				ck_assert((int64_t)out[i].id == x->id);
				if (out[i].events & AMIO_ERROR) {
					/* Its arm found no SQE: register it again. */
					errors++;
					ck_assert_int_eq(amio_deregister(r, (uint64_t)x->id), 0);
					x->id = amio_register(r, x->srv, AMIO_READ, x);
					ck_assert_int_gt(x->id, 0);
					continue;
				}
				if (drain_sock(x->srv) > 0 && x->pending) {
					x->pending = false;
					want--;
				}
			}
		}
	}
	amio__fault_set(AMIO__FAULT_SQE, 0, 0);
	amio_poller_stop(p);
	pthread_join(t, &prc);
	ck_assert_int_eq((int)(intptr_t)prc, 0);
	for (int i = 0; i < NSOCK; i++) {
		close(s[i].cli);
		close(s[i].srv);
	}
	amio_registrar_free(r);
	amio_poller_free(p);
	t_report("fault",
	         "SQ full (every 3rd get_sqe) with an inbox worker asleep in amio_registrar_wait",
	         "every readable socket reported within its round; no doorbell lost",
	         "%d rounds, %llu notifications, %llu AMIO_ERROR re-registered", ROUNDS,
	         (unsigned long long)notes, (unsigned long long)errors);
}
END_TEST

/* A stuck IORING_SQ_TASKRUN (the kernel leaves it set over an empty work
 * list when a queueing races with a run, until more work comes): the poll
 * loop may enter once for it, then must sleep, not enter again and again
 * (it did: 6 enters per completion with 1,000 busy sockets, and a wait
 * with a timeout never returned while the flag stayed set). Work that
 * comes meanwhile is still reported: the sleeping enter runs it. */
/* Every other wakeup of the poller fails (MSG_RING or the eventfd write):
 * each command from another thread still takes effect while the poll
 * thread sleeps without a timeout of its own. A dropped wakeup left the
 * poll thread asleep with the command queued. _i 0: -ENOMEM, 1: -EBUSY. */
START_TEST(a_failed_wakeup_is_sent_again)
{
	enum { ROUNDS = 300 };
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification n[4];
	pthread_t t;
	void *prc;
	struct amio_poller_stats st;

	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, run_poller, p), 0);
	amio__fault_set(AMIO__FAULT_WAKE, _i ? EBUSY : ENOMEM, 2);
	for (int round = 0; round < ROUNDS; round++) {
		int64_t id = amio_set_timeout(r, 0, NULL), end = t_now_ms() + 20000;
		int got = 0;

		ck_assert_int_gt(id, 0);
		while (!got) {
			got = amio_registrar_wait(r, n, 4, 100);
			ck_assert_int_ge(got, 0);
			ck_assert_msg(got || t_now_ms() < end, "round %d: the timer never fired",
			              round);
		}
		ck_assert_int_eq(got, 1);
		ck_assert_uint_eq(n[0].id, (uint64_t)id);
		if (round % 8 == 0)
			usleep(2000); /* let the poll thread fall asleep */
	}
	amio_poller_stats(p, &st);
	amio__fault_set(AMIO__FAULT_WAKE, 0, 0);
	ck_assert_int_eq(amio_poller_stop(p), 0);
	pthread_join(t, &prc);
	amio_registrar_free(r);
	amio_poller_free(p);
	printf("wakeups sent %llu, failed %llu\n", (unsigned long long)st.wakeups_sent,
	       (unsigned long long)st.wakeups_failed);
}
END_TEST

START_TEST(a_stuck_taskrun_flag_costs_no_storm_of_enters)
{
	amio_poller *p = t_poller(NULL);
	struct amio_poller_stats st0, st1;
	amio_notification n[4];
	amio_registrar *r;
	int fds[2];
	int64_t id;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	t_tcp_pair(fds);
	id = amio_register(r, fds[1], AMIO_READ, NULL);
	ck_assert_int_gt(id, 0);
	ck_assert_int_eq(amio_poller_wait(p, n, 4, 0), 0);
	amio__fault_set(AMIO__FAULT_TASKRUN, 0, 1);
	amio_poller_stats(p, &st0);
	ck_assert_int_eq(amio_poller_wait(p, n, 4, 200), 0);
	amio_poller_stats(p, &st1);
	ck_assert_uint_le(st1.enters - st0.enters, 10);
	ck_assert_int_eq(write(fds[0], "x", 1), 1);
	ck_assert_int_eq(amio_poller_wait(p, n, 4, 5000), 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)id);
	t_report("fault", "IORING_SQ_TASKRUN stuck set (kernel race) during an idle 200 ms wait",
	         "wait returns on time; data arriving after it is reported",
	         "%llu enters in the 200 ms wait", (unsigned long long)(st1.enters - st0.enters));
	ck_assert_uint_gt(amio__fault_count(AMIO__FAULT_TASKRUN), 0);
	amio__fault_set(AMIO__FAULT_TASKRUN, 0, 0);
	amio_deregister(r, (uint64_t)id);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

int main(int argc, char **argv)
{
	Suite *s = suite_create("fault");
	TCase *tc = tcase_create("injected");

	(void)argc;
	t_exact_heap(argv);
	t_require_io_uring();
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, mixed_commands_survive_the_fault, 0,
	                    (int)(sizeof(faults) / sizeof(faults[0])));
	suite_add_tcase(s, tc);
	/* Its own case: valgrind does not deliver MSG_RING wakeups to a
	 * sleeping waiter, so scripts/valgrind.sh runs "injected" only. */
	tc = tcase_create("inbox");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, inbox_doorbells_survive_a_full_sq);
	tcase_add_loop_test(tc, a_failed_wakeup_is_sent_again, 0, 2);
	suite_add_tcase(s, tc);
	tc = tcase_create("taskrun");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, a_stuck_taskrun_flag_costs_no_storm_of_enters);
	suite_add_tcase(s, tc);
	return t_run(s);
}
