/*
 * Notifications: how a completion reaches its consumer (the caller's out[] in
 * Amy mode, an inbox otherwise) without loss, duplication or delivery after
 * the id's deregister returned, and what the poll thread learns back from an
 * inbox consumer (LEVEL re-arms, fired one-shots taken).
 */
#include <stdlib.h>

#include "internal.h"

/* ---- Overflow: notifications with no room yet ---------------------------- */

static void ovf_add(struct amio__ovf *l, struct amio__entry *e, uint32_t events, int32_t error)
{
	e->flags |= AMIO__E_OVERFLOW;
	e->pending = events;
	e->pending_error = error;
	e->next_ovf = NULL;
	if (l->tail)
		l->tail->next_ovf = e;
	else
		l->head = e;
	l->tail = e;
}

static struct amio__entry *ovf_pop(struct amio__ovf *l)
{
	struct amio__entry *e = l->head;

	l->head = e->next_ovf;
	if (!l->head)
		l->tail = NULL;
	e->flags &= ~AMIO__E_OVERFLOW;
	return e;
}

/* ---- Watch list: entries waiting on an inbox consumer -------------------- */

static void set_level_watch(amio_registrar *r, uint32_t on)
{
	/* A hint the consumer reads at the start of each wait (kick if set);
	 * stored only when it changes: the line is the consumer's too. */
	if (ck_pr_load_32(&r->level_watch) != on)
		ck_pr_store_32(&r->level_watch, on);
}

static void watch_add(amio_registrar *r, struct amio__entry *e)
{
	e->watch_pos = r->pushed;
	if (e->flags & AMIO__E_WATCH)
		return;
	e->flags |= AMIO__E_WATCH;
	e->watch_prev = NULL;
	e->watch_next = r->watch_head;
	if (r->watch_head)
		r->watch_head->watch_prev = e;
	r->watch_head = e;
	if ((e->flags & AMIO__E_LEVEL_WAIT) && r->level_n++ == 0)
		set_level_watch(r, 1);
}

void amio__watch_unlink(struct amio__entry *e)
{
	amio_registrar *r = e->owner;

	if (!(e->flags & AMIO__E_WATCH))
		return;
	e->flags &= ~AMIO__E_WATCH;
	if (e->watch_prev)
		e->watch_prev->watch_next = e->watch_next;
	else
		r->watch_head = e->watch_next;
	if (e->watch_next)
		e->watch_next->watch_prev = e->watch_prev;
	if ((e->flags & AMIO__E_LEVEL_WAIT) && --r->level_n == 0)
		set_level_watch(r, 0);
}

void amio__watch_drop(amio_registrar *r)
{
	for (struct amio__entry *e = r->watch_head; e; e = e->watch_next)
		e->flags &= ~(uint32_t)(AMIO__E_WATCH | AMIO__E_LEVEL_WAIT);
	r->watch_head = NULL;
	r->level_n = 0;
	set_level_watch(r, 0);
}

bool amio__watch_due(amio_registrar *r)
{
	return r->watch_head && (ck_pr_load_64(&r->popped) != r->popped_seen ||
	                         ck_pr_load_64(&r->wait_mark) != r->mark_seen);
}

void amio__watch_check(amio_poller *p, amio_registrar *r)
{
	uint64_t popped, mark;
	struct amio__entry *e, *next;

	if (!amio__watch_due(r))
		return;
	/* Acquire: the consumer's hand-outs (FIRED -> CLOSING) before its count. */
	popped = ck_pr_load_64(&r->popped);
	mark = ck_pr_load_64(&r->wait_mark);
	ck_pr_fence_load();
	r->popped_seen = popped;
	r->mark_seen = mark;
	for (e = r->watch_head; e; e = next) {
		uint32_t slot = amio__id_slot(e->id);

		next = e->watch_next;
		if (e->flags & AMIO__E_LEVEL_WAIT) {
			/* LEVEL: the consumer took the notification and waited
			 * again: arm, so this wait reports it if still ready. */
			if (e->watch_pos > mark)
				continue;
			amio__watch_unlink(e);
			e->flags &= ~AMIO__E_LEVEL_WAIT;
			amio__reconcile(p, e, slot);
		} else if (e->watch_pos <= popped) {
			/* A fired one-shot taken (or refused: a cancel won). */
			amio__watch_unlink(e);
			(void)amio__registry_close(&p->reg, e->id, AMIO__KIND_ANY);
			e->flags |= AMIO__E_DEREGISTERED;
			amio__maybe_free(p, e, slot);
		}
	}
}

