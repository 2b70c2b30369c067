/*
 * The poll thread: how commands become kernel requests, how completions become
 * notifications, and when the poll thread may sleep without losing a wakeup.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "fault.h"

static uint32_t round_pow2(uint32_t v)
{
	uint32_t r = 2;

	while (r < v && r < (1u << 30))
		r <<= 1;
	return r;
}

static uint64_t serials; /* pollers made so far */

static int config(struct amio_poller_config *c, const struct amio_poller_config *user)
{
	if (user)
		*c = *user;
	else
		memset(c, 0, sizeof(*c));
	if (c->flags & ~(uint32_t)(AMIO_POLLER_NO_DEFER_TASKRUN | AMIO_POLLER_NO_RINGLESS_MSG |
	                           AMIO_POLLER_NO_MULTISHOT_TIMEOUT | AMIO_POLLER_NO_SPIN |
	                           AMIO_POLLER_SCHED_BATCH))
		return -EINVAL;
	/* The kernel's limits (IORING_MAX_ENTRIES 32768, IORING_MAX_CQ_ENTRIES
	 * 65536) with our CQ of at least 4x the SQ: above these sizes
	 * io_uring_setup would refuse the ring. */
	if (c->sq_entries > AMIO_MAX_SQ_ENTRIES || c->cq_entries > AMIO_MAX_CQ_ENTRIES ||
	    c->queue_entries > AMIO_MAX_QUEUE_ENTRIES ||
	    c->inbox_entries > AMIO_MAX_QUEUE_ENTRIES || c->max_registrations > AMIO__MAX_SLOTS)
		return -EINVAL;
	c->sq_entries = round_pow2(c->sq_entries ? c->sq_entries : 256);
	if (!c->cq_entries)
		c->cq_entries = 16 * c->sq_entries > AMIO_MAX_CQ_ENTRIES ? AMIO_MAX_CQ_ENTRIES
		                                                         : 16 * c->sq_entries;
	if (c->cq_entries < 4 * c->sq_entries)
		c->cq_entries = 4 * c->sq_entries;
	c->queue_entries = round_pow2(c->queue_entries ? c->queue_entries : 4096);
	c->inbox_entries = round_pow2(c->inbox_entries ? c->inbox_entries : 4096);
	if (!c->max_registrations)
		c->max_registrations = (1u << 20) - 1;
	if (c->flags & AMIO_POLLER_NO_SPIN)
		c->spin_us = 0;
	if (c->spin_us > 1000000 || c->backend > AMIO_BACKEND_EPOLL)
		return -EINVAL;
	return 0;
}

int amio_poller_new(amio_poller **out, const struct amio_poller_config *user_cfg)
{
	struct amio_poller_config cfg;
	amio_poller *p;
	int rc;

	if (!out)
		return -EINVAL;
	rc = config(&cfg, user_cfg);
	if (rc < 0)
		return rc;
	/* Cache-line aligned: the doorbell and counters have lines of their own. */
	if (posix_memalign((void **)&p, AMIO__CACHELINE, sizeof(*p)) != 0)
		return -ENOMEM;
	memset(p, 0, sizeof(*p));
	rc = amio__registry_init(&p->reg, cfg.max_registrations);
	if (rc == 0 && (rc = amio__io_init(p)) < 0)
		amio__registry_destroy(&p->reg);
	if (rc == 0 && (rc = amio__backend_init(p, &cfg)) < 0) {
		amio__io_destroy(p);
		amio__registry_destroy(&p->reg);
	}
	if (rc < 0) {
		free(p);
		return rc;
	}
	p->queue_entries = cfg.queue_entries;
	p->inbox_entries = cfg.inbox_entries;
	p->cfg_flags = cfg.flags;
	p->spin_ns = (int64_t)cfg.spin_us * 1000;
	p->refs = 1;
	p->serial = ck_pr_faa_64(&serials, 1) + 1;
	*out = p;
	return 0;
}

void amio__poller_unref(amio_poller *p)
{
	if (ck_pr_faa_32(&p->refs, -1) != 1)
		return;
	amio__channels_free_all(p);
	free(p);
}

/* Wait until no registrar is inside a call that may touch the ring fd or
 * the registry; after this the shutdown flag keeps them out. */
