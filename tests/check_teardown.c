/*
 * Teardown against what is still in flight when amio_poller_free runs:
 * connections the kernel accepted into its CQ overflow list (io_uring), an
 * amio_poller_stop still returning when the poll thread frees, senders
 * blocked in amio_channel_send_wait. Each case draws its rounds from one
 * seed, printed with every failure: AMIO_TEST_SEED=<n> replays it.
 */
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>

#include "amio_test.h"

static uint64_t seed_of_run(void)
{
	const char *s = getenv("AMIO_TEST_SEED");
	struct timespec ts;

	if (s)
		return strtoull(s, NULL, 0);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_nsec * 2654435761u ^ (uint64_t)getpid() << 32 ^ (uint64_t)ts.tv_sec;
}

static uint32_t rnd(uint64_t *state, uint32_t n)
{
	*state = *state * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(*state >> 33) % n;
}

static bool on_epoll(void)
{
	amio_poller *p = t_poller(NULL);
	bool epoll = strcmp(amio_poller_backend(p), "epoll") == 0;

	amio_poller_free(p);
	return epoll;
}

static void spin_ns(int64_t ns)
{
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	do
		clock_gettime(CLOCK_MONOTONIC, &b);
	while ((b.tv_sec - a.tv_sec) * 1000000000 + (b.tv_nsec - a.tv_nsec) < ns);
}

/* ---- 1. Accepted connections in the CQ overflow list (io_uring) ---------- */

/* Where the poller ends: freed by main while the poll thread, done with it,
 * keeps making syscalls (the kernel runs the accept's task work in them);
 * freed by main after the poll thread exited; freed by the poll thread;
 * freed by the poll thread of a DEFER_TASKRUN ring, whose accepts are
 * posted only inside its own enters (one last wait of room 1 here). */
enum {
	FREE_BESIDE_LIVE_THREAD,
	FREE_AFTER_THREAD_EXIT,
	FREE_ON_POLL_THREAD,
	FREE_ON_DEFERRING_POLL_THREAD,
	FREE_MODES
};
static const char *const free_mode_names[] = {
    "by main beside a live poll thread", "by main after the poll thread exited",
    "by the poll thread", "by the poll thread of a DEFER_TASKRUN ring after a wait"};

struct overflow_round {
	amio_poller *p;
	int mode;
	uint32_t armed, connected, quit; /* handshakes with main */
};

/* Arm the accepts (one wait applies their START and submits), then stop
 * reaping: connections are accepted in the syscalls the thread makes
 * (no DEFER_TASKRUN: the kernel runs task work on any syscall) until the
 * CQ is full and the accept ends into the overflow list. */
static void *overflow_poll_thread(void *arg)
{
	struct overflow_round *o = arg;
	amio_notification n[4];
	int got;

	ck_assert_int_ge(amio_poller_wait(o->p, n, 4, 0), 0);
	ck_pr_store_32(&o->armed, 1);
	while (!ck_pr_load_32(&o->connected))
		usleep(200);
	if (o->mode == FREE_ON_DEFERRING_POLL_THREAD) {
		/* The enter runs the accepts' task work: a CQ's worth and one
		 * into the overflow list; one is taken, and is ours to close. */
		struct amio_poller_stats st;

		got = amio_poller_wait(o->p, n, 1, 0);
		for (int i = 0; i < got; i++)
			if ((n[i].events & AMIO_ACCEPT) && n[i].res >= 0)
				close(n[i].res);
		amio_poller_stats(o->p, &st);
		if (getenv("AMIO_TEST_VERBOSE"))
			fprintf(stderr, "  the wait took %d, the CQ overflowed %llu times\n", got,
			        (unsigned long long)st.overflows);
	}
	if (o->mode >= FREE_ON_POLL_THREAD) {
		amio_poller_free(o->p);
		return NULL;
	}
	while (o->mode == FREE_BESIDE_LIVE_THREAD && !ck_pr_load_32(&o->quit))
		usleep(200);
	return NULL;
}

/* Until the fd count has not moved for 100 ms: the kernel accepts what it
 * will (a CQ's worth, then one into the overflow list) and stops. */
static void wait_fds_settle(void)
{
	int64_t end = t_now_ms() + 5000, still = t_now_ms();
	int last = t_count_fds();

	while (t_now_ms() - still < 100 && t_now_ms() < end) {
		int now;

		usleep(2000);
		now = t_count_fds();
		if (now != last)
			still = t_now_ms();
		last = now;
	}
}

