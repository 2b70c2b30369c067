/*
 * Lifecycle regressions (issue 11): what happens at the edges of an id's,
 * a registrar's, a channel's and a poll thread's life. Each case names the
 * defect it pins down; every one failed on b060d5f.
 */
#include <liburing.h>
#include <pthread.h>
#include <sys/stat.h>

#include "amio_test.h"

#ifndef AMIO_TIMER_MAX_MS
#define AMIO_TIMER_MAX_MS (UINT64_C(1) << 42)
#endif

#define SLOT_OF(id) ((uint64_t)(id) & ((UINT64_C(1) << 24) - 1))

/* ---- Helpers ------------------------------------------------------------ */

static uint64_t rng_state;

static void seed_rng(void)
{
	const char *s = getenv("AMIO_TEST_SEED");

	rng_state = s ? strtoull(s, NULL, 0) : (uint64_t)t_now_ms() * 2654435761u;
}

static uint32_t rnd(uint32_t n)
{
	rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
	return (uint32_t)(rng_state >> 33) % n;
}

static void readable_pair(int fds[2])
{
	t_tcp_pair(fds);
	t_write_str(fds[0], "x");
}

static void close_pair(int fds[2])
{
	close(fds[0]);
	close(fds[1]);
}

/* Read what fd holds; returns the byte count. */
static int drain_fd(int fd)
{
	char buf[256];
	int n = 0;
	ssize_t got;

	while ((got = read(fd, buf, sizeof(buf))) > 0)
		n += (int)got;
	return n;
}

/* Join t within ms; false if it is still running (it is then left behind:
 * the test is failing and its process exits). */
static bool join_within(pthread_t t, int ms, void **ret)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return pthread_timedjoin_np(t, ret, &ts) == 0;
}

/* Amy mode: wait up to timeout_ms for a notification of id; its events, or 0. */
static uint32_t wait_for_id(amio_poller *p, int64_t id, int timeout_ms)
{
	int64_t end = t_now_ms() + timeout_ms;
	amio_notification n[16];

	for (int64_t left; (left = end - t_now_ms()) > 0;) {
		int rc = amio_poller_wait(p, n, 16, (int)left);

		ck_assert_msg(rc >= 0, "amio_poller_wait: %s", amio_strerror(rc));
		for (int i = 0; i < rc; i++)
			if (n[i].id == (uint64_t)id)
				return n[i].events;
	}
	return 0;
}

/* ---- 1. Late commands and channel raises for dead ids ---------------------- */

/* The poller drains the newest adopted registrar first: B's deregister is
 * applied, the slot (nothing in the kernel: a one-shot that fired) is
 * released at once, then A's reregister of the dead id arrives. It must not
 * stick to the slot: the next registration there asks for WRITE. */
START_TEST(a_reregister_trailing_a_deregister_does_not_reach_the_reused_slot)
{
	int fds_before = t_count_fds();
	amio_poller *p = t_poller(NULL);
	amio_registrar *r0, *a, *b;
	amio_notification n[8];
	int x[2], y[2];
	int64_t idx, idy;
	uint32_t ev;

	readable_pair(x);
	t_tcp_pair(y); /* writable, nothing to read */
	ck_assert_int_eq(amio_registrar_new(p, 0, &r0), 0);
	ck_assert_int_eq(amio_registrar_new(p, 0, &a), 0);
	ck_assert_int_eq(amio_poller_wait(p, n, 8, 0), 0); /* adopts r0 and a */
	ck_assert_int_eq(amio_registrar_new(p, 0, &b), 0);
	ck_assert_int_eq(amio_poller_wait(p, n, 8, 0), 0); /* b, alone: drained first */

	idx = amio_register(r0, x[1], AMIO_READ | AMIO_ONESHOT, x);
	ck_assert_int_gt(idx, 0);
	ck_assert_uint_eq(wait_for_id(p, idx, 2000) & AMIO_READ, AMIO_READ);
	/* Queued while the poller is not running: B's deregister first. */
	ck_assert_int_eq(amio_reregister(a, (uint64_t)idx, AMIO_READ), 0);
	ck_assert_int_eq(amio_deregister(b, (uint64_t)idx), 0);
	ck_assert_int_eq(amio_poller_wait(p, n, 8, 0), 0);

	idy = amio_register(r0, y[1], AMIO_WRITE, y);
	ck_assert_int_gt(idy, 0);
	ev = wait_for_id(p, idy, 1000);
	ck_assert_msg(ev & AMIO_WRITE,
	              "a writable socket registered for WRITE (id %lld, slot %llu; the dead id "
	              "%lld had slot %llu) got events 0x%x in 1 s, not WRITE: the dead id's "
	              "reregister reached the reused slot",
	              (long long)idy, (unsigned long long)SLOT_OF(idy), (long long)idx,
	              (unsigned long long)SLOT_OF(idx), ev);
	ck_assert_msg(!(ev & AMIO_READ), "READ reported for a WRITE registration");

	ck_assert_int_eq(amio_deregister(r0, (uint64_t)idy), 0);
	amio_registrar_free(a);
	amio_registrar_free(b);
	amio_registrar_free(r0);
	amio_poller_free(p);
	close_pair(x);
	close_pair(y);
	ck_assert_int_eq(t_count_fds(), fds_before);
}
END_TEST

/* Freeing an inbox registrar deregisters its channel and releases the slot;
 * the channel's own free then raises it once more. That late raise must
 * not mark the (free, soon reused) slot: sockets registered there next
 * must work and deregister cleanly. */
START_TEST(a_channel_freed_after_its_inbox_registrar_does_not_poison_the_reused_slot)
{
	int fds_before = t_count_fds();
	amio_poller *p = t_poller(NULL);
	amio_registrar *r0, *ri;
	amio_channel *ch;
	amio_notification n[8];
	int y[2], z[2];
	int64_t chid, idy, idz;
	uint32_t evy, evz;
	int rc;

	readable_pair(y);
	readable_pair(z);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r0), 0);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &ri), 0);
	ck_assert_int_eq(amio_channel_new(ri, 4, sizeof(int), NULL, &ch), 0);
	chid = (int64_t)amio_channel_id(ch);
	ck_assert_int_eq(amio_poller_wait(p, n, 8, 0), 0);
	amio_registrar_free(ri); /* orphans the channel's id */
	ck_assert_int_eq(amio_poller_wait(p, n, 8, 0), 0);
	amio_channel_free(ch); /* a raise for the orphaned id */
	ck_assert_int_eq(amio_poller_wait(p, n, 8, 0), 0);

	idy = amio_register(r0, y[1], AMIO_READ, y);
	ck_assert_int_gt(idy, 0);
	evy = wait_for_id(p, idy, 1000);
	idz = amio_register(r0, z[1], AMIO_READ, z); /* the next one off the free stack */
	ck_assert_int_gt(idz, 0);
	ck_assert_msg(evy & AMIO_READ,
	              "readable socket id %lld (slot %llu; the channel %lld had slot %llu) never "
	              "reported READ: the late channel raise poisoned the slot",
	              (long long)idy, (unsigned long long)SLOT_OF(idy), (long long)chid,
	              (unsigned long long)SLOT_OF(chid));
	evz = wait_for_id(p, idz, 1000);
	ck_assert_msg(evz & AMIO_READ, "readable socket id %lld never reported READ",
	              (long long)idz);
	rc = amio_deregister(r0, (uint64_t)idy);
	ck_assert_msg(rc == 0, "deregister of live id %lld: %s (its slot was handed out twice)",
	              (long long)idy, amio_strerror(rc));
	ck_assert_int_eq(amio_deregister(r0, (uint64_t)idz), 0);

	amio_registrar_free(r0);
	amio_poller_free(p);
	close_pair(y);
	close_pair(z);
	ck_assert_int_eq(t_count_fds(), fds_before);
}
END_TEST

