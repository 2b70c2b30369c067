/* Kernel ABI that liburing 2.3's headers and library do not have yet. */
#ifndef AMIO_COMPAT_H
#define AMIO_COMPAT_H

#include <liburing.h>

/* Linux 6.13: IORING_OP_MSG_RING without a source ring (io_uring_register(-1, ...)). */
#ifndef IORING_REGISTER_SEND_MSG_RING
#define IORING_REGISTER_SEND_MSG_RING 31
#endif

/* Linux 6.4: a timeout that fires repeatedly (sqe->timeout_flags). */
#ifndef IORING_TIMEOUT_MULTISHOT
#define IORING_TIMEOUT_MULTISHOT (1U << 6)
#endif

/* liburing 2.3 declares io_uring_enable_rings() but its shared library does
 * not export it (missing from the version map): call the register opcode. */
static inline int amio__enable_rings(struct io_uring *ring)
{
	return io_uring_register(ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
}

#endif /* AMIO_COMPAT_H */
