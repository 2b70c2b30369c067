/*
 * amio/frame.h - length-prefixed frames and '\n'-terminated lines over
 * non-blocking file descriptors or bytes fed by the caller.
 *
 * Usable without the event core: link the amio_frame library, libc only.
 *
 * Wire format of a frame: a 4-byte unsigned big-endian payload length (not
 * counting itself), then that many payload bytes. Zero-length frames are legal.
 *
 * The three types are caller-allocated structs (embed them in per-connection
 * state) with _init/_destroy. Their fields are private: read them only through
 * the functions below. All sizes are in bytes.
 *
 * Reading from a non-blocking fd, edge-triggered (the default of the event
 * core): a readiness notification is consumed only once read(2) has said
 * EAGAIN. read() stops early when the buffer is full, so loop; drained() says
 * whether read(2) already said EAGAIN, which saves the call that would only
 * say it again:
 *
 *	for (;;) {
 *		ssize_t n = amio_frame_reader_read(&fr, fd);
 *		struct iovec f;
 *		int r;
 *		while ((r = amio_frame_reader_next(&fr, &f)) == 1)
 *			handle(f.iov_base, f.iov_len);
 *		if (r < 0)
 *			break;          // -EMSGSIZE or -EPROTO: close
 *		if (n == -EAGAIN || amio_frame_reader_drained(&fr))
 *			break;          // drained: wait for the next AMIO_READ
 *		if (n <= 0)
 *			break;          // 0 = EOF, every frame handed out; else -errno
 *	}
 *
 * Writing: amio_frame_writer_write() sends frames; the same writer sends
 * unframed bytes for line and byte protocols (amio_frame_writer_write_raw(),
 * amio_frame_writer_writev_raw()), with the same queue, limit and flush.
 */
#ifndef AMIO_FRAME_H
#define AMIO_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifndef AMIO_API
#define AMIO_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Private: the growable byte buffer inside each type below. Do not touch. */
struct amio__bytebuf {
	unsigned char *data; /* heap block of cap bytes; NULL until first needed */
	size_t cap;          /* bytes allocated, never above limit */
	size_t start;        /* first byte not yet handed out (readers) or sent (writer) */
	size_t end;          /* one past the last byte stored */
	size_t limit;        /* the most cap may ever be */
	int fd_err;          /* -errno met after some bytes were read; reported next */
	int eof;             /* read() saw end of file */
	int drained;         /* the last read call ended because read(2) said EAGAIN */
};

/* Private fields: a frame reader (see amio_frame_reader_init). */
struct amio_frame_reader {
	struct amio__bytebuf buf;
	size_t max_frame; /* largest accepted payload */
	int err;          /* sticky stream error (-EMSGSIZE), 0 if none */
};

/* Private fields: a frame writer (see amio_frame_writer_init). */
struct amio_frame_writer {
	struct amio__bytebuf buf; /* encoded bytes not yet sent; limit = max_queued */
	int err;                  /* sticky -ENOMEM: a frame was cut short on the wire */
};

/* Private fields: a line reader (see amio_line_reader_init). */
struct amio_line_reader {
	struct amio__bytebuf buf; /* limit = the larger of max_line and max_take */
	size_t max_line;          /* longest accepted line, '\n' included */
	size_t max_take;          /* largest accepted take() */
	size_t take;              /* bytes a pending take() waits for, 0 if none */
	size_t scanned; /* bytes after buf.start known to hold no '\n' (or: where it is) */
	int err;        /* sticky stream error (-EMSGSIZE), 0 if none */
};

/* ------------------------------------------------------------------------
 * Frame reader
 * ------------------------------------------------------------------------ */

/*
 * Prepares fr to read frames whose payload is at most max_frame bytes.
 * Allocates nothing: the buffer starts at 4 KiB (or max_frame + 4 if smaller)
 * on first use and doubles each time it is full of the frame being parsed,
 * up to 4 + the length that frame announces, never beyond max_frame + 4:
 * memory follows the bytes a peer sent (at most twice them), not the
 * length it announces, and max_frame bounds what one connection can make it
 * allocate (one 5,000-byte frame leaves 8 KiB). It is not made smaller
 * again before amio_frame_reader_destroy(). A max_frame above
 * UINT32_MAX is treated as UINT32_MAX (the header cannot announce more).
 * Returns: 0, or -EINVAL if max_frame + 4 does not fit in size_t.
 * Ownership: fr is caller storage, retained until amio_frame_reader_destroy().
 * Thread: one thread at a time.
 */
