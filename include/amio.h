/*
 * amio: the Poller/Registrar event model (after the Rust library Amy) on io_uring,
 * or on epoll where io_uring is blocked (amio_poller_backend names which).
 *
 * One poll thread owns an amio_poller and reaps completions. Any other thread
 * owns an amio_registrar and registers sockets, timers and channels through it;
 * every registration gets an id at once (unique within its poller, not the
 * process: see amio_register), and readiness comes back as
 * notifications {id, data, events}, either from amio_poller_wait() (Amy mode)
 * or, for ids registered through an AMIO_INBOX registrar, from that
 * registrar's amio_registrar_wait() (inbox mode).
 *
 * Conventions: functions return >= 0 on success (a count or an id) and -errno
 * on failure; errno is never set. If a call fails, nothing was queued and no
 * notification will come for it. Every declaration says which thread may call
 * it and who owns each pointer.
 */
#ifndef AMIO_H
#define AMIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h> /* struct sockaddr, socklen_t: amio_connect */
#include <sys/uio.h>    /* struct iovec: amio_sendv */
#include "amio/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifndef AMIO_API
#define AMIO_API __attribute__((visibility("default")))
#endif

/* ---- Types ------------------------------------------------------------ */

/* Events a registration asks for and notifications report (bit flags). */
enum {
	/* Readable, or EOF: read until -EAGAIN (edge-triggered) or 0 (EOF).
	 * A read shorter than asked does not prove the socket is drained,
	 * unless AMIO_HUP came with it: a peer that sends its last bytes and
	 * FIN together gives one READ | HUP, and no later edge; read on to 0
	 * then, or the connection stays open until an idle timeout. */
	AMIO_READ = 1u << 0,
	AMIO_WRITE = 1u << 1, /* writable */
	AMIO_BOTH = AMIO_READ | AMIO_WRITE,
	AMIO_HUP = 1u << 2,     /* peer closed or half-closed (POLLHUP; POLLRDHUP, asked
	                           with AMIO_READ only); report only */
	AMIO_ERROR = 1u << 3,   /* socket error (POLLERR) or a failed command; see .error */
	AMIO_TIMER = 1u << 4,   /* a timer fired */
	AMIO_CHANNEL = 1u << 5, /* a channel has messages */
	/* Completion I/O (see "Completion I/O" below): what an operation did,
	 * with its result in .res. */
	AMIO_ACCEPT = 1u << 12,   /* a connection: res = its fd, or -errno */
	AMIO_RECV = 1u << 13,     /* bytes: res = length at .buf; 0 = EOF; or -errno */
	AMIO_SEND = 1u << 14,     /* a send finished: res = bytes, or -errno */
	AMIO_DONE = 1u << 15,     /* the operation's last notification: the id is finished */
	AMIO_SHUTDOWN = 1u << 16, /* amio_shutdown: res = 0 or -errno (with AMIO_DONE) */
	AMIO_CLOSE = 1u << 17,    /* amio_close: res = 0 or -errno (with AMIO_DONE) */
	AMIO_CONNECT = 1u << 18,  /* amio_connect: res = 0 or -errno (with AMIO_DONE) */
	AMIO_PREAD = 1u << 19,    /* amio_pread: res = bytes read, 0 at EOF, or -errno (DONE) */
	AMIO_PWRITE = 1u << 20,   /* amio_pwrite: res = bytes written, or -errno (DONE) */
};

/* Registration options, or-ed into the events argument of amio_register(). */
enum {
	/* Default: edge-triggered (multishot poll). One notification per
	 * readiness change; drain the socket until -EAGAIN before waiting again.
	 * An occasional extra notification is possible (after a transparent
	 * re-arm), never a missed edge. */
	AMIO_EDGE = 0,
	/* Level-triggered: reported again while the condition holds, once per
	 * wait of the consumer: by every amio_poller_wait() call (Amy mode),
	 * or at most once per amio_registrar_wait() call of the inbox's owner,
	 * re-armed when it waits again after taking the last report (inbox
	 * mode). Emulated: a one-shot poll re-armed then, which reports at
	 * once if still ready (multishot with IORING_POLL_ADD_LEVEL is -EINVAL).
	 * Like every readiness report it can be stale when handed out: data
	 * that arrived and was read by the consumer before the wait returned
	 * still reports READ (on io_uring the kernel posts readiness when it
	 * happens; epoll re-checks at epoll_wait). A read then gives EAGAIN. */
	AMIO_LEVEL = 1u << 8,
	/* One notification, then disarmed until amio_reregister(). It tells
	 * what the fd has when the poll thread looks, on both backends: last
	 * bytes and a FIN or RST that landed before then give one READ | HUP
	 * (| ERROR), and readiness gone by then (another thread read the
	 * bytes) is not reported: the registration stays armed. (io_uring
	 * posts the mask of the wakeup, so amio looks again: one poll(2) per
	 * reap batch holding ONESHOT reports that lack an event.) */
	AMIO_ONESHOT = 1u << 9,
};

/* One readiness report or operation result: 32 bytes, copy it by value. */
typedef struct amio_notification {
	uint64_t id;     /* the registration's or operation's id (per poller) */
	void *data;      /* the pointer given at registration, untouched */
	uint32_t events; /* AMIO_READ | AMIO_WRITE | AMIO_HUP | AMIO_ERROR | ... */
	union {
		int32_t error; /* with AMIO_ERROR: -errno of a failed command (e.g.
		                  -EBADF, -EPERM), or 0 for a socket error (POLLERR):
		                  its errno comes from the next read/write or
		                  getsockopt(SO_ERROR). amio does not read SO_ERROR
		                  itself: reading clears it, and a non-blocking
		                  connect() reports its result there. */
		int32_t res;   /* AMIO_ACCEPT / AMIO_RECV / AMIO_SEND: the result */
	};
	void *buf; /* AMIO_RECV with res > 0: the bytes, lent until amio_pool_put;
	              the DONE of amio_send, amio_pread, amio_pwrite: the
	              call's buf (amio_sendv: iov[0].iov_base), yours again
	              (a relay can amio_pool_put the recv's buffer it sent);
	              else NULL */
} amio_notification;

typedef struct amio_poller amio_poller;       /* one per poll thread */
typedef struct amio_registrar amio_registrar; /* one per submitting thread */
typedef struct amio_channel amio_channel;     /* many senders, one receiver */

/* Limits of struct amio_poller_config (above them amio_poller_new returns
 * -EINVAL): the kernel's IORING_MAX_ENTRIES (32768 SQEs) and
 * IORING_MAX_CQ_ENTRIES (65536 CQEs), with amio's CQ of at least 4x the SQ. */
#define AMIO_MAX_SQ_ENTRIES    16384u
#define AMIO_MAX_CQ_ENTRIES    65536u
#define AMIO_MAX_QUEUE_ENTRIES (1u << 22) /* queue_entries and inbox_entries */

