/*
 * http_server: HTTP/1.1 on completion I/O, nginx-style: -w threads, each with its own poller,
 * SO_REUSEPORT listener and Amy-mode registrar. GET / answers "Hello, World!", GET /path sends a
 * file under -d DIR (amio_pread, 64 KiB at a time). Keep-alive, pipelining, an idle timeout (-k
 * ms), a request-head timeout (-t ms, against slowloris); SIGINT/SIGTERM: stop accepting, finish
 * the responses under way (5 s at most), exit 0. amio keeps the sends in order, stops reading a
 * connection whose sends pile up, and closes it once every operation on it has ended.
 * Run:  ./http_server [-p port (0: a free one, printed)] [-w workers] [-d dir] [-k ms] [-t ms]
 * Try:  ./http_server -p 8080 -d . & curl -v 127.0.0.1:8080/README.md; kill %1
 */
#define _GNU_SOURCE
#include <amio.h>
#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX  8192  /* bytes of a request head; more: 431 */
#define CHUNK     65536 /* file bytes per amio_pread and send */
#define TRY(call) try_((call), #call)

enum { R_HELLO, R_404, R_400, R_413, R_501, R_431, R_N }; /* parse() refuses with -R_4xx */
static const char *status[R_N] = {[R_HELLO] = "200 OK",  "404 Not Found",
                                  "400 Bad Request",     "413 Content Too Large",
                                  "501 Not Implemented", "431 Request Header Fields Too Large"};
static char canned[R_N][2][128]; /* [response][keep-alive]: built once, sent from here */
static int root = -1, sigfd;     /* -d DIR; SIGINT and SIGTERM, read by nobody */
static uint32_t idle_ms = 5000, head_ms = 10000;

struct conn {
	struct conn *prev, *next; /* the worker's connections */
	int fd;                   /* -1 once amio_close is called: what still arrives is dropped */
	int keep;                 /* read another request */
	int file;                 /* the file going out (the recv paused meanwhile), or -1 */
	int64_t rid;              /* the recv, 0 once it ended (EOF, error, idle timeout) */
	int64_t head_t0;          /* ms: when the head held began, or 0 */
	uint64_t off, size;       /* of the file */
	size_t len;               /* bytes in in[] */
	char *chunk;              /* the file's head, then its bytes: a DONE with buf == chunk */
	char in[HEAD_MAX + 8192]; /* received, not answered yet (pool buffers are 8 KiB) */
};

struct worker {
	amio_poller *p;
	amio_registrar *r;
	amio_pool *pool;
	struct conn *conns;
	int lfd;         /* the listener, -1 once its amio_close is DONE */
	int64_t stop_at; /* SIGINT, SIGTERM: when the grace period ends (ms), else 0 */
	pthread_t thread;
};

/* Exit on an error no peer can cause: setup, or out of ids (-ENOSPC). */
static int64_t try_(int64_t rc, const char *what)
{
	if (rc < 0)
		errx(1, "%s: %s", what, amio_strerror((int)rc));
	return rc;
}

static int64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The request head at b[0..n): its length, 0 while incomplete (need more
 * bytes), or -R_x, the error to answer. Cuts the head into strings. */
static int parse(char *b, size_t n, char path[1024], int *keep)
{
	char *end = memmem(b, n, "\r\n\r\n", 4), *line, *v, *save, method[8], x;
	int minor = -1;

	if (!end || end + 4 - b > HEAD_MAX)
		return end || n >= HEAD_MAX ? -R_431 : 0;
	end[2] = '\0'; /* the head is a string now (its last CRLF is consumed anyway) */
	line = strtok_r(b, "\r\n", &save);
	if (!line || sscanf(line, "%7s %1023s HTTP/1.%d %c", method, path, &minor, &x) != 3 ||
	    (unsigned)minor > 1 || path[0] != '/' || strstr(path, "/.."))
		return -R_400; /* and no way out of -d DIR */
	path[strcspn(path, "?")] = '\0';
	if (strcmp(method, "GET"))
		return -R_501;
	*keep = minor == 1; /* HTTP/1.1 keeps the connection, HTTP/1.0 closes it */
	while ((line = strtok_r(NULL, "\r\n", &save))) {
		if (!(v = strchr(line, ':')) || v == line || v > line + strcspn(line, " \t"))
			return -R_400; /* no name, a space before the colon, obsolete folding */
		*v++ = '\0';
		v += strspn(v, " \t");
		if (!strcasecmp(line, "connection"))
			*keep = !strncasecmp(v, "keep-alive", 10) ||
			        (*keep && strncasecmp(v, "close", 5));
		if (!strcasecmp(line, "transfer-encoding") ||
		    (!strcasecmp(line, "content-length") && v[strspn(v, "0 \t")]))
			return -R_413; /* a body: not taken */
	}
	return (int)(end + 4 - b);
}

/* Close once every operation on c->fd has ended (graceful: what is queued goes out
 * first), once only: after it the number may be a new connection's. c is freed at the
 * CLOSE DONE, so never while c->file's pread runs (no operation on c->fd). */
