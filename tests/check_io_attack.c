/*
 * An outside review of completion I/O (amio.h "Completion I/O"), black box:
 * only the public API. Each test checks one promise of the header on both
 * backends (this suite runs again with AMIO_BACKEND=epoll). Random tests
 * print their seed.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "amio_test.h"

/* ---- Harness: one record per operation, found through its data ---------- */

struct op {
	uint64_t id;
	amio_pool *pool; /* for AMIO_RECV: where its buffers go back */
	int notes;
	int done;
	int32_t done_res;
	uint32_t done_events;
	size_t bytes;
	int accepts;
	int fds[512];
	unsigned char *copy;
	size_t cap;
	bool hold; /* keep recv buffers (in held[]) instead of putting them */
	void *held[64];
	int nheld;
};

static void op_note(struct op *o, const amio_notification *n)
{
	ck_assert_msg(n->id == o->id, "note for id %llu in the op of id %llu",
	              (unsigned long long)n->id, (unsigned long long)o->id);
	ck_assert_msg(!o->done, "id %llu: events %#x res %d after its DONE",
	              (unsigned long long)n->id, n->events, n->res);
	o->notes++;
	if (n->events & AMIO_DONE) {
		o->done++;
		o->done_res = n->res;
		o->done_events = n->events;
		/* A send's DONE gives its buffer back; the others carry none. */
		if (n->events & AMIO_SEND)
			ck_assert_ptr_nonnull(n->buf);
		else
			ck_assert_ptr_null(n->buf);
		return;
	}
	if (n->events & AMIO_ACCEPT) {
		ck_assert_msg(n->res >= 0, "accept res %d without DONE", n->res);
		ck_assert_int_lt(o->accepts, 512);
		o->fds[o->accepts++] = n->res;
		return;
	}
	ck_assert_msg(n->events == AMIO_RECV, "events %#x res %d", n->events, n->res);
	ck_assert_int_gt(n->res, 0);
	ck_assert_ptr_nonnull(n->buf);
	if (o->copy) {
		ck_assert_uint_le(o->bytes + (size_t)n->res, o->cap);
		memcpy(o->copy + o->bytes, n->buf, (size_t)n->res);
	}
	o->bytes += (size_t)n->res;
	if (o->hold) {
		ck_assert_int_lt(o->nheld, 64);
		o->held[o->nheld++] = n->buf;
	} else {
		ck_assert_int_eq(amio_pool_put(o->pool, n->buf), 0);
	}
}

static void dispatch(const amio_notification *n, int rc)
{
	for (int i = 0; i < rc; i++) {
		ck_assert_ptr_nonnull(n[i].data);
		op_note(n[i].data, &n[i]);
	}
}

/* Amy mode: wait with cap until every op in ops[] is done. */
static void pump_cap(amio_poller *p, struct op **ops, int nops, size_t cap, int timeout_ms)
{
	int64_t end = t_now_ms() + timeout_ms;
	amio_notification n[64];

	if (cap > 64)
		cap = 64;
	for (;;) {
		int k = 0, rc;

		while (k < nops && ops[k]->done)
			k++;
		if (k == nops)
			return;
		ck_assert_msg(t_now_ms() < end, "timed out: op %d (id %llu) has no DONE", k,
		              (unsigned long long)ops[k]->id);
		rc = amio_poller_wait(p, n, cap, 20);
		ck_assert_int_ge(rc, 0);
		dispatch(n, rc);
	}
}

static void pump(amio_poller *p, struct op **ops, int nops, int timeout_ms)
{
	pump_cap(p, ops, nops, 64, timeout_ms);
}

/* Wait (Amy mode) for ms, dispatching whatever comes. */
static void idle(amio_poller *p, int ms)
{
	int64_t end = t_now_ms() + ms;
	amio_notification n[64];

	while (t_now_ms() < end) {
		int rc = amio_poller_wait(p, n, 64, 5);

		ck_assert_int_ge(rc, 0);
		dispatch(n, rc);
	}
}

/* Dispatch (Amy mode) until cond holds, up to 5 s: what must come, however
 * slowly a busy machine runs us (a fixed idle() would be a speed bound). */
#define IDLE_UNTIL(p, cond)                                                                        \
	do {                                                                                       \
		int64_t end_ = t_now_ms() + 5000;                                                  \
		while (!(cond)) {                                                                  \
			ck_assert_msg(t_now_ms() < end_, "not within 5 s: %s", #cond);             \
			idle(p, 5);                                                                \
		}                                                                                  \
	} while (0)

static void fill(unsigned char *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		b[i] = (unsigned char)(seed >> 16);
	}
}

static unsigned test_seed(int i)
{
	const char *s = getenv("ATTACK_SEED");
	unsigned seed = s ? (unsigned)strtoul(s, NULL, 0) : (unsigned)(0xa770 + i);

	printf("seed %u\n", seed);
	fflush(stdout);
	return seed;
}

/* Print the open fds (a leak's description). */
static void show_fds(void)
{
	char path[64], link[256];

	for (int fd = 0; fd < 1024; fd++) {
		ssize_t k;

		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		k = readlink(path, link, sizeof(link) - 1);
		if (k > 0) {
			link[k] = 0;
			fprintf(stderr, "fd %d -> %s\n", fd, link);
		}
	}
}

static void set_rst_on_close(int fd)
{
	struct linger l = {.l_onoff = 1, .l_linger = 0};

	ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)), 0);
}

/* ---- Argument checks ------------------------------------------------------ */

/* amio_sendv: "the total must be 1 .. 2^31 - 1 bytes": pieces whose sum
 * wraps size_t must not pass as a small total. */
START_TEST(sendv_whose_total_wraps_is_rejected)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	char b[4] = "abc";
	struct iovec v[3] = {{b, SIZE_MAX}, {b, 2}};
	struct iovec w[3] = {{b, (size_t)1 << 31}, {b, (size_t)1 << 31}, {b, 1}};
	int fds[2];

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	t_tcp_pair(fds);
	ck_assert_int_eq(amio_sendv(r, fds[1], v, 2, 0, NULL), -EINVAL);
	ck_assert_int_eq(amio_sendv(r, fds[1], w, 3, 0, NULL), -EINVAL);
	w[0].iov_len = (size_t)1 << 30;
	w[1].iov_len = (size_t)1 << 30;
	ck_assert_int_eq(amio_sendv(r, fds[1], w, 2, 0, NULL), -EINVAL); /* 2^31 */
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* Ids of other kinds: amio_cancel / amio_set_deadline on a socket
 * registration or a timer are -ENOENT ("not an operation"), and
 * amio_cancel_timer on an operation is -ENOENT ("not a timer"). Deregister
 * or reregister of an operation's id must not take its DONE away. */
START_TEST(ids_of_other_kinds_are_not_operations)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct op o = {0}, *ops[1] = {&o};
	int fds[2];
	int64_t reg, tim, id;
	int rc;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 4, 64, &pool), 0);
	t_tcp_pair(fds);
	reg = amio_register(r, fds[0], AMIO_READ, NULL);
	tim = amio_set_timeout(r, 100000, NULL);
	ck_assert_int_gt(reg, 0);
	ck_assert_int_gt(tim, 0);
	ck_assert_int_eq(amio_cancel(r, (uint64_t)reg), -ENOENT);
	ck_assert_int_eq(amio_cancel(r, (uint64_t)tim), -ENOENT);
	ck_assert_int_eq(amio_set_deadline(r, (uint64_t)reg, 10), -ENOENT);
	ck_assert_int_eq(amio_set_deadline(r, (uint64_t)tim, 10), -ENOENT);
	o.pool = pool;
	id = amio_recv(r, fds[1], pool, &o);
	ck_assert_int_gt(id, 0);
	o.id = (uint64_t)id;
	idle(p, 20);
	ck_assert_int_eq(amio_cancel_timer(r, (uint64_t)id), -ENOENT);
	rc = amio_reregister(r, (uint64_t)id, AMIO_READ);
	ck_assert_msg(rc == -ENOENT, "reregister of a recv's id: %d", rc);
	rc = amio_deregister(r, (uint64_t)id);
	ck_assert_msg(rc == -ENOENT, "deregister of a recv's id: %d", rc);
	/* Whatever deregister did, the recv still works and ends with one DONE. */
	t_write_str(fds[0], "ping");
	IDLE_UNTIL(p, o.bytes >= 4);
	idle(p, 50);
	ck_assert_uint_eq(o.bytes, 4);
	ck_assert_int_eq(amio_cancel(r, (uint64_t)id), 0);
	pump(p, ops, 1, 3000);
	ck_assert_int_eq(o.done_res, -ECANCELED);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	ck_assert_int_eq(amio_cancel_timer(r, (uint64_t)tim), 0);
	ck_assert_int_eq(amio_deregister(r, (uint64_t)reg), 0);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* amio_recv: "-EINVAL (pool ... another registrar's)". */
