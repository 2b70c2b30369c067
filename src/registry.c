/*
 * Ids and the id -> entry table: which slot and generation an id names, and
 * how slots are taken on any thread and given back by the poll thread.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

/* Reserve address space only: pages become resident as slots are first used,
 * so a large max_registrations costs nothing until it is reached. */
static void *reserve(size_t len)
{
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return m == MAP_FAILED ? NULL : m;
}

int amio__registry_init(struct amio__registry *reg, uint32_t cap)
{
	memset(reg, 0, sizeof(*reg));
	if (cap == 0 || cap > AMIO__MAX_SLOTS)
		return -EINVAL;
	reg->cap = cap;
	reg->words_len = (size_t)(cap + 1) * sizeof(uint64_t);
	reg->entries_len = (size_t)(cap + 1) * sizeof(struct amio__entry);
	reg->next_len = (size_t)(cap + 1) * sizeof(uint32_t);
	reg->words = reserve(reg->words_len);
	reg->entries = reserve(reg->entries_len);
	reg->next_free = reserve(reg->next_len);
	if (!reg->words || !reg->entries || !reg->next_free) {
		amio__registry_destroy(reg);
		return -ENOMEM;
	}
	reg->fresh = 1; /* slot 0 is never used: id 0 is not an id */
	return 0;
}

void amio__registry_destroy(struct amio__registry *reg)
{
	if (reg->words)
		munmap(reg->words, reg->words_len);
	if (reg->entries)
		munmap(reg->entries, reg->entries_len);
	if (reg->next_free)
		munmap(reg->next_free, reg->next_len);
	memset(reg, 0, sizeof(*reg));
}

static uint64_t free_head(uint64_t tag, uint32_t slot)
{
	return tag << AMIO__SLOT_BITS | slot;
}

/* Pop the most recently freed slot (any thread, many at once), or 0. The
 * free stack uses __atomic builtins (seen by TSan, unlike ck_pr's volatile
 * loads): a pop's acquire CAS pairs with the push's release CAS, so the
 * entry reset and link stores before a push happen before the popper's use. */
static uint32_t pop_free(struct amio__registry *reg)
{
	uint64_t head = __atomic_load_n(&reg->free_head, __ATOMIC_ACQUIRE), next;
	uint32_t slot;

	do {
		slot = amio__id_slot(head);
		if (slot == 0)
			return 0;
		/* The link may be stale if slot was popped and pushed again
		 * since our load: the tag has moved on and the CAS fails. */
		next = free_head((head >> AMIO__SLOT_BITS) + 1,
		                 __atomic_load_n(&reg->next_free[slot], __ATOMIC_RELAXED));
	} while (!__atomic_compare_exchange_n(&reg->free_head, &head, next, true, __ATOMIC_ACQ_REL,
	                                      __ATOMIC_ACQUIRE));
	return slot;
}

int64_t amio__registry_alloc(struct amio__registry *reg, unsigned kind)
{
	uint32_t slot;
	uint64_t gen;

	/* Freed slots first, then never-used ones. */
	slot = pop_free(reg);
	if (slot == 0) {
		uint64_t fresh = ck_pr_faa_64(&reg->fresh, 1);
		if (fresh > reg->cap) {
			/* Undo so the counter cannot run away under pressure. */
			ck_pr_dec_64(&reg->fresh);
			return -ENOSPC;
		}
		slot = (uint32_t)fresh;
	}
	/* The slot is ours alone until we publish LIVE; the store is atomic
	 * because other threads may validate stale ids against it. */
	gen = (amio__word_load(&reg->words[slot]) >> 4) + 1;
	amio__word_store(&reg->words[slot], amio__slot_word(gen, kind, AMIO__SLOT_LIVE));
	return (int64_t)(gen << AMIO__SLOT_BITS | slot);
}

static bool id_in_range(const struct amio__registry *reg, uint64_t id)
{
	uint32_t slot = amio__id_slot(id);
	return slot != 0 && slot <= reg->cap && amio__id_gen(id) != 0 &&
	       amio__id_gen(id) < (UINT64_C(1) << (64 - AMIO__SLOT_BITS - 1));
}

/* The word of a live id of one of kinds, or 0. */
static uint64_t live_word(const struct amio__registry *reg, uint64_t id, unsigned kinds)
{
	uint64_t w;
	unsigned kind;

	if (!id_in_range(reg, id))
		return 0;
	w = amio__word_load(&reg->words[amio__id_slot(id)]);
	kind = (unsigned)(w >> 2) & 3;
	if (w != amio__slot_word(amio__id_gen(id), kind, AMIO__SLOT_LIVE) ||
	    !(kinds & AMIO__KIND_BIT(kind)))
		return 0;
	return w;
}

bool amio__registry_live(const struct amio__registry *reg, uint64_t id, unsigned kinds)
{
	return live_word(reg, id, kinds) != 0;
}

int amio__registry_close(struct amio__registry *reg, uint64_t id, unsigned kinds)
{
	uint64_t live = live_word(reg, id, kinds), closing;

	if (!live)
		return -ENOENT;
	closing = (live & ~UINT64_C(3)) | AMIO__SLOT_CLOSING;
	/* Full CAS: the winner's later command enqueue is ordered after it, and
	 * the poll thread's reap-time load sees CLOSING from then on. */
	return ck_pr_cas_64(&reg->words[amio__id_slot(id)], live, closing) ? 0 : -ENOENT;
}

void amio__registry_release(struct amio__registry *reg, uint32_t slot)
{
	struct amio__entry *e = &reg->entries[slot];
	uint32_t armgen = e->armgen;
	uint64_t head = __atomic_load_n(&reg->free_head, __ATOMIC_RELAXED);

	/* armgen survives reuse: a POLL_REMOVE still queued for the old poll
	 * names (slot, old armgen) and must never match the next poll. */
	memset(e, 0, sizeof(*e));
	e->armgen = armgen;
	/* Release CAS: the entry reset and the link before the slot is
	 * published (pairs with pop_free's acquire). */
	do
		__atomic_store_n(&reg->next_free[slot], amio__id_slot(head), __ATOMIC_RELAXED);
	while (!__atomic_compare_exchange_n(&reg->free_head, &head,
	                                    free_head((head >> AMIO__SLOT_BITS) + 1, slot), true,
	                                    __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}
