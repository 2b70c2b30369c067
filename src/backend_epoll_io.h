/* The epoll backend's operations (backend_epoll_io.c), for backend_epoll.c. */
#ifndef AMIO_BACKEND_EPOLL_IO_H
#define AMIO_BACKEND_EPOLL_IO_H

#include "internal.h"

/* Arm an operation's request: watch an accept or recv (edge-triggered), or
 * try a send at once. 0 or -errno. */
int amio__ep_arm_io(amio_poller *p, struct amio__entry *e, uint32_t slot);
/* Synchronous cancel: 1 (gone now), or 0 (a result already made comes). */
int amio__ep_cancel_io(amio_poller *p, struct amio__entry *e, uint32_t slot);
/* An event for an operation's slot: the calls it allows, as records. */
unsigned amio__ep_io_event(amio_poller *p, uint32_t slot, uint32_t gen,
                           struct amio__completion *out, unsigned max);
/* Records of the work list: sends made at arm time, edges to follow on. */
unsigned amio__ep_io_work(amio_poller *p, struct amio__completion *out, unsigned max);
bool amio__ep_io_pending(amio_poller *p);
/* The slot is released: off the work list. */
void amio__ep_io_release(amio_poller *p, uint32_t slot);

/* backend_epoll_file.c: pread and pwrite on a pool of threads. Submit: 0 or
 * -errno; cancel: 1 (gone now) or 0 (running: its result comes). */
int amio__ep_file_submit(amio_poller *p, struct amio__entry *e, uint32_t slot);
int amio__ep_file_cancel(amio_poller *p, uint32_t slot);
unsigned amio__ep_file_reap(amio_poller *p, struct amio__completion *out, unsigned max);
bool amio__ep_file_pending(amio_poller *p);
void amio__ep_files_destroy(amio_poller *p);

#endif
