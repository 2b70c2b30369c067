/* Does the line reader return exactly the '\n'-terminated lines that were
 * sent, however they are split, up to max_line and not beyond? */
#include <limits.h>
#include <malloc.h>
#include <pthread.h>

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

/* --- take: raw byte runs between lines (RESP bulk strings) ------------------- */

/* A RESP request stream: commands of 1..4 arguments, each "$<len>\r\n" plus
 * len bytes plus "\r\n"; argument bytes are random, '\n' included. */
struct resp {
	unsigned char *bytes;
	size_t len, nargs;
	size_t *arg_off, *arg_len; /* every argument of every command, in order */
	size_t *cmd_args;          /* arguments per command */
	size_t ncmds;
};

static void resp_make(struct resp *rs, size_t ncmds, size_t max_arg, uint64_t *rng)
{
	size_t i, a, j, cap = 64, pos = 0, k = 0;

	rs->ncmds = ncmds;
	rs->cmd_args = calloc(ncmds, sizeof(size_t));
	rs->arg_off = calloc(ncmds * 4, sizeof(size_t));
	rs->arg_len = calloc(ncmds * 4, sizeof(size_t));
	for (i = 0; i < ncmds; i++)
		cap += 16 + 4 * (max_arg + 32);
	rs->bytes = malloc(cap);
	ck_assert_ptr_nonnull(rs->cmd_args);
	ck_assert_ptr_nonnull(rs->arg_off);
	ck_assert_ptr_nonnull(rs->arg_len);
	ck_assert_ptr_nonnull(rs->bytes);
	for (i = 0; i < ncmds; i++) {
		rs->cmd_args[i] = 1 + (size_t)(fu_rand(rng) % 4);
		pos += (size_t)sprintf((char *)rs->bytes + pos, "*%zu\r\n", rs->cmd_args[i]);
		for (a = 0; a < rs->cmd_args[i]; a++, k++) {
			size_t n = (size_t)(fu_rand(rng) % (max_arg + 1));

			pos += (size_t)sprintf((char *)rs->bytes + pos, "$%zu\r\n", n);
			rs->arg_off[k] = pos;
			rs->arg_len[k] = n;
			for (j = 0; j < n; j++)
				rs->bytes[pos++] = (unsigned char)fu_rand(rng);
			memcpy(rs->bytes + pos, "\r\n", 2);
			pos += 2;
		}
	}
	rs->nargs = k;
	rs->len = pos;
	ck_assert_uint_le(pos, cap);
}

static void resp_free(struct resp *rs)
{
	free(rs->bytes);
	free(rs->cmd_args);
	free(rs->arg_off);
	free(rs->arg_len);
}

/* A RESP parser as a server would write one: its state survives "need more
 * bytes" (a line or a take returning 0) between reads or feeds. */
struct parser {
	const struct resp *rs;
	int in_bulk;      /* 1: the next unit is a take of bulk + 2 bytes */
	size_t bulk;      /* announced length of the bulk string being taken */
	size_t args_left; /* arguments of the current command still to come */
	size_t k;         /* arguments parsed so far, over the whole stream */
	size_t cmds;      /* commands completed */
};

static size_t parse_len(const struct iovec *l, char type)
{
	const char *p = l->iov_base;
	char *end;
	size_t v;

	FU_CHECK(l->iov_len >= 4 && p[0] == type && p[l->iov_len - 2] == '\r' &&
	             p[l->iov_len - 1] == '\n',
	         "bad %c line of %zu bytes", type, l->iov_len);
	v = strtoull(p + 1, &end, 10);
	FU_CHECK(end == p + l->iov_len - 2, "bad %c number", type);
	return v;
}

/* Parses what is buffered; returns once next() or take() says need more. */
static void parse(struct amio_line_reader *lr, struct parser *ps)
{
	const struct resp *rs = ps->rs;
	struct iovec v;
	int r;

	for (;;) {
		if (ps->in_bulk) {
			r = amio_line_reader_take(lr, ps->bulk + 2, &v);
			FU_CHECK(r >= 0, "take(%zu) returned %d", ps->bulk + 2, r);
			if (r == 0)
				return;
			FU_CHECK(ps->k < rs->nargs, "argument %zu beyond those sent", ps->k);
			fu_assert_bytes(v.iov_base, v.iov_len - 2, rs->bytes + rs->arg_off[ps->k],
			                rs->arg_len[ps->k], "argument", ps->k);
			FU_CHECK(memcmp((char *)v.iov_base + ps->bulk, "\r\n", 2) == 0,
			         "argument %zu: no CRLF after it", ps->k);
			ps->k++;
			ps->in_bulk = 0;
			if (--ps->args_left == 0)
				ps->cmds++;
			continue;
		}
		r = amio_line_reader_next(lr, &v);
		FU_CHECK(r >= 0, "next() returned %d", r);
		if (r == 0)
			return;
		if (ps->args_left == 0) {
			ps->args_left = parse_len(&v, '*');
			FU_CHECK(ps->args_left == rs->cmd_args[ps->cmds], "command %zu: %zu args",
			         ps->cmds, ps->args_left);
		} else {
			ps->bulk = parse_len(&v, '$');
			ps->in_bulk = 1;
		}
	}
}

