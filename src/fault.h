/*
 * Fault injection (tests only): with -DAMIO_FAULT_INJECTION=ON the poller's
 * io_uring calls can be told to fail on demand, so the tests can prove that
 * a full SQ or a failing io_uring_enter loses no command and no notification,
 * and that a stuck IORING_SQ_TASKRUN flag costs no storm of enters.
 * Without the option every hook is a constant 0 and compiles away.
 */
#ifndef AMIO_FAULT_H
#define AMIO_FAULT_H

#include <stdint.h>

enum amio__fault_site {
	AMIO__FAULT_SQE,   /* io_uring_get_sqe returns NULL: the SQ is full */
	AMIO__FAULT_ENTER, /* io_uring_enter (every submit and wait) fails with err */
	/* IORING_SQ_TASKRUN reads as set: the kernel can leave it set over an
	 * empty work list (a queueing racing with a run) until more work comes */
	AMIO__FAULT_TASKRUN,
	/* A wakeup of the poller (MSG_RING, eventfd write) fails with err:
	 * called from any thread */
	AMIO__FAULT_WAKE,
	AMIO__FAULT_SITES
};

#ifdef AMIO_FAULT_INJECTION
#ifndef AMIO_API
#define AMIO_API __attribute__((visibility("default")))
#endif
/*
 * From now on, every every-th call at site fails (with -err for ENTER; SQE
 * ignores err). every 0 turns site off and clears its count.
 * Thread: any (the poll thread reads the settings).
 */
AMIO_API void amio__fault_set(enum amio__fault_site site, int err, uint32_t every);
/* Faults injected at site since it was last set. Thread: any. */
AMIO_API uint64_t amio__fault_count(enum amio__fault_site site);
/* Poll thread (WAKE: any thread): 0, or the -errno this call must fail
 * with (SQE, TASKRUN: -EBUSY, meaning "fault"). */
int amio__fault(enum amio__fault_site site);
#else
static inline int amio__fault(enum amio__fault_site site)
{
	(void)site;
	return 0;
}
#endif

#endif /* AMIO_FAULT_H */
