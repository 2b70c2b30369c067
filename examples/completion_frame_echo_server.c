/*
 * completion_frame_echo_server: frame_echo_server on completion I/O, with the
 * threads of completion_echo_server (the poll thread accepts and deals
 * connections out; each worker has an AMIO_INBOX registrar, a buffer pool
 * and a multishot amio_recv per connection). Frames (amio/frame.h) are
 * parsed in place in the pool buffers with amio_frame_parse and echoed with
 * amio_sendv({header, payload}): the payload goes out of the pool buffer it
 * arrived in, which returns to the pool once every send reading it is done
 * (a reference count per buffer). Only a frame cut across buffers is
 * gathered in a frame reader, fed exactly amio_frame_reader_missing() bytes,
 * then copied into a block its send owns (the reader's buffer moves on the
 * next feed, under a send still running); the rest of the buffer is parsed
 * in place again. Limits as frame_echo_server: headers over -f close the
 * connection, the idle sweep closes those with no progress for -i ms, and
 * at most MAX_INFLIGHT echoes per connection are in flight (backpressure).
 *
 * Run:  ./completion_frame_echo_server [-p port] [-w workers] [-f max_frame_bytes]
 *           [-s sndbuf_bytes] [-i idle_ms] [-b buffer_bytes] [-n buffers_per_worker]
 *           [-S spin_us]
 *       -p 0 picks a free port (printed); -i 0 turns the idle timeout off (default 30000).
 * Try:  ./completion_frame_echo_server -p 9003 & ./frame_client -p 9003 -c 64 -d 5; kill -INT %1
 * SIGINT or SIGTERM shuts down cleanly and prints one parseable line:
 * "completion_frame_echo_server: stats accepted=N frames=N idle=N ...".
 */
#define _GNU_SOURCE
#include <amio/frame.h>
#include <signal.h>
#include <string.h>

#include "completion_common.h"
#include "frame_echo_conns.h" /* close reasons, counters and the idle clock */

/* Echoes in flight on one connection: at this many, parsing stops and the
 * recv pauses (cancelled; started again once half are done), so a peer that
 * does not read holds at most this many sends and the buffers they read. */
#define MAX_INFLIGHT 16

/* A pool buffer lent by one AMIO_RECV: parsed from off, returned to the pool
 * when refs (1 while queued on its connection, + 1 per send reading it)
 * drops to 0. Records are recycled through the worker's free list. */
struct rbuf {
	struct rbuf *next; /* the connection's queue, or the free list */
	unsigned char *buf;
	uint32_t len, off;
	uint32_t refs;
};

/* A copy of a frame cut across buffers, owned by its send. Blocks come in
 * power-of-two classes from 4 KiB and are kept for reuse (COPY_KEEP per
 * class), so steady state allocates nothing (a malloc/free per frame would
 * also sit in ASan's quarantine by the hundred MiB). */
#define COPY_MIN_SHIFT 12
#define COPY_CLASSES   19 /* up to 1 GiB, the largest -f */
#define COPY_KEEP      16
struct copy {
	struct copy *next; /* the worker's spares of its class */
	unsigned cls;
	unsigned char data[];
};

struct fconn {
	struct fconn *prev, *next; /* the worker's connections */
	int fd;
	int64_t rid;                 /* the running recv, 0 when none runs */
	int cancelled;               /* amio_cancel sent for rid */
	int why;                     /* once ended: CONN_EOF, CONN_IDLE, ... or -errno */
	int ended;                   /* no more recvs: EOF, failure or shutdown */
	int failed;                  /* ended at once: queued frames are dropped, sends cancelled */
	unsigned sends;              /* echoes in flight */
	struct rbuf *head, *tail;    /* received, not yet wholly parsed */
	int64_t progress_ms;         /* last frame in or echo out (conns_clock_ms) */
	struct amio_frame_reader fr; /* a frame cut across buffers */
};

struct worker {
	struct cc_sends sends;
	struct conns stats; /* counters and the idle clock; its lists are unused */
	struct fconn *conns;
	struct rbuf *free_rbufs;
	struct copy *copies[COPY_CLASSES]; /* spares */
	unsigned ncopies[COPY_CLASSES];
	amio_registrar *r;
	amio_pool *pool;
	amio_channel *ch;
	amio_poller *p;
	pthread_t thread;
	int index, stopping;
};

