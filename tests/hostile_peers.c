/* Hostile and broken peers against the real frame_echo_server (oversized
 * headers, slowloris, resets mid-frame, half-closes) while good clients run:
 * every good reply arrives, the bad connections are closed for the right
 * reason, RSS stays bounded and the server exits cleanly. Then AMIO_HUP for
 * half-closed and reset peers, in Amy mode.
 * AMIO_FRAME_ECHO_SERVER=path attacks another server with frame_echo_server's
 * options (-p -w -f -i) and "<name>: stats" line: completion_frame_echo_server. */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "amio_test.h"

#ifndef FRAME_ECHO_SERVER
#error "FRAME_ECHO_SERVER: the path of frame_echo_server, set by tests/CMakeLists.txt"
#endif

#define MAX_FRAME   65536 /* the server's -f */
#define IDLE_MS     2000  /* the server's -i */
#define N_GOOD      16
#define N_OVERSIZE  500
#define N_SLOW      500
#define N_RESET     500
#define N_HALF      50
#define HALF_FRAMES 8     /* frames each half-closing client sends */
#define RESET_FRAME 16384 /* a resetting client announces this, sends half */
#define RESET_WAVE  100   /* resetting clients connected at once */
#define N_AFTER     4     /* good connections after the attack */
#define MIB         (1024.0 * 1024.0)
#define STR_(x)     #x
#define STR(x)      STR_(x)

/* ---- The server process --------------------------------------------------- */

struct server {
	pid_t pid;
	FILE *out; /* its stdout */
	uint16_t port;
};

static const char *server_path(void)
{
	const char *path = getenv("AMIO_FRAME_ECHO_SERVER");

	return path && path[0] ? path : FRAME_ECHO_SERVER;
}

static void server_start(struct server *s)
{
	char line[256];
	int pfd[2];
	const char *port_at;

	ck_assert_int_eq(pipe(pfd), 0);
	s->pid = fork();
	ck_assert_int_ge(s->pid, 0);
	if (s->pid == 0) {
		/* Dies with the test, even if a failed assertion ends it. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(pfd[1], STDOUT_FILENO);
		close(pfd[0]);
		close(pfd[1]);
		execl(server_path(), server_path(), "-p", "0", "-w", "2", "-f", STR(MAX_FRAME),
		      "-i", STR(IDLE_MS), (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	s->out = fdopen(pfd[0], "r");
	ck_assert_ptr_nonnull(s->out);
	ck_assert_msg(fgets(line, sizeof(line), s->out), "the server printed nothing");
	port_at = strstr(line, "127.0.0.1:");
	ck_assert_msg(port_at, "unexpected first line: %s", line);
	s->port = (uint16_t)atoi(port_at + strlen("127.0.0.1:"));
	ck_assert_uint_gt(s->port, 0);
}

static bool server_alive(const struct server *s)
{
	int status;

	return waitpid(s->pid, &status, WNOHANG) == 0;
}

#define STATS ": stats " /* after the server's name */

/* SIGINT, then its "stats" line; *status: the wait status. */
static void server_stop(struct server *s, char *stats, size_t cap, int *status)
{
	char line[512];
	int64_t end;

	stats[0] = '\0';
	ck_assert_int_eq(kill(s->pid, SIGINT), 0);
	while (fgets(line, sizeof(line), s->out)) {
		const char *at = strstr(line, STATS);

		if (at)
			snprintf(stats, cap, "%s", at + strlen(STATS));
	}
	fclose(s->out);
	s->out = NULL;
	end = t_now_ms() + 20000;
	while (waitpid(s->pid, status, WNOHANG) == 0) {
		ck_assert_msg(t_now_ms() < end, "the server did not exit within 20 s of SIGINT");
		usleep(10000);
	}
}

static unsigned long long stat_get(const char *stats, const char *key)
{
	char pat[32];
	const char *at;

	snprintf(pat, sizeof(pat), "%s=", key);
	at = strstr(stats, pat);
	ck_assert_msg(at, "no %s in the stats line: %s", key, stats);
	return strtoull(at + strlen(pat), NULL, 10);
}

/* VmRSS or VmHWM of pid, in bytes (0 once the process is gone). */
static size_t proc_mem(pid_t pid, const char *field)
{
	char path[64], line[256];
	size_t kb = 0, flen = strlen(field);
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (!(f = fopen(path, "r")))
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, flen) == 0 && line[flen] == ':')
			kb = strtoull(line + flen + 1, NULL, 10);
	fclose(f);
	return kb * 1024;
}

