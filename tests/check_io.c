/*
 * Completion I/O (amio.h "Completion I/O"): accept, recv into pools, send
 * and sendv, cancel and deadlines, on real sockets over 127.0.0.1. Every case
 * holds on both backends (this suite runs again with AMIO_BACKEND=epoll).
 * The contract checked everywhere: every byte arrives once and in order,
 * each operation ends with exactly one AMIO_DONE, and every buffer a recv
 * lent comes back (amio_pool_free succeeds only then).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "amio_test.h"

/* ---- A small harness: collect an operation's notifications -------------- */

struct op_log {
	uint64_t id;
	int done; /* DONE notifications seen */
	int32_t done_res;
	uint32_t done_events;
	size_t bytes; /* AMIO_RECV bytes */
	int accepts;
	int fds[256];
	unsigned char *copy; /* received bytes, in order */
	size_t cap;
};

/* Hand one notification to its log; give recv buffers back. */
static void on_note(amio_pool *pool, struct op_log *log, const amio_notification *n)
{
	ck_assert_uint_eq(n->id, log->id);
	ck_assert_msg(!log->done, "id %llu: events %#x after its DONE", (unsigned long long)n->id,
	              n->events);
	if (n->events & AMIO_DONE) {
		log->done++;
		log->done_res = n->res;
		log->done_events = n->events;
		/* A send's DONE gives its buffer back; the others carry none. */
		if (n->events & AMIO_SEND)
			ck_assert_ptr_nonnull(n->buf);
		else
			ck_assert_ptr_null(n->buf);
		return;
	}
	if (n->events & AMIO_ACCEPT) {
		ck_assert_int_ge(n->res, 0);
		ck_assert_int_lt(log->accepts, 256);
		log->fds[log->accepts++] = n->res;
		return;
	}
	ck_assert_uint_eq(n->events, AMIO_RECV);
	ck_assert_int_gt(n->res, 0);
	ck_assert_ptr_nonnull(n->buf);
	if (log->copy) {
		ck_assert_uint_le(log->bytes + (size_t)n->res, log->cap);
		memcpy(log->copy + log->bytes, n->buf, (size_t)n->res);
	}
	log->bytes += (size_t)n->res;
	ck_assert_int_eq(amio_pool_put(pool, n->buf), 0);
}

/* Wait (Amy mode) until log is done or timeout; dispatch to several logs. */
static void pump(amio_poller *p, amio_pool *pool, struct op_log **logs, int nlogs, int timeout_ms,
                 bool (*until)(struct op_log **, int))
{
	int64_t end = t_now_ms() + timeout_ms;
	amio_notification n[16];

	while (!until(logs, nlogs)) {
		int rc;

		ck_assert_msg(t_now_ms() < end, "timed out");
		rc = amio_poller_wait(p, n, 16, 50);
		ck_assert_int_ge(rc, 0);
		for (int i = 0; i < rc; i++) {
			int k = 0;

			while (k < nlogs && logs[k]->id != n[i].id)
				k++;
			ck_assert_msg(k < nlogs, "a notification for unknown id %llu (events %#x)",
			              (unsigned long long)n[i].id, n[i].events);
			on_note(pool, logs[k], &n[i]);
		}
	}
}

static bool all_done(struct op_log **logs, int n)
{
	for (int i = 0; i < n; i++)
		if (!logs[i]->done)
			return false;
	return true;
}

static size_t want_bytes;
static bool got_bytes(struct op_log **logs, int n)
{
	(void)n;
	return logs[0]->bytes >= want_bytes || logs[0]->done;
}

static void fill(unsigned char *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		b[i] = (unsigned char)(seed >> 16);
	}
}

/* Write all of buf to a non-blocking fd, draining nothing (the other end
 * reads through amio while we wait). */
static void write_all(amio_poller *p, amio_pool *pool, struct op_log *log, int fd,
                      const unsigned char *buf, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t w = write(fd, buf + off, len - off);

		if (w > 0) {
			off += (size_t)w;
			continue;
		}
		ck_assert_int_eq(errno, EAGAIN);
		want_bytes = log->bytes + 1;
		pump(p, pool, &log, 1, 5000, got_bytes);
	}
}

/* ---- Argument checks ----------------------------------------------------- */

