/*
 * Registrars: how a thread hands commands to the poller without a lock, gets
 * ids at once, and (inbox mode) sleeps until the poller delivers its
 * notifications.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* ---- Lifetime ----------------------------------------------------------- */

void amio__registrar_unref(amio_registrar *r)
{
	amio_poller *p = r->p;

	if (ck_pr_faa_32(&r->refs, -1) != 1)
		return;
	amio__waiter_destroy(&r->waiter);
	free(r->cmdq_buf);
	free(r->inbox_buf);
	free(r);
	amio__poller_unref(p);
}

static int publish(amio_poller *p, amio_registrar *r)
{
	amio_registrar *head;

	/* Lock-free push onto the poller's incoming stack; the poll thread
	 * adopts the whole stack at its next iteration. */
	do {
		head = ck_pr_load_ptr(&p->incoming);
		if (head == AMIO__INCOMING_CLOSED)
			return -ESHUTDOWN;
		r->next_new = head;
	} while (!ck_pr_cas_ptr(&p->incoming, head, r));
	return 0;
}

int amio_registrar_new(amio_poller *p, uint32_t flags, amio_registrar **out)
{
	amio_registrar *r;
	int rc;

	if (!p || !out || (flags & ~(uint32_t)AMIO_INBOX))
		return -EINVAL;
	if (ck_pr_load_32(&p->shutdown))
		return -ESHUTDOWN;
	if (posix_memalign((void **)&r, AMIO__CACHELINE, sizeof(*r)) != 0)
		return -ENOMEM;
	memset(r, 0, sizeof(*r));
	r->p = p;
	r->flags = flags;
	r->refs = 2; /* the owner and the poll thread */
	(void)amio_registrar_set_conn(r, NULL);
	r->cmdq_buf = calloc(p->queue_entries, sizeof(*r->cmdq_buf));
	if (flags & AMIO_INBOX)
		r->inbox_buf = calloc(p->inbox_entries, sizeof(*r->inbox_buf));
	rc = (!r->cmdq_buf || ((flags & AMIO_INBOX) && !r->inbox_buf)) ? -ENOMEM : 0;
	/* A ring to sleep on (inbox), or to send wakeups from (old kernels). */
	if (rc == 0)
		rc = amio__waiter_init(p, &r->waiter, flags & AMIO_INBOX, &r->doorbell);
	if (rc < 0) {
		free(r->cmdq_buf);
		free(r->inbox_buf);
		free(r);
		return rc;
	}
	ck_ring_init(&r->cmdq, p->queue_entries);
	if (flags & AMIO_INBOX)
		ck_ring_init(&r->inbox, p->inbox_entries);
	ck_pr_inc_32(&p->refs);
	rc = publish(p, r);
	if (rc < 0) {
		r->refs = 1;
		amio__registrar_unref(r);
		return rc;
	}
	*out = r;
	return 0;
}

/* Calls that touch the ring fd or the registry run between enter() and
 * leave(), so amio_poller_free() can wait for them before tearing down. */
static int enter(amio_registrar *r)
{
	amio__in_call_enter(&r->in_call);
	if (ck_pr_load_32(&r->p->shutdown)) {
		amio__in_call_leave(&r->in_call);
		return -ESHUTDOWN;
	}
	return 0;
}

static void leave(amio_registrar *r)
{
	/* Our ring and registry accesses before the poller may see us out. */
	amio__in_call_leave(&r->in_call);
}

void amio_registrar_free(amio_registrar *r)
{
	if (!r)
		return;
	if (enter(r) == 0) {
		/* Commands queued so far happen before the poller sees closed. */
		ck_pr_fence_store();
		ck_pr_store_32(&r->closed, 1);
		amio__poller_kick(r->p, r);
		leave(r);
	}
	amio__registrar_unref(r);
}

/* ---- Commands ----------------------------------------------------------- */

static bool queue_full(amio_registrar *r)
{
	/* The producer is this thread: room can only grow until we enqueue. */
	return ck_ring_size(&r->cmdq) >= ck_ring_capacity(&r->cmdq) - 1;
}

void amio__registrar_room(amio_registrar *r)
{
	/* Our dequeues before the waiting load: a store-buffering pair with
	 * amio_registrar_wait_room (its flag store, then its queue re-check).
	 * One fence per drain that took commands. */
	ck_pr_fence_store_load();
	if (ck_pr_load_32(&r->room_waiting))
		amio__futex_bump(&r->room_seq);
}