START_TEST(a_pool_of_another_registrar_is_refused)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r, *r2;
	amio_pool *pool;
	int fds[2];

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r2), 0);
	ck_assert_int_eq(amio_pool_new(r, 4, 64, &pool), 0);
	t_tcp_pair(fds);
	ck_assert_int_eq(amio_recv(r2, fds[1], pool, NULL), -EINVAL);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r2);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- Pools ---------------------------------------------------------------- */

/* count x size above 2^32 (256 x 16 MiB, allowed: each within its limit):
 * the pool must hold every buffer whole. The bytes of a full buffer land
 * at its end without touching memory outside the pool (ASan). */
START_TEST(a_pool_of_more_than_4_gib_holds_full_buffers)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct op o = {0}, *ops[1] = {&o};
	size_t len = 3u << 20;
	unsigned char *data = malloc(len);
	int fds[2], rc;
	int64_t id;

	fill(data, len, 77);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	rc = amio_pool_new(r, 256, AMIO_POOL_MAX_SIZE, &pool);
	if (rc == -ENOMEM) { /* allowed: nothing to check */
		amio_registrar_free(r);
		amio_poller_free(p);
		free(data);
		return;
	}
	ck_assert_int_eq(rc, 0);
	o.copy = malloc(len);
	o.cap = len;
	o.pool = pool;
	t_tcp_pair(fds);
	id = amio_recv(r, fds[1], pool, &o);
	ck_assert_int_gt(id, 0);
	o.id = (uint64_t)id;
	for (size_t off = 0; off < len;) {
		ssize_t w = write(fds[0], data + off, len - off);

		if (w > 0)
			off += (size_t)w;
		idle(p, 2);
	}
	shutdown(fds[0], SHUT_WR);
	pump(p, ops, 1, 10000);
	ck_assert_uint_eq(o.bytes, len);
	ck_assert(memcmp(o.copy, data, len) == 0);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(fds[0]);
	close(fds[1]);
	free(o.copy);
	free(data);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* Pool of 1 buffer of 1 byte, consumer with cap 1: every byte once, in
 * order, then EOF. Writes of random sizes. */
START_TEST(a_one_byte_pool_delivers_every_byte_in_order)
{
	unsigned seed = test_seed(_i);
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct op o = {0}, *ops[1] = {&o};
	size_t len = 6000;
	unsigned char *data = malloc(len);
	int fds[2];
	int64_t id;

	srand(seed);
	fill(data, len, seed);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 1, 1, &pool), 0);
	o.copy = malloc(len);
	o.cap = len;
	o.pool = pool;
	t_tcp_pair(fds);
	id = amio_recv(r, fds[1], pool, &o);
	ck_assert_int_gt(id, 0);
	o.id = (uint64_t)id;
	for (size_t off = 0; off < len;) {
		size_t k = 1 + (size_t)rand() % 700;
		ssize_t w;

		if (k > len - off)
			k = len - off;
		w = write(fds[0], data + off, k);
		if (w > 0)
			off += (size_t)w;
		for (int j = rand() % 40; j > 0; j--) {
			amio_notification n[1];
			int rc = amio_poller_wait(p, n, 1, 0);

			ck_assert_int_ge(rc, 0);
			dispatch(n, rc);
		}
	}
	shutdown(fds[0], SHUT_WR);
	pump_cap(p, ops, 1, 1, 20000);
	ck_assert_uint_eq(o.bytes, len);
	ck_assert(memcmp(o.copy, data, len) == 0);
	ck_assert_int_eq(o.done_res, 0);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(fds[0]);
	close(fds[1]);
	free(o.copy);
	free(data);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* The peer writes and closes while the pool is empty (the consumer holds
 * the only buffer): every byte must still come, then DONE with res 0, not
 * an EOF that overtakes bytes still queued in the socket. */
START_TEST(eof_during_an_empty_pool_comes_after_every_byte)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct op o = {0}, *ops[1] = {&o};
	unsigned char data[300];
	int fds[2];
	int64_t id;

	fill(data, sizeof(data), 5);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 2, 8, &pool), 0);
	o.copy = malloc(sizeof(data));
	o.cap = sizeof(data);
	o.pool = pool;
	o.hold = true;
	t_tcp_pair(fds);
	id = amio_recv(r, fds[1], pool, &o);
	o.id = (uint64_t)id;
	ck_assert_int_eq(write(fds[0], data, sizeof(data)), (ssize_t)sizeof(data));
	close(fds[0]);
	IDLE_UNTIL(p, o.nheld >= 2);
	idle(p, 100); /* two buffers taken, held: the recv pauses */
	ck_assert_int_eq(o.nheld, 2);
	ck_assert_int_eq(o.done, 0);
	o.hold = false;
	for (int i = 0; i < o.nheld; i++)
		ck_assert_int_eq(amio_pool_put(pool, o.held[i]), 0);
	o.nheld = 0;
	pump_cap(p, ops, 1, 1, 5000);
	ck_assert_uint_eq(o.bytes, sizeof(data));
	ck_assert(memcmp(o.copy, data, sizeof(data)) == 0);
	ck_assert_int_eq(o.done_res, 0);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(fds[1]);
	free(o.copy);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* pool_free: -EBUSY while a recv runs, and after its DONE while a buffer is
 * still lent; 0 once it is back. A deadline on a starved recv still ends it. */
START_TEST(pool_free_is_busy_while_a_buffer_is_lent_after_done)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct op o = {0}, *ops[1] = {&o};
	int fds[2];
	int64_t id, t0;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 1, 4, &pool), 0);
	o.pool = pool;
	o.hold = true;
	t_tcp_pair(fds);
	id = amio_recv(r, fds[1], pool, &o);
	o.id = (uint64_t)id;
	t_write_str(fds[0], "0123456789");
	IDLE_UNTIL(p, o.nheld >= 1);
	idle(p, 50);
	ck_assert_int_eq(o.nheld, 1);
	ck_assert_int_eq(amio_pool_free(pool), -EBUSY);
	t0 = t_now_ms();
	ck_assert_int_eq(amio_set_deadline(r, o.id, 50), 0);
	pump(p, ops, 1, 3000);
	ck_assert_int_ge(t_now_ms() - t0, 49);
	ck_assert_int_eq(o.done_res, -ETIME);
	ck_assert_int_eq(amio_pool_free(pool), -EBUSY);
	ck_assert_int_eq(amio_pool_put(pool, o.held[0]), 0);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- Deadlines and cancel ------------------------------------------------- */

/* "0 cancels at once": DONE -ETIME without waiting. Then -ENOENT for a
 * finished id, for cancel and deadline alike. */