START_TEST(bad_arguments_get_clear_errors)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool = NULL;
	int fds[2], lfd;
	uint16_t port;
	char b[4];
	struct iovec iov[AMIO_SENDV_MAX + 1];

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 0, 64, &pool), -EINVAL);
	ck_assert_int_eq(amio_pool_new(r, 3, 64, &pool), -EINVAL);
	ck_assert_int_eq(amio_pool_new(r, AMIO_POOL_MAX_BUFFERS * 2, 64, &pool), -EINVAL);
	ck_assert_int_eq(amio_pool_new(r, 4, 0, &pool), -EINVAL);
	ck_assert_int_eq(amio_pool_new(r, 4, AMIO_POOL_MAX_SIZE + 1, &pool), -EINVAL);
	ck_assert_int_eq(amio_pool_new(NULL, 4, 64, &pool), -EINVAL);
	ck_assert_int_eq(amio_pool_new(r, 4, 64, NULL), -EINVAL);
	ck_assert_int_eq(amio_pool_new(r, 4, 64, &pool), 0);
	ck_assert_int_eq(amio_pool_put(pool, b), -EINVAL);
	ck_assert_int_eq(amio_pool_put(NULL, b), -EINVAL);
	t_tcp_pair(fds);
	ck_assert_int_eq(amio_recv(r, -1, pool, NULL), -EBADF);
	ck_assert_int_eq(amio_recv(r, fds[1], NULL, NULL), -EINVAL);
	ck_assert_int_eq(amio_send(r, -1, b, 1, 0, NULL), -EBADF);
	ck_assert_int_eq(amio_send(r, fds[1], NULL, 1, 0, NULL), -EINVAL);
	ck_assert_int_eq(amio_send(r, fds[1], b, 0, 0, NULL), -EINVAL);
	ck_assert_int_eq(amio_send(r, fds[1], b, (size_t)INT32_MAX + 1, 0, NULL), -EINVAL);
	ck_assert_int_eq(amio_send(r, fds[1], b, 1, 1u << 7, NULL), -EINVAL);
	for (int i = 0; i <= (int)AMIO_SENDV_MAX; i++)
		iov[i] = (struct iovec){b, 1};
	ck_assert_int_eq(amio_sendv(r, fds[1], iov, 0, 0, NULL), -EINVAL);
	ck_assert_int_eq(amio_sendv(r, fds[1], iov, AMIO_SENDV_MAX + 1, 0, NULL), -EINVAL);
	ck_assert_int_eq(amio_sendv(r, fds[1], NULL, 1, 0, NULL), -EINVAL);
	iov[0] = (struct iovec){NULL, 3};
	ck_assert_int_eq(amio_sendv(r, fds[1], iov, 1, 0, NULL), -EINVAL);
	iov[0] = (struct iovec){b, 0};
	ck_assert_int_eq(amio_sendv(r, fds[1], iov, 1, 0, NULL), -EINVAL);
	/* accept: a connected socket, a blocking listener, not a socket. */
	ck_assert_int_eq(amio_accept(r, -1, NULL), -EBADF);
	ck_assert_int_eq(amio_accept(r, fds[1], NULL), -EINVAL);
	lfd = t_listen(&port);
	ck_assert_int_eq(fcntl(lfd, F_SETFL, 0), 0);
	ck_assert_int_eq(amio_accept(r, lfd, NULL), -EINVAL);
	ck_assert_int_eq(amio_accept(r, 1 << 20, NULL), -EBADF);
	/* ids that are not live operations */
	ck_assert_int_eq(amio_cancel(r, 12345), -ENOENT);
	ck_assert_int_eq(amio_set_deadline(r, 12345, 10), -ENOENT);
	ck_assert_int_eq(amio_set_deadline(r, 12345, AMIO_TIMER_MAX_MS + 1), -EINVAL);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	ck_assert_int_eq(amio_pool_free(NULL), -EINVAL);
	close(lfd);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- Accept --------------------------------------------------------------- */

START_TEST(accept_reports_each_connection_then_done_on_cancel)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	struct op_log log = {0}, *logs[1] = {&log};
	uint16_t port;
	int lfd = t_listen(&port), clients[20];
	int64_t id;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	id = amio_accept(r, lfd, &log);
	ck_assert_int_gt(id, 0);
	log.id = (uint64_t)id;
	for (int i = 0; i < 20; i++)
		clients[i] = t_connect(port);
	for (int64_t end = t_now_ms() + 5000; log.accepts < 20 && t_now_ms() < end;) {
		amio_notification n[8];
		int rc = amio_poller_wait(p, n, 8, 50);

		for (int i = 0; i < rc; i++)
			on_note(NULL, &log, &n[i]);
	}
	ck_assert_int_eq(log.accepts, 20);
	for (int i = 0; i < 20; i++) {
		int fl = fcntl(log.fds[i], F_GETFL);

		ck_assert(fl & O_NONBLOCK);
		ck_assert(fcntl(log.fds[i], F_GETFD) & FD_CLOEXEC);
	}
	ck_assert_int_eq(amio_cancel(r, (uint64_t)id), 0);
	pump(p, NULL, logs, 1, 5000, all_done);
	ck_assert_int_eq(log.done, 1);
	ck_assert_int_eq(log.done_res, -ECANCELED);
	ck_assert_uint_eq(log.done_events, AMIO_ACCEPT | AMIO_DONE);
	ck_assert_int_eq(amio_cancel(r, (uint64_t)id), -ENOENT);
	for (int i = 0; i < 20; i++) {
		close(clients[i]);
		close(log.fds[i]);
	}
	close(lfd);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* An Amy-mode accept collected the inbox-mode way: amio_poller_run returns
 * 1, amio_poller_wait hands the stash out. Nothing of an operation may be
 * filtered there (the first application lost accepted fds and the DONE). */
START_TEST(amy_mode_notes_stashed_by_run_reach_wait)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification n[4];
	uint16_t port;
	int lfd = t_listen(&port), c, got = 0, done = 0;
	int64_t id;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	id = amio_accept(r, lfd, NULL);
	ck_assert_int_gt(id, 0);
	c = t_connect(port);
	ck_assert_int_eq(amio_poller_run(p), 1);
	ck_assert_int_eq(amio_poller_wait(p, n, 4, 0), 1);
	ck_assert_uint_eq(n[0].events, AMIO_ACCEPT);
	ck_assert_int_ge(n[0].res, 0);
	close(n[0].res);
	ck_assert_int_eq(amio_cancel(r, (uint64_t)id), 0);
	for (int64_t end = t_now_ms() + 5000; !done && t_now_ms() < end;) {
		int rc = amio_poller_run(p);

		ck_assert_int_eq(rc, 1);
		rc = amio_poller_wait(p, n, 4, 0);
		for (int i = 0; i < rc; i++, got++)
			done += n[i].events == (AMIO_ACCEPT | AMIO_DONE) && n[i].res == -ECANCELED;
	}
	ck_assert_int_eq(done, 1);
	close(c);
	close(lfd);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- Recv ----------------------------------------------------------------- */

/* Random chunks of up to 1 MiB in all; a pool of 8 x 4 KiB so the recv
 * starves again and again while the test holds buffers. */
