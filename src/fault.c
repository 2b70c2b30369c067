/* Fault injection for the tests (src/fault.h); built only with
 * -DAMIO_FAULT_INJECTION=ON. */
#include <ck_pr.h>
#include <errno.h>

#include "fault.h"

struct site {
	uint32_t every; /* 0: off */
	int err;
	uint64_t calls, hits;
};

static struct site sites[AMIO__FAULT_SITES];

void amio__fault_set(enum amio__fault_site site, int err, uint32_t every)
{
	struct site *s = &sites[site];

	ck_pr_store_32(&s->every, 0);
	ck_pr_fence_store();
	ck_pr_store_int(&s->err, err);
	ck_pr_store_64(&s->calls, 0);
	ck_pr_store_64(&s->hits, 0);
	ck_pr_fence_store();
	ck_pr_store_32(&s->every, every);
}

uint64_t amio__fault_count(enum amio__fault_site site)
{
	return ck_pr_load_64(&sites[site].hits);
}

int amio__fault(enum amio__fault_site site)
{
	struct site *s = &sites[site];
	uint32_t every = ck_pr_load_32(&s->every);
	uint64_t hits;

	if (every == 0)
		return 0;
	ck_pr_fence_load();
	if (site == AMIO__FAULT_WAKE) { /* any thread: an RMW */
		if ((ck_pr_faa_64(&s->calls, 1) + 1) % every != 0)
			return 0;
		ck_pr_faa_64(&s->hits, 1);
		return -ck_pr_load_int(&s->err);
	}
	/* Only the poll thread counts: plain load + store, no RMW. */
	ck_pr_store_64(&s->calls, ck_pr_load_64(&s->calls) + 1);
	hits = ck_pr_load_64(&s->hits);
	if (ck_pr_load_64(&s->calls) % every != 0)
		return 0;
	ck_pr_store_64(&s->hits, hits + 1);
	return site == AMIO__FAULT_ENTER ? -ck_pr_load_int(&s->err) : -EBUSY;
}
