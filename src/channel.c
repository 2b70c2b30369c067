/*
 * Channels: a bounded MPSC queue of fixed-size messages whose first message
 * after a drain raises one notification, and how the poll thread reports it.
 *
 * The queue is a sequence-numbered ring (D. Vyukov's bounded queue, MPSC
 * here): a sender claims a position with one CAS on tail, copies its message
 * and publishes it by advancing the slot's sequence word; the receiver takes
 * positions in order. No counter is shared by senders and receiver: a send
 * raises the channel when the position before its own was already taken
 * (the queue was empty), which the sender reads from the neighbouring slot.
 * ck_ring's MP enqueue would make senders publish in ticket order, spinning
 * on each other: with more senders than cores, one preempted mid-copy stalls
 * the rest for a scheduler slice (measured: 0.3M messages/s with 4 senders
 * on 2 cores, 1 sched_yield per message).
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define MAX_CAPACITY (1u << 30)
#define MAX_MSG_SIZE 65536u
#define SEQ_BYTES    sizeof(uint64_t)

/* ---- Slots -----------------------------------------------------------------
 * A slot's word holds its sequence minus the slot's index, so a zeroed buffer
 * is the initial state (slot i free for position i) and creating a channel
 * touches none of its pages.
 */

struct slot {
	unsigned char *at; /* the sequence word; the message follows it */
	uint64_t i;        /* the slot's index */
};

static struct slot slot_of(const amio_channel *ch, uint64_t pos)
{
	uint64_t i = ch->pow2 ? pos & (ch->nslots - 1) : pos % ch->nslots;

	return (struct slot){ch->slots + i * ch->stride, i};
}

static uint64_t *word_of(struct slot s)
{
	return (uint64_t *)(void *)s.at;
}

/* Acquire: a published sequence makes its message readable (receiver), a
 * taken one makes the slot writable (sender). TSan does not model ck_pr's
 * fences, so under TSan the pair uses atomics it sees. */
static uint64_t seq_load(struct slot s)
{
#if defined(__SANITIZE_THREAD__)
	return __atomic_load_n(word_of(s), __ATOMIC_ACQUIRE) + s.i;
#else
	uint64_t v = ck_pr_load_64(word_of(s));

	ck_pr_fence_acquire();
	return v + s.i;
#endif
}

/* Release the slot's contents with its new sequence (a sender's copy in,
 * the receiver's copy out). An exchange, not a store: it also orders the
 * store before the loads that follow it (the neighbour's sequence, the
 * waiters count), as the raise and the space handshakes need; the ck fences
 * around it are free where RMWs are fences (x86). */
static void seq_release(struct slot s, uint64_t v)
{
#if defined(__SANITIZE_THREAD__)
	(void)__atomic_exchange_n(word_of(s), v - s.i, __ATOMIC_SEQ_CST);
#else
	ck_pr_fence_store_atomic(); /* the copy in, before the sequence */
	ck_pr_fence_load_atomic();  /* the copy out, before the sequence */
	(void)ck_pr_fas_64(word_of(s), v - s.i);
	ck_pr_fence_atomic_load(); /* the sequence, before what is loaded next */
#endif
}

/* Whether position pos - back was taken by the receiver (true if there was
 * none: positions start at 0 and never wrap in 2^64 sends). Sequence words
 * only grow, so a later lap's value means taken too. */
static bool taken_before(const amio_channel *ch, uint64_t pos, uint64_t back)
{
	uint64_t q = pos - back;

	return pos < back || (int64_t)(seq_load(slot_of(ch, q)) - (q + ch->nslots)) >= 0;
}

/* Whether position pos may be claimed: 0 yes, < 0 the channel is full, > 0
 * pos is stale (another sender claimed it). */
