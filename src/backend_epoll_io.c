/*
 * Operations on the epoll backend: the poll thread makes the calls io_uring
 * would make (accept4, recv into a pool buffer, sendmsg) when epoll says the
 * socket is ready, and turns each result into the completion record io_uring
 * would post, so the poll loop (io_poll.c) cannot tell the backends apart.
 *
 * - accept and recv: an edge-triggered registration (on the slot's dup, as
 *   every registration here); an edge is followed until EAGAIN, as a
 *   multishot request would, a bounded number of calls per reap (the rest
 *   waits on the work list, so one busy socket cannot starve the others).
 *   recv takes buffers from the pool's provided buffer ring as the kernel
 *   would: the ring's head is ours (pool->ep_head); an empty ring ends the
 *   request with -ENOBUFS, as IORING_RECV_MULTISHOT does.
 * - send: tried at once when armed (most sends go out right away: no
 *   registration at all); only a full socket buffer (EAGAIN) waits for
 *   EPOLLOUT, one-shot.
 * - connect: connect(2) at once; EINPROGRESS waits for EPOLLOUT, one-shot,
 *   then connect(2) again says how it went, as io_uring's connect does.
 * - pread, pwrite: handed to the file threads (backend_epoll_file.c).
 */
#include <errno.h>
#include <sys/socket.h>

#include "internal.h"
#include "backend_epoll_io.h"

#define CALLS_PER_REAP 16 /* accepts or recvs per socket per reap */

static void work_push(struct amio__epoll *ep, uint32_t slot)
{
	struct amio__epoll_slot *st = &ep->slots[slot];

	if (st->queued)
		return;
	st->queued = true;
	st->next_work = 0;
	if (ep->work_tail)
		ep->slots[ep->work_tail].next_work = slot;
	else
		ep->work_head = slot;
	ep->work_tail = slot;
}

static void work_unlink(struct amio__epoll *ep, uint32_t slot)
{
	uint32_t prev = 0, s = ep->work_head;

	if (!ep->slots[slot].queued)
		return;
	while (s != slot) {
		prev = s;
		s = ep->slots[s].next_work;
	}
	if (prev)
		ep->slots[prev].next_work = ep->slots[slot].next_work;
	else
		ep->work_head = ep->slots[slot].next_work;
	if (ep->work_tail == slot)
		ep->work_tail = prev;
	ep->slots[slot].queued = false;
	ep->slots[slot].imm = false;
}

/* gen: the armgen the request's events carry (what e->armgen is once the
 * arm is counted: +1 at arm time, as is at a re-watch), checked when an
 * event is reaped: a slot may be released and reused while events of its
 * old request wait in ev[] (a recv that ended at EOF, reused by a pread). */
static int watch_gen(amio_poller *p, struct amio__entry *e, uint32_t slot, uint32_t events,
                     uint32_t gen)
{
	struct amio__epoll *ep = &p->be.ep;
	struct amio__epoll_slot *st = &ep->slots[slot];
	struct epoll_event ev = {.events = events};

	if (!st->fd1) {
		int d = fcntl(e->fd, F_DUPFD_CLOEXEC, 0);

		if (d < 0)
			return -errno;
		st->fd1 = d + 1;
	}
	ev.data.u64 = (uint64_t)gen << 32 | slot;
	AMIO__STAT_ADD(p, sqes, 1);
	if (epoll_ctl(ep->epfd, st->in_set ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, st->fd1 - 1, &ev) < 0)
		return -errno;
	st->in_set = true;
	return 0;
}

/* At arm time: the arm bumps armgen after. */
static int watch(amio_poller *p, struct amio__entry *e, uint32_t slot, uint32_t events)
{
	return watch_gen(p, e, slot, events, e->armgen + 1);
}

static void unwatch(amio_poller *p, uint32_t slot)
{
	struct amio__epoll_slot *st = &p->be.ep.slots[slot];

	if (!st->in_set)
		return;
	AMIO__STAT_ADD(p, sqes, 1);
	(void)epoll_ctl(p->be.ep.epfd, EPOLL_CTL_DEL, st->fd1 - 1, NULL);
	st->in_set = false;
}