struct churn {
	amio_poller *p;
	int64_t end_ms;
	uint32_t done;
	uint64_t rounds;
};

/* Channels born, raised and freed as fast as the poll thread takes them. */
static void *channel_churn(void *arg)
{
	struct churn *c = arg;
	amio_registrar *r;
	uint64_t msg = 1;

	ck_assert_int_eq(amio_registrar_new(c->p, 0, &r), 0);
	while (t_now_ms() < c->end_ms) {
		amio_channel *ch;
		int rc = amio_channel_new(r, 4, sizeof(msg), NULL, &ch);

		if (rc == -EAGAIN || rc == -ENOSPC) {
			sched_yield();
			continue;
		}
		ck_assert_msg(rc == 0, "amio_channel_new: %s", amio_strerror(rc));
		ck_assert_int_eq(amio_channel_send(ch, &msg), 0);
		if (rnd(2))
			sched_yield(); /* let the poller take the raise first, sometimes */
		amio_channel_free(ch);
		c->rounds++;
	}
	amio_registrar_free(r);
	ck_pr_store_32(&c->done, 1);
	return NULL;
}

/* One wait; counts the sockets (data in seen[0..n)) reported for the first
 * time. */
static int tally(amio_poller *p, amio_notification *n, int timeout_ms, int *seen, int nseen)
{
	int rc = amio_poller_wait(p, n, 64, timeout_ms), first = 0;

	ck_assert_int_ge(rc, 0);
	for (int i = 0; i < rc; i++) {
		int *s = n[i].data;

		if (s >= seen && s < seen + nseen)
			first += (*s)++ == 0;
	}
	return first;
}

START_TEST(racing_channel_frees_leave_every_later_registration_working)
{
	enum { SOCKS = 32 };
	int fds_before = t_count_fds();
	amio_poller *p = t_poller(NULL);
	struct churn c = {.p = p, .end_ms = t_now_ms() + 400};
	amio_registrar *r0;
	amio_notification n[64];
	int pairs[SOCKS][2];
	int64_t ids[SOCKS];
	int seen[SOCKS] = {0}, got = 0;
	uint64_t seed;
	pthread_t t;

	seed_rng();
	seed = rng_state;
	ck_assert_int_eq(amio_registrar_new(p, 0, &r0), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, channel_churn, &c), 0);
	while (!ck_pr_load_32(&c.done))
		ck_assert_int_ge(amio_poller_wait(p, n, 64, 5), 0);
	pthread_join(t, NULL);
	for (int i = 0; i < 4; i++)
		ck_assert_int_ge(amio_poller_wait(p, n, 64, 0), 0);

	for (int i = 0; i < SOCKS; i++) {
		readable_pair(pairs[i]);
		ids[i] = amio_register(r0, pairs[i][1], AMIO_READ, &seen[i]);
		ck_assert_int_gt(ids[i], 0);
		if (i % 4 == 0) /* applied a few at a time, as slots come off the free stack */
			got += tally(p, n, 0, seen, SOCKS);
	}
	for (int64_t end = t_now_ms() + 2000; got < SOCKS && t_now_ms() < end;)
		got += tally(p, n, 50, seen, SOCKS);
	for (int i = 0; i < SOCKS; i++)
		ck_assert_msg(seen[i] > 0,
		              "seed %llu: after %llu channel create/send/free rounds, socket %d "
		              "(id %lld, slot %llu) never reported READ",
		              (unsigned long long)seed, (unsigned long long)c.rounds, i,
		              (long long)ids[i], (unsigned long long)SLOT_OF(ids[i]));
	for (int i = 0; i < SOCKS; i++) {
		int rc = amio_deregister(r0, (uint64_t)ids[i]);

		ck_assert_msg(rc == 0, "seed %llu: deregister of live id %lld: %s",
		              (unsigned long long)seed, (long long)ids[i], amio_strerror(rc));
		close_pair(pairs[i]);
	}
	amio_registrar_free(r0);
	amio_poller_free(p);
	ck_assert_int_eq(t_count_fds(), fds_before);
}
END_TEST

/* ---- 2. amio_poller_stop and inbox doorbells ---------------------------- */

struct sleeper {
	amio_registrar *r;
	int timeout_ms;
	uint32_t ready; /* about to call amio_registrar_wait */
	int got;
	uint64_t id;
	int64_t woke_ms;
};

static void *sleeper_main(void *arg)
{
	struct sleeper *s = arg;
	amio_notification n[8];

	ck_pr_store_32(&s->ready, 1);
	s->got = amio_registrar_wait(s->r, n, 8, s->timeout_ms);
	s->woke_ms = t_now_ms();
	if (s->got > 0)
		s->id = n[0].id;
	return NULL;
}

static void start_sleeper(struct sleeper *s, pthread_t *t)
{
	ck_assert_int_eq(pthread_create(t, NULL, sleeper_main, s), 0);
	while (!ck_pr_load_32(&s->ready))
		usleep(1000);
	usleep(100000); /* asleep in amio_registrar_wait by now */
}

/* The poll thread's last call (it was asked to stop) delivered a
 * notification to a sleeping inbox worker: the doorbell must go out before
 * the call returns, not sit in the SQ until a call that may never come. */
START_TEST(a_stopping_wait_still_rings_the_doorbell_of_what_it_delivered)
{
	amio_poller *p = t_poller(NULL);
	/* A stranded doorbell leaves the worker asleep to its own timeout
	 * (got 0); woken, it got the channel's notification. How soon is a
	 * latency, not asserted. */
	struct sleeper s = {.timeout_ms = 5000};
	struct amio_poller_stats st0, st1;
	amio_notification n[8];
	amio_channel *ch;
	pthread_t t;
	int64_t t0;
	int msg = 7, rc;
	bool joined;

	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &s.r), 0);
	ck_assert_int_eq(amio_channel_new(s.r, 8, sizeof(msg), NULL, &ch), 0);
	ck_assert_int_eq(amio_poller_wait(p, n, 8, 0), 0); /* the channel is registered */
	start_sleeper(&s, &t);

	amio_poller_stats(p, &st0);
	t0 = t_now_ms();
	ck_assert_int_eq(amio_channel_send(ch, &msg), 0);
	ck_assert_int_eq(amio_poller_stop(p), 0);
	rc = amio_poller_wait(p, n, 8, 2000);
	ck_assert_int_eq(rc, 0);
	amio_poller_stats(p, &st1);
	if (st1.notifications == st0.notifications) {
		/* It stopped before delivering: the next call delivers. */
		ck_assert_int_eq(amio_poller_wait(p, n, 8, 0), 0);
	}
	/* The poll thread makes no further call. */
	joined = join_within(t, 20000, NULL);
	ck_assert_msg(joined && s.got == 1 && s.id == amio_channel_id(ch),
	              "the inbox worker was not woken: joined %d, got %d, after %lld ms "
	              "(its wait timeout: %d ms): the doorbell was stranded by the stop",
	              joined, s.got, (long long)(joined ? s.woke_ms - t0 : -1), s.timeout_ms);
	amio_channel_free(ch);
	amio_registrar_free(s.r);
	amio_poller_free(p);
}
END_TEST

