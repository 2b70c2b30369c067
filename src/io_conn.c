/*
 * Connections on the poll thread: what an fd's operations do together.
 * amio_close ends them all, then closes; a recv pauses while its fd has
 * more than its high-water mark of bytes queued to send; an idle recv and
 * a send that takes too long end with -ETIME. Settings come from the
 * starting registrar's amio_conn_config, copied into each operation, so
 * none of this costs a command per request: the poll thread keeps the
 * idle clock itself and checks it only when its heap key comes due.
 */
#include <errno.h>

#include "internal.h"

static struct amio__io *io_of(amio_poller *p, uint32_t slot)
{
	return &p->reg.ios[slot];
}

/* ---- Flow control ------------------------------------------------------------ */

/* A recv paused for why (AMIO__IO_FLOW: flow control; AMIO__IO_HELD:
 * amio_recv_pause): its io_uring request is cancelled (the -ECANCELED is
 * not reported; epoll's is dropped at once) and armed again once no reason
 * holds it, with the same id and timers. */
static void pause_recv(amio_poller *p, uint32_t slot, uint32_t why)
{
	struct amio__entry *e = &p->reg.entries[slot];

	io_of(p, slot)->state |= why;
	if (e->flags & AMIO__E_ARMED)
		(void)amio__io_cancel_request(p, e, slot);
}

static void resume_recv(amio_poller *p, uint32_t slot, uint32_t why)
{
	struct amio__io *io = io_of(p, slot);

	io->state &= ~why;
	if (io->idle_ms)
		io->last_ns = amio__now_ns(); /* paused time is not idle time */
	amio__io_reconcile(p, &p->reg.entries[slot], slot);
}

/* Pause the fd's recvs whose high-water mark its queued bytes passed. */
static void flow_high(amio_poller *p, int fd)
{
	uint64_t queued = p->fdq[fd].queued;

	for (uint32_t s = p->fdq[fd].ops; s; s = io_of(p, s)->next_fd_op) {
		struct amio__io *io = io_of(p, s);

		if (io->type == AMIO__IO_RECV && !(io->state & AMIO__IO_FLOW) &&
		    queued > io->high_water)
			pause_recv(p, s, AMIO__IO_FLOW);
	}
}

static void flow_low(amio_poller *p, int fd)
{
	uint64_t queued = p->fdq[fd].queued;

	for (uint32_t s = p->fdq[fd].ops, next; s; s = next) {
		struct amio__io *io = io_of(p, s);

		next = io->next_fd_op;
		if ((io->state & AMIO__IO_FLOW) && queued <= io->low_water)
			resume_recv(p, s, AMIO__IO_FLOW);
	}
}

/* As flow control pauses, by the program's word: same id, timers kept. An
 * operation that is no recv, or one ending, is left alone. */
void amio__conn_hold(amio_poller *p, uint32_t slot, bool hold)
{
	struct amio__io *io = io_of(p, slot);

	if (io->type != AMIO__IO_RECV || (io->state & (AMIO__IO_ENDING | AMIO__IO_ENDED)))
		return;
	if (hold)
		pause_recv(p, slot, AMIO__IO_HELD);
	else if (io->state & AMIO__IO_HELD)
		resume_recv(p, slot, AMIO__IO_HELD);
}

void amio__conn_sent(amio_poller *p, int fd, uint64_t bytes)
{
	p->fdq[fd].queued -= bytes;
	if (!p->fdq[fd].ops)
		return;
	flow_low(p, fd);
	if (p->fdq[fd].queued)
		return;
	/* The last send is out: idle time counts from now, not from the
	 * idle check that last saw sends queued. */
	for (uint32_t s = p->fdq[fd].ops; s; s = io_of(p, s)->next_fd_op)
		if (io_of(p, s)->type == AMIO__IO_RECV && io_of(p, s)->idle_ms)
			io_of(p, s)->last_ns = amio__now_ns();
}

/* ---- Starting ---------------------------------------------------------------- */

/* A close without AMIO_CLOSE_GRACEFUL: every send and shutdown queued
 * before it ends with -ECANCELED (the one in flight once the kernel lets
 * go), in order. */
static void abort_queue(amio_poller *p, int fd, uint32_t close_slot)
{
	for (uint32_t s = p->fdq[fd].first; s && s != close_slot; s = io_of(p, s)->next_send)
		amio__io_begin_end(io_of(p, s), -ECANCELED);
}

static void start_timer(amio_poller *p, uint32_t slot, uint32_t ms)
{
	struct amio__io *io = io_of(p, slot);

	io->last_ns = amio__now_ns();
	io->timer_ns = io->last_ns + (int64_t)ms * 1000000;
	amio__dl_update(p, slot);
}

