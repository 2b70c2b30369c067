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

#include <sys/epoll.h>

#include "compat.h"

struct amio_poller;
struct amio_poller_config;
struct amio__entry;
struct amio_pool;

/* ---- io_uring (backend_uring.c) ---------------------------------------- */
struct amio__uring {
	struct io_uring ring;
	bool ringless_msg;         /* IORING_REGISTER_SEND_MSG_RING works (6.13+) */
	bool defer_taskrun;        /* ring set up SINGLE_ISSUER | DEFER_TASKRUN */
	bool multishot_timeout;    /* IORING_TIMEOUT_MULTISHOT works (6.4+) */
	bool send_zc;              /* IORING_OP_SEND_ZC / SENDMSG_ZC (6.0+) */
	uint32_t io_inflight;      /* operations' requests whose last CQE is not reaped */
	bool taskrun_stale;        /* IORING_SQ_TASKRUN survived an enter that found no work */
	int ring_fd;               /* copy readable by any thread (wakeup target) */
	int probe_fd;              /* epoll fd asking the kernel if an fd can be polled, or -1 */
	pthread_mutex_t stop_lock; /* stop from a thread with no ring, old kernels */
	struct io_uring stop_ring;
	bool has_stop_ring;
};

/* ---- epoll (backend_epoll.c) --------------------------------------------- */
#define AMIO__EPOLL_EVENTS 128
/* Per registration: its dup'd fd and epoll state. */
struct amio__epoll_slot {
	int32_t fd1;    /* the dup + 1; 0 = none */
	uint32_t heap1; /* timers: index in the heap + 1; 0 = not queued */
	bool in_set;    /* fd1 - 1 is in the epoll set */
	/* Operations (backend_epoll_io.c): on the work list, for a result
	 * made at arm time (a send that went out at once: imm) or a recv or
	 * accept to go on with (the last reap ran out of room). */
	bool queued, imm;
	bool live; /* the request is on: no final record made for it yet */
	int32_t imm_res;
	uint32_t next_work;
};
struct amio__epoll_timer;
/* epoll_event.data: armgen << 32 | oneshot << 31 | slot, or one of these. */
#define AMIO__EP_BELL    UINT64_MAX       /* the poller's eventfd */
#define AMIO__EP_DROPPED (UINT64_MAX - 1) /* a fetched event of a request since removed */
#define AMIO__EP_ONESHOT (UINT64_C(1) << 31)
struct amio__epoll {
	int epfd;
	int bell; /* eventfd in the set: the poller's doorbell */
	struct epoll_event ev[AMIO__EPOLL_EVENTS];
	unsigned ev_next, ev_n; /* events [ev_next, ev_n) not reaped yet */
	struct amio__epoll_slot *slots;
	struct amio__epoll_timer *heap; /* deadline min-heap */
	uint32_t heap_n;
	size_t slots_len, heap_len;
	uint32_t work_head, work_tail; /* operations' work list, by slot */
	struct amio__ep_files *files;  /* file reads and writes (backend_epoll_file.c), or NULL */
};

struct amio__backend_ops;

struct amio__backend {
	const struct amio__backend_ops *ops;
	union {
		struct amio__uring u;
		struct amio__epoll ep;
	};
};

/* A thread that sleeps until woken: an inbox registrar (io_uring: MSG_RING
 * into its small ring; epoll: a futex on its doorbell). On io_uring kernels without
 * ring-less MSG_RING every registrar owns a ring to send its wakeups. */
struct amio__waiter {
	const struct amio__backend_ops *ops;
	struct io_uring ring;
	bool has_ring;
	uint32_t *word; /* epoll: its registrar's doorbell, the futex slept on */
};

/*
 * What a backend does, one floor below the poll loop. It turns kernel events
 * into neutral completion records and never calls up into the poller,
 * timers, channels or registrars (as Redis ae.c's aeApiPoll fills fired[]
 * and returns a count). Chosen at run time (libxev's dynamic backend,
 * Seastar's reactor_backend_selector): backend.c.
 */
enum amio__ckind {
	AMIO__C_POLL = 1,    /* a poll request: res = revents (POLLIN...) or -errno */
	AMIO__C_TIMER,       /* a timer: res = -ETIME when it fired, or -errno */
	AMIO__C_REMOVE_BUSY, /* a removal met its target mid-completion: retry it */
	AMIO__C_IO,          /* an operation's request: res = the syscall's result */
	AMIO__C_IO_NOTIF,    /* a zero-copy send's notification: its pages are free */
};
struct amio__completion {
	uint32_t slot;   /* the entry's slot */
	uint32_t armgen; /* the arm generation the request was made with */
	int32_t res;
	uint8_t kind; /* enum amio__ckind */
	bool more;    /* the request stays armed (multishot), or a notification follows */
	uint16_t bid; /* C_IO: the pool buffer the bytes are in, or AMIO__NO_BID */
};