/* Poller configuration; zero fields take the defaults shown. */
struct amio_poller_config {
	uint32_t sq_entries;        /* SQ ring size (256), <= AMIO_MAX_SQ_ENTRIES; rounded up
	                               to a power of two (at least 2) */
	uint32_t cq_entries;        /* CQ ring size (16 x sq_entries, at most
	                               AMIO_MAX_CQ_ENTRIES), raised to at least 4 x sq_entries */
	uint32_t queue_entries;     /* per-registrar command queue, holds N-1 (4096), rounded
	                               up to a power of two, <= AMIO_MAX_QUEUE_ENTRIES */
	uint32_t inbox_entries;     /* per-inbox-registrar notification queue, holds N-1
	                               (4096), same rules as queue_entries */
	uint32_t max_registrations; /* live ids at once, <= 2^24 - 1 (2^20 - 1) */
	uint32_t flags;             /* AMIO_POLLER_* below, for tests and old kernels */
	/* Before sleeping, the poll thread may watch its queues a while, so
	 * work arriving right after it went idle costs no wakeup syscall on
	 * either side (busy polling).
	 * 0 = default: an adaptive spin of 2 to 5 us: a spin that catches
	 * work sets the window to twice the time it took, one that misses
	 * halves it (down to none, probed again after 1, 2, 4 ... 64 sleeps),
	 * and none is tried while work streams (more than one completion per
	 * wakeup, or a channel drain of more than one message: sleeping
	 * batches it). Request/response across threads then costs no wakeup,
	 * idle and streaming pollers nearly nothing (measured: bench/results).
	 * N > 0: always spin N us (at most 1,000,000): only worth it with a
	 * core to spare, the spin burns CPU a thread sharing the poll
	 * thread's core would have used. AMIO_POLLER_NO_SPIN: never spin. */
	uint32_t spin_us;
	/* AMIO_BACKEND_AUTO (0): the environment variable AMIO_BACKEND
	 * (io_uring or epoll) if set, else io_uring, falling back to epoll
	 * where io_uring_setup fails with ENOSYS, EPERM or EACCES (Docker's
	 * and Podman's seccomp profiles, kernel.io_uring_disabled) or lacks a
	 * feature amio needs. AMIO_BACKEND_IO_URING or AMIO_BACKEND_EPOLL:
	 * that one only (io_uring's setup error is then returned). */
	uint32_t backend;
};

/* Values of struct amio_poller_config's backend. */
enum {
	AMIO_BACKEND_AUTO = 0,
	AMIO_BACKEND_IO_URING = 1,
	AMIO_BACKEND_EPOLL = 2,
};

/* Poller flags: turn off a kernel feature to run the fallback path. */
enum {
	AMIO_POLLER_NO_DEFER_TASKRUN = 1u << 0,     /* no SINGLE_ISSUER | DEFER_TASKRUN */
	AMIO_POLLER_NO_RINGLESS_MSG = 1u << 1,      /* wake through a per-registrar ring */
	AMIO_POLLER_NO_MULTISHOT_TIMEOUT = 1u << 2, /* re-arm interval timers each tick */
	AMIO_POLLER_NO_SPIN = 1u << 3,              /* sleep at once when idle, whatever spin_us */
	/* The poll thread puts itself in SCHED_BATCH at its first wait/run
	 * (sched_setscheduler on that thread): its wakeups then no longer
	 * preempt a worker sharing its CPU, so batches grow. Measured on one
	 * pinned CPU shared with a worker: 1.5x requests/s (bench/results/
	 * echo-2026-11-24-sched-batch.md). Costs wakeup latency when the CPU
	 * is busy: leave it off when the poll thread has a CPU of its own.
	 * If the kernel refuses, the first wait/run returns its -errno. */
	AMIO_POLLER_SCHED_BATCH = 1u << 4,
};

/* Registrar flags. */
enum {
	/* Ids registered through this registrar are delivered to its inbox
	 * (amio_registrar_wait), not returned by amio_poller_wait. */
	AMIO_INBOX = 1u << 0,
};

/* Counters, relaxed: each is exact, the set is not a snapshot. */
struct amio_poller_stats {
	uint64_t enters;           /* io_uring_enter (epoll: epoll_wait) calls of the poll thread */
	uint64_t sqes;             /* SQEs submitted (epoll: epoll_ctl calls) */
	uint64_t cqes;             /* CQEs reaped (epoll: events) */
	uint64_t notifications;    /* notifications returned or delivered to inboxes */
	uint64_t wakeups_sent;     /* wakeups sent to the poller (MSG_RING; epoll: eventfd) */
	uint64_t wakeups_received; /* wakeup CQEs reaped by the poller */
	uint64_t commands;         /* registrar commands applied */
	uint64_t rearms;           /* multishot polls re-armed after the kernel ended them */
	uint64_t overflows;        /* times the CQ ring overflowed (kernel kept the CQEs) */
	uint64_t enter_errors;     /* io_uring_enter failures retried: -EINTR, -EAGAIN,
	                              -EBUSY, -ENOMEM (nothing is lost: the SQEs stay queued) */
	uint64_t recv_starved;     /* multishot recvs paused on an empty pool (resumed when a
	                              buffer comes back) */
	uint64_t accepts_refused;  /* accepted connections closed unseen: holding them for a
	                              consumer with no room failed to allocate */
	uint64_t accept_backoffs;  /* accepts paused after -EMFILE, -ENFILE, -ENOMEM or
	                              -ENOBUFS (they listen again after a back-off) */
	uint64_t wakeups_failed;   /* wakeup sends that failed and were tried again */
};

/* ---- Poller ----------------------------------------------------------- */

/*
 * Create a poller on the backend chosen by cfg->backend (see struct
 * amio_poller_config): its io_uring, or its epoll set. The ring is created
 * disabled and enabled by the first amio_poller_wait/run call, whose thread
 * becomes the poll thread (SINGLE_ISSUER rings accept submissions from one
 * thread only); the same thread rule holds on epoll.
 * fork(): the parent's pollers, and all made through them, go on working
 * while a child runs, exits or execs; every fd amio opens is O_CLOEXEC, so
 * an exec'd child holds none. The child must make no call on a poller,
 * registrar, pool or channel made before the fork, not even a free: its
 * copies share the parent's kernel objects. The io_uring rings are mapped
 * MAP_SHARED from their fds, so a child that reaps or submits there takes
 * the parent's completions or cancels its operations (a SINGLE_ISSUER ring
 * refuses the child's enters, not its reads of the shared CQ); the epoll
 * set is the parent's too, so a child's wait takes the parent's edges.
 * Leave the copies to the child's exit or exec; a child may create pollers
 * of its own (a multithreaded parent's child is limited to
 * async-signal-safe calls until it execs: no amio call there).
 * cfg: borrowed, NULL for defaults. *out: owned by the caller, freed with
 * amio_poller_free().
 * Returns: 0. Errors: -EINVAL (bad cfg: unknown flags, a size above its
 * AMIO_MAX_* limit, max_registrations above 2^24 - 1, spin_us above
 * 1,000,000, an unknown backend or AMIO_BACKEND value), -ENOMEM,
 * -ENOSYS/-EPERM/-EACCES (io_uring required by cfg->backend or
 * AMIO_BACKEND, and the kernel lacks it or a seccomp profile or the sysctl
 * forbids it; with the default, amio falls back to epoll instead), any
 * -errno of io_uring_setup or epoll_create1.
 * Thread: any thread.
 */
AMIO_API int amio_poller_new(amio_poller **out, const struct amio_poller_config *cfg);