/* Feeds all of p (in as many calls as the buffer needs), parsing as it goes. */
static void feed_resp(struct amio_line_reader *lr, struct parser *ps, const unsigned char *p,
                      size_t len, size_t limit)
{
	while (len > 0) {
		ssize_t n = amio_line_reader_feed(lr, p, len);
		size_t before = ps->k + ps->cmds;

		FU_CHECK(n >= 0, "feed() returned %zd", n);
		FU_CHECK(amio_line_reader_capacity(lr) <= limit, "capacity %zu > %zu",
		         amio_line_reader_capacity(lr), limit);
		p += n;
		len -= (size_t)n;
		parse(lr, ps);
		FU_CHECK(n > 0 || ps->k + ps->cmds > before, "feed made no progress");
	}
}

START_TEST(test_a_bulk_string_longer_than_max_line_and_full_of_newlines_is_taken_whole)
{
	static unsigned char body[3000];
	struct amio_line_reader lr;
	struct iovec v;
	size_t i;

	for (i = 0; i < sizeof(body); i++)
		body[i] = i % 7 == 0 ? '\n' : (unsigned char)('a' + i % 26);
	body[sizeof(body) - 2] = '\r';
	body[sizeof(body) - 1] = '\n';
	ck_assert_int_eq(amio_line_reader_init(&lr, 64), 0);
	ck_assert_int_eq(amio_line_reader_set_max_take(&lr, 4096), 0);
	ck_assert_int_eq(amio_line_reader_feed(&lr, "$2998\r\n", 7), 7);
	expect_line(&lr, "$2998\r\n");
	ck_assert_int_eq(amio_line_reader_take(&lr, sizeof(body), &v), 0); /* pending */
	/* One byte at a time: no '\n' inside it is taken for a line end. */
	for (i = 0; i < sizeof(body); i++) {
		ck_assert_int_eq(amio_line_reader_feed(&lr, body + i, 1), 1);
		FU_CHECK(amio_line_reader_take(&lr, sizeof(body), &v) == (i + 1 == sizeof(body)),
		         "take after %zu bytes", i + 1);
	}
	fu_assert_bytes(v.iov_base, v.iov_len, body, sizeof(body), "body", 0);
	ck_assert_int_eq(amio_line_reader_feed(&lr, "PING\r\n", 6), 6);
	expect_line(&lr, "PING\r\n");
	ck_assert_uint_eq(amio_line_reader_buffered(&lr), 0);
	amio_line_reader_destroy(&lr);
}
END_TEST

START_TEST(test_every_two_way_split_of_a_resp_stream_yields_every_argument)
{
	uint64_t rng = 11;
	struct amio_line_reader lr;
	struct resp rs;
	size_t cut;

	/* Arguments up to 200 bytes, max_line 16: every bulk string is taken. */
	resp_make(&rs, 12, 200, &rng);
	for (cut = 0; cut <= rs.len; cut++) {
		struct parser ps = {.rs = &rs};

		ck_assert_int_eq(amio_line_reader_init(&lr, 16), 0);
		ck_assert_int_eq(amio_line_reader_set_max_take(&lr, 202), 0);
		feed_resp(&lr, &ps, rs.bytes, cut, 4096);
		feed_resp(&lr, &ps, rs.bytes + cut, rs.len - cut, 4096);
		FU_CHECK(ps.k == rs.nargs && ps.cmds == rs.ncmds, "cut %zu: %zu of %zu args", cut,
		         ps.k, rs.nargs);
		ck_assert_uint_eq(amio_line_reader_buffered(&lr), 0);
		amio_line_reader_destroy(&lr);
	}
	resp_free(&rs);
}
END_TEST

START_TEST(test_every_chunk_size_from_1_to_17_of_a_resp_stream_yields_every_argument)
{
	uint64_t rng = fu_seed("resp chunk sizes 1..17");
	struct amio_line_reader lr;
	struct resp rs;
	size_t chunk, off;

	/* Arguments up to 20000 bytes through a 64-byte max_line: takes grow
	 * the buffer far past max_line and across many feeds. */
	resp_make(&rs, 40, 20000, &rng);
	for (chunk = 1; chunk <= 17; chunk++) {
		struct parser ps = {.rs = &rs};

		ck_assert_int_eq(amio_line_reader_init(&lr, 64), 0);
		ck_assert_int_eq(amio_line_reader_set_max_take(&lr, 20002), 0);
		for (off = 0; off < rs.len; off += chunk)
			feed_resp(&lr, &ps, rs.bytes + off,
			          rs.len - off < chunk ? rs.len - off : chunk, 20002);
		ck_assert_uint_eq(ps.k, rs.nargs);
		ck_assert_uint_eq(ps.cmds, rs.ncmds);
		amio_line_reader_destroy(&lr);
	}
	resp_free(&rs);
}
END_TEST

