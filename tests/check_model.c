/*
 * Model-based test of the public API: seeded random sequences of every call,
 * from a poll thread, worker threads and a sender thread at once, with every
 * notification checked against an executable model of include/amio.h.
 *
 * The model, per registration (a struct rec, which is also its data pointer):
 *   MUST arrive within BOUND ms: READ once its socket holds unread bytes (or
 *   EOF) and it asked READ (again after each drain, re-registration or, for
 *   AMIO_LEVEL, after each report while still readable); WRITE after a
 *   (re)registration that asked it; a one-shot timer once (unless cancelled
 *   with 0); each interval tick; the AMIO_ERROR of a failed command (closed fd,
 *   regular file); every channel message (its receiver drains only when told).
 *   MAY arrive: a spurious edge, WRITE while writable.
 *   NEVER: a notification for an id after amio_deregister / amio_cancel_timer /
 *   amio_channel_free (or the inbox registrar's free) returned; for an id amio
 *   never returned or with another registration's data; events not asked; more
 *   than cap entries (a canary follows out[cap]); a timer early or a one-shot
 *   twice; a channel notification after a drain to -EAGAIN with no send since;
 *   one id twice in an Amy-mode batch (a LEVEL id twice in an inbox batch).
 *   Every call returns only what the model allows.
 * AMIO_MODEL_SEED=<n> runs exactly one seed, AMIO_MODEL_SECONDS=<s> runs seeds
 * for that long (default 20 s, less under AMIO_TEST_SCALE), AMIO_MODEL_BOUND_MS
 * overrides the delivery bound. A violation prints the seed and the last
 * operations, and aborts.
 */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/resource.h>

#include "amio_test.h"
#ifdef AMIO_FAULT_INJECTION
#include "../src/fault.h"
#endif

#ifndef AMIO_TIMER_MAX_MS
#define AMIO_TIMER_MAX_MS (UINT64_C(1) << 42)
#endif

enum { MAXW = 3, MAXSOCK = 4, MAXOBJ = 4096, MAXREC = 8192, MAXRGH = 256, TRACE = 8192 };
enum okind { K_SOCK, K_BADFD, K_FILE, K_TIMER, K_CHAN };
enum rstatus { R_PENDING, R_FAILED, R_LIVE, R_DEAD };
enum phase { P_RUN, P_QUIESCE, P_TEARDOWN, P_DONE };

/* A registrar the test made: its routing, and when its free returned. */
struct rgh {
	amio_registrar *r;
	bool inbox;
	int owner;
	uint64_t freed_seq;
};

struct obj;

/* One id (or one attempt at one): notifications carry it as data. */
struct rec {
	struct obj *o;
	uint64_t id;
	struct rgh *via;
	int status;
	uint32_t events, ev_union;
	uint64_t dead_seq;    /* seq once deregister/cancel/free returned */
	bool lenient;         /* its inbox registrar was freed: the poller closes it later */
	bool parked;          /* ONESHOT fired or AMIO_ERROR: nothing owed until reregister */
	uint32_t owed;        /* events that must come */
	int64_t owed_at;      /* ns: since when (timers: when due) */
	uint32_t prev_events; /* events before the last reregister */
	bool os_new;          /* a ONESHOT report that only this arming could make came */
	uint64_t ms;          /* timers */
	bool interval;
	int64_t t0;        /* ns, taken before the call */
	int fired;         /* TIMER notifications seen */
	int64_t last_tick; /* ns */
	int cancel_rc;     /* first cancel/deregister of a timer: 1 = none yet */
	uint64_t cancel_start;
	bool errored;
	bool pure_level; /* registered AMIO_LEVEL, never reregistered: no stale edges */
	bool err_parked; /* an AMIO_ERROR was seen: nothing more until reregister */
	bool zombie;     /* that error was -EBUSY (finding F2 leaves the old poll armed) */
	uint32_t arms;   /* (re)registrations an AMIO_ERROR may still answer */
};

struct obj {
	pthread_mutex_t mu;
	int kind, owner, idx;
	int ready; /* published to other threads */
	int fd[2]; /* K_SOCK: fd[0] written by the test, fd[1] registered */
	uint64_t unread;
	bool eof;
	struct rec *cur, *last; /* current and previous registration */
	/* K_CHAN */
	amio_channel *ch;
	uint64_t sent_ok, send_starts, sends_active; /* atomics */
	uint64_t recv, quiet_starts, quiet_seq;
	bool quiet;
	uint64_t freed_seq; /* atomic: seq once amio_channel_free returned */
	int closing;        /* atomic: amio_channel_free was called */
	uint32_t notes;     /* atomic: Amy-mode notifications, the receiver drains */
	uint32_t seen_notes;
	int64_t pend_since;
	uint64_t pend_mark;
	bool orphan; /* its inbox registrar was freed: no notification will come */
};

struct trace_ent {
	uint64_t seq;
	int th;
	uint32_t repeat; /* the same line again, this many times */
	char txt[128];
};

struct worker {
	int idx;
	pthread_t th;
	struct rgh *amy, *inbox;
	int socks[MAXSOCK];
	int nsock;
	struct rec **mine; /* every rec this worker made (free_inbox walks them) */
	int nmine;
};

static struct {
	uint64_t seed;
	amio_poller *p;
	int nworkers;
	struct worker w[MAXW];
	struct obj *objs;
	struct rec *recs;
	struct rgh *rghs;
	uint32_t nobj, nrec, nrgh;
	uint64_t gseq;
	int phase;
	int done_ops, quiesced, teardown_ready, freed_poller, abrupt;
	int in_run;
	int freeing; /* amio_poller_free is running or ran */
	int poll_started;
	int ops_per_worker;
	bool small_max; /* max_registrations small: -ENOSPC is an answer */
	bool fault_sqe, fault_enter;
	int64_t bound_ns;
	int file_fd;
	struct trace_ent trace[TRACE];
	uint64_t ntrace;
	pthread_mutex_t trace_mu;
	int64_t seed_start;
	int watchdog_stop;
	pthread_barrier_t bar;
} W;

static uint64_t total_ops, total_notes, total_seeds;

/* AMIO_MODEL_SKIP: comma-separated parts of the model to leave out while a
 * known defect is being fixed: file (regular-file registrations), hugems
 * (timers above AMIO_TIMER_MAX_MS), sendwait, level, oneshot-cancel (cancel of
 * a one-shot that fired), faults, chan-stale (unprompted channel drains:
 * finding F1), f2 (reports after a -EBUSY reregister), stash-cancel (F4).
 * (F3, reregisters through another registrar, is now amio.h's contract:
 * commands through different registrars have no order between them.) */
static bool model_skip(const char *what)
{
	const char *s = getenv("AMIO_MODEL_SKIP");
	size_t n = strlen(what);

	for (; s && *s; s += strcspn(s, ","), s += *s == ',')
		if (strncmp(s, what, n) == 0 && (s[n] == ',' || s[n] == 0))
			return true;
	return false;
}
static pthread_mutex_t fail_mu = PTHREAD_MUTEX_INITIALIZER;
static __thread uint64_t rng;
static __thread int th_id;

/* ---- Utilities ----------------------------------------------------------- */

static uint32_t rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return n ? (uint32_t)((rng >> 16) % n) : 0;
}

static void seed_thread(int id)
{
	th_id = id;
	rng = W.seed * 0x9E3779B97F4A7C15ull + (uint64_t)id * 0xBF58476D1CE4E5B9ull + 1;
	for (int i = 0; i < 4; i++)
		rnd(2);
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t tick(void)
{
	return __atomic_add_fetch(&W.gseq, 1, __ATOMIC_SEQ_CST);
}

static uint64_t seqnow(void)
{
	return __atomic_load_n(&W.gseq, __ATOMIC_SEQ_CST);
}

static void trace(const char *fmt, ...)
{
	struct trace_ent *t;
	char txt[128];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(txt, sizeof(txt), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&W.trace_mu);
	t = W.ntrace ? &W.trace[(W.ntrace - 1) % TRACE] : NULL;
	if (t && t->th == th_id && strcmp(t->txt, txt) == 0) {
		t->repeat++;
	} else {
		t = &W.trace[W.ntrace++ % TRACE];
		t->seq = seqnow();
		t->th = th_id;
		t->repeat = 0;
		memcpy(t->txt, txt, sizeof(txt));
	}
	pthread_mutex_unlock(&W.trace_mu);
}

static void model_fail(const char *fmt, ...)
{
	va_list ap;
	uint64_t n, from;
	char msg[512];

	pthread_mutex_lock(&fail_mu);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "\ncheck_model: VIOLATION (seed %llu, thread %d): %s\n",
	        (unsigned long long)W.seed, th_id, msg);
	/* The history of every id the message names (numbers of 8+ digits). */
	pthread_mutex_lock(&W.trace_mu);
	for (const char *c = msg; *c; c++) {
		size_t len = strspn(c, "0123456789");
		char id[24];

		if (len < 8 || len > 20 || (c > msg && c[-1] >= '0' && c[-1] <= '9')) {
			c += len ? len - 1 : 0;
			continue;
		}
		memcpy(id, c, len);
		id[len] = 0;
		fprintf(stderr, "history of %s:\n", id);
		n = W.ntrace;
		for (uint64_t i = n > TRACE ? n - TRACE : 0; i < n; i++)
			if (strstr(W.trace[i % TRACE].txt, id))
				fprintf(stderr, "  %6llu t%d %s (x%u)\n",
				        (unsigned long long)W.trace[i % TRACE].seq,
				        W.trace[i % TRACE].th, W.trace[i % TRACE].txt,
				        W.trace[i % TRACE].repeat + 1);
		c += len - 1;
	}
	pthread_mutex_unlock(&W.trace_mu);
	fprintf(stderr,
	        "last operations (seq thread op; thread 0 = poll, 1-3 workers, 9 sender):\n");
	pthread_mutex_lock(&W.trace_mu);
	n = W.ntrace;
	from = n > 64 ? n - 64 : 0;
	for (uint64_t i = from; i < n; i++)
		fprintf(stderr, "  %6llu t%d %s (x%u)\n",
		        (unsigned long long)W.trace[i % TRACE].seq, W.trace[i % TRACE].th,
		        W.trace[i % TRACE].txt, W.trace[i % TRACE].repeat + 1);
	pthread_mutex_unlock(&W.trace_mu);
	fprintf(stderr, "reproduce: AMIO_MODEL_SEED=%llu %s\n", (unsigned long long)W.seed,
	        getenv("AMIO_TEST_POLLER_FLAGS") ? "(with AMIO_TEST_POLLER_FLAGS as here)" : "");
	fflush(stderr);
	abort();
}

