/* Where does the next '\n'-terminated line end, searching each byte once, and
 * how are raw byte runs (RESP bulk strings, HTTP bodies) taken between lines
 * without max_line having to cover them? On top of bytebuf. */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "bytebuf.h"

/* The most the buffer holds for lines, in bytes: max_line, or the first block
 * (4 KiB, or the limit if smaller) if that is larger. A max_take above a short
 * max_line thus keeps a first block that one read can fill with many lines,
 * and giving memory back after a take does not free it on every read. Only a
 * take may need more. */
static size_t line_cap(const struct amio_line_reader *lr)
{
	size_t initial =
	    AMIO__BYTEBUF_INITIAL < lr->buf.limit ? AMIO__BYTEBUF_INITIAL : lr->buf.limit;

	return lr->max_line > initial ? lr->max_line : initial;
}

/* The bytebuf need function, also the parser: 0 = a complete unit starts the
 * buffer (a line: lr->scanned is the offset of its '\n'; or the lr->take
 * bytes a take() is waiting for); > 0 = bytes wanted (a pending take names
 * its size; lines announce none, so one more than buffered); -EMSGSIZE.
 * lr->scanned remembers how far the search got, so bytes are searched only
 * once however the line arrives. A pending take is checked first: its bytes
 * are not a line and may hold no '\n' for far longer than max_line.
 * *most keeps the buffer within what the contract allows: line_cap() for a
 * line (doubling would otherwise overshoot max_line), and a take beyond it
 * gets exactly its size. */
static ssize_t line_need(void *owner, size_t *most)
{
	struct amio_line_reader *lr = owner;
	size_t avail = amio__bytebuf_len(&lr->buf);
	size_t lim = avail < lr->max_line ? avail : lr->max_line;
	const unsigned char *head, *nl;

	if (lr->err)
		return lr->err;
	if (lr->take) {
		if (avail >= lr->take)
			return 0;
		*most = lr->take > line_cap(lr) ? lr->take : line_cap(lr);
		return (ssize_t)lr->take;
	}
	if (lr->scanned < lim) {
		head = amio__bytebuf_head(&lr->buf);
		nl = memchr(head + lr->scanned, '\n', lim - lr->scanned);
		if (nl) {
			lr->scanned = (size_t)(nl - head);
			return 0;
		}
		lr->scanned = lim;
	}
	if (avail >= lr->max_line) {
		lr->err = -EMSGSIZE; /* max_line bytes and no '\n' among them */
		return lr->err;
	}
	*most = line_cap(lr); /* >= max_line > avail */
	return (ssize_t)(avail + 1);
}

static size_t limit_of(const struct amio_line_reader *lr)
{
	return lr->max_line > lr->max_take ? lr->max_line : lr->max_take;
}

/* Before read/feed, where views die anyway: a buffer grown for a take() that
 * has been handed out goes back to line_cap(), or to the size of a take now
 * pending if that is larger (the memory of an earlier, larger take is more
 * than it needs; one that needs all of it keeps it). Only when what is left
 * fits, so the copy is small: shrinking a buffer full of pipelined lines on
 * every read would copy it again and again. */
static void shrink_after_take(struct amio_line_reader *lr)
{
	size_t keep = line_cap(lr);

	if (keep < lr->take)
		keep = lr->take;
	if (lr->buf.cap > keep)
		amio__bytebuf_shrink(&lr->buf, keep);
}

int amio_line_reader_init(struct amio_line_reader *lr, size_t max_line)
{
	if (max_line == 0 || max_line > SSIZE_MAX)
		return -EINVAL;
	amio__bytebuf_init(&lr->buf, max_line);
	lr->max_line = max_line;
	lr->max_take = max_line;
	lr->take = 0;
	lr->scanned = 0;
	lr->err = 0;
	return 0;
}

