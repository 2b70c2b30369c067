/*
 * An outside attack on the connection calls (issue 19): amio_close (and
 * AMIO_CLOSE_GRACEFUL), amio_shutdown, amio_registrar_set_conn (idle and
 * send timeouts, high/low water), amio_connect, amio_pread/amio_pwrite,
 * amio_registrar_wake, amio_registrar_set_queue_wait, the accept back-off
 * and the set-up hand-off. Public API only (include/amio.h is the
 * contract); real sockets, files and threads; the suite runs again on
 * epoll (AMIO_BACKEND=epoll). Nothing here measures a speed: "never
 * early" bounds only, and stalls of 20 s. Random cases print their seed;
 * AMIO_TEST_SEED=<n> replays one.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "amio_test.h"

#define STALL_MS 20000

static unsigned t_seed(unsigned salt)
{
	const char *s = getenv("AMIO_TEST_SEED");
	unsigned v = s ? (unsigned)strtoul(s, NULL, 0) : (unsigned)time(NULL) ^ salt;

	fprintf(stderr, "seed %u (AMIO_TEST_SEED=%u to replay)\n", v, v);
	return v;
}

/* ---- Helpers ------------------------------------------------------------------ */

struct note_log {
	amio_notification n[4096];
	int64_t at[4096];
	int count;
};

/* Amy mode: take notifications until one for id `until` with AMIO_DONE. */
static void collect_until(amio_poller *p, struct note_log *log, uint64_t until)
{
	int64_t end = t_now_ms() + STALL_MS;

	for (;;) {
		int rc;

		ck_assert_int_lt(log->count, 4095);
		rc = amio_poller_wait(p, &log->n[log->count], 1, 10);
		ck_assert_int_ge(rc, 0);
		if (rc) {
			amio_notification *n = &log->n[log->count];

			log->at[log->count++] = t_now_ms();
			if (n->id == until && (n->events & AMIO_DONE))
				return;
		}
		ck_assert_msg(t_now_ms() < end, "no DONE for id %llu", (unsigned long long)until);
	}
}

/* Amy mode: take notifications for quiet_ms more (nothing may come). */
static void collect_for(amio_poller *p, struct note_log *log, int ms)
{
	int64_t end = t_now_ms() + ms;

	while (t_now_ms() < end) {
		int rc;

		ck_assert_int_lt(log->count, 4095);
		rc = amio_poller_wait(p, &log->n[log->count], 1, 5);
		ck_assert_int_ge(rc, 0);
		if (rc)
			log->at[log->count++] = t_now_ms();
	}
}

static int find_done(const struct note_log *log, int64_t id)
{
	int at = -1;

	for (int i = 0; i < log->count; i++)
		if (log->n[i].id == (uint64_t)id && (log->n[i].events & AMIO_DONE)) {
			ck_assert_msg(at < 0, "id %lld: two DONEs", (long long)id);
			at = i;
		}
	ck_assert_msg(at >= 0, "id %lld: no DONE", (long long)id);
	return at;
}

static int count_id(const struct note_log *log, int64_t id)
{
	int k = 0;

	for (int i = 0; i < log->count; i++)
		k += log->n[i].id == (uint64_t)id;
	return k;
}

/* Read what the peer gets until EOF (or reset); returns the byte count. */
static size_t read_to_eof(int fd, char *buf, size_t cap)
{
	size_t got = 0;
	int64_t end = t_now_ms() + STALL_MS;

	t_nonblock(fd);
	for (;;) {
		char sink[65536];
		ssize_t n =
		    read(fd, got < cap ? buf + got : sink, got < cap ? cap - got : sizeof(sink));

		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EINTR))
			return got;
		ck_assert_msg(t_now_ms() < end, "no EOF");
		usleep(500);
	}
}

/* Read what comes for ms (the peer stays open); returns the byte count. */
static size_t read_to_eof_for(int fd, int ms)
{
	size_t got = 0;
	int64_t end = t_now_ms() + ms;
	static char sink[65536];

	t_nonblock(fd);
	while (t_now_ms() < end) {
		ssize_t n = read(fd, sink, sizeof(sink));

		if (n > 0)
			got += (size_t)n;
		else if (n == 0 || (errno != EAGAIN && errno != EINTR))
			break;
		else
			usleep(500);
	}
	return got;
}

static int nb_socket(int family)
{
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	return fd;
}

static struct sockaddr_in loopback(uint16_t port)
{
	return (struct sockaddr_in){.sin_family = AF_INET,
	                            .sin_port = htons(port),
	                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
}

/* ---- amio_close across registrars ------------------------------------------------ */

/* Registrar c makes the close (AMIO_CLOSE_GRACEFUL), then registrar s a
 * send and a recv on the same fd, one thread, the poller not running
 * meanwhile. _i 0: c is the older registrar; 1: the newer one (the poll
 * thread drains the newest first); 2: c is s. Through the same registrar
 * both end with -EBADF and no byte reaches the peer; through another,
 * amio.h promises only the order the poll thread takes them in: each ends
 * with one DONE (-EBADF, or the send ran before the close: its length or
 * -ECANCELED; the recv -ECANCELED), the close's after theirs, and every
 * byte the peer gets comes before its EOF. (The outside attack found the
 * old "through any registrar" promise broken.) */
START_TEST(a_send_after_a_close_through_another_registrar_is_ebadf)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *old, *young, *c, *s;
	amio_pool *pool;
	struct note_log *log = calloc(1, sizeof(*log));
	amio_notification n;
	int fds[2];
	char got[64] = {0};
	size_t len;
	int64_t close_id, send_id, recv_id;

	ck_assert_int_eq(amio_registrar_new(p, 0, &old), 0);
	ck_assert_int_eq(amio_poller_wait(p, &n, 1, 0), 0); /* adopted */
	ck_assert_int_eq(amio_registrar_new(p, 0, &young), 0);
	ck_assert_int_eq(amio_poller_wait(p, &n, 1, 0), 0);
	c = _i == 1 ? young : old;
	s = _i == 0 ? young : old;
	ck_assert_int_eq(amio_pool_new(s, 4, 64, &pool), 0);
	t_tcp_pair(fds);
	close_id = amio_close(c, fds[1], AMIO_CLOSE_GRACEFUL, NULL);
	ck_assert_int_gt(close_id, 0);
	send_id = amio_send(s, fds[1], "late", 4, 0, NULL);
	ck_assert_int_gt(send_id, 0);
	recv_id = amio_recv(s, fds[1], pool, NULL);
	ck_assert_int_gt(recv_id, 0);
	collect_until(p, log, (uint64_t)close_id);
	if (!count_id(log, send_id))
		collect_until(p, log, (uint64_t)send_id);
	if (!count_id(log, recv_id))
		collect_until(p, log, (uint64_t)recv_id);
	len = read_to_eof(fds[0], got, sizeof(got));
	ck_assert_int_eq(log->n[find_done(log, close_id)].res, 0);
	if (c == s) {
		ck_assert_msg(len == 0, "the peer read %zu bytes sent after the close: \"%.*s\"",
		              len, (int)len, got);
		ck_assert_int_eq(log->n[find_done(log, send_id)].res, -EBADF);
		ck_assert_int_eq(log->n[find_done(log, recv_id)].res, -EBADF);
	} else {
		int32_t sres = log->n[find_done(log, send_id)].res;
		int32_t rres = log->n[find_done(log, recv_id)].res;

		ck_assert_msg(sres == -EBADF || sres == 4 || sres == -ECANCELED, "send %d", sres);
		ck_assert_msg(rres == -EBADF || rres == -ECANCELED, "recv %d", rres);
		ck_assert(len == 0 || (len == 4 && memcmp(got, "late", 4) == 0 && sres == 4));
		if (sres != -EBADF)
			ck_assert_int_lt(find_done(log, send_id), find_done(log, close_id));
	}
	ck_assert_int_eq(amio_pool_free(pool), 0);
	amio_registrar_free(old);
	amio_registrar_free(young);
	amio_poller_free(p);
	close(fds[0]);
	free(log);
}
END_TEST

/* ---- amio_pread at the largest length ---------------------------------------------- */

