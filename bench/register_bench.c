/*
 * register_bench: registrations per second. Each of -T worker threads owns -k
 * live, connected, idle TCP sockets on 127.0.0.1 and loops: register every
 * one of them for reading, then deregister every one; a register+deregister
 * pair counts as one registration. Meanwhile a poll thread waits for events,
 * as in a server (the sockets stay idle, so it is never woken by one).
 *
 *   amio      a poll thread in amio_poller_wait (Amy mode); each worker has
 *             its own registrar: amio_register(r, fd, AMIO_READ, NULL) and
 *             amio_deregister(r, id); -EAGAIN (command queue full) is retried
 *             after sched_yield() and counted; on the io_uring backend
 *             (AMIO_BACKEND_IO_URING: AMIO_BACKEND in the environment does
 *             not apply, and there is no fallback to epoll)
 *   amio-armed  the same, but each round waits until the poll thread has
 *             applied the round's registers before deregistering them, so
 *             every registration really arms a poll in the kernel (plain amio
 *             skips the kernel for a register whose deregister was queued
 *             before the poller got to it: see amio_sqes_per_reg). The wait:
 *             a 0 ms timer queued after the registers, seen by the poll thread
 *             (one registrar's commands are applied in order); 1 per round
 *   amio-epoll, amio-armed-epoll  the same two on amio's epoll backend
 *             (AMIO_BACKEND_EPOLL): the poll thread applies the commands with
 *             epoll_ctl on a dup of each fd (amio_sqes_per_reg then counts
 *             those epoll_ctl calls)
 *   epoll     epoll_ctl ADD (EPOLLIN | EPOLLET, like amio's default edge mode)
 *             and DEL from the workers on one shared epoll fd; poll thread in
 *             epoll_wait
 *   libevent  evthread_use_pthreads(); one event_base run by the poll thread
 *             (event_base_loop, EVLOOP_NO_EXIT_ON_EMPTY); workers call
 *             event_assign + event_add and event_del on it (its thread-safe
 *             mode: the base lock, and a wakeup of the loop per change)
 *
 * amio_register is asynchronous: it returns once the command is queued and
 * the poll thread applies it later. So that every mode has done the same work
 * when the clock stops, amio's window ends only once the poll thread has
 * applied every command issued (amio_poller_stats().commands reaches them);
 * that wait is inside the measured time and printed as apply_wait_ms.
 *
 * Pinning: none by default, so every mode may use every CPU (amio's poll
 * thread works, epoll's sleeps). -p pins the poll thread to the first CPU and
 * workers round robin to the others.
 * Syscalls: as wakeup_bench (perf stat --control through BENCH_PERF_CTL_FD
 * and BENCH_PERF_ACK_FD; counting covers the measured window only).
 * amio's poller: the library's default config but for the mode's backend
 * (printed as backend= in the RESULT line); BENCH_AMIO_SPIN_US=us sets
 * its idle spin (spin_us), BENCH_AMIO_NO_SPIN=1 forbids it.
 *
 * Usage: register_bench -m amio|amio-armed|amio-epoll|amio-armed-epoll|epoll|libevent
 *                       [-T threads] [-k sockets] [-t seconds] [-p]
 * Output: human text, then one `RESULT key=value ...` line.
 */
#define _GNU_SOURCE
#include <amio.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
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
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BENCH_NAME "register_bench"
#include "micro_common.h"
#ifdef BENCH_HAVE_LIBEVENT
#include <event2/event.h>
#include <event2/thread.h>
#endif

#define MAX_THREADS 64
#define STOP_TAG    UINT64_MAX
#define SETTLE_NS   (10 * INT64_C(1000000000)) /* amio: the poller must apply by then */

struct bench;

struct worker {
	struct bench *b;
	int *fds, *peers;  /* k registered sockets, and their accepted ends */
	int64_t *ids;      /* amio */
	amio_registrar *r; /* amio */
	void *evs;         /* libevent: k struct event */
	uint64_t regs, retries;
	uint64_t marks;                  /* amio-armed: round markers queued */
	atomic_uint_fast64_t marks_seen; /* amio-armed: markers the poll thread saw */
	pthread_t thread;
};

