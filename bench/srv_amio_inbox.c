/*
 * srv_amio_inbox: amio inbox mode. The poll thread runs amio_poller_run; one
 * worker owns an AMIO_INBOX registrar and every socket, and receives their
 * notifications with amio_registrar_wait.
 */
#define _GNU_SOURCE
#include "srv_amio_common.h"

static amio_poller *poller;
static uint16_t port;

static void *worker(void *arg)
{
	struct apool pool = {0};
	amio_notification n[64];
	amio_registrar *r;
	int lfd = srv_listen("srv_amio_inbox", port), rc;
	int64_t lid;

	(void)arg;
	if ((rc = amio_registrar_new(poller, AMIO_INBOX, &r)) < 0)
		srv_die("srv_amio_inbox", "amio_registrar_new", rc);
	if ((lid = amio_register(r, lfd, AMIO_READ, NULL)) < 0)
		srv_die("srv_amio_inbox", "amio_register", (int)lid);
	while (!atomic_load(&srv_stop)) {
		rc = amio_registrar_wait(r, n, 64, 100);
		if (rc < 0)
			srv_die("srv_amio_inbox", "amio_registrar_wait", rc);
		for (int i = 0; i < rc; i++) {
			if (!n[i].data)
				apool_accept(&pool, r, lfd);
			else
				apool_event(&pool, r, &n[i]);
		}
	}
	amio_deregister(r, (uint64_t)lid);
	close(lfd);
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
	pthread_join(wt, NULL);
	amio_poller_stop(poller);
	pthread_join(pt, NULL);
	apoller_report(poller, "srv_amio_inbox");
	amio_poller_free(poller);
	return 0;
}
