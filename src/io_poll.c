/*
 * Operations on the poll thread: how an accept, recv or send is armed, what
 * each completion of its request means, and how it ends with exactly one
 * DONE once the kernel holds nothing of it (the rule that makes buffer
 * ownership sound: a cancel or deadline only asks; the DONE waits for the
 * request's final completion).
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

static struct amio__io *io_of(amio_poller *p, uint32_t slot)
{
	return &p->reg.ios[slot];
}

/* ---- The end: one DONE ------------------------------------------------------- */

const uint32_t amio__io_event[] = {
    [AMIO__IO_ACCEPT] = AMIO_ACCEPT, [AMIO__IO_RECV] = AMIO_RECV,
    [AMIO__IO_SEND] = AMIO_SEND,     [AMIO__IO_SHUTDOWN] = AMIO_SHUTDOWN,
    [AMIO__IO_CLOSE] = AMIO_CLOSE,   [AMIO__IO_CONNECT] = AMIO_CONNECT,
    [AMIO__IO_PREAD] = AMIO_PREAD,   [AMIO__IO_PWRITE] = AMIO_PWRITE};

/* Off its fd's queue or list; what the fd does next (io_conn.c). */
static void leave_fd(amio_poller *p, struct amio__io *io, uint32_t slot, int fd, bool *head)
{
	*head = false;
	if (io->state & AMIO__IO_QUEUED) {
		*head = p->fdq[fd].first == slot;
		amio__fd_dequeue(p, slot, fd);
		if (io->type == AMIO__IO_SEND)
			amio__conn_sent(p, fd, io->total);
	}
	if (io->state & AMIO__IO_LINKED)
		amio__fd_unlink(p, slot, fd);
}

/* The kernel holds nothing of the operation (inflight 0): make its DONE. */
static void end(amio_poller *p, struct amio__entry *e, uint32_t slot, int32_t res)
{
	struct amio__io *io = io_of(p, slot);
	uint32_t type = io->type, state = io->state;
	int fd = e->fd;
	bool head;

	io->state = (io->state & ~(uint32_t)AMIO__IO_ENDING) | AMIO__IO_ENDED;
	amio__dl_remove(p, slot);
	if (io->state & AMIO__IO_STARVED) {
		amio__pool_unstarve(p, io->pool, slot);
		io->state &= ~(uint32_t)AMIO__IO_STARVED;
	}
	leave_fd(p, io, slot, fd, &head);
	if (type == AMIO__IO_RECV) {
		amio__pool_woken(p, io->pool, io);
		ck_pr_dec_32(&io->pool->running);
		amio__pool_maybe_free(p, io->pool);
	}
	if (type == AMIO__IO_CLOSE && p->fdq[fd].closing == slot)
		p->fdq[fd].closing = 0; /* closed (or the close cancelled): the fd takes new ops */
	amio__notify_io(p, e, amio__io_event[type] | AMIO_DONE, res, AMIO__NO_BID);
	amio__io_maybe_free(p, e, slot); /* io and e are not ours from here */
	if (head)                        /* the fd's next send, shutdown or close goes now */
		amio__conn_advance(p, fd);
	if ((state & AMIO__IO_LINKED) && p->fdq[fd].closing && !p->fdq[fd].ops)
		amio__conn_advance(p, fd); /* the close waited for this one */
}

void amio__io_maybe_free(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__io *io = io_of(p, slot);

	if ((io->state & AMIO__IO_ENDED) && !io->done_held && !io->held_n && e->inflight == 0 &&
	    !(e->flags & (AMIO__E_PENDING | AMIO__E_OVERFLOW))) {
		free(io->acc_big);
		io->acc_big = NULL;
		amio__backend_release(p, slot);
		amio__registry_release(&p->reg, slot);
	}
}

void amio__io_begin_end(struct amio__io *io, int32_t why)
{
	if (!(io->state & (AMIO__IO_ENDING | AMIO__IO_ENDED))) {
		io->state |= AMIO__IO_ENDING;
		io->end_res = why;
	}
}

/* Out of fds or memory: the process's trouble, not the listener's. nginx
 * and libuv keep listening; so does amio, after a pause. */
static bool accept_backs_off(int32_t res)
{
	return res == -EMFILE || res == -ENFILE || res == -ENOMEM || res == -ENOBUFS;
}

/* Tell the consumer (a note that is not final: res < 0), then listen again
 * after AMIO__ACCEPT_BACKOFF_MIN_MS, doubling while it goes on failing, up
 * to AMIO__ACCEPT_BACKOFF_MAX_MS; a connection accepted resets it. The
 * connections wait in the listen backlog meanwhile. */