/*
 * Free the poller. Live registrations are cancelled; registrars still in use
 * stay valid memory and every later call on them returns -ESHUTDOWN (a call
 * blocked in amio_registrar_wait is woken and returns it); each must still be
 * freed with amio_registrar_free(). Operations still running are cancelled
 * without a DONE (nobody is left to receive it) and their pools freed: called
 * on the poll thread, it first waits (1 s at most) until the kernel has let
 * go of every operation's buffers (io_uring ASYNC_CANCEL of all, then their
 * last CQEs; epoll holds none between calls). From another thread an
 * io_uring ring cancels them as it exits, in the background: keep the
 * buffers of sends still running allocated, or end them (amio_cancel, then
 * their DONE) before freeing the poller.
 * Accepted connections no consumer took (held for one, in an inbox, in the
 * CQ or in the kernel's CQ overflow list) are closed. One exception, from
 * another thread only: a SINGLE_ISSUER | DEFER_TASKRUN ring (the default
 * where the kernel has it; not with AMIO_POLLER_NO_DEFER_TASKRUN) lets no
 * thread but the poll thread flush its overflow list, so what the poll
 * thread's last wait left there (only after the CQ overflowed: see the
 * overflows counter) goes with the ring, and a connection among it stays
 * open: free on the poll thread, or give the CQ room (cq_entries).
 * Calls in flight: it waits until no registrar call, channel send or
 * amio_poller_stop is inside (a sender asleep in amio_channel_send_wait is
 * woken and returns -ESHUTDOWN first), so the poll thread may free p as
 * soon as the wait or run a stop ended has returned (see amio_poller_stop).
 * Thread: the poll thread, or any thread once the poll thread no longer uses p.
 */
AMIO_API void amio_poller_free(amio_poller *p);

/*
 * Apply queued commands, submit, and wait for notifications.
 * out: borrowed, room for cap notifications; never more than cap are
 * written: notifications that do not fit are returned by the next calls,
 * in order, none dropped. A readiness registration, timer or channel gives
 * at most one notification per call (its events or-ed, as epoll does); an
 * operation gives one per completion it reports, never merged (a multishot
 * recv, one AMIO_RECV per buffer it lends; an accept, one per connection),
 * then its AMIO_DONE.
 * timeout_ms: 0 = do not block, -1 = no limit. Internal wakeups (commands
 * arriving) never return early with nothing; EINTR is retried.
 * Notifications of inbox registrars are delivered to their inboxes (their
 * doorbells rung before this returns), not returned. amio_poller_stop()
 * makes it return at once.
 * Stale entries: a later entry of the same batch may name an id the caller
 * deregistered (or a timer it cancelled) while handling an earlier one: the
 * filter runs when the batch is made, not while the caller walks it. Keep a
 * per-connection "closed" mark (or look the id up) before acting on an
 * entry; free per-connection memory only after the batch is walked.
 * Returns: the number of notifications (0 on timeout or stop). Errors:
 * -EINVAL (cap 0 or bad timeout), -EEXIST (called from a second thread),
 * -ESHUTDOWN, any -errno of io_uring_enter.
 * Thread: poll thread only (the first thread that calls wait or run).
 */
AMIO_API int amio_poller_wait(amio_poller *p, amio_notification *out, size_t cap, int timeout_ms);

/*
 * Inbox mode: loop applying commands and delivering notifications to inbox
 * registrars until amio_poller_stop().
 * Returns: 0 after amio_poller_stop(); 1 when a notification for an id of a
 * non-inbox registrar is ready (collect it with amio_poller_wait, then run
 * again). Errors: as amio_poller_wait.
 * Thread: poll thread only.
 */
AMIO_API int amio_poller_run(amio_poller *p);

/*
 * Make the current (or next) amio_poller_wait/run return. Wakes a sleeping
 * poll thread with one MSG_RING; coalesces with other pending stops.
 * Commands queued just before may still be unapplied when it returns: the
 * next wait applies them (amio_poller_free cancels them). Notifications
 * the poll thread delivered to inboxes before stopping are there, their
 * waiters woken, when its wait/run returns.
 * Stop, then free: the poll thread may call amio_poller_free as soon as the
 * wait or run this stop ended has returned, while this call is still
 * returning (the free waits for stops in flight). A stop that may come
 * later, having ended nothing, must return before amio_poller_free starts,
 * unless a registrar or channel of p is not freed yet: p's memory lasts
 * until the last of them is, and the stop returns -ESHUTDOWN.
 * Returns: 0. Errors: -ESHUTDOWN (amio_poller_free has run).
 * Thread: any thread.
 */
AMIO_API int amio_poller_stop(amio_poller *p);

/*
 * The backend the poller runs on: "io_uring" or "epoll" (a static string;
 * "none" for NULL), for logs: with AMIO_BACKEND_AUTO the choice depends on
 * the machine. Same API and rules on both; on epoll, amio_poller_stats
 * counts epoll_wait calls as enters and events as CQEs, and registrations
 * hold a dup of their fd until the poll thread applies their deregister.
 * Thread: any thread.
 */
AMIO_API const char *amio_poller_backend(const amio_poller *p);

/*
 * Read the counters. out: borrowed.
 * Thread: any thread.
 */
AMIO_API void amio_poller_stats(const amio_poller *p, struct amio_poller_stats *out);

/* ---- Registrar -------------------------------------------------------- */

/*
 * Create a registrar: a lock-free single-producer command queue to the
 * poller. flags: 0 (Amy mode) or AMIO_INBOX.
 * *out: owned by the caller, freed with amio_registrar_free().
 * Returns: 0. Errors: -EINVAL (unknown flags), -ENOMEM, -ESHUTDOWN,
 * -errno of io_uring_setup (inbox registrars and old kernels own a small ring).
 * Thread: any thread; afterwards the registrar is used by one thread at a
 * time. Set-up hand-off: a registrar, its pools, channels, timers and
 * operations may be made on one thread (main, say) and handed to another
 * before that thread's first call, the hand-off ordered as any data shared
 * between threads (pthread_create, a mutex, a release store and acquire
 * load): the registrar keeps no thread identity (its io_uring ring, if
 * any, is not SINGLE_ISSUER), and the new thread becomes the consumer of
 * its pools and the receiver of its channels, with notifications made
 * before the hand-off waiting in its inbox. Calls from two threads at once
 * are a data race.
 */
AMIO_API int amio_registrar_new(amio_poller *p, uint32_t flags, amio_registrar **out);

/*
 * Free a registrar. Commands it queued still take effect. Ids registered
 * through an inbox registrar are deregistered (nobody would receive them):
 * its operations are cancelled and their notifications dropped (accepted
 * fds nobody saw are closed), except its amio_close and amio_shutdown
 * calls, which still go (their DONE dropped: a worker may close its
 * connections and free its registrar at once), and its pools are freed
 * once their recvs ended. No DONE tells when the kernel let go of a
 * cancelled send's, pread's or pwrite's buffer: keep those buffers until
 * amio_poller_free returned, or free the registrar only after their DONEs.
 * Ids of an Amy-mode registrar stay registered, and its operations and
 * pools run on (amio_pool_free on the poll thread).
 * Thread: the registrar's thread.
 */
AMIO_API void amio_registrar_free(amio_registrar *r);

