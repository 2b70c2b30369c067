/*
 * File reads and writes at an offset (amio_pread, amio_pwrite): what the
 * call refuses, what a DONE carries, and the contract under cancels,
 * deadlines and closes, checked by a seeded random walk against a model
 * of the file's bytes. On io_uring IORING_OP_READ/WRITE; the suite runs
 * again on epoll (AMIO_BACKEND=epoll), where a pool of threads makes the
 * calls. Real files in a temporary directory, real threads.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "amio_test.h"

#define STALL_MS 20000

static int tmp_file(int flags)
{
	char path[] = "/tmp/amio-check-file-XXXXXX";
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	if (flags != O_RDWR) {
		int fd2 = open(path, flags | O_CLOEXEC);

		ck_assert_int_ge(fd2, 0);
		close(fd);
		fd = fd2;
	}
	unlink(path);
	return fd;
}

/* Amy mode: the next notification, which must be id's DONE of events. */
static amio_notification done_of(amio_poller *p, int64_t id, uint32_t events)
{
	amio_notification n;
	int64_t end = t_now_ms() + STALL_MS;
	int rc;

	while ((rc = amio_poller_wait(p, &n, 1, 10)) == 0)
		ck_assert_msg(t_now_ms() < end, "no DONE for %lld", (long long)id);
	ck_assert_int_eq(rc, 1);
	ck_assert_uint_eq(n.id, (uint64_t)id);
	ck_assert_uint_eq(n.events, events | AMIO_DONE);
	return n;
}

/* Each refusal is -errno at the call and leaves the registrar usable. */
START_TEST(the_calls_refuse_what_pread_would_refuse)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	int fd = tmp_file(O_RDWR), pipefd[2], dir = open("/tmp", O_RDONLY | O_DIRECTORY), closed;
	int fds[2];
	char buf[16];

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(pipe2(pipefd, O_CLOEXEC), 0);
	t_tcp_pair(fds);
	closed = dup(fd);
	close(closed);
	ck_assert_int_eq(amio_pread(r, -1, buf, 1, 0, NULL), -EBADF);
	ck_assert_int_eq(amio_pread(r, closed, buf, 1, 0, NULL), -EBADF);
	ck_assert_int_eq(amio_pread(NULL, fd, buf, 1, 0, NULL), -EINVAL);
	ck_assert_int_eq(amio_pread(r, fd, NULL, 1, 0, NULL), -EINVAL);
	ck_assert_int_eq(amio_pread(r, fd, buf, 0, 0, NULL), -EINVAL);
	ck_assert_int_eq(amio_pread(r, fd, buf, (size_t)INT32_MAX + 1, 0, NULL), -EINVAL);
	ck_assert_int_eq(amio_pread(r, fd, buf, 1, (uint64_t)INT64_MAX + 1, NULL), -EINVAL);
	ck_assert_int_eq(amio_pwrite(r, fd, buf, 1, UINT64_MAX, NULL), -EINVAL);
	ck_assert_int_eq(amio_pread(r, pipefd[0], buf, 1, 0, NULL), -ESPIPE);
	ck_assert_int_eq(amio_pwrite(r, pipefd[1], buf, 1, 0, NULL), -ESPIPE);
	ck_assert_int_eq(amio_pread(r, fds[0], buf, 1, 0, NULL), -ESPIPE);
	ck_assert_int_eq(amio_pread(r, dir, buf, 1, 0, NULL), -EISDIR);
	/* Still usable: a write and a read of it. */
	ck_assert_int_eq(done_of(p, amio_pwrite(r, fd, "abc", 3, 5, NULL), AMIO_PWRITE).res, 3);
	ck_assert_int_eq(done_of(p, amio_pread(r, fd, buf, 16, 4, NULL), AMIO_PREAD).res, 4);
	ck_assert_int_eq(memcmp(buf, "\0abc", 4), 0);
	close(fd);
	close(dir);
	close(pipefd[0]);
	close(pipefd[1]);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* What the kernel answers comes in the DONE: the end of the file (a short
 * read, then 0), an fd not open for the direction (-EBADF), huge offsets. */
