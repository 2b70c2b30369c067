/* Names for the error codes amio returns, in amio's own words. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "amio.h"

/* The kernel's name and text ("-ECONNREFUSED: Connection refused"), in the
 * calling thread's buffer: strerrorname_np (glibc 2.32) gives the name. */
static const char *other(int e)
{
	static __thread char buf[128];
	const char *name = strerrorname_np(e);

	if (!name)
		return strerror(e);
	snprintf(buf, sizeof(buf), "-%s: %s", name, strerror(e));
	return buf;
}

const char *amio_strerror(int err)
{
	switch (err) {
	case 0:
		return "0: no error code (with AMIO_ERROR from a socket, POLLERR: "
		       "getsockopt(SO_ERROR) or the next read/write gives the errno)";
	case -ETIMEDOUT:
		return "-ETIMEDOUT: the wait for room ended with none; or a connect whose SYNs the "
		       "kernel stopped retrying";
	case -EAGAIN:
		return "-EAGAIN: queue full or nothing ready; let the other side run, then retry";
	case -EBADF:
		return "-EBADF: not an open file descriptor";
	case -EINVAL:
		return "-EINVAL: invalid argument (events, flags, size or timeout)";
	case -ENOENT:
		return "-ENOENT: unknown, finished or deregistered id";
	case -ENOSPC:
		return "-ENOSPC: max_registrations ids are live (or 65,536 pools)";
	case -ENOMEM:
		return "-ENOMEM: out of memory";
	case -ESHUTDOWN:
		return "-ESHUTDOWN: the poller was freed";
	case -EEXIST:
		return "-EEXIST: the poller is used from a second thread (SINGLE_ISSUER ring)";
	case -EBUSY:
		return "-EBUSY: the kernel took no SQE (submission queue full after a retry); or a "
		       "pool still in use (a recv runs or a buffer is lent)";
	case -ENOSYS:
		return "-ENOSYS: io_uring is not available: an old kernel, or a seccomp profile "
		       "(Podman's default) that answers ENOSYS; amio falls back to epoll unless "
		       "the io_uring backend was required";
	case -EPERM:
		return "-EPERM: not permitted: io_uring blocked by a seccomp profile (Docker >= "
		       "25's "
		       "default) or the sysctl kernel.io_uring_disabled (amio falls back to epoll "
		       "unless the io_uring backend was required); or an fd the kernel cannot poll "
		       "(a regular file or directory)";
	case -EPIPE:
		return "-EPIPE: the other end is closed";
	case -ENOTSOCK:
		return "-ENOTSOCK: a socket call on an fd that is no socket";
	case -ENOTCONN:
		return "-ENOTCONN: a recv on a socket that is not connected";
	case -ECANCELED:
		return "-ECANCELED: the operation was cancelled (amio_cancel, amio_close of its "
		       "fd, "
		       "or its registrar freed)";
	case -ETIME:
		return "-ETIME: the operation's deadline passed (amio_set_deadline), or its idle "
		       "or "
		       "send timeout (amio_registrar_set_conn)";
	case -EMSGSIZE:
		return "-EMSGSIZE: frame or line longer than the configured maximum";
	case -EPROTO:
		return "-EPROTO: the stream ended in the middle of a frame";
	case -ENOBUFS:
		return "-ENOBUFS: no buffer space: the kernel's (an accept reports it and listens "
		       "on "
		       "after a back-off), or the frame writer's queue limit (wait for AMIO_WRITE "
		       "and flush)";
	default:
		return err < 0 ? other(-err) : "not an error code";
	}
}