struct stopper {
	amio_poller *p;
	pthread_t worker;
	int run_rc;
	bool joined;
	uint64_t notes_at_stop;
};

/* A poll thread that, once stopped, joins its worker (a usual shutdown). */
static void *run_then_join(void *arg)
{
	struct stopper *s = arg;
	struct amio_poller_stats st;

	s->run_rc = (int)(intptr_t)t_run_poller(s->p);
	amio_poller_stats(s->p, &st);
	s->notes_at_stop = st.notifications;
	s->joined = join_within(s->worker, 2000, NULL);
	return NULL;
}

START_TEST(a_poll_thread_that_stops_then_joins_its_worker_does_not_deadlock)
{
	struct amio_poller_config cfg = {.flags = AMIO_POLLER_NO_SPIN};
	amio_poller *p = t_poller(&cfg);
	struct sleeper s = {.timeout_ms = -1};
	struct stopper st = {.p = p};
	amio_channel *ch;
	pthread_t pt;
	int msg = 1;

	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &s.r), 0);
	ck_assert_int_eq(amio_channel_new(s.r, 8, sizeof(msg), NULL, &ch), 0);
	start_sleeper(&s, &st.worker);
	ck_assert_int_eq(pthread_create(&pt, NULL, run_then_join, &st), 0);
	usleep(50000); /* the poll thread registered the channel and sleeps */
	ck_assert_int_eq(amio_channel_send(ch, &msg), 0);
	ck_assert_int_eq(amio_poller_stop(p), 0);
	ck_assert_msg(join_within(pt, 4000, NULL), "the poll thread never returned");
	ck_assert_int_eq(st.run_rc, 0);
	if (st.notes_at_stop == 0) {
		/* Stopped before delivering: nothing to wake the worker with.
		 * Deliver now so it can end; the case proved nothing. */
		fprintf(stderr, "note: the stop came before the delivery\n");
		return;
	}
	ck_assert_msg(st.joined && s.got == 1,
	              "the stopped poll thread could not join its worker within 2 s (it "
	              "delivered %llu notification(s) before returning, and the worker sleeps "
	              "on): deadlock",
	              (unsigned long long)st.notes_at_stop);
	amio_channel_free(ch);
	amio_registrar_free(s.r);
	amio_poller_free(p);
}
END_TEST

/* ---- 4. Inbox registrations inside one long wait ------------------------- */

struct deaf {
	amio_poller *p;
	int round, got, n;
};

/* Registers N sockets through an inbox, then makes all of them readable,
 * round after round, and collects READ for each: the multishot polls the
 * tiny CQ ends must be re-armed while the poll thread stays in its wait.
 * Unix socket pairs: a write wakes the poll at once, so the burst of 100
 * completions really overflows the CQ (loopback TCP spreads it out). */
static void *hundred_readable(void *arg)
{
	enum { N = 100, ROUNDS = 50 };
	struct deaf *d = arg;
	amio_registrar *r;
	amio_notification out[32];
	int pairs[N][2], seen[N];
	int64_t ids[N];

	d->n = N;
	ck_assert_int_eq(amio_registrar_new(d->p, AMIO_INBOX, &r), 0);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, pairs[i]), 0);
		ids[i] = amio_register(r, pairs[i][1], AMIO_READ, &seen[i]);
		ck_assert_int_gt(ids[i], 0);
	}
	usleep(20000); /* armed */
	for (d->round = 0; d->round < ROUNDS; d->round++) {
		d->got = 0;
		memset(seen, 0, sizeof(seen));
		for (int i = 0; i < N; i++)
			t_write_str(pairs[i][0], "x");
		for (int64_t end = t_now_ms() + 5000; d->got < N && t_now_ms() < end;) {
			int rc = amio_registrar_wait(r, out, 32, (int)(end - t_now_ms()));

			ck_assert_int_ge(rc, 0);
			for (int i = 0; i < rc; i++) {
				int *s = out[i].data;

				if (drain_fd(pairs[s - seen][1]) > 0 && (*s)++ == 0)
					d->got++;
			}
		}
		if (d->got < N)
			break;
	}
	ck_assert_int_eq(amio_poller_stop(d->p), 0); /* ends the long wait */
	for (int i = 0; i < N; i++) {
		amio_deregister(r, (uint64_t)ids[i]);
		close_pair(pairs[i]);
	}
	amio_registrar_free(r);
	return NULL;
}

START_TEST(inbox_registrations_do_not_go_deaf_inside_one_long_wait)
{
	struct amio_poller_config cfg = {.sq_entries = 2, .cq_entries = 8};
	amio_poller *p = t_poller(&cfg);
	struct deaf d = {.p = p};
	amio_notification out[16];
	struct amio_poller_stats st;
	pthread_t t;
	int rc;

	ck_assert_int_eq(pthread_create(&t, NULL, hundred_readable, &d), 0);
	/* One long wait, ended by the worker's stop (a deadline here would
	 * bound how fast 50 rounds run). */
	rc = amio_poller_wait(p, out, 16, -1);
	ck_assert_int_eq(rc, 0);
	pthread_join(t, NULL);
	amio_poller_stats(p, &st);
	ck_assert_msg(d.got == d.n,
	              "round %d: %d of %d readable inbox sockets reported READ within 5 s, all "
	              "inside one amio_poller_wait (sq 2, cq 8; %llu rearms, %llu overflows)",
	              d.round, d.got, d.n, (unsigned long long)st.rearms,
	              (unsigned long long)st.overflows);
	amio_poller_free(p);
}
END_TEST

/* ---- 5. Timers at the edge of the clock -------------------------------- */

