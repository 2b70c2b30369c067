/*
 * Buffer pools: where a multishot recv's bytes land, and how a buffer goes
 * back from its consumer to the kernel (io_uring) or the poll thread (epoll)
 * without a lock or a syscall.
 *
 * A pool is an io_uring provided buffer ring (liburing's io_uring_buf_ring
 * helpers) whose only producer is the pool's consumer thread: it fills the
 * ring at creation and adds each buffer it gives back. On io_uring the kernel
 * picks buffers from it (IOSQE_BUFFER_SELECT); the epoll backend reads the
 * same ring from the poll thread, so both backends share this file. The buffer
 * group is registered by the poll thread: a SINGLE_ISSUER ring refuses
 * io_uring_register from any other thread (-EEXIST, probed on 6.18).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

static size_t page_up(size_t n)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	return (n + pg - 1) / pg * pg;
}

static void pool_release_memory(amio_pool *pool)
{
	if (pool->br)
		munmap(pool->br, pool->br_len);
	if (pool->bufs)
		munmap(pool->bufs, pool->bufs_len);
	free(pool->held);
	free(pool);
}

static void *map_anon(size_t len)
{
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return m == MAP_FAILED ? NULL : m;
}

int amio_pool_new(amio_registrar *r, uint32_t count, uint32_t size, amio_pool **out)
{
	struct amio__cmd c = {.op = AMIO__OP_POOL_NEW};
	amio_pool *pool;
	int rc;

	if (!r || !out || count == 0 || count > AMIO_POOL_MAX_BUFFERS || (count & (count - 1)) ||
	    size == 0 || size > AMIO_POOL_MAX_SIZE)
		return -EINVAL;
	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return -ENOMEM;
	pool->p = r->p;
	pool->r = r;
	pool->count = count;
	pool->size = size;
	pool->mask = (uint32_t)io_uring_buf_ring_mask(count);
	pool->br_len = page_up((size_t)count * sizeof(struct io_uring_buf));
	pool->bufs_len = page_up((size_t)count * size);
	pool->br = map_anon(pool->br_len);
	pool->bufs = map_anon(pool->bufs_len);
	pool->held = calloc(count, sizeof(*pool->held));
	if (!pool->br || !pool->bufs || !pool->held) {
		pool_release_memory(pool);
		return -ENOMEM;
	}
	io_uring_buf_ring_init(pool->br);
	for (uint32_t bid = 0; bid < count; bid++)
		io_uring_buf_ring_add(pool->br, amio__pool_buf(pool, (uint16_t)bid), size,
		                      (uint16_t)bid, (int)pool->mask, (int)bid);
	io_uring_buf_ring_advance(pool->br, (int)count);
	c.data = pool;
	rc = amio__registrar_push(r, &c, 0);
	if (rc < 0) {
		pool_release_memory(pool);
		return rc;
	}
	*out = pool;
	return 0;
}

int amio_pool_put(amio_pool *pool, void *buf)
{
	size_t off;
	uint16_t bid;

	if (!pool || (unsigned char *)buf < pool->bufs)
		return -EINVAL;
	off = (size_t)((unsigned char *)buf - pool->bufs);
	if (off % pool->size || off / pool->size >= pool->count)
		return -EINVAL;
	bid = (uint16_t)(off / pool->size);
	io_uring_buf_ring_add(pool->br, buf, pool->size, bid, (int)pool->mask, 0);
	io_uring_buf_ring_advance(pool->br, 1); /* a release store of the tail */
	ck_pr_store_64(&pool->returned, ck_pr_load_64(&pool->returned) + 1);
	/* The tail before the starved load; pairs with io_starve (its starved
	 * store, then its look at the ring): either it sees this buffer, or we
	 * see it starving and wake it. The poll thread itself (an Amy-mode
	 * consumer) cannot race its own io_starve. */
	if (!amio__is_poll_thread(pool->p))
		ck_pr_fence_store_load();
	if (ck_pr_load_32(&pool->starved) && amio__pool_queue_refill(pool))
		amio__poller_kick(pool->p, NULL);
	return 0;
}

bool amio__pool_queue_refill(amio_pool *pool)
{
	amio_pool *head;

	if (!ck_pr_cas_32(&pool->queued, 0, 1))
		return false; /* queued already */
	do {
		head = ck_pr_load_ptr(&pool->p->refilled);
		pool->next_refilled = head;
	} while (!ck_pr_cas_ptr(&pool->p->refilled, head, pool));
	return true;
}