START_TEST(recv_delivers_every_byte_in_order_through_a_small_pool)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct op_log log = {0}, *logs[1] = {&log};
	size_t total = (size_t)t_scale(1 << 20);
	unsigned char *data = malloc(total);
	int fds[2];
	int64_t id;

	fill(data, total, 7);
	log.copy = malloc(total);
	log.cap = total;
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 8, 4096, &pool), 0);
	t_tcp_pair(fds);
	id = amio_recv(r, fds[1], pool, &log);
	ck_assert_int_gt(id, 0);
	log.id = (uint64_t)id;
	srand(11);
	for (size_t off = 0; off < total;) {
		size_t n = 1 + (size_t)rand() % 20000;

		if (n > total - off)
			n = total - off;
		write_all(p, pool, &log, fds[0], data + off, n);
		off += n;
	}
	ck_assert_int_eq(shutdown(fds[0], SHUT_WR), 0);
	pump(p, pool, logs, 1, 10000, all_done);
	ck_assert_uint_eq(log.bytes, total);
	ck_assert(memcmp(log.copy, data, total) == 0);
	ck_assert_int_eq(log.done_res, 0); /* EOF */
	ck_assert_uint_eq(log.done_events, AMIO_RECV | AMIO_DONE);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(fds[0]);
	close(fds[1]);
	free(data);
	free(log.copy);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* A consumer that sits on every buffer: the recv pauses (no data lost, no
 * error), and goes on as soon as one comes back; pool_free says -EBUSY
 * until all are back and the recv is done. */
START_TEST(an_exhausted_pool_pauses_the_recv_until_a_buffer_comes_back)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct amio_poller_stats st;
	amio_notification held[64];
	int nheld = 0, fds[2];
	size_t got = 0;
	unsigned char data[8192];
	int64_t id, end;

	fill(data, sizeof(data), 3);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 4, 16, &pool), 0);
	t_tcp_pair(fds);
	id = amio_recv(r, fds[1], pool, NULL);
	ck_assert_int_gt(id, 0);
	ck_assert_int_eq(write(fds[0], data, sizeof(data)), (ssize_t)sizeof(data));
	/* Take notes without giving anything back: all 4 buffers (however
	 * long a busy machine takes), then nothing more for 300 ms. */
	for (end = t_now_ms() + 5000; nheld < 4 && t_now_ms() < end;) {
		int rc = amio_poller_wait(p, held + nheld, 4, 20);

		ck_assert_int_ge(rc, 0);
		nheld += rc;
	}
	for (end = t_now_ms() + 300; t_now_ms() < end;) {
		int rc = amio_poller_wait(p, held + nheld, 4, 20);

		ck_assert_int_ge(rc, 0);
		nheld += rc;
	}
	ck_assert_int_eq(nheld, 4);
	ck_assert_int_eq(amio_pool_free(pool), -EBUSY);
	amio_poller_stats(p, &st);
	ck_assert_uint_ge(st.recv_starved, 1);
	for (int i = 0; i < nheld; i++) {
		ck_assert(memcmp(held[i].buf, data + got, (size_t)held[i].res) == 0);
		got += (size_t)held[i].res;
		ck_assert_int_eq(amio_pool_put(pool, held[i].buf), 0);
	}
	for (end = t_now_ms() + 5000; got < sizeof(data) && t_now_ms() < end;) {
		amio_notification n[4];
		int rc = amio_poller_wait(p, n, 4, 50);

		for (int i = 0; i < rc; i++) {
			ck_assert_uint_eq(n[i].events, AMIO_RECV);
			ck_assert(memcmp(n[i].buf, data + got, (size_t)n[i].res) == 0);
			got += (size_t)n[i].res;
			ck_assert_int_eq(amio_pool_put(pool, n[i].buf), 0);
		}
	}
	ck_assert_uint_eq(got, sizeof(data));
	ck_assert_int_eq(amio_pool_free(pool), -EBUSY); /* the recv still runs */
	ck_assert_int_eq(amio_cancel(r, (uint64_t)id), 0);
	for (end = t_now_ms() + 5000; t_now_ms() < end;) {
		amio_notification n[4];
		int rc = amio_poller_wait(p, n, 4, 50);

		if (rc == 1 && (n[0].events & AMIO_DONE)) {
			ck_assert_int_eq(n[0].res, -ECANCELED);
			break;
		}
		ck_assert_int_eq(rc, 0);
	}
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- Send ----------------------------------------------------------------- */

/* Many sends queued on one socket at once, of random sizes up to 256 KiB,
 * some as iovecs: the peer reads them back to back, in order, uninterleaved;
 * each send's DONE says its whole length. */
START_TEST(sends_on_one_socket_go_out_in_order_and_whole)
{
	enum { N = 24 };
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	struct op_log logs_[N], *logs[N];
	unsigned char *bufs[N], *expect, *got;
	size_t lens[N], total = 0, off = 0, rd = 0;
	int fds[2];

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	t_tcp_pair(fds);
	srand(5);
	for (int i = 0; i < N; i++) {
		lens[i] = 1 + (size_t)rand() % (size_t)t_scale(256 << 10);
		bufs[i] = malloc(lens[i]);
		fill(bufs[i], lens[i], (unsigned)i);
		total += lens[i];
	}
	expect = malloc(total);
	got = malloc(total);
	for (int i = 0; i < N; i++) {
		int64_t id;

		memcpy(expect + off, bufs[i], lens[i]);
		off += lens[i];
		memset(&logs_[i], 0, sizeof(logs_[i]));
		logs[i] = &logs_[i];
		if (i % 3 == 2 && lens[i] > 2) {
			struct iovec v[3] = {
			    {bufs[i], 1},
			    {bufs[i] + 1, lens[i] / 2},
			    {bufs[i] + 1 + lens[i] / 2, lens[i] - 1 - lens[i] / 2}};

			id = amio_sendv(r, fds[1], v, 3, 0, &logs_[i]);
		} else {
			id = amio_send(r, fds[1], bufs[i], lens[i], i % 5 == 4 ? AMIO_SEND_ZC : 0,
			               &logs_[i]);
		}
		ck_assert_int_gt(id, 0);
		logs_[i].id = (uint64_t)id;
	}
	while (rd < total || !all_done(logs, N)) {
		amio_notification n[16];
		int rc = amio_poller_wait(p, n, 16, 10);
		ssize_t k;

		ck_assert_int_ge(rc, 0);
		for (int i = 0; i < rc; i++) {
			struct op_log *l = n[i].data;

			on_note(NULL, l, &n[i]);
		}
		while ((k = read(fds[0], got + rd, total - rd)) > 0)
			rd += (size_t)k;
	}
	ck_assert(memcmp(got, expect, total) == 0);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(logs_[i].done, 1);
		ck_assert_int_eq(logs_[i].done_res, (int32_t)lens[i]);
		ck_assert_uint_eq(logs_[i].done_events, AMIO_SEND | AMIO_DONE);
		free(bufs[i]);
	}
	free(expect);
	free(got);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