static void overflow_round(uint64_t seed, int round, int mode, uint64_t *rng)
{
	struct amio_poller_config cfg = {.sq_entries = 2,
	                                 .flags = AMIO_POLLER_NO_DEFER_TASKRUN,
	                                 .backend = AMIO_BACKEND_IO_URING};
	struct overflow_round o = {0};
	int listeners, clients, lfd[2], cfd[128], fds0 = t_count_fds(), fds_end;
	bool inbox;
	amio_registrar *r;
	pthread_t t;
	uint16_t port[2];

	cfg.cq_entries = 8u << rnd(rng, 2); /* 8 or 16: CQ full within a burst */
	if (mode == FREE_ON_DEFERRING_POLL_THREAD)
		cfg.flags = 0;
	o.mode = mode;
	listeners = 1 + (int)rnd(rng, 2);
	clients = (int)cfg.cq_entries + 1 + (int)rnd(rng, 48);
	inbox = rnd(rng, 2);
	o.p = t_poller(&cfg);
	ck_assert_int_eq(amio_registrar_new(o.p, inbox ? AMIO_INBOX : 0, &r), 0);
	for (int i = 0; i < listeners; i++) {
		lfd[i] = t_listen(&port[i]);
		ck_assert_int_gt(amio_accept(r, lfd[i], NULL), 0);
	}
	ck_assert_int_eq(pthread_create(&t, NULL, overflow_poll_thread, &o), 0);
	while (!ck_pr_load_32(&o.armed))
		usleep(100);
	for (int i = 0; i < clients; i++)
		cfd[i] = t_connect(port[i % listeners]);
	wait_fds_settle();
	if (getenv("AMIO_TEST_VERBOSE")) /* more than a CQ's worth: some overflowed */
		fprintf(stderr, "round %d (%s): CQ %u, %d accepted before the free\n", round,
		        free_mode_names[mode], cfg.cq_entries,
		        t_count_fds() - fds0 - clients - 1 - listeners - inbox);
	ck_pr_store_32(&o.connected, 1);
	if (o.mode != FREE_BESIDE_LIVE_THREAD)
		pthread_join(t, NULL);
	if (o.mode < FREE_ON_POLL_THREAD)
		amio_poller_free(o.p);
	ck_pr_store_32(&o.quit, 1);
	if (o.mode == FREE_BESIDE_LIVE_THREAD)
		pthread_join(t, NULL);
	amio_registrar_free(r);
	for (int i = 0; i < clients; i++)
		close(cfd[i]);
	for (int i = 0; i < listeners; i++)
		close(lfd[i]);
	fds_end = t_count_fds();
	ck_assert_msg(fds_end == fds0,
	              "seed %llu round %d: %d fds open after teardown, %d before (freed %s; CQ "
	              "%u, %d clients on %d listeners, %s registrar)",
	              (unsigned long long)seed, round, fds_end, fds0, free_mode_names[o.mode],
	              cfg.cq_entries, clients, listeners, inbox ? "inbox" : "Amy-mode");
}

START_TEST(connections_the_kernel_accepted_into_its_overflow_list_are_closed_by_the_free)
{
	uint64_t seed = seed_of_run(), rng = seed;
	int rounds = t_scale(12) < FREE_MODES ? FREE_MODES : t_scale(12);
	int first = (int)rnd(&rng, FREE_MODES);

	if (on_epoll()) {
		fprintf(stderr, "overflow list: io_uring only, skipped on epoll\n");
		return;
	}
	/* Every mode within any FREE_MODES rounds in a row. */
	for (int round = 0; round < rounds; round++)
		overflow_round(seed, round, (first + round) % FREE_MODES, &rng);
}
END_TEST

/* ---- 2. A stop still returning when the poll thread frees ------------------ */

/* One poll thread and one stopper for every round (thread creation would
 * cost more than the round: 1.6 ms a pair under ASan). Main publishes a
 * round's poller and draws in go; each side reports its round done. */
struct stop_race {
	amio_poller *p;
	uint32_t go, polled, stopped, quit;
	bool use_run;
	int64_t stop_delay_ns;
	int run_rc, stop_rc;
};

/* Until *word reaches want (or quit); a yield per look: three threads share
 * two CPUs. */
static bool await_round(struct stop_race *x, uint32_t *word, uint32_t want)
{
	while (ck_pr_load_32(word) != want) {
		if (ck_pr_load_32(&x->quit))
			return false;
		sched_yield();
	}
	return true;
}