/* A buffer of len bytes whose pages are one small memfd mapped again and
 * again: the address space of 2 GiB, a few MiB of memory. */
static void *big_buffer(size_t len, size_t chunk)
{
	int mfd = memfd_create("amio-attack", MFD_CLOEXEC);
	size_t total = (len + chunk - 1) / chunk * chunk;
	char *base;

	ck_assert_int_ge(mfd, 0);
	ck_assert_int_eq(ftruncate(mfd, (off_t)chunk), 0);
	base = mmap(NULL, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	ck_assert_ptr_ne(base, MAP_FAILED);
	for (size_t off = 0; off < total; off += chunk)
		ck_assert_ptr_eq(mmap(base + off, chunk, PROT_READ | PROT_WRITE,
		                      MAP_SHARED | MAP_FIXED | MAP_POPULATE, mfd, 0),
		                 base + off);
	close(mfd);
	return base;
}

/* "res = the bytes read (fewer than len only at the end of the file)":
 * len AMIO_FILE_MAX_LEN (the largest allowed) from a sparse file of 3 GiB
 * at offset 0 must read all of it. It allowed 2^31 - 1 once, which the
 * kernel cut at MAX_RW_COUNT (2^31 - 4096): a short read mid-file. */
START_TEST(a_pread_of_the_largest_length_reads_it_all)
{
	const size_t len = AMIO_FILE_MAX_LEN, chunk = 4 << 20;
	char path[] = "/dev/shm/amio-attack-big-XXXXXX"; /* tmpfs: holes read as the zero page */
	int fd = mkstemp(path);
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification n;
	char *buf;

	if (fd < 0) { /* no /dev/shm: a disk's holes cost page cache, slower */
		char path2[] = "/tmp/amio-attack-big-XXXXXX";

		fd = mkstemp(path2);
		memcpy(path, path2, sizeof(path2) < sizeof(path) ? sizeof(path2) : sizeof(path));
	}
	int64_t id, end = t_now_ms() + STALL_MS;
	int rc;

	ck_assert_int_ge(fd, 0);
	unlink(path);
#if defined(__SANITIZE_THREAD__)
	close(fd);
	amio_poller_free(p);
	return; /* TSan's pread interceptor walks 2 GiB of shadow: minutes */
#endif
	ck_assert_int_eq(ftruncate(fd, (off_t)3 << 30), 0);
	buf = big_buffer(len, chunk);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pread(r, fd, buf, len + 1, 0, NULL), -EINVAL);
	ck_assert_int_eq(amio_pwrite(r, fd, buf, len + 1, 0, NULL), -EINVAL);
	id = amio_pread(r, fd, buf, len, 0, NULL);
	ck_assert_int_gt(id, 0);
	while ((rc = amio_poller_wait(p, &n, 1, 10)) == 0)
		ck_assert_msg(t_now_ms() < end, "no DONE");
	ck_assert_int_eq(rc, 1);
	ck_assert_uint_eq(n.events, AMIO_PREAD | AMIO_DONE);
	ck_assert_msg(n.res == (int32_t)len, "pread of %zu bytes of a 3 GiB file said %d", len,
	              n.res);
	amio_registrar_free(r);
	amio_poller_free(p);
	munmap(buf, (len + chunk - 1) / chunk * chunk);
	close(fd);
}
END_TEST

/* ---- Flow control: a pause undone before its cancel completes ---------------------- */

/* high_water 1000: each 2000-byte send to a peer with room pauses the
 * recv (its request cancelled) and, done at once, resumes it. "No
 * notification, no new id": the recv must never end, and bytes the peer
 * sends afterwards arrive on it. */
START_TEST(a_pause_and_resume_never_ends_the_recv)
{
	static char out[2000];
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct note_log *log = calloc(1, sizeof(*log));
	int fds[2], rounds = t_scale(200);
	int64_t recv_id, close_id;
	char sink[65536];

	t_tcp_pair(fds);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_registrar_set_conn(
	                     r, &(struct amio_conn_config){.high_water = 1000, .low_water = 500}),
	                 0);
	ck_assert_int_eq(amio_pool_new(r, 4, 64, &pool), 0);
	recv_id = amio_recv(r, fds[1], pool, NULL);
	ck_assert_int_gt(recv_id, 0);
	collect_for(p, log, 20); /* armed */
	for (int i = 0; i < rounds; i++) {
		int64_t sid = amio_send(r, fds[1], out, sizeof(out), 0, NULL);

		ck_assert_int_gt(sid, 0);
		collect_until(p, log, (uint64_t)sid);
		ck_assert_int_eq(log->n[find_done(log, sid)].res, (int)sizeof(out));
		for (int k = 0; k < log->count; k++)
			ck_assert_msg(
			    log->n[k].id != (uint64_t)recv_id,
			    "round %d: the recv ended (events %#x, res %d) without a cancel", i,
			    log->n[k].events, log->n[k].res);
		while (read(fds[0], sink, sizeof(sink)) > 0)
			;
		log->count = 0;
	}
	t_write_str(fds[0], "ping");
	for (int64_t end = t_now_ms() + STALL_MS; !count_id(log, recv_id);) {
		ck_assert_msg(t_now_ms() < end, "the recv never got the bytes");
		collect_for(p, log, 10);
	}
	{
		amio_notification *n = &log->n[0];

		for (int k = 0; k < log->count; k++)
			if (log->n[k].id == (uint64_t)recv_id)
				n = &log->n[k];
		ck_assert_uint_eq(n->events, AMIO_RECV);
		ck_assert_int_eq(n->res, 4);
		ck_assert_int_eq(amio_pool_put(pool, n->buf), 0);
	}
	close_id = amio_close(r, fds[1], 0, NULL);
	collect_until(p, log, (uint64_t)close_id);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	amio_registrar_free(r);
	amio_poller_free(p);
	close(fds[0]);
	free(log);
}
END_TEST

/* ---- amio_close through an inbox registrar freed right after --------------------- */

/* "Commands it queued still take effect" and "The program makes no
 * close(2)": a worker that closes its connection, then frees its inbox
 * registrar, must not leak the fd: the peer reads EOF, the fd is closed. */
START_TEST(a_close_then_the_inbox_registrars_free_still_closes)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	amio_notification n[8];
	int fds[2], fds_before;
	char buf[8];

	/* One thread: the poll thread is this one (amio_poller_wait), so the
	 * order is fixed: close, free, then the poll thread applies both. */
	amio_poller_free(p);
	t_tcp_pair(fds);
	fds_before = t_count_fds();
	p = t_poller(NULL);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	if (_i == 1) {
		ck_assert_int_eq(amio_pool_new(r, 4, 64, &pool), 0);
		ck_assert_int_gt(amio_recv(r, fds[1], pool, NULL), 0);
		ck_assert_int_eq(amio_poller_wait(p, n, 8, 10), 0); /* armed */
	}
	if (_i == 2) /* a send first: the close waits for it (GRACEFUL) */
		ck_assert_int_gt(amio_send(r, fds[1], "bye", 3, 0, NULL), 0);
	ck_assert_int_gt(amio_close(r, fds[1], _i == 2 ? AMIO_CLOSE_GRACEFUL : 0, NULL), 0);
	amio_registrar_free(r);
	{
		int64_t end = t_now_ms() + 2000;
		ssize_t got;

		t_nonblock(fds[0]);
		while (((got = read(fds[0], buf, sizeof(buf))) < 0 && errno == EAGAIN) ||
		       (_i == 2 && got > 0)) {
			ck_assert_int_ge(amio_poller_wait(p, n, 8, 5), 0);
			if (t_now_ms() > end)
				break;
		}
		ck_assert_msg(got == 0,
		              "the peer saw no EOF: the close was dropped with the registrar");
	}
	ck_assert_int_eq(fcntl(fds[1], F_GETFD), -1);
	amio_poller_free(p);
	ck_assert_int_eq(t_count_fds(), fds_before - 1);
	close(fds[0]);
}
END_TEST

/* ---- amio_close twice, cancelled, fd reuse --------------------------------------- */

