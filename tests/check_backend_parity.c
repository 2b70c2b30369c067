/*
 * Same calls, same results on both backends (this suite runs again with
 * AMIO_BACKEND=epoll): what a readiness registration reports for each way a
 * peer can end, in each mode, and how an operation on an fd that is not a
 * connected socket ends. Written as contract tables; a failure lists every
 * row that broke, with what was reported.
 */
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#include "amio_test.h"

/* ---- Readiness: each peer action, each mode ------------------------------ */

/* Registered with AMIO_READ on our end (fds[1]); the peer (fds[0]) acts
 * once the poll is armed, and we look only once the kernel shows the whole
 * action on our socket (settle), so the answer cannot depend on timing. */
struct peer_row {
	const char *name;
	bool data, shut_wr, close, reset;
	short settle;  /* poll(2) bits on our end once the action has landed */
	uint32_t want; /* the union of events the contract promises */
};

static const struct peer_row peer_rows[] = {
    {"write+close", true, false, true, false, POLLIN | POLLRDHUP, AMIO_READ | AMIO_HUP},
    {"write+shutdown(SHUT_WR)", true, true, false, false, POLLIN | POLLRDHUP, AMIO_READ | AMIO_HUP},
    {"write+reset (SO_LINGER 0)", true, false, true, true, POLLERR | POLLHUP,
     AMIO_READ | AMIO_HUP | AMIO_ERROR},
    {"close without data", false, false, true, false, POLLRDHUP, AMIO_READ | AMIO_HUP},
    {"write only", true, false, false, false, POLLIN, AMIO_READ},
    {"reset without data", false, false, true, true, POLLERR | POLLHUP,
     AMIO_READ | AMIO_HUP | AMIO_ERROR},
};

static void peer_act(const struct peer_row *row, int peer)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	if (row->data)
		t_write_str(peer, "hello");
	if (row->shut_wr)
		ck_assert_int_eq(shutdown(peer, SHUT_WR), 0);
	if (row->reset)
		ck_assert_int_eq(setsockopt(peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
	if (row->close)
		close(peer);
}

/* Until the kernel shows bits on fd (2 s at most): loopback segments may
 * still be in a softirq when the peer's call returns. */
static void settle(int fd, short bits)
{
	int64_t end = t_now_ms() + 2000;
	struct pollfd pfd = {.fd = fd, .events = POLLIN | POLLRDHUP};

	do {
		ck_assert_int_ge(poll(&pfd, 1, 10), 0);
	} while ((pfd.revents & bits) != bits && t_now_ms() < end);
	ck_assert_msg((pfd.revents & bits) == bits, "the peer's action never landed: %#x of %#x",
	              pfd.revents, bits);
}

struct seen {
	uint32_t events; /* union */
	int notes;
};

/* Notifications for id until want is covered or 2 s pass, then one more
 * look (an extra bit would show there). Amy mode, the test is the poll
 * thread. */
static struct seen collect(amio_poller *p, uint64_t id, uint32_t want)
{
	int64_t end = t_now_ms() + 2000;
	struct seen s = {0, 0};
	amio_notification n[8];
	bool last = false;

	while (!last) {
		int rc;

		last = (s.events & want) == want || t_now_ms() >= end;
		rc = amio_poller_wait(p, n, 8, last ? 50 : 100);
		ck_assert_int_ge(rc, 0);
		for (int i = 0; i < rc; i++) {
			ck_assert_uint_eq(n[i].id, id);
			s.events |= n[i].events;
			s.notes++;
		}
	}
	return s;
}

static const char *evname(uint32_t ev, char *buf)
{
	snprintf(buf, 64, "%s%s%s%s%s", ev & AMIO_READ ? "READ|" : "",
	         ev & AMIO_WRITE ? "WRITE|" : "", ev & AMIO_HUP ? "HUP|" : "",
	         ev & AMIO_ERROR ? "ERROR|" : "", ev ? "" : "nothing");
	return buf;
}

/* One registration per row; returns how many rows broke the contract, each
 * described in report. */
static int run_peer_table(uint32_t mode, const char *mode_name, char *report, size_t room)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification n[8];
	int bad = 0;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	for (size_t i = 0; i < sizeof(peer_rows) / sizeof(peer_rows[0]); i++) {
		const struct peer_row *row = &peer_rows[i];
		char a[64], b[64];
		struct seen s;
		int fds[2];
		int64_t id;
		bool ok;

		t_tcp_pair(fds);
		id = amio_register(r, fds[1], AMIO_READ | mode, NULL);
		ck_assert_int_gt(id, 0);
		/* Armed before the peer acts: nothing to report yet. */
		ck_assert_int_eq(amio_poller_wait(p, n, 8, 0), 0);
		peer_act(row, fds[0]);
		settle(fds[1], row->settle);
		s = collect(p, (uint64_t)id, row->want);
		ok = s.events == row->want && (mode != AMIO_ONESHOT || s.notes == 1);
		if (!ok) {
			size_t used = strlen(report);

			bad++;
			snprintf(report + used, room - used,
			         "\n  %s, %s: reported %s in %d notification(s), contract %s%s",
			         mode_name, row->name, evname(s.events, a), s.notes,
			         evname(row->want, b), mode == AMIO_ONESHOT ? " in one" : "");
		}
		ck_assert_int_eq(amio_deregister(r, (uint64_t)id), 0);
		if (!row->close)
			close(fds[0]);
		close(fds[1]);
	}
	amio_registrar_free(r);
	amio_poller_free(p);
	return bad;
}

