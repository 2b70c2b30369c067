/*
 * inbox_transport_bench: how should a poll thread hand notifications to a worker
 * that sleeps in io_uring_enter on its own ring (DESIGN.md section 1, inbox path)?
 *
 *   msgring  one IORING_OP_MSG_RING per notification, poll ring -> worker ring:
 *            user_data = id, res = events; the worker finds data in a table by id
 *            and sleeps in io_uring_wait_cqe when its CQ is empty
 *   ring     an SPSC ck_ring of 24-byte notifications plus a doorbell: the worker
 *            publishes SLEEPING and re-checks the ring before it sleeps; the
 *            producer enqueues, fences and sends one MSG_RING only if it wins
 *            SLEEPING -> NOTIFIED (DESIGN rule 2; what src/poller.c does today)
 *
 * Throughput: the producer sends -n notifications in bursts of -b, one submit
 * (msgring) or one doorbell check (ring) per burst. Both transports hold -c
 * notifications: the ck_ring, or (msgring) a credit window the worker returns as
 * it reaps, so its CQ never overflows. A producer that finds no room spins on its
 * own CPU, or yields (-S). The worker checks that every id arrives once, in order,
 * with its own data; exit 1 otherwise, or when nothing comes for 10 s.
 * Latency (-l): one notification in flight; the producer stamps CLOCK_MONOTONIC ns
 * in the id's table entry and spins (yields with -S) until the worker's ack;
 * latency = reap time - stamp. -g gap_us sleeps before each send, so the worker
 * has gone to sleep when it comes.
 *
 * CPUs: producer on CPU 0, worker on CPU 1; -S puts both on CPU 0.
 * Rings: both SINGLE_ISSUER|DEFER_TASKRUN if the kernel takes it, else plain; -P
 * makes the worker's ring plain (MSG_RING then posts into its CQ directly, not as
 * task work the worker must enter the kernel to run).
 * Counts: io_uring_enter calls of both threads (a producer submit is one, a worker
 * wait is one when its CQ was empty), MSG_RINGs sent, CPU from getrusage.
 *
 * Usage: inbox_transport_bench -m msgring|ring [-b burst] [-n count] [-c capacity]
 *                              [-l] [-g gap_us] [-S] [-P]
 * Output: human text, then one `RESULT key=value ...` line.
 */
#define _GNU_SOURCE
#include <ck_pr.h>
#include <ck_ring.h>
#include <inttypes.h>
#include <liburing.h>
#include <stdbool.h>

#define BENCH_NAME "inbox_transport_bench"
#include "bench_util.h"

#define NCONN     1024 /* registrations the ids map onto (power of two) */
#define MAX_BURST 256  /* the producer's SQ size */
#define EVENTS    1u   /* every notification says READ */
#define TAG_WAKE  (~UINT64_C(0))
#define HANG_NS   (INT64_C(10) * 1000000000)

/* A notification as amio's inbox carries it: 24 bytes. */
struct bench_note {
	uint64_t id;
	uint32_t events;
	int32_t error;
	void *data;
};
CK_RING_PROTOTYPE(bench_note, bench_note)

/* What a registration's data points at. tag = id % NCONN lets the worker check
 * it got the right data; stamp_ns is the send time (latency mode). */
struct conn {
	uint64_t tag;
	int64_t stamp_ns;
};

enum { RUNNING, SLEEPING, NOTIFIED };

struct bench {
	bool ring_mode, latency, shared, plain;
	unsigned burst, gap_us;
	uint64_t n;
	unsigned cap;
	struct conn conns[NCONN];
	_Alignas(64) ck_ring_t inbox; /* ring mode: producer -> worker */
	struct bench_note *inbox_buf;
	int64_t *lat_ns;
	pthread_barrier_t start;
	/* Producer thread only; each side's fields on lines of their own. */
	_Alignas(64) struct io_uring prod;
	bool prod_defer;
	uint64_t prod_enters, msgs, full_bursts;
	int64_t prod_cpu_ns;
	/* Worker thread only (read by main after the join). */
	_Alignas(64) struct io_uring work;
	bool work_defer;
	uint64_t next, work_enters, wakes;
	int64_t work_cpu_ns, t_end_ns, cpu_end_ns;
	/* Written by the worker, read by the producer's doorbell: own line. */
	_Alignas(64) uint32_t doorbell;
	/* Notifications reaped so far: the msgring credit window and the latency
	 * ack. Written by the worker, spun on by the producer: own line. */
	_Alignas(64) uint64_t consumed;
	char pad[64 - sizeof(uint64_t)];
};

