/*
 * Pools at the ends of their lives (issue 18): a pool freed while the poll
 * thread still has it queued for a refill, handles after amio_pool_free,
 * puts of buffers that are not lent, the buffer-group limit, sends on fds
 * above the limit the poller saw, and what a returned buffer wakes. Public
 * API only; the suite runs again on epoll (AMIO_BACKEND=epoll).
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "amio_test.h"

/* ---- Harness ---------------------------------------------------------------- */

/* Amy mode: wait until a notification of id with AMIO_DONE arrives; every
 * AMIO_RECV buffer is kept in held[] (at most cap). Returns the DONE's res. */
static int32_t wait_done(amio_poller *p, uint64_t id, void **held, int cap, int *nheld)
{
	int64_t end = t_now_ms() + 5000;
	amio_notification n[16];

	while (t_now_ms() < end) {
		int rc = amio_poller_wait(p, n, 16, 20);

		ck_assert_int_ge(rc, 0);
		for (int i = 0; i < rc; i++) {
			ck_assert_uint_eq(n[i].id, id);
			if (n[i].events & AMIO_DONE)
				return n[i].res;
			ck_assert_int_lt(*nheld, cap);
			held[(*nheld)++] = n[i].buf;
		}
	}
	ck_abort_msg("id %llu: no DONE", (unsigned long long)id);
	return 0;
}

/* Amy mode: take notifications for ms, keeping recv buffers in held[]. */
static void take_for(amio_poller *p, int ms, void **held, int cap, int *nheld)
{
	int64_t end = t_now_ms() + ms;
	amio_notification n[16];

	while (t_now_ms() < end) {
		int rc = amio_poller_wait(p, n, 16, 5);

		ck_assert_int_ge(rc, 0);
		for (int i = 0; i < rc; i++) {
			ck_assert_msg(!(n[i].events & AMIO_DONE), "unexpected DONE res %d",
			              n[i].res);
			ck_assert_int_lt(*nheld, cap);
			held[(*nheld)++] = n[i].buf;
		}
	}
}

/* ---- A pool freed after its starved recv ended --------------------------- */

/* A 1-buffer pool; the recv takes it and starves on the rest of 256 bytes;
 * the recv ends (cancel, or a deadline: _i); the buffer goes back, the pool
 * is freed, and the poller goes on (ASan: the refill walk must not touch
 * the freed pool). Amy mode: the poll thread is the consumer. */
START_TEST(a_pool_freed_after_its_starved_recv_ended_is_not_refilled)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	char data[256];
	void *held[4];
	int nheld = 0, fds[2];
	int64_t id;

	memset(data, 'x', sizeof(data));
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 1, 16, &pool), 0);
	t_tcp_pair(fds);
	id = amio_recv(r, fds[1], pool, NULL);
	ck_assert_int_gt(id, 0);
	ck_assert_int_eq(write(fds[0], data, sizeof(data)), (ssize_t)sizeof(data));
	take_for(p, 100, held, 4, &nheld);
	ck_assert_int_eq(nheld, 1);
	if (_i == 0)
		ck_assert_int_eq(amio_cancel(r, (uint64_t)id), 0);
	else
		ck_assert_int_eq(amio_set_deadline(r, (uint64_t)id, 1), 0);
	ck_assert_int_eq(wait_done(p, (uint64_t)id, held, 4, &nheld),
	                 _i == 0 ? -ECANCELED : -ETIME);
	ck_assert_int_eq(amio_pool_put(pool, held[0]), 0);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	/* The poller and a new pool still work. */
	for (int k = 0; k < 3; k++) {
		amio_notification n[4];

		ck_assert_int_ge(amio_poller_wait(p, n, 4, 5), 0);
	}
	ck_assert_int_eq(amio_pool_new(r, 2, 64, &pool), 0);
	nheld = 0;
	id = amio_recv(r, fds[1], pool, NULL);
	ck_assert_int_gt(id, 0);
	take_for(p, 50, held, 4, &nheld);
	ck_assert_int_ge(nheld, 1);
	for (int k = 0; k < nheld; k++)
		ck_assert_int_eq(amio_pool_put(pool, held[k]), 0);
	ck_assert_int_eq(amio_cancel(r, (uint64_t)id), 0);
	nheld = 0;
	(void)wait_done(p, (uint64_t)id, held, 4, &nheld);
	for (int k = 0; k < nheld; k++)
		ck_assert_int_eq(amio_pool_put(pool, held[k]), 0);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

