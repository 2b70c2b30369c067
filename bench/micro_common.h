/*
 * Shared by the micro-benchmarks (wakeup_bench.c, register_bench.c): errors,
 * clocks, perf stat's control fds, CPU pinning and the amio poller config
 * taken from the environment. Define BENCH_NAME before including.
 */
#ifndef BENCH_MICRO_COMMON_H
#define BENCH_MICRO_COMMON_H

#include <amio.h>
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

static void die(const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", BENCH_NAME, what,
	        err ? strerror(err < 0 ? -err : err) : "failed");
	exit(1);
}

static void die_amio(const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", BENCH_NAME, what, amio_strerror(err));
	exit(1);
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru); /* every thread of the process */
	return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
	       ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

/* Tell perf stat (--control) to start or stop counting, and wait for its ack
 * so the window is exact. No-op unless bench/micro.sh set the fds. */
static void perf_ctl(const char *cmd)
{
	const char *c = getenv("BENCH_PERF_CTL_FD"), *a = getenv("BENCH_PERF_ACK_FD");
	char ack[16];

	if (!c || !a)
		return;
	if (write(atoi(c), cmd, strlen(cmd)) < 0 || read(atoi(a), ack, sizeof(ack)) < 0)
		die("perf control fd", errno);
}

static void pin_thread(pthread_t t, int cpu)
{
	cpu_set_t set;
	int rc;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	rc = pthread_setaffinity_np(t, sizeof(set), &set);
	if (rc)
		die("pthread_setaffinity_np", rc);
}

/* The library's default poller config, unless the environment sets the idle
 * spin (BENCH_AMIO_SPIN_US=us) or forbids it (BENCH_AMIO_NO_SPIN=1), to
 * measure what busy polling buys and costs. */
static void poller_config(struct amio_poller_config *cfg)
{
	const char *spin = getenv("BENCH_AMIO_SPIN_US"), *off = getenv("BENCH_AMIO_NO_SPIN");

	memset(cfg, 0, sizeof(*cfg));
	if (spin)
		cfg->spin_us = (uint32_t)strtoul(spin, NULL, 10);
	if (off && *off == '1')
		cfg->flags |= AMIO_POLLER_NO_SPIN;
	if (getenv("BENCH_AMIO_FLAGS"))
		cfg->flags |= (uint32_t)strtoul(getenv("BENCH_AMIO_FLAGS"), NULL, 0);
}

#endif /* BENCH_MICRO_COMMON_H */
