/*
 * The epoll backend: the same requests as io_uring's, for where io_uring is
 * blocked (Docker >= 25 and Podman seccomp profiles, kernel.io_uring_disabled,
 * gVisor). Polls are epoll registrations, timers a deadline heap that drives
 * epoll_wait's timeout (as libuv and libev do), the poller's doorbell an
 * eventfd in the set and inbox waiters a futex on their doorbell word.
 *
 * Every registration is made on a dup of the user's fd, owned here until
 * its slot is released: epoll keys registrations on (file, fd number), and
 * the poll thread applies a deregister after amio_deregister returned, when
 * the user may have closed the fd and the number may name another socket
 * already (epoll_ctl on it would change that socket's registration). The
 * dup cannot be reused while we hold it; as with io_uring's poll (which
 * holds a file reference), the peer sees FIN once the poll thread applied
 * the deregister.
 *
 * Registrations reach epoll_ctl from the poll thread, through the same
 * command queues as on io_uring, not straight from the registrar's thread as
 * Amy does. The direct way was not kept, so not measured: the poll thread
 * still has to re-arm LEVEL and ONESHOT registrations (EPOLL_CTL_MOD), and
 * a re-arm racing a deregister, close and reuse of the fd number on another
 * thread would change another socket's registration; it would also make the
 * order of commands depend on the backend.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "backend_epoll_io.h"
#include "fault.h"

struct amio__epoll_timer {
	int64_t deadline_ns;
	uint32_t slot, armgen;
};

/* ---- Timers: a binary min-heap of deadlines ------------------------------ */

static void heap_set(struct amio__epoll *ep, uint32_t i, struct amio__epoll_timer t)
{
	ep->heap[i] = t;
	ep->slots[t.slot].heap1 = i + 1;
}