START_TEST(deadline_zero_ends_at_once_and_finished_ids_are_enoent)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct op o = {0}, *ops[1] = {&o};
	int fds[2];
	int64_t id;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 2, 16, &pool), 0);
	o.pool = pool;
	t_tcp_pair(fds);
	id = amio_recv(r, fds[1], pool, &o);
	o.id = (uint64_t)id;
	/* Ended without a timer: how soon is a latency (bench/properties.sh:
	 * row deadline-0); a 0 that waited for a timer would still pass. */
	ck_assert_int_eq(amio_set_deadline(r, o.id, 0), 0);
	pump(p, ops, 1, 5000);
	ck_assert_int_eq(o.done_res, -ETIME);
	ck_assert_int_eq(amio_set_deadline(r, o.id, 0), -ENOENT);
	ck_assert_int_eq(amio_set_deadline(r, o.id, 100), -ENOENT);
	ck_assert_int_eq(amio_cancel(r, o.id), -ENOENT);
	idle(p, 30);
	ck_assert_int_eq(o.notes, 1);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* Moving a deadline: later (not early), and earlier (fires at the new time). */
START_TEST(a_deadline_moves_both_ways)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct op a = {0}, b = {0};
	int fa[2], fb[2];
	int64_t t0, ta = 0, tb = 0;
	amio_notification n[8];

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 2, 16, &pool), 0);
	a.pool = b.pool = pool;
	t_tcp_pair(fa);
	t_tcp_pair(fb);
	a.id = (uint64_t)amio_recv(r, fa[1], pool, &a);
	b.id = (uint64_t)amio_recv(r, fb[1], pool, &b);
	/* b's first deadline is 60 s away: b ending within the 10 s this
	 * loop allows is the move earlier at work (how close to 100 ms it
	 * fires is bench/properties.sh's: row deadline-earlier). */
	t0 = t_now_ms();
	ck_assert_int_eq(amio_set_deadline(r, a.id, 30), 0);
	ck_assert_int_eq(amio_set_deadline(r, b.id, 60000), 0);
	ck_assert_int_eq(amio_set_deadline(r, a.id, 300), 0); /* later */
	ck_assert_int_eq(amio_set_deadline(r, b.id, 100), 0); /* earlier */
	while (!a.done || !b.done) {
		int rc = amio_poller_wait(p, n, 8, 10);

		ck_assert_int_ge(rc, 0);
		ck_assert_msg(t_now_ms() - t0 < 10000, "deadline never fired (a %d b %d)", a.done,
		              b.done);
		dispatch(n, rc);
		if (a.done && !ta)
			ta = t_now_ms() - t0;
		if (b.done && !tb)
			tb = t_now_ms() - t0;
	}
	ck_assert_msg(ta >= 299, "moved later to 300 ms, fired at %lld", (long long)ta);
	ck_assert_msg(tb >= 99, "moved earlier to 100 ms, fired at %lld", (long long)tb);
	ck_assert_int_eq(a.done_res, -ETIME);
	ck_assert_int_eq(b.done_res, -ETIME);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(fa[0]);
	close(fa[1]);
	close(fb[0]);
	close(fb[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* Cancel twice: -ENOENT the second time, as amio_deregister twice (amio.h:
 * "already cancelled"); the DONE is -ECANCELED, exactly one. */
START_TEST(cancel_twice_is_enoent)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	uint16_t port;
	int lfd = t_listen(&port);
	struct op o = {0}, *ops[1] = {&o};

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	o.id = (uint64_t)amio_accept(r, lfd, &o);
	ck_assert_int_eq(amio_cancel(r, o.id), 0);
	ck_assert_int_eq(amio_cancel(r, o.id), -ENOENT);
	pump(p, ops, 1, 3000);
	idle(p, 30);
	ck_assert_int_eq(o.notes, 1);
	ck_assert_int_eq(o.done_res, -ECANCELED);
	ck_assert_int_eq(o.done_events, AMIO_ACCEPT | AMIO_DONE);
	close(lfd);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* Cancel racing completion of small sends, seeded: each send ends with one
 * DONE, res = its length or -ECANCELED; -ENOENT from cancel only once the
 * DONE was made, so then it is the length; a round where every send went
 * whole puts exactly their bytes on the wire. */
START_TEST(cancel_racing_sends)
{
	enum { N = 6 };
	unsigned seed = test_seed(_i);
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	static unsigned char msg[N][20000];

	srand(seed);
	for (int i = 0; i < N; i++)
		memset(msg[i], 'a' + i, sizeof(msg[i]));
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	for (int round = 0; round < t_scale(60); round++) {
		struct op o[N];
		size_t len[N], total = 0, rd = 0;
		int fds[2], victim = rand() % N, crc = 1;
		static unsigned char got[N * 20000];
		ssize_t k;

		t_tcp_pair(fds);
		for (int i = 0; i < N; i++) {
			memset(&o[i], 0, sizeof(o[i]));
			len[i] = 1 + (size_t)rand() % sizeof(msg[i]);
			o[i].id =
			    (uint64_t)amio_send(r, fds[1], msg[i], len[i], rand() % 4 == 0, &o[i]);
			ck_assert_int_gt((int64_t)o[i].id, 0);
		}
		for (int j = rand() % 3; j > 0; j--) {
			amio_notification n[8];
			int rc = amio_poller_wait(p, n, 8, rand() % 2);

			ck_assert_int_ge(rc, 0);
			dispatch(n, rc);
		}
		crc = amio_cancel(r, o[victim].id);
		ck_assert_msg(crc == 0 || crc == -ENOENT, "cancel: %d", crc);
		if (o[victim].done)
			ck_assert_int_eq(crc, -ENOENT);
		while (true) {
			amio_notification n[8];
			int rc = amio_poller_wait(p, n, 8, 2), i;

			ck_assert_int_ge(rc, 0);
			dispatch(n, rc);
			while ((k = read(fds[0], got + rd, sizeof(got) - rd)) > 0)
				rd += (size_t)k;
			for (i = 0; i < N && o[i].done; i++)
				;
			if (i == N)
				break;
		}
		for (int i = 0; i < N; i++) {
			ck_assert_uint_eq(o[i].done_events, AMIO_SEND | AMIO_DONE);
			if (o[i].done_res == -ECANCELED)
				ck_assert_msg(i == victim, "round %d: send %d cancelled, victim %d",
				              round, i, victim);
			else
				ck_assert_msg(o[i].done_res == (int32_t)len[i],
				              "round %d: send %d res %d, len %zu", round, i,
				              o[i].done_res, len[i]);
			total += len[i];
		}
		if (crc == -ENOENT)
			ck_assert_int_eq(o[victim].done_res, (int32_t)len[victim]);
		if (o[victim].done_res == (int32_t)len[victim]) {
			size_t off = 0;

			shutdown(fds[1], SHUT_WR);
			for (int64_t end = t_now_ms() + 3000; rd < total && t_now_ms() < end;)
				if ((k = read(fds[0], got + rd, sizeof(got) - rd)) > 0)
					rd += (size_t)k;
			ck_assert_uint_eq(rd, total);
			for (int i = 0; i < N; i++) {
				for (size_t b = 0; b < len[i]; b++)
					if (got[off + b] != 'a' + i)
						ck_abort_msg("round %d: byte %zu of send %d is %c",
						             round, b, i, got[off + b]);
				off += len[i];
			}
		}
		close(fds[0]);
		close(fds[1]);
	}
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- Sends ---------------------------------------------------------------- */

/* sendv with empty pieces between full ones: res = the total, bytes as given. */
START_TEST(sendv_with_empty_pieces_in_the_middle)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	struct op o = {0}, *ops[1] = {&o};
	char a[] = "head", c[] = "-body-", e[] = "tail", got[64] = {0};
	struct iovec v[6] = {{a, 4}, {NULL, 0}, {c, 6}, {a, 0}, {NULL, 0}, {e, 4}};
	int fds[2];
	ssize_t k;
	size_t rd = 0;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	t_tcp_pair(fds);
	o.id = (uint64_t)amio_sendv(r, fds[1], v, 6, 0, &o);
	ck_assert_int_gt((int64_t)o.id, 0);
	pump(p, ops, 1, 3000);
	ck_assert_int_eq(o.done_res, 14);
	for (int64_t end = t_now_ms() + 2000; rd < 14 && t_now_ms() < end;)
		if ((k = read(fds[0], got + rd, sizeof(got) - rd)) > 0)
			rd += (size_t)k;
	ck_assert_str_eq(got, "head-body-tail");
	/* ZC too, and all pieces empty but one */
	memset(&o, 0, sizeof(o));
	v[0].iov_len = 0;
	v[2].iov_len = 0;
	o.id = (uint64_t)amio_sendv(r, fds[1], v, 6, AMIO_SEND_ZC, &o);
	ck_assert_int_gt((int64_t)o.id, 0);
	pump(p, ops, 1, 3000);
	ck_assert_int_eq(o.done_res, 4);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

struct slow_reader {
	int fd;
	size_t want;
	unsigned char *got;
	size_t rd;
	unsigned seed;
};

static void *slow_reader_main(void *arg)
{
	struct slow_reader *s = arg;
	unsigned seed = s->seed;

	while (s->rd < s->want) {
		size_t k = 1 + (seed = seed * 1103515245u + 12345u) % (256u << 10);
		ssize_t n;

		if (k > s->want - s->rd)
			k = s->want - s->rd;
		n = read(s->fd, s->got + s->rd, k);
		if (n > 0)
			s->rd += (size_t)n;
		else if (n == 0)
			break;
		else if (errno == EAGAIN)
			usleep(200);
		if ((seed >> 8) % 64 == 0)
			usleep(2000);
	}
	return NULL;
}

/* 64 MiB in one send (and in one ZC send) to a reader that takes random
 * bites and naps: DONE res == the whole length, every byte in order. The
 * buffer is overwritten right after DONE: what the reader got must not
 * change (ZC: DONE only once the kernel no longer reads the pages). */
START_TEST(a_64_mib_send_to_a_slow_reader)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	size_t len = (size_t)t_scale(64 << 20);
	unsigned char *buf = malloc(len), *expect = malloc(len);
	struct op o = {0}, *ops[1] = {&o};
	struct slow_reader s = {.want = len, .seed = (unsigned)_i + 1};
	pthread_t t;
	int fds[2];

	fill(expect, len, 31);
	memcpy(buf, expect, len);
	s.got = malloc(len);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	t_tcp_pair(fds);
	s.fd = fds[0];
	pthread_create(&t, NULL, slow_reader_main, &s);
	o.id = (uint64_t)amio_send(r, fds[1], buf, len, _i ? AMIO_SEND_ZC : 0, &o);
	ck_assert_int_gt((int64_t)o.id, 0);
	pump(p, ops, 1, 60000);
	memset(buf, 0xee, len);
	ck_assert_int_eq(o.done_res, (int32_t)len);
	pthread_join(t, NULL);
	ck_assert_uint_eq(s.rd, len);
	ck_assert(memcmp(s.got, expect, len) == 0);
	close(fds[0]);
	close(fds[1]);
	free(buf);
	free(expect);
	free(s.got);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

struct sender_thread {
	amio_poller *p;
	int fd;
	unsigned char tag;
	int count;
	size_t len;
	int done;
	int bad;
};

/* Inbox-mode sender: count sends of len bytes of tag, one after another
 * queued at once, then waits for every DONE. */
static void *sender_main(void *arg)
{
	struct sender_thread *s = arg;
	amio_registrar *r;
	unsigned char *buf = malloc(s->len);
	amio_notification n[16];

	memset(buf, s->tag, s->len);
	ck_assert_int_eq(amio_registrar_new(s->p, AMIO_INBOX, &r), 0);
	for (int i = 0; i < s->count; i++)
		ck_assert_int_gt(amio_send(r, s->fd, buf, s->len, 0, NULL), 0);
	while (s->done < s->count) {
		int rc = amio_registrar_wait(r, n, 16, 10000);

		ck_assert_int_gt(rc, 0);
		for (int i = 0; i < rc; i++) {
			ck_assert_uint_eq(n[i].events, AMIO_SEND | AMIO_DONE);
			s->bad += n[i].res != (int32_t)s->len;
			s->done++;
		}
	}
	amio_registrar_free(r);
	free(buf);
	return NULL;
}

/* Two registrars sending on one socket: "amio keeps one in flight per
 * socket", so messages never interleave, even across registrars. A slow
 * reader makes every send short. */
START_TEST(sends_through_two_registrars_never_interleave)
{
	amio_poller *p = t_poller(NULL);
	size_t len = 1 << 20;
	int count = 6;
	struct sender_thread a = {.tag = 'A', .count = count, .len = len},
	                     b = {.tag = 'B', .count = count, .len = len};
	struct slow_reader s = {.want = 2 * (size_t)count * len, .seed = 9};
	pthread_t pt, ta, tb, tr;
	int fds[2];

	s.got = malloc(s.want);
	t_tcp_pair(fds);
	s.fd = fds[0];
	a.p = b.p = p;
	a.fd = b.fd = fds[1];
	pthread_create(&pt, NULL, t_run_poller, p);
	pthread_create(&tr, NULL, slow_reader_main, &s);
	pthread_create(&ta, NULL, sender_main, &a);
	pthread_create(&tb, NULL, sender_main, &b);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	pthread_join(tr, NULL);
	t_stop_poller(p, pt);
	ck_assert_int_eq(a.bad + b.bad, 0);
	ck_assert_uint_eq(s.rd, s.want);
	for (size_t off = 0; off < s.want; off += len)
		for (size_t k = 1; k < len; k++)
			if (s.got[off + k] != s.got[off])
				ck_abort_msg("message %zu interleaved at byte %zu: %c then %c",
				             off / len, k, s.got[off], s.got[off + k]);
	close(fds[0]);
	close(fds[1]);
	free(s.got);
	amio_poller_free(p);
}
END_TEST

/* Many sends queued, then the peer resets: every send ends with exactly one
 * DONE; once one failed, none after it succeeds (in order on one socket). */
START_TEST(many_sends_queued_then_the_peer_resets)
{
	enum { N = 40 };
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	static unsigned char buf[1 << 20]; /* 40 MiB in all: most stay queued */
	struct op o[N], *ops[N];
	int fds[2], failed_at = -1;
	char sink[4096];

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	t_tcp_pair(fds);
	for (int i = 0; i < N; i++) {
		memset(&o[i], 0, sizeof(o[i]));
		ops[i] = &o[i];
		o[i].id = (uint64_t)amio_send(r, fds[1], buf, sizeof(buf), i % 3 == 1, &o[i]);
		ck_assert_int_gt((int64_t)o[i].id, 0);
	}
	IDLE_UNTIL(p, read(fds[0], sink, sizeof(sink)) > 0); /* the sends have begun */
	set_rst_on_close(fds[0]);
	close(fds[0]);
	pump(p, ops, N, 5000);
	idle(p, 30);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(o[i].notes, 1);
		if (o[i].done_res < 0 && failed_at < 0)
			failed_at = i;
		if (failed_at >= 0)
			ck_assert_msg(o[i].done_res < 0, "send %d: res %d after send %d failed", i,
			              o[i].done_res, failed_at);
		else
			ck_assert_int_eq(o[i].done_res, (int32_t)sizeof(buf));
	}
	ck_assert_int_ge(failed_at, 0);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* A send on something that is not a socket: a clear -errno, sync or in the
 * one DONE. */
START_TEST(a_send_on_a_pipe_ends_with_an_errno)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	struct op o = {0}, *ops[1] = {&o};
	int pp[2];
	int64_t id;

	ck_assert_int_eq(pipe2(pp, O_NONBLOCK | O_CLOEXEC), 0);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	id = amio_send(r, pp[1], "x", 1, 0, &o);
	if (id > 0) {
		o.id = (uint64_t)id;
		pump(p, ops, 1, 3000);
		ck_assert_msg(o.done_res < 0 || o.done_res == 1, "res %d", o.done_res);
	} else {
		ck_assert_int_lt(id, 0);
	}
	close(pp[0]);
	close(pp[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- Recv ends ------------------------------------------------------------ */

/* Bytes then an RST: the bytes read come in order, then one DONE with
 * -ECONNRESET (or 0); nothing after. */
START_TEST(recv_on_a_socket_the_peer_resets)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct op o = {0}, *ops[1] = {&o};
	unsigned char data[5000];
	int fds[2];

	fill(data, sizeof(data), 1);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 4, 512, &pool), 0);
	o.pool = pool;
	o.copy = malloc(sizeof(data));
	o.cap = sizeof(data);
	t_tcp_pair(fds);
	o.id = (uint64_t)amio_recv(r, fds[1], pool, &o);
	ck_assert_int_eq(write(fds[0], data, sizeof(data)), (ssize_t)sizeof(data));
	set_rst_on_close(fds[0]);
	close(fds[0]);
	pump(p, ops, 1, 3000);
	idle(p, 30);
	ck_assert_msg(o.done_res == -ECONNRESET || o.done_res == 0, "res %d", o.done_res);
	ck_assert(memcmp(o.copy, data, o.bytes) == 0);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(fds[1]);
	free(o.copy);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* A recv on a listening socket: one DONE with an errno, no deaf id. */
START_TEST(recv_on_a_listening_socket_ends_with_an_errno)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct op o = {0}, *ops[1] = {&o};
	uint16_t port;
	int lfd = t_listen(&port);
	int64_t id;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 4, 512, &pool), 0);
	o.pool = pool;
	id = amio_recv(r, lfd, pool, &o);
	if (id > 0) {
		o.id = (uint64_t)id;
		pump(p, ops, 1, 3000);
		ck_assert_int_lt(o.done_res, 0);
	}
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(lfd);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- Accept --------------------------------------------------------------- */

/* A listener shut down under a running accept: the accept ends with one
 * DONE carrying an -errno (accept4 gives EINVAL: "not listening"), instead
 * of hanging on a socket that will never be ready again. */
START_TEST(an_accept_on_a_listener_shut_down_ends)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	uint16_t port;
	int lfd = t_listen(&port), c;
	struct op o = {0}, *ops[1] = {&o};

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	o.id = (uint64_t)amio_accept(r, lfd, &o);
	c = t_connect(port);
	IDLE_UNTIL(p, o.accepts >= 1);
	idle(p, 50);
	ck_assert_int_eq(o.accepts, 1);
	ck_assert_int_eq(shutdown(lfd, SHUT_RDWR), 0);
	pump(p, ops, 1, 3000);
	ck_assert_int_lt(o.done_res, 0);
	ck_assert_int_ne(o.done_res, -ECANCELED);
	ck_assert_uint_eq(o.done_events, AMIO_ACCEPT | AMIO_DONE);
	close(o.fds[0]);
	close(c);
	close(lfd);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

struct acceptor {
	amio_poller *p;
	int lfd;
	int want;
	int sleep_ms;
	struct op o;
	int bad_flags;
	uint64_t refused;
};

/* Inbox worker: start an accept, sleep (inbox fills), then take all. */
static void *acceptor_main(void *arg)
{
	struct acceptor *a = arg;
	amio_registrar *r;
	amio_notification n[4];

	ck_assert_int_eq(amio_registrar_new(a->p, AMIO_INBOX, &r), 0);
	a->o.id = (uint64_t)amio_accept(r, a->lfd, &a->o);
	ck_assert_int_gt((int64_t)a->o.id, 0);
	usleep((useconds_t)a->sleep_ms * 1000);
	for (int64_t end = t_now_ms() + 10000; a->o.accepts < a->want && t_now_ms() < end;) {
		int rc = amio_registrar_wait(r, n, 1 + (size_t)(a->o.accepts % 4), 100);

		ck_assert_int_ge(rc, 0);
		dispatch(n, rc);
	}
	for (int i = 0; i < a->o.accepts; i++) {
		int fl = fcntl(a->o.fds[i], F_GETFL), fd = fcntl(a->o.fds[i], F_GETFD);

		a->bad_flags += !(fl & O_NONBLOCK) || !(fd & FD_CLOEXEC);
	}
	ck_assert_int_eq(amio_cancel(r, a->o.id), 0);
	/* (a DONE lost here is cancel_of_an_accept_that_held_connections_...) */
	for (int64_t end = t_now_ms() + 3000; !a->o.done && t_now_ms() < end;) {
		int rc = amio_registrar_wait(r, n, 4, 100);

		ck_assert_int_ge(rc, 0);
		dispatch(n, rc);
	}
	amio_registrar_free(r);
	return NULL;
}

/* Inbox of 2 entries, 300 connections while the worker sleeps: the accept
 * pauses (hold of 64) and nothing is lost: all 300 come, none refused. */
START_TEST(accept_into_a_full_inbox_loses_no_connection)
{
	static const int cases[][3] = {/* inbox_entries, connections, worker's nap ms */
	                               {2, 300, 300}, {0, 300, 300}, {2, 5, 0},
	                               {2, 3, 300},   {2, 20, 300},  {2, 300, 0}};
	struct amio_poller_config cfg = {.inbox_entries = (uint32_t)cases[_i][0]};
	amio_poller *p = t_poller(&cfg);
	uint16_t port;
	int want = cases[_i][1];
	struct acceptor a = {.p = p, .want = want, .sleep_ms = cases[_i][2]};
	struct amio_poller_stats st;
	int clients[300];
	pthread_t pt, wt;

	a.lfd = t_listen(&port);
	pthread_create(&pt, NULL, t_run_poller, p);
	pthread_create(&wt, NULL, acceptor_main, &a);
	usleep(30000);
	for (int i = 0; i < want; i++)
		clients[i] = t_connect(port);
	pthread_join(wt, NULL);
	t_stop_poller(p, pt);
	amio_poller_stats(p, &st);
	ck_assert_msg(a.o.accepts == want, "%d of %d accepted, %llu refused, done %d res %d",
	              a.o.accepts, want, (unsigned long long)st.accepts_refused, a.o.done,
	              a.o.done_res);
	ck_assert_int_eq(a.bad_flags, 0);
	ck_assert_uint_eq(st.accepts_refused, 0);
	for (int i = 0; i < want; i++) {
		close(clients[i]);
		close(a.o.fds[i]);
	}
	close(a.lfd);
	amio_poller_free(p);
}
END_TEST

struct drain_acceptor {
	amio_poller *p;
	int lfd;
	struct op o;
	int64_t done_after_ms; /* from the cancel to its DONE, -1: none in 3 s */
	uint16_t port;         /* set: connect once more after the drain */
	bool late_accepted;
};

/* Inbox worker: start an accept, nap while connections pile up, take them
 * all (until 300 ms of silence), then cancel and time the DONE. */
static void *drain_acceptor_main(void *arg)
{
	struct drain_acceptor *a = arg;
	amio_registrar *r;
	amio_notification n[4];
	int64_t t0;

	ck_assert_int_eq(amio_registrar_new(a->p, AMIO_INBOX, &r), 0);
	a->o.id = (uint64_t)amio_accept(r, a->lfd, &a->o);
	ck_assert_int_gt((int64_t)a->o.id, 0);
	usleep(300000);
	for (int rc; (rc = amio_registrar_wait(r, n, 1 + (size_t)(a->o.accepts % 4), 300)) > 0;)
		dispatch(n, rc);
	ck_assert_int_eq(a->o.done, 0);
	if (a->port) { /* one more, after the drain: still heard? */
		int before = a->o.accepts, c = t_connect(a->port);

		for (t0 = t_now_ms(); a->o.accepts == before && t_now_ms() - t0 < 2000;) {
			int rc = amio_registrar_wait(r, n, 4, 100);

			ck_assert_int_ge(rc, 0);
			dispatch(n, rc);
		}
		close(c);
		a->late_accepted = a->o.accepts > before;
	}
	ck_assert_int_eq(amio_cancel(r, a->o.id), 0);
	t0 = t_now_ms();
	a->done_after_ms = -1;
	while (t_now_ms() - t0 < 3000 && !a->o.done) {
		int rc = amio_registrar_wait(r, n, 4, 100);

		ck_assert_int_ge(rc, 0);
		dispatch(n, rc);
	}
	if (a->o.done)
		a->done_after_ms = t_now_ms() - t0;
	for (int i = 0; i < a->o.accepts; i++)
		close(a->o.fds[i]);
	amio_registrar_free(r);
	return NULL;
}

/* An inbox of 2 entries and 300 connections while its worker naps (the
 * accept holds them, then pauses): once they are all taken, amio_cancel
 * must still bring the accept's DONE (-ECANCELED). */
START_TEST(cancel_of_an_accept_that_held_connections_brings_its_done)
{
	struct amio_poller_config cfg = {.inbox_entries = 2};
	amio_poller *p = t_poller(&cfg);
	uint16_t port;
	struct drain_acceptor a = {.p = p};
	int clients[300];
	pthread_t pt, wt;

	a.lfd = t_listen(&port);
	if (_i)
		a.port = port;
	pthread_create(&pt, NULL, t_run_poller, p);
	pthread_create(&wt, NULL, drain_acceptor_main, &a);
	usleep(30000);
	for (int i = 0; i < 300; i++)
		clients[i] = t_connect(port);
	pthread_join(wt, NULL);
	t_stop_poller(p, pt);
	ck_assert_msg(a.done_after_ms >= 0, "no DONE 3 s after the cancel (%d accepted)",
	              a.o.accepts);
	if (a.port)
		ck_assert_msg(a.late_accepted, "a connection after the drain was never reported");
	ck_assert_int_eq(a.o.done_res, -ECANCELED);
	for (int i = 0; i < 300; i++)
		close(clients[i]);
	close(a.lfd);
	amio_poller_free(p);
}
END_TEST

/* ---- Inbox echo with tiny queues ------------------------------------------ */

struct echo {
	amio_poller *p;
	int fd;
	uint32_t count, size;
	size_t want, echoed;
	int sends_live;
};

/* Echo through completions only: each received chunk is sent back from its
 * buffer, given back on the send's DONE. Checks each recv note comes before
 * its op's DONE, and the recv never ends early. */
static void *echo_main(void *arg)
{
	struct echo *w = arg;
	amio_registrar *r;
	amio_pool *pool;
	amio_notification n[3];
	int64_t rid;
	int rc;

	ck_assert_int_eq(amio_registrar_new(w->p, AMIO_INBOX, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, w->count, w->size, &pool), 0);
	while ((rid = amio_recv(r, w->fd, pool, NULL)) == -EAGAIN) /* a queue of 1 */
		ck_assert_int_eq(amio_registrar_wait_room(r, 1000), 0);
	ck_assert_int_gt(rid, 0);
	while (w->echoed < w->want) {
		rc = amio_registrar_wait(r, n, 1 + (size_t)(w->echoed % 3), 5000);
		ck_assert_msg(rc > 0, "wait %d with %zu of %zu echoed", rc, w->echoed, w->want);
		for (int i = 0; i < rc; i++) {
			if (n[i].id == (uint64_t)rid) {
				int64_t id;

				ck_assert_msg(n[i].events == AMIO_RECV, "recv events %#x res %d",
				              n[i].events, n[i].res);
				while ((id = amio_send(r, w->fd, n[i].buf, (size_t)n[i].res, 0,
				                       n[i].buf)) == -EAGAIN)
					ck_assert_int_eq(amio_registrar_wait_room(r, 1000), 0);
				ck_assert_int_gt(id, 0);
				w->sends_live++;
			} else {
				ck_assert_uint_eq(n[i].events, AMIO_SEND | AMIO_DONE);
				ck_assert_int_gt(n[i].res, 0);
				w->echoed += (size_t)n[i].res;
				w->sends_live--;
				ck_assert_int_eq(amio_pool_put(pool, n[i].data), 0);
			}
		}
	}
	ck_assert_int_eq(amio_pool_free(pool), -EBUSY);
	while ((rc = amio_cancel(r, (uint64_t)rid)) == -EAGAIN)
		ck_assert_int_eq(amio_registrar_wait_room(r, 1000), 0);
	ck_assert_int_eq(rc, 0);
	for (bool done = false; !done;) {
		rc = amio_registrar_wait(r, n, 3, 5000);

		ck_assert_int_gt(rc, 0);
		for (int i = 0; i < rc; i++) {
			ck_assert_uint_eq(n[i].id, (uint64_t)rid);
			ck_assert_uint_eq(n[i].events, AMIO_RECV | AMIO_DONE);
			done = true;
		}
	}
	ck_assert_int_eq(amio_pool_free(pool), 0);
	amio_registrar_free(r);
	return NULL;
}

/* Messages of 1 byte to 64 KiB, split at random, echoed through an inbox
 * worker with an inbox of 2 entries (3 with the loop's pools), tiny rings
 * and small pools: the echo is byte for byte what was sent. */
START_TEST(echo_through_tiny_queues_and_pools)
{
	static const uint32_t pools[][2] = {{1, 1}, {2, 7}, {4, 1500}, {1, 65536}};
	unsigned seed = test_seed(_i);
	struct amio_poller_config cfg = {.inbox_entries = 2, .sq_entries = 2, .queue_entries = 2};
	amio_poller *p = t_poller(&cfg);
	struct echo w = {.p = p, .count = pools[_i][0], .size = pools[_i][1]};
	size_t sent = 0, rd = 0;
	unsigned char *data, *back;
	pthread_t pt, wt;
	int fds[2];

	w.want = (size_t)t_scale(_i == 0 ? 20000 : 400000);
	data = malloc(w.want);
	back = malloc(w.want);
	fill(data, w.want, seed);
	srand(seed);
	t_tcp_pair(fds);
	w.fd = fds[1];
	pthread_create(&pt, NULL, t_run_poller, p);
	pthread_create(&wt, NULL, echo_main, &w);
	for (int64_t end = t_now_ms() + 60000; rd < w.want;) {
		ssize_t k;

		ck_assert_msg(t_now_ms() < end, "echo: %zu of %zu back", rd, w.want);
		if (sent < w.want) {
			size_t m = 1 + (size_t)rand() % (rand() % 8 ? 512 : 65536);

			if (m > w.want - sent)
				m = w.want - sent;
			k = write(fds[0], data + sent, m);
			if (k > 0)
				sent += (size_t)k;
		}
		while ((k = read(fds[0], back + rd, w.want - rd)) > 0)
			rd += (size_t)k;
		if (sent == w.want)
			usleep(100);
	}
	pthread_join(wt, NULL);
	t_stop_poller(p, pt);
	ck_assert(memcmp(data, back, w.want) == 0);
	close(fds[0]);
	close(fds[1]);
	free(data);
	free(back);
	amio_poller_free(p);
}
END_TEST

/* ---- Many operations, tiny rings, Amy mode with cap 1 --------------------- */

START_TEST(many_recvs_through_tiny_rings_and_cap_one)
{
	enum { N = 32 };
	unsigned seed = test_seed(_i);
	struct amio_poller_config cfg = {.sq_entries = 2, .queue_entries = 4};
	amio_poller *p = t_poller(&cfg);
	amio_registrar *r;
	amio_pool *pool;
	struct op o[N], *ops[N];
	int fds[N][2];
	size_t len = 20000;
	unsigned char *data = malloc(len);
	size_t off[N] = {0};

	srand(seed);
	fill(data, len, seed);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 4, 100, &pool), 0);
	for (int i = 0; i < N; i++) {
		int64_t id;

		memset(&o[i], 0, sizeof(o[i]));
		ops[i] = &o[i];
		o[i].pool = pool;
		o[i].copy = malloc(len);
		o[i].cap = len;
		t_tcp_pair(fds[i]);
		while ((id = amio_recv(r, fds[i][1], pool, &o[i])) == -EAGAIN) {
			amio_notification n[1];
			int rc = amio_poller_wait(p, n, 1, 0);

			ck_assert_int_ge(rc, 0);
			dispatch(n, rc);
		}
		ck_assert_int_gt(id, 0);
		o[i].id = (uint64_t)id;
	}
	for (int left = N; left > 0;) {
		int i = rand() % N;
		amio_notification n[1];
		int rc;

		if (off[i] < len) {
			size_t k = 1 + (size_t)rand() % 3000;
			ssize_t w;

			if (k > len - off[i])
				k = len - off[i];
			w = write(fds[i][0], data + off[i], k);
			if (w > 0)
				off[i] += (size_t)w;
			if (off[i] == len) {
				shutdown(fds[i][0], SHUT_WR);
				left--;
			}
		}
		rc = amio_poller_wait(p, n, 1, 0);
		ck_assert_int_ge(rc, 0);
		dispatch(n, rc);
	}
	pump_cap(p, ops, N, 1, 20000);
	for (int i = 0; i < N; i++) {
		ck_assert_uint_eq(o[i].bytes, len);
		ck_assert(memcmp(o[i].copy, data, len) == 0);
		ck_assert_int_eq(o[i].done_res, 0);
		free(o[i].copy);
		close(fds[i][0]);
		close(fds[i][1]);
	}
	ck_assert_int_eq(amio_pool_free(pool), 0);
	free(data);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- Ends of lives -------------------------------------------------------- */

