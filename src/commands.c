/*
 * Commands: how the poll thread applies what registrars queued, in order,
 * and retires the registrars their owners freed.
 */
#include <errno.h>
#include <limits.h>

#include "internal.h"

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
	if ((word >> 4) != amio__id_gen(id) || (word & 3) == AMIO__SLOT_FREE)
		return NULL; /* a stale id: its slot was released (FREE) or reused */
	e->id = id;
	e->kind = (uint32_t)(word >> 2) & 3;
	return e;
}

static void apply(amio_poller *p, amio_registrar *r, const struct amio__cmd *c)
{
	uint32_t slot = amio__id_slot(c->id);
	struct amio__entry *e;

	AMIO__STAT_ADD(p, commands, 1);
	if (c->op == AMIO__OP_POOL_NEW || c->op == AMIO__OP_POOL_FREE) {
		amio__pool_apply(p, c);
		return;
	}
	e = amio__entry_for(p, c->id);
	if (!e)
		return;
	if (e->kind == AMIO__KIND_IO) {
		if (c->op == AMIO__OP_START)
			e->owner = (r->flags & AMIO_INBOX) ? r : NULL;
		amio__io_apply(p, e, c);
		return;
	}
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
		if (e->flags & AMIO__E_LEVEL_WAIT) {
			amio__watch_unlink(e);
			e->flags &= ~AMIO__E_LEVEL_WAIT;
		}
		if (e->flags & AMIO__E_ARMED)
			amio__disarm(p, e, slot);
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
		if (e->kind == AMIO__KIND_IO) {
			e->owner = NULL;
			e->flags &= ~AMIO__E_OVERFLOW; /* r's list goes with r */
			amio__io_orphan(p, e, slot);
			continue;
		}
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
	amio__watch_drop(r);
	if (r->flags & AMIO_INBOX) {
		orphan_entries(p, r);
		amio__pool_orphan(p, r);
		amio__inbox_drop(r);
	}
	if (r->touched) {
		amio_registrar **link = &p->touched;

		while (*link != r)
			link = &(*link)->next_touched;
		*link = r->next_touched;
		r->touched = false;
	}
	/* A doorbell SQE for r may still sit in the SQ: its ring must stay
	 * open until that SQE is submitted, or MSG_RING would target a closed
	 * (or reused) fd. */
	r->next = p->graveyard;
	p->graveyard = r;
}

/* Free retired registrars once no queued SQE can name their rings. */
void amio__bury(amio_poller *p)
{
	amio_registrar *r, *next;

	if (!p->graveyard || amio__backend_sq_pending(p))
		return;
	for (r = p->graveyard; r; r = next) {
		next = r->next;
		amio__registrar_unref(r);
	}
	p->graveyard = NULL;
}

/* Apply what r had queued when we looked: a registrar that queues as fast
 * as we apply must not keep the poll thread here (completions, stop and
 * the other registrars would starve). all: a closed registrar, whose last
 * commands must all be applied before it is retired. */
static void drain_commands(amio_poller *p, amio_registrar *r, bool all)
{
	unsigned n = all ? UINT_MAX : ck_ring_size(&r->cmdq), taken = 0;
	struct amio__cmd c;

	while (n-- && ck_ring_dequeue_spsc_amio_cmd(&r->cmdq, r->cmdq_buf, &c)) {
		apply(p, r, &c);
		taken++;
	}
	/* Any take may be the room an owner in amio_registrar_wait_room waits
	 * for: it may have filled the queue after we read its size (checking
	 * only queues we saw full lost that wakeup: the outside attacker's
	 * hang, 10 of 10 runs on epoll). */
	if (taken)
		amio__registrar_room(r);
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
void amio__drain(amio_poller *p)
{
	amio_registrar **link = &p->registrars, *r;

	adopt(p);
	/* Pop raised channels before the command queues: a channel's
	 * registration was queued before any send could raise it. */
	amio__channels_pop(p);
	amio__pools_refilled(p);
	while ((r = *link)) {
		drain_commands(p, r, false);
		if (ck_pr_load_32(&r->closed)) {
			/* closed is stored after the owner's last enqueue. */
			ck_pr_fence_load();
			*link = r->next;
			retire(p, r);
			continue;
		}
		if (r->ovf.head)
			amio__flush_inbox(p, r);
		if (r->watch_head)
			amio__watch_check(p, r);
		link = &r->next;
	}
	amio__channels_handle(p);
}