static void heap_up(struct amio__epoll *ep, uint32_t i)
{
	struct amio__epoll_timer t = ep->heap[i];

	while (i > 0 && ep->heap[(i - 1) / 2].deadline_ns > t.deadline_ns) {
		heap_set(ep, i, ep->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	heap_set(ep, i, t);
}

static void heap_down(struct amio__epoll *ep, uint32_t i)
{
	struct amio__epoll_timer t = ep->heap[i];

	for (;;) {
		uint32_t c = 2 * i + 1;

		if (c >= ep->heap_n)
			break;
		if (c + 1 < ep->heap_n && ep->heap[c + 1].deadline_ns < ep->heap[c].deadline_ns)
			c++;
		if (ep->heap[c].deadline_ns >= t.deadline_ns)
			break;
		heap_set(ep, i, ep->heap[c]);
		i = c;
	}
	heap_set(ep, i, t);
}

static void heap_remove(struct amio__epoll *ep, uint32_t slot)
{
	uint32_t i = ep->slots[slot].heap1 - 1, moved;

	ep->slots[slot].heap1 = 0;
	if (--ep->heap_n == i)
		return;
	moved = ep->heap[ep->heap_n].slot;
	heap_set(ep, i, ep->heap[ep->heap_n]);
	heap_up(ep, i);
	heap_down(ep, ep->slots[moved].heap1 - 1);
}

/* ---- Setup --------------------------------------------------------------- */

static int ep_init(amio_poller *p, const struct amio_poller_config *cfg)
{
	struct amio__epoll *ep = &p->be.ep;
	struct epoll_event bell = {.events = EPOLLIN, .data.u64 = AMIO__EP_BELL};
	size_t n = (size_t)cfg->max_registrations + 1;

	ep->epfd = epoll_create1(EPOLL_CLOEXEC);
	ep->bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ep->slots_len = n * sizeof(*ep->slots);
	ep->heap_len = n * sizeof(*ep->heap);
	ep->slots = amio__reserve(ep->slots_len);
	ep->heap = amio__reserve(ep->heap_len);
	if (ep->epfd < 0 || ep->bell < 0 || !ep->slots || !ep->heap ||
	    epoll_ctl(ep->epfd, EPOLL_CTL_ADD, ep->bell, &bell) < 0) {
		int rc = ep->epfd < 0 || ep->bell < 0 ? -errno : -ENOMEM;

		p->be.ops->destroy(p);
		return rc;
	}
	return 0;
}

static void ep_destroy(amio_poller *p)
{
	struct amio__epoll *ep = &p->be.ep;

	amio__ep_files_destroy(p); /* its threads write to the bell */
	if (ep->slots) {
		uint64_t top = ck_pr_load_64(&p->reg.fresh);

		for (uint64_t s = 1; s < top && s * sizeof(*ep->slots) < ep->slots_len; s++)
			if (ep->slots[s].fd1)
				close(ep->slots[s].fd1 - 1);
		munmap(ep->slots, ep->slots_len);
	}
	if (ep->heap)
		munmap(ep->heap, ep->heap_len);
	if (ep->epfd >= 0)
		close(ep->epfd);
	if (ep->bell >= 0)
		close(ep->bell);
	ep->slots = NULL;
	ep->heap = NULL;
	ep->epfd = ep->bell = -1;
}

static int ep_enable(amio_poller *p)
{
	(void)p;
	return 0;
}

/* ---- Requests ------------------------------------------------------------ */

static int arm_timer(struct amio__epoll *ep, struct amio__entry *e, uint32_t slot)
{
	/* Always the absolute deadline: an interval's next one is set by the
	 * poll loop after each tick (next_tick), as io_uring's fallback does. */
	ep->heap[ep->heap_n] = (struct amio__epoll_timer){e->deadline_ns, slot, e->armgen + 1};
	heap_up(ep, ep->heap_n++);
	return 0;
}

static int arm_poll(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__epoll *ep = &p->be.ep;
	struct amio__epoll_slot *st = &ep->slots[slot];
	struct epoll_event ev = {.events = 0};
	bool oneshot = e->events & (AMIO_LEVEL | AMIO_ONESHOT);

	if (!st->fd1) {
		int d = fcntl(e->fd, F_DUPFD_CLOEXEC, 0);

		if (d < 0)
			return -errno;
		st->fd1 = d + 1;
	}
	if (e->events & AMIO_READ)
		ev.events |= EPOLLIN | EPOLLRDHUP;
	if (e->events & AMIO_WRITE)
		ev.events |= EPOLLOUT;
	/* LEVEL is emulated as on io_uring (a one-shot re-armed when the
	 * consumer waits again): native level would report on every
	 * epoll_wait, once per loop iteration, not per wait of the consumer. */
	ev.events |= oneshot ? EPOLLONESHOT : EPOLLET;
	ev.data.u64 = (uint64_t)(e->armgen + 1) << 32 | (oneshot ? AMIO__EP_ONESHOT : 0) | slot;
	/* Readiness present now is reported by the next epoll_wait. A
	 * one-shot that fired stays in the set, disabled: MOD re-enables it. */
	AMIO__STAT_ADD(p, sqes, 1); /* a request made: epoll_ctl counts as an SQE */
	if (epoll_ctl(ep->epfd, st->in_set ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, st->fd1 - 1, &ev) < 0)
		return -errno; /* EPERM: a regular file or directory, as documented */
	st->in_set = true;
	return 0;
}

static int ep_arm(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__epoll *ep = &p->be.ep;
	int rc;

	/* The fault seam's "SQ full" (src/fault.h): the request cannot be made. */
	if (amio__fault(AMIO__FAULT_SQE))
		return -EBUSY;
	if (e->kind == AMIO__KIND_IO)
		return amio__ep_arm_io(p, e, slot);
	rc = e->kind == AMIO__KIND_TIMER ? arm_timer(ep, e, slot) : arm_poll(p, e, slot);
	if (rc < 0)
		return rc;
	e->armgen++;
	e->inflight++;
	e->flags |= AMIO__E_ARMED;
	return 0;
}

/* Removals are synchronous: nothing to retry. */
static int ep_remove(amio_poller *p, struct amio__entry *e, uint32_t slot, uint32_t armgen)
{
	(void)p;
	(void)e;
	(void)slot;
	(void)armgen;
	return 0;
}

/* Take the entry's request out now: out of the set or the heap, and out of
 * the events fetched but not reaped (a one-shot's would be a second final
 * completion). No final completion comes: inflight drops here. */
static int ep_disarm(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__epoll *ep = &p->be.ep;
	struct amio__epoll_slot *st = &ep->slots[slot];

	if (st->heap1)
		heap_remove(ep, slot);
	if (st->in_set) {
		AMIO__STAT_ADD(p, sqes, 1);
		(void)epoll_ctl(ep->epfd, EPOLL_CTL_DEL, st->fd1 - 1, NULL);
		st->in_set = false;
	}
	for (unsigned i = ep->ev_next; i < ep->ev_n; i++)
		if (ep->ev[i].data.u64 != AMIO__EP_BELL && ep->ev[i].data.u64 != AMIO__EP_DROPPED &&
		    (uint32_t)(ep->ev[i].data.u64 & AMIO__SLOT_MASK) == slot)
			ep->ev[i].data.u64 = AMIO__EP_DROPPED;
	e->armgen++;
	e->flags &= ~AMIO__E_ARMED;
	e->inflight--;
	return 0;
}

/* Buffer rings need no registration: the poll thread reads them itself. */
static int ep_pool_add(amio_poller *p, struct amio_pool *pool)
{
	(void)p;
	(void)pool;
	return 0;
}

static void ep_pool_del(amio_poller *p, struct amio_pool *pool)
{
	(void)p;
	(void)pool;
}

static void ep_release(amio_poller *p, uint32_t slot)
{
	struct amio__epoll *ep = &p->be.ep;
	struct amio__epoll_slot *st = &ep->slots[slot];

	amio__ep_io_release(p, slot);
	if (st->in_set)
		(void)epoll_ctl(ep->epfd, EPOLL_CTL_DEL, st->fd1 - 1, NULL);
	if (st->fd1)
		close(st->fd1 - 1);
	memset(st, 0, sizeof(*st));
}

/* ---- Waiting and reaping --------------------------------------------------- */

static int ep_enter(amio_poller *p, bool wait, int64_t timeout_ns)
{
	struct amio__epoll *ep = &p->be.ep;
	struct timespec ts, *tsp = NULL;
	unsigned room;
	int rc;

	if (ep->ev_next == ep->ev_n) {
		ep->ev_next = ep->ev_n = 0;
	} else if (ep->ev_next) {
		memmove(ep->ev, ep->ev + ep->ev_next, (ep->ev_n - ep->ev_next) * sizeof(ep->ev[0]));
		ep->ev_n -= ep->ev_next;
		ep->ev_next = 0;
	}
	room = AMIO__EPOLL_EVENTS - ep->ev_n;
	if (room == 0)
		return 0;
	if (!wait)
		timeout_ns = 0;
	else if (ep->heap_n) {
		/* The earliest timer bounds the sleep; never early (ns). */
		int64_t d = ep->heap[0].deadline_ns - amio__now_ns();

		if (d < 0)
			d = 0;
		if (timeout_ns < 0 || d < timeout_ns)
			timeout_ns = d;
	}
	if (timeout_ns >= 0) {
		ts.tv_sec = timeout_ns / 1000000000;
		ts.tv_nsec = timeout_ns % 1000000000;
		tsp = &ts;
	}
	AMIO__STAT_ADD(p, enters, 1);
	rc = amio__fault(AMIO__FAULT_ENTER);
	if (rc < 0)
		return rc; /* as the kernel fails it: no event taken */
	rc = epoll_pwait2(ep->epfd, ep->ev + ep->ev_n, (int)room, tsp, NULL);
	if (rc < 0)
		return -errno;
	ep->ev_n += (unsigned)rc;
	return 0;
}

static int ep_submit(amio_poller *p)
{
	(void)p;
	return 0;
}

static bool ep_ready(amio_poller *p)
{
	struct amio__epoll *ep = &p->be.ep;

	return ep->ev_next < ep->ev_n || amio__ep_io_pending(p) ||
	       (ep->heap_n && ep->heap[0].deadline_ns <= amio__now_ns());
}

static bool ep_sq_pending(amio_poller *p)
{
	(void)p;
	return false;
}

static void ep_begin_wait(amio_poller *p)
{
	(void)p;
}

/* epoll_ctl refuses what it cannot poll at arm time (EPERM). */
static int ep_pollable(amio_poller *p, int fd)
{
	(void)p;
	(void)fd;
	return 0;
}

static unsigned ep_reap(amio_poller *p, struct amio__completion *out, unsigned max)
{
	struct amio__epoll *ep = &p->be.ep;
	unsigned n = 0, seen = 0;
	int64_t now = ep->heap_n ? amio__now_ns() : 0;

	n = amio__ep_io_work(p, out, max);
	while (n < max && ep->heap_n && ep->heap[0].deadline_ns <= now) {
		struct amio__epoll_timer t = ep->heap[0];

		heap_remove(ep, t.slot);
		out[n++] = (struct amio__completion){t.slot,        t.armgen, -ETIME,
		                                     AMIO__C_TIMER, false,    AMIO__NO_BID};
	}
	seen = n;
	while (n < max && ep->ev_next < ep->ev_n) {
		struct epoll_event *ev = &ep->ev[ep->ev_next++];
		uint64_t d = ev->data.u64;
		uint64_t v;

		seen++;
		if (d == AMIO__EP_BELL) {
			AMIO__STAT_ADD(p, wakeups_received, 1);
			(void)!read(ep->bell, &v, sizeof(v));
			continue;
		}
		if (d == AMIO__EP_DROPPED)
			continue;
		if (p->reg.entries[d & AMIO__SLOT_MASK].kind == AMIO__KIND_IO) {
			n += amio__ep_io_event(p, (uint32_t)(d & AMIO__SLOT_MASK),
			                       (uint32_t)(d >> 32), out + n, max - n);
			continue;
		}
		/* EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLHUP and EPOLLERR have
		 * the values of their POLL* namesakes. */
		out[n++] = (struct amio__completion){(uint32_t)(d & AMIO__SLOT_MASK),
		                                     (uint32_t)(d >> 32),
		                                     (int32_t)ev->events,
		                                     AMIO__C_POLL,
		                                     !(d & AMIO__EP_ONESHOT),
		                                     AMIO__NO_BID};
	}
	AMIO__STAT_ADD(p, cqes, seen);
	return n;
}

/* ---- Wakeups ---------------------------------------------------------------- */

static int bump(int efd)
{
	uint64_t one = 1;

	/* EAGAIN: the counter is full, so a wakeup is pending anyway. */
	return write(efd, &one, sizeof(one)) < 0 && errno != EAGAIN ? -errno : 0;
}

static int ep_wake_poller(amio_poller *p, struct amio__waiter *from)
{
	(void)from;
	ck_pr_faa_64(&p->wakeups_sent, 1);
	return bump(p->be.ep.bell);
}

/* Inbox waiters sleep on a futex on their doorbell word: one syscall per
 * sleep and one per wake, with a timeout in ns, where an eventfd costs the
 * sleeper a poll and a read (measured: 7.0 vs 6.0 syscalls per request,
 * bench latency row). The waker moved the word SLEEPING -> NOTIFIED first,
 * so a waiter not yet in FUTEX_WAIT does not sleep (the value changed). */
static int ep_wake_waiter(amio_poller *p, struct amio__waiter *w)
{
	(void)p;
	if (w->word)
		syscall(SYS_futex, w->word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	return 0;
}

/* amio_poller_free: a waiter asleep now must see -ESHUTDOWN; one about to
 * sleep checks the shutdown flag stored before this (registrar.c). */
static int ep_wake_waiter_now(amio_poller *p, struct amio__waiter *w)
{
	if (!w->word)
		return 0;
	(void)ck_pr_cas_32(w->word, AMIO__SLEEPING, AMIO__NOTIFIED);
	return ep_wake_waiter(p, w);
}

static int ep_waiter_init(amio_poller *p, struct amio__waiter *w, bool inbox, uint32_t *doorbell)
{
	(void)p;
	memset(w, 0, sizeof(*w));
	w->ops = &amio__epoll_ops;
	w->word = inbox ? doorbell : NULL;
	return 0;
}

static void ep_waiter_destroy(struct amio__waiter *w)
{
	w->word = NULL;
}

static int ep_waiter_wait(struct amio__waiter *w, int64_t timeout_ns)
{
	struct timespec ts = {timeout_ns / 1000000000, timeout_ns % 1000000000};

	if (syscall(SYS_futex, w->word, FUTEX_WAIT_PRIVATE, AMIO__SLEEPING,
	            timeout_ns < 0 ? NULL : &ts, NULL, 0) < 0) {
		if (errno == ETIMEDOUT)
			return -ETIME;
		if (errno == EINTR)
			return -EINTR;
	}
	return 0; /* woken, or the word was no longer SLEEPING (EAGAIN) */
}

const struct amio__backend_ops amio__epoll_ops = {
    .name = "epoll",
    .enter_to_peek = true,
    .init = ep_init,
    .destroy = ep_destroy,
    .enable = ep_enable,
    .arm = ep_arm,
    .remove = ep_remove,
    .disarm = ep_disarm,
    .release = ep_release,
    .cancel_io = amio__ep_cancel_io,
    .pool_add = ep_pool_add,
    .pool_del = ep_pool_del,
    .wake_waiter = ep_wake_waiter,
    .enter = ep_enter,
    .submit = ep_submit,
    .ready = ep_ready,
    .sq_pending = ep_sq_pending,
    .begin_wait = ep_begin_wait,
    .pollable = ep_pollable,
    .reap = ep_reap,
    .wake_poller = ep_wake_poller,
    .wake_waiter_now = ep_wake_waiter_now,
    .waiter_init = ep_waiter_init,
    .waiter_destroy = ep_waiter_destroy,
    .waiter_wait = ep_waiter_wait,
};