START_TEST(timers_too_far_away_are_refused_and_never_fire_early)
{
	static const uint64_t far[] = {UINT64_C(10000000000000), UINT64_C(18446744073710)};
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification n[16];
	int64_t ids[8];
	const char *what[8];
	int nid = 0, got;
	int64_t rc;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	for (size_t i = 0; i < sizeof(far) / sizeof(far[0]); i++) {
		/* -EINVAL (above AMIO_TIMER_MAX_MS), or armed and quiet. */
		rc = amio_set_timeout(r, far[i], NULL);
		ck_assert_msg(rc > 0 || rc == -EINVAL, "set_timeout(%llu): %s",
		              (unsigned long long)far[i], amio_strerror((int)rc));
		if (rc > 0) {
			what[nid] = i ? "timeout 18446744073710 ms" : "timeout 10^13 ms";
			ids[nid++] = rc;
		}
		rc = amio_set_interval(r, far[i], NULL);
		ck_assert_msg(rc > 0 || rc == -EINVAL, "set_interval(%llu): %s",
		              (unsigned long long)far[i], amio_strerror((int)rc));
		if (rc > 0) {
			what[nid] = i ? "interval 18446744073710 ms" : "interval 10^13 ms";
			ids[nid++] = rc;
		}
	}
	rc = amio_set_timeout(r, AMIO_TIMER_MAX_MS, NULL);
	ck_assert_msg(rc > 0, "set_timeout(AMIO_TIMER_MAX_MS): %s", amio_strerror((int)rc));
	what[nid] = "timeout AMIO_TIMER_MAX_MS";
	ids[nid++] = rc;
	rc = amio_set_interval(r, AMIO_TIMER_MAX_MS, NULL);
	ck_assert_msg(rc > 0, "set_interval(AMIO_TIMER_MAX_MS): %s", amio_strerror((int)rc));
	what[nid] = "interval AMIO_TIMER_MAX_MS";
	ids[nid++] = rc;

	got = t_collect(p, n, 16, 200);
	for (int i = 0; i < got; i++)
		for (int k = 0; k < nid; k++)
			ck_assert_msg(n[i].id != (uint64_t)ids[k],
			              "the %s timer reported events 0x%x (error %s) within 200 ms",
			              what[k], n[i].events, amio_strerror(n[i].error));
	ck_assert_int_eq(got, 0);

	ck_assert_int_eq(amio_set_timeout(r, UINT64_MAX, NULL), -EINVAL);
	ck_assert_int_eq(amio_set_interval(r, UINT64_MAX, NULL), -EINVAL);
	ck_assert_int_eq(amio_set_timeout(r, AMIO_TIMER_MAX_MS + 1, NULL), -EINVAL);
	ck_assert_int_eq(amio_set_interval(r, AMIO_TIMER_MAX_MS + 1, NULL), -EINVAL);
	for (int k = 0; k < nid; k++)
		ck_assert_int_eq(amio_cancel_timer(r, (uint64_t)ids[k]), 0);
	ck_assert_int_eq(t_collect(p, n, 16, 20), 0);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- 6. amio_channel_send_wait racing amio_channel_free ----------------- */

enum { SENDERS = 6 }; /* more than the cores: preempted senders widen the race */

struct race {
	amio_channel *ch;
	uint32_t round; /* bumped by the receiver: a new channel to send on */
	uint32_t done;  /* senders that saw -EPIPE this round */
	uint32_t quit;
	int bad; /* a return other than 0, -ETIMEDOUT, -EPIPE */
};

static void *racing_sender(void *arg)
{
	struct race *x = arg;
	uint32_t seen = 0;
	uint64_t msg = 42;

	for (;;) {
		amio_channel *ch;
		uint32_t round;
		int rc;

		while ((round = ck_pr_load_32(&x->round)) == seen && !ck_pr_load_32(&x->quit))
			sched_yield(); /* more threads than cores: spinning starves the receiver */
		if (ck_pr_load_32(&x->quit))
			return NULL;
		seen = round;
		ch = ck_pr_load_ptr(&x->ch);
		while ((rc = amio_channel_send_wait(ch, &msg, 10)) != -EPIPE)
			if (rc != 0 && rc != -ETIMEDOUT)
				ck_pr_store_int(&x->bad, rc);
		ck_pr_inc_32(&x->done);
	}
}

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void spin_us(uint32_t us)
{
	int64_t end = now_us() + us;

	while (now_us() < end)
		ck_pr_stall();
}

START_TEST(senders_asleep_in_send_wait_survive_the_channel_free)
{
	const int rounds = t_scale(60000);
	amio_poller *p = t_poller(NULL);
	struct race x = {0};
	amio_registrar *r;
	amio_notification n[64];
	pthread_t t[SENDERS];
	uint64_t msg = 1, seed;
	int64_t end = t_now_ms() + 4000;
	int round;

	seed_rng();
	seed = rng_state;
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	for (int i = 0; i < SENDERS; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, racing_sender, &x), 0);
	for (round = 0; round < rounds && t_now_ms() < end; round++) {
		amio_channel *ch;
		int64_t wait_end;

		ck_assert_int_eq(amio_channel_new(r, 2, sizeof(msg), NULL, &ch), 0);
		while (amio_channel_send(ch, &msg) == 0)
			;
		ck_pr_store_32(&x.done, 0);
		ck_pr_store_ptr(&x.ch, ch);
		ck_pr_inc_32(&x.round);
		/* Each take wakes the senders into send_wait's re-check; the
		 * free lands somewhere in their way back to sleep. */
		for (uint32_t k = rnd(4); k; k--) {
			spin_us(rnd(40));
			(void)amio_channel_try_recv(ch, &msg);
		}
		spin_us(rnd(30));
		amio_channel_free(ch);
		wait_end = t_now_ms() + 2000;
		while (ck_pr_load_32(&x.done) < SENDERS) {
			ck_assert_msg(
			    t_now_ms() < wait_end,
			    "seed %llu round %d: a sender never got -EPIPE after the free",
			    (unsigned long long)seed, round);
			sched_yield();
		}
		ck_assert_int_ge(amio_poller_wait(p, n, 64, 0), 0);
	}
	if (getenv("AMIO_TEST_VERBOSE"))
		fprintf(stderr, "send_wait race: %d rounds\n", round);
	ck_pr_store_32(&x.quit, 1);
	for (int i = 0; i < SENDERS; i++)
		pthread_join(t[i], NULL);
	ck_assert_msg(x.bad == 0, "seed %llu: send_wait returned %s", (unsigned long long)seed,
	              amio_strerror(x.bad));
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- 8. Non-pollable fds ---------------------------------------------- */

struct nonpoll {
	amio_poller *p;
	int fd;
	int64_t id;
	int notes;
	uint32_t events;
	int32_t error;
};

static void note_nonpoll(struct nonpoll *np, const amio_notification *n, int k)
{
	for (int i = 0; i < k; i++) {
		if (n[i].id != (uint64_t)np->id)
			continue;
		if (np->notes++ == 0) {
			np->events = n[i].events;
			np->error = n[i].error;
		}
	}
}

static void expect_one_eperm(struct nonpoll *np, const char *what, const char *mode,
                             const struct amio_poller_stats *d)
{
	ck_assert_msg(d->rearms < 10 && d->sqes < 10,
	              "%s (%s mode): %llu rearms, %llu SQEs, %llu CQEs, %d notifications in "
	              "200 ms: a busy loop",
	              what, mode, (unsigned long long)d->rearms, (unsigned long long)d->sqes,
	              (unsigned long long)d->cqes, np->notes);
	if (np->id == -EPERM)
		return; /* refused at the call: nothing may come */
	ck_assert_msg(np->notes == 1 && (np->events & AMIO_ERROR) && np->error == -EPERM,
	              "%s (%s mode): %d notifications, the first events 0x%x error %s; want "
	              "exactly one AMIO_ERROR -EPERM",
	              what, mode, np->notes, np->events, amio_strerror(np->error));
}

static void stats_delta(const struct amio_poller_stats *a, const struct amio_poller_stats *b,
                        struct amio_poller_stats *d)
{
	d->rearms = b->rearms - a->rearms;
	d->sqes = b->sqes - a->sqes;
	d->cqes = b->cqes - a->cqes;
	d->enters = b->enters - a->enters;
}

static int open_nonpollable(int which, const char **what)
{
	int fd;

	if (which == 0) {
		char path[] = "/tmp/amio-lifecycle-XXXXXX";

		*what = "a regular file";
		fd = mkstemp(path);
		ck_assert_int_ge(fd, 0);
		unlink(path);
		ck_assert_int_eq(write(fd, "data", 4), 4);
		ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
		return fd;
	}
	*what = "a directory";
	fd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	return fd;
}

START_TEST(a_non_pollable_fd_gets_one_error_not_a_busy_loop_in_amy_mode)
{
	amio_poller *p = t_poller(NULL);
	struct nonpoll np = {.p = p};
	struct amio_poller_stats s0, s1, d;
	amio_registrar *r;
	amio_notification n[16];
	const char *what;

	np.fd = open_nonpollable(_i, &what);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_poller_wait(p, n, 16, 0), 0);
	amio_poller_stats(p, &s0);
	np.id = amio_register(r, np.fd, AMIO_READ, &np);
	ck_assert_msg(np.id > 0 || np.id == -EPERM, "register: %s", amio_strerror((int)np.id));
	/* 200 ms, and on a busy machine on until the error came (5 s at most). */
	for (int64_t end = t_now_ms() + 200, last = end + 5000;
	     t_now_ms() < end || (np.id > 0 && !np.notes && t_now_ms() < last);) {
		int k = amio_poller_wait(p, n, 16, 20);

		ck_assert_int_ge(k, 0);
		note_nonpoll(&np, n, k);
	}
	amio_poller_stats(p, &s1);
	stats_delta(&s0, &s1, &d);
	expect_one_eperm(&np, what, "Amy", &d);
	if (np.id > 0)
		ck_assert_int_eq(amio_deregister(r, (uint64_t)np.id), 0);
	amio_registrar_free(r);
	amio_poller_free(p);
	close(np.fd);
}
END_TEST