int amio_registrar_wait_room(amio_registrar *r, int timeout_ms)
{
	int64_t deadline = timeout_ms > 0 ? amio__now_ns() + (int64_t)timeout_ms * 1000000 : 0;

	if (!r || timeout_ms < -1)
		return -EINVAL;
	for (;;) {
		int64_t left = -1;
		uint32_t seq;
		bool full;
		int rc = enter(r);

		if (rc < 0)
			return rc;
		ck_pr_store_32(&r->room_waiting, 1);
		/* waiting before the queue re-check; pairs with
		 * amio__registrar_room. */
		ck_pr_fence_store_load();
		seq = ck_pr_load_32(&r->room_seq);
		full = queue_full(r);
		if (full)
			amio__poller_kick(r->p, r); /* a sleeping poller drains nothing */
		leave(r);
		if (!full) {
			ck_pr_store_32(&r->room_waiting, 0);
			return 0;
		}
		if (timeout_ms >= 0 && (left = deadline - amio__now_ns()) <= 0) {
			ck_pr_store_32(&r->room_waiting, 0);
			return -ETIMEDOUT;
		}
		/* Outside enter/leave: amio_poller_free waits for in_call to
		 * clear, then bumps room_seq to end this sleep. */
		amio__futex_wait(&r->room_seq, seq, left);
	}
}

int amio_registrar_set_conn(amio_registrar *r, const struct amio_conn_config *cfg)
{
	struct amio_conn_config c = {0};

	if (!r)
		return -EINVAL;
	if (cfg)
		c = *cfg;
	if (!c.high_water)
		c.high_water = AMIO_CONN_HIGH_WATER;
	if (!c.low_water)
		c.low_water = c.high_water / 2;
	if (c.low_water > c.high_water)
		return -EINVAL;
	r->conn = c;
	return 0;
}

int amio_registrar_set_queue_wait(amio_registrar *r, int timeout_ms)
{
	if (!r || timeout_ms < -1)
		return -EINVAL;
	r->queue_wait_ms = timeout_ms;
	return 0;
}

/* A call found r's queue full (outside enter/leave: amio_poller_free waits
 * for in_call). 0: look again; -EAGAIN: the default, or the wait set by
 * amio_registrar_set_queue_wait is over; -ESHUTDOWN. *until: the call's
 * deadline in ns, 0 until its first wait. On the poll thread nobody else
 * would drain the queue: it applies what is queued itself, once. */
static int room_wait(amio_registrar *r, int64_t *until)
{
	int64_t left_ms = -1;
	int rc;

	if (r->queue_wait_ms == 0 || *until < 0)
		return -EAGAIN;
	if (amio__is_poll_thread(r->p)) {
		*until = -1; /* once */
		amio__drain(r->p);
		return 0;
	}
	if (r->queue_wait_ms > 0) {
		int64_t now = amio__now_ns();

		if (*until == 0)
			*until = now + (int64_t)r->queue_wait_ms * 1000000;
		if (now >= *until)
			return -EAGAIN;
		left_ms = (*until - now + 999999) / 1000000;
	}
	rc = amio_registrar_wait_room(r, left_ms > INT_MAX ? INT_MAX : (int)left_ms);
	return rc == -ETIMEDOUT ? -EAGAIN : rc;
}

/* enter() with room for one command in r's queue, waiting for it as
 * amio_registrar_set_queue_wait says (room_wait). 0: inside enter/leave;
 * -errno: outside. */
static int enter_with_room(amio_registrar *r)
{
	int64_t until = 0;
	int rc;

	while ((rc = enter(r)) == 0 && queue_full(r)) {
		leave(r);
		if ((rc = room_wait(r, &until)) < 0)
			return rc;
	}
	return rc;
}

static void push(amio_registrar *r, struct amio__cmd *c)
{
	bool ok = ck_ring_enqueue_spsc_amio_cmd(&r->cmdq, r->cmdq_buf, c);

	(void)ok; /* room was checked by queue_full() */
	amio__poller_kick(r->p, r);
}

static int check_events(uint32_t events)
{
	uint32_t mode = events & (AMIO_LEVEL | AMIO_ONESHOT);
	uint32_t base = events & ~(uint32_t)(AMIO_LEVEL | AMIO_ONESHOT);

	if (!(base & AMIO_BOTH) || (base & ~(uint32_t)AMIO_BOTH))
		return -EINVAL;
	if (mode == (AMIO_LEVEL | AMIO_ONESHOT))
		return -EINVAL;
	return 0;
}

