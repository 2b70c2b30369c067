/* The id table: ids from slot + generation, taken on any thread, given back
 * by the poll thread, never reused. */
#include <pthread.h>

#include "amio_test.h"
#include "internal.h"

START_TEST(ids_carry_slot_and_a_fresh_generation_on_reuse)
{
	struct amio__registry reg;
	int64_t a, b;

	ck_assert_int_eq(amio__registry_init(&reg, 4), 0);
	a = amio__registry_alloc(&reg, AMIO__KIND_SOCKET);
	ck_assert_int_gt(a, 0);
	ck_assert(amio__registry_live(&reg, (uint64_t)a, AMIO__KIND_ANY));
	ck_assert_int_eq(amio__registry_close(&reg, (uint64_t)a, AMIO__KIND_ANY), 0);
	ck_assert(!amio__registry_live(&reg, (uint64_t)a, AMIO__KIND_ANY));
	ck_assert_int_eq(amio__registry_close(&reg, (uint64_t)a, AMIO__KIND_ANY), -ENOENT);
	amio__registry_release(&reg, amio__id_slot((uint64_t)a));
	b = amio__registry_alloc(&reg, AMIO__KIND_SOCKET);
	ck_assert_uint_eq(amio__id_slot((uint64_t)b), amio__id_slot((uint64_t)a));
	ck_assert_uint_eq(amio__id_gen((uint64_t)b), amio__id_gen((uint64_t)a) + 1);
	ck_assert(!amio__registry_live(&reg, (uint64_t)a, AMIO__KIND_ANY));
	ck_assert(amio__registry_live(&reg, (uint64_t)b, AMIO__KIND_ANY));
	amio__registry_destroy(&reg);
}
END_TEST

START_TEST(an_id_is_closed_only_as_its_own_kind)
{
	struct amio__registry reg;
	int64_t t;

	ck_assert_int_eq(amio__registry_init(&reg, 8), 0);
	t = amio__registry_alloc(&reg, AMIO__KIND_TIMER);
	ck_assert(amio__registry_live(&reg, (uint64_t)t, AMIO__KIND_BIT(AMIO__KIND_TIMER)));
	ck_assert(!amio__registry_live(&reg, (uint64_t)t, AMIO__KIND_BIT(AMIO__KIND_SOCKET)));
	ck_assert_int_eq(amio__registry_close(&reg, (uint64_t)t, AMIO__KIND_BIT(AMIO__KIND_SOCKET)),
	                 -ENOENT);
	ck_assert_int_eq(amio__registry_close(&reg, (uint64_t)t, AMIO__KIND_BIT(AMIO__KIND_TIMER)),
	                 0);
	amio__registry_destroy(&reg);
}
END_TEST

START_TEST(the_table_refuses_past_its_capacity_and_recovers)
{
	struct amio__registry reg;
	int64_t ids[3];

	ck_assert_int_eq(amio__registry_init(&reg, 3), 0);
	for (int i = 0; i < 3; i++)
		ck_assert_int_gt(ids[i] = amio__registry_alloc(&reg, AMIO__KIND_SOCKET), 0);
	ck_assert_int_eq(amio__registry_alloc(&reg, AMIO__KIND_SOCKET), -ENOSPC);
	ck_assert_int_eq(amio__registry_alloc(&reg, AMIO__KIND_SOCKET), -ENOSPC);
	ck_assert_int_eq(amio__registry_close(&reg, (uint64_t)ids[1], AMIO__KIND_ANY), 0);
	amio__registry_release(&reg, amio__id_slot((uint64_t)ids[1]));
	ck_assert_int_gt(amio__registry_alloc(&reg, AMIO__KIND_SOCKET), 0);
	ck_assert_int_eq(amio__registry_alloc(&reg, AMIO__KIND_SOCKET), -ENOSPC);
	amio__registry_destroy(&reg);
}
END_TEST

START_TEST(unknown_and_malformed_ids_are_not_live)
{
	struct amio__registry reg;

	ck_assert_int_eq(amio__registry_init(&reg, 8), 0);
	ck_assert(!amio__registry_live(&reg, 0, AMIO__KIND_ANY));
	ck_assert(!amio__registry_live(&reg, 1, AMIO__KIND_ANY)); /* generation 0 */
	ck_assert(!amio__registry_live(&reg, UINT64_MAX, AMIO__KIND_ANY));
	ck_assert(!amio__registry_live(&reg, (UINT64_C(1) << AMIO__SLOT_BITS) | 9, AMIO__KIND_ANY));
	ck_assert_int_eq(amio__registry_close(&reg, 77, AMIO__KIND_ANY), -ENOENT);
	ck_assert_int_eq(amio__registry_init(&reg, 0), -EINVAL);
	amio__registry_destroy(&reg);
}
END_TEST