START_TEST(test_a_resp_stream_sent_one_byte_at_a_time_over_a_socket_is_parsed_whole)
{
	uint64_t rng = 3;
	struct amio_line_reader lr;
	struct parser ps;
	struct resp rs;
	size_t i;
	int sv[2];

	resp_make(&rs, 6, 300, &rng);
	ps = (struct parser){.rs = &rs};
	fu_socketpair(sv);
	ck_assert_int_eq(amio_line_reader_init(&lr, 32), 0);
	ck_assert_int_eq(amio_line_reader_set_max_take(&lr, 302), 0);
	for (i = 0; i < rs.len; i++) {
		fu_send_all(sv[1], rs.bytes + i, 1);
		FU_CHECK(amio_line_reader_read(&lr, sv[0]) == 1, "read byte %zu", i);
		FU_CHECK(amio_line_reader_drained(&lr), "byte %zu: read(2) said EAGAIN", i);
		parse(&lr, &ps);
	}
	ck_assert_uint_eq(ps.k, rs.nargs);
	ck_assert_uint_eq(ps.cmds, rs.ncmds);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), -EAGAIN);
	amio_line_reader_destroy(&lr);
	resp_free(&rs);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(test_views_from_next_and_take_stay_valid_until_the_next_read)
{
	static const char req[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
	struct amio_line_reader lr;
	struct iovec l[4], v[3];
	int sv[2];

	fu_socketpair(sv);
	send_str(sv[1], req);
	ck_assert_int_eq(amio_line_reader_init(&lr, 64), 0);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), (ssize_t)strlen(req));
	ck_assert_int_eq(amio_line_reader_next(&lr, &l[0]), 1);
	ck_assert_int_eq(amio_line_reader_next(&lr, &l[1]), 1);
	ck_assert_int_eq(amio_line_reader_take(&lr, 5, &v[0]), 1);
	ck_assert_int_eq(amio_line_reader_next(&lr, &l[2]), 1);
	ck_assert_int_eq(amio_line_reader_take(&lr, 3, &v[1]), 1);
	ck_assert_int_eq(amio_line_reader_next(&lr, &l[3]), 1);
	ck_assert_int_eq(amio_line_reader_take(&lr, 7, &v[2]), 1);
	/* The whole request, piece by piece, still where it was handed out. */
	fu_assert_bytes(l[0].iov_base, l[0].iov_len, "*3\r\n", 4, "line", 0);
	fu_assert_bytes(v[0].iov_base, v[0].iov_len, "SET\r\n", 5, "take", 0);
	fu_assert_bytes(v[1].iov_base, v[1].iov_len, "k\r\n", 3, "take", 1);
	fu_assert_bytes(v[2].iov_base, v[2].iov_len, "value\r\n", 7, "take", 2);
	ck_assert_int_eq(amio_line_reader_take(&lr, 0, &v[0]), 1); /* n = 0: empty view */
	ck_assert_uint_eq(v[0].iov_len, 0);
	amio_line_reader_destroy(&lr);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(test_a_take_over_max_take_gives_emsgsize_and_changes_nothing)
{
	struct amio_line_reader lr;
	struct iovec v;

	ck_assert_int_eq(amio_line_reader_init(&lr, 100), 0);
	ck_assert_int_eq(amio_line_reader_feed(&lr, "abc\n", 4), 4);
	/* max_take defaults to max_line. */
	ck_assert_int_eq(amio_line_reader_take(&lr, 101, &v), -EMSGSIZE);
	ck_assert_int_eq(amio_line_reader_set_max_take(&lr, 1000), -EBUSY); /* bytes buffered */
	ck_assert_int_eq(amio_line_reader_take(&lr, 2, &v), 1);
	fu_assert_bytes(v.iov_base, v.iov_len, "ab", 2, "take", 0);
	expect_line(&lr, "c\n");
	ck_assert_int_eq(amio_line_reader_set_max_take(&lr, (size_t)SSIZE_MAX + 1), -EINVAL);
	ck_assert_int_eq(amio_line_reader_set_max_take(&lr, 1000), 0);
	ck_assert_int_eq(amio_line_reader_take(&lr, 1000, &v), 0);          /* pending */
	ck_assert_int_eq(amio_line_reader_set_max_take(&lr, 2000), -EBUSY); /* take pending */
	ck_assert_int_eq(amio_line_reader_take(&lr, 1001, &v), -EMSGSIZE);
	ck_assert_uint_eq(amio_line_reader_buffered(&lr), 0);
	amio_line_reader_destroy(&lr);
}
END_TEST

START_TEST(test_next_abandons_a_pending_take_and_lines_are_searched_again)
{
	struct amio_line_reader lr;
	struct iovec v;

	ck_assert_int_eq(amio_line_reader_init(&lr, 8), 0);
	ck_assert_int_eq(amio_line_reader_set_max_take(&lr, 64), 0);
	ck_assert_int_eq(amio_line_reader_take(&lr, 40, &v), 0);
	/* While the take is pending, 20 bytes without '\n' are no error. */
	ck_assert_int_eq(amio_line_reader_feed(&lr, "0123456789abcdefghij", 20), 20);
	ck_assert_int_eq(amio_line_reader_take(&lr, 40, &v), 0);
	/* Asked for a line instead: 20 bytes and no '\n' over max_line 8. */
	ck_assert_int_eq(amio_line_reader_next(&lr, &v), -EMSGSIZE);
	ck_assert_int_eq(amio_line_reader_take(&lr, 20, &v), -EMSGSIZE); /* sticky */
	amio_line_reader_destroy(&lr);
}
END_TEST

START_TEST(test_a_take_after_next_searched_part_of_a_line_lets_the_next_line_be_found)
{
	struct amio_line_reader lr;
	struct iovec v;

	ck_assert_int_eq(amio_line_reader_init(&lr, 64), 0);
	ck_assert_int_eq(amio_line_reader_feed(&lr, "abc", 3), 3);
	ck_assert_int_eq(amio_line_reader_next(&lr, &v), 0); /* searched "abc": no '\n' */
	ck_assert_int_eq(amio_line_reader_take(&lr, 2, &v), 1);
	fu_assert_bytes(v.iov_base, v.iov_len, "ab", 2, "take", 0);
	ck_assert_int_eq(amio_line_reader_feed(&lr, "\nd\n", 3), 3);
	expect_line(&lr, "c\n");
	expect_line(&lr, "d\n");
	amio_line_reader_destroy(&lr);
}
END_TEST

