/* Does the frame writer deliver exactly the frames given, in order, when the
 * fd takes only part of them, and fail cleanly (no SIGPIPE, bounded queue)? */
#include <limits.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "frame_util.h"

#define MiB (1024u * 1024u)

/* Reads everything the peer end holds now (non-blocking) into got. */
static void drain_peer(int fd, unsigned char *got, size_t cap, size_t *len)
{
	for (;;) {
		ssize_t n = recv(fd, got + *len, cap - *len, MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		ck_assert_msg(n > 0, "peer recv: %zd %s", n, strerror(errno));
		*len += (size_t)n;
		ck_assert_uint_le(*len, cap);
		if (*len == cap)
			return;
	}
}

/* Flushes fw into fd while the peer drains it, until nothing is queued. */
static void flush_while_draining(struct amio_frame_writer *fw, int fd, int peer, unsigned char *got,
                                 size_t cap, size_t *len)
{
	ssize_t q;

	do {
		drain_peer(peer, got, cap, len);
		q = amio_frame_writer_flush(fw, fd);
		ck_assert_int_ge(q, 0);
		ck_assert_uint_eq((size_t)q, amio_frame_writer_queued(fw));
	} while (q > 0);
	drain_peer(peer, got, cap, len);
}

static void encode(unsigned char *dst, const void *msg, size_t len)
{
	fu_put_be32(dst, (uint32_t)len);
	memcpy(dst + FU_HDR, msg, len);
}

static void shrink_sndbuf(int fd)
{
	int one = 1;

	ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &one, sizeof(one)), 0);
}

/* --- Amy's cases -------------------------------------------------------------- */

