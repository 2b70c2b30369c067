/*
 * The io_uring backend: ring setup with feature probing, poll SQEs, the one
 * io_uring_enter per loop iteration, the CQE reap loop and MSG_RING wakeups.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "fault.h"

/* user_data: tag << 56 | armgen << 24 | slot. The tag tells our own request
 * kinds apart from MSG_RING wakeups (liburing 2.3 has no FLAGS_PASS helper);
 * armgen makes a poll's user_data unique while it is in flight, so removing it
 * by user_data can never hit its successor. */
enum { TAG_POLL = 1, TAG_REMOVE = 2, TAG_WAKE = 3, TAG_MSG = 4, TAG_TIMER = 5, TAG_IO = 6 };

static inline uint64_t user_data(unsigned tag, uint32_t armgen, uint32_t slot)
{
	return (uint64_t)tag << 56 | (uint64_t)armgen << AMIO__SLOT_BITS | slot;
}

static int64_t ns_to_ts(int64_t ns, struct __kernel_timespec *ts)
{
	ts->tv_sec = ns / 1000000000;
	ts->tv_nsec = ns % 1000000000;
	return ns;
}

static void uring_destroy(amio_poller *p);
static int uring_submit(amio_poller *p);
static bool translate(amio_poller *p, const struct io_uring_cqe *cqe, struct amio__completion *c);

/* ---- Setup ------------------------------------------------------------- */

/* IORING_REGISTER_SEND_MSG_RING (6.13+): a wakeup without owning a ring.
 * Probed on a throwaway ring: the poller's own is still disabled. */
static bool probe_ringless_msg(void)
{
	struct io_uring target;
	struct io_uring_sqe sqe;
	bool ok;

	if (io_uring_queue_init(2, &target, 0) < 0)
		return false;
	memset(&sqe, 0, sizeof(sqe));
	io_uring_prep_msg_ring(&sqe, target.ring_fd, 0, user_data(TAG_WAKE, 0, 0), 0);
	ok = io_uring_register(-1, IORING_REGISTER_SEND_MSG_RING, &sqe, 1) >= 0;
	io_uring_queue_exit(&target);
	return ok;
}

/* IORING_TIMEOUT_MULTISHOT (6.4+): older kernels answer -EINVAL. Probed with
 * a 1 ns timeout that fires once (count 1) on a throwaway ring. */
static bool probe_multishot_timeout(void)
{
	struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 1};
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;
	bool ok = false;

	if (io_uring_queue_init(2, &ring, 0) < 0)
		return false;
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_timeout(sqe, &ts, 1, IORING_TIMEOUT_MULTISHOT);
	if (io_uring_submit_and_wait(&ring, 1) >= 0 && io_uring_peek_cqe(&ring, &cqe) == 0)
		ok = cqe->res != -EINVAL;
	io_uring_queue_exit(&ring);
	return ok;
}

/* Ring flags from best to plainest; -EINVAL moves to the next (older kernel).
 * R_DISABLED goes with SINGLE_ISSUER: the ring is enabled by the poll thread,
 * which the kernel then takes as its only submitter. */
static int setup_ring(struct amio__uring *be, unsigned sq, unsigned cq, bool allow_defer)
{
	static const unsigned tries[] = {
	    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED |
	        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
	    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_SUBMIT_ALL,
	    IORING_SETUP_SUBMIT_ALL,
	    0,
	};
	int rc = -EINVAL;

	for (size_t i = allow_defer ? 0 : 1; i < sizeof(tries) / sizeof(tries[0]); i++) {
		struct io_uring_params params;

		memset(&params, 0, sizeof(params));
		params.flags = tries[i] | IORING_SETUP_CQSIZE;
		params.cq_entries = cq;
		rc = io_uring_queue_init_params(sq, &be->ring, &params);
		if (rc == 0) {
			be->defer_taskrun = tries[i] & IORING_SETUP_DEFER_TASKRUN;
			/* Without NODROP an overflowing CQ loses completions. */
			if (!(params.features & IORING_FEAT_NODROP)) {
				io_uring_queue_exit(&be->ring);
				return -ENOSYS;
			}
			return 0;
		}
		if (rc != -EINVAL)
			return rc;
	}
	return rc;
}

