/*
 * Operations, the calling thread's side: what amio_accept, amio_recv,
 * amio_send(v), amio_cancel and amio_set_deadline check and queue. The poll
 * thread carries them out (io_poll.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

static int64_t start(amio_registrar *r, int fd, void *data, const struct amio__io *io)
{
	struct amio__cmd c = {.op = AMIO__OP_START, .fd = fd, .data = data};

	if (!r)
		return -EINVAL;
	return amio__registrar_add_io(r, &c, io);
}

int64_t amio_accept(amio_registrar *r, int fd, void *data)
{
	struct amio__io io = {.type = AMIO__IO_ACCEPT};
	int accepting = 0, fl;
	socklen_t len = sizeof(accepting);

	if (fd < 0)
		return -EBADF;
	if ((fl = fcntl(fd, F_GETFL)) < 0)
		return -errno;
	/* The epoll backend calls accept4 on it: a blocking one would stop
	 * the poll thread when another thread took the connection first. */
	if (!(fl & O_NONBLOCK))
		return -EINVAL;
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) < 0)
		return errno == ENOTSOCK ? -EINVAL : -errno;
	if (!accepting)
		return -EINVAL;
	return start(r, fd, data, &io);
}

int64_t amio_recv(amio_registrar *r, int fd, amio_pool *pool, void *data)
{
	struct amio__io io = {.type = AMIO__IO_RECV, .pool = pool};
	int64_t id;

	if (fd < 0)
		return -EBADF;
	if (!r || !pool || pool->r != r || ck_pr_load_32(&pool->freed))
		return -EINVAL;
	io.idle_ms = r->conn.idle_ms;
	io.high_water = r->conn.high_water;
	io.low_water = r->conn.low_water;
	/* Counted before the command: amio_pool_free must see it. */
	ck_pr_inc_32(&pool->running);
	id = start(r, fd, data, &io);
	if (id < 0)
		ck_pr_dec_32(&pool->running);
	return id;
}

static int64_t send_io(amio_registrar *r, int fd, struct amio__io *io, uint32_t flags, void *data)
{
	if (fd < 0)
		return -EBADF;
	if (flags & ~(uint32_t)AMIO_SEND_ZC)
		return -EINVAL;
	if (!r)
		return -EINVAL;
	io->type = AMIO__IO_SEND;
	io->flags = flags;
	io->buf0 = io->iov[0].iov_base;
	io->send_timeout_ms = r->conn.send_timeout_ms;
	return start(r, fd, data, io);
}

int64_t amio_send(amio_registrar *r, int fd, const void *buf, size_t len, uint32_t flags,
                  void *data)
{
	struct amio__io io = {.niov = 1, .total = len};

	if (!buf || len == 0 || len > INT32_MAX)
		return fd < 0 ? -EBADF : -EINVAL;
	io.iov[0] = (struct iovec){(void *)buf, len};
	return send_io(r, fd, &io, flags, data);
}

int64_t amio_sendv(amio_registrar *r, int fd, const struct iovec *iov, unsigned iovcnt,
                   uint32_t flags, void *data)
{
	struct amio__io io = {.niov = iovcnt};

	if (fd < 0)
		return -EBADF;
	if (!iov || iovcnt == 0 || iovcnt > AMIO_SENDV_MAX)
		return -EINVAL;
	for (unsigned i = 0; i < iovcnt; i++) {
		if (iov[i].iov_len && !iov[i].iov_base)
			return -EINVAL;
		if (iov[i].iov_len > INT32_MAX - io.total)
			return -EINVAL;
		io.total += iov[i].iov_len;
		io.iov[i] = iov[i];
	}
	if (io.total == 0)
		return -EINVAL;
	return send_io(r, fd, &io, flags, data);
}

int64_t amio_shutdown(amio_registrar *r, int fd, void *data)
{
	struct amio__io io = {.type = AMIO__IO_SHUTDOWN};

	if (fd < 0)
		return -EBADF;
	return start(r, fd, data, &io);
}