struct inbox_case {
	amio_poller *p;
	unsigned seed;
	int rounds;
};

/* The worker (an inbox registrar's owner): each round a 1-buffer pool, a
 * recv that starves, a cancel, then the put and the free back to back,
 * so that the poll thread may see the put's refill and the POOL_FREE in
 * one drain. */
static void *inbox_worker(void *arg)
{
	struct inbox_case *c = arg;
	amio_registrar *r;
	char data[64];
	unsigned seed = c->seed;

	memset(data, 'y', sizeof(data));
	ck_assert_int_eq(amio_registrar_new(c->p, AMIO_INBOX, &r), 0);
	for (int round = 0; round < c->rounds; round++) {
		amio_notification n[8];
		amio_pool *pool;
		void *buf = NULL;
		int fds[2], got = 0, rc;
		int64_t id, end = t_now_ms() + 5000;
		size_t len;

		ck_assert_int_eq(amio_pool_new(r, 1, 8, &pool), 0);
		t_tcp_pair(fds);
		id = amio_recv(r, fds[1], pool, NULL);
		ck_assert_int_gt(id, 0);
		len = 9 + (size_t)(rand_r(&seed) % 56); /* more than the one buffer */
		ck_assert_int_eq(write(fds[0], data, len), (ssize_t)len);
		for (bool done = false; !done;) {
			ck_assert_msg(t_now_ms() < end, "round %d: no DONE", round);
			rc = amio_registrar_wait(r, n, 8, 20);
			ck_assert_int_ge(rc, 0);
			for (int i = 0; i < rc; i++) {
				if (n[i].events & AMIO_DONE) {
					done = true;
				} else {
					ck_assert_ptr_null(buf); /* one buffer: one RECV */
					buf = n[i].buf;
					if (++got == 1)
						ck_assert_int_eq(amio_cancel(r, (uint64_t)id), 0);
				}
			}
		}
		if (buf)
			ck_assert_int_eq(amio_pool_put(pool, buf), 0);
		while ((rc = amio_pool_free(pool)) == -EAGAIN)
			amio_registrar_wait_room(r, 100);
		ck_assert_int_eq(rc, 0);
		close(fds[0]);
		close(fds[1]);
	}
	amio_registrar_free(r);
	return NULL;
}

/* The inbox variant of the above, many rounds: the put of a starved pool's
 * buffer and its POOL_FREE may land in one drain of the poll thread. */
START_TEST(an_inbox_consumer_frees_a_pool_right_after_its_last_put)
{
	struct inbox_case c = {.seed = 0x9001, .rounds = t_scale(300)};
	pthread_t poll, worker;

	c.p = t_poller(NULL);
	pthread_create(&poll, NULL, t_run_poller, c.p);
	pthread_create(&worker, NULL, inbox_worker, &c);
	pthread_join(worker, NULL);
	t_stop_poller(c.p, poll);
	amio_poller_free(c.p);
}
END_TEST

/* ---- Handles after amio_pool_free ----------------------------------------- */

/* Before the poll thread applied a free (here: the poller has not run yet),
 * the handle still answers: a second free and a recv are -EINVAL, and the
 * pool is freed once. (After that the handle is gone: amio.h.) */
START_TEST(a_pool_freed_but_not_yet_applied_refuses_a_second_free_and_recvs)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	amio_notification n[4];
	int fds[2];

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 4, 64, &pool), 0);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	ck_assert_int_eq(amio_pool_free(pool), -EINVAL);
	t_tcp_pair(fds);
	ck_assert_int_eq(amio_recv(r, fds[1], pool, NULL), -EINVAL);
	ck_assert_int_eq(amio_poller_wait(p, n, 4, 10), 0);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- Puts of buffers not lent ----------------------------------------------- */

/* A second put of one buffer (it is in the ring again), a misaligned one:
 * -EINVAL, and the pool keeps exactly its buffers (no buffer lent twice at
 * once, and the pool frees). */
