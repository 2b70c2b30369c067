/*
 * Concurrency Kit as amio uses it: ck_pr and ck_ring, and, under
 * ThreadSanitizer, the acquire/release semantics TSan must see.
 *
 * ck_pr's loads and stores are volatile accesses ordered by separate fences
 * (ck_pr_fence_*), which TSan does not model: every ck_ring hand-off, slot
 * word and doorbell would be reported as a race (or, worse, muted wholesale
 * by suppressions that also hide races in amio's own code). Under TSan they
 * become __atomic loads with acquire and stores with release, which is what
 * the fences provide; ck_ring.h, a header of inline functions, is included
 * after the remap, so its head/tail hand-offs are seen too and its slot
 * copies are ordered by them. CK_USE_CC_BUILTINS=1 (CMakeLists.txt) makes
 * ck's read-modify-writes __sync builtins, which TSan sees as well. The
 * store-load fences of the Dekker pairs stay invisible to TSan; the places
 * that need TSan to see one use a seq_cst RMW (internal.h, channel.c).
 * Elsewhere this header is plain ck: the instructions are unchanged.
 */
#ifndef AMIO_CK_H
#define AMIO_CK_H

#include <ck_pr.h>

#if defined(__SANITIZE_THREAD__)
#define AMIO__TSAN_LOAD(t)     __atomic_load_n((t), __ATOMIC_ACQUIRE)
#define AMIO__TSAN_STORE(t, v) __atomic_store_n((t), (v), __ATOMIC_RELEASE)
#undef ck_pr_load_8
#undef ck_pr_load_32
#undef ck_pr_load_64
#undef ck_pr_load_uint
#undef ck_pr_load_int
#undef ck_pr_load_ptr
#undef ck_pr_store_8
#undef ck_pr_store_32
#undef ck_pr_store_64
#undef ck_pr_store_uint
#undef ck_pr_store_int
#undef ck_pr_store_ptr
#define ck_pr_load_8(t)        AMIO__TSAN_LOAD(t)
#define ck_pr_load_32(t)       AMIO__TSAN_LOAD(t)
#define ck_pr_load_64(t)       AMIO__TSAN_LOAD(t)
#define ck_pr_load_uint(t)     AMIO__TSAN_LOAD(t)
#define ck_pr_load_int(t)      AMIO__TSAN_LOAD(t)
#define ck_pr_load_ptr(t)      AMIO__TSAN_LOAD(t)
#define ck_pr_store_8(t, v)    AMIO__TSAN_STORE(t, v)
#define ck_pr_store_32(t, v)   AMIO__TSAN_STORE(t, v)
#define ck_pr_store_64(t, v)   AMIO__TSAN_STORE(t, v)
#define ck_pr_store_uint(t, v) AMIO__TSAN_STORE(t, v)
#define ck_pr_store_int(t, v)  AMIO__TSAN_STORE(t, v)
#define ck_pr_store_ptr(t, v)  AMIO__TSAN_STORE(t, v)
/* ck's builtin read-modify-writes start from a volatile load (a CAS loop):
 * TSan would report that load racing other threads' RMWs. */
#define AMIO__TSAN_CAS(t, o, n)                                                                    \
	({                                                                                         \
		__typeof__(*(t)) o_ = (o);                                                         \
		__atomic_compare_exchange_n((t), &o_, (n), 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
	})
#define AMIO__TSAN_CAS_VALUE(t, o, n, vp)                                                          \
	({                                                                                         \
		__typeof__(*(t)) o_ = (o);                                                         \
		_Bool r_ = __atomic_compare_exchange_n((t), &o_, (n), 0, __ATOMIC_SEQ_CST,         \
		                                       __ATOMIC_SEQ_CST);                          \
		*(vp) = o_;                                                                        \
		r_;                                                                                \
	})
#undef ck_pr_cas_32
#undef ck_pr_cas_64
#undef ck_pr_cas_ptr
#undef ck_pr_cas_uint
#undef ck_pr_cas_64_value
#undef ck_pr_cas_uint_value
#undef ck_pr_faa_32
#undef ck_pr_faa_64
#undef ck_pr_fas_32
#undef ck_pr_fas_64
#undef ck_pr_fas_ptr
#undef ck_pr_inc_32
#undef ck_pr_dec_32
#undef ck_pr_dec_64
#undef ck_pr_dec_int
#define ck_pr_cas_32(t, o, n)            AMIO__TSAN_CAS(t, o, n)
#define ck_pr_cas_64(t, o, n)            AMIO__TSAN_CAS(t, o, n)
#define ck_pr_cas_ptr(t, o, n)           AMIO__TSAN_CAS(t, o, n)
#define ck_pr_cas_uint(t, o, n)          AMIO__TSAN_CAS(t, o, n)
#define ck_pr_cas_64_value(t, o, n, v)   AMIO__TSAN_CAS_VALUE(t, o, n, v)
#define ck_pr_cas_uint_value(t, o, n, v) AMIO__TSAN_CAS_VALUE(t, o, n, v)
#define ck_pr_faa_32(t, d)               __atomic_fetch_add((t), (d), __ATOMIC_SEQ_CST)
#define ck_pr_faa_64(t, d)               __atomic_fetch_add((t), (d), __ATOMIC_SEQ_CST)
#define ck_pr_fas_32(t, v)               __atomic_exchange_n((t), (v), __ATOMIC_SEQ_CST)
#define ck_pr_fas_64(t, v)               __atomic_exchange_n((t), (v), __ATOMIC_SEQ_CST)
#define ck_pr_fas_ptr(t, v)              __atomic_exchange_n((t), (v), __ATOMIC_SEQ_CST)
#define ck_pr_inc_32(t)                  ((void)__atomic_fetch_add((t), 1, __ATOMIC_SEQ_CST))
#define ck_pr_dec_32(t)                  ((void)__atomic_fetch_sub((t), 1, __ATOMIC_SEQ_CST))
#define ck_pr_dec_64(t)                  ((void)__atomic_fetch_sub((t), 1, __ATOMIC_SEQ_CST))
#define ck_pr_dec_int(t)                 ((void)__atomic_fetch_sub((t), 1, __ATOMIC_SEQ_CST))
#endif

#include <ck_ring.h>

#endif /* AMIO_CK_H */