/* An inbox registrar freed while its accept holds connections nobody took,
 * its recv is paused on buffers its worker held, and a send is blocked:
 * no crash, no leak (ASan), and no fd left behind. */
START_TEST(freeing_an_inbox_registrar_with_held_work)
{
	struct amio_poller_config cfg = {.inbox_entries = 2};
	amio_poller *p = t_poller(&cfg);
	amio_registrar *r;
	amio_pool *pool;
	uint16_t port;
	int lfd = t_listen(&port), fds[2], before, clients[100];
	size_t big = 8 << 20;
	unsigned char *buf = calloc(1, big);
	amio_notification n[2] = {0};
	int got;
	pthread_t pt;

	t_tcp_pair(fds);
	before = t_count_fds();
	pthread_create(&pt, NULL, t_run_poller, p);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 1, 16, &pool), 0);
	ck_assert_int_gt(amio_accept(r, lfd, NULL), 0);
	ck_assert_int_gt(amio_recv(r, fds[1], pool, NULL), 0);
	ck_assert_int_gt(amio_send(r, fds[1], buf, big, 0, NULL), 0);
	ck_assert_int_gt(amio_send(r, fds[1], buf, 100, 0, NULL), 0);
	for (int i = 0; i < 100; i++)
		clients[i] = t_connect(port);
	t_write_str(fds[0], "some bytes for a pool of one buffer");
	usleep(100000);
	got = amio_registrar_wait(r, n, 2, 5000); /* take a couple, keep them */
	ck_assert_int_gt(got, 0);
	usleep(50000);
	amio_registrar_free(r);
	usleep(100000);
	t_stop_poller(p, pt);
	amio_poller_free(p);
	for (int i = 0; i < 100; i++)
		close(clients[i]);
	for (int i = 0; i < got; i++)
		if ((n[i].events & AMIO_ACCEPT) && n[i].res >= 0)
			close(n[i].res);
	ck_assert_int_le(t_count_fds(), before);
	close(fds[0]);
	close(fds[1]);
	close(lfd);
	free(buf);
}
END_TEST

