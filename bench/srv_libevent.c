/*
 * srv_libevent: libevent 2.1, one thread, one persistent edge-triggered
 * EV_READ | EV_WRITE event per connection, the same echo step as the others.
 */
#define _GNU_SOURCE
#include "srv_common.h"
#include <event2/event.h>

struct conn {
	struct srv_echo e;
	struct event *ev;
};

static void on_conn(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	if (srv_echo_step(&c->e) < 0) {
		event_free(c->ev);
		close(c->e.fd);
		free(c);
	}
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
	struct event_base *base = arg;
	int fd;

	(void)what;
	while ((fd = srv_accept(lfd)) >= 0) {
		struct conn *c = calloc(1, sizeof(*c));

		if (!c) {
			close(fd);
			continue;
		}
		c->e.fd = fd;
		c->ev = event_new(base, fd, EV_READ | EV_WRITE | EV_PERSIST | EV_ET, on_conn, c);
		if (!c->ev || event_add(c->ev, NULL) < 0) {
			if (c->ev)
				event_free(c->ev);
			close(fd);
			free(c);
		}
	}
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	event_base_loopbreak(arg);
}

int main(int argc, char **argv)
{
	uint16_t port = srv_init(argc, argv);
	int lfd = srv_listen("srv_libevent", port);
	struct event_base *base = event_base_new();
	struct event *lev, *s1, *s2;

	if (!base)
		srv_die("srv_libevent", "event_base_new", ENOMEM);
	lev = event_new(base, lfd, EV_READ | EV_PERSIST | EV_ET, on_accept, base);
	s1 = evsignal_new(base, SIGINT, on_signal, base);
	s2 = evsignal_new(base, SIGTERM, on_signal, base);
	if (!lev || !s1 || !s2 || event_add(lev, NULL) < 0 || event_add(s1, NULL) < 0 ||
	    event_add(s2, NULL) < 0)
		srv_die("srv_libevent", "event_add", ENOMEM);
	event_base_dispatch(base);
	event_free(s2);
	event_free(s1);
	event_free(lev);
	event_base_free(base);
	close(lfd);
	return 0;
}