START_TEST(test_flushing_an_empty_writer_returns_0_queued)
{
	struct amio_frame_writer fw;
	unsigned char got[16], want[16];
	size_t len = 0;
	int sv[2];

	fu_socketpair(sv);
	ck_assert_int_eq(amio_frame_writer_init(&fw, 1024), 0);
	ck_assert_int_eq(amio_frame_writer_flush(&fw, sv[0]), 0);
	ck_assert_uint_eq(amio_frame_writer_queued(&fw), 0);
	ck_assert_int_eq(amio_frame_writer_write(&fw, sv[0], "Hello World", 11), 0);
	ck_assert_int_eq(amio_frame_writer_flush(&fw, sv[0]), 0);
	drain_peer(sv[1], got, sizeof(got), &len);
	encode(want, "Hello World", 11);
	fu_assert_bytes(got, len, want, 15, "stream", 0);
	amio_frame_writer_destroy(&fw);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(test_a_partly_taken_frame_is_reported_and_flush_delivers_the_frames_in_order)
{
	static unsigned char big[100000], want[FU_HDR + 100000 + FU_HDR + 6], got[sizeof(want)];
	struct amio_frame_writer fw;
	ssize_t q1, q2;
	size_t i, len = 0;
	int sv[2];

	for (i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 31 + 7);
	encode(want, big, sizeof(big));
	encode(want + FU_HDR + sizeof(big), "second", 6);
	fu_socketpair(sv);
	shrink_sndbuf(sv[0]);
	ck_assert_int_eq(amio_frame_writer_init(&fw, 1 * MiB), 0);
	q1 = amio_frame_writer_write(&fw, sv[0], big, sizeof(big));
	ck_assert_int_gt(q1, 0); /* the socket took part of it */
	ck_assert_int_lt(q1, (ssize_t)(FU_HDR + sizeof(big)));
	ck_assert_uint_eq(amio_frame_writer_queued(&fw), (size_t)q1);
	q2 = amio_frame_writer_write(&fw, sv[0], "second", 6);
	ck_assert_int_eq(q2, q1 + FU_HDR + 6); /* appended behind the first */
	flush_while_draining(&fw, sv[0], sv[1], got, sizeof(got), &len);
	fu_assert_bytes(got, len, want, sizeof(want), "stream", 0);
	amio_frame_writer_destroy(&fw);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* --- short writes against a slow peer thread ---------------------------------- */

struct peer {
	int fd;
	unsigned char *got;
	size_t cap, len; /* cap is one more than expected, to catch extra bytes */
	int err;         /* errno of a failed read; asserted by the test thread */
};

/* Reads until EOF in random small pieces, pausing now and then. */
static void *slow_peer(void *arg)
{
	struct peer *p = arg;
	uint64_t rng = 99;
	unsigned reads = 0;

	for (;;) {
		size_t want = 1 + (size_t)(fu_rand(&rng) % 8192);
		ssize_t n;

		if (want > p->cap - p->len)
			want = p->cap - p->len;
		n = read(p->fd, p->got + p->len, want);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			p->err = n < 0 ? errno : 0;
			return NULL;
		}
		p->len += (size_t)n;
		if (++reads % 32 == 0)
			usleep(200);
	}
}

struct pump_stats {
	size_t short_writes, enobufs;
};

/* Writes every frame of st, backing off on -ENOBUFS until the fd is writable. */
static void pump(int fd, const struct fu_stream *st, size_t max_queued, struct pump_stats *sx)
{
	struct amio_frame_writer fw;
	size_t i, before;
	ssize_t q;

	ck_assert_int_eq(amio_frame_writer_init(&fw, max_queued), 0);
	for (i = 0; i < st->n; i++) {
		for (;;) {
			before = amio_frame_writer_queued(&fw);
			q = amio_frame_writer_write(&fw, fd, st->bytes + st->off[i], st->size[i]);
			if (q >= 0)
				break;
			FU_CHECK(q == -ENOBUFS, "write: %zd", q);
			FU_CHECK(amio_frame_writer_queued(&fw) <= before, "-ENOBUFS queued bytes");
			sx->enobufs++;
			fu_wait(fd, POLLOUT);
			FU_CHECK(amio_frame_writer_flush(&fw, fd) >= 0, "flush failed");
		}
		FU_CHECK((size_t)q == amio_frame_writer_queued(&fw), "queued %zd", q);
		FU_CHECK((size_t)q <= max_queued, "queue over its limit: %zd", q);
		sx->short_writes += q > 0;
	}
	while ((q = amio_frame_writer_flush(&fw, fd)) > 0)
		fu_wait(fd, POLLOUT);
	ck_assert_int_eq(q, 0);
	amio_frame_writer_destroy(&fw);
}

/* 10 MiB of frames from wfd to a slow reader on rfd, compared byte by byte. */
static void stream_10mb(int wfd, int rfd, const char *what)
{
	uint64_t rng = fu_seed(what);
	struct pump_stats sx = {0};
	struct fu_stream st;
	struct peer p = {.fd = rfd};
	pthread_t th;

	fu_stream_make_total(&st, 10 * MiB, 70000, &rng);
	p.cap = st.len + 1;
	p.got = malloc(p.cap);
	ck_assert_ptr_nonnull(p.got);
	ck_assert_int_eq(pthread_create(&th, NULL, slow_peer, &p), 0);
	pump(wfd, &st, 256 * 1024, &sx);
	close(wfd); /* EOF ends the peer */
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	ck_assert_int_eq(p.err, 0);
	printf("%s: %zu frames, %zu bytes, %zu short writes, %zu -ENOBUFS\n", what, st.n, st.len,
	       sx.short_writes, sx.enobufs);
	fu_assert_bytes(p.got, p.len, st.bytes, st.len, "stream", 0);
	ck_assert_uint_gt(sx.short_writes, 0);
	ck_assert_uint_gt(sx.enobufs, 0);
	free(p.got);
	fu_stream_free(&st);
	close(rfd);
}

START_TEST(test_10_mib_of_frames_reach_a_slow_tcp_peer_through_a_minimal_sndbuf)
{
	int a, b;

	fu_tcp_pair(&a, &b, 1, 1); /* both clamped to the kernel minimum */
	stream_10mb(a, b, "tcp");
}
END_TEST

START_TEST(test_10_mib_of_frames_reach_a_slow_unix_socket_peer_through_a_minimal_sndbuf)
{
	int sv[2];

	fu_socketpair(sv);
	shrink_sndbuf(sv[0]);
	stream_10mb(sv[0], sv[1], "unix");
}
END_TEST

START_TEST(test_10_mib_of_frames_reach_a_slow_reader_through_a_pipe_shrunk_to_one_page)
{
	int pfd[2];

	ck_assert_int_eq(pipe(pfd), 0);
	ck_assert_int_ge(fcntl(pfd[1], F_SETPIPE_SZ, (int)sysconf(_SC_PAGESIZE)), 0);
	ck_assert_int_eq(fcntl(pfd[1], F_GETPIPE_SZ), (int)sysconf(_SC_PAGESIZE));
	fu_set_nonblock(pfd[1]);
	stream_10mb(pfd[1], pfd[0], "pipe");
}
END_TEST

START_TEST(test_enobufs_past_max_queued_queues_nothing_and_the_writer_works_once_drained)
{
	static unsigned char frame[5000], want[64 * (FU_HDR + 5000)], got[sizeof(want)];
	struct amio_frame_writer fw;
	size_t k = 0, wlen = 0, len = 0, before;
	ssize_t q;
	int sv[2];

	memset(frame, 'f', sizeof(frame));
	fu_socketpair(sv);
	shrink_sndbuf(sv[0]);
	ck_assert_int_eq(amio_frame_writer_init(&fw, 16384), 0);
	for (;;) {
		frame[0] = (unsigned char)k; /* tell the frames apart */
		before = amio_frame_writer_queued(&fw);
		q = amio_frame_writer_write(&fw, sv[0], frame, sizeof(frame));
		if (q < 0)
			break;
		encode(want + wlen, frame, sizeof(frame));
		wlen += FU_HDR + sizeof(frame);
		ck_assert_uint_lt(++k, 64);
	}
	ck_assert_int_eq(q, -ENOBUFS);
	ck_assert_uint_eq(amio_frame_writer_queued(&fw), before); /* nothing queued */
	ck_assert_uint_gt(before, 16384 - (FU_HDR + sizeof(frame)));
	flush_while_draining(&fw, sv[0], sv[1], got, sizeof(got), &len);
	ck_assert_int_eq(amio_frame_writer_write(&fw, sv[0], "after", 5), 0);
	encode(want + wlen, "after", 5);
	wlen += FU_HDR + 5;
	flush_while_draining(&fw, sv[0], sv[1], got, sizeof(got), &len);
	fu_assert_bytes(got, len, want, wlen, "stream", 0);
	amio_frame_writer_destroy(&fw);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* --- errors --------------------------------------------------------------------- */

START_TEST(test_writing_after_the_peer_closed_returns_epipe_without_sigpipe)
{
	struct amio_frame_writer fw;
	int sv[2];

	fu_socketpair(sv);
	close(sv[1]);
	ck_assert_int_eq(amio_frame_writer_init(&fw, 1024), 0);
	ck_assert_int_eq(amio_frame_writer_write(&fw, sv[0], "anyone?", 7), -EPIPE);
	ck_assert_uint_eq(amio_frame_writer_queued(&fw), 0);
	ck_assert_int_eq(amio_frame_writer_write(&fw, sv[0], "", 0), -EPIPE);
	amio_frame_writer_destroy(&fw);
	close(sv[0]);
}
END_TEST

START_TEST(test_a_queue_left_when_the_peer_closes_gives_epipe_and_destroy_is_safe)
{
	static unsigned char big[200000];
	struct amio_frame_writer fw;
	ssize_t q;
	int sv[2];

	fu_socketpair(sv);
	shrink_sndbuf(sv[0]);
	ck_assert_int_eq(amio_frame_writer_init(&fw, 1 * MiB), 0);
	q = amio_frame_writer_write(&fw, sv[0], big, sizeof(big));
	ck_assert_int_gt(q, 0);
	close(sv[1]);
	ck_assert_int_eq(amio_frame_writer_flush(&fw, sv[0]), -EPIPE);
	ck_assert_int_eq(amio_frame_writer_write(&fw, sv[0], "x", 1), -EPIPE);
	ck_assert_uint_eq(amio_frame_writer_queued(&fw), (size_t)q); /* unchanged */
	amio_frame_writer_destroy(&fw);                              /* LSan checks the rest */
	close(sv[0]);
}
END_TEST

START_TEST(test_writing_to_a_closed_tcp_peer_ends_in_epipe_or_econnreset)
{
	struct amio_frame_writer fw;
	ssize_t q = 0;
	int a, b, i;

	fu_tcp_pair(&a, &b, 0, 0);
	close(b);
	ck_assert_int_eq(amio_frame_writer_init(&fw, 1 * MiB), 0);
	/* The first send may still succeed: the peer's RST answers it. */
	for (i = 0; i < 200 && q >= 0; i++) {
		q = amio_frame_writer_write(&fw, a, "ping", 4);
		if (q >= 0)
			usleep(5000);
	}
	ck_assert_msg(q == -EPIPE || q == -ECONNRESET, "write returned %zd", q);
	amio_frame_writer_destroy(&fw);
	close(a);
}
END_TEST

START_TEST(test_a_frame_that_cannot_fit_in_max_queued_gives_enobufs)
{
	static unsigned char msg[97];
	struct amio_frame_writer fw;
	unsigned char got[200];
	size_t len = 0;
	int sv[2];

	ck_assert_int_eq(amio_frame_writer_init(&fw, 3), -EINVAL);
	fu_socketpair(sv);
	ck_assert_int_eq(amio_frame_writer_init(&fw, 100), 0);
	ck_assert_int_eq(amio_frame_writer_write(&fw, sv[0], msg, 97), -ENOBUFS);
	ck_assert_int_eq(amio_frame_writer_write(&fw, sv[0], msg, 96), 0);
	drain_peer(sv[1], got, sizeof(got), &len);
	ck_assert_uint_eq(len, 100); /* only the frame that fit went out */
	amio_frame_writer_destroy(&fw);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* --- zero-length frames --------------------------------------------------------- */

START_TEST(test_runs_of_zero_length_frames_are_written_as_bare_headers)
{
	static unsigned char got[4096], zeros[4000];
	struct amio_frame_writer fw;
	size_t len = 0;
	int sv[2], i;

	fu_socketpair(sv);
	ck_assert_int_eq(amio_frame_writer_init(&fw, 64), 0);
	/* Each 4-byte send costs a whole skb of AF_UNIX send buffer, so even
	 * these fill the socket: the writer queues and never stalls. */
	for (i = 0; i < 1000; i++) {
		ssize_t q = amio_frame_writer_write(&fw, sv[0], NULL, 0);

		ck_assert_int_ge(q, 0);
		if (q > 0)
			flush_while_draining(&fw, sv[0], sv[1], got, sizeof(got), &len);
	}
	flush_while_draining(&fw, sv[0], sv[1], got, sizeof(got), &len);
	fu_assert_bytes(got, len, zeros, sizeof(zeros), "stream", 0);
	amio_frame_writer_destroy(&fw);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(test_zero_length_frames_behind_a_partial_frame_keep_their_order)
{
	static unsigned char big[100000], want[FU_HDR + 100000 + 10 * FU_HDR + FU_HDR + 3],
	    got[sizeof(want)];
	struct amio_frame_writer fw;
	size_t len = 0, wlen;
	ssize_t q;
	int sv[2], i;

	memset(big, 'b', sizeof(big));
	memset(want, 0, sizeof(want));
	encode(want, big, sizeof(big));
	wlen = FU_HDR + sizeof(big) + 10 * FU_HDR;
	encode(want + wlen, "end", 3);
	fu_socketpair(sv);
	shrink_sndbuf(sv[0]);
	ck_assert_int_eq(amio_frame_writer_init(&fw, 1 * MiB), 0);
	q = amio_frame_writer_write(&fw, sv[0], big, sizeof(big));
	ck_assert_int_gt(q, 0);
	for (i = 0; i < 10; i++) /* each is queued behind it: 4 more bytes */
		ck_assert_int_eq(amio_frame_writer_write(&fw, sv[0], "", 0), q + 4 * (i + 1));
	ck_assert_int_gt(amio_frame_writer_write(&fw, sv[0], "end", 3), 0);
	flush_while_draining(&fw, sv[0], sv[1], got, sizeof(got), &len);
	fu_assert_bytes(got, len, want, sizeof(want), "stream", 0);
	amio_frame_writer_destroy(&fw);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(test_a_stream_of_only_zero_length_frames_round_trips_through_the_reader)
{
	struct amio_frame_writer fw;
	struct amio_frame_reader fr;
	struct iovec f;
	size_t sent = 0, seen = 0;
	ssize_t q = 0;
	int sv[2], r;

	fu_socketpair(sv);
	shrink_sndbuf(sv[0]);
	fu_set_nonblock(sv[1]);
	ck_assert_int_eq(amio_frame_writer_init(&fw, 4096), 0);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 0), 0);
	while (seen < 100000) {
		while (sent < 100000 && (q = amio_frame_writer_write(&fw, sv[0], NULL, 0)) >= 0)
			sent++;
		FU_CHECK(sent == 100000 || q == -ENOBUFS, "write: %zd", q);
		FU_CHECK(amio_frame_writer_flush(&fw, sv[0]) >= 0, "flush");
		FU_CHECK(amio_frame_reader_read(&fr, sv[1]) != 0, "early EOF");
		while ((r = amio_frame_reader_next(&fr, &f)) == 1)
			seen++;
		FU_CHECK(r == 0 && seen <= sent, "next %d, seen %zu of %zu", r, seen, sent);
	}
	ck_assert_uint_eq(amio_frame_writer_queued(&fw), 0);
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[1]), -EAGAIN);
	amio_frame_reader_destroy(&fr);
	amio_frame_writer_destroy(&fw);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* --- raw bytes (write_raw, writev_raw) ----------------------------------------- */

/* len bytes whose last one is followed by a PROT_NONE page. */
static unsigned char *guarded(size_t len, size_t *map_len)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE), pages = (len + pg - 1) / pg;
	unsigned char *m = mmap(NULL, (pages + 1) * pg, PROT_READ | PROT_WRITE,
	                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(m, MAP_FAILED);
	ck_assert_int_eq(mprotect(m + pages * pg, pg, PROT_NONE), 0);
	*map_len = (pages + 1) * pg;
	return m + pages * pg - len;
}

static void unguard(unsigned char *p, size_t len, size_t map_len)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	munmap(p + len - (map_len - pg), map_len);
}

