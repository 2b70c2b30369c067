/*
 * srv_uring_poll: raw liburing readiness. One thread; a multishot POLL_ADD
 * (POLLIN) per socket, recv/send as plain syscalls, a one-shot POLLOUT only
 * while a partial write waits. user_data = fd | generation << 32 | kind, so a
 * late CQE for a closed (and reused) fd is recognised and dropped.
 */
#define _GNU_SOURCE
#include "srv_common.h"
#include <liburing.h>
#include <poll.h>

#define MAX_FD   65536
#define KIND_OUT (1ull << 63)

struct conn {
	struct srv_echo e;
	uint32_t gen;
	int live;
};

static struct conn *conns[MAX_FD];
static struct io_uring ring;

static struct io_uring_sqe *get_sqe(void)
{
	struct io_uring_sqe *sqe;

	while (!(sqe = io_uring_get_sqe(&ring)))
		io_uring_submit(&ring);
	return sqe;
}

static uint64_t tag(int fd)
{
	return (uint64_t)(uint32_t)fd | (uint64_t)(conns[fd]->gen & 0x7fffffff) << 32;
}

static void arm_in(int fd)
{
	struct io_uring_sqe *sqe = get_sqe();

	io_uring_prep_poll_multishot(sqe, fd, POLLIN);
	io_uring_sqe_set_data64(sqe, tag(fd));
}

static void arm_out(int fd)
{
	struct io_uring_sqe *sqe = get_sqe();

	io_uring_prep_poll_add(sqe, fd, POLLOUT);
	io_uring_sqe_set_data64(sqe, tag(fd) | KIND_OUT);
}

static void conn_close(int fd)
{
	struct conn *c = conns[fd];
	/* Remove the polls first: they hold the file, close() alone sends no FIN. */
	struct io_uring_sqe *sqe = get_sqe();

	io_uring_prep_poll_remove(sqe, tag(fd));
	io_uring_sqe_set_data64(sqe, UINT64_MAX);
	sqe = get_sqe();
	io_uring_prep_poll_remove(sqe, tag(fd) | KIND_OUT);
	io_uring_sqe_set_data64(sqe, UINT64_MAX);
	io_uring_submit(&ring);
	close(fd);
	c->live = 0;
	c->gen++;
}

static void accept_all(int lfd)
{
	int fd;

	while ((fd = srv_accept(lfd)) >= 0) {
		if (fd >= MAX_FD || (!conns[fd] && !(conns[fd] = calloc(1, sizeof(struct conn))))) {
			close(fd);
			continue;
		}
		conns[fd]->e.fd = fd;
		conns[fd]->e.off = conns[fd]->e.len = 0;
		conns[fd]->live = 1;
		arm_in(fd);
	}
}

static void on_cqe(int lfd, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	int fd = (int)(uint32_t)ud, rc;
	struct conn *c;

	if (ud == UINT64_MAX)
		return; /* a poll_remove result */
	if (fd == lfd) {
		if (!(cqe->flags & IORING_CQE_F_MORE))
			arm_in(lfd);
		accept_all(lfd);
		return;
	}
	c = fd < MAX_FD ? conns[fd] : NULL;
	if (!c || !c->live || (uint32_t)(ud >> 32 & 0x7fffffff) != (c->gen & 0x7fffffff))
		return; /* stale */
	if (cqe->res < 0 && cqe->res != -ECANCELED) {
		conn_close(fd);
		return;
	}
	if (!(ud & KIND_OUT) && !(cqe->flags & IORING_CQE_F_MORE))
		arm_in(fd);
	rc = srv_echo_step(&c->e);
	if (rc < 0)
		conn_close(fd);
	else if (rc == 1)
		arm_out(fd); /* partial write: resume on POLLOUT */
}

int main(int argc, char **argv)
{
	uint16_t port = srv_init(argc, argv);
	int lfd = srv_listen("srv_uring_poll", port), rc;
	struct io_uring_params prm;

	memset(&prm, 0, sizeof(prm));
	prm.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	prm.cq_entries = 8192;
	prm.flags |= IORING_SETUP_CQSIZE;
	rc = io_uring_queue_init_params(1024, &ring, &prm);
	if (rc < 0) {
		memset(&prm, 0, sizeof(prm));
		rc = io_uring_queue_init_params(1024, &ring, &prm);
	}
	if (rc < 0)
		srv_die("srv_uring_poll", "io_uring_queue_init", rc);
	if (lfd >= MAX_FD)
		srv_die("srv_uring_poll", "listen fd", EMFILE);
	conns[lfd] = calloc(1, sizeof(struct conn));
	arm_in(lfd);
	while (!atomic_load(&srv_stop)) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;

		rc = io_uring_submit_and_wait(&ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
			srv_die("srv_uring_poll", "io_uring_submit_and_wait", rc);
		io_uring_for_each_cqe(&ring, head, cqe)
		{
			on_cqe(lfd, cqe);
			n++;
		}
		io_uring_cq_advance(&ring, n);
	}
	io_uring_queue_exit(&ring);
	close(lfd);
	return 0;
}