/*
 * Register fd for events (AMIO_READ, AMIO_WRITE or both, optionally with
 * AMIO_LEVEL or AMIO_ONESHOT). Readiness present now is reported at once,
 * unless another thread consumes it first (reads the bytes) before the
 * poll thread looks: epoll re-checks readiness when epoll_wait harvests
 * an event and drops one that is gone; the next bytes are reported.
 * data: retained; returned untouched in every notification.
 * The fd stays owned by the caller; call amio_deregister() before close().
 * Failures found on the poll thread arrive as one notification {id,
 * AMIO_ERROR, error}, after which the registration reports nothing until
 * amio_reregister: -EBADF (a closed fd), -EPERM (an fd the kernel cannot
 * poll: a regular file or directory, as epoll_ctl refuses it), -EBUSY (no
 * SQE could be had), -EMFILE/-ENFILE (epoll backend only: it registers a
 * dup of fd, one more fd per live registration, and the process is out).
 * Ids are unique per poller (never reused by it), not per process: each
 * poller numbers its own, so every poller's first id is the same value,
 * and an id given to a registrar of another poller is taken as that
 * poller's: the call acts on its registration by that id, if it has one,
 * and returns 0 (no error tells the mistake). Keep each id with its poller.
 * Returns: the id (> 0), valid until amio_deregister. Errors: -EBADF (fd < 0),
 * -EINVAL (no READ/WRITE, unknown bits, LEVEL with ONESHOT), -EAGAIN (the
 * command queue is full: amio_registrar_wait_room, then retry), -ENOSPC
 * (max_registrations live ids; a deregistered id counts until the poll
 * thread has applied its deregister), -ESHUTDOWN.
 * Thread: the registrar's thread; wakes a sleeping poller (wakeups coalesce).
 */
AMIO_API int64_t amio_register(amio_registrar *r, int fd, uint32_t events, void *data);

/*
 * Change the events of a registration (same bits as amio_register; the mode
 * may change too). Readiness present now is reported at once; re-arms an
 * AMIO_ONESHOT registration.
 * Order: the commands of one registrar are applied in the order they were
 * made; commands for one id made through different registrars have no
 * order between them (each registrar is its own queue), except that a
 * reregister or deregister applied before the id's register is kept for
 * it. Make an id's reregisters through one registrar when their order
 * matters (e.g. its owner's).
 * Returns: 0. Errors: -ENOENT (unknown or deregistered id, or not a socket),
 * -EINVAL, -EAGAIN (queue full), -ESHUTDOWN.
 * Thread: the registrar's thread (any registrar of the poller).
 */
AMIO_API int amio_reregister(amio_registrar *r, uint64_t id, uint32_t events);

/*
 * Deregister an id. Once this returns, no notification for id is returned or
 * delivered (filtered at reap time); the poll is removed from the kernel, so
 * a following close(fd) really closes the connection (the peer sees EOF).
 * Returns: 0. Errors: -ENOENT (unknown or already deregistered id),
 * -EAGAIN (queue full: the id stays registered), -ESHUTDOWN.
 * Thread: the registrar's thread (any registrar of the poller).
 */
AMIO_API int amio_deregister(amio_registrar *r, uint64_t id);

/*
 * Wait until r's command queue has room for one command: the way out of
 * -EAGAIN from amio_register and friends when the poll thread runs
 * elsewhere (a spin on sched_yield there burns the CPU the poller needs).
 * Wakes a sleeping poller, then sleeps on a futex the poll thread bumps
 * when it takes commands from a full queue (one syscall per refill, none
 * while nobody waits). timeout_ms: 0 = only look, -1 = no limit.
 * Returns: 0 (room for at least one command). Errors: -ETIMEDOUT (still
 * full), -EINVAL (r NULL, timeout_ms below -1), -ESHUTDOWN.
 * Thread: the registrar's thread; never the poll thread (nobody would
 * drain the queue).
 */
AMIO_API int amio_registrar_wait_room(amio_registrar *r, int timeout_ms);

/*
 * What r's calls do when its command queue is full (every call that
 * documents -EAGAIN for a full queue: amio_register, amio_send, amio_cancel,
 * amio_pool_new ...). timeout_ms: 0 (the default) = return -EAGAIN at once;
 * -1 = wait for room without limit; > 0 = wait up to that many ms per
 * call, then -EAGAIN. The wait is amio_registrar_wait_room's (a futex the
 * poll thread bumps, no spinning), so programs need no retry loop. On the
 * poll thread nobody else drains the queue: there a full queue is applied
 * by the call itself, once (its results come with the next
 * amio_poller_wait), and -EAGAIN comes only if that made no room. A call
 * that waits still ends with -ESHUTDOWN once amio_poller_free has begun.
 * Returns: 0. Errors: -EINVAL (r NULL, timeout_ms below -1).
 * Thread: the registrar's thread.
 */
AMIO_API int amio_registrar_set_queue_wait(amio_registrar *r, int timeout_ms);

/*
 * Make r's current amio_registrar_wait return, or its next one if none
 * waits now: at once, with the notifications it has, 0 if none. One wake
 * ends one wait (wakes before it returns count once; a wait with
 * timeout 0 is one too). For stopping an
 * inbox worker without a channel: set your own flag, then wake; the worker
 * looks at the flag after every return. No syscall unless the owner sleeps
 * (then one: a futex wake on epoll, an IORING_OP_MSG_RING to its ring on
 * io_uring).
 * Returns: 0. Errors: -EINVAL (r NULL or not AMIO_INBOX), -ESHUTDOWN, and
 * the wake's own error (io_uring_register of MSG_RING: -ENOMEM ...).
 * Thread: any thread, while r is alive (not during or after
 * amio_registrar_free).
 */
AMIO_API int amio_registrar_wake(amio_registrar *r);

/*
 * Inbox mode: wait for notifications of ids registered through r.
 * out: borrowed, room for cap. timeout_ms: 0 = do not block, -1 = no limit.
 * Each call tells the poll thread that the notifications taken by earlier
 * calls were seen: AMIO_LEVEL registrations reported then are re-armed (and
 * reported again by this call if still ready). The same stale-entry rule as
 * amio_poller_wait holds for the batch in out[].
 * Returns: the number of notifications (0 on timeout). Errors: -EINVAL (not
 * an AMIO_INBOX registrar, cap 0), -ESHUTDOWN.
 * Thread: the registrar's thread.
 */
AMIO_API int amio_registrar_wait(amio_registrar *r, amio_notification *out, size_t cap,
                                 int timeout_ms);

/* Longest timer: 2^42 ms (about 139 years). Above it, and for the sum of
 * CLOCK_MONOTONIC and the delay in ns to fit the kernel's 64-bit timespec,
 * amio_set_timeout and amio_set_interval return -EINVAL. */
#define AMIO_TIMER_MAX_MS (UINT64_C(1) << 42)

/* ---- Timers -----------------------------------------------------------
 * Timers are io_uring timeouts (epoll: a deadline heap bounding epoll_wait)
 * on CLOCK_MONOTONIC, ids from the same space as
 * sockets, notifications with AMIO_TIMER. The clock starts when the call is
 * made (the caller's clock, not when the poller gets the command), and a timer
 * never fires early. Cost per live timer (measured with 100,000): about 170
 * bytes of amio memory (its registry entry and slot word) and about 360
 * bytes of kernel slab (one timeout request); on epoll about 205 bytes of
 * amio memory (its deadline heap included) and none in the kernel. No
 * syscall of its own: one SQE to arm, one CQE per tick, batched into the
 * poller's io_uring_enter calls (0.004 enters per timer).
 */

/*
 * One-shot timer: one AMIO_TIMER notification ms milliseconds from now. 0
 * fires at once. The id is finished once its notification was handed out
 * (returned by a wait call; amio_cancel_timer then returns -ENOENT).
 * data: retained, returned in the notification.
 * Returns: the id (> 0). Errors: -EINVAL (ms above AMIO_TIMER_MAX_MS),
 * -EAGAIN (queue full), -ENOSPC, -ESHUTDOWN.
 * Thread: the registrar's thread; wakes a sleeping poller (coalesced).
 */
AMIO_API int64_t amio_set_timeout(amio_registrar *r, uint64_t ms, void *data);