static void back_off(amio_poller *p, struct amio__entry *e, uint32_t slot, int32_t res)
{
	struct amio__io *io = io_of(p, slot);

	AMIO__STAT_ADD(p, accept_backoffs, 1);
	amio__notify_io(p, e, AMIO_ACCEPT, res, AMIO__NO_BID);
	io->backoff_ms = !io->backoff_ms ? AMIO__ACCEPT_BACKOFF_MIN_MS
	                 : io->backoff_ms * 2 > AMIO__ACCEPT_BACKOFF_MAX_MS
	                     ? AMIO__ACCEPT_BACKOFF_MAX_MS
	                     : io->backoff_ms * 2;
	io->state |= AMIO__IO_BACKOFF;
	io->timer_ns = amio__now_ns() + (int64_t)io->backoff_ms * 1000000;
	amio__dl_update(p, slot);
}

/* ---- Bringing the kernel in line ------------------------------------------- */

/* Ask the kernel to drop the request; true if it is gone now. */
bool amio__io_cancel_request(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__io *io = io_of(p, slot);
	int rc;

	if (io->state & AMIO__IO_CANCEL_SENT)
		return false;
	rc = amio__backend_cancel_io(p, e, slot);
	if (rc < 0) {
		amio__push_pending(p, e); /* no SQE now: again next iteration */
		return false;
	}
	if (rc == 0)
		io->state |= AMIO__IO_CANCEL_SENT;
	return rc == 1;
}

static bool may_arm(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__io *io = io_of(p, slot);

	if ((e->flags & AMIO__E_ARMED) ||
	    (io->state & (AMIO__IO_STARVED | AMIO__IO_PAUSED | AMIO__IO_BACKOFF | AMIO__IO_FLOW |
	                  AMIO__IO_HELD)))
		return false;
	/* A send, shutdown or close goes only at the head of its fd's queue;
	 * a close once the fd's other operations have ended. */
	if (!(io->state & AMIO__IO_QUEUED))
		return true;
	return p->fdq[e->fd].first == slot &&
	       (io->type != AMIO__IO_CLOSE || amio__conn_close_ready(p, e->fd));
}

void amio__io_reconcile(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__io *io = io_of(p, slot);
	int rc;

	if (!(e->flags & AMIO__E_REGISTERED))
		return; /* a cancel or deadline that came before its START */
	if (io->state & AMIO__IO_ENDED) {
		amio__io_maybe_free(p, e, slot);
		return;
	}
	if (e->flags & AMIO__E_DEREGISTERED)
		amio__io_begin_end(io, -ECANCELED);
	if (io->state & AMIO__IO_ENDING) {
		if ((e->flags & AMIO__E_ARMED) && !amio__io_cancel_request(p, e, slot))
			return; /* its final completion ends it */
		/* Ended by a close or a timeout behind a send still in flight:
		 * the fd's DONEs keep their order (amio__conn_advance ends it
		 * once it is the head). An amio_cancel does not wait. */
		if ((io->state & AMIO__IO_QUEUED) && p->fdq[e->fd].first != slot &&
		    !(e->flags & AMIO__E_DEREGISTERED))
			return;
		if (e->inflight == 0)
			end(p, e, slot, io->end_res);
		return;
	}
	if (!may_arm(p, e, slot))
		return;
	if (io->type == AMIO__IO_RECV && io->pool->err) {
		end(p, e, slot, io->pool->err);
		return;
	}
	rc = amio__backend_arm(p, e, slot);
	/* The close is the kernel's now (IORING_OP_CLOSE frees the number at
	 * issue; epoll's close(2) ran): socket(2) or an accept may hand the
	 * number out again before this close's DONE, so the row takes new
	 * operations from here (sends queue behind the close). */
	if (rc == 0 && io->type == AMIO__IO_CLOSE && p->fdq[e->fd].closing == slot)
		p->fdq[e->fd].closing = 0;
	if (rc < 0 && io->type == AMIO__IO_ACCEPT && accept_backs_off(rc))
		back_off(p, e, slot, rc); /* epoll: no fd for the listener's dup */
	else if (rc < 0)
		end(p, e, slot, rc);
}

void amio__io_apply(amio_poller *p, struct amio__entry *e, const struct amio__cmd *c)
{
	uint32_t slot = amio__id_slot(c->id);
	struct amio__io *io = io_of(p, slot);

	switch (c->op) {
	case AMIO__OP_START: {
		int rc;

		e->fd = c->fd;
		e->data = c->data;
		e->flags |= AMIO__E_REGISTERED;
		rc = amio__fd_fit(p, c->fd);
		if (rc == 0)
			rc = amio__conn_start(p, slot, c->fd);
		if (rc < 0) {
			end(p, e, slot, rc);
			return;
		}
		break;
	}
	case AMIO__OP_DEREGISTER: /* amio_cancel */
		e->flags |= AMIO__E_DEREGISTERED;
		break;
	case AMIO__OP_DEADLINE:
		if (!(io->state & (AMIO__IO_ENDING | AMIO__IO_ENDED))) {
			io->deadline_ns = c->deadline_ns;
			amio__dl_update(p, slot);
		}
		return;
	case AMIO__OP_PAUSE:
	case AMIO__OP_RESUME:
		amio__conn_hold(p, slot, c->op == AMIO__OP_PAUSE);
		return;
	}
	amio__io_reconcile(p, e, slot);
}

