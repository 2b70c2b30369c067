/*
 * Shared by the amio micro-benchmarks (wakeup_bench.c, register_bench.c):
 * bench_util.h, plus amio's errors and the poller config taken from the
 * environment. Define BENCH_NAME before including.
 */
#ifndef BENCH_MICRO_COMMON_H
#define BENCH_MICRO_COMMON_H

#include <amio.h>

#include "bench_util.h"

static void die_amio(const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", BENCH_NAME, what, amio_strerror(err));
	exit(1);
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