/* ---- Shared state of one attack ------------------------------------------ */

struct attack {
	struct server srv;
	atomic_int stop_good;  /* the good clients finish their frame and stop */
	atomic_int stop_after; /* the same for the clients after the attack */
	atomic_int hold;       /* clients park after their reply ... */
	atomic_int parked;     /* ... and count themselves */
	atomic_int stop_sampler;
	size_t rss_peak; /* VmRSS sampled every 20 ms */
	/* Results, each written by one thread before it is joined. */
	int over_closed;
	int64_t over_slowest_ms;
	int slow_closed, slow_early;
	int64_t slow_first_ms, slow_last_ms;
	int reset_sent;
	int half_ok;
	char half_err[160];
};

/* A failed check while the server runs: stop it first, so its counters (why
 * it closed which connections) go into the failure message. */
static void attack_fail(struct attack *a, const char *fmt, ...)
{
	char msg[256], stats[512] = "(none)";
	va_list ap;
	int status;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (a->srv.out)
		server_stop(&a->srv, stats, sizeof(stats), &status);
	ck_abort_msg("%s; server stats: %s", msg, stats);
}

#define attack_check(a, cond, ...)                                                                 \
	do {                                                                                       \
		if (!(cond))                                                                       \
			attack_fail((a), __VA_ARGS__);                                             \
	} while (0)

/* A well-mixed 64-bit value for frame seq of connection index k. */
static uint64_t mix(uint32_t k, uint32_t seq)
{
	uint64_t x = ((uint64_t)k << 32 | seq) * 0x9e3779b97f4a7c15u;

	x ^= x >> 31;
	x *= 0xbf58476d1ce4e5b9u;
	return x ^ x >> 29;
}

/* frame_client's mix: 40% 0..64 B, 40% 1..4096, 20% 0..max; every 50th
 * frame exactly max, so the largest frame is always among them. */
static size_t frame_len(uint64_t x, uint32_t seq, size_t max)
{
	uint64_t pick = x % 10, r = x >> 8;
	size_t len = pick < 4 ? r % 65 : pick < 8 ? 1 + r % 4096 : r % (max + 1);

	if (seq % 50 == 49)
		return max;
	return len < max ? len : max;
}

/* Header (big-endian length) then payload bytes derived from x. */
static size_t encode(unsigned char *buf, uint64_t x, size_t len)
{
	buf[0] = (unsigned char)(len >> 24);
	buf[1] = (unsigned char)(len >> 16);
	buf[2] = (unsigned char)(len >> 8);
	buf[3] = (unsigned char)len;
	for (size_t i = 0; i < len; i++)
		buf[4 + i] = (unsigned char)((x + i) ^ (i >> 8));
	return 4 + len;
}

/* Blocking client socket; timeouts turn a lost reply into a failure. */
static int client(uint16_t port, int timeout_s)
{
	struct timeval tv = {.tv_sec = timeout_s};
	int one = 1, fd = t_connect(port);

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
}

