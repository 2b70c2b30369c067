/*
 * Shared by the micro-benchmarks (wakeup_bench.c, register_bench.c,
 * inbox_transport_bench.c): errors, clocks, perf stat's control fds and CPU
 * pinning; nothing of amio. Define BENCH_NAME before including.
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static inline void die(const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", BENCH_NAME, what,
	        err ? strerror(err < 0 ? -err : err) : "failed");
	exit(1);
}

static inline int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline int64_t cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru); /* every thread of the process */
	return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
	       ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

/* Tell perf stat (--control) to start or stop counting, and wait for its ack
 * so the window is exact. No-op unless bench/micro.sh set the fds. */
static inline void perf_ctl(const char *cmd)
{
	const char *c = getenv("BENCH_PERF_CTL_FD"), *a = getenv("BENCH_PERF_ACK_FD");
	char ack[16];

	if (!c || !a)
		return;
	if (write(atoi(c), cmd, strlen(cmd)) < 0 || read(atoi(a), ack, sizeof(ack)) < 0)
		die("perf control fd", errno);
}

static inline void pin_thread(pthread_t t, int cpu)
{
	cpu_set_t set;
	int rc;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	rc = pthread_setaffinity_np(t, sizeof(set), &set);
	if (rc)
		die("pthread_setaffinity_np", rc);
}

#endif /* BENCH_UTIL_H */