static struct bench bench;

/* ---- Helpers ------------------------------------------------------------ */

static int64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Wait for room or an ack. On its own CPU the producer spins (a yield would be a
 * syscall); sharing the worker's CPU it must yield or the worker never runs. */
static void wait_turn(const struct bench *b)
{
	if (b->shared)
		sched_yield();
	else
		ck_pr_stall();
}

/* SINGLE_ISSUER|DEFER_TASKRUN as amio's poller asks for; -EINVAL on kernels
 * before 6.1: fall back to a plain ring. Call on the thread that will use it. */
static bool ring_init(struct io_uring *ring, unsigned sq, unsigned cq, bool plain)
{
	struct io_uring_params prm;
	int rc = -EINVAL;

	if (!plain) {
		memset(&prm, 0, sizeof(prm));
		prm.flags =
		    IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
		prm.cq_entries = cq;
		rc = io_uring_queue_init_params(sq, ring, &prm);
	}
	if (rc == -EINVAL) {
		memset(&prm, 0, sizeof(prm));
		prm.flags = IORING_SETUP_CQSIZE;
		prm.cq_entries = cq;
		if ((rc = io_uring_queue_init_params(sq, ring, &prm)) < 0)
			die("io_uring_queue_init_params", rc);
		return false;
	}
	if (rc < 0)
		die("io_uring_queue_init_params", rc);
	return true;
}

/* ---- Producer (the poll thread) ---------------------------------------- */

/* One io_uring_enter for whatever MSG_RINGs are prepared. */
static void submit(struct bench *b)
{
	struct io_uring_cqe *cqe;
	int rc;

	b->prod_enters++;
	if ((rc = io_uring_submit(&b->prod)) < 0)
		die("io_uring_submit", rc);
	/* CQE_SKIP_SUCCESS, and MSG_RING completes during the submit: a CQE here
	 * is a MSG_RING that failed. */
	if (io_uring_peek_cqe(&b->prod, &cqe) == 0)
		die("MSG_RING", cqe->res);
}

static void msg_ring(struct bench *b, uint32_t len, uint64_t user_data)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&b->prod);

	if (!sqe)
		die("io_uring_get_sqe", EBUSY); /* bursts are <= the SQ size */
	io_uring_prep_msg_ring(sqe, b->work.ring_fd, len, user_data, 0);
	io_uring_sqe_set_data64(sqe, 0);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
	b->msgs++;
}

/* msgring: ids first .. first+k-1, one MSG_RING each, one enter. */
static void send_msgring(struct bench *b, uint64_t first, unsigned k)
{
	/* The worker's CQ holds cap: never have more in flight, or the kernel
	 * parks CQEs on its overflow list and we measure that instead. The
	 * worker frees its CQ slots before it publishes consumed (its fence),
	 * so a credit read here is a free slot. */
	if (first + k - ck_pr_load_64(&b->consumed) > b->cap) {
		b->full_bursts++;
		while (first + k - ck_pr_load_64(&b->consumed) > b->cap)
			wait_turn(b);
	}
	for (unsigned i = 0; i < k; i++)
		msg_ring(b, EVENTS, first + i);
	submit(b);
}

/* ring: wake the worker only if it sleeps, and only once per sleep. */
static void ring_doorbell(struct bench *b)
{
	/* Our ring stores before the doorbell load; pairs with the worker's
	 * fence between its SLEEPING store and ring re-check: either it sees
	 * our notifications or we see SLEEPING. */
	ck_pr_fence_store_load();
	if (ck_pr_load_32(&b->doorbell) != SLEEPING ||
	    !ck_pr_cas_32(&b->doorbell, SLEEPING, NOTIFIED))
		return;
	msg_ring(b, 0, TAG_WAKE);
	submit(b);
}

