/*
 * Which backend a poller runs on: the config's choice, then AMIO_BACKEND,
 * then io_uring if the kernel lets this process set one up, else epoll.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* io_uring_setup failing this way means "not here", not "broken": Docker's
 * default seccomp profile (EPERM), Podman's (ENOSYS), the sysctl
 * kernel.io_uring_disabled (EPERM), an LSM (EACCES), or a feature amio
 * needs missing (ENOSYS from setup_ring: no IORING_FEAT_NODROP). */
static bool fall_back(int rc)
{
	return rc == -ENOSYS || rc == -EPERM || rc == -EACCES;
}

/* AMIO_BACKEND=io_uring|epoll: the user's override of auto, so a process
 * whose seccomp profile kills on io_uring_setup never probes it. */
static int from_env(uint32_t *choice)
{
	const char *v = getenv("AMIO_BACKEND");

	if (!v || !*v)
		return 0;
	if (strcmp(v, "io_uring") == 0)
		*choice = AMIO_BACKEND_IO_URING;
	else if (strcmp(v, "epoll") == 0)
		*choice = AMIO_BACKEND_EPOLL;
	else
		return -EINVAL;
	return 0;
}

int amio__backend_init(amio_poller *p, const struct amio_poller_config *cfg)
{
	uint32_t choice = cfg->backend;
	int rc;

	if (choice == AMIO_BACKEND_AUTO) {
		rc = from_env(&choice);
		if (rc < 0)
			return rc;
	}
	if (choice != AMIO_BACKEND_EPOLL) {
		p->be.ops = &amio__uring_ops;
		rc = amio__uring_ops.init(p, cfg);
		if (rc == 0 || choice == AMIO_BACKEND_IO_URING || !fall_back(rc))
			return rc;
	}
	memset(&p->be, 0, sizeof(p->be));
	p->be.ops = &amio__epoll_ops;
	return amio__epoll_ops.init(p, cfg);
}

const char *amio_poller_backend(const amio_poller *p)
{
	return p ? p->be.ops->name : "none";
}