/* A pipe of one page, write end non-blocking: a write of page + s bytes into
 * it when it holds page - s takes exactly s bytes (the kernel merges the
 * s-byte remainder into the partly filled page, then finds the pipe full). */
static void one_page_pipe(int pfd[2])
{
	ck_assert_int_eq(pipe(pfd), 0);
	ck_assert_int_eq(fcntl(pfd[1], F_SETPIPE_SZ, (int)sysconf(_SC_PAGESIZE)),
	                 (int)sysconf(_SC_PAGESIZE));
	fu_set_nonblock(pfd[1]);
	fu_set_nonblock(pfd[0]);
}

/* Reads the pipe and flushes fw until want_len bytes arrived; compares. */
static void pipe_drain_check(struct amio_frame_writer *fw, int pfd[2], const unsigned char *want,
                             size_t want_len, unsigned char *got, size_t idx)
{
	size_t len = 0;
	ssize_t n, q;

	for (;;) {
		while ((n = read(pfd[0], got + len, want_len + 1 - len)) > 0)
			len += (size_t)n;
		FU_CHECK(n < 0 && errno == EAGAIN, "pipe read %zd", n);
		q = amio_frame_writer_flush(fw, pfd[1]);
		FU_CHECK(q >= 0, "flush %zd", q);
		if (q == 0 && len >= want_len)
			break;
	}
	while ((n = read(pfd[0], got + len, want_len + 1 - len)) > 0)
		len += (size_t)n;
	fu_assert_bytes(got, len, want, want_len, "stream", idx);
}

