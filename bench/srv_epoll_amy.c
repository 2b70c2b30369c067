/*
 * srv_epoll_amy: Amy's design in plain C on epoll. The poll thread only runs
 * epoll_wait and forwards the events to the one worker through a
 * mutex-protected queue woken by an eventfd (written only when the worker
 * sleeps); the worker owns the sockets and calls epoll_ctl itself.
 * data.u64 = fd | generation << 32: events of a closed fd are dropped.
 */
#define _GNU_SOURCE
#include "srv_common.h"
#include <pthread.h>
#include <stdbool.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#define MAX_FD    65536
#define QUEUE_CAP 65536 /* a power of two */
#define STOP_TAG  UINT64_MAX

struct conn {
	struct srv_echo e;
	uint32_t gen;
	bool live;
};

static struct conn *conns[MAX_FD];
static int ep, wake_fd, stop_fd, lfd;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t room = PTHREAD_COND_INITIALIZER;
static uint64_t queue[QUEUE_CAP];
static size_t q_head, q_len;
static atomic_int worker_sleeping;

static uint64_t tag(int fd)
{
	return (uint64_t)(uint32_t)fd | (uint64_t)conns[fd]->gen << 32;
}

static void *poll_main(void *arg)
{
	struct epoll_event evs[64];

	(void)arg;
	srv_poll_thread_policy();
	while (!atomic_load(&srv_stop)) {
		int n = epoll_wait(ep, evs, 64, -1);

		if (n < 0 && errno != EINTR)
			srv_die("srv_epoll_amy", "epoll_wait", errno);
		if (n <= 0)
			continue;
		pthread_mutex_lock(&lock);
		while (q_len + (size_t)n > QUEUE_CAP)
			pthread_cond_wait(&room, &lock);
		for (int i = 0; i < n; i++)
			queue[(q_head + q_len++) % QUEUE_CAP] = evs[i].data.u64;
		pthread_mutex_unlock(&lock);
		if (atomic_load(&worker_sleeping)) {
			uint64_t one = 1;

			if (write(wake_fd, &one, sizeof(one)) < 0)
				srv_die("srv_epoll_amy", "eventfd write", errno);
		}
	}
	return NULL;
}

static void conn_close(int fd)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
	close(fd);
	conns[fd]->live = false;
	conns[fd]->gen++;
}

static void accept_all(void)
{
	int fd;

	while ((fd = srv_accept(lfd)) >= 0) {
		struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP};

		if (fd >= MAX_FD || (!conns[fd] && !(conns[fd] = calloc(1, sizeof(struct conn))))) {
			close(fd);
			continue;
		}
		conns[fd]->e.fd = fd;
		conns[fd]->e.off = conns[fd]->e.len = 0;
		conns[fd]->live = true;
		ev.data.u64 = tag(fd);
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
			conn_close(fd);
	}
}

static void on_event(uint64_t t)
{
	int fd = (int)(uint32_t)t;
	struct conn *c;

	if (t == STOP_TAG)
		return;
	if (fd == lfd) {
		accept_all();
		return;
	}
	c = conns[fd];
	if (c && c->live && (uint32_t)(t >> 32) == c->gen && srv_echo_step(&c->e) < 0)
		conn_close(fd);
}

static void *worker(void *arg)
{
	static uint64_t batch[QUEUE_CAP];
	struct epoll_event ev = {.events = EPOLLIN | EPOLLET};

	(void)arg;
	ev.data.u64 = (uint64_t)(uint32_t)lfd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
		srv_die("srv_epoll_amy", "epoll_ctl", errno);
	while (!atomic_load(&srv_stop)) {
		size_t n = 0;

		pthread_mutex_lock(&lock);
		while (q_len) {
			batch[n++] = queue[q_head];
			q_head = (q_head + 1) % QUEUE_CAP;
			q_len--;
		}
		pthread_cond_signal(&room);
		pthread_mutex_unlock(&lock);
		for (size_t i = 0; i < n; i++)
			on_event(batch[i]);
		if (n)
			continue;
		/* Publish that we sleep, re-check, then block on the eventfd. */
		atomic_store(&worker_sleeping, 1);
		pthread_mutex_lock(&lock);
		n = q_len;
		pthread_mutex_unlock(&lock);
		if (!n) {
			uint64_t v;

			if (read(wake_fd, &v, sizeof(v)) < 0 && errno != EINTR)
				srv_die("srv_epoll_amy", "eventfd read", errno);
		}
		atomic_store(&worker_sleeping, 0);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	uint16_t port = srv_init(argc, argv);
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = STOP_TAG};
	pthread_t pt, wt;
	uint64_t one = 1;
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	lfd = srv_listen("srv_epoll_amy", port);
	ep = epoll_create1(EPOLL_CLOEXEC);
	wake_fd = eventfd(0, EFD_CLOEXEC);
	stop_fd = eventfd(0, EFD_CLOEXEC);
	if (ep < 0 || wake_fd < 0 || stop_fd < 0 || lfd >= MAX_FD ||
	    epoll_ctl(ep, EPOLL_CTL_ADD, stop_fd, &ev) < 0)
		srv_die("srv_epoll_amy", "setup", errno);
	conns[lfd] = calloc(1, sizeof(struct conn));
	pthread_create(&pt, NULL, poll_main, NULL);
	pthread_create(&wt, NULL, worker, NULL);
	sigwait(&set, &sig);
	atomic_store(&srv_stop, 1);
	if (write(stop_fd, &one, sizeof(one)) < 0 || write(wake_fd, &one, sizeof(one)) < 0)
		srv_die("srv_epoll_amy", "stop", errno);
	pthread_join(pt, NULL);
	pthread_join(wt, NULL);
	close(stop_fd);
	close(wake_fd);
	close(ep);
	close(lfd);
	return 0;
}