AMIO_API int amio_frame_reader_init(struct amio_frame_reader *fr, size_t max_frame);

/*
 * Frees fr's buffer. Frame views handed out by fr become invalid. fr may be
 * initialised again afterwards.
 * Thread: one thread at a time.
 */
AMIO_API void amio_frame_reader_destroy(struct amio_frame_reader *fr);

/*
 * Reads the non-blocking fd until it returns EAGAIN, EOF, or fr's buffer is
 * full (it then holds a complete frame not yet handed out: call
 * amio_frame_reader_next() until it returns 0, then read again). It never
 * reads more than max_frame + 4 bytes per call. EINTR is retried. An fd error
 * met after some bytes were read is returned by the next call.
 * Returns: bytes read (> 0); 0 at end of file, once every complete frame was
 * handed out (bytes of an unfinished frame may remain: next() then says
 * -EPROTO); or
 *   -EAGAIN    nothing to read now (the fd is drained);
 *   -ENOBUFS   nothing read: the buffer is full of frames not yet handed out,
 *              or EOF was reached and complete frames are still waiting;
 *   -EMSGSIZE  the stream is broken: a header announced more than max_frame;
 *   -ENOMEM    the buffer could not grow;
 *   -errno     from read(2), e.g. -ECONNRESET, -EBADF.
 * Invalidates the view returned by the previous amio_frame_reader_next().
 * Ownership: fd is borrowed.
 * Thread: one thread at a time.
 */
AMIO_API ssize_t amio_frame_reader_read(struct amio_frame_reader *fr, int fd);

/*
 * Copies bytes obtained elsewhere (completion I/O, TLS) into fr, as many as fit:
 * the buffer stays within max_frame + 4, so when it is full of frames not yet
 * handed out, fewer than len bytes (possibly 0) are taken. Call
 * amio_frame_reader_next() until it returns 0, then feed the rest. Whenever
 * next() has just returned 0, feed() takes at least one byte (len > 0,
 * memory permitting).
 * Returns: bytes taken (0..len), or
 *   -EMSGSIZE  the stream is broken: a header announced more than max_frame;
 *   -ENOMEM    the buffer could not grow and nothing was taken.
 * Invalidates the view returned by the previous amio_frame_reader_next().
 * Ownership: buf is borrowed (may be NULL when len is 0); the bytes are copied.
 * Thread: one thread at a time.
 */
AMIO_API ssize_t amio_frame_reader_feed(struct amio_frame_reader *fr, const void *buf, size_t len);

/*
 * Hands out the next complete frame, in arrival order, without copying it.
 * Returns: 1 and sets frame to the payload (iov_len may be 0); 0 when no
 * complete frame is buffered yet (need more bytes: not an error); or
 *   -EMSGSIZE  the next header announces more than max_frame. Its payload is
 *              never buffered, and every later call on fr returns -EMSGSIZE:
 *              close the connection;
 *   -EPROTO    read() reached end of file in the middle of a frame (the
 *              peer's stream was truncated); returned on every later call.
 * Ownership: frame->iov_base points into fr's buffer, borrowed until the next
 * call on fr (read, feed or destroy; next() itself leaves earlier views valid).
 * Thread: one thread at a time.
 */
AMIO_API int amio_frame_reader_next(struct amio_frame_reader *fr, struct iovec *frame);

/*
 * Bytes fr still needs before amio_frame_reader_next() can hand out a frame:
 * 4 - buffered while the header is incomplete (4 when fr is empty), then
 * what the announced payload still lacks; 0 when a complete frame is
 * buffered. A caller that feeds completion buffers can feed exactly this
 * many bytes, so that the frames after it can be parsed in place with
 * amio_frame_parse() instead of being copied into fr.
 * Returns: bytes (0: next() returns a frame), or
 *   -EMSGSIZE  the buffered header announces more than max_frame (sticky,
 *              as for next()).
 * Thread: one thread at a time.
 */
AMIO_API ssize_t amio_frame_reader_missing(struct amio_frame_reader *fr);

/*
 * Bytes buffered in fr and not yet handed out (headers included). After the
 * caller's own end of stream, non-zero means the last frame was truncated.
 * Thread: one thread at a time.
 */
AMIO_API size_t amio_frame_reader_buffered(const struct amio_frame_reader *fr);

/*
 * Bytes allocated for fr's buffer: 0 before first use, never above
 * max_frame + 4.
 * Thread: one thread at a time.
 */