/* Queues exactly q bytes on fw: fills the (empty) pipe, writes q bytes
 * (none taken), then empties the pipe again without flushing fw. */
static void queue_exactly(struct amio_frame_writer *fw, int pfd[2], const unsigned char *bytes,
                          size_t q, const unsigned char *filler, unsigned char *scratch)
{
	const size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	if (q == 0)
		return;
	FU_CHECK(write(pfd[1], filler, pg) == (ssize_t)pg, "fill");
	FU_CHECK(amio_frame_writer_write_raw(fw, pfd[1], bytes, q) == (ssize_t)q, "queue %zu", q);
	FU_CHECK(read(pfd[0], scratch, pg) == (ssize_t)pg, "empty the pipe");
}

START_TEST(test_a_short_write_at_every_offset_of_queue_vector_or_frame_queues_exactly_the_rest)
{
	const size_t pg = (size_t)sysconf(_SC_PAGESIZE), S = 12;
	static unsigned char filler[65536], want[65536], got[65536];
	static const unsigned char qbytes[] = "QUEUE";
	struct amio_frame_writer fw;
	uint64_t rng = 21;
	size_t q, s, c1, c2, i, x, map_len, idx = 0;
	unsigned char *msg;
	int pfd[2];

	ck_assert_uint_le(2 * pg + 64, sizeof(want));
	for (i = 0; i < sizeof(filler); i++)
		filler[i] = (unsigned char)fu_rand(&rng);
	one_page_pipe(pfd);
	ck_assert_int_eq(amio_frame_writer_init(&fw, 1 * MiB), 0);
	/* q bytes already queued, then a write of x: one sendmsg of q + x =
	 * page + s bytes, of which the pipe takes exactly s. s < q splits the
	 * queue, s == q sends it alone, s > q sends part of the new bytes. */
	for (q = 0; q <= 4; q++) {
		for (s = 1; s <= S; s++) {
			x = pg + s - q;
			msg = guarded(x, &map_len);
			for (i = 0; i < x; i++)
				msg[i] = (unsigned char)fu_rand(&rng);
			/* Three pieces cut anywhere around the split: it falls inside
			 * each piece and on each boundary, and the guarded last piece
			 * is copied into the queue up to its last byte. */
			for (c1 = 0; c1 <= S + 1; c1++) {
				for (c2 = c1; c2 <= S + 1; c2++, idx++) {
					struct iovec iov[3] = {
					    {msg, c1}, {msg + c1, c2 - c1}, {msg + c2, x - c2}};

					queue_exactly(&fw, pfd, qbytes, q, filler, got);
					FU_CHECK(write(pfd[1], filler, pg - s) == (ssize_t)(pg - s),
					         "prefill");
					FU_CHECK(amio_frame_writer_writev_raw(
					             &fw, pfd[1], iov, 3) == (ssize_t)(q + x - s),
					         "q %zu s %zu cuts %zu,%zu: queued %zu", q, s, c1,
					         c2, amio_frame_writer_queued(&fw));
					/* Behind it, a frame and raw bytes: queued, in order. */
					FU_CHECK(amio_frame_writer_write(&fw, pfd[1], "fr", 2) ==
					             (ssize_t)(q + x - s + 6),
					         "frame behind");
					FU_CHECK(
					    amio_frame_writer_write_raw(&fw, pfd[1], "raw", 3) ==
					        (ssize_t)(q + x - s + 9),
					    "raw behind");
					memcpy(want, filler, pg - s);
					memcpy(want + pg - s, qbytes, q);
					memcpy(want + pg - s + q, msg, x);
					memcpy(want + pg - s + q + x, "\0\0\0\2frraw", 9);
					pipe_drain_check(&fw, pfd, want, pg - s + q + x + 9, got,
					                 idx);
				}
			}
			/* A frame whose header or payload the pipe splits. */
			queue_exactly(&fw, pfd, qbytes, q, filler, got);
			FU_CHECK(write(pfd[1], filler, pg - s) == (ssize_t)(pg - s), "prefill");
			FU_CHECK(amio_frame_writer_write(&fw, pfd[1], msg, x - FU_HDR) ==
			             (ssize_t)(q + x - s),
			         "q %zu frame split at %zu: queued %zu", q, s,
			         amio_frame_writer_queued(&fw));
			memcpy(want, filler, pg - s);
			memcpy(want + pg - s, qbytes, q);
			encode(want + pg - s + q, msg, x - FU_HDR);
			pipe_drain_check(&fw, pfd, want, pg - s + q + x, got, idx++);
			unguard(msg, x, map_len);
		}
	}
	amio_frame_writer_destroy(&fw);
	close(pfd[0]);
	close(pfd[1]);
}
END_TEST

/* Random frames, raw writes and raw vectors of up to 80 pieces (several
 * sendmsg batches), with -ENOBUFS backoff; returns what the peer must get. */
