/*
 * wakeup_bench: what it costs to hand an 8-byte message to a thread asleep in
 * its event loop, through an amio channel, Amy's eventfd channel, or a pipe.
 *
 *   amio     amio_channel_send; the receiver is the poll thread (Amy mode):
 *            amio_poller_wait -> AMIO_CHANNEL -> try_recv until -EAGAIN
 *   eventfd  Amy's channel (amy/src/channel.rs), mirrored in C: a bounded
 *            mutex-protected ring, a pending counter and an edge-triggered
 *            eventfd in epoll; the receiver sleeps in epoll_wait
 *   pipe     every message write()n into a pipe; epoll_wait, read until EAGAIN
 *
 * Throughput: -s senders each send -n messages as fast as they can; a sender
 * that finds the queue full blocks (amio_channel_send_wait, a condition
 * variable like Rust's sync_channel, a blocking pipe write) and is counted;
 * with -y the channels' senders sched_yield() and retry instead (the pipe
 * still blocks).
 * Latency (-l): one sender, one message in flight: it stamps CLOCK_MONOTONIC
 * ns into the message and waits for the receiver's ack before the next one;
 * latency = receive time - stamp. -g gap_us sleeps between messages, so the
 * receiver is asleep (past any idle spin of amio's poller) when the next
 * one comes.
 * All queues hold -c messages (default 4096; the pipe gets 8 x that in bytes).
 *
 * Pinning: the receiver runs on the first CPU this process may use (CPU 0),
 * senders on the others round robin (all on CPU 1 with 2 CPUs), so a spinning
 * sender never steals the receiver's CPU. -u or a single CPU: not pinned.
 *
 * Syscalls: under `perf stat --control fd:C,A -D -1` (bench/micro.sh), with
 * BENCH_PERF_CTL_FD=C and BENCH_PERF_ACK_FD=A in the environment, counting is
 * enabled for the measured window only. amio's own counters are printed too.
 * amio's poller: the library's default config; BENCH_AMIO_SPIN_US=us sets
 * its idle spin (spin_us), BENCH_AMIO_NO_SPIN=1 forbids it.
 *
 * Usage: wakeup_bench -m amio|eventfd|pipe [-s senders] [-n messages] [-l]
 *                     [-g gap_us] [-c capacity] [-u] [-y]
 * Output: human text, then one `RESULT key=value ...` line. Exit 1 on a lost,
 * doubled or reordered message, or when no message comes for 10 s.
 */
#define _GNU_SOURCE
#include <amio.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define BENCH_NAME "wakeup_bench"
#include "micro_common.h"

#define MSG_SIZE    8
#define MAX_SENDERS 64
#define SEQ_BITS    56 /* message = sender << 56 | sequence */
#define SEQ_MASK    ((UINT64_C(1) << SEQ_BITS) - 1)
#define HANG_MS     10000 /* no message for this long: a lost wakeup */

struct bench;

/* One mechanism: how senders send, how the receiver sleeps and drains. */
struct mech {
	const char *name;
	void (*setup)(struct bench *b);
	void (*send)(struct bench *b, uint64_t msg, uint64_t *full);
	int (*wait_drain)(struct bench *b); /* 0, or -ETIMEDOUT */
	void (*teardown)(struct bench *b);
};

/* Amy's channel: Rust's mpsc queue (bounded here: a sync_channel), an atomic
 * count of pending messages and an eventfd registered edge-triggered. */
struct amy_chan {
	pthread_mutex_t lock;
	pthread_cond_t room;
	uint64_t *buf;
	size_t cap, head, len;
	unsigned waiters; /* senders blocked on a full ring */
	atomic_size_t pending;
	int efd;
};

struct sender {
	struct bench *b;
	unsigned idx;
	int cpu;
	uint64_t full; /* sends that found the queue full */
	pthread_t thread;
};

