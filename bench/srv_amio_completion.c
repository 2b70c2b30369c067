/*
 * srv_amio_completion: amio's completion I/O from one thread (Amy mode). The
 * thread accepts with amio_accept, receives with amio_recv into a pool of
 * 16 KiB buffers and echoes each buffer with amio_send, all results coming
 * back from its own amio_poller_wait (srv_amio_io.h). The counterpart of
 * srv_uring_completion through amio. main only waits for SIGINT/SIGTERM and
 * stops the poller.
 */
#define _GNU_SOURCE
#include "srv_amio_io.h"

static amio_poller *poller;
static uint16_t port;
static int lfd = -1;
static struct cio cio;

static void *loop(void *arg)
{
	amio_notification n[64];
	amio_registrar *r;
	int rc;

	(void)arg;
	lfd = srv_listen("srv_amio_completion", port);
	if ((rc = amio_registrar_new(poller, 0, &r)) < 0)
		srv_die("srv_amio_completion", "amio_registrar_new", rc);
	/* BENCH_IDLE_MS=ms: every recv with an idle timeout kept by the poll
	 * thread (what it costs per request: bench/run.sh, issue 19). */
	if (getenv("BENCH_IDLE_MS") &&
	    (rc = amio_registrar_set_conn(
	         r, &(struct amio_conn_config){.idle_ms =
	                                           (uint32_t)atoi(getenv("BENCH_IDLE_MS"))})) < 0)
		srv_die("srv_amio_completion", "amio_registrar_set_conn", rc);
	/* TCP_NODELAY per connection, as srv_uring_completion does. */
	cio_init(&cio, "srv_amio_completion", r, lfd, 0);
	while (!atomic_load(&srv_stop)) {
		/* Ops refused with -EAGAIN: this wait applies the queue; do
		 * not sleep before they are retried. */
		rc = amio_poller_wait(poller, n, 64, cio.defer_head ? 0 : -1);
		if (rc < 0)
			srv_die("srv_amio_completion", "amio_poller_wait", rc);
		/* The wait applied the queue: room for what it refused. */
		cio_flush(&cio);
		for (int i = 0; i < rc; i++)
			cio_event(&cio, &n[i]);
	}
	/* amio_poller_free (main) ends the operations and frees the pool;
	 * the fds stay open until then. */
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
	if ((rc = apoller_new(&poller, "srv_amio_completion")) < 0)
		srv_die("srv_amio_completion", "amio_poller_new", rc);
	pthread_create(&t, NULL, loop, NULL);
	sigwait(&set, &sig);
	atomic_store(&srv_stop, 1);
	amio_poller_stop(poller);
	pthread_join(t, NULL);
	apoller_report(poller, "srv_amio_completion");
	amio_poller_free(poller);
	close(lfd);
	return 0;
}
