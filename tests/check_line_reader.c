/* Does the line reader return exactly the '\n'-terminated lines that were
 * sent, however they are split, up to max_line and not beyond? */
#include "frame_util.h"

/* Random lines of 0..max_body bytes (none of them '\n'), each plus '\n'. */
struct lines {
	unsigned char *bytes;
	size_t len, n;
	size_t *off, *size; /* size includes the '\n' */
};

static void lines_make(struct lines *ls, size_t n, size_t max_body, uint64_t *rng)
{
	size_t i, j, pos = 0;

	ls->n = n;
	ls->off = calloc(n, sizeof(size_t));
	ls->size = calloc(n, sizeof(size_t));
	ls->bytes = malloc(n * (max_body + 1));
	ck_assert_ptr_nonnull(ls->off);
	ck_assert_ptr_nonnull(ls->size);
	ck_assert_ptr_nonnull(ls->bytes);
	for (i = 0; i < n; i++) {
		size_t body = (size_t)(fu_rand(rng) % (max_body + 1));

		ls->off[i] = pos;
		ls->size[i] = body + 1;
		for (j = 0; j < body; j++) {
			unsigned char c = (unsigned char)fu_rand(rng);

			ls->bytes[pos++] = c == '\n' ? 'n' : c;
		}
		ls->bytes[pos++] = '\n';
	}
	ls->len = pos;
}

static void lines_free(struct lines *ls)
{
	free(ls->bytes);
	free(ls->off);
	free(ls->size);
}

static size_t drain_check(struct amio_line_reader *lr, const struct lines *ls, size_t k)
{
	struct iovec l;
	int r;

	while ((r = amio_line_reader_next(lr, &l)) == 1) {
		FU_CHECK(k < ls->n, "line %zu beyond the %zu sent", k, ls->n);
		fu_assert_bytes(l.iov_base, l.iov_len, ls->bytes + ls->off[k], ls->size[k], "line",
		                k);
		k++;
	}
	FU_CHECK(r == 0, "next() returned %d", r);
	return k;
}

static size_t feed_piece(struct amio_line_reader *lr, size_t max_line, const struct lines *ls,
                         const unsigned char *p, size_t len, size_t k)
{
	while (len > 0) {
		ssize_t n = amio_line_reader_feed(lr, p, len);
		size_t before = k;

		FU_CHECK(n >= 0, "feed() returned %zd", n);
		FU_CHECK(amio_line_reader_capacity(lr) <= max_line, "capacity %zu > %zu",
		         amio_line_reader_capacity(lr), max_line);
		p += n;
		len -= (size_t)n;
		k = drain_check(lr, ls, k);
		FU_CHECK(n > 0 || k > before, "feed made no progress");
	}
	return k;
}

static void expect_line(struct amio_line_reader *lr, const char *want)
{
	struct iovec l;

	ck_assert_int_eq(amio_line_reader_next(lr, &l), 1);
	fu_assert_bytes(l.iov_base, l.iov_len, want, strlen(want), "line", 0);
}

static void send_str(int fd, const char *s)
{
	fu_send_all(fd, s, strlen(s));
}

/* --- Amy's cases, over a real socket ---------------------------------------- */

START_TEST(test_five_lines_in_one_read_are_returned_in_order)
{
	static const char *const want[] = {"Hello\n", "World\n", "\n", "How are you?\n",
	                                   "Fine, thanks.\n"};
	struct amio_line_reader lr;
	struct iovec l;
	int sv[2], i;

	fu_socketpair(sv);
	send_str(sv[1], "Hello\nWorld\n\nHow are you?\nFine, thanks.\n");
	ck_assert_int_eq(amio_line_reader_init(&lr, 1024), 0);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), 40);
	for (i = 0; i < 5; i++)
		expect_line(&lr, want[i]);
	ck_assert_int_eq(amio_line_reader_next(&lr, &l), 0);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), -EAGAIN);
	amio_line_reader_destroy(&lr);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(test_a_partial_last_line_is_completed_by_a_later_read)
{
	struct amio_line_reader lr;
	struct iovec l;
	int sv[2];

	fu_socketpair(sv);
	ck_assert_int_eq(amio_line_reader_init(&lr, 1024), 0);
	send_str(sv[1], "one\ntwo\nthr");
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), 11);
	expect_line(&lr, "one\n");
	expect_line(&lr, "two\n");
	ck_assert_int_eq(amio_line_reader_next(&lr, &l), 0);
	ck_assert_uint_eq(amio_line_reader_buffered(&lr), 3);
	send_str(sv[1], "ee\nfour\n");
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), 8);
	expect_line(&lr, "three\n");
	expect_line(&lr, "four\n");
	ck_assert_int_eq(amio_line_reader_next(&lr, &l), 0);
	amio_line_reader_destroy(&lr);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* --- long lines ----------------------------------------------------------------- */