static bool shutdown_seen(void)
{
	return __atomic_load_n(&W.freed_poller, __ATOMIC_ACQUIRE);
}

/* -ESHUTDOWN is an answer once amio_poller_free began. */
static bool freeing(void)
{
	return __atomic_load_n(&W.freeing, __ATOMIC_ACQUIRE);
}

#define EXPECT(cond, ...)                                                                          \
	do {                                                                                       \
		if (!(cond))                                                                       \
			model_fail(__VA_ARGS__);                                                   \
	} while (0)

static void count_op(void)
{
	__atomic_add_fetch(&total_ops, 1, __ATOMIC_RELAXED);
}

static struct obj *new_obj(int kind, int owner)
{
	uint32_t i = __atomic_fetch_add(&W.nobj, 1, __ATOMIC_ACQ_REL);
	struct obj *o;

	if (i >= MAXOBJ) {
		__atomic_fetch_sub(&W.nobj, 1, __ATOMIC_ACQ_REL);
		return NULL;
	}
	o = &W.objs[i]; /* calloc'ed, used once */
	pthread_mutex_init(&o->mu, NULL);
	o->kind = kind;
	o->owner = owner;
	o->idx = (int)i;
	o->fd[0] = o->fd[1] = -1;
	return o;
}

static void publish_obj(struct obj *o)
{
	__atomic_store_n(&o->ready, 1, __ATOMIC_RELEASE);
}

static struct obj *any_obj(void)
{
	uint32_t n = __atomic_load_n(&W.nobj, __ATOMIC_ACQUIRE);
	struct obj *o;

	if (!n)
		return NULL;
	o = &W.objs[rnd(n)];
	return __atomic_load_n(&o->ready, __ATOMIC_ACQUIRE) ? o : NULL;
}

/* o->mu held: every field but o is read under it. */
static struct rec *new_rec(struct worker *w, struct obj *o, struct rgh *via)
{
	uint32_t i = __atomic_fetch_add(&W.nrec, 1, __ATOMIC_ACQ_REL);
	struct rec *r;

	if (i >= MAXREC) {
		__atomic_fetch_sub(&W.nrec, 1, __ATOMIC_ACQ_REL);
		return NULL;
	}
	r = &W.recs[i]; /* calloc'ed, used once */
	r->via = via;
	r->cancel_rc = 1;
	__atomic_store_n(&r->o, o, __ATOMIC_RELEASE);
	w->mine[w->nmine++] = r;
	return r;
}

static bool valid_rec(const void *data)
{
	const char *c = data, *base = (const char *)W.recs;

	return c >= base && c < base + (size_t)MAXREC * sizeof(struct rec) &&
	       (size_t)(c - base) % sizeof(struct rec) == 0 &&
	       (uint32_t)((size_t)(c - base) / sizeof(struct rec)) <
	           __atomic_load_n(&W.nrec, __ATOMIC_ACQUIRE);
}

static struct rgh *new_rgh(int owner, bool inbox)
{
	uint32_t i = __atomic_fetch_add(&W.nrgh, 1, __ATOMIC_ACQ_REL);
	struct rgh *g;
	int rc;

	if (i >= MAXRGH)
		return NULL;
	g = &W.rghs[i];
	memset(g, 0, sizeof(*g));
	g->inbox = inbox;
	g->owner = owner;
	rc = amio_registrar_new(W.p, inbox ? AMIO_INBOX : 0, &g->r);
	trace("registrar_new(%s) = %d", inbox ? "inbox" : "amy", rc);
	EXPECT(rc == 0, "amio_registrar_new: %s", amio_strerror(rc));
	return g;
}

static bool rec_live(const struct rec *r)
{
	return r && r->status == R_LIVE;
}

static void kill_rec(struct rec *r)
{
	r->status = R_DEAD;
	r->owed = 0;
	r->dead_seq = tick();
}

static const char *kname(int k)
{
	static const char *n[] = {"socket", "closed-fd", "regular-file", "timer", "channel"};
	return n[k];
}

/* The events a (re)registration asks for, sometimes invalid. */
static uint32_t pick_events(bool *valid)
{
	static const uint32_t base[] = {AMIO_READ, AMIO_READ, AMIO_WRITE, AMIO_BOTH};
	static const uint32_t bad[] = {
	    0,          AMIO_HUP, AMIO_READ | AMIO_TIMER, AMIO_READ | AMIO_LEVEL | AMIO_ONESHOT,
	    AMIO_LEVEL, 1u << 20};
	uint32_t ev;

	if (rnd(25) == 0) {
		*valid = false;
		return bad[rnd(sizeof(bad) / sizeof(bad[0]))];
	}
	*valid = true;
	ev = base[rnd(4)];
	switch (rnd(6)) {
	case 0:
		if (!model_skip("level"))
			ev |= AMIO_LEVEL;
		break;
	case 1:
		ev |= AMIO_ONESHOT;
		break;
	}
	return ev;
}

/* What the model owes a socket registration right after it was armed. */
static void arm_owed(struct rec *r)
{
	struct obj *o = r->o;

	r->owed = 0;
	r->parked = false;
	r->err_parked = false;
	r->zombie = false;
	r->arms++;
	r->os_new = false;
	r->owed_at = now_ns();
	if (o->kind == K_BADFD || o->kind == K_FILE) {
		r->owed = AMIO_ERROR;
		return;
	}
	if ((r->events & AMIO_READ) && (o->unread || o->eof))
		r->owed |= AMIO_READ;
	if (r->events & AMIO_WRITE)
		r->owed |= AMIO_WRITE;
}

/* Read the registered end until EAGAIN (or EOF). o->mu held. */
static void drain_sock(struct obj *o)
{
	char buf[512];
	ssize_t got;
	uint64_t total = 0;

	while ((got = read(o->fd[1], buf, sizeof(buf))) > 0)
		total += (uint64_t)got;
	EXPECT(got == 0 || errno == EAGAIN, "read: %s", strerror(errno));
	EXPECT(total == o->unread, "socket %d held %llu bytes, the test wrote %llu", o->idx,
	       (unsigned long long)total, (unsigned long long)o->unread);
	o->unread = 0;
	/* Nothing is left to report: an edge the current registration owes
	 * for bytes read here (by a late note of an earlier id on this
	 * socket) may never come. epoll re-polls a ready item when
	 * epoll_wait harvests it and drops it if the bytes are gone;
	 * io_uring's poll reports at arm time. Both keep the contract: the
	 * next bytes are reported (the writer owes them again). */
	if (!o->eof && o->cur)
		o->cur->owed &= ~AMIO_READ;
}

/* ---- Channels ------------------------------------------------------------ */

struct msg {
	uint32_t obj;
	uint32_t magic;
	uint64_t n;
};

#define MSG_MAGIC 0xA710C4A1u

/* Receive until -EAGAIN; o->mu held, on the receiving (owner) thread. */
static void drain_chan(struct obj *o)
{
	unsigned char buf[64];
	struct msg m;
	uint64_t s1 = __atomic_load_n(&o->send_starts, __ATOMIC_SEQ_CST);
	uint64_t a1 = __atomic_load_n(&o->sends_active, __ATOMIC_SEQ_CST), s2, a2;
	int rc;

	if (!o->ch || o->freed_seq)
		return;
	while ((rc = amio_channel_try_recv(o->ch, buf)) == 0) {
		memcpy(&m, buf, sizeof(m));
		EXPECT(m.obj == (uint32_t)o->idx && m.magic == MSG_MAGIC,
		       "channel %d received a message for channel %u (magic %x)", o->idx, m.obj,
		       m.magic);
		o->recv++;
	}
	EXPECT(rc == -EAGAIN || (rc == -ESHUTDOWN && freeing()), "amio_channel_try_recv: %s",
	       amio_strerror(rc));
	s2 = __atomic_load_n(&o->send_starts, __ATOMIC_SEQ_CST);
	a2 = __atomic_load_n(&o->sends_active, __ATOMIC_SEQ_CST);
	o->quiet = s1 == s2 && a1 == 0 && a2 == 0 && rc == -EAGAIN;
	if (o->quiet) {
		o->quiet_starts = s2;
		o->quiet_seq = tick();
	}
}

