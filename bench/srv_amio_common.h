/*
 * Shared by the amio bench servers: pooled connections (never freed while the
 * server runs, so a notification already handed out for a closed connection
 * is recognised by its id and dropped), accept and close through a registrar.
 */
#ifndef BENCH_SRV_AMIO_COMMON_H
#define BENCH_SRV_AMIO_COMMON_H

#include "srv_common.h"
#include <amio.h>
#include <pthread.h>
#include <sched.h>

struct aconn {
	struct srv_echo e;
	int64_t id; /* 0 while closed */
	struct aconn *next_free;
};

struct apool {
	struct aconn *free_list;
};

static inline void apool_accept(struct apool *pool, amio_registrar *r, int lfd)
{
	int fd;

	while ((fd = srv_accept(lfd)) >= 0) {
		struct aconn *c = pool->free_list;

		if (c)
			pool->free_list = c->next_free;
		else if (!(c = malloc(sizeof(*c)))) {
			close(fd);
			continue;
		}
		c->e.fd = fd;
		c->e.off = c->e.len = 0;
		/* Both directions, edge-triggered: no reregister per message. */
		while ((c->id = amio_register(r, fd, AMIO_BOTH, c)) == -EAGAIN)
			sched_yield();
		if (c->id < 0) {
			close(fd);
			c->id = 0;
			c->next_free = pool->free_list;
			pool->free_list = c;
		}
	}
}

/* Handle one notification for a connection (n->data != NULL). */
static inline void apool_event(struct apool *pool, amio_registrar *r, const amio_notification *n)
{
	struct aconn *c = n->data;

	if ((int64_t)n->id != c->id)
		return; /* closed (and maybe reused) since */
	if (!(n->events & AMIO_ERROR) && srv_echo_step(&c->e) >= 0)
		return;
	/* Deregister first: only then does close() send FIN. */
	while (amio_deregister(r, (uint64_t)c->id) == -EAGAIN)
		sched_yield();
	close(c->e.fd);
	c->id = 0;
	c->next_free = pool->free_list;
	pool->free_list = c;
}

/* A poller with the default config, or what the environment asks for, to
 * measure a setting: BENCH_AMIO_SPIN_US=us (spin_us; default adaptive),
 * BENCH_AMIO_FLAGS=n (AMIO_POLLER_* flags, e.g. 8 = AMIO_POLLER_NO_SPIN).
 * The backend is the library's choice (AMIO_BACKEND=io_uring|epoll picks
 * one); it is logged to stderr as "<who>: backend <name>", which
 * bench/run.sh checks against the AMIO_BACKEND it set. */
static inline int apoller_new(amio_poller **out, const char *who)
{
	struct amio_poller_config cfg;
	const char *v = getenv("BENCH_AMIO_SPIN_US"), *f = getenv("BENCH_AMIO_FLAGS");
	int rc;

	memset(&cfg, 0, sizeof(cfg));
	if (v)
		cfg.spin_us = (uint32_t)strtoul(v, NULL, 10);
	if (f)
		cfg.flags = (uint32_t)strtoul(f, NULL, 0);
	rc = amio_poller_new(out, &cfg);
	if (rc == 0)
		fprintf(stderr, "%s: backend %s\n", who, amio_poller_backend(*out));
	return rc;
}

/* With BENCH_AMIO_STATS=1, print the poller's counters to stderr (at exit:
 * where a server's syscalls go). */
static inline void apoller_report(amio_poller *p, const char *who)
{
	struct amio_poller_stats st;

	if (!getenv("BENCH_AMIO_STATS"))
		return;
	amio_poller_stats(p, &st);
	fprintf(stderr,
	        "%s: enters=%llu sqes=%llu cqes=%llu notifications=%llu wakeups_sent=%llu "
	        "wakeups_received=%llu commands=%llu rearms=%llu\n",
	        who, (unsigned long long)st.enters, (unsigned long long)st.sqes,
	        (unsigned long long)st.cqes, (unsigned long long)st.notifications,
	        (unsigned long long)st.wakeups_sent, (unsigned long long)st.wakeups_received,
	        (unsigned long long)st.commands, (unsigned long long)st.rearms);
}

/* Blocks SIGINT/SIGTERM in this thread and the threads it creates. */
static inline void asig_block(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

#endif /* BENCH_SRV_AMIO_COMMON_H */