START_TEST(a_send_to_a_closed_peer_ends_with_an_error)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	struct op_log log = {0}, *logs[1] = {&log};
	size_t len = 4 << 20;
	unsigned char *buf = calloc(1, len);
	int fds[2];
	int64_t id;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	t_tcp_pair(fds);
	close(fds[0]);
	id = amio_send(r, fds[1], buf, len, 0, &log);
	ck_assert_int_gt(id, 0);
	log.id = (uint64_t)id;
	pump(p, NULL, logs, 1, 5000, all_done);
	ck_assert_msg(log.done_res == -EPIPE || log.done_res == -ECONNRESET, "res %d",
	              log.done_res);
	close(fds[1]);
	free(buf);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- Cancel and deadlines ------------------------------------------------- */

/* A deadline on a recv that gets nothing: DONE -ETIME, never early; moving
 * it (an idle timeout) keeps the recv alive while bytes come. */
START_TEST(a_deadline_ends_an_idle_recv_with_etime_never_early)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct op_log log = {0}, *logs[1] = {&log};
	int fds[2];
	int64_t id, t0;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 4, 64, &pool), 0);
	t_tcp_pair(fds);
	id = amio_recv(r, fds[1], pool, &log);
	log.id = (uint64_t)id;
	t0 = t_now_ms();
	ck_assert_int_eq(amio_set_deadline(r, (uint64_t)id, 250), 0);
	/* Bytes every 20 ms, deadline (250 ms) moved each time: alive for
	 * 600 ms. The deadline is 12 gaps long so that a busy machine's
	 * preemptions do not let it pass between two bytes. */
	while (t_now_ms() - t0 < 600) {
		amio_notification n[4];
		int rc;

		t_write_str(fds[0], "x");
		rc = amio_poller_wait(p, n, 4, 20);
		for (int i = 0; i < rc; i++)
			on_note(pool, &log, &n[i]);
		ck_assert_int_eq(log.done, 0);
		ck_assert_int_eq(amio_set_deadline(r, (uint64_t)id, 250), 0);
	}
	ck_assert_int_eq(amio_set_deadline(r, (uint64_t)id, 60), 0);
	t0 = t_now_ms();
	pump(p, pool, logs, 1, 5000, all_done);
	ck_assert_int_ge(t_now_ms() - t0, 59);
	ck_assert_int_eq(log.done_res, -ETIME);
	ck_assert_int_eq(amio_set_deadline(r, (uint64_t)id, 10), -ENOENT);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* Cancel at a random moment while bytes stream in: exactly one DONE, the
 * bytes before it in order, and every buffer back (pool_free succeeds). */
START_TEST(cancel_racing_completion_gives_one_done_and_every_buffer_back)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	unsigned seed = 1000 + (unsigned)_i;
	unsigned char data[4096];

	fill(data, sizeof(data), seed);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 16, 512, &pool), 0);
	srand(seed);
	for (int round = 0; round < t_scale(20); round++) {
		struct op_log log = {0}, *logs[1] = {&log};
		int fds[2], writes = rand() % 8;
		int64_t id;

		log.copy = malloc(sizeof(data) * 8);
		log.cap = sizeof(data) * 8;
		t_tcp_pair(fds);
		id = amio_recv(r, fds[1], pool, &log);
		log.id = (uint64_t)id;
		for (int w = 0; w < writes; w++)
			ck_assert_int_eq(write(fds[0], data, sizeof(data)), (ssize_t)sizeof(data));
		if (rand() % 2) {
			amio_notification n[4];
			int rc = amio_poller_wait(p, n, (size_t)(1 + rand() % 4), rand() % 3);

			for (int i = 0; i < rc; i++)
				on_note(pool, &log, &n[i]);
		}
		ck_assert_int_eq(amio_cancel(r, (uint64_t)id), log.done ? -ENOENT : 0);
		pump(p, pool, logs, 1, 5000, all_done);
		ck_assert_int_eq(log.done, 1);
		ck_assert_int_eq(log.done_res, -ECANCELED);
		for (size_t k = 0; k < log.bytes; k++)
			ck_assert_int_eq(log.copy[k], data[k % sizeof(data)]);
		free(log.copy);
		close(fds[0]);
		close(fds[1]);
	}
	ck_assert_int_eq(amio_pool_free(pool), 0);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* A send that cannot go out (the peer reads nothing) is cancelled: its DONE
 * is -ECANCELED unless it finished, and the sends queued behind it on the
 * same socket end too when cancelled. */
START_TEST(cancel_of_a_blocked_send_and_of_sends_queued_behind_it)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	size_t len = 8 << 20;
	unsigned char *buf = calloc(1, len);
	struct op_log a = {0}, b = {0}, *logs[2] = {&a, &b};
	int fds[2];

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	t_tcp_pair(fds);
	a.id = (uint64_t)amio_send(r, fds[1], buf, len, 0, &a);
	b.id = (uint64_t)amio_send(r, fds[1], buf, 100, 0, &b);
	ck_assert_int_eq(amio_poller_wait(p, (amio_notification[4]){0}, 4, 100), 0);
	ck_assert_int_eq(amio_cancel(r, b.id), 0); /* queued, never started */
	ck_assert_int_eq(amio_cancel(r, a.id), 0); /* in flight, blocked */
	pump(p, NULL, logs, 2, 5000, all_done);
	ck_assert_int_eq(a.done_res, -ECANCELED);
	ck_assert_int_eq(b.done_res, -ECANCELED);
	close(fds[0]);
	close(fds[1]);
	free(buf);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- Inbox mode: the worker makes no socket calls ------------------------- */

