/*
 * srv_uring_completion: raw liburing in completion mode. One thread, a ring
 * with SINGLE_ISSUER | DEFER_TASKRUN, multishot accept, multishot recv into a
 * provided buffer ring (16 KiB buffers), and io_uring sends of the received
 * buffer itself. At most one send is in flight per connection (a short send
 * is resubmitted for the rest; buffers received meanwhile wait in a FIFO), so
 * bytes never reorder. A buffer goes back to the ring when fully sent.
 * user_data = fd | generation << 32 | kind << 62.
 */
#define _GNU_SOURCE
#include "srv_common.h"
#include <liburing.h>
#include <sys/mman.h>

#define MAX_FD   65536
#define N_BUFS   1024 /* a power of two */
#define BGID     1
#define K_ACCEPT 0ull
#define K_RECV   1ull
#define K_SEND   2ull
#define K_CANCEL 3ull
#define NO_BUF   0xffff

struct conn {
	uint32_t gen;
	int fd;
	int live, recv_armed, send_busy, closing, starved;
	uint16_t head, tail; /* FIFO of buffer ids to send */
};

static struct conn *conns[MAX_FD];
static struct io_uring ring;
static struct io_uring_buf_ring *br;
static char *bufs;
static uint16_t next_bid[N_BUFS];
static uint32_t buf_off[N_BUFS], buf_len[N_BUFS];
static int starved[MAX_FD], n_starved;

static struct io_uring_sqe *get_sqe(void)
{
	struct io_uring_sqe *sqe;

	while (!(sqe = io_uring_get_sqe(&ring)))
		io_uring_submit(&ring);
	return sqe;
}

static uint64_t tag(const struct conn *c, uint64_t kind)
{
	return (uint64_t)(uint32_t)c->fd | (uint64_t)(c->gen & 0x3fffffff) << 32 | kind << 62;
}

static void buf_return(uint16_t bid)
{
	io_uring_buf_ring_add(br, bufs + (size_t)bid * SRV_BUF, SRV_BUF, bid,
	                      io_uring_buf_ring_mask(N_BUFS), 0);
	io_uring_buf_ring_advance(br, 1);
}

static void arm_recv(struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe();

	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	io_uring_sqe_set_data64(sqe, tag(c, K_RECV));
	c->recv_armed = 1;
}

static void send_head(struct conn *c)
{
	uint16_t bid = c->head;
	struct io_uring_sqe *sqe = get_sqe();

	io_uring_prep_send(sqe, c->fd, bufs + (size_t)bid * SRV_BUF + buf_off[bid],
	                   buf_len[bid] - buf_off[bid], MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, tag(c, K_SEND));
	c->send_busy = 1;
}

/* Close once nothing is in flight; until then stop receiving. */
static void conn_finish(struct conn *c)
{
	c->closing = 1;
	if (c->recv_armed) {
		struct io_uring_sqe *sqe = get_sqe();

		io_uring_prep_cancel64(sqe, tag(c, K_RECV), 0);
		io_uring_sqe_set_data64(sqe, tag(c, K_CANCEL));
		return;
	}
	if (c->send_busy)
		return;
	while (c->head != NO_BUF) {
		uint16_t bid = c->head;

		c->head = next_bid[bid];
		buf_return(bid);
	}
	close(c->fd);
	c->live = 0;
	c->gen++;
}

static void rearm_starved(void)
{
	while (n_starved) {
		struct conn *c = conns[starved[--n_starved]];

		c->starved = 0;
		if (c->live && !c->closing && !c->recv_armed)
			arm_recv(c);
	}
}

static void on_recv(struct conn *c, struct io_uring_cqe *cqe)
{
	if (!(cqe->flags & IORING_CQE_F_MORE))
		c->recv_armed = 0;
	if (cqe->res > 0) {
		uint16_t bid = (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);

		buf_off[bid] = 0;
		buf_len[bid] = (uint32_t)cqe->res;
		next_bid[bid] = NO_BUF;
		if (c->head == NO_BUF)
			c->head = bid;
		else
			next_bid[c->tail] = bid;
		c->tail = bid;
		if (!c->send_busy && !c->closing)
			send_head(c);
	}
	if (c->closing) {
		conn_finish(c);
	} else if (cqe->res == -ENOBUFS) {
		if (!c->starved) { /* re-armed when a buffer comes back */
			c->starved = 1;
			starved[n_starved++] = c->fd;
		}
	} else if (cqe->res <= 0) {
		conn_finish(c); /* EOF or error */
	} else if (!c->recv_armed) {
		arm_recv(c);
	}
}