static void send_ring(struct bench *b, uint64_t first, unsigned k)
{
	bool waited = false;

	for (uint64_t id = first; id < first + k; id++) {
		struct bench_note nt = {id, EVENTS, 0, &b->conns[id % NCONN]};

		while (!ck_ring_enqueue_spsc_bench_note(&b->inbox, b->inbox_buf, &nt)) {
			/* Full: what is queued must reach a sleeping worker
			 * before we wait for it to make room. */
			ring_doorbell(b);
			waited = true;
			wait_turn(b);
		}
	}
	b->full_bursts += waited;
	ring_doorbell(b);
}

static void produce(struct bench *b)
{
	int64_t cpu0 = thread_cpu_ns();

	for (uint64_t sent = 0; sent < b->n;) {
		unsigned k = b->n - sent < b->burst ? (unsigned)(b->n - sent) : b->burst;

		if (b->latency) {
			struct timespec gap = {0, (long)b->gap_us * 1000};

			if (b->gap_us)
				clock_nanosleep(CLOCK_MONOTONIC, 0, &gap, NULL);
			/* Published by the enqueue's fence or the MSG_RING
			 * syscall before the worker can see the id. */
			b->conns[sent % NCONN].stamp_ns = now_ns();
		}
		if (b->ring_mode)
			send_ring(b, sent, k);
		else
			send_msgring(b, sent, k);
		sent += k;
		/* Latency: one in flight, until the worker's ack. */
		while (b->latency && ck_pr_load_64(&b->consumed) < sent)
			wait_turn(b);
	}
	b->prod_cpu_ns = thread_cpu_ns() - cpu0;
}

/* ---- Worker ------------------------------------------------------------- */

/* The same bookkeeping for both transports: each id once, in order, with its
 * own data. */
static void deliver(struct bench *b, uint64_t id, uint32_t events, const struct conn *c)
{
	if (id != b->next || events != EVENTS || c->tag != id % NCONN) {
		fprintf(stderr,
		        "inbox_transport_bench: got id %" PRIu64 " (events %u, tag %" PRIu64
		        ") where %" PRIu64 " was due: lost, doubled or reordered\n",
		        id, events, c->tag, b->next);
		exit(1);
	}
	if (b->latency)
		b->lat_ns[id] = now_ns() - c->stamp_ns;
	b->next++;
}

/* Block until the CQ has an entry. One io_uring_enter when it is empty: with
 * DEFER_TASKRUN, MSG_RING CQEs only appear while the worker is in the kernel. */
static void wait_cqe(struct bench *b)
{
	struct __kernel_timespec ts = {.tv_sec = 1};
	struct io_uring_cqe *cqe;
	int64_t deadline = now_ns() + HANG_NS;
	int rc;

	while (!io_uring_cq_ready(&b->work)) {
		b->work_enters++;
		rc = io_uring_wait_cqe_timeout(&b->work, &cqe, &ts);
		if (rc < 0 && rc != -ETIME && rc != -EINTR)
			die("io_uring_wait_cqe_timeout", rc);
		if (rc == -ETIME && now_ns() > deadline) {
			fprintf(stderr,
			        "inbox_transport_bench: nothing for 10 s after %" PRIu64
			        " of %" PRIu64 ": a lost notification or wakeup\n",
			        b->next, b->n);
			exit(1);
		}
	}
}

static void work_msgring(struct bench *b)
{
	while (b->next < b->n) {
		struct io_uring_cqe *cqe;
		unsigned head, k = 0;

		wait_cqe(b);
		io_uring_for_each_cqe(&b->work, head, cqe)
		{
			/* The worker's own table gives data: MSG_RING carries
			 * only 64 + 32 bits. */
			deliver(b, cqe->user_data, (uint32_t)cqe->res,
			        &b->conns[cqe->user_data % NCONN]);
			k++;
		}
		io_uring_cq_advance(&b->work, k);
		/* The CQ head store before the credits it frees. */
		ck_pr_fence_store();
		ck_pr_store_64(&b->consumed, b->next);
	}
}