/* ---- Inbox mode ----------------------------------------------------------- */

static void touch(amio_poller *p, amio_registrar *r)
{
	if (r->touched)
		return;
	r->touched = true;
	r->next_touched = p->touched;
	p->touched = r;
}

static bool enqueue(amio_poller *p, amio_registrar *r, struct amio__entry *e, uint32_t events,
                    int32_t error)
{
	struct amio__inote n = {
	    .n = {.id = e->id, .data = e->data, .events = events, .error = error}};

	/* The inbox is an SPSC ck_ring plus a doorbell MSG_RING only for a
	 * sleeping worker, not one MSG_RING CQE per notification (DESIGN asks
	 * which): bench/inbox_transport_bench measured the ring 6-16x faster
	 * in notifications/s at 8-16x less CPU, equal in one-at-a-time latency
	 * (bench/results/inbox-transport-2026-11-24.md). */
	if (!ck_ring_enqueue_spsc_amio_inote(&r->inbox, r->inbox_buf, &n))
		return false;
	r->pushed++;
	touch(p, r);
	if ((e->flags & AMIO__E_LEVEL_WAIT) || (events & AMIO__FINAL))
		watch_add(r, e);
	return true;
}

void amio__flush_inbox(amio_poller *p, amio_registrar *r)
{
	struct amio__entry *e;

	while ((e = r->ovf.head)) {
		bool keep = amio__entry_live(p, e) || (e->pending & AMIO__FINAL);

		if (e->kind == AMIO__KIND_IO) {
			if (!amio__io_flush(p, e))
				break;
			ovf_pop(&r->ovf);
			amio__io_flushed(p, e, amio__id_slot(e->id));
			continue;
		}
		if (keep && !enqueue(p, r, e, e->pending, e->pending_error))
			break;
		ovf_pop(&r->ovf);
		amio__maybe_free(p, e, amio__id_slot(e->id));
	}
	if (!r->ovf.head)
		ck_pr_store_32(&r->overflowed, 0);
}

bool amio__ring_touched(amio_poller *p)
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

/* ---- Amy mode -------------------------------------------------------------- */

static void put_out(amio_poller *p, struct amio__entry *e, uint32_t events, int32_t error)
{
	e->note_seq = p->wait_seq;
	e->note_idx = (uint32_t)p->out_n;
	p->out[p->out_n++] =
	    (amio_notification){.id = e->id, .data = e->data, .events = events, .error = error};
}

static void notify_amy(amio_poller *p, struct amio__entry *e, uint32_t events, int32_t error)
{
	/* One notification per id per wait, as epoll: a user who closes on
	 * the first cannot trip over a second. */
	if (e->note_seq == p->wait_seq && e->note_idx < p->out_n &&
	    p->out[e->note_idx].id == e->id) {
		p->out[e->note_idx].events |= events;
		if (error)
			p->out[e->note_idx].error = error;
		return;
	}
	AMIO__STAT_ADD(p, notifications, 1);
	/* Never past cap: what does not fit waits, in order, for the next
	 * wait (a failed arm can notify outside reap's budget). */
	if (p->out && p->out_n < p->out_cap && !p->ovf.head) {
		put_out(p, e, events, error);
		return;
	}
	ovf_add(&p->ovf, e, events, error);
}

void amio__flush_amy(amio_poller *p)
{
	struct amio__entry *e;

	while ((e = p->ovf.head) && p->out_n < p->out_cap) {
		if (e->kind == AMIO__KIND_IO) {
			if (!amio__io_flush(p, e))
				break;
			ovf_pop(&p->ovf);
			amio__io_flushed(p, e, amio__id_slot(e->id));
			continue;
		}
		ovf_pop(&p->ovf);
		if (amio__entry_live(p, e) || (e->pending & AMIO__FINAL))
			put_out(p, e, e->pending, e->pending_error);
		amio__maybe_free(p, e, amio__id_slot(e->id));
	}
}