struct bench {
	const struct mech *m;
	unsigned senders, gap_us;
	uint64_t n;
	size_t capacity;
	bool latency, pin, spin_ack, yield;
	int ep;              /* eventfd and pipe receivers */
	amio_poller *p;      /* amio */
	amio_registrar *r;   /* amio */
	amio_channel *ch;    /* amio */
	struct amy_chan q;   /* eventfd */
	int pfd[2];          /* pipe */
	uint8_t carry[4096]; /* pipe: bytes read but not yet a whole message */
	size_t carry_len;    /* pipe */
	uint64_t expected, received, errors;
	uint64_t next_seq[MAX_SENDERS];
	uint64_t *lat_ns; /* latency: one sample per message */
	pthread_barrier_t start;
	/* Written by the receiver, spun on by the latency sender: own line. */
	_Alignas(64) atomic_uint_fast64_t acked;
};

/* ---- Helpers ------------------------------------------------------------ */

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/* The CPUs we may run on, in order; returns how many (at most cap). */
static int allowed_cpus(int *cpus, int cap)
{
	cpu_set_t set;
	int n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return 0;
	for (int c = 0; c < CPU_SETSIZE && n < cap; c++)
		if (CPU_ISSET(c, &set))
			cpus[n++] = c;
	return n;
}

static int epoll_add(int ep, int fd, uint32_t events)
{
	struct epoll_event ev = {.events = events};

	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static int epoll_wait_one(int ep)
{
	struct epoll_event ev;
	int rc;

	do
		rc = epoll_wait(ep, &ev, 1, HANG_MS);
	while (rc < 0 && errno == EINTR);
	if (rc < 0)
		die("epoll_wait", errno);
	return rc == 0 ? -ETIMEDOUT : 0;
}

/* ---- Receiving: the same bookkeeping for every mechanism ---------------- */

static void deliver(struct bench *b, uint64_t msg)
{
	unsigned s = (unsigned)(msg >> SEQ_BITS);

	if (b->received >= b->expected) {
		b->errors++; /* more messages than were sent */
		return;
	}
	if (b->latency) {
		b->lat_ns[b->received++] = (uint64_t)(now_ns() - (int64_t)msg);
		/* The sender stamps its next message only after this. */
		atomic_store_explicit(&b->acked, b->received, memory_order_release);
		return;
	}
	/* Each sender's messages arrive once each, in its order. */
	if (s >= b->senders || (msg & SEQ_MASK) != b->next_seq[s])
		b->errors++;
	else
		b->next_seq[s]++;
	b->received++;
}

/* ---- amio channel --------------------------------------------------------- */

static void amio_setup(struct bench *b)
{
	struct amio_poller_config cfg;
	amio_notification n[4];
	int rc;

	poller_config(&cfg);
	if ((rc = amio_poller_new(&b->p, &cfg)) < 0 ||
	    (rc = amio_registrar_new(b->p, 0, &b->r)) < 0 ||
	    (rc = amio_channel_new(b->r, b->capacity, MSG_SIZE, NULL, &b->ch)) < 0)
		die_amio("amio setup", rc);
	/* This thread becomes the poll thread, and the channel's registration
	 * is applied before the measured window. */
	rc = amio_poller_wait(b->p, n, 4, 0);
	if (rc < 0)
		die_amio("amio_poller_wait", rc);
}

static void wb_amio_send(struct bench *b, uint64_t msg, uint64_t *full)
{
	int rc = amio_channel_send(b->ch, &msg);

	for (; rc == -EAGAIN && b->yield; rc = amio_channel_send(b->ch, &msg)) {
		(*full)++;
		sched_yield();
	}
	if (rc == -EAGAIN) {
		/* Full: sleep on amio's futex until the receiver makes room. */
		(*full)++;
		rc = amio_channel_send_wait(b->ch, &msg, -1);
	}
	if (rc < 0)
		die_amio("amio_channel_send", rc);
}

static int amio_wait_drain(struct bench *b)
{
	amio_notification n[8];
	uint64_t msg;
	int rc = amio_poller_wait(b->p, n, 8, HANG_MS);

	if (rc < 0)
		die_amio("amio_poller_wait", rc);
	if (rc == 0)
		return -ETIMEDOUT; /* internal wakeups never return 0 early */
	for (int i = 0; i < rc; i++) {
		if (!(n[i].events & AMIO_CHANNEL))
			continue;
		/* Drain to -EAGAIN: only then does the next send notify again. */
		while (amio_channel_try_recv(b->ch, &msg) == 0)
			deliver(b, msg);
	}
	return 0;
}

static void amio_teardown(struct bench *b)
{
	amio_channel_free(b->ch);
	amio_registrar_free(b->r);
	amio_poller_free(b->p);
}

/* ---- Amy's eventfd channel ------------------------------------------------
 * Mirrors amy/src/channel.rs and user_event.rs (v0.10): send() enqueues, then
 * writes the eventfd only if pending went 0 -> 1; try_recv() on pending == 0
 * reads (clears) the eventfd, looks at pending again and, if a send raced in,
 * writes the eventfd again. So Amy does NOT write the eventfd on every send:
 * a receiver busy draining costs its senders no syscall. The eventfd is
 * non-blocking and registered EPOLLIN | EPOLLET, as Amy registers it.
 * The queue: Amy uses Rust's std::sync::mpsc; for the same bound as amio's
 * channel we take a sync_channel, which in Amy's day (2016-2018) was a
 * mutex-protected ring whose send() blocks on a condition variable while
 * full: that is what we build. (ck_ring's MPSC enqueue spins in ticket order
 * without yielding; with 4 senders on one CPU a preempted sender stalls the
 * others for a time slice, which would measure ck's convoy, not Amy; amio's
 * channel stopped using it for that reason.)
 */

static void amy_trigger(struct amy_chan *q)
{
	uint64_t one = 1;

	if (write(q->efd, &one, sizeof(one)) != sizeof(one))
		die("eventfd write", errno);
}

static void amy_setup(struct bench *b)
{
	struct amy_chan *q = &b->q;

	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->room, NULL);
	q->cap = b->capacity;
	q->buf = calloc(q->cap, sizeof(*q->buf));
	q->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	b->ep = epoll_create1(EPOLL_CLOEXEC);
	if (!q->buf || q->efd < 0 || b->ep < 0 || epoll_add(b->ep, q->efd, EPOLLIN | EPOLLET) < 0)
		die("eventfd channel setup", errno);
}