/* Two closes of one fd: the first closes (0), the second ends with -EBADF
 * (an operation started after the close), before the first's DONE. A
 * cancelled close (_i 1) leaves the fd open and usable: a send after its
 * DONE goes out. After CLOSE DONE, the fd number a new socket takes works
 * with a fresh recv (nothing of the old fd's state leaks to it). */
START_TEST(two_closes_a_cancelled_close_and_fd_reuse)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct note_log *log = calloc(1, sizeof(*log));
	int fds[2], fds2[2], fds_before;
	int64_t c1, c2, rid, sid;
	char buf[16];

	t_tcp_pair(fds);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	fds_before = t_count_fds();
	ck_assert_int_eq(amio_pool_new(r, 4, 64, &pool), 0);
	rid = amio_recv(r, fds[1], pool, NULL);
	ck_assert_int_gt(rid, 0);
	collect_for(p, log, 10);
	c1 = amio_close(r, fds[1], 0, NULL);
	ck_assert_int_gt(c1, 0);
	if (_i) {
		ck_assert_int_eq(amio_cancel(r, (uint64_t)c1), 0);
		collect_until(p, log, (uint64_t)c1);
		if (!count_id(log, rid))
			collect_until(p, log, (uint64_t)rid);
		ck_assert_int_eq(log->n[find_done(log, c1)].res, -ECANCELED);
		ck_assert_int_eq(log->n[find_done(log, rid)].res, -ECANCELED);
		ck_assert_int_ge(fcntl(fds[1], F_GETFD), 0); /* open */
		sid = amio_send(r, fds[1], "still", 5, 0, NULL);
		collect_until(p, log, (uint64_t)sid);
		ck_assert_int_eq(log->n[find_done(log, sid)].res, 5);
		c1 = amio_close(r, fds[1], 0, NULL);
	}
	c2 = amio_close(r, fds[1], AMIO_CLOSE_GRACEFUL, NULL);
	ck_assert_int_gt(c2, 0);
	collect_until(p, log, (uint64_t)c1);
	if (!count_id(log, c2))
		collect_until(p, log, (uint64_t)c2);
	ck_assert_int_eq(log->n[find_done(log, c1)].res, 0);
	ck_assert_int_eq(log->n[find_done(log, c2)].res, -EBADF);
	ck_assert_uint_eq(log->n[find_done(log, c2)].events, AMIO_CLOSE | AMIO_DONE);
	ck_assert_int_eq(fcntl(fds[1], F_GETFD), -1);
	ck_assert_int_eq(t_count_fds(), fds_before - 1);
	if (_i)
		ck_assert_int_eq(read_to_eof(fds[0], buf, sizeof(buf)), 5);
	/* The number again, for a new connection. */
	t_tcp_pair(fds2);
	if (fds2[0] != fds[1] && fds2[1] != fds[1]) {
		ck_assert_int_eq(dup3(fds2[1], fds[1], O_CLOEXEC), fds[1]);
		close(fds2[1]);
		fds2[1] = fds[1];
	}
	{
		int mine = fds[1], other = fds2[0] + fds2[1] - fds[1];
		int64_t id = amio_recv(r, mine, pool, NULL), cid;

		ck_assert_int_gt(id, 0);
		t_write_str(other, "new");
		log->count = 0;
		for (int64_t end = t_now_ms() + STALL_MS; !count_id(log, id);) {
			ck_assert_msg(t_now_ms() < end, "the reused fd's recv got nothing");
			collect_for(p, log, 10);
		}
		ck_assert_msg(log->n[0].id == (uint64_t)id && log->n[0].events == AMIO_RECV &&
		                  log->n[0].res == 3,
		              "the reused fd's recv: id %llu (recv %lld) events %#x res %d",
		              (unsigned long long)log->n[0].id, (long long)id, log->n[0].events,
		              log->n[0].res);
		ck_assert_int_eq(amio_pool_put(pool, log->n[0].buf), 0);
		cid = amio_close(r, mine, 0, NULL);
		collect_until(p, log, (uint64_t)cid);
		ck_assert_int_eq(log->n[find_done(log, cid)].res, 0);
		close(other);
	}
	ck_assert_int_eq(amio_pool_free(pool), 0);
	amio_registrar_free(r);
	amio_poller_free(p);
	close(fds[0]);
	free(log);
}
END_TEST

/* ---- amio_connect edges: the same answer as connect(2), on both backends ------------ */

static int32_t connect_done(amio_poller *p, amio_registrar *r, int fd, const void *addr,
                            socklen_t len)
{
	struct note_log *log = calloc(1, sizeof(*log));
	int64_t id = amio_connect(r, fd, addr, len, NULL);
	int32_t res;

	ck_assert_msg(id > 0, "amio_connect: %s", amio_strerror((int)id));
	ck_assert_int_eq(amio_set_deadline(r, (uint64_t)id, 3000), 0);
	collect_until(p, log, (uint64_t)id);
	ck_assert_int_eq(log->count, 1);
	ck_assert_uint_eq(log->n[0].events, AMIO_CONNECT | AMIO_DONE);
	res = log->n[0].res;
	free(log);
	return res;
}

START_TEST(connect_edges_answer_as_connect_does)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	uint16_t port;
	int lfd = t_listen(&port), fd, l6;
	struct sockaddr_in a = loopback(port);
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
	struct sockaddr_storage ss = {0};
	socklen_t l6len = sizeof(a6);

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	/* Connected already: -EISCONN, as connect(2) says. */
	fd = nb_socket(AF_INET);
	ck_assert_int_eq(connect_done(p, r, fd, &a, sizeof(a)), 0);
	ck_assert_int_eq(connect_done(p, r, fd, &a, sizeof(a)), -EISCONN);
	close(fd);
	/* addrlen shorter than the family's address: -EINVAL. */
	fd = nb_socket(AF_INET);
	ck_assert_int_eq(connect_done(p, r, fd, &a, 3), -EINVAL);
	ck_assert_int_eq(connect_done(p, r, fd, &a, 1), -EINVAL);
	/* The largest addrlen allowed: a sockaddr_storage holding an IPv4 address. */
	memcpy(&ss, &a, sizeof(a));
	ck_assert_int_eq(connect_done(p, r, fd, &ss, sizeof(ss)), 0);
	ck_assert_int_eq(amio_connect(r, fd, (struct sockaddr *)&ss, sizeof(ss) + 1, NULL),
	                 -EINVAL);
	close(fd);
	/* IPv6, when the machine has ::1. */
	l6 = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (l6 >= 0 && bind(l6, (struct sockaddr *)&a6, sizeof(a6)) == 0 && listen(l6, 16) == 0 &&
	    getsockname(l6, (struct sockaddr *)&a6, &l6len) == 0) {
		fd = nb_socket(AF_INET6);
		ck_assert_int_eq(connect_done(p, r, fd, &a6, sizeof(a6)), 0);
		close(fd);
		/* An IPv4 address on an IPv6 socket: connect(2) says -EAFNOSUPPORT
		 * or -EINVAL; amio must say the same. */
		fd = nb_socket(AF_INET6);
		{
			int probe = nb_socket(AF_INET6);
			int want =
			    connect(probe, (struct sockaddr *)&a, sizeof(a)) < 0 ? -errno : 0;

			close(probe);
			if (want != -EINPROGRESS)
				ck_assert_int_eq(connect_done(p, r, fd, &a, sizeof(a)), want);
		}
		close(fd);
	}
	if (l6 >= 0)
		close(l6);
	/* AF_UNIX: a path nobody made, then a listener. */
	{
		struct sockaddr_un u = {.sun_family = AF_UNIX};
		int ul = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		snprintf(u.sun_path, sizeof(u.sun_path), "/tmp/amio-attack-%d.sock", getpid());
		unlink(u.sun_path);
		fd = nb_socket(AF_UNIX);
		ck_assert_int_eq(connect_done(p, r, fd, &u, sizeof(u)), -ENOENT);
		close(fd);
		ck_assert_int_eq(bind(ul, (struct sockaddr *)&u, sizeof(u)), 0);
		ck_assert_int_eq(listen(ul, 16), 0);
		fd = nb_socket(AF_UNIX);
		ck_assert_int_eq(connect_done(p, r, fd, &u, sizeof(u)), 0);
		close(fd);
		close(ul);
		unlink(u.sun_path);
	}
	amio_registrar_free(r);
	amio_poller_free(p);
	close(lfd);
}
END_TEST

