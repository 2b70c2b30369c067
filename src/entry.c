/*
 * Entries: the kernel request a registration should have (armed while live,
 * removed once deregistered), what each completion of it means, and when
 * its slot can be given back.
 */
#include <errno.h>
#include <poll.h>

#include "internal.h"

/* ---- Entries: desired vs kernel state ----------------------------------- */

bool amio__entry_live(amio_poller *p, const struct amio__entry *e)
{
	return (e->flags & (AMIO__E_REGISTERED | AMIO__E_DEREGISTERED)) == AMIO__E_REGISTERED &&
	       amio__registry_live(&p->reg, e->id, AMIO__KIND_ANY);
}

void amio__maybe_free(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	const uint32_t both = AMIO__E_REGISTERED | AMIO__E_DEREGISTERED;

	if (e->kind == AMIO__KIND_IO) {
		amio__io_maybe_free(p, e, slot);
		return;
	}
	if ((e->flags & both) == both && e->inflight == 0 &&
	    !(e->flags & (AMIO__E_PENDING | AMIO__E_OVERFLOW))) {
		/* What waits on the consumer is moot now: a LEVEL re-arm, or a
		 * fired one-shot a cancel won (its notification is refused). */
		amio__watch_unlink(e);
		amio__backend_release(p, slot);
		amio__registry_release(&p->reg, slot);
	}
}

void amio__push_pending(amio_poller *p, struct amio__entry *e)
{
	struct amio__entry **list;

	if (e->flags & AMIO__E_PENDING)
		return;
	e->flags |= AMIO__E_PENDING;
	/* Amy-mode re-arms wait for the next wait call (its caller has not
	 * read this readiness yet); inbox re-arms and removals cannot wait
	 * for a call that may be far off (a long wait, or amio_poller_run). */
	if (e->owner || (e->flags & (AMIO__E_RETRY | AMIO__E_DEREGISTERED)))
		list = &p->pending_head;
	else
		list = &p->amy_pending;
	e->next_pending = *list;
	*list = e;
}

/* Take e's request out of the kernel. Its CQEs from now on carry a stale
 * armgen and are never reported, even when no SQE can be had for the
 * removal now: then it is retried from the pending list (the poll keeps a
 * file reference, so close() sends no FIN, until it is removed). One retry
 * at a time: a second failed removal before the first went out (the SQ
 * full and its submit failing twice in a row) leaves that request in the
 * kernel until the ring exits, still never reported. */
void amio__disarm(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	uint32_t armgen = e->armgen;

	if (amio__backend_disarm(p, e, slot) == 0)
		return;
	e->armgen++;
	e->flags &= ~AMIO__E_ARMED;
	if (e->flags & AMIO__E_RETRY)
		return;
	e->retry_armgen = armgen;
	e->flags |= AMIO__E_RETRY;
	amio__push_pending(p, e);
}

/* Bring the kernel in line with the entry: armed while live and not parked,
 * removed once deregistered; then free it if nothing references it. */
void amio__reconcile(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	int rc;

	if (e->kind == AMIO__KIND_IO) {
		amio__io_reconcile(p, e, slot);
		return;
	}
	if (!amio__entry_live(p, e)) {
		if (e->flags & AMIO__E_ARMED)
			amio__disarm(p, e, slot);
		amio__maybe_free(p, e, slot);
		return;
	}
	/* Channels have no kernel request: their sends raise them directly.
	 * An inbox LEVEL entry is armed by the watch list (amio__watch_check);
	 * one with a removal to retry, once that went out (run_pending). */
	if ((e->flags & (AMIO__E_ARMED | AMIO__E_PARKED | AMIO__E_LEVEL_WAIT | AMIO__E_RETRY)) ||
	    e->kind == AMIO__KIND_CHANNEL)
		return;
	rc = amio__backend_arm(p, e, slot);
	if (rc < 0) {
		e->flags |= AMIO__E_PARKED;
		amio__notify(p, e, AMIO_ERROR, rc);
	}
}