static ssize_t send_now(struct amio__io *io, int fd)
{
	struct msghdr m = {.msg_iov = &io->iov[io->first], .msg_iovlen = io->niov - io->first};
	ssize_t n;

	do
		n = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

/* connect(2) of the op's address: 0 or -errno. */
static int32_t connect_call(const struct amio__io *io, int fd)
{
	return connect(fd, (const struct sockaddr *)&io->addr, io->addrlen) < 0 ? -errno : 0;
}

/* connect(2) now: 0 if it waits for EPOLLOUT, else its result as imm. */
static int connect_now(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__epoll_slot *st = &p->be.ep.slots[slot];
	int32_t rc = connect_call(&p->reg.ios[slot], e->fd);

	/* EINTR: the connect goes on in the background, as EINPROGRESS. */
	if (rc == -EINPROGRESS || rc == -EINTR)
		return watch(p, e, slot, EPOLLOUT | EPOLLONESHOT);
	st->imm = true;
	st->imm_res = rc;
	work_push(&p->be.ep, slot);
	return 0;
}

/* EPOLLOUT: the handshake is over. connect(2) again, as io_uring's
 * connect does after its poll: 0 (and the socket SS_CONNECTED, so a later
 * connect says -EISCONN on both backends) or the error it ended with. */
static int32_t connect_result(amio_poller *p, uint32_t slot, int fd)
{
	int32_t rc;

	do
		rc = connect_call(&p->reg.ios[slot], fd);
	while (rc == -EINTR);
	return rc;
}

int amio__ep_arm_io(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__io *io = &p->reg.ios[slot];
	struct amio__epoll_slot *st = &p->be.ep.slots[slot];
	int rc = 0;

	if (io->type == AMIO__IO_CONNECT) {
		rc = connect_now(p, e, slot);
	} else if (io->type == AMIO__IO_PREAD || io->type == AMIO__IO_PWRITE) {
		rc = amio__ep_file_submit(p, e, slot);
	} else if (io->type == AMIO__IO_SHUTDOWN || io->type == AMIO__IO_CLOSE) {
		/* One call, now, as io_uring makes it at submit. */
		int r = io->type == AMIO__IO_CLOSE ? close(e->fd) : shutdown(e->fd, SHUT_WR);

		st->imm = true;
		/* close(2)'s EINTR: Linux has released the fd all the same. */
		st->imm_res = r < 0 && !(errno == EINTR && io->type == AMIO__IO_CLOSE) ? -errno : 0;
		work_push(&p->be.ep, slot);
	} else if (io->type != AMIO__IO_SEND) {
		/* Readiness present now is reported by the next epoll_wait. A
		 * recv also makes one call at the next reap, as io_uring's
		 * does at submit: a socket that can never be readable (a
		 * listener, unconnected) ends it with the same -errno. */
		rc = watch(p, e, slot, EPOLLIN | EPOLLRDHUP | EPOLLET);
		/* EPERM: a file with no poll method (regular file, directory,
		 * /dev/null; ep_insert's file_can_poll). Every socket has one,
		 * so this is no socket: end as io_uring's recv does, which
		 * checks sock_from_file first, and as recv(2) would:
		 * -ENOTSOCK (a pipe or an eventfd gets it from recv_one). */
		if (rc == -EPERM)
			rc = -ENOTSOCK;
		if (rc == 0 && io->type == AMIO__IO_RECV)
			work_push(&p->be.ep, slot);
	} else {
		ssize_t n = send_now(io, e->fd);

		if (n == -EAGAIN) {
			rc = watch(p, e, slot, EPOLLOUT | EPOLLONESHOT);
		} else {
			st->imm = true;
			st->imm_res = (int32_t)n;
			work_push(&p->be.ep, slot);
		}
	}
	if (rc < 0)
		return rc;
	st->live = !st->imm;
	e->armgen++;
	e->inflight++;
	e->flags |= AMIO__E_ARMED;
	return 0;
}

int amio__ep_cancel_io(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__epoll *ep = &p->be.ep;

	if (!(e->flags & AMIO__E_ARMED))
		return 1; /* nothing in the kernel: nothing to drop */
	/* A send that went out at arm time: its result is the final one. */
	if (ep->slots[slot].imm)
		return 0;
	if (p->reg.ios[slot].type == AMIO__IO_PREAD || p->reg.ios[slot].type == AMIO__IO_PWRITE) {
		if (!amio__ep_file_cancel(p, slot))
			return 0; /* a thread makes the call: its result is the final one */
	}
	work_unlink(ep, slot);
	unwatch(p, slot);
	ep->slots[slot].live = false;
	for (unsigned i = ep->ev_next; i < ep->ev_n; i++)
		if (ep->ev[i].data.u64 < AMIO__EP_DROPPED &&
		    (uint32_t)(ep->ev[i].data.u64 & AMIO__SLOT_MASK) == slot)
			ep->ev[i].data.u64 = AMIO__EP_DROPPED;
	e->armgen++;
	e->flags &= ~AMIO__E_ARMED;
	e->inflight--;
	return 1;
}

static struct amio__completion rec(uint32_t slot, uint32_t armgen, int32_t res, bool more,
                                   uint16_t bid)
{
	return (struct amio__completion){slot, armgen, res, AMIO__C_IO, more, bid};
}

/* One call: 1 record made (0 if nothing to report: EAGAIN, a skipped
 * error); *stop when the request is over or the socket drained. */
static unsigned accept_one(int fd, uint32_t slot, uint32_t armgen, struct amio__completion *out,
                           bool *stop)
{
	int c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (c >= 0) {
		*out = rec(slot, armgen, c, true, AMIO__NO_BID);
		return 1;
	}
	if (errno == ECONNABORTED || errno == EINTR)
		return 0;
	*stop = true;
	if (errno == EAGAIN)
		return 0;
	*out = rec(slot, armgen, -errno, false, AMIO__NO_BID);
	return 1;
}

static unsigned recv_one(amio_pool *pool, int fd, uint32_t slot, uint32_t armgen,
                         struct amio__completion *out, bool *stop)
{
	uint16_t tail = io_uring_smp_load_acquire(&pool->br->tail);
	struct io_uring_buf *b;
	ssize_t n;

	*stop = true;
	if ((uint16_t)(tail - pool->ep_head) == 0) {
		*out = rec(slot, armgen, -ENOBUFS, false, AMIO__NO_BID);
		return 1;
	}
	b = &pool->br->bufs[pool->ep_head & pool->mask];
	n = recv(fd, (void *)(uintptr_t)b->addr, b->len, MSG_DONTWAIT);
	if (n > 0) {
		pool->ep_head++; /* the buffer is taken, as the kernel takes it */
		*stop = false;
		*out = rec(slot, armgen, (int32_t)n, true, b->bid);
		return 1;
	}
	if (n < 0 && errno == EINTR) {
		*stop = false;
		return 0;
	}
	if (n < 0 && errno == EAGAIN)
		return 0;
	*out = rec(slot, armgen, n == 0 ? 0 : -errno, false, AMIO__NO_BID);
	return 1;
}

/* Follow an edge of an accept or recv: up to CALLS_PER_REAP calls, within
 * max records. Returns the records made. */
static unsigned follow(amio_poller *p, uint32_t slot, struct amio__completion *out, unsigned max)
{
	struct amio__entry *e = &p->reg.entries[slot];
	struct amio__io *io = &p->reg.ios[slot];
	unsigned n = 0, calls = 0;
	bool stop = false;

	if (!p->be.ep.slots[slot].live)
		return 0; /* its final record is made (not yet reaped) */
	while (!stop && n < max && calls++ < CALLS_PER_REAP) {
		n += io->type == AMIO__IO_ACCEPT
		         ? accept_one(e->fd, slot, e->armgen, &out[n], &stop)
		         : recv_one(io->pool, e->fd, slot, e->armgen, &out[n], &stop);
		if (n && !out[n - 1].more) {
			/* Over, as the kernel ends a multishot: one final record,
			 * whatever else is queued for the slot. */
			p->be.ep.slots[slot].live = false;
			unwatch(p, slot);
		}
	}
	if (!stop)
		work_push(&p->be.ep, slot); /* more to take: the next reap */
	return n;
}

unsigned amio__ep_io_event(amio_poller *p, uint32_t slot, uint32_t gen,
                           struct amio__completion *out, unsigned max)
{
	struct amio__entry *e = &p->reg.entries[slot];
	struct amio__io *io = &p->reg.ios[slot];
	ssize_t n;

	if (gen != e->armgen)
		return 0; /* an event of the slot's earlier request */
	if (!p->be.ep.slots[slot].live || p->be.ep.slots[slot].queued)
		return 0; /* over, or already on the work list */
	if (io->type == AMIO__IO_CONNECT) {
		p->be.ep.slots[slot].live = false;
		out[0] = rec(slot, e->armgen, connect_result(p, slot, e->fd), false, AMIO__NO_BID);
		return 1;
	}
	if (io->type != AMIO__IO_SEND)
		return follow(p, slot, out, max);
	/* EPOLLOUT (one-shot): the socket has room now. */
	n = send_now(io, e->fd);
	if (n == -EAGAIN) {
		int rc = watch_gen(p, e, slot, EPOLLOUT | EPOLLONESHOT, e->armgen);

		if (rc == 0)
			return 0;
		n = rc;
	}
	p->be.ep.slots[slot].live = false;
	out[0] = rec(slot, e->armgen, (int32_t)n, false, AMIO__NO_BID);
	return 1;
}

unsigned amio__ep_io_work(amio_poller *p, struct amio__completion *out, unsigned max)
{
	struct amio__epoll *ep = &p->be.ep;
	uint32_t last = ep->work_tail;
	unsigned n = amio__ep_file_reap(p, out, max);

	/* One pass over what is queued now; follow() may queue again. */
	while (ep->work_head && n < max) {
		uint32_t slot = ep->work_head;
		struct amio__epoll_slot *st = &ep->slots[slot];
		bool imm = st->imm;
		int32_t res = st->imm_res;

		work_unlink(ep, slot);
		if (imm)
			out[n++] = rec(slot, p->reg.entries[slot].armgen, res, false, AMIO__NO_BID);
		else
			n += follow(p, slot, out + n, max - n);
		if (slot == last)
			break;
	}
	return n;
}

void amio__ep_io_release(amio_poller *p, uint32_t slot)
{
	work_unlink(&p->be.ep, slot);
}

bool amio__ep_io_pending(amio_poller *p)
{
	return p->be.ep.work_head != 0 || amio__ep_file_pending(p);
}