START_TEST(test_eof_before_a_take_is_complete_gives_eproto)
{
	struct amio_line_reader lr;
	struct iovec v;
	int sv[2];

	fu_socketpair(sv);
	send_str(sv[1], "$10\r\nshort");
	close(sv[1]);
	ck_assert_int_eq(amio_line_reader_init(&lr, 64), 0);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), 10);
	ck_assert_int_eq(amio_line_reader_drained(&lr), 0); /* stopped at EOF */
	expect_line(&lr, "$10\r\n");
	ck_assert_int_eq(amio_line_reader_take(&lr, 12, &v), -EPROTO);
	ck_assert_int_eq(amio_line_reader_take(&lr, 12, &v), -EPROTO);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), -ENOBUFS); /* 5 bytes wait */
	ck_assert_int_eq(amio_line_reader_take(&lr, 5, &v), 1);        /* what did arrive */
	fu_assert_bytes(v.iov_base, v.iov_len, "short", 5, "take", 0);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), 0);
	amio_line_reader_destroy(&lr);
	close(sv[0]);
}
END_TEST

START_TEST(test_a_take_ending_at_a_guard_page_is_handed_out_without_touching_it)
{
	struct amio_line_reader lr;
	struct iovec v;
	size_t map_len, i;
	unsigned char *guard = fu_guard_alloc(&map_len);

	memcpy(guard - 11, "$5\r\nhello\r\n", 11); /* its last byte is followed by the guard */
	ck_assert_int_eq(amio_line_reader_init(&lr, 8), 0);
	ck_assert_int_eq(amio_line_reader_set_max_take(&lr, 16), 0);
	for (i = 11; i > 0; i--) { /* one byte at a time up to the guard */
		ck_assert_int_eq(amio_line_reader_feed(&lr, guard - i, 1), 1);
		if (i == 8)
			expect_line(&lr, "$5\r\n");
		if (i > 1 && i < 8)
			ck_assert_int_eq(amio_line_reader_take(&lr, 7, &v), 0);
	}
	ck_assert_int_eq(amio_line_reader_take(&lr, 7, &v), 1);
	fu_assert_bytes(v.iov_base, v.iov_len, "hello\r\n", 7, "take", 0);
	ck_assert_int_eq(amio_line_reader_feed(&lr, guard - 11, 11), 11); /* all at once */
	expect_line(&lr, "$5\r\n");
	ck_assert_int_eq(amio_line_reader_take(&lr, 7, &v), 1);
	fu_assert_bytes(v.iov_base, v.iov_len, "hello\r\n", 7, "take", 0);
	ck_assert_uint_eq(amio_line_reader_buffered(&lr), 0);
	amio_line_reader_destroy(&lr);
	munmap(guard - map_len / 2, map_len);
}
END_TEST

/* --- take: a large value, then the memory goes back ------------------------------ */

#define BIG_VALUE (16u * 1024 * 1024)

struct sender {
	int fd;
	const unsigned char *bytes;
	size_t len;
};