/* One mode: setup, the poll thread, and a worker's register/deregister. */
struct mode {
	const char *name;
	bool wait_armed;  /* amio-armed: registers applied before the deregisters */
	uint32_t backend; /* amio: AMIO_BACKEND_IO_URING or AMIO_BACKEND_EPOLL */
	void (*setup)(struct bench *b);
	void (*worker_init)(struct worker *w);
	void *(*poll_main)(void *arg);
	void (*reg)(struct worker *w, unsigned i);
	void (*dereg)(struct worker *w, unsigned i);
	void (*stop)(struct bench *b);
	void (*teardown)(struct bench *b);
};

struct bench {
	const struct mode *m;
	unsigned threads, k;
	double secs;
	bool pin;
	int ep, stop_fd;              /* epoll */
	amio_poller *p;               /* amio */
	struct amio_poller_stats st0; /* amio, at the window's start */
	void *base;                   /* libevent: struct event_base */
	uint64_t notes;               /* events the poll thread saw (none expected) */
	atomic_int stop, poll_stop;
	pthread_barrier_t start;
	struct worker w[MAX_THREADS];
};

/* ---- Helpers -------------------------------------------------------------- */

/* ---- Sockets: created once, outside the measured window ------------------- */

static int listen_loopback(struct sockaddr_in *addr)
{
	socklen_t len = sizeof(*addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	*addr = (struct sockaddr_in){.sin_family = AF_INET};
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof(*addr)) < 0 ||
	    listen(fd, SOMAXCONN) < 0 || getsockname(fd, (struct sockaddr *)addr, &len) < 0)
		die("listen on 127.0.0.1", errno);
	return fd;
}

/* Every thread's k sockets and peers: 2 x threads x k descriptors. */
static void make_sockets(struct bench *b)
{
	struct rlimit rl;
	struct sockaddr_in addr;
	int lfd = listen_loopback(&addr);

	/* Room for every descriptor, if the hard limit allows. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	for (unsigned t = 0; t < b->threads; t++) {
		struct worker *w = &b->w[t];

		w->fds = calloc(b->k, sizeof(*w->fds));
		w->peers = calloc(b->k, sizeof(*w->peers));
		if (!w->fds || !w->peers)
			die("calloc", ENOMEM);
		for (unsigned i = 0; i < b->k; i++) {
			int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

			if (c < 0 || connect(c, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
			    (w->peers[i] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC)) < 0 ||
			    fcntl(c, F_SETFL, O_NONBLOCK) < 0)
				die("connect a socket pair (raise ulimit -n?)", errno);
			w->fds[i] = c;
		}
	}
	close(lfd);
}

static void close_sockets(struct bench *b)
{
	for (unsigned t = 0; t < b->threads; t++) {
		for (unsigned i = 0; i < b->k; i++) {
			close(b->w[t].fds[i]);
			close(b->w[t].peers[i]);
		}
		free(b->w[t].fds);
		free(b->w[t].peers);
	}
}

/* ---- amio -------------------------------------------------------------------- */

static void amio_setup(struct bench *b)
{
	struct amio_poller_config cfg;
	int rc;

	poller_config(&cfg);
	cfg.backend = b->m->backend; /* the mode names its backend: no fallback */
	rc = amio_poller_new(&b->p, &cfg);
	if (rc < 0)
		die_amio("amio_poller_new", rc);
}

static void amio_worker_init(struct worker *w)
{
	int rc = amio_registrar_new(w->b->p, 0, &w->r);

	if (rc < 0)
		die_amio("amio_registrar_new", rc);
	if (!(w->ids = calloc(w->b->k, sizeof(*w->ids))))
		die("calloc", ENOMEM);
}

static void *amio_poll(void *arg)
{
	struct bench *b = arg;
	amio_notification n[64];

	/* The first wait makes this the poll thread. */
	while (!atomic_load(&b->poll_stop)) {
		int rc = amio_poller_wait(b->p, n, 64, -1);

		if (rc < 0)
			die_amio("amio_poller_wait", rc);
		for (int i = 0; i < rc; i++) {
			struct worker *w = n[i].data;

			if (!(n[i].events & AMIO_TIMER)) {
				b->notes++;
				continue;
			}
			/* amio-armed: the worker's registers before it are applied. */
			atomic_fetch_add_explicit(&w->marks_seen, 1, memory_order_release);
		}
	}
	return NULL;
}

static void amio_reg(struct worker *w, unsigned i)
{
	int64_t id;

	/* -EAGAIN: our queue is full until the poll thread drains it. */
	while ((id = amio_register(w->r, w->fds[i], AMIO_READ, NULL)) == -EAGAIN) {
		w->retries++;
		sched_yield();
	}
	if (id < 0)
		die_amio("amio_register", (int)id);
	w->ids[i] = id;
}

static void amio_dereg(struct worker *w, unsigned i)
{
	int rc;

	while ((rc = amio_deregister(w->r, (uint64_t)w->ids[i])) == -EAGAIN) {
		w->retries++;
		sched_yield();
	}
	if (rc < 0)
		die_amio("amio_deregister", rc);
}

/* Wait until the poll thread has applied every command queued since the
 * window opened (the time counts: see the top of the file). */
static void amio_settle(struct bench *b, uint64_t commands)
{
	struct amio_poller_stats st;
	int64_t end = now_ns() + SETTLE_NS;

	for (;;) {
		amio_poller_stats(b->p, &st);
		if (st.commands - b->st0.commands >= commands)
			return;
		if (now_ns() > end)
			die("amio poller did not apply the commands", ETIMEDOUT);
		sched_yield();
	}
}

/* amio-armed: queue a 0 ms timer behind this round's registers and wait
 * until the poll thread reports it: by then it has applied them all. */
static void amio_wait_armed(struct worker *w)
{
	int64_t id;

	while ((id = amio_set_timeout(w->r, 0, w)) == -EAGAIN) {
		w->retries++;
		sched_yield();
	}
	if (id < 0)
		die_amio("amio_set_timeout", (int)id);
	w->marks++;
	while (atomic_load_explicit(&w->marks_seen, memory_order_acquire) < w->marks)
		sched_yield(); /* the poll thread may need this CPU */
}

static void amio_stop(struct bench *b)
{
	atomic_store(&b->poll_stop, 1);
	amio_poller_stop(b->p); /* sticky: a wait not yet entered returns too */
}

static void amio_teardown(struct bench *b)
{
	for (unsigned t = 0; t < b->threads; t++) {
		amio_registrar_free(b->w[t].r);
		free(b->w[t].ids);
	}
	amio_poller_free(b->p);
}

/* ---- epoll --------------------------------------------------------------------- */

static void epoll_setup(struct bench *b)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = STOP_TAG};

	b->ep = epoll_create1(EPOLL_CLOEXEC);
	b->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (b->ep < 0 || b->stop_fd < 0 || epoll_ctl(b->ep, EPOLL_CTL_ADD, b->stop_fd, &ev) < 0)
		die("epoll setup", errno);
}

