/*
 * srv_amio_amy: Amy's own design on amio. The poll thread calls
 * amio_poller_wait and forwards every notification to the one worker through
 * an amio channel (amio's cross-thread queue), one message per notification
 * (epoll-amy moves one 8-byte tag per event; a message per batch of 64 would
 * copy 1.5 KiB per request through a 1.5 MiB ring, cold in the cache: +1 us
 * per request measured); the worker owns the sockets and registers them
 * through its own Amy-mode registrar, and sleeps in the inbox of a second
 * registrar that only carries the channel, without a timeout (epoll-amy's
 * worker blocks without one too; a timed futex wait costs about 0.6 us more
 * on this VM): main wakes it for the stop with an empty message.
 */
#define _GNU_SOURCE
#include "srv_amio_common.h"

#define BATCH       64
#define CHANNEL_CAP 65536 /* notifications: epoll-amy's queue */

static amio_poller *poller;
static amio_registrar *sockets_r, *inbox_r;
static amio_channel *ch;
static uint16_t port;

static void *worker(void *arg)
{
	struct apool pool = {0};
	amio_notification n[8], m;
	int lfd = srv_listen("srv_amio_amy", port), rc;
	int64_t lid;

	(void)arg;
	if ((lid = amio_register(sockets_r, lfd, AMIO_READ, NULL)) < 0)
		srv_die("srv_amio_amy", "amio_register", (int)lid);
	while (!atomic_load(&srv_stop)) {
		rc = amio_registrar_wait(inbox_r, n, 8, -1);
		if (rc < 0)
			srv_die("srv_amio_amy", "amio_registrar_wait", rc);
		if (rc == 0)
			continue;
		/* Every notification here is the channel's: drain it to -EAGAIN. */
		while (amio_channel_try_recv(ch, &m) == 0) {
			if (!m.id)
				continue; /* main's stop message */
			if (!m.data)
				apool_accept(&pool, sockets_r, lfd);
			else
				apool_event(&pool, sockets_r, &m);
		}
	}
	amio_deregister(sockets_r, (uint64_t)lid);
	close(lfd);
	return NULL;
}

static void *poll_main(void *arg)
{
	amio_notification b[BATCH];
	int rc, err;

	(void)arg;
	srv_poll_thread_policy();
	while (!atomic_load(&srv_stop)) {
		rc = amio_poller_wait(poller, b, BATCH, -1);
		if (rc < 0)
			srv_die("srv_amio_amy", "amio_poller_wait", rc);
		for (int i = 0; i < rc; i++) {
			/* Full: the worker is behind. Time out only to see a
			 * stop (the worker stops draining before the poller). */
			while ((err = amio_channel_send_wait(ch, &b[i], 100)) == -ETIMEDOUT &&
			       !atomic_load(&srv_stop))
				;
			if (err < 0 && err != -ETIMEDOUT)
				srv_die("srv_amio_amy", "amio_channel_send_wait", err);
		}
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
	    (rc = amio_channel_new(inbox_r, CHANNEL_CAP, sizeof(amio_notification), NULL, &ch)) < 0)
		srv_die("srv_amio_amy", "setup", rc);
	/* The registrars and the channel now belong to the worker thread. */
	pthread_create(&pt, NULL, poll_main, NULL);
	pthread_create(&wt, NULL, worker, NULL);
	sigwait(&set, &sig);
	atomic_store(&srv_stop, 1);
	(void)amio_channel_send(ch,
	                        &(amio_notification){0}); /* wake the worker; full: it is awake */
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
