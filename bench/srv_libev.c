/*
 * srv_libev: libev, one thread (default loop, epoll backend). libev watchers
 * are level-triggered: a read watcher per connection, swapped for a write
 * watcher while a partial write waits. Same echo step as the others.
 */
#define _GNU_SOURCE
#include "srv_common.h"
#include <ev.h>

struct conn {
	struct srv_echo e;
	ev_io rd, wr;
};

static void conn_step(struct ev_loop *loop, struct conn *c)
{
	int rc = srv_echo_step(&c->e);

	if (rc < 0) {
		ev_io_stop(loop, &c->rd);
		ev_io_stop(loop, &c->wr);
		close(c->e.fd);
		free(c);
	} else if (rc == 1) { /* partial write: wait for room, not for data */
		ev_io_stop(loop, &c->rd);
		ev_io_start(loop, &c->wr);
	} else {
		ev_io_stop(loop, &c->wr);
		ev_io_start(loop, &c->rd);
	}
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)revents;
	conn_step(loop, w->data);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	int fd;

	(void)revents;
	while ((fd = srv_accept(w->fd)) >= 0) {
		struct conn *c = calloc(1, sizeof(*c));

		if (!c) {
			close(fd);
			continue;
		}
		c->e.fd = fd;
		ev_io_init(&c->rd, on_read, fd, EV_READ);
		ev_io_init(&c->wr, on_read, fd, EV_WRITE);
		c->rd.data = c->wr.data = c;
		ev_io_start(loop, &c->rd);
	}
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ALL);
}

int main(int argc, char **argv)
{
	uint16_t port = srv_init(argc, argv);
	int lfd = srv_listen("srv_libev", port);
	struct ev_loop *loop = ev_default_loop(EVBACKEND_EPOLL);
	ev_io lw;
	ev_signal s1, s2;

	if (!loop)
		srv_die("srv_libev", "ev_default_loop", ENOSYS);
	ev_io_init(&lw, on_accept, lfd, EV_READ);
	ev_io_start(loop, &lw);
	ev_signal_init(&s1, on_signal, SIGINT);
	ev_signal_init(&s2, on_signal, SIGTERM);
	ev_signal_start(loop, &s1);
	ev_signal_start(loop, &s2);
	ev_run(loop, 0);
	ev_io_stop(loop, &lw);
	close(lfd);
	return 0;
}