int amio_line_reader_set_max_take(struct amio_line_reader *lr, size_t max_take)
{
	if (max_take > SSIZE_MAX)
		return -EINVAL;
	/* The buffer limit moves with it: never below bytes already held. */
	if (amio__bytebuf_len(&lr->buf) > 0 || lr->take)
		return -EBUSY;
	lr->max_take = max_take;
	lr->buf.limit = limit_of(lr);
	if (lr->buf.cap > lr->buf.limit)
		amio__bytebuf_shrink(&lr->buf, 0); /* empty: frees the block */
	return 0;
}

void amio_line_reader_destroy(struct amio_line_reader *lr)
{
	amio__bytebuf_destroy(&lr->buf);
	lr->take = 0;
	lr->scanned = 0;
}

ssize_t amio_line_reader_read(struct amio_line_reader *lr, int fd)
{
	size_t most; /* unused: nothing grows here */
	ssize_t n, need;

	lr->buf.drained = 0; /* fill() sets it; every other way out is "not drained" */
	if (lr->err)
		return lr->err;
	shrink_after_take(lr);
	if (!lr->buf.eof) {
		n = amio__bytebuf_fill(&lr->buf, fd, line_need, lr);
		if (n != 0)
			return n;
	}
	/* At EOF every buffered byte is a line to hand out (the last one may
	 * lack its '\n'); EOF is news only once they are all gone. */
	need = line_need(lr, &most);
	if (need < 0)
		return need;
	return amio__bytebuf_len(&lr->buf) > 0 ? -ENOBUFS : 0;
}

ssize_t amio_line_reader_feed(struct amio_line_reader *lr, const void *buf, size_t len)
{
	if (lr->err)
		return lr->err;
	shrink_after_take(lr);
	return amio__bytebuf_feed(&lr->buf, buf, len, line_need, lr);
}

int amio_line_reader_next(struct amio_line_reader *lr, struct iovec *line)
{
	size_t len, most; /* most unused: nothing grows here */
	ssize_t need;

	lr->take = 0; /* asking for a line abandons a pending take() */
	need = line_need(lr, &most);
	if (need < 0)
		return (int)need;
	if (need == 0)
		len = lr->scanned + 1;
	else if (lr->buf.eof && amio__bytebuf_len(&lr->buf) > 0)
		len = amio__bytebuf_len(&lr->buf); /* unterminated last line */
	else
		return 0;
	line->iov_base = amio__bytebuf_head(&lr->buf);
	line->iov_len = len;
	amio__bytebuf_consume(&lr->buf, len);
	lr->scanned = 0;
	return 1;
}

int amio_line_reader_take(struct amio_line_reader *lr, size_t n, struct iovec *out)
{
	if (lr->err)
		return lr->err;
	if (n > lr->max_take)
		return -EMSGSIZE;
	if (amio__bytebuf_len(&lr->buf) < n) {
		if (lr->buf.eof)
			return -EPROTO; /* no read can ever complete it */
		/* Remembered for line_need: read/feed now buffer up to n bytes
		 * and stop there, instead of searching them for a '\n'. */
		lr->take = n;
		return 0;
	}
	/* NULL + 0 is undefined: an empty take before first use gets NULL. */
	out->iov_base = lr->buf.data ? amio__bytebuf_head(&lr->buf) : NULL;
	out->iov_len = n;
	amio__bytebuf_consume(&lr->buf, n);
	lr->take = 0;
	lr->scanned = 0; /* the search restarts at the next line */
	return 1;
}

size_t amio_line_reader_shrink(struct amio_line_reader *lr)
{
	amio__bytebuf_shrink(&lr->buf, amio__bytebuf_len(&lr->buf));
	return lr->buf.cap;
}

size_t amio_line_reader_buffered(const struct amio_line_reader *lr)
{
	return amio__bytebuf_len(&lr->buf);
}

size_t amio_line_reader_capacity(const struct amio_line_reader *lr)
{
	return lr->buf.cap;
}

int amio_line_reader_drained(const struct amio_line_reader *lr)
{
	return lr->buf.drained;
}