/* Zero-copy sends, probed by opcode (IORING_OP_SEND_ZC, 6.0). */
static bool probe_send_zc(struct io_uring *ring)
{
	struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
	bool ok = probe && io_uring_opcode_supported(probe, IORING_OP_SEND_ZC) &&
	          io_uring_opcode_supported(probe, IORING_OP_SENDMSG_ZC);

	io_uring_free_probe(probe);
	return ok;
}

static int uring_init(amio_poller *p, const struct amio_poller_config *cfg)
{
	struct amio__uring *be = &p->be.u;
	int rc;

	memset(be, 0, sizeof(*be));
	rc = setup_ring(be, cfg->sq_entries, cfg->cq_entries,
	                !(cfg->flags & AMIO_POLLER_NO_DEFER_TASKRUN));
	if (rc < 0)
		return rc;
	be->ring_fd = be->ring.ring_fd;
	be->probe_fd = -1;
	be->ringless_msg = !(cfg->flags & AMIO_POLLER_NO_RINGLESS_MSG) && probe_ringless_msg();
	be->multishot_timeout =
	    !(cfg->flags & AMIO_POLLER_NO_MULTISHOT_TIMEOUT) && probe_multishot_timeout();
	be->send_zc = probe_send_zc(&be->ring);
	pthread_mutex_init(&be->stop_lock, NULL);
	if (!be->ringless_msg) {
		rc = io_uring_queue_init(4, &be->stop_ring, 0);
		if (rc < 0) {
			uring_destroy(p);
			return rc;
		}
		be->has_stop_ring = true;
	}
	return 0;
}

/* What the CQ shows, reaped as the poller goes: connections accepted that
 * nobody will see are closed. */
static void reap_shown_closing(amio_poller *p)
{
	struct io_uring_cqe *cqe;
	unsigned head, seen = 0;

	io_uring_for_each_cqe(&p->be.u.ring, head, cqe)
	{
		struct amio__completion c;

		seen++;
		if (translate(p, cqe, &c) && c.kind == AMIO__C_IO && c.res >= 0 &&
		    p->reg.entries[c.slot].kind == AMIO__KIND_IO &&
		    p->reg.ios[c.slot].type == AMIO__IO_ACCEPT)
			close(c.res);
	}
	io_uring_cq_advance(&p->be.u.ring, seen);
}

/* reap_shown_closing, and the CQEs the kernel keeps in its overflow list
 * (NODROP, once the CQ was full; a multishot accept that overflows ends
 * there with its last fd): an enter with GETEVENTS and nothing to submit
 * moves them into the CQ as room allows, then they are reaped in turn. Any
 * thread may do that, except on a DEFER_TASKRUN ring, which only its poll
 * thread may enter (-EEXIST, probed on 6.18; amio.h tells the caller). */
static void reap_closing(amio_poller *p)
{
	struct io_uring *ring = &p->be.u.ring;

	for (;;) {
		reap_shown_closing(p);
		if (!io_uring_cq_has_overflow(ring) || io_uring_get_events(ring) < 0 ||
		    !io_uring_cq_ready(ring))
			return; /* all reaped, not ours to flush, or nothing moved */
	}
}

/* Before the ring goes: cancel every operation and wait (1 s at most) for
 * their last CQEs, so no send reads, and no recv writes, a buffer after
 * amio_poller_free returns. Only the poll thread can submit to a
 * SINGLE_ISSUER ring; from another thread the ring's exit cancels them in
 * the background (amio.h says what that means for a caller). */
static void drain_io(amio_poller *p)
{
	struct amio__uring *be = &p->be.u;
	struct __kernel_timespec ts = {0, 100000000};
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe;
	int64_t end = amio__now_ns() + 1000000000;

	if (!be->io_inflight || !amio__is_poll_thread(p)) {
		reap_closing(p); /* what the CQ and its overflow list hold, at least */
		return;
	}
	sqe = io_uring_get_sqe(&be->ring);
	if (!sqe && io_uring_submit(&be->ring) >= 0)
		sqe = io_uring_get_sqe(&be->ring);
	if (!sqe) {
		reap_closing(p); /* no cancel: the ring's exit does it */
		return;
	}
	io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
	io_uring_sqe_set_data64(sqe, user_data(TAG_MSG, 0, 0));
	while (be->io_inflight && amio__now_ns() < end) {
		(void)io_uring_submit_and_wait_timeout(&be->ring, &cqe, 1, &ts, NULL);
		reap_closing(p);
	}
}