static void quiesce(amio_registrar *list)
{
	for (amio_registrar *r = list; r; r = r->next)
		while (amio__in_call_load(&r->in_call))
			ck_pr_stall();
}

/* Accepted connections held for a consumer (an operation's hold, run's
 * stash) that nobody will take now. */
static void close_held_fds(amio_poller *p)
{
	uint64_t top = ck_pr_load_64(&p->reg.fresh);

	for (uint32_t slot = 1; slot < top && slot <= p->reg.cap; slot++) {
		struct amio__io *io = &p->reg.ios[slot];

		if (p->reg.entries[slot].kind != AMIO__KIND_IO || io->type != AMIO__IO_ACCEPT)
			continue;
		for (; io->held_n; io->held_n--, io->acc_head++)
			amio__close_accepted(*amio__acc_at(io, 0));
		free(io->acc_big);
		io->acc_big = NULL;
	}
	for (size_t i = 0; i < p->stash_n; i++)
		if ((p->stash[i].events & AMIO__IONOTE) &&
		    p->stash[i].events == (AMIO__IONOTE | AMIO_ACCEPT))
			amio__close_accepted(p->stash[i].res);
}

static void adopt_queued_pools(amio_poller *p, amio_registrar *r)
{
	struct amio__cmd c;

	while (ck_ring_dequeue_spsc_amio_cmd(&r->cmdq, r->cmdq_buf, &c))
		if (c.op == AMIO__OP_POOL_NEW) {
			amio_pool *pool = c.data;

			pool->next_all = p->pools;
			p->pools = pool;
		}
}

/* Shut the door and wait until nobody is inside a call that touches p:
 * registrars (in_call), stoppers, channel senders (those asleep in
 * send_wait are woken first). Every later call sees shutdown. */
static void shut_out(amio_poller *p)
{
	amio_registrar *in, *next;

	/* Kicks never send again (state stays NOTIFIED), new registrars are
	 * refused, and every call sees shutdown. */
	ck_pr_store_32(&p->state, AMIO__NOTIFIED);
	ck_pr_store_32(&p->shutdown, 1);
	in = ck_pr_fas_ptr(&p->incoming, AMIO__INCOMING_CLOSED);
	while (in && in != AMIO__INCOMING_CLOSED) {
		next = in->next_new;
		in->next = p->registrars;
		p->registrars = in;
		in = next;
	}
	/* Dekker pair with registrar_enter(), amio_poller_stop() and the
	 * channels' enter(): our shutdown store before their in_call,
	 * stoppers and senders loads. It also orders the poll thread's load of
	 * the stop flag that ended its run before our stoppers load. */
	ck_pr_fence_memory();
	quiesce(p->registrars);
	/* A stop that ended the run that returned before this free may still
	 * be sending its wakeup (the ring fd, the stop ring, p itself). The
	 * acquire load (ck.h under TSan) pairs with its release decrement. */
	while (ck_pr_load_32(&p->stoppers))
		ck_pr_stall();
	/* Senders, those asleep in send_wait woken first: they return
	 * -ESHUTDOWN. */
	amio__channels_shutdown(p);
}

void amio_poller_free(amio_poller *p)
{
	amio_registrar *r, *next;

	if (!p)
		return;
	shut_out(p);
	/* Workers asleep on their inbox, or waiting for queue room, would
	 * never learn of the shutdown. */
	for (r = p->registrars; r; r = r->next) {
		if (r->flags & AMIO_INBOX)
			(void)amio__backend_wake_waiter_now(p, &r->waiter);
		amio__futex_bump(&r->room_seq);
	}
	/* Pools whose POOL_NEW was still queued are freed with the others;
	 * accepted connections in inboxes nobody will read are closed. */
	for (r = p->registrars; r; r = r->next) {
		adopt_queued_pools(p, r);
		if (r->flags & AMIO_INBOX)
			amio__inbox_drop(r);
	}
	/* Exiting the ring cancels every poll, so users' close() sends FIN,
	 * and every operation (see amio.h on sends in flight). */
	amio__backend_destroy(p);
	close_held_fds(p);
	amio__pools_free_all(p);
	amio__io_destroy(p);
	amio__registry_destroy(&p->reg);
	for (r = p->registrars; r; r = next) {
		next = r->next;
		amio__registrar_unref(r);
	}
	for (r = p->graveyard; r; r = next) {
		next = r->next;
		amio__registrar_unref(r);
	}
	p->registrars = p->graveyard = NULL;
	amio__poller_unref(p);
}