/* An operation's own timer came due: what it waited for. It re-keys the
 * heap itself (the op may have ended: its slot is not ours then). */
static void on_timer(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__io *io = io_of(p, slot);

	if (io->type == AMIO__IO_RECV || io->type == AMIO__IO_SEND) {
		amio__conn_timer(p, slot);
		return;
	}
	io->timer_ns = 0;
	amio__dl_update(p, slot);
	if (io->state & AMIO__IO_BACKOFF) {
		io->state &= ~(uint32_t)AMIO__IO_BACKOFF; /* listen again */
		amio__io_reconcile(p, e, slot);
	}
}

void amio__io_expire(amio_poller *p)
{
	int64_t now = amio__now_ns();
	uint32_t slot;

	while ((slot = amio__dl_due(p, now))) {
		struct amio__io *io = io_of(p, slot);
		struct amio__entry *e = &p->reg.entries[slot];

		if (io->deadline_ns && io->deadline_ns <= now) {
			io->deadline_ns = 0;
			amio__dl_remove(p, slot);
			amio__io_begin_end(io, -ETIME);
			amio__io_reconcile(p, e, slot);
			continue;
		}
		on_timer(p, e, slot);
	}
}

void amio__io_orphan(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__io *io = io_of(p, slot);

	io->state |= AMIO__IO_ORPHAN;
	/* Nobody will take what it holds: accepted fds are closed, held
	 * buffers stay with the pool, which is freed with its registrar. */
	if (io->type == AMIO__IO_ACCEPT)
		for (; io->held_n; io->held_n--, io->acc_head++)
			amio__close_accepted(*amio__acc_at(io, 0));
	io->held_n = 0;
	io->done_held = false;
	/* A close or shutdown still goes (its DONE dropped like every note):
	 * the program asked for it, and makes no close(2) of its own. */
	if (io->type != AMIO__IO_CLOSE && io->type != AMIO__IO_SHUTDOWN)
		e->flags |= AMIO__E_DEREGISTERED;
	amio__io_reconcile(p, e, slot);
}

void amio__io_flushed(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__io *io = io_of(p, slot);

	if ((io->state & AMIO__IO_PAUSED) && io->held_n == 0) {
		io->state &= ~(uint32_t)AMIO__IO_PAUSED;
		amio__io_reconcile(p, e, slot);
		return;
	}
	amio__io_maybe_free(p, e, slot);
}

/* ---- Completions ----------------------------------------------------------- */

static void io_starve(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__io *io = io_of(p, slot);
	amio_pool *pool = io->pool;

	if (io->state & AMIO__IO_STARVED)
		return; /* one request, one final completion: cannot happen */
	AMIO__STAT_ADD(p, recv_starved, 1);
	io->state |= AMIO__IO_STARVED;
	amio__pool_starve(p, pool, slot);
	/* starved before the look at the ring; pairs with amio_pool_put. */
	ck_pr_fence_store_load();
	/* A buffer came back meanwhile: go on at once, as a refill would. */
	if (amio__pool_available(p, pool))
		(void)amio__pool_queue_refill(pool);
	(void)e;
}

static void on_accept(amio_poller *p, struct amio__entry *e, uint32_t slot,
                      const struct amio__completion *c)
{
	struct amio__io *io = io_of(p, slot);

	if (c->res >= 0) {
		io->backoff_ms = 0;
		amio__notify_io(p, e, AMIO_ACCEPT, c->res, AMIO__NO_BID);
	} else if (c->res == -ECANCELED)
		; /* ours: to end it, or to pause it */
	else if (accept_backs_off(c->res) && !c->more && !(io->state & AMIO__IO_ENDING))
		back_off(p, e, slot, c->res);
	else if (c->res != -ECONNABORTED && c->res != -EINTR && c->res != -EAGAIN && !c->more)
		amio__io_begin_end(io, c->res); /* not listening ... */
	/* A consumer that takes nothing: pause rather than hold without end
	 * (a cancel; its final completion leaves it paused). */
	if (c->more && io->held_n >= AMIO__ACCEPT_PAUSE &&
	    !(io->state & (AMIO__IO_ENDING | AMIO__IO_PAUSED))) {
		io->state |= AMIO__IO_PAUSED;
		if (amio__io_cancel_request(p, e, slot))
			return;
	}
	if (!c->more)
		amio__io_reconcile(p, e, slot);
}