static void *send_thread(void *arg)
{
	struct sender *sd = arg;
	const unsigned char *p = sd->bytes;
	size_t len = sd->len;

	while (len > 0) { /* blocking fd: plain send, no ck_assert off the test thread */
		ssize_t n = send(sd->fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return (void *)1;
		p += n;
		len -= (size_t)n;
	}
	return NULL;
}

START_TEST(test_a_16_mib_value_is_taken_whole_and_its_memory_given_back_after_it)
{
	const size_t max_line = 4096, hdr = 12; /* "$16777216\r\n" is 11 bytes, +1 below */
	struct amio_line_reader lr;
	struct sender sd;
	struct iovec v;
	unsigned char *wire;
	size_t i, len, peak = 0;
	pthread_t th;
	void *ret;
	ssize_t n;
	int sv[2], r;

	/* "$<n>\r\n", n value bytes, "\r\n", then "PING\r\n". */
	wire = malloc(hdr + BIG_VALUE + 8);
	ck_assert_ptr_nonnull(wire);
	len = (size_t)sprintf((char *)wire, "$%u\r\n", BIG_VALUE);
	ck_assert_uint_lt(len, hdr);
	for (i = 0; i < BIG_VALUE; i++)
		wire[len + i] = (unsigned char)(i * 2654435761u >> 13);
	memcpy(wire + len + BIG_VALUE, "\r\nPING\r\n", 8);
	sd = (struct sender){.bytes = wire, .len = len + BIG_VALUE + 8};
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	fu_set_nonblock(sv[0]);
	sd.fd = sv[1];
	ck_assert_int_eq(amio_line_reader_init(&lr, max_line), 0);
	ck_assert_int_eq(amio_line_reader_set_max_take(&lr, BIG_VALUE + 2), 0);
	ck_assert_int_eq(pthread_create(&th, NULL, send_thread, &sd), 0);
	do {
		fu_wait(sv[0], POLLIN);
		n = amio_line_reader_read(&lr, sv[0]);
		ck_assert_int_gt(n, 0);
	} while ((r = amio_line_reader_next(&lr, &v)) == 0);
	ck_assert_int_eq(r, 1);
	fu_assert_bytes(v.iov_base, v.iov_len, wire, len, "line", 0);
	while ((r = amio_line_reader_take(&lr, BIG_VALUE + 2, &v)) == 0) {
		if (amio_line_reader_capacity(&lr) > peak)
			peak = amio_line_reader_capacity(&lr);
		if (!amio_line_reader_drained(&lr) && amio_line_reader_read(&lr, sv[0]) > 0)
			continue;
		fu_wait(sv[0], POLLIN);
		n = amio_line_reader_read(&lr, sv[0]);
		ck_assert_int_gt(n, 0);
	}
	ck_assert_int_eq(r, 1);
	fu_assert_bytes(v.iov_base, v.iov_len, wire + len, BIG_VALUE + 2, "value", 0);
	ck_assert_uint_ge(amio_line_reader_capacity(&lr), BIG_VALUE + 2);
	ck_assert_uint_le(amio_line_reader_capacity(&lr),
	                  BIG_VALUE + 2); /* exactly what it needed */
	ck_assert_int_eq(pthread_join(th, &ret), 0);
	ck_assert_ptr_null(ret);
	/* The next read gives the memory back before buffering "PING\r\n". */
	while ((r = amio_line_reader_next(&lr, &v)) == 0) {
		n = amio_line_reader_read(&lr, sv[0]);
		ck_assert_int_gt(n, 0);
		ck_assert_uint_le(amio_line_reader_capacity(&lr), max_line);
	}
	ck_assert_int_eq(r, 1);
	fu_assert_bytes(v.iov_base, v.iov_len, "PING\r\n", 6, "line", 1);
	ck_assert_uint_le(amio_line_reader_capacity(&lr), max_line);
	ck_assert_uint_le(malloc_usable_size(lr.buf.data), 2 * max_line);
	/* Idle and empty: shrink gives back the rest. */
	ck_assert_uint_eq(amio_line_reader_shrink(&lr), 0);
	ck_assert_uint_eq(amio_line_reader_capacity(&lr), 0);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), -EAGAIN);
	amio_line_reader_destroy(&lr);
	free(wire);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

START_TEST(test_shrink_keeps_buffered_bytes_and_a_big_idle_buffer_is_given_back)
{
	static unsigned char body[100000];
	struct amio_line_reader lr;
	struct iovec v;

	memset(body, 'b', sizeof(body));
	ck_assert_int_eq(amio_line_reader_init(&lr, 64), 0);
	ck_assert_uint_eq(amio_line_reader_shrink(&lr), 0); /* before first use: a no-op */
	ck_assert_int_eq(amio_line_reader_set_max_take(&lr, sizeof(body)), 0);
	ck_assert_int_eq(amio_line_reader_take(&lr, sizeof(body), &v), 0);
	ck_assert_int_eq(amio_line_reader_feed(&lr, body, sizeof(body)), (ssize_t)sizeof(body));
	ck_assert_int_eq(amio_line_reader_feed(&lr, "rest\n", 5), 0); /* full: take first */
	ck_assert_uint_eq(amio_line_reader_capacity(&lr), sizeof(body));
	ck_assert_int_eq(amio_line_reader_take(&lr, sizeof(body), &v), 1);
	ck_assert_int_eq(amio_line_reader_feed(&lr, "re", 2), 2); /* gives it back first */
	ck_assert_uint_eq(amio_line_reader_capacity(&lr), 4096);
	ck_assert_int_eq(amio_line_reader_feed(&lr, "st\n", 3), 3);
	/* Explicit shrink keeps what is buffered, in a block no smaller than 4 KiB. */
	ck_assert_uint_eq(amio_line_reader_shrink(&lr), 4096);
	expect_line(&lr, "rest\n");
	ck_assert_uint_eq(amio_line_reader_shrink(&lr), 0);
	/* A take still pending when the caller goes idle: shrink copies the
	 * bytes held so far (50,000 here), the take completes after it. */
	ck_assert_int_eq(amio_line_reader_take(&lr, sizeof(body), &v), 0);
	ck_assert_int_eq(amio_line_reader_feed(&lr, body, 50000), 50000);
	ck_assert_uint_eq(amio_line_reader_shrink(&lr), 50000);
	ck_assert_int_eq(amio_line_reader_feed(&lr, body, 50000), 50000);
	ck_assert_int_eq(amio_line_reader_take(&lr, sizeof(body), &v), 1);
	fu_assert_bytes(v.iov_base, v.iov_len, body, sizeof(body), "take", 0);
	amio_line_reader_destroy(&lr);
}
END_TEST

/* --- capacity: max_line bounds a line's buffer, only a take may exceed it ------- */

/* What frame.h allows the buffer while no take needs more: max_line, or the
 * first block (4 KiB, or the buffer limit if smaller) if that is larger. */
static size_t line_bound(size_t max_line, size_t max_take)
{
	size_t limit = max_line > max_take ? max_line : max_take;
	size_t first = limit < 4096 ? limit : 4096;

	return max_line > first ? max_line : first;
}

/* Feeds p in pieces of at most `piece` bytes, or, with fd >= 0, sends each
 * piece to fd's peer `peer` and reads until EAGAIN; after every call the
 * capacity must be within bound. Returns bytes taken by the last call, or
 * the first result that stopped it (-EMSGSIZE, -ENOBUFS: a complete line
 * fills the buffer). */
