/* How do frames (and raw bytes, for line and byte protocols) reach a
 * non-blocking fd in order, without copying when the fd takes them at once
 * and without unbounded queueing when it does not? */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "bytebuf.h"

#define HDR 4u

/* Caller iovecs per sendmsg, after the queue: a stack array far below
 * IOV_MAX. A longer vector goes out in batches while the fd takes them. */
#define BATCH 32

static void store_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* Bytes the fd took (0 on EAGAIN) or -errno. sendmsg(MSG_NOSIGNAL) so a
 * closed socket peer is -EPIPE, not SIGPIPE; ENOTSOCK (a pipe) falls back
 * to writev. The fd is given per call, so nothing is cached about it. */
static ssize_t send_iov(int fd, struct iovec *iov, int cnt)
{
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
	int sock = 1;
	ssize_t n;

	for (;;) {
		n = sock ? sendmsg(fd, &mh, MSG_NOSIGNAL) : writev(fd, iov, cnt);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno == ENOTSOCK && sock) {
			sock = 0;
			continue;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		return -errno;
	}
}

ssize_t amio_frame_header_encode(void *hdr, size_t payload_len)
{
	if (payload_len > UINT32_MAX)
		return -EMSGSIZE;
	store_be32(hdr, (uint32_t)payload_len);
	return HDR;
}

int amio_frame_writer_init(struct amio_frame_writer *fw, size_t max_queued)
{
	if (max_queued < HDR)
		return -EINVAL;
	amio__bytebuf_init(&fw->buf, max_queued);
	fw->err = 0;
	return 0;
}

void amio_frame_writer_destroy(struct amio_frame_writer *fw)
{
	amio__bytebuf_destroy(&fw->buf);
}

ssize_t amio_frame_writer_flush(struct amio_frame_writer *fw, int fd)
{
	struct iovec iov;
	ssize_t n;

	if (fw->err)
		return fw->err;
	/* Until EAGAIN, not just until a short write: an edge-triggered user
	 * is woken again only once the fd has reported it is full. */
	while (amio__bytebuf_len(&fw->buf) > 0) {
		iov.iov_base = amio__bytebuf_head(&fw->buf);
		iov.iov_len = amio__bytebuf_len(&fw->buf);
		n = send_iov(fd, &iov, 1);
		if (n < 0)
			return n;
		if (n == 0)
			break;
		amio__bytebuf_consume(&fw->buf, (size_t)n);
	}
	return (ssize_t)amio__bytebuf_len(&fw->buf);
}

/* Would `queued` bytes plus `len` more exceed the limit? */
static int over_limit(const struct amio_frame_writer *fw, size_t queued, size_t len)
{
	return len > fw->buf.limit - queued;
}

/* Queues bytes `sent` onwards of iov[0..cnt) (total bytes in all). Allocates
 * only now, so a writer whose fd keeps up never copies or holds a payload.
 * The caller checked the limit. If memory runs out with part of the message
 * on the wire, the stream cannot be repaired: the error is sticky. With none
 * of it sent, the stream still ends where the last whole message did, so
 * the writer stays usable (the caller may retry or drop the message). */
static int queue_rest(struct amio_frame_writer *fw, const struct iovec *iov, int cnt, size_t total,
                      size_t sent)
{
	unsigned char *dst;
	int i;

	if (amio__bytebuf_reserve(&fw->buf, total - sent) < 0) {
		if (sent > 0)
			fw->err = -ENOMEM;
		return -ENOMEM;
	}
	dst = fw->buf.data + fw->buf.end;
	for (i = 0; i < cnt; i++) {
		size_t len = iov[i].iov_len;

		if (sent >= len) {
			sent -= len;
			continue;
		}
		memcpy(dst, (const unsigned char *)iov[i].iov_base + sent, len - sent);
		dst += len - sent;
		sent = 0;
	}
	fw->buf.end = (size_t)(dst - fw->buf.data);
	return 0;
}

/* The one send path for frames and raw bytes: queued bytes first, then
 * iov[0..cnt) (total bytes, within the limit), together in one sendmsg per
 * batch; what the fd does not take is queued. Stops at the first short
 * send: the fd is full and its next write readiness is the caller's cue. */
