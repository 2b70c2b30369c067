/* Internal to frame/: the byte buffer both readers and the writer share.
 * How does it grow, compact, take fed bytes and read an fd until EAGAIN
 * without ever exceeding its limit? */
#ifndef AMIO_FRAME_BYTEBUF_H
#define AMIO_FRAME_BYTEBUF_H

#include "amio/frame.h"

/* The first allocation, in bytes (or the limit if smaller). */
#define AMIO__BYTEBUF_INITIAL 4096u

/*
 * Asked by fill/feed when the tail is full: what does the unit (frame, line)
 * starting at b->start need? Returns 0 if it is complete (hand it out before
 * buffering more), the total bytes it needs (> what is buffered, <= *most),
 * or -errno to stop (the owner records sticky errors itself). *most comes in
 * as the limit; the owner may lower it (not below the need) for a unit that
 * must not use all of it, and growing for this unit then stops there instead
 * of doubling past it: a line never exceeds max_line.
 */
typedef ssize_t amio__bytebuf_need_fn(void *owner, size_t *most);

void amio__bytebuf_init(struct amio__bytebuf *b, size_t limit);
void amio__bytebuf_destroy(struct amio__bytebuf *b);

/* Gives back memory: if cap > keep and the live bytes fit in keep, moves
 * them to a block of max(live, initial size) bytes, or frees the block when
 * nothing is live. Copies at most keep bytes; on -ENOMEM keeps the old block
 * (nothing lost). Views into the buffer die. */
void amio__bytebuf_shrink(struct amio__bytebuf *b, size_t keep);

/* Makes room >= `room` free bytes at the tail; live bytes + room must be
 * <= limit. Returns 0 or -ENOMEM (b unchanged). */
int amio__bytebuf_reserve(struct amio__bytebuf *b, size_t room);

/* Copies as much of src as fits (see amio_frame_reader_feed). Returns bytes
 * taken (0: full of complete units), or, with none taken, the need
 * function's -errno or -ENOMEM. */
ssize_t amio__bytebuf_feed(struct amio__bytebuf *b, const void *src, size_t len,
                           amio__bytebuf_need_fn *need, void *owner);

/* Reads fd until EAGAIN (sets b->drained), EOF (sets b->eof) or no room (see
 * amio_frame_reader_read); clears b->drained first. Returns bytes read, 0 at EOF, or, with nothing
 * read, -EAGAIN, -ENOBUFS (full of complete units), the need function's
 * -errno, -ENOMEM, or read(2)'s -errno (an error after some bytes were read
 * is kept in b->fd_err and returned by the next call). */
ssize_t amio__bytebuf_fill(struct amio__bytebuf *b, int fd, amio__bytebuf_need_fn *need,
                           void *owner);

static inline size_t amio__bytebuf_len(const struct amio__bytebuf *b)
{
	return b->end - b->start;
}

static inline unsigned char *amio__bytebuf_head(const struct amio__bytebuf *b)
{
	return b->data + b->start;
}

/* Drops n handed-out (or sent) bytes from the front. */
static inline void amio__bytebuf_consume(struct amio__bytebuf *b, size_t n)
{
	b->start += n;
	if (b->start == b->end)
		b->start = b->end = 0;
}

#endif /* AMIO_FRAME_BYTEBUF_H */