static void conn_close(struct worker *w, struct conn *c)
{
	if (c->fd >= 0)
		TRY(amio_close(w->r, c->fd, AMIO_CLOSE_GRACEFUL, c));
	c->fd = -1;
}

static void conn_free(struct worker *w, struct conn *c)
{
	*(c->prev ? &c->prev->next : &w->conns) = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->file >= 0)
		close(c->file);
	free(c->chunk);
	free(c);
}

static void send_on(struct worker *w, struct conn *c, const char *buf)
{
	TRY(amio_send(w->r, c->fd, buf, strlen(buf), 0, c));
}

static void respond(struct worker *w, struct conn *c, const char *path)
{
	const char *rel = path + strspn(path, "/"); /* always under -d DIR */
	struct stat st;

	if (!*rel) { /* fstatat and openat on the poll thread: quick for cached metadata */
		send_on(w, c, canned[R_HELLO][c->keep]);
	} else if (root < 0 || fstatat(root, rel, &st, 0) < 0 || !S_ISREG(st.st_mode) ||
	           (c->file = openat(root, rel, O_RDONLY | O_CLOEXEC)) < 0) {
		send_on(w, c, canned[R_404][c->keep]);
	} else if (!c->chunk && !(c->chunk = malloc(CHUNK))) {
		conn_close(w, c); /* out of memory (c->file goes at the CLOSE DONE) */
	} else {                  /* the head; then each send's DONE reads the next chunk */
		c->off = 0, c->size = (uint64_t)st.st_size;
		snprintf(c->chunk, CHUNK,
		         "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\nConnection: %s\r\n\r\n",
		         (unsigned long long)c->size, c->keep ? "keep-alive" : "close");
		send_on(w, c, c->chunk);
		/* The requests behind it wait in the socket meanwhile (-ENOENT: the recv ended). */
		(void)amio_recv_pause(w->r, (uint64_t)c->rid);
	}
}

/* Answer the complete requests held, in order, until a file goes out (its last DONE
 * calls back); then read on, or close. A head still incomplete when bytes come head_ms
 * after it began is cut off (one that stops coming, by the idle timeout). */
static void serve(struct worker *w, struct conn *c)
{
	size_t off = 0;
	char path[1024];
	int n;

	while (c->fd >= 0 && c->file < 0 && c->keep && off < c->len &&
	       (n = parse(c->in + off, c->len - off, path, &c->keep))) {
		off += n > 0 ? (size_t)n : c->len - off; /* after a bad request, trust nothing */
		c->head_t0 = 0;
		if (n > 0)
			respond(w, c, path);
		else
			send_on(w, c, canned[-n][c->keep = 0]);
	}
	memmove(c->in, c->in + off, c->len - off);
	c->len -= off;
	if (c->len && !c->head_t0 && c->file < 0)
		c->head_t0 = now_ms();
	if (c->file < 0 &&
	    (!c->keep || !c->rid || (head_ms && c->len && now_ms() - c->head_t0 >= head_ms)))
		conn_close(w, c);
}

/* A DONE of the file's pread or send: after a read, send what it read; after
 * a send, read the next chunk, or the file is out: on to the requests held. */
static void on_file(struct worker *w, struct conn *c, const amio_notification *n)
{
	if (n->res < 0 || (n->res == 0 && (n->events & AMIO_PREAD))) {
		conn_close(w, c); /* -EPIPE, -ETIME (send timeout), -EIO, the file shrank */
	} else if (n->events & AMIO_PREAD) {
		c->off += (uint64_t)n->res;
		TRY(amio_send(w->r, c->fd, c->chunk, (size_t)n->res, 0, c));
	} else if (c->off < c->size) {
		TRY(amio_pread(w->r, c->file, c->chunk,
		               c->size - c->off < CHUNK ? c->size - c->off : CHUNK, c->off, c));
	} else {
		close(c->file);
		c->file = -1;
		serve(w, c);
		if (c->fd >= 0 && c->file < 0 && c->rid)
			TRY(amio_recv_resume(w->r, (uint64_t)c->rid));
	}
}