/*
 * Interval timer: an AMIO_TIMER notification every ms milliseconds, tick i at
 * or after i x ms from now, re-armed without any call (IORING_TIMEOUT_MULTISHOT
 * where the kernel has it). Ticks the poller could not report in time
 * coalesce into one notification. Runs until amio_cancel_timer.
 * Returns: the id (> 0). Errors: -EINVAL (ms 0 or above AMIO_TIMER_MAX_MS),
 * -EAGAIN, -ENOSPC, -ESHUTDOWN.
 * Thread: the registrar's thread.
 */
AMIO_API int64_t amio_set_interval(amio_registrar *r, uint64_t ms, void *data);

/*
 * Cancel a timer. Whatever it returns, once it returns no notification for
 * id is handed out any more (one the kernel already posted, even
 * one already waiting in an inbox or a stash, is refused at hand-out).
 * Returns: 0: the timer will never be reported again (a one-shot that fired
 * but whose notification no wait call has handed out yet counts: it is
 * withdrawn). Errors: -ENOENT (unknown id, not a timer, already cancelled,
 * or a one-shot whose notification was already handed out: the caller has
 * it, or is about to in the batch of a wait running now on another
 * thread), -EAGAIN (queue full: the timer still runs), -ESHUTDOWN.
 * Thread: the registrar's thread (any registrar of the poller).
 */
AMIO_API int amio_cancel_timer(amio_registrar *r, uint64_t id);

/* ---- Channels ---------------------------------------------------------
 * A bounded queue of fixed-size messages from any number of threads to one
 * receiving thread that wakes the poller. Only the send that makes an empty
 * (drained) channel non-empty raises a notification (AMIO_CHANNEL, routed like
 * any id: amio_poller_wait or the creating registrar's inbox); later sends
 * before the receiver drains cost no syscall. Drain with
 * amio_channel_try_recv until -EAGAIN: that clears the channel, and a pending
 * notification is then not reported (as Amy's channels behave).
 */

/*
 * Create a channel holding up to capacity messages of msg_size bytes each
 * (copied in and out). Registered through r: its id comes from r's id space
 * and its notifications follow r's routing (inbox or Amy mode).
 * data: retained, returned in notifications. *out: owned by the caller,
 * freed with amio_channel_free().
 * Returns: 0. Errors: -EINVAL (capacity or msg_size 0, capacity above 2^30,
 * msg_size above 64 KiB), -ENOMEM, -EAGAIN (r's queue full), -ENOSPC,
 * -ESHUTDOWN.
 * Thread: r's thread.
 */
AMIO_API int amio_channel_new(amio_registrar *r, size_t capacity, size_t msg_size, void *data,
                              amio_channel **out);

/* The channel's id, as in its notifications. Thread: any thread. */
AMIO_API uint64_t amio_channel_id(const amio_channel *ch);

/*
 * Copy msg (msg_size bytes, borrowed) into the channel without blocking.
 * Returns: 0. Errors: -EAGAIN (full: nothing queued), -EPIPE (the channel
 * was freed), -ESHUTDOWN (the poller was freed).
 * Thread: any thread (many senders at once).
 */
AMIO_API int amio_channel_send(amio_channel *ch, const void *msg);

/*
 * Like amio_channel_send, but wait up to timeout_ms (-1: no limit) for room.
 * A sender asleep here is woken once the receiver has taken half the
 * capacity (rounded up) since it found the channel full, or has drained it
 * (try_recv returned -EAGAIN): one wakeup per refill, not per message.
 * Never call it on the thread that receives from ch (or on the poll thread
 * when the poll thread receives): nobody would make room.
 * Freed under it: a sender asleep here is woken by amio_channel_free
 * (returns -EPIPE) or amio_poller_free (-ESHUTDOWN), whichever comes first,
 * and that free returns only after this call has: the poller, the channel
 * and its registrar may be freed one after the other without joining the
 * senders first.
 * Returns: 0. Errors: -ETIMEDOUT (still full after timeout_ms), -EPIPE (the
 * channel was freed), -ESHUTDOWN (the poller was freed), -EINVAL
 * (timeout_ms below -1).
 * Thread: any thread but the receiver's.
 */
AMIO_API int amio_channel_send_wait(amio_channel *ch, const void *msg, int timeout_ms);

/*
 * Take the oldest message into msg (msg_size bytes, borrowed).
 * Returns: 0. Errors: -EAGAIN (empty: the channel is now drained and the next
 * send raises a new notification), -EPIPE (freed).
 * Thread: the one receiving thread.
 */
AMIO_API int amio_channel_try_recv(amio_channel *ch, void *msg);

/*
 * Close and free the receiving side: messages still queued are dropped,
 * senders get -EPIPE from now on, no notification for the id is delivered.
 * Senders may keep calling amio_channel_send(ch) until the poller is freed:
 * a closed channel keeps a small handle (320 bytes) until then.
 * Senders inside a call now (asleep in amio_channel_send_wait too: woken,
 * they return -EPIPE) are waited for before it returns.
 * Thread: the receiving thread.
 */
AMIO_API void amio_channel_free(amio_channel *ch);

/* ---- Completion I/O ---------------------------------------------------
 * The poll thread makes the socket calls itself and routes each result by id
 * like every notification (amio_poller_wait, or the starting registrar's
 * inbox), so a worker thread that only consumes results and gives buffers
 * back makes no syscall per request. On io_uring: multishot accept
 * (IORING_ACCEPT_MULTISHOT, 5.19), multishot recv into a provided buffer ring
 * (IORING_RECV_MULTISHOT with IOSQE_BUFFER_SELECT, 6.0), send and sendmsg;
 * on epoll the poll thread emulates the same calls on readiness, with the
 * same notifications.
 * An operation's notifications end with one carrying AMIO_DONE: after it
 * nothing more comes for the id, and every buffer the operation lent to the
 * kernel is back with its owner. Exactly one DONE comes, whether the
 * operation completes, fails, is cancelled (amio_cancel) or times out
 * (amio_set_deadline). Unlike readiness, nothing of an operation is filtered
 * at hand-out: a notification that lends a buffer always reaches its consumer.
 * The fd must stay open until DONE (close it after, never before).
 * On the epoll backend an operation that has to wait (a recv for bytes, a
 * send for room, an accept) registers a dup of its fd, as amio_register
 * does: one more fd while it waits, so a process at RLIMIT_NOFILE sees it
 * end with -EMFILE (or -ENFILE) in its DONE; io_uring needs no fd.
 */

/* Most buffers in a pool: the kernel's provided buffer ring limit. */
#define AMIO_POOL_MAX_BUFFERS 32768u
/* Largest buffer of a pool (bytes). */
#define AMIO_POOL_MAX_SIZE (1u << 24)
/* Most iovecs in one amio_sendv (copied; the bytes are not). */
#define AMIO_SENDV_MAX 8u

/* amio_send / amio_sendv flags. */
enum {
	/* Zero-copy (IORING_OP_SEND_ZC, 6.0) where the kernel has it: the
	 * pages are sent in place, and DONE comes only after the kernel's
	 * notification CQE says it no longer reads them: not before the peer
	 * acknowledged the bytes, cancel or deadline notwithstanding. Against
	 * a peer that stops reading, abort the connection to get the DONE:
	 * connect(fd, &(struct sockaddr){.sa_family = AF_UNSPEC}, ...) drops
	 * the unsent data and frees the pages (shutdown() does not). A plain
	 * send on epoll and on kernels without it. Worth it from about 10 KiB. */
	AMIO_SEND_ZC = 1u << 0,
};