static ssize_t send_vec(struct amio_frame_writer *fw, int fd, const struct iovec *iov, int cnt,
                        size_t total)
{
	struct iovec v[1 + BATCH];
	size_t sent = 0; /* bytes of iov on the wire */
	size_t off = 0;  /* of them, bytes of iov[i] */
	int i = 0;

	while (sent < total) {
		size_t queued = amio__bytebuf_len(&fw->buf), batch = 0, took;
		ssize_t n;
		int k = 0, j;

		if (queued > 0)
			v[k++] = (struct iovec){amio__bytebuf_head(&fw->buf), queued};
		for (j = i; j < cnt && k < 1 + BATCH; j++) {
			size_t skip = j == i ? off : 0;

			if (iov[j].iov_len == skip)
				continue;
			v[k++] = (struct iovec){(unsigned char *)iov[j].iov_base + skip,
			                        iov[j].iov_len - skip};
			batch += iov[j].iov_len - skip;
		}
		n = send_iov(fd, v, k);
		if (n < 0)
			return n;
		if ((size_t)n < queued) {
			amio__bytebuf_consume(&fw->buf, (size_t)n);
			break;
		}
		amio__bytebuf_consume(&fw->buf, queued);
		took = (size_t)n - queued;
		sent += took;
		while (took > 0) {
			size_t left = iov[i].iov_len - off;

			if (took < left) {
				off += took;
				break;
			}
			took -= left;
			i++;
			off = 0;
		}
		if ((size_t)n - queued < batch)
			break;
	}
	if (sent < total) {
		int r = queue_rest(fw, iov, cnt, total, sent);

		if (r < 0)
			return r;
	}
	return (ssize_t)amio__bytebuf_len(&fw->buf);
}

/* Checks the limit (flushing first if that makes room) and sends. Frames and
 * raw bytes share it, so both keep the same queue order and return rules. */
static ssize_t write_vec(struct amio_frame_writer *fw, int fd, const struct iovec *iov, int cnt,
                         size_t total)
{
	ssize_t n;

	if (over_limit(fw, amio__bytebuf_len(&fw->buf), total)) {
		n = amio_frame_writer_flush(fw, fd);
		if (n < 0)
			return n;
		if (over_limit(fw, (size_t)n, total))
			return -ENOBUFS;
	}
	return send_vec(fw, fd, iov, cnt, total);
}

ssize_t amio_frame_writer_write(struct amio_frame_writer *fw, int fd, const void *msg, size_t len)
{
	unsigned char hdr[HDR];
	struct iovec iov[2];

	if (fw->err)
		return fw->err;
	if (len > UINT32_MAX)
		return -EMSGSIZE;
	if (len > SIZE_MAX - HDR)
		return -ENOBUFS; /* cannot fit any max_queued */
	store_be32(hdr, (uint32_t)len);
	iov[0] = (struct iovec){hdr, HDR};
	iov[1] = (struct iovec){(void *)msg, len};
	return write_vec(fw, fd, iov, len > 0 ? 2 : 1, HDR + len);
}

/*
 * Raw bytes go through the frame writer rather than a separate byte-writer
 * type: it is the same queue, limit, flush and return rules, a connection
 * embeds one writer whatever it sends, and a protocol that mixes a raw
 * preamble with frames keeps them in order in one queue. The price is a name
 * that says "frame" for a line protocol's output.
 */
ssize_t amio_frame_writer_write_raw(struct amio_frame_writer *fw, int fd, const void *buf,
                                    size_t len)
{
	struct iovec iov = {(void *)buf, len};

	if (fw->err)
		return fw->err;
	if (len == 0)
		return (ssize_t)amio__bytebuf_len(&fw->buf);
	return write_vec(fw, fd, &iov, 1, len);
}

ssize_t amio_frame_writer_writev_raw(struct amio_frame_writer *fw, int fd, const struct iovec *iov,
                                     int iovcnt)
{
	size_t total = 0;
	int i;

	if (fw->err)
		return fw->err;
	if (iovcnt < 0)
		return -EINVAL;
	for (i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len > SSIZE_MAX - total)
			return -EINVAL; /* as writev(2): the sum must fit in ssize_t */
		total += iov[i].iov_len;
	}
	if (total == 0)
		return (ssize_t)amio__bytebuf_len(&fw->buf);
	return write_vec(fw, fd, iov, iovcnt, total);
}

size_t amio_frame_writer_queued(const struct amio_frame_writer *fw)
{
	return amio__bytebuf_len(&fw->buf);
}