START_TEST(test_a_64_kib_line_is_read_with_max_line_1_mib)
{
	static char line[65536 + 1];
	struct amio_line_reader lr;
	struct iovec l;
	ssize_t n;
	int sv[2], r;

	memset(line, 'L', 65535);
	line[65535] = '\n';
	fu_socketpair(sv);
	send_str(sv[1], line);
	send_str(sv[1], "short\n");
	ck_assert_int_eq(amio_line_reader_init(&lr, 1u << 20), 0);
	do {
		n = amio_line_reader_read(&lr, sv[0]);
		ck_assert_int_gt(n, 0);
	} while ((r = amio_line_reader_next(&lr, &l)) == 0);
	ck_assert_int_eq(r, 1);
	fu_assert_bytes(l.iov_base, l.iov_len, line, 65536, "line", 0);
	ck_assert_uint_ge(amio_line_reader_capacity(&lr), 65536);
	ck_assert_uint_lt(amio_line_reader_capacity(&lr), 1u << 20); /* not max_line up front */
	if (amio_line_reader_buffered(&lr) < 6)
		ck_assert_int_gt(amio_line_reader_read(&lr, sv[0]), 0);
	expect_line(&lr, "short\n");
	amio_line_reader_destroy(&lr);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(test_a_line_over_max_line_gives_emsgsize)
{
	static unsigned char buf[10000];
	struct amio_line_reader lr;
	struct iovec l;
	ssize_t n;
	int sv[2], r = 0;

	memset(buf, 'x', sizeof(buf));
	/* A line of exactly max_line bytes, '\n' included, is fine... */
	buf[99] = '\n';
	ck_assert_int_eq(amio_line_reader_init(&lr, 100), 0);
	ck_assert_int_eq(amio_line_reader_feed(&lr, buf, 100), 100);
	ck_assert_int_eq(amio_line_reader_next(&lr, &l), 1);
	ck_assert_uint_eq(l.iov_len, 100);
	/* ...one more byte is not. */
	buf[99] = 'x';
	buf[100] = '\n';
	ck_assert_int_eq(amio_line_reader_feed(&lr, buf, 101), 100);
	ck_assert_int_eq(amio_line_reader_next(&lr, &l), -EMSGSIZE);
	ck_assert_int_eq(amio_line_reader_next(&lr, &l), -EMSGSIZE);
	ck_assert_int_eq(amio_line_reader_feed(&lr, "\n", 1), -EMSGSIZE);
	ck_assert_uint_le(amio_line_reader_capacity(&lr), 100);
	amio_line_reader_destroy(&lr);

	/* Over a socket: 10000 bytes without '\n' never make it grow past 100. */
	buf[100] = 'x';
	fu_socketpair(sv);
	fu_send_all(sv[1], buf, sizeof(buf));
	ck_assert_int_eq(amio_line_reader_init(&lr, 100), 0);
	do {
		n = amio_line_reader_read(&lr, sv[0]);
		ck_assert_uint_le(amio_line_reader_capacity(&lr), 100);
	} while (n > 0 && (r = amio_line_reader_next(&lr, &l)) == 0);
	ck_assert_msg(n == -EMSGSIZE || r == -EMSGSIZE, "read %zd, next %d", n, r);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), -EMSGSIZE);
	amio_line_reader_destroy(&lr);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(test_a_line_longer_than_the_first_allocation_works_up_to_max_line)
{
	struct amio_line_reader lr;
	struct lines ls;
	size_t i, k = 0;

	ls.n = 2;
	ls.len = 10000 + 3;
	ls.bytes = malloc(ls.len);
	ls.off = calloc(2, sizeof(size_t));
	ls.size = calloc(2, sizeof(size_t));
	ck_assert_ptr_nonnull(ls.bytes);
	for (i = 0; i < 9999; i++)
		ls.bytes[i] = (unsigned char)('a' + i % 26);
	memcpy(ls.bytes + 9999, "\nz\n", 4);
	ls.size[0] = 10000;
	ls.off[1] = 10000;
	ls.size[1] = 2;
	ls.len = 10002;
	ck_assert_int_eq(amio_line_reader_init(&lr, 10000), 0);
	for (i = 0; i < ls.len; i += 7) /* 7-byte pieces: the search resumes each time */
		k = feed_piece(&lr, 10000, &ls, ls.bytes + i, ls.len - i < 7 ? ls.len - i : 7, k);
	ck_assert_uint_eq(k, 2);
	ck_assert_uint_eq(amio_line_reader_buffered(&lr), 0);
	ck_assert_uint_le(amio_line_reader_capacity(&lr), 10000);
	amio_line_reader_destroy(&lr);
	lines_free(&ls);
}
END_TEST

/* --- split points --------------------------------------------------------------- */

START_TEST(test_every_chunk_size_from_1_to_17_yields_the_original_lines)
{
	uint64_t rng = fu_seed("line chunk sizes 1..17");
	struct amio_line_reader lr;
	struct lines ls;
	size_t chunk, off, k;

	lines_make(&ls, 2000, 9000, &rng);
	for (chunk = 1; chunk <= 17; chunk++) {
		ck_assert_int_eq(amio_line_reader_init(&lr, 9001), 0);
		for (off = 0, k = 0; off < ls.len; off += chunk) {
			size_t n = ls.len - off < chunk ? ls.len - off : chunk;

			k = feed_piece(&lr, 9001, &ls, ls.bytes + off, n, k);
		}
		ck_assert_uint_eq(k, ls.n);
		ck_assert_uint_eq(amio_line_reader_buffered(&lr), 0);
		amio_line_reader_destroy(&lr);
	}
	lines_free(&ls);
}
END_TEST

