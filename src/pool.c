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
	free(pool->lent);
	free(pool);
}

static void *map_anon(size_t len)
{
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return m == MAP_FAILED ? NULL : m;
}

/* Any thread: a free io_uring buffer group id, taken now so that a caller
 * past the limit hears -ENOSPC from amio_pool_new itself. */
static int take_bgid(amio_poller *p)
{
	for (uint32_t w = 0; w < AMIO__POOL_GROUP_WORDS; w++) {
		uint64_t word = ck_pr_load_64(&p->bgids[w]);

		while (~word) {
			int b = __builtin_ctzll(~word);

			if (ck_pr_cas_64_value(&p->bgids[w], word, word | UINT64_C(1) << b, &word))
				return (int)(w * 64 + (uint32_t)b);
		}
	}
	return -ENOSPC;
}

/* Any thread (the poll thread's destroy, or a failed amio_pool_new). */
static void give_bgid(amio_poller *p, uint16_t bgid)
{
	uint64_t *w = &p->bgids[bgid / 64], word = ck_pr_load_64(w);

	while (!ck_pr_cas_64_value(w, word, word & ~(UINT64_C(1) << (bgid % 64)), &word))
		;
}

static void destroy(amio_poller *p, amio_pool *pool);
static void unwake(amio_poller *p, amio_pool *pool);

static amio_pool *pool_alloc(amio_registrar *r, uint32_t count, uint32_t size)
{
	amio_pool *pool = calloc(1, sizeof(*pool));

	if (!pool)
		return NULL;
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
	pool->lent = calloc(count, sizeof(*pool->lent));
	if (!pool->br || !pool->bufs || !pool->held || !pool->lent) {
		pool_release_memory(pool);
		return NULL;
	}
	io_uring_buf_ring_init(pool->br);
	for (uint32_t bid = 0; bid < count; bid++)
		io_uring_buf_ring_add(pool->br, amio__pool_buf(pool, (uint16_t)bid), size,
		                      (uint16_t)bid, (int)pool->mask, (int)bid);
	io_uring_buf_ring_advance(pool->br, (int)count);
	return pool;
}

/* Poll thread: the pool joins the live list and its group the kernel. */
static int pool_register(amio_poller *p, amio_pool *pool)
{
	pool->next_all = p->pools;
	if (p->pools)
		p->pools->prev_all = &pool->next_all;
	pool->prev_all = &p->pools;
	p->pools = pool;
	pool->applied = true;
	pool->err = amio__backend_pool_add(p, pool);
	pool->registered = pool->err == 0;
	return pool->err;
}