/* Allocate an id of kind and queue c for it; an operation's arguments (io)
 * go into its slot first. */
static int64_t add(amio_registrar *r, unsigned kind, struct amio__cmd *c, const struct amio__io *io)
{
	int64_t id;
	int rc;

	/* Room first: a refused command must not have taken an id. */
	rc = enter_with_room(r);
	if (rc < 0)
		return rc;
	id = amio__registry_alloc(&r->p->reg, kind);
	if (id > 0) {
		/* The slot is ours until the poll thread applies START: the
		 * ring's enqueue publishes the arguments with the command. */
		if (io)
			r->p->reg.ios[amio__id_slot((uint64_t)id)] = *io;
		c->id = (uint64_t)id;
		push(r, c);
	}
	leave(r);
	return id;
}

int64_t amio__registrar_add(amio_registrar *r, unsigned kind, struct amio__cmd *c)
{
	return add(r, kind, c, NULL);
}

int64_t amio__registrar_add_io(amio_registrar *r, struct amio__cmd *c, const struct amio__io *io)
{
	return add(r, AMIO__KIND_IO, c, io);
}

int amio__registrar_push(amio_registrar *r, struct amio__cmd *c, uint64_t live_id)
{
	int rc;

	rc = enter_with_room(r);
	if (rc < 0)
		return rc;
	if (live_id && !amio__registry_live(&r->p->reg, live_id, AMIO__KIND_BIT(AMIO__KIND_IO)))
		rc = -ENOENT;
	else
		push(r, c);
	leave(r);
	return rc;
}

int amio__registrar_close(amio_registrar *r, uint64_t id, unsigned kinds)
{
	struct amio__cmd c = {.op = AMIO__OP_DEREGISTER, .id = id};
	int rc;

	/* Room first: a refused deregister leaves the id registered. */
	rc = enter_with_room(r);
	if (rc < 0)
		return rc;
	rc = amio__registry_close(&r->p->reg, id, kinds);
	if (rc == 0)
		push(r, &c);
	leave(r);
	return rc;
}

int64_t amio_register(amio_registrar *r, int fd, uint32_t events, void *data)
{
	struct amio__cmd c = {.op = AMIO__OP_REGISTER, .fd = fd, .events = events, .data = data};
	int rc;

	if (fd < 0)
		return -EBADF;
	rc = check_events(events);
	if (rc < 0)
		return rc;
	return amio__registrar_add(r, AMIO__KIND_SOCKET, &c);
}

int amio_reregister(amio_registrar *r, uint64_t id, uint32_t events)
{
	struct amio__cmd c = {.op = AMIO__OP_REREGISTER, .id = id, .events = events};
	int rc = check_events(events);

	if (rc < 0)
		return rc;
	rc = enter_with_room(r);
	if (rc < 0)
		return rc;
	if (!amio__registry_live(&r->p->reg, id, AMIO__KIND_BIT(AMIO__KIND_SOCKET)))
		rc = -ENOENT;
	else
		push(r, &c);
	leave(r);
	return rc;
}

/* Sockets and timers; a channel is closed by amio_channel_free. */
int amio_deregister(amio_registrar *r, uint64_t id)
{
	return amio__registrar_close(
	    r, id, AMIO__KIND_BIT(AMIO__KIND_SOCKET) | AMIO__KIND_BIT(AMIO__KIND_TIMER));
}

/* ---- Inbox -------------------------------------------------------------- */

/* Hand out what the inbox holds, dropping ids deregistered since delivery.
 * first: the first look of an amio_registrar_wait call, which tells the
 * poll thread that this consumer waits again (LEVEL re-arms).
 * Returns the count, or -ESHUTDOWN (the registry is gone with the poller). */
