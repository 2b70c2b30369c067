/*
 * srv_amio_completion_inbox: amio's completion I/O in inbox mode. The poll
 * thread runs amio_poller_run and makes every socket call; one worker
 * ("amio-worker", so bench/run.sh can count its syscalls alone) owns an
 * AMIO_INBOX registrar, starts the accept, the recvs and the sends through it
 * and takes their results from amio_registrar_wait without a timeout
 * (srv_amio_io.h): in steady state it makes no syscall. main wakes it for
 * the stop through a channel, as in srv_amio_inbox.
 */
#define _GNU_SOURCE
#include "srv_amio_io.h"

static amio_poller *poller;
static amio_channel *_Atomic stop_ch; /* the worker's; main sends one byte to stop it */
static uint16_t port;
static int lfd = -1;
static struct cio cio;

static void *worker(void *arg)
{
	amio_notification n[64];
	amio_registrar *r;
	amio_channel *ch;
	int rc;

	(void)arg;
	pthread_setname_np(pthread_self(), "amio-worker");
	lfd = srv_listen("srv_amio_completion_inbox", port);
	if ((rc = amio_registrar_new(poller, AMIO_INBOX, &r)) < 0 ||
	    (rc = amio_channel_new(r, 1, 1, &stop_ch, &ch)) < 0)
		srv_die("srv_amio_completion_inbox", "setup", rc);
	atomic_store(&stop_ch, ch);
	/* TCP_NODELAY inherited from the listener: one worker syscall less
	 * per connection (close is the one left). */
	cio_init(&cio, "srv_amio_completion_inbox", r, lfd, 1);
	while (!atomic_load(&srv_stop)) {
		/* Refused ops wait for room: the poll thread drains the queue
		 * on its own thread, so wait for that rather than spin. */
		if (cio.defer_head && (rc = amio_registrar_wait_room(r, -1)) < 0)
			srv_die("srv_amio_completion_inbox", "amio_registrar_wait_room", rc);
		cio_flush(&cio);
		rc = amio_registrar_wait(r, n, 64, -1);
		if (rc < 0)
			srv_die("srv_amio_completion_inbox", "amio_registrar_wait", rc);
		for (int i = 0; i < rc; i++) {
			if (n[i].data == &stop_ch)
				continue; /* the stop: srv_stop is set */
			cio_event(&cio, &n[i]);
		}
	}
	/* Freeing the inbox registrar ends its operations and frees its pool
	 * (the poll thread still runs); the fds stay open until exit. */
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
		srv_die("srv_amio_completion_inbox", "amio_poller_run", rc);
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t pt, wt;
	sigset_t set;
	int sig, rc;

	port = srv_init(argc, argv);
	asig_block(&set);
	if ((rc = apoller_new(&poller, "srv_amio_completion_inbox")) < 0)
		srv_die("srv_amio_completion_inbox", "amio_poller_new", rc);
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
	apoller_report(poller, "srv_amio_completion_inbox");
	amio_poller_free(poller);
	close(lfd);
	return 0;
}
