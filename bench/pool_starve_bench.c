/*
 * Many connections on a tiny pool (issue 18 item 14): how many times a recv
 * starves per chunk delivered, and the CPU it costs. N connections, each
 * with CHUNKS buffer-sized chunks waiting, one Amy-mode consumer on a pool of
 * BUFS buffers that puts each buffer back at once. A returned buffer should
 * wake one starved recv, not all of them: recv_starved / chunk near 1.
 * lag > 0: the consumer keeps the last lag buffers (puts each lag chunks
 * late), so the pool runs empty under the recvs on epoll too.
 * usage: pool_starve_bench [conns=400] [bufs=2] [chunks=6] [size=64] [lag=0]
 */
#define _GNU_SOURCE
#define BENCH_NAME "pool_starve_bench"
#include <netinet/in.h>
#include <sys/socket.h>

#include "amio.h"
#include "bench_util.h"

static void tcp_pair(int lfd, const struct sockaddr_in *a, int fds[2])
{
	fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fds[0] < 0 || connect(fds[0], (const struct sockaddr *)a, sizeof(*a)) < 0)
		die("connect", errno);
	fds[1] = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fds[1] < 0)
		die("accept4", errno);
}

static int listener(struct sockaddr_in *a)
{
	socklen_t len = sizeof(*a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	*a = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (fd < 0 || bind(fd, (struct sockaddr *)a, sizeof(*a)) < 0 || listen(fd, 4096) < 0 ||
	    getsockname(fd, (struct sockaddr *)a, &len) < 0)
		die("listen", errno);
	return fd;
}

int main(int argc, char **argv)
{
	int conns = argc > 1 ? atoi(argv[1]) : 400, bufs = argc > 2 ? atoi(argv[2]) : 2;
	int chunks = argc > 3 ? atoi(argv[3]) : 6, size = argc > 4 ? atoi(argv[4]) : 64;
	int lag = argc > 5 ? atoi(argv[5]) : 0, nkept = 0;
	void *kept[64];
	int(*fds)[2] = calloc((size_t)conns, sizeof(*fds)), rc;
	char *data = calloc(1, (size_t)(chunks * size));
	struct amio_poller_stats st;
	struct sockaddr_in a;
	amio_registrar *r;
	amio_poller *p;
	amio_pool *pool;
	int64_t got = 0, want = (int64_t)conns * chunks * size, t0, c0;
	int lfd = listener(&a);

	if (lag < 0 || lag >= bufs || lag > 63)
		die("lag: 0 .. bufs - 1", EINVAL);
	if ((rc = amio_poller_new(&p, NULL)) < 0 || (rc = amio_registrar_new(p, 0, &r)) < 0 ||
	    (rc = amio_pool_new(r, (uint32_t)bufs, (uint32_t)size, &pool)) < 0)
		die("setup", rc);
	for (int i = 0; i < conns; i++) {
		tcp_pair(lfd, &a, fds[i]);
		if (write(fds[i][0], data, (size_t)(chunks * size)) != chunks * size)
			die("write", errno);
		if ((rc = (int)amio_recv(r, fds[i][1], pool, NULL)) < 0)
			die("amio_recv", rc);
	}
	t0 = now_ns();
	c0 = cpu_ns();
	while (got < want) {
		amio_notification n[16];

		if ((rc = amio_poller_wait(p, n, 16, 1000)) < 0)
			die("amio_poller_wait", rc);
		if (rc == 0)
			die("stalled", 0);
		for (int i = 0; i < rc; i++) {
			if (n[i].events != AMIO_RECV)
				die("unexpected notification", n[i].res < 0 ? n[i].res : 0);
			got += n[i].res;
			kept[nkept++] = n[i].buf;
			while (nkept > (got == want ? 0 : lag)) {
				int err = amio_pool_put(pool, kept[0]);

				if (err < 0)
					die("amio_pool_put", err);
				memmove(kept, kept + 1, (size_t)--nkept * sizeof(*kept));
			}
		}
	}
	amio_poller_stats(p, &st);
	printf(
	    "backend %s conns %d bufs %d lag %d chunks %lld recv_starved %llu starved/chunk %.2f "
	    "cpu_us/chunk %.2f wall_ms %.1f\n",
	    amio_poller_backend(p), conns, bufs, lag, (long long)(want / size),
	    (unsigned long long)st.recv_starved, (double)st.recv_starved / (double)(want / size),
	    (double)(cpu_ns() - c0) / 1e3 / (double)(want / size), (double)(now_ns() - t0) / 1e6);
	return 0;
}