static unsigned char *pump_mixed(int fd, size_t total, size_t max_queued, uint64_t *rng,
                                 size_t *out_len, struct pump_stats *sx)
{
	static unsigned char pool[1 << 20];
	struct amio_frame_writer fw;
	unsigned char *want = malloc(total + 300000);
	size_t i, wlen = 0, before;
	ssize_t q;

	ck_assert_ptr_nonnull(want);
	for (i = 0; i < sizeof(pool); i++)
		pool[i] = (unsigned char)fu_rand(rng);
	ck_assert_int_eq(amio_frame_writer_init(&fw, max_queued), 0);
	while (wlen < total) {
		struct iovec iov[80];
		int op = (int)(fu_rand(rng) % 3), cnt = 0;
		size_t len = 0, off;

		if (op < 2) {
			len = (size_t)(fu_rand(rng) % 70001);
			off = (size_t)(fu_rand(rng) % (sizeof(pool) - len));
			iov[0] = (struct iovec){pool + off, len};
		} else {
			cnt = 1 + (int)(fu_rand(rng) % 80);
			for (i = 0; i < (size_t)cnt; i++) {
				size_t n =
				    fu_rand(rng) % 4 == 0 ? 0 : (size_t)(fu_rand(rng) % 2000);

				off = (size_t)(fu_rand(rng) % (sizeof(pool) - n));
				iov[i] = (struct iovec){pool + off, n};
				len += n;
			}
		}
		for (;;) {
			before = amio_frame_writer_queued(&fw);
			if (op == 0)
				q = amio_frame_writer_write(&fw, fd, iov[0].iov_base, len);
			else if (op == 1)
				q = amio_frame_writer_write_raw(&fw, fd, iov[0].iov_base, len);
			else
				q = amio_frame_writer_writev_raw(&fw, fd, iov, cnt);
			if (q >= 0)
				break;
			FU_CHECK(q == -ENOBUFS, "op %d: %zd", op, q);
			FU_CHECK(amio_frame_writer_queued(&fw) <= before, "-ENOBUFS queued bytes");
			sx->enobufs++;
			fu_wait(fd, POLLOUT);
			FU_CHECK(amio_frame_writer_flush(&fw, fd) >= 0, "flush failed");
		}
		FU_CHECK((size_t)q == amio_frame_writer_queued(&fw), "queued %zd", q);
		FU_CHECK((size_t)q <= max_queued, "queue over its limit: %zd", q);
		sx->short_writes += q > 0;
		if (op == 0) {
			encode(want + wlen, iov[0].iov_base, len);
			wlen += FU_HDR + len;
		} else {
			for (i = 0; i < (size_t)(op == 1 ? 1 : cnt); i++) {
				memcpy(want + wlen, iov[i].iov_base, iov[i].iov_len);
				wlen += iov[i].iov_len;
			}
		}
	}
	while ((q = amio_frame_writer_flush(&fw, fd)) > 0)
		fu_wait(fd, POLLOUT);
	ck_assert_int_eq(q, 0);
	amio_frame_writer_destroy(&fw);
	*out_len = wlen;
	return want;
}

static void stream_mixed_10mb(int wfd, int rfd, const char *what)
{
	uint64_t rng = fu_seed(what);
	struct pump_stats sx = {0};
	struct peer p = {.fd = rfd};
	unsigned char *want;
	size_t wlen;
	pthread_t th;

	p.cap = 10 * MiB + 300000 + 1;
	p.got = malloc(p.cap);
	ck_assert_ptr_nonnull(p.got);
	ck_assert_int_eq(pthread_create(&th, NULL, slow_peer, &p), 0);
	want = pump_mixed(wfd, 10 * MiB, 256 * 1024, &rng, &wlen, &sx);
	close(wfd);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	ck_assert_int_eq(p.err, 0);
	printf("%s: %zu bytes, %zu short writes, %zu -ENOBUFS\n", what, wlen, sx.short_writes,
	       sx.enobufs);
	fu_assert_bytes(p.got, p.len, want, wlen, "stream", 0);
	ck_assert_uint_gt(sx.short_writes, 0);
	ck_assert_uint_gt(sx.enobufs, 0);
	free(want);
	free(p.got);
	close(rfd);
}

START_TEST(test_10_mib_of_mixed_raw_bytes_vectors_and_frames_reach_a_slow_tcp_peer_in_order)
{
	int a, b;

	fu_tcp_pair(&a, &b, 1, 1);
	stream_mixed_10mb(a, b, "mixed tcp");
}
END_TEST

START_TEST(test_10_mib_of_mixed_raw_bytes_vectors_and_frames_pass_a_one_page_pipe_in_order)
{
	int pfd[2];

	ck_assert_int_eq(pipe(pfd), 0);
	ck_assert_int_ge(fcntl(pfd[1], F_SETPIPE_SZ, (int)sysconf(_SC_PAGESIZE)), 0);
	fu_set_nonblock(pfd[1]);
	stream_mixed_10mb(pfd[1], pfd[0], "mixed pipe");
}
END_TEST