/* Poll thread: the buffer group goes, then the memory. */
static void destroy(amio_poller *p, amio_pool *pool)
{
	amio_pool **link = &p->pools;

	while (*link && *link != pool)
		link = &(*link)->next_all;
	if (*link)
		*link = pool->next_all;
	if (pool->registered) {
		amio__backend_pool_del(p, pool);
		p->bgids[pool->bgid / 64] &= ~(UINT64_C(1) << (pool->bgid % 64));
	}
	pool_release_memory(pool);
}

int amio_pool_free(amio_pool *pool)
{
	struct amio__cmd c = {.op = AMIO__OP_POOL_FREE};
	int rc;

	if (!pool)
		return -EINVAL;
	/* Every recv ended (its DONE made, so its buffers were all reaped),
	 * and every buffer the kernel took is back. */
	if (ck_pr_load_32(&pool->running) ||
	    ck_pr_load_64(&pool->taken) != ck_pr_load_64(&pool->returned))
		return -EBUSY;
	ck_pr_store_32(&pool->freed, 1);
	/* The poll thread frees at once, unless its own POOL_NEW still waits
	 * in the queue (then the POOL_FREE goes behind it). */
	if (amio__is_poll_thread(pool->p) && pool->applied) {
		destroy(pool->p, pool);
		return 0;
	}
	c.data = pool;
	rc = amio__registrar_push(pool->r, &c, 0);
	if (rc < 0)
		ck_pr_store_32(&pool->freed, 0);
	return rc;
}

/* ---- Poll thread ----------------------------------------------------------- */

static int take_bgid(amio_poller *p)
{
	for (uint32_t w = 0; w < 1024; w++)
		if (~p->bgids[w]) {
			int b = __builtin_ctzll(~p->bgids[w]);

			p->bgids[w] |= UINT64_C(1) << b;
			return (int)(w * 64 + (uint32_t)b);
		}
	return -ENOSPC;
}

void amio__pool_apply(amio_poller *p, const struct amio__cmd *c)
{
	amio_pool *pool = c->data;
	int bgid;

	if (c->op == AMIO__OP_POOL_FREE) {
		destroy(p, pool);
		return;
	}
	pool->next_all = p->pools;
	p->pools = pool;
	pool->applied = true;
	bgid = take_bgid(p);
	if (bgid < 0) {
		pool->err = bgid; /* its recvs end with -ENOSPC */
		return;
	}
	pool->bgid = (uint16_t)bgid;
	pool->err = amio__backend_pool_add(p, pool);
	if (pool->err == 0)
		pool->registered = true;
	else
		p->bgids[bgid / 64] &= ~(UINT64_C(1) << (bgid % 64));
}

void amio__pools_refilled(amio_poller *p)
{
	amio_pool *pool, *next;

	if (!ck_pr_load_ptr(&p->refilled))
		return;
	for (pool = ck_pr_fas_ptr(&p->refilled, NULL); pool; pool = next) {
		uint32_t slot;

		next = pool->next_refilled;
		ck_pr_store_32(&pool->queued, 0);
		ck_pr_store_32(&pool->starved, 0);
		/* Re-armed recvs that find the ring empty again starve again. */
		slot = pool->starved_head;
		pool->starved_head = 0;
		while (slot) {
			struct amio__io *io = &p->reg.ios[slot];
			uint32_t next_slot = io->next_starved;

			io->state &= ~(uint32_t)AMIO__IO_STARVED;
			amio__io_reconcile(p, &p->reg.entries[slot], slot);
			slot = next_slot;
		}
	}
}

void amio__pool_maybe_free(amio_poller *p, amio_pool *pool)
{
	/* An orphan's consumer is gone: free it once no recv uses it. */
	if (pool->orphan && ck_pr_load_32(&pool->running) == 0)
		destroy(p, pool);
}

void amio__pool_orphan(amio_poller *p, struct amio_registrar *r)
{
	amio_pool *pool = p->pools, *next;

	for (; pool; pool = next) {
		next = pool->next_all;
		if (pool->r == r && !pool->orphan) {
			pool->orphan = true;
			amio__pool_maybe_free(p, pool);
		}
	}
}

void amio__pools_free_all(amio_poller *p)
{
	while (p->pools) {
		amio_pool *pool = p->pools;

		p->pools = pool->next_all;
		/* The ring is going: no unregister needed, or possible from
		 * this thread. */
		pool_release_memory(pool);
	}
}