START_TEST(a_done_carries_what_pread_and_pwrite_answer)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	int fd = tmp_file(O_RDWR), ro, wo;
	char path[64], buf[32];

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_ptr_eq(
	    done_of(p, amio_pwrite(r, fd, "0123456789", 10, 0, (void *)1), AMIO_PWRITE).data,
	    (void *)1);
	ck_assert_int_eq(done_of(p, amio_pread(r, fd, buf, 32, 6, NULL), AMIO_PREAD).res, 4);
	ck_assert_int_eq(memcmp(buf, "6789", 4), 0);
	ck_assert_int_eq(done_of(p, amio_pread(r, fd, buf, 32, 10, NULL), AMIO_PREAD).res, 0);
	ck_assert_int_eq(
	    done_of(p, amio_pread(r, fd, buf, 32, INT64_MAX - 32, NULL), AMIO_PREAD).res, 0);
	/* Past the end of what off_t holds: pread(2)'s rw_verify_area. */
	ck_assert_int_eq(done_of(p, amio_pread(r, fd, buf, 32, INT64_MAX, NULL), AMIO_PREAD).res,
	                 -EINVAL);
	ck_assert_int_eq(
	    done_of(p, amio_pwrite(r, fd, "x", 1, INT64_MAX - 1, NULL), AMIO_PWRITE).res, -EFBIG);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ro = open(path, O_RDONLY | O_CLOEXEC);
	wo = open(path, O_WRONLY | O_CLOEXEC);
	ck_assert_int_ge(ro, 0);
	ck_assert_int_ge(wo, 0);
	ck_assert_int_eq(done_of(p, amio_pwrite(r, ro, "x", 1, 0, NULL), AMIO_PWRITE).res, -EBADF);
	ck_assert_int_eq(done_of(p, amio_pread(r, wo, buf, 1, 0, NULL), AMIO_PREAD).res, -EBADF);
	close(ro);
	close(wo);
	close(fd);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- The random walk -------------------------------------------------------- */

#define WALK_OPS   512
#define WALK_BLOCK 4096 /* each op owns one block of the file: no two overlap */

struct walk_op {
	int64_t id;
	bool write, cancelled, timed, done;
	int32_t res;
	unsigned char *buf;
};

struct walk {
	amio_registrar *r;
	int fd;
	unsigned seed;
	struct walk_op ops[WALK_OPS];
	unsigned char *file; /* the model: what each block holds */
	int dones;
};

/* One DONE: exactly one per op, the right kind, a result the contract
 * allows: all the bytes (a block is whole), or the cause it was ended
 * for if it was; a read that finished carries the model's bytes. */
static void walk_check(struct walk *w, const amio_notification *n)
{
	int i = (int)(intptr_t)n->data;
	struct walk_op *op = &w->ops[i];

	ck_assert_msg(!op->done, "op %d: a second DONE (seed %u)", i, w->seed);
	ck_assert_uint_eq(n->id, (uint64_t)op->id);
	ck_assert_uint_eq(n->events, (op->write ? AMIO_PWRITE : AMIO_PREAD) | AMIO_DONE);
	op->done = true;
	op->res = n->res;
	w->dones++;
	if (n->res == -ECANCELED) {
		ck_assert_msg(op->cancelled, "op %d: -ECANCELED, never cancelled (seed %u)", i,
		              w->seed);
		return;
	}
	if (n->res == -ETIME) {
		ck_assert_msg(op->timed, "op %d: -ETIME, no deadline (seed %u)", i, w->seed);
		return;
	}
	ck_assert_msg(n->res == WALK_BLOCK, "op %d: res %d (seed %u)", i, n->res, w->seed);
	if (!op->write)
		ck_assert_msg(memcmp(op->buf, w->file + (size_t)i * WALK_BLOCK, WALK_BLOCK) == 0,
		              "op %d read other bytes (seed %u)", i, w->seed);
}