static int send_all(int fd, const void *buf, size_t len)
{
	for (size_t off = 0; off < len;) {
		ssize_t n = send(fd, (const char *)buf + off, len - off, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		off += (size_t)n;
	}
	return 0;
}

/* Returns 0, -errno, or 1 at EOF before len bytes. */
static int recv_all(int fd, void *buf, size_t len)
{
	for (size_t off = 0; off < len;) {
		ssize_t n = recv(fd, (char *)buf + off, len - off, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 1;
		off += (size_t)n;
	}
	return 0;
}

/* The peer closed fd: EOF or a reset (anything else: not yet, or data). */
static bool peer_closed(int fd)
{
	char b[4096];
	ssize_t n;

	while ((n = recv(fd, b, sizeof(b), MSG_DONTWAIT)) > 0)
		; /* the server never sends to these clients; drain anyway */
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
}

/* ---- Good clients: frames of every size, each reply checked byte for byte -- */

struct good_arg {
	struct attack *a;
	atomic_int *stop;
	uint32_t k;                /* connection index: seeds its frames */
	atomic_uint_fast64_t done; /* frames echoed: the main thread watches it */
	uint64_t bytes, held_at;
	char err[160];
};

static void *good_main(void *arg)
{
	struct good_arg *g = arg;
	unsigned char *tx = malloc(4 + MAX_FRAME), *rx = malloc(4 + MAX_FRAME);
	int fd = client(g->a->srv.port, 20);
	int64_t last = t_now_ms(); /* connected, or the last reply */

	for (uint32_t seq = 0; !*g->stop; seq++) {
		uint64_t x = mix(g->k, seq);
		size_t n = encode(tx, x, frame_len(x, seq, MAX_FRAME));
		int rc = send_all(fd, tx, n);

		if (rc == 0)
			rc = recv_all(fd, rx, n);
		if (rc != 0) {
			snprintf(g->err, sizeof(g->err),
			         "conn %u frame %u (%zu B): %s, %lld ms after the last reply", g->k,
			         seq, n - 4, rc == 1 ? "EOF before the reply" : strerror(-rc),
			         (long long)(t_now_ms() - last));
			break;
		}
		if (memcmp(tx, rx, n) != 0) {
			snprintf(g->err, sizeof(g->err), "conn %u frame %u (%zu B): wrong bytes",
			         g->k, seq, n - 4);
			break;
		}
		g->done++;
		g->bytes += n - 4;
		if (g->a->hold) {
			g->held_at = g->done;
			atomic_fetch_add(&g->a->parked, 1);
			while (g->a->hold)
				usleep(1000);
		}
		last = t_now_ms();
	}
	close(fd);
	free(tx);
	free(rx);
	return NULL;
}

/* ---- 500 clients announcing a 4 GiB frame ------------------------------- */

/* Wait until every fd of fds[0..n) is closed by the peer or until deadline
 * (t_now_ms); closed_at[i] gets the time it was seen, 0 while open.
 * Returns how many are closed. */
static int wait_closed(const int *fds, int n, int64_t *closed_at, int64_t deadline)
{
	int ep = epoll_create1(EPOLL_CLOEXEC), open = 0;
	struct epoll_event ev[64];

	ck_assert_int_ge(ep, 0);
	for (int i = 0; i < n; i++) {
		struct epoll_event e = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};

		if (closed_at[i])
			continue;
		ck_assert_int_eq(epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &e), 0);
		open++;
	}
	while (open > 0 && t_now_ms() < deadline) {
		int64_t left = deadline - t_now_ms();
		int k = epoll_wait(ep, ev, 64, left < 100 ? (int)left : 100);

		for (int j = 0; j < k; j++) {
			uint32_t i = ev[j].data.u32;

			if (closed_at[i] || !peer_closed(fds[i]))
				continue;
			closed_at[i] = t_now_ms();
			epoll_ctl(ep, EPOLL_CTL_DEL, fds[i], NULL);
			open--;
		}
	}
	close(ep);
	for (int i = 0; i < n; i++)
		open += !closed_at[i];
	return n - open;
}

