/*
 * The poll thread: how commands become kernel requests, how completions become
 * notifications, and when the poll thread may sleep without losing a wakeup.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static uint32_t round_pow2(uint32_t v)
{
	uint32_t r = 2;

	while (r < v && r < (1u << 30))
		r <<= 1;
	return r;
}

static int config(struct amio_poller_config *c, const struct amio_poller_config *user)
{
	if (user)
		*c = *user;
	else
		memset(c, 0, sizeof(*c));
	if (c->flags & ~(uint32_t)(AMIO_POLLER_NO_DEFER_TASKRUN | AMIO_POLLER_NO_RINGLESS_MSG |
	                           AMIO_POLLER_NO_MULTISHOT_TIMEOUT | AMIO_POLLER_NO_SPIN))
		return -EINVAL;
	if (c->sq_entries > 32768 || c->max_registrations > AMIO__MAX_SLOTS)
		return -EINVAL;
	c->sq_entries = round_pow2(c->sq_entries ? c->sq_entries : 256);
	if (!c->cq_entries)
		c->cq_entries = 16 * c->sq_entries;
	if (c->cq_entries < 4 * c->sq_entries)
		c->cq_entries = 4 * c->sq_entries;
	c->queue_entries = round_pow2(c->queue_entries ? c->queue_entries : 4096);
	c->inbox_entries = round_pow2(c->inbox_entries ? c->inbox_entries : 4096);
	if (!c->max_registrations)
		c->max_registrations = (1u << 20) - 1;
	if (c->flags & AMIO_POLLER_NO_SPIN)
		c->spin_us = 0;
	if (c->spin_us > 1000000)
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
	if (rc == 0) {
		rc = amio__backend_init(p, &cfg);
		if (rc < 0)
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

void amio_poller_free(amio_poller *p)
{
	amio_registrar *in, *r, *next;

	if (!p)
		return;
	/* Shut the door first: kicks never send again (state stays NOTIFIED),
	 * new registrars are refused, and every call sees shutdown. */
	ck_pr_store_32(&p->state, AMIO__NOTIFIED);
	ck_pr_store_32(&p->shutdown, 1);
	in = ck_pr_fas_ptr(&p->incoming, AMIO__INCOMING_CLOSED);
	while (in && in != AMIO__INCOMING_CLOSED) {
		next = in->next_new;
		in->next = p->registrars;
		p->registrars = in;
		in = next;
	}
	/* Dekker pair with registrar_enter(): our shutdown store before their
	 * in_call loads. */
	ck_pr_fence_memory();
	quiesce(p->registrars);
	for (amio_channel *ch = ck_pr_load_ptr(&p->channels); ch; ch = ch->next_all)
		while (ck_pr_load_32(&ch->senders))
			ck_pr_stall();
	/* Senders asleep in amio_channel_send_wait: they return -ESHUTDOWN. */
	amio__channels_shutdown(p);
	/* Workers asleep on their inbox would never learn of the shutdown. */
	for (r = p->registrars; r; r = r->next)
		if (r->flags & AMIO_INBOX)
			(void)amio__backend_wake_waiter_now(p, &r->waiter);
	/* Exiting the ring cancels every poll, so users' close() sends FIN. */
	amio__backend_destroy(p);
	amio__registry_destroy(&p->reg);
	for (r = p->registrars; r; r = next) {
		next = r->next;
		amio__registrar_unref(r);
	}
	p->registrars = NULL;
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
	out->wakeups_received = ck_pr_load_64(&q->stats.wakeups_received);
	out->commands = ck_pr_load_64(&q->stats.commands);
	out->rearms = ck_pr_load_64(&q->stats.rearms);
	out->overflows = ck_pr_load_64(&q->stats.overflows);
	out->enter_errors = ck_pr_load_64(&q->stats.enter_errors);
}

/* ---- Wakeups ------------------------------------------------------------ */

