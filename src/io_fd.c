/*
 * The poll thread's table of fds that operations run on: per fd, its queue
 * of sends (with the shutdowns and closes ordered among them: one in flight
 * at a time, in the order made), the other operations on it (recvs and
 * accepts, which amio_close ends), the amio_close in progress, and the bytes
 * queued to send (a recv pauses above its high-water mark). Address space
 * for every fd the process may open, touched as fds are used.
 */
#include <errno.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "internal.h"

static struct amio__io *io_of(amio_poller *p, uint32_t slot)
{
	return &p->reg.ios[slot];
}

int amio__io_init(amio_poller *p)
{
	struct rlimit rl = {0};
	rlim_t fds = 1024;

	p->dl_len = ((size_t)p->reg.cap + 1) * sizeof(*p->dl);
	p->dl = amio__reserve(p->dl_len);
	/* First for the fds the process may open now (the hard limit, at
	 * most 2^24; address space only); amio__fd_fit grows it for a
	 * higher fd. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		fds = rl.rlim_max < ((rlim_t)1 << 24) ? rl.rlim_max : (rlim_t)1 << 24;
	p->fdq_cap = fds < 1024 ? 1024 : (uint32_t)fds;
	p->fdq_len = (size_t)p->fdq_cap * sizeof(*p->fdq);
	p->fdq = amio__reserve(p->fdq_len);
	return p->dl && p->fdq ? 0 : -ENOMEM;
}

/* Room in the table for fd: a process may raise its limit after the poller
 * was made, or had fds above it (dup2). Rare, so a syscall here is no cost
 * to the hot path: mremap keeps the pages, MAP_NORESERVE too. */
int amio__fd_fit(amio_poller *p, int fd)
{
	uint64_t cap = p->fdq_cap;
	void *m;

	if ((uint32_t)fd < p->fdq_cap)
		return 0;
	while (cap <= (uint64_t)fd)
		cap *= 2;
	m = mremap(p->fdq, p->fdq_len, (size_t)cap * sizeof(*p->fdq), MREMAP_MAYMOVE);
	if (m == MAP_FAILED)
		return -ENOMEM;
	p->fdq = m;
	p->fdq_cap = (uint32_t)cap; /* at most 2^31: fd is an int */
	p->fdq_len = (size_t)cap * sizeof(*p->fdq);
	return 0;
}

void amio__io_destroy(amio_poller *p)
{
	if (p->dl)
		munmap(p->dl, p->dl_len);
	if (p->fdq)
		munmap(p->fdq, p->fdq_len);
	p->dl = NULL;
	p->fdq = NULL;
}

/* ---- The send queue: sends, shutdowns and closes, in the order made ------- */

void amio__fd_queue(amio_poller *p, uint32_t slot, int fd)
{
	struct amio__fdq *q = &p->fdq[fd];

	io_of(p, slot)->next_send = 0;
	io_of(p, slot)->state |= AMIO__IO_QUEUED;
	if (q->first)
		io_of(p, q->last)->next_send = slot;
	else
		q->first = slot;
	q->last = slot;
}

/* Take slot off its fd's queue. */
void amio__fd_dequeue(amio_poller *p, uint32_t slot, int fd)
{
	struct amio__fdq *q = &p->fdq[fd];
	uint32_t prev = 0, s = q->first;

	io_of(p, slot)->state &= ~(uint32_t)AMIO__IO_QUEUED;
	while (s && s != slot) {
		prev = s;
		s = io_of(p, s)->next_send;
	}
	if (!s)
		return;
	if (prev)
		io_of(p, prev)->next_send = io_of(p, slot)->next_send;
	else
		q->first = io_of(p, slot)->next_send;
	if (q->last == slot)
		q->last = prev;
}

/* ---- The fd's other operations: recvs and accepts -------------------------- */

void amio__fd_link(amio_poller *p, uint32_t slot, int fd)
{
	io_of(p, slot)->next_fd_op = p->fdq[fd].ops;
	p->fdq[fd].ops = slot;
	io_of(p, slot)->state |= AMIO__IO_LINKED;
}

void amio__fd_unlink(amio_poller *p, uint32_t slot, int fd)
{
	uint32_t *link = &p->fdq[fd].ops;

	io_of(p, slot)->state &= ~(uint32_t)AMIO__IO_LINKED;
	while (*link && *link != slot)
		link = &io_of(p, *link)->next_fd_op;
	if (*link)
		*link = io_of(p, slot)->next_fd_op;
}