void amio_poller_stats(const amio_poller *p, struct amio_poller_stats *out)
{
	amio_poller *q = (amio_poller *)p; /* ck_pr loads take non-const */

	out->enters = ck_pr_load_64(&q->stats.enters);
	out->sqes = ck_pr_load_64(&q->stats.sqes);
	out->cqes = ck_pr_load_64(&q->stats.cqes);
	out->notifications = ck_pr_load_64(&q->stats.notifications);
	out->wakeups_sent = ck_pr_load_64(&q->wakeups_sent);
	out->wakeups_failed = ck_pr_load_64(&q->wakeups_failed);
	out->wakeups_received = ck_pr_load_64(&q->stats.wakeups_received);
	out->commands = ck_pr_load_64(&q->stats.commands);
	out->rearms = ck_pr_load_64(&q->stats.rearms);
	out->overflows = ck_pr_load_64(&q->stats.overflows);
	out->enter_errors = ck_pr_load_64(&q->stats.enter_errors);
	out->recv_starved = ck_pr_load_64(&q->stats.recv_starved);
	out->accepts_refused = ck_pr_load_64(&q->stats.accepts_refused);
	out->accept_backoffs = ck_pr_load_64(&q->stats.accept_backoffs);
}

/* ---- Wakeups ------------------------------------------------------------ */

/* The poller this thread polls (set by enable): its own commands need no
 * wakeup, since a poll thread that runs our caller's code is not asleep. */
__thread amio_poller *amio__tls_poller;
__thread uint64_t amio__tls_serial; /* p->serial: a later poller at p's address is another */

/* Send the wakeup the CAS to NOTIFIED promised. Nobody else will: every
 * other kicker sees NOTIFIED. A send that fails (MSG_RING can: -ENOMEM
 * for the kernel's request, -EBUSY with the sender's small ring full) is
 * tried again; dropping it would leave the poll thread asleep with our
 * command queued until its timeout or an unrelated event. At shutdown it
 * gives up (state stays NOTIFIED: nobody sleeps any more); after 1,000
 * tries SLEEPING is put back, so the next kicker tries in turn. Counted
 * in wakeups_failed. */
static void wake_poller(amio_poller *p, amio_registrar *r)
{
	for (unsigned tries = 0;; tries++) {
		int rc = amio__fault(AMIO__FAULT_WAKE);

		if (rc == 0)
			rc = amio__backend_wake_poller(p, r ? &r->waiter : NULL);
		if (rc >= 0)
			return;
		ck_pr_faa_64(&p->wakeups_failed, 1);
		if (ck_pr_load_32(&p->shutdown))
			return; /* NOTIFIED for good: nobody sleeps any more */
		if (tries == 1000) {
			(void)ck_pr_cas_32(&p->state, AMIO__NOTIFIED, AMIO__SLEEPING);
			return;
		}
		sched_yield();
	}
}

void amio__poller_kick(amio_poller *p, amio_registrar *r)
{
	if (amio__is_poll_thread(p))
		return; /* saves the store-load fence per command (measured ~1% of
		           a one-thread completion server's CPU) */
	/* Our queue store (command, stop flag, drained inbox) before the load of
	 * the poller's state; pairs with the fence in sleep_ok(): either the
	 * poller sees our work, or we see SLEEPING and wake it. */
	ck_pr_fence_store_load();
	if (ck_pr_load_32(&p->state) != AMIO__SLEEPING)
		return;
	/* Only the CAS winner sends: one MSG_RING per sleep. */
	if (!ck_pr_cas_32(&p->state, AMIO__SLEEPING, AMIO__NOTIFIED))
		return;
	wake_poller(p, r);
}