/* The ordinary end of a loop: run (or wait) until stopped, free at once. */
static void *stopped_poll_thread(void *arg)
{
	struct stop_race *x = arg;
	amio_notification n[8];

	for (uint32_t round = 1; await_round(x, &x->go, round); round++) {
		amio_poller *p = x->p;

		if (x->use_run)
			x->run_rc = amio_poller_run(p);
		else
			x->run_rc = amio_poller_wait(p, n, 8, -1);
		amio_poller_free(p);
		ck_pr_store_32(&x->polled, round);
	}
	return NULL;
}

static void *stopper(void *arg)
{
	struct stop_race *x = arg;

	for (uint32_t round = 1; await_round(x, &x->go, round); round++) {
		amio_poller *p = x->p;

		spin_ns(x->stop_delay_ns);
		x->stop_rc = amio_poller_stop(p);
		ck_pr_store_32(&x->stopped, round);
	}
	return NULL;
}

START_TEST(a_poll_thread_may_free_the_poller_as_soon_as_a_stop_from_another_thread_ends_its_run)
{
	static const uint32_t flag_sets[] = {0, AMIO_POLLER_NO_SPIN, AMIO_POLLER_NO_RINGLESS_MSG,
	                                     AMIO_POLLER_NO_SPIN | AMIO_POLLER_NO_RINGLESS_MSG |
	                                         AMIO_POLLER_NO_DEFER_TASKRUN};
	uint64_t seed = seed_of_run(), rng = seed;
	int rounds = t_scale(10000), fds0 = t_count_fds();
	struct stop_race x = {0};
	pthread_t poll, stop;

	ck_assert_int_eq(pthread_create(&poll, NULL, stopped_poll_thread, &x), 0);
	ck_assert_int_eq(pthread_create(&stop, NULL, stopper, &x), 0);
	for (uint32_t round = 1; round <= (uint32_t)rounds; round++) {
		struct amio_poller_config cfg = {.sq_entries = 8};
		amio_registrar *r = NULL;

		/* One draw per statement: the order is the seed's, not the
		 * compiler's. */
		cfg.flags = flag_sets[rnd(&rng, 4)];
		x.use_run = rnd(&rng, 2);
		x.stop_delay_ns = rnd(&rng, 4);
		x.stop_delay_ns *= rnd(&rng, 40000);
		x.p = t_poller(&cfg);
		/* Sometimes a registrar outlives the free: the poller's memory
		 * stays, its ring does not. */
		if (rnd(&rng, 4) == 0)
			ck_assert_int_eq(amio_registrar_new(x.p, rnd(&rng, 2) ? AMIO_INBOX : 0, &r),
			                 0);
		ck_pr_store_32(&x.go, round); /* release: p and the draws above */
		(void)await_round(&x, &x.polled, round);
		(void)await_round(&x, &x.stopped, round);
		amio_registrar_free(r);
		ck_assert_msg(x.stop_rc == 0 && x.run_rc == 0,
		              "seed %llu round %u: stop returned %s, %s returned %s (flags %u)",
		              (unsigned long long)seed, round, amio_strerror(x.stop_rc),
		              x.use_run ? "run" : "wait", amio_strerror(x.run_rc), cfg.flags);
	}
	ck_pr_store_32(&x.quit, 1);
	pthread_join(poll, NULL);
	pthread_join(stop, NULL);
	ck_assert_int_eq(t_count_fds(), fds0);
}
END_TEST

/* ---- 3. Senders blocked in send_wait when the poller goes ------------------ */

struct blocked_sender {
	amio_channel *ch;
	pthread_t thread;
	pid_t tid;
	int timeout_ms;
	int rc;
};

static void *send_wait_once(void *arg)
{
	struct blocked_sender *b = arg;
	uint64_t msg = 2;

	ck_pr_store_int(&b->tid, (int)syscall(SYS_gettid));
	b->rc = amio_channel_send_wait(b->ch, &msg, b->timeout_ms);
	return NULL;
}

/* Whether thread tid sleeps in futex(2): inside send_wait, the only call
 * it makes that sleeps (the channel is full). */
static bool asleep_in_futex(pid_t tid)
{
	char path[64], buf[64] = "";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
	f = fopen(path, "r");
	if (!f)
		return false;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	return strtol(buf, NULL, 10) == SYS_futex;
}

/* The three frees in one of their orders, back to back: nobody waits for
 * the senders to return first. */
