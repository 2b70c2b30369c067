/*
 * srv_libuv: libuv, one thread, its stream API as users write it: a 16 KiB
 * buffer per connection handed to uv_read_start, uv_try_write for the echo,
 * and on a partial write uv_write of the rest with reading paused until it
 * completes.
 */
#define _GNU_SOURCE
#include "srv_common.h"
#include <uv.h>

struct conn {
	uv_tcp_t tcp;
	uv_write_t wr;
	char buf[SRV_BUF];
};

static uv_tcp_t server;

static void on_close(uv_handle_t *h)
{
	free(h->data);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct conn *c = h->data;

	(void)hint;
	*b = uv_buf_init(c->buf, sizeof(c->buf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);

static void on_written(uv_write_t *w, int status)
{
	struct conn *c = w->data;

	if (status < 0 || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
		uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct conn *c = s->data;
	uv_buf_t rest;
	int done;

	if (n == 0)
		return;
	if (n < 0) {
		uv_close((uv_handle_t *)s, on_close);
		return;
	}
	rest = uv_buf_init(b->base, (unsigned)n);
	done = uv_try_write(s, &rest, 1);
	if (done == n)
		return;
	if (done < 0 && done != UV_EAGAIN) {
		uv_close((uv_handle_t *)s, on_close);
		return;
	}
	if (done < 0)
		done = 0;
	/* Partial write: send the rest from the buffer, read nothing meanwhile. */
	rest = uv_buf_init(b->base + done, (unsigned)(n - done));
	uv_read_stop(s);
	c->wr.data = c;
	if (uv_write(&c->wr, s, &rest, 1, on_written) < 0)
		uv_close((uv_handle_t *)s, on_close);
}

static void on_connection(uv_stream_t *srv, int status)
{
	struct conn *c;

	if (status < 0)
		return;
	c = malloc(sizeof(*c));
	if (!c)
		return;
	uv_tcp_init(srv->loop, &c->tcp);
	c->tcp.data = c;
	if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0) {
		uv_close((uv_handle_t *)&c->tcp, on_close);
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0)
		uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void on_signal(uv_signal_t *h, int sig)
{
	(void)sig;
	uv_stop(h->loop);
}

int main(int argc, char **argv)
{
	uint16_t port = srv_init(argc, argv);
	int lfd = srv_listen("srv_libuv", port), rc;
	uv_loop_t *loop = uv_default_loop();
	uv_signal_t s1, s2;

	uv_tcp_init(loop, &server);
	if ((rc = uv_tcp_open(&server, lfd)) < 0 ||
	    (rc = uv_listen((uv_stream_t *)&server, 4096, on_connection)) < 0)
		srv_die("srv_libuv", "uv_listen", -rc);
	uv_signal_init(loop, &s1);
	uv_signal_init(loop, &s2);
	uv_signal_start(&s1, on_signal, SIGINT);
	uv_signal_start(&s2, on_signal, SIGTERM);
	uv_run(loop, UV_RUN_DEFAULT);
	return 0;
}