/* A unix listener whose backlog is full: a non-blocking connect(2) says
 * -EAGAIN at once. Both backends must answer alike (record what each
 * does: io_uring retries -EAGAIN on poll). */
START_TEST(a_unix_connect_to_a_full_backlog_answers_alike)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	struct sockaddr_un u = {.sun_family = AF_UNIX};
	int ul = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), fill[4], fd, want;
	int32_t res;

	snprintf(u.sun_path, sizeof(u.sun_path), "/tmp/amio-attack-full-%d.sock", getpid());
	unlink(u.sun_path);
	ck_assert_int_eq(bind(ul, (struct sockaddr *)&u, sizeof(u)), 0);
	ck_assert_int_eq(listen(ul, 0), 0);
	for (int i = 0; i < 4; i++) {
		fill[i] = nb_socket(AF_UNIX);
		(void)connect(fill[i], (struct sockaddr *)&u, sizeof(u));
	}
	fd = nb_socket(AF_UNIX);
	want = connect(fd, (struct sockaddr *)&u, sizeof(u)) < 0 ? -errno : 0;
	close(fd);
	ck_assert_int_eq(want, -EAGAIN);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	fd = nb_socket(AF_UNIX);
	res = connect_done(p, r, fd, &u, sizeof(u));
	fprintf(stderr, "%s: unix connect to a full backlog: %d\n", amio_poller_backend(p), res);
	ck_assert_msg(res == -EAGAIN, "%s: DONE %d (%s), connect(2) says -EAGAIN",
	              amio_poller_backend(p), res, amio_strerror(res));
	close(fd);
	for (int i = 0; i < 4; i++)
		close(fill[i]);
	close(ul);
	unlink(u.sun_path);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- amio_pread / amio_pwrite: the answers pread(2) and pwrite(2) give ---------------- */

static int tmp_file(void)
{
	char path[] = "/tmp/amio-attack-file-XXXXXX";
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	unlink(path);
	return fd;
}

static int32_t file_done(amio_poller *p, int64_t id, uint32_t ev)
{
	struct note_log *log = calloc(1, sizeof(*log));
	int32_t res;

	ck_assert_msg(id > 0, "call: %s", amio_strerror((int)id));
	collect_until(p, log, (uint64_t)id);
	ck_assert_int_eq(log->count, 1);
	ck_assert_uint_eq(log->n[0].events, ev | AMIO_DONE);
	res = log->n[0].res;
	free(log);
	return res;
}

#define SYS(call) ((call) < 0 ? -errno : (int32_t)(call))

START_TEST(file_edges_answer_as_the_syscalls_do)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	int fd = tmp_file(), app, wo, ro;
	char buf[64], path[64], want[64];
	static char abuf[8192] __attribute__((aligned(4096)));

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(pwrite(fd, "abcdef", 6, 0), 6);
	/* At EOF, past it, at INT64_MAX. */
	ck_assert_int_eq(file_done(p, amio_pread(r, fd, buf, 10, 4, NULL), AMIO_PREAD), 2);
	ck_assert_int_eq(file_done(p, amio_pread(r, fd, buf, 10, 6, NULL), AMIO_PREAD), 0);
	ck_assert_int_eq(file_done(p, amio_pread(r, fd, buf, 10, 1 << 30, NULL), AMIO_PREAD), 0);
	ck_assert_int_eq(file_done(p, amio_pread(r, fd, buf, 10, INT64_MAX, NULL), AMIO_PREAD),
	                 SYS(pread(fd, buf, 10, INT64_MAX)));
	ck_assert_int_eq(file_done(p, amio_pwrite(r, fd, "x", 1, INT64_MAX, NULL), AMIO_PWRITE),
	                 SYS(pwrite(fd, "x", 1, INT64_MAX)));
	ck_assert_int_eq(
	    file_done(p, amio_pwrite(r, fd, "xy", 2, INT64_MAX - 1, NULL), AMIO_PWRITE),
	    SYS(pwrite(fd, "xy", 2, INT64_MAX - 1)));
	ck_assert_int_eq(amio_pread(r, fd, buf, 1, (uint64_t)INT64_MAX + 1, NULL), -EINVAL);
	ck_assert_int_eq(amio_pread(r, fd, buf, (size_t)INT32_MAX + 1, 0, NULL), -EINVAL);
	ck_assert_int_eq(amio_pread(r, fd, buf, 0, 0, NULL), -EINVAL);
	/* Char devices: "another file type" (-EINVAL). */
	{
		int z = open("/dev/zero", O_RDWR | O_CLOEXEC),
		    nul = open("/dev/null", O_RDWR | O_CLOEXEC);

		ck_assert_int_eq(amio_pread(r, z, buf, 1, 0, NULL), -EINVAL);
		ck_assert_int_eq(amio_pwrite(r, nul, buf, 1, 0, NULL), -EINVAL);
		close(z);
		close(nul);
	}
	/* Write-only and read-only fds: -EBADF in the DONE. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	wo = open(path, O_WRONLY | O_CLOEXEC);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(wo, 0);
	ck_assert_int_ge(ro, 0);
	ck_assert_int_eq(file_done(p, amio_pread(r, wo, buf, 1, 0, NULL), AMIO_PREAD), -EBADF);
	ck_assert_int_eq(file_done(p, amio_pwrite(r, ro, "q", 1, 0, NULL), AMIO_PWRITE), -EBADF);
	/* O_APPEND: appends whatever the offset. */
	app = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	ck_assert_int_ge(app, 0);
	ck_assert_int_eq(file_done(p, amio_pwrite(r, app, "GH", 2, 0, NULL), AMIO_PWRITE), 2);
	memset(want, 0, sizeof(want));
	ck_assert_int_eq(pread(fd, want, 6, 0), 6);
	ck_assert_int_eq(memcmp(want, "abcdef", 6), 0);
	{
		struct stat st;

		ck_assert_int_eq(fstat(fd, &st), 0);
		ck_assert_int_eq(pread(fd, want, 2, st.st_size - 2), 2);
		ck_assert_int_eq(memcmp(want, "GH", 2), 0);
	}
	/* O_DIRECT, when the file system has it: misaligned is pwrite's answer. */
	{
		int d = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);

		if (d >= 0) {
			ck_assert_int_eq(
			    file_done(p, amio_pwrite(r, d, abuf, 4096, 0, NULL), AMIO_PWRITE),
			    SYS(pwrite(d, abuf, 4096, 0)));
			ck_assert_int_eq(
			    file_done(p, amio_pread(r, d, abuf + 1, 4096, 0, NULL), AMIO_PREAD),
			    SYS(pread(d, abuf + 1, 4096, 0)));
			ck_assert_int_eq(
			    file_done(p, amio_pread(r, d, abuf, 100, 3, NULL), AMIO_PREAD),
			    SYS(pread(d, abuf, 100, 3)));
			close(d);
		}
	}
	close(app);
	close(wo);
	close(ro);
	close(fd);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* Thousands of reads and writes in flight (epoll: 1024 in the threads'
 * hands, the rest queued), a seeded storm of cancels and deadlines 0
 * among them: each ends with exactly one DONE, a write that says n wrote
 * n, a read that says n read the file's bytes. */
