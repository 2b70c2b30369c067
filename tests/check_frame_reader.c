/* Does the frame reader return exactly the frames that were sent, however the
 * bytes are split, and stay within max_frame + 4 bytes when they are not? */
#include "frame_util.h"

#define MAX_FRAME 70000u

/* Hands out every complete frame, checking each against st from index k. */
static size_t drain_check(struct amio_frame_reader *fr, const struct fu_stream *st, size_t k)
{
	struct iovec f;
	int r;

	while ((r = amio_frame_reader_next(fr, &f)) == 1) {
		FU_CHECK(k < st->n, "frame %zu beyond the %zu sent", k, st->n);
		fu_assert_bytes(f.iov_base, f.iov_len, st->bytes + st->off[k], st->size[k], "frame",
		                k);
		k++;
	}
	FU_CHECK(r == 0, "next() returned %d", r);
	return k;
}

/* Feeds one piece (taking it in as many calls as the buffer needs), checking
 * the buffer never exceeds max + 4 bytes. */
static size_t feed_piece(struct amio_frame_reader *fr, size_t max, const struct fu_stream *st,
                         const unsigned char *p, size_t len, size_t k)
{
	while (len > 0) {
		ssize_t n = amio_frame_reader_feed(fr, p, len);
		size_t before = k;

		FU_CHECK(n >= 0, "feed() returned %zd", n);
		FU_CHECK(amio_frame_reader_capacity(fr) <= max + FU_HDR, "capacity %zu > %zu + 4",
		         amio_frame_reader_capacity(fr), max);
		p += n;
		len -= (size_t)n;
		k = drain_check(fr, st, k);
		/* A zero take is fine only if it was because frames were waiting. */
		FU_CHECK(n > 0 || k > before, "feed made no progress");
	}
	return k;
}

static void expect_frame(struct amio_frame_reader *fr, const void *want, size_t len)
{
	struct iovec f;

	ck_assert_int_eq(amio_frame_reader_next(fr, &f), 1);
	fu_assert_bytes(f.iov_base, f.iov_len, want, len, "frame", 0);
}

static void send_frame(int fd, const char *msg)
{
	unsigned char hdr[FU_HDR];

	fu_put_be32(hdr, (uint32_t)strlen(msg));
	fu_send_all(fd, hdr, sizeof(hdr));
	fu_send_all(fd, msg, strlen(msg));
}

/* --- partial frames (Amy's cases), over a real socket --------------------- */

START_TEST(test_a_frame_sent_as_2_2_5_6_bytes_is_returned_only_when_complete)
{
	static const char msg[] = "Hello World";
	static const size_t pieces[] = {2, 2, 5, 6};
	unsigned char wire[FU_HDR + 11];
	struct amio_frame_reader fr;
	struct iovec f;
	size_t i, off = 0;
	int sv[2];

	fu_socketpair(sv);
	fu_put_be32(wire, 11);
	memcpy(wire + FU_HDR, msg, 11);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 1024), 0);
	for (i = 0; i < 4; i++) {
		fu_send_all(sv[1], wire + off, pieces[i]);
		off += pieces[i];
		ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), (ssize_t)pieces[i]);
		if (i < 3)
			ck_assert_int_eq(amio_frame_reader_next(&fr, &f), 0);
	}
	expect_frame(&fr, msg, 11);
	ck_assert_int_eq(amio_frame_reader_next(&fr, &f), 0);
	ck_assert_uint_eq(amio_frame_reader_buffered(&fr), 0);
	amio_frame_reader_destroy(&fr);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(test_a_read_holding_the_next_header_and_payload_yields_that_frame)
{
	struct amio_frame_reader fr;
	struct iovec f;
	int sv[2];

	fu_socketpair(sv);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 1024), 0);
	send_frame(sv[1], "Hello World");
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), 15);
	expect_frame(&fr, "Hello World", 11);
	send_frame(sv[1], "Hi.");
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), 7);
	expect_frame(&fr, "Hi.", 3);
	ck_assert_int_eq(amio_frame_reader_next(&fr, &f), 0);
	amio_frame_reader_destroy(&fr);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(test_reading_an_open_socket_with_nothing_sent_returns_eagain)
{
	struct amio_frame_reader fr;
	struct iovec f;
	int sv[2];

	fu_socketpair(sv);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 1024), 0);
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), -EAGAIN);
	ck_assert_int_eq(amio_frame_reader_next(&fr, &f), 0);
	amio_frame_reader_destroy(&fr);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(test_data_before_a_reset_is_handed_out_then_econnreset_is_returned)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	struct amio_frame_reader fr;
	struct pollfd p;
	ssize_t n;
	int a, b, i;

	fu_tcp_pair(&a, &b, 0, 0);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 1024), 0);
	send_frame(b, "last words");
	ck_assert_int_eq(setsockopt(b, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	close(b);                   /* linger 0: RST instead of FIN */
	for (i = 0; i < 500; i++) { /* the RST is processed asynchronously */
		p = (struct pollfd){.fd = a, .events = POLLIN};
		ck_assert_int_eq(poll(&p, 1, 10000), 1);
		if (p.revents & (POLLERR | POLLHUP))
			break;
		usleep(10000);
	}
	ck_assert_msg(p.revents & (POLLERR | POLLHUP), "no reset seen");
	n = amio_frame_reader_read(&fr, a);
	/* Linux keeps received data readable ahead of the error: the reader
	 * returns it first and keeps the error for the next call. */
	ck_assert_int_eq(n, 14);
	expect_frame(&fr, "last words", 10);
	n = amio_frame_reader_read(&fr, a);
	ck_assert_int_eq(n, -ECONNRESET);
	amio_frame_reader_destroy(&fr);
	close(a);
}
END_TEST

START_TEST(test_an_fd_error_is_returned_as_minus_errno)
{
	struct amio_frame_reader fr;
	int sv[2];

	fu_socketpair(sv);
	close(sv[0]); /* a closed descriptor: EBADF */
	ck_assert_int_eq(amio_frame_reader_init(&fr, 64), 0);
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), -EBADF);
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), -EBADF); /* not mistaken for EOF */
	amio_frame_reader_destroy(&fr);
	close(sv[1]);
}
END_TEST