/* amio_close flags. */
enum {
	/* Send first: the sends and shutdowns queued on the fd before the
	 * close go out (or fail: their timeouts bound the wait), then the
	 * fd's recvs and accepts end, then it is closed. */
	AMIO_CLOSE_GRACEFUL = 1u << 0,
};

/* Connection settings of a registrar (amio_registrar_set_conn), copied into
 * every amio_recv and amio_send it starts afterwards. Kept by the poll
 * thread, so they cost no command per request. */
struct amio_conn_config {
	/* recv: no bytes for idle_ms ms ends it with -ETIME (0: no limit). The
	 * poll thread restarts the clock on every buffer received; time paused
	 * (flow control, amio_recv_pause) and time with sends queued on the fd
	 * (a long response: send_timeout_ms bounds that) do not count. Never
	 * early. */
	uint32_t idle_ms;
	/* send: not finished send_timeout_ms ms after the call ends it with
	 * -ETIME, and every send queued behind it on the fd (the stream is cut
	 * short: close the connection). 0: no limit. Never early. */
	uint32_t send_timeout_ms;
	/* recv: paused while its fd has more than high_water bytes queued to
	 * send (sends made, their DONE not yet), resumed at low_water or
	 * fewer; no notification, no new id, its idle timer kept. A peer that
	 * never reads then stops being read: memory per connection stays
	 * bounded by what the program queues. 0 = the default
	 * (AMIO_CONN_HIGH_WATER, low_water high_water / 2); UINT64_MAX: never
	 * pause. low_water above high_water is -EINVAL. */
	uint64_t high_water;
	uint64_t low_water;
};
#define AMIO_CONN_HIGH_WATER ((uint64_t)1 << 20) /* 1 MiB */

typedef struct amio_pool amio_pool; /* buffers a multishot recv lands in */

/*
 * A pool of count buffers of size bytes each, for amio_recv on r: received
 * bytes land in a buffer the kernel picks (io_uring provided buffer ring,
 * io_uring_register_buf_ring), so no buffer is tied up by an idle
 * connection. Each AMIO_RECV notification lends one buffer to the consumer
 * until amio_pool_put; a recv that finds the pool empty waits (no data is
 * lost, nothing is reported) and goes on once a buffer comes back.
 * count: a power of two, 1 .. AMIO_POOL_MAX_BUFFERS. size: 1 ..
 * AMIO_POOL_MAX_SIZE bytes. Memory: count x size bytes, allocated here.
 * The io_uring buffer group (one of 65,536: a 16-bit bgid) is taken here.
 * The kernel's registration of the ring (io_uring_register_buf_ring) can
 * only be made on the poll thread (a SINGLE_ISSUER ring refuses any other):
 * called there, amio_pool_new registers at once and returns the kernel's
 * error; called elsewhere, the poll thread registers it, and should the
 * kernel refuse (-ENOMEM), each amio_recv into the pool ends at once with
 * that error in its DONE.
 * Returns: 0, *out set. Errors: -EINVAL (r or out NULL, count or size out
 * of range), -ENOMEM, -EAGAIN (r's command queue is full), -ENOSPC (65,536
 * pools live), -ESHUTDOWN, and on the poll thread the kernel's error.
 * Ownership: the pool belongs to r; free it with amio_pool_free.
 * Thread: r's thread.
 */
AMIO_API int amio_pool_new(amio_registrar *r, uint32_t count, uint32_t size, amio_pool **out);

/*
 * Give back a buffer an AMIO_RECV notification lent (its buf). No lock, no
 * syscall: the buffer goes straight into the provided buffer ring; only a
 * pool that ran empty under a waiting recv also wakes the poll thread.
 * Returns: 0. Errors: -EINVAL (pool NULL, buf not the start of one of its
 * buffers, or a buffer not lent now: put twice, or never handed out; the
 * pool knows which buffers a notification its consumer took lent, so a
 * wrong put cannot put a buffer in the ring twice, even when the buffer
 * was lent again to a notification still waiting in the inbox).
 * Thread: the pool's consumer: the thread its registrar's notifications
 * go to (the inbox owner, or the poll thread for an Amy-mode registrar);
 * never once amio_poller_free of its poller has begun (it frees the pools:
 * unlike registrar calls, a put then is no -ESHUTDOWN but a use after free).
 */
AMIO_API int amio_pool_put(amio_pool *pool, void *buf);

/*
 * Free the pool. Allowed once every amio_recv into it has ended (its DONE
 * made: it may still wait in the consumer's queue, and comes) and every
 * buffer it lent is back (amio_pool_put).
 * Once this returns 0 the handle is gone, as after free(3): pass it to no
 * call again. Its buffer group is given back when the poll thread applies
 * the free (at once on the poll thread): off it, a pool made right after
 * at the 65,536 limit may still see -ENOSPC until then. Until the poll
 * thread has applied the free, a second amio_pool_free and amio_recv into
 * it say -EINVAL; after that amio cannot tell the handle from any other
 * pointer.
 * Returns: 0. Errors: -EINVAL (NULL, or freed already), -EBUSY (a recv
 * still runs or a buffer is still lent: nothing freed), -EAGAIN (queue
 * full: retry).
 * Thread: the pool's consumer (see amio_pool_put).
 */
AMIO_API int amio_pool_free(amio_pool *pool);

/*
 * Multishot accept on a listening socket: one AMIO_ACCEPT notification per
 * connection, res = the new fd (O_NONBLOCK | O_CLOEXEC, now the receiver's
 * to close). The kernel ending the request is hidden (re-armed). Errors that
 * concern one connection (ECONNABORTED) are skipped. Running out of fds or
 * memory (-EMFILE, -ENFILE, -ENOMEM, -ENOBUFS: the kernel ends a multishot
 * accept on them) does not end it: one AMIO_ACCEPT notification without
 * AMIO_DONE carries res = -errno (so check res < 0 before taking it as an
 * fd: log, shed load, close idle connections), and the accept listens
 * again after a back-off of 10 ms, doubled while the error repeats, at
 * most 1 s, reset by a connection accepted; connections wait in the listen
 * backlog meanwhile (nginx and libuv keep listening too), and the
 * back-offs are counted in accept_backoffs. io_uring takes RLIMIT_NOFILE
 * when it prepares the request (io_accept_prep): a limit raised later
 * counts from the next arm, at the latest after a back-off. Any other error (-EINVAL once
 * the socket stopped listening after the call, e.g. shutdown(2) of it)
 * ends the accept: one AMIO_ACCEPT | AMIO_DONE with res = -errno. A
 * cancel or deadline during a back-off ends it at once. A socket not
 * listening at the call is
 * refused by the call itself (-EINVAL below, SO_ACCEPTCONN). amio_cancel ends it with
 * res = -ECANCELED. A consumer with no room (a full inbox, a small cap)
 * loses nothing: accepted connections are held in order, and from 32 held
 * the accept pauses (connections wait in the listen backlog) until it
 * catches up; those the kernel had already accepted are held too (memory
 * grows with them; only an allocation failure closes one, counted in
 * accepts_refused).
 * fd: a listening socket, O_NONBLOCK (checked: the epoll backend calls
 * accept4 on it). data: retained, returned in every notification.
 * Returns: the id (> 0). Errors, checked at the call (the same on both
 * backends): -EBADF (fd < 0 or not open), -EINVAL (fd blocking, not a
 * socket, or not listening), -EAGAIN (queue full), -ENOSPC, -ESHUTDOWN.
 * Thread: r's thread.
 */