static uint32_t to_events(int32_t res, uint32_t want)
{
	uint32_t ev = 0;

	if (res & POLLIN)
		ev |= AMIO_READ;
	if (res & POLLOUT)
		ev |= AMIO_WRITE;
	/* POLLRDHUP (the peer's half-close) only for a reader, as documented:
	 * io_uring's poll can carry it for a writer too (the wakeup's mask),
	 * epoll never does; POLLHUP (both directions) goes to everyone. */
	if ((res & POLLHUP) || ((res & POLLRDHUP) && (want & AMIO_READ)))
		ev |= AMIO_HUP;
	if (res & POLLERR)
		ev |= AMIO_ERROR;
	/* A hang-up is readable (EOF) for a reader; errors go to everyone. */
	if ((ev & AMIO_HUP) && (want & AMIO_READ))
		ev |= AMIO_READ;
	return ev & (want | AMIO_HUP | AMIO_ERROR);
}

/* A poll request posted its final CQE with readiness: what arms it next. */
static void poll_ended(amio_poller *p, struct amio__entry *e, uint32_t ev)
{
	if (!ev) {
		/* Nothing to report (nothing asked for): no notification will
		 * carry it to its consumer, so neither park it nor wait for
		 * the consumer; arm it again. */
		amio__push_pending(p, e);
	} else if (e->events & AMIO_ONESHOT) {
		e->flags |= AMIO__E_PARKED;
	} else if ((e->events & AMIO_LEVEL) && e->owner) {
		/* Re-armed once the inbox consumer has taken this notification
		 * and waits again: one report per wait of the consumer, not one
		 * per loop iteration of ours (that spun: 130,000 SQEs in 100 ms
		 * for one unread socket). */
		e->flags |= AMIO__E_LEVEL_WAIT;
	} else {
		/* LEVEL (Amy mode): re-armed on the next wait call. A multishot
		 * the kernel ended without being asked (it does when the CQ is
		 * full) is re-armed too, or the registration goes deaf: an
		 * inbox one on the next iteration, an Amy-mode one on the next
		 * wait (a poll armed before the caller has read this readiness
		 * would report it twice). */
		if (!(e->events & AMIO_LEVEL))
			AMIO__STAT_ADD(p, rearms, 1);
		amio__push_pending(p, e);
	}
}

void amio__on_poll(amio_poller *p, uint32_t slot, uint32_t armgen, int32_t res, bool more)
{
	struct amio__entry *e = &p->reg.entries[slot];
	uint32_t ev;

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
	if (!more && !(e->flags & AMIO__E_POLLABLE)) {
		/* A file with no poll method (regular file, directory) is
		 * "ready" at once and ends every poll: re-arming it would spin.
		 * epoll_ctl refuses it with EPERM; so do we, once. Checked on
		 * the first poll that ends, so a live socket pays nothing. */
		if (amio__backend_pollable(p, e->fd) < 0) {
			e->flags |= AMIO__E_PARKED;
			amio__notify(p, e, AMIO_ERROR, -EPERM);
			return;
		}
		e->flags |= AMIO__E_POLLABLE;
	}
	ev = to_events(res, e->events);
	if (!more)
		poll_ended(p, e, ev);
	if (ev) /* a mask with nothing asked for is no notification */
		amio__notify(p, e, ev, 0);
}

void amio__on_remove_busy(amio_poller *p, uint32_t slot, uint32_t armgen)
{
	struct amio__entry *e = &p->reg.entries[slot];

	/* The target is still in flight (the slot cannot have been reused
	 * while inflight > 0). Retry now; without an SQE, on the next wait. */
	if (e->inflight == 0 || amio__backend_remove(p, e, slot, armgen) == 0)
		return;
	if (e->flags & AMIO__E_RETRY)
		return; /* one retry at a time (see amio__disarm) */
	e->retry_armgen = armgen;
	e->flags |= AMIO__E_RETRY;
	amio__push_pending(p, e);
}

/* Re-arm and retry removals for one pending list (see amio__push_pending). */
void amio__run_pending(amio_poller *p, struct amio__entry **list)
{
	struct amio__entry *e = *list;

	*list = NULL;
	while (e) {
		struct amio__entry *next = e->next_pending;
		uint32_t slot = (uint32_t)(e - p->reg.entries);

		e->flags &= ~AMIO__E_PENDING;
		if ((e->flags & AMIO__E_RETRY) &&
		    amio__backend_remove(p, e, slot, e->retry_armgen) == 0)
			e->flags &= ~AMIO__E_RETRY;
		if (e->flags & AMIO__E_RETRY)
			amio__push_pending(p, e);
		amio__reconcile(p, e, slot);
		e = next;
	}
}