void amio__poller_kick(amio_poller *p, amio_registrar *r)
{
	/* Our queue store (command, stop flag, drained inbox) before the load of
	 * the poller's state; pairs with the fence in sleep_ok(): either the
	 * poller sees our work, or we see SLEEPING and wake it. */
	ck_pr_fence_store_load();
	if (ck_pr_load_32(&p->state) != AMIO__SLEEPING)
		return;
	/* Only the CAS winner sends: one MSG_RING per sleep. */
	if (!ck_pr_cas_32(&p->state, AMIO__SLEEPING, AMIO__NOTIFIED))
		return;
	/* A failed wakeup cannot be undone here; it can only fail if the ring
	 * is gone, and then shutdown is set and nobody is waiting. */
	(void)amio__backend_wake_poller(p, r ? &r->waiter : NULL);
}

int amio_poller_stop(amio_poller *p)
{
	if (ck_pr_load_32(&p->shutdown))
		return -ESHUTDOWN;
	ck_pr_store_32(&p->stop, 1);
	amio__poller_kick(p, NULL);
	return 0;
}

/* ---- Entries: desired vs kernel state ----------------------------------- */

bool amio__entry_live(amio_poller *p, const struct amio__entry *e)
{
	return (e->flags & (AMIO__E_REGISTERED | AMIO__E_DEREGISTERED)) == AMIO__E_REGISTERED &&
	       amio__registry_live(&p->reg, e->id, AMIO__KIND_ANY);
}

void amio__maybe_free(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	const uint32_t both = AMIO__E_REGISTERED | AMIO__E_DEREGISTERED;

	if ((e->flags & both) == both && e->inflight == 0 &&
	    !(e->flags & (AMIO__E_PENDING | AMIO__E_OVERFLOW)))
		amio__registry_release(&p->reg, slot);
}

static void push_pending(amio_poller *p, struct amio__entry *e)
{
	if (e->flags & AMIO__E_PENDING)
		return;
	e->flags |= AMIO__E_PENDING;
	e->next_pending = p->pending_head;
	p->pending_head = e;
}

/* Bring the kernel in line with the entry: armed while live and not parked,
 * removed once deregistered; then free it if nothing references it. */
void amio__reconcile(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	int rc;

	if (!amio__entry_live(p, e)) {
		/* No SQE for the removal: retry on the next wait, the poll keeps
		 * a file reference until it is removed. */
		if ((e->flags & AMIO__E_ARMED) && amio__backend_disarm(p, e, slot) < 0)
			push_pending(p, e);
		amio__maybe_free(p, e, slot);
		return;
	}
	/* Channels have no kernel request: their sends raise them directly. */
	if ((e->flags & (AMIO__E_ARMED | AMIO__E_PARKED)) || e->kind == AMIO__KIND_CHANNEL)
		return;
	rc = amio__backend_arm(p, e, slot);
	if (rc < 0) {
		e->flags |= AMIO__E_PARKED;
		amio__notify(p, e, AMIO_ERROR, rc);
	}
}

/* ---- Notifications -------------------------------------------------------- */

static void touch(amio_poller *p, amio_registrar *r)
{
	if (r->touched)
		return;
	r->touched = true;
	r->next_touched = p->touched;
	p->touched = r;
}

static void overflow(amio_registrar *r, struct amio__entry *e, uint32_t events, int32_t error)
{
	/* Readiness coalesces: an entry waits in the list at most once. */
	if (e->flags & AMIO__E_OVERFLOW) {
		e->pending |= events;
		if (error)
			e->pending_error = error;
		return;
	}
	e->flags |= AMIO__E_OVERFLOW;
	e->pending = events;
	e->pending_error = error;
	e->next_ovf = NULL;
	if (r->ovf_tail)
		r->ovf_tail->next_ovf = e;
	else
		r->ovf_head = e;
	r->ovf_tail = e;
	ck_pr_store_32(&r->overflowed, 1);
}