static void amy_send(struct bench *b, uint64_t msg, uint64_t *full)
{
	struct amy_chan *q = &b->q;
	size_t tail;

	pthread_mutex_lock(&q->lock);
	while (q->len == q->cap && b->yield) {
		(*full)++;
		pthread_mutex_unlock(&q->lock);
		sched_yield();
		pthread_mutex_lock(&q->lock);
	}
	while (q->len == q->cap) {
		(*full)++;
		q->waiters++;
		pthread_cond_wait(&q->room, &q->lock);
		q->waiters--;
	}
	tail = q->head + q->len++;
	q->buf[tail < q->cap ? tail : tail - q->cap] = msg;
	pthread_mutex_unlock(&q->lock);
	/* Seq-cst, as Amy: the enqueue is visible before pending counts it. */
	if (atomic_fetch_add(&q->pending, 1) == 0)
		amy_trigger(q);
}

static bool amy_try_recv(struct amy_chan *q, uint64_t *msg)
{
	uint64_t v;

	if (atomic_load(&q->pending) == 0) {
		/* Amy's clear(): an EAGAIN ends the drain (Amy returns it as an
		 * error); the eventfd was clear, so a later send will write it. */
		if (read(q->efd, &v, sizeof(v)) < 0) {
			if (errno != EAGAIN)
				die("eventfd read", errno);
			return false;
		}
		if (atomic_load(&q->pending) == 0)
			return false;
		amy_trigger(q); /* a send raced with the clear: stay readable */
	}
	atomic_fetch_sub(&q->pending, 1);
	pthread_mutex_lock(&q->lock);
	*msg = q->buf[q->head];
	q->head = q->head + 1 == q->cap ? 0 : q->head + 1;
	q->len--;
	if (q->waiters)
		pthread_cond_signal(&q->room);
	pthread_mutex_unlock(&q->lock);
	return true;
}