static uint32_t buf_bytes = 4096, nbufs = 512, spin_us = 0;
static size_t max_frame = 65536; /* -f, bytes */
static uint64_t idle_ms = 30000; /* -i: 0 = no idle timeout */
static uint64_t sweep_ms;        /* the idle sweep's period: idle_ms / 4 */
static char sweep_tag;           /* the notification data of the sweep timer */
static sem_t ready;              /* a worker's channel exists */

static void rbuf_unref(struct worker *w, struct rbuf *b)
{
	if (--b->refs)
		return;
	amio_pool_put(w->pool, b->buf);
	b->next = w->free_rbufs;
	w->free_rbufs = b;
}

static struct copy *copy_get(struct worker *w, size_t len)
{
	unsigned cls = 0;
	struct copy *b;

	while (((size_t)1 << (COPY_MIN_SHIFT + cls)) < len)
		cls++;
	if ((b = w->copies[cls])) {
		w->copies[cls] = b->next;
		w->ncopies[cls]--;
	} else if ((b = malloc(sizeof(*b) + ((size_t)1 << (COPY_MIN_SHIFT + cls))))) {
		b->cls = cls;
	}
	return b;
}

static void copy_put(struct worker *w, struct copy *b)
{
	if (b && w->ncopies[b->cls] < COPY_KEEP) {
		b->next = w->copies[b->cls];
		w->copies[b->cls] = b;
		w->ncopies[b->cls]++;
	} else {
		free(b);
	}
}

static void conn_recv(struct worker *w, struct fconn *c)
{
	int64_t id;

	CC_RETRY(w->r, id, amio_recv(w->r, c->fd, w->pool, c));
	if (id < 0) /* only -ESHUTDOWN (or -ENOSPC: too many ids) is left */
		cc_die("amio_recv", (int)id);
	c->rid = id;
	c->cancelled = 0;
}

static void conn_cancel_recv(struct worker *w, struct fconn *c)
{
	int rc;

	if (c->rid > 0 && !c->cancelled) {
		c->cancelled = 1;
		CC_RETRY(w->r, rc, amio_cancel(w->r, (uint64_t)c->rid));
		(void)rc; /* -ENOENT: its DONE is on its way anyway */
	}
}

/* Ends c at once (oversize, reset, idle, shutdown): nothing more is parsed
 * or echoed; its recv and sends are cancelled and each still brings its DONE. */
static void conn_fail(struct worker *w, struct fconn *c, int why)
{
	int rc;

	if (c->failed)
		return;
	if (!c->ended || c->why == CONN_EOF) /* a failure while draining after EOF wins */
		c->why = why;
	c->ended = c->failed = 1;
	while (c->head) {
		struct rbuf *b = c->head;

		c->head = b->next;
		rbuf_unref(w, b);
	}
	c->tail = NULL;
	conn_cancel_recv(w, c);
	for (struct cc_send *x = w->sends.live; x && !w->stopping; x = x->next)
		if (x->conn == c) /* stopping: cc_sends_cancel takes them all at once */
			CC_RETRY(w->r, rc, amio_cancel(w->r, (uint64_t)x->id));
}

/* Closed once it has ended, its recv has delivered its DONE, every echo its
 * DONE, and (after EOF) every frame received was echoed: the fd must stay
 * open, and c allocated (it is their data), until then. */
static void conn_maybe_close(struct worker *w, struct fconn *c)
{
	if (!c->ended || c->rid || c->sends || c->head)
		return;
	if (c->why == CONN_EOF && amio_frame_reader_buffered(&c->fr))
		c->why = -EPROTO; /* end of file in the middle of a frame */
	/* Counted, not logged: a flood of hostile peers must not flood stderr. */
	if (conns_count_close(&w->stats, c->why) == CLOSE_ERROR && c->why != -ECONNRESET &&
	    c->why != -EPIPE)
		fprintf(stderr, "%s: closing a connection: %s\n", cc_prog, amio_strerror(c->why));
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	close(c->fd);
	amio_frame_reader_destroy(&c->fr);
	free(c); /* nothing more can name c: every DONE came */
}

static void conn_new(struct worker *w, int fd)
{
	struct fconn *c = calloc(1, sizeof(*c));

	w->stats.accepted++;
	if (!c || w->stopping) {
		conns_count_close(&w->stats, c ? CONN_SHUTDOWN : -ENOMEM);
		close(fd);
		free(c);
		return;
	}
	c->fd = fd;
	c->progress_ms = conns_clock_ms(&w->stats); /* the batch's clock may predate it */
	amio_frame_reader_init(&c->fr, max_frame);  /* allocates nothing; main ruled out -EINVAL */
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	conn_recv(w, c);
}