static void *oversize_main(void *arg)
{
	struct attack *a = arg;
	static int fds[N_OVERSIZE];
	static int64_t sent_at[N_OVERSIZE], closed_at[N_OVERSIZE];
	unsigned char msg[4 + 4096];

	/* 0xFFFFFFFF: 4 GiB - 1, the largest length the wire format can say,
	 * then junk a server that believed it would start buffering. */
	memset(msg, 0xFF, sizeof(msg));
	for (int i = 0; i < N_OVERSIZE; i++)
		fds[i] = client(a->srv.port, 10);
	for (int i = 0; i < N_OVERSIZE; i++) {
		sent_at[i] = t_now_ms();
		(void)send(fds[i], msg, sizeof(msg), MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	a->over_closed = wait_closed(fds, N_OVERSIZE, closed_at, t_now_ms() + 20000);
	for (int i = 0; i < N_OVERSIZE; i++) {
		if (closed_at[i] && closed_at[i] - sent_at[i] > a->over_slowest_ms)
			a->over_slowest_ms = closed_at[i] - sent_at[i];
		close(fds[i]);
	}
	return NULL;
}

/* ---- 500 slowloris clients: one byte a second ----------------------------- */

static void *slowloris_main(void *arg)
{
	struct attack *a = arg;
	static int fds[N_SLOW], sent[N_SLOW];
	static int64_t conn_at[N_SLOW], closed_at[N_SLOW];
	/* A frame announcing 100 bytes, which never come in time. */
	static const unsigned char frame[] = {0, 0, 0, 100, 's', 'l', 'o', 'w'};
	int64_t deadline, tick;
	int open = N_SLOW;

	/* The time before the connect: the server's idle clock starts at its
	 * accept, which cannot come earlier. Read after the connect returned,
	 * a client preempted meanwhile saw a close on time as early (1,946 ms
	 * for -i 2000 with busy CPUs). */
	for (int i = 0; i < N_SLOW; i++) {
		conn_at[i] = t_now_ms();
		fds[i] = client(a->srv.port, 10);
	}
	/* The idle timeout closes them at IDLE_MS..1.25 x IDLE_MS: allow 6 s
	 * more for a loaded machine, then count the survivors as failures. */
	deadline = t_now_ms() + IDLE_MS + 6000;
	tick = t_now_ms();
	while (open > 0 && t_now_ms() < deadline) {
		int64_t now = t_now_ms();

		if (now >= tick) {
			for (int i = 0; i < N_SLOW; i++) {
				if (closed_at[i] || sent[i] >= (int)sizeof(frame))
					continue;
				if (send(fds[i], &frame[sent[i]], 1, MSG_NOSIGNAL | MSG_DONTWAIT) ==
				    1)
					sent[i]++;
			}
			tick += 1000;
		}
		open =
		    N_SLOW - wait_closed(fds, N_SLOW, closed_at, tick < deadline ? tick : deadline);
	}
	a->slow_first_ms = INT64_MAX;
	for (int i = 0; i < N_SLOW; i++) {
		int64_t after = closed_at[i] - conn_at[i];

		if (closed_at[i]) {
			a->slow_closed++;
			a->slow_early += after < IDLE_MS - 50;
			a->slow_first_ms = after < a->slow_first_ms ? after : a->slow_first_ms;
			a->slow_last_ms = after > a->slow_last_ms ? after : a->slow_last_ms;
		}
		close(fds[i]);
	}
	return NULL;
}

/* ---- 500 clients resetting mid-frame (SO_LINGER 0) ------------------------ */

static void *reset_main(void *arg)
{
	struct attack *a = arg;
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	static unsigned char msg[4 + RESET_FRAME];
	int fds[RESET_WAVE];
	size_t len = encode(msg, 42, RESET_FRAME);

	/* Waves of RESET_WAVE: connect, send half a frame, let the server read it
	 * (its reader grows for the whole frame), then reset. */
	for (int wave = 0; wave < N_RESET / RESET_WAVE; wave++) {
		for (int i = 0; i < RESET_WAVE; i++) {
			fds[i] = client(a->srv.port, 10);
			if (send_all(fds[i], msg, len / 2) == 0)
				a->reset_sent++;
		}
		usleep(50000);
		for (int i = 0; i < RESET_WAVE; i++) {
			setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			close(fds[i]); /* RST, not FIN */
		}
	}
	return NULL;
}

/* ---- 50 clients half-closing after their frames -------------------------- */

static void *halfclose_main(void *arg)
{
	struct attack *a = arg;
	static unsigned char tx[N_HALF][HALF_FRAMES * (4 + 3000)];
	static size_t txlen[N_HALF];
	unsigned char rx[HALF_FRAMES * (4 + 3000)];
	int fds[N_HALF];

	/* Each sends its frames and shutdown(SHUT_WR) at once; the echo of a
	 * frame is the frame, so the reply stream must equal the sent one. */
	for (int i = 0; i < N_HALF; i++) {
		fds[i] = client(a->srv.port, 20);
		for (uint32_t f = 0; f < HALF_FRAMES; f++) {
			uint64_t x = mix(1000 + (uint32_t)i, f);

			txlen[i] += encode(tx[i] + txlen[i], x, (size_t)(x % 3001));
		}
		ck_assert_int_eq(send_all(fds[i], tx[i], txlen[i]), 0);
		ck_assert_int_eq(shutdown(fds[i], SHUT_WR), 0);
	}
	for (int i = 0; i < N_HALF; i++) {
		int rc = recv_all(fds[i], rx, txlen[i]);
		char c;

		if (rc != 0 || memcmp(rx, tx[i], txlen[i]) != 0)
			snprintf(a->half_err, sizeof(a->half_err), "client %d: %s", i,
			         rc == 1  ? "EOF before every echo"
			         : rc < 0 ? strerror(-rc)
			                  : "wrong bytes");
		else if ((rc = (int)recv(fds[i], &c, 1, 0)) != 0)
			snprintf(a->half_err, sizeof(a->half_err), "client %d: %s after the echoes",
			         i, rc > 0 ? "extra bytes" : strerror(errno));
		else
			a->half_ok++;
		close(fds[i]);
	}
	return NULL;
}

static void *sampler_main(void *arg)
{
	struct attack *a = arg;

	while (!a->stop_sampler) {
		size_t rss = proc_mem(a->srv.pid, "VmRSS");

		if (rss > a->rss_peak)
			a->rss_peak = rss;
		usleep(20000);
	}
	return NULL;
}

static void raise_nofile(rlim_t need)
{
	struct rlimit rl;

	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < need && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
	ck_assert_msg(rl.rlim_cur >= need, "RLIMIT_NOFILE %llu < %llu: raise the hard limit",
	              (unsigned long long)rl.rlim_cur, (unsigned long long)need);
}

/* What the server's connections may hold at once, from its buffer rules
 * (frame.h): a reader starts at 4 KiB and grows only for the frame it parses
 * (an oversized header is refused before it grows); a writer holds at most
 * one echo's unsent rest; a connection struct (~200 B) is kept as a spare
 * after close. Counted for the connections this test holds open at once (the
 * resets come in waves of RESET_WAVE), then doubled for the allocator's
 * overhead (per-thread arenas, fragmentation). */
static size_t rss_allowance(void)
{
	size_t good = N_GOOD * 2 * (size_t)(MAX_FRAME + 4);
	size_t over = N_OVERSIZE * (size_t)4096, slow = N_SLOW * (size_t)4096;
	size_t reset = RESET_WAVE * (size_t)(RESET_FRAME + 4);
	size_t half = N_HALF * 2 * (size_t)4096;
	size_t structs = (N_GOOD + N_OVERSIZE + N_SLOW + N_RESET + N_HALF + N_AFTER) * 256;
	size_t live = good + over + slow + reset + half + structs;

#if defined(__SANITIZE_ADDRESS__)
	/* ASan keeps freed blocks in quarantine (here: the buffers of every
	 * closed connection, all resets included) and adds 1/8 of shadow. */
	return (2 * live + N_RESET * (size_t)(RESET_FRAME + 4) + over + slow + half) / 8 * 9;
#else
	return 2 * live;
#endif
}

START_TEST(the_framed_echo_server_survives_hostile_and_broken_peers)
{
	static struct attack a;
	static struct good_arg good[N_GOOD], after[N_AFTER];
	pthread_t tg[N_GOOD], ta[N_AFTER], tover, tslow, treset, thalf, tsamp;
	uint64_t frames = 0, bytes = 0, after_frames = 0, after_held = 0;
	size_t rss_idle, rss_after, hwm, bound;
	char stats[512];
	unsigned long long accepted, closes;
	int status;
	int64_t t0;

	raise_nofile(4096);
	signal(SIGPIPE, SIG_IGN);
	server_start(&a.srv);
	usleep(100000);
	rss_idle = proc_mem(a.srv.pid, "VmRSS");
	bound = rss_idle + rss_allowance();
	t0 = t_now_ms();

	ck_assert_int_eq(pthread_create(&tsamp, NULL, sampler_main, &a), 0);
	for (int i = 0; i < N_GOOD; i++) {
		good[i] = (struct good_arg){.a = &a, .stop = &a.stop_good, .k = (uint32_t)i};
		ck_assert_int_eq(pthread_create(&tg[i], NULL, good_main, &good[i]), 0);
	}
	ck_assert_int_eq(pthread_create(&tover, NULL, oversize_main, &a), 0);
	ck_assert_int_eq(pthread_create(&tslow, NULL, slowloris_main, &a), 0);
	ck_assert_int_eq(pthread_create(&treset, NULL, reset_main, &a), 0);
	ck_assert_int_eq(pthread_create(&thalf, NULL, halfclose_main, &a), 0);
	pthread_join(tover, NULL);
	pthread_join(treset, NULL);
	pthread_join(thalf, NULL);
	pthread_join(tslow, NULL);
	/* The good clients ran through a whole idle period and more. */
	while (t_now_ms() - t0 < IDLE_MS * 3 / 2)
		usleep(10000);
	a.stop_good = 1;
	for (int i = 0; i < N_GOOD; i++) {
		pthread_join(tg[i], NULL);
		attack_check(&a, !good[i].err[0], "good client: %s", good[i].err);
		attack_check(&a, good[i].done > 0, "good client %d echoed nothing", i);
		frames += good[i].done;
		bytes += good[i].bytes;
	}
	t_report("hostile", "16 good clients echoing 0..64 KiB frames during the attack",
	         "every reply arrived, byte for byte", "%llu frames, %.1f MiB, 0 missing or wrong",
	         (unsigned long long)frames, (double)bytes / MIB);

	attack_check(&a, a.over_closed == N_OVERSIZE, "%d of %d oversize clients closed",
	             a.over_closed, N_OVERSIZE);
	t_report("hostile", "500 clients announcing a 4 GiB frame (header 0xFFFFFFFF + 4 KiB)",
	         "all closed at once (-EMSGSIZE), the reader never grew past 4 KiB",
	         "%d/%d closed, slowest after %lld ms", a.over_closed, N_OVERSIZE,
	         (long long)a.over_slowest_ms);

	attack_check(&a, a.slow_closed == N_SLOW && a.slow_early == 0,
	             "slowloris: %d of %d closed, %d before the idle timeout (first after %lld ms)",
	             a.slow_closed, N_SLOW, a.slow_early, (long long)a.slow_first_ms);
	t_report("hostile", "500 slowloris clients (1 byte/s), server -i 2000",
	         "all closed by the idle timeout", "%d/%d closed %lld..%lld ms after connecting",
	         a.slow_closed, N_SLOW, (long long)a.slow_first_ms, (long long)a.slow_last_ms);

	attack_check(&a, !a.half_err[0] && a.half_ok == N_HALF, "half-close: %d of %d ok: %s",
	             a.half_ok, N_HALF, a.half_err);
	t_report("hostile", "50 clients sending 8 frames then shutdown(SHUT_WR)",
	         "every echo, then EOF", "%d/%d clients, %d frames each", a.half_ok, N_HALF,
	         HALF_FRAMES);

	/* Memory: the peak while the attack ran, and what stays afterwards. */
	a.stop_sampler = 1;
	pthread_join(tsamp, NULL);
	hwm = proc_mem(a.srv.pid, "VmHWM");
	rss_after = proc_mem(a.srv.pid, "VmRSS");
	if (hwm > a.rss_peak)
		a.rss_peak = hwm;
	attack_check(&a, a.rss_peak <= bound, "server RSS peak %.1f MiB over the bound %.1f MiB",
	             (double)a.rss_peak / MIB, (double)bound / MIB);
	t_report(
	    "hostile", "server memory (VmRSS, VmHWM) through the whole attack, 1570 connections",
	    "under the bound: idle RSS + 2 x the buffers the connections open at once may hold",
	    "peak %.1f MiB, after %.1f MiB, idle %.1f MiB, bound %.1f MiB",
	    (double)a.rss_peak / MIB, (double)rss_after / MIB, (double)rss_idle / MIB,
	    (double)bound / MIB);

	/* Still alive, and still answering. */
	ck_assert_msg(server_alive(&a.srv), "the server died");
	/* A stalled machine: the clients wait (parked after a reply) while the
	 * server is stopped for longer than its idle timeout, then both go on.
	 * The sweep that runs first on resume must not find them idle. */
	for (int i = 0; i < N_AFTER; i++) {
		after[i] =
		    (struct good_arg){.a = &a, .stop = &a.stop_after, .k = 100 + (uint32_t)i};
		ck_assert_int_eq(pthread_create(&ta[i], NULL, good_main, &after[i]), 0);
	}
	usleep(300000);
	a.hold = 1;
	for (int64_t end = t_now_ms() + 10000; a.parked < N_AFTER && t_now_ms() < end;)
		usleep(1000);
	attack_check(&a, a.parked == N_AFTER, "%d of %d clients parked", (int)a.parked, N_AFTER);
	ck_assert_int_eq(kill(a.srv.pid, SIGSTOP), 0);
	usleep((IDLE_MS + 600) * 1000);
	ck_assert_int_eq(kill(a.srv.pid, SIGCONT), 0);
	a.hold = 0;
	usleep(IDLE_MS * 1000 / 2 + 200000); /* two sweeps or more */
	/* Each has echoed a frame since the stall (waiting for it: a busy
	 * machine may not have run a client in that time). */
	for (int i = 0; i < N_AFTER; i++)
		for (int64_t end = t_now_ms() + 10000;
		     after[i].done <= after[i].held_at && t_now_ms() < end;)
			usleep(1000);
	a.stop_after = 1;
	for (int i = 0; i < N_AFTER; i++) {
		pthread_join(ta[i], NULL);
		attack_check(&a, !after[i].err[0], "after the attack: %s", after[i].err);
		attack_check(&a, after[i].done > after[i].held_at && after[i].held_at > 0,
		             "client %d: %llu frames, %llu before the stall", i,
		             (unsigned long long)after[i].done,
		             (unsigned long long)after[i].held_at);
		after_frames += after[i].done;
		after_held += after[i].held_at;
	}
	t_report("hostile", "server stopped 2.6 s (SIGSTOP, -i 2000) while its 4 clients waited",
	         "none closed as idle on resume; every reply right",
	         "%llu frames before the stall, %llu after", (unsigned long long)after_held,
	         (unsigned long long)(after_frames - after_held));

	server_stop(&a.srv, stats, sizeof(stats), &status);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	              "the server did not exit cleanly: status 0x%x", status);
	ck_assert_msg(stats[0], "no stats line from the server");
	accepted = stat_get(stats, "accepted");
	closes = stat_get(stats, "eof") + stat_get(stats, "idle") + stat_get(stats, "error") +
	         stat_get(stats, "oversize") + stat_get(stats, "truncated") +
	         stat_get(stats, "shutdown");
	ck_assert_uint_eq(accepted, N_GOOD + N_OVERSIZE + N_SLOW + N_RESET + N_HALF + N_AFTER);
	ck_assert_uint_eq(closes, accepted); /* each connection closed exactly once */
	ck_assert_uint_eq(stat_get(stats, "oversize"), N_OVERSIZE);
	ck_assert_uint_eq(stat_get(stats, "idle"), N_SLOW);
	ck_assert_uint_eq(stat_get(stats, "error"), N_RESET);
	ck_assert_uint_eq(stat_get(stats, "truncated"), 0);
	/* Only whole frames are echoed: the good, half-closing and later ones. */
	ck_assert_uint_eq(stat_get(stats, "frames"), frames + N_HALF * HALF_FRAMES + after_frames);
	t_report("hostile", "500 clients resetting (SO_LINGER 0) after half a 16 KiB frame",
	         "all closed as peer errors", "%d/%d sent, %llu closed as errors", a.reset_sent,
	         N_RESET, stat_get(stats, "error"));
	t_report("hostile", "server after the attack, then SIGINT",
	         "answered, exited 0, counters match every connection",
	         "accepted %llu = closed %llu (eof %llu, idle %llu, error %llu, oversize %llu, "
	         "shutdown %llu), frames %llu",
	         accepted, closes, stat_get(stats, "eof"), stat_get(stats, "idle"),
	         stat_get(stats, "error"), stat_get(stats, "oversize"), stat_get(stats, "shutdown"),
	         stat_get(stats, "frames"));
}
END_TEST

/* ---- AMIO_HUP in Amy mode ------------------------------------------------ */

struct amy {
	amio_poller *p;
	amio_registrar *r;
	int fds_before;
	int fds[2]; /* client, server side */
	int64_t id;
};

static void amy_setup(struct amy *m, uint32_t events)
{
	static const char half[] = {0, 0, 0, 16, 'h', 'a', 'l', 'f'};
	amio_notification n[4];
	char buf[64];
	bool readable = false;

	m->fds_before = t_count_fds();
	m->p = t_poller(NULL);
	ck_assert_int_eq(amio_registrar_new(m->p, 0, &m->r), 0);
	t_tcp_pair(m->fds);
	m->id = amio_register(m->r, m->fds[1], events, m);
	ck_assert_int_gt(m->id, 0);
	/* Half a frame first, read to -EAGAIN: the hang-up comes on an edge
	 * of its own, after readiness the user already consumed. */
	ck_assert_int_eq(write(m->fds[0], half, sizeof(half)), (ssize_t)sizeof(half));
	while (!readable) {
		ck_assert_int_eq(t_collect(m->p, n, 1, 2000), 1);
		ck_assert_uint_eq(n[0].events & (AMIO_HUP | AMIO_ERROR), 0);
		readable = n[0].events & AMIO_READ;
	}
	while (read(m->fds[1], buf, sizeof(buf)) > 0)
		;
	ck_assert_int_eq(errno, EAGAIN);
	ck_assert_int_eq(amio_poller_wait(m->p, n, 4, 50), 0);
}

static void amy_teardown(struct amy *m)
{
	ck_assert_int_eq(amio_deregister(m->r, (uint64_t)m->id), 0);
	close(m->fds[1]);
	amio_registrar_free(m->r);
	amio_poller_free(m->p);
	ck_assert_int_eq(t_count_fds(), m->fds_before);
}

/* Waits for the one notification the peer's hang-up causes. */
static uint32_t amy_hangup_events(struct amy *m, int32_t *error)
{
	amio_notification n[4];

	ck_assert_int_eq(t_collect(m->p, n, 1, 2000), 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)m->id);
	ck_assert_ptr_eq(n[0].data, m);
	*error = n[0].error;
	return n[0].events;
}