AMIO_API size_t amio_frame_reader_capacity(const struct amio_frame_reader *fr);

/*
 * Says whether the last amio_frame_reader_read() on fr stopped at EAGAIN.
 * That is, read(2) said EAGAIN, whether the call returned bytes or -EAGAIN.
 * An edge-triggered caller
 * that sees 1 has consumed the readiness notification: once the frames are
 * handed out it waits for the next one instead of reading again, saving one
 * read(2) per wakeup. 0 after a read that stopped at a full buffer, EOF or an
 * error, and before the first read.
 * Returns: 1 or 0.
 * Thread: one thread at a time.
 */
AMIO_API int amio_frame_reader_drained(const struct amio_frame_reader *fr);

/* ------------------------------------------------------------------------
 * Frames in caller memory (completion I/O: no reader, no writer, no copy)
 * ------------------------------------------------------------------------ */

/* Bytes of a frame header: the 4-byte big-endian payload length. */
#define AMIO_FRAME_HEADER_BYTES 4u

/*
 * Finds the frame that starts buf, in place: for bytes a completion (an
 * AMIO_RECV buffer) put in memory the caller owns, so a frame lying wholly
 * in them needs no copy. Reads at most len bytes of buf.
 * Returns: the bytes the frame takes, header included (4 + payload), and
 * sets frame to its payload inside buf (iov_len may be 0); 0 when buf does
 * not hold a whole frame yet (need more bytes: not an error; frame is left
 * alone); or
 *   -EMSGSIZE  the header announces more than max_frame bytes.
 * Ownership: buf is borrowed; frame->iov_base points into it.
 * Thread: any thread (no state).
 */
AMIO_API ssize_t amio_frame_parse(const void *buf, size_t len, size_t max_frame,
                                  struct iovec *frame);

/*
 * Writes the header of a frame of payload_len bytes into hdr, to send it
 * with the payload as two pieces (an amio_sendv() iovec pair) instead of
 * copying the payload behind it.
 * Returns: AMIO_FRAME_HEADER_BYTES (4), or
 *   -EMSGSIZE  payload_len exceeds UINT32_MAX (hdr is left alone).
 * Ownership: hdr is borrowed, AMIO_FRAME_HEADER_BYTES bytes.
 * Thread: any thread (no state).
 */
AMIO_API ssize_t amio_frame_header_encode(void *hdr, size_t payload_len);

/* ------------------------------------------------------------------------
 * Frame writer
 * ------------------------------------------------------------------------ */

/*
 * Prepares fw to queue at most max_queued bytes (headers included) that the
 * fd did not take at once. A frame can be written only if its payload + 4
 * fits in max_queued. Allocates nothing until a write is short, and then
 * only for the unsent bytes.
 * Returns: 0, or -EINVAL if max_queued < 4 (not even a header would fit).
 * Ownership: fw is caller storage, retained until amio_frame_writer_destroy().
 * Thread: one thread at a time.
 */
AMIO_API int amio_frame_writer_init(struct amio_frame_writer *fw, size_t max_queued);

/*
 * Frees fw and drops whatever is still queued. Safe after any error.
 * Thread: one thread at a time.
 */
AMIO_API void amio_frame_writer_destroy(struct amio_frame_writer *fw);

/*
 * Sends one frame on the non-blocking fd: header, earlier queued bytes and
 * payload go out together in one sendmsg(MSG_NOSIGNAL) (writev(2) on a
 * non-socket such as a pipe), so frames stay in order. The payload is not
 * copied unless the fd leaves part of it unsent; only that remainder is
 * queued. If the frame would not fit in the queue, the queue is flushed first.
 * On a socket a closed peer gives -EPIPE, not SIGPIPE; on a pipe the caller
 * must ignore SIGPIPE itself. EINTR is retried.
 * Returns: bytes still queued (0 = everything sent; otherwise wait for write
 * readiness and call amio_frame_writer_flush()), or, with nothing of this
 * frame queued or sent:
 *   -ENOBUFS   queued bytes + len + 4 would exceed max_queued even after
 *              flushing: wait for write readiness, flush, retry (backpressure);
 *   -EMSGSIZE  len exceeds UINT32_MAX;
 *   -ENOMEM    the fd took none of the frame and the queue could not grow to
 *              hold it. The stream is intact and fw as usable as before:
 *              retry (once the fd is writable it may take the frame without
 *              a queue) or drop the frame;
 *   -errno     from sendmsg(2)/writev(2), e.g. -EPIPE, -ECONNRESET. The
 *              connection is unusable; fw stays safe to destroy;
 * or, with part of this frame already sent:
 *   -ENOMEM    the queue could not grow to hold the unsent rest: the stream
 *              is broken, every later call returns -ENOMEM; close the fd.
 * Only this second -ENOMEM is sticky: amio_frame_writer_flush(), which
 * allocates nothing, returns -ENOMEM without sending only after it.
 * Ownership: msg is borrowed (may be NULL when len is 0); unsent bytes are
 * copied, so msg may be reused as soon as the call returns.
 * Thread: one thread at a time.
 */