/* The poller freed (Amy mode) with sends blocked, a recv paused on an empty
 * pool with a buffer still lent, and an accept holding connections; also
 * with everything still queued (never applied). No crash, no leak, no fd. */
START_TEST(freeing_the_poller_with_operations_in_flight)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r, *q;
	amio_pool *pool, *pool2;
	uint16_t port;
	int lfd = t_listen(&port), fds[2], before, clients[20], got;
	size_t big = 16 << 20;
	unsigned char *buf = calloc(1, big);
	amio_notification n[64];

	t_tcp_pair(fds);
	before = t_count_fds();
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &q), 0);
	ck_assert_int_eq(amio_pool_new(r, 1, 16, &pool), 0);
	ck_assert_int_eq(amio_pool_new(q, 2, 16, &pool2), 0);
	ck_assert_int_gt(amio_accept(r, lfd, NULL), 0);
	ck_assert_int_gt(amio_recv(r, fds[1], pool, NULL), 0);
	ck_assert_int_gt(amio_send(r, fds[1], buf, big, AMIO_SEND_ZC, NULL), 0);
	ck_assert_int_gt(amio_send(r, fds[1], buf, 100, 0, NULL), 0);
	t_write_str(fds[0], "hello there");
	for (int i = 0; i < 20; i++)
		clients[i] = t_connect(port);
	got = amio_poller_wait(p, n, 1, 100); /* one handed out, the rest wait */
	ck_assert_int_ge(got, 0);
	if (got == 1 && (n[0].events & AMIO_ACCEPT) && n[0].res >= 0)
		close(n[0].res); /* ours now */
	/* Queued on q, never applied: the poll thread does not wait again. */
	ck_assert_int_gt(amio_recv(q, fds[0], pool2, NULL), 0);
	ck_assert_int_gt(amio_send(q, fds[0], buf, big, 0, NULL), 0);
	ck_assert_int_eq(amio_poller_stop(p), 0);
	amio_poller_free(p);
	ck_assert_int_eq(amio_send(r, fds[1], buf, 1, 0, NULL), -ESHUTDOWN);
	ck_assert_int_eq(amio_cancel(q, 1), -ESHUTDOWN);
	amio_registrar_free(q);
	amio_registrar_free(r);
	for (int i = 0; i < 20; i++)
		close(clients[i]);
	if (t_count_fds() > before)
		show_fds();
	ck_assert_int_le(t_count_fds(), before);
	close(fds[0]);
	close(fds[1]);
	close(lfd);
	free(buf);
}
END_TEST