START_TEST(test_raw_bytes_past_max_queued_give_enobufs_and_nothing_is_queued_or_sent)
{
	static unsigned char chunk[5000], want[64 * 5000 + 16], got[sizeof(want)];
	struct amio_frame_writer fw;
	size_t k = 0, wlen = 0, len = 0, before;
	struct iovec iov[2] = {{"abc", 3}, {"defg", 4}};
	ssize_t q;
	int sv[2];

	memset(chunk, 'c', sizeof(chunk));
	fu_socketpair(sv);
	shrink_sndbuf(sv[0]);
	ck_assert_int_eq(amio_frame_writer_init(&fw, 16384), 0);
	/* More than max_queued at once: refused even with an empty queue. */
	ck_assert_int_eq(amio_frame_writer_write_raw(&fw, sv[0], want, 16385), -ENOBUFS);
	drain_peer(sv[1], got, sizeof(got), &len);
	ck_assert_uint_eq(len, 0);
	for (;;) {
		chunk[0] = (unsigned char)k;
		before = amio_frame_writer_queued(&fw);
		q = amio_frame_writer_write_raw(&fw, sv[0], chunk, sizeof(chunk));
		if (q < 0)
			break;
		memcpy(want + wlen, chunk, sizeof(chunk));
		wlen += sizeof(chunk);
		ck_assert_uint_lt(++k, 64);
	}
	ck_assert_int_eq(q, -ENOBUFS);
	ck_assert_uint_eq(amio_frame_writer_queued(&fw), before);
	ck_assert_uint_gt(before, 16384 - sizeof(chunk));
	ck_assert_int_eq(amio_frame_writer_writev_raw(&fw, sv[0], iov, 2) < 0,
	                 before + 7 > 16384); /* a vector obeys the same limit */
	if (before + 7 <= 16384) {
		memcpy(want + wlen, "abcdefg", 7);
		wlen += 7;
	}
	flush_while_draining(&fw, sv[0], sv[1], got, sizeof(got), &len);
	ck_assert_int_eq(amio_frame_writer_writev_raw(&fw, sv[0], iov, 2), 0);
	memcpy(want + wlen, "abcdefg", 7);
	wlen += 7;
	flush_while_draining(&fw, sv[0], sv[1], got, sizeof(got), &len);
	fu_assert_bytes(got, len, want, wlen, "stream", 0);
	amio_frame_writer_destroy(&fw);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(test_writev_raw_sends_100_pieces_in_order_and_rejects_bad_vectors)
{
	static unsigned char src[100 * 50], got[sizeof(src) + 1];
	struct amio_frame_writer fw;
	struct iovec iov[100], huge[2];
	size_t i, off = 0, len = 0;
	int sv[2];

	for (i = 0; i < sizeof(src); i++)
		src[i] = (unsigned char)(i * 7);
	for (i = 0; i < 100; i++) { /* pieces of 0..98 bytes, covering src in order */
		size_t n = i % 3 == 0 ? 0 : 2 * (i % 50);

		iov[i] = (struct iovec){src + off, n};
		off += n;
	}
	fu_socketpair(sv);
	ck_assert_int_eq(amio_frame_writer_init(&fw, sizeof(src)), 0);
	ck_assert_int_eq(amio_frame_writer_writev_raw(&fw, sv[0], iov, 100), 0);
	drain_peer(sv[1], got, sizeof(got), &len);
	fu_assert_bytes(got, len, src, off, "stream", 0);
	/* Nothing to send: no bytes, no error. */
	ck_assert_int_eq(amio_frame_writer_write_raw(&fw, sv[0], NULL, 0), 0);
	ck_assert_int_eq(amio_frame_writer_writev_raw(&fw, sv[0], NULL, 0), 0);
	ck_assert_int_eq(amio_frame_writer_writev_raw(&fw, sv[0], iov, 1), 0); /* one empty piece */
	ck_assert_int_eq(amio_frame_writer_writev_raw(&fw, sv[0], iov, -1), -EINVAL);
	huge[0] = (struct iovec){src, (size_t)SSIZE_MAX};
	huge[1] = (struct iovec){src, 1};
	ck_assert_int_eq(amio_frame_writer_writev_raw(&fw, sv[0], huge, 2), -EINVAL);
	len = 0;
	drain_peer(sv[1], got, sizeof(got), &len);
	ck_assert_uint_eq(len, 0);
	amio_frame_writer_destroy(&fw);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(test_raw_writes_after_the_peer_closed_return_epipe_without_sigpipe)
{
	struct amio_frame_writer fw;
	struct iovec iov[2] = {{"a", 1}, {"b", 1}};
	int sv[2];

	fu_socketpair(sv);
	close(sv[1]);
	ck_assert_int_eq(amio_frame_writer_init(&fw, 1024), 0);
	ck_assert_int_eq(amio_frame_writer_write_raw(&fw, sv[0], "anyone?", 7), -EPIPE);
	ck_assert_int_eq(amio_frame_writer_writev_raw(&fw, sv[0], iov, 2), -EPIPE);
	ck_assert_uint_eq(amio_frame_writer_queued(&fw), 0);
	amio_frame_writer_destroy(&fw);
	close(sv[0]);
}
END_TEST

/* --- -ENOMEM: the queue cannot grow --------------------------------------------- */

/*
 * Under ASan or TSan a malloc that fails aborts the process unless
 * allocator_may_return_null is set; the library must see the NULL, as it
 * would without them. ASAN_OPTIONS or TSAN_OPTIONS given at run time are
 * parsed after this and keep their own values.
 */
#if defined(__SANITIZE_ADDRESS__)
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allocator_may_return_null=1";
}
#elif defined(__SANITIZE_THREAD__)
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
	return "allocator_may_return_null=1";
}
#endif

#define BIG      (256u * MiB) /* the frame no queue can hold in the capped child */
#define HEADROOM (32u * MiB)
#define ROUNDS   40

/* In the capped child no Check call may run (a failing ck_assert in a
 * grandchild of the runner goes unseen): checks write the parent a message. */
struct capped {
	struct amio_frame_writer fw;
	int sv[2];                 /* sv[0] non-blocking, minimal SO_SNDBUF; sv[1] the peer */
	const unsigned char *big;  /* BIG readable bytes, zero pages never written */
	unsigned char *want, *got; /* what the peer must get, and got; cap bytes each */
	size_t cap, wlen, glen;
	uint64_t rng;
	unsigned char pool[3000]; /* random bytes the small writes take from */
	char msg[512];
};

#define CAPPED_CHECK(c, cond, ...)                                                                 \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			snprintf((c)->msg, sizeof((c)->msg), __VA_ARGS__);                         \
			return -1;                                                                 \
		}                                                                                  \
	} while (0)

/* Caps RLIMIT_AS at the address space mapped now plus HEADROOM. Relative,
 * not absolute: ASan's shadow alone reserves ~20 TiB, so a fixed cap would
 * stop an ASan build at once. Every mapping counts against it (mmap and brk
 * alike), so no allocation of BIG bytes can succeed while the test's small
 * ones do. */
static int cap_address_space(struct capped *c)
{
	unsigned long long pages = 0;
	struct rlimit rl;
	FILE *f = fopen("/proc/self/statm", "r");

	CAPPED_CHECK(c, f && fscanf(f, "%llu", &pages) == 1, "/proc/self/statm: %s",
	             strerror(errno));
	fclose(f);
	CAPPED_CHECK(c, getrlimit(RLIMIT_AS, &rl) == 0, "getrlimit: %s", strerror(errno));
	if (rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur > pages * (rlim_t)sysconf(_SC_PAGESIZE) + HEADROOM)
		rl.rlim_cur = pages * (rlim_t)sysconf(_SC_PAGESIZE) + HEADROOM;
	CAPPED_CHECK(c, setrlimit(RLIMIT_AS, &rl) == 0, "setrlimit: %s", strerror(errno));
	return 0;
}

/* Reads what the peer holds now. */
static int capped_peer_read(struct capped *c)
{
	ssize_t n;

	while ((n = recv(c->sv[1], c->got + c->glen, c->cap - c->glen, MSG_DONTWAIT)) > 0)
		c->glen += (size_t)n;
	CAPPED_CHECK(c, n < 0 && errno == EAGAIN, "peer recv %zd: %s", n, strerror(errno));
	return 0;
}