int amio_poller_stop(amio_poller *p)
{
	int rc = 0;

	/* Counted before the shutdown load and the stop store: a Dekker pair
	 * with shut_out() (either it sees us and waits, or we see shutdown),
	 * and a poll thread that frees after seeing our stop sees us counted. */
	ck_pr_inc_32(&p->stoppers);
	ck_pr_fence_memory();
	if (ck_pr_load_32(&p->shutdown)) {
		rc = -ESHUTDOWN;
	} else {
		ck_pr_store_32(&p->stop, 1);
		amio__poller_kick(p, NULL);
	}
	/* Every access of ours to p and its ring (the wakeup) before the
	 * decrement that lets amio_poller_free go on; its last access to p. */
	ck_pr_fence_release();
	ck_pr_dec_32(&p->stoppers);
	return rc;
}

/* ---- Sleeping ---------------------------------------------------------- */

static bool work_queued(amio_poller *p)
{
	/* p->touched: a doorbell that found no SQE, to ring before sleeping. */
	if (ck_pr_load_ptr(&p->incoming) || ck_pr_load_ptr(&p->ready) || ck_pr_load_32(&p->stop) ||
	    ck_pr_load_ptr(&p->refilled) || p->touched || p->ovf.head)
		return true;
	for (amio_registrar *r = p->registrars; r; r = r->next) {
		if (ck_ring_size(&r->cmdq) || ck_pr_load_32(&r->closed) || amio__watch_due(r))
			return true;
		if (r->ovf.head && ck_ring_size(&r->inbox) < ck_ring_capacity(&r->inbox) - 1)
			return true;
	}
	return false;
}

/* Watch the queues (and completions the kernel holds for us) for up to the
 * spin window before sleeping: a command, channel send or completion that
 * comes within it costs no MSG_RING and no sleeping enter. Returns true if
 * work came. The clock is read every 16 looks only. */
static bool spin_for_work(amio_poller *p, int64_t left_ns)
{
	int64_t window, budget, start;

	/* Prepared SQEs (polls, inbox doorbells) must reach the kernel now:
	 * the sleeping enter submits them. */
	if (amio__backend_sq_pending(p))
		return false;
	window = amio__spin_window(p);
	if (window <= 0)
		return false;
	budget = left_ns >= 0 && left_ns < window ? left_ns : window;
	start = amio__now_ns();
	for (unsigned i = 1;; i++) {
		if (work_queued(p) || amio__backend_ready(p)) {
			amio__spin_caught(p, window, amio__now_ns() - start);
			return true;
		}
		ck_pr_stall();
		if (i % 16 == 0 && amio__now_ns() - start >= budget) {
			if (budget == window) /* a timeout cut short is no lesson */
				amio__spin_caught(p, window, -1);
			return false;
		}
	}
}

/* Publish SLEEPING, then look at every queue once more (rule 2). */
static bool sleep_ok(amio_poller *p)
{
	ck_pr_store_32(&p->state, AMIO__SLEEPING);
	/* SLEEPING before the queue loads; pairs with amio__poller_kick(). */
	ck_pr_fence_store_load();
	if (!work_queued(p))
		return true;
	ck_pr_store_32(&p->state, AMIO__RUNNING);
	return false;
}

/* The first caller becomes the poll thread. A SINGLE_ISSUER ring refuses
 * other threads itself (-EEXIST); we check on every kernel so the rule does
 * not depend on which ring flags this kernel accepted. */
static int enable(amio_poller *p)
{
	int rc;

	if (p->enabled)
		return pthread_equal(p->poll_thread, pthread_self()) ? 0 : -EEXIST;
	if (p->cfg_flags & AMIO_POLLER_SCHED_BATCH) {
		struct sched_param sp = {.sched_priority = 0};

		/* Linux applies the policy to the calling thread (pid 0). */
		if (sched_setscheduler(0, SCHED_BATCH, &sp) < 0)
			return -errno;
	}
	rc = amio__backend_enable(p);
	if (rc < 0)
		return rc;
	p->poll_thread = pthread_self();
	p->enabled = true;
	amio__tls_poller = p;
	amio__tls_serial = p->serial;
	return 0;
}

/* Reap completions while out[] has room for what they make (each makes at
 * most one notification). Returns how many were taken. */