struct echo_worker {
	amio_poller *p;
	int fd;
	size_t want;
	size_t echoed;
	int rc;
};

/* Echo through amio only: recv into a pool, send the same buffer back, give
 * it back on the send's DONE. */
static void *echo_worker_main(void *arg)
{
	struct echo_worker *w = arg;
	amio_registrar *r;
	amio_pool *pool;
	amio_notification n[32];

	ck_assert_int_eq(amio_registrar_new(w->p, AMIO_INBOX, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 64, 2048, &pool), 0);
	ck_assert_int_gt(amio_recv(r, w->fd, pool, NULL), 0);
	while (w->echoed < w->want) {
		int rc = amio_registrar_wait(r, n, 32, 5000);

		if (rc <= 0) {
			struct amio_poller_stats st;

			amio_poller_stats(w->p, &st);
			ck_abort_msg(
			    "worker: wait %d after %zu of %zu bytes echoed (recv_starved %llu, "
			    "notifications %llu)",
			    rc, w->echoed, w->want, (unsigned long long)st.recv_starved,
			    (unsigned long long)st.notifications);
		}
		for (int i = 0; i < rc; i++) {
			if (n[i].events == AMIO_RECV) {
				int64_t id;

				while ((id = amio_send(r, w->fd, n[i].buf, (size_t)n[i].res, 0,
				                       n[i].buf)) == -EAGAIN)
					ck_assert_int_eq(amio_registrar_wait_room(r, 1000), 0);
				ck_assert_int_gt(id, 0);
			} else if (n[i].events == (AMIO_SEND | AMIO_DONE)) {
				ck_assert_int_gt(n[i].res, 0);
				w->echoed += (size_t)n[i].res;
				ck_assert_int_eq(amio_pool_put(pool, n[i].data), 0);
			} else {
				ck_abort_msg("events %#x res %d", n[i].events, n[i].res);
			}
		}
	}
	amio_registrar_free(r);
	return NULL;
}

START_TEST(an_inbox_worker_echoes_through_completions_only)
{
	amio_poller *p = t_poller(NULL);
	struct echo_worker w = {.p = p, .want = (size_t)t_scale(2 << 20)};
	unsigned char *data = malloc(w.want), *back = malloc(w.want);
	size_t sent = 0, rd = 0;
	pthread_t pt, wt;
	int fds[2];

	fill(data, w.want, 99);
	srand(99);
	t_tcp_pair(fds);
	w.fd = fds[1];
	pthread_create(&pt, NULL, t_run_poller, p);
	pthread_create(&wt, NULL, echo_worker_main, &w);
	while (rd < w.want) {
		ssize_t k;

		if (sent < w.want) {
			/* Pieces of 1 byte to 64 KiB, at random. */
			size_t piece = 1 + (size_t)rand() % (rand() % 4 ? 2048 : 65536);

			k = write(fds[0], data + sent,
			          w.want - sent > piece ? piece : w.want - sent);
			if (k > 0)
				sent += (size_t)k;
		}
		while ((k = read(fds[0], back + rd, w.want - rd)) > 0)
			rd += (size_t)k;
		if (k < 0 && errno == EAGAIN && sent == w.want)
			usleep(100);
	}
	pthread_join(wt, NULL);
	ck_assert(memcmp(data, back, w.want) == 0);
	t_stop_poller(p, pt);
	close(fds[0]);
	close(fds[1]);
	free(data);
	free(back);
	amio_poller_free(p);
}
END_TEST

/* ---- Under load ----------------------------------------------------------- */

/* 16 connections share a pool of 8 buffers of 256 bytes; their peers send
 * messages of 1 byte to 64 KiB, split at random; an inbox worker holds up
 * to 7 buffers at a time for a random while before giving them back (a
 * consumer that lags). Every connection's byte stream must arrive whole and
 * in order, and every recv must end with EOF: no loss, no deaf socket. */
enum { LOAD_CONNS = 16 };
struct load {
	amio_poller *p;
	int fds[LOAD_CONNS][2];
	unsigned char *expect[LOAD_CONNS], *got[LOAD_CONNS];
	size_t len[LOAD_CONNS], have[LOAD_CONNS];
	int eof;
	unsigned seed;
};

static void *load_worker(void *arg)
{
	struct load *L = arg;
	amio_registrar *r;
	amio_pool *pool;
	amio_notification n[16];
	void *held[8];
	int nheld = 0;
	unsigned seed = L->seed;

	ck_assert_int_eq(amio_registrar_new(L->p, AMIO_INBOX, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 8, 256, &pool), 0);
	for (intptr_t c = 0; c < LOAD_CONNS; c++)
		ck_assert_int_gt(amio_recv(r, L->fds[c][1], pool, (void *)c), 0);
	while (L->eof < LOAD_CONNS) {
		int rc = amio_registrar_wait(r, n, 1 + rand_r(&seed) % 16, 5000);

		ck_assert_msg(rc > 0, "worker stalled: %d of %d at EOF (seed %u)", L->eof,
		              LOAD_CONNS, L->seed);
		for (int i = 0; i < rc; i++) {
			intptr_t c = (intptr_t)n[i].data;

			if (n[i].events == (AMIO_RECV | AMIO_DONE)) {
				ck_assert_int_eq(n[i].res, 0);
				ck_assert_uint_eq(L->have[c], L->len[c]);
				L->eof++;
				continue;
			}
			ck_assert_uint_eq(n[i].events, AMIO_RECV);
			ck_assert_uint_le(L->have[c] + (size_t)n[i].res, L->len[c]);
			ck_assert_msg(
			    memcmp(n[i].buf, L->expect[c] + L->have[c], (size_t)n[i].res) == 0,
			    "conn %d: bytes %zu.. differ (seed %u)", (int)c, L->have[c], L->seed);
			L->have[c] += (size_t)n[i].res;
			held[nheld++] = n[i].buf;
			if (nheld == 7 || rand_r(&seed) % 3 == 0) {
				if (rand_r(&seed) % 4 == 0)
					usleep(rand_r(&seed) % 2000);
				while (nheld)
					ck_assert_int_eq(amio_pool_put(pool, held[--nheld]), 0);
			}
		}
		if (rc < 16 && nheld) /* nothing more soon: give all back */
			while (nheld)
				ck_assert_int_eq(amio_pool_put(pool, held[--nheld]), 0);
	}
	while (nheld)
		ck_assert_int_eq(amio_pool_put(pool, held[--nheld]), 0);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	amio_registrar_free(r);
	return NULL;
}