static void check_peer_table(uint32_t mode, const char *mode_name)
{
	char report[2048] = "";
	int bad = run_peer_table(mode, mode_name, report, sizeof(report));

	ck_assert_msg(bad == 0, "%d of %zu rows differ from the contract:%s", bad,
	              sizeof(peer_rows) / sizeof(peer_rows[0]), report);
}

START_TEST(an_edge_registration_reports_every_way_a_peer_ends_as_the_contract_says)
{
	check_peer_table(AMIO_EDGE, "EDGE");
}
END_TEST

START_TEST(a_level_registration_reports_every_way_a_peer_ends_as_the_contract_says)
{
	check_peer_table(AMIO_LEVEL, "LEVEL");
}
END_TEST

/* ONESHOT reports once: that one notification must carry everything the
 * fd had when the poll thread looked (issue 18 item 5: io_uring gave READ
 * where epoll gave READ|HUP, then was disarmed). */
START_TEST(a_oneshot_registration_reports_every_way_a_peer_ends_in_its_one_notification)
{
	check_peer_table(AMIO_ONESHOT, "ONESHOT");
}
END_TEST

/* Readiness gone before the poll thread looked is not reported, and the
 * ONESHOT registration stays armed for the next bytes: both backends look
 * at the fd when they harvest (epoll_wait; io_uring re-checks a one-shot's
 * mask when reaped). */
START_TEST(a_oneshot_whose_bytes_were_read_before_the_poll_thread_looked_stays_armed)
{
	amio_poller *p = t_poller(NULL);
	amio_registrar *r;
	amio_notification n[8];
	char buf[16];
	struct seen s;
	int fds[2];
	int64_t id;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	t_tcp_pair(fds);
	id = amio_register(r, fds[1], AMIO_READ | AMIO_ONESHOT, NULL);
	ck_assert_int_gt(id, 0);
	ck_assert_int_eq(amio_poller_wait(p, n, 8, 0), 0);
	t_write_str(fds[0], "early");
	settle(fds[1], POLLIN);
	ck_assert_int_eq(read(fds[1], buf, sizeof(buf)), 5);
	ck_assert_msg(amio_poller_wait(p, n, 8, 100) == 0,
	              "readiness read before the poll thread looked was reported: events %#x",
	              n[0].events);
	t_write_str(fds[0], "later");
	settle(fds[1], POLLIN);
	s = collect(p, (uint64_t)id, AMIO_READ);
	ck_assert_msg(s.events == AMIO_READ && s.notes == 1,
	              "the next bytes: events %#x in %d notification(s), want one READ", s.events,
	              s.notes);
	ck_assert_int_eq(amio_deregister(r, (uint64_t)id), 0);
	close(fds[0]);
	close(fds[1]);
	amio_registrar_free(r);
	amio_poller_free(p);
}
END_TEST

/* ---- Operations on fds that are not a connected socket ------------------- */

enum fd_kind {
	F_FILE,
	F_DIR,
	F_DEVNULL,
	F_PIPE_R,
	F_PIPE_W,
	F_EVENTFD,
	F_CLOSED,
	F_LISTEN,
	F_UNCONNECTED,
	F_KINDS
};
static const char *const fd_names[F_KINDS] = {
    "regular file", "directory", "/dev/null",        "pipe (read end)",       "pipe (write end)",
    "eventfd",      "closed fd", "listening socket", "unconnected TCP socket"};

