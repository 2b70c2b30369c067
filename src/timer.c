/*
 * Timers: one-shot and interval timeouts on IORING_OP_TIMEOUT, started on the
 * caller's clock, never early, with missed interval ticks coalesced.
 */
#include <errno.h>
#include <time.h>

#include "internal.h"

/* ---- Registrar side ------------------------------------------------------- */

static int64_t add_timer(amio_registrar *r, uint64_t ms, uint64_t period_ms, void *data)
{
	struct amio__cmd c = {.op = AMIO__OP_TIMER, .data = data};

	/* Checked before any arithmetic: AMIO_TIMER_MAX_MS in ns (4.4e18) plus
	 * CLOCK_MONOTONIC (under 4.7e18 for 150 years of uptime) still fits an
	 * int64_t, the kernel's timespec. */
	if (ms > AMIO_TIMER_MAX_MS)
		return -EINVAL;
	/* The deadline is taken here, on the caller's clock: a poller that
	 * applies the command late cannot make the timer late by as much. */
	c.deadline_ns = amio__now_ns() + (int64_t)ms * 1000000;
	c.period_ns = (int64_t)period_ms * 1000000;
	return amio__registrar_add(r, AMIO__KIND_TIMER, &c);
}

int64_t amio_set_timeout(amio_registrar *r, uint64_t ms, void *data)
{
	return add_timer(r, ms, 0, data);
}

int64_t amio_set_interval(amio_registrar *r, uint64_t ms, void *data)
{
	if (ms == 0)
		return -EINVAL;
	return add_timer(r, ms, ms, data);
}

int amio_cancel_timer(amio_registrar *r, uint64_t id)
{
	return amio__registrar_close(r, id, AMIO__KIND_BIT(AMIO__KIND_TIMER));
}

/* ---- Poll thread side ----------------------------------------------------- */

/* A one-shot timer finishes itself: LIVE -> FIRED, and its notification
 * carries AMIO__FINAL. Whoever hands it out moves FIRED -> CLOSING; an
 * amio_cancel_timer until then still wins and the notification is refused,
 * so cancel's 0 always means "never delivered". The slot is released once
 * the notification is handed out (or refused), or the cancel is applied. */
static void finish_oneshot(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	if (amio__registry_fire(&p->reg, e->id))
		amio__notify(p, e, AMIO_TIMER | AMIO__FINAL, 0);
	else
		amio__maybe_free(p, e, slot); /* a cancel won the race */
}

/* The first tick of an interval (or every tick without multishot timeouts):
 * the next deadline is the first grid point still ahead, so ticks the poller
 * missed collapse into this one. */
static void next_tick(struct amio__entry *e)
{
	int64_t now = amio__now_ns();

	e->flags |= AMIO__E_TICKING;
	e->deadline_ns += e->period_ns;
	if (e->deadline_ns <= now)
		e->deadline_ns += ((now - e->deadline_ns) / e->period_ns + 1) * e->period_ns;
}

void amio__on_timer(amio_poller *p, uint32_t slot, uint32_t armgen, int32_t res, bool more)
{
	struct amio__entry *e = &p->reg.entries[slot];

	if (!more)
		e->inflight--;
	if (armgen != e->armgen) {
		amio__maybe_free(p, e, slot); /* a timeout we removed */
		return;
	}
	if (!more)
		e->flags &= ~AMIO__E_ARMED;
	if (!amio__entry_live(p, e)) {
		amio__reconcile(p, e, slot); /* cancelled after the kernel fired */
		return;
	}
	if (res != -ETIME) {
		/* -ECANCELED without our asking ends a multishot: re-arm. */
		if (res == -ECANCELED && !more) {
			AMIO__STAT_ADD(p, rearms, 1);
			amio__reconcile(p, e, slot);
		} else if (res < 0) {
			e->flags |= AMIO__E_PARKED;
			amio__notify(p, e, AMIO_ERROR, res);
		}
		return;
	}
	if (e->period_ns == 0) {
		finish_oneshot(p, e, slot);
		return;
	}
	/* Several ticks reaped in one batch are one notification. The tick
	 * before the re-arm: a re-arm that fails reports its AMIO_ERROR after
	 * the tick that happened, never a tick after the error. */
	if (e->batch != p->batch) {
		e->batch = p->batch;
		amio__notify(p, e, AMIO_TIMER, 0);
	}
	if (!more) {
		next_tick(e);
		amio__reconcile(p, e, slot);
	}
}