void amio__notify(amio_poller *p, struct amio__entry *e, uint32_t events, int32_t error)
{
	amio_notification n = {.id = e->id, .data = e->data, .events = events, .error = error};
	amio_registrar *r = e->owner;

	if (!r) {
		/* One notification per id per wait, as epoll: a user who closes
		 * on the first cannot trip over a second. Room is guaranteed:
		 * reap takes at most out_cap - out_n CQEs, each makes at most one. */
		if (e->note_seq == p->wait_seq && e->note_idx < p->out_n &&
		    p->out[e->note_idx].id == e->id) {
			p->out[e->note_idx].events |= events;
			if (error)
				p->out[e->note_idx].error = error;
			return;
		}
		AMIO__STAT_ADD(p, notifications, 1);
		e->note_seq = p->wait_seq;
		e->note_idx = (uint32_t)p->out_n;
		p->out[p->out_n++] = n;
		return;
	}
	AMIO__STAT_ADD(p, notifications, 1);
	/* The inbox is an SPSC ck_ring plus a doorbell MSG_RING only for a
	 * sleeping worker, not one MSG_RING CQE per notification (DESIGN asks
	 * which): bench/inbox_transport_bench measured the ring 6-16x faster
	 * in notifications/s at 8-16x less CPU, equal in one-at-a-time latency
	 * (bench/results/inbox-transport-2026-11-24.md). */
	if (!r->ovf_head && ck_ring_enqueue_spsc_amio_note(&r->inbox, r->inbox_buf, &n)) {
		touch(p, r);
		return;
	}
	overflow(r, e, events, error);
}

/* Move overflowed notifications into the inbox as room allows. */
static void flush_overflow(amio_poller *p, amio_registrar *r)
{
	struct amio__entry *e;

	while ((e = r->ovf_head)) {
		uint32_t slot = amio__id_slot(e->id);
		amio_notification n = {e->id, e->data, e->pending, e->pending_error};

		if ((amio__entry_live(p, e) || (e->pending & AMIO__FINAL)) &&
		    !ck_ring_enqueue_spsc_amio_note(&r->inbox, r->inbox_buf, &n))
			break;
		r->ovf_head = e->next_ovf;
		if (!r->ovf_head)
			r->ovf_tail = NULL;
		e->flags &= ~AMIO__E_OVERFLOW;
		touch(p, r);
		amio__maybe_free(p, e, slot);
	}
	if (!r->ovf_head)
		ck_pr_store_32(&r->overflowed, 0);
}

/* Wake the inbox waiters we gave work to; the MSG_RING SQEs go out with the
 * next io_uring_enter. */
static bool ring_touched(amio_poller *p)
{
	amio_registrar *r = p->touched;

	if (!r)
		return false;
	/* Inbox stores before the doorbell loads; pairs with the fence in
	 * amio_registrar_wait between its SLEEPING store and inbox re-check. */
	ck_pr_fence_store_load();
	p->touched = NULL;
	while (r) {
		amio_registrar *next = r->next_touched;

		r->touched = false;
		if (ck_pr_load_32(&r->doorbell) == AMIO__SLEEPING &&
		    ck_pr_cas_32(&r->doorbell, AMIO__SLEEPING, AMIO__NOTIFIED) &&
		    amio__backend_wake_waiter(p, &r->waiter) < 0) {
			/* No SQE for the doorbell: the waiter still sleeps.
			 * Ring it again on the next iteration. */
			ck_pr_store_32(&r->doorbell, AMIO__SLEEPING);
			touch(p, r);
		}
		r = next;
	}
	return true;
}

static uint32_t to_events(int32_t res, uint32_t want)
{
	uint32_t ev = 0;

	if (res & POLLIN)
		ev |= AMIO_READ;
	if (res & POLLOUT)
		ev |= AMIO_WRITE;
	if (res & (POLLHUP | POLLRDHUP))
		ev |= AMIO_HUP;
	if (res & POLLERR)
		ev |= AMIO_ERROR;
	/* A hang-up is readable (EOF) for a reader; errors go to everyone. */
	if ((ev & AMIO_HUP) && (want & AMIO_READ))
		ev |= AMIO_READ;
	return ev & (want | AMIO_HUP | AMIO_ERROR);
}