/* --- every split point ---------------------------------------------------- */

/* Feeds all of st to a fresh reader in pieces of `chunk` bytes (0: random
 * sizes up to `range`) and checks every frame comes out, and nothing else. */
static void feed_stream(const struct fu_stream *st, size_t chunk, size_t range, uint64_t *rng)
{
	struct amio_frame_reader fr;
	size_t off, n, k = 0;

	ck_assert_int_eq(amio_frame_reader_init(&fr, MAX_FRAME), 0);
	for (off = 0; off < st->len; off += n) {
		n = chunk ? chunk : 1 + (size_t)(fu_rand(rng) % range);
		n = st->len - off < n ? st->len - off : n;
		k = feed_piece(&fr, MAX_FRAME, st, st->bytes + off, n, k);
	}
	ck_assert_uint_eq(k, st->n);
	ck_assert_uint_eq(amio_frame_reader_buffered(&fr), 0);
	amio_frame_reader_destroy(&fr);
}

START_TEST(test_every_chunk_size_from_1_to_17_yields_the_original_frames)
{
	uint64_t rng = fu_seed("chunk sizes 1..17");
	struct fu_stream st;
	size_t chunk;

	fu_stream_make(&st, 100, MAX_FRAME, &rng);
	for (chunk = 1; chunk <= 17; chunk++)
		feed_stream(&st, chunk, 0, &rng);
	fu_stream_free(&st);
}
END_TEST

START_TEST(test_random_split_points_yield_the_original_frames)
{
	uint64_t rng = fu_seed("random splits");
	struct fu_stream st;
	int round;

	fu_stream_make(&st, 100, MAX_FRAME, &rng);
	for (round = 0; round < 20; round++)
		feed_stream(&st, 0, round % 2 ? 200000 : 64, &rng);
	fu_stream_free(&st);
}
END_TEST

START_TEST(test_every_two_way_split_of_a_small_stream_yields_its_frames)
{
	uint64_t rng = 42;
	struct amio_frame_reader fr;
	struct fu_stream st;
	size_t cut, k;

	fu_stream_make(&st, 12, 40, &rng);
	for (cut = 0; cut <= st.len; cut++) {
		ck_assert_int_eq(amio_frame_reader_init(&fr, 40), 0);
		k = feed_piece(&fr, 40, &st, st.bytes, cut, 0);
		k = feed_piece(&fr, 40, &st, st.bytes + cut, st.len - cut, k);
		ck_assert_uint_eq(k, st.n);
		amio_frame_reader_destroy(&fr);
	}
	fu_stream_free(&st);
}
END_TEST

START_TEST(test_frames_sent_one_byte_at_a_time_over_a_socket_arrive_intact)
{
	uint64_t rng = 7;
	struct amio_frame_reader fr;
	struct fu_stream st;
	size_t i, k = 0;
	int sv[2];

	fu_socketpair(sv);
	fu_stream_make(&st, 20, 30, &rng);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 30), 0);
	for (i = 0; i < st.len; i++) {
		fu_send_all(sv[1], st.bytes + i, 1);
		ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), 1);
		k = drain_check(&fr, &st, k);
	}
	ck_assert_uint_eq(k, st.n);
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), -EAGAIN);
	amio_frame_reader_destroy(&fr);
	fu_stream_free(&st);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* --- limits ----------------------------------------------------------------- */