START_TEST(a_non_pollable_fd_gets_one_error_not_a_busy_loop_in_inbox_mode)
{
	amio_poller *p = t_poller(NULL);
	struct nonpoll np = {.p = p};
	struct amio_poller_stats s0, s1, d;
	amio_registrar *r;
	amio_notification n[16];
	const char *what;
	pthread_t t;

	np.fd = open_nonpollable(_i, &what);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, t_run_poller, p), 0);
	usleep(20000);
	amio_poller_stats(p, &s0);
	np.id = amio_register(r, np.fd, AMIO_READ, &np);
	ck_assert_msg(np.id > 0 || np.id == -EPERM, "register: %s", amio_strerror((int)np.id));
	for (int64_t end = t_now_ms() + 200, last = end + 5000;
	     t_now_ms() < end || (np.id > 0 && !np.notes && t_now_ms() < last);) {
		int k = amio_registrar_wait(r, n, 16, 20);

		ck_assert_int_ge(k, 0);
		note_nonpoll(&np, n, k);
	}
	amio_poller_stats(p, &s1);
	stats_delta(&s0, &s1, &d);
	if (np.id > 0)
		ck_assert_int_eq(amio_deregister(r, (uint64_t)np.id), 0);
	t_stop_poller(p, t);
	expect_one_eperm(&np, what, "inbox", &d);
	amio_registrar_free(r);
	amio_poller_free(p);
	close(np.fd);
}
END_TEST

/* ---- 10. Config sizes the kernel refuses -------------------------------- */

/* A poller that works: one readable socket reported through each mode. */
static void expect_working(amio_poller *p)
{
	amio_registrar *r;
	amio_notification n[8];
	int fds[2];
	int64_t id;

	readable_pair(fds);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	id = amio_register(r, fds[1], AMIO_READ, NULL);
	ck_assert_int_gt(id, 0);
	ck_assert_uint_eq(wait_for_id(p, id, 2000) & AMIO_READ, AMIO_READ);
	ck_assert_int_eq(amio_deregister(r, (uint64_t)id), 0);
	ck_assert_int_ge(amio_poller_wait(p, n, 8, 0), 0);
	amio_registrar_free(r);
	close_pair(fds);
}

START_TEST(large_sq_sizes_with_the_default_cq_are_accepted)
{
	static const uint32_t sq[] = {4096, 8192, 16384};
	int fds_before = t_count_fds();

	for (size_t i = 0; i < sizeof(sq) / sizeof(sq[0]); i++) {
		struct amio_poller_config cfg = {.sq_entries = sq[i]};
		amio_poller *p = NULL;
		int rc = amio_poller_new(&p, &cfg);

		ck_assert_msg(rc == 0, "sq_entries %u with the default cq_entries: %s", sq[i],
		              amio_strerror(rc));
		expect_working(p);
		amio_poller_free(p);
	}
	ck_assert_int_eq(t_count_fds(), fds_before);
}
END_TEST

START_TEST(sizes_beyond_the_limits_are_refused_with_einval)
{
	static const struct {
		struct amio_poller_config cfg;
		const char *what;
	} bad[] = {
	    {{.sq_entries = 16385}, "sq_entries 16385"},
	    {{.sq_entries = 32768}, "sq_entries 32768"},
	    {{.sq_entries = UINT32_MAX}, "sq_entries UINT32_MAX"},
	    {{.cq_entries = 65537}, "cq_entries 65537"},
	    {{.cq_entries = UINT32_MAX}, "cq_entries UINT32_MAX"},
	    {{.queue_entries = (1u << 22) + 1}, "queue_entries 2^22 + 1"},
	    {{.queue_entries = UINT32_MAX}, "queue_entries UINT32_MAX"},
	    {{.inbox_entries = (1u << 22) + 1}, "inbox_entries 2^22 + 1"},
	    {{.inbox_entries = UINT32_MAX}, "inbox_entries UINT32_MAX"},
	};
	int fds_before = t_count_fds();

	t_require_io_uring();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		amio_poller *p = NULL;
		int rc = amio_poller_new(&p, &bad[i].cfg);

		if (rc == 0)
			amio_poller_free(p);
		ck_assert_msg(rc == -EINVAL, "%s: amio_poller_new returned %s, want -EINVAL",
		              bad[i].what, amio_strerror(rc));
	}
	ck_assert_int_eq(t_count_fds(), fds_before);
}
END_TEST

START_TEST(the_largest_accepted_queues_and_the_smallest_sizes_work)
{
	struct amio_poller_config big = {.queue_entries = 1u << 22, .inbox_entries = 1u << 22};
	struct amio_poller_config tiny = {
	    .sq_entries = 1, .cq_entries = 1, .queue_entries = 1, .inbox_entries = 1};
	amio_poller *p = NULL;
	amio_registrar *r;
	amio_notification n[4];
	pthread_t t;
	int fds[2], rc;
	int64_t id;

	rc = amio_poller_new(&p, &big);
	ck_assert_msg(rc == 0, "queue and inbox entries 2^22: %s", amio_strerror(rc));
	amio_poller_free(p);

	rc = amio_poller_new(&p, &tiny);
	ck_assert_msg(rc == 0, "sq, cq, queue and inbox entries 1: %s", amio_strerror(rc));
	expect_working(p);
	amio_poller_free(p);
	/* Inbox mode with a one-notification inbox (a poller of its own: the
	 * poll thread is the first that waits). */
	ck_assert_int_eq(amio_poller_new(&p, &tiny), 0);
	readable_pair(fds);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	id = amio_register(r, fds[1], AMIO_READ, NULL);
	ck_assert_int_gt(id, 0);
	ck_assert_int_eq(pthread_create(&t, NULL, t_run_poller, p), 0);
	ck_assert_int_eq(amio_registrar_wait(r, n, 4, 2000), 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)id);
	ck_assert_int_eq(amio_deregister(r, (uint64_t)id), 0);
	t_stop_poller(p, t);
	amio_registrar_free(r);
	amio_poller_free(p);
	close_pair(fds);
}
END_TEST