static void dispatch(struct worker *w, const amio_notification *n)
{
	struct conn *c = n->data;

	if ((n->events & AMIO_ACCEPT) && n->res < 0) { /* -EMFILE ...: it listens on */
		if (n->res != -ECANCELED)              /* the listener's amio_close */
			warnx("accept: %s", amio_strerror(n->res));
	} else if ((n->events & AMIO_ACCEPT) && (w->stop_at || !(c = calloc(1, sizeof(*c))))) {
		close(n->res); /* no operation runs on it yet */
	} else if (n->events & AMIO_ACCEPT) {
		c->fd = n->res, c->file = -1, c->keep = 1;
		if ((c->next = w->conns))
			c->next->prev = c;
		w->conns = c;
		c->rid = TRY(amio_recv(w->r, c->fd, w->pool, c));
	} else if (n->events & AMIO_RECV) {
		if (n->events & AMIO_DONE) /* EOF, -ECONNRESET, idle: answer what is held, close */
			c->rid = 0;
		else if (c->fd >= 0 && c->len + (size_t)n->res > sizeof(c->in))
			c->keep = 0; /* much came before a pause took hold: close after the file */
		else if (c->fd >= 0 && c->keep)
			memcpy(c->in + c->len, n->buf, (size_t)n->res), c->len += (size_t)n->res;
		if (n->buf)
			TRY(amio_pool_put(w->pool, n->buf));
		serve(w, c);
	} else if ((n->events & (AMIO_SEND | AMIO_PREAD)) && n->buf == c->chunk) {
		on_file(w, c, n);
	} else if (n->events & AMIO_SEND) { /* -EPIPE ...: a file behind it fails too */
		if (n->res < 0 && c->file < 0)
			conn_close(w, c);
	} else if ((n->events & AMIO_CLOSE) && !c) {
		w->lfd = -1;                 /* the listener: its accept ended first */
	} else if (n->events & AMIO_CLOSE) { /* every operation on c's fd has ended */
		conn_free(w, c);
	} else if (!w->stop_at) { /* the signalfd: SIGINT or SIGTERM (or its poll failed) */
		w->stop_at = now_ms() + 5000;
		TRY(amio_close(w->r, w->lfd, 0, NULL)); /* ends its accept */
		for (c = w->conns; c; c = c->next)
			c->keep = 0, serve(w, c); /* closes c, or its file's last DONE will */
	}
}

static void *worker_main(void *arg)
{
	/* The idle clock stops while sends are queued: a long download is not idle. */
	struct amio_conn_config cc = {.idle_ms = idle_ms, .send_timeout_ms = 60000};
	struct worker *w = arg;
	amio_notification n[64];

	/* Amy mode: a full command queue is drained by the call that finds it full (no -EAGAIN). */
	TRY(amio_registrar_new(w->p, 0, &w->r));
	TRY(amio_registrar_set_queue_wait(w->r, -1));
	TRY(amio_registrar_set_conn(w->r, &cc));
	TRY(amio_pool_new(w->r, 512, 8192, &w->pool));
	TRY(amio_accept(w->r, w->lfd, w));
	/* Every worker polls the one signalfd: a signal wakes them all, none reads it. */
	TRY(amio_register(w->r, sigfd, AMIO_READ, w));
	while (!w->stop_at || ((w->lfd >= 0 || w->conns) && now_ms() < w->stop_at))
		for (int i = 0, k = (int)TRY(amio_poller_wait(w->p, n, 64, w->stop_at ? 100 : -1));
		     i < k; i++)
			dispatch(w, &n[i]);
	amio_registrar_free(w->r);
	amio_poller_free(w->p); /* ends what the grace period cut, frees the pool */
	while (w->conns)
		conn_free(w, w->conns); /* cut short: their sockets go with the process */
	return NULL;
}

int main(int argc, char **argv)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int nw = 1, port = 8080, opt, one = 1;
	struct worker *w;
	sigset_t set;

	while ((opt = getopt(argc, argv, "p:w:d:k:t:")) != -1) {
		if (opt == 'd' && (root = open(optarg, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
			err(1, "%s", optarg);
		else if (opt == 'p' || opt == 'w')
			*(opt == 'p' ? &port : &nw) = atoi(optarg);
		else if (opt == 'k' || opt == 't')
			*(opt == 'k' ? &idle_ms : &head_ms) = (uint32_t)atoi(optarg);
		else if (opt != 'd')
			nw = 0;
	}
	if (nw < 1 || !(w = calloc((size_t)nw, sizeof(*w))))
		errx(2, "usage: %s [-p port] [-w workers] [-d dir] [-k idle_ms] [-t head_ms]",
		     argv[0]);
	/* Signals: blocked in every thread, seen through a signalfd the workers poll. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) || (sigfd = signalfd(-1, &set, SFD_CLOEXEC)) < 0)
		err(1, "signalfd");
	for (int r = 0; r < R_N; r++) /* the canned responses: HTTP/1.1 keep-alive or close */
		for (int k = 0; k < 2; k++)
			snprintf(canned[r][k], sizeof(canned[r][k]),
			         "HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n%s",
			         status[r], r ? 0 : 13, k ? "keep-alive" : "close",
			         r ? "" : "Hello, World!");
	a.sin_port = htons((uint16_t)port);
	for (int i = 0; i < nw; i++) { /* -p 0: the first gets a port, the others share it */
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

		/* TCP_NODELAY: the accepted sockets inherit it (answers are not held back). */
		if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
		    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
		    bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 4096) < 0 ||
		    getsockname(fd, (struct sockaddr *)&a, &alen) < 0)
			err(1, "listen");
		w[i].lfd = fd;
		TRY(amio_poller_new(&w[i].p, NULL));
	}
	printf("http_server: listening on 127.0.0.1:%u, %d workers, backend %s\n",
	       ntohs(a.sin_port), nw, amio_poller_backend(w[0].p));
	fflush(stdout);
	for (int i = 0; i < nw; i++)
		TRY(-pthread_create(&w[i].thread, NULL, worker_main, &w[i]));
	for (int i = nw - 1; i >= 0; i--)
		pthread_join(w[i].thread, NULL);
	free(w);
	return 0;
}