/* A deadline on a send the peer never reads: DONE -ETIME, not early; the
 * sends queued behind it on the socket each end with exactly one DONE. */
START_TEST(a_deadline_ends_a_blocked_send_and_those_behind_it_end_too)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	size_t len = 32 << 20;
	unsigned char *buf = calloc(1, len);
	struct op a = {0}, b = {0}, c = {0}, *ops[3] = {&a, &b, &c};
	struct iovec v[2] = {{buf, 10}, {buf, 20}};
	int fds[2];
	int64_t t0;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	t_tcp_pair(fds);
	a.id = (uint64_t)amio_send(r, fds[1], buf, len, 0, &a);
	b.id = (uint64_t)amio_send(r, fds[1], buf, 100, 0, &b);
	c.id = (uint64_t)amio_sendv(r, fds[1], v, 2, AMIO_SEND_ZC, &c);
	t0 = t_now_ms();
	ck_assert_int_eq(amio_set_deadline(r, a.id, 80), 0);
	pump(p, ops, 1, 3000);
	ck_assert_int_ge(t_now_ms() - t0, 79);
	ck_assert_int_eq(a.done_res, -ETIME);
	if (!b.done)
		ck_assert_int_eq(amio_set_deadline(r, b.id, 0), 0);
	if (!c.done)
		ck_assert_int_eq(amio_cancel(r, c.id), 0);
	pump(p, ops, 3, 3000);
	ck_assert_msg(b.done_res == 100 || b.done_res == -ETIME, "res %d", b.done_res);
	ck_assert_msg(c.done_res == 30 || c.done_res == -ECANCELED, "res %d", c.done_res);
	idle(p, 30);
	ck_assert_int_eq(a.notes + b.notes + c.notes, 3);
	close(fds[0]);
	close(fds[1]);
	free(buf);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* A zero-copy send the peer never reads, given a deadline (or cancelled):
 * its DONE -ETIME (-ECANCELED) comes once the kernel let go of its pages.
 * A stalled peer pins the pages of what it has not acknowledged, cancel or
 * not (io_uring posts the notification CQE only then), so amio.h tells the
 * caller to abort the connection with connect(fd, AF_UNSPEC): the fd stays
 * open, the unsent data is dropped, and the DONE must then come at once
 * (shutdown() would not release them: probed on 6.18). */
