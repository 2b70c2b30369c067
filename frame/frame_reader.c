/* Where does the next length-prefixed frame start and end, and when may the
 * reader buffer more? Parsing and stream-state rules on top of bytebuf. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>

#include "bytebuf.h"

#define HDR 4u

static uint32_t load_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* The bytebuf need function, also the parser: 0 = a complete frame starts the
 * buffer, > 0 = bytes the frame at the front needs in total, -EMSGSIZE. The
 * oversized header is found before any of its payload makes the buffer grow,
 * since growing asks this function first. Any frame may use the whole limit
 * (most is left alone). */
static ssize_t frame_need(void *owner, size_t *most)
{
	struct amio_frame_reader *fr = owner;
	size_t avail = amio__bytebuf_len(&fr->buf);
	uint32_t len;

	(void)most;
	if (fr->err)
		return fr->err;
	if (avail < HDR)
		return HDR;
	len = load_be32(amio__bytebuf_head(&fr->buf));
	if (len > fr->max_frame) {
		fr->err = -EMSGSIZE; /* sticky: we no longer know where frames start */
		return fr->err;
	}
	if (avail - HDR >= len)
		return 0;
	return (ssize_t)((size_t)HDR + len); /* in size_t: 4 + 2^32 - 4 must not wrap to 0 */
}

int amio_frame_reader_init(struct amio_frame_reader *fr, size_t max_frame)
{
	if (max_frame > UINT32_MAX)
		max_frame = UINT32_MAX;
	if (max_frame > SIZE_MAX - HDR || HDR + max_frame > SSIZE_MAX)
		return -EINVAL;
	amio__bytebuf_init(&fr->buf, max_frame + HDR);
	fr->max_frame = max_frame;
	fr->err = 0;
	return 0;
}

void amio_frame_reader_destroy(struct amio_frame_reader *fr)
{
	amio__bytebuf_destroy(&fr->buf);
}

ssize_t amio_frame_reader_read(struct amio_frame_reader *fr, int fd)
{
	ssize_t n, need;

	fr->buf.drained = 0; /* fill() sets it; every other way out is "not drained" */
	if (fr->err)
		return fr->err;
	if (!fr->buf.eof) {
		n = amio__bytebuf_fill(&fr->buf, fd, frame_need, fr);
		if (n != 0)
			return n;
	}
	/* EOF is news only once no complete frame is waiting in front of it. */
	need = frame_need(fr, NULL);
	if (need < 0)
		return need;
	return need == 0 ? -ENOBUFS : 0;
}

ssize_t amio_frame_reader_feed(struct amio_frame_reader *fr, const void *buf, size_t len)
{
	if (fr->err)
		return fr->err;
	return amio__bytebuf_feed(&fr->buf, buf, len, frame_need, fr);
}

int amio_frame_reader_next(struct amio_frame_reader *fr, struct iovec *frame)
{
	ssize_t need = frame_need(fr, NULL);
	unsigned char *head;
	size_t len;

	if (need < 0)
		return (int)need;
	if (need > 0) {
		/* Bytes of an unfinished frame that no read can ever complete. */
		if (fr->buf.eof && amio__bytebuf_len(&fr->buf) > 0)
			return -EPROTO;
		return 0;
	}
	head = amio__bytebuf_head(&fr->buf);
	len = load_be32(head);
	frame->iov_base = head + HDR;
	frame->iov_len = len;
	/* Only the indices move: the view stays valid until read/feed. */
	amio__bytebuf_consume(&fr->buf, (size_t)HDR + len);
	return 1;
}

ssize_t amio_frame_reader_missing(struct amio_frame_reader *fr)
{
	ssize_t need = frame_need(fr, NULL);

	/* need is the front frame's total, and more than is buffered. */
	return need <= 0 ? need : need - (ssize_t)amio__bytebuf_len(&fr->buf);
}

ssize_t amio_frame_parse(const void *buf, size_t len, size_t max_frame, struct iovec *frame)
{
	const unsigned char *p = buf;
	uint32_t plen;

	if (len < HDR)
		return 0;
	plen = load_be32(p);
	if (plen > max_frame)
		return -EMSGSIZE;
	/* len - HDR, not HDR + plen: 4 + 2^32 - 1 must not wrap a 32-bit size_t. */
	if (len - HDR < plen)
		return 0;
	frame->iov_base = (void *)(p + HDR);
	frame->iov_len = plen;
	return (ssize_t)HDR + (ssize_t)plen;
}

size_t amio_frame_reader_buffered(const struct amio_frame_reader *fr)
{
	return amio__bytebuf_len(&fr->buf);
}

size_t amio_frame_reader_capacity(const struct amio_frame_reader *fr)
{
	return fr->buf.cap;
}

int amio_frame_reader_drained(const struct amio_frame_reader *fr)
{
	return fr->buf.drained;
}