/* Put a new operation on its fd's queue or list. -EBADF: an amio_close of
 * the fd is under way; nothing more runs on it. */
int amio__conn_start(amio_poller *p, uint32_t slot, int fd)
{
	struct amio__fdq *q = &p->fdq[fd];
	struct amio__io *io = io_of(p, slot);

	if (q->closing)
		return -EBADF;
	switch (io->type) {
	case AMIO__IO_SEND:
		q->queued += io->total;
		amio__fd_queue(p, slot, fd);
		if (io->send_timeout_ms)
			start_timer(p, slot, io->send_timeout_ms);
		if (q->ops)
			flow_high(p, fd);
		break;
	case AMIO__IO_CLOSE:
		q->closing = slot;
		amio__fd_queue(p, slot, fd);
		if (!(io->flags & AMIO_CLOSE_GRACEFUL)) {
			abort_queue(p, fd, slot);
			amio__conn_advance(p, fd);
		}
		break;
	case AMIO__IO_SHUTDOWN:
		amio__fd_queue(p, slot, fd);
		break;
	default: /* recv, accept, connect, pread, pwrite: ended by a close */
		amio__fd_link(p, slot, fd);
		if (io->type == AMIO__IO_RECV && io->idle_ms)
			start_timer(p, slot, io->idle_ms);
		if (io->type == AMIO__IO_RECV && q->queued > io->high_water)
			io->state |= AMIO__IO_FLOW;
		break;
	}
	return 0;
}

/* ---- The queue moves on -------------------------------------------------------- */

/* The head of fd's queue ended: reconcile the new heads until one stays
 * (in flight, or waiting). A loop, not a recursion through end(): a close
 * that aborts thousands of queued sends must not take as many frames. */
void amio__conn_advance(amio_poller *p, int fd)
{
	struct amio__fdq *q = &p->fdq[fd];
	uint32_t s;

	if (q->advancing)
		return; /* the loop below us goes on */
	q->advancing = 1;
	while ((s = q->first)) {
		amio__io_reconcile(p, &p->reg.entries[s], s);
		if (q->first == s)
			break;
	}
	q->advancing = 0;
}

/* The close at the head of fd's queue may go once the fd's recvs and
 * accepts have ended; until then it asks them to end (-ECANCELED), through
 * the pending list: ending them here would re-enter the close's own
 * reconcile. The last one's end moves the queue on. */
bool amio__conn_close_ready(amio_poller *p, int fd)
{
	for (uint32_t s = p->fdq[fd].ops; s; s = io_of(p, s)->next_fd_op) {
		struct amio__io *io = io_of(p, s);

		if (io->state & (AMIO__IO_ENDING | AMIO__IO_ENDED))
			continue;
		/* As amio_cancel would: the next iteration ends it. */
		p->reg.entries[s].flags |= AMIO__E_DEREGISTERED;
		amio__push_pending(p, &p->reg.entries[s]);
	}
	return p->fdq[fd].ops == 0;
}

/* ---- Timers --------------------------------------------------------------------- */

/* A recv's idle check, a send's timeout. The idle clock is last_ns, set
 * by every received buffer: the key moves only when it comes due. */
void amio__conn_timer(amio_poller *p, uint32_t slot)
{
	struct amio__io *io = io_of(p, slot);
	int64_t now = amio__now_ns(), due;

	if (io->type == AMIO__IO_RECV) {
		/* Paused (flow control, amio_recv_pause), or sending (a long
		 * response: the send timeout watches that): not idle. */
		if ((io->state & (AMIO__IO_FLOW | AMIO__IO_HELD)) ||
		    p->fdq[p->reg.entries[slot].fd].queued)
			io->last_ns = now;
		due = io->last_ns + (int64_t)io->idle_ms * 1000000;
		if (due > now) {
			io->timer_ns = due;
			amio__dl_update(p, slot);
			return;
		}
	} else {
		/* The send, and every send queued behind it on the fd: the
		 * bytes on the wire are cut short, the stream is broken. */
		for (uint32_t s = io->next_send; s; s = io_of(p, s)->next_send)
			if (io_of(p, s)->type == AMIO__IO_SEND)
				amio__io_begin_end(io_of(p, s), -ETIME);
	}
	io->timer_ns = 0;
	amio__dl_update(p, slot);
	amio__io_begin_end(io, -ETIME);
	amio__io_reconcile(p, &p->reg.entries[slot], slot);
}
