/* Private structures shared by the event core's files; nothing here is public. */
#ifndef AMIO_INTERNAL_H
#define AMIO_INTERNAL_H

#include <limits.h>
#include <linux/futex.h>
#include <sys/socket.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "ck.h"

#include "amio.h"
#include "backend.h"

#define AMIO__CACHELINE 64

/* CLOCK_MONOTONIC in ns: deadlines, timeouts and the idle spin. */
static inline int64_t amio__now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Sleep while *word == seen, up to timeout_ns (-1: no limit); a wake, a
 * signal or a changed word ends it (the caller re-checks). */
static inline void amio__futex_wait(uint32_t *word, uint32_t seen, int64_t timeout_ns)
{
	struct timespec ts = {timeout_ns / 1000000000, timeout_ns % 1000000000};

	syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, seen, timeout_ns < 0 ? NULL : &ts, NULL, 0);
}

/* Bump *word and wake everyone asleep on it. */
static inline void amio__futex_bump(uint32_t *word)
{
	ck_pr_inc_32(word);
	syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* The poller's incoming-registrar stack once amio_poller_free ran. */
#define AMIO__INCOMING_CLOSED ((struct amio_registrar *)1)

/* ---- Ids ---------------------------------------------------------------
 * id = generation << 24 | slot. The registering thread takes a free slot and
 * bumps its generation, so ids are unique at once and never reused (39 bits of
 * generation per slot), and every CQE and command finds its entry in O(1).
 */
#define AMIO__SLOT_BITS 24
#define AMIO__SLOT_MASK ((1u << AMIO__SLOT_BITS) - 1)
#define AMIO__MAX_SLOTS AMIO__SLOT_MASK

static inline uint32_t amio__id_slot(uint64_t id)
{
	return (uint32_t)(id & AMIO__SLOT_MASK);
}

static inline uint64_t amio__id_gen(uint64_t id)
{
	return id >> AMIO__SLOT_BITS;
}

/* Slot word: generation << 4 | kind << 2 | state. Written by the allocating
 * registrar (FREE -> LIVE), by whoever deregisters (LIVE -> CLOSING, a CAS so
 * only one deregister or cancel wins), by the poll thread when a one-shot
 * timer fires (LIVE -> FIRED) and by whoever hands that notification out
 * (FIRED -> CLOSING, a CAS racing amio_cancel_timer's), and back to FREE by
 * the poll thread's release. Read at reap and hand-out time to filter
 * notifications of ids deregistered after their CQE was posted, and by the
 * poll thread to ignore commands that arrive after the id's release (FREE).
 * The kind lets a registrar refuse amio_cancel_timer on a socket at once. */
enum {
	AMIO__SLOT_FREE = 0,
	AMIO__SLOT_LIVE = 1,
	AMIO__SLOT_CLOSING = 2,
	AMIO__SLOT_FIRED = 3, /* a one-shot timer fired; its notification not handed out */
};
/* Ids are positive int64: a slot whose generation reaches this is retired
 * (never handed out again) instead of wrapping into a negative id. */
#define AMIO__MAX_GEN ((UINT64_C(1) << (63 - AMIO__SLOT_BITS)) - 1)
enum amio__kind {
	AMIO__KIND_SOCKET = 0,
	AMIO__KIND_TIMER = 1,
	AMIO__KIND_CHANNEL = 2,
	AMIO__KIND_IO = 3, /* a completion operation (io.c) */
};
#define AMIO__KIND_BIT(k) (1u << (k))
#define AMIO__KIND_ANY    15u

/* Slot words: read on every reap and hand-out (acquire under TSan, ck.h). */
static inline uint64_t amio__word_load(uint64_t *w)
{
	return ck_pr_load_64(w);
}

static inline void amio__word_store(uint64_t *w, uint64_t v)
{
	ck_pr_store_64(w, v);
}

/* The in_call handshake (a registrar entering and leaving a call, the
 * freeing thread waiting for it): release/acquire TSan can see, since it
 * does not model ck_pr's fences. Plain moves on x86 either way, and enter
 * adds the store-load fence its Dekker pair with the shutdown flag needs. */
static inline void amio__in_call_enter(uint32_t *w)
{
	/* in_call before the loads that follow (the shutdown flag); pairs with
	 * amio_poller_free's store and fence. */
#if defined(__SANITIZE_THREAD__)
	(void)__atomic_exchange_n(w, 1, __ATOMIC_SEQ_CST); /* an RMW: TSan has no fences */
#else
	ck_pr_store_32(w, 1);
	ck_pr_fence_store_load();
#endif
}

static inline void amio__in_call_leave(uint32_t *w)
{
#if defined(__SANITIZE_THREAD__)
	__atomic_store_n(w, 0, __ATOMIC_RELEASE);
#else
	ck_pr_fence_release();
	ck_pr_store_32(w, 0);
#endif
}

static inline uint32_t amio__in_call_load(uint32_t *w)
{
#if defined(__SANITIZE_THREAD__)
	return __atomic_load_n(w, __ATOMIC_ACQUIRE);
#else
	uint32_t v = ck_pr_load_32(w);

	ck_pr_fence_acquire();
	return v;
#endif
}

static inline uint64_t amio__slot_word(uint64_t gen, unsigned kind, unsigned state)
{
	return gen << 4 | (uint64_t)kind << 2 | state;
}

/* ---- Commands: registrar -> poller (SPSC ck_ring) ---------------------- */
enum amio__op {
	AMIO__OP_REGISTER = 1, /* socket */
	AMIO__OP_REREGISTER,
	AMIO__OP_DEREGISTER, /* any kind: socket removal, timer cancel, channel close */
	AMIO__OP_TIMER,      /* a timer: deadline (and period) from the caller's clock */
	AMIO__OP_CHANNEL,    /* a channel's registration */
	AMIO__OP_START,      /* an operation: its arguments are in reg.ios[slot] */
	AMIO__OP_DEADLINE,   /* an operation's deadline: deadline_ns */
	AMIO__OP_POOL_NEW,   /* data: the amio_pool to set up */
	AMIO__OP_POOL_FREE,  /* data: the amio_pool to free */
	AMIO__OP_PAUSE,      /* amio_recv_pause of an operation */
	AMIO__OP_RESUME,     /* amio_recv_resume */
};

struct amio__cmd {
	uint64_t id;
	void *data;
	int64_t deadline_ns; /* TIMER: CLOCK_MONOTONIC, taken by the caller */
	int64_t period_ns;   /* TIMER: 0 = one-shot */
	int32_t fd;
	uint32_t events;
	uint32_t op;
	uint32_t pad;
};

CK_RING_PROTOTYPE(amio_cmd, amio__cmd)
/* An inbox slot: the notification, and for a RECV that lends a buffer
 * its lent byte, which the consumer sets to AMIO__LENT_HELD when it takes
 * the note (amio_pool_put refuses a buffer whose note is not taken yet). */
struct amio__inote {
	amio_notification n;
	uint8_t *lend;
};
CK_RING_PROTOTYPE(amio_inote, amio__inote)

/* ---- Entries (poll thread only) ---------------------------------------- */
enum {
	AMIO__E_REGISTERED = 1u << 0,   /* REGISTER command applied */
	AMIO__E_DEREGISTERED = 1u << 1, /* DEREGISTER command applied */
	AMIO__E_ARMED = 1u << 2,        /* a poll request is in the kernel */
	AMIO__E_PENDING = 1u << 3,      /* on one of the poller's pending (re-arm) lists */
	AMIO__E_OVERFLOW = 1u << 4,     /* on an overflow list (its inbox's, or Amy mode's) */
	AMIO__E_EARLY_EVENTS = 1u << 5, /* REREGISTER applied before REGISTER */
	AMIO__E_PARKED = 1u << 6,       /* disarmed until reregister: ONESHOT fired, or error */
	AMIO__E_TICKING = 1u << 7,      /* interval timer past its first tick */
	AMIO__E_RETRY = 1u << 8,        /* retry_armgen's removal is due */
	AMIO__E_WATCH = 1u << 9,        /* on its inbox owner's watch list */
	AMIO__E_LEVEL_WAIT = 1u << 10,  /* inbox LEVEL: re-arm once the consumer waits again */
	AMIO__E_SEEN = 1u << 11,        /* the current poll request has posted a CQE */
	AMIO__E_POLLABLE = 1u << 12,    /* the fd was found pollable (checked once) */
};

struct amio__entry {
	uint64_t id;                      /* 0 while the slot is unused */
	void *data;                       /* user pointer from amio_register */
	struct amio_registrar *owner;     /* inbox registrar, or NULL (Amy mode) */
	struct amio__entry *next_pending; /* the poller's pending (re-arm) lists */
	struct amio__entry *next_ovf;     /* its overflow list */
	/* Its owner's watch list: entries waiting on the inbox consumer (a
	 * LEVEL re-arm until it waits again, a fired one-shot until its
	 * notification is taken). Doubly linked: a release unlinks at once. */
	struct amio__entry *watch_prev, *watch_next;
	uint64_t watch_pos; /* the owner's inbox count once its notification was queued */
	int32_t fd;
	uint32_t events;   /* AMIO_READ/WRITE | AMIO_LEVEL/ONESHOT */
	uint32_t armgen;   /* generation of the current poll request */
	uint32_t inflight; /* kernel requests whose final CQE is not reaped */
	uint32_t flags;    /* AMIO__E_* */
	uint32_t pending;  /* overflow: events not yet delivered */
	int32_t pending_error;
	uint32_t retry_armgen;       /* a removal to retry from the pending list */
	uint32_t note_idx;           /* Amy mode: its slot in out[] this wait */
	uint64_t note_seq;           /* the wait that note_idx belongs to */
	uint32_t kind;               /* enum amio__kind */
	uint64_t batch;              /* reap batch of the last timer notification */
	int64_t deadline_ns;         /* timers: next expiry (CLOCK_MONOTONIC) */
	int64_t period_ns;           /* timers: interval, 0 = one-shot */
	struct __kernel_timespec ts; /* timers: read by the kernel at submit time */
};

/* ---- Operations (io.c, io_poll.c, pool.c) --------------------------------
 * An operation's arguments are written into reg.ios[slot] by the starting
 * registrar before it queues AMIO__OP_START (the ring's release/acquire
 * publishes them); from then on the struct is the poll thread's.
 */
enum amio__io_type {
	AMIO__IO_ACCEPT = 1,
	AMIO__IO_RECV,
	AMIO__IO_SEND,
	AMIO__IO_SHUTDOWN,
	AMIO__IO_CLOSE,
	AMIO__IO_CONNECT,
	AMIO__IO_PREAD, /* a file read at offset: iov[0], offset */
	AMIO__IO_PWRITE
};
extern const uint32_t amio__io_event[]; /* AMIO_ACCEPT ... by type */
#define AMIO__ACCEPT_HOLD  64 /* accepted fds held inline while the consumer has no room */
#define AMIO__ACCEPT_PAUSE 32 /* ... from here on the accept pauses */
/* An accept out of fds or memory listens again after 10 ms, doubling while
 * it goes on failing, at most 1 s (nginx waits 500 ms). */
#define AMIO__ACCEPT_BACKOFF_MIN_MS 10u
#define AMIO__ACCEPT_BACKOFF_MAX_MS 1000u
#define AMIO__NO_BID                0xffffu
enum {
	AMIO__IO_ENDING = 1u << 0,      /* cancel or deadline: end once the kernel let go */
	AMIO__IO_ENDED = 1u << 1,       /* DONE made */
	AMIO__IO_STARVED = 1u << 2,     /* recv: on its pool's starved list */
	AMIO__IO_PAUSED = 1u << 3,      /* accept: its hold is full; re-armed once drained */
	AMIO__IO_ZC = 1u << 4,          /* send: zero-copy, a notification CQE still due */
	AMIO__IO_QUEUED = 1u << 5,      /* send: on its fd's send queue */
	AMIO__IO_CANCEL_SENT = 1u << 6, /* the request's cancel is in the kernel */
	AMIO__IO_ORPHAN = 1u << 7,      /* its inbox registrar is gone: notes dropped */
	AMIO__IO_POLL_FIRST = 1u << 8,  /* send: the kernel said EAGAIN: wait for room first */
	AMIO__IO_WOKEN = 1u << 9,       /* recv: re-armed for a free buffer, no completion yet */
	AMIO__IO_BACKOFF = 1u << 10,    /* accept: out of fds or memory: re-armed at timer_ns */
	AMIO__IO_LINKED = 1u << 11,     /* recv, accept: on its fd's list of operations */
	AMIO__IO_FLOW = 1u << 12,       /* recv: paused, its fd's sends above the high-water mark */
	AMIO__IO_HELD = 1u << 13,       /* recv: paused by amio_recv_pause */
};
/* A row of the poll thread's fd table (io_fd.c). */
struct amio__fdq {
	uint32_t first, last; /* its send queue: sends, shutdowns, closes, by slot */
	uint32_t ops;         /* its first recv or accept (linked by next_fd_op) */
	uint32_t closing;     /* the amio_close under way (0: none) */
	uint32_t advancing;   /* amio__conn_advance runs for it (no recursion) */
	uint32_t pad;
	uint64_t queued; /* bytes of its sends not done yet (flow control) */
};
struct amio_pool;
/* 65,536 io_uring buffer groups (a 16-bit bgid): the most pools live. */
#define AMIO__POOL_GROUP_WORDS 1024u
struct amio__io {
	/* Set by the starting registrar. */
	uint32_t type;  /* enum amio__io_type */
	uint32_t flags; /* AMIO_SEND_ZC */
	struct amio_pool *pool;
	struct amio_registrar *starter;
	uint64_t total;  /* send, pread, pwrite: bytes */
	uint64_t offset; /* pread, pwrite: where in the file */
	void *buf0;      /* send, pread, pwrite: the caller's buf (its DONE's .buf) */
	uint32_t niov;   /* send: iovecs in iov[]; pread, pwrite: 1 */
	socklen_t addrlen;
	union {
		struct iovec iov[AMIO_SENDV_MAX];
		struct sockaddr_storage addr; /* connect: addrlen bytes */
	};
	/* Poll thread. */
	uint32_t state;   /* AMIO__IO_* */
	uint32_t first;   /* send: iov[first] is the next piece (advanced in place) */
	uint64_t sent;    /* send: bytes handed to the kernel */
	int32_t end_res;  /* why it ends early: -ECANCELED, -ETIME */
	int32_t done_res; /* DONE's res, held while the consumer has no room */
	bool done_held;
	uint32_t next_send;  /* slot of the next send on the same fd (0: none) */
	uint32_t next_fd_op; /* recv, accept: the next of its fd's other operations */
	/* From the starting registrar's amio_conn_config (0: none). */
	uint32_t idle_ms;         /* recv */
	uint32_t send_timeout_ms; /* send */
	uint64_t high_water;      /* recv: pause above it ... */
	uint64_t low_water;       /* ... resume at or below it */
	int64_t last_ns;          /* recv: the last bytes (idle) */
	uint32_t next_starved;
	uint32_t woken_epoch;          /* recv: p->reap_epoch when a refill woke it (IO_WOKEN) */
	uint16_t held_head, held_tail; /* recv: notes held, through pool->held[bid] */
	uint32_t held_n;               /* recv and accept: notes held */
	uint32_t acc_head;             /* accept: a ring of held fds: acc[], or */
	uint32_t acc_cap;              /* ... acc_big of acc_cap once acc[] was full */
	int32_t *acc_big;
	int32_t acc[AMIO__ACCEPT_HOLD];
	int64_t deadline_ns; /* amio_set_deadline's, CLOCK_MONOTONIC ns (0: none) */
	int64_t timer_ns;    /* the poll thread's own: accept back-off ... (0: none) */
	uint32_t backoff_ms; /* accept: the next back-off after a resource error */
	uint32_t dl_pos;     /* 1 + its place in the poller's deadline heap, 0: none */
	struct msghdr msg;   /* io_uring sendmsg: read by the kernel at submit */
};

/* Close an accept note's fd that nobody will see; a note of a back-off
 * (res < 0: -EMFILE ...) holds none. */
static inline void amio__close_accepted(int32_t res)
{
	if (res >= 0)
		close(res);
}

/* An accept's held fd i (0 = the oldest). */
static inline int32_t *amio__acc_at(struct amio__io *io, uint32_t i)
{
	return io->acc_big ? &io->acc_big[(io->acc_head + i) % io->acc_cap]
	                   : &io->acc[(io->acc_head + i) % AMIO__ACCEPT_HOLD];
}

/* A buffer's lent byte: in the ring or the kernel (FREE); in a notification
 * the poll thread made but its consumer has not taken yet (NOTED); with the
 * consumer, who alone may put it (HELD). NOTED apart from HELD is what
 * lets amio_pool_put tell a second put of a buffer from a put of the same
 * buffer lent again meanwhile (issue 18: two recvs in one buffer). */
enum { AMIO__LENT_FREE = 0, AMIO__LENT_NOTED = 1, AMIO__LENT_HELD = 2 };

/* A pool's buffers go round a provided buffer ring: its consumer thread adds
 * the buffers it gives back (the ring's only producer), the kernel (io_uring)
 * or the poll thread (epoll) takes them. */
struct amio_pool {
	struct io_uring_buf_ring *br; /* count entries, page aligned */
	unsigned char *bufs;          /* count x size bytes */
	size_t br_len, bufs_len;
	uint32_t count, size, mask;
	amio_poller *p;
	struct amio_registrar *r;
	int32_t err;       /* the buffer ring's registration failed: recvs end with it */
	uint16_t bgid;     /* io_uring buffer group */
	bool registered;   /* poll thread: bgid is registered */
	bool applied;      /* poll thread: POOL_NEW applied */
	bool orphan;       /* poll thread: its inbox registrar is gone: free once idle */
	uint32_t running;  /* recvs started, not ended (registrar ++, poll thread --) */
	uint32_t freed;    /* amio_pool_free ran: no new recv */
	uint64_t taken;    /* buffers the kernel took (poll thread) */
	uint64_t returned; /* buffers given back (consumer) */
	uint32_t ep_head;  /* epoll: the next ring entry the poll thread takes */
	uint32_t starved;  /* a recv waits for a buffer: the next put kicks the poller */
	uint32_t queued;   /* on the poller's refilled stack */
	bool dead;         /* poll thread: destroyed while queued: the refill walk frees it */
	uint8_t *lent;     /* count: AMIO__LENT_* of each buffer */
	struct amio_pool *next_refilled; /* the poller's refilled stack (CAS push) */
	struct amio_pool *next_all;      /* poll thread: live pools */
	struct amio_pool **prev_all;     /* poll thread: the link to this one (O(1) unlink) */
	uint32_t starved_head;           /* poll thread: recvs waiting, oldest first, by slot */
	uint32_t starved_tail;           /* ... and the newest */
	/* Poll thread: buffers promised to recvs a refill woke, until they are
	 * heard from or the poller reaped everything after submitting them
	 * (amio__pools_reaped): a woken recv with nothing to read posts
	 * nothing, and must not hold its buffer from the others for good. */
	uint32_t waking;
	struct amio_pool *next_waking; /* the poller's waking list */
	bool on_waking;
	struct amio__held {
		int32_t res;
		uint16_t next;
	} * held; /* count: a held note per lent buffer, linked per recv */
};

/* A FIFO of entries whose notifications found no room (an inbox, or an Amy
 * mode out[]), linked through next_ovf; readiness coalesces per entry. */
struct amio__ovf {
	struct amio__entry *head, *tail;
};

/* ---- Registry: slots, generations, entries ---------------------------- */
struct amio__registry {
	uint32_t cap;                  /* usable slots: 1 .. cap (slot 0 unused) */
	uint64_t *words;               /* cap + 1 slot words */
	void **objs;                   /* cap + 1: a channel id's amio_channel (any thread) */
	struct amio__io *ios;          /* cap + 1: operations (struct amio__io) */
	struct amio__entry *entries;   /* cap + 1 entries, poll thread only */
	uint32_t *next_free;           /* cap + 1 links of the free stack */
	size_t words_len, entries_len; /* mapping lengths */
	size_t next_len, objs_len, ios_len;
	/* Freed slots, a LIFO stack: tag << AMIO__SLOT_BITS | top slot (0 =
	 * empty). The poller pushes, registrars pop; every CAS bumps the tag,
	 * so a pop that read a stale link fails (ABA). A stack, not a ring:
	 * memory stays proportional to the most slots ever live at once, where
	 * a ring of cap entries walks (and keeps resident) all of its pages. */
	uint64_t free_head;
	uint64_t fresh; /* next never-used slot (ck_pr_faa) */
};

/* Address space only (mmap MAP_NORESERVE): pages become resident as they are
 * first touched. NULL on failure. Any thread. */
void *amio__reserve(size_t len);
int amio__registry_init(struct amio__registry *reg, uint32_t cap);
void amio__registry_destroy(struct amio__registry *reg);
/* Take a slot and make a new id of a kind (any thread). Returns the id or -ENOSPC. */
int64_t amio__registry_alloc(struct amio__registry *reg, unsigned kind);
/* True if id is live now and of one of kinds (a mask of AMIO__KIND_BIT);
 * any thread; racy by nature, exact for the owner. */
bool amio__registry_live(const struct amio__registry *reg, uint64_t id, unsigned kinds);
/* True if id names its slot's current generation and is not FREE: LIVE,
 * CLOSING or FIRED (any thread). */
bool amio__registry_known(const struct amio__registry *reg, uint64_t id);
/* LIVE or FIRED -> CLOSING for id if of one of kinds (any thread). 0 or -ENOENT. */
int amio__registry_close(struct amio__registry *reg, uint64_t id, unsigned kinds);
/* A one-shot timer fired: LIVE -> FIRED (poll thread). False if a cancel won. */
bool amio__registry_fire(struct amio__registry *reg, uint64_t id);
/* Hand out a fired one-shot's notification: FIRED -> CLOSING (its consumer's
 * thread). False if amio_cancel_timer won: the notification is dropped. */
bool amio__registry_take(struct amio__registry *reg, uint64_t id);
/* The object of a live id (a channel), stored once by its creator before it
 * publishes it (any thread); NULL if id is not live or has none. */
void amio__registry_set_obj(struct amio__registry *reg, uint64_t id, void *obj);
void *amio__registry_obj(const struct amio__registry *reg, uint64_t id);
/* Give a closed slot back as FREE (poll thread only); retires a slot at
 * AMIO__MAX_GEN. */
void amio__registry_release(struct amio__registry *reg, uint32_t slot);

static inline struct amio__entry *amio__registry_entry(struct amio__registry *reg, uint64_t id)
{
	return &reg->entries[amio__id_slot(id)];
}

/* Private bit in notification events: the poller itself finished the id
 * (a fired one-shot timer), so it is delivered although no longer live. */
#define AMIO__FINAL (1u << 31)
/* Private bit: an operation's notification, delivered whatever the id's
 * state (it may lend a buffer; the id may be finished and reused). */
#define AMIO__IONOTE (1u << 30)

/* ---- Doorbell: a sleeper's state, so a wakeup is sent once per sleep ---- */
enum { AMIO__RUNNING = 0, AMIO__SLEEPING = 1, AMIO__NOTIFIED = 2 };

/* ---- Registrar --------------------------------------------------------- */
struct amio_registrar {
	/* Producer side: the registrar's thread. */
	struct ck_ring cmdq;
	struct amio__cmd *cmdq_buf;
	amio_poller *p;
	uint32_t flags;
	uint32_t refs;         /* owner + poller; the last one frees */
	uint32_t closed;       /* set by amio_registrar_free */
	uint32_t overflowed;   /* poller has notifications the inbox had no room for */
	uint32_t in_call;      /* inside a call that touches the poller (shutdown handshake) */
	uint32_t level_watch;  /* poll thread: a LEVEL entry waits for our next wait (kick then) */
	uint32_t room_seq;     /* futex: bumped by the poll thread when it makes room ... */
	uint32_t room_waiting; /* ... for an owner asleep in amio_registrar_wait_room */

	/* Inbox: poller produces, registrar consumes. */
	struct ck_ring inbox;
	struct amio__inote *inbox_buf;
	uint32_t doorbell;     /* AMIO__RUNNING/SLEEPING/NOTIFIED of the inbox waiter */
	uint32_t wake_req;     /* amio_registrar_wake: the next wait returns (any thread sets) */
	int32_t queue_wait_ms; /* amio_registrar_set_queue_wait: 0 = -EAGAIN, -1 = no limit */
	struct amio_conn_config conn; /* amio_registrar_set_conn, resolved (no 0 marks) */
	struct amio__waiter waiter;
	/* Written by the consumer, read by the poll thread (watch list):
	 * notifications taken from the inbox so far, and that count as of the
	 * start of its latest amio_registrar_wait. */
	uint64_t popped, wait_mark;

	struct amio_registrar *next_new; /* the poller's incoming stack */

	/* Poll thread only. */
	struct amio_registrar *next;         /* adopted registrars */
	struct amio_registrar *next_touched; /* inboxes filled this iteration */
	bool touched;
	struct amio__ovf ovf;
	uint64_t pushed;                 /* notifications queued in the inbox so far */
	uint64_t popped_seen, mark_seen; /* popped and wait_mark at the last watch pass */
	uint32_t level_n;                /* LEVEL entries on the watch list */
	struct amio__entry *watch_head;  /* see struct amio__entry */
};

/* ---- Channel ------------------------------------------------------------
 * A bounded MPSC queue of nslots fixed-size slots, each a 64-bit sequence
 * word followed by the message. Position q (a 64-bit count of sends) lives in
 * slot q mod nslots, whose sequence word reads q when the slot is free for
 * it, q + 1 once q's message is published and q + nslots once the receiver
 * took it (free for the next lap). Senders only CAS tail: a sender never
 * waits for another one to finish its copy (ck_ring's MP commit does).
 */
struct amio_channel {
	/* Senders' line: every send CASes tail and counts itself in senders. */
	uint64_t tail CK_CC_CACHELINE;
	uint32_t senders; /* sends in progress: the free waits them out */

	/* Read-mostly after amio_channel_new. */
	unsigned char *slots CK_CC_CACHELINE;
	uint64_t nslots;   /* capacity, at least 2 (the sequence needs two states) */
	uint64_t capacity; /* exact bound; below nslots only for capacity 1 */
	uint32_t stride;   /* bytes per slot: 8 + msg_size, rounded up to 8 */
	uint32_t msg_size;
	bool pow2;       /* nslots is a power of two: mask instead of divide */
	uint32_t closed; /* amio_channel_free ran */
	amio_poller *p;
	uint64_t id;
	struct amio_channel *next_all;   /* every channel, freed with the poller */
	struct amio_channel *next_local; /* poll thread only: popped, not yet handled */

	/* Raise state: written once per empty-to-non-empty send and per drain.
	 * raised: 1 from a send on an empty channel to an empty try_recv. */
	uint32_t raised CK_CC_CACHELINE;
	uint32_t queued;                 /* on the poller's ready stack */
	struct amio_channel *next_ready; /* the poller's ready stack (CAS push) */

	/* Receiver's line. */
	uint64_t head CK_CC_CACHELINE;     /* next position to take (receiver only) */
	uint64_t freed, wake_at;           /* taken since senders slept; wake them at wake_at */
	uint32_t drained;                  /* taken since the last -EAGAIN */
	uint32_t space_seq, space_waiters; /* futex for amio_channel_send_wait */
};

/* ---- Poller ------------------------------------------------------------ */

/* The default idle spin (spin.c): how long the poll thread watches its
 * queues before it sleeps, learnt from what its spins caught. */
#define AMIO__SPIN_MIN_NS  2000
#define AMIO__SPIN_MAX_NS  5000
#define AMIO__SPIN_BACKOFF 64 /* sleeps without a probe, at most */
struct amio__spin {
	uint64_t cqes_seen; /* stats.cqes at the last idle point */
	int64_t window_ns;  /* spin this long; 0: sleep at once (or probe) */
	uint32_t skip;      /* sleeps left before the next probe */
	uint32_t backoff;   /* skip after the next failed probe (doubles) */
};

/* A channel drain that took more than one message: messages stream in, and
 * sleeping batches them (one wakeup per hundreds) where a spin would catch
 * them one or two at a time, a notification each (measured: 26M vs 9M
 * messages/s). Written by the channel's receiver, read by the poll thread;
 * a hint, so relaxed. */
#define AMIO__SPIN_STREAMING 1u

struct amio_poller {
	struct amio__backend be;
	struct amio__registry reg;
	/* Read-mostly. shutdown is loaded by every registrar and channel call
	 * and written once: on a line away from the ring (the poll thread
	 * writes it) and from state and ready (sleeps and raises write them). */
	uint32_t queue_entries CK_CC_CACHELINE, inbox_entries;
	uint32_t cfg_flags;
	uint64_t serial;   /* unique per poller made (amio__is_poll_thread) */
	int64_t spin_ns;   /* spin_us: watch the queues this long before sleeping */
	uint32_t shutdown; /* amio_poller_free has run */

	/* Shared with registrars. */
	uint32_t state CK_CC_CACHELINE;  /* AMIO__RUNNING/SLEEPING/NOTIFIED */
	uint32_t stop;                   /* amio_poller_stop requested */
	uint32_t stoppers;               /* amio_poller_stop calls in flight (the free waits) */
	uint32_t refs;                   /* poller + each registrar */
	struct amio_registrar *incoming; /* registrars not yet adopted (CAS stack) */
	struct amio_channel *ready;      /* channels raised since the last drain (CAS stack) */
	struct amio_channel *channels;   /* every channel ever made (CAS stack) */
	struct amio_pool *refilled;      /* pools given a buffer while a recv starved (CAS stack) */

	/* Poll thread only. */
	struct amio_registrar *registrars CK_CC_CACHELINE;
	struct amio_registrar *touched;
	struct amio_registrar *graveyard; /* retired, freed once no SQE may name their ring */
	/* Re-arms and removal retries: every loop iteration (inbox entries,
	 * retries), or at the start of the next wait call (Amy mode: its
	 * caller has not read the readiness yet, a re-arm now reports twice). */
	struct amio__entry *pending_head, *amy_pending;
	struct amio__ovf ovf;                         /* Amy mode: notifications past cap */
	struct amio_channel *ready_head, *ready_tail; /* popped ready channels */
	struct amio__spin spin;                       /* the adaptive idle spin (spin_us 0) */
	uint32_t spin_hint; /* AMIO__SPIN_STREAMING, from channel receivers */
	uint64_t batch;     /* reap batches: timer ticks coalesce within one */
	uint64_t wait_seq;  /* Amy mode: one notification per id per wait */
	/* Operations (io_poll.c): deadlines, a min-heap by ns; each fd's
	 * send queue (first and last slot, one send in flight per fd); pools. */
	struct amio__deadline {
		int64_t ns;
		uint32_t slot;
	} * dl;
	uint32_t dl_n;
	size_t dl_len;
	struct amio__fdq *fdq; /* per fd (io_fd.c) */
	uint32_t fdq_cap;      /* fds below it have a row */
	size_t fdq_len;
	struct amio_pool *pools;
	struct amio_pool *waking_pools; /* pools with buffers promised (pool.c) */
	uint32_t reap_epoch;            /* reaps that emptied the CQ with nothing to submit */
	uint64_t
	    bgids[AMIO__POOL_GROUP_WORDS]; /* buffer group ids in use (CAS bitmap, any thread) */
	bool enabled;
	pthread_t poll_thread;
	amio_notification *out; /* where this wait's notifications go */
	size_t out_cap, out_n;
	size_t stash_n; /* Amy-mode notifications reaped by amio_poller_run */
	amio_notification stash[64];
	uint8_t *stash_lend[64]; /* the lent byte of stash[i]'s buffer, or NULL */

	struct amio_poller_stats stats CK_CC_CACHELINE;
	uint64_t wakeups_sent;   /* ck_pr_faa by registrars: its own line, rarely written */
	uint64_t wakeups_failed; /* ck_pr_faa: wakeup sends that failed (tried again) */
};

/* ---- The backend, through its ops table (backend.h) --------------------- */
static inline int amio__backend_enable(amio_poller *p)
{
	return p->be.ops->enable(p);
}
static inline void amio__backend_destroy(amio_poller *p)
{
	p->be.ops->destroy(p);
}
static inline int amio__backend_arm(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	return p->be.ops->arm(p, e, slot);
}
static inline int amio__backend_remove(amio_poller *p, struct amio__entry *e, uint32_t slot,
                                       uint32_t armgen)
{
	return p->be.ops->remove(p, e, slot, armgen);
}
static inline int amio__backend_disarm(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	return p->be.ops->disarm(p, e, slot);
}
static inline void amio__backend_release(amio_poller *p, uint32_t slot)
{
	p->be.ops->release(p, slot);
}
static inline int amio__backend_cancel_io(amio_poller *p, struct amio__entry *e, uint32_t slot)
{
	return p->be.ops->cancel_io(p, e, slot);
}
static inline int amio__backend_pool_add(amio_poller *p, struct amio_pool *pool)
{
	return p->be.ops->pool_add(p, pool);
}
static inline void amio__backend_pool_del(amio_poller *p, struct amio_pool *pool)
{
	p->be.ops->pool_del(p, pool);
}
static inline int amio__backend_wake_waiter(amio_poller *p, struct amio__waiter *w)
{
	return p->be.ops->wake_waiter(p, w);
}
static inline int amio__backend_enter(amio_poller *p, bool wait, int64_t timeout_ns)
{
	return p->be.ops->enter(p, wait, timeout_ns);
}
static inline int amio__backend_submit(amio_poller *p)
{
	return p->be.ops->submit(p);
}
static inline bool amio__backend_ready(amio_poller *p)
{
	return p->be.ops->ready(p);
}
static inline bool amio__backend_sq_pending(amio_poller *p)
{
	return p->be.ops->sq_pending(p);
}
static inline void amio__backend_begin_wait(amio_poller *p)
{
	p->be.ops->begin_wait(p);
}
static inline int amio__backend_pollable(amio_poller *p, int fd)
{
	return p->be.ops->pollable(p, fd);
}
static inline unsigned amio__backend_reap(amio_poller *p, struct amio__completion *out,
                                          unsigned max)
{
	return p->be.ops->reap(p, out, max);
}
static inline int amio__backend_wake_poller(amio_poller *p, struct amio__waiter *from)
{
	return p->be.ops->wake_poller(p, from);
}
static inline int amio__backend_wake_waiter_now(amio_poller *p, struct amio__waiter *w)
{
	return p->be.ops->wake_waiter_now(p, w);
}
static inline int amio__waiter_init(amio_poller *p, struct amio__waiter *w, bool inbox,
                                    uint32_t *doorbell)
{
	return p->be.ops->waiter_init(p, w, inbox, doorbell);
}
static inline void amio__waiter_destroy(struct amio__waiter *w)
{
	if (w->ops)
		w->ops->waiter_destroy(w);
}
static inline int amio__waiter_wait(struct amio__waiter *w, int64_t timeout_ns)
{
	return w->ops->waiter_wait(w, timeout_ns);
}

/* Relaxed counter bump by the one thread that writes the counter; readers on
 * other threads use ck_pr_load_64, so there is no data race and no RMW cost. */
#define AMIO__STAT_ADD(p, field, n)                                                                \
	ck_pr_store_64(&(p)->stats.field, ck_pr_load_64(&(p)->stats.field) + (n))

/* spin.c, poll thread only: the window for this sleep (0: none); then what
 * the spin caught: work after caught_ns, or -1 for nothing. */
int64_t amio__spin_window(amio_poller *p);
void amio__spin_caught(amio_poller *p, int64_t window_ns, int64_t caught_ns);

/* poller.c, used by registrar.c, timer.c and channel.c */
extern __thread amio_poller *amio__tls_poller; /* the poller this thread polls */
extern __thread uint64_t amio__tls_serial;
static inline bool amio__is_poll_thread(const amio_poller *p)
{
	return amio__tls_poller == p && amio__tls_serial == p->serial;
}
void amio__poller_kick(amio_poller *p, amio_registrar *r);
void amio__poller_unref(amio_poller *p);
bool amio__entry_live(amio_poller *p, const struct amio__entry *e);
/* Give the slot back once deregistered, with nothing in flight or queued. */
void amio__maybe_free(amio_poller *p, struct amio__entry *e, uint32_t slot);
void amio__reconcile(amio_poller *p, struct amio__entry *e, uint32_t slot);
/* Queue e for a re-arm or removal retry (the list follows its owner). */
void amio__push_pending(amio_poller *p, struct amio__entry *e);

/* notify.c: notifications, from a completion to the hands of the consumer. */
void amio__notify(amio_poller *p, struct amio__entry *e, uint32_t events, int32_t error);
/* At hand-out time, on the consumer's thread: keep n only if its id is
 * still live, so nothing is handed out after its amio_deregister returned;
 * a fired one-shot (AMIO__FINAL) only if no amio_cancel_timer won. */
bool amio__deliverable(amio_poller *p, amio_notification *n);
/* Amy mode, poll thread: amio__deliverable, and a fired one-shot handed out
 * is released at once. */
bool amio__hand_out(amio_poller *p, amio_notification *n);
/* Amy mode, poll thread: drop what was deregistered since it was made,
 * release fired one-shots handed out. True if any is left to return. */
bool amio__filter_out(amio_poller *p);
/* Move overflowed notifications into an inbox / out[] as room allows. */
void amio__flush_inbox(amio_poller *p, amio_registrar *r);
void amio__flush_amy(amio_poller *p);
/* Ring the doorbells of inboxes filled this iteration (SQEs, sent with the
 * next enter). True if any inbox was filled. */
bool amio__ring_touched(amio_poller *p);
/* The inbox consumer's progress: re-arm LEVEL entries it waited past,
 * release fired one-shots it took. */
void amio__watch_check(amio_poller *p, amio_registrar *r);
bool amio__watch_due(amio_registrar *r);
void amio__watch_unlink(struct amio__entry *e);
/* retire(): forget r's watch list (its entries are orphaned next). */
void amio__watch_drop(amio_registrar *r);
/* The id's entry, set up for it if no command of this generation came yet;
 * NULL if the id is stale (its slot moved on). */
struct amio__entry *amio__entry_for(amio_poller *p, uint64_t id);

/* entry.c: re-arms and removal retries on one of the pending lists; take
 * an entry's request out of the kernel (its CQEs never reported again). */
void amio__disarm(amio_poller *p, struct amio__entry *e, uint32_t slot);
void amio__run_pending(amio_poller *p, struct amio__entry **list);

/* commands.c: apply every queued command, retire freed registrars; free
 * retired registrars once no queued SQE can name their rings. */
void amio__drain(amio_poller *p);
void amio__bury(amio_poller *p);

/* registrar.c */
void amio__registrar_unref(amio_registrar *r);
/* Poll thread, after taking commands from a queue it found full: wake an
 * owner asleep in amio_registrar_wait_room. */
void amio__registrar_room(amio_registrar *r);
/* Allocate an id of kind and queue c for it (c->id filled). id or -errno. */
int64_t amio__registrar_add(amio_registrar *r, unsigned kind, struct amio__cmd *c);
/* Allocate an operation's id, write its arguments to reg.ios[slot] and queue
 * c (AMIO__OP_START) for it. id or -errno. */
int64_t amio__registrar_add_io(amio_registrar *r, struct amio__cmd *c, const struct amio__io *io);
/* Queue a command that takes no id (pools), or one for live_id, an operation
 * that must still be live (-ENOENT otherwise). 0 or -errno. */
int amio__registrar_push(amio_registrar *r, struct amio__cmd *c, uint64_t live_id);
/* Close id (one of kinds) and queue its DEREGISTER. 0 or -errno. */
int amio__registrar_close(amio_registrar *r, uint64_t id, unsigned kinds);

/* Completion handlers, fed by the poll loop's reap (amio__backend_reap's
 * records). */
void amio__on_poll(amio_poller *p, uint32_t slot, uint32_t armgen, int32_t res, bool more);
void amio__on_timer(amio_poller *p, uint32_t slot, uint32_t armgen, int32_t res, bool more);
/* A removal that met its target mid-completion (-EALREADY): try again. */
void amio__on_remove_busy(amio_poller *p, uint32_t slot, uint32_t armgen);

/* channel.c: poll thread side. */
void amio__channels_pop(amio_poller *p);
void amio__channels_handle(amio_poller *p);
/* amio_poller_free, after the shutdown store: wake senders asleep in
 * amio_channel_send_wait, then wait until no sender is inside a call. */
void amio__channels_shutdown(amio_poller *p);
void amio__channels_free_all(amio_poller *p);
/* Hand-out time (any thread): an AMIO_CHANNEL notification made before
 * its channel was drained (try_recv returned -EAGAIN) or freed. */
bool amio__channel_stale(amio_poller *p, uint64_t id);

/* io_poll.c: operations on the poll thread. */
int amio__io_init(amio_poller *p);
void amio__io_destroy(amio_poller *p);
/* START, DEREGISTER (a cancel, or the orphaning of an inbox registrar's
 * operation) and DEADLINE commands for an operation's entry. */
void amio__io_apply(amio_poller *p, struct amio__entry *e, const struct amio__cmd *c);
void amio__io_reconcile(amio_poller *p, struct amio__entry *e, uint32_t slot);
void amio__io_maybe_free(amio_poller *p, struct amio__entry *e, uint32_t slot);
void amio__on_io(amio_poller *p, const struct amio__completion *c);
/* Deadlines: cancel what is due; the ns until the next one (-1: none). */
void amio__io_expire(amio_poller *p);
int64_t amio__io_next_deadline_ns(amio_poller *p);
void amio__io_begin_end(struct amio__io *io, int32_t why);
bool amio__io_cancel_request(amio_poller *p, struct amio__entry *e, uint32_t slot);
int amio__conn_start(amio_poller *p, uint32_t slot, int fd);
void amio__conn_sent(amio_poller *p, int fd, uint64_t bytes);
void amio__conn_advance(amio_poller *p, int fd);
bool amio__conn_close_ready(amio_poller *p, int fd);
void amio__conn_timer(amio_poller *p, uint32_t slot);
/* amio_recv_pause (hold true) and amio_recv_resume of a recv. */
void amio__conn_hold(amio_poller *p, uint32_t slot, bool hold);
int amio__fd_fit(amio_poller *p, int fd);
void amio__fd_queue(amio_poller *p, uint32_t slot, int fd);
void amio__fd_dequeue(amio_poller *p, uint32_t slot, int fd);
void amio__fd_link(amio_poller *p, uint32_t slot, int fd);
void amio__fd_unlink(amio_poller *p, uint32_t slot, int fd);
void amio__dl_remove(amio_poller *p, uint32_t slot);
void amio__dl_update(amio_poller *p, uint32_t slot);
uint32_t amio__dl_due(amio_poller *p, int64_t now);
/* An operation's held notes went out (notify.c): resume a paused accept,
 * free a finished operation. */
void amio__io_flushed(amio_poller *p, struct amio__entry *e, uint32_t slot);
/* An inbox registrar is gone: end its operation, drop its notes. */
void amio__io_orphan(amio_poller *p, struct amio__entry *e, uint32_t slot);

/* notify.c: an operation's notification (never coalesced, never filtered;
 * held in order while its consumer has no room). bid: the pool buffer of
 * an AMIO_RECV with bytes, else AMIO__NO_BID. */
void amio__notify_io(amio_poller *p, struct amio__entry *e, uint32_t events, int32_t res,
                     uint16_t bid);
/* A freed inbox registrar's inbox, emptied by the poll thread: accepted
 * fds in it are closed. */
void amio__inbox_drop(amio_registrar *r);
/* Emit what an operation holds, in order; true once nothing is held. */
bool amio__io_flush(amio_poller *p, struct amio__entry *e);

/* pool.c */
/* Apply AMIO__OP_POOL_NEW / AMIO__OP_POOL_FREE (poll thread). */
void amio__pool_apply(amio_poller *p, const struct amio__cmd *c);
/* Put the pool on the poller's refilled stack (any thread); false if it is
 * there already. */
bool amio__pool_queue_refill(amio_pool *pool);
/* Resume the recvs of pools given buffers since they starved (poll thread). */
void amio__pools_refilled(amio_poller *p);
/* Free every pool (amio_poller_free), and an orphaned idle one. */
void amio__pools_free_all(amio_poller *p);
void amio__pool_orphan(amio_poller *p, struct amio_registrar *r);
void amio__pool_maybe_free(amio_poller *p, struct amio_pool *pool);
/* Poll thread: the starved list of a pool (FIFO by slot): add a recv that
 * found the ring empty, take one off (it ended); buffers free to take now. */
void amio__pool_starve(amio_poller *p, struct amio_pool *pool, uint32_t slot);
void amio__pool_unstarve(amio_poller *p, struct amio_pool *pool, uint32_t slot);
uint32_t amio__pool_available(amio_poller *p, const struct amio_pool *pool);
/* A woken recv's first completion (took the buffer, or not), or its end. */
void amio__pool_woken(amio_poller *p, struct amio_pool *pool, struct amio__io *io);
/* The CQ is empty and nothing waits to be submitted: woken recvs were heard
 * from or have nothing to read; their promised buffers are free again. */
void amio__pools_reaped(amio_poller *p);
static inline void *amio__pool_buf(const struct amio_pool *pool, uint16_t bid)
{
	return pool->bufs + (size_t)bid * pool->size;
}

#endif /* AMIO_INTERNAL_H */
