/* Where does the next '\n'-terminated line end, searching each byte once?
 * The frame reader's shape for text protocols, on top of bytebuf. */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "bytebuf.h"

/* The bytebuf need function, also the parser: 0 = a complete line starts the
 * buffer and lr->scanned is the offset of its '\n'; > 0 = bytes wanted (one
 * more than buffered: lines announce no length); -EMSGSIZE. lr->scanned
 * remembers how far the search got, so bytes are searched only once however
 * the line arrives. */
static ssize_t line_need(void *owner)
{
	struct amio_line_reader *lr = owner;
	size_t avail = amio__bytebuf_len(&lr->buf);
	size_t lim = avail < lr->max_line ? avail : lr->max_line;
	const unsigned char *head, *nl;

	if (lr->err)
		return lr->err;
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
	return (ssize_t)(avail + 1);
}

int amio_line_reader_init(struct amio_line_reader *lr, size_t max_line)
{
	if (max_line == 0 || max_line > SSIZE_MAX)
		return -EINVAL;
	amio__bytebuf_init(&lr->buf, max_line);
	lr->max_line = max_line;
	lr->scanned = 0;
	lr->err = 0;
	return 0;
}

void amio_line_reader_destroy(struct amio_line_reader *lr)
{
	amio__bytebuf_destroy(&lr->buf);
	lr->scanned = 0;
}

ssize_t amio_line_reader_read(struct amio_line_reader *lr, int fd)
{
	ssize_t n, need;

	if (lr->err)
		return lr->err;
	if (!lr->buf.eof) {
		n = amio__bytebuf_fill(&lr->buf, fd, line_need, lr);
		if (n != 0)
			return n;
	}
	/* At EOF every buffered byte is a line to hand out (the last one may
	 * lack its '\n'); EOF is news only once they are all gone. */
	need = line_need(lr);
	if (need < 0)
		return need;
	return amio__bytebuf_len(&lr->buf) > 0 ? -ENOBUFS : 0;
}

ssize_t amio_line_reader_feed(struct amio_line_reader *lr, const void *buf, size_t len)
{
	if (lr->err)
		return lr->err;
	return amio__bytebuf_feed(&lr->buf, buf, len, line_need, lr);
}

int amio_line_reader_next(struct amio_line_reader *lr, struct iovec *line)
{
	ssize_t need = line_need(lr);
	size_t len;

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

size_t amio_line_reader_buffered(const struct amio_line_reader *lr)
{
	return amio__bytebuf_len(&lr->buf);
}

size_t amio_line_reader_capacity(const struct amio_line_reader *lr)
{
	return lr->buf.cap;
}
