/*
 * The event core's kernel seam: everything io_uring-specific sits behind these
 * few functions (backend_uring.c), as each Redis ae.c backend does, so another
 * backend (epoll) can be added without touching registrar, registry or poller.
 */
#ifndef AMIO_BACKEND_H
#define AMIO_BACKEND_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "compat.h"

struct amio_poller;
struct amio_poller_config;
struct amio__entry;

struct amio__backend {
	struct io_uring ring;
	bool ringless_msg;         /* IORING_REGISTER_SEND_MSG_RING works (6.13+) */
	bool defer_taskrun;        /* ring set up SINGLE_ISSUER | DEFER_TASKRUN */
	bool multishot_timeout;    /* IORING_TIMEOUT_MULTISHOT works (6.4+) */
	bool taskrun_stale;        /* IORING_SQ_TASKRUN survived an enter that found no work */
	int ring_fd;               /* copy readable by any thread (wakeup target) */
	int probe_fd;              /* epoll fd asking the kernel if an fd can be polled, or -1 */
	pthread_mutex_t stop_lock; /* stop from a thread with no ring, old kernels */
	struct io_uring stop_ring;
	bool has_stop_ring;
};

/* A thread that sleeps until woken by MSG_RING: an inbox registrar. On kernels
 * without ring-less MSG_RING every registrar owns one to send its wakeups. */
struct amio__waiter {
	struct io_uring ring;
	bool has_ring;
};

/* Set up the poller's ring (disabled until amio__backend_enable) and probe
 * features. Returns 0 or -errno. Thread: any. */
int amio__backend_init(struct amio_poller *p, const struct amio_poller_config *cfg);
void amio__backend_destroy(struct amio_poller *p);
/* Enable the ring on the calling thread, which becomes the poll thread. */
int amio__backend_enable(struct amio_poller *p);

/* Queue the entry's kernel request (poll thread): a poll for sockets
 * (e->events), a timeout for timers (absolute e->deadline_ns, or a multishot
 * of e->period_ns once AMIO__E_TICKING). 0 or -errno. */
int amio__backend_arm(struct amio_poller *p, struct amio__entry *e, uint32_t slot);
/* Queue removal of the entry's request (slot, armgen), without touching
 * the entry's state: a retry after -EALREADY. 0 or -errno. */
int amio__backend_remove(struct amio_poller *p, struct amio__entry *e, uint32_t slot,
                         uint32_t armgen);
/* Queue removal of the entry's request; its final CQE still arrives. */
int amio__backend_disarm(struct amio_poller *p, struct amio__entry *e, uint32_t slot);
/* Queue a wakeup of a sleeping waiter (poll thread). 0 or -errno. */
int amio__backend_wake_waiter(struct amio_poller *p, struct amio__waiter *w);

/* Submit what is queued and, if wait, sleep until a completion or timeout_ns
 * (-1 = none). One io_uring_enter. Returns 0, -ETIME or -errno. */
int amio__backend_enter(struct amio_poller *p, bool wait, int64_t timeout_ns);
/* Submit what is queued without waiting (one io_uring_enter). 0 or -errno;
 * on failure the SQEs stay queued for the next enter. */
int amio__backend_submit(struct amio_poller *p);
/* Completions are ready without entering the kernel. */
bool amio__backend_ready(struct amio_poller *p);
/* Prepared requests not yet submitted (poll thread). */
bool amio__backend_sq_pending(struct amio_poller *p);
/* A wait call starts: forget what the last one learnt about a stale
 * IORING_SQ_TASKRUN (one more enter may find work for it). */
void amio__backend_begin_wait(struct amio_poller *p);
/* 0 if fd can be polled, -EPERM if the kernel has no poll method for it
 * (regular files, directories), asked of epoll_ctl. Poll thread. */
int amio__backend_pollable(struct amio_poller *p, int fd);
/* What the kernel finished, in neutral terms: the poll loop dispatches
 * these; a backend never calls up into it (as Redis ae.c's aeApiPoll fills
 * fired[] and returns a count). */
enum amio__ckind {
	AMIO__C_POLL = 1,    /* a poll request: res = revents (POLLIN...) or -errno */
	AMIO__C_TIMER,       /* a timer: res = -ETIME when it fired, or -errno */
	AMIO__C_REMOVE_BUSY, /* a removal met its target mid-completion: retry it */
};
struct amio__completion {
	uint32_t slot;   /* the entry's slot */
	uint32_t armgen; /* the arm generation the request was made with */
	int32_t res;
	uint8_t kind; /* enum amio__ckind */
	bool more;    /* the request stays armed (multishot) */
};
/* Reap at most max completions into out[]. Returns the count. Wakeups and
 * requests that carry no state are consumed and counted, not returned. */
unsigned amio__backend_reap(struct amio_poller *p, struct amio__completion *out, unsigned max);

/* Wake the poll thread from another thread (one MSG_RING). from: the caller's
 * waiter if it has a ring, else NULL (ring-less or the poller's stop ring). */
int amio__backend_wake_poller(struct amio_poller *p, struct amio__waiter *from);
/* Wake a waiter now, from any thread (amio_poller_free: blocked inbox
 * waiters must see -ESHUTDOWN). 0 or -errno. */
int amio__backend_wake_waiter_now(struct amio_poller *p, struct amio__waiter *w);

int amio__waiter_init(struct amio__waiter *w, bool need_ring);
void amio__waiter_destroy(struct amio__waiter *w);
/* Sleep until woken or timeout_ns (-1 = none); consumes the wakeups. */
int amio__waiter_wait(struct amio__waiter *w, int64_t timeout_ns);

#endif /* AMIO_BACKEND_H */