static ssize_t deliver_checked(struct amio_line_reader *lr, int fd, int peer,
                               const unsigned char *p, size_t len, size_t piece, size_t bound,
                               const char *what)
{
	ssize_t n = 0;

	while (len > 0) {
		size_t k = len < piece ? len : piece;

		if (fd >= 0)
			fu_send_all(peer, p, k);
		do {
			n = fd >= 0 ? amio_line_reader_read(lr, fd)
			            : amio_line_reader_feed(lr, p, k);
			FU_CHECK(amio_line_reader_capacity(lr) <= bound,
			         "%s: capacity %zu > %zu after %zd", what,
			         amio_line_reader_capacity(lr), bound, n);
		} while (fd >= 0 && n > 0);
		if (fd >= 0 && n == -EAGAIN)
			n = (ssize_t)k; /* all of the piece is in */
		if (n <= 0)
			return n;
		p += n;
		len -= (size_t)n;
	}
	return n;
}

/* A line of exactly max_line bytes, then one of max_line + 1; fed or read
 * in pieces of `piece` bytes. */
static void edge_lines(size_t max_line, size_t max_take, size_t piece, int over_socket)
{
	const size_t bound = line_bound(max_line, max_take);
	struct amio_line_reader lr;
	unsigned char *line = malloc(max_line + 1);
	struct iovec l;
	char what[128];
	ssize_t n;
	int sv[2] = {-1, -1};

	snprintf(what, sizeof(what), "max_line %zu max_take %zu, %s in pieces of %zu", max_line,
	         max_take, over_socket ? "read" : "fed", piece);
	ck_assert_ptr_nonnull(line);
	memset(line, 'x', max_line + 1);
	line[max_line - 1] = '\n';
	if (over_socket)
		fu_socketpair(sv);
	ck_assert_int_eq(amio_line_reader_init(&lr, max_line), 0);
	ck_assert_int_eq(amio_line_reader_set_max_take(&lr, max_take), 0);
	n = deliver_checked(&lr, sv[0], sv[1], line, max_line, piece, bound, what);
	ck_assert_msg(n > 0 || n == -ENOBUFS, "%s: a line of max_line gave %zd", what, n);
	ck_assert_int_eq(amio_line_reader_next(&lr, &l), 1);
	fu_assert_bytes(l.iov_base, l.iov_len, line, max_line, "line", max_line);
	/* One byte more: max_line bytes without '\n' break the stream. */
	line[max_line - 1] = 'x';
	line[max_line] = '\n';
	deliver_checked(&lr, sv[0], sv[1], line, max_line + 1, piece, bound, what);
	ck_assert_int_eq(amio_line_reader_next(&lr, &l), -EMSGSIZE);
	ck_assert_uint_le(amio_line_reader_capacity(&lr), bound);
	amio_line_reader_destroy(&lr);
	if (over_socket) {
		close(sv[0]);
		close(sv[1]);
	}
	free(line);
}

START_TEST(test_a_line_of_max_line_bytes_never_grows_the_buffer_past_max_line_or_4_kib)
{
	/* Around the first block and its doublings, and issue 18's 10000. */
	static const size_t lines[] = {1,    100,  4095, 4096,  4097, 5000,
	                               8191, 8192, 8193, 10000, 65537};
	size_t i, j;

	for (i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		/* max_take below, at and far above max_line: only a take may use it. */
		const size_t takes[] = {0, lines[i], 1u << 20};

		for (j = 0; j < 3; j++) {
			edge_lines(lines[i], takes[j], 7, 0);
			edge_lines(lines[i], takes[j], lines[i] + 1, 0);
			edge_lines(lines[i], takes[j], 1000, 1);
		}
	}
}
END_TEST

/* A random stream of lines and takes (a plan) and what a consumer has seen of
 * it, for the capacity contract over many sizes. */
enum { U_LINE, U_TAKE, U_LONG, PLAN_UNITS = 24 };

struct unit {
	int kind; /* U_LONG: max_line bytes without '\n', then one: -EMSGSIZE */
	size_t off, len;
};

struct plan {
	unsigned char *bytes;
	size_t len, n, max_line, max_take;
	struct unit u[PLAN_UNITS];
};

struct cursor {
	size_t k;    /* units handed out */
	int pending; /* take(u[k].len) said 0: the take is pending */
	int broken;  /* the U_LONG line gave -EMSGSIZE */
};

/* One of the sizes that sit on a boundary, or a random one in [lo, hi]. */
static size_t pick_size(uint64_t *rng, size_t lo, size_t hi, size_t edge)
{
	switch (fu_rand(rng) % 4) {
	case 0:
		return hi;
	case 1:
		return edge >= lo && edge <= hi ? edge : lo;
	default:
		return lo + (size_t)(fu_rand(rng) % (hi - lo + 1));
	}
}

static void plan_add(struct plan *pl, int kind, size_t len, uint64_t *rng)
{
	struct unit *u = &pl->u[pl->n++];
	size_t i;

	*u = (struct unit){kind, pl->len, kind == U_LONG ? pl->max_line + 1 : len};
	for (i = 0; i < u->len; i++) {
		unsigned char c = (unsigned char)fu_rand(rng);

		/* Lines hold no '\n' but the last byte; a take's bytes may. */
		pl->bytes[pl->len++] = kind != U_TAKE && c == '\n' ? 'n' : c;
	}
	if (kind != U_TAKE)
		pl->bytes[pl->len - 1] = '\n';
}