/* Every fd non-blocking, so amio_accept's own checks reach the socket one. */
static int make_fd(enum fd_kind k, int *extra)
{
	char path[] = "/tmp/amio-parity-XXXXXX";
	int fd = -1, pfd[2];
	uint16_t port;

	*extra = -1;
	switch (k) {
	case F_FILE:
		fd = mkstemp(path);
		ck_assert_int_ge(fd, 0);
		unlink(path);
		ck_assert_int_eq(write(fd, "bytes", 5), 5);
		break;
	case F_DIR:
		fd = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		break;
	case F_DEVNULL:
		fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		break;
	case F_PIPE_R:
	case F_PIPE_W:
		ck_assert_int_eq(pipe2(pfd, O_NONBLOCK | O_CLOEXEC), 0);
		fd = pfd[k == F_PIPE_W];
		*extra = pfd[k != F_PIPE_W];
		break;
	case F_EVENTFD:
		fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		break;
	case F_CLOSED:
		fd = dup(0);
		ck_assert_int_ge(fd, 0);
		close(fd); /* a number nothing has open */
		return fd;
	case F_LISTEN:
		fd = t_listen(&port);
		break;
	case F_UNCONNECTED:
		fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		break;
	default:
		break;
	}
	ck_assert_int_ge(fd, 0);
	if (k != F_LISTEN && k != F_UNCONNECTED)
		t_nonblock(fd);
	return fd;
}

enum op_call { C_RECV, C_SEND, C_SENDV, C_ACCEPT, C_CALLS };
static const char *const call_names[C_CALLS] = {"amio_recv", "amio_send", "amio_sendv",
                                                "amio_accept"};

/* How a call ended: at the call (nothing queued, no notification) or with
 * its DONE (after nothing else). */
struct outcome {
	bool at_call;
	int32_t err;
};

/* What amio.h promises for each fd kind and call. */
static const struct outcome contract[F_KINDS][C_CALLS] = {
    /*                  recv               send             sendv          accept */
    [F_FILE] = {{false, -ENOTSOCK}, {false, -ENOTSOCK}, {false, -ENOTSOCK}, {true, -EINVAL}},
    [F_DIR] = {{false, -ENOTSOCK}, {false, -ENOTSOCK}, {false, -ENOTSOCK}, {true, -EINVAL}},
    [F_DEVNULL] = {{false, -ENOTSOCK}, {false, -ENOTSOCK}, {false, -ENOTSOCK}, {true, -EINVAL}},
    [F_PIPE_R] = {{false, -ENOTSOCK}, {false, -ENOTSOCK}, {false, -ENOTSOCK}, {true, -EINVAL}},
    [F_PIPE_W] = {{false, -ENOTSOCK}, {false, -ENOTSOCK}, {false, -ENOTSOCK}, {true, -EINVAL}},
    [F_EVENTFD] = {{false, -ENOTSOCK}, {false, -ENOTSOCK}, {false, -ENOTSOCK}, {true, -EINVAL}},
    [F_CLOSED] = {{false, -EBADF}, {false, -EBADF}, {false, -EBADF}, {true, -EBADF}},
    [F_LISTEN] = {{false, -ENOTCONN}, {false, -EPIPE}, {false, -EPIPE}, {true, 0}},
    [F_UNCONNECTED] = {{false, -ENOTCONN}, {false, -EPIPE}, {false, -EPIPE}, {true, -EINVAL}},
};

/* Wait for id's DONE (2 s at most); anything before it is a failure. */
static struct outcome wait_done(amio_poller *p, uint64_t id, amio_pool *pool)
{
	int64_t end = t_now_ms() + 2000;
	amio_notification n[8];

	while (t_now_ms() < end) {
		int rc = amio_poller_wait(p, n, 8, 100);

		ck_assert_int_ge(rc, 0);
		for (int i = 0; i < rc; i++) {
			ck_assert_uint_eq(n[i].id, id);
			if (n[i].buf && (n[i].events & AMIO_RECV)) /* a send's DONE: its own */
				ck_assert_int_eq(amio_pool_put(pool, n[i].buf), 0);
			ck_assert_msg(n[i].events & AMIO_DONE, "events %#x res %d before the DONE",
			              n[i].events, n[i].res);
			return (struct outcome){false, n[i].res};
		}
	}
	ck_abort_msg("no DONE in 2 s");
	return (struct outcome){false, 0};
}