START_TEST(a_storm_of_file_operations_and_cancels)
{
	enum { N = 3000, LEN = 512 };
	unsigned seed = t_seed(0x5171);
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	int fd = tmp_file(), dones = 0;
	char *buf = malloc((size_t)N * LEN), *ref = malloc((size_t)N * LEN);
	int64_t *ids = calloc(N, sizeof(*ids));
	uint8_t *seen = calloc(N, 1), *wr = calloc(N, 1);
	int64_t end;

	srand(seed);
	for (size_t i = 0; i < (size_t)N * LEN; i++)
		ref[i] = (char)(i * 131 + 7);
	ck_assert_int_eq(pwrite(fd, ref, (size_t)N * LEN, 0), (ssize_t)N * LEN);
	memcpy(buf, ref, (size_t)N * LEN);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_registrar_set_queue_wait(r, -1), 0);
	for (int i = 0; i < N; i++) {
		wr[i] = rand() % 2;
		ids[i] = wr[i] ? amio_pwrite(r, fd, buf + (size_t)i * LEN, LEN, (uint64_t)i * LEN,
		                             (void *)(intptr_t)(i + 1))
		               : amio_pread(r, fd, buf + (size_t)i * LEN, LEN, (uint64_t)i * LEN,
		                            (void *)(intptr_t)(i + 1));
		ck_assert_int_gt(ids[i], 0);
		if (rand() % 4 == 0) {
			int j = rand() % (i + 1), rc;

			rc = rand() % 2 ? amio_cancel(r, (uint64_t)ids[j])
			                : amio_set_deadline(r, (uint64_t)ids[j], 0);
			ck_assert_msg(rc == 0 || rc == -ENOENT, "cancel: %d", rc);
		}
	}
	for (end = t_now_ms() + STALL_MS; dones < N;) {
		amio_notification n[64];
		int got = amio_poller_wait(p, n, 64, 10);

		ck_assert_msg(t_now_ms() < end, "%d of %d DONEs, none for %d ms (seed %u)", dones,
		              N, STALL_MS, seed);
		ck_assert_int_ge(got, 0);
		if (got)
			end = t_now_ms() + STALL_MS; /* a stall bound, not a speed */
		for (int k = 0; k < got; k++) {
			int i = (int)(intptr_t)n[k].data - 1;

			ck_assert_int_ge(i, 0);
			ck_assert_int_lt(i, N);
			ck_assert_uint_eq(n[k].id, (uint64_t)ids[i]);
			ck_assert_uint_eq(n[k].events,
			                  (wr[i] ? AMIO_PWRITE : AMIO_PREAD) | AMIO_DONE);
			ck_assert_msg(!seen[i], "op %d: two DONEs (seed %u)", i, seed);
			seen[i] = 1;
			ck_assert_msg(n[k].res == LEN || n[k].res == -ECANCELED ||
			                  n[k].res == -ETIME,
			              "op %d: res %d (seed %u)", i, n[k].res, seed);
			if (n[k].res == LEN && !wr[i])
				ck_assert_int_eq(
				    memcmp(buf + (size_t)i * LEN, ref + (size_t)i * LEN, LEN), 0);
			dones++;
		}
	}
	{
		amio_notification n;

		ck_assert_int_eq(amio_poller_wait(p, &n, 1, 50), 0); /* nothing more */
	}
	amio_registrar_free(r);
	amio_poller_free(p);
	free(buf);
	free(ref);
	free(ids);
	free(seen);
	free(wr);
	close(fd);
}
END_TEST

/* The poll thread runs elsewhere (inbox mode); main frees the poller with
 * file operations in flight and queued, then frees their buffers at once:
 * ASan sees any thread that touches one after the free returned. */
START_TEST(free_from_another_thread_with_file_operations_queued)
{
	enum { N = 2000, LEN = 4096 };
	int fd = tmp_file(), fds_before;

	ck_assert_int_eq(ftruncate(fd, (off_t)N * LEN), 0);
	fds_before = t_count_fds();
	for (int round = 0; round < t_scale(10); round++) {
		amio_poller *p = t_poller(NULL);
		amio_registrar *r;
		pthread_t poll;
		char *buf = malloc((size_t)N * LEN);

		pthread_create(&poll, NULL, t_run_poller, p);
		ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
		ck_assert_int_eq(amio_registrar_set_queue_wait(r, -1), 0);
		for (int i = 0; i < N; i++)
			ck_assert_int_gt(round % 2 ? amio_pwrite(r, fd, buf + (size_t)i * LEN, LEN,
			                                         (uint64_t)i * LEN, NULL)
			                           : amio_pread(r, fd, buf + (size_t)i * LEN, LEN,
			                                        (uint64_t)i * LEN, NULL),
			                 0);
		usleep((useconds_t)(round % 4) * 1000);
		t_stop_poller(p, poll);
		amio_poller_free(p);
		memset(buf, 0xAA, (size_t)N * LEN); /* the program owns it again */
		free(buf);
		amio_registrar_free(r);
	}
	ck_assert_int_eq(t_count_fds(), fds_before);
	close(fd);
}
END_TEST

/* ---- amio_registrar_wake from many threads ---------------------------------------- */

struct wake_storm {
	amio_registrar *r;
	int go, stop; /* __atomic */
	int wakes;    /* __atomic: wakes made */
};

static void *waker(void *arg)
{
	struct wake_storm *w = arg;

	while (!__atomic_load_n(&w->go, __ATOMIC_ACQUIRE))
		;
	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
		if (amio_registrar_wake(w->r) != 0)
			return (void *)1;
		__atomic_add_fetch(&w->wakes, 1, __ATOMIC_RELAXED);
		if (rand() % 8 == 0)
			usleep(50);
	}
	return NULL;
}

/* Eight threads wake one owner as fast as they can while timers come: the
 * owner never sleeps through a wake (each wait without limit returns), and
 * every timer arrives once. */
START_TEST(wakes_from_many_threads_at_once)
{
	enum { THREADS = 8 };
	amio_poller *p = t_poller(NULL);
	struct wake_storm w = {0};
	pthread_t poll, t[THREADS];
	int timers = t_scale(2000), fired = 0, made = 0;
	int64_t end = t_now_ms() + STALL_MS;

	pthread_create(&poll, NULL, t_run_poller, p);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &w.r), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, waker, &w);
	__atomic_store_n(&w.go, 1, __ATOMIC_RELEASE);
	while (fired < timers) {
		amio_notification n[16];
		int got;

		if (made < timers && amio_set_timeout(w.r, 0, NULL) > 0)
			made++;
		got = amio_registrar_wait(w.r, n, 16, made < timers ? 0 : -1);
		ck_assert_int_ge(got, 0);
		for (int k = 0; k < got; k++)
			ck_assert_uint_eq(n[k].events, AMIO_TIMER);
		fired += got;
		ck_assert_msg(t_now_ms() < end, "%d of %d timers", fired, timers);
	}
	__atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < THREADS; i++) {
		void *rc;

		pthread_join(t[i], &rc);
		ck_assert_ptr_null(rc);
	}
	/* The wakes left end at most one wait; a wait after it runs its time. */
	(void)amio_registrar_wait(w.r, (amio_notification[1]){0}, 1, 1); /* the last wake */
	{
		int64_t t0 = t_now_ms();
		amio_notification n;

		ck_assert_int_eq(amio_registrar_wait(w.r, &n, 1, 50), 0);
		ck_assert_int_ge(t_now_ms() - t0, 50);
	}
	amio_registrar_free(w.r);
	t_stop_poller(p, poll);
	amio_poller_free(p);
}
END_TEST

/* ---- Calls that wait for room, the poller freed under them ------------------------ */

struct roomer {
	amio_registrar *r;
	int calls, last; /* calls made, the last one's result */
};

static void *roomer_fn(void *arg)
{
	struct roomer *m = arg;

	for (;;) {
		int64_t rc = amio_set_timeout(m->r, 100000, NULL);

		if (rc < 0) {
			m->last = (int)rc;
			return NULL;
		}
		m->calls++;
	}
}

/* queue_entries 2, eight registrars whose calls wait without limit; the
 * poll thread runs a while, then is stopped (nobody drains); then main
 * frees the poller: every call waiting ends with -ESHUTDOWN. */