AMIO_API ssize_t amio_frame_writer_write(struct amio_frame_writer *fw, int fd, const void *msg,
                                         size_t len);

/*
 * Sends len bytes on the non-blocking fd as they are, with no header.
 * This is the frame writer's queue for line and byte protocols. Queued bytes (frames or
 * raw) go out first, in the same sendmsg(MSG_NOSIGNAL) (writev(2) on a
 * non-socket), so everything written through fw stays in order; the bytes
 * are copied only if the fd leaves part of them unsent. len 0 sends nothing.
 * EINTR is retried.
 * Returns: bytes still queued (0 = everything sent; otherwise wait for write
 * readiness and call amio_frame_writer_flush()), or, with nothing of these
 * bytes queued or sent:
 *   -ENOBUFS   queued bytes + len would exceed max_queued even after
 *              flushing: wait for write readiness, flush, retry (backpressure);
 *   -ENOMEM    the fd took none of them and the queue could not grow to hold
 *              them: the stream is intact and fw as usable as before (retry
 *              or drop them, as for amio_frame_writer_write());
 *   -errno     from sendmsg(2)/writev(2), e.g. -EPIPE, -ECONNRESET. The
 *              connection is unusable; fw stays safe to destroy;
 * or, with part of these bytes already sent:
 *   -ENOMEM    the queue could not grow to hold the unsent rest: the stream
 *              is broken, every later call returns -ENOMEM (sticky); close
 *              the fd.
 * Ownership: buf is borrowed (may be NULL when len is 0); unsent bytes are
 * copied, so buf may be reused as soon as the call returns. fd is borrowed.
 * Thread: one thread at a time.
 */
AMIO_API ssize_t amio_frame_writer_write_raw(struct amio_frame_writer *fw, int fd, const void *buf,
                                             size_t len);

/*
 * Sends the bytes of iov[0..iovcnt) on the non-blocking fd as they are.
 * Like amio_frame_writer_write_raw() with the pieces joined, without joining
 * them: a RESP reply's "$<n>\r\n", value and "\r\n" go out in one call. Up to
 * 32 pieces go out in each sendmsg(2) with the queue; longer vectors continue
 * in further calls while the fd takes everything. Zero-length pieces are
 * skipped; a vector of 0 bytes sends nothing.
 * Returns: bytes still queued (0 = everything sent; otherwise wait for write
 * readiness and call amio_frame_writer_flush()), or, with nothing of these
 * bytes queued or sent:
 *   -EINVAL    iovcnt < 0, or the lengths add up to more than SSIZE_MAX;
 *   -ENOBUFS   queued bytes + the sum of the lengths would exceed max_queued
 *              even after flushing: wait for write readiness, flush, retry;
 *   -ENOMEM    the fd took none of them and the queue could not grow to hold
 *              them: the stream is intact and fw as usable as before (retry
 *              or drop them, as for amio_frame_writer_write());
 *   -errno     from sendmsg(2)/writev(2), e.g. -EPIPE, -ECONNRESET (with more
 *              than 32 pieces the first ones may already have been sent): the
 *              connection is unusable; fw stays safe to destroy;
 * or, with part of these bytes already sent (with more than 32 pieces,
 * perhaps only the first ones):
 *   -ENOMEM    the queue could not grow to hold the unsent rest: the stream
 *              is broken, every later call returns -ENOMEM (sticky); close
 *              the fd.
 * Ownership: iov and the memory it points to are borrowed (iov may be NULL
 * when iovcnt is 0); unsent bytes are copied. fd is borrowed.
 * Thread: one thread at a time.
 */
AMIO_API ssize_t amio_frame_writer_writev_raw(struct amio_frame_writer *fw, int fd,
                                              const struct iovec *iov, int iovcnt);