static void work_ring(struct bench *b)
{
	while (b->next < b->n) {
		struct bench_note nt;
		struct io_uring_cqe *cqe;
		unsigned head, k = 0;
		bool got = false;

		while (ck_ring_dequeue_spsc_bench_note(&b->inbox, b->inbox_buf, &nt)) {
			deliver(b, nt.id, nt.events, nt.data);
			got = true;
		}
		if (got) {
			/* Orders nothing: a count the latency producer spins
			 * on (its next stamp goes to another table slot). */
			ck_pr_store_64(&b->consumed, b->next);
			continue;
		}
		ck_pr_store_32(&b->doorbell, SLEEPING);
		/* SLEEPING before the ring re-check; pairs with the producer's
		 * fence between its enqueue and doorbell load. */
		ck_pr_fence_store_load();
		if (ck_ring_size(&b->inbox)) {
			/* May overwrite NOTIFIED: that wakeup's CQE stays in the
			 * CQ and only makes the next sleep return at once. */
			ck_pr_store_32(&b->doorbell, RUNNING);
			continue;
		}
		wait_cqe(b);
		/* Every CQE is a wakeup, some stale (a doorbell rung while we
		 * found the ring non-empty): all are consumed, none is trusted. */
		io_uring_for_each_cqe(&b->work, head, cqe) k++;
		io_uring_cq_advance(&b->work, k);
		b->wakes += k;
		/* Awake: producers need not ring until we publish SLEEPING
		 * again (and re-check the ring after it). */
		ck_pr_store_32(&b->doorbell, RUNNING);
	}
}

static void *worker_main(void *arg)
{
	struct bench *b = arg;
	int64_t cpu0;

	/* Created here: a SINGLE_ISSUER ring belongs to its creating thread.
	 * msgring needs a CQ for the whole window; ring mode only wakeups. */
	b->work_defer = ring_init(&b->work, 4, b->ring_mode ? 64 : b->cap, b->plain);
	pthread_barrier_wait(&b->start);
	cpu0 = thread_cpu_ns();
	if (b->ring_mode)
		work_ring(b);
	else
		work_msgring(b);
	b->t_end_ns = now_ns();
	b->cpu_end_ns = cpu_ns();
	b->work_cpu_ns = thread_cpu_ns() - cpu0;
	return NULL;
}

/* ---- Main --------------------------------------------------------------- */

static int cmp_i64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, c = *(const int64_t *)y;

	return (a > c) - (a < c);
}

static void usage(void)
{
	fprintf(stderr, "usage: inbox_transport_bench -m msgring|ring [-b burst] [-n count] "
	                "[-c capacity] [-l] [-g gap_us] [-S] [-P]\n");
	exit(2);
}

static void parse(struct bench *b, int argc, char **argv)
{
	const char *mode = NULL;
	int c;

	b->burst = 1;
	b->cap = 4096;
	while ((c = getopt(argc, argv, "m:b:n:c:lg:SP")) != -1) {
		switch (c) {
		case 'm':
			mode = optarg;
			break;
		case 'b':
			b->burst = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'n':
			b->n = strtoull(optarg, NULL, 10);
			break;
		case 'c':
			b->cap = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'l':
			b->latency = true;
			break;
		case 'g':
			b->gap_us = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 'S':
			b->shared = true;
			break;
		case 'P':
			b->plain = true;
			break;
		default:
			usage();
		}
	}
	if (!mode || (strcmp(mode, "msgring") && strcmp(mode, "ring")))
		usage();
	b->ring_mode = !strcmp(mode, "ring");
	if (b->latency)
		b->burst = 1; /* one in flight */
	if (!b->n)
		b->n = b->latency ? 20000 : 500000;
	/* A ck_ring of cap holds cap - 1: give msgring the same window. */
	if (b->burst == 0 || b->burst > MAX_BURST || b->cap < 2 || (b->cap & (b->cap - 1)) ||
	    b->burst > b->cap - 1)
		usage();
	if (!b->ring_mode)
		b->cap--;
}

static void pin_attr(pthread_attr_t *attr, int cpu)
{
	cpu_set_t set;
	int rc;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if ((rc = pthread_attr_setaffinity_np(attr, sizeof(set), &set)))
		die("pthread_attr_setaffinity_np", rc);
}

