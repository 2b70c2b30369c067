/*
 * File reads and writes on the epoll backend. Regular files are not
 * pollable (epoll_ctl says EPERM), and a pread(2) of a page not cached
 * blocks, so the poll thread cannot make the call itself: a small pool of
 * threads makes it, as libuv's threadpool does for its fs requests.
 *
 * - The pool starts with the poller's first file operation (most programs
 *   never pay for it) and ends in amio_poller_free, which joins its threads:
 *   no thread reads or writes a caller's buffer after the free returned.
 * - Jobs go from the poll thread through an SPMC ck_ring; a semaphore
 *   eventfd (EFD_SEMAPHORE) counts them, so an idle thread sleeps in
 *   read(2) and one write(2) wakes one thread. Results come back through an
 *   MPSC ck_ring, and the thread rings the poller's doorbell eventfd.
 * - A job's token, (seq << 32 | state), is what a cancel races with: the
 *   thread takes a job by moving it QUEUED -> RUNNING, a cancel by moving
 *   it QUEUED -> CANCELLED; whoever loses knows the other won. A ring
 *   entry carries the seq it was made for, so an entry of a cancelled job
 *   cannot take the slot's next job.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include "internal.h"
#include "backend_epoll_io.h"

#define JOBS 1024u /* jobs in the threads' hands at once (a power of two) */

enum { IDLE, QUEUED, RUNNING, CANCELLED };

struct job {
	uint64_t token; /* seq << 32 | state: the poll thread and one file thread */
	/* Written by the poll thread before the job is queued, read by the
	 * thread that took it; res the other way. */
	int fd;
	bool write;
	void *buf;
	uint32_t len;
	uint64_t offset;
	uint32_t armgen;
	int32_t res;
	uint32_t next; /* poll thread: the overflow FIFO (the jobs ring was full) */
};

struct amio__ep_files {
	amio_poller *p;
	struct job *jobs; /* by slot, reserved (amio__reserve) */
	size_t jobs_len;
	struct ck_ring todo, done;
	ck_ring_buffer_t *todo_buf, *done_buf;
	int sem;       /* EFD_SEMAPHORE: entries in todo */
	uint32_t stop; /* the threads exit at their next wake */
	uint32_t seq;  /* poll thread: the next job's seq */
	uint32_t out;  /* poll thread: jobs queued or running, not reaped */
	uint32_t over_head, over_tail;
	unsigned nthreads;
	pthread_t threads[AMIO_FILE_THREADS];
};

static void run_job(struct amio__ep_files *f, uint64_t v)
{
	uint32_t slot = (uint32_t)v, seq = (uint32_t)(v >> 32);
	struct job *j = &f->jobs[slot];
	ssize_t n;

	if (!ck_pr_cas_64(&j->token, (uint64_t)seq << 32 | QUEUED, (uint64_t)seq << 32 | RUNNING)) {
		/* Cancelled: its DONE is made already. Its entry took room in
		 * todo: jobs waiting for room may go now, so tell the poller
		 * (nothing else might wake it). */
		(void)!write(f->p->be.ep.bell, &(uint64_t){1}, sizeof(uint64_t));
		return;
	}
	do
		n = j->write ? pwrite(j->fd, j->buf, j->len, (off_t)j->offset)
		             : pread(j->fd, j->buf, j->len, (off_t)j->offset);
	while (n < 0 && errno == EINTR);
	j->res = n < 0 ? -errno : (int32_t)n;
	/* Never full: at most JOBS jobs are out (submit) and done holds more. */
	(void)ck_ring_enqueue_mpsc(&f->done, f->done_buf, (void *)(uintptr_t)v);
	(void)!write(f->p->be.ep.bell, &(uint64_t){1}, sizeof(uint64_t));
}

static void *file_thread(void *arg)
{
	struct amio__ep_files *f = arg;
	uint64_t one;
	void *v;

	for (;;) {
		if (read(f->sem, &one, sizeof(one)) < 0) {
			if (errno == EINTR)
				continue;
			return NULL; /* cannot happen on an open eventfd */
		}
		if (ck_pr_load_32(&f->stop))
			return NULL;
		if (ck_ring_dequeue_spmc(&f->todo, f->todo_buf, &v))
			run_job(f, (uint64_t)(uintptr_t)v);
	}
}