START_TEST(calls_waiting_for_room_end_when_the_poller_is_freed)
{
	enum { R = 8 };
	struct amio_poller_config cfg = {.queue_entries = 2, .inbox_entries = 2};
	amio_poller *p = t_poller(&cfg);
	struct roomer m[R] = {0};
	pthread_t poll, t[R];

	pthread_create(&poll, NULL, t_run_poller, p);
	for (int i = 0; i < R; i++) {
		ck_assert_int_eq(amio_registrar_new(p, i % 2 ? AMIO_INBOX : 0, &m[i].r), 0);
		ck_assert_int_eq(amio_registrar_set_queue_wait(m[i].r, -1), 0);
		pthread_create(&t[i], NULL, roomer_fn, &m[i]);
	}
	usleep(30000);
	t_stop_poller(p, poll);
	usleep(30000);
	amio_poller_free(p);
	for (int i = 0; i < R; i++) {
		pthread_join(t[i], NULL);
		ck_assert_int_eq(m[i].last, -ESHUTDOWN);
		ck_assert_int_eq(amio_registrar_wake(m[i].r), i % 2 ? -ESHUTDOWN : -EINVAL);
		amio_registrar_free(m[i].r);
	}
}
END_TEST

/* ---- Send timeouts: never early, behind a queue ----------------------------------- */

/* send_timeout_ms 150: a big send to a peer that never reads, then three
 * small sends made later (20 ms apart, all before the first's timeout). The first ends with -ETIME
 * no earlier than 150 ms after its call; each behind it ends with -ETIME too, in order, after it.
 */
START_TEST(send_timeouts_are_never_early_and_end_in_order)
{
	enum { BIG = 16 << 20 };
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	struct note_log *log = calloc(1, sizeof(*log));
	char *big = calloc(1, BIG);
	int fds[2];
	int64_t id[4], t0[4], cid;

	t_tcp_pair(fds);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(
	    amio_registrar_set_conn(r, &(struct amio_conn_config){.send_timeout_ms = 150}), 0);
	for (int k = 0; k < 4; k++) {
		t0[k] = t_now_ms();
		id[k] = amio_send(r, fds[1], big, k ? 100 : BIG, 0, NULL);
		ck_assert_int_gt(id[k], 0);
		collect_for(p, log, 20);
	}
	for (int k = 0; k < 4; k++)
		if (!count_id(log, id[k]))
			collect_until(p, log, (uint64_t)id[k]);
	for (int k = 0; k < 4; k++) {
		int at = find_done(log, id[k]);

		/* A send made once the first's timeout may have passed (a slow,
		 * busy machine) is not behind it: it may go out. */
		if (k && t0[k] >= t0[0] + 150) {
			ck_assert(log->n[at].res == -ETIME || log->n[at].res == 100);
			continue;
		}
		ck_assert_int_eq(log->n[at].res, -ETIME);
		if (k == 0)
			ck_assert_int_ge(log->at[at] - t0[0], 150);
		else
			ck_assert_int_gt(at, find_done(log, id[k - 1]));
	}
	cid = amio_close(r, fds[1], 0, NULL);
	collect_until(p, log, (uint64_t)cid);
	ck_assert_int_eq(log->n[find_done(log, cid)].res, 0);
	amio_registrar_free(r);
	amio_poller_free(p);
	close(fds[0]);
	free(big);
	free(log);
}
END_TEST

/* ---- Idle timeouts under a flow-control pause; GRACEFUL bounded by timeouts ---------- */

/* idle_ms 100, high_water 1000, a peer that neither reads nor writes: a
 * 64 MiB send pauses the recv; paused time is not idle time, so the recv
 * is still there 400 ms later. Once the peer reads everything the recv
 * resumes, and ends with -ETIME no earlier than 100 ms after the peer began
 * to read (the resume comes after that). */
START_TEST(a_paused_recv_is_not_idle)
{
	enum { BIG = 64 << 20 }; /* more than the socket buffers of both ends hold */
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	struct note_log *log = calloc(1, sizeof(*log));
	char *big = calloc(1, BIG), *sink = malloc(1 << 16);
	int fds[2];
	int64_t rid, sid, resumed;
	size_t got = 0;

	t_tcp_pair(fds);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(
	    amio_registrar_set_conn(
	        r, &(struct amio_conn_config){.idle_ms = 100, .high_water = 1000, .low_water = 10}),
	    0);
	ck_assert_int_eq(amio_pool_new(r, 4, 64, &pool), 0);
	rid = amio_recv(r, fds[1], pool, NULL);
	sid = amio_send(r, fds[1], big, BIG, 0, NULL);
	ck_assert_int_gt(rid, 0);
	ck_assert_int_gt(sid, 0);
	collect_for(p, log, 400);
	ck_assert_msg(count_id(log, rid) == 0, "the paused recv ended: res %d",
	              log->n[find_done(log, rid)].res);
	ck_assert_int_eq(count_id(log, sid), 0); /* the peer reads nothing: still sending */
	t_nonblock(fds[0]);
	resumed = t_now_ms(); /* the send cannot finish before the peer reads */
	for (int64_t end = t_now_ms() + STALL_MS; got < BIG;) {
		ssize_t n = read(fds[0], sink, 1 << 16);

		if (n > 0)
			got += (size_t)n;
		ck_assert_msg(t_now_ms() < end, "the send never finished");
		collect_for(p, log, 1);
	}
	if (!count_id(log, sid))
		collect_until(p, log, (uint64_t)sid);
	ck_assert_int_eq(log->n[find_done(log, sid)].res, BIG);
	if (!count_id(log, rid))
		collect_until(p, log, (uint64_t)rid);
	ck_assert_int_eq(log->n[find_done(log, rid)].res, -ETIME);
	ck_assert_int_ge(log->at[find_done(log, rid)] - resumed, 100);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	{
		int64_t cid = amio_close(r, fds[1], 0, NULL);

		collect_until(p, log, (uint64_t)cid);
	}
	amio_registrar_free(r);
	amio_poller_free(p);
	close(fds[0]);
	free(big);
	free(sink);
	free(log);
}
END_TEST

/* send_timeout_ms 100 and a peer that never reads: a GRACEFUL close waits
 * for the send's timeout (-ETIME, never early), then closes (0). */
START_TEST(a_graceful_close_is_bounded_by_the_send_timeout)
{
	enum { BIG = 16 << 20 };
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	struct note_log *log = calloc(1, sizeof(*log));
	char *big = calloc(1, BIG);
	int fds[2];
	int64_t sid, cid, t0;

	t_tcp_pair(fds);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(
	    amio_registrar_set_conn(r, &(struct amio_conn_config){.send_timeout_ms = 100}), 0);
	t0 = t_now_ms();
	sid = amio_send(r, fds[1], big, BIG, 0, NULL);
	cid = amio_close(r, fds[1], AMIO_CLOSE_GRACEFUL, NULL);
	ck_assert_int_gt(sid, 0);
	ck_assert_int_gt(cid, 0);
	collect_until(p, log, (uint64_t)cid);
	ck_assert_int_eq(log->n[find_done(log, sid)].res, -ETIME);
	ck_assert_int_ge(log->at[find_done(log, sid)] - t0, 100);
	ck_assert_int_lt(find_done(log, sid), find_done(log, cid));
	ck_assert_int_eq(log->n[find_done(log, cid)].res, 0);
	ck_assert_int_eq(fcntl(fds[1], F_GETFD), -1);
	amio_registrar_free(r);
	amio_poller_free(p);
	close(fds[0]);
	free(big);
	free(log);
}
END_TEST

/* ---- Closes and shutdowns of what is no connection ------------------------------------ */

/* A listener with an accept running and connections in its backlog: the
 * close ends the accept (-ECANCELED, after any ACCEPT it gave), then
 * closes (0); the fds it handed out are the program's, nothing else
 * leaks. Shutdown and close of a pipe, a file, an fd not open: the
 * syscalls' answers. */
