/*
 * The default idle spin: how long the poll thread watches its queues before
 * it sleeps (spin_us 0). A spin pays when work comes soon after the poll
 * thread went idle (request/response across threads: it saves the MSG_RING,
 * the sleep and the wakeup latency); it wastes CPU when work is far off, and
 * when the thread that would make the work shares our CPU (the spin keeps it
 * from running).
 *
 * So the window is learnt from what spinning caught:
 * - a spin that catches work sets the window to 2x the time it took
 *   (between AMIO__SPIN_MIN_NS and AMIO__SPIN_MAX_NS, 2 and 5 us): jitter
 *   stays caught, and a miss costs little. Longer windows lose CPU even
 *   when they catch: a sleep and its wakeup cost this poll thread only a
 *   few us of CPU, and sleeping lets work batch up;
 * - a spin that catches nothing halves the window, down to none;
 * - with none, sleeps skip spinning, then one probes with the largest
 *   window; failed probes in a row double the skip (1, 2, 4 ... up to
 *   AMIO__SPIN_BACKOFF sleeps), so an idle poller or one whose feeder
 *   shares its CPU spends under 0.1 us per sleep on probes. (Learning from
 *   how long sleeps last does not work: the wakeup itself takes about
 *   20 us on a VM, longer than any useful window.)
 * - work that streams turns spinning off: more than one completion reaped
 *   since the poll thread last went idle, or a channel receiver draining
 *   more than one message at a time. Sleeping batches a stream, where a
 *   spin catches it one or two items at a time, a loop and a notification
 *   each (measured: channel 26M vs 9M messages/s; echo saturation 0.235 vs
 *   0.26 CPU us per request). Spinning is for request/response.
 */
#include "internal.h"

static bool adaptive(const amio_poller *p)
{
	return p->spin_ns == 0 && !(p->cfg_flags & AMIO_POLLER_NO_SPIN);
}

/* Work that comes in batches: more than one completion since the poll
 * thread last went idle, or a channel drain of more than one message. */
static bool streaming(amio_poller *p)
{
	struct amio__spin *a = &p->spin;
	uint64_t cqes = p->stats.cqes, batch = cqes - a->cqes_seen;

	a->cqes_seen = cqes;
	return batch > 1 || (ck_pr_load_32(&p->spin_hint) & AMIO__SPIN_STREAMING);
}

int64_t amio__spin_window(amio_poller *p)
{
	struct amio__spin *a = &p->spin;

	if (!adaptive(p))
		return (p->cfg_flags & AMIO_POLLER_NO_SPIN) ? 0 : p->spin_ns;
	if (streaming(p))
		return 0;
	if (a->window_ns)
		return a->window_ns;
	if (a->skip) {
		a->skip--;
		return 0;
	}
	return AMIO__SPIN_MAX_NS; /* a probe */
}

void amio__spin_caught(amio_poller *p, int64_t window_ns, int64_t caught_ns)
{
	struct amio__spin *a = &p->spin;

	if (!adaptive(p))
		return;
	if (caught_ns >= 0) {
		a->backoff = 0;
		a->window_ns = caught_ns * 2;
		if (a->window_ns < AMIO__SPIN_MIN_NS)
			a->window_ns = AMIO__SPIN_MIN_NS;
		if (a->window_ns > AMIO__SPIN_MAX_NS)
			a->window_ns = AMIO__SPIN_MAX_NS;
		return;
	}
	a->window_ns = window_ns / 2 < AMIO__SPIN_MIN_NS ? 0 : window_ns / 2;
	if (a->window_ns)
		return;
	a->backoff = a->backoff ? a->backoff * 2 : 1;
	if (a->backoff > AMIO__SPIN_BACKOFF)
		a->backoff = AMIO__SPIN_BACKOFF;
	a->skip = a->backoff;
}