static int room_at(const amio_channel *ch, uint64_t pos)
{
	int64_t dif = (int64_t)(seq_load(slot_of(ch, pos)) - pos);

	if (dif != 0)
		return dif < 0 ? -1 : 1;
	/* Capacity 1 runs on 2 slots: its one message must be taken too. */
	if (ch->capacity < ch->nslots && !taken_before(ch, pos, ch->capacity))
		return -1;
	return 0;
}

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
	amio_channel *ch;
	int64_t id;

	if (!r || !out || capacity == 0 || capacity > MAX_CAPACITY || msg_size == 0 ||
	    msg_size > MAX_MSG_SIZE)
		return -EINVAL;
	if (posix_memalign((void **)&ch, AMIO__CACHELINE, sizeof(*ch)) != 0)
		return -ENOMEM;
	memset(ch, 0, sizeof(*ch));
	ch->capacity = capacity;
	ch->nslots = capacity < 2 ? 2 : capacity;
	ch->pow2 = (ch->nslots & (ch->nslots - 1)) == 0;
	ch->wake_at = (capacity + 1) / 2;
	ch->msg_size = (uint32_t)msg_size;
	ch->stride = (uint32_t)((SEQ_BYTES + msg_size + 7) & ~(size_t)7);
	ch->slots = calloc(ch->nslots, ch->stride);
	if (!ch->slots) {
		free(ch);
		return -ENOMEM;
	}
	ch->p = r->p;
	id = amio__registrar_add(r, AMIO__KIND_CHANNEL, &c);
	if (id < 0) {
		free(ch->slots);
		free(ch);
		return (int)id;
	}
	ch->id = (uint64_t)id;
	/* Before the caller can hand ch to a sender: a notification for id
	 * exists only after a send. */
	amio__registry_set_obj(&ch->p->reg, ch->id, ch);
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

/* Why a sender must stop: -EPIPE (the channel was freed), -ESHUTDOWN (the
 * poller was), or 0. */
static int gone(amio_channel *ch)
{
	if (ck_pr_load_32(&ch->closed))
		return -EPIPE;
	return ck_pr_load_32(&ch->p->shutdown) ? -ESHUTDOWN : 0;
}

static void leave(amio_channel *ch)
{
	/* Our accesses of ch (and of p: a raise's kick) before the decrement
	 * a free's senders load waits for; the free then frees them. */
	ck_pr_fence_release();
	ck_pr_dec_32(&ch->senders);
}

/* Calls that touch the channel or the poller run inside enter/leave, so
 * amio_poller_free and amio_channel_free can wait them out (the same
 * handshake as registrars). */
static int enter(amio_channel *ch)
{
	int rc;

	ck_pr_inc_32(&ch->senders);
	/* senders before the closed/shutdown loads; pairs with the frees. A
	 * locked RMW already orders them where RMWs are fences (x86). */
	ck_pr_fence_atomic_load();
	rc = gone(ch);
	if (rc < 0)
		leave(ch);
	return rc;
}

/* Until no sender is counted. One just woken from send_wait needs a CPU
 * to leave: spin briefly, then yield it. The load of 0 (acquire under
 * TSan, ck.h) pairs with leave()'s release decrement: the senders' last
 * accesses come before what the caller frees next. */
