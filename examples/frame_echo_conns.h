/*
 * frame_echo_conns.h: frame_echo_server's connection bookkeeping. Which
 * connections does a worker own, which structs can the next accept reuse,
 * and why was each connection closed? One worker thread owns a struct conns;
 * nothing here is shared between threads. completion_frame_echo_server uses
 * the counters, the stats line and the idle clock, with connections of its own.
 */
#ifndef FRAME_ECHO_CONNS_H
#define FRAME_ECHO_CONNS_H

#include <amio/frame.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct conn {
	struct conn *all;   /* every struct the worker allocated, live or spare */
	struct conn *spare; /* the worker's spares, for the next accept */
	int fd;
	int64_t id;          /* 0 while spare; every notification is checked against it */
	int paused;          /* the writer holds bytes: registered READ|WRITE, not reading */
	int64_t progress_ms; /* last frame in or queued echo out (conns_clock_ms) */
	struct amio_frame_reader fr;
	struct amio_frame_writer fw;
};

/* Why connections closed: the counters of the "stats" line. */
enum close_reason {
	CLOSE_EOF,       /* the peer closed or half-closed after whole frames: all echoed */
	CLOSE_IDLE,      /* no progress for idle_ms (-i) */
	CLOSE_ERROR,     /* peer reset (AMIO_ERROR, -ECONNRESET, -EPIPE) or another -errno */
	CLOSE_OVERSIZE,  /* a header announced more than max_frame (-EMSGSIZE) */
	CLOSE_TRUNCATED, /* end of file in the middle of a frame (-EPROTO) */
	CLOSE_SHUTDOWN,  /* still open at SIGINT/SIGTERM */
	CLOSE_NREASONS
};

static const char *const conns_reason_name[CLOSE_NREASONS] = {
    "eof", "idle", "error", "oversize", "truncated", "shutdown",
};

/* A worker's connections; zero-initialised storage is an empty set. */
struct conns {
	struct conn *all, *spares;
	int64_t now_ms;     /* conns_clock_ms, read once per batch */
	int64_t stalled_ms; /* time the sweep was late: not held against peers */
	int64_t swept_ms;   /* CLOCK_MONOTONIC of the last sweep, 0 before it */
	uint64_t accepted;  /* structs handed out by conns_get */
	uint64_t frames;    /* frames echoed */
	uint64_t pauses;    /* times the writer queued bytes (AMIO_WRITE asked for) */
	uint64_t closes[CLOSE_NREASONS];
};

static inline int64_t conns_monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The idle clock: CLOCK_MONOTONIC minus the stalls conns_sweep_clock() saw. */
static inline int64_t conns_clock_ms(const struct conns *s)
{
	return conns_monotonic_ms() - s->stalled_ms;
}

/* Called at each sweep tick (every tick_ms); returns the idle clock. A tick
 * more than two periods late means this worker, or the whole machine, was
 * stalled (preempted, stopped, a paused VM): its peers could not be served
 * meanwhile, and the timer that fires first on resume would otherwise find
 * every connection idle. The lateness beyond two ticks is not counted. */
static inline int64_t conns_sweep_clock(struct conns *s, int64_t tick_ms)
{
	int64_t now = conns_monotonic_ms();

	if (s->swept_ms && now - s->swept_ms > 2 * tick_ms)
		s->stalled_ms += now - s->swept_ms - 2 * tick_ms;
	s->swept_ms = now;
	return now - s->stalled_ms;
}

/* A struct for a new connection: a spare if there is one. Memory stays at
 * the peak number of connections open at once (about 200 B each, plus the
 * reader's and writer's buffers only while a connection is open).
 * Returns NULL when out of memory. */
static inline struct conn *conns_get(struct conns *s)
{
	struct conn *c = s->spares;

	if (c) {
		s->spares = c->spare;
	} else {
		if (!(c = calloc(1, sizeof(*c))))
			return NULL;
		c->all = s->all;
		s->all = c;
	}
	s->accepted++;
	return c;
}

/* Frees the buffers of a closed connection (fd already closed) and keeps
 * the struct as a spare: a notification still in flight may point to it,
 * and its id, now 0, tells the dispatcher to skip it. */
static inline void conns_put(struct conns *s, struct conn *c)
{
	amio_frame_writer_destroy(&c->fw);
	amio_frame_reader_destroy(&c->fr);
	c->id = 0;
	c->spare = s->spares;
	s->spares = c;
}

/* Frees every struct; only once no notification can name one any more. */
static inline void conns_free_all(struct conns *s)
{
	for (struct conn *c = s->all, *next; c; c = next) {
		next = c->all;
		free(c);
	}
	s->all = s->spares = NULL;
}

/* Why a connection is closed, besides a -errno. */
enum { CONN_SHUTDOWN = 0, CONN_EOF = 1, CONN_IDLE = 2 };

/* Counts a close. why: CONN_SHUTDOWN, CONN_EOF, CONN_IDLE or a -errno.
 * Returns the reason it was counted under. */
static inline enum close_reason conns_count_close(struct conns *s, int why)
{
	enum close_reason k = why == CONN_SHUTDOWN ? CLOSE_SHUTDOWN
	                      : why == CONN_EOF    ? CLOSE_EOF
	                      : why == CONN_IDLE   ? CLOSE_IDLE
	                      : why == -EMSGSIZE   ? CLOSE_OVERSIZE
	                      : why == -EPROTO     ? CLOSE_TRUNCATED
	                                           : CLOSE_ERROR;

	s->closes[k]++;
	return k;
}

/* Adds b's counters to sum (the totals printed at shutdown). */
static inline void conns_add(struct conns *sum, const struct conns *b)
{
	sum->accepted += b->accepted;
	sum->frames += b->frames;
	sum->pauses += b->pauses;
	for (int k = 0; k < CLOSE_NREASONS; k++)
		sum->closes[k] += b->closes[k];
}

/* One line of key=value pairs for scripts and tests:
 * "<prog>: stats accepted=N frames=N eof=N idle=N error=N ..." */
static inline void conns_print_stats(const char *prog, const struct conns *s)
{
	printf("%s: stats accepted=%llu frames=%llu", prog, (unsigned long long)s->accepted,
	       (unsigned long long)s->frames);
	for (int k = 0; k < CLOSE_NREASONS; k++)
		printf(" %s=%llu", conns_reason_name[k], (unsigned long long)s->closes[k]);
	printf("\n");
}

#endif /* FRAME_ECHO_CONNS_H */