static void uring_destroy(amio_poller *p)
{
	struct amio__uring *be = &p->be.u;

	if (be->ring_fd > 0) {
		drain_io(p);
		io_uring_queue_exit(&be->ring);
	}
	if (be->has_stop_ring)
		io_uring_queue_exit(&be->stop_ring);
	if (be->probe_fd >= 0)
		close(be->probe_fd);
	be->probe_fd = -1;
	pthread_mutex_destroy(&be->stop_lock);
	be->ring_fd = -1;
}

static int uring_enable(amio_poller *p)
{
	int rc;

	if (!(p->be.u.ring.flags & IORING_SETUP_R_DISABLED))
		return 0;
	rc = amio__enable_rings(&p->be.u.ring);
	/* -EBADFD: already enabled (by this thread, earlier). */
	return rc == -EBADFD ? 0 : rc;
}

/* ---- Submission -------------------------------------------------------- */

/* An SQE, submitting what is queued when the SQ is full (never drop a
 * command: submit, then retry). NULL only if that submit failed. */
static struct io_uring_sqe *get_sqe(amio_poller *p)
{
	struct io_uring_sqe *sqe;

	if (amio__fault(AMIO__FAULT_SQE))
		return NULL;
	sqe = io_uring_get_sqe(&p->be.u.ring);
	if (!sqe) {
		if (uring_submit(p) < 0)
			return NULL;
		sqe = io_uring_get_sqe(&p->be.u.ring);
		if (!sqe)
			return NULL;
	}
	AMIO__STAT_ADD(p, sqes, 1);
	return sqe;
}

static int uring_submit(amio_poller *p)
{
	int rc = amio__fault(AMIO__FAULT_ENTER);

	AMIO__STAT_ADD(p, enters, 1);
	/* A failed submit leaves the SQEs in the SQ: the next enter takes them. */
	if (rc == 0)
		rc = io_uring_submit(&p->be.u.ring);
	return rc < 0 ? rc : 0;
}

static unsigned poll_mask(uint32_t events)
{
	unsigned mask = 0;

	if (events & AMIO_READ)
		mask |= POLLIN | POLLRDHUP;
	if (events & AMIO_WRITE)
		mask |= POLLOUT;
	return mask;
}

/* A timer: absolute CLOCK_MONOTONIC deadline (the caller's clock, so never
 * early however late the poller got the command), then, for intervals past
 * their first tick, one multishot timeout of the period where the kernel has
 * it. e->ts must outlive the SQE: the kernel reads it at submit time. */
static void prep_timer(amio_poller *p, struct io_uring_sqe *sqe, struct amio__entry *e)
{
	if ((e->flags & AMIO__E_TICKING) && p->be.u.multishot_timeout) {
		e->ts.tv_sec = e->period_ns / 1000000000;
		e->ts.tv_nsec = e->period_ns % 1000000000;
		io_uring_prep_timeout(sqe, &e->ts, 0, IORING_TIMEOUT_MULTISHOT);
	} else {
		e->ts.tv_sec = e->deadline_ns / 1000000000;
		e->ts.tv_nsec = e->deadline_ns % 1000000000;
		io_uring_prep_timeout(sqe, &e->ts, 0, IORING_TIMEOUT_ABS);
	}
}

/* An operation's request (reg.ios[slot]). Multishot accept (5.19) and
 * multishot recv with a provided buffer ring (6.0) post CQEs with
 * IORING_CQE_F_MORE while they stay armed; a send is one SQE for what is
 * left: send for one piece, sendmsg for several (the msghdr is read at
 * submit time, from reg.ios[slot], which outlives it). */