void amio__on_poll(amio_poller *p, uint32_t slot, uint32_t armgen, int32_t res, bool more)
{
	struct amio__entry *e = &p->reg.entries[slot];

	if (!more)
		e->inflight--;
	if (armgen != e->armgen) {
		/* A poll we removed or replaced: never reported. */
		amio__maybe_free(p, e, slot);
		return;
	}
	if (!more)
		e->flags &= ~AMIO__E_ARMED;
	if (!amio__entry_live(p, e)) {
		/* Deregistered after the kernel posted this: filtered. */
		amio__reconcile(p, e, slot);
		return;
	}
	if (res == -ECANCELED && !more) {
		/* The kernel ended it (not us: ours carry a stale armgen). */
		AMIO__STAT_ADD(p, rearms, 1);
		amio__reconcile(p, e, slot);
		return;
	}
	if (res < 0) {
		e->flags |= AMIO__E_PARKED;
		amio__notify(p, e, AMIO_ERROR, res);
		return;
	}
	if (!more) {
		if (e->events & AMIO_ONESHOT) {
			e->flags |= AMIO__E_PARKED;
		} else if (e->events & AMIO_LEVEL) {
			push_pending(p, e);
		} else {
			/* Multishot ended without being asked (the kernel ends it
			 * when the CQ is full): re-arm, or the registration goes
			 * deaf. On the next wait, not now: a poll armed before the
			 * caller has read this readiness would report it twice. */
			AMIO__STAT_ADD(p, rearms, 1);
			push_pending(p, e);
		}
	}
	amio__notify(p, e, to_events(res, e->events), 0);
}

/* ---- Commands ----------------------------------------------------------- */

struct amio__entry *amio__entry_for(amio_poller *p, uint64_t id)
{
	uint32_t slot = amio__id_slot(id);
	struct amio__entry *e = &p->reg.entries[slot];
	uint64_t word;

	if (e->id == id)
		return e;
	/* The first command of this generation to arrive (REGISTER may trail a
	 * DEREGISTER sent from another thread), or a stale one for an id
	 * already freed: the slot word tells them apart, and gives the kind. */
	word = amio__word_load(&p->reg.words[slot]);
	if ((word >> 4) != amio__id_gen(id))
		return NULL;
	e->id = id;
	e->kind = (uint32_t)(word >> 2) & 3;
	return e;
}

static void apply(amio_poller *p, amio_registrar *r, const struct amio__cmd *c)
{
	uint32_t slot = amio__id_slot(c->id);
	struct amio__entry *e = amio__entry_for(p, c->id);

	AMIO__STAT_ADD(p, commands, 1);
	if (!e)
		return;
	switch (c->op) {
	case AMIO__OP_REGISTER:
	case AMIO__OP_CHANNEL:
	case AMIO__OP_TIMER:
		/* Every kind (timers and channels carry fd and events 0). */
		e->fd = c->fd;
		e->data = c->data;
		e->owner = (r->flags & AMIO_INBOX) ? r : NULL;
		e->deadline_ns = c->deadline_ns;
		e->period_ns = c->period_ns;
		if (!(e->flags & AMIO__E_EARLY_EVENTS))
			e->events = c->events;
		e->flags |= AMIO__E_REGISTERED;
		break;
	case AMIO__OP_REREGISTER:
		e->events = c->events;
		if (!(e->flags & AMIO__E_REGISTERED)) {
			e->flags |= AMIO__E_EARLY_EVENTS;
			return;
		}
		/* New events, new poll: the kernel reports readiness present now. */
		e->flags &= ~AMIO__E_PARKED;
		if ((e->flags & AMIO__E_ARMED) && amio__backend_disarm(p, e, slot) < 0) {
			e->flags |= AMIO__E_PARKED;
			amio__notify(p, e, AMIO_ERROR, -EBUSY);
			return;
		}
		break;
	case AMIO__OP_DEREGISTER:
		e->flags |= AMIO__E_DEREGISTERED;
		break;
	}
	amio__reconcile(p, e, slot);
}

/* Deregister what an inbox registrar owned: nobody would receive it. Walks
 * the slots ever used; registrars are retired rarely. */
static void orphan_entries(amio_poller *p, amio_registrar *r)
{
	uint64_t top = ck_pr_load_64(&p->reg.fresh);

	for (uint32_t slot = 1; slot < top && slot <= p->reg.cap; slot++) {
		struct amio__entry *e = &p->reg.entries[slot];

		if (e->owner != r || !e->id)
			continue;
		if (amio__registry_close(&p->reg, e->id, AMIO__KIND_ANY) == 0)
			e->flags |= AMIO__E_DEREGISTERED;
		e->owner = NULL;
		e->flags &= ~AMIO__E_OVERFLOW;
		amio__reconcile(p, e, slot);
	}
}

static void drain_commands(amio_poller *p, amio_registrar *r, bool all);