START_TEST(test_a_header_over_max_frame_gives_emsgsize_without_buffering_the_payload)
{
	static unsigned char buf[FU_HDR + 3 + FU_HDR + 65536];
	const size_t max = 16u << 20;
	struct amio_frame_reader fr;
	struct iovec f;
	ssize_t n;

	fu_put_be32(buf, 3);
	memcpy(buf + FU_HDR, "abc", 3);
	fu_put_be32(buf + FU_HDR + 3, (uint32_t)max + 1);
	memset(buf + 2 * FU_HDR + 3, 'x', 65536);
	ck_assert_int_eq(amio_frame_reader_init(&fr, max), 0);
	n = amio_frame_reader_feed(&fr, buf, sizeof(buf));
	ck_assert_int_gt(n, 0);
	ck_assert_int_lt(n, (ssize_t)sizeof(buf)); /* the payload was refused */
	expect_frame(&fr, "abc", 3);               /* earlier frames come first */
	ck_assert_int_eq(amio_frame_reader_next(&fr, &f), -EMSGSIZE);
	/* The buffer never grew towards the announced 16 MiB. */
	ck_assert_uint_le(amio_frame_reader_capacity(&fr), 4096);
	ck_assert_int_eq(amio_frame_reader_feed(&fr, buf, sizeof(buf)), -EMSGSIZE);
	ck_assert_int_eq(amio_frame_reader_next(&fr, &f), -EMSGSIZE);
	ck_assert_int_eq(amio_frame_reader_read(&fr, -1), -EMSGSIZE);
	amio_frame_reader_destroy(&fr);
}
END_TEST

START_TEST(test_max_frame_plus_1_read_from_a_socket_gives_emsgsize_within_max_frame_plus_4)
{
	static unsigned char payload[50000];
	unsigned char hdr[FU_HDR];
	struct amio_frame_reader fr;
	struct iovec f;
	ssize_t n;
	int sv[2], frames = 0, r = 0;

	fu_socketpair(sv);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 1000), 0);
	send_frame(sv[1], "abc");
	fu_put_be32(hdr, 1001);
	fu_send_all(sv[1], hdr, sizeof(hdr));
	fu_send_all(sv[1], payload, sizeof(payload));
	do {
		n = amio_frame_reader_read(&fr, sv[0]);
		ck_assert_uint_le(amio_frame_reader_capacity(&fr), 1000 + FU_HDR);
		while ((r = amio_frame_reader_next(&fr, &f)) == 1)
			frames++;
	} while (n > 0 && r == 0);
	ck_assert_int_eq(frames, 1);
	ck_assert_int_eq(r, -EMSGSIZE);
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), -EMSGSIZE);
	ck_assert_int_eq(amio_frame_reader_next(&fr, &f), -EMSGSIZE);
	amio_frame_reader_destroy(&fr);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(test_a_frame_of_exactly_max_frame_bytes_is_accepted)
{
	static unsigned char buf[FU_HDR + 5000];
	struct amio_frame_reader fr;
	size_t i;

	fu_put_be32(buf, 5000);
	for (i = 0; i < 5000; i++)
		buf[FU_HDR + i] = (unsigned char)(i * 7);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 5000), 0);
	ck_assert_int_eq(amio_frame_reader_feed(&fr, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	expect_frame(&fr, buf + FU_HDR, 5000);
	ck_assert_uint_eq(amio_frame_reader_capacity(&fr), 5000 + FU_HDR);
	amio_frame_reader_destroy(&fr);
}
END_TEST

/* With max_frame at UINT32_MAX, header + length must not wrap in 32 bits:
 * a length of 2^32 - 4 once summed to 0 ("complete") and handed out a
 * 4 GiB view of a 14-byte buffer; 2^32 - 1 summed to 3 and stalled. */
START_TEST(test_a_header_near_4_gib_is_an_incomplete_frame_not_a_wrapped_one)
{
	static const uint32_t lens[] = {0xFFFFFFFCu, 0xFFFFFFFDu, 0xFFFFFFFFu};
	unsigned char buf[FU_HDR + 10] = {0};
	struct amio_frame_reader fr;
	struct iovec f;

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		fu_put_be32(buf, lens[i]);
		ck_assert_int_eq(amio_frame_reader_init(&fr, UINT32_MAX), 0);
		ck_assert_int_eq(amio_frame_reader_feed(&fr, buf, sizeof(buf)),
		                 (ssize_t)sizeof(buf));
		ck_assert_int_eq(amio_frame_reader_next(&fr, &f), 0);
		amio_frame_reader_destroy(&fr);
	}
}
END_TEST