/* Ids are positive int64s: generation << 24 | slot with generation < 2^39. */
#define GEN_LIMIT (UINT64_C(1) << (64 - AMIO__SLOT_BITS - 1))

START_TEST(a_released_slot_is_free_and_keeps_its_generation)
{
	struct amio__registry reg;
	uint64_t w;
	int64_t a;

	ck_assert_int_eq(amio__registry_init(&reg, 4), 0);
	a = amio__registry_alloc(&reg, AMIO__KIND_TIMER);
	ck_assert_int_gt(a, 0);
	ck_assert_int_eq(amio__registry_close(&reg, (uint64_t)a, AMIO__KIND_ANY), 0);
	amio__registry_release(&reg, amio__id_slot((uint64_t)a));
	w = amio__word_load(&reg.words[amio__id_slot((uint64_t)a)]);
	ck_assert_msg((w & 3) == AMIO__SLOT_FREE, "released slot word 0x%llx: state %u, want FREE",
	              (unsigned long long)w, (unsigned)(w & 3));
	ck_assert_uint_eq(w >> 4, amio__id_gen((uint64_t)a));
	amio__registry_destroy(&reg);
}
END_TEST

/* Put slot s (closed) at generation gen, as if it had lived that often. */
static void age_slot(struct amio__registry *reg, uint32_t s, uint64_t gen)
{
	amio__word_store(&reg->words[s],
	                 amio__slot_word(gen, AMIO__KIND_SOCKET, AMIO__SLOT_CLOSING));
}

START_TEST(a_slot_at_the_last_generation_is_retired_and_ids_stay_positive)
{
	struct amio__registry reg;
	bool retired = false;
	int64_t a;
	uint32_t s;

	ck_assert_int_eq(amio__registry_init(&reg, 2), 0);
	a = amio__registry_alloc(&reg, AMIO__KIND_SOCKET);
	s = amio__id_slot((uint64_t)a);
	ck_assert_int_eq(amio__registry_close(&reg, (uint64_t)a, AMIO__KIND_ANY), 0);
	age_slot(&reg, s, GEN_LIMIT - 3);
	amio__registry_release(&reg, s);
	for (int i = 0; i < 8; i++) {
		int64_t id = amio__registry_alloc(&reg, AMIO__KIND_SOCKET);

		ck_assert_msg(id > 0, "alloc %d returned %lld (0x%llx)", i, (long long)id,
		              (unsigned long long)id);
		ck_assert(amio__registry_live(&reg, (uint64_t)id, AMIO__KIND_ANY));
		if (amio__id_slot((uint64_t)id) == s) {
			ck_assert_msg(!retired,
			              "slot %u handed out again (id 0x%llx) after its last "
			              "generation",
			              s, (unsigned long long)id);
			ck_assert_uint_lt(amio__id_gen((uint64_t)id), GEN_LIMIT);
			retired = amio__id_gen((uint64_t)id) == GEN_LIMIT - 1;
		}
		ck_assert_int_eq(amio__registry_close(&reg, (uint64_t)id, AMIO__KIND_ANY), 0);
		amio__registry_release(&reg, amio__id_slot((uint64_t)id));
	}
	ck_assert_msg(retired, "the last generation was never handed out");
	amio__registry_destroy(&reg);
}
END_TEST

START_TEST(a_table_whose_only_slot_is_retired_refuses_with_enospc)
{
	struct amio__registry reg;
	int64_t a, b;

	ck_assert_int_eq(amio__registry_init(&reg, 1), 0);
	a = amio__registry_alloc(&reg, AMIO__KIND_SOCKET);
	ck_assert_int_eq(amio__registry_close(&reg, (uint64_t)a, AMIO__KIND_ANY), 0);
	age_slot(&reg, amio__id_slot((uint64_t)a), GEN_LIMIT - 2);
	amio__registry_release(&reg, amio__id_slot((uint64_t)a));
	b = amio__registry_alloc(&reg, AMIO__KIND_SOCKET);
	ck_assert_int_gt(b, 0);
	ck_assert_uint_eq(amio__id_gen((uint64_t)b), GEN_LIMIT - 1);
	ck_assert_int_eq(amio__registry_close(&reg, (uint64_t)b, AMIO__KIND_ANY), 0);
	amio__registry_release(&reg, amio__id_slot((uint64_t)b));
	for (int i = 0; i < 4; i++) {
		int64_t id = amio__registry_alloc(&reg, AMIO__KIND_SOCKET);

		ck_assert_msg(id == -ENOSPC, "alloc %d on a retired table returned %lld (0x%llx)",
		              i, (long long)id, (unsigned long long)id);
	}
	amio__registry_destroy(&reg);
}
END_TEST