static int amy_wait_drain(struct bench *b)
{
	uint64_t msg;
	int rc = epoll_wait_one(b->ep);

	if (rc < 0)
		return rc;
	/* Edge-triggered: drain until Empty, as every Amy user must. */
	while (amy_try_recv(&b->q, &msg))
		deliver(b, msg);
	return 0;
}

static void amy_teardown(struct bench *b)
{
	close(b->ep);
	close(b->q.efd);
	free(b->q.buf);
	pthread_cond_destroy(&b->q.room);
	pthread_mutex_destroy(&b->q.lock);
}

/* ---- Pipe ------------------------------------------------------------------ */

static void pipe_setup(struct bench *b)
{
	b->ep = epoll_create1(EPOLL_CLOEXEC);
	if (b->ep < 0 || pipe2(b->pfd, O_CLOEXEC) < 0 ||
	    fcntl(b->pfd[0], F_SETFL, O_NONBLOCK) < 0 ||
	    epoll_add(b->ep, b->pfd[0], EPOLLIN | EPOLLET) < 0)
		die("pipe setup", errno);
	/* The same room as the channels (the kernel rounds up to pages). */
	if (fcntl(b->pfd[1], F_SETPIPE_SZ, (int)(b->capacity * MSG_SIZE)) < 0)
		die("F_SETPIPE_SZ", errno);
}

static void pipe_send(struct bench *b, uint64_t msg, uint64_t *full)
{
	/* Writes up to PIPE_BUF are atomic: senders never interleave bytes.
	 * A full pipe blocks the writer in the kernel (not counted). */
	(void)full;
	if (write(b->pfd[1], &msg, sizeof(msg)) != sizeof(msg))
		die("pipe write", errno);
}

static int pipe_wait_drain(struct bench *b)
{
	int rc = epoll_wait_one(b->ep);

	if (rc < 0)
		return rc;
	for (;;) {
		ssize_t got =
		    read(b->pfd[0], b->carry + b->carry_len, sizeof(b->carry) - b->carry_len);
		size_t len, off = 0;
		uint64_t msg;

		if (got < 0 && errno == EAGAIN)
			return 0;
		if (got <= 0)
			die("pipe read", got < 0 ? errno : EPIPE);
		len = b->carry_len + (size_t)got;
		for (; len - off >= MSG_SIZE; off += MSG_SIZE) {
			memcpy(&msg, b->carry + off, MSG_SIZE);
			deliver(b, msg);
		}
		b->carry_len = len - off;
		memmove(b->carry, b->carry + off, b->carry_len);
	}
}

static void pipe_teardown(struct bench *b)
{
	close(b->ep);
	close(b->pfd[0]);
	close(b->pfd[1]);
}

static const struct mech mechs[] = {
    {"amio", amio_setup, wb_amio_send, amio_wait_drain, amio_teardown},
    {"eventfd", amy_setup, amy_send, amy_wait_drain, amy_teardown},
    {"pipe", pipe_setup, pipe_send, pipe_wait_drain, pipe_teardown},
};

/* ---- Senders ---------------------------------------------------------------- */

static void wait_ack(struct bench *b, uint64_t want)
{
	/* On its own CPU the sender spins: a yield would be a syscall of its
	 * own in the count. Sharing a CPU it must yield to the receiver. */
	for (unsigned i = 1; atomic_load_explicit(&b->acked, memory_order_acquire) < want; i++) {
		if (!b->spin_ack && i % 64 == 0)
			sched_yield();
		else
			cpu_relax();
	}
}

