/*
 * Shared by the bench echo servers: option parsing, the listening socket,
 * signal handling and the non-blocking echo step. Every server echoes with
 * the same 16 KiB buffer, TCP_NODELAY and partial-write handling, so the
 * event loop is the only difference between them.
 */
#ifndef BENCH_SRV_COMMON_H
#define BENCH_SRV_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SRV_BUF 16384

/* One connection's echo state: bytes [off, len) of buf still to write back. */
struct srv_echo {
	int fd;
	size_t off, len;
	char buf[SRV_BUF];
};

static atomic_int srv_stop; /* set on SIGINT/SIGTERM */

static inline void srv_on_signal(int sig)
{
	(void)sig;
	atomic_store(&srv_stop, 1);
}

/* The two-thread servers call this at the top of their poll thread. With
 * BENCH_POLL_SCHED_BATCH=1 the poll thread runs SCHED_BATCH: its wakeups no
 * longer preempt the worker sharing its CPU (an experiment, off in the
 * results tables: same for amio-amy, amio-inbox and epoll-amy). */
static inline void srv_poll_thread_policy(void)
{
	struct sched_param sp = {0};
	const char *v = getenv("BENCH_POLL_SCHED_BATCH");

	if (v && *v == '1' && pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp) != 0)
		fprintf(stderr, "SCHED_BATCH refused\n");
}

static inline void srv_die(const char *name, const char *what, int err)
{
	fprintf(stderr, "%s: %s: %s\n", name, what, strerror(err < 0 ? -err : err));
	exit(1);
}

/* Parses -p; installs SIGINT/SIGTERM handlers (no SA_RESTART: waits return
 * EINTR) and ignores SIGPIPE. Returns the port. */
static inline uint16_t srv_init(int argc, char **argv)
{
	struct sigaction sa;
	uint16_t port = 9000;
	int opt;

	while ((opt = getopt(argc, argv, "p:")) != -1) {
		if (opt != 'p') {
			fprintf(stderr, "usage: %s [-p port]\n", argv[0]);
			exit(2);
		}
		port = (uint16_t)atoi(optarg);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = srv_on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	return port;
}

/* A non-blocking listening socket on 127.0.0.1:port. */
static inline int srv_listen(const char *name, uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
	                        .sin_port = htons(port),
	                        .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		srv_die(name, "socket", errno);
	/* An io_uring server that just exited releases its files from a kernel
	 * worker, a little later: retry for up to 2 s. */
	for (int tries = 0; bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0; tries++) {
		if (errno != EADDRINUSE || tries == 200)
			srv_die(name, "bind", errno);
		usleep(10000);
	}
	if (listen(fd, 4096) < 0)
		srv_die(name, "listen", errno);
	return fd;
}

/* accept4 a non-blocking connection with TCP_NODELAY; -1 when none is left. */
static inline int srv_accept(int lfd)
{
	int one = 1, fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Write back what is buffered; -1 when the connection is dead. */
static inline int srv_flush(struct srv_echo *e)
{
	while (e->off < e->len) {
		ssize_t n = send(e->fd, e->buf + e->off, e->len - e->off, MSG_NOSIGNAL);

		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		e->off += (size_t)n;
	}
	e->off = e->len = 0;
	return 0;
}

/* Edge-triggered echo: read until EAGAIN, or until the buffer waits for the
 * peer (the next write readiness resumes both). Returns -1 on EOF or error,
 * 1 when blocked on a partial write, 0 when drained. */
static inline int srv_echo_step(struct srv_echo *e)
{
	for (;;) {
		ssize_t n;

		if (srv_flush(e) < 0)
			return -1;
		if (e->len)
			return 1;
		n = recv(e->fd, e->buf, sizeof(e->buf), 0);
		if (n == 0)
			return -1;
		if (n < 0)
			return errno == EAGAIN ? 0 : -1;
		e->len = (size_t)n;
	}
}

#endif /* BENCH_SRV_COMMON_H */