START_TEST(a_deadline_ends_a_blocked_zero_copy_send)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	size_t len = 32 << 20;
	unsigned char *buf = calloc(1, len);
	struct op a = {0};
	struct sockaddr unspec = {.sa_family = AF_UNSPEC};
	int fds[2];
	int64_t t0;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	t_tcp_pair(fds);
	a.id = (uint64_t)amio_send(r, fds[1], buf, len, AMIO_SEND_ZC, &a);
	idle(p, 50);
	if (_i)
		ck_assert_int_eq(amio_cancel(r, a.id), 0);
	else
		ck_assert_int_eq(amio_set_deadline(r, a.id, 50), 0);
	idle(p, 200);
	ck_assert_int_eq(connect(fds[1], &unspec, sizeof(unspec)), 0);
	t0 = t_now_ms();
	while (!a.done && t_now_ms() - t0 < 2000)
		idle(p, 10);
	ck_assert_msg(a.done, "no DONE 2 s after the connection was aborted (%s)",
	              _i ? "cancel" : "deadline");
	ck_assert_int_eq(a.done_res, _i ? -ECANCELED : -ETIME);
	close(fds[0]);
	close(fds[1]);
	free(buf);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ATTACK_ONLY=substring runs only the tests whose name contains it. */
static bool wanted(const char *name)
{
	const char *only = getenv("ATTACK_ONLY");

	return !only || strstr(name, only);
}