/* ---- 11. Cancelling a fired one-shot before it is handed out ---------- */

/* Wait until the poller delivered something (the stats count inbox
 * deliveries), at most timeout_ms. */
static void await_delivery(amio_poller *p, uint64_t notes0, int timeout_ms)
{
	struct amio_poller_stats st;
	int64_t end = t_now_ms() + timeout_ms;

	do {
		amio_poller_stats(p, &st);
		if (st.notifications > notes0) {
			usleep(200); /* counted just before the inbox store */
			return;
		}
		usleep(200);
	} while (t_now_ms() < end);
}

START_TEST(cancelling_a_fired_timer_still_in_the_inbox_prevents_its_delivery)
{
	const int trials = t_scale(200);
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification n[16];
	pthread_t t;
	int zero = 0, delivered = 0, first_bad = -1, first_rc = 0;

	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, t_run_poller, p), 0);
	for (int i = 0; i < trials; i++) {
		struct amio_poller_stats st;
		int64_t id;
		int rc, k;
		bool seen = false;

		amio_poller_stats(p, &st);
		id = amio_set_timeout(r, (uint64_t)(i % 2), NULL);
		ck_assert_int_gt(id, 0);
		await_delivery(p, st.notifications, 500); /* fired, in the inbox */
		rc = amio_cancel_timer(r, (uint64_t)id);
		ck_assert_msg(rc == 0 || rc == -ENOENT, "cancel: %s", amio_strerror(rc));
		zero += rc == 0;
		k = amio_registrar_wait(r, n, 16, 0);
		ck_assert_int_ge(k, 0);
		for (int j = 0; j < k; j++)
			seen |= n[j].id == (uint64_t)id;
		delivered += seen;
		if ((seen || rc != 0) && first_bad < 0) {
			first_bad = i;
			first_rc = rc;
		}
	}
	ck_assert_int_eq(amio_registrar_wait(r, n, 16, 100), 0);
	t_stop_poller(p, t);
	ck_assert_msg(first_bad < 0,
	              "%d of %d one-shot timers fired into the inbox and were delivered after "
	              "amio_cancel_timer returned; cancel returned 0 %d times (first bad trial "
	              "%d: cancel %s)",
	              delivered, trials, zero, first_bad, amio_strerror(first_rc));
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

struct canceller {
	amio_poller *p;
	int trials;
	uint64_t *cancelled; /* ids whose cancel returned 0, published when it returned */
	uint32_t ncancelled;
	uint32_t done;
	uint64_t seed;
};

static void *cancel_timers(void *arg)
{
	struct canceller *c = arg;
	amio_registrar *r;

	ck_assert_int_eq(amio_registrar_new(c->p, 0, &r), 0);
	for (int i = 0; i < c->trials; i++) {
		int64_t id = amio_set_timeout(r, rnd(2), NULL);
		int rc;

		ck_assert_int_gt(id, 0);
		spin_us(rnd(1500));
		rc = amio_cancel_timer(r, (uint64_t)id);
		ck_assert_msg(rc == 0 || rc == -ENOENT, "cancel: %s", amio_strerror(rc));
		if (rc == 0) {
			c->cancelled[c->ncancelled] = (uint64_t)id; /* only this thread writes */
			/* Release: the id before the count the poll thread reads. */
			__atomic_store_n(&c->ncancelled, c->ncancelled + 1, __ATOMIC_RELEASE);
		}
	}
	amio_registrar_free(r);
	ck_pr_store_32(&c->done, 1);
	return NULL;
}

START_TEST(a_timer_cancelled_in_amy_mode_is_never_returned_by_a_later_wait)
{
	struct canceller c = {0};
	amio_notification n[16];
	pthread_t t;
	uint64_t seed;

	seed_rng();
	seed = rng_state;
	c.p = t_poller(NULL);
	c.trials = t_scale(300);
	c.cancelled = calloc((size_t)c.trials, sizeof(uint64_t));
	ck_assert_ptr_nonnull(c.cancelled);
	ck_assert_int_eq(pthread_create(&t, NULL, cancel_timers, &c), 0);
	while (!ck_pr_load_32(&c.done)) {
		/* Every id cancelled before this wait began must not come back. */
		uint32_t before = __atomic_load_n(&c.ncancelled, __ATOMIC_ACQUIRE);
		int k;

		k = amio_poller_wait(c.p, n, 16, 1);
		ck_assert_int_ge(k, 0);
		for (int i = 0; i < k; i++)
			for (uint32_t j = 0; j < before; j++)
				ck_assert_msg(
				    n[i].id != c.cancelled[j],
				    "seed %llu: timer %llu returned by a wait that began after "
				    "its amio_cancel_timer returned 0",
				    (unsigned long long)seed, (unsigned long long)n[i].id);
	}
	pthread_join(t, NULL);
	free(c.cancelled);
	amio_poller_free(c.p);
}
END_TEST

/* ---- 12. AMIO_LEVEL in inbox mode ------------------------------------- */

static int count_id(const amio_notification *n, int k, int64_t id)
{
	int c = 0;

	for (int i = 0; i < k; i++)
		c += n[i].id == (uint64_t)id;
	return c;
}

START_TEST(a_level_registration_in_an_inbox_is_reported_once_per_wait_not_in_a_loop)
{
	amio_poller *p = t_poller(NULL);
	struct amio_poller_stats s0, s1, d;
	amio_registrar *r;
	amio_notification n[64];
	pthread_t t;
	int fds[2], k, c, extra = 0;
	int64_t id;

	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, t_run_poller, p), 0);
	readable_pair(fds);
	id = amio_register(r, fds[1], AMIO_READ | AMIO_LEVEL, NULL);
	ck_assert_int_gt(id, 0);
	usleep(20000); /* registered and reported once */
	amio_poller_stats(p, &s0);
	usleep(100000); /* the worker does not wait: the socket stays readable */
	amio_poller_stats(p, &s1);
	stats_delta(&s0, &s1, &d);
	ck_assert_msg(d.sqes < 100 && d.cqes < 100 && d.enters < 100,
	              "100 ms with an unread AMIO_LEVEL socket and no waiter: %llu SQEs, %llu "
	              "CQEs, %llu enters (a busy loop)",
	              (unsigned long long)d.sqes, (unsigned long long)d.cqes,
	              (unsigned long long)d.enters);
	/* While it stays readable: exactly one notification per wait call. */
	for (int w = 0; w < 3; w++) {
		k = amio_registrar_wait(r, n, 64, 1000);
		ck_assert_int_ge(k, 0);
		c = count_id(n, k, id);
		ck_assert_msg(c == 1,
		              "wait %d on an unread AMIO_LEVEL socket: %d notifications for it", w,
		              c);
		ck_assert(n[0].events & AMIO_READ);
	}
	ck_assert_int_eq(drain_fd(fds[1]), 1);
	/* Drained: at most one spurious report, then silence. */
	for (int w = 0; w < 2; w++) {
		k = amio_registrar_wait(r, n, 64, 100);
		ck_assert_int_ge(k, 0);
		extra += count_id(n, k, id);
	}
	ck_assert_msg(extra <= 1, "%d READ notifications after the socket was drained", extra);
	ck_assert_int_eq(amio_deregister(r, (uint64_t)id), 0);
	t_stop_poller(p, t);
	amio_registrar_free(r);
	amio_poller_free(p);
	close_pair(fds);
}
END_TEST