/* One send from any thread; the model counts it. */
static void send_one(struct obj *o, bool may_wait)
{
	amio_channel *ch = __atomic_load_n(&o->ch, __ATOMIC_ACQUIRE);
	struct msg m = {(uint32_t)o->idx, MSG_MAGIC, 0};
	unsigned char buf[64] = {0};
	uint64_t start, freed;
	bool wait = may_wait && rnd(8) == 0 && !model_skip("sendwait");
	int rc, tmo = (int)rnd(4);

	if (!ch)
		return;
	memcpy(buf, &m, sizeof(m));
	__atomic_fetch_add(&o->send_starts, 1, __ATOMIC_SEQ_CST);
	__atomic_fetch_add(&o->sends_active, 1, __ATOMIC_SEQ_CST);
	start = seqnow();
	rc = wait ? amio_channel_send_wait(ch, buf, tmo) : amio_channel_send(ch, buf);
	if (rc == 0)
		__atomic_fetch_add(&o->sent_ok, 1, __ATOMIC_SEQ_CST);
	__atomic_fetch_sub(&o->sends_active, 1, __ATOMIC_SEQ_CST);
	freed = __atomic_load_n(&o->freed_seq, __ATOMIC_SEQ_CST);
	count_op();
	if (freed && freed <= start)
		EXPECT(rc == -EPIPE, "send%s on channel %d freed before it: %s",
		       wait ? "_wait" : "", o->idx, amio_strerror(rc));
	else
		EXPECT(rc == 0 || rc == -EPIPE || (rc == -EAGAIN && !wait) ||
		           (rc == -ETIMEDOUT && wait) || (rc == -ESHUTDOWN && freeing()),
		       "amio_channel_send%s: %s", wait ? "_wait" : "", amio_strerror(rc));
	EXPECT(rc != -EPIPE || __atomic_load_n(&o->closing, __ATOMIC_SEQ_CST),
	       "send on live channel %d returned -EPIPE", o->idx);
}

/* ---- Checking one notification -------------------------------------------- */

struct ctx {
	struct rgh *inbox; /* NULL: returned by amio_poller_wait */
	uint64_t start, end;
};

static void check_note(const struct ctx *c, const amio_notification *n)
{
	struct rec *r = n->data;
	struct obj *o;
	int64_t now = now_ns();
	uint32_t ev = n->events;

	__atomic_add_fetch(&total_notes, 1, __ATOMIC_RELAXED);
	if (!valid_rec(r))
		model_fail("notification {id %llu, events %#x} with data %p no registration gave",
		           (unsigned long long)n->id, ev, n->data);
	o = __atomic_load_n(&r->o, __ATOMIC_ACQUIRE);
	pthread_mutex_lock(&o->mu);
	trace("note %s id %llu ev %#x err %d", c->inbox ? "inbox" : "amy",
	      (unsigned long long)n->id, ev, n->error);
	EXPECT(r->id != 0 && r->id == n->id,
	       "notification {id %llu, events %#x} carries the data of %s registration %llu (%s)",
	       (unsigned long long)n->id, ev, r->status == R_FAILED ? "failed" : "another",
	       (unsigned long long)r->id, kname(o->kind));
	EXPECT(r->via->inbox ? c->inbox == r->via : c->inbox == NULL,
	       "id %llu (%s, registered through a%s registrar) delivered to %s",
	       (unsigned long long)n->id, kname(o->kind), r->via->inbox ? "n inbox" : "n Amy-mode",
	       c->inbox ? "an inbox" : "amio_poller_wait");
	EXPECT(!r->dead_seq || r->dead_seq > c->start ||
	           (o->kind == K_TIMER && !r->interval && r->cancel_rc == -ENOENT &&
	            model_skip("stash-cancel")),
	       "id %llu (%s) reported by a wait that began (seq %llu) after its "
	       "deregister/cancel/free returned (seq %llu); events %#x",
	       (unsigned long long)n->id, kname(o->kind), (unsigned long long)c->start,
	       (unsigned long long)r->dead_seq, ev);
	if (r->zombie && model_skip("f2")) {
		pthread_mutex_unlock(&o->mu);
		return;
	}
	EXPECT(ev != 0, "id %llu: notification without events", (unsigned long long)n->id);
	/* Sockets and timers alike (F6, an interval's tick after its re-arm
	 * error, is fixed). */
	EXPECT(!r->err_parked,
	       "id %llu (%s): events %#x error %d after its AMIO_ERROR, with no reregister since",
	       (unsigned long long)n->id, kname(o->kind), ev, n->error);
	/* A report does not prove which of several queued armings it came
	 * from (a reregister's failed arm reports AMIO_ERROR, the next one
	 * applied in the same drain reports events): no reduction of arms. */
	EXPECT((ev & AMIO_ERROR) || n->error == 0, "id %llu: error %d without AMIO_ERROR",
	       (unsigned long long)n->id, n->error);
	if (ev & AMIO_ERROR) {
		int32_t want = o->kind == K_BADFD ? -EBADF : o->kind == K_FILE ? -EPERM : 1;

		EXPECT(n->error == want || (n->error == -EBUSY && (W.fault_sqe || W.fault_enter)),
		       "id %llu (%s): AMIO_ERROR %d (%s), model expects %s",
		       (unsigned long long)n->id, kname(o->kind), n->error, amio_strerror(n->error),
		       want == 1 ? "none" : amio_strerror(want));
		r->parked = true;
		r->errored = true;
		/* Parked for sure only if this error cannot answer an arming
		 * a later reregister replaced: none outstanding (it answers an
		 * internal re-arm: LEVEL, or a multishot the kernel ended), or
		 * just the first registration (no earlier poll to re-arm). */
		r->err_parked = r->arms == 0 || (r->arms == 1 && r->prev_events == 0);
		/* Each error answers at most one queued arming: several queued
		 * reregisters can each fail in turn before the last succeeds. */
		r->arms -= r->arms > 0;
		r->zombie = n->error == -EBUSY;
		r->owed = 0;
		pthread_mutex_unlock(&o->mu);
		return;
	}
	switch (o->kind) {
	case K_SOCK:
	case K_BADFD:
	case K_FILE:
		EXPECT(!(ev & ~(r->ev_union | AMIO_HUP)),
		       "id %llu (%s): events %#x, registration asked only %#x",
		       (unsigned long long)n->id, kname(o->kind), ev, r->ev_union);
		EXPECT(o->kind == K_SOCK, "id %llu (%s): events %#x, expected one AMIO_ERROR",
		       (unsigned long long)n->id, kname(o->kind), ev);
		r->owed &= ~(ev & (AMIO_READ | AMIO_WRITE));
		if (r->events & AMIO_ONESHOT) {
			/* Reports of the previous arming may precede it (inbox FIFO);
			 * after one only this arming could make, nothing comes. */
			EXPECT(!r->os_new,
			       "ONESHOT id %llu reported again (events %#x) without reregister",
			       (unsigned long long)n->id, ev);
			if (ev & (AMIO_READ | AMIO_WRITE) & ~r->prev_events)
				r->os_new = true;
			r->parked = true;
			r->owed = 0;
		}
		if (ev & AMIO_READ) {
			if (!(r->events & AMIO_LEVEL) || rnd(2))
				drain_sock(o);
			if ((r->events & AMIO_LEVEL) && (r->events & AMIO_READ) && !r->parked &&
			    rec_live(r) && (o->unread || o->eof) && !(r->owed & AMIO_READ)) {
				r->owed |= AMIO_READ; /* still readable: reported again */
				r->owed_at = now;
			}
		}
		if ((ev & AMIO_WRITE) && (r->events & AMIO_LEVEL) && !r->parked && rec_live(r) &&
		    (r->events & AMIO_WRITE)) {
			r->owed |= AMIO_WRITE; /* still writable: reported again */
			r->owed_at = now;
		}
		break;
	case K_TIMER:
		EXPECT(ev == AMIO_TIMER, "timer %llu: events %#x", (unsigned long long)n->id, ev);
		EXPECT(
		    now >= r->t0 + (int64_t)(r->fired + 1) * (int64_t)r->ms * 1000000,
		    "timer %llu (%llu ms, %s): notification %d came %lld us early",
		    (unsigned long long)n->id, (unsigned long long)r->ms,
		    r->interval ? "interval" : "one-shot", r->fired + 1,
		    (long long)((r->t0 + (int64_t)(r->fired + 1) * (int64_t)r->ms * 1000000 - now) /
		                1000));
		r->fired++;
		EXPECT(r->interval || r->fired == 1, "one-shot timer %llu reported %d times",
		       (unsigned long long)n->id, r->fired);
		EXPECT(r->interval || r->cancel_rc != 0 || c->end >= r->cancel_start,
		       "one-shot timer %llu handed out (wait ended seq %llu) before the "
		       "cancel that returned 0 began (seq %llu)",
		       (unsigned long long)n->id, (unsigned long long)c->end,
		       (unsigned long long)r->cancel_start);
		r->last_tick = now;
		if (!r->interval)
			r->owed = 0;
		break;
	case K_CHAN:
		EXPECT(ev == AMIO_CHANNEL, "channel %llu: events %#x", (unsigned long long)n->id,
		       ev);
		EXPECT(!(o->quiet && o->quiet_seq < c->start &&
		         __atomic_load_n(&o->send_starts, __ATOMIC_SEQ_CST) == o->quiet_starts),
		       "channel %llu reported by a wait that began (seq %llu) after a drain to "
		       "-EAGAIN (seq %llu) with no send since",
		       (unsigned long long)n->id, (unsigned long long)c->start,
		       (unsigned long long)o->quiet_seq);
		if (c->inbox)
			drain_chan(o); /* the receiver is this thread */
		else
			__atomic_add_fetch(&o->notes, 1, __ATOMIC_RELEASE);
		break;
	}
	pthread_mutex_unlock(&o->mu);
}