START_TEST(test_the_buffer_starts_small_and_grows_only_for_the_frame_being_parsed)
{
	static unsigned char big[FU_HDR + 70000];
	unsigned char small[FU_HDR + 2] = {0, 0, 0, 2, 'h', 'i'};
	struct amio_frame_reader fr;

	ck_assert_int_eq(amio_frame_reader_init(&fr, 16u << 20), 0);
	ck_assert_uint_eq(amio_frame_reader_capacity(&fr), 0);
	ck_assert_int_eq(amio_frame_reader_feed(&fr, small, sizeof(small)), 6);
	ck_assert_uint_le(amio_frame_reader_capacity(&fr), 4096);
	expect_frame(&fr, "hi", 2);
	fu_put_be32(big, 70000);
	memset(big + FU_HDR, 'b', 70000);
	ck_assert_int_eq(amio_frame_reader_feed(&fr, big, sizeof(big)), (ssize_t)sizeof(big));
	ck_assert_uint_ge(amio_frame_reader_capacity(&fr), sizeof(big));
	ck_assert_uint_le(amio_frame_reader_capacity(&fr), 2 * sizeof(big));
	expect_frame(&fr, big + FU_HDR, 70000);
	amio_frame_reader_destroy(&fr);
}
END_TEST

/* A stream larger than the buffer: 500 frames of 30 bytes, max_frame 100. */
static void make_small_frames(struct fu_stream *st)
{
	uint64_t rng = 3;
	size_t i, *size = calloc(500, sizeof(size_t));

	for (i = 0; size && i < 500; i++)
		size[i] = 30;
	fu_stream_encode(st, 500, size, &rng);
}

START_TEST(test_read_stops_at_a_full_buffer_and_the_read_next_loop_loses_nothing)
{
	struct amio_frame_reader fr;
	struct fu_stream st;
	ssize_t n;
	size_t k = 0;
	int sv[2];

	fu_socketpair(sv);
	make_small_frames(&st);
	fu_send_all(sv[1], st.bytes, st.len);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 100), 0);
	n = amio_frame_reader_read(&fr, sv[0]);
	ck_assert_int_gt(n, 0);
	ck_assert_int_le(n, 100 + FU_HDR);
	/* Full of frames not handed out: reading more would be unbounded. */
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), -ENOBUFS);
	for (;;) { /* the documented edge-triggered loop */
		k = drain_check(&fr, &st, k);
		n = amio_frame_reader_read(&fr, sv[0]);
		if (n == -EAGAIN)
			break;
		ck_assert_int_gt(n, 0);
		ck_assert_uint_le(amio_frame_reader_capacity(&fr), 100 + FU_HDR);
	}
	ck_assert_uint_eq(k, 500);
	amio_frame_reader_destroy(&fr);
	fu_stream_free(&st);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* The header's edge-triggered loop: stops once read(2) said EAGAIN. Returns
 * the number of amio_frame_reader_read() calls it made. */
static size_t drained_loop(struct amio_frame_reader *fr, int fd, const struct fu_stream *st,
                           size_t *k)
{
	size_t reads = 0;
	ssize_t n;

	for (;;) {
		n = amio_frame_reader_read(fr, fd);
		reads++;
		*k = drain_check(fr, st, *k);
		if (n == -EAGAIN || amio_frame_reader_drained(fr))
			break;
		FU_CHECK(n > 0, "read returned %zd", n);
	}
	return reads;
}

START_TEST(test_the_read_loop_that_stops_when_drained_misses_nothing_and_reads_once_per_wakeup)
{
	struct amio_frame_reader fr;
	struct fu_stream st;
	struct iovec f;
	size_t k = 0, i, reads;
	int sv[2];

	fu_socketpair(sv);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 100), 0);
	ck_assert_int_eq(amio_frame_reader_drained(&fr), 0); /* no read yet */
	/* 17,000 bytes through a 104-byte buffer: every read but the last stops
	 * at a full buffer, which is not drained. */
	make_small_frames(&st);
	fu_send_all(sv[1], st.bytes, st.len);
	reads = drained_loop(&fr, sv[0], &st, &k);
	ck_assert_uint_eq(k, 500);
	ck_assert_uint_gt(reads, st.len / (100 + FU_HDR));
	ck_assert_int_eq(amio_frame_reader_drained(&fr), 1);
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), -EAGAIN); /* as promised */
	/* Request/response: one frame per wakeup is one read call (one read(2)
	 * with the frame, one saying EAGAIN), not two. */
	for (i = 0, k = 0; i < 100; i++) {
		fu_send_all(sv[1], st.bytes + st.off[i] - FU_HDR, FU_HDR + st.size[i]);
		fu_wait(sv[0], POLLIN);
		FU_CHECK(drained_loop(&fr, sv[0], &st, &k) == 1, "wakeup %zu: more than one read",
		         i);
		FU_CHECK(k == i + 1, "wakeup %zu: %zu frames", i, k);
	}
	/* EOF ends a read without EAGAIN: not drained; the next read says 0. */
	fu_send_all(sv[1], st.bytes, FU_HDR + st.size[0]);
	close(sv[1]);
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), (ssize_t)(FU_HDR + st.size[0]));
	ck_assert_int_eq(amio_frame_reader_drained(&fr), 0);
	ck_assert_int_eq(amio_frame_reader_next(&fr, &f), 1);
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), 0);
	ck_assert_int_eq(amio_frame_reader_drained(&fr), 0);
	amio_frame_reader_destroy(&fr);
	fu_stream_free(&st);
	close(sv[0]);
}
END_TEST

