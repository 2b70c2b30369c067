/* Where io_uring is blocked: a seccomp filter (libseccomp) that makes
 * io_uring_setup, io_uring_enter and io_uring_register fail with EPERM, as
 * Docker Engine >= 25's default profile does, or with ENOSYS, as Podman's
 * does. amio must choose epoll by itself and run the echo demo end to end
 * (every byte checked); a program that requires io_uring gets the errno. */
#include <seccomp.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "amio_test.h"

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup    425
#define __NR_io_uring_enter    426
#define __NR_io_uring_register 427
#endif

/* Install the filter on this process (and what it execs). */
static void block_io_uring(int err)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);

	ck_assert_ptr_nonnull(ctx);
	ck_assert_int_eq(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(err), __NR_io_uring_setup, 0), 0);
	ck_assert_int_eq(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(err), __NR_io_uring_enter, 0), 0);
	ck_assert_int_eq(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(err), __NR_io_uring_register, 0), 0);
	ck_assert_int_eq(seccomp_load(ctx), 0);
	seccomp_release(ctx);
}

static const int errs[] = {EPERM, ENOSYS};

/* The API under the filter: auto and AMIO_BACKEND=epoll choose epoll and
 * work; requiring io_uring returns the filter's errno, which
 * amio_strerror explains. */
START_TEST(under_the_filter_auto_chooses_epoll_and_io_uring_reports_the_errno)
{
	struct amio_poller_config uring = {.backend = AMIO_BACKEND_IO_URING};
	amio_poller *p = NULL;
	amio_registrar *r;
	amio_notification n[4];
	int fds[2];
	int64_t id;

	block_io_uring(errs[_i]);
	ck_assert_int_eq(amio_poller_new(&p, &uring), -errs[_i]);
	ck_assert_ptr_nonnull(strstr(amio_strerror(-errs[_i]), "seccomp"));
	unsetenv("AMIO_BACKEND");
	ck_assert_int_eq(amio_poller_new(&p, NULL), 0);
	ck_assert_str_eq(amio_poller_backend(p), "epoll");
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	t_tcp_pair(fds);
	id = amio_register(r, fds[1], AMIO_READ, NULL);
	ck_assert_int_gt(id, 0);
	t_write_str(fds[0], "x");
	ck_assert_int_eq(t_collect(p, n, 1, 2000), 1);
	ck_assert_uint_eq(n[0].id, (uint64_t)id);
	ck_assert(n[0].events & AMIO_READ);
	ck_assert_int_gt(amio_set_timeout(r, 1, NULL), 0);
	ck_assert_int_eq(t_collect(p, n, 1, 2000), 1);
	ck_assert(n[0].events & AMIO_TIMER);
	amio_registrar_free(r);
	amio_poller_free(p);
	close(fds[0]);
	close(fds[1]);
}
END_TEST

/* The echo demo (server with a poll thread and workers, client) run whole
 * under the filter, as in a container: it must say it chose epoll and
 * echo every byte (demo.sh fails on any mismatch). */
START_TEST(the_echo_demo_runs_on_epoll_under_the_filter)
{
	char cmd[1024], out[8192];
	size_t len = 0;
	ssize_t got;
	int pipefd[2], status;
	pid_t pid;

	ck_assert_int_eq(pipe(pipefd), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		close(pipefd[0]);
		unsetenv("AMIO_BACKEND");
		block_io_uring(errs[_i]);
		snprintf(cmd, sizeof(cmd), "sh %s/scripts/demo.sh %s 1 16 0", AMIO_SOURCE_DIR,
		         AMIO_BINARY_DIR);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	while (len < sizeof(out) - 1 &&
	       (got = read(pipefd[0], out + len, sizeof(out) - 1 - len)) > 0)
		len += (size_t)got;
	out[len] = 0;
	close(pipefd[0]);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "demo failed:\n%s", out);
	ck_assert_msg(strstr(out, "backend epoll"), "demo did not choose epoll:\n%s", out);
	ck_assert_msg(strstr(out, "mismatches 0"), "demo output:\n%s", out);
	ck_assert_msg(strstr(out, "epoll_wait calls per 1,000 messages"), "demo output:\n%s", out);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("seccomp");
	TCase *tc = tcase_create("io_uring blocked");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, under_the_filter_auto_chooses_epoll_and_io_uring_reports_the_errno,
	                    0, 2);
	tcase_add_loop_test(tc, the_echo_demo_runs_on_epoll_under_the_filter, 0, 2);
	suite_add_tcase(s, tc);
	return t_run(s);
}