int amio_pool_new(amio_registrar *r, uint32_t count, uint32_t size, amio_pool **out)
{
	struct amio__cmd c = {.op = AMIO__OP_POOL_NEW};
	amio_pool *pool;
	int bgid, rc;

	if (!r || !out || count == 0 || count > AMIO_POOL_MAX_BUFFERS || (count & (count - 1)) ||
	    size == 0 || size > AMIO_POOL_MAX_SIZE)
		return -EINVAL;
	if (ck_pr_load_32(&r->p->shutdown))
		return -ESHUTDOWN;
	bgid = take_bgid(r->p);
	if (bgid < 0)
		return bgid;
	pool = pool_alloc(r, count, size);
	if (!pool) {
		give_bgid(r->p, (uint16_t)bgid);
		return -ENOMEM;
	}
	pool->bgid = (uint16_t)bgid;
	/* The poll thread registers at once and reports the kernel's answer
	 * (another thread cannot: SINGLE_ISSUER). */
	if (amio__is_poll_thread(r->p)) {
		rc = pool_register(r->p, pool);
		if (rc < 0)
			destroy(r->p, pool);
		else
			*out = pool;
		return rc;
	}
	c.data = pool;
	rc = amio__registrar_push(r, &c, 0);
	if (rc < 0) {
		give_bgid(r->p, (uint16_t)bgid);
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
	/* Only a buffer its consumer took goes back: a second put of it, or
	 * of one the kernel or the ring still holds, or of one lent again
	 * in a note not taken yet, would put it in the ring twice (two recvs
	 * landing in one buffer). The poll thread sets NOTED before it
	 * publishes the note, the consumer HELD when it takes it, this put
	 * FREE: one writer at a time, in that order. */
	if (ck_pr_load_8(&pool->lent[bid]) != AMIO__LENT_HELD)
		return -EINVAL;
	ck_pr_store_8(&pool->lent[bid], AMIO__LENT_FREE);
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

/* Poll thread: the buffer group goes, then the memory; a pool still on the
 * refilled stack (a put queued it after its last recv ended) is freed by the
 * walk that takes it off. Its consumer's put came before the free that led
 * here (one thread, then the command queue), so queued is final now. */
static void destroy(amio_poller *p, amio_pool *pool)
{
	if (pool->prev_all) {
		*pool->prev_all = pool->next_all;
		if (pool->next_all)
			pool->next_all->prev_all = pool->prev_all;
		pool->prev_all = NULL;
	}
	if (pool->on_waking)
		unwake(p, pool);
	if (pool->registered)
		amio__backend_pool_del(p, pool);
	pool->registered = false;
	give_bgid(p, pool->bgid);
	if (ck_pr_load_32(&pool->queued)) {
		pool->dead = true;
		return;
	}
	pool_release_memory(pool);
}

int amio_pool_free(amio_pool *pool)
{
	struct amio__cmd c = {.op = AMIO__OP_POOL_FREE};
	int rc;

	/* freed catches a second free until the poll thread applies the first
	 * (after that the handle is gone: amio.h). */
	if (!pool || ck_pr_load_32(&pool->freed))
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

void amio__pool_apply(amio_poller *p, const struct amio__cmd *c)
{
	amio_pool *pool = c->data;

	if (c->op == AMIO__OP_POOL_FREE)
		destroy(p, pool);
	else
		(void)pool_register(p, pool); /* a failure: its recvs end with it */
}

uint32_t amio__pool_available(amio_poller *p, const amio_pool *pool)
{
	uint16_t tail = io_uring_smp_load_acquire(&pool->br->tail);
	uint64_t out = ck_pr_load_64(&pool->taken) - ck_pr_load_64(&pool->returned);

	/* epoll takes from the ring itself and knows its head; the kernel's
	 * head is not shown (before 6.8), so count what it took and we got
	 * back: an upper bound (a buffer taken for a CQE not reaped yet is
	 * counted as free; its recv starves again, no more). */
	uint32_t free_now = p->be.ops->enter_to_peek ? (uint16_t)(tail - pool->ep_head)
	                    : out >= pool->count     ? 0
	                                             : pool->count - (uint32_t)out;

	/* Less those promised to recvs woken and not heard from yet: waking
	 * another for the same buffer only makes it starve again. */
	return free_now > pool->waking ? free_now - pool->waking : 0;
}

void amio__pool_woken(amio_poller *p, amio_pool *pool, struct amio__io *io)
{
	if (!(io->state & AMIO__IO_WOKEN))
		return;
	io->state &= ~(uint32_t)AMIO__IO_WOKEN;
	if (io->woken_epoch == p->reap_epoch && pool->waking)
		pool->waking--; /* else amio__pools_reaped let its promise go */
	/* Its promised buffer may be free still (it ended, or an armed recv
	 * took another): the next starved recv gets the turn. */
	if (pool->starved_head && amio__pool_available(p, pool))
		(void)amio__pool_queue_refill(pool);
}

void amio__pool_starve(amio_poller *p, amio_pool *pool, uint32_t slot)
{
	p->reg.ios[slot].next_starved = 0;
	if (pool->starved_head)
		p->reg.ios[pool->starved_tail].next_starved = slot;
	else
		pool->starved_head = slot;
	pool->starved_tail = slot;
	ck_pr_store_32(&pool->starved, 1);
}

void amio__pool_unstarve(amio_poller *p, amio_pool *pool, uint32_t slot)
{
	uint32_t *link = &pool->starved_head, prev = 0;

	while (*link && *link != slot) {
		prev = *link;
		link = &p->reg.ios[*link].next_starved;
	}
	if (*link) {
		*link = p->reg.ios[slot].next_starved;
		if (pool->starved_tail == slot)
			pool->starved_tail = prev;
	}
	/* Nobody waits: a put need not queue the pool (one that read starved
	 * before this store queues it for nothing, which is harmless). */
	if (!pool->starved_head)
		ck_pr_store_32(&pool->starved, 0);
}

/* Re-arm as many starved recvs as buffers are free, oldest first: a put of
 * one buffer wakes one recv, not every recv of the pool (all but one would
 * find the ring empty again). */
static void wake_starved(amio_poller *p, amio_pool *pool)
{
	uint32_t n = amio__pool_available(p, pool);

	/* An orphan's recvs are ending: one ending may free it (maybe_free). */
	while (!pool->orphan && n-- && pool->starved_head) {
		uint32_t slot = pool->starved_head;
		struct amio__io *io = &p->reg.ios[slot];

		amio__pool_unstarve(p, pool, slot);
		io->state = (io->state & ~(uint32_t)AMIO__IO_STARVED) | AMIO__IO_WOKEN;
		io->woken_epoch = p->reap_epoch;
		pool->waking++;
		if (!pool->on_waking) {
			pool->on_waking = true;
			pool->next_waking = p->waking_pools;
			p->waking_pools = pool;
		}
		amio__io_reconcile(p, &p->reg.entries[slot], slot);
	}
}

void amio__pools_reaped(amio_poller *p)
{
	amio_pool *pool = p->waking_pools, *next;

	p->reap_epoch++;
	p->waking_pools = NULL;
	for (; pool; pool = next) {
		next = pool->next_waking;
		pool->on_waking = false;
		pool->waking = 0;
		if (!pool->orphan && pool->starved_head && amio__pool_available(p, pool))
			(void)amio__pool_queue_refill(pool);
	}
}

/* Poll thread: off the waking list (a pool being destroyed). */
static void unwake(amio_poller *p, amio_pool *pool)
{
	amio_pool **link = &p->waking_pools;

	while (*link && *link != pool)
		link = &(*link)->next_waking;
	if (*link)
		*link = pool->next_waking;
	pool->on_waking = false;
}

void amio__pools_refilled(amio_poller *p)
{
	amio_pool *pool, *next;

	if (!ck_pr_load_ptr(&p->refilled))
		return;
	for (pool = ck_pr_fas_ptr(&p->refilled, NULL); pool; pool = next) {
		next = pool->next_refilled;
		/* queued 0 before the look at the ring (fas: a full barrier);
		 * pairs with amio_pool_put's tail store, fence, starved load and
		 * queued CAS: either we count its buffer, or it queues the pool
		 * again. */
		(void)ck_pr_fas_32(&pool->queued, 0);
		if (pool->dead)
			pool_release_memory(pool);
		else
			wake_starved(p, pool);
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
	amio_pool *pool, *next;

	/* The refilled stack first: it may hold dead pools (on no other list)
	 * and links live ones through memory freed below. */
	for (pool = ck_pr_fas_ptr(&p->refilled, NULL); pool; pool = next) {
		next = pool->next_refilled;
		if (pool->dead)
			pool_release_memory(pool);
	}
	while (p->pools) {
		pool = p->pools;
		p->pools = pool->next_all;
		/* The ring is going: no unregister needed, or possible from
		 * this thread. */
		pool_release_memory(pool);
	}
}