static void epoll_worker_init(struct worker *w)
{
	(void)w;
}

static void *epoll_poll(void *arg)
{
	struct bench *b = arg;
	struct epoll_event evs[64];

	for (;;) {
		int n = epoll_wait(b->ep, evs, 64, -1);

		if (n < 0 && errno != EINTR)
			die("epoll_wait", errno);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == STOP_TAG)
				return NULL;
			b->notes++;
		}
	}
}

static void epoll_reg(struct worker *w, unsigned i)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = i};

	if (epoll_ctl(w->b->ep, EPOLL_CTL_ADD, w->fds[i], &ev) < 0)
		die("epoll_ctl ADD", errno);
}

static void epoll_dereg(struct worker *w, unsigned i)
{
	if (epoll_ctl(w->b->ep, EPOLL_CTL_DEL, w->fds[i], NULL) < 0)
		die("epoll_ctl DEL", errno);
}

static void epoll_stop(struct bench *b)
{
	uint64_t one = 1;

	if (write(b->stop_fd, &one, sizeof(one)) != sizeof(one))
		die("eventfd write", errno);
}

static void epoll_teardown(struct bench *b)
{
	close(b->stop_fd);
	close(b->ep);
}

/* ---- libevent ------------------------------------------------------------------ */
#ifdef BENCH_HAVE_LIBEVENT

static void libevent_setup(struct bench *b)
{
	/* Before the base exists: its lock and its cross-thread wakeup. */
	if (evthread_use_pthreads() < 0 || !(b->base = event_base_new()))
		die("libevent setup", 0);
	fprintf(stderr, "libevent %s, backend %s\n", event_get_version(),
	        event_base_get_method(b->base));
}

static void libevent_worker_init(struct worker *w)
{
	if (!(w->evs = calloc(w->b->k, event_get_struct_event_size())))
		die("calloc", ENOMEM);
}