/* ---- 13. Freeing a registrar whose doorbell is still queued ----------- */

/* The fds open now, as a bitmap of the first 1024. */
static void open_fds(unsigned char *map)
{
	memset(map, 0, 1024);
	for (int fd = 0; fd < 1024; fd++)
		map[fd] = fcntl(fd, F_GETFD) >= 0;
}

/* A doorbell (MSG_RING to the registrar's ring fd) queued by a stopping
 * call, then the registrar freed and retired: its ring fd is closed and
 * the next io_uring the process makes takes the same number. The queued
 * doorbell must not land there (a stray CQE in someone else's ring). */
START_TEST(a_freed_registrars_queued_doorbell_never_reaches_the_ring_that_reuses_its_fd)
{
	int fds_before = t_count_fds();
	amio_poller *p = t_poller(NULL);
	struct sleeper s = {.timeout_ms = 300};
	unsigned char before[1024], after[1024];
	struct io_uring mine;
	struct io_uring_cqe *cqe = NULL;
	amio_notification n[8];
	amio_channel *ch;
	pthread_t t;
	int msg = 3, ring_fd = -1;

	ck_assert_int_eq(amio_poller_wait(p, n, 8, 0), 0);
	open_fds(before);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &s.r), 0);
	open_fds(after);
	for (int fd = 0; fd < 1024; fd++)
		if (after[fd] && !before[fd])
			ring_fd = fd; /* the inbox waiter's ring */
	ck_assert_int_eq(amio_channel_new(s.r, 8, sizeof(msg), NULL, &ch), 0);
	ck_assert_int_eq(amio_poller_wait(p, n, 8, 0), 0);
	start_sleeper(&s, &t);
	/* Delivered by a stopping call: its doorbell may stay queued. */
	ck_assert_int_eq(amio_channel_send(ch, &msg), 0);
	ck_assert_int_eq(amio_poller_stop(p), 0);
	ck_assert_int_eq(amio_poller_wait(p, n, 8, 1000), 0);
	pthread_join(t, NULL);
	amio_channel_free(ch);
	amio_registrar_free(s.r);
	/* Retired by a stopping call too: nothing submitted yet. */
	ck_assert_int_eq(amio_poller_stop(p), 0);
	ck_assert_int_eq(amio_poller_wait(p, n, 8, 1000), 0);
	ck_assert_int_eq(io_uring_queue_init(4, &mine, 0), 0);
	if (mine.ring_fd != ring_fd)
		fprintf(stderr, "note: the new ring got fd %d, the freed registrar's was %d\n",
		        mine.ring_fd, ring_fd);
	/* The poller goes on: whatever it still had queued is submitted. */
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(amio_poller_wait(p, n, 8, 10), 0);
	usleep(10000);
	if (io_uring_peek_cqe(&mine, &cqe) == 0)
		ck_abort_msg(
		    "a CQE (user_data 0x%llx, res %d) landed in an unrelated io_uring on fd "
		    "%d, the number the freed inbox registrar's ring had: its queued "
		    "doorbell went to whoever reused the fd",
		    (unsigned long long)cqe->user_data, cqe->res, mine.ring_fd);
	io_uring_queue_exit(&mine);
	amio_poller_free(p);
	ck_assert_int_eq(t_count_fds(), fds_before);
}
END_TEST

/* ---- 14. An inbox of one, fed from the overflow path ------------------ */

START_TEST(a_worker_receives_every_notification_through_a_tiny_inbox)
{
	enum { N = 64 };
	const int rounds = t_scale(150);
	struct amio_poller_config cfg = {.inbox_entries = 2};
	amio_poller *p = t_poller(&cfg);
	amio_registrar *r;
	amio_notification n[4];
	int pairs[N][2], pending[N];
	int64_t ids[N];
	pthread_t t;
	uint64_t total = 0, seed;

	seed_rng();
	seed = rng_state;
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	ck_assert_int_eq(pthread_create(&t, NULL, t_run_poller, p), 0);
	for (int i = 0; i < N; i++) {
		t_tcp_pair(pairs[i]);
		pending[i] = 0;
		ids[i] = amio_register(r, pairs[i][1], AMIO_READ, &pending[i]);
		ck_assert_int_gt(ids[i], 0);
	}
	for (int round = 0; round < rounds; round++) {
		int want = 0;

		for (int i = 0; i < N; i++)
			if (rnd(2)) {
				t_write_str(pairs[i][0], "x");
				pending[i] = 1;
				want++;
			}
		while (want > 0) {
			int64_t t0 = t_now_ms();
			int k = amio_registrar_wait(r, n, 1 + rnd(4), 1000);

			ck_assert_int_ge(k, 0);
			ck_assert_msg(
			    k > 0,
			    "seed %llu round %d: %d readable sockets not delivered within "
			    "%lld ms (a stall in the overflow path; %llu delivered so far)",
			    (unsigned long long)seed, round, want, (long long)(t_now_ms() - t0),
			    (unsigned long long)total);
			for (int j = 0; j < k; j++) {
				int *pend = n[j].data;

				total++;
				if (drain_fd(pairs[pend - pending][1]) > 0 && *pend) {
					*pend = 0;
					want--;
				}
			}
			if (rnd(8) == 0)
				usleep(rnd(200));
		}
	}
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(amio_deregister(r, (uint64_t)ids[i]), 0);
		close_pair(pairs[i]);
	}
	t_stop_poller(p, t);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- Found by the model test (tests/check_model.c) ------------------------ */

/* F1, inbox: an AMIO_CHANNEL already in the inbox when the receiver drains
 * the channel to -EAGAIN is withdrawn ("a pending notification is then not
 * reported"). Each round: send, let the poller deliver, drain, wait. */
START_TEST(a_channel_drained_after_its_notification_reached_the_inbox_reports_nothing)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_channel *ch;
	amio_notification n[4];
	pthread_t pt;
	uint64_t m = 1;

	ck_assert_int_eq(pthread_create(&pt, NULL, t_run_poller, p), 0);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	ck_assert_int_eq(amio_channel_new(r, 8, sizeof(m), NULL, &ch), 0);
	for (int round = 0; round < t_scale(20); round++) {
		int k;

		ck_assert_int_eq(amio_channel_send(ch, &m), 0);
		usleep(20 * 1000); /* the poller delivers it to the inbox */
		while (amio_channel_try_recv(ch, &m) == 0)
			;
		k = amio_registrar_wait(r, n, 4, 20);
		ck_assert_msg(k == 0, "round %d: %d notification(s) after the drain (events %#x)",
		              round, k, k > 0 ? n[0].events : 0);
	}
	ck_assert_int_eq(amio_poller_stop(p), 0);
	pthread_join(pt, NULL);
	amio_channel_free(ch);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* F1, Amy mode: the same for a notification amio_poller_run stashed. */