/* A batch from a wait: room, canary, one entry per id. */
static void check_batch(const struct ctx *c, amio_notification *out, int n, size_t cap)
{
	static const amio_notification zero;
	const amio_notification *canary = &out[cap];

	EXPECT(n >= 0 && (size_t)n <= cap, "%s returned %d for cap %zu",
	       c->inbox ? "amio_registrar_wait" : "amio_poller_wait", n, cap);
	EXPECT(canary->id == 0xDEADBEEFull && canary->events == 0xDEAD && canary->data == NULL,
	       "%s wrote past out[cap] (cap %zu, returned %d)",
	       c->inbox ? "amio_registrar_wait" : "amio_poller_wait", cap, n);
	(void)zero;
	for (int i = 0; i < n; i++)
		for (int j = 0; j < i; j++) {
			bool level;

			if (out[i].id != out[j].id)
				continue;
			level = false;
			if (c->inbox && valid_rec(out[i].data)) {
				struct rec *r = out[i].data;
				struct obj *o = __atomic_load_n(&r->o, __ATOMIC_ACQUIRE);

				pthread_mutex_lock(&o->mu);
				level = r->pure_level;
				pthread_mutex_unlock(&o->mu);
			}
			EXPECT(c->inbox && !level,
			       "id %llu twice in one %s batch (events %#x, %#x)",
			       (unsigned long long)out[i].id,
			       c->inbox ? "inbox (LEVEL)" : "amio_poller_wait", out[j].events,
			       out[i].events);
		}
	for (int i = 0; i < n; i++)
		check_note(c, &out[i]);
}

static void set_canary(amio_notification *out, size_t cap)
{
	out[cap] = (amio_notification){.id = 0xDEADBEEFull, .data = NULL, .events = 0xDEAD};
}

/* ---- Obligations ------------------------------------------------------------ */

/* Fails for anything owed longer than the bound; returns how many are owed. */
static int check_owed(bool final)
{
	uint32_t n = __atomic_load_n(&W.nobj, __ATOMIC_ACQUIRE);
	int64_t now = now_ns();
	int owed = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct obj *o = &W.objs[i];
		struct rec *r;

		if (!__atomic_load_n(&o->ready, __ATOMIC_ACQUIRE))
			continue;
		pthread_mutex_lock(&o->mu);
		r = o->cur;
		if (o->kind == K_CHAN) {
			uint64_t sent = __atomic_load_n(&o->sent_ok, __ATOMIC_SEQ_CST);

			if (o->freed_seq || o->orphan || !rec_live(r) || sent <= o->recv) {
				o->pend_since = 0;
			} else {
				if (!o->pend_since || o->recv >= o->pend_mark) {
					o->pend_since = now;
					o->pend_mark = sent;
				}
				owed++;
				EXPECT(now - o->pend_since < W.bound_ns,
				       "channel %llu: %llu messages sent, %llu received, no "
				       "notification for %lld ms",
				       (unsigned long long)r->id, (unsigned long long)sent,
				       (unsigned long long)o->recv,
				       (long long)((now - o->pend_since) / 1000000));
			}
		} else if (rec_live(r) && !r->parked && r->owed) {
			if (o->kind == K_TIMER && r->interval) {
				int64_t last = r->last_tick > r->t0 ? r->last_tick : r->t0;

				EXPECT(now - last < (int64_t)r->ms * 1000000 + W.bound_ns,
				       "interval %llu (%llu ms) silent for %lld ms",
				       (unsigned long long)r->id, (unsigned long long)r->ms,
				       (long long)((now - last) / 1000000));
			} else {
				owed += !(r->events & AMIO_LEVEL);
				EXPECT(now - r->owed_at < W.bound_ns,
				       "%s %llu (events %#x): %#x owed for %lld ms, never reported",
				       kname(o->kind), (unsigned long long)r->id, r->events,
				       r->owed, (long long)((now - r->owed_at) / 1000000));
			}
		}
		/* lenient: its inbox registrar was freed, which closes it. */
		if (final && o->kind == K_TIMER && r && !r->interval && r->cancel_rc == -ENOENT &&
		    !r->errored && r->fired == 0 && !r->lenient)
			model_fail(
			    "one-shot timer %llu: cancel returned -ENOENT (handed out) but it was "
			    "never handed out",
			    (unsigned long long)r->id);
		pthread_mutex_unlock(&o->mu);
	}
	return owed;
}

/* ---- Worker operations ------------------------------------------------------ */

static struct rgh *my_registrar(struct worker *w)
{
	if (w->amy && w->inbox)
		return rnd(2) ? w->amy : w->inbox;
	return w->amy ? w->amy : w->inbox;
}

static void check_add_rc(int64_t rc, const char *what)
{
	EXPECT(rc > 0 || rc == -EAGAIN || (rc == -ENOSPC && W.small_max), "%s: %s", what,
	       amio_strerror((int)rc));
}

/* After -EAGAIN: sometimes wait for room (never on the poll thread). */
static void maybe_wait_room(struct rgh *g, int64_t rc)
{
	int tmo = (int)rnd(4) - 1, got;

	if (rc != -EAGAIN || rnd(2))
		return;
	got = amio_registrar_wait_room(g->r, tmo);
	count_op();
	EXPECT(got == 0 || (got == -ETIMEDOUT && tmo >= 0) || (got == -ESHUTDOWN && freeing()),
	       "amio_registrar_wait_room(%d ms) = %s", tmo, amio_strerror(got));
}

static void op_register(struct worker *w)
{
	struct obj *o;
	struct rec *r;
	struct rgh *g = my_registrar(w);
	bool valid;
	uint32_t ev = pick_events(&valid);
	int64_t rc;
	int fd;

	if (rnd(30) == 0) {
		/* A fd amio cannot poll: closed, or a regular file. */
		o = new_obj(rnd(2) || model_skip("file") ? K_BADFD : K_FILE, w->idx);
		if (!o)
			return;
		o->fd[1] = o->kind == K_BADFD ? 900000 + w->idx : W.file_fd;
		publish_obj(o);
	} else {
		o = &W.objs[w->socks[rnd((uint32_t)w->nsock)]];
	}
	pthread_mutex_lock(&o->mu);
	if (rec_live(o->cur) || !(r = new_rec(w, o, g))) {
		pthread_mutex_unlock(&o->mu);
		return;
	}
	fd = rnd(40) == 0 ? -1 : o->fd[1];
	rc = amio_register(g->r, fd, ev, r);
	trace("register(%s %d fd %d ev %#x via %s) = %lld", kname(o->kind), o->idx, fd, ev,
	      g->inbox ? "inbox" : "amy", (long long)rc);
	count_op();
	if (fd < 0)
		EXPECT(rc == -EBADF, "amio_register(fd -1) = %lld", (long long)rc);
	else if (!valid)
		EXPECT(rc == -EINVAL, "amio_register(events %#x) = %lld", ev, (long long)rc);
	else
		check_add_rc(rc, "amio_register");
	if (rc > 0) {
		r->id = (uint64_t)rc;
		r->status = R_LIVE;
		r->events = r->ev_union = ev;
		r->pure_level = ev & AMIO_LEVEL;
		arm_owed(r);
		o->last = o->cur;
		o->cur = r;
	} else {
		r->status = R_FAILED;
	}
	pthread_mutex_unlock(&o->mu);
	maybe_wait_room(g, rc); /* no lock held: the poll thread takes them */
}

static void op_write(struct worker *w)
{
	struct obj *o = &W.objs[w->socks[rnd((uint32_t)w->nsock)]];
	struct rec *r;
	uint32_t n = 1 + rnd(4);

	pthread_mutex_lock(&o->mu);
	if (o->eof) {
		pthread_mutex_unlock(&o->mu);
		return;
	}
	if (rnd(200) == 0) {
		EXPECT(shutdown(o->fd[0], SHUT_WR) == 0, "shutdown: %s", strerror(errno));
		o->eof = true;
		trace("shutdown(socket %d)", o->idx);
	} else {
		EXPECT(send(o->fd[0], "abcd", n, MSG_NOSIGNAL) == (ssize_t)n, "send: %s",
		       strerror(errno));
		o->unread += n;
		trace("write(socket %d, %u)", o->idx, n);
	}
	count_op();
	r = o->cur;
	if (rec_live(r) && !r->parked && (r->events & AMIO_READ) && !(r->owed & AMIO_READ)) {
		r->owed |= AMIO_READ;
		r->owed_at = now_ns();
	}
	if (o->unread > 4096) { /* nobody reads it: keep the buffer small */
		drain_sock(o);  /* discharges r's READ */
	}
	pthread_mutex_unlock(&o->mu);
}

/* An id to aim at: our own, anybody's, dead, or one never issued. */
static struct obj *pick_target(struct worker *w, int prefer_kind, struct rec **rp, uint64_t *id)
{
	struct obj *o = NULL;
	uint32_t k = rnd(10);

	*rp = NULL;
	*id = 0;
	if (k == 0) {
		static const uint64_t bogus[] = {0, UINT64_MAX, (UINT64_C(1) << 62) | 1,
		                                 (UINT64_C(1) << 24), (UINT64_C(1) << 40) | 5};
		*id = bogus[rnd(sizeof(bogus) / sizeof(bogus[0]))];
		return NULL;
	}
	if (k < 5 && prefer_kind == K_SOCK)
		o = &W.objs[w->socks[rnd((uint32_t)w->nsock)]];
	else
		for (int tries = 0; tries < 8 && !o; tries++) {
			struct obj *c = any_obj();

			if (c && (c->kind == prefer_kind || rnd(3) == 0))
				o = c;
		}
	if (!o)
		return NULL;
	pthread_mutex_lock(&o->mu);
	*rp = (rnd(4) == 0 && o->last) ? o->last : o->cur;
	if (!*rp) {
		pthread_mutex_unlock(&o->mu);
		return NULL;
	}
	*id = (*rp)->id;
	if (!*id) {
		pthread_mutex_unlock(&o->mu);
		*rp = NULL;
		return NULL;
	}
	return o;
}