static void *libevent_poll(void *arg)
{
	struct bench *b = arg;

	/* No events most of the time: keep running until loopbreak. */
	if (event_base_loop(b->base, EVLOOP_NO_EXIT_ON_EMPTY) < 0)
		die("event_base_loop", 0);
	return NULL;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	(void)fd;
	(void)what;
	w->b->notes++; /* never: the sockets stay idle */
}

static struct event *ev_at(struct worker *w, unsigned i)
{
	return (struct event *)((char *)w->evs + (size_t)i * event_get_struct_event_size());
}

static void libevent_reg(struct worker *w, unsigned i)
{
	struct event *ev = ev_at(w, i);

	if (event_assign(ev, w->b->base, w->fds[i], EV_READ | EV_PERSIST, on_read, w) < 0 ||
	    event_add(ev, NULL) < 0)
		die("event_add", 0);
}

static void libevent_dereg(struct worker *w, unsigned i)
{
	if (event_del(ev_at(w, i)) < 0)
		die("event_del", 0);
}

static void libevent_stop(struct bench *b)
{
	if (event_base_loopbreak(b->base) < 0)
		die("event_base_loopbreak", 0);
}

static void libevent_teardown(struct bench *b)
{
	for (unsigned t = 0; t < b->threads; t++)
		free(b->w[t].evs);
	event_base_free(b->base);
}
#endif

static const struct mode modes[] = {
    {"amio", false, AMIO_BACKEND_IO_URING, amio_setup, amio_worker_init, amio_poll, amio_reg,
     amio_dereg, amio_stop, amio_teardown},
    {"amio-armed", true, AMIO_BACKEND_IO_URING, amio_setup, amio_worker_init, amio_poll, amio_reg,
     amio_dereg, amio_stop, amio_teardown},
    {"amio-epoll", false, AMIO_BACKEND_EPOLL, amio_setup, amio_worker_init, amio_poll, amio_reg,
     amio_dereg, amio_stop, amio_teardown},
    {"amio-armed-epoll", true, AMIO_BACKEND_EPOLL, amio_setup, amio_worker_init, amio_poll,
     amio_reg, amio_dereg, amio_stop, amio_teardown},
    {"epoll", false, 0, epoll_setup, epoll_worker_init, epoll_poll, epoll_reg, epoll_dereg,
     epoll_stop, epoll_teardown},
#ifdef BENCH_HAVE_LIBEVENT
    {"libevent", false, 0, libevent_setup, libevent_worker_init, libevent_poll, libevent_reg,
     libevent_dereg, libevent_stop, libevent_teardown},
#endif
};

/* ---- Workers --------------------------------------------------------------------- */

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct bench *b = w->b;

	pthread_barrier_wait(&b->start);
	/* Whole rounds only: every registration made is also undone. */
	while (!atomic_load_explicit(&b->stop, memory_order_relaxed)) {
		for (unsigned i = 0; i < b->k; i++)
			b->m->reg(w, i);
		if (b->m->wait_armed)
			amio_wait_armed(w);
		for (unsigned i = 0; i < b->k; i++)
			b->m->dereg(w, i);
		w->regs += b->k;
	}
	return NULL;
}

/* Poll thread on the first allowed CPU, workers on the others (with -p). */
static void start_threads(struct bench *b, pthread_t *poll_thread)
{
	cpu_set_t set;
	int cpus[CPU_SETSIZE], ncpu = 0, rc;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &set))
				cpus[ncpu++] = c;
	b->pin = b->pin && ncpu >= 2;
	rc = pthread_create(poll_thread, NULL, b->m->poll_main, b);
	if (rc)
		die("pthread_create", rc);
	if (b->pin)
		pin_thread(*poll_thread, cpus[0]);
	for (unsigned t = 0; t < b->threads; t++) {
		rc = pthread_create(&b->w[t].thread, NULL, worker_main, &b->w[t]);
		if (rc)
			die("pthread_create", rc);
		if (b->pin)
			pin_thread(b->w[t].thread, cpus[1 + t % (ncpu - 1)]);
	}
}

static void sleep_secs(double s)
{
	struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (time_t)s) * 1e9)};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* ---- Report --------------------------------------------------------------------- */