START_TEST(puts_of_buffers_not_lent_are_refused)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	char data[64];
	void *held[64];
	int nheld = 0, fds[2];
	int64_t id;

	memset(data, 'z', sizeof(data));
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 4, 16, &pool), 0);
	t_tcp_pair(fds);
	id = amio_recv(r, fds[1], pool, NULL);
	ck_assert_int_eq(write(fds[0], data, 16), 16);
	take_for(p, 50, held, 64, &nheld);
	ck_assert_int_eq(nheld, 1);
	ck_assert_int_eq(amio_pool_put(pool, (char *)held[0] + 1), -EINVAL); /* misaligned */
	ck_assert_int_eq(amio_pool_put(pool, held[0]), 0);
	ck_assert_int_eq(amio_pool_put(pool, held[0]), -EINVAL); /* twice */
	for (int pass = 0; pass < 8; pass++) {
		nheld = 0;
		ck_assert_int_eq(write(fds[0], data, sizeof(data)), (ssize_t)sizeof(data));
		take_for(p, 30, held, 64, &nheld);
		ck_assert_int_ge(nheld, 1);
		ck_assert_int_le(nheld, 4); /* four buffers, none twice in the ring */
		for (int k = 0; k < nheld; k++)
			for (int j = 0; j < k; j++)
				ck_assert_ptr_ne(held[k], held[j]);
		for (int k = 0; k < nheld; k++) {
			ck_assert_int_eq(amio_pool_put(pool, held[k]), 0);
			ck_assert_int_eq(amio_pool_put(pool, held[k]), -EINVAL);
		}
		take_for(p, 30, held + nheld, 64 - nheld, &nheld);
		for (int k = 0; k < nheld; k++)
			(void)amio_pool_put(pool, held[k]);
	}
	ck_assert_int_eq(amio_cancel(r, (uint64_t)id), 0);
	nheld = 0;
	(void)wait_done(p, (uint64_t)id, held, 64, &nheld);
	for (int k = 0; k < nheld; k++)
		ck_assert_int_eq(amio_pool_put(pool, held[k]), 0);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* Amy mode, a wait of cap 1: the second of two notes waits in the poller
 * while its buffer is NOTED, not yet the consumer's. A stale second put
 * of that buffer (the consumer put it once already, before the kernel
 * lent it again) must be refused, or the buffer goes into the ring while
 * the waiting note still lends it. _i 0: amio_poller_wait; 1: the notes
 * reaped by amio_poller_run first (its stash). */
START_TEST(a_stale_put_of_a_buffer_lent_again_to_a_waiting_note_is_refused)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	amio_notification n[1];
	unsigned char data[32];
	void *b[2];
	int fds[2];
	int64_t id;

	for (size_t k = 0; k < sizeof(data); k++)
		data[k] = (unsigned char)k;
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 2, 16, &pool), 0);
	t_tcp_pair(fds);
	id = amio_recv(r, fds[1], pool, NULL);
	ck_assert_int_gt(id, 0);
	/* Both buffers lent and taken, then both put back (b[0] first). */
	for (int k = 0; k < 2; k++) {
		ck_assert_int_eq(write(fds[0], data, 16), 16);
		ck_assert_int_eq(t_collect(p, n, 1, 20000), 1);
		ck_assert_uint_eq(n[0].events, AMIO_RECV);
		ck_assert_int_eq(n[0].res, 16);
		b[k] = n[0].buf;
	}
	ck_assert_ptr_ne(b[0], b[1]);
	ck_assert_int_eq(amio_pool_put(pool, b[0]), 0);
	ck_assert_int_eq(amio_pool_put(pool, b[1]), 0);
	/* 32 bytes: two 16-byte buffers, two notes; the wait hands out one. */
	ck_assert_int_eq(write(fds[0], data, 32), 32);
	usleep(20000); /* both in the socket (failing needs it, passing not) */
	if (_i == 1)
		ck_assert_int_eq(amio_poller_run(p), 1);
	ck_assert_int_eq(t_collect(p, n, 1, 20000), 1);
	ck_assert_uint_eq(n[0].events, AMIO_RECV);
	ck_assert_int_eq(n[0].res, 16);
	ck_assert_int_eq(memcmp(n[0].buf, data, 16), 0);
	/* The other buffer: in the ring, the kernel, or a waiting note. */
	{
		void *other = n[0].buf == b[0] ? b[1] : b[0];
		amio_notification m[1];

		ck_assert_int_eq(amio_pool_put(pool, other), -EINVAL);
		ck_assert_int_eq(t_collect(p, m, 1, 20000), 1);
		ck_assert_uint_eq(m[0].events, AMIO_RECV);
		ck_assert_int_eq(m[0].res, 16);
		ck_assert_ptr_eq(m[0].buf, other);
		ck_assert_int_eq(memcmp(m[0].buf, data + 16, 16), 0);
		ck_assert_int_eq(amio_pool_put(pool, m[0].buf), 0);
	}
	ck_assert_int_eq(amio_pool_put(pool, n[0].buf), 0);
	ck_assert_int_eq(amio_cancel(r, (uint64_t)id), 0);
	{
		void *held[4];
		int nheld = 0;

		ck_assert_int_eq(wait_done(p, (uint64_t)id, held, 4, &nheld), -ECANCELED);
		ck_assert_int_eq(nheld, 0);
	}
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- A seeded random walk over pools, recvs and puts ----------------------- */