static void op_reregister(struct worker *w)
{
	struct rgh *g = my_registrar(w);
	struct rec *r;
	uint64_t id;
	struct obj *o = pick_target(w, K_SOCK, &r, &id);
	bool valid;
	uint32_t ev = pick_events(&valid);
	int rc;

	if (!o && !id && rnd(2))
		return;
	if (o) {
		/* amio.h (finding F3): commands for one id made through
		 * different registrars have no order between them; the model
		 * orders an object's reregisters through its registrar. */
		if (r->via != w->amy && r->via != w->inbox) {
			pthread_mutex_unlock(&o->mu);
			return;
		}
		g = r->via;
	}
	rc = amio_reregister(g->r, id, ev);
	trace("reregister(%llu %s, ev %#x) = %d", (unsigned long long)id, o ? kname(o->kind) : "-",
	      ev, rc);
	count_op();
	if (!valid)
		EXPECT(rc == -EINVAL, "amio_reregister(events %#x) = %d", ev, rc);
	else if (rc == -EAGAIN)
		;
	else if (o && rec_live(r) && o->kind != K_TIMER && o->kind != K_CHAN)
		EXPECT(rc == 0 || (rc == -ENOENT && r->lenient),
		       "amio_reregister(live %s %llu) = %s", kname(o->kind), (unsigned long long)id,
		       amio_strerror(rc));
	else
		EXPECT(rc == -ENOENT ||
		           (rc == 0 && r && r->lenient && o->kind != K_TIMER && o->kind != K_CHAN),
		       "amio_reregister(%s %s %llu) = %s, expected -ENOENT",
		       r ? (r->status == R_LIVE ? "live" : "dead") : "never issued",
		       o ? kname(o->kind) : "id", (unsigned long long)id, amio_strerror(rc));
	if (rc == 0 && rec_live(r)) {
		r->pure_level = false;
		r->prev_events |= r->events; /* stale reports of any earlier arming */
		r->events = ev;
		r->ev_union |= ev;
		arm_owed(r);
	}
	if (o)
		pthread_mutex_unlock(&o->mu);
	maybe_wait_room(g, rc);
}

/* deregister or cancel a timer: the model of clarification (a). o->mu held. */
static void timer_gone(struct rec *r, int rc, uint64_t start, const char *what)
{
	if (!rec_live(r)) {
		EXPECT(rc == -ENOENT || (rc == 0 && r->lenient), "%s(dead timer %llu) = %s", what,
		       (unsigned long long)r->id, amio_strerror(rc));
		return;
	}
	if (r->interval || r->errored) {
		/* lenient: its inbox registrar is being freed, which closes it. */
		EXPECT(rc == 0 || (rc == -ENOENT && r->lenient), "%s(live %s timer %llu) = %s",
		       what, r->interval ? "interval" : "parked", (unsigned long long)r->id,
		       amio_strerror(rc));
	} else if (r->fired || model_skip("oneshot-cancel")) {
		EXPECT(rc == -ENOENT || model_skip("oneshot-cancel"),
		       "%s(one-shot timer %llu already handed out) = %s", what,
		       (unsigned long long)r->id, amio_strerror(rc));
	} else {
		EXPECT(rc == 0 || rc == -ENOENT, "%s(one-shot timer %llu) = %s", what,
		       (unsigned long long)r->id, amio_strerror(rc));
	}
	if (r->cancel_rc == 1) {
		r->cancel_rc = rc;
		r->cancel_start = start;
	}
	kill_rec(r); /* either way: nothing for the id from now on */
}

static void op_deregister(struct worker *w, bool cancel)
{
	struct rgh *g = my_registrar(w);
	struct rec *r;
	uint64_t id, start;
	struct obj *o = pick_target(w, cancel ? K_TIMER : (rnd(3) ? K_SOCK : K_TIMER), &r, &id);
	const char *what = cancel ? "amio_cancel_timer" : "amio_deregister";
	int rc;

	if (!o && !id && rnd(2))
		return;
	start = tick();
	rc = cancel ? amio_cancel_timer(g->r, id) : amio_deregister(g->r, id);
	trace("%s(%llu %s) = %d", cancel ? "cancel" : "deregister", (unsigned long long)id,
	      o ? kname(o->kind) : "-", rc);
	count_op();
	if (rc == -EAGAIN) {
		/* nothing changed */
	} else if (!o) {
		EXPECT(rc == -ENOENT, "%s(id %llu never issued) = %s", what, (unsigned long long)id,
		       amio_strerror(rc));
	} else if (o->kind == K_TIMER) {
		timer_gone(r, rc, start, what);
	} else if (o->kind == K_CHAN || (cancel && o->kind != K_TIMER)) {
		EXPECT(rc == -ENOENT, "%s(%s %llu) = %s, expected -ENOENT", what, kname(o->kind),
		       (unsigned long long)id, amio_strerror(rc));
	} else if (rec_live(r)) {
		EXPECT(rc == 0 || (rc == -ENOENT && r->lenient), "%s(live %s %llu) = %s", what,
		       kname(o->kind), (unsigned long long)id, amio_strerror(rc));
		if (rc == 0 || r->lenient)
			kill_rec(r);
	} else {
		EXPECT(rc == -ENOENT || (rc == 0 && r->lenient), "%s(dead %s %llu) = %s", what,
		       kname(o->kind), (unsigned long long)id, amio_strerror(rc));
	}
	if (o)
		pthread_mutex_unlock(&o->mu);
}

static uint64_t pick_ms(void)
{
	static const uint64_t huge[] = {AMIO_TIMER_MAX_MS,       AMIO_TIMER_MAX_MS + 1,
	                                UINT64_C(1) << 53,       (UINT64_C(1) << 53) + 1,
	                                UINT64_C(1) << 63,       UINT64_MAX,
	                                UINT64_C(9223372036854), UINT64_C(1000000000)};
	uint32_t k = rnd(100);

	if (k < 15)
		return 0;
	if (k < 80)
		return 1 + rnd(20);
	if (k < 95)
		return 20 + rnd(200);
	k = rnd(sizeof(huge) / sizeof(huge[0]));
	if (model_skip("hugems") && huge[k] > AMIO_TIMER_MAX_MS && huge[k] <= (UINT64_C(1) << 53))
		return 5;
	return huge[k];
}

static void op_timer(struct worker *w)
{
	struct rgh *g = my_registrar(w);
	struct obj *o = new_obj(K_TIMER, w->idx);
	struct rec *r;
	bool interval = rnd(4) == 0;
	uint64_t ms = pick_ms();
	int64_t rc;

	if (!o)
		return;
	pthread_mutex_lock(&o->mu);
	if (!(r = new_rec(w, o, g))) {
		pthread_mutex_unlock(&o->mu);
		return;
	}
	o->cur = r;
	r->interval = interval;
	r->ms = ms;
	r->t0 = now_ns();
	rc = interval ? amio_set_interval(g->r, ms, r) : amio_set_timeout(g->r, ms, r);
	trace("set_%s(%llu ms via %s) = %lld", interval ? "interval" : "timeout",
	      (unsigned long long)ms, g->inbox ? "inbox" : "amy", (long long)rc);
	count_op();
	if (ms > AMIO_TIMER_MAX_MS || (interval && ms == 0))
		EXPECT(rc == -EINVAL, "amio_set_%s(%llu ms) = %lld, expected -EINVAL",
		       interval ? "interval" : "timeout", (unsigned long long)ms, (long long)rc);
	else
		check_add_rc(rc, interval ? "amio_set_interval" : "amio_set_timeout");
	if (rc > 0) {
		r->id = (uint64_t)rc;
		r->status = R_LIVE;
		r->last_tick = r->t0;
		if (ms <= 60000) {
			r->owed = AMIO_TIMER;
			r->owed_at = r->t0 + (int64_t)ms * 1000000;
		}
	} else {
		r->status = R_FAILED;
	}
	pthread_mutex_unlock(&o->mu);
	publish_obj(o);
	maybe_wait_room(g, rc);
}

static void op_chan_new(struct worker *w)
{
	struct rgh *g = my_registrar(w);
	struct obj *o;
	struct rec *r;
	amio_channel *ch = NULL;
	size_t cap = 1 + rnd(8), size = rnd(2) ? 16 : 40;
	int rc;

	if (rnd(20) == 0) {
		size_t bad_cap[] = {0, (size_t)1 << 31, 4}, bad_size[] = {16, 16, 65537};
		int k = (int)rnd(3);

		rc = amio_channel_new(g->r, bad_cap[k], bad_size[k], NULL, &ch);
		count_op();
		EXPECT(rc == -EINVAL, "amio_channel_new(capacity %zu, size %zu) = %s", bad_cap[k],
		       bad_size[k], amio_strerror(rc));
		return;
	}
	if (!(o = new_obj(K_CHAN, w->idx)))
		return;
	pthread_mutex_lock(&o->mu);
	if (!(r = new_rec(w, o, g))) {
		pthread_mutex_unlock(&o->mu);
		return;
	}
	o->cur = r;
	rc = amio_channel_new(g->r, cap, size, r, &ch);
	trace("channel_new(cap %zu via %s) = %d", cap, g->inbox ? "inbox" : "amy", rc);
	count_op();
	check_add_rc(rc == 0 ? 1 : rc, "amio_channel_new");
	if (rc == 0) {
		r->id = amio_channel_id(ch);
		EXPECT(r->id > 0, "amio_channel_id = 0");
		r->status = R_LIVE;
		__atomic_store_n(&o->ch, ch, __ATOMIC_RELEASE);
		trace("channel %d is id %llu", o->idx, (unsigned long long)r->id);
	} else {
		r->status = R_FAILED;
	}
	pthread_mutex_unlock(&o->mu);
	publish_obj(o);
}