static void prep_io(amio_poller *p, struct io_uring_sqe *sqe, struct amio__entry *e, uint32_t slot)
{
	struct amio__io *io = &p->reg.ios[slot];
	bool zc = (io->flags & AMIO_SEND_ZC) && p->be.u.send_zc;
	struct iovec *v = &io->iov[io->first];

	switch (io->type) {
	case AMIO__IO_ACCEPT:
		io_uring_prep_multishot_accept(sqe, e->fd, NULL, NULL,
		                               SOCK_NONBLOCK | SOCK_CLOEXEC);
		break;
	case AMIO__IO_RECV:
		io_uring_prep_recv_multishot(sqe, e->fd, NULL, 0, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = io->pool->bgid;
		break;
	case AMIO__IO_SHUTDOWN: /* IORING_OP_SHUTDOWN, 5.11 */
		io_uring_prep_shutdown(sqe, e->fd, SHUT_WR);
		break;
	case AMIO__IO_CLOSE: /* IORING_OP_CLOSE, 5.6 */
		io_uring_prep_close(sqe, e->fd);
		break;
	case AMIO__IO_CONNECT: /* IORING_OP_CONNECT, 5.5: polls an EINPROGRESS itself */
		io_uring_prep_connect(sqe, e->fd, (struct sockaddr *)&io->addr, io->addrlen);
		break;
	case AMIO__IO_PREAD: /* IORING_OP_READ, 5.6 */
		io_uring_prep_read(sqe, e->fd, v->iov_base, (unsigned)v->iov_len, io->offset);
		break;
	case AMIO__IO_PWRITE:
		io_uring_prep_write(sqe, e->fd, v->iov_base, (unsigned)v->iov_len, io->offset);
		break;
	default:
		if (io->niov - io->first == 1) {
			if (zc)
				io_uring_prep_send_zc(sqe, e->fd, v->iov_base, v->iov_len,
				                      MSG_NOSIGNAL, 0);
			else
				io_uring_prep_send(sqe, e->fd, v->iov_base, v->iov_len,
				                   MSG_NOSIGNAL);
			break;
		}
		io->msg = (struct msghdr){.msg_iov = v, .msg_iovlen = io->niov - io->first};
		if (zc)
			io_uring_prep_sendmsg_zc(sqe, e->fd, &io->msg, MSG_NOSIGNAL);
		else
			io_uring_prep_sendmsg(sqe, e->fd, &io->msg, MSG_NOSIGNAL);
		break;
	}
	if (io->type == AMIO__IO_SEND && (io->state & AMIO__IO_POLL_FIRST))
		sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
}

static int uring_arm(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct io_uring_sqe *sqe = get_sqe(p);

	if (!sqe)
		return -EBUSY;
	if (e->kind == AMIO__KIND_IO) {
		prep_io(p, sqe, e, slot);
		p->be.u.io_inflight++;
		e->armgen++;
		io_uring_sqe_set_data64(sqe, user_data(TAG_IO, e->armgen, slot));
		e->inflight++;
		e->flags |= AMIO__E_ARMED;
		return 0;
	}
	if (e->kind == AMIO__KIND_TIMER) {
		prep_timer(p, sqe, e);
		e->armgen++;
		io_uring_sqe_set_data64(sqe, user_data(TAG_TIMER, e->armgen, slot));
		e->inflight++;
		e->flags |= AMIO__E_ARMED;
		return 0;
	}
	/* LEVEL and ONESHOT are one-shot polls: multishot with
	 * IORING_POLL_ADD_LEVEL is -EINVAL, so the poller emulates LEVEL by
	 * arming again on the next wait (which reports at once if still ready).
	 * ONESHOT's report is re-checked when reaped (oneshot_harvest). */
	if (e->events & (AMIO_LEVEL | AMIO_ONESHOT))
		io_uring_prep_poll_add(sqe, e->fd, poll_mask(e->events));
	else
		io_uring_prep_poll_multishot(sqe, e->fd, poll_mask(e->events));
	e->armgen++;
	io_uring_sqe_set_data64(sqe, user_data(TAG_POLL, e->armgen, slot));
	e->inflight++;
	e->flags |= AMIO__E_ARMED;
	return 0;
}

static int uring_remove(amio_poller *p, struct amio__entry *e, uint32_t slot, uint32_t armgen)
{
	struct io_uring_sqe *sqe = get_sqe(p);

	if (!sqe)
		return -EBUSY;
	if (e->kind == AMIO__KIND_TIMER)
		io_uring_prep_timeout_remove(sqe, user_data(TAG_TIMER, armgen, slot), 0);
	else
		io_uring_prep_poll_remove(sqe, user_data(TAG_POLL, armgen, slot));
	/* Success posts nothing; a failure names its target, so -EALREADY
	 * (the request was being completed right then) can be retried. */
	io_uring_sqe_set_data64(sqe, user_data(TAG_REMOVE, armgen, slot));
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	return 0;
}

static int uring_disarm(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	int rc = uring_remove(p, e, slot, e->armgen);

	if (rc < 0)
		return rc;
	/* The old request's final CQE (-ECANCELED) now carries a stale armgen:
	 * it only drops inflight and is never reported. */
	e->armgen++;
	e->flags &= ~AMIO__E_ARMED;
	return 0;
}

/* ASYNC_CANCEL by user_data: the request's final CQE still comes
 * (-ECANCELED, or what it finished with); success of the cancel itself posts
 * nothing, its failure (-ENOENT: it had just finished; -EALREADY: running
 * now, it will end by itself) carries no state. */
static int uring_cancel_io(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct io_uring_sqe *sqe = get_sqe(p);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_cancel64(sqe, user_data(TAG_IO, e->armgen, slot), 0);
	io_uring_sqe_set_data64(sqe, user_data(TAG_MSG, 0, 0));
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	return 0;
}

static int uring_pool_add(amio_poller *p, struct amio_pool *pool)
{
	struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)pool->br,
	                               .ring_entries = pool->count,
	                               .bgid = pool->bgid};

	return io_uring_register_buf_ring(&p->be.u.ring, &reg, 0);
}