#define W_CONNS 4
#define W_POOLS 3
#define W_HELD  256

struct w_pool {
	amio_pool *pool;
	uint32_t count, size;
	int running; /* recvs into it without their DONE */
};

struct w_conn {
	int fds[2];
	uint64_t written, received;
	int64_t recv_id; /* 0: none */
	int pool;        /* the recv's pool */
	bool cancelled;
};

struct w_buf {
	void *buf;
	int pool;
};

struct walk {
	amio_poller *p;
	amio_registrar *r;
	unsigned seed;
	struct w_pool pools[W_POOLS];
	struct w_conn conns[W_CONNS];
	struct w_buf held[W_HELD];
	int nheld;
	void *gone[W_HELD]; /* buffers put back, by pool: a put again is -EINVAL */
	int gone_pool[W_HELD], ngone;
};

static unsigned char w_byte(int c, uint64_t i)
{
	return (unsigned char)(c * 31 + i * 7 + (i >> 8));
}

static void w_note(struct walk *w, const amio_notification *n)
{
	struct w_conn *c = n->data;
	int ci = (int)(c - w->conns);

	ck_assert_uint_eq(n->id, (uint64_t)c->recv_id);
	if (n->events & AMIO_DONE) {
		/* No EOF or error here: only our cancel ends a recv. */
		ck_assert_msg(c->cancelled && n->res == -ECANCELED, "seed %u: DONE res %d", w->seed,
		              n->res);
		if (c->pool >= 0) /* -1: its pool was freed before this DONE came */
			w->pools[c->pool].running--;
		c->recv_id = 0;
		return;
	}
	ck_assert_uint_eq(n->events, AMIO_RECV);
	ck_assert_int_gt(n->res, 0);
	ck_assert_uint_le((uint32_t)n->res, w->pools[c->pool].size);
	for (int32_t k = 0; k < n->res; k++)
		ck_assert_msg(((unsigned char *)n->buf)[k] == w_byte(ci, c->received + (uint64_t)k),
		              "seed %u: conn %d byte %llu wrong", w->seed, ci,
		              (unsigned long long)(c->received + (uint64_t)k));
	c->received += (uint64_t)n->res;
	ck_assert_int_lt(w->nheld, W_HELD);
	for (int k = 0; k < w->nheld; k++)
		ck_assert_msg(w->held[k].buf != n->buf, "seed %u: a buffer lent twice", w->seed);
	w->held[w->nheld++] = (struct w_buf){n->buf, c->pool};
}

static void w_wait(struct walk *w, size_t cap)
{
	amio_notification n[8];
	int rc = amio_poller_wait(w->p, n, cap, 1);

	ck_assert_int_ge(rc, 0);
	for (int i = 0; i < rc; i++)
		w_note(w, &n[i]);
}

/* Put held buffer k: 0; then again, and into another pool: -EINVAL. */
static void w_put(struct walk *w, int k)
{
	struct w_buf b = w->held[k];
	int other = (b.pool + 1) % W_POOLS;

	if (w->pools[other].pool)
		ck_assert_int_eq(amio_pool_put(w->pools[other].pool, b.buf), -EINVAL);
	ck_assert_int_eq(amio_pool_put(w->pools[b.pool].pool, b.buf), 0);
	ck_assert_int_eq(amio_pool_put(w->pools[b.pool].pool, b.buf), -EINVAL);
	w->held[k] = w->held[--w->nheld];
	if (w->ngone < W_HELD) {
		w->gone[w->ngone] = b.buf;
		w->gone_pool[w->ngone++] = b.pool;
	}
}

static bool w_lent(struct walk *w, void *buf)
{
	for (int k = 0; k < w->nheld; k++)
		if (w->held[k].buf == buf)
			return true;
	return false;
}