static struct outcome run_call(amio_poller *p, amio_registrar *r, amio_pool *pool, enum op_call c,
                               int fd)
{
	static const char msg[] = "hello";
	struct iovec iov[2] = {{(void *)msg, 2}, {(void *)(msg + 2), 3}};
	int64_t id = -EINVAL;

	switch (c) {
	case C_RECV:
		id = amio_recv(r, fd, pool, NULL);
		break;
	case C_SEND:
		id = amio_send(r, fd, msg, 5, 0, NULL);
		break;
	case C_SENDV:
		id = amio_sendv(r, fd, iov, 2, 0, NULL);
		break;
	case C_ACCEPT:
		id = amio_accept(r, fd, NULL);
		/* A listening socket is the one fd an accept is for: it runs,
		 * and its success is the call's. */
		if (id > 0) {
			ck_assert_int_eq(amio_cancel(r, (uint64_t)id), 0);
			ck_assert_int_eq(wait_done(p, (uint64_t)id, pool).err, -ECANCELED);
			return (struct outcome){true, 0};
		}
		break;
	default:
		break;
	}
	if (id < 0) {
		/* Nothing queued: nothing may come for it. */
		amio_notification n[8];

		ck_assert_int_eq(amio_poller_wait(p, n, 8, 0), 0);
		return (struct outcome){true, (int32_t)id};
	}
	return wait_done(p, (uint64_t)id, pool);
}

static void describe(char *buf, size_t room, struct outcome o)
{
	static const struct {
		int err;
		const char *name;
	} names[] = {{0, "0"},           {-ENOTSOCK, "-ENOTSOCK"},  {-EPERM, "-EPERM"},
	             {-EBADF, "-EBADF"}, {-EINVAL, "-EINVAL"},      {-ENOTCONN, "-ENOTCONN"},
	             {-EPIPE, "-EPIPE"}, {-ECANCELED, "-ECANCELED"}};
	const char *name = NULL;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].err == o.err)
			name = names[i].name;
	if (name)
		snprintf(buf, room, "%s %s", name, o.at_call ? "at the call" : "in its DONE");
	else
		snprintf(buf, room, "%d %s", o.err, o.at_call ? "at the call" : "in its DONE");
}

START_TEST(every_operation_on_an_fd_that_is_no_connected_socket_ends_as_the_contract_says)
{
	amio_poller *p = t_poller(NULL);
	char report[4096] = "";
	amio_registrar *r;
	amio_pool *pool;
	int bad = 0, rows = 0;

	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_pool_new(r, 4, 64, &pool), 0);
	for (int k = 0; k < F_KINDS; k++)
		for (int c = 0; c < C_CALLS; c++) {
			struct outcome want = contract[k][c], got;
			int extra, fd = make_fd((enum fd_kind)k, &extra);
			char a[96], b[96];

			got = run_call(p, r, pool, (enum op_call)c, fd);
			rows++;
			if (got.at_call != want.at_call || got.err != want.err) {
				size_t used = strlen(report);

				bad++;
				describe(a, sizeof(a), got);
				describe(b, sizeof(b), want);
				snprintf(report + used, sizeof(report) - used,
				         "\n  %s on a %s: %s, contract %s", call_names[c],
				         fd_names[k], a, b);
			}
			if (k != F_CLOSED)
				close(fd);
			if (extra >= 0)
				close(extra);
		}
	ck_assert_int_eq(amio_pool_free(pool), 0);
	amio_registrar_free(r);
	amio_poller_free(p);
	ck_assert_msg(bad == 0, "%d of %d rows differ from the contract (%s backend):%s", bad, rows,
	              getenv("AMIO_BACKEND") ? getenv("AMIO_BACKEND") : "default", report);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("backend_parity");
	TCase *hup = tcase_create("how a peer's end is reported");
	TCase *ops = tcase_create("operations on fds that are no connected socket");

	tcase_set_timeout(hup, 60);
	tcase_add_test(hup,
	               an_edge_registration_reports_every_way_a_peer_ends_as_the_contract_says);
	tcase_add_test(hup,
	               a_level_registration_reports_every_way_a_peer_ends_as_the_contract_says);
	tcase_add_test(
	    hup, a_oneshot_registration_reports_every_way_a_peer_ends_in_its_one_notification);
	tcase_add_test(hup,
	               a_oneshot_whose_bytes_were_read_before_the_poll_thread_looked_stays_armed);
	suite_add_tcase(s, hup);
	tcase_set_timeout(ops, 60);
	tcase_add_test(
	    ops, every_operation_on_an_fd_that_is_no_connected_socket_ends_as_the_contract_says);
	suite_add_tcase(s, ops);
	return s;
}

int main(void)
{
	return t_run(suite());
}