static void uring_pool_del(amio_poller *p, struct amio_pool *pool)
{
	(void)io_uring_unregister_buf_ring(&p->be.u.ring, pool->bgid);
}

static int uring_wake_waiter(amio_poller *p, struct amio__waiter *w)
{
	struct io_uring_sqe *sqe = get_sqe(p);

	if (!sqe)
		return -EBUSY;
	io_uring_prep_msg_ring(sqe, w->ring.ring_fd, 0, user_data(TAG_WAKE, 0, 0), 0);
	io_uring_sqe_set_data64(sqe, user_data(TAG_MSG, 0, 0));
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	return 0;
}

/* The SQ ring's kernel flags (IORING_SQ_TASKRUN, IORING_SQ_CQ_OVERFLOW). */
static unsigned kflags(struct io_uring *ring)
{
	unsigned f = IO_URING_READ_ONCE(*ring->sq.kflags);

	return amio__fault(AMIO__FAULT_TASKRUN) ? f | IORING_SQ_TASKRUN : f;
}

static int uring_enter(amio_poller *p, bool wait, int64_t timeout_ns)
{
	struct io_uring *ring = &p->be.u.ring;
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts;
	int rc;

	/* Each branch is exactly one io_uring_enter: the wait variants are
	 * only called with an empty CQ, so liburing never skips the syscall. */
	AMIO__STAT_ADD(p, enters, 1);
	rc = amio__fault(AMIO__FAULT_ENTER);
	if (rc < 0)
		return rc; /* as the kernel fails it: nothing taken from the SQ */
	if (!wait) {
		bool taskrun = kflags(ring) & IORING_SQ_TASKRUN;

		rc = io_uring_submit_and_get_events(ring);
		/* The kernel sets IORING_SQ_TASKRUN after queueing local work
		 * and clears it when it starts running that work; a queueing
		 * that races with a run can leave it set over an empty list,
		 * and then no enter clears it until the next work comes. Seen
		 * as: 98% of the enters for the flag found nothing, 6 enters
		 * per completion (1,000 busy sockets). Once an enter for the
		 * flag produced nothing, the flag is ignored until we sleep:
		 * the sleeping enter runs any local work first and returns
		 * at once if it posted a completion. */
		p->be.u.taskrun_stale =
		    taskrun && !io_uring_cq_ready(ring) && (kflags(ring) & IORING_SQ_TASKRUN);
	} else {
		p->be.u.taskrun_stale = false;
		if (timeout_ns < 0)
			rc = io_uring_submit_and_wait(ring, 1);
		else {
			ns_to_ts(timeout_ns, &ts);
			rc = io_uring_submit_and_wait_timeout(ring, &cqe, 1, &ts, NULL);
		}
	}
	return rc < 0 ? rc : 0;
}

static bool uring_ready(amio_poller *p)
{
	struct io_uring *ring = &p->be.u.ring;
	unsigned f = kflags(ring);

	/* Completions in the CQ, or ones the kernel holds back until we enter:
	 * deferred task work (DEFER_TASKRUN; unless the flag went stale, see
	 * amio__backend_enter) or an overflow list (NODROP). */
	return io_uring_cq_ready(ring) || (f & IORING_SQ_CQ_OVERFLOW) ||
	       ((f & IORING_SQ_TASKRUN) && !p->be.u.taskrun_stale);
}