/*
 * Sends queued bytes until the queue is empty or the fd returns EAGAIN.
 * Returns: bytes still queued (0 = all sent, including when nothing was
 * queued), or -errno from sendmsg(2)/writev(2) such as -EPIPE or -ECONNRESET
 * (what was sent before stays sent; fw stays safe to destroy), or -ENOMEM
 * if an earlier write broke the stream.
 * Ownership: fd is borrowed.
 * Thread: one thread at a time.
 */
AMIO_API ssize_t amio_frame_writer_flush(struct amio_frame_writer *fw, int fd);

/*
 * Bytes queued in fw and not yet sent (headers included).
 * Thread: one thread at a time.
 */
AMIO_API size_t amio_frame_writer_queued(const struct amio_frame_writer *fw);

/* ------------------------------------------------------------------------
 * Line reader: the frame reader's shape for '\n'-terminated lines
 * ------------------------------------------------------------------------ */

/*
 * Prepares lr to read lines of at most max_line bytes, '\n' included. The
 * buffer starts at 4 KiB (or max_line if smaller) on first use and doubles
 * while a line is longer, never beyond max_line. Only a take() may make it
 * larger (see amio_line_reader_set_max_take(), which also lets the first
 * block be up to 4 KiB when max_line is smaller).
 * Returns: 0, or -EINVAL if max_line is 0 or above SSIZE_MAX (a line's
 * length must fit the ssize_t the reader returns).
 * Ownership: lr is caller storage, retained until amio_line_reader_destroy().
 * Thread: one thread at a time.
 */
AMIO_API int amio_line_reader_init(struct amio_line_reader *lr, size_t max_line);

/*
 * Sets the largest n amio_line_reader_take() accepts, in bytes.
 * It is max_line until set. The buffer may grow to the larger of max_line and
 * max_take, but only while a take needs it, and past the larger of max_line
 * and 4 KiB only to that take's n: once its bytes are handed out, the next
 * read or feed gives back the memory above max_line (or above 4 KiB if
 * max_line is smaller; see amio_line_reader_capacity() for when it cannot);
 * amio_line_reader_shrink() gives back the rest.
 * Returns: 0, or
 *   -EINVAL    max_take exceeds SSIZE_MAX;
 *   -EBUSY     bytes are buffered or a take is pending: set it right after
 *              init, or when amio_line_reader_buffered() is 0.
 * Thread: one thread at a time.
 */
AMIO_API int amio_line_reader_set_max_take(struct amio_line_reader *lr, size_t max_take);

/*
 * Frees lr's buffer. Line views handed out by lr become invalid.
 * Thread: one thread at a time.
 */
AMIO_API void amio_line_reader_destroy(struct amio_line_reader *lr);

/*
 * Reads the non-blocking fd like amio_frame_reader_read(): until EAGAIN, EOF
 * or a full buffer holding a complete line or the bytes a pending
 * amio_line_reader_take() waits for (call amio_line_reader_next() or take()
 * until 0, then read again); at most the larger of max_line and max_take
 * bytes per call; EINTR retried. amio_line_reader_drained() then says
 * whether read(2) said EAGAIN. First gives back the memory a handed-out take
 * needed above max_line (see amio_line_reader_set_max_take()).
 * Returns: bytes read (> 0); 0 at end of file once every byte was handed out;
 * or
 *   -EAGAIN    nothing to read now (the fd is drained);
 *   -ENOBUFS   nothing read: the buffer is full of lines not yet handed out,
 *              or EOF was reached and bytes are still waiting;
 *   -EMSGSIZE  the stream is broken: a line is longer than max_line;
 *   -ENOMEM    the buffer could not grow;
 *   -errno     from read(2), e.g. -ECONNRESET, -EBADF.
 * Invalidates every view handed out by amio_line_reader_next() and take().
 * Ownership: fd is borrowed.
 * Thread: one thread at a time.
 */
AMIO_API ssize_t amio_line_reader_read(struct amio_line_reader *lr, int fd);

/*
 * Copies bytes obtained elsewhere into lr, as many as fit within max_line, or
 * within the size of a pending amio_line_reader_take() (see
 * amio_frame_reader_feed(): same partial-take rule). Like read(), first gives
 * back the memory a handed-out take needed above max_line.
 * Returns: bytes taken (0..len), or -EMSGSIZE (stream broken: a line is
 * longer than max_line), or -ENOMEM (could not grow, nothing taken).
 * Invalidates every view handed out by amio_line_reader_next() and take().
 * Ownership: buf is borrowed (may be NULL when len is 0); the bytes are copied.
 * Thread: one thread at a time.
 */
AMIO_API ssize_t amio_line_reader_feed(struct amio_line_reader *lr, const void *buf, size_t len);