static struct obj *my_chan(struct worker *w)
{
	uint32_t n = __atomic_load_n(&W.nobj, __ATOMIC_ACQUIRE);

	for (int tries = 0; tries < 16 && n; tries++) {
		struct obj *o = &W.objs[rnd(n)];

		if (__atomic_load_n(&o->ready, __ATOMIC_ACQUIRE) && o->kind == K_CHAN &&
		    o->owner == w->idx && o->ch && !o->freed_seq)
			return o;
	}
	return NULL;
}

static void chan_free(struct obj *o)
{
	__atomic_store_n(&o->closing, 1, __ATOMIC_SEQ_CST);
	amio_channel_free(o->ch);
	__atomic_store_n(&o->freed_seq, tick(), __ATOMIC_SEQ_CST);
	if (rec_live(o->cur))
		kill_rec(o->cur);
	trace("channel_free(%d, id %llu)", o->idx, (unsigned long long)o->cur->id);
}

static void op_chan_free(struct worker *w)
{
	struct obj *o = my_chan(w);

	if (!o)
		return;
	pthread_mutex_lock(&o->mu);
	if (rnd(4) == 0)
		drain_chan(o);
	chan_free(o);
	count_op();
	if (rnd(4) == 0) {
		unsigned char buf[64];
		int rc = amio_channel_try_recv(o->ch, buf);

		EXPECT(rc == -EPIPE, "try_recv after amio_channel_free = %s", amio_strerror(rc));
	}
	pthread_mutex_unlock(&o->mu);
}

/* Drain the channels the poll thread told us about (Amy mode). */
static void service_chans(struct worker *w, bool extra)
{
	uint32_t n = __atomic_load_n(&W.nobj, __ATOMIC_ACQUIRE);

	for (uint32_t i = 0; i < n; i++) {
		struct obj *o = &W.objs[i];
		uint32_t notes;

		if (!__atomic_load_n(&o->ready, __ATOMIC_ACQUIRE) || o->kind != K_CHAN ||
		    o->owner != w->idx)
			continue;
		notes = __atomic_load_n(&o->notes, __ATOMIC_ACQUIRE);
		if (notes == o->seen_notes && !(extra && rnd(8) == 0 && !model_skip("chan-stale")))
			continue;
		pthread_mutex_lock(&o->mu);
		o->seen_notes = notes;
		drain_chan(o);
		pthread_mutex_unlock(&o->mu);
	}
}

/* Free the inbox registrar: its ids are deregistered (the poller does it). */
static void free_inbox(struct worker *w)
{
	struct rgh *g = w->inbox;

	if (!g)
		return;
	/* Lenient before the free: another worker's call on one of these ids
	 * may find it closed by the poller before the loop below kills it. */
	for (int i = 0; i < w->nmine; i++) {
		struct rec *r = w->mine[i];

		pthread_mutex_lock(&r->o->mu);
		if (r->via == g && rec_live(r))
			r->lenient = true;
		pthread_mutex_unlock(&r->o->mu);
	}
	amio_registrar_free(g->r);
	g->freed_seq = tick();
	w->inbox = NULL;
	trace("registrar_free(inbox)");
	for (int i = 0; i < w->nmine; i++) {
		struct rec *r = w->mine[i];
		struct obj *o = r->o;

		pthread_mutex_lock(&o->mu);
		if (r->via != g) {
			pthread_mutex_unlock(&o->mu);
			continue;
		}
		if (rec_live(r)) {
			r->lenient = true; /* closed by the poller when it retires g */
			kill_rec(r);
		}
		if (o->kind == K_CHAN)
			o->orphan = true;
		pthread_mutex_unlock(&o->mu);
	}
}

static void inbox_wait(struct worker *w, int timeout_ms)
{
	amio_notification out[5];
	size_t cap = 1 + rnd(4);
	struct ctx c = {w->inbox, 0, 0};
	int n;

	if (!w->inbox)
		return;
	set_canary(out, cap);
	c.start = seqnow();
	n = amio_registrar_wait(w->inbox->r, out, cap, timeout_ms);
	c.end = seqnow();
	if (n == -ESHUTDOWN && freeing())
		return;
	count_op();
	check_batch(&c, out, n, cap);
}

static void op_misc(struct worker *w)
{
	amio_notification out[2];
	int rc;

	switch (rnd(8)) {
	case 0:
		rc = amio_poller_stop(W.p);
		EXPECT(rc == 0, "amio_poller_stop = %s", amio_strerror(rc));
		trace("poller_stop");
		break;
	case 1:
		if (!__atomic_load_n(&W.poll_started, __ATOMIC_ACQUIRE))
			break;
		rc = amio_poller_wait(W.p, out, 1, 0);
		EXPECT(rc == -EEXIST, "amio_poller_wait from a worker = %d", rc);
		break;
	case 2:
		rc = amio_register(my_registrar(w)->r, 3, AMIO_READ | (1u << 12), NULL);
		EXPECT(rc == -EINVAL, "amio_register(unknown bit) = %d", rc);
		break;
	case 3:
		if (w->amy) {
			rc = amio_registrar_wait(w->amy->r, out, 1, 0);
			EXPECT(rc == -EINVAL, "amio_registrar_wait(Amy-mode registrar) = %d", rc);
		}
		if (w->inbox) {
			rc = amio_registrar_wait(w->inbox->r, out, 0, 0);
			EXPECT(rc == -EINVAL, "amio_registrar_wait(cap 0) = %d", rc);
		}
		break;
	case 4: {
		struct amio_poller_stats st;

		static __thread struct amio_poller_stats last;
		static __thread uint64_t last_seed;
		const uint64_t *now = (const uint64_t *)&st, *was = (const uint64_t *)&last;

		/* Each counter is exact and only grows; the set is no snapshot. */
		amio_poller_stats(W.p, &st);
		if (last_seed == W.seed)
			for (size_t i = 0; i < sizeof(st) / sizeof(uint64_t); i++)
				EXPECT(now[i] >= was[i],
				       "stats: counter %zu went from %llu to %llu", i,
				       (unsigned long long)was[i], (unsigned long long)now[i]);
		last = st;
		last_seed = W.seed;
		break;
	}
	case 5: /* recycle the Amy registrar: its ids stay registered */
		if (w->amy && rnd(4) == 0) {
			amio_registrar_free(w->amy->r);
			w->amy->freed_seq = tick();
			trace("registrar_free(amy)");
			w->amy = NULL;
			if (!w->inbox || rnd(2))
				w->amy = new_rgh(w->idx, false);
		} else if (!w->amy) {
			w->amy = new_rgh(w->idx, false);
		}
		break;
	case 6: /* recycle the inbox registrar: its ids go with it */
		if (w->inbox && rnd(4) == 0) {
			free_inbox(w);
			if (!w->amy || rnd(2))
				w->inbox = new_rgh(w->idx, true);
		} else if (!w->inbox) {
			w->inbox = new_rgh(w->idx, true);
		}
		break;
	case 7: {
		struct obj *o = any_obj();

		if (o && o->kind == K_CHAN && o->owner != w->idx)
			send_one(o, true);
		else if (o && o->kind == K_CHAN)
			send_one(o, false);
		break;
	}
	}
	count_op();
}

static void worker_op(struct worker *w)
{
	uint32_t k = rnd(100);

	if (k < 14)
		op_register(w);
	else if (k < 34)
		op_write(w);
	else if (k < 44)
		op_reregister(w);
	else if (k < 54)
		op_deregister(w, false);
	else if (k < 66)
		op_timer(w);
	else if (k < 74)
		op_deregister(w, true);
	else if (k < 78)
		op_chan_new(w);
	else if (k < 80)
		op_chan_free(w);
	else
		op_misc(w);
}