START_TEST(many_connections_through_a_small_pool_with_a_lagging_consumer)
{
	const char *env = getenv("AMIO_IO_SEED"); /* reproduces a printed seed */
	struct load L = {.p = t_poller(NULL),
	                 .seed = env ? (unsigned)strtoul(env, NULL, 10)
	                             : (unsigned)time(NULL) * 31u + (unsigned)_i};
	pthread_t pt, wt;
	size_t off[LOAD_CONNS] = {0};
	unsigned seed = L.seed;
	int open = LOAD_CONNS;

	fprintf(stderr, "many_connections_through_a_small_pool: AMIO_IO_SEED=%u\n", L.seed);
	for (int c = 0; c < LOAD_CONNS; c++) {
		size_t msgs = 1 + rand_r(&seed) % 8;

		t_tcp_pair(L.fds[c]);
		for (size_t m = 0; m < msgs; m++)
			L.len[c] +=
			    1 + (rand_r(&seed) % 4 ? rand_r(&seed) % 512 : rand_r(&seed) % 65536);
		L.len[c] = (size_t)t_scale((int)L.len[c]);
		L.expect[c] = malloc(L.len[c]);
		fill(L.expect[c], L.len[c], seed + (unsigned)c);
	}
	pthread_create(&pt, NULL, t_run_poller, L.p);
	pthread_create(&wt, NULL, load_worker, &L);
	while (open) {
		for (int c = 0; c < LOAD_CONNS; c++) {
			size_t n;
			ssize_t w;

			if (off[c] == L.len[c])
				continue;
			n = 1 + rand_r(&seed) % 3000;
			if (n > L.len[c] - off[c])
				n = L.len[c] - off[c];
			w = write(L.fds[c][0], L.expect[c] + off[c], n);
			if (w > 0)
				off[c] += (size_t)w;
			else
				ck_assert_int_eq(errno, EAGAIN);
			if (off[c] == L.len[c]) {
				ck_assert_int_eq(shutdown(L.fds[c][0], SHUT_WR), 0);
				open--;
			}
		}
		usleep(50);
	}
	pthread_join(wt, NULL);
	t_stop_poller(L.p, pt);
	for (int c = 0; c < LOAD_CONNS; c++) {
		close(L.fds[c][0]);
		close(L.fds[c][1]);
		free(L.expect[c]);
	}
	amio_poller_free(L.p);
}
END_TEST

/* ---- A random walk over the operations' contract -------------------------- */

/* Amy mode, one thread, seeded (AMIO_IO_SEED): random recvs, sends (some
 * zero-copy, some sendv), cancels and deadlines, peer writes and reads,
 * waits with a random cap, buffers held and given back late. Checked at
 * every notification: one DONE per operation and nothing after it; recv
 * bytes = what the peer wrote, in order, across successive recvs of a
 * socket; a send's DONE = its whole length, or -ECANCELED/-ETIME; the peer
 * reads completed sends back to back in start order (a socket whose send was
 * cut short is not checked further: how much went out is unknown). At the
 * end every operation is done, every buffer back, and the pool frees. */
enum { W_PAIRS = 4, W_OPS = 48, W_OUT = 1 << 20 };
struct w_op {
	uint64_t id;
	int pair, kind; /* 0 free slot, 1 recv, 2 send */
	size_t len;
	unsigned char *payload; /* send: owned until its DONE */
	bool done;
};
struct w_pair {
	int fd[2];                /* 0: the peer (the test), 1: amio's side */
	int recv;                 /* its op index + 1, or 0 */
	size_t written, received; /* peer -> amio */
	unsigned in_seed;
	unsigned char *expect, *got; /* amio -> peer: completed sends / bytes read */
	size_t expect_len, got_len;
	bool tainted;
};
struct walk {
	amio_poller *p;
	amio_registrar *r;
	amio_pool *pool;
	struct w_op ops[W_OPS];
	struct w_pair pairs[W_PAIRS];
	void *held[32];
	int nheld;
	unsigned seed, rnd;
};

static unsigned char w_byte(unsigned seed, size_t i)
{
	return (unsigned char)((seed * 2654435761u + (unsigned)i * 40503u) >> 8);
}

