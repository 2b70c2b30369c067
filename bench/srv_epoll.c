/*
 * srv_epoll: the baseline. One thread, raw edge-triggered epoll, each
 * connection registered once for EPOLLIN | EPOLLOUT.
 */
#define _GNU_SOURCE
#include "srv_common.h"
#include <sys/epoll.h>

int main(int argc, char **argv)
{
	uint16_t port = srv_init(argc, argv);
	int lfd = srv_listen("srv_epoll", port), ep = epoll_create1(EPOLL_CLOEXEC), fd;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
	struct epoll_event evs[256];

	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
		srv_die("srv_epoll", "epoll", errno);
	while (!atomic_load(&srv_stop)) {
		int n = epoll_wait(ep, evs, 256, -1);

		if (n < 0 && errno != EINTR)
			srv_die("srv_epoll", "epoll_wait", errno);
		for (int i = 0; i < n; i++) {
			struct srv_echo *e = evs[i].data.ptr;

			if (!e) {
				while ((fd = srv_accept(lfd)) >= 0) {
					struct srv_echo *c = malloc(sizeof(*c));

					if (!c) {
						close(fd);
						continue;
					}
					c->fd = fd;
					c->off = c->len = 0;
					ev.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP;
					ev.data.ptr = c;
					if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
						close(fd);
						free(c);
					}
				}
			} else if (srv_echo_step(e) < 0) {
				/* close() removes it from epoll: no later event for e. */
				close(e->fd);
				free(e);
			}
		}
	}
	close(ep);
	close(lfd);
	return 0;
}