START_TEST(test_feed_takes_what_fits_and_the_rest_after_next)
{
	struct amio_frame_reader fr;
	struct fu_stream st;
	ssize_t n;

	make_small_frames(&st);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 100), 0);
	n = amio_frame_reader_feed(&fr, st.bytes, st.len);
	ck_assert_int_gt(n, 0);
	ck_assert_int_le(n, 100 + FU_HDR);
	ck_assert_int_eq(amio_frame_reader_feed(&fr, st.bytes + n, st.len - (size_t)n), 0);
	ck_assert_uint_eq(drain_check(&fr, &st, 0), (size_t)n / 34);
	ck_assert_uint_eq(
	    feed_piece(&fr, 100, &st, st.bytes + n, st.len - (size_t)n, (size_t)n / 34), 500);
	amio_frame_reader_destroy(&fr);
	fu_stream_free(&st);
}
END_TEST

/* --- guard page ------------------------------------------------------------- */

START_TEST(test_a_frame_ending_at_a_guard_page_is_parsed_without_touching_it)
{
	struct amio_frame_reader fr;
	size_t map_len, i;
	unsigned char *guard = fu_guard_alloc(&map_len);
	unsigned char *p = guard - (FU_HDR + 7);

	fu_put_be32(p, 7);
	memcpy(p + FU_HDR, "guarded", 7);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 64), 0);
	ck_assert_int_eq(amio_frame_reader_feed(&fr, p, FU_HDR + 7), FU_HDR + 7);
	expect_frame(&fr, "guarded", 7);
	for (i = 0; i < FU_HDR + 7; i++) /* one byte at a time up to the guard */
		ck_assert_int_eq(amio_frame_reader_feed(&fr, p + i, 1), 1);
	expect_frame(&fr, "guarded", 7);
	p = guard - FU_HDR; /* a zero-length frame whose header ends at the guard */
	fu_put_be32(p, 0);
	ck_assert_int_eq(amio_frame_reader_feed(&fr, p, FU_HDR), FU_HDR);
	expect_frame(&fr, "", 0);
	amio_frame_reader_destroy(&fr);
	munmap(guard - map_len / 2, map_len);
}
END_TEST

/* --- zero-length frames ----------------------------------------------------- */

START_TEST(test_runs_of_zero_length_frames_are_all_returned)
{
	uint64_t rng = 11;
	struct amio_frame_reader fr;
	struct fu_stream st;
	size_t i, *size = calloc(3000, sizeof(size_t));

	/* Runs of zero-length frames, every 10th a 3-byte frame: 2700 + 300. */
	for (i = 0; size && i < 3000; i++)
		size[i] = i % 10 == 9 ? 3 : 0;
	fu_stream_encode(&st, 3000, size, &rng);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 3), 0); /* a 7-byte buffer */
	ck_assert_uint_eq(feed_piece(&fr, 3, &st, st.bytes, st.len, 0), st.n);
	amio_frame_reader_destroy(&fr);
	fu_stream_free(&st);
}
END_TEST

START_TEST(test_a_stream_of_only_zero_length_frames_works_over_a_socket)
{
	static unsigned char zeros[1000 * FU_HDR];
	struct amio_frame_reader fr;
	struct iovec f;
	int sv[2], frames = 0, r;
	ssize_t n;

	fu_socketpair(sv);
	fu_send_all(sv[1], zeros, sizeof(zeros));
	close(sv[1]);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 0), 0); /* only empty frames allowed */
	do {
		n = amio_frame_reader_read(&fr, sv[0]);
		while ((r = amio_frame_reader_next(&fr, &f)) == 1) {
			ck_assert_uint_eq(f.iov_len, 0);
			frames++;
		}
		ck_assert_int_eq(r, 0);
	} while (n > 0);
	ck_assert_int_eq(n, 0); /* EOF, after all of them */
	ck_assert_int_eq(frames, 1000);
	ck_assert_uint_le(amio_frame_reader_capacity(&fr), FU_HDR);
	amio_frame_reader_destroy(&fr);
	close(sv[0]);
}
END_TEST

/* --- end of file ------------------------------------------------------------ */

START_TEST(test_eof_is_reported_only_after_every_frame_was_handed_out)
{
	struct amio_frame_reader fr;
	struct iovec f;
	int sv[2];

	fu_socketpair(sv);
	send_frame(sv[1], "one");
	send_frame(sv[1], "two");
	send_frame(sv[1], "");
	close(sv[1]);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 64), 0);
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), 3 * FU_HDR + 6);
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), -ENOBUFS); /* frames first */
	expect_frame(&fr, "one", 3);
	expect_frame(&fr, "two", 3);
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), -ENOBUFS);
	expect_frame(&fr, "", 0);
	ck_assert_int_eq(amio_frame_reader_next(&fr, &f), 0);
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), 0);
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), 0);
	amio_frame_reader_destroy(&fr);
	close(sv[0]);
}
END_TEST