static void walk_take(struct walk *w, amio_poller *p, bool inbox, int timeout_ms)
{
	amio_notification n[8];
	int got = inbox ? amio_registrar_wait(w->r, n, 8, timeout_ms)
	                : amio_poller_wait(p, n, 8, timeout_ms);

	ck_assert_int_ge(got, 0);
	for (int k = 0; k < got; k++)
		walk_check(w, &n[k]);
}

/* Reads of blocks written before the walk, writes of fresh bytes to
 * others, random cancels and deadlines (0 to 2 ms) racing the calls,
 * through an Amy-mode registrar or (_i 1) an inbox of 4 entries, so DONEs
 * wait for room too. Seed: AMIO_TEST_SEED, or the time (printed). */
START_TEST(a_random_walk_of_reads_writes_cancels_and_deadlines)
{
	struct amio_poller_config cfg = {.inbox_entries = 4};
	amio_poller *p = t_poller(&cfg);
	struct walk *w = calloc(1, sizeof(*w));
	const char *env = getenv("AMIO_TEST_SEED");
	pthread_t poll;
	bool inbox = _i == 1;
	int nops = t_scale(WALK_OPS) < WALK_OPS ? t_scale(WALK_OPS) : WALK_OPS;

	w->seed = env ? (unsigned)strtoul(env, NULL, 0) : (unsigned)time(NULL) ^ (unsigned)getpid();
	printf("random walk seed %u (AMIO_TEST_SEED=%u replays it)\n", w->seed, w->seed);
	srand(w->seed);
	w->fd = tmp_file(O_RDWR);
	w->file = malloc((size_t)WALK_OPS * WALK_BLOCK);
	for (size_t k = 0; k < (size_t)WALK_OPS * WALK_BLOCK; k++)
		w->file[k] = (unsigned char)rand();
	ck_assert_int_eq(pwrite(w->fd, w->file, (size_t)WALK_OPS * WALK_BLOCK, 0),
	                 (ssize_t)WALK_OPS * WALK_BLOCK);
	if (inbox)
		pthread_create(&poll, NULL, t_run_poller, p);
	ck_assert_int_eq(amio_registrar_new(p, inbox ? AMIO_INBOX : 0, &w->r), 0);
	ck_assert_int_eq(amio_registrar_set_queue_wait(w->r, -1), 0);
	for (int i = 0; i < nops; i++) {
		struct walk_op *op = &w->ops[i];
		uint64_t off = (uint64_t)i * WALK_BLOCK;

		op->write = rand() % 2;
		op->buf = malloc(WALK_BLOCK);
		if (op->write) {
			for (int k = 0; k < WALK_BLOCK; k++)
				op->buf[k] = (unsigned char)rand();
			/* The model may hold either: it is a write that may be cut. */
			op->id =
			    amio_pwrite(w->r, w->fd, op->buf, WALK_BLOCK, off, (void *)(intptr_t)i);
		} else {
			op->id =
			    amio_pread(w->r, w->fd, op->buf, WALK_BLOCK, off, (void *)(intptr_t)i);
		}
		ck_assert_int_gt(op->id, 0);
		if (rand() % 4 == 0) {
			int rc = amio_cancel(w->r, (uint64_t)op->id);

			ck_assert(rc == 0 || rc == -ENOENT);
			op->cancelled = rc == 0;
		} else if (rand() % 4 == 0) {
			int rc = amio_set_deadline(w->r, (uint64_t)op->id, rand() % 3);

			ck_assert(rc == 0 || rc == -ENOENT); /* -ENOENT: it finished */
			op->timed = rc == 0;
		}
		if (rand() % 8 == 0)
			walk_take(w, p, inbox, 0);
	}
	for (int64_t end = t_now_ms() + STALL_MS; w->dones < nops;) {
		ck_assert_msg(t_now_ms() < end, "%d of %d DONEs (seed %u)", w->dones, nops,
		              w->seed);
		walk_take(w, p, inbox, 10);
	}
	{
		int ended = 0;

		for (int i = 0; i < nops; i++)
			ended += w->ops[i].res < 0;
		printf("%d of %d ops ended early by a cancel or deadline\n", ended, nops);
	}
	/* Every write that finished left its bytes, the others the old ones. */
	for (int i = 0; i < nops; i++) {
		unsigned char got[WALK_BLOCK];
		struct walk_op *op = &w->ops[i];

		if (!op->write)
			continue;
		ck_assert_int_eq(pread(w->fd, got, WALK_BLOCK, (off_t)i * WALK_BLOCK), WALK_BLOCK);
		if (op->res == WALK_BLOCK)
			ck_assert_msg(memcmp(got, op->buf, WALK_BLOCK) == 0,
			              "write %d lost (seed %u)", i, w->seed);
		else
			ck_assert_msg(
			    memcmp(got, w->file + (size_t)i * WALK_BLOCK, WALK_BLOCK) == 0,
			    "write %d ended with %d, yet wrote (seed %u)", i, op->res, w->seed);
	}
	amio_registrar_free(w->r);
	if (inbox)
		t_stop_poller(p, poll);
	amio_poller_free(p);
	for (int i = 0; i < nops; i++)
		free(w->ops[i].buf);
	close(w->fd);
	free(w->file);
	free(w);
}
END_TEST

