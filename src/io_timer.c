/*
 * The poll thread's timers of operations: one binary min-heap of (ns, slot),
 * one place per operation, keyed by the earliest of what the operation
 * waits for: its caller's deadline (amio_set_deadline: -ETIME), and an
 * internal timer (an accept's back-off after -EMFILE, a recv's idle
 * check, a send's timeout). Keys move lazily: an idle recv's key is
 * re-set when it comes due, not on every buffer, so a busy connection
 * costs no heap work per request.
 */
#include "internal.h"

static struct amio__io *io_of(amio_poller *p, uint32_t slot)
{
	return &p->reg.ios[slot];
}

/* ---- Deadlines: a binary min-heap of (ns, slot) ------------------------------ */

static void dl_put(amio_poller *p, uint32_t i, struct amio__deadline d)
{
	p->dl[i] = d;
	io_of(p, d.slot)->dl_pos = i + 1;
}

static void dl_up(amio_poller *p, uint32_t i)
{
	struct amio__deadline d = p->dl[i];

	while (i && p->dl[(i - 1) / 2].ns > d.ns) {
		dl_put(p, i, p->dl[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	dl_put(p, i, d);
}

static void dl_down(amio_poller *p, uint32_t i)
{
	struct amio__deadline d = p->dl[i];

	for (;;) {
		uint32_t c = 2 * i + 1;

		if (c >= p->dl_n)
			break;
		if (c + 1 < p->dl_n && p->dl[c + 1].ns < p->dl[c].ns)
			c++;
		if (p->dl[c].ns >= d.ns)
			break;
		dl_put(p, i, p->dl[c]);
		i = c;
	}
	dl_put(p, i, d);
}

void amio__dl_remove(amio_poller *p, uint32_t slot)
{
	struct amio__io *io = io_of(p, slot);
	uint32_t i = io->dl_pos - 1;

	if (!io->dl_pos)
		return;
	io->dl_pos = 0;
	if (i == --p->dl_n)
		return;
	dl_put(p, i, p->dl[p->dl_n]);
	dl_up(p, i);
	dl_down(p, io_of(p, p->dl[p->dl_n].slot)->dl_pos - 1);
}

static void dl_set(amio_poller *p, uint32_t slot, int64_t ns)
{
	amio__dl_remove(p, slot);
	p->dl[p->dl_n] = (struct amio__deadline){ns, slot};
	dl_up(p, p->dl_n++);
}

int64_t amio__io_next_deadline_ns(amio_poller *p)
{
	int64_t left;

	if (!p->dl_n)
		return -1;
	left = p->dl[0].ns - amio__now_ns();
	return left < 0 ? 0 : left;
}

/* The operation's place in the heap, from its deadline and its timer
 * (0 = none): the earlier of the two, or out of the heap. */
void amio__dl_update(amio_poller *p, uint32_t slot)
{
	const struct amio__io *io = io_of(p, slot);
	int64_t a = io->deadline_ns, b = io->timer_ns;
	int64_t key = !a ? b : !b ? a : a < b ? a : b;

	if (key)
		dl_set(p, slot, key);
	else
		amio__dl_remove(p, slot);
}

/* The slot whose key is due by now, or 0. */
uint32_t amio__dl_due(amio_poller *p, int64_t now)
{
	return p->dl_n && p->dl[0].ns <= now ? p->dl[0].slot : 0;
}
