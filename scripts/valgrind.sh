#!/bin/sh
# valgrind memcheck on single-threaded test suites (valgrind runs threads
# one at a time, so the threaded suites belong to TSan; check_poller's
# cross-thread stop test hangs under valgrind, whose io_uring support does
# not cover MSG_RING wakeups, and check_fault drives the same core harder):
#   sh scripts/valgrind.sh [build_dir]     (default build/debug)
# Any memcheck error or leak fails the run. Check forks a child per test;
# valgrind follows it. Timeouts are stretched: memcheck is ~20x slower.
set -eu
BUILD=${1:-build/debug}
TESTS="${TESTS:-check_fault check_frame_reader check_frame_writer check_line_reader}"
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind not installed (make valgrind installs it)" >&2; exit 1; }
status=0
for t in $TESTS; do
	bin=$BUILD/tests/$t
	[ -x "$bin" ] || { echo "valgrind: $t not built, skipped"; continue; }
	start=$(date +%s)
	# check_fault's "inbox" case needs MSG_RING wakeups, which valgrind
	# does not deliver to a sleeping waiter: only its "injected" case here.
	case=""
	[ "$t" = check_fault ] && case=injected
	if env ${case:+CK_RUN_CASE=$case} GLIBC_TUNABLES=glibc.malloc.tcache_count=0 CK_TIMEOUT_MULTIPLIER=20 AMIO_TEST_SCALE=${AMIO_TEST_SCALE:-0.1} \
		valgrind -q --fair-sched=yes --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
		--child-silent-after-fork=no "$bin" >"$BUILD/valgrind-$t.log" 2>&1; then
		echo "valgrind: $t clean ($(($(date +%s) - start)) s)"
		echo "RELIABILITY|memcheck|valgrind memcheck on $t|$(sed -n 's/^[0-9]*%: Checks: \([0-9]*\).*/\1 checks/p' "$BUILD/valgrind-$t.log" | tail -n 1)|0 errors, 0 leaks"
	else
		echo "valgrind: $t FAILED (log: $BUILD/valgrind-$t.log)" >&2
		tail -n 30 "$BUILD/valgrind-$t.log" >&2
		status=1
	fi
done
exit $status