static void report(struct bench *b, int64_t t0, int64_t cpu0)
{
	double n = (double)b->n, secs = (double)(b->t_end_ns - t0) / 1e9;
	double cpu_us = (double)(b->cpu_end_ns - cpu0) / 1e3 / n;
	double prod_us = (double)b->prod_cpu_ns / 1e3 / n,
	       work_us = (double)b->work_cpu_ns / 1e3 / n;
	double pe = (double)b->prod_enters * 1000 / n, we = (double)b->work_enters * 1000 / n;
	double msgs = (double)b->msgs * 1000 / n;
	const char *mode = b->ring_mode ? "ring" : "msgring",
	           *cpus = b->shared ? "shared" : "apart";
	const char *wring = b->work_defer ? "defer" : "plain";
	char lat[96] = "";

	printf("%s %s, burst %u, CPUs %s, worker ring %s: %" PRIu64 " in %.3f s\n", mode,
	       b->latency ? "latency" : "throughput", b->burst, cpus, wring, b->n, secs);
	printf("  %.3f M notifications/s, CPU %.3f us each (producer %.3f, worker %.3f)\n",
	       n / secs / 1e6, cpu_us, prod_us, work_us);
	printf("  io_uring_enter per 1000: %.1f (producer %.1f, worker %.1f); MSG_RING per "
	       "1000: %.1f; producer waited for room in %" PRIu64 " bursts\n",
	       pe + we, pe, we, msgs, b->full_bursts);
	if (b->latency) {
		qsort(b->lat_ns, b->n, sizeof(*b->lat_ns), cmp_i64);
		int64_t p50 = b->lat_ns[b->n / 2], p99 = b->lat_ns[b->n * 99 / 100];

		printf("  one-way latency p50 %.2f us, p99 %.2f us (gap %u us)\n", p50 / 1e3,
		       p99 / 1e3, b->gap_us);
		snprintf(lat, sizeof(lat), " gap_us=%u p50_ns=%" PRId64 " p99_ns=%" PRId64,
		         b->gap_us, p50, p99);
	}
	printf("RESULT bench=inbox_transport mode=%s test=%s burst=%u cpus=%s worker_ring=%s "
	       "n=%" PRIu64 " rate=%.0f cpu_us=%.4f prod_cpu_us=%.4f work_cpu_us=%.4f "
	       "enters_per_1k=%.2f prod_enters_per_1k=%.2f work_enters_per_1k=%.2f "
	       "msgrings_per_1k=%.2f full_bursts=%" PRIu64 "%s poll_ring=%s errors=0\n",
	       mode, b->latency ? "latency" : "throughput", b->burst, cpus, wring, b->n, n / secs,
	       cpu_us, prod_us, work_us, pe + we, pe, we, msgs, b->full_bursts, lat,
	       b->prod_defer ? "defer" : "plain");
}

int main(int argc, char **argv)
{
	struct bench *b = &bench;
	pthread_attr_t attr;
	pthread_t worker;
	cpu_set_t self;
	int64_t t0, cpu0;
	int rc;

	parse(b, argc, argv);
	for (unsigned i = 0; i < NCONN; i++)
		b->conns[i].tag = i;
	if (b->ring_mode) {
		if (!(b->inbox_buf = calloc(b->cap, sizeof(*b->inbox_buf))))
			die("calloc", ENOMEM);
		ck_ring_init(&b->inbox, b->cap);
	}
	if (b->latency && !(b->lat_ns = calloc(b->n, sizeof(*b->lat_ns))))
		die("calloc", ENOMEM);

	/* This thread is the producer, on CPU 0; its ring is created here. */
	CPU_ZERO(&self);
	CPU_SET(0, &self);
	if ((rc = pthread_setaffinity_np(pthread_self(), sizeof(self), &self)))
		die("pin to CPU 0", rc);
	b->prod_defer = ring_init(&b->prod, MAX_BURST, 2 * MAX_BURST, false);
	pthread_barrier_init(&b->start, NULL, 2);
	pthread_attr_init(&attr);
	pin_attr(&attr, b->shared ? 0 : 1); /* pinned before it runs */
	if ((rc = pthread_create(&worker, &attr, worker_main, b)))
		die(b->shared ? "pthread_create" : "pthread_create on CPU 1 (-S for one CPU)", rc);
	pthread_attr_destroy(&attr);
	pthread_barrier_wait(&b->start); /* the worker's ring fd is set */
	t0 = now_ns();
	cpu0 = cpu_ns();
	produce(b);
	pthread_join(worker, NULL);
	report(b, t0, cpu0);
	io_uring_queue_exit(&b->work);
	io_uring_queue_exit(&b->prod);
	pthread_barrier_destroy(&b->start);
	free(b->lat_ns);
	free(b->inbox_buf);
	return 0;
}