static void on_recv(amio_poller *p, struct amio__entry *e, uint32_t slot,
                    const struct amio__completion *c)
{
	struct amio__io *io = io_of(p, slot);

	if (c->bid != AMIO__NO_BID) {
		ck_pr_store_64(&io->pool->taken, ck_pr_load_64(&io->pool->taken) + 1);
		/* Lent before the notification that lends it is published. */
		ck_pr_store_8(&io->pool->lent[c->bid], AMIO__LENT_NOTED);
	}
	amio__pool_woken(p, io->pool, io); /* after taken: its buffer is counted */
	if (c->res > 0 && io->idle_ms)
		io->last_ns = amio__now_ns(); /* the idle clock (amio__conn_timer reads it) */
	if (c->res > 0)
		amio__notify_io(p, e, AMIO_RECV, c->res, c->bid);
	else if (c->res == -ECANCELED && (io->state & (AMIO__IO_FLOW | AMIO__IO_HELD)) &&
	         !(io->state & AMIO__IO_ENDING))
		; /* paused (flow control, amio_recv_pause): armed again on resume */
	else if (c->res == 0)
		amio__io_begin_end(io, 0); /* EOF */
	else if (c->res == -ENOBUFS && !(io->state & AMIO__IO_ENDING))
		io_starve(p, e, slot);
	else if (c->res != -ECANCELED || !(io->state & AMIO__IO_ENDING))
		amio__io_begin_end(io, c->res);
	if (!c->more)
		amio__io_reconcile(p, e, slot);
}

/* Take n sent bytes off the front of what is left. */
static void advance(struct amio__io *io, uint32_t n)
{
	io->sent += n;
	while (n && io->first < io->niov) {
		struct iovec *v = &io->iov[io->first];

		if (n < v->iov_len) {
			v->iov_base = (char *)v->iov_base + n;
			v->iov_len -= n;
			return;
		}
		n -= (uint32_t)v->iov_len;
		io->first++;
	}
}

static void on_send(amio_poller *p, struct amio__entry *e, uint32_t slot,
                    const struct amio__completion *c)
{
	struct amio__io *io = io_of(p, slot);

	if (c->res >= 0) {
		advance(io, (uint32_t)c->res);
		io->state &= ~(uint32_t)AMIO__IO_POLL_FIRST;
	} else if (c->res == -EAGAIN && c->kind == AMIO__C_IO) {
		/* io_uring can give up on a full non-blocking socket (seen on
		 * 6.18 with SO_SNDBUF 4096 and a recv on the same socket):
		 * send again once it has room (IORING_RECVSEND_POLL_FIRST),
		 * never a spin, never an error the caller did not cause. */
		io->state |= AMIO__IO_POLL_FIRST;
	} else if (c->res != -ECANCELED || !(io->state & AMIO__IO_ENDING)) {
		amio__io_begin_end(io, c->res);
	}
	if (c->more)
		return; /* zero-copy: the notification ends the request */
	if (io->sent == io->total && !(io->state & AMIO__IO_ENDED)) {
		end(p, e, slot, (int32_t)io->total); /* finished first: not cancelled */
		return;
	}
	amio__io_reconcile(p, e, slot); /* the rest of a short send, or the end */
}

void amio__on_io(amio_poller *p, const struct amio__completion *c)
{
	struct amio__entry *e = &p->reg.entries[c->slot];
	struct amio__io *io = io_of(p, c->slot);

	if (c->kind == AMIO__C_IO_NOTIF || !c->more) {
		/* The request is over (a zero-copy send: with its notification). */
		e->inflight--;
		e->flags &= ~AMIO__E_ARMED;
		io->state &= ~(uint32_t)AMIO__IO_CANCEL_SENT;
	}
	if (c->kind == AMIO__C_IO_NOTIF) {
		struct amio__completion done = *c;

		done.res = 0;
		on_send(p, e, c->slot, &done);
		return;
	}
	switch (io->type) {
	case AMIO__IO_ACCEPT:
		on_accept(p, e, c->slot, c);
		break;
	case AMIO__IO_RECV:
		on_recv(p, e, c->slot, c);
		break;
	case AMIO__IO_SEND:
		on_send(p, e, c->slot, c);
		break;
	default: /* shutdown, close, connect, pread, pwrite: one result */
		if (io->state & AMIO__IO_ENDED)
			break;
		/* Ours (a cancel, a deadline, a close of the fd): why we asked.
		 * A result that came first stands: what the kernel did. */
		end(p, e, c->slot,
		    (c->res == -ECANCELED || c->res == -EINTR) && (io->state & AMIO__IO_ENDING)
		        ? io->end_res
		        : c->res);
		break;
	}
}