enum { ALLOCATORS = 4 };
static int PER; /* 50,000 x AMIO_TEST_SCALE */

struct alloc_arg {
	struct amio__registry *reg;
	int64_t *ids;
};

static void *allocate(void *arg)
{
	struct alloc_arg *a = arg;

	for (int i = 0; i < PER; i++) {
		int64_t id;

		while ((id = amio__registry_alloc(a->reg, AMIO__KIND_SOCKET)) == -ENOSPC)
			sched_yield();
		if (id <= 0 || amio__registry_close(a->reg, (uint64_t)id, AMIO__KIND_ANY) != 0)
			ck_abort_msg("alloc/close failed");
		/* Published for the recycling thread's progress count. */
		ck_pr_store_64((uint64_t *)&a->ids[i], (uint64_t)id);
	}
	return NULL;
}

static int cmp_i64(const void *x, const void *y)
{
	int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
	return a < b ? -1 : a > b;
}

/* Registrars allocate concurrently while the "poll thread" recycles slots:
 * the SPMC free ring must hand each freed slot to exactly one of them. */
START_TEST(concurrent_allocation_never_hands_out_an_id_twice)
{
	struct amio__registry reg;
	struct alloc_arg args[ALLOCATORS];
	pthread_t th[ALLOCATORS];
	int64_t *ids = calloc(ALLOCATORS * PER, sizeof(*ids));
	int done = 0;

	ck_assert_int_eq(amio__registry_init(&reg, 1024), 0);
	for (int t = 0; t < ALLOCATORS; t++) {
		args[t] = (struct alloc_arg){&reg, ids + t * PER};
		ck_assert_int_eq(pthread_create(&th[t], NULL, allocate, &args[t]), 0);
	}
	/* Recycle every closed slot, as the poll thread does after final CQEs. */
	while (done < ALLOCATORS * PER) {
		done = 0;
		for (uint32_t s = 1; s <= reg.cap; s++) {
			uint64_t w = ck_pr_load_64(&reg.words[s]);
			if ((w & 3) == AMIO__SLOT_CLOSING) {
				ck_pr_store_64(&reg.words[s], (w & ~UINT64_C(3)) | AMIO__SLOT_FREE);
				amio__registry_release(&reg, s);
			}
		}
		for (int i = 0; i < ALLOCATORS * PER; i++)
			done += ck_pr_load_64((uint64_t *)&ids[i]) != 0;
	}
	for (int t = 0; t < ALLOCATORS; t++)
		pthread_join(th[t], NULL);
	qsort(ids, ALLOCATORS * PER, sizeof(*ids), cmp_i64);
	for (int i = 1; i < ALLOCATORS * PER; i++)
		ck_assert_int_ne(ids[i - 1], ids[i]);
	free(ids);
	amio__registry_destroy(&reg);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("registry");

	PER = t_scale(50000);
	TCase *tc = tcase_create("ids");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, ids_carry_slot_and_a_fresh_generation_on_reuse);
	tcase_add_test(tc, the_table_refuses_past_its_capacity_and_recovers);
	tcase_add_test(tc, an_id_is_closed_only_as_its_own_kind);
	tcase_add_test(tc, unknown_and_malformed_ids_are_not_live);
	tcase_add_test(tc, concurrent_allocation_never_hands_out_an_id_twice);
	suite_add_tcase(s, tc);
	tc = tcase_create("generations");
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, a_released_slot_is_free_and_keeps_its_generation);
	tcase_add_test(tc, a_slot_at_the_last_generation_is_retired_and_ids_stay_positive);
	tcase_add_test(tc, a_table_whose_only_slot_is_retired_refuses_with_enospc);
	suite_add_tcase(s, tc);
	return t_run(s);
}