/* The calls of a registrar after amio_poller_free: -ESHUTDOWN, all of them. */
static void check_shutdown_calls(struct worker *w, struct rgh *g)
{
	amio_notification out[2];
	amio_channel *ch;
	int64_t rc[8];

	if (!g)
		return;
	rc[0] = amio_register(g->r, W.objs[w->socks[0]].fd[1], AMIO_READ, NULL);
	rc[1] = amio_reregister(g->r, UINT64_C(1) << 24 | 1, AMIO_READ);
	rc[2] = amio_deregister(g->r, UINT64_C(1) << 24 | 1);
	rc[3] = amio_set_timeout(g->r, 1, NULL);
	rc[4] = amio_set_interval(g->r, 1, NULL);
	rc[5] = amio_cancel_timer(g->r, UINT64_C(1) << 24 | 1);
	rc[6] = amio_channel_new(g->r, 4, 8, NULL, &ch);
	rc[7] = g->inbox ? amio_registrar_wait(g->r, out, 2, 0) : amio_registrar_wait_room(g->r, 0);
	for (int i = 0; i < 8; i++)
		EXPECT(rc[i] == -ESHUTDOWN, "call %d on a registrar after amio_poller_free = %lld",
		       i, (long long)rc[i]);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	seed_thread(1 + w->idx);
	for (int i = 0; i < W.ops_per_worker; i++) {
		worker_op(w);
		service_chans(w, true);
		if (w->inbox)
			inbox_wait(w, rnd(8) ? 0 : (int)rnd(5));
		if (rnd(50) == 0)
			usleep(rnd(2000));
	}
	__atomic_add_fetch(&W.done_ops, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&W.phase, __ATOMIC_ACQUIRE) < P_TEARDOWN) {
		service_chans(w, false);
		if (w->inbox)
			inbox_wait(w, 2);
		else
			usleep(500);
	}
	/* Teardown. Clean: take everything back first. Abrupt: the poller is
	 * freed under us (an inbox waiter asleep with no limit must wake). */
	if (!W.abrupt) {
		uint32_t n = __atomic_load_n(&W.nobj, __ATOMIC_ACQUIRE);

		for (uint32_t i = 0; i < n; i++) {
			struct obj *o = &W.objs[i];
			struct rgh *g = my_registrar(w);
			int rc = -ENOENT; /* set whenever it is read: rec_live held above */

			if (o->owner != w->idx || !__atomic_load_n(&o->ready, __ATOMIC_ACQUIRE))
				continue;
			pthread_mutex_lock(&o->mu);
			/* -EAGAIN: retry without the lock (the poll thread takes it). */
			while (o->kind != K_CHAN && rec_live(o->cur) &&
			       (rc = amio_deregister(g->r, o->cur->id)) == -EAGAIN) {
				pthread_mutex_unlock(&o->mu);
				sched_yield();
				pthread_mutex_lock(&o->mu);
			}
			if (o->kind == K_CHAN && o->ch && !o->freed_seq) {
				chan_free(o);
			} else if (o->kind != K_CHAN && rec_live(o->cur)) {
				if (o->kind == K_TIMER)
					timer_gone(o->cur, rc, tick(), "amio_deregister");
				else {
					EXPECT(rc == 0 || o->cur->lenient,
					       "teardown deregister(%s %llu) = %s", kname(o->kind),
					       (unsigned long long)o->cur->id, amio_strerror(rc));
					kill_rec(o->cur);
				}
			}
			pthread_mutex_unlock(&o->mu);
		}
	}
	__atomic_add_fetch(&W.teardown_ready, 1, __ATOMIC_SEQ_CST);
	while (!shutdown_seen()) {
		if (w->inbox && W.abrupt) {
			inbox_wait(w, -1);
		} else if (W.abrupt && w->amy && rnd(2)) {
			/* Race the free: a normal answer or -ESHUTDOWN. */
			int64_t rc = amio_set_timeout(w->amy->r, 1000000, NULL);

			EXPECT(rc > 0 || rc == -ESHUTDOWN || rc == -EAGAIN ||
			           (rc == -ENOSPC && W.small_max),
			       "set_timeout racing amio_poller_free = %lld", (long long)rc);
		} else {
			usleep(200);
		}
	}
	check_shutdown_calls(w, w->amy);
	check_shutdown_calls(w, w->inbox);
	{
		int rc = amio_poller_stop(W.p);

		EXPECT(rc == -ESHUTDOWN, "amio_poller_stop after amio_poller_free = %d", rc);
	}
	pthread_barrier_wait(&W.bar); /* nobody frees before everyone checked */
	{
		uint32_t n = __atomic_load_n(&W.nobj, __ATOMIC_ACQUIRE);

		for (uint32_t i = 0; i < n; i++) {
			struct obj *o = &W.objs[i];

			if (o->kind != K_CHAN || o->owner != w->idx || !o->ch || o->freed_seq)
				continue;
			{
				unsigned char buf[64] = {0};
				int rc = amio_channel_send(o->ch, buf);

				EXPECT(rc == -ESHUTDOWN, "send after amio_poller_free = %s",
				       amio_strerror(rc));
				rc = amio_channel_try_recv(o->ch, buf);
				EXPECT(rc == -ESHUTDOWN, "try_recv after amio_poller_free = %s",
				       amio_strerror(rc));
			}
			pthread_mutex_lock(&o->mu);
			chan_free(o);
			pthread_mutex_unlock(&o->mu);
		}
	}
	pthread_barrier_wait(&W.bar); /* senders done with every handle */
	if (w->amy)
		amio_registrar_free(w->amy->r);
	if (w->inbox)
		amio_registrar_free(w->inbox->r);
	return NULL;
}

/* ---- Sender thread: sends to every channel, stops the poller ------------- */

static void *sender_main(void *arg)
{
	int64_t last_stop = 0;

	(void)arg;
	seed_thread(9);
	while (__atomic_load_n(&W.phase, __ATOMIC_ACQUIRE) == P_RUN) {
		struct obj *o = any_obj();

		if (o && o->kind == K_CHAN)
			send_one(o, true);
		if (__atomic_load_n(&W.in_run, __ATOMIC_ACQUIRE) &&
		    now_ns() - last_stop > 2000000) {
			int rc = amio_poller_stop(W.p);

			EXPECT(rc == 0, "amio_poller_stop = %s", amio_strerror(rc));
			last_stop = now_ns();
		}
		if (rnd(4) == 0)
			usleep(rnd(300));
	}
	return NULL;
}

/* ---- Poll thread ------------------------------------------------------------ */

static void poll_once(int timeout_ms)
{
	amio_notification out[5];
	size_t cap = 1 + rnd(4);
	struct ctx c = {NULL, 0, 0};
	int n;

	set_canary(out, cap);
	c.start = seqnow();
	n = amio_poller_wait(W.p, out, cap, timeout_ms);
	c.end = seqnow();
	__atomic_store_n(&W.poll_started, 1, __ATOMIC_RELEASE);
	count_op();
	if (n < 0 && W.fault_enter && (n == -EINTR || n == -EAGAIN || n == -EBUSY))
		return;
	EXPECT(n >= 0, "amio_poller_wait(cap %zu, %d ms) = %s", cap, timeout_ms, amio_strerror(n));
	check_batch(&c, out, n, cap);
}

static void poll_step(bool quiesce)
{
	uint32_t k = rnd(100);

	if (!quiesce && k < 8) {
		int rc;

		__atomic_store_n(&W.in_run, 1, __ATOMIC_RELEASE);
		rc = amio_poller_run(W.p);
		__atomic_store_n(&W.in_run, 0, __ATOMIC_RELEASE);
		__atomic_store_n(&W.poll_started, 1, __ATOMIC_RELEASE);
		trace("poller_run = %d", rc);
		count_op();
		EXPECT(rc == 0 || rc == 1 ||
		           (W.fault_enter && (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY)),
		       "amio_poller_run = %s", amio_strerror(rc));
		return;
	}
	if (!quiesce && k < 11) {
		__atomic_store_n(&W.in_run, 1, __ATOMIC_RELEASE);
		poll_once(-1);
		__atomic_store_n(&W.in_run, 0, __ATOMIC_RELEASE);
		return;
	}
	if (!quiesce && k < 14)
		usleep(rnd(3000)); /* let queues fill */
	poll_once(k % 3 == 0 ? 0 : (int)(1 + rnd(20)));
}

static void *watchdog_main(void *arg)
{
	int64_t limit = *(int64_t *)arg;

	while (!__atomic_load_n(&W.watchdog_stop, __ATOMIC_ACQUIRE)) {
		if (now_ns() - W.seed_start > limit && getenv("AMIO_MODEL_GDB")) {
			char cmd[128];

			snprintf(cmd, sizeof(cmd),
			         "gdb -p %d -batch -ex 'thread apply all bt' >&2 2>/dev/null",
			         getpid());
			if (system(cmd) < 0)
				perror("gdb");
		}
		if (now_ns() - W.seed_start > limit)
			model_fail("seed still running after %lld s: a hang (phase %d)",
			           (long long)(limit / 1000000000),
			           __atomic_load_n(&W.phase, __ATOMIC_ACQUIRE));
		usleep(50000);
	}
	return NULL;
}

static void fault_setup(void)
{
	W.fault_sqe = W.fault_enter = false;
#ifdef AMIO_FAULT_INJECTION
	{
		static const int errs[] = {EINTR, EAGAIN, EBUSY};
		uint32_t k = model_skip("faults") ? 0 : rnd(4);

		if (k & 1) {
			uint32_t every = 3 + rnd(20);

			amio__fault_set(AMIO__FAULT_SQE, 0, every);
			W.fault_sqe = true;
			trace("fault: SQE every %u", every);
		}
		if (k & 2) {
			int err = errs[rnd(3)];
			uint32_t every = 2 + rnd(8);

			amio__fault_set(AMIO__FAULT_ENTER, err, every);
			W.fault_enter = true;
			trace("fault: enter -%s every %u", strerrorname_np(err), every);
		}
	}
#endif
}