static void w_note(struct walk *W, const amio_notification *n)
{
	struct w_op *o = &W->ops[(intptr_t)n->data];
	struct w_pair *pr = &W->pairs[o->pair];

	ck_assert_msg(o->kind && o->id == n->id && !o->done,
	              "AMIO_IO_SEED=%u: id %llu (events %#x) is no running operation", W->seed,
	              (unsigned long long)n->id, n->events);
	if (n->events == AMIO_RECV) {
		ck_assert_uint_eq(o->kind, 1);
		ck_assert_uint_le(pr->received + (size_t)n->res, pr->written);
		for (int k = 0; k < n->res; k++)
			ck_assert_msg(((unsigned char *)n->buf)[k] ==
			                  w_byte(pr->in_seed, pr->received + k),
			              "AMIO_IO_SEED=%u: pair %d byte %zu", W->seed, o->pair,
			              pr->received + k);
		pr->received += (size_t)n->res;
		if (W->nheld < 32 && rand_r(&W->rnd) % 2)
			W->held[W->nheld++] = n->buf;
		else
			ck_assert_int_eq(amio_pool_put(W->pool, n->buf), 0);
		return;
	}
	ck_assert_msg(n->events & AMIO_DONE, "AMIO_IO_SEED=%u: events %#x", W->seed, n->events);
	ck_assert(!n->buf == !(n->events & AMIO_SEND)); /* a send's DONE: its buffer */
	o->done = true;
	if (o->kind == 1) {
		ck_assert_uint_eq(n->events, AMIO_RECV | AMIO_DONE);
		ck_assert_msg(n->res == -ECANCELED || n->res == -ETIME,
		              "AMIO_IO_SEED=%u: recv DONE %d", W->seed, n->res);
		pr->recv = 0;
	} else {
		ck_assert_uint_eq(n->events, AMIO_SEND | AMIO_DONE);
		if (n->res == (int32_t)o->len) {
			ck_assert_uint_le(pr->expect_len + o->len, W_OUT);
			memcpy(pr->expect + pr->expect_len, o->payload, o->len);
			pr->expect_len += o->len;
		} else {
			ck_assert_msg(n->res == -ECANCELED || n->res == -ETIME,
			              "AMIO_IO_SEED=%u: send DONE %d of %zu", W->seed, n->res,
			              o->len);
			pr->tainted = true;
		}
		free(o->payload);
		o->payload = NULL;
	}
	o->kind = 0;
}

static void w_wait(struct walk *W, int timeout_ms)
{
	amio_notification n[8];
	int rc = amio_poller_wait(W->p, n, 1 + rand_r(&W->rnd) % 8, timeout_ms);

	ck_assert_int_ge(rc, 0);
	for (int i = 0; i < rc; i++)
		w_note(W, &n[i]);
}

static void w_peer_read(struct walk *W, struct w_pair *pr)
{
	ssize_t k;

	while (pr->got_len < W_OUT &&
	       (k = read(pr->fd[0], pr->got + pr->got_len, W_OUT - pr->got_len)) > 0)
		pr->got_len += (size_t)k;
	if (!pr->tainted) /* what came so far is a prefix of the completed sends (and the one
	                     running) */
		ck_assert_msg(memcmp(pr->got, pr->expect,
		                     pr->got_len < pr->expect_len ? pr->got_len : pr->expect_len) ==
		                  0,
		              "AMIO_IO_SEED=%u: the peer read sends out of order", W->seed);
}

static int w_free_op(struct walk *W)
{
	for (int i = 0; i < W_OPS; i++)
		if (!W->ops[i].kind)
			return i;
	return -1;
}

static void w_step(struct walk *W)
{
	int k = w_free_op(W), pi = rand_r(&W->rnd) % W_PAIRS, a = rand_r(&W->rnd) % 100;
	struct w_pair *pr = &W->pairs[pi];
	struct w_op *o = k >= 0 ? &W->ops[k] : NULL;

	if (a < 15 && o && !pr->recv) { /* a recv */
		o->id = (uint64_t)amio_recv(W->r, pr->fd[1], W->pool, (void *)(intptr_t)k);
		ck_assert_int_gt((int64_t)o->id, 0);
		*o = (struct w_op){.id = o->id, .pair = pi, .kind = 1};
		pr->recv = k + 1;
	} else if (a < 35 && o && pr->expect_len < W_OUT / 2) { /* a send */
		size_t len = 1 + rand_r(&W->rnd) % (rand_r(&W->rnd) % 4 ? 512 : 65536);
		unsigned char *b = malloc(len);
		int64_t id;

		for (size_t j = 0; j < len; j++)
			b[j] = (unsigned char)rand_r(&W->rnd);
		if (len > 2 && rand_r(&W->rnd) % 3 == 0) {
			struct iovec v[3] = {{b, 1}, {b + 1, 0}, {b + 1, len - 1}};

			id = amio_sendv(W->r, pr->fd[1], v, 3, 0, (void *)(intptr_t)k);
		} else {
			id = amio_send(W->r, pr->fd[1], b, len,
			               rand_r(&W->rnd) % 4 ? 0 : AMIO_SEND_ZC, (void *)(intptr_t)k);
		}
		ck_assert_int_gt(id, 0);
		*o = (struct w_op){
		    .id = (uint64_t)id, .pair = pi, .kind = 2, .len = len, .payload = b};
	} else if (a < 45) { /* the peer writes */
		unsigned char b[4096];
		size_t len = 1 + rand_r(&W->rnd) % sizeof(b);
		ssize_t w;

		for (size_t j = 0; j < len; j++)
			b[j] = w_byte(pr->in_seed, pr->written + j);
		w = write(pr->fd[0], b, len);
		if (w > 0)
			pr->written += (size_t)w;
	} else if (a < 55) { /* the peer reads */
		w_peer_read(W, pr);
	} else if (a < 68) { /* cancel, or a short deadline, of a random op */
		int j = rand_r(&W->rnd) % W_OPS;
		int rc;

		if (!W->ops[j].kind)
			return;
		rc = a < 62 ? amio_cancel(W->r, W->ops[j].id)
		            : amio_set_deadline(W->r, W->ops[j].id, rand_r(&W->rnd) % 5);
		ck_assert_msg(rc == 0 || rc == -ENOENT, "AMIO_IO_SEED=%u: %d", W->seed, rc);
	} else if (a < 75) { /* give held buffers back */
		while (W->nheld)
			ck_assert_int_eq(amio_pool_put(W->pool, W->held[--W->nheld]), 0);
	} else {
		w_wait(W, rand_r(&W->rnd) % 3);
	}
}