START_TEST(close_of_a_listener_and_of_what_is_no_socket)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	struct note_log *log = calloc(1, sizeof(*log));
	uint16_t port;
	int lfd = t_listen(&port), cl[3], pfd[2], file = tmp_file(), closed, fds_before;
	int64_t aid, cid;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	fds_before = t_count_fds();
	aid = amio_accept(r, lfd, NULL);
	ck_assert_int_gt(aid, 0);
	for (int i = 0; i < 3; i++)
		cl[i] = t_connect(port);
	collect_for(p, log, 20);
	cid = amio_close(r, lfd, 0, NULL);
	collect_until(p, log, (uint64_t)cid);
	ck_assert_int_eq(log->n[find_done(log, aid)].res, -ECANCELED);
	ck_assert_int_lt(find_done(log, aid), find_done(log, cid));
	ck_assert_int_eq(log->n[find_done(log, cid)].res, 0);
	for (int i = 0; i < log->count; i++)
		if (log->n[i].id == (uint64_t)aid && !(log->n[i].events & AMIO_DONE)) {
			ck_assert_int_ge(log->n[i].res, 0);
			close(log->n[i].res);
		}
	for (int i = 0; i < 3; i++)
		close(cl[i]);
	ck_assert_int_eq(t_count_fds(), fds_before - 1);
	/* Shutdown of a pipe and a file: -ENOTSOCK; of an unconnected socket: -ENOTCONN. */
	ck_assert_int_eq(pipe2(pfd, O_CLOEXEC | O_NONBLOCK), 0);
	ck_assert_int_eq(file_done(p, amio_shutdown(r, pfd[1], NULL), AMIO_SHUTDOWN), -ENOTSOCK);
	ck_assert_int_eq(file_done(p, amio_shutdown(r, file, NULL), AMIO_SHUTDOWN), -ENOTSOCK);
	{
		int probe = nb_socket(AF_INET), want = SYS(shutdown(probe, SHUT_WR));

		ck_assert_int_eq(want, -ENOTCONN);
		ck_assert_int_eq(file_done(p, amio_shutdown(r, probe, NULL), AMIO_SHUTDOWN), want);
		close(probe);
	}
	lfd = t_listen(&port);
	/* Closes: a pipe, a file, a listener without operations, an fd not open. */
	ck_assert_int_eq(file_done(p, amio_close(r, pfd[0], 0, NULL), AMIO_CLOSE), 0);
	ck_assert_int_eq(file_done(p, amio_close(r, pfd[1], AMIO_CLOSE_GRACEFUL, NULL), AMIO_CLOSE),
	                 0);
	ck_assert_int_eq(file_done(p, amio_close(r, file, 0, NULL), AMIO_CLOSE), 0);
	ck_assert_int_eq(file_done(p, amio_close(r, lfd, 0, NULL), AMIO_CLOSE), 0);
	closed = dup(0);
	close(closed);
	ck_assert_int_eq(file_done(p, amio_close(r, closed, 0, NULL), AMIO_CLOSE), -EBADF);
	ck_assert_int_eq(file_done(p, amio_shutdown(r, closed, NULL), AMIO_SHUTDOWN), -EBADF);
	ck_assert_int_eq(fcntl(pfd[0], F_GETFD), -1);
	ck_assert_int_eq(fcntl(file, F_GETFD), -1);
	amio_registrar_free(r);
	amio_poller_free(p);
	free(log);
}
END_TEST

/* ---- amio_connect: a cancel racing the completion ---------------------------------- */

/* Seeded: a connect to a listener, then at once (or after a little while)
 * a cancel, a deadline 0 or a close: exactly one DONE, 0 or the reason
 * (-ECANCELED, -ETIME); with a close, its DONE after the connect's. */
START_TEST(a_cancel_racing_a_connect)
{
	unsigned seed = t_seed(0xC044);
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	struct note_log *log = calloc(1, sizeof(*log));
	uint16_t port;
	int lfd = t_listen(&port), fds_before;
	struct sockaddr_in a = loopback(port);

	srand(seed);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	fds_before = t_count_fds();
	for (int i = 0; i < t_scale(300); i++) {
		int fd = nb_socket(AF_INET), how = rand() % 3, s;
		int64_t id = amio_connect(r, fd, (struct sockaddr *)&a, sizeof(a), NULL), cid = 0;

		ck_assert_int_gt(id, 0);
		if (rand() % 2)
			collect_for(p, log, rand() % 2);
		if (how == 0)
			ck_assert_int_eq(amio_cancel(r, (uint64_t)id) == 0 ||
			                     amio_cancel(r, (uint64_t)id) == -ENOENT,
			                 1);
		else if (how == 1)
			(void)amio_set_deadline(r, (uint64_t)id, 0);
		else
			ck_assert_int_gt(cid = amio_close(r, fd, 0, NULL), 0);
		if (!count_id(log, id))
			collect_until(p, log, (uint64_t)id);
		if (cid)
			collect_until(p, log, (uint64_t)cid);
		ck_assert_int_eq(count_id(log, id), 1);
		{
			int32_t res = log->n[find_done(log, id)].res;

			ck_assert_msg(res == 0 || res == (how == 1 ? -ETIME : -ECANCELED),
			              "connect %d (how %d): %d (seed %u)", i, how, res, seed);
		}
		if (cid)
			ck_assert_int_eq(log->n[find_done(log, cid)].res, 0);
		else
			close(fd);
		while ((s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
			close(s);
		log->count = 0;
	}
	collect_for(p, log, 50);
	ck_assert_int_eq(log->count, 0);
	ck_assert_int_eq(t_count_fds(), fds_before);
	amio_registrar_free(r);
	amio_poller_free(p);
	close(lfd);
	free(log);
}
END_TEST

/* ---- An inbox registrar freed with a send running --------------------------------- */

/* "Ids registered through an inbox registrar are deregistered: its
 * operations are cancelled and their notifications dropped": no DONE will
 * come for a send of a freed inbox registrar, so the program cannot know
 * when its buffer is back. Probe: free the registrar with a 4 MiB send to
 * a peer that does not read yet, give the poll thread 50 ms to apply the
 * free, free the buffer, then let the peer read. Nothing may read the
 * freed buffer (ASan says so if something does), and the peer gets at
 * most the bytes sent before. */
START_TEST(an_inbox_registrar_freed_with_a_send_running)
{
	enum { BIG = 4 << 20 };
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	pthread_t poll;
	char *big = malloc(BIG);
	int fds[2];
	size_t got;

	memset(big, 'z', BIG);
	pthread_create(&poll, NULL, t_run_poller, p);
	t_tcp_pair(fds);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &r), 0);
	ck_assert_int_gt(amio_send(r, fds[1], big, BIG, 0, NULL), 0);
	usleep(20000);
	amio_registrar_free(r);
	got = read_to_eof_for(fds[0], 300);
	/* The free cancels the send; whether that beats its end is the
	 * machine's business: all of it may have gone out. */
	ck_assert_uint_le(got, BIG);
	t_stop_poller(p, poll);
	amio_poller_free(p);
	/* Only now: a freed inbox registrar's send makes no DONE to say when
	 * its buffer is free (amio.h; freeing it 50 ms after the registrar
	 * raced the poll thread's first sendmsg under TSan and busy loops). */
	free(big);
	close(fds[0]);
	close(fds[1]);
}
END_TEST

/* ---- The accept back-off, ended by a close or a deadline ---------------------------- */

/* The process at its fd limit: a connection gives a non-final ACCEPT with
 * -EMFILE; during the back-off, _i 0: amio_close of the listener ends the
 * accept at once (-ECANCELED, then the close's 0); _i 1: a deadline of
 * 0 (-ETIME). Exactly one DONE, nothing after it, no fd leaked. */
