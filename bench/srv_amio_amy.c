/*
 * srv_amio_amy: Amy's own design on amio. The poll thread calls
 * amio_poller_wait and forwards every notification to the one worker through
 * an amio channel (amio's cross-thread queue), one message per batch, as
 * epoll-amy moves a batch per lock; the worker owns the sockets
 * and registers them through its own Amy-mode registrar, and sleeps in the
 * inbox of a second registrar that only carries the channel.
 */
#define _GNU_SOURCE
#include "srv_amio_common.h"

#define BATCH       64
#define CHANNEL_CAP 1024 /* batches: up to 65,536 notifications, epoll-amy's queue */

struct batch {
	uint32_t n;
	amio_notification n_[BATCH];
};

static amio_poller *poller;
static amio_registrar *sockets_r, *inbox_r;
static amio_channel *ch;
static uint16_t port;

static void *worker(void *arg)
{
	struct apool pool = {0};
	amio_notification n[8];
	struct batch b;
	int lfd = srv_listen("srv_amio_amy", port), rc;
	int64_t lid;

	(void)arg;
	if ((lid = amio_register(sockets_r, lfd, AMIO_READ, NULL)) < 0)
		srv_die("srv_amio_amy", "amio_register", (int)lid);
	while (!atomic_load(&srv_stop)) {
		rc = amio_registrar_wait(inbox_r, n, 8, 100);
		if (rc < 0)
			srv_die("srv_amio_amy", "amio_registrar_wait", rc);
		if (rc == 0)
			continue;
		/* Every notification here is the channel's: drain it to -EAGAIN. */
		while (amio_channel_try_recv(ch, &b) == 0)
			for (uint32_t i = 0; i < b.n; i++) {
				if (!b.n_[i].data)
					apool_accept(&pool, sockets_r, lfd);
				else
					apool_event(&pool, sockets_r, &b.n_[i]);
			}
	}
	amio_deregister(sockets_r, (uint64_t)lid);
	close(lfd);
	return NULL;
}

static void *poll_main(void *arg)
{
	struct batch b;
	int rc, err;

	(void)arg;
	srv_poll_thread_policy();
	while (!atomic_load(&srv_stop)) {
		rc = amio_poller_wait(poller, b.n_, BATCH, -1);
		if (rc < 0)
			srv_die("srv_amio_amy", "amio_poller_wait", rc);
		if (rc == 0)
			continue;
		b.n = (uint32_t)rc;
		/* Full: the worker is behind. Time out only to see a stop
		 * (the worker stops draining before the poller stops). */
		while ((err = amio_channel_send_wait(ch, &b, 100)) == -ETIMEDOUT &&
		       !atomic_load(&srv_stop))
			;
		if (err < 0 && err != -ETIMEDOUT)
			srv_die("srv_amio_amy", "amio_channel_send_wait", err);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t pt, wt;
	sigset_t set;
	int sig, rc;

	port = srv_init(argc, argv);
	asig_block(&set);
	if ((rc = apoller_new(&poller, "srv_amio_amy")) < 0 ||
	    (rc = amio_registrar_new(poller, 0, &sockets_r)) < 0 ||
	    (rc = amio_registrar_new(poller, AMIO_INBOX, &inbox_r)) < 0 ||
	    (rc = amio_channel_new(inbox_r, CHANNEL_CAP, sizeof(struct batch), NULL, &ch)) < 0)
		srv_die("srv_amio_amy", "setup", rc);
	/* The registrars and the channel now belong to the worker thread. */
	pthread_create(&pt, NULL, poll_main, NULL);
	pthread_create(&wt, NULL, worker, NULL);
	sigwait(&set, &sig);
	atomic_store(&srv_stop, 1);
	pthread_join(wt, NULL);
	amio_poller_stop(poller);
	pthread_join(pt, NULL);
	amio_channel_free(ch);
	amio_registrar_free(inbox_r);
	amio_registrar_free(sockets_r);
	apoller_report(poller, "srv_amio_amy");
	amio_poller_free(poller);
	return 0;
}