struct amio__backend_ops {
	const char *name;
	/* Nothing is known to be ready without a syscall (epoll): a wait with
	 * timeout 0 must enter to look. io_uring's CQ shows completions as
	 * they are posted. */
	bool enter_to_peek;
	/* Set up (the ring disabled until enable) and probe features. Any thread. */
	int (*init)(struct amio_poller *p, const struct amio_poller_config *cfg);
	void (*destroy)(struct amio_poller *p);
	/* The calling thread becomes the poll thread. */
	int (*enable)(struct amio_poller *p);
	/* Arm the entry's kernel request (poll thread): a poll for sockets
	 * (e->events), a timeout for timers (absolute e->deadline_ns, or a
	 * multishot of e->period_ns once AMIO__E_TICKING), an operation's
	 * request for operations (reg.ios[slot]: multishot accept, multishot
	 * recv into its pool, send or sendmsg of what is left to send). Bumps
	 * e->armgen and e->inflight, sets AMIO__E_ARMED. 0 or -errno. */
	int (*arm)(struct amio_poller *p, struct amio__entry *e, uint32_t slot);
	/* Remove the request (slot, armgen) without touching the entry: a
	 * retry after -EALREADY. 0 or -errno. */
	int (*remove)(struct amio_poller *p, struct amio__entry *e, uint32_t slot, uint32_t armgen);
	/* Remove the entry's request: bumps e->armgen, clears AMIO__E_ARMED;
	 * its final completion (a stale armgen) still comes, or, where the
	 * removal is synchronous, e->inflight is dropped at once. 0 or -errno. */
	int (*disarm)(struct amio_poller *p, struct amio__entry *e, uint32_t slot);
	/* The slot is given back: drop what the backend keeps for it. */
	void (*release)(struct amio_poller *p, uint32_t slot);
	/* Cancel an operation's request (reg.ios[slot]). Returns 0: its final
	 * completion still comes (io_uring: ASYNC_CANCEL; what raced it is
	 * reported, buffers included); 1: it is gone now, nothing more comes
	 * (epoll: synchronous; e->inflight dropped, AMIO__E_ARMED cleared);
	 * or -errno (-EBUSY: no SQE, try again). */
	int (*cancel_io)(struct amio_poller *p, struct amio__entry *e, uint32_t slot);
	/* A pool's buffer ring: make it usable (io_uring: register its
	 * buffer group) or drop it. 0 or -errno. Poll thread. */
	int (*pool_add)(struct amio_poller *p, struct amio_pool *pool);
	void (*pool_del)(struct amio_poller *p, struct amio_pool *pool);
	/* Wake a sleeping waiter (poll thread; io_uring: an SQE sent with the
	 * next enter). 0 or -errno. */
	int (*wake_waiter)(struct amio_poller *p, struct amio__waiter *w);
	/* Submit what is queued and, if wait, sleep until a completion or
	 * timeout_ns (-1 = none). One syscall. 0, -ETIME or -errno. */
	int (*enter)(struct amio_poller *p, bool wait, int64_t timeout_ns);
	/* Submit without waiting. 0 or -errno (the SQEs stay queued). */
	int (*submit)(struct amio_poller *p);
	/* Completions are ready without entering the kernel. */
	bool (*ready)(struct amio_poller *p);
	/* Prepared requests not yet submitted. */
	bool (*sq_pending)(struct amio_poller *p);
	/* A wait call starts (io_uring: forget a stale IORING_SQ_TASKRUN). */
	void (*begin_wait)(struct amio_poller *p);
	/* 0 if fd can be polled, -EPERM if the kernel has no poll method for it. */
	int (*pollable)(struct amio_poller *p, int fd);
	/* Reap at most max completions into out[]; the count. Wakeups are
	 * consumed and counted, not returned. */
	unsigned (*reap)(struct amio_poller *p, struct amio__completion *out, unsigned max);
	/* Wake the poll thread from another thread. from: the caller's waiter
	 * (io_uring without ring-less MSG_RING sends from its ring), or NULL. */
	int (*wake_poller)(struct amio_poller *p, struct amio__waiter *from);
	/* Wake a waiter now, from any thread (amio_poller_free). */
	int (*wake_waiter_now)(struct amio_poller *p, struct amio__waiter *w);
	/* A registrar's waiter: inbox registrars sleep on it. doorbell: the
	 * registrar's RUNNING/SLEEPING/NOTIFIED word, which the waker moves
	 * SLEEPING -> NOTIFIED before it wakes. */
	int (*waiter_init)(struct amio_poller *p, struct amio__waiter *w, bool inbox,
	                   uint32_t *doorbell);
	void (*waiter_destroy)(struct amio__waiter *w);
	/* Sleep until woken or timeout_ns (-1 = none); consumes the wakeups. */
	int (*waiter_wait)(struct amio__waiter *w, int64_t timeout_ns);
};

extern const struct amio__backend_ops amio__uring_ops;
extern const struct amio__backend_ops amio__epoll_ops;

/* Choose and set up the backend (cfg->backend, AMIO_BACKEND, probing). */
int amio__backend_init(struct amio_poller *p, const struct amio_poller_config *cfg);

#endif /* AMIO_BACKEND_H */