static bool uring_sq_pending(amio_poller *p)
{
	return io_uring_sq_ready(&p->be.u.ring) != 0;
}

static void uring_begin_wait(amio_poller *p)
{
	/* A stale flag is ignored until we sleep; a caller polling with
	 * timeout 0 never sleeps, and would never enter for its completions
	 * again. One enter per wait call for the flag at most. */
	p->be.u.taskrun_stale = false;
}

static int uring_pollable(amio_poller *p, int fd)
{
	struct epoll_event ev = {.events = EPOLLIN};
	struct amio__uring *be = &p->be.u;

	/* io_uring polls any file: one without a poll method completes at
	 * once with POLLIN|POLLOUT and ends every multishot. epoll_ctl tells
	 * them apart exactly (file_can_poll): EPERM. Created on first use,
	 * which is rare (the first time a poll of this fd ends). */
	if (be->probe_fd < 0)
		be->probe_fd = epoll_create1(EPOLL_CLOEXEC);
	if (be->probe_fd < 0)
		return 0; /* cannot tell: assume it can, as before */
	if (epoll_ctl(be->probe_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return errno == EPERM ? -EPERM : 0;
	(void)epoll_ctl(be->probe_fd, EPOLL_CTL_DEL, fd, NULL);
	return 0;
}

/* ---- Completion -------------------------------------------------------- */

/* The record a CQE makes, or false for one that carries no state. */
static bool translate(amio_poller *p, const struct io_uring_cqe *cqe, struct amio__completion *c)
{
	uint64_t ud = cqe->user_data;

	c->slot = (uint32_t)(ud & AMIO__SLOT_MASK);
	c->armgen = (uint32_t)(ud >> AMIO__SLOT_BITS);
	c->res = cqe->res;
	c->more = cqe->flags & IORING_CQE_F_MORE;
	c->bid = AMIO__NO_BID;
	switch (ud >> 56) {
	case TAG_POLL:
		c->kind = AMIO__C_POLL;
		return true;
	case TAG_TIMER:
		c->kind = AMIO__C_TIMER;
		return true;
	case TAG_IO:
		c->kind = (cqe->flags & IORING_CQE_F_NOTIF) ? AMIO__C_IO_NOTIF : AMIO__C_IO;
		if (!c->more)
			p->be.u.io_inflight--; /* the request's last CQE */
		c->bid = (cqe->flags & IORING_CQE_F_BUFFER)
		             ? (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT)
		             : AMIO__NO_BID;
		return true;
	case TAG_REMOVE:
		c->kind = AMIO__C_REMOVE_BUSY;
		return cqe->res == -EALREADY;
	case TAG_WAKE:
		AMIO__STAT_ADD(p, wakeups_received, 1);
		return false;
	default:
		/* TAG_MSG failures, REMOVE's -ENOENT (the poll had already
		 * ended; -EBADFD: a waiter ring is gone) carry no state. */
		return false;
	}
}

/* ---- ONESHOT: the mask at harvest ---------------------------------------- */

/* A record of a live AMIO_ONESHOT registration's poll whose mask may lack
 * what the fd has now (see oneshot_harvest). Operations' and multishot
 * (EDGE) CQEs leave before the entry is read. */
static bool harvest_due(amio_poller *p, const struct amio__completion *c)
{
	const struct amio__entry *e;
	unsigned whole;

	if (c->kind != AMIO__C_POLL || c->more || c->res < 0)
		return false;
	e = &p->reg.entries[c->slot];
	whole = poll_mask(e->events) | POLLHUP | POLLERR;
	/* Not live: filtered anyway, and its fd may be closed by now. */
	return (e->events & AMIO_ONESHOT) && c->armgen == e->armgen &&
	       ((unsigned)c->res & whole) != whole &&
	       amio__registry_live(&p->reg, e->id, AMIO__KIND_ANY);
}

/* The same request again, as the kernel re-issues a one-shot whose second
 * poll finds nothing (io_poll_check_events: IOU_POLL_REISSUE): the loop
 * never saw it end, so inflight and armgen stay. */
static bool reissue(amio_poller *p, const struct amio__completion *c)
{
	const struct amio__entry *e = &p->reg.entries[c->slot];
	struct io_uring_sqe *sqe = io_uring_get_sqe(&p->be.u.ring);

	if (!sqe)
		return false; /* no SQE now: report the stale readiness, as LEVEL may */
	AMIO__STAT_ADD(p, sqes, 1);
	io_uring_prep_poll_add(sqe, e->fd, poll_mask(e->events));
	io_uring_sqe_set_data64(sqe, user_data(TAG_POLL, c->armgen, c->slot));
	return true;
}

/*
 * An AMIO_ONESHOT poll reports the fd's state when we reap it, as epoll's
 * EPOLLONESHOT does (ep_send_events polls the file at harvest), not the mask
 * of the wakeup that completed it: io_poll_wake takes a one-shot poll off
 * the wait queue at its first wakeup that carries a mask (POLLIN for data)
 * and posts that mask; it polls again only when woken with no mask or more
 * than once before its task work ran (io_poll_check_events). A peer's last
 * bytes, then its FIN or RST, read as POLLIN alone, and the registration is
 * disarmed: its HUP and ERROR never came (issue 18 item 5). EDGE's multishot
 * stays on the wait queue and posts them, LEVEL is armed again and its next
 * poll sees them: both pay nothing here.
 * One poll(2) for all the batch's ONESHOT records that lack an event: a
 * syscall per reap, not per notification (measured, ONESHOT echo: 6.0 -> 7.0
 * syscalls per request with 1 connection, 4.21 -> 4.38 with 64), none when
 * every mask is whole. A multishot removed after its first report costs no
 * poll(2) but was dearer (1.05 -> 3.05 enters per request: its removal is
 * submitted as the wait returns, and its -ECANCELED CQE wakes the next one).
 * Readiness gone by now (another thread read the bytes) is dropped and the
 * request re-issued, as epoll keeps a one-shot armed when its harvest finds
 * nothing. Returns the records kept, in order.
 */
static unsigned oneshot_harvest(amio_poller *p, struct amio__completion *out, unsigned n)
{
	struct pollfd pfd[64];
	unsigned at[64], m = 0, kept = 0;

	for (unsigned i = 0; i < n && m < 64; i++) {
		if (!harvest_due(p, &out[i]))
			continue;
		pfd[m].fd = p->reg.entries[out[i].slot].fd;
		pfd[m].events = (short)poll_mask(p->reg.entries[out[i].slot].events);
		at[m++] = i;
	}
	if (m == 0 || poll(pfd, m, 0) < 0)
		return n; /* cannot tell: the wakeups' masks, as before */
	for (unsigned j = 0; j < m; j++) {
		struct amio__completion *c = &out[at[j]];

		if (pfd[j].revents & POLLNVAL)
			continue;
		if (pfd[j].revents)
			c->res = pfd[j].revents;
		else if (reissue(p, c))
			c->kind = 0; /* no record: dropped below */
	}
	for (unsigned i = 0; i < n; i++)
		if (out[i].kind)
			out[kept++] = out[i];
	return kept;
}

static unsigned uring_reap(amio_poller *p, struct amio__completion *out, unsigned max)
{
	struct io_uring *ring = &p->be.u.ring;
	struct io_uring_cqe *cqe;
	unsigned head, seen = 0, n = 0;

	if (io_uring_cq_has_overflow(ring))
		AMIO__STAT_ADD(p, overflows, 1);
	io_uring_for_each_cqe(ring, head, cqe)
	{
		if (n == max)
			break;
		seen++;
		n += translate(p, cqe, &out[n]);
	}
	io_uring_cq_advance(ring, seen);
	AMIO__STAT_ADD(p, cqes, seen);
	return oneshot_harvest(p, out, n);
}

/* ---- Wakeups from other threads ---------------------------------------- */

static int send_msg(struct io_uring *src, const struct io_uring_sqe *msg)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(src);
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int rc;

	if (!sqe)
		return -EBUSY;
	*sqe = *msg;
	io_uring_sqe_set_data64(sqe, user_data(TAG_MSG, 0, 0));
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	rc = io_uring_submit(src);
	if (rc < 0)
		return rc;
	/* MSG_RING completes inline: a failure CQE is there now. Consume the
	 * ring so it never fills; a wakeup eaten here belonged to an earlier
	 * sleep (the waiter re-checks its inbox before every sleep). */
	rc = 0;
	io_uring_for_each_cqe(src, head, cqe)
	{
		if (cqe->user_data >> 56 == TAG_MSG && cqe->res < 0)
			rc = cqe->res;
		n++;
	}
	io_uring_cq_advance(src, n);
	return rc;
}

/* One MSG_RING wakeup to target_fd, sent now from the calling thread. */
static int send_wake(amio_poller *p, int target_fd, struct amio__waiter *from)
{
	struct amio__uring *be = &p->be.u;
	struct io_uring_sqe msg;
	int rc;

	memset(&msg, 0, sizeof(msg));
	io_uring_prep_msg_ring(&msg, target_fd, 0, user_data(TAG_WAKE, 0, 0), 0);
	if (be->ringless_msg)
		return io_uring_register(-1, IORING_REGISTER_SEND_MSG_RING, &msg, 1);
	if (from && from->has_ring)
		return send_msg(&from->ring, &msg);
	pthread_mutex_lock(&be->stop_lock);
	rc = send_msg(&be->stop_ring, &msg);
	pthread_mutex_unlock(&be->stop_lock);
	return rc;
}

static int uring_wake_poller(amio_poller *p, struct amio__waiter *from)
{
	ck_pr_faa_64(&p->wakeups_sent, 1);
	return send_wake(p, p->be.u.ring_fd, from);
}

static int uring_wake_waiter_now(amio_poller *p, struct amio__waiter *w)
{
	return w->has_ring ? send_wake(p, w->ring.ring_fd, NULL) : 0;
}

/* ---- Waiters ------------------------------------------------------------ */

static int uring_waiter_init(amio_poller *p, struct amio__waiter *w, bool inbox, uint32_t *doorbell)
{
	int rc;

	memset(w, 0, sizeof(*w));
	w->ops = &amio__uring_ops;
	w->word = doorbell;
	/* A ring to sleep on (inbox), or to send wakeups from (no ring-less
	 * MSG_RING). */
	if (!inbox && p->be.u.ringless_msg)
		return 0;
	/* Not SINGLE_ISSUER: a registrar may be created on one thread and used
	 * on another. 4 SQEs: wakeups are sent one at a time. */
	rc = io_uring_queue_init(4, &w->ring, 0);
	if (rc < 0)
		return rc;
	w->has_ring = true;
	return 0;
}

static void uring_waiter_destroy(struct amio__waiter *w)
{
	if (w->has_ring)
		io_uring_queue_exit(&w->ring);
	w->has_ring = false;
}

static int uring_waiter_wait(struct amio__waiter *w, int64_t timeout_ns)
{
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts;
	unsigned head, n = 0;
	int rc;

	if (timeout_ns < 0)
		rc = io_uring_wait_cqe(&w->ring, &cqe);
	else {
		ns_to_ts(timeout_ns, &ts);
		rc = io_uring_wait_cqe_timeout(&w->ring, &cqe, &ts);
	}
	/* Every CQE here is a wakeup: consume them all, one sleep = one wake. */
	io_uring_for_each_cqe(&w->ring, head, cqe) n++;
	io_uring_cq_advance(&w->ring, n);
	return rc;
}

/* Polls, removals and timeouts all post their final CQE: nothing to drop. */
static void uring_release(amio_poller *p, uint32_t slot)
{
	(void)p;
	(void)slot;
}

const struct amio__backend_ops amio__uring_ops = {
    .name = "io_uring",
    .init = uring_init,
    .destroy = uring_destroy,
    .enable = uring_enable,
    .arm = uring_arm,
    .remove = uring_remove,
    .disarm = uring_disarm,
    .release = uring_release,
    .cancel_io = uring_cancel_io,
    .pool_add = uring_pool_add,
    .pool_del = uring_pool_del,
    .wake_waiter = uring_wake_waiter,
    .enter = uring_enter,
    .submit = uring_submit,
    .ready = uring_ready,
    .sq_pending = uring_sq_pending,
    .begin_wait = uring_begin_wait,
    .pollable = uring_pollable,
    .reap = uring_reap,
    .wake_poller = uring_wake_poller,
    .wake_waiter_now = uring_wake_waiter_now,
    .waiter_init = uring_waiter_init,
    .waiter_destroy = uring_waiter_destroy,
    .waiter_wait = uring_waiter_wait,
};