static const char *const free_orders[] = {
    "poller, channel, registrar", "channel, poller, registrar", "poller, registrar, channel",
    "channel, registrar, poller"};

static void free_in_order(int order, amio_poller *p, amio_registrar *r, amio_channel *ch)
{
	if (order == 0 || order == 2)
		amio_poller_free(p);
	else
		amio_channel_free(ch);
	if (order == 0)
		amio_channel_free(ch);
	else if (order == 1)
		amio_poller_free(p);
	else
		amio_registrar_free(r);
	if (order == 0 || order == 1)
		amio_registrar_free(r);
	else if (order == 2)
		amio_channel_free(ch);
	else
		amio_poller_free(p);
}

static void send_wait_round(uint64_t seed, int round, uint64_t *rng)
{
	struct blocked_sender b[3];
	int senders = 1 + (int)rnd(rng, 3), order, takes;
	size_t capacity;
	int64_t end = t_now_ms() + 5000;
	uint64_t msg = 1;
	amio_registrar *r;
	amio_channel *ch;
	amio_poller *p = t_poller(NULL);

	order = (int)rnd(rng, 4);
	takes = (int)rnd(rng, 3);
	capacity = 1 + rnd(rng, 4);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_channel_new(r, capacity, sizeof(msg), NULL, &ch), 0);
	while (amio_channel_send(ch, &msg) == 0)
		;
	for (int i = 0; i < senders; i++) {
		b[i] = (struct blocked_sender){.ch = ch};
		b[i].timeout_ms = rnd(rng, 2) ? -1 : 60000;
		ck_assert_int_eq(pthread_create(&b[i].thread, NULL, send_wait_once, &b[i]), 0);
	}
	/* Every sender is inside its call (asleep on the full channel). */
	for (int i = 0; i < senders; i++)
		while (!ck_pr_load_int(&b[i].tid) || !asleep_in_futex(b[i].tid)) {
			ck_assert_msg(t_now_ms() < end, "seed %llu round %d: sender %d never slept",
			              (unsigned long long)seed, round, i);
			usleep(50);
		}
	/* Sometimes make room first: the frees then land while senders wake,
	 * re-check and (some) send or go back to sleep. */
	for (int k = 0; k < takes; k++)
		(void)amio_channel_try_recv(ch, &msg);
	spin_ns(rnd(rng, 3) * rnd(rng, 20000));
	free_in_order(order, p, r, ch);
	for (int i = 0; i < senders; i++) {
		int want = order % 2 ? -EPIPE : -ESHUTDOWN;

		pthread_join(b[i].thread, NULL);
		ck_assert_msg(b[i].rc == want || (takes && b[i].rc == 0),
		              "seed %llu round %d: send_wait returned %s, want %s (freed %s, %d "
		              "senders, capacity %zu, %d taken)",
		              (unsigned long long)seed, round, amio_strerror(b[i].rc),
		              amio_strerror(want), free_orders[order], senders, capacity, takes);
	}
}

START_TEST(senders_blocked_in_send_wait_return_when_the_poller_is_freed_and_touch_nothing_after)
{
	uint64_t seed = seed_of_run(), rng = seed;
	int rounds = t_scale(1000) < 20 ? 20 : t_scale(1000), fds0 = t_count_fds();

	for (int round = 0; round < rounds; round++)
		send_wait_round(seed, round, &rng);
	ck_assert_int_eq(t_count_fds(), fds0);
}
END_TEST

int main(int argc, char **argv)
{
	Suite *s = suite_create("teardown");
	TCase *tc;

	(void)argc;
	(void)argv;
	t_require_io_uring();
	tc = tcase_create("accepts in the CQ overflow list");
	tcase_set_timeout(tc, 120);
	tcase_add_test(
	    tc, connections_the_kernel_accepted_into_its_overflow_list_are_closed_by_the_free);
	suite_add_tcase(s, tc);
	tc = tcase_create("stop racing the free");
	tcase_set_timeout(tc, 240);
	tcase_add_test(
	    tc,
	    a_poll_thread_may_free_the_poller_as_soon_as_a_stop_from_another_thread_ends_its_run);
	suite_add_tcase(s, tc);
	tc = tcase_create("send_wait against the free");
	tcase_set_timeout(tc, 240);
	tcase_add_test(
	    tc,
	    senders_blocked_in_send_wait_return_when_the_poller_is_freed_and_touch_nothing_after);
	suite_add_tcase(s, tc);
	return t_run(s);
}
