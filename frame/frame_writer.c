/* How does a frame reach a non-blocking fd in order, without copying its
 * payload when the fd takes it at once and without unbounded queueing when
 * it does not? */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "bytebuf.h"

#define HDR 4u

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

/* Would `queued` bytes plus a frame of len payload bytes exceed the limit? */
static int over_limit(const struct amio_frame_writer *fw, size_t queued, size_t len)
{
	size_t room = fw->buf.limit - queued;

	return room < HDR || len > room - HDR;
}

/* Queues the part of header + payload the fd did not take (sent bytes).
 * Allocates only now, so a writer whose fd keeps up never copies or holds a
 * payload. The caller checked the limit; if memory runs out, part of the
 * frame is already on the wire and the stream cannot be repaired. */
static int queue_rest(struct amio_frame_writer *fw, const unsigned char *hdr, const void *msg,
                      size_t len, size_t sent)
{
	unsigned char *dst;

	if (amio__bytebuf_reserve(&fw->buf, HDR + len - sent) < 0) {
		fw->err = -ENOMEM;
		return fw->err;
	}
	dst = fw->buf.data + fw->buf.end;
	if (sent < HDR) {
		memcpy(dst, hdr + sent, HDR - sent);
		dst += HDR - sent;
		sent = HDR;
	}
	if (len > sent - HDR)
		memcpy(dst, (const unsigned char *)msg + (sent - HDR), len - (sent - HDR));
	fw->buf.end = (size_t)(dst - fw->buf.data) + len - (sent - HDR);
	return 0;
}

/* Sends queued bytes, header and payload in one call; queues what is left. */
static ssize_t send_frame(struct amio_frame_writer *fw, int fd, const void *msg, size_t len)
{
	unsigned char hdr[HDR];
	struct iovec iov[3];
	size_t queued = amio__bytebuf_len(&fw->buf);
	ssize_t n;
	int cnt = 0;

	store_be32(hdr, (uint32_t)len);
	if (queued > 0)
		iov[cnt++] = (struct iovec){amio__bytebuf_head(&fw->buf), queued};
	iov[cnt++] = (struct iovec){hdr, HDR};
	if (len > 0)
		iov[cnt++] = (struct iovec){(void *)msg, len};
	n = send_iov(fd, iov, cnt);
	if (n < 0)
		return n;
	if ((size_t)n < queued) {
		amio__bytebuf_consume(&fw->buf, (size_t)n);
		n = 0;
	} else {
		amio__bytebuf_consume(&fw->buf, queued);
		n -= (ssize_t)queued;
	}
	if ((size_t)n < HDR + len && queue_rest(fw, hdr, msg, len, (size_t)n) < 0)
		return fw->err;
	return (ssize_t)amio__bytebuf_len(&fw->buf);
}

ssize_t amio_frame_writer_write(struct amio_frame_writer *fw, int fd, const void *msg, size_t len)
{
	ssize_t n;

	if (fw->err)
		return fw->err;
	if (len > UINT32_MAX)
		return -EMSGSIZE;
	if (over_limit(fw, amio__bytebuf_len(&fw->buf), len)) {
		n = amio_frame_writer_flush(fw, fd);
		if (n < 0)
			return n;
		if (over_limit(fw, (size_t)n, len))
			return -ENOBUFS;
	}
	return send_frame(fw, fd, msg, len);
}

size_t amio_frame_writer_queued(const struct amio_frame_writer *fw)
{
	return amio__bytebuf_len(&fw->buf);
}