START_TEST(a_channel_drained_after_run_stashed_its_notification_reports_nothing)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_channel *ch;
	amio_notification n[4];
	uint64_t m = 1;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_channel_new(r, 8, sizeof(m), NULL, &ch), 0);
	ck_assert_int_eq(amio_channel_send(ch, &m), 0);
	ck_assert_int_eq(amio_poller_run(p), 1); /* stashed */
	while (amio_channel_try_recv(ch, &m) == 0)
		;
	ck_assert_int_eq(amio_poller_wait(p, n, 4, 0), 0);
	/* Not drained: it is delivered. */
	ck_assert_int_eq(amio_channel_send(ch, &m), 0);
	ck_assert_int_eq(amio_poller_run(p), 1);
	ck_assert_int_eq(amio_poller_wait(p, n, 4, 0), 1);
	ck_assert_uint_eq(n[0].events, AMIO_CHANNEL);
	amio_channel_free(ch);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* F4: a one-shot that amio_poller_run stashed is not handed out until a
 * wait returns it: a cancel in between returns 0 and it never comes; left
 * alone, it comes exactly once. */
START_TEST(a_one_shot_stashed_by_run_can_still_be_cancelled)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification n[4];
	int64_t t;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	t = amio_set_timeout(r, 0, NULL);
	ck_assert_int_gt(t, 0);
	ck_assert_int_eq(amio_poller_run(p), 1);
	ck_assert_int_eq(amio_cancel_timer(r, (uint64_t)t), 0);
	ck_assert_int_eq(amio_poller_wait(p, n, 4, 50), 0);
	t = amio_set_timeout(r, 0, NULL);
	ck_assert_int_eq(amio_poller_run(p), 1);
	ck_assert_int_eq(amio_poller_wait(p, n, 4, 0), 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)t);
	ck_assert_int_eq(amio_cancel_timer(r, (uint64_t)t), -ENOENT);
	ck_assert_int_eq(amio_poller_wait(p, n, 4, 50), 0);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* Found by the model test on epoll: a cancel racing the poll thread's
 * LIVE -> FIRED lost its CAS and returned -ENOENT for a one-shot nobody had
 * taken; its notification was then delivered after the cancel returned.
 * The inbox owner cancels its own 0 ms timers: nothing can have been handed
 * out, so every cancel must return 0 and nothing may arrive. */
START_TEST(a_cancel_racing_the_fire_of_a_one_shot_still_wins)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification n[16];
	pthread_t pt;
	uint64_t seed = (uint64_t)t_now_ms();
	int rounds = t_scale(20000), late = 0;

	ck_assert_int_eq(pthread_create(&pt, NULL, t_run_poller, p), 0);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	for (int i = 0; i < rounds; i++) {
		int64_t t = amio_set_timeout(r, 0, NULL);
		int rc;

		if (t == -EAGAIN) {
			ck_assert_int_eq(amio_registrar_wait_room(r, 5000), 0);
			continue;
		}
		ck_assert_int_gt(t, 0);
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		for (volatile unsigned spin = (unsigned)(seed >> 54); spin; spin--)
			;
		/* A full command queue (the poll thread not run for a while: a
		 * busy machine) refuses the cancel; it queued nothing, retry. */
		while ((rc = amio_cancel_timer(r, (uint64_t)t)) == -EAGAIN)
			ck_assert_int_eq(amio_registrar_wait_room(r, 5000), 0);
		ck_assert_msg(rc == 0, "round %d (seed %llu): cancel of an untaken one-shot = %s",
		              i, (unsigned long long)seed, amio_strerror(rc));
		late += amio_registrar_wait(r, n, 16, 0);
	}
	late += amio_registrar_wait(r, n, 16, 20);
	ck_assert_msg(late == 0, "%d one-shots delivered after their cancel returned 0", late);
	ck_assert_int_eq(amio_poller_stop(p), 0);
	pthread_join(pt, NULL);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("lifecycle");
	TCase *tc;

	t_require_io_uring();
	tc = tcase_create("late commands for dead ids");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, a_reregister_trailing_a_deregister_does_not_reach_the_reused_slot);
	tcase_add_test(tc,
	               a_channel_freed_after_its_inbox_registrar_does_not_poison_the_reused_slot);
	tcase_add_test(tc, racing_channel_frees_leave_every_later_registration_working);
	suite_add_tcase(s, tc);

	tc = tcase_create("stop and doorbells");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, a_stopping_wait_still_rings_the_doorbell_of_what_it_delivered);
	tcase_add_test(tc, a_poll_thread_that_stops_then_joins_its_worker_does_not_deadlock);
	tcase_add_test(
	    tc, a_freed_registrars_queued_doorbell_never_reaches_the_ring_that_reuses_its_fd);
	suite_add_tcase(s, tc);

	tc = tcase_create("inbox re-arms");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, inbox_registrations_do_not_go_deaf_inside_one_long_wait);
	tcase_add_test(tc, a_worker_receives_every_notification_through_a_tiny_inbox);
	suite_add_tcase(s, tc);

	tc = tcase_create("timer limits");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, timers_too_far_away_are_refused_and_never_fire_early);
	suite_add_tcase(s, tc);

	tc = tcase_create("send_wait against free");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, senders_asleep_in_send_wait_survive_the_channel_free);
	suite_add_tcase(s, tc);

	tc = tcase_create("non-pollable fds");
	tcase_set_timeout(tc, 20);
	tcase_add_loop_test(tc, a_non_pollable_fd_gets_one_error_not_a_busy_loop_in_amy_mode, 0, 2);
	tcase_add_loop_test(tc, a_non_pollable_fd_gets_one_error_not_a_busy_loop_in_inbox_mode, 0,
	                    2);
	suite_add_tcase(s, tc);

	tc = tcase_create("config limits");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, large_sq_sizes_with_the_default_cq_are_accepted);
	tcase_add_test(tc, sizes_beyond_the_limits_are_refused_with_einval);
	tcase_add_test(tc, the_largest_accepted_queues_and_the_smallest_sizes_work);
	suite_add_tcase(s, tc);

	tc = tcase_create("timer cancel");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, cancelling_a_fired_timer_still_in_the_inbox_prevents_its_delivery);
	tcase_add_test(tc, a_timer_cancelled_in_amy_mode_is_never_returned_by_a_later_wait);
	suite_add_tcase(s, tc);

	tc = tcase_create("model findings");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc,
	               a_channel_drained_after_its_notification_reached_the_inbox_reports_nothing);
	tcase_add_test(tc, a_channel_drained_after_run_stashed_its_notification_reports_nothing);
	tcase_add_test(tc, a_one_shot_stashed_by_run_can_still_be_cancelled);
	tcase_add_test(tc, a_cancel_racing_the_fire_of_a_one_shot_still_wins);
	suite_add_tcase(s, tc);

	tc = tcase_create("level in an inbox");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc,
	               a_level_registration_in_an_inbox_is_reported_once_per_wait_not_in_a_loop);
	suite_add_tcase(s, tc);
	return t_run(s);
}