START_TEST(test_eof_in_the_middle_of_a_frame_gives_eproto)
{
	static const unsigned char cut[][FU_HDR + 5] = {
	    {0, 0, 0, 10, 'h', 'e', 'l', 'l', 'o'}, /* in the payload */
	    {0, 0},                                 /* in the header */
	};
	static const size_t cut_len[] = {FU_HDR + 5, 2};
	struct amio_frame_reader fr;
	struct iovec f;
	int sv[2], i;

	for (i = 0; i < 2; i++) {
		fu_socketpair(sv);
		send_frame(sv[1], "ok");
		fu_send_all(sv[1], cut[i], cut_len[i]);
		close(sv[1]);
		ck_assert_int_eq(amio_frame_reader_init(&fr, 64), 0);
		ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), (ssize_t)(6 + cut_len[i]));
		expect_frame(&fr, "ok", 2);
		ck_assert_int_eq(amio_frame_reader_next(&fr, &f), -EPROTO);
		ck_assert_int_eq(amio_frame_reader_next(&fr, &f), -EPROTO);
		ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), 0);
		ck_assert_uint_eq(amio_frame_reader_buffered(&fr), cut_len[i]);
		amio_frame_reader_destroy(&fr);
		close(sv[0]);
	}
}
END_TEST

START_TEST(test_eof_on_an_empty_stream_is_returned_at_once)
{
	struct amio_frame_reader fr;
	struct iovec f;
	int sv[2];

	fu_socketpair(sv);
	close(sv[1]);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 64), 0);
	ck_assert_int_eq(amio_frame_reader_read(&fr, sv[0]), 0);
	ck_assert_int_eq(amio_frame_reader_next(&fr, &f), 0);
	amio_frame_reader_destroy(&fr);
	close(sv[0]);
}
END_TEST

/* --- frames in caller memory: amio_frame_parse, amio_frame_reader_missing --- */

/* The completion pattern: each received chunk is parsed in place while the
 * reader is empty; a frame cut by the chunk's end goes into the reader, fed
 * exactly what it is missing, and the rest of the next chunk is parsed in
 * place again. Every frame must come out once, in order, and every frame
 * parsed in place must point into the chunk (no copy). */
static size_t in_place_pieces(const struct fu_stream *st, size_t max, const size_t *cuts,
                              size_t ncuts, size_t *copied)
{
	struct amio_frame_reader fr;
	size_t k = 0, start = 0;

	ck_assert_int_eq(amio_frame_reader_init(&fr, max), 0);
	for (size_t c = 0; c <= ncuts; c++) {
		size_t end = c < ncuts ? cuts[c] : st->len, off = start;
		const unsigned char *chunk = st->bytes + start;
		struct iovec f;
		ssize_t n;

		while (off < end) {
			if (amio_frame_reader_buffered(&fr) > 0) {
				ssize_t miss = amio_frame_reader_missing(&fr);
				size_t take;

				FU_CHECK(miss > 0, "missing() %zd with a partial frame buffered",
				         miss);
				take = (size_t)miss < end - off ? (size_t)miss : end - off;
				n = amio_frame_reader_feed(&fr, st->bytes + off, take);
				FU_CHECK(n == (ssize_t)take, "feed took %zd of %zu", n, take);
				off += take;
				if (amio_frame_reader_missing(&fr) == 0) {
					FU_CHECK(amio_frame_reader_next(&fr, &f) == 1, "no frame");
					fu_assert_bytes(f.iov_base, f.iov_len,
					                st->bytes + st->off[k], st->size[k],
					                "frame", k);
					FU_CHECK(amio_frame_reader_buffered(&fr) == 0,
					         "bytes past the frame were fed");
					k++;
					(*copied)++;
				}
				continue;
			}
			n = amio_frame_parse(st->bytes + off, end - off, max, &f);
			FU_CHECK(n >= 0, "parse() %zd", n);
			if (n == 0) { /* a frame cut by the chunk's end: to the reader */
				FU_CHECK(amio_frame_reader_missing(&fr) == FU_HDR, "empty reader");
				n = amio_frame_reader_feed(&fr, st->bytes + off, end - off);
				FU_CHECK(n == (ssize_t)(end - off), "feed of a tail");
				off = end;
				continue;
			}
			FU_CHECK((unsigned char *)f.iov_base >= chunk &&
			             (unsigned char *)f.iov_base + f.iov_len <= st->bytes + end,
			         "frame %zu not in its chunk", k);
			fu_assert_bytes(f.iov_base, f.iov_len, st->bytes + st->off[k], st->size[k],
			                "frame", k);
			FU_CHECK((size_t)n == FU_HDR + st->size[k], "parse() took %zd", n);
			off += (size_t)n;
			k++;
		}
		start = end;
	}
	FU_CHECK(amio_frame_reader_buffered(&fr) == 0, "bytes left in the reader");
	amio_frame_reader_destroy(&fr);
	return k;
}