START_TEST(a_peer_that_half_closes_is_reported_with_hup_and_read)
{
	struct amy m;
	uint32_t ev;
	int32_t error;
	char c;

	amy_setup(&m, AMIO_READ);
	ck_assert_int_eq(shutdown(m.fds[0], SHUT_WR), 0);
	ev = amy_hangup_events(&m, &error);
	ck_assert_uint_eq(ev & (AMIO_READ | AMIO_HUP), AMIO_READ | AMIO_HUP);
	ck_assert_uint_eq(ev & AMIO_ERROR, 0);
	ck_assert_int_eq(read(m.fds[1], &c, 1), 0);
	/* Half-closed, not closed: the other direction still works. */
	t_write_str(m.fds[1], "echo");
	close(m.fds[0]);
	t_report("hup", "peer sends half a frame, then shutdown(SHUT_WR) (Amy mode, READ)",
	         "AMIO_HUP + AMIO_READ on a new edge, then read() = 0",
	         "events 0x%x (READ 0x%x, HUP 0x%x)", ev, AMIO_READ, AMIO_HUP);
	amy_teardown(&m);
}
END_TEST

static void reset_case(uint32_t events, const char *tried)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	struct amy m;
	uint32_t ev;
	int32_t error;
	char c;

	amy_setup(&m, events);
	ck_assert_int_eq(setsockopt(m.fds[0], SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	close(m.fds[0]); /* RST, not FIN */
	ev = amy_hangup_events(&m, &error);
	ck_assert_msg(ev & AMIO_HUP, "events 0x%x without AMIO_HUP", ev);
	ck_assert_msg(ev & AMIO_ERROR, "events 0x%x without AMIO_ERROR", ev);
	ck_assert_int_eq(read(m.fds[1], &c, 1), -1);
	ck_assert_int_eq(errno, ECONNRESET);
	t_report("hup", tried, "AMIO_HUP + AMIO_ERROR, then read() = -ECONNRESET",
	         "events 0x%x, error %d", ev, (int)error);
	amy_teardown(&m);
}

START_TEST(a_peer_that_resets_is_reported_with_hup_and_error)
{
	reset_case(AMIO_READ, "peer resets (SO_LINGER 0) mid-frame (Amy mode, READ)");
}
END_TEST

START_TEST(a_reset_is_reported_to_a_registration_that_also_waits_for_write)
{
	/* frame_echo_server's registration while its writer holds bytes. */
	reset_case(AMIO_READ | AMIO_WRITE, "peer resets mid-frame (Amy mode, READ + WRITE)");
}
END_TEST

static Suite *hostile_suite(void)
{
	Suite *s = suite_create("hostile_peers");
	TCase *tc = tcase_create("framed echo server");

	tcase_set_timeout(tc, 240);
	tcase_add_test(tc, the_framed_echo_server_survives_hostile_and_broken_peers);
	suite_add_tcase(s, tc);

	tc = tcase_create("hang-up");
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, a_peer_that_half_closes_is_reported_with_hup_and_read);
	tcase_add_test(tc, a_peer_that_resets_is_reported_with_hup_and_error);
	tcase_add_test(tc, a_reset_is_reported_to_a_registration_that_also_waits_for_write);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	t_require_io_uring();
	return t_run(hostile_suite());
}