static int pop_inbox(amio_registrar *r, amio_notification *out, size_t cap, bool first)
{
	uint64_t before = r->popped;
	struct amio__inote w;
	size_t n = 0, taken = 0;
	bool kick = false;
	int rc = enter(r);

	if (rc < 0)
		return rc;
	while (n < cap && ck_ring_dequeue_spsc_amio_inote(&r->inbox, r->inbox_buf, &w)) {
		taken++;
		out[n] = w.n;
		if (w.lend) /* taken: now its put is ours (amio_pool_put) */
			ck_pr_store_8(w.lend, AMIO__LENT_HELD);
		n += amio__deliverable(r->p, &out[n]);
	}
	/* Every notification taken before this call was seen by our caller. */
	if (first)
		ck_pr_store_64(&r->wait_mark, before);
	if (taken) {
		/* Our hand-outs (a fired one-shot's FIRED -> CLOSING) before
		 * the count the poll thread releases their slots by. */
		ck_pr_fence_store();
		ck_pr_store_64(&r->popped, before + taken);
	}
	if (first || taken) {
		/* Our stores (dequeues, wait_mark) before the loads of the
		 * poller's flags: store-buffering pairs with the poller, which
		 * sets overflowed or level_watch, then (sleep_ok's fence) reads
		 * our ring head and counts before sleeping. Without the fence
		 * each side can miss the other's store, even on x86, and the
		 * poller sleeps on work only we could have told it about. */
		ck_pr_fence_store_load();
		kick = (first && ck_pr_load_32(&r->level_watch)) ||
		       (taken && ck_pr_load_32(&r->overflowed));
	}
	if (kick)
		amio__poller_kick(r->p, r);
	leave(r);
	return (int)n;
}

int amio_registrar_wake(amio_registrar *r)
{
	int rc;

	if (!r || !(r->flags & AMIO_INBOX))
		return -EINVAL;
	rc = enter(r);
	if (rc < 0)
		return rc;
	ck_pr_store_32(&r->wake_req, 1);
	/* The request before the doorbell load; pairs with the waiter's
	 * SLEEPING store, fence, then its wake_req re-check: either it sees
	 * the request, or we see it asleep and wake it. A waker that loses
	 * the CAS leaves the wake to whoever won (the poll thread's
	 * doorbell, or another wake): the request is seen either way. */
	ck_pr_fence_store_load();
	if (ck_pr_load_32(&r->doorbell) == AMIO__SLEEPING &&
	    ck_pr_cas_32(&r->doorbell, AMIO__SLEEPING, AMIO__NOTIFIED))
		rc = amio__backend_wake_waiter_now(r->p, &r->waiter);
	leave(r);
	return rc < 0 ? rc : 0;
}

int amio_registrar_wait(amio_registrar *r, amio_notification *out, size_t cap, int timeout_ms)
{
	int64_t deadline = timeout_ms > 0 ? amio__now_ns() + (int64_t)timeout_ms * 1000000 : 0;
	int n, rc;

	if (!r || !(r->flags & AMIO_INBOX) || !out || cap == 0 || timeout_ms < -1)
		return -EINVAL;
	for (bool first = true;; first = false) {
		int64_t left = -1;

		n = pop_inbox(r, out, cap, first);
		if (n) {
			/* Any return ends the wait a wake asked to end. */
			if (ck_pr_load_32(&r->wake_req))
				(void)ck_pr_fas_32(&r->wake_req, 0);
			return n; /* a count, or -ESHUTDOWN */
		}
		/* amio_registrar_wake: this wait returns, once per wake (a
		 * poll, timeout 0, uses the wake up too: any return does). */
		if (ck_pr_load_32(&r->wake_req) && ck_pr_fas_32(&r->wake_req, 0))
			return 0;
		if (timeout_ms == 0)
			return 0;
		if (timeout_ms > 0 && (left = deadline - amio__now_ns()) <= 0)
			return pop_inbox(r, out, cap, false);
		ck_pr_store_32(&r->doorbell, AMIO__SLEEPING);
		/* SLEEPING before the inbox re-check; pairs with the poller's
		 * fence between its inbox store and doorbell load. */
		ck_pr_fence_store_load();
		/* shutdown too: amio_poller_free stores it before it wakes the
		 * SLEEPING waiters, and a futex waker leaves nothing behind for
		 * a waiter that was not yet asleep (a MSG_RING CQE does). */
		if (ck_ring_size(&r->inbox) || ck_pr_load_32(&r->p->shutdown) ||
		    ck_pr_load_32(&r->wake_req)) {
			ck_pr_store_32(&r->doorbell, AMIO__RUNNING);
			continue;
		}
		rc = amio__waiter_wait(&r->waiter, left);
		ck_pr_fas_32(&r->doorbell, AMIO__RUNNING);
		if (rc < 0 && rc != -ETIME && rc != -EINTR)
			return rc;
	}
}