static void on_send(struct conn *c, struct io_uring_cqe *cqe)
{
	uint16_t bid = c->head;

	c->send_busy = 0;
	if (cqe->res < 0) {
		conn_finish(c);
		return;
	}
	buf_off[bid] += (uint32_t)cqe->res;
	if (buf_off[bid] == buf_len[bid]) {
		c->head = next_bid[bid];
		buf_return(bid);
		if (n_starved)
			rearm_starved();
	}
	if (c->closing)
		conn_finish(c);
	else if (c->head != NO_BUF)
		send_head(c);
}

static void arm_accept(int lfd)
{
	struct io_uring_sqe *sqe = get_sqe();

	io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, K_ACCEPT << 62);
}

static void on_accept(int lfd, struct io_uring_cqe *cqe)
{
	int fd = cqe->res, one = 1;
	struct conn *c;

	if (!(cqe->flags & IORING_CQE_F_MORE))
		arm_accept(lfd);
	if (fd < 0)
		return;
	if (fd >= MAX_FD || (!conns[fd] && !(conns[fd] = calloc(1, sizeof(struct conn))))) {
		close(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = conns[fd];
	c->fd = fd;
	c->live = 1;
	c->closing = c->send_busy = c->recv_armed = c->starved = 0;
	c->head = c->tail = NO_BUF;
	arm_recv(c);
}

static void on_cqe(int lfd, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe), kind = ud >> 62;
	int fd = (int)(uint32_t)ud;
	struct conn *c;

	if (kind == K_ACCEPT) {
		on_accept(lfd, cqe);
		return;
	}
	if (kind == K_CANCEL)
		return;
	c = fd < MAX_FD ? conns[fd] : NULL;
	if (!c || !c->live || (uint32_t)(ud >> 32 & 0x3fffffff) != (c->gen & 0x3fffffff)) {
		/* Only a recv can outlive its connection: give its buffer back. */
		if (cqe->flags & IORING_CQE_F_BUFFER)
			buf_return((uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT));
		return;
	}
	if (kind == K_RECV)
		on_recv(c, cqe);
	else
		on_send(c, cqe);
}

static void setup(void)
{
	struct io_uring_params prm;
	struct io_uring_buf_reg reg;
	int rc;

	memset(&prm, 0, sizeof(prm));
	prm.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE;
	prm.cq_entries = 16384;
	rc = io_uring_queue_init_params(2048, &ring, &prm);
	if (rc < 0)
		srv_die("srv_uring_completion", "io_uring_queue_init (DEFER_TASKRUN)", rc);
	br = mmap(NULL, N_BUFS * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
	          MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	bufs = malloc((size_t)N_BUFS * SRV_BUF);
	if (br == MAP_FAILED || !bufs)
		srv_die("srv_uring_completion", "buffers", ENOMEM);
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (unsigned long)br;
	reg.ring_entries = N_BUFS;
	reg.bgid = BGID;
	if ((rc = io_uring_register_buf_ring(&ring, &reg, 0)) < 0)
		srv_die("srv_uring_completion", "io_uring_register_buf_ring", rc);
	io_uring_buf_ring_init(br);
	for (int i = 0; i < N_BUFS; i++)
		io_uring_buf_ring_add(br, bufs + (size_t)i * SRV_BUF, SRV_BUF, (unsigned short)i,
		                      io_uring_buf_ring_mask(N_BUFS), i);
	io_uring_buf_ring_advance(br, N_BUFS);
}

int main(int argc, char **argv)
{
	uint16_t port = srv_init(argc, argv);
	int lfd = srv_listen("srv_uring_completion", port), rc;

	setup();
	arm_accept(lfd);
	while (!atomic_load(&srv_stop)) {
		struct io_uring_cqe *cqe;
		unsigned head, n = 0;

		rc = io_uring_submit_and_wait(&ring, 1);
		if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
			srv_die("srv_uring_completion", "io_uring_submit_and_wait", rc);
		io_uring_for_each_cqe(&ring, head, cqe)
		{
			on_cqe(lfd, cqe);
			n++;
		}
		io_uring_cq_advance(&ring, n);
	}
	io_uring_queue_exit(&ring);
	free(bufs);
	close(lfd);
	return 0;
}