/* max_line around the doublings of the first 4 KiB block or random, max_take
 * below, at or above it; then lines and takes of boundary and random sizes. */
static void plan_make(struct plan *pl, uint64_t *rng)
{
	static const size_t edges[] = {1, 2, 64, 4095, 4096, 4097, 5000, 8191, 8193, 10000, 65537};
	const size_t ne = sizeof(edges) / sizeof(edges[0]);
	size_t i, lb, n = 4 + (size_t)(fu_rand(rng) % (PLAN_UNITS - 4));

	pl->max_line = fu_rand(rng) % 2 ? edges[fu_rand(rng) % ne] : 1 + fu_rand(rng) % 70000;
	switch (fu_rand(rng) % 4) {
	case 0:
		pl->max_take = pl->max_line;
		break;
	case 1:
		pl->max_take = (size_t)(fu_rand(rng) % pl->max_line);
		break;
	default:
		pl->max_take = pl->max_line + 1 + (size_t)(fu_rand(rng) % 70000);
	}
	lb = line_bound(pl->max_line, pl->max_take);
	pl->bytes = malloc(PLAN_UNITS * (lb + pl->max_take + 2));
	ck_assert_ptr_nonnull(pl->bytes);
	pl->len = pl->n = 0;
	for (i = 0; i < n - 1; i++) {
		if (fu_rand(rng) % 2)
			plan_add(pl, U_LINE, pick_size(rng, 1, pl->max_line, 4097), rng);
		else
			plan_add(pl, U_TAKE, pick_size(rng, 0, pl->max_take, lb + 1), rng);
	}
	if (fu_rand(rng) % 2)
		plan_add(pl, U_LONG, 0, rng);
	else
		plan_add(pl, U_LINE, pick_size(rng, 1, pl->max_line, 4097), rng);
}

/* Hands out units while they are complete, as a RESP parser would. */
static void consume(struct amio_line_reader *lr, const struct plan *pl, struct cursor *cur)
{
	struct iovec v;
	int r;

	while (cur->k < pl->n && !cur->broken) {
		const struct unit *u = &pl->u[cur->k];

		if (u->kind == U_TAKE)
			r = amio_line_reader_take(lr, u->len, &v);
		else
			r = amio_line_reader_next(lr, &v);
		cur->pending = u->kind == U_TAKE && r == 0;
		if (r == 0)
			return;
		if (u->kind == U_LONG) {
			FU_CHECK(r == -EMSGSIZE, "unit %zu: a line over max_line gave %d", cur->k,
			         r);
			cur->broken = 1;
			return;
		}
		FU_CHECK(r == 1, "unit %zu (kind %d, %zu bytes): %d", cur->k, u->kind, u->len, r);
		fu_assert_bytes(v.iov_base, v.iov_len, pl->bytes + u->off, u->len, "unit", cur->k);
		cur->k++;
	}
}

/* One feed or read, then the contract: within line_bound() unless a take was
 * pending, and then within the larger of that and the take. */
static ssize_t step(struct amio_line_reader *lr, const struct plan *pl, struct cursor *cur, int fd,
                    const unsigned char *p, size_t len)
{
	size_t take = cur->pending ? pl->u[cur->k].len : 0;
	size_t bound = line_bound(pl->max_line, pl->max_take);
	ssize_t n = fd >= 0 ? amio_line_reader_read(lr, fd) : amio_line_reader_feed(lr, p, len);

	if (take > bound)
		bound = take;
	FU_CHECK(amio_line_reader_capacity(lr) <= bound,
	         "max_line %zu max_take %zu, unit %zu, pending take %zu (0: none): %s gave %zd and "
	         "capacity %zu > %zu",
	         pl->max_line, pl->max_take, cur->k, take, fd >= 0 ? "read" : "feed", n,
	         amio_line_reader_capacity(lr), bound);
	FU_CHECK(n >= 0 || n == -EAGAIN || n == -ENOBUFS ||
	             (n == -EMSGSIZE && pl->u[cur->k].kind == U_LONG),
	         "unit %zu: %s gave %zd", cur->k, fd >= 0 ? "read" : "feed", n);
	return n;
}

/* Delivers one piece of the stream (fed, or sent to sv[1] and read from
 * sv[0]), handing out units between calls, until all of it is in. */
static void deliver(struct amio_line_reader *lr, const struct plan *pl, struct cursor *cur,
                    const int *sv, const unsigned char *p, size_t len)
{
	size_t before;
	ssize_t n;

	if (sv)
		fu_send_all(sv[1], p, len);
	for (;;) {
		before = cur->k;
		n = step(lr, pl, cur, sv ? sv[0] : -1, p, len);
		if (!sv && n > 0) {
			p += n;
			len -= (size_t)n;
		}
		consume(lr, pl, cur);
		if (cur->broken || (sv ? n == -EAGAIN : len == 0))
			return;
		FU_CHECK(n > 0 || cur->k > before, "unit %zu: no progress (%zd)", cur->k, n);
	}
}