/* amio_close of a file with reads in flight: each ends with its one DONE
 * (its bytes, or -ECANCELED), then the close's; the fd is closed. */
START_TEST(close_of_a_file_ends_its_reads_then_closes_it)
{
	enum { N = 64, LEN = 65536 };
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	int fd = tmp_file(O_RDWR), dones = 0;
	char *buf = malloc((size_t)N * LEN);
	int64_t ids[N], close_id;
	bool closed = false;

	ck_assert_int_eq(ftruncate(fd, (off_t)N * LEN), 0);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_registrar_set_queue_wait(r, -1), 0);
	for (int i = 0; i < N; i++)
		ck_assert_int_gt(ids[i] = amio_pread(r, fd, buf + (size_t)i * LEN, LEN,
		                                     (uint64_t)i * LEN, (void *)(intptr_t)(i + 1)),
		                 0);
	close_id = amio_close(r, fd, 0, NULL);
	ck_assert_int_gt(close_id, 0);
	ck_assert_int_eq(amio_pread(r, fd, buf, 1, 0, NULL) > 0, 1); /* ends with -EBADF */
	for (int64_t end = t_now_ms() + STALL_MS; !closed;) {
		amio_notification n;
		int rc = amio_poller_wait(p, &n, 1, 10);

		ck_assert_msg(t_now_ms() < end, "no close");
		if (rc == 0)
			continue;
		if (n.id == (uint64_t)close_id) {
			ck_assert_uint_eq(n.events, AMIO_CLOSE | AMIO_DONE);
			ck_assert_int_eq(n.res, 0);
			closed = true;
			continue;
		}
		ck_assert_uint_eq(n.events, AMIO_PREAD | AMIO_DONE);
		if (n.data == NULL && n.res == -EBADF)
			continue; /* the one started after the close */
		ck_assert_msg(n.res == LEN || n.res == -ECANCELED, "res %d", n.res);
		dones++;
	}
	ck_assert_int_eq(dones, N);
	ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
	amio_registrar_free(r);
	amio_poller_free(p);
	free(buf);
}
END_TEST

/* The poller freed with reads in flight and queued: no thread touches a
 * buffer after the free returns (ASan would see it: the buffers are freed
 * right after), nothing leaks. */
START_TEST(free_with_file_operations_in_flight)
{
	enum { N = 256, LEN = 16384 };
	int fd = tmp_file(O_RDWR), fds_before = t_count_fds();

	ck_assert_int_eq(ftruncate(fd, (off_t)N * LEN), 0);
	for (int round = 0; round < t_scale(20); round++) {
		amio_poller *p = t_poller(NULL);
		amio_registrar *r;
		char *buf = malloc((size_t)N * LEN);
		amio_notification n[16];

		ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
		ck_assert_int_eq(amio_registrar_set_queue_wait(r, -1), 0);
		for (int i = 0; i < N; i++)
			ck_assert_int_gt(
			    amio_pread(r, fd, buf + (size_t)i * LEN, LEN, (uint64_t)i * LEN, NULL),
			    0);
		ck_assert_int_ge(amio_poller_wait(p, n, 16, round % 3), 0);
		amio_registrar_free(r);
		amio_poller_free(p);
		free(buf);
	}
	ck_assert_int_eq(t_count_fds(), fds_before);
	close(fd);
}
END_TEST