static void w_pool_new(struct walk *w, int i)
{
	struct w_pool *pl = &w->pools[i];

	pl->count = 1u << (rand_r(&w->seed) % 3);
	pl->size = 1 + (uint32_t)(rand_r(&w->seed) % 64);
	pl->running = 0;
	ck_assert_int_eq(amio_pool_new(w->r, pl->count, pl->size, &pl->pool), 0);
	/* Its old buffers' addresses mean nothing now. */
	for (int k = 0; k < w->ngone; k++)
		if (w->gone_pool[k] == i)
			w->gone[k] = NULL;
}

static void w_pool_free(struct walk *w, int i)
{
	struct w_pool *pl = &w->pools[i];
	bool lent = false, live = false;
	int rc;

	for (int k = 0; k < w->nheld; k++)
		lent |= w->held[k].pool == i;
	for (int k = 0; k < W_CONNS; k++)
		live |= w->conns[k].recv_id && w->conns[k].pool == i && !w->conns[k].cancelled;
	rc = amio_pool_free(pl->pool);
	/* A cancelled recv may have ended with its DONE not taken yet: the
	 * pool may go (amio.h: "ended"), and the DONE still comes. */
	if (rc == 0 && !live && !lent && pl->running) {
		for (int k = 0; k < W_CONNS; k++)
			if (w->conns[k].recv_id && w->conns[k].pool == i)
				w->conns[k].pool = -1;
		pl->running = 0;
	}
	if (pl->running || lent) {
		ck_assert_msg(rc == -EBUSY, "seed %u: free with %d recvs, lent %d: %d", w->seed,
		              pl->running, lent, rc);
		return;
	}
	ck_assert_msg(rc == 0, "seed %u: free of an idle pool: %d", w->seed, rc);
	pl->pool = NULL;
}

static void w_step(struct walk *w)
{
	int ci = rand_r(&w->seed) % W_CONNS, pi = rand_r(&w->seed) % W_POOLS;
	struct w_conn *c = &w->conns[ci];
	unsigned char buf[256];
	size_t len;
	ssize_t n;

	switch (rand_r(&w->seed) % 8) {
	case 0: /* the peer writes */
		len = 1 + (size_t)(rand_r(&w->seed) % sizeof(buf));
		for (size_t k = 0; k < len; k++)
			buf[k] = w_byte(ci, c->written + k);
		n = write(c->fds[0], buf, len);
		if (n > 0)
			c->written += (uint64_t)n;
		break;
	case 1: /* a recv */
		if (c->recv_id || !w->pools[pi].pool)
			break;
		c->recv_id = amio_recv(w->r, c->fds[1], w->pools[pi].pool, c);
		ck_assert_int_gt(c->recv_id, 0);
		c->pool = pi;
		c->cancelled = false;
		w->pools[pi].running++;
		break;
	case 2: /* its cancel */
		if (c->recv_id && !c->cancelled) {
			ck_assert_int_eq(amio_cancel(w->r, (uint64_t)c->recv_id), 0);
			c->cancelled = true;
		}
		break;
	case 3: /* a put of a lent buffer, or a stale one */
		if (w->nheld && rand_r(&w->seed) % 4)
			w_put(w, rand_r(&w->seed) % w->nheld);
		else if (w->ngone) {
			int k = rand_r(&w->seed) % w->ngone, g = w->gone_pool[k];

			if (w->gone[k] && w->pools[g].pool && !w_lent(w, w->gone[k]))
				ck_assert_int_eq(amio_pool_put(w->pools[g].pool, w->gone[k]),
				                 -EINVAL);
		}
		break;
	case 4: /* free a pool, or make one */
		if (w->pools[pi].pool)
			w_pool_free(w, pi);
		else
			w_pool_new(w, pi);
		break;
	default:
		w_wait(w, 1 + (size_t)(rand_r(&w->seed) % 8));
	}
}

