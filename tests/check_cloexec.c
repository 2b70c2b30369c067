/*
 * Every fd amio opens (the poller's io_uring, registrar and waiter rings on
 * the fallback paths, probe rings) is O_CLOEXEC: a child the program execs
 * must inherit none of them. The test opens every kind, checks FD_CLOEXEC
 * on each new fd, then execs itself with --list-fds and reads the child's
 * fd table back through a pipe.
 */
#include <sys/wait.h>

#include "amio_test.h"

/* The child: print each open fd and what it is, one per line. */
static int list_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	char path[300], target[256];

	if (!d)
		return 1;
	while ((de = readdir(d))) {
		ssize_t n;

		if (de->d_name[0] == '.' || atoi(de->d_name) == dirfd(d))
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
		n = readlink(path, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = '\0';
		printf("%s %s\n", de->d_name, target);
	}
	closedir(d);
	return 0;
}

/* Fds open now, as a bitmap over the first 1024. */
static void open_fds(bool *open)
{
	for (int fd = 0; fd < 1024; fd++)
		open[fd] = fcntl(fd, F_GETFD) >= 0;
}

static void check_one_config(uint32_t flags, const char *what)
{
	struct amio_poller_config cfg = {.flags = flags};
	bool before[1024], after[1024], mine[1024] = {false};
	amio_poller *p;
	amio_registrar *r, *inbox;
	amio_channel *ch;
	amio_notification out[4];
	int pipefd[2], fds[2], status, created = 0, inherited = 0;
	char line[512];
	pid_t pid;
	FILE *f;

	open_fds(before);
	p = t_poller(&cfg);
	ck_assert_int_eq(amio_registrar_new(p, 0, &r), 0);
	ck_assert_int_eq(amio_registrar_new(p, AMIO_INBOX, &inbox), 0);
	ck_assert_int_eq(amio_channel_new(r, 4, 8, NULL, &ch), 0);
	ck_assert_int_gt(amio_set_interval(r, 1000, NULL), 0);
	t_tcp_pair(fds);
	ck_assert_int_gt(amio_register(r, fds[1], AMIO_READ, NULL), 0);
	ck_assert_int_ge(amio_poller_wait(p, out, 4, 10), 0);
	open_fds(after);
	for (int fd = 0; fd < 1024; fd++) {
		if (!after[fd] || before[fd] || fd == fds[0] || fd == fds[1])
			continue;
		created++;
		mine[fd] = true;
		ck_assert_msg(fcntl(fd, F_GETFD) & FD_CLOEXEC, "%s: fd %d lacks FD_CLOEXEC", what,
		              fd);
	}
	ck_assert_msg(created > 0, "%s: amio opened no fd?", what);

	/* The pipe is the one fd the child is meant to have (as stdout). */
	ck_assert_int_eq(pipe(pipefd), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(pipefd[1], 1);
		execl("/proc/self/exe", "check_cloexec", "--list-fds", (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	f = fdopen(pipefd[0], "r");
	while (fgets(line, sizeof(line), f)) {
		int fd = atoi(line);

		/* Check's own fds may be inherited; amio's never. */
		if ((fd >= 0 && fd < 1024 && mine[fd]) || strstr(line, "io_uring") ||
		    strstr(line, "eventfd")) {
			inherited++;
			fprintf(stderr, "%s: child inherited %s", what, line);
		}
	}
	fclose(f);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_msg(inherited == 0, "%s: the exec'd child inherited %d fds", what, inherited);

	amio_channel_free(ch);
	amio_registrar_free(inbox);
	amio_registrar_free(r);
	amio_poller_free(p);
	close(fds[0]);
	close(fds[1]);
	t_report("fds", what, "all FD_CLOEXEC; the exec'd child inherited none",
	         "%d fds opened by amio", created);
}

START_TEST(an_execd_child_inherits_no_amio_fd)
{
	check_one_config(0, "exec a child with a poller, Amy and inbox registrars, a channel, a "
	                    "timer and a socket registered");
	/* Old kernels' paths: a small ring per registrar for its wakeups. */
	check_one_config(AMIO_POLLER_NO_DEFER_TASKRUN | AMIO_POLLER_NO_RINGLESS_MSG,
	                 "the same with per-registrar wakeup rings (fallback path)");
}
END_TEST

int main(int argc, char **argv)
{
	Suite *s;
	TCase *tc;

	if (argc > 1 && strcmp(argv[1], "--list-fds") == 0)
		return list_fds();
	s = suite_create("cloexec");
	tc = tcase_create("exec");
	t_require_io_uring();
	tcase_add_test(tc, an_execd_child_inherits_no_amio_fd);
	suite_add_tcase(s, tc);
	return t_run(s);
}