static void sleep_us(unsigned us)
{
	struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void *sender_main(void *arg)
{
	struct sender *s = arg;
	struct bench *b = s->b;
	uint64_t tag = (uint64_t)s->idx << SEQ_BITS;

	pthread_barrier_wait(&b->start);
	for (uint64_t i = 0; i < b->n; i++) {
		if (!b->latency) {
			b->m->send(b, tag | i, &s->full);
			continue;
		}
		b->m->send(b, (uint64_t)now_ns(), &s->full);
		wait_ack(b, i + 1);
		if (b->gap_us)
			sleep_us(b->gap_us);
	}
	return NULL;
}

static void start_senders(struct bench *b, struct sender *s)
{
	int cpus[CPU_SETSIZE], ncpu = allowed_cpus(cpus, CPU_SETSIZE), rc;

	b->pin = b->pin && ncpu >= 2;
	b->spin_ack = b->pin;
	if (b->pin)
		pin_thread(pthread_self(), cpus[0]);
	for (unsigned i = 0; i < b->senders; i++) {
		s[i] = (struct sender){
		    .b = b, .idx = i, .cpu = b->pin ? cpus[1 + i % (ncpu - 1)] : -1};
		rc = pthread_create(&s[i].thread, NULL, sender_main, &s[i]);
		if (rc)
			die("pthread_create", rc);
		if (b->pin)
			pin_thread(s[i].thread, s[i].cpu);
	}
}

/* ---- Report ---------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *c)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)c;

	return x < y ? -1 : x > y;
}

static void report_latency(struct bench *b, const char *extra)
{
	/* The first 10% warm caches and the scheduler: not counted. */
	uint64_t skip = b->expected / 10, k = b->expected - skip, *l = b->lat_ns + skip;

	qsort(l, k, sizeof(*l), cmp_u64);
	printf("%s: one-way latency, %" PRIu64 " messages (first %" PRIu64
	       " dropped), gap %u us: p50 %.1f us, p90 %.1f us, p99 %.1f us, max %.1f us\n",
	       b->m->name, k, skip, b->gap_us, l[k / 2] / 1e3, l[k * 9 / 10] / 1e3,
	       l[k * 99 / 100] / 1e3, l[k - 1] / 1e3);
	printf("RESULT bench=wakeup mode=%s test=latency senders=1 messages=%" PRIu64
	       " gap_us=%u p50_ns=%" PRIu64 " p90_ns=%" PRIu64 " p99_ns=%" PRIu64 " max_ns=%" PRIu64
	       " errors=%" PRIu64 "%s pinned=%d\n",
	       b->m->name, b->expected, b->gap_us, l[k / 2], l[k * 9 / 10], l[k * 99 / 100],
	       l[k - 1], b->errors, extra, b->pin);
}

static void report_rate(struct bench *b, const struct sender *s, int64_t ns, int64_t cpu,
                        const char *extra)
{
	uint64_t full = 0;

	for (unsigned i = 0; i < b->senders; i++)
		full += s[i].full;
	printf("%s: %u sender(s) x %" PRIu64 " messages in %.3f s: %.0f messages/s, "
	       "%.3f CPU us/message, %" PRIu64 " sends found the queue full\n",
	       b->m->name, b->senders, b->n, ns / 1e9, b->expected * 1e9 / ns,
	       cpu / 1e3 / b->expected, full);
	printf("RESULT bench=wakeup mode=%s test=throughput senders=%u messages=%" PRIu64
	       " secs=%.4f msgs_per_s=%.0f cpu_us_per_msg=%.3f full_waits=%" PRIu64
	       " on_full=%s errors=%" PRIu64 "%s pinned=%d\n",
	       b->m->name, b->senders, b->expected, ns / 1e9, b->expected * 1e9 / ns,
	       cpu / 1e3 / b->expected, full, b->yield ? "yield" : "block", b->errors, extra,
	       b->pin);
}

/* amio's own counters over the window (its syscalls, even without perf):
 * one human line now, and fields for the RESULT line in extra. */
