/*
 * Operations on the poll thread: how an accept, recv or send is armed, what
 * each completion of its request means, and how it ends with exactly one
 * DONE once the kernel holds nothing of it (the rule that makes buffer
 * ownership sound: a cancel or deadline only asks; the DONE waits for the
 * request's final completion).
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "internal.h"

static struct amio__io *io_of(amio_poller *p, uint32_t slot)
{
	return &p->reg.ios[slot];
}

/* ---- Setup ------------------------------------------------------------------ */

int amio__io_init(amio_poller *p)
{
	struct rlimit rl = {0};
	rlim_t fds = 1024;

	p->dl_len = ((size_t)p->reg.cap + 1) * sizeof(*p->dl);
	p->dl = amio__reserve(p->dl_len);
	/* One send queue per fd, first for the fds the process may open now
	 * (the hard limit, at most 2^24; address space only, touched as fds
	 * are sent on); sendq_fit grows it for a higher fd. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		fds = rl.rlim_max < ((rlim_t)1 << 24) ? rl.rlim_max : (rlim_t)1 << 24;
	p->sendq_cap = fds < 1024 ? 1024 : (uint32_t)fds;
	p->sendq_len = (size_t)p->sendq_cap * sizeof(*p->sendq);
	p->sendq = amio__reserve(p->sendq_len);
	return p->dl && p->sendq ? 0 : -ENOMEM;
}

/* Room in the send table for fd: a process may raise its limit after the
 * poller was made, or had fds above it (dup2). Rare, so a syscall here is
 * no cost to the hot path: mremap keeps the pages, MAP_NORESERVE too. */
static int sendq_fit(amio_poller *p, int fd)
{
	uint64_t cap = p->sendq_cap;
	void *m;

	if ((uint32_t)fd < p->sendq_cap)
		return 0;
	while (cap <= (uint64_t)fd)
		cap *= 2;
	m = mremap(p->sendq, p->sendq_len, (size_t)cap * sizeof(*p->sendq), MREMAP_MAYMOVE);
	if (m == MAP_FAILED)
		return -ENOMEM;
	p->sendq = m;
	p->sendq_cap = (uint32_t)cap; /* at most 2^31: fd is an int */
	p->sendq_len = (size_t)cap * sizeof(*p->sendq);
	return 0;
}

void amio__io_destroy(amio_poller *p)
{
	if (p->dl)
		munmap(p->dl, p->dl_len);
	if (p->sendq)
		munmap(p->sendq, p->sendq_len);
	p->dl = NULL;
	p->sendq = NULL;
}

/* ---- Send queues: one send in flight per fd, in the order started ----------- */

static void sendq_add(amio_poller *p, uint32_t slot, int fd)
{
	uint32_t *q = p->sendq[fd];

	io_of(p, slot)->next_send = 0;
	io_of(p, slot)->state |= AMIO__IO_QUEUED;
	if (q[0])
		io_of(p, q[1])->next_send = slot;
	else
		q[0] = slot;
	q[1] = slot;
}

/* Take slot off its fd's queue; the new head, if slot was the head. */
static uint32_t sendq_remove(amio_poller *p, uint32_t slot, int fd)
{
	uint32_t *q = p->sendq[fd], prev = 0, s = q[0];

	io_of(p, slot)->state &= ~(uint32_t)AMIO__IO_QUEUED;
	while (s && s != slot) {
		prev = s;
		s = io_of(p, s)->next_send;
	}
	if (!s)
		return 0;
	if (prev)
		io_of(p, prev)->next_send = io_of(p, slot)->next_send;
	else
		q[0] = io_of(p, slot)->next_send;
	if (q[1] == slot)
		q[1] = prev;
	return prev ? 0 : q[0];
}

/* ---- The end: one DONE ------------------------------------------------------- */

static const uint32_t type_event[] = {
    [AMIO__IO_ACCEPT] = AMIO_ACCEPT, [AMIO__IO_RECV] = AMIO_RECV, [AMIO__IO_SEND] = AMIO_SEND};

/* The kernel holds nothing of the operation (inflight 0): make its DONE. */
static void end(amio_poller *p, struct amio__entry *e, uint32_t slot, int32_t res)
{
	struct amio__io *io = io_of(p, slot);
	uint32_t next = 0;

	io->state = (io->state & ~(uint32_t)AMIO__IO_ENDING) | AMIO__IO_ENDED;
	amio__dl_remove(p, slot);
	if (io->state & AMIO__IO_STARVED) {
		amio__pool_unstarve(p, io->pool, slot);
		io->state &= ~(uint32_t)AMIO__IO_STARVED;
	}
	if (io->state & AMIO__IO_QUEUED)
		next = sendq_remove(p, slot, e->fd);
	if (io->type == AMIO__IO_RECV) {
		amio__pool_woken(p, io->pool, io);
		ck_pr_dec_32(&io->pool->running);
		amio__pool_maybe_free(p, io->pool);
	}
	amio__notify_io(p, e, type_event[io->type] | AMIO_DONE, res, AMIO__NO_BID);
	amio__io_maybe_free(p, e, slot);
	if (next) /* the fd's next send goes out now */
		amio__io_reconcile(p, &p->reg.entries[next], next);
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

static void begin_end(struct amio__io *io, int32_t why)
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
static bool cancel_request(amio_poller *p, struct amio__entry *e, uint32_t slot)
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
	    (io->state & (AMIO__IO_STARVED | AMIO__IO_PAUSED | AMIO__IO_BACKOFF)))
		return false;
	/* A send goes out only at the head of its fd's queue. */
	return io->type != AMIO__IO_SEND || p->sendq[e->fd][0] == slot;
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
		begin_end(io, -ECANCELED);
	if (io->state & AMIO__IO_ENDING) {
		if ((e->flags & AMIO__E_ARMED) && !cancel_request(p, e, slot))
			return; /* its final completion ends it */
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
	case AMIO__OP_START:
		e->fd = c->fd;
		e->data = c->data;
		e->flags |= AMIO__E_REGISTERED;
		if (io->type == AMIO__IO_SEND) {
			int rc = sendq_fit(p, c->fd);

			if (rc < 0) {
				end(p, e, slot, rc);
				return;
			}
			sendq_add(p, slot, c->fd);
		}
		break;
	case AMIO__OP_DEREGISTER: /* amio_cancel */
		e->flags |= AMIO__E_DEREGISTERED;
		break;
	case AMIO__OP_DEADLINE:
		if (!(io->state & (AMIO__IO_ENDING | AMIO__IO_ENDED))) {
			io->deadline_ns = c->deadline_ns;
			amio__dl_update(p, slot);
		}
		return;
	}
	amio__io_reconcile(p, e, slot);
}

/* An operation's own timer came due: what it waited for. */
static void on_timer(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__io *io = io_of(p, slot);

	io->timer_ns = 0;
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
			begin_end(io, -ETIME);
			amio__io_reconcile(p, e, slot);
			continue;
		}
		on_timer(p, e, slot);
		amio__dl_update(p, slot);
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
		begin_end(io, c->res); /* not listening ... */
	/* A consumer that takes nothing: pause rather than hold without end
	 * (a cancel; its final completion leaves it paused). */
	if (c->more && io->held_n >= AMIO__ACCEPT_PAUSE &&
	    !(io->state & (AMIO__IO_ENDING | AMIO__IO_PAUSED))) {
		io->state |= AMIO__IO_PAUSED;
		if (cancel_request(p, e, slot))
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
	if (c->res > 0)
		amio__notify_io(p, e, AMIO_RECV, c->res, c->bid);
	else if (c->res == 0)
		begin_end(io, 0); /* EOF */
	else if (c->res == -ENOBUFS && !(io->state & AMIO__IO_ENDING))
		io_starve(p, e, slot);
	else if (c->res != -ECANCELED || !(io->state & AMIO__IO_ENDING))
		begin_end(io, c->res);
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
		begin_end(io, c->res);
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
	}
}