static void report(struct bench *b, uint64_t regs, int64_t ns, int64_t cpu, int64_t settle_ns)
{
	uint64_t retries = 0;

	for (unsigned t = 0; t < b->threads; t++)
		retries += b->w[t].retries;
	printf("%s: %u thread(s) x %u sockets: %.0f registrations/s (%" PRIu64
	       " register+deregister pairs in %.3f s), %.3f CPU us/registration",
	       b->m->name, b->threads, b->k, regs * 1e9 / ns, regs, ns / 1e9, cpu / 1e3 / regs);
	if (b->p)
		printf(", %.3f ms of it waiting until the poll thread applied every command,"
		       " %" PRIu64 " queue-full retries, backend %s",
		       settle_ns / 1e6, retries, amio_poller_backend(b->p));
	printf("\nRESULT bench=register mode=%s threads=%u sockets=%u regs=%" PRIu64
	       " secs=%.4f regs_per_s=%.0f cpu_us_per_reg=%.3f pinned=%d notifications=%" PRIu64,
	       b->m->name, b->threads, b->k, regs, ns / 1e9, regs * 1e9 / ns, cpu / 1e3 / regs,
	       b->pin, b->notes);
	if (b->p) {
		struct amio_poller_stats st;

		amio_poller_stats(b->p, &st);
		printf(
		    " backend=%s apply_wait_ms=%.3f full_retries=%" PRIu64 " amio_sqes_per_reg=%.3f"
		    " amio_cqes_per_reg=%.3f amio_enters_per_1k=%.2f amio_wakeups_per_1k=%.2f",
		    amio_poller_backend(b->p), settle_ns / 1e6, retries,
		    (double)(st.sqes - b->st0.sqes) / regs, (double)(st.cqes - b->st0.cqes) / regs,
		    (st.enters - b->st0.enters) * 1e3 / regs,
		    (st.wakeups_sent - b->st0.wakeups_sent) * 1e3 / regs);
	}
	printf("\n");
}

/* ---- Main ------------------------------------------------------------------------ */

static void usage(void)
{
	fprintf(stderr, "usage: register_bench -m amio|amio-armed|amio-epoll|amio-armed-epoll|epoll"
#ifdef BENCH_HAVE_LIBEVENT
	                "|libevent"
#endif
	                " [-T threads] [-k sockets] [-t seconds] [-p]\n");
	exit(2);
}

static void parse(struct bench *b, int argc, char **argv)
{
	int c;

	b->threads = 1;
	b->k = 256;
	b->secs = 1.0;
	while ((c = getopt(argc, argv, "m:T:k:t:p")) != -1) {
		switch (c) {
		case 'm':
			for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
				if (!strcmp(optarg, modes[i].name))
					b->m = &modes[i];
			break;
		case 'T':
			b->threads = (unsigned)atoi(optarg);
			break;
		case 'k':
			b->k = (unsigned)atoi(optarg);
			break;
		case 't':
			b->secs = strtod(optarg, NULL);
			break;
		case 'p':
			b->pin = true;
			break;
		default:
			usage();
		}
	}
	if (!b->m || b->threads < 1 || b->threads > MAX_THREADS || b->k < 1 || b->secs <= 0)
		usage();
}

int main(int argc, char **argv)
{
	static struct bench bench;
	struct bench *b = &bench;
	pthread_t poll_thread;
	uint64_t regs = 0, commands = 0;
	int64_t t0, c0, joined, settle = 0;

	parse(b, argc, argv);
	make_sockets(b);
	b->m->setup(b);
	for (unsigned t = 0; t < b->threads; t++) {
		b->w[t].b = b;
		b->m->worker_init(&b->w[t]);
	}
	pthread_barrier_init(&b->start, NULL, b->threads + 1);
	start_threads(b, &poll_thread);
	if (b->p)
		amio_poller_stats(b->p, &b->st0);
	perf_ctl("enable\n");
	c0 = cpu_ns();
	t0 = now_ns();
	pthread_barrier_wait(&b->start);
	sleep_secs(b->secs);
	atomic_store(&b->stop, 1);
	for (unsigned t = 0; t < b->threads; t++) {
		pthread_join(b->w[t].thread, NULL);
		regs += b->w[t].regs;
		commands += 2 * b->w[t].regs + b->w[t].marks;
	}
	if (!regs)
		die("no round of registrations finished in the window (raise -t)", 0);
	joined = now_ns();
	if (b->p) {
		amio_settle(b, commands);
		settle = now_ns() - joined;
	}
	t0 = now_ns() - t0;
	c0 = cpu_ns() - c0;
	perf_ctl("disable\n");
	b->m->stop(b);
	pthread_join(poll_thread, NULL);
	report(b, regs, t0, c0, settle);
	b->m->teardown(b);
	close_sockets(b);
	return 0;
}