START_TEST(test_parse_in_place_and_feeding_what_is_missing_yield_every_frame_at_every_split)
{
	uint64_t rng = fu_seed(__func__);
	struct fu_stream st;
	size_t cuts[2], copied = 0;

	fu_stream_make(&st, 12, 9, &rng);
	for (size_t a = 0; a <= st.len; a++)
		for (size_t b = a; b <= st.len; b++) {
			cuts[0] = a;
			cuts[1] = b;
			FU_CHECK(in_place_pieces(&st, 9, cuts, 2, &copied) == st.n, "frames lost");
		}
	ck_assert_uint_gt(copied, 0); /* some splits did cut frames */
	fu_stream_free(&st);
}
END_TEST

START_TEST(test_parse_in_place_one_byte_chunks_copies_every_frame_and_loses_none)
{
	uint64_t rng = fu_seed(__func__);
	struct fu_stream st;
	size_t *cuts, copied = 0;

	fu_stream_make(&st, 50, 300, &rng);
	cuts = malloc(st.len * sizeof(*cuts));
	ck_assert_ptr_nonnull(cuts);
	for (size_t i = 0; i < st.len; i++)
		cuts[i] = i + 1;
	ck_assert_uint_eq(in_place_pieces(&st, 300, cuts, st.len, &copied), st.n);
	free(cuts);
	fu_stream_free(&st);
}
END_TEST

START_TEST(test_missing_counts_down_byte_by_byte_to_a_complete_frame)
{
	unsigned char b[FU_HDR + 5];
	struct amio_frame_reader fr;
	struct iovec f;

	fu_put_be32(b, 5);
	memcpy(b + FU_HDR, "hello", 5);
	ck_assert_int_eq(amio_frame_reader_init(&fr, 16), 0);
	for (size_t i = 0; i < sizeof(b); i++) {
		/* The header first, then the payload it announced. */
		ck_assert_int_eq(amio_frame_reader_missing(&fr),
		                 (ssize_t)(i < FU_HDR ? FU_HDR - i : sizeof(b) - i));
		ck_assert_int_eq(amio_frame_reader_feed(&fr, b + i, 1), 1);
	}
	ck_assert_int_eq(amio_frame_reader_missing(&fr), 0);
	ck_assert_int_eq(amio_frame_reader_next(&fr, &f), 1);
	fu_assert_bytes(f.iov_base, f.iov_len, "hello", 5, "frame", 0);
	ck_assert_int_eq(amio_frame_reader_missing(&fr), FU_HDR);
	/* A header over max_frame: sticky, as for next(). */
	fu_put_be32(b, 17);
	ck_assert_int_eq(amio_frame_reader_feed(&fr, b, FU_HDR), FU_HDR);
	ck_assert_int_eq(amio_frame_reader_missing(&fr), -EMSGSIZE);
	ck_assert_int_eq(amio_frame_reader_next(&fr, &f), -EMSGSIZE);
	ck_assert_int_eq(amio_frame_reader_missing(&fr), -EMSGSIZE);
	amio_frame_reader_destroy(&fr);
}
END_TEST

START_TEST(test_parse_needs_the_whole_frame_and_refuses_a_header_over_max_frame)
{
	unsigned char b[FU_HDR + 3] = {0};
	struct iovec f = {.iov_base = b, .iov_len = 99};

	fu_put_be32(b, 3);
	memcpy(b + FU_HDR, "abc", 3);
	for (size_t len = 0; len < sizeof(b); len++) {
		ck_assert_int_eq(amio_frame_parse(b, len, 3, &f), 0);
		ck_assert_ptr_eq(f.iov_base, b); /* left alone */
		ck_assert_uint_eq(f.iov_len, 99);
	}
	ck_assert_int_eq(amio_frame_parse(b, sizeof(b), 3, &f), (ssize_t)sizeof(b));
	ck_assert_ptr_eq(f.iov_base, b + FU_HDR);
	ck_assert_uint_eq(f.iov_len, 3);
	ck_assert_int_eq(amio_frame_parse(b, sizeof(b), 2, &f), -EMSGSIZE);
	ck_assert_int_eq(amio_frame_parse(b, 2, 2, &f), 0); /* not known yet */
	/* A header near 4 GiB with max UINT32_MAX: incomplete, not wrapped. */
	fu_put_be32(b, UINT32_MAX);
	ck_assert_int_eq(amio_frame_parse(b, sizeof(b), UINT32_MAX, &f), 0);
	ck_assert_int_eq(amio_frame_parse(NULL, 0, 3, &f), 0);
}
END_TEST