AMIO_API int64_t amio_accept(amio_registrar *r, int fd, void *data);

/*
 * Multishot recv of a connected stream socket into pool (a pool of r): one
 * AMIO_RECV notification per chunk received, res = its length in bytes and
 * buf = where it is (at most the pool's buffer size; lent until
 * amio_pool_put). The bytes of one socket arrive in order. The recv ends
 * with one AMIO_RECV | AMIO_DONE: res = 0 at EOF, -errno on an error
 * (-ECONNRESET ...), -ECANCELED (amio_cancel), -ETIME (amio_set_deadline).
 * An fd that is no connected stream socket is not checked at the call (a
 * syscall per call): its recv ends at once with that DONE, the same res on
 * both backends: -ENOTSOCK (a regular file, directory, pipe, eventfd,
 * /dev/null: what recv(2) and io_uring's recv answer), -EBADF (not open),
 * -ENOTCONN (a listening or unconnected socket).
 * An empty pool pauses the recv (io_uring ends it with -ENOBUFS) until a
 * buffer comes back: never reported, never a deaf socket.
 * Returns: the id (> 0). Errors: -EBADF (fd < 0), -EINVAL (pool NULL, being
 * freed (see amio_pool_free) or another registrar's), -EAGAIN, -ENOSPC,
 * -ESHUTDOWN.
 * Thread: r's thread.
 */
AMIO_API int64_t amio_recv(amio_registrar *r, int fd, amio_pool *pool, void *data);

/*
 * Send len bytes from buf on a connected stream socket: one AMIO_SEND |
 * AMIO_DONE notification, res = len once every byte was handed to the
 * kernel (amio finishes short sends itself), or -errno (-EPIPE,
 * -ECONNRESET, -ECANCELED, -ETIME; how much went out is then unknown, so
 * close the connection). Sends on one socket go out in the order they were
 * made through one registrar and never interleave: amio keeps one in flight
 * per socket (two io_uring sends in flight on a socket may reorder). Any
 * fd: the poller's per-fd send queues grow to the highest fd sent on,
 * whatever RLIMIT_NOFILE was when it was made (a DONE with -ENOMEM if the
 * table cannot grow). An fd that is no connected stream socket is not
 * checked at the call: its DONE carries the same res on both backends:
 * -ENOTSOCK (not a socket), -EBADF (not open), -EPIPE (a listening or
 * unconnected socket).
 * flags: 0 or AMIO_SEND_ZC. len: 1 .. 2^31 - 1 bytes (0: -EINVAL).
 * Ownership: buf is borrowed until the DONE notification: keep it
 * unchanged and allocated until then.
 * Returns: the id (> 0). Errors: -EBADF (fd < 0), -EINVAL (buf NULL, len 0
 * or too large, unknown flags), -EAGAIN, -ENOSPC, -ESHUTDOWN.
 * Thread: r's thread.
 */
AMIO_API int64_t amio_send(amio_registrar *r, int fd, const void *buf, size_t len, uint32_t flags,
                           void *data);

/*
 * amio_send of several pieces at once, in order (e.g. a frame header and its
 * payload in one sendmsg): iov[0 .. iovcnt-1] is copied now, the bytes it
 * points to are borrowed until DONE. res = the total length. iovcnt: 1 ..
 * AMIO_SENDV_MAX; the total must be 1 .. 2^31 - 1 bytes.
 * Returns: the id (> 0). Errors: as amio_send (-EINVAL also for iov NULL,
 * iovcnt out of range, a NULL base with a length).
 * Thread: r's thread.
 */
AMIO_API int64_t amio_sendv(amio_registrar *r, int fd, const struct iovec *iov, unsigned iovcnt,
                            uint32_t flags, void *data);

/*
 * Cancel an operation: its DONE notification comes, with res = -ECANCELED,
 * unless it finished first (then the DONE it finished with). Either way
 * exactly one DONE comes, after which its buffers are back.
 * Returns: 0 (the DONE is on its way). Errors: -ENOENT (unknown id, not an
 * operation, already cancelled, or finished: its DONE was made and taken
 * off the poll thread), -EAGAIN (queue full: not cancelled), -ESHUTDOWN.
 * Thread: the registrar's thread (any registrar of the poller).
 */
AMIO_API int amio_cancel(amio_registrar *r, uint64_t id);

/*
 * Give an operation a deadline ms milliseconds from now (CLOCK_MONOTONIC):
 * if it has not finished by then it is cancelled and its DONE carries
 * res = -ETIME. Calling again moves the deadline (an idle timeout for a
 * recv: move it on each AMIO_RECV). Never early; 0 cancels at once.
 * Returns: 0. Errors: -ENOENT (as amio_cancel), -EINVAL (ms above
 * AMIO_TIMER_MAX_MS), -EAGAIN, -ESHUTDOWN.
 * Thread: the registrar's thread (any registrar of the poller).
 */
AMIO_API int amio_set_deadline(amio_registrar *r, uint64_t id, uint64_t ms);

/*
 * Pause a recv (libuv's uv_read_stop): the poll thread takes its request
 * out of the kernel (io_uring: a cancel whose -ECANCELED is not reported;
 * epoll: it stops watching), so nothing more is received into the pool
 * until amio_recv_resume; the bytes wait in the socket (TCP then pushes
 * back on the peer). Same id; a notification made before the pause still
 * comes. A deadline (amio_set_deadline) keeps running, the idle timeout
 * does not (paused time is not idle time). Pausing a paused recv, or
 * resuming one that runs, changes nothing; an id that is no recv, or one
 * ending, is left alone. Flow control (struct amio_conn_config) pauses
 * the same way on its own; a recv runs when neither holds it.
 * A relay (a proxy) that sends what one socket receives on another
 * pauses the recv while the other socket's sends are behind, and resumes
 * when their DONEs come (examples/tcp_proxy.c); it turns the fd's own
 * flow control off (high_water UINT64_MAX), which pauses a recv for its
 * own fd's sends: in a relay those carry the other direction, and an
 * echoing peer would deadlock both.
 * Returns: 0. Errors: -ENOENT (as amio_cancel), -EINVAL (r NULL), -EAGAIN,
 * -ESHUTDOWN.
 * Thread: the registrar's thread (any registrar of the poller).
 */
AMIO_API int amio_recv_pause(amio_registrar *r, uint64_t id);

/*
 * Resume a recv amio_recv_pause paused: armed again, same id, what waited
 * in the socket comes next, in order. Returns and errors: as
 * amio_recv_pause. Thread: the registrar's thread (any registrar of the
 * poller).
 */
AMIO_API int amio_recv_resume(amio_registrar *r, uint64_t id);

/*
 * Set the connection settings of the operations r starts from now on (see
 * struct amio_conn_config); NULL: the defaults. Operations already started
 * keep theirs.
 * Returns: 0. Errors: -EINVAL (r NULL, low_water above high_water).
 * Thread: the registrar's thread.
 */
AMIO_API int amio_registrar_set_conn(amio_registrar *r, const struct amio_conn_config *cfg);

/*
 * Half-close: once every send queued on fd before this call has finished,
 * shutdown(fd, SHUT_WR) on the poll thread (IORING_OP_SHUTDOWN): the peer
 * reads EOF, recvs on fd go on. One AMIO_SHUTDOWN | AMIO_DONE
 * notification, res = 0 or -errno (-ENOTCONN, -ENOTSOCK, -EBADF); sends
 * made after it fail with -EPIPE, as send(2) would.
 * Returns: the id (> 0). Errors: -EBADF (fd < 0), -EINVAL (r NULL), -EAGAIN,
 * -ENOSPC, -ESHUTDOWN.
 * Thread: r's thread.
 */