START_TEST(test_every_two_way_split_yields_the_lines)
{
	uint64_t rng = 5;
	struct amio_line_reader lr;
	struct lines ls;
	size_t cut, k;

	lines_make(&ls, 15, 12, &rng);
	for (cut = 0; cut <= ls.len; cut++) {
		ck_assert_int_eq(amio_line_reader_init(&lr, 13), 0);
		k = feed_piece(&lr, 13, &ls, ls.bytes, cut, 0);
		k = feed_piece(&lr, 13, &ls, ls.bytes + cut, ls.len - cut, k);
		ck_assert_uint_eq(k, ls.n);
		amio_line_reader_destroy(&lr);
	}
	lines_free(&ls);
}
END_TEST

/* --- guard page ----------------------------------------------------------------- */

START_TEST(test_a_line_ending_at_a_guard_page_is_found_without_touching_it)
{
	struct amio_line_reader lr;
	struct iovec l;
	size_t map_len, i;
	unsigned char *guard = fu_guard_alloc(&map_len);

	memcpy(guard - 8, "guarded\n", 8);
	ck_assert_int_eq(amio_line_reader_init(&lr, 64), 0);
	ck_assert_int_eq(amio_line_reader_feed(&lr, guard - 8, 8), 8);
	expect_line(&lr, "guarded\n");
	for (i = 8; i > 0; i--) /* one byte at a time up to the guard */
		ck_assert_int_eq(amio_line_reader_feed(&lr, guard - i, 1), 1);
	expect_line(&lr, "guarded\n");
	memcpy(guard - 3, "abc", 3); /* no '\n' before the guard: need more */
	ck_assert_int_eq(amio_line_reader_feed(&lr, guard - 3, 3), 3);
	ck_assert_int_eq(amio_line_reader_next(&lr, &l), 0);
	amio_line_reader_destroy(&lr);
	munmap(guard - map_len / 2, map_len);
}
END_TEST

/* --- end of file ---------------------------------------------------------------- */

START_TEST(test_an_unterminated_last_line_is_handed_out_after_eof)
{
	struct amio_line_reader lr;
	struct iovec l;
	int sv[2];

	fu_socketpair(sv);
	send_str(sv[1], "abc\nde");
	close(sv[1]);
	ck_assert_int_eq(amio_line_reader_init(&lr, 64), 0);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), 6);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), -ENOBUFS); /* lines first */
	expect_line(&lr, "abc\n");
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), -ENOBUFS);
	expect_line(&lr, "de");
	ck_assert_int_eq(amio_line_reader_next(&lr, &l), 0);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), 0);
	amio_line_reader_destroy(&lr);
	close(sv[0]);
}
END_TEST

START_TEST(test_eof_on_an_empty_stream_is_returned_at_once)
{
	struct amio_line_reader lr;
	struct iovec l;
	int sv[2];

	fu_socketpair(sv);
	close(sv[1]);
	ck_assert_int_eq(amio_line_reader_init(&lr, 64), 0);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), 0);
	ck_assert_int_eq(amio_line_reader_next(&lr, &l), 0);
	amio_line_reader_destroy(&lr);
	ck_assert_int_eq(amio_line_reader_init(&lr, 0), -EINVAL);
	close(sv[0]);
}
END_TEST

static Suite *line_reader_suite(void)
{
	Suite *s = suite_create("line_reader");
	TCase *tc;

	tc = fu_tcase(s, "partial_lines", 10);
	tcase_add_test(tc, test_five_lines_in_one_read_are_returned_in_order);
	tcase_add_test(tc, test_a_partial_last_line_is_completed_by_a_later_read);

	tc = fu_tcase(s, "long_lines", 20);
	tcase_add_test(tc, test_a_64_kib_line_is_read_with_max_line_1_mib);
	tcase_add_test(tc, test_a_line_over_max_line_gives_emsgsize);
	tcase_add_test(tc, test_a_line_longer_than_the_first_allocation_works_up_to_max_line);

	tc = fu_tcase(s, "split_points", 120);
	tcase_add_test(tc, test_every_chunk_size_from_1_to_17_yields_the_original_lines);
	tcase_add_test(tc, test_every_two_way_split_yields_the_lines);

	tc = fu_tcase(s, "guard_page", 10);
	tcase_add_test(tc, test_a_line_ending_at_a_guard_page_is_found_without_touching_it);

	tc = fu_tcase(s, "eof", 10);
	tcase_add_test(tc, test_an_unterminated_last_line_is_handed_out_after_eof);
	tcase_add_test(tc, test_eof_on_an_empty_stream_is_returned_at_once);
	return s;
}

int main(void)
{
	return fu_run(line_reader_suite());
}