/* Reads the peer and flushes, until nothing is queued and everything read. */
static int capped_drain(struct capped *c)
{
	ssize_t q;

	do {
		if (capped_peer_read(c) < 0)
			return -1;
		q = amio_frame_writer_flush(&c->fw, c->sv[0]);
		CAPPED_CHECK(c, q >= 0, "flush while draining: %zd", q);
	} while (q > 0);
	return capped_peer_read(c);
}

/* Fills the socket so that it takes nothing more: either with frames and raw
 * bytes through fw until it queues some, or (queue empty) with send(2). */
static int capped_fill(struct capped *c)
{
	const unsigned char *pool = c->pool;
	ssize_t q = 0;

	if (fu_rand(&c->rng) % 2) {
		while ((q = send(c->sv[0], pool, sizeof(c->pool), MSG_DONTWAIT)) > 0) {
			CAPPED_CHECK(c, c->wlen + (size_t)q <= c->cap, "fill: over %zu bytes",
			             c->cap);
			memcpy(c->want + c->wlen, pool, (size_t)q);
			c->wlen += (size_t)q;
		}
		CAPPED_CHECK(c, errno == EAGAIN, "fill: %s", strerror(errno));
		return 0;
	}
	while (q == 0) {
		size_t len = (size_t)(fu_rand(&c->rng) % sizeof(c->pool));
		int raw = (int)(fu_rand(&c->rng) % 2);

		q = raw ? amio_frame_writer_write_raw(&c->fw, c->sv[0], pool, len)
		        : amio_frame_writer_write(&c->fw, c->sv[0], pool, len);
		CAPPED_CHECK(c, q >= 0, "fill write: %zd", q);
		CAPPED_CHECK(c, c->wlen + FU_HDR + len <= c->cap, "fill: over %zu bytes", c->cap);
		if (!raw)
			fu_put_be32(c->want + c->wlen, (uint32_t)len);
		c->wlen += raw ? 0 : FU_HDR;
		memcpy(c->want + c->wlen, pool, len);
		c->wlen += len;
	}
	return 0;
}

/* Writes about BIG bytes as a frame, raw, or raw in up to 64 pieces (more
 * than one sendmsg batch). */
static ssize_t capped_write_big(struct capped *c)
{
	struct iovec iov[64];
	size_t len = BIG - FU_HDR - (size_t)(fu_rand(&c->rng) % 4096), off = 0;
	int i, cnt = 1 + (int)(fu_rand(&c->rng) % 64);

	switch (fu_rand(&c->rng) % 3) {
	case 0:
		return amio_frame_writer_write(&c->fw, c->sv[0], c->big, len);
	case 1:
		return amio_frame_writer_write_raw(&c->fw, c->sv[0], c->big, len);
	}
	for (i = 0; i < cnt; i++) {
		size_t n = i == cnt - 1 ? len - off : (size_t)(fu_rand(&c->rng) % (len / cnt));

		iov[i] = (struct iovec){(void *)(c->big + off), n};
		off += n;
	}
	return amio_frame_writer_writev_raw(&c->fw, c->sv[0], iov, cnt);
}

/* The contract, round after round: with the socket full, a write too big to
 * queue sends nothing, queues nothing and returns -ENOMEM, and the stream goes
 * on intact. Last, with room in the socket, part of one is sent: from then on
 * every call returns -ENOMEM. */
static int capped_run(struct capped *c)
{
	size_t before;
	ssize_t r;
	int round;

	for (round = 0; round < ROUNDS; round++) {
		if (capped_fill(c) < 0)
			return -1;
		before = amio_frame_writer_queued(&c->fw);
		r = capped_write_big(c);
		CAPPED_CHECK(c, r == -ENOMEM, "round %d: a write of BIG returned %zd", round, r);
		CAPPED_CHECK(c, amio_frame_writer_queued(&c->fw) == before,
		             "round %d: queued %zu, was %zu", round,
		             amio_frame_writer_queued(&c->fw), before);
		r = amio_frame_writer_flush(&c->fw, c->sv[0]);
		CAPPED_CHECK(c, r == (ssize_t)before,
		             "round %d: flush after a -ENOMEM that sent nothing returned %zd",
		             round, r);
		if (capped_drain(c) < 0)
			return -1;
		CAPPED_CHECK(c, c->glen == c->wlen && memcmp(c->got, c->want, c->wlen) == 0,
		             "round %d: the peer got %zu bytes, not the %zu written", round,
		             c->glen, c->wlen);
	}
	r = capped_write_big(c);
	CAPPED_CHECK(c, r == -ENOMEM, "a write of BIG into a drained socket returned %zd", r);
	if (capped_peer_read(c) < 0)
		return -1;
	CAPPED_CHECK(c, c->glen > c->wlen && memcmp(c->got, c->want, c->wlen) == 0,
	             "the peer got %zu bytes: the %zu written and part of BIG", c->glen, c->wlen);
	CAPPED_CHECK(c,
	             amio_frame_writer_write(&c->fw, c->sv[0], "x", 1) == -ENOMEM &&
	                 amio_frame_writer_write_raw(&c->fw, c->sv[0], "x", 1) == -ENOMEM &&
	                 amio_frame_writer_flush(&c->fw, c->sv[0]) == -ENOMEM,
	             "after part of a message was sent, -ENOMEM is sticky");
	return 0;
}

/* Runs capped_run in a child of our own with RLIMIT_AS capped: the cap ends
 * with it, even under CK_FORK=no. The child lifts the cap again and exits
 * with exit(), not _exit(), so LeakSanitizer checks it too and has the
 * memory to say what leaked. */
static void run_capped(struct capped *c)
{
	char msg[sizeof(c->msg)] = "";
	int pfd[2], status;
	ssize_t n;
	pid_t pid;

	ck_assert_int_eq(pipe(pfd), 0);
	fflush(NULL);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct rlimit was = {RLIM_INFINITY, RLIM_INFINITY};
		int rc;

		close(pfd[0]);
		rc =
		    getrlimit(RLIMIT_AS, &was) < 0 || cap_address_space(c) < 0 || capped_run(c) < 0;
		setrlimit(RLIMIT_AS, &was); /* back up to where it was: always allowed */
		amio_frame_writer_destroy(&c->fw);
		if (rc && write(pfd[1], c->msg, strlen(c->msg)) < 0)
			rc = 2;
		exit(rc);
	}
	close(pfd[1]);
	while ((n = read(pfd[0], msg, sizeof(msg) - 1)) < 0 && errno == EINTR)
		;
	msg[n > 0 ? n : 0] = '\0';
	close(pfd[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	              "capped child (status 0x%x): %s", (unsigned)status, msg);
}