/*
 * Hands out the next complete line, '\n' included, without copying it. Bytes
 * already searched for '\n' are not searched again. After read() reached end
 * of file, an unterminated last line is handed out as is (it does not end in
 * '\n').
 * Calling it abandons a pending amio_line_reader_take().
 * Returns: 1 and sets line; 0 when no complete line is buffered yet; or
 *   -EMSGSIZE  max_line bytes arrived without a '\n': the stream is broken,
 *              every later call returns -EMSGSIZE; close the connection.
 * Ownership: line->iov_base points into lr's buffer, borrowed until the next
 * read, feed, shrink or destroy on lr (next() and take() leave earlier views
 * valid, so a parser may hold every piece of one request).
 * Thread: one thread at a time.
 */
AMIO_API int amio_line_reader_next(struct amio_line_reader *lr, struct iovec *line);

/*
 * Hands out the next n bytes as they are, '\n' or not, without copying them.
 * For a length the protocol announced on the line before: a RESP bulk string
 * "$<n>\r\n" is followed by n + 2 bytes, an HTTP body by Content-Length.
 * When fewer than n bytes are buffered, the take stays pending: read() and
 * feed() then buffer up to n bytes without searching them for '\n', growing
 * the buffer if need be (past the larger of max_line and 4 KiB to exactly n,
 * so never past max_take); call take() with the same n again after each
 * read. A RESP server:
 *
 *	// after next() gave "$<len>\r\n":
 *	while ((r = amio_line_reader_take(&lr, len + 2, &v)) == 0)
 *		... read more, or return and resume here at the next AMIO_READ
 *
 * Returns: 1 and sets out to the n bytes (iov_len = n; n may be 0); 0 when
 * fewer than n bytes are buffered (need more bytes: not an error); or
 *   -EMSGSIZE  n exceeds max_take (amio_line_reader_set_max_take(); max_line
 *              by default): nothing changes, the stream is not marked broken;
 *              or, sticky, a line was already longer than max_line;
 *   -EPROTO    read() reached end of file before n bytes arrived (the peer's
 *              stream was truncated); returned on every later call with n.
 * Ownership: out->iov_base points into lr's buffer, borrowed until the next
 * read, feed, shrink or destroy on lr, as for next().
 * Thread: one thread at a time.
 */
AMIO_API int amio_line_reader_take(struct amio_line_reader *lr, size_t n, struct iovec *out);

/*
 * Gives back the buffer memory that the buffered bytes do not need.
 * Frees it all when nothing is buffered, otherwise moves them into a block of
 * the initial size (4 KiB, or the buffer limit if smaller) or of their own
 * size if larger. For a
 * connection going idle: read() and feed() already give back what a take
 * needed above max_line, but an idle connection calls neither. A pending
 * take grows the buffer again as its bytes arrive. If memory is short, keeps
 * the larger block (nothing is lost).
 * Returns: bytes allocated afterwards (amio_line_reader_capacity()).
 * Invalidates every view handed out by amio_line_reader_next() and take().
 * Thread: one thread at a time.
 */
AMIO_API size_t amio_line_reader_shrink(struct amio_line_reader *lr);

/*
 * Bytes buffered in lr and not yet handed out.
 * Thread: one thread at a time.
 */
AMIO_API size_t amio_line_reader_buffered(const struct amio_line_reader *lr);

/*
 * Bytes allocated for lr's buffer: 0 before first use, never above the larger
 * of max_line and max_take. Above the larger of max_line and 4 KiB (call it
 * L) only for a take() of more than L: at most its n while it is pending,
 * until the next read or feed after it was handed out. Two cases keep the
 * larger block, as nothing buffered is dropped: a take abandoned (by next()
 * or a smaller take()) with more than L of its bytes buffered, until a read
 * or feed finds what is buffered fits in L; and a malloc failing as the
 * memory is given back.
 * Thread: one thread at a time.
 */
AMIO_API size_t amio_line_reader_capacity(const struct amio_line_reader *lr);

/*
 * Says whether the last amio_line_reader_read() on lr stopped at EAGAIN.
 * See amio_frame_reader_drained(): once the lines are handed out, wait for
 * the next AMIO_READ instead of reading again.
 * Returns: 1 or 0.
 * Thread: one thread at a time.
 */
AMIO_API int amio_line_reader_drained(const struct amio_line_reader *lr);

#ifdef __cplusplus
}
#endif

#endif /* AMIO_FRAME_H */
