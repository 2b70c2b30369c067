/*
 * Channels: a bounded MPSC queue of fixed-size messages whose first message
 * after a drain raises one notification, and how the poll thread reports it.
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define MAX_CAPACITY (1u << 30)
#define MAX_MSG_SIZE 65536u

/* ---- Lifetime -------------------------------------------------------------- */

static void push_all(amio_poller *p, amio_channel *ch)
{
	amio_channel *head;

	do {
		head = ck_pr_load_ptr(&p->channels);
		ch->next_all = head;
	} while (!ck_pr_cas_ptr(&p->channels, head, ch));
}

int amio_channel_new(amio_registrar *r, size_t capacity, size_t msg_size, void *data,
                     amio_channel **out)
{
	struct amio__cmd c = {.op = AMIO__OP_CHANNEL, .data = data};
	uint32_t slots = 2;
	amio_channel *ch;
	int64_t id;

	if (!r || !out || capacity == 0 || capacity > MAX_CAPACITY || msg_size == 0 ||
	    msg_size > MAX_MSG_SIZE)
		return -EINVAL;
	/* A ck_ring of N holds N - 1; the exact bound is kept by space. */
	while (slots <= capacity)
		slots <<= 1;
	if (posix_memalign((void **)&ch, AMIO__CACHELINE, sizeof(*ch)) != 0)
		return -ENOMEM;
	memset(ch, 0, sizeof(*ch));
	ch->buf = calloc(slots, msg_size);
	if (!ch->buf) {
		free(ch);
		return -ENOMEM;
	}
	ck_ring_init(&ch->ring, slots);
	ch->msg_size = (uint32_t)msg_size;
	ch->space = (uint32_t)capacity;
	ch->p = r->p;
	id = amio__registrar_add(r, AMIO__KIND_CHANNEL, &c);
	if (id < 0) {
		free(ch->buf);
		free(ch);
		return (int)id;
	}
	ch->id = (uint64_t)id;
	/* The poller frees the handle: senders may still hold it. */
	ck_pr_inc_32(&ch->p->refs);
	push_all(ch->p, ch);
	*out = ch;
	return 0;
}

uint64_t amio_channel_id(const amio_channel *ch)
{
	return ch->id;
}

/* Calls that touch the poller run inside enter/leave, so amio_poller_free
 * and amio_channel_free can wait them out (the same handshake as registrars). */
static int enter(amio_channel *ch)
{
	ck_pr_inc_32(&ch->senders);
	/* senders before the closed/shutdown loads; pairs with the frees. */
	ck_pr_fence_store_load();
	if (ck_pr_load_32(&ch->closed) || ck_pr_load_32(&ch->p->shutdown)) {
		int rc = ck_pr_load_32(&ch->closed) ? -EPIPE : -ESHUTDOWN;

		ck_pr_dec_32(&ch->senders);
		return rc;
	}
	return 0;
}

static void leave(amio_channel *ch)
{
	ck_pr_fence_release();
	ck_pr_dec_32(&ch->senders);
}

/* ---- Raising --------------------------------------------------------------- */

/* Mark the channel raised and put it on the poller's ready stack once. */
static void raise_channel(amio_channel *ch)
{
	amio_poller *p = ch->p;
	amio_channel *head;

	ck_pr_store_32(&ch->raised, 1);
	/* raised before queued: the poller clears queued, then reads raised. */
	ck_pr_fence_store_load();
	if (ck_pr_load_32(&ch->queued) || !ck_pr_cas_32(&ch->queued, 0, 1))
		return;
	do {
		head = ck_pr_load_ptr(&p->ready);
		ch->next_ready = head;
	} while (!ck_pr_cas_ptr(&p->ready, head, ch));
	amio__poller_kick(p, NULL);
}

