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
void *amio__reserve(size_t len)
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
	reg->objs_len = (size_t)(cap + 1) * sizeof(void *);
	reg->ios_len = (size_t)(cap + 1) * sizeof(struct amio__io);
	reg->words = amio__reserve(reg->words_len);
	reg->entries = amio__reserve(reg->entries_len);
	reg->next_free = amio__reserve(reg->next_len);
	reg->objs = amio__reserve(reg->objs_len);
	/* Address space only: an operation's pages become resident as its
	 * slot is first used for one. */
	reg->ios = amio__reserve(reg->ios_len);
	if (!reg->words || !reg->entries || !reg->next_free || !reg->objs || !reg->ios) {
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
	if (reg->objs)
		munmap(reg->objs, reg->objs_len);
	if (reg->ios)
		munmap(reg->ios, reg->ios_len);
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
	       amio__id_gen(id) <= AMIO__MAX_GEN;
}

/* The word id names if its state is one of states (a mask of 1 << state),
 * or 0. */
static uint64_t word_in(const struct amio__registry *reg, uint64_t id, unsigned kinds,
                        unsigned states)
{
	uint64_t w;

	if (!id_in_range(reg, id))
		return 0;
	w = amio__word_load(&reg->words[amio__id_slot(id)]);
	if ((w >> 4) != amio__id_gen(id) || !(kinds & AMIO__KIND_BIT((w >> 2) & 3)) ||
	    !(states & (1u << (w & 3))))
		return 0;
	return w;
}

bool amio__registry_live(const struct amio__registry *reg, uint64_t id, unsigned kinds)
{
	return word_in(reg, id, kinds, 1u << AMIO__SLOT_LIVE) != 0;
}

bool amio__registry_known(const struct amio__registry *reg, uint64_t id)
{
	return word_in(reg, id, AMIO__KIND_ANY,
	               1u << AMIO__SLOT_LIVE | 1u << AMIO__SLOT_CLOSING | 1u << AMIO__SLOT_FIRED) !=
	       0;
}

/* CAS id's word from one of states to CLOSING or FIRED (to). */
static bool move(struct amio__registry *reg, uint64_t id, unsigned kinds, unsigned states,
                 unsigned to)
{
	uint64_t w;

	/* Full CAS: the winner's later command enqueue is ordered after it, and
	 * the reap- and hand-out-time loads see the new state from then on.
	 * A CAS that lost to a move into another accepted state (a cancel's
	 * LIVE -> CLOSING racing the poll thread's LIVE -> FIRED) tries again
	 * from that state; one that finds none accepted (another close won,
	 * or the slot moved on) fails: -ENOENT. */
	while ((w = word_in(reg, id, kinds, states)))
		if (ck_pr_cas_64(&reg->words[amio__id_slot(id)], w, (w & ~UINT64_C(3)) | to))
			return true;
	return false;
}

int amio__registry_close(struct amio__registry *reg, uint64_t id, unsigned kinds)
{
	/* FIRED too: a one-shot whose notification is not handed out yet can
	 * still be cancelled, and then never is. */
	return move(reg, id, kinds, 1u << AMIO__SLOT_LIVE | 1u << AMIO__SLOT_FIRED,
	            AMIO__SLOT_CLOSING)
	           ? 0
	           : -ENOENT;
}

void amio__registry_set_obj(struct amio__registry *reg, uint64_t id, void *obj)
{
	ck_pr_store_ptr(&reg->objs[amio__id_slot(id)], obj);
}

void *amio__registry_obj(const struct amio__registry *reg, uint64_t id)
{
	uint64_t w = word_in(reg, id, AMIO__KIND_ANY, 1u << AMIO__SLOT_LIVE);
	void *obj;

	if (!w)
		return NULL;
	obj = ck_pr_load_ptr(&reg->objs[amio__id_slot(id)]);
	/* The slot may have moved on between the loads (released, taken by
	 * another channel): a word unchanged since before says obj is id's. */
	ck_pr_fence_load();
	return amio__word_load(&reg->words[amio__id_slot(id)]) == w ? obj : NULL;
}

bool amio__registry_fire(struct amio__registry *reg, uint64_t id)
{
	return move(reg, id, AMIO__KIND_ANY, 1u << AMIO__SLOT_LIVE, AMIO__SLOT_FIRED);
}

bool amio__registry_take(struct amio__registry *reg, uint64_t id)
{
	return move(reg, id, AMIO__KIND_ANY, 1u << AMIO__SLOT_FIRED, AMIO__SLOT_CLOSING);
}

void amio__registry_release(struct amio__registry *reg, uint32_t slot)
{
	struct amio__entry *e = &reg->entries[slot];
	uint32_t armgen = e->armgen;
	uint64_t w = amio__word_load(&reg->words[slot]);
	uint64_t head = __atomic_load_n(&reg->free_head, __ATOMIC_RELAXED);

	/* armgen survives reuse: a POLL_REMOVE still queued for the old poll
	 * names (slot, old armgen) and must never match the next poll. */
	memset(e, 0, sizeof(*e));
	e->armgen = armgen;
	ck_pr_store_ptr(&reg->objs[slot], NULL);
	/* FREE keeps the generation: a command or channel raise that arrives
	 * after this release names a FREE word and is ignored (amio__entry_for),
	 * and the next allocation takes generation + 1. */
	amio__word_store(&reg->words[slot], (w & ~UINT64_C(3)) | AMIO__SLOT_FREE);
	/* A slot at the last generation is retired: one more allocation would
	 * make an id >= 2^63, which is not a positive int64. */
	if ((w >> 4) >= AMIO__MAX_GEN)
		return;
	/* Release CAS: the entry reset and the link before the slot is
	 * published (pairs with pop_free's acquire). */
	do
		__atomic_store_n(&reg->next_free[slot], amio__id_slot(head), __ATOMIC_RELAXED);
	while (!__atomic_compare_exchange_n(&reg->free_head, &head,
	                                    free_head((head >> AMIO__SLOT_BITS) + 1, slot), true,
	                                    __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}