/* Echoes frame f: its payload is read in place from b (a pool buffer, which
 * gains a reference) or from copy (a block the send owns). */
static int echo(struct worker *w, struct fconn *c, const struct iovec *f, struct rbuf *b,
                struct copy *copy)
{
	struct cc_send *s = cc_send_get(&w->sends, c);
	struct iovec iov[2];
	int64_t id;

	if (!s)
		return -ENOMEM;
	amio_frame_header_encode(s->hdr, f->iov_len); /* <= max_frame: no -EMSGSIZE */
	iov[0] = (struct iovec){s->hdr, AMIO_FRAME_HEADER_BYTES};
	iov[1] = (struct iovec){copy ? copy->data : f->iov_base, f->iov_len};
	CC_RETRY(w->r, id, amio_sendv(w->r, c->fd, iov, f->iov_len ? 2 : 1, 0, s));
	if (id < 0)
		cc_die("amio_sendv", (int)id);
	s->id = id;
	s->buf = b;
	s->copy = copy;
	if (b)
		b->refs++;
	c->sends++;
	c->progress_ms = w->stats.now_ms;
	w->stats.frames++;
	return 0;
}

/* Parses the queued buffers until they are used up or MAX_INFLIGHT echoes
 * are in flight. Whole frames are echoed in place; a frame cut across
 * buffers goes through the reader, fed only what it still misses, so the
 * frames behind it are again parsed in place.
 * Returns 0, or -EMSGSIZE / -ENOMEM: the connection must fail. */
static int conn_parse(struct worker *w, struct fconn *c)
{
	struct iovec f;
	ssize_t n, miss;

	while (c->head && c->sends < MAX_INFLIGHT) {
		struct rbuf *b = c->head;
		const unsigned char *at = b->buf + b->off;
		size_t left = b->len - b->off;

		if (!left) {
			if (!(c->head = b->next))
				c->tail = NULL;
			rbuf_unref(w, b);
			continue;
		}
		if (!amio_frame_reader_buffered(&c->fr)) {
			if ((n = amio_frame_parse(at, left, max_frame, &f)) < 0)
				return (int)n; /* -EMSGSIZE, 4 GiB headers too */
			if (n > 0) {
				b->off += (uint32_t)n;
				if (echo(w, c, &f, b, NULL) < 0)
					return -ENOMEM;
				continue;
			}
		}
		if ((miss = amio_frame_reader_missing(&c->fr)) < 0)
			return (int)miss;
		n = amio_frame_reader_feed(&c->fr, at, left < (size_t)miss ? left : (size_t)miss);
		if (n <= 0) /* it takes what it misses, memory permitting */
			return n < 0 ? (int)n : -ENOMEM;
		b->off += (uint32_t)n;
		if (amio_frame_reader_next(&c->fr, &f) == 1) {
			struct copy *copy = f.iov_len ? copy_get(w, f.iov_len) : NULL;

			if (f.iov_len && !copy)
				return -ENOMEM;
			if (copy)
				memcpy(copy->data, f.iov_base, f.iov_len);
			if (echo(w, c, &f, NULL, copy) < 0) {
				copy_put(w, copy);
				return -ENOMEM;
			}
		} else if ((miss = amio_frame_reader_missing(&c->fr)) < 0) {
			return (int)miss; /* the header just completed announces too much */
		}
	}
	if (c->sends >= MAX_INFLIGHT)
		conn_cancel_recv(w, c); /* pause: the peer is not reading fast enough */
	return 0;
}

static void conn_pump(struct worker *w, struct fconn *c)
{
	int rc = c->failed ? 0 : conn_parse(w, c);

	if (rc < 0)
		conn_fail(w, c, rc);
	else if (!c->ended && !c->rid && !c->head && c->sends <= MAX_INFLIGHT / 2)
		conn_recv(w, c); /* resume after a pause */
	conn_maybe_close(w, c);
}

static void on_recv(struct worker *w, struct fconn *c, const amio_notification *n)
{
	struct rbuf *b;

	if (n->events & AMIO_DONE) {
		c->rid = 0;
		/* -ECANCELED from our own pause is not the end, unless we failed. */
		if (n->res != -ECANCELED && !c->ended) {
			c->ended = 1;
			c->why = n->res == 0 ? CONN_EOF : n->res;
			if (n->res < 0) /* -ECONNRESET: nothing more goes out either */
				conn_fail(w, c, n->res);
		}
		conn_pump(w, c);
		return;
	}
	if (c->failed || !(b = w->free_rbufs ? w->free_rbufs : malloc(sizeof(*b)))) {
		amio_pool_put(w->pool, n->buf); /* failed, or out of memory: dropped */
		if (!c->failed)
			conn_fail(w, c, -ENOMEM);
		conn_maybe_close(w, c);
		return;
	}
	if (b == w->free_rbufs)
		w->free_rbufs = b->next;
	*b = (struct rbuf){.buf = n->buf, .len = (uint32_t)n->res, .refs = 1};
	if (c->tail)
		c->tail->next = b;
	else
		c->head = b;
	c->tail = b;
	conn_pump(w, c);
}