static void futex_wake_all(uint32_t *word)
{
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

void amio_channel_free(amio_channel *ch)
{
	amio_poller *p;

	if (!ch)
		return;
	p = ch->p;
	ck_pr_store_32(&ch->closed, 1);
	/* closed before the senders load: a sender either sees closed or is
	 * counted, and we wait until it is done with the buffer. */
	ck_pr_fence_store_load();
	while (ck_pr_load_32(&ch->senders))
		ck_pr_stall();
	free(ch->buf);
	ch->buf = NULL;
	ck_pr_inc_32(&ch->space_seq);
	futex_wake_all(&ch->space_seq); /* blocked senders see closed */
	/* Tell the poller (it frees the slot), unless it is gone already. */
	ck_pr_inc_32(&ch->senders);
	ck_pr_fence_store_load();
	if (!ck_pr_load_32(&p->shutdown)) {
		amio__registry_close(&p->reg, ch->id, AMIO__KIND_BIT(AMIO__KIND_CHANNEL));
		raise_channel(ch); /* the poller sees closed when it takes it */
	}
	leave(ch);
	amio__poller_unref(p);
}

/* ---- Sending and receiving ------------------------------------------------- */

/* Copy msg into a reserved slot and publish it. ck's MP commit publishes in
 * ticket order and spins without yielding: with more senders than cores, a
 * sender preempted between reserve and commit stalls every later one for a
 * scheduler slice, and the stalls convoy (measured: 6k messages/s with 4
 * senders on 2 cores). So we wait for our turn ourselves, yielding after a
 * short spin, and call ck's commit once it will not spin. */
static bool enqueue(amio_channel *ch, const void *msg)
{
	unsigned int ticket;
	void *slot = _ck_ring_enqueue_reserve_mp(&ch->ring, ch->buf, ch->msg_size, &ticket, NULL);

	if (!slot)
		return false;
	memcpy(slot, msg, ch->msg_size);
	for (unsigned spins = 0; ck_pr_load_uint(&ch->ring.p_tail) != ticket; spins++) {
		if (spins < 64)
			ck_pr_stall();
		else
			sched_yield();
	}
	_ck_ring_enqueue_commit_mp(&ch->ring, ticket);
	return true;
}

int amio_channel_send(amio_channel *ch, const void *msg)
{
	int rc = enter(ch);

	if (rc < 0)
		return rc;
	/* Take a slot first: the bound is exact for any number of senders, and
	 * the ring (one slot more than capacity) is never full after it. */
	if ((int32_t)ck_pr_faa_32(&ch->space, (uint32_t)-1) <= 0 || !enqueue(ch, msg)) {
		ck_pr_inc_32(&ch->space);
		leave(ch);
		return -EAGAIN;
	}
	/* Only the send that finds the channel empty raises it (Amy's rule). */
	if (ck_pr_faa_32(&ch->pending, 1) == 0)
		raise_channel(ch);
	leave(ch);
	return 0;
}

int amio_channel_send_wait(amio_channel *ch, const void *msg, int timeout_ms)
{
	int64_t deadline = amio__now_ns() + (int64_t)timeout_ms * 1000000;

	if (timeout_ms < -1)
		return -EINVAL;
	for (;;) {
		uint32_t seq = ck_pr_load_32(&ch->space_seq);
		struct timespec ts, *tsp = NULL;
		int rc = amio_channel_send(ch, msg);
		int64_t left = deadline - amio__now_ns();

		if (rc != -EAGAIN)
			return rc;
		if (timeout_ms >= 0 && left <= 0)
			return -ETIMEDOUT;
		if (timeout_ms >= 0) {
			ts.tv_sec = left / 1000000000;
			ts.tv_nsec = left % 1000000000;
			tsp = &ts;
		}
		ck_pr_inc_32(&ch->space_waiters);
		/* waiters before the space re-check; pairs with try_recv. */
		ck_pr_fence_store_load();
		if ((int32_t)ck_pr_load_32(&ch->space) <= 0 && !ck_pr_load_32(&ch->closed) &&
		    !ck_pr_load_32(&ch->p->shutdown))
			syscall(SYS_futex, &ch->space_seq, FUTEX_WAIT_PRIVATE, seq, tsp, NULL, 0);
		ck_pr_dec_32(&ch->space_waiters);
	}
}

int amio_channel_try_recv(amio_channel *ch, void *msg)
{
	bool ok;
	int rc = enter(ch);

	if (rc < 0)
		return rc;
	if (ck_pr_load_32(&ch->pending) == 0) {
		/* Drained: withdraw the raise (a notification not yet reported is
		 * then filtered), and look again for a send that raced with us. */
		ck_pr_store_32(&ch->raised, 0);
		ck_pr_fence_store_load();
		if (ck_pr_load_32(&ch->pending) == 0) {
			leave(ch);
			return -EAGAIN;
		}
		raise_channel(ch); /* that sender saw pending > 0 and stayed quiet */
	}
	/* pending > 0: its sender's enqueue is complete, so this succeeds. */
	ok = _ck_ring_dequeue_sc(&ch->ring, ch->buf, msg, ch->msg_size);
	(void)ok;
	ck_pr_dec_32(&ch->pending);
	ck_pr_inc_32(&ch->space);
	/* space before the waiters load; pairs with amio_channel_send_wait. */
	ck_pr_fence_store_load();
	if (ck_pr_load_32(&ch->space_waiters)) {
		ck_pr_inc_32(&ch->space_seq);
		syscall(SYS_futex, &ch->space_seq, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	}
	leave(ch);
	return 0;
}

/* ---- Poll thread ------------------------------------------------------------- */

void amio__channels_pop(amio_poller *p)
{
	amio_channel *ch, *fifo = NULL;

	if (!ck_pr_load_ptr(&p->ready))
		return;
	/* The stack is newest first: reverse it so channels are served in the
	 * order they were raised. */
	for (ch = ck_pr_fas_ptr(&p->ready, NULL); ch;) {
		amio_channel *next = ch->next_ready;

		ch->next_local = fifo;
		fifo = ch;
		ch = next;
	}
	if (!fifo)
		return;
	if (p->ready_tail)
		p->ready_tail->next_local = fifo;
	else
		p->ready_head = fifo;
	for (ch = fifo; ch->next_local; ch = ch->next_local)
		;
	p->ready_tail = ch;
}

/* Report raised channels (while Amy-mode room lasts); retire closed ones. */
void amio__channels_handle(amio_poller *p)
{
	amio_channel *ch;

	while ((ch = p->ready_head)) {
		struct amio__entry *e = amio__entry_for(p, ch->id);
		uint32_t slot = amio__id_slot(ch->id);

		if (e && !e->owner && !ck_pr_load_32(&ch->closed) && p->out_n == p->out_cap)
			return; /* no room: the rest waits for the next wait call */
		p->ready_head = ch->next_local;
		if (!p->ready_head)
			p->ready_tail = NULL;
		/* An exchange, not a store: a sender's push after this (its CAS
		 * on queued) must be ordered after our read of next_ready, and
		 * TSan sees RMWs. Cleared before raised is read; pairs with
		 * raise_channel. */
		(void)ck_pr_fas_32(&ch->queued, 0);
		ck_pr_fence_store_load();
		if (!e)
			continue;
		if (ck_pr_load_32(&ch->closed)) {
			e->flags |= AMIO__E_DEREGISTERED;
			amio__reconcile(p, e, slot);
		} else if (amio__entry_live(p, e) && ck_pr_load_32(&ch->raised)) {
			amio__notify(p, e, AMIO_CHANNEL, 0);
		}
	}
}

void amio__channels_shutdown(amio_poller *p)
{
	/* After p->shutdown is stored: a sender about to sleep either sees it
	 * or finds space_seq moved and does not sleep. */
	ck_pr_fence_memory();
	for (amio_channel *ch = ck_pr_load_ptr(&p->channels); ch; ch = ch->next_all) {
		ck_pr_inc_32(&ch->space_seq);
		futex_wake_all(&ch->space_seq);
	}
}

void amio__channels_free_all(amio_poller *p)
{
	amio_channel *ch = p->channels, *next;

	for (; ch; ch = next) {
		next = ch->next_all;
		free(ch->buf);
		free(ch);
	}
	p->channels = NULL;
}
