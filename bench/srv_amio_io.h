/*
 * Shared by the amio completion-I/O bench servers (srv_amio_completion,
 * srv_amio_completion_inbox): echo through amio_accept, amio_recv into a pool
 * and amio_send of the received buffer itself, which goes back to the pool on
 * the send's DONE. The thread that runs it makes no socket call of its own
 * but close() and, unless the listener's TCP_NODELAY is inherited,
 * setsockopt(TCP_NODELAY), once per connection.
 */
#ifndef BENCH_SRV_AMIO_IO_H
#define BENCH_SRV_AMIO_IO_H

#include "srv_amio_common.h"

#define CIO_BUFS 1024 /* pool buffers (a power of two), SRV_BUF bytes each */

/* An operation amio refused with -EAGAIN (command queue full), retried in
 * order by cio_flush: while any waits, later ones queue behind it, so the
 * sends of one connection keep their order. */
struct cio_op {
	struct cio_op *next;
	enum { CIO_RECV, CIO_SEND, CIO_CANCEL } kind;
};

struct cio_conn {
	struct cio_op op; /* a deferred recv start or cancel (never both) */
	int fd;
	int recv_live;   /* from accept until the recv's DONE */
	int64_t recv_id; /* 0 until started */
	uint32_t sends;  /* sends not yet DONE */
	int failed;      /* a send failed: drop what comes, cancel the recv */
	int deferred;    /* op waits in the deferred list: not to be freed */
	struct cio_conn *next_free;
};

/* One send in flight: its connection and the pool buffer it sends. At most
 * CIO_BUFS exist (each holds a buffer). */
struct cio_send {
	struct cio_op op;
	struct cio_conn *c;
	void *buf;
	size_t len;
	struct cio_send *next_free;
};

struct cio {
	const char *who;
	int nodelay_each; /* setsockopt(TCP_NODELAY) on each accepted fd */
	amio_registrar *r;
	amio_pool *pool;
	struct cio_op *defer_head, **defer_tail;
	struct cio_conn *free_conns;
	struct cio_send *free_sends;
	struct cio_send sends[CIO_BUFS];
};

/* Start accepting on lfd through r, with a pool of r's. inherit: set
 * TCP_NODELAY on lfd, which Linux copies into every accepted socket, instead
 * of one setsockopt per connection on the consuming thread. */