START_TEST(test_the_buffer_stays_within_max_line_unless_a_pending_take_needs_more)
{
	uint64_t rng = fu_seed("line reader capacity");
	int round;

	for (round = 0; round < 200; round++) {
		/* Largest pieces: a line or take arrives in one call or in many;
		 * a socket gets none under 1000 (a syscall each, 200 rounds). */
		static const size_t pieces[] = {7, 100, 1000, 5000, 70000};
		struct amio_line_reader lr;
		struct cursor cur = {0};
		struct plan pl;
		size_t off = 0, piece;
		int sv[2], over_socket = (int)(fu_rand(&rng) % 2);

		plan_make(&pl, &rng);
		piece = pieces[2 * over_socket + (int)(fu_rand(&rng) % (5 - 2 * over_socket))];
		if (over_socket)
			fu_socketpair(sv);
		ck_assert_int_eq(amio_line_reader_init(&lr, pl.max_line), 0);
		ck_assert_int_eq(amio_line_reader_set_max_take(&lr, pl.max_take), 0);
		consume(&lr, &pl, &cur); /* a take first is pending before any byte */
		while (off < pl.len && !cur.broken) {
			size_t len = 1 + (size_t)(fu_rand(&rng) % piece);

			len = len < pl.len - off ? len : pl.len - off;
			deliver(&lr, &pl, &cur, over_socket ? sv : NULL, pl.bytes + off, len);
			off += len;
		}
		FU_CHECK(cur.k == pl.n || cur.broken, "round %d: %zu of %zu units", round, cur.k,
		         pl.n);
		amio_line_reader_destroy(&lr);
		free(pl.bytes);
		if (over_socket) {
			close(sv[0]);
			close(sv[1]);
		}
	}
}
END_TEST

/* --- drained: the read(2) an edge-triggered caller may skip --------------------- */

START_TEST(test_drained_says_whether_read_2_said_eagain)
{
	static unsigned char big[20000];
	struct amio_line_reader lr;
	struct iovec l;
	int sv[2];

	memset(big, 'x', sizeof(big));
	big[99] = '\n';
	fu_socketpair(sv);
	ck_assert_int_eq(amio_line_reader_init(&lr, 100), 0);
	ck_assert_int_eq(amio_line_reader_drained(&lr), 0); /* no read yet */
	send_str(sv[1], "one\ntwo\n");
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), 8);
	ck_assert_int_eq(amio_line_reader_drained(&lr), 1);
	expect_line(&lr, "one\n");
	expect_line(&lr, "two\n");
	/* What drained promised: reading again finds nothing. */
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), -EAGAIN);
	ck_assert_int_eq(amio_line_reader_drained(&lr), 1);
	/* A full buffer stops the read before EAGAIN: not drained. */
	fu_send_all(sv[1], big, 100);
	fu_send_all(sv[1], big, 100);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), 100);
	ck_assert_int_eq(amio_line_reader_drained(&lr), 0);
	ck_assert_int_eq(amio_line_reader_next(&lr, &l), 1);
	fu_assert_bytes(l.iov_base, l.iov_len, big, 100, "line", 0);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), 100); /* full again */
	ck_assert_int_eq(amio_line_reader_drained(&lr), 0);
	ck_assert_int_eq(amio_line_reader_next(&lr, &l), 1);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), -EAGAIN);
	ck_assert_int_eq(amio_line_reader_drained(&lr), 1);
	/* EOF ends a read without EAGAIN either. */
	close(sv[1]);
	ck_assert_int_eq(amio_line_reader_read(&lr, sv[0]), 0);
	ck_assert_int_eq(amio_line_reader_drained(&lr), 0);
	amio_line_reader_destroy(&lr);
	close(sv[0]);
	close(sv[1]);
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

	tc = fu_tcase(s, "take", 120);
	tcase_add_test(tc,
	               test_a_bulk_string_longer_than_max_line_and_full_of_newlines_is_taken_whole);
	tcase_add_test(tc, test_every_two_way_split_of_a_resp_stream_yields_every_argument);
	tcase_add_test(tc,
	               test_every_chunk_size_from_1_to_17_of_a_resp_stream_yields_every_argument);
	tcase_add_test(tc,
	               test_a_resp_stream_sent_one_byte_at_a_time_over_a_socket_is_parsed_whole);
	tcase_add_test(tc, test_views_from_next_and_take_stay_valid_until_the_next_read);
	tcase_add_test(tc, test_a_take_over_max_take_gives_emsgsize_and_changes_nothing);
	tcase_add_test(tc, test_next_abandons_a_pending_take_and_lines_are_searched_again);
	tcase_add_test(tc,
	               test_a_take_after_next_searched_part_of_a_line_lets_the_next_line_be_found);
	tcase_add_test(tc, test_eof_before_a_take_is_complete_gives_eproto);
	tcase_add_test(tc, test_a_take_ending_at_a_guard_page_is_handed_out_without_touching_it);

	tc = fu_tcase(s, "take_memory", 60);
	tcase_add_test(tc, test_a_16_mib_value_is_taken_whole_and_its_memory_given_back_after_it);
	tcase_add_test(tc, test_shrink_keeps_buffered_bytes_and_a_big_idle_buffer_is_given_back);

	tc = fu_tcase(s, "capacity", 120);
	tcase_add_test(tc,
	               test_a_line_of_max_line_bytes_never_grows_the_buffer_past_max_line_or_4_kib);
	tcase_add_test(tc, test_the_buffer_stays_within_max_line_unless_a_pending_take_needs_more);

	tc = fu_tcase(s, "drained", 10);
	tcase_add_test(tc, test_drained_says_whether_read_2_said_eagain);
	return s;
}

int main(void)
{
	return fu_run(line_reader_suite());
}