static void fault_clear(void)
{
#ifdef AMIO_FAULT_INJECTION
	amio__fault_set(AMIO__FAULT_SQE, 0, 0);
	amio__fault_set(AMIO__FAULT_ENTER, 0, 0);
#endif
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void run_seed(uint64_t seed, int64_t bound_ns)
{
	struct amio_poller_config cfg = {0};
	pthread_t sender, dog;
	int64_t limit = 8 * bound_ns + 20 * (int64_t)1000000000;
	int fds_before = t_count_fds();
	uint64_t *ids;
	uint32_t nids = 0;
	char path[] = "/tmp/amio-model-XXXXXX";

	memset(&W, 0, sizeof(W));
	W.seed = seed;
	W.bound_ns = bound_ns;
	W.seed_start = now_ns();
	pthread_mutex_init(&W.trace_mu, NULL);
	seed_thread(0);
	W.objs = calloc(MAXOBJ, sizeof(*W.objs));
	W.recs = calloc(MAXREC, sizeof(*W.recs));
	W.rghs = calloc(MAXRGH, sizeof(*W.rghs));
	ck_assert(W.objs && W.recs && W.rghs);
	W.file_fd = mkstemp(path);
	ck_assert_int_ge(W.file_fd, 0);
	unlink(path);

	cfg.sq_entries = 2 + rnd(15);
	cfg.cq_entries = rnd(2) ? 0 : 8 + rnd(120);
	cfg.queue_entries = 2 + rnd(7);
	cfg.inbox_entries = 2 + rnd(7);
	if (rnd(4) == 0) {
		cfg.max_registrations = 16 + rnd(200);
		W.small_max = true;
	}
	if (rnd(4) == 0)
		cfg.flags |= AMIO_POLLER_NO_MULTISHOT_TIMEOUT;
	if (rnd(6) == 0)
		cfg.flags |= AMIO_POLLER_NO_DEFER_TASKRUN;
	if (rnd(6) == 0)
		cfg.flags |= AMIO_POLLER_NO_RINGLESS_MSG;
	if (rnd(8) == 0)
		cfg.flags |= AMIO_POLLER_SCHED_BATCH;
	if (rnd(4) == 0)
		cfg.flags |= AMIO_POLLER_NO_SPIN;
	else if (rnd(4) == 0)
		cfg.spin_us = rnd(30);
	W.p = t_poller(&cfg);
	W.nworkers = 1 + (int)rnd(MAXW);
	W.ops_per_worker = t_scale(100 + (int)rnd(400));
	if (W.ops_per_worker < 40)
		W.ops_per_worker = 40;
	W.abrupt = rnd(2);
	trace("seed %llu: sq %u cq %u queue %u inbox %u max %u flags %#x spin %u workers %d ops %d",
	      (unsigned long long)seed, cfg.sq_entries, cfg.cq_entries, cfg.queue_entries,
	      cfg.inbox_entries, cfg.max_registrations, cfg.flags, cfg.spin_us, W.nworkers,
	      W.ops_per_worker);
	pthread_barrier_init(&W.bar, NULL, (unsigned)W.nworkers + 1);
	for (int i = 0; i < W.nworkers; i++) {
		struct worker *w = &W.w[i];
		uint32_t mode = rnd(3); /* Amy, inbox, both */

		w->idx = i;
		w->mine = calloc(MAXREC, sizeof(*w->mine));
		w->amy = mode != 1 ? new_rgh(i, false) : NULL;
		w->inbox = mode != 0 ? new_rgh(i, true) : NULL;
		w->nsock = 1 + (int)rnd(MAXSOCK);
		for (int s = 0; s < w->nsock; s++) {
			struct obj *o = new_obj(K_SOCK, i);

			ck_assert_int_eq(socketpair(AF_UNIX,
			                            SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
			                            o->fd),
			                 0);
			w->socks[s] = o->idx;
			publish_obj(o);
		}
	}
	fault_setup();
	ck_assert_int_eq(pthread_create(&dog, NULL, watchdog_main, &limit), 0);
	ck_assert_int_eq(pthread_create(&sender, NULL, sender_main, NULL), 0);
	for (int i = 0; i < W.nworkers; i++)
		ck_assert_int_eq(pthread_create(&W.w[i].th, NULL, worker_main, &W.w[i]), 0);

	/* Run: poll, check, until every worker did its operations. */
	{
		int64_t last_check = now_ns();

		while (__atomic_load_n(&W.done_ops, __ATOMIC_SEQ_CST) < W.nworkers) {
			poll_step(false);
			if (now_ns() - last_check > 20000000) {
				check_owed(false);
				last_check = now_ns();
			}
		}
	}
	/* Quiesce: no more operations; everything owed must come. */
	__atomic_store_n(&W.phase, P_QUIESCE, __ATOMIC_RELEASE);
	pthread_join(sender, NULL);
	trace("quiesce");
	{
		int64_t q = now_ns();

		while (check_owed(false) && now_ns() - q < 4 * bound_ns)
			poll_step(true);
		check_owed(true);
	}
	fault_clear();
	/* Teardown. */
	__atomic_store_n(&W.phase, P_TEARDOWN, __ATOMIC_RELEASE);
	trace("teardown (%s)", W.abrupt ? "abrupt" : "clean");
	while (__atomic_load_n(&W.teardown_ready, __ATOMIC_SEQ_CST) < W.nworkers)
		poll_once(1);
	for (int i = 0; i < 4; i++)
		poll_once(i == 3 ? 5 : 0);
	if (W.abrupt)
		usleep(2000); /* inbox waiters asleep with no limit */
	__atomic_store_n(&W.freeing, 1, __ATOMIC_RELEASE);
	amio_poller_free(W.p);
	__atomic_store_n(&W.freed_poller, 1, __ATOMIC_RELEASE);
	pthread_barrier_wait(&W.bar);
	pthread_barrier_wait(&W.bar);
	for (int i = 0; i < W.nworkers; i++)
		pthread_join(W.w[i].th, NULL);
	__atomic_store_n(&W.phase, P_DONE, __ATOMIC_RELEASE);
	__atomic_store_n(&W.watchdog_stop, 1, __ATOMIC_RELEASE);
	pthread_join(dog, NULL);

	/* Ids are unique. */
	ids = malloc(MAXREC * sizeof(*ids));
	for (uint32_t i = 0; i < W.nrec; i++)
		if (W.recs[i].id)
			ids[nids++] = W.recs[i].id;
	qsort(ids, nids, sizeof(*ids), cmp_u64);
	for (uint32_t i = 1; i < nids; i++)
		EXPECT(ids[i - 1] != ids[i], "id %llu handed out twice",
		       (unsigned long long)ids[i]);
	free(ids);
	for (uint32_t i = 0; i < W.nobj; i++) {
		if (W.objs[i].kind == K_SOCK) {
			close(W.objs[i].fd[0]);
			close(W.objs[i].fd[1]);
		}
		pthread_mutex_destroy(&W.objs[i].mu);
	}
	close(W.file_fd);
	EXPECT(t_count_fds() == fds_before, "fds: %d after the seed, %d before", t_count_fds(),
	       fds_before);
	pthread_barrier_destroy(&W.bar);
	for (int i = 0; i < W.nworkers; i++)
		free(W.w[i].mine);
	free(W.objs);
	free(W.recs);
	free(W.rghs);
	total_seeds++;
}

/* Poller configurations the contract refuses. */
static void check_config_limits(void)
{
	static const struct amio_poller_config bad[] = {
	    {.sq_entries = 16385},
	    {.cq_entries = 65537},
	    {.queue_entries = (1u << 22) + 1},
	    {.inbox_entries = (1u << 22) + 1},
	    {.max_registrations = 1u << 24},
	    {.spin_us = 1000001},
	    {.flags = 1u << 7},
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		amio_poller *p = NULL;
		int rc = amio_poller_new(&p, &bad[i]);

		if (rc == 0)
			amio_poller_free(p);
		EXPECT(rc == -EINVAL, "amio_poller_new(bad config %zu) = %s", i, amio_strerror(rc));
	}
}

START_TEST(out_of_range_configs_are_refused)
{
	check_config_limits();
}
END_TEST

START_TEST(random_sequences_match_the_model)
{
	const char *one = getenv("AMIO_MODEL_SEED"), *secs = getenv("AMIO_MODEL_SECONDS");
	const char *bound = getenv("AMIO_MODEL_BOUND_MS");
	double scale = getenv("AMIO_TEST_SCALE") ? strtod(getenv("AMIO_TEST_SCALE"), NULL) : 1.0;
	double seconds = secs ? strtod(secs, NULL) : (scale >= 1 ? 20 : 20 * scale * 10);
	int64_t bound_ns = 2500;
	uint64_t seed, first;
	int64_t end;

#if defined(__SANITIZE_THREAD__)
	bound_ns = 15000;
#elif defined(__SANITIZE_ADDRESS__)
	bound_ns = 5000;
#endif
	if (bound)
		bound_ns = strtoll(bound, NULL, 10);
	bound_ns *= 1000000;
	if (seconds < 2)
		seconds = 2;
	signal(SIGPIPE, SIG_IGN);
	seed = one ? strtoull(one, NULL, 0) : (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
	first = seed;
	end = now_ns() + (int64_t)(seconds * 1e9);
	do
		run_seed(seed++, bound_ns);
	while (!one && now_ns() < end);
	fprintf(stderr,
	        "check_model: seeds run %llu (first %llu), operations %llu, notifications checked "
	        "%llu\n",
	        (unsigned long long)total_seeds, (unsigned long long)first,
	        (unsigned long long)total_ops, (unsigned long long)total_notes);
	printf("MODEL|seeds %llu|operations %llu|notifications %llu\n",
	       (unsigned long long)total_seeds, (unsigned long long)total_ops,
	       (unsigned long long)total_notes);
	fflush(stdout);
}
END_TEST

static Suite *model_suite(void)
{
	Suite *s = suite_create("model");
	TCase *tc = tcase_create("config");
	const char *secs = getenv("AMIO_MODEL_SECONDS");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, out_of_range_configs_are_refused);
	suite_add_tcase(s, tc);
	tc = tcase_create("random");

	tcase_set_timeout(tc, secs ? strtod(secs, NULL) * 2 + 600 : 600);
	tcase_add_test(tc, random_sequences_match_the_model);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	struct rlimit rl;

	/* The closed-fd registrations use fd 900000+: make sure it is not open. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 900000) {
		rl.rlim_cur = 4096;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	t_require_io_uring();
	return t_run(model_suite());
}