static inline void cio_init(struct cio *s, const char *who, amio_registrar *r, int lfd, int inherit)
{
	int64_t id;
	int rc, one = 1;

	memset(s, 0, sizeof(*s));
	s->who = who;
	s->nodelay_each = !inherit;
	if (inherit && setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		srv_die(who, "setsockopt", errno);
	s->r = r;
	s->defer_tail = &s->defer_head;
	for (int i = CIO_BUFS - 1; i >= 0; i--) {
		s->sends[i].next_free = s->free_sends;
		s->free_sends = &s->sends[i];
	}
	if ((rc = amio_pool_new(r, CIO_BUFS, SRV_BUF, &s->pool)) < 0)
		srv_die(who, "amio_pool_new", rc);
	if ((id = amio_accept(r, lfd, NULL)) < 0)
		srv_die(who, "amio_accept", (int)id);
}

static inline void cio_defer(struct cio *s, struct cio_op *op, int kind)
{
	if (kind != CIO_SEND)
		((struct cio_conn *)op)->deferred = 1;
	op->kind = kind;
	op->next = NULL;
	*s->defer_tail = op;
	s->defer_tail = &op->next;
}

/* Close the connection once its recv and every send are DONE (the fd must
 * stay open until then). */
static inline void cio_maybe_close(struct cio *s, struct cio_conn *c)
{
	if (c->recv_live || c->sends || c->deferred)
		return;
	close(c->fd);
	c->next_free = s->free_conns;
	s->free_conns = c;
}

/* Try op now; 0 if amio took it, -EAGAIN if its queue is full. */
static inline int cio_try(struct cio *s, struct cio_op *op)
{
	struct cio_conn *c;
	struct cio_send *sd;
	int64_t id;
	int rc;

	switch (op->kind) {
	case CIO_RECV:
		c = (struct cio_conn *)op;
		id = amio_recv(s->r, c->fd, s->pool, c);
		if (id == -EAGAIN)
			return -EAGAIN;
		if (id < 0) {
			c->recv_live = 0;
			cio_maybe_close(s, c);
		} else {
			c->recv_id = id;
		}
		return 0;
	case CIO_SEND:
		sd = (struct cio_send *)op;
		id = amio_send(s->r, sd->c->fd, sd->buf, sd->len, 0, sd);
		if (id == -EAGAIN)
			return -EAGAIN;
		if (id < 0)
			srv_die(s->who, "amio_send", (int)id);
		return 0;
	case CIO_CANCEL:
		c = (struct cio_conn *)op;
		if (!c->recv_live)
			return 0;
		rc = amio_cancel(s->r, (uint64_t)c->recv_id);
		/* -ENOENT: the recv's DONE is made already; it comes. */
		return rc == -EAGAIN ? -EAGAIN : 0;
	}
	return 0;
}

/* Run op now, or after the ops already deferred. */
static inline void cio_run(struct cio *s, struct cio_op *op, int kind)
{
	op->kind = kind;
	if (s->defer_head || cio_try(s, op) == -EAGAIN)
		cio_defer(s, op, kind);
}

/* Retry deferred ops in order; stops at the first still refused. */
static inline void cio_flush(struct cio *s)
{
	struct cio_op *op;

	while ((op = s->defer_head) && cio_try(s, op) == 0) {
		s->defer_head = op->next;
		if (!s->defer_head)
			s->defer_tail = &s->defer_head;
		if (op->kind != CIO_SEND) {
			((struct cio_conn *)op)->deferred = 0;
			cio_maybe_close(s, (struct cio_conn *)op);
		}
	}
}

static inline void cio_on_accept(struct cio *s, const amio_notification *n)
{
	struct cio_conn *c;
	int one = 1;

	if (n->events & AMIO_DONE) /* -EMFILE and the like: the accept is over */
		srv_die(s->who, "amio_accept", n->res);
	if ((c = s->free_conns))
		s->free_conns = c->next_free;
	else if (!(c = malloc(sizeof(*c)))) {
		close(n->res);
		return;
	}
	if (s->nodelay_each)
		setsockopt(n->res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = n->res;
	c->recv_live = 1;
	c->recv_id = 0;
	c->sends = 0;
	c->failed = 0;
	c->deferred = 0;
	cio_run(s, &c->op, CIO_RECV);
}

/* Handle one notification (the accept's have data NULL, a recv's its
 * connection, a send's its struct cio_send). */
static inline void cio_event(struct cio *s, const amio_notification *n)
{
	struct cio_conn *c;
	struct cio_send *sd;

	if (n->events & AMIO_ACCEPT) {
		cio_on_accept(s, n);
	} else if (n->events & AMIO_RECV) {
		c = n->data;
		if (n->events & AMIO_DONE) { /* EOF or an error: no bytes */
			c->recv_live = 0;
			cio_maybe_close(s, c);
			return;
		}
		if (c->failed || !(sd = s->free_sends)) {
			/* Cannot happen without a failure: each send holds
			 * one of the CIO_BUFS buffers. */
			amio_pool_put(s->pool, n->buf);
			return;
		}
		s->free_sends = sd->next_free;
		sd->c = c;
		sd->buf = n->buf;
		sd->len = (size_t)n->res;
		c->sends++;
		cio_run(s, &sd->op, CIO_SEND);
	} else if (n->events & AMIO_SEND) {
		sd = n->data;
		c = sd->c;
		amio_pool_put(s->pool, sd->buf);
		sd->next_free = s->free_sends;
		s->free_sends = sd;
		c->sends--;
		if (n->res < 0 && !c->failed) {
			c->failed = 1;
			if (c->recv_live && c->recv_id)
				cio_run(s, &c->op, CIO_CANCEL);
		}
		cio_maybe_close(s, c);
	}
}

#endif /* BENCH_SRV_AMIO_IO_H */