/* Forget a registrar the poller is about to drop: it may still be on the
 * doorbell list from this iteration's reap. */
static void retire(amio_poller *p, amio_registrar *r)
{
	drain_commands(p, r, true);
	if (r->flags & AMIO_INBOX)
		orphan_entries(p, r);
	if (r->touched) {
		amio_registrar **link = &p->touched;

		while (*link != r)
			link = &(*link)->next_touched;
		*link = r->next_touched;
		r->touched = false;
	}
	amio__registrar_unref(r);
}

/* Apply what r had queued when we looked: a registrar that queues as fast
 * as we apply must not keep the poll thread here (completions, stop and
 * the other registrars would starve). all: a closed registrar, whose last
 * commands must all be applied before it is retired. */
static void drain_commands(amio_poller *p, amio_registrar *r, bool all)
{
	unsigned n = all ? UINT_MAX : ck_ring_size(&r->cmdq);
	struct amio__cmd c;

	while (n-- && ck_ring_dequeue_spsc_amio_cmd(&r->cmdq, r->cmdq_buf, &c))
		apply(p, r, &c);
}

static void adopt(amio_poller *p)
{
	amio_registrar *in, *next;

	if (!ck_pr_load_ptr(&p->incoming))
		return;
	for (in = ck_pr_fas_ptr(&p->incoming, NULL); in; in = next) {
		next = in->next_new;
		in->next = p->registrars;
		p->registrars = in;
	}
}

/* Apply every queued command; retire registrars their owners freed. */
static void drain(amio_poller *p)
{
	amio_registrar **link = &p->registrars, *r;

	adopt(p);
	/* Pop raised channels before the command queues: a channel's
	 * registration was queued before any send could raise it. */
	amio__channels_pop(p);
	while ((r = *link)) {
		drain_commands(p, r, false);
		if (ck_pr_load_32(&r->closed)) {
			/* closed is stored after the owner's last enqueue. */
			ck_pr_fence_load();
			*link = r->next;
			retire(p, r);
			continue;
		}
		if (r->ovf_head)
			flush_overflow(p, r);
		link = &r->next;
	}
	amio__channels_handle(p);
}

void amio__on_remove_busy(amio_poller *p, uint32_t slot, uint32_t armgen)
{
	struct amio__entry *e = &p->reg.entries[slot];

	/* The target is still in flight (the slot cannot have been reused
	 * while inflight > 0). Retry now; without an SQE, on the next wait. */
	if (e->inflight == 0 || amio__backend_remove(p, e, slot, armgen) == 0)
		return;
	e->retry_armgen = armgen;
	e->flags |= AMIO__E_RETRY;
	push_pending(p, e);
}

/* Re-arm LEVEL registrations and retry removals: once per wait call, and
 * every iteration of amio_poller_run. */
static void run_pending(amio_poller *p)
{
	struct amio__entry *e = p->pending_head;

	p->pending_head = NULL;
	while (e) {
		struct amio__entry *next = e->next_pending;
		uint32_t slot = (uint32_t)(e - p->reg.entries);

		e->flags &= ~AMIO__E_PENDING;
		if ((e->flags & AMIO__E_RETRY) &&
		    amio__backend_remove(p, e, slot, e->retry_armgen) == 0)
			e->flags &= ~AMIO__E_RETRY;
		if (e->flags & AMIO__E_RETRY)
			push_pending(p, e);
		amio__reconcile(p, e, slot);
		e = next;
	}
}

/* ---- Sleeping ---------------------------------------------------------- */

