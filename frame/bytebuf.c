/* How do the framing types buffer bytes without ever holding more than their
 * limit? One growable buffer: compact before growing, grow only for the unit
 * being parsed, read an fd until EAGAIN or until the buffer is full. */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bytebuf.h"

void amio__bytebuf_init(struct amio__bytebuf *b, size_t limit)
{
	memset(b, 0, sizeof(*b));
	b->limit = limit;
}

void amio__bytebuf_destroy(struct amio__bytebuf *b)
{
	free(b->data);
	amio__bytebuf_init(b, b->limit);
}

/* Moves the live bytes to the front; views into the old positions die here,
 * which the API allows (they live only until the next read/feed). */
static void compact(struct amio__bytebuf *b)
{
	size_t live = b->end - b->start;

	if (b->start == 0)
		return;
	memmove(b->data, b->data + b->start, live);
	b->start = 0;
	b->end = live;
}

/* Reallocates to hold at least `needed` bytes, never past `most` (<= the
 * limit): at least doubling, so units that grow in small steps (lines,
 * queued frames) cost O(log n) copies, but no more than `needed` when that
 * is larger (a frame header says exactly what it needs). Only live bytes
 * are copied. */
static int grow(struct amio__bytebuf *b, size_t needed, size_t most)
{
	size_t live = b->end - b->start;
	size_t cap = AMIO__BYTEBUF_INITIAL;
	unsigned char *data;

	assert(needed <= most && most <= b->limit);
	if (b->cap)
		cap = b->cap <= most / 2 ? b->cap * 2 : most;
	if (cap < needed)
		cap = needed;
	if (cap > most)
		cap = most;
	data = malloc(cap);
	if (!data)
		return -ENOMEM;
	if (live)
		memcpy(data, b->data + b->start, live);
	free(b->data);
	b->data = data;
	b->cap = cap;
	b->start = 0;
	b->end = live;
	return 0;
}

void amio__bytebuf_shrink(struct amio__bytebuf *b, size_t keep)
{
	size_t live = b->end - b->start;
	size_t cap = AMIO__BYTEBUF_INITIAL < b->limit ? AMIO__BYTEBUF_INITIAL : b->limit;
	unsigned char *data;

	if (b->cap <= keep || live > keep)
		return; /* small already, or shrinking would copy more than keep */
	if (live == 0) {
		free(b->data); /* make_room allocates the initial size on next use */
		b->data = NULL;
		b->cap = b->start = b->end = 0;
		return;
	}
	if (cap < live)
		cap = live;
	if (cap >= b->cap)
		return;
	data = malloc(cap);
	if (!data)
		return; /* the larger block still holds everything */
	memcpy(data, b->data + b->start, live);
	free(b->data);
	b->data = data;
	b->cap = cap;
	b->start = 0;
	b->end = live;
}

/* amio__bytebuf_reserve() for a unit that may grow the buffer only up to
 * `most` bytes. */
static int reserve_upto(struct amio__bytebuf *b, size_t room, size_t most)
{
	size_t live = b->end - b->start;

	assert(room <= most - live); /* callers bound their units by `most` */
	if (b->cap - b->end >= room)
		return 0;
	if (live + room <= b->cap) {
		compact(b);
		return 0;
	}
	return grow(b, live + room, most);
}

int amio__bytebuf_reserve(struct amio__bytebuf *b, size_t room)
{
	return reserve_upto(b, room, b->limit);
}

/* Free tail bytes after making what room the unit at the front allows:
 * > 0 room, 0 = full of complete units (hand them out first), -errno. */
static ssize_t make_room(struct amio__bytebuf *b, amio__bytebuf_need_fn *need, void *owner)
{
	size_t live, most = b->limit;
	ssize_t want;
	int r;

	if (b->start == b->end)
		b->start = b->end = 0; /* empty: reuse from the front, no copy */
	if (b->end < b->cap)
		return (ssize_t)(b->cap - b->end);
	live = b->end - b->start;
	if (b->cap == 0) {
		want = 1; /* first use: grow() allocates the initial size */
	} else {
		want = need(owner, &most);
		if (want < 0)
			return want;
		if (want == 0 && b->start == 0)
			return 0;
		/* A complete unit after handed-out bytes: compacting is enough. */
		want = want == 0 ? (ssize_t)(live + 1) : want;
		/* Memory follows the bytes that came, not what a header
		 * claims: room at the front first, then one doubling at a
		 * time (a 4-byte header announcing 4 GiB must not allocate
		 * 4 GiB before the peer has sent them). */
		if (live < b->cap) {
			compact(b);
			return (ssize_t)(b->cap - b->end);
		}
		if ((size_t)want > b->cap && b->cap <= SIZE_MAX / 2 && (size_t)want > 2 * b->cap)
			want = (ssize_t)(2 * b->cap);
	}
	r = reserve_upto(b, (size_t)want - live, most);
	if (r < 0)
		return r;
	return (ssize_t)(b->cap - b->end);
}

ssize_t amio__bytebuf_feed(struct amio__bytebuf *b, const void *src, size_t len,
                           amio__bytebuf_need_fn *need, void *owner)
{
	const unsigned char *p = src;
	size_t done = 0;

	/* Loops because room can appear in steps: fill the tail, then the unit
	 * at the front asks to grow, then fill again. */
	while (done < len) {
		ssize_t room = make_room(b, need, owner);
		size_t n;

		if (room <= 0)
			return done > 0 ? (ssize_t)done : room;
		n = (size_t)room < len - done ? (size_t)room : len - done;
		memcpy(b->data + b->end, p + done, n);
		b->end += n;
		done += n;
	}
	return (ssize_t)done;
}

ssize_t amio__bytebuf_fill(struct amio__bytebuf *b, int fd, amio__bytebuf_need_fn *need,
                           void *owner)
{
	size_t total = 0;
	ssize_t room, n;

	b->drained = 0;
	if (b->fd_err) {
		int err = b->fd_err;

		b->fd_err = 0;
		return err;
	}
	for (;;) {
		room = make_room(b, need, owner);
		if (room <= 0)
			return total > 0 ? (ssize_t)total : (room < 0 ? room : -ENOBUFS);
		n = read(fd, b->data + b->end, (size_t)room);
		if (n > 0) {
			b->end += (size_t)n;
			total += (size_t)n;
			continue;
		}
		if (n == 0) {
			b->eof = 1;
			return (ssize_t)total;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			/* Remembered so an edge-triggered caller can skip the read
			 * that would only say EAGAIN again. */
			b->drained = 1;
			return total > 0 ? (ssize_t)total : -EAGAIN;
		}
		if (total == 0)
			return -errno;
		/* Socket errors are reported once by the kernel (read then says
		 * EOF): keep it for the next call rather than lose it. */
		b->fd_err = -errno;
		return (ssize_t)total;
	}
}