START_TEST(test_parse_of_frames_ending_at_a_guard_page_reads_nothing_past_len)
{
	size_t map_len;
	unsigned char *guard = fu_guard_alloc(&map_len), *p;
	unsigned char frame[FU_HDR + 7];
	struct iovec f;

	fu_put_be32(frame, 7);
	memcpy(frame + FU_HDR, "guarded", 7);
	/* Every prefix of the frame, placed so that it ends at the guard. */
	for (size_t len = 0; len <= sizeof(frame); len++) {
		p = guard - len;
		memcpy(p, frame, len);
		ck_assert_int_eq(amio_frame_parse(p, len, 1u << 20, &f),
		                 len == sizeof(frame) ? (ssize_t)sizeof(frame) : 0);
	}
	fu_assert_bytes(f.iov_base, f.iov_len, "guarded", 7, "frame", 0);
	p = guard - FU_HDR;
	fu_put_be32(p, 0);
	ck_assert_int_eq(amio_frame_parse(p, FU_HDR, 0, &f), FU_HDR);
	ck_assert_uint_eq(f.iov_len, 0);
	munmap(guard - map_len / 2, map_len);
}
END_TEST

static Suite *frame_reader_suite(void)
{
	Suite *s = suite_create("frame_reader");
	TCase *tc;

	tc = fu_tcase(s, "partial_frames", 10);
	tcase_add_test(tc, test_a_frame_sent_as_2_2_5_6_bytes_is_returned_only_when_complete);
	tcase_add_test(tc, test_a_read_holding_the_next_header_and_payload_yields_that_frame);
	tcase_add_test(tc, test_reading_an_open_socket_with_nothing_sent_returns_eagain);
	tcase_add_test(tc, test_data_before_a_reset_is_handed_out_then_econnreset_is_returned);
	tcase_add_test(tc, test_an_fd_error_is_returned_as_minus_errno);

	tc = fu_tcase(s, "split_points", 120);
	tcase_add_test(tc, test_every_chunk_size_from_1_to_17_yields_the_original_frames);
	tcase_add_test(tc, test_random_split_points_yield_the_original_frames);
	tcase_add_test(tc, test_every_two_way_split_of_a_small_stream_yields_its_frames);
	tcase_add_test(tc, test_frames_sent_one_byte_at_a_time_over_a_socket_arrive_intact);

	tc = fu_tcase(s, "limits", 20);
	tcase_add_test(tc,
	               test_a_header_over_max_frame_gives_emsgsize_without_buffering_the_payload);
	tcase_add_test(
	    tc, test_max_frame_plus_1_read_from_a_socket_gives_emsgsize_within_max_frame_plus_4);
	tcase_add_test(tc, test_a_frame_of_exactly_max_frame_bytes_is_accepted);
	tcase_add_test(tc, test_the_buffer_starts_small_and_grows_only_for_the_frame_being_parsed);
	tcase_add_test(tc, test_read_stops_at_a_full_buffer_and_the_read_next_loop_loses_nothing);
	tcase_add_test(tc, test_feed_takes_what_fits_and_the_rest_after_next);
	tcase_add_test(
	    tc,
	    test_the_read_loop_that_stops_when_drained_misses_nothing_and_reads_once_per_wakeup);

	tc = fu_tcase(s, "guard_page", 10);
	tcase_add_test(tc, test_a_frame_ending_at_a_guard_page_is_parsed_without_touching_it);

	tc = fu_tcase(s, "zero_length", 20);
	tcase_add_test(tc, test_runs_of_zero_length_frames_are_all_returned);
	tcase_add_test(tc, test_a_stream_of_only_zero_length_frames_works_over_a_socket);

	tc = fu_tcase(s, "eof", 10);
	tcase_add_test(tc, test_eof_is_reported_only_after_every_frame_was_handed_out);
	tcase_add_test(tc, test_eof_in_the_middle_of_a_frame_gives_eproto);
	tcase_add_test(tc, test_eof_on_an_empty_stream_is_returned_at_once);
	tcase_add_test(tc, test_a_header_near_4_gib_is_an_incomplete_frame_not_a_wrapped_one);

	tc = fu_tcase(s, "in_place", 60);
	tcase_add_test(
	    tc, test_parse_in_place_and_feeding_what_is_missing_yield_every_frame_at_every_split);
	tcase_add_test(tc, test_parse_in_place_one_byte_chunks_copies_every_frame_and_loses_none);
	tcase_add_test(tc, test_missing_counts_down_byte_by_byte_to_a_complete_frame);
	tcase_add_test(tc, test_parse_needs_the_whole_frame_and_refuses_a_header_over_max_frame);
	tcase_add_test(tc, test_parse_of_frames_ending_at_a_guard_page_reads_nothing_past_len);
	return s;
}

int main(void)
{
	return fu_run(frame_reader_suite());
}