static unsigned reap(amio_poller *p)
{
	struct amio__completion c[64];
	unsigned total = 0, n, max;

	/* One batch: timer ticks reaped together coalesce (timer.c). */
	p->batch++;
	do {
		unsigned room = (unsigned)(p->out_cap - p->out_n);

		max = room < 64 ? room : 64;
		n = amio__backend_reap(p, c, max);
		for (unsigned i = 0; i < n; i++) {
			if (c[i].kind == AMIO__C_POLL)
				amio__on_poll(p, c[i].slot, c[i].armgen, c[i].res, c[i].more);
			else if (c[i].kind == AMIO__C_TIMER)
				amio__on_timer(p, c[i].slot, c[i].armgen, c[i].res, c[i].more);
			else if (c[i].kind >= AMIO__C_IO)
				amio__on_io(p, &c[i]);
			else
				amio__on_remove_busy(p, c[i].slot, c[i].armgen);
		}
		total += n;
	} while (n == 64);
	/* Emptied, with nothing left to submit: a recv a refill woke has
	 * taken its buffer, or found nothing to read (pool.c). */
	if (p->waking_pools && n < max && !amio__backend_sq_pending(p))
		amio__pools_reaped(p);
	return total;
}

/* io_uring_enter failures that pass: a signal, or the kernel short of
 * memory or CQ room (-EBUSY: reaping makes room). A failed enter took no
 * SQE, so retrying loses nothing; after AMIO__ENTER_RETRIES in a row with
 * no completion reaped, the error goes to the caller. */
#define AMIO__ENTER_RETRIES 64

static bool enter_failed(amio_poller *p, int rc, unsigned *row)
{
	if (rc != -EINTR && rc != -EAGAIN && rc != -EBUSY && rc != -ENOMEM)
		return true;
	AMIO__STAT_ADD(p, enter_errors, 1);
	if (reap(p) || rc == -EINTR)
		*row = 0; /* progress, or a signal: not the kernel failing */
	return ++*row > AMIO__ENTER_RETRIES;
}

/* The wait ends on an error: hand out what was collected, if anything;
 * the error then comes back on the next call, if it persists. */
static int end_on_error(amio_poller *p, int rc)
{
	amio__filter_out(p);
	return p->out_n ? (int)p->out_n : rc;
}

/* One wait: at most one io_uring_enter per loop iteration. Returns the
 * number of notifications in p->out, 0 on timeout or stop, or -errno (only
 * with none collected: notifications are never dropped for an error). */
static int poll_loop(amio_poller *p, int timeout_ms)
{
	int64_t deadline = timeout_ms > 0 ? amio__now_ns() + (int64_t)timeout_ms * 1000000 : 0;
	unsigned failed_row = 0;
	int rc;

	p->wait_seq++;
	amio__backend_begin_wait(p);
	amio__run_pending(p, &p->amy_pending);
	for (;;) {
		int64_t left = -1;

		if (p->graveyard)
			amio__bury(p);
		if (p->pending_head)
			amio__run_pending(p, &p->pending_head);
		amio__drain(p);
		if (p->dl_n)
			amio__io_expire(p);
		if (p->ovf.head)
			amio__flush_amy(p);
		amio__ring_touched(p);
		if (ck_pr_load_32(&p->stop)) {
			ck_pr_store_32(&p->stop, 0);
			amio__filter_out(p);
			return (int)p->out_n;
		}
		if (p->out_n || amio__backend_ready(p) || timeout_ms == 0) {
			/* Completions ready (or a poll): submit and flush the
			 * kernel's deferred work only if there is any. */
			if (amio__backend_sq_pending(p) || amio__backend_ready(p) ||
			    (timeout_ms == 0 && p->be.ops->enter_to_peek)) {
				rc = amio__backend_enter(p, false, 0);
				if (rc < 0 && enter_failed(p, rc, &failed_row))
					return end_on_error(p, rc);
			}
			reap(p);
			if (amio__filter_out(p) || timeout_ms == 0)
				return (int)p->out_n;
			/* Nothing came of it: keep the deadline even if the
			 * kernel keeps us here (task work that posts nothing). */
			if (timeout_ms > 0 && amio__now_ns() >= deadline)
				timeout_ms = 0;
			continue;
		}
		if (timeout_ms > 0) {
			left = deadline - amio__now_ns();
			if (left <= 0) {
				timeout_ms = 0; /* one last non-blocking look */
				continue;
			}
		}
		if (p->dl_n) {
			/* An operation's deadline bounds the sleep (never early). */
			int64_t dl = amio__io_next_deadline_ns(p);

			if (left < 0 || dl < left)
				left = dl;
		}
		if (p->waking_pools) {
			/* Buffers promised to recvs a refill woke: submit and
			 * look once more before sleeping, so one with nothing
			 * to read hands its buffer on (pool.c) rather than
			 * holding it while we sleep. */
			rc = amio__backend_enter(p, false, 0);
			if (rc < 0 && enter_failed(p, rc, &failed_row))
				return end_on_error(p, rc);
			reap(p);
			if (p->waking_pools)
				amio__pools_reaped(p);
			if (amio__filter_out(p))
				return (int)p->out_n;
			continue;
		}
		if (p->pending_head) {
			/* Work this iteration queued for the next (a close asking
			 * its fd's recvs to end): nothing would wake us for it.
			 * Submit first, so a retry that wants an SQE finds one. */
			rc = amio__backend_enter(p, false, 0);
			if (rc < 0 && enter_failed(p, rc, &failed_row))
				return end_on_error(p, rc);
			reap(p);
			if (amio__filter_out(p))
				return (int)p->out_n;
			continue;
		}
		if (spin_for_work(p, left) || !sleep_ok(p))
			continue;
		rc = amio__backend_enter(p, true, left);
		ck_pr_fas_32(&p->state, AMIO__RUNNING);
		if (rc < 0 && rc != -ETIME && enter_failed(p, rc, &failed_row))
			return end_on_error(p, rc);
		reap(p);
		if (amio__filter_out(p))
			return (int)p->out_n;
	}
}

