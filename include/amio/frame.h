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
 * core): a readiness notification is consumed only once read() returns
 * -EAGAIN. read() stops early when the buffer is full, so loop:
 *
 *	for (;;) {
 *		ssize_t n = amio_frame_reader_read(&fr, fd);
 *		struct iovec f;
 *		int r;
 *		while ((r = amio_frame_reader_next(&fr, &f)) == 1)
 *			handle(f.iov_base, f.iov_len);
 *		if (r < 0)
 *			break;          // -EMSGSIZE or -EPROTO: close
 *		if (n == -EAGAIN)
 *			break;          // drained: wait for the next AMIO_READ
 *		if (n <= 0)
 *			break;          // 0 = EOF, every frame handed out; else -errno
 *	}
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
	struct amio__bytebuf buf;
	size_t max_line; /* longest accepted line, '\n' included */
	size_t scanned;  /* bytes after buf.start known to hold no '\n' (or: where it is) */
	int err;         /* sticky stream error (-EMSGSIZE), 0 if none */
};

/* ------------------------------------------------------------------------
 * Frame reader
 * ------------------------------------------------------------------------ */

/*
 * Prepares fr to read frames whose payload is at most max_frame bytes.
 * Allocates nothing: the buffer starts at 4 KiB (or max_frame + 4 if smaller)
 * on first use and grows only as far as the frame being parsed needs, never
 * beyond max_frame + 4. A max_frame above UINT32_MAX is treated as UINT32_MAX
 * (the header cannot announce more).
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
 *   -errno     from sendmsg(2)/writev(2), e.g. -EPIPE, -ECONNRESET. The
 *              connection is unusable; fw stays safe to destroy;
 * or, with part of this frame already sent:
 *   -ENOMEM    the queue could not grow to hold the unsent rest: the stream
 *              is broken, every later call returns -ENOMEM; close the fd.
 * Ownership: msg is borrowed (may be NULL when len is 0); unsent bytes are
 * copied, so msg may be reused as soon as the call returns.
 * Thread: one thread at a time.
 */
AMIO_API ssize_t amio_frame_writer_write(struct amio_frame_writer *fw, int fd, const void *msg,
                                         size_t len);

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
 * while a line is longer, never beyond max_line.
 * Returns: 0, or -EINVAL if max_line is 0.
 * Ownership: lr is caller storage, retained until amio_line_reader_destroy().
 * Thread: one thread at a time.
 */
AMIO_API int amio_line_reader_init(struct amio_line_reader *lr, size_t max_line);

/*
 * Frees lr's buffer. Line views handed out by lr become invalid.
 * Thread: one thread at a time.
 */
AMIO_API void amio_line_reader_destroy(struct amio_line_reader *lr);

/*
 * Reads the non-blocking fd like amio_frame_reader_read(): until EAGAIN, EOF
 * or a full buffer holding a complete line (call amio_line_reader_next() until
 * 0, then read again); at most max_line bytes per call; EINTR retried.
 * Returns: bytes read (> 0); 0 at end of file once every byte was handed out;
 * or
 *   -EAGAIN    nothing to read now (the fd is drained);
 *   -ENOBUFS   nothing read: the buffer is full of lines not yet handed out,
 *              or EOF was reached and bytes are still waiting;
 *   -EMSGSIZE  the stream is broken: a line is longer than max_line;
 *   -ENOMEM    the buffer could not grow;
 *   -errno     from read(2), e.g. -ECONNRESET, -EBADF.
 * Invalidates the view returned by the previous amio_line_reader_next().
 * Ownership: fd is borrowed.
 * Thread: one thread at a time.
 */
AMIO_API ssize_t amio_line_reader_read(struct amio_line_reader *lr, int fd);

/*
 * Copies bytes obtained elsewhere into lr, as many as fit within max_line
 * (see amio_frame_reader_feed(): same partial-take rule).
 * Returns: bytes taken (0..len), or -EMSGSIZE (stream broken: a line is
 * longer than max_line), or -ENOMEM (could not grow, nothing taken).
 * Invalidates the view returned by the previous amio_line_reader_next().
 * Ownership: buf is borrowed (may be NULL when len is 0); the bytes are copied.
 * Thread: one thread at a time.
 */
AMIO_API ssize_t amio_line_reader_feed(struct amio_line_reader *lr, const void *buf, size_t len);

/*
 * Hands out the next complete line, '\n' included, without copying it. Bytes
 * already searched for '\n' are not searched again. After read() reached end
 * of file, an unterminated last line is handed out as is (it does not end in
 * '\n').
 * Returns: 1 and sets line; 0 when no complete line is buffered yet; or
 *   -EMSGSIZE  max_line bytes arrived without a '\n': the stream is broken,
 *              every later call returns -EMSGSIZE; close the connection.
 * Ownership: line->iov_base points into lr's buffer, borrowed until the next
 * read, feed or destroy on lr.
 * Thread: one thread at a time.
 */
AMIO_API int amio_line_reader_next(struct amio_line_reader *lr, struct iovec *line);

/*
 * Bytes buffered in lr and not yet handed out.
 * Thread: one thread at a time.
 */
AMIO_API size_t amio_line_reader_buffered(const struct amio_line_reader *lr);

/*
 * Bytes allocated for lr's buffer: 0 before first use, never above max_line.
 * Thread: one thread at a time.
 */
AMIO_API size_t amio_line_reader_capacity(const struct amio_line_reader *lr);

#ifdef __cplusplus
}
#endif

#endif /* AMIO_FRAME_H */