static void amio_counters(struct bench *b, const struct amio_poller_stats *s0, char *extra,
                          size_t len)
{
	struct amio_poller_stats s1;
	double k = b->expected / 1e3, enters, wakeups;

	amio_poller_stats(b->p, &s1);
	enters = (s1.enters - s0->enters) / k;
	wakeups = (s1.wakeups_sent - s0->wakeups_sent) / k;
	printf("amio: %.2f io_uring_enter + %.2f MSG_RING wakeups per 1,000 messages\n", enters,
	       wakeups);
	/* The raw counts too: bench/properties.sh compares wakeups with enters. */
	snprintf(extra, len,
	         " amio_enters_per_1k=%.2f amio_wakeups_per_1k=%.2f amio_enters=%" PRIu64
	         " amio_wakeups=%" PRIu64,
	         enters, wakeups, s1.enters - s0->enters, s1.wakeups_sent - s0->wakeups_sent);
}

/* ---- Main -------------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr, "usage: wakeup_bench -m amio|eventfd|pipe [-s senders] [-n messages]"
	                " [-l] [-g gap_us] [-c capacity] [-u] [-y]\n");
	exit(2);
}

static void parse(struct bench *b, int argc, char **argv)
{
	int c;

	*b = (struct bench){.senders = 1, .n = 0, .capacity = 4096, .pin = true};
	while ((c = getopt(argc, argv, "m:s:n:lg:c:uy")) != -1) {
		switch (c) {
		case 'm':
			for (size_t i = 0; i < sizeof(mechs) / sizeof(mechs[0]); i++)
				if (!strcmp(optarg, mechs[i].name))
					b->m = &mechs[i];
			break;
		case 's':
			b->senders = (unsigned)atoi(optarg);
			break;
		case 'n':
			b->n = strtoull(optarg, NULL, 10);
			break;
		case 'l':
			b->latency = true;
			break;
		case 'g':
			b->gap_us = (unsigned)atoi(optarg);
			break;
		case 'c':
			b->capacity = strtoull(optarg, NULL, 10);
			break;
		case 'u':
			b->pin = false;
			break;
		case 'y':
			b->yield = true;
			break;
		default:
			usage();
		}
	}
	if (!b->m || b->senders < 1 || b->senders > MAX_SENDERS || b->capacity < 1 ||
	    b->n > SEQ_MASK || (b->latency && b->senders != 1))
		usage();
	if (!b->n)
		b->n = b->latency ? 10000 : 100000;
}

int main(int argc, char **argv)
{
	static struct bench bench;
	struct bench *b = &bench;
	struct sender s[MAX_SENDERS];
	struct amio_poller_stats st0;
	char extra[192] = "";
	int64_t t0, c0;

	parse(b, argc, argv);
	b->expected = b->n * b->senders;
	if (b->latency && !(b->lat_ns = calloc(b->expected, sizeof(*b->lat_ns))))
		die("calloc", ENOMEM);
	pthread_barrier_init(&b->start, NULL, b->senders + 1);
	start_senders(b, s); /* pins this thread first: the receiver's setup */
	b->m->setup(b);      /* runs on the receiver's CPU */
	if (b->p)
		amio_poller_stats(b->p, &st0);
	perf_ctl("enable\n");
	c0 = cpu_ns();
	t0 = now_ns();
	pthread_barrier_wait(&b->start);
	while (b->received < b->expected)
		if (b->m->wait_drain(b) == -ETIMEDOUT)
			die("no message for 10 s (lost wakeup?)", ETIMEDOUT);
	t0 = now_ns() - t0;
	c0 = cpu_ns() - c0;
	perf_ctl("disable\n");
	for (unsigned i = 0; i < b->senders; i++)
		pthread_join(s[i].thread, NULL);
	if (b->p)
		amio_counters(b, &st0, extra, sizeof(extra));
	if (b->latency)
		report_latency(b, extra);
	else
		report_rate(b, s, t0, c0, extra);
	b->m->teardown(b);
	if (b->errors)
		fprintf(stderr, "wakeup_bench: %" PRIu64 " lost, doubled or reordered messages\n",
		        b->errors);
	return b->errors ? 1 : 0;
}