static void on_send_done(struct worker *w, const amio_notification *n)
{
	struct cc_send *s = n->data;
	struct fconn *c = s->conn;

	if (s->buf)
		rbuf_unref(w, s->buf);
	copy_put(w, s->copy);
	cc_send_put(&w->sends, s);
	c->sends--;
	if (n->res < 0) /* -EPIPE, -ECONNRESET, -ECANCELED: how much went out is unknown */
		conn_fail(w, c, n->res == -ECANCELED ? CONN_SHUTDOWN : n->res);
	else
		c->progress_ms = w->stats.now_ms;
	conn_pump(w, c);
}

/* The idle timeout of frame_echo_server (see its sweep): progress is a
 * frame in or an echo out, on a clock that skips stalls of the process. */
static void sweep(struct worker *w)
{
	int64_t now = conns_sweep_clock(&w->stats, (int64_t)sweep_ms);

	w->stats.now_ms = now;
	for (struct fconn *c = w->conns, *next; c; c = next) {
		next = c->next; /* c stays allocated: its recv's DONE is to come */
		if (!c->failed && now - c->progress_ms >= (int64_t)idle_ms)
			conn_fail(w, c, CONN_IDLE);
	}
}

static void on_channel(struct worker *w, int64_t tid)
{
	int fd, rc;

	while (amio_channel_try_recv(w->ch, &fd) == 0) {
		if (fd != CC_STOP_FD) {
			conn_new(w, fd);
			continue;
		}
		/* Stop: end every operation; each still delivers its DONE. */
		w->stopping = 1;
		if (tid > 0)
			CC_RETRY(w->r, rc, amio_cancel_timer(w->r, (uint64_t)tid));
		for (struct fconn *c = w->conns, *next; c; c = next) {
			next = c->next;
			conn_fail(w, c, CONN_SHUTDOWN);
			conn_maybe_close(w, c);
		}
		cc_sends_cancel(w->r, &w->sends);
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	amio_notification n[64];
	int64_t tid = 0;
	char name[16];
	int rc;

	snprintf(name, sizeof(name), "amio-worker%d", w->index);
	(void)pthread_setname_np(pthread_self(), name);
	if ((rc = amio_registrar_new(w->p, AMIO_INBOX, &w->r)) < 0)
		cc_die("amio_registrar_new", rc);
	if ((rc = amio_pool_new(w->r, nbufs, buf_bytes, &w->pool)) < 0)
		cc_die("amio_pool_new", rc);
	if ((rc = amio_channel_new(w->r, CC_CHANNEL_FDS, sizeof(int), NULL, &w->ch)) < 0)
		cc_die("amio_channel_new", rc);
	if (idle_ms && (tid = amio_set_interval(w->r, sweep_ms, &sweep_tag)) < 0)
		cc_die("amio_set_interval", (int)tid);
	sem_post(&ready);
	while (!w->stopping || w->conns) {
		if ((rc = cc_wait(w->r, n, 64, spin_us)) < 0)
			cc_die("amio_registrar_wait", rc);
		w->stats.now_ms = conns_clock_ms(&w->stats); /* one clock read per batch */
		for (int i = 0; i < rc; i++) {
			if (n[i].events & AMIO_CHANNEL)
				on_channel(w, tid);
			else if (n[i].events & AMIO_TIMER)
				sweep(w);
			else if (n[i].events & AMIO_RECV)
				on_recv(w, n[i].data, &n[i]);
			else if (n[i].events & AMIO_SEND)
				on_send_done(w, &n[i]);
		}
	}
	cc_sends_free(&w->sends);
	for (int k = 0; k < COPY_CLASSES; k++) {
		while (w->copies[k]) {
			struct copy *b = w->copies[k];

			w->copies[k] = b->next;
			free(b);
		}
	}
	while (w->free_rbufs) {
		struct rbuf *b = w->free_rbufs;

		w->free_rbufs = b->next;
		free(b);
	}
	CC_RETRY(w->r, rc, amio_pool_free(w->pool)); /* every buffer is back */
	if (rc < 0)
		cc_die("amio_pool_free", rc);
	amio_channel_free(w->ch);
	amio_registrar_free(w->r);
	return NULL;
}

int main(int argc, char **argv)
{
	static struct worker w[CC_MAX_WORKERS];
	static struct cc_acceptor a;
	struct conns sum = {0};
	int nworkers = 2, opt, sig, rc;
	uint16_t port = 9003;
	pthread_t poll_thread;
	sigset_t set;

	cc_prog = "completion_frame_echo_server";
	while ((opt = getopt(argc, argv, "p:w:f:s:i:b:n:S:")) != -1) {
		if (opt == 'p')
			port = (uint16_t)atoi(optarg);
		else if (opt == 'w')
			nworkers = atoi(optarg);
		else if (opt == 'f')
			max_frame = strtoul(optarg, NULL, 0);
		else if (opt == 's')
			a.sndbuf = atoi(optarg);
		else if (opt == 'i')
			idle_ms = strtoull(optarg, NULL, 0);
		else if (opt == 'b')
			buf_bytes = (uint32_t)strtoul(optarg, NULL, 0);
		else if (opt == 'n')
			nbufs = (uint32_t)strtoul(optarg, NULL, 0);
		else if (opt == 'S')
			spin_us = (uint32_t)strtoul(optarg, NULL, 0);
		else
			return fprintf(stderr,
			               "usage: %s [-p port] [-w workers] [-f bytes] [-s bytes] "
			               "[-i idle_ms] [-b bytes] [-n buffers] [-S spin_us]\n",
			               argv[0]),
			       2;
	}
	if (nworkers < 1 || nworkers > CC_MAX_WORKERS || max_frame > (1u << 30) || a.sndbuf < 0 ||
	    idle_ms > (1ull << 40))
		return fprintf(stderr, "%s: bad arguments\n", cc_prog), 2;
	sweep_ms = idle_ms / 4 ? idle_ms / 4 : 1;
	/* Signals go to main only, which turns them into a clean shutdown. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	a.lfd = cc_listen(&port);
	a.nworkers = nworkers;
	sem_init(&a.accept_done, 0, 0);
	sem_init(&ready, 0, 0);
	if ((rc = amio_poller_new(&a.p, NULL)) < 0)
		cc_die("amio_poller_new", rc);
	/* Workers first: the poll thread deals connections into their channels. */
	for (int i = 0; i < nworkers; i++) {
		w[i].p = a.p;
		w[i].index = i;
		if ((rc = pthread_create(&w[i].thread, NULL, worker_main, &w[i])) != 0)
			cc_die("pthread_create", -rc);
	}
	for (int i = 0; i < nworkers; i++) {
		while (sem_wait(&ready) < 0)
			;
	}
	for (int i = 0; i < nworkers; i++) /* every worker has posted: each channel exists */
		a.ch[i] = w[i].ch;
	if ((rc = pthread_create(&poll_thread, NULL, cc_poll_main, &a)) != 0)
		cc_die("pthread_create", -rc);
	printf("%s: listening on 127.0.0.1:%u with %d workers, frames <= %zu B, idle timeout "
	       "%llu ms, %u x %u B buffers each, backend %s\n",
	       cc_prog, port, nworkers, max_frame, (unsigned long long)idle_ms, nbufs, buf_bytes,
	       amio_poller_backend(a.p));
	fflush(stdout);
	sigwait(&set, &sig);

	cc_stop_accepting(&a);
	for (int i = 0; i < nworkers; i++) {
		int stop = CC_STOP_FD;

		if ((rc = amio_channel_send_wait(w[i].ch, &stop, -1)) < 0)
			cc_die("amio_channel_send_wait", rc);
	}
	for (int i = nworkers - 1; i >= 0; i--) {
		pthread_join(w[i].thread, NULL);
		conns_add(&sum, &w[i].stats);
	}
	cc_stop_poll_thread(&a, poll_thread);
	amio_poller_free(a.p);
	close(a.lfd); /* after the accept's DONE, never before */
	printf("%s: %s, %llu connections (%llu shed), echoed %llu frames\n", cc_prog,
	       sig == SIGINT ? "SIGINT" : "SIGTERM", (unsigned long long)a.accepted,
	       (unsigned long long)a.shed, (unsigned long long)sum.frames);
	conns_print_stats(cc_prog, &sum);
	return 0;
}