/* A slot whose recv ended at EOF may be reused by a pread while an event
 * of the recv still waits in the epoll backend's fetched events (a wait
 * with cap 1 leaves them there): that event must not be taken for the
 * pread's (it was: recv_one with the pread's NULL pool, a SEGV under
 * the http_server test). On io_uring the same walk checks the same
 * contract. Many rounds of recvs that end at EOF, each DONE taken one at a
 * time and answered with preads at once. */
START_TEST(a_pread_in_a_slot_a_recv_left_takes_none_of_its_events)
{
	enum { ROUNDS = 200, READS = 4 };
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_pool *pool;
	int fd = tmp_file(O_RDWR), open_ops = 0;
	char buf[READS][64];
	int64_t end = t_now_ms() + 4 * STALL_MS;

	ck_assert_int_eq(pwrite(fd, "0123456789", 10, 0), 10);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_registrar_set_queue_wait(r, -1), 0);
	ck_assert_int_eq(amio_pool_new(r, 64, 64, &pool), 0);
	for (int round = 0; round < ROUNDS; round++) {
		int fds[2];

		t_tcp_pair(fds);
		t_write_str(fds[0], "x");
		ck_assert_int_eq(shutdown(fds[0], SHUT_WR), 0);
		ck_assert_int_gt(amio_recv(r, fds[1], pool, (void *)(intptr_t)fds[1]), 0);
		open_ops++;
		close(fds[0]);
		while (open_ops > (round % 3)) {
			amio_notification n;
			int got = amio_poller_wait(p, &n, 1, 10);

			ck_assert_int_ge(got, 0);
			ck_assert_msg(t_now_ms() < end, "stalled in round %d", round);
			if (!got)
				continue;
			if (n.events == AMIO_RECV) {
				ck_assert_int_eq(amio_pool_put(pool, n.buf), 0);
				continue;
			}
			if (n.events == (AMIO_PREAD | AMIO_DONE)) {
				ck_assert_int_eq(n.res, 10);
				open_ops--;
				continue;
			}
			ck_assert_uint_eq(n.events, AMIO_RECV | AMIO_DONE);
			ck_assert_int_eq(n.res, 0);
			close((int)(intptr_t)n.data);
			open_ops--;
			for (int k = 0; k < READS; k++, open_ops++)
				ck_assert_int_gt(amio_pread(r, fd, buf[k], 64, 0, NULL), 0);
		}
	}
	while (open_ops) {
		amio_notification n;
		int got = amio_poller_wait(p, &n, 1, 10);

		ck_assert_int_ge(got, 0);
		ck_assert_msg(t_now_ms() < end, "stalled at the end");
		if (got && n.events == AMIO_RECV)
			ck_assert_int_eq(amio_pool_put(pool, n.buf), 0);
		else if (got) {
			if (n.events == (AMIO_RECV | AMIO_DONE))
				close((int)(intptr_t)n.data);
			open_ops--;
		}
	}
	ck_assert_int_eq(amio_pool_free(pool), 0);
	amio_registrar_free(r);
	amio_poller_free(p);
	close(fd);
}
END_TEST

static Suite *file_suite(void)
{
	Suite *s = suite_create("file");
	TCase *tc = tcase_create("file");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, the_calls_refuse_what_pread_would_refuse);
	tcase_add_test(tc, a_done_carries_what_pread_and_pwrite_answer);
	tcase_add_loop_test(tc, a_random_walk_of_reads_writes_cancels_and_deadlines, 0, 2);
	tcase_add_test(tc, close_of_a_file_ends_its_reads_then_closes_it);
	tcase_add_test(tc, free_with_file_operations_in_flight);
	tcase_add_test(tc, a_pread_in_a_slot_a_recv_left_takes_none_of_its_events);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	t_require_io_uring();
	return t_run(file_suite());
}