#define ADD(t)                                                                                     \
	do {                                                                                       \
		if (wanted(#t))                                                                    \
			tcase_add_test(tc, t);                                                     \
	} while (0)
#define ADD_LOOP(t, a, b)                                                                          \
	do {                                                                                       \
		if (wanted(#t))                                                                    \
			tcase_add_loop_test(tc, t, a, b);                                          \
	} while (0)

/* Amy mode: connections the accept took but no wait has handed out yet
 * when the poller is freed are nobody's: amio must close them. */
START_TEST(freeing_the_poller_closes_accepted_connections_not_handed_out)
{
	uint16_t port;
	int lfd = t_listen(&port), before = t_count_fds(), clients[20], got;
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification n[1];

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_gt(amio_accept(r, lfd, NULL), 0);
	ck_assert_int_eq(amio_poller_wait(p, n, 1, 0), 0);
	for (int i = 0; i < 20; i++)
		clients[i] = t_connect(port);
	usleep(50000);
	got = amio_poller_wait(p, n, 1, 5000); /* one handed out: ours to close */
	ck_assert_int_eq(got, 1);
	ck_assert_uint_eq(n[0].events, AMIO_ACCEPT);
	close(n[0].res);
	amio_registrar_free(r);
	amio_poller_free(p);
	for (int i = 0; i < 20; i++)
		close(clients[i]);
	if (t_count_fds() > before)
		show_fds();
	ck_assert_int_eq(t_count_fds(), before);
	close(lfd);
}
END_TEST

/* A deadline that outlives its operation sends nothing more; a buffer of
 * one pool is refused by another. */
START_TEST(a_deadline_outliving_its_operation_is_silent)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool, *other;
	struct op s = {0}, v = {0}, *ops[2] = {&s, &v};
	int fds[2];

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 2, 16, &pool), 0);
	ck_assert_int_eq(amio_pool_new(r, 2, 16, &other), 0);
	t_tcp_pair(fds);
	v.pool = pool;
	v.hold = true;
	v.id = (uint64_t)amio_recv(r, fds[1], pool, &v);
	s.id = (uint64_t)amio_send(r, fds[1], "abc", 3, 0, &s);
	/* 300 and 400 ms: long enough that a busy machine's preemption
	 * before the pump cannot let them pass before the operations end;
	 * then the idle outlives them. */
	ck_assert_int_eq(amio_set_deadline(r, s.id, 300), 0);
	ck_assert_int_eq(amio_set_deadline(r, v.id, 400), 0);
	t_write_str(fds[0], "x");
	shutdown(fds[0], SHUT_WR);
	pump(p, ops, 2, 3000);
	ck_assert_int_eq(s.done_res, 3);
	ck_assert_int_eq(v.done_res, 0);
	idle(p, 500);
	ck_assert_int_eq(s.notes, 1);
	ck_assert_int_eq(v.notes, 2);
	ck_assert_int_eq(v.nheld, 1);
	ck_assert_int_eq(amio_pool_put(other, v.held[0]), -EINVAL);
	ck_assert_int_eq(amio_pool_free(pool), -EBUSY);
	ck_assert_int_eq(amio_pool_put(pool, v.held[0]), 0);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	ck_assert_int_eq(amio_pool_free(other), 0);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("io_attack");
	TCase *tc = tcase_create("io_attack");

	tcase_set_timeout(tc, 120);
	ADD(sendv_whose_total_wraps_is_rejected);
	ADD(ids_of_other_kinds_are_not_operations);
	ADD(a_pool_of_another_registrar_is_refused);
	ADD(a_pool_of_more_than_4_gib_holds_full_buffers);
	ADD_LOOP(a_one_byte_pool_delivers_every_byte_in_order, 0, 2);
	ADD(eof_during_an_empty_pool_comes_after_every_byte);
	ADD(pool_free_is_busy_while_a_buffer_is_lent_after_done);
	ADD(deadline_zero_ends_at_once_and_finished_ids_are_enoent);
	ADD(a_deadline_moves_both_ways);
	ADD(cancel_twice_is_enoent);
	ADD_LOOP(cancel_racing_sends, 0, 3);
	ADD(sendv_with_empty_pieces_in_the_middle);
	ADD_LOOP(a_64_mib_send_to_a_slow_reader, 0, 2);
	ADD(sends_through_two_registrars_never_interleave);
	ADD(many_sends_queued_then_the_peer_resets);
	ADD(a_send_on_a_pipe_ends_with_an_errno);
	ADD(recv_on_a_socket_the_peer_resets);
	ADD(recv_on_a_listening_socket_ends_with_an_errno);
	ADD(an_accept_on_a_listener_shut_down_ends);
	ADD_LOOP(accept_into_a_full_inbox_loses_no_connection, 0, 6);
	ADD_LOOP(echo_through_tiny_queues_and_pools, 0, 4);
	ADD_LOOP(many_recvs_through_tiny_rings_and_cap_one, 0, 2);
	ADD_LOOP(cancel_of_an_accept_that_held_connections_brings_its_done, 0, 2);
	ADD(a_deadline_ends_a_blocked_send_and_those_behind_it_end_too);
	ADD_LOOP(a_deadline_ends_a_blocked_zero_copy_send, 0, 2);
	ADD(freeing_an_inbox_registrar_with_held_work);
	ADD(freeing_the_poller_with_operations_in_flight);
	ADD(freeing_the_poller_closes_accepted_connections_not_handed_out);
	ADD(a_deadline_outliving_its_operation_is_silent);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return t_run(suite());
}