START_TEST(an_accept_backing_off_ends_by_close_or_deadline)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	struct note_log *log = calloc(1, sizeof(*log));
	struct rlimit orig, low;
	amio_notification n;
	uint16_t port;
	int lfd = t_listen(&port), cfd, maxfd = 0, *filled, nfilled = 0;
	struct sockaddr_in a = loopback(port);
	int64_t id, cid = 0, t0;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_poller_wait(p, &n, 1, 0), 0);
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(cfd, 0);
	for (int fd = 0; fd < 65536; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			maxfd = fd;
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &orig), 0);
	low = orig;
	low.rlim_cur = (rlim_t)maxfd + 1;
	filled = calloc((size_t)maxfd + 1, sizeof(*filled));
	for (int fd = 0; fd <= maxfd; fd++)
		if (fcntl(fd, F_GETFD) < 0) {
			ck_assert_int_ge(dup2(lfd, fd), 0);
			filled[nfilled++] = fd;
		}
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	id = amio_accept(r, lfd, NULL);
	ck_assert_int_gt(id, 0);
	ck_assert_int_eq(connect(cfd, (struct sockaddr *)&a, sizeof(a)), 0);
	for (int64_t end = t_now_ms() + STALL_MS; !count_id(log, id);) {
		ck_assert_msg(t_now_ms() < end, "no ACCEPT note");
		collect_for(p, log, 5);
	}
	ck_assert_uint_eq(log->n[0].events, AMIO_ACCEPT);
	ck_assert_int_eq(log->n[0].res, -EMFILE);
	t0 = t_now_ms();
	if (_i == 0)
		ck_assert_int_gt(cid = amio_close(r, lfd, 0, NULL), 0);
	else
		ck_assert_int_eq(amio_set_deadline(r, (uint64_t)id, 0), 0);
	collect_until(p, log, (uint64_t)id);
	ck_assert_int_eq(log->n[find_done(log, id)].res, _i == 0 ? -ECANCELED : -ETIME);
	ck_assert_msg(t_now_ms() - t0 < 5000, "the back-off did not end at once");
	for (int k = 0; k < log->count; k++)
		if (log->n[k].id == (uint64_t)id && !(log->n[k].events & AMIO_DONE))
			ck_assert_int_eq(log->n[k].res, -EMFILE);
	if (cid) {
		if (!count_id(log, cid))
			collect_until(p, log, (uint64_t)cid);
		ck_assert_int_eq(log->n[find_done(log, cid)].res, 0);
		ck_assert_int_lt(find_done(log, id), find_done(log, cid));
		ck_assert_int_eq(fcntl(lfd, F_GETFD), -1);
	}
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &orig), 0);
	{
		int before = log->count;

		collect_for(p, log, 50);
		ck_assert_int_eq(log->count, before); /* nothing after the DONEs */
	}
	for (int k = 0; k < nfilled; k++)
		close(filled[k]);
	free(filled);
	if (!cid)
		close(lfd);
	close(cfd);
	amio_registrar_free(r);
	amio_poller_free(p);
	free(log);
}
END_TEST

/* The kernel frees an fd's number when the close is issued, before its
 * CLOSE DONE is handed out: socket(2) may return it at once. An operation
 * on the new socket then must run, not end with -EBADF for the old one's
 * close (found by the tcp_proxy example: an upstream connect on a reused
 * number failed). 200 rounds look for that window; each one seen is
 * checked. */
START_TEST(a_number_reused_before_the_close_done_belongs_to_the_new_socket)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	amio_notification n[64];
	uint16_t port;
	int lfd = t_listen(&port), windows = 0;
	struct sockaddr_in a = loopback(port);

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 16, 4096, &pool), 0);
	for (int i = 0; i < 200; i++) {
		int c = t_connect(port), s = -1, got_close = 0;
		int64_t end = t_now_ms() + STALL_MS;

		while (s < 0) {
			s = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
			ck_assert_msg(s >= 0 || (errno == EAGAIN && t_now_ms() < end), "accept");
		}
		ck_assert_int_gt(amio_recv(r, s, pool, NULL), 0);
		ck_assert_int_ge(amio_poller_wait(p, n, 64, 0), 0);
		ck_assert_int_gt(amio_close(r, s, 0, NULL), 0);
		for (int w = 0; !got_close; w++) {
			int k = amio_poller_wait(p, n, 64, w ? 100 : (i & 1) * 10), s2;
			int64_t cid;

			ck_assert_int_ge(k, 0);
			for (int j = 0; j < k; j++)
				got_close |= !!(n[j].events & AMIO_CLOSE);
			ck_assert_msg(got_close || t_now_ms() < end, "no CLOSE DONE");
			if (got_close || fcntl(s, F_GETFD) >= 0)
				continue;
			s2 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (s2 != s) {
				close(s2);
				continue;
			}
			windows++;
			cid = amio_connect(r, s2, (struct sockaddr *)&a, sizeof(a), NULL);
			ck_assert_int_gt(cid, 0);
			for (int done = 0; !done;) {
				k = amio_poller_wait(p, n, 64, 100);
				ck_assert_int_ge(k, 0);
				ck_assert_msg(t_now_ms() < end, "no connect DONE");
				for (int j = 0; j < k; j++) {
					got_close |= !!(n[j].events & AMIO_CLOSE);
					if (n[j].id != (uint64_t)cid)
						continue;
					ck_assert_int_eq(n[j].res, 0);
					done = 1;
				}
			}
			close(s2);
			s = -1; /* checked: the number is the new socket's */
		}
		close(c);
		close(accept4(lfd, NULL, NULL, SOCK_CLOEXEC)); /* s2's connection, if any */
	}
	printf("%s: %d windows of a number reused before its CLOSE DONE\n", amio_poller_backend(p),
	       windows);
	ck_assert_int_eq(amio_pool_free(pool), 0);
	amio_registrar_free(r);
	amio_poller_free(p);
	close(lfd);
}
END_TEST

/* amio_strerror names the codes the connection calls give: its own words,
 * or the kernel's name and text ("-ECONNREFUSED: ..."), never NULL. */
START_TEST(strerror_names_every_code_the_connection_calls_give)
{
	static const int codes[] = {ECONNREFUSED, ECONNRESET, EMFILE,    ENFILE,   EISCONN,
	                            EALREADY,     ESPIPE,     EISDIR,    EFBIG,    ENETUNREACH,
	                            ENOBUFS,      ETIME,      ECANCELED, ETIMEDOUT};
	char want[64];

	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *s = amio_strerror(-codes[i]);

		ck_assert_ptr_nonnull(s);
		snprintf(want, sizeof(want), "-%s: ", strerrorname_np(codes[i]));
		ck_assert_msg(strncmp(s, want, strlen(want)) == 0, "%d: \"%s\"", codes[i], s);
	}
	ck_assert_ptr_nonnull(strstr(amio_strerror(-ENOBUFS), "accept"));
	ck_assert_str_eq(amio_strerror(1), "not an error code");
}
END_TEST

static Suite *attack_suite(void)
{
	Suite *s = suite_create("conn_attack");
	TCase *tc;

	tc = tcase_create("close");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, a_send_after_a_close_through_another_registrar_is_ebadf, 0, 3);
	tcase_add_loop_test(tc, a_close_then_the_inbox_registrars_free_still_closes, 0, 3);
	tcase_add_loop_test(tc, two_closes_a_cancelled_close_and_fd_reuse, 0, 2);
	tcase_add_test(tc, close_of_a_listener_and_of_what_is_no_socket);
	tcase_add_test(tc, strerror_names_every_code_the_connection_calls_give);
	tcase_add_test(tc, a_number_reused_before_the_close_done_belongs_to_the_new_socket);
	tcase_add_test(tc, an_inbox_registrar_freed_with_a_send_running);
	suite_add_tcase(s, tc);

	tc = tcase_create("flow");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, a_pause_and_resume_never_ends_the_recv);
	suite_add_tcase(s, tc);

	tc = tcase_create("connect");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, connect_edges_answer_as_connect_does);
	tcase_add_test(tc, a_unix_connect_to_a_full_backlog_answers_alike);
	tcase_add_test(tc, a_cancel_racing_a_connect);
	suite_add_tcase(s, tc);

	tc = tcase_create("accept");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, an_accept_backing_off_ends_by_close_or_deadline, 0, 2);
	suite_add_tcase(s, tc);

	tc = tcase_create("file");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, a_pread_of_the_largest_length_reads_it_all);
	tcase_add_test(tc, file_edges_answer_as_the_syscalls_do);
	tcase_add_test(tc, a_storm_of_file_operations_and_cancels);
	tcase_add_test(tc, free_from_another_thread_with_file_operations_queued);
	suite_add_tcase(s, tc);

	tc = tcase_create("wake and room");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, wakes_from_many_threads_at_once);
	tcase_add_test(tc, calls_waiting_for_room_end_when_the_poller_is_freed);
	suite_add_tcase(s, tc);

	tc = tcase_create("timeouts");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, send_timeouts_are_never_early_and_end_in_order);
	tcase_add_test(tc, a_paused_recv_is_not_idle);
	tcase_add_test(tc, a_graceful_close_is_bounded_by_the_send_timeout);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	t_require_io_uring();
	return t_run(attack_suite());
}