int64_t amio_close(amio_registrar *r, int fd, uint32_t flags, void *data)
{
	struct amio__io io = {.type = AMIO__IO_CLOSE, .flags = flags};

	if (fd < 0)
		return -EBADF;
	if (flags & ~(uint32_t)AMIO_CLOSE_GRACEFUL)
		return -EINVAL;
	return start(r, fd, data, &io);
}

int64_t amio_connect(amio_registrar *r, int fd, const struct sockaddr *addr, socklen_t addrlen,
                     void *data)
{
	struct amio__io io = {.type = AMIO__IO_CONNECT, .addrlen = addrlen};
	int type = 0, fl;
	socklen_t len = sizeof(type);

	if (fd < 0)
		return -EBADF;
	if (!r || !addr || addrlen == 0 || addrlen > sizeof(io.addr))
		return -EINVAL;
	if ((fl = fcntl(fd, F_GETFL)) < 0)
		return -errno;
	/* The epoll backend calls connect(2) on the poll thread. */
	if (!(fl & O_NONBLOCK))
		return -EINVAL;
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return -errno;
	memcpy(&io.addr, addr, addrlen);
	return start(r, fd, data, &io);
}

/* pread(2)'s files only, so that both backends answer alike: io_uring
 * would read a pipe at its position where pread(2) says -ESPIPE. */
static int file_io(amio_registrar *r, int fd, struct amio__io *io, size_t len, uint64_t offset)
{
	struct stat st;

	if (fd < 0)
		return -EBADF;
	if (!r || !io->iov[0].iov_base || len == 0 || len > AMIO_FILE_MAX_LEN || offset > INT64_MAX)
		return -EINVAL;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))
		return -ESPIPE;
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return -EINVAL;
	io->niov = 1;
	io->buf0 = io->iov[0].iov_base;
	io->iov[0].iov_len = len;
	io->total = len;
	io->offset = offset;
	return 0;
}

int64_t amio_pread(amio_registrar *r, int fd, void *buf, size_t len, uint64_t offset, void *data)
{
	struct amio__io io = {.type = AMIO__IO_PREAD, .iov = {{buf, 0}}};
	int rc = file_io(r, fd, &io, len, offset);

	return rc < 0 ? rc : start(r, fd, data, &io);
}

int64_t amio_pwrite(amio_registrar *r, int fd, const void *buf, size_t len, uint64_t offset,
                    void *data)
{
	struct amio__io io = {.type = AMIO__IO_PWRITE, .iov = {{(void *)buf, 0}}};
	int rc = file_io(r, fd, &io, len, offset);

	return rc < 0 ? rc : start(r, fd, data, &io);
}

static int recv_hold(amio_registrar *r, uint64_t id, uint32_t op)
{
	struct amio__cmd c = {.op = op, .id = id};

	if (!r)
		return -EINVAL;
	return amio__registrar_push(r, &c, id);
}

int amio_recv_pause(amio_registrar *r, uint64_t id)
{
	return recv_hold(r, id, AMIO__OP_PAUSE);
}

int amio_recv_resume(amio_registrar *r, uint64_t id)
{
	return recv_hold(r, id, AMIO__OP_RESUME);
}

int amio_cancel(amio_registrar *r, uint64_t id)
{
	if (!r)
		return -EINVAL;
	return amio__registrar_close(r, id, AMIO__KIND_BIT(AMIO__KIND_IO));
}

int amio_set_deadline(amio_registrar *r, uint64_t id, uint64_t ms)
{
	struct amio__cmd c = {.op = AMIO__OP_DEADLINE, .id = id};

	if (!r || ms > AMIO_TIMER_MAX_MS)
		return -EINVAL;
	/* The caller's clock, so never early however late the poll thread
	 * applies it. */
	c.deadline_ns = amio__now_ns() + (int64_t)ms * 1000000;
	return amio__registrar_push(r, &c, id);
}
