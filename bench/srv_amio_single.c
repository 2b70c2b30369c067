/*
 * srv_amio_single: amio from one thread. The thread owns an Amy-mode
 * registrar, registers its sockets through it and calls amio_poller_wait
 * itself. main only waits for SIGINT/SIGTERM and stops the poller.
 */
#define _GNU_SOURCE
#include "srv_amio_common.h"

static amio_poller *poller;
static uint16_t port;

static void *loop(void *arg)
{
	struct apool pool = {0};
	amio_notification n[64];
	amio_registrar *r;
	int lfd = srv_listen("srv_amio_single", port), rc;
	int64_t lid;

	(void)arg;
	if ((rc = amio_registrar_new(poller, 0, &r)) < 0)
		srv_die("srv_amio_single", "amio_registrar_new", rc);
	if ((lid = amio_register(r, lfd, AMIO_READ, NULL)) < 0)
		srv_die("srv_amio_single", "amio_register", (int)lid);
	while (!atomic_load(&srv_stop)) {
		rc = amio_poller_wait(poller, n, 64, -1);
		if (rc < 0)
			srv_die("srv_amio_single", "amio_poller_wait", rc);
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

int main(int argc, char **argv)
{
	pthread_t t;
	sigset_t set;
	int sig, rc;

	port = srv_init(argc, argv);
	asig_block(&set);
	if ((rc = apoller_new(&poller, "srv_amio_single")) < 0)
		srv_die("srv_amio_single", "amio_poller_new", rc);
	pthread_create(&t, NULL, loop, NULL);
	sigwait(&set, &sig);
	atomic_store(&srv_stop, 1);
	amio_poller_stop(poller);
	pthread_join(t, NULL);
	apoller_report(poller, "srv_amio_single");
	amio_poller_free(poller);
	return 0;
}