START_TEST(
    test_enomem_with_nothing_of_a_frame_sent_leaves_the_stream_intact_and_only_a_cut_one_is_sticky)
{
	struct capped c = {.cap = 4 * MiB};
	size_t i;

	c.rng = fu_seed("frame writer -ENOMEM");
	for (i = 0; i < sizeof(c.pool); i++)
		c.pool[i] = (unsigned char)fu_rand(&c.rng);
	c.big = mmap(NULL, BIG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	ck_assert_ptr_ne(c.big, MAP_FAILED);
	c.want = malloc(c.cap);
	c.got = malloc(c.cap);
	ck_assert_ptr_nonnull(c.want);
	ck_assert_ptr_nonnull(c.got);
	fu_socketpair(c.sv);
	shrink_sndbuf(c.sv[0]);
	ck_assert_int_eq(amio_frame_writer_init(&c.fw, 2 * BIG), 0);
	run_capped(&c);
	amio_frame_writer_destroy(&c.fw);
	close(c.sv[0]);
	close(c.sv[1]);
	free(c.want);
	free(c.got);
	munmap((void *)c.big, BIG);
}
END_TEST

/* --- amio_frame_header_encode ---------------------------------------------- */

START_TEST(test_header_encode_writes_the_big_endian_length_a_reader_parses_back)
{
	const size_t lens[] = {0, 1, 255, 256, 65536, 0x01020304u, UINT32_MAX};
	unsigned char hdr[AMIO_FRAME_HEADER_BYTES + 1];
	const unsigned char want[4] = {1, 2, 3, 4};

	ck_assert_uint_eq(AMIO_FRAME_HEADER_BYTES, FU_HDR);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		struct amio_frame_reader fr;

		memset(hdr, 0xee, sizeof(hdr));
		ck_assert_int_eq(amio_frame_header_encode(hdr, lens[i]), AMIO_FRAME_HEADER_BYTES);
		ck_assert_uint_eq(hdr[AMIO_FRAME_HEADER_BYTES], 0xee); /* 4 bytes, no more */
		ck_assert_int_eq(amio_frame_reader_init(&fr, UINT32_MAX), 0);
		ck_assert_int_eq(amio_frame_reader_feed(&fr, hdr, FU_HDR), FU_HDR);
		/* What the reader still wants is exactly the announced payload. */
		ck_assert_int_eq(amio_frame_reader_missing(&fr), (ssize_t)lens[i]);
		amio_frame_reader_destroy(&fr);
	}
	ck_assert_int_eq(amio_frame_header_encode(hdr, 0x01020304u), FU_HDR);
	ck_assert(memcmp(hdr, want, 4) == 0);
#if SIZE_MAX > UINT32_MAX
	memset(hdr, 0xee, sizeof(hdr));
	ck_assert_int_eq(amio_frame_header_encode(hdr, (size_t)UINT32_MAX + 1), -EMSGSIZE);
	ck_assert_uint_eq(hdr[0], 0xee); /* left alone */
#endif
}
END_TEST

static Suite *frame_writer_suite(void)
{
	Suite *s = suite_create("frame_writer");
	TCase *tc;

	tc = fu_tcase(s, "header_encode", 10);
	tcase_add_test(tc, test_header_encode_writes_the_big_endian_length_a_reader_parses_back);

	tc = fu_tcase(s, "partial_writes", 10);
	tcase_add_test(tc, test_flushing_an_empty_writer_returns_0_queued);
	tcase_add_test(
	    tc, test_a_partly_taken_frame_is_reported_and_flush_delivers_the_frames_in_order);

	tc = fu_tcase(s, "short_writes", 120);
	tcase_add_test(tc, test_10_mib_of_frames_reach_a_slow_tcp_peer_through_a_minimal_sndbuf);
	tcase_add_test(
	    tc, test_10_mib_of_frames_reach_a_slow_unix_socket_peer_through_a_minimal_sndbuf);
	tcase_add_test(tc,
	               test_10_mib_of_frames_reach_a_slow_reader_through_a_pipe_shrunk_to_one_page);
	tcase_add_test(
	    tc, test_enobufs_past_max_queued_queues_nothing_and_the_writer_works_once_drained);

	tc = fu_tcase(s, "errors", 10);
	tcase_add_test(tc, test_writing_after_the_peer_closed_returns_epipe_without_sigpipe);
	tcase_add_test(tc, test_a_queue_left_when_the_peer_closes_gives_epipe_and_destroy_is_safe);
	tcase_add_test(tc, test_writing_to_a_closed_tcp_peer_ends_in_epipe_or_econnreset);
	tcase_add_test(tc, test_a_frame_that_cannot_fit_in_max_queued_gives_enobufs);

	tc = fu_tcase(s, "zero_length", 30);
	tcase_add_test(tc, test_runs_of_zero_length_frames_are_written_as_bare_headers);
	tcase_add_test(tc, test_zero_length_frames_behind_a_partial_frame_keep_their_order);
	tcase_add_test(tc, test_a_stream_of_only_zero_length_frames_round_trips_through_the_reader);

	tc = fu_tcase(s, "raw", 120);
	tcase_add_test(
	    tc,
	    test_a_short_write_at_every_offset_of_queue_vector_or_frame_queues_exactly_the_rest);
	tcase_add_test(
	    tc, test_10_mib_of_mixed_raw_bytes_vectors_and_frames_reach_a_slow_tcp_peer_in_order);
	tcase_add_test(
	    tc, test_10_mib_of_mixed_raw_bytes_vectors_and_frames_pass_a_one_page_pipe_in_order);
	tcase_add_test(tc,
	               test_raw_bytes_past_max_queued_give_enobufs_and_nothing_is_queued_or_sent);
	tcase_add_test(tc, test_writev_raw_sends_100_pieces_in_order_and_rejects_bad_vectors);
	tcase_add_test(tc, test_raw_writes_after_the_peer_closed_return_epipe_without_sigpipe);

	tc = fu_tcase(s, "enomem", 30);
	tcase_add_test(
	    tc,
	    test_enomem_with_nothing_of_a_frame_sent_leaves_the_stream_intact_and_only_a_cut_one_is_sticky);
	return s;
}

int main(void)
{
	return fu_run(frame_writer_suite());
}
