/*
 * srv_amio_inbox: amio inbox mode. The poll thread runs amio_poller_run; one
 * worker owns an AMIO_INBOX registrar and every socket, and receives their
 * notifications with amio_registrar_wait, without a timeout (a timed futex
 * wait costs about 0.6 us more per sleep on this VM; epoll-amy's worker
 * blocks without one): main wakes it for the stop through a channel.
 */
#define _GNU_SOURCE
#include "srv_amio_common.h"

static amio_poller *poller;
static amio_channel *_Atomic stop_ch; /* the worker's; main sends one byte to stop it */
static uint16_t port;

static void *worker(void *arg)
{
	struct apool pool = {0};
	amio_notification n[64];
	amio_registrar *r;
	amio_channel *ch;
	int lfd = srv_listen("srv_amio_inbox", port), rc;
	int64_t lid;

	(void)arg;
	if ((rc = amio_registrar_new(poller, AMIO_INBOX, &r)) < 0 ||
	    (rc = amio_channel_new(r, 1, 1, &stop_ch, &ch)) < 0)
		srv_die("srv_amio_inbox", "setup", rc);
	atomic_store(&stop_ch, ch);
	if ((lid = amio_register(r, lfd, AMIO_READ, NULL)) < 0)
		srv_die("srv_amio_inbox", "amio_register", (int)lid);
	while (!atomic_load(&srv_stop)) {
		rc = amio_registrar_wait(r, n, 64, -1);
		if (rc < 0)
			srv_die("srv_amio_inbox", "amio_registrar_wait", rc);
		for (int i = 0; i < rc; i++) {
			if (n[i].data == &stop_ch)
				continue; /* the stop: srv_stop is set */
			if (!n[i].data)
				apool_accept(&pool, r, lfd);
			else
				apool_event(&pool, r, &n[i]);
		}
	}
	amio_deregister(r, (uint64_t)lid);
	close(lfd);
	amio_channel_free(ch);
	amio_registrar_free(r);
	return NULL;
}

static void *poll_main(void *arg)
{
	amio_notification n[16];
	int rc;

	(void)arg;
	srv_poll_thread_policy();
	while ((rc = amio_poller_run(poller)) == 1)
		amio_poller_wait(poller, n, 16, 0); /* no Amy-mode ids: drain anyway */
	if (rc < 0)
		srv_die("srv_amio_inbox", "amio_poller_run", rc);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t pt, wt;
	sigset_t set;
	int sig, rc;

	port = srv_init(argc, argv);
	asig_block(&set);
	if ((rc = apoller_new(&poller, "srv_amio_inbox")) < 0)
		srv_die("srv_amio_inbox", "amio_poller_new", rc);
	pthread_create(&pt, NULL, poll_main, NULL);
	pthread_create(&wt, NULL, worker, NULL);
	sigwait(&set, &sig);
	atomic_store(&srv_stop, 1);
	/* Wake the worker. Not made yet: it sees srv_stop before it waits;
	 * full: it is awake; freed already: -EPIPE, harmless. */
	if (atomic_load(&stop_ch))
		(void)amio_channel_send(atomic_load(&stop_ch), "x");
	pthread_join(wt, NULL);
	amio_poller_stop(poller);
	pthread_join(pt, NULL);
	apoller_report(poller, "srv_amio_inbox");
	amio_poller_free(poller);
	return 0;
}