void amio__notify(amio_poller *p, struct amio__entry *e, uint32_t events, int32_t error)
{
	amio_registrar *r = e->owner;

	if (e->flags & AMIO__E_OVERFLOW) {
		/* Readiness coalesces: an entry waits in a list at most once. */
		e->pending |= events;
		if (error)
			e->pending_error = error;
		return;
	}
	if (!r) {
		notify_amy(p, e, events, error);
		return;
	}
	AMIO__STAT_ADD(p, notifications, 1);
	if (!r->ovf.head && enqueue(p, r, e, events, error))
		return;
	ovf_add(&r->ovf, e, events, error);
	ck_pr_store_32(&r->overflowed, 1);
}

/* ---- Operations: every notification, in order ------------------------------ */

/* Put one operation note where its consumer takes it; false if no room.
 * bid: the buffer it lends (a RECV's), or AMIO__NO_BID. Its lent byte goes
 * HELD when the consumer takes the note: here for an Amy-mode wait's out[],
 * at the hand-out for amio_poller_run's stash and an inbox. */
static bool io_emit(amio_poller *p, struct amio__entry *e, uint32_t events, int32_t res,
                    uint16_t bid)
{
	struct amio__inote n = {
	    .n = {.id = e->id, .data = e->data, .events = events | AMIO__IONOTE, .res = res}};
	amio_registrar *r = e->owner;

	if (bid != AMIO__NO_BID) { /* a RECV's: only its op has a pool */
		struct amio_pool *pool = p->reg.ios[amio__id_slot(e->id)].pool;

		n.lend = &pool->lent[bid];
		n.n.buf = amio__pool_buf(pool, bid);
	} else if (events & (AMIO_SEND | AMIO_PREAD | AMIO_PWRITE)) {
		n.n.buf = p->reg.ios[amio__id_slot(e->id)].buf0; /* the DONE: it is yours again */
	}
	if (r) {
		if (!ck_ring_enqueue_spsc_amio_inote(&r->inbox, r->inbox_buf, &n))
			return false;
		r->pushed++;
		touch(p, r);
	} else {
		if (!p->out || p->out_n >= p->out_cap)
			return false;
		if (p->out == p->stash)
			p->stash_lend[p->out_n] = n.lend;
		else if (n.lend)
			ck_pr_store_8(n.lend, AMIO__LENT_HELD);
		p->out[p->out_n++] = n.n;
	}
	AMIO__STAT_ADD(p, notifications, 1);
	return true;
}

/* More room for held fds. io_uring's multishot accept cannot be paused at
 * once: every connection the backlog held is accepted and posted before the
 * pause's cancel is submitted (the attacker's 300 connections into an
 * inbox of 2: 202 would have been refused). Rare (an inbox that is full
 * while connections pour in), so a heap ring, doubled as needed. */
static bool acc_grow(struct amio__io *io)
{
	uint32_t cap = io->acc_big ? io->acc_cap * 2 : AMIO__ACCEPT_HOLD * 2;
	int32_t *big = malloc((size_t)cap * sizeof(*big));

	if (!big)
		return false;
	for (uint32_t i = 0; i < io->held_n; i++)
		big[i] = *amio__acc_at(io, i);
	free(io->acc_big);
	io->acc_big = big;
	io->acc_cap = cap;
	io->acc_head = 0;
	return true;
}

/* Keep a note until its consumer has room: accepted fds in the operation's
 * ring, received bytes through their buffer's link (the pool bounds them:
 * one note per lent buffer), the DONE inline. */
static void io_hold(amio_poller *p, struct amio__io *io, uint32_t events, int32_t res, uint16_t bid)
{
	if (events & AMIO_DONE) {
		io->done_held = true;
		io->done_res = res;
	} else if (events & AMIO_ACCEPT) {
		if (io->held_n == (io->acc_big ? io->acc_cap : AMIO__ACCEPT_HOLD) &&
		    !acc_grow(io)) {
			if (res >= 0) /* out of memory: refused, as a full backlog would */
				AMIO__STAT_ADD(p, accepts_refused, 1);
			amio__close_accepted(res);
			return;
		}
		*amio__acc_at(io, io->held_n++) = res;
	} else {
		io->pool->held[bid] = (struct amio__held){res, AMIO__NO_BID};
		if (io->held_n++)
			io->pool->held[io->held_tail].next = bid;
		else
			io->held_head = bid;
		io->held_tail = bid;
	}
}