AMIO_API int64_t amio_shutdown(amio_registrar *r, int fd, void *data);

/*
 * Close fd once every operation on it has ended: its recvs and accepts
 * end with -ECANCELED; its queued and in-flight sends and shutdowns end
 * with -ECANCELED, or with AMIO_CLOSE_GRACEFUL go out first (bounded by
 * their send timeouts). Each still ends with its one DONE, in order; then
 * the poll thread closes fd (IORING_OP_CLOSE on io_uring, close(2) on
 * epoll) and one AMIO_CLOSE | AMIO_DONE notification, res = 0 or -errno,
 * comes after every DONE of those operations (to each operation's
 * consumer, in its own order). The program makes no close(2). From the
 * call on, an operation r starts on fd ends at once with -EBADF until the
 * poll thread hands the close to the kernel (once the fd's operations
 * ended); from then on the number is free, may come back from socket(2)
 * or an accept before the close's DONE, and an operation on it runs on
 * whatever file has it then (the kernel's -EBADF if none).
 * Another registrar's calls are ordered with the close only as the poll
 * thread takes their commands, one registrar's queue at a time: one it
 * makes after the close, even on the same thread, may run before it (a
 * send then goes out, or ends -ECANCELED) or end with -EBADF; make a
 * connection's calls through one registrar. Readiness registrations of fd (amio_register) are
 * not touched: deregister them first (their poll keeps the file open).
 * amio_cancel of the close's id before the fd is closed ends it with
 * -ECANCELED, the fd open, the operations it ended still ended.
 * flags: 0 or AMIO_CLOSE_GRACEFUL.
 * Returns: the id (> 0). Errors: -EBADF (fd < 0), -EINVAL (r NULL, unknown
 * flags), -EAGAIN, -ENOSPC, -ESHUTDOWN.
 * Thread: r's thread.
 */
AMIO_API int64_t amio_close(amio_registrar *r, int fd, uint32_t flags, void *data);

/*
 * Connect a stream socket to addr (IORING_OP_CONNECT on io_uring; on epoll
 * connect(2) and EPOLLOUT, then SO_ERROR): one AMIO_CONNECT | AMIO_DONE
 * notification, res = 0 once connected, or -errno: -ECONNREFUSED (nothing
 * listens), -ETIMEDOUT (the kernel's SYN retries ran out, minutes),
 * -ENETUNREACH, -ECANCELED (amio_cancel, amio_close of fd), -ETIME
 * (amio_set_deadline: the way to bound it; then close the socket, its
 * state is the kernel's half-made connect). Then start the socket's recv
 * and sends (before DONE they would race the connect).
 * fd: a stream socket, O_NONBLOCK (checked: the epoll backend calls
 * connect(2) on the poll thread, which must not block). addr: addrlen
 * bytes, copied at the call (at most sizeof(struct sockaddr_storage)).
 * Returns: the id (> 0). Errors, at the call: -EBADF (fd < 0 or not
 * open), -EINVAL (r or addr NULL, addrlen 0 or too large, fd blocking),
 * -ENOTSOCK, -EAGAIN (queue full), -ENOSPC, -ESHUTDOWN.
 * Thread: r's thread.
 */
AMIO_API int64_t amio_connect(amio_registrar *r, int fd, const struct sockaddr *addr,
                              socklen_t addrlen, void *data);

/*
 * Read up to len bytes of a file at byte offset into buf (pread(2)): one
 * AMIO_PREAD | AMIO_DONE notification, res = the bytes read (fewer than len
 * only at the end of the file; 0 at or past it), or -errno (-EBADF: not
 * open for reading, -EIO, -ECANCELED, -ETIME). On io_uring
 * IORING_OP_READ: buffered reads of cached pages complete inline, the rest
 * in the kernel's io-wq workers. On epoll, where regular files are not
 * pollable, a pool of AMIO_FILE_THREADS threads (started at the first
 * file operation of the poller, ended by amio_poller_free) makes the
 * pread(2): each operation costs a hand-off to a thread and back (about
 * two context switches and an eventfd write, a few µs), and at most
 * AMIO_FILE_THREADS run at once; the rest wait in order.
 * A cancel or deadline ends an operation not yet begun at once
 * (-ECANCELED, -ETIME); one already running may run to its end (a file
 * thread's always does; io_uring's IORING_OP_ASYNC_CANCEL answers
 * -EALREADY for a request an io-wq worker runs), and its DONE then carries
 * what it did: a cancelled write may have written.
 * fd: a regular file or block device (checked with fstat(2) at the call,
 * so both backends answer alike: -ESPIPE for a pipe, socket or FIFO,
 * -EISDIR for a directory; use amio_recv for streams). len: 1 ..
 * AMIO_FILE_MAX_LEN bytes. offset: 0 .. INT64_MAX.
 * Ownership: buf is the kernel's until DONE: keep it allocated, do not
 * touch it.
 * Returns: the id (> 0). Errors, at the call: -EBADF (fd < 0 or not
 * open), -EINVAL (r or buf NULL, len 0 or too large, offset too large),
 * -ESPIPE, -EISDIR, -EINVAL (another file type), -EAGAIN, -ENOSPC,
 * -ESHUTDOWN.
 * Thread: r's thread.
 */
AMIO_API int64_t amio_pread(amio_registrar *r, int fd, void *buf, size_t len, uint64_t offset,
                            void *data);

/*
 * Write len bytes from buf to a file at byte offset (pwrite(2); an fd
 * opened with O_APPEND appends whatever the offset, as pwrite(2) does on
 * Linux): one AMIO_PWRITE | AMIO_DONE notification, res = the bytes
 * written (fewer than len only when the disk or RLIMIT_FSIZE runs out:
 * write the rest again to get its error), or -errno (-EBADF: not open for
 * writing, -ENOSPC, -EFBIG, -EIO, -ECANCELED, -ETIME). How it is carried
 * out, what it costs on each backend, and what a cancel does: as
 * amio_pread. A DONE says the bytes reached the page cache, not the disk
 * (fsync(2) for that).
 * Ownership: buf is borrowed until DONE: keep it unchanged and allocated.
 * Returns and errors: as amio_pread.
 * Thread: r's thread.
 */
AMIO_API int64_t amio_pwrite(amio_registrar *r, int fd, const void *buf, size_t len,
                             uint64_t offset, void *data);

/* Threads of the epoll backend's file pool (amio_pread, amio_pwrite). */
#define AMIO_FILE_THREADS 4u
/* Most bytes of one amio_pread or amio_pwrite: the kernel cuts every read
 * and write at MAX_RW_COUNT (INT_MAX & PAGE_MASK: 2^31 - 4096 with 4 KiB
 * pages), so a larger one would come back short; 2^31 - 65536 holds for
 * pages up to 64 KiB. */
#define AMIO_FILE_MAX_LEN 0x7fff0000u

/* ---- Queries ---------------------------------------------------------- */

/*
 * Name an error code returned by amio (negative errno), e.g. "-EAGAIN: queue
 * full, retry"; a code amio has no words of its own for gets the kernel's
 * name and text ("-ECONNREFUSED: Connection refused").
 * Returns: never NULL; a static string, or for a code amio has no words for
 * one in the calling thread's buffer, valid until its next call.
 * Thread: any thread.
 */
AMIO_API const char *amio_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* AMIO_H */