START_TEST(a_random_walk_keeps_the_operations_contract)
{
	const char *env = getenv("AMIO_IO_SEED");
	struct walk *W = calloc(1, sizeof(*W));
	int64_t end;

	W->seed = env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL) * 7u + (unsigned)_i;
	W->rnd = W->seed;
	fprintf(stderr, "a_random_walk: AMIO_IO_SEED=%u\n", W->seed);
	W->p = t_poller(NULL);
	ck_assert_int_eq(amio_registrar_new(W->p, 0, &W->r), 0);
	ck_assert_int_eq(amio_pool_new(W->r, 16, 1 + rand_r(&W->rnd) % 2048, &W->pool), 0);
	for (int i = 0; i < W_PAIRS; i++) {
		t_tcp_pair(W->pairs[i].fd);
		W->pairs[i].in_seed = W->seed + (unsigned)i;
		W->pairs[i].expect = malloc(W_OUT);
		W->pairs[i].got = malloc(W_OUT);
	}
	for (int step = 0; step < t_scale(4000); step++)
		w_step(W);
	/* The end: cancel everything; every DONE comes; every byte is read. */
	for (int i = 0; i < W_OPS; i++)
		if (W->ops[i].kind)
			ck_assert_int_ge(amio_cancel(W->r, W->ops[i].id) == 0 ? 0 : -1, -1);
	for (end = t_now_ms() + 10000;;) {
		bool running = false;

		for (int i = 0; i < W_OPS; i++)
			running |= W->ops[i].kind != 0;
		for (int i = 0; i < W_PAIRS; i++)
			w_peer_read(W, &W->pairs[i]);
		if (!running)
			break;
		ck_assert_msg(t_now_ms() < end, "AMIO_IO_SEED=%u: operations never ended", W->seed);
		w_wait(W, 10);
	}
	while (W->nheld)
		ck_assert_int_eq(amio_pool_put(W->pool, W->held[--W->nheld]), 0);
	/* A send's DONE means the kernel has its bytes, not that the peer has
	 * read them: read on until every completed send arrived. */
	for (int i = 0; i < W_PAIRS; i++)
		while (!W->pairs[i].tainted && W->pairs[i].got_len < W->pairs[i].expect_len &&
		       t_now_ms() < end) {
			w_peer_read(W, &W->pairs[i]);
			usleep(1000);
		}
	for (int i = 0; i < W_PAIRS; i++) {
		struct w_pair *pr = &W->pairs[i];

		if (!pr->tainted) {
			ck_assert_msg(pr->got_len == pr->expect_len,
			              "AMIO_IO_SEED=%u: pair %d: peer read %zu of %zu sent",
			              W->seed, i, pr->got_len, pr->expect_len);
		}
		close(pr->fd[0]);
		close(pr->fd[1]);
		free(pr->expect);
		free(pr->got);
	}
	ck_assert_int_eq(amio_pool_free(W->pool), 0);
	amio_registrar_free(W->r);
	amio_poller_free(W->p);
	free(W);
}
END_TEST

/* ---- Ends of lives ------------------------------------------------------- */

/* Operations in flight when their inbox registrar or the poller is freed:
 * no crash, no leak (ASan), accepted fds of nobody closed. */
START_TEST(freeing_with_operations_in_flight)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *inbox, *amy;
	amio_pool *pool, *pool2;
	int fds[2], lfd, before = t_count_fds();
	uint16_t port;
	char buf[1 << 16] = {0};
	pthread_t pt;

	lfd = t_listen(&port);
	t_tcp_pair(fds);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &inbox), 0);
	ck_assert_int_eq(amio_registrar_new(p, 0, &amy), 0);
	ck_assert_int_eq(amio_pool_new(inbox, 4, 64, &pool), 0);
	ck_assert_int_eq(amio_pool_new(amy, 4, 64, &pool2), 0);
	pthread_create(&pt, NULL, t_run_poller, p);
	ck_assert_int_gt(amio_accept(inbox, lfd, NULL), 0);
	ck_assert_int_gt(amio_recv(inbox, fds[1], pool, NULL), 0);
	ck_assert_int_gt(amio_send(inbox, fds[1], buf, sizeof(buf), 0, NULL), 0);
	ck_assert_int_gt(amio_recv(amy, fds[0], pool2, NULL), 0);
	for (int i = 0; i < 5; i++)
		close(t_connect(port));
	t_write_str(fds[0], "hello");
	usleep(50000);
	amio_registrar_free(inbox); /* its operations end, its pool goes */
	usleep(50000);
	t_stop_poller(p, pt);
	amio_registrar_free(amy);
	amio_poller_free(p); /* pool2 and its recv go with it */
	close(fds[0]);
	close(fds[1]);
	close(lfd);
	ck_assert_int_le(t_count_fds(), before);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("io");
	TCase *tc = tcase_create("io");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, bad_arguments_get_clear_errors);
	tcase_add_test(tc, accept_reports_each_connection_then_done_on_cancel);
	tcase_add_test(tc, amy_mode_notes_stashed_by_run_reach_wait);
	tcase_add_test(tc, recv_delivers_every_byte_in_order_through_a_small_pool);
	tcase_add_test(tc, an_exhausted_pool_pauses_the_recv_until_a_buffer_comes_back);
	tcase_add_test(tc, sends_on_one_socket_go_out_in_order_and_whole);
	tcase_add_test(tc, a_send_to_a_closed_peer_ends_with_an_error);
	tcase_add_test(tc, a_deadline_ends_an_idle_recv_with_etime_never_early);
	tcase_add_loop_test(tc, cancel_racing_completion_gives_one_done_and_every_buffer_back, 0,
	                    4);
	tcase_add_test(tc, cancel_of_a_blocked_send_and_of_sends_queued_behind_it);
	tcase_add_test(tc, an_inbox_worker_echoes_through_completions_only);
	tcase_add_loop_test(tc, many_connections_through_a_small_pool_with_a_lagging_consumer, 0,
	                    3);
	tcase_add_test(tc, freeing_with_operations_in_flight);
	tcase_add_loop_test(tc, a_random_walk_keeps_the_operations_contract, 0, 3);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