/* The end: every byte written arrives, then everything frees. */
static void w_finish(struct walk *w)
{
	int64_t end = t_now_ms() + 20000;

	for (int i = 0; i < W_POOLS; i++)
		if (!w->pools[i].pool)
			w_pool_new(w, i);
	for (bool more = true; more;) {
		more = false;
		ck_assert_msg(t_now_ms() < end, "seed %u: bytes missing at the end", w->seed);
		for (int ci = 0; ci < W_CONNS; ci++) {
			struct w_conn *c = &w->conns[ci];

			more |= c->received < c->written || c->recv_id;
			if (c->received < c->written && !c->recv_id) {
				c->recv_id = amio_recv(w->r, c->fds[1], w->pools[0].pool, c);
				ck_assert_int_gt(c->recv_id, 0);
				c->pool = 0;
				c->cancelled = false;
				w->pools[0].running++;
			} else if (c->received == c->written && c->recv_id && !c->cancelled) {
				ck_assert_int_eq(amio_cancel(w->r, (uint64_t)c->recv_id), 0);
				c->cancelled = true;
			}
		}
		while (w->nheld)
			w_put(w, 0);
		w_wait(w, 8);
	}
	for (int i = 0; i < W_POOLS; i++)
		ck_assert_int_eq(amio_pool_free(w->pools[i].pool), 0);
}

START_TEST(a_random_walk_over_pools_keeps_every_byte_and_every_answer)
{
	struct walk *w = calloc(1, sizeof(*w));
	const char *env = getenv("AMIO_POOL_SEED");

	w->seed = env ? (unsigned)strtoul(env, NULL, 0) : (unsigned)time(NULL) + (unsigned)_i;
	printf("a_random_walk_over_pools: AMIO_POOL_SEED=%u\n", w->seed);
	fflush(stdout);
	w->p = t_poller(NULL);
	ck_assert_int_eq(amio_registrar_new(w->p, 0, &w->r), 0);
	for (int i = 0; i < W_CONNS; i++)
		t_tcp_pair(w->conns[i].fds);
	for (int i = 0; i < W_POOLS; i++)
		w_pool_new(w, i);
	for (int step = 0; step < t_scale(6000); step++)
		w_step(w);
	w_finish(w);
	for (int i = 0; i < W_CONNS; i++) {
		close(w->conns[i].fds[0]);
		close(w->conns[i].fds[1]);
	}
	amio_registrar_free(w->r);
	amio_poller_free(w->p);
	free(w);
}
END_TEST

/* ---- The buffer-group limit ----------------------------------------------------- */

/* 65,536 pools live: the next amio_pool_new says -ENOSPC itself (nothing
 * queued), and one freed makes room again. Created on the poll thread (after
 * a first wait), as an Amy-mode program does. */
START_TEST(the_pool_past_the_group_limit_is_refused_at_the_call)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool **pools = calloc(65536, sizeof(*pools)), *extra = NULL;
	amio_notification n[4];

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_poller_wait(p, n, 4, 0), 0); /* now the poll thread */
	for (int i = 0; i < 65536; i++) {
		int rc;

		while ((rc = amio_pool_new(r, 1, 1, &pools[i])) == -EAGAIN)
			ck_assert_int_ge(amio_poller_wait(p, n, 4, 0), 0); /* apply the queue */
		ck_assert_msg(rc == 0, "pool %d: %s", i, amio_strerror(rc));
	}
	ck_assert_int_eq(amio_pool_new(r, 1, 1, &extra), -ENOSPC);
	ck_assert_ptr_null(extra);
	ck_assert_int_eq(amio_pool_free(pools[12345]), 0);
	ck_assert_int_eq(amio_pool_new(r, 1, 1, &pools[12345]), 0);
	ck_assert_int_eq(amio_pool_new(r, 1, 1, &extra), -ENOSPC);
	for (int i = 0; i < 65536; i++) {
		int rc;

		while ((rc = amio_pool_free(pools[i])) == -EAGAIN)
			ck_assert_int_ge(amio_poller_wait(p, n, 4, 0), 0);
		ck_assert_int_eq(rc, 0);
	}
	ck_assert_int_eq(amio_poller_wait(p, n, 4, 0), 0);
	free(pools);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- Sends on fds the poller's first limit did not cover ------------------ */

/* A socket at fd 5000 with the hard RLIMIT_NOFILE at 4096 when the poller
 * was made (_i 0); a limit raised after it, and a socket above the old one
 * (_i 1): the send goes out. Check forks each test: the limits die with it. */