static int files_start(amio_poller *p)
{
	size_t n = (size_t)p->reg.cap + 1;
	struct amio__ep_files *f = calloc(1, sizeof(*f));
	sigset_t all, old;

	if (!f)
		return -ENOMEM;
	f->p = p;
	f->jobs_len = n * sizeof(struct job);
	f->jobs = amio__reserve(f->jobs_len);
	f->todo_buf = calloc(JOBS, sizeof(ck_ring_buffer_t));
	f->done_buf = calloc(2 * JOBS, sizeof(ck_ring_buffer_t));
	f->sem = eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
	p->be.ep.files = f;
	if (!f->jobs || !f->todo_buf || !f->done_buf || f->sem < 0)
		return f->sem < 0 ? -errno : -ENOMEM;
	ck_ring_init(&f->todo, JOBS);
	ck_ring_init(&f->done, 2 * JOBS);
	/* The program's signals stay with the program's threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	while (f->nthreads < AMIO_FILE_THREADS &&
	       pthread_create(&f->threads[f->nthreads], NULL, file_thread, f) == 0)
		f->nthreads++;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return f->nthreads ? 0 : -EAGAIN;
}

void amio__ep_files_destroy(amio_poller *p)
{
	struct amio__ep_files *f = p->be.ep.files;

	if (!f)
		return;
	ck_pr_store_32(&f->stop, 1);
	if (f->nthreads)
		(void)write(f->sem, &(uint64_t){f->nthreads}, sizeof(uint64_t));
	for (unsigned i = 0; i < f->nthreads; i++)
		pthread_join(f->threads[i], NULL);
	if (f->sem >= 0)
		close(f->sem);
	if (f->jobs)
		munmap(f->jobs, f->jobs_len);
	free(f->todo_buf);
	free(f->done_buf);
	free(f);
	p->be.ep.files = NULL;
}

/* Hand a job to the threads: false if the ring is full (it waits). */
static bool hand_over(struct amio__ep_files *f, uint32_t slot)
{
	struct job *j = &f->jobs[slot];
	uint64_t v = (uint64_t)(uint32_t)(ck_pr_load_64(&j->token) >> 32) << 32 | slot;

	if (f->out >= JOBS || !ck_ring_enqueue_spmc(&f->todo, f->todo_buf, (void *)(uintptr_t)v))
		return false;
	f->out++;
	(void)write(f->sem, &(uint64_t){1}, sizeof(uint64_t));
	return true;
}

int amio__ep_file_submit(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	struct amio__io *io = &p->reg.ios[slot];
	struct amio__ep_files *f = p->be.ep.files;
	struct job *j;
	int rc;

	if (!f && (rc = files_start(p)) < 0) {
		amio__ep_files_destroy(p); /* tried again at the next file operation */
		return rc;
	}
	f = p->be.ep.files;
	j = &f->jobs[slot];
	j->fd = e->fd;
	j->write = io->type == AMIO__IO_PWRITE;
	j->buf = io->iov[0].iov_base;
	j->len = (uint32_t)io->iov[0].iov_len;
	j->offset = io->offset;
	j->armgen = e->armgen + 1; /* the arm's (amio__ep_arm_io bumps it) */
	j->next = 0;
	/* The job's fields before its token: the thread reads them after. */
	ck_pr_store_64(&j->token, (uint64_t)++f->seq << 32 | QUEUED);
	if (!f->over_head && hand_over(f, slot))
		return 0;
	if (f->over_tail)
		f->jobs[f->over_tail].next = slot;
	else
		f->over_head = slot;
	f->over_tail = slot;
	return 0;
}

/* 1 if the job is gone (not begun: no result comes), 0 if it runs. */
int amio__ep_file_cancel(amio_poller *p, uint32_t slot)
{
	struct amio__ep_files *f = p->be.ep.files;
	struct job *j = &f->jobs[slot];
	uint64_t t = ck_pr_load_64(&j->token);

	if ((t & 3) != QUEUED || !ck_pr_cas_64(&j->token, t, (t & ~(uint64_t)3) | CANCELLED))
		return 0;
	/* In the ring: a thread skips its entry. In the overflow FIFO: out. */
	for (uint32_t s = f->over_head, prev = 0; s; prev = s, s = f->jobs[s].next) {
		if (s != slot)
			continue;
		if (prev)
			f->jobs[prev].next = j->next;
		else
			f->over_head = j->next;
		if (f->over_tail == slot)
			f->over_tail = prev;
		return 1;
	}
	f->out--;
	return 1;
}

/* Records of the jobs done; jobs that waited for room go to the threads. */
unsigned amio__ep_file_reap(amio_poller *p, struct amio__completion *out, unsigned max)
{
	struct amio__ep_files *f = p->be.ep.files;
	unsigned n = 0;
	void *v;

	if (!f)
		return 0;
	while (n < max && ck_ring_dequeue_mpsc(&f->done, f->done_buf, &v)) {
		uint32_t slot = (uint32_t)(uintptr_t)v;
		struct job *j = &f->jobs[slot];

		f->out--;
		out[n++] = (struct amio__completion){slot,       j->armgen, j->res,
		                                     AMIO__C_IO, false,     AMIO__NO_BID};
		ck_pr_store_64(&j->token, ck_pr_load_64(&j->token) & ~(uint64_t)3); /* IDLE */
	}
	while (f->over_head && hand_over(f, f->over_head)) {
		uint32_t s = f->over_head;

		f->over_head = f->jobs[s].next;
		if (!f->over_head)
			f->over_tail = 0;
	}
	return n;
}

bool amio__ep_file_pending(amio_poller *p)
{
	struct amio__ep_files *f = p->be.ep.files;

	return f && ck_ring_size(&f->done) != 0;
}