static bool work_queued(amio_poller *p)
{
	/* p->touched: a doorbell that found no SQE, to ring before sleeping. */
	if (ck_pr_load_ptr(&p->incoming) || ck_pr_load_ptr(&p->ready) || ck_pr_load_32(&p->stop) ||
	    p->touched)
		return true;
	for (amio_registrar *r = p->registrars; r; r = r->next) {
		if (ck_ring_size(&r->cmdq) || ck_pr_load_32(&r->closed))
			return true;
		if (r->ovf_head && ck_ring_size(&r->inbox) < ck_ring_capacity(&r->inbox) - 1)
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
	if (io_uring_sq_ready(&p->be.ring))
		return false;
	window = amio__spin_window(p);
	if (window <= 0)
		return false;
	budget = left_ns >= 0 && left_ns < window ? left_ns : window;
	start = amio__now_ns();
	for (unsigned i = 1;; i++) {
		if (work_queued(p) || io_uring_cq_ready(&p->be.ring) || amio__backend_ready(p)) {
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
	rc = amio__backend_enable(p);
	if (rc < 0)
		return rc;
	p->poll_thread = pthread_self();
	p->enabled = true;
	return 0;
}

bool amio__deliverable(amio_poller *p, amio_notification *n)
{
	if (n->events & AMIO__FINAL) {
		n->events &= ~AMIO__FINAL;
		return true;
	}
	return amio__registry_live(&p->reg, n->id, AMIO__KIND_ANY);
}

/* Drop notifications whose id was deregistered since they were made; true
 * if any is left to return. A new wait_seq: out[] indexes moved. */
static bool filter_out(amio_poller *p)
{
	size_t kept = 0;

	for (size_t i = 0; i < p->out_n; i++)
		if (amio__deliverable(p, &p->out[i]))
			p->out[kept++] = p->out[i];
	p->out_n = kept;
	p->wait_seq++;
	return kept > 0;
}

static unsigned reap(amio_poller *p)
{
	return amio__backend_reap(p, (unsigned)(p->out_cap - p->out_n));
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
	filter_out(p);
	return p->out_n ? (int)p->out_n : rc;
}

/* One wait: at most one io_uring_enter per loop iteration. Returns the
 * number of notifications in p->out, 0 on timeout or stop, or -errno (only
 * with none collected: notifications are never dropped for an error). */
static int poll_loop(amio_poller *p, int timeout_ms, bool run)
{
	int64_t deadline = timeout_ms > 0 ? amio__now_ns() + (int64_t)timeout_ms * 1000000 : 0;
	unsigned failed_row = 0;
	int rc;

	p->wait_seq++;
	run_pending(p);
	for (;;) {
		int64_t left = -1;

		if (run && p->pending_head)
			run_pending(p);
		drain(p);
		ring_touched(p);
		if (ck_pr_load_32(&p->stop)) {
			ck_pr_store_32(&p->stop, 0);
			return (int)p->out_n;
		}
		if (p->out_n || io_uring_cq_ready(&p->be.ring) || amio__backend_ready(p) ||
		    timeout_ms == 0) {
			/* Completions ready (or a poll): submit and flush the
			 * kernel's deferred work only if there is any. */
			if (io_uring_sq_ready(&p->be.ring) || amio__backend_ready(p)) {
				rc = amio__backend_enter(p, false, 0);
				if (rc < 0 && enter_failed(p, rc, &failed_row))
					return end_on_error(p, rc);
			}
			reap(p);
			if (filter_out(p) || timeout_ms == 0)
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
		if (spin_for_work(p, left) || !sleep_ok(p))
			continue;
		rc = amio__backend_enter(p, true, left);
		ck_pr_fas_32(&p->state, AMIO__RUNNING);
		if (rc < 0 && rc != -ETIME && enter_failed(p, rc, &failed_row))
			return end_on_error(p, rc);
		reap(p);
		if (filter_out(p))
			return (int)p->out_n;
	}
}

/* Notifications reaped for other threads' inboxes must not wait for our next
 * call to be submitted: ring their doorbells now. */
static int finish(amio_poller *p, int rc)
{
	/* A failed submit leaves the doorbells in the SQ for the next enter. */
	if (ring_touched(p))
		(void)amio__backend_submit(p);
	p->out = NULL;
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

		while (used < p->stash_n && n < cap)
			if (amio__deliverable(p, &p->stash[used++]))
				out[n++] = p->stash[used - 1];
		memmove(p->stash, p->stash + used, (p->stash_n - used) * sizeof(*out));
		p->stash_n -= used;
		if (n)
			return (int)n;
	}
	p->out = out;
	p->out_cap = cap;
	p->out_n = 0;
	return finish(p, poll_loop(p, timeout_ms, false));
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
	rc = poll_loop(p, -1, true);
	if (rc > 0)
		p->stash_n = (size_t)rc;
	return finish(p, rc > 0 ? 1 : rc);
}