START_TEST(a_send_on_an_fd_above_the_limit_the_poller_saw_goes_out)
{
	struct rlimit low = {4096, 4096}, high = {16384, 16384};
	amio_poller *p;
	amio_registrar *r;
	amio_notification n[4];
	int fds[2], fd = _i == 0 ? 5000 : 9000;
	char got[6] = {0};
	int64_t id;

	t_tcp_pair(fds);
	if (_i == 0) {
		ck_assert_int_eq(dup2(fds[1], fd), fd);
		ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
		p = t_poller(NULL);
	} else {
		ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
		p = t_poller(NULL);
		if (setrlimit(RLIMIT_NOFILE, &high) < 0) { /* raising needs CAP_SYS_RESOURCE */
			amio_poller_free(p);
			return;
		}
		ck_assert_int_eq(dup2(fds[1], fd), fd);
	}
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	id = amio_send(r, fd, "hello", 5, 0, NULL);
	ck_assert_int_gt(id, 0);
	ck_assert_int_eq(t_collect(p, n, 1, 5000), 1);
	ck_assert_uint_eq(n[0].events, AMIO_SEND | AMIO_DONE);
	ck_assert_int_eq(n[0].res, 5);
	ck_assert_int_eq(read(fds[0], got, 5), 5);
	ck_assert_str_eq(got, "hello");
	close(fd);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- What a returned buffer wakes --------------------------------------------- */

/* Take notifications until none came for quiet_ms, holding every buffer;
 * returns how many arrived (each one's conn counted in served[]). */
static int take_quiet(amio_poller *p, int quiet_ms, void **held, int *nheld, int *served)
{
	int64_t last = t_now_ms();
	int got = 0;

	do {
		amio_notification n[4];
		int rc = amio_poller_wait(p, n, 4, 5);

		ck_assert_int_ge(rc, 0);
		for (int i = 0; i < rc; i++) {
			ck_assert_uint_eq(n[i].events, AMIO_RECV);
			held[(*nheld)++] = n[i].buf;
			((int *)n[i].data)[0]++;
			got++;
			last = t_now_ms();
		}
	} while (t_now_ms() - last < quiet_ms);
	(void)served;
	return got;
}

/* 16 connections with data waiting on a 2-buffer pool whose buffers the
 * consumer holds: every recv starves. Then one buffer back at a time: each
 * put re-arms one starved recv, the oldest, not all sixteen (which would
 * find the ring empty again but one). Each round is one buffer back and
 * one chunk in, so starvations stay within a round each (the woken recv
 * starves again after its chunk) plus the connections, and the oldest
 * first order serves the sixteen in turn. */
START_TEST(a_returned_buffer_wakes_one_starved_recv_oldest_first)
{
	enum { CONNS = 16, CHUNK = 8, ROUNDS = 3 * CONNS };
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct amio_poller_stats before, after;
	int fds[CONNS][2], served[CONNS] = {0}, nheld = 0;
	int64_t ids[CONNS];
	void *held[CONNS * 4];
	char data[CHUNK * 8];
	uint64_t starved;

	memset(data, 'q', sizeof(data));
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 2, CHUNK, &pool), 0);
	for (int i = 0; i < CONNS; i++) {
		t_tcp_pair(fds[i]);
		ck_assert_int_eq(write(fds[i][0], data, sizeof(data)), (ssize_t)sizeof(data));
		ids[i] = amio_recv(r, fds[i][1], pool, &served[i]);
		ck_assert_int_gt(ids[i], 0);
	}
	ck_assert_int_eq(take_quiet(p, 100, held, &nheld, served), 2);
	memset(served, 0, sizeof(served));
	amio_poller_stats(p, &before);
	for (int round = 0; round < ROUNDS; round++) {
		int64_t end = t_now_ms() + 5000;
		int had = nheld;

		ck_assert_int_eq(amio_pool_put(pool, held[--nheld]), 0);
		while (nheld == had - 1) {
			ck_assert_msg(t_now_ms() < end, "round %d: the buffer never came back",
			              round);
			(void)take_quiet(p, 0, held, &nheld, served);
		}
		ck_assert_int_eq(nheld, had);
	}
	(void)take_quiet(p, 50, held, &nheld, served); /* nothing more: the pool is empty */
	amio_poller_stats(p, &after);
	starved = after.recv_starved - before.recv_starved;
	printf("%llu starvations in %d rounds of one buffer back on %d connections\n",
	       (unsigned long long)starved, ROUNDS, CONNS);
	ck_assert_msg(starved <= (uint64_t)(ROUNDS + CONNS), "%llu starvations in %d rounds",
	              (unsigned long long)starved, ROUNDS);
	for (int i = 0; i < CONNS; i++)
		ck_assert_msg(served[i] >= ROUNDS / CONNS - 1 && served[i] <= ROUNDS / CONNS + 1,
		              "conn %d served %d times in %d rounds", i, served[i], ROUNDS);
	for (int i = 0; i < CONNS; i++) {
		int done = 0;

		ck_assert_int_eq(amio_cancel(r, (uint64_t)ids[i]), 0);
		while (nheld)
			ck_assert_int_eq(amio_pool_put(pool, held[--nheld]), 0);
		while (!done) {
			amio_notification n[4];
			int rc = amio_poller_wait(p, n, 4, 20);

			ck_assert_int_ge(rc, 0);
			for (int k = 0; k < rc; k++) {
				if (n[k].events & AMIO_DONE)
					done += n[k].id == (uint64_t)ids[i];
				else
					ck_assert_int_eq(amio_pool_put(pool, n[k].buf), 0);
			}
		}
		close(fds[i][0]);
		close(fds[i][1]);
	}
	ck_assert_int_eq(amio_pool_free(pool), 0);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* A recv a returned buffer wakes may have nothing to read: it posts nothing,
 * and must not keep the buffer from the next starved recv. A's only chunk
 * is held, so A starves with nothing more to read; B starves with bytes
 * waiting; A's buffer comes back: B gets it. */