bool amio__io_flush(amio_poller *p, struct amio__entry *e)
{
	struct amio__io *io = &p->reg.ios[amio__id_slot(e->id)];

	while (io->held_n) {
		if (io->type == AMIO__IO_ACCEPT) {
			if (!io_emit(p, e, AMIO_ACCEPT, *amio__acc_at(io, 0), AMIO__NO_BID))
				return false;
			io->acc_head++;
		} else {
			struct amio__held *h = &io->pool->held[io->held_head];

			if (!io_emit(p, e, AMIO_RECV, h->res, io->held_head))
				return false;
			io->held_head = h->next;
		}
		io->held_n--;
	}
	if (io->done_held) {
		if (!io_emit(p, e, amio__io_event[io->type] | AMIO_DONE, io->done_res,
		             AMIO__NO_BID))
			return false;
		io->done_held = false;
	}
	return true;
}

void amio__notify_io(amio_poller *p, struct amio__entry *e, uint32_t events, int32_t res,
                     uint16_t bid)
{
	struct amio__io *io = &p->reg.ios[amio__id_slot(e->id)];
	amio_registrar *r = e->owner;
	struct amio__ovf *l = r ? &r->ovf : &p->ovf;

	if (io->state & AMIO__IO_ORPHAN) {
		if (events == AMIO_ACCEPT)
			amio__close_accepted(res); /* nobody to take it */
		return;
	}
	/* Behind its own held notes (order), and behind every entry waiting
	 * in its consumer's list (as readiness waits there). */
	if (!(e->flags & AMIO__E_OVERFLOW) && !l->head && io_emit(p, e, events, res, bid))
		return;
	io_hold(p, io, events, res, bid);
	if (!(e->flags & AMIO__E_OVERFLOW)) {
		ovf_add(l, e, 0, 0);
		if (r)
			ck_pr_store_32(&r->overflowed, 1);
	}
}

void amio__inbox_drop(amio_registrar *r)
{
	struct amio__inote w;

	/* Its owner freed it and takes nothing more: we are its consumer now.
	 * Accepted connections nobody will see are closed. */
	while (ck_ring_dequeue_spsc_amio_inote(&r->inbox, r->inbox_buf, &w))
		if ((w.n.events & AMIO__IONOTE) && (w.n.events & AMIO_ACCEPT))
			amio__close_accepted(w.n.res);
}

/* ---- Hand-out ------------------------------------------------------------ */

bool amio__deliverable(amio_poller *p, amio_notification *n)
{
	if (n->events & AMIO__IONOTE) {
		/* An operation's: it may lend a buffer, and its id may be
		 * finished (and reused) by now. Never filtered. */
		n->events &= ~AMIO__IONOTE;
		return true;
	}
	if (n->events & AMIO__FINAL) {
		n->events &= ~AMIO__FINAL;
		/* FIRED -> CLOSING: this hand-out and amio_cancel_timer race
		 * on the word; whoever wins decides, so a cancel that returned
		 * 0 always means "never delivered". */
		return amio__registry_take(&p->reg, n->id);
	}
	if (n->events == AMIO_CHANNEL && amio__channel_stale(p, n->id))
		return false;
	return amio__registry_live(&p->reg, n->id, AMIO__KIND_ANY);
}

bool amio__hand_out(amio_poller *p, amio_notification *n)
{
	bool final = n->events & AMIO__FINAL;
	struct amio__entry *e;

	if (!amio__deliverable(p, n))
		return false;
	if (final) {
		e = amio__registry_entry(&p->reg, n->id);
		if (e->id == n->id) {
			e->flags |= AMIO__E_DEREGISTERED;
			amio__maybe_free(p, e, amio__id_slot(n->id));
		}
	}
	return true;
}

bool amio__filter_out(amio_poller *p)
{
	bool stash = p->out == p->stash; /* amio_poller_run: handed out later */
	size_t kept = 0;

	for (size_t i = 0; i < p->out_n; i++) {
		/* A fired one-shot in amio_poller_run's stash is not handed out
		 * until amio_poller_wait returns it: a cancel until then still
		 * wins (the stash's own hand-out takes it, or drops it). An
		 * operation's note keeps its mark until then too: the stash's
		 * hand-out must know it is never filtered. */
		bool keep = stash && (p->out[i].events & (AMIO__FINAL | AMIO__IONOTE));

		if (keep || amio__hand_out(p, &p->out[i])) {
			if (stash)
				p->stash_lend[kept] = p->stash_lend[i];
			p->out[kept++] = p->out[i];
		}
	}
	p->out_n = kept;
	/* A new wait_seq: out[] indexes moved. */
	p->wait_seq++;
	return kept > 0;
}