/* Work for other threads must not wait for our caller's next call, which
 * may be far off: re-arm inbox registrations, ring the doorbells of inboxes
 * filled on the way out (a stop, an error), and submit (a removal queued
 * by the last reap keeps its file open until the kernel has it). */
static int finish(amio_poller *p, int rc)
{
	/* The count is fixed: a notification made from here on (an Amy-mode
	 * re-arm that fails) must wait in the overflow list for the next
	 * call, not land in out[] past what we return. */
	p->out = NULL;
	if (p->pending_head)
		amio__run_pending(p, &p->pending_head);
	amio__ring_touched(p);
	/* A failed submit leaves the SQEs in the SQ for the next enter. */
	if (amio__backend_sq_pending(p))
		(void)amio__backend_submit(p);
	amio__bury(p);
	return rc;
}

int amio_poller_wait(amio_poller *p, amio_notification *out, size_t cap, int timeout_ms)
{
	int rc;

	if (!p || !out || cap == 0 || timeout_ms < -1)
		return -EINVAL;
	if (ck_pr_load_32(&p->shutdown))
		return -ESHUTDOWN;
	rc = enable(p);
	if (rc < 0)
		return rc;
	if (p->stash_n) {
		size_t n = 0, used = 0;

		while (used < p->stash_n && n < cap) {
			uint8_t *lend = p->stash_lend[used];

			if (!amio__hand_out(p, &p->stash[used++]))
				continue;
			if (lend)
				ck_pr_store_8(lend, AMIO__LENT_HELD);
			out[n++] = p->stash[used - 1];
		}
		memmove(p->stash, p->stash + used, (p->stash_n - used) * sizeof(*out));
		memmove(p->stash_lend, p->stash_lend + used,
		        (p->stash_n - used) * sizeof(p->stash_lend[0]));
		p->stash_n -= used;
		if (n)
			return (int)n;
	}
	p->out = out;
	p->out_cap = cap;
	p->out_n = 0;
	return finish(p, poll_loop(p, timeout_ms));
}

int amio_poller_run(amio_poller *p)
{
	const size_t room = sizeof(p->stash) / sizeof(p->stash[0]);
	int rc;

	if (!p)
		return -EINVAL;
	if (ck_pr_load_32(&p->shutdown))
		return -ESHUTDOWN;
	rc = enable(p);
	if (rc < 0)
		return rc;
	if (p->stash_n)
		return 1;
	p->out = p->stash;
	p->out_cap = room;
	p->out_n = 0;
	rc = poll_loop(p, -1);
	if (rc > 0)
		p->stash_n = (size_t)rc;
	return finish(p, rc > 0 ? 1 : rc);
}