START_TEST(a_woken_recv_with_nothing_to_read_does_not_keep_the_buffer)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	int a[2], b[2], na = 0, nb = 0, nheld = 0;
	int64_t ida, idb, end;
	void *held[8];

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 1, 8, &pool), 0);
	t_tcp_pair(a);
	t_tcp_pair(b);
	ck_assert_int_eq(write(a[0], "aaaaaaaa", 8), 8);
	ida = amio_recv(r, a[1], pool, &na);
	ck_assert_int_eq(take_quiet(p, 50, held, &nheld, NULL), 1);
	ck_assert_int_eq(na, 1);
	ck_assert_int_eq(write(b[0], "bbbbbbbb", 8), 8);
	idb = amio_recv(r, b[1], pool, &nb);
	ck_assert_int_eq(take_quiet(p, 50, held, &nheld, NULL), 0);
	ck_assert_int_eq(amio_pool_put(pool, held[--nheld]), 0);
	end = t_now_ms() + 5000;
	while (nb == 0) {
		ck_assert_msg(t_now_ms() < end, "B never got the buffer A's recv was woken for");
		(void)take_quiet(p, 0, held, &nheld, NULL);
	}
	ck_assert_int_eq(na, 1);
	ck_assert_int_eq(amio_pool_put(pool, held[--nheld]), 0);
	ck_assert_int_eq(amio_cancel(r, (uint64_t)ida), 0);
	ck_assert_int_eq(amio_cancel(r, (uint64_t)idb), 0);
	for (int done = 0; done < 2;) {
		amio_notification n[4];
		int rc = amio_poller_wait(p, n, 4, 20);

		ck_assert_int_ge(rc, 0);
		for (int k = 0; k < rc; k++)
			done += (n[k].events & AMIO_DONE) != 0;
	}
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(a[0]);
	close(a[1]);
	close(b[0]);
	close(b[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

static Suite *pool_suite(void)
{
	Suite *s = suite_create("pool");
	TCase *tc;

	tc = tcase_create("lifetime");
	tcase_set_timeout(tc, 300);
	tcase_add_loop_test(tc, a_pool_freed_after_its_starved_recv_ended_is_not_refilled, 0, 2);
	tcase_add_test(tc, an_inbox_consumer_frees_a_pool_right_after_its_last_put);
	tcase_add_test(tc, a_pool_freed_but_not_yet_applied_refuses_a_second_free_and_recvs);
	tcase_add_test(tc, the_pool_past_the_group_limit_is_refused_at_the_call);
	suite_add_tcase(s, tc);

	tc = tcase_create("buffers");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, puts_of_buffers_not_lent_are_refused);
	tcase_add_loop_test(tc, a_stale_put_of_a_buffer_lent_again_to_a_waiting_note_is_refused, 0,
	                    2);
	tcase_add_loop_test(tc, a_random_walk_over_pools_keeps_every_byte_and_every_answer, 0, 3);
	tcase_add_test(tc, a_returned_buffer_wakes_one_starved_recv_oldest_first);
	tcase_add_test(tc, a_woken_recv_with_nothing_to_read_does_not_keep_the_buffer);
	suite_add_tcase(s, tc);

	tc = tcase_create("fds");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, a_send_on_an_fd_above_the_limit_the_poller_saw_goes_out, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr;
	int failed;

	t_require_io_uring();
	sr = srunner_create(pool_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