static void wait_senders(amio_channel *ch)
{
	for (unsigned i = 0; ck_pr_load_32(&ch->senders); i++)
		if (i < 256)
			ck_pr_stall();
		else
			sched_yield();
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

void amio_channel_free(amio_channel *ch)
{
	amio_poller *p;

	if (!ch)
		return;
	p = ch->p;
	ck_pr_store_32(&ch->closed, 1);
	/* closed before the space_seq bump and the senders load: a sender
	 * either sees closed or is counted, and we wait until it is done with
	 * the buffer. One asleep in send_wait is counted too: the bump wakes
	 * it (it loads space_seq, then closed), and it leaves with -EPIPE. */
	ck_pr_fence_store_load();
	amio__futex_bump(&ch->space_seq);
	wait_senders(ch);
	free(ch->slots);
	ch->slots = NULL;
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

/* Claim a position and copy msg into it; false when the channel is full. */
static bool enqueue(amio_channel *ch, const void *msg, uint64_t *claimed)
{
	uint64_t pos = ck_pr_load_64(&ch->tail);
	struct slot s;

	for (;;) {
		int room = room_at(ch, pos);

		if (room < 0)
			return false;
		if (room > 0)
			pos = ck_pr_load_64(&ch->tail);
		else if (ck_pr_cas_64_value(&ch->tail, pos, pos + 1, &pos))
			break; /* on failure, pos is tail's new value */
	}
	s = slot_of(ch, pos);
	memcpy(s.at + SEQ_BYTES, msg, ch->msg_size);
	seq_release(s, pos + 1);
	*claimed = pos;
	return true;
}

/* The send itself, by a counted sender. 0, or -EAGAIN: full. */
static int send_counted(amio_channel *ch, const void *msg)
{
	uint64_t pos;

	if (!enqueue(ch, msg, &pos))
		return -EAGAIN;
	/* Only the send that finds the channel empty raises it (Amy's rule):
	 * the position before ours was taken. Our publish is ordered before
	 * this load, and the receiver's take before its next look at our slot:
	 * if we miss its take, it sees our message (no lost wakeup). */
	if (taken_before(ch, pos, 1))
		raise_channel(ch);
	return 0;
}

int amio_channel_send(amio_channel *ch, const void *msg)
{
	int rc = enter(ch);

	if (rc < 0)
		return rc;
	rc = send_counted(ch, msg);
	leave(ch);
	return rc;
}

/* Whether a send would find the channel full now (a counted sender reads
 * the slots, which amio_channel_free frees once no sender is counted). */
static bool full_now(amio_channel *ch)
{
	int room;
	uint64_t pos;

	do
		pos = ck_pr_load_64(&ch->tail);
	while ((room = room_at(ch, pos)) > 0);
	return room < 0;
}

/* Sleep until the receiver makes room (or a free bumps space_seq past
 * seq), up to the deadline set at the first refusal. 0: look again;
 * -ETIMEDOUT. */
static int wait_space(amio_channel *ch, uint32_t seq, int timeout_ms, int64_t *deadline)
{
	struct timespec ts, *tsp = NULL;
	bool full;

	if (timeout_ms >= 0) {
		int64_t now = amio__now_ns(), left;

		if (*deadline < 0)
			*deadline = now + (int64_t)timeout_ms * 1000000;
		left = *deadline - now;
		if (left <= 0)
			return -ETIMEDOUT;
		ts.tv_sec = left / 1000000000;
		ts.tv_nsec = left % 1000000000;
		tsp = &ts;
	}
	ck_pr_inc_32(&ch->space_waiters);
	/* waiters before the slot re-check; pairs with try_recv's
	 * seq_release and waiters load. */
	ck_pr_fence_atomic_load();
	full = full_now(ch);
	if (full)
		syscall(SYS_futex, &ch->space_seq, FUTEX_WAIT_PRIVATE, seq, tsp, NULL, 0);
	ck_pr_dec_32(&ch->space_waiters); /* a count only: orders nothing */
	return 0;
}

int amio_channel_send_wait(amio_channel *ch, const void *msg, int timeout_ms)
{
	int64_t deadline = -1; /* set at the first refusal: no clock read if there is room */
	int rc;

	if (timeout_ms < -1)
		return -EINVAL;
	/* Counted as a sender for the whole call, asleep included: the frees
	 * wake us and wait until we leave, so nothing here touches ch or the
	 * poller once they are gone (a sender counted only around each try
	 * was not waited for between its wakeup and its next try). */
	rc = enter(ch);
	if (rc < 0)
		return rc;
	for (;;) {
		uint32_t seq = ck_pr_load_32(&ch->space_seq);

		/* space_seq before closed and shutdown: a free stores its
		 * flag, then bumps. Seeing its bump, we see the flag; missing
		 * it, our futex wait finds the word moved or is woken. */
		ck_pr_fence_load();
		rc = gone(ch);
		if (rc == 0)
			rc = send_counted(ch, msg);
		if (rc != -EAGAIN || (rc = wait_space(ch, seq, timeout_ms, &deadline)) < 0)
			break;
	}
	leave(ch);
	return rc;
}

/* Wake every sender asleep in amio_channel_send_wait: they all retry, and
 * those that find the channel full again sleep again. */
static void wake_senders(amio_channel *ch)
{
	ch->freed = 0;
	amio__futex_bump(&ch->space_seq);
}

/* Tell the poll thread whether this drain found a stream (see
 * AMIO__SPIN_STREAMING); stored only when it changes: the word is shared. */
static void hint_streaming(amio_channel *ch)
{
	uint32_t *hint = &ch->p->spin_hint, want = ch->drained > 1 ? AMIO__SPIN_STREAMING : 0;

	ch->drained = 0;
	if (ck_pr_load_32(hint) != want)
		ck_pr_store_32(hint, want);
}

/*
 * The receiver touches only the channel (which only it frees) and never the
 * poller's ring, so it needs no enter/leave: no locked operation on a line
 * the senders write. The handle outlives amio_poller_free (the channel holds
 * a poller reference until amio_channel_free), so the shutdown load is safe.
 */
int amio_channel_try_recv(amio_channel *ch, void *msg)
{
	uint64_t h = ch->head;
	struct slot s;

	if (ck_pr_load_32(&ch->closed))
		return -EPIPE;
	if (ck_pr_load_32(&ch->p->shutdown))
		return -ESHUTDOWN;
	s = slot_of(ch, h);
	if (seq_load(s) != h + 1) {
		/* Empty (or its next sender is mid-copy): withdraw the raise (a
		 * notification not yet reported is then filtered), then look
		 * again. A sender that published after our first look and saw
		 * our last take raises after this store; one that did not see
		 * it is seen by the second look (raised before the load). */
		ck_pr_store_32(&ch->raised, 0);
		ck_pr_fence_store_load();
		if (seq_load(s) != h + 1) {
			/* Drained: every slot is free to a sender asleep in
			 * send_wait (the store-load fence above orders our
			 * last release before this load). */
			if (ck_pr_load_32(&ch->space_waiters))
				wake_senders(ch);
			hint_streaming(ch);
			return -EAGAIN;
		}
	}
	memcpy(msg, s.at + SEQ_BYTES, ch->msg_size);
	seq_release(s, h + ch->nslots); /* free for the next lap */
	ch->head = h + 1;
	ch->drained++;
	/* Our release before the waiters load; pairs with send_wait. Senders
	 * asleep there wake once half the capacity is free (or at the drain,
	 * above): one wakeup per refill. Waking one per message kept the
	 * channel full and the receiver in FUTEX_WAKE (measured: 1.6M vs
	 * 20M messages/s with 4 senders). */
	if (ck_pr_load_32(&ch->space_waiters) && ++ch->freed >= ch->wake_at)
		wake_senders(ch);
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
			/* Closed here, not only by amio_channel_free: its own
			 * close may come after we release the slot, which must
			 * then be FREE (a late close or raise is ignored), never
			 * LIVE. */
			(void)amio__registry_close(&p->reg, ch->id,
			                           AMIO__KIND_BIT(AMIO__KIND_CHANNEL));
			e->flags |= AMIO__E_DEREGISTERED;
			amio__reconcile(p, e, slot);
		} else if (amio__entry_live(p, e) && ck_pr_load_32(&ch->raised)) {
			amio__notify(p, e, AMIO_CHANNEL, 0);
		}
	}
}

bool amio__channel_stale(amio_poller *p, uint64_t id)
{
	amio_channel *ch = amio__registry_obj(&p->reg, id);

	/* The handle outlives amio_channel_free until the poller is freed. A
	 * drain after the notification was made withdrew it (raised 0), as
	 * it does before it is made. */
	return ch && (ck_pr_load_32(&ch->closed) || !ck_pr_load_32(&ch->raised));
}

void amio__channels_shutdown(amio_poller *p)
{
	amio_channel *ch;

	/* After p->shutdown is stored: a sender about to sleep either sees it
	 * or finds space_seq moved and does not sleep. */
	ck_pr_fence_memory();
	for (ch = ck_pr_load_ptr(&p->channels); ch; ch = ch->next_all)
		amio__futex_bump(&ch->space_seq);
	/* Then every counted sender leaves (those just woken among them):
	 * nothing touches the ring or p after the free went on. */
	for (ch = ck_pr_load_ptr(&p->channels); ch; ch = ch->next_all)
		wait_senders(ch);
}

void amio__channels_free_all(amio_poller *p)
{
	amio_channel *ch = p->channels, *next;

	for (; ch; ch = next) {
		next = ch->next_all;
		free(ch->slots);
		free(ch);
	}
	p->channels = NULL;
}
