#!/bin/sh
# make torture SECONDS=N: loop check_model (tests/check_model.c) over fresh
# seeds for N seconds, alternating the debug and ASan builds and the io_uring
# and epoll backends, and print the
# operations and seeds run. Stops at the first violation (its output names
# the seed: AMIO_MODEL_SEED=<n> reproduces it).
# Usage: scripts/torture.sh SECONDS DEBUG_BIN ASAN_BIN
set -u
total=${1:-60}
debug=$2
asan=$3
chunk=${TORTURE_CHUNK:-30}
log=${TMPDIR:-/tmp}/amio-torture.$$
end=$(( $(date +%s) + total ))
seeds=0 ops=0 notes=0 runs=0
while :; do
	left=$(( end - $(date +%s) ))
	[ "$left" -le 0 ] && break
	[ "$left" -lt "$chunk" ] && chunk=$left
	[ "$chunk" -lt 2 ] && chunk=2
	if [ $(( runs % 2 )) -eq 0 ]; then bin=$debug; name=debug; else bin=$asan; name=asan; fi
	# Both backends: debug and asan on io_uring, then on epoll.
	if [ $(( runs / 2 % 2 )) -eq 0 ]; then backend=io_uring; else backend=epoll; fi
	backend=${TORTURE_BACKEND:-$backend} # one backend only, if set
	name="$name/$backend"
	runs=$(( runs + 1 ))
	AMIO_BACKEND=$backend ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	AMIO_MODEL_SECONDS=$chunk "$bin" >"$log" 2>&1
	rc=$?
	line=$(sed -n 's/^MODEL|seeds \([0-9]*\)|operations \([0-9]*\)|notifications \([0-9]*\)$/\1 \2 \3/p' "$log")
	if [ $rc -ne 0 ] || [ -z "$line" ]; then
		grep -v '^Running suite' "$log" | tail -n 120
		echo "torture: FAILED in the $name build after $seeds seeds, $ops operations (log: $log)"
		exit 1
	fi
	set -- $line
	seeds=$(( seeds + $1 )); ops=$(( ops + $2 )); notes=$(( notes + $3 ))
done
rm -f "$log"
echo "torture: $seeds seeds, $ops operations, $notes notifications checked in $total s (debug and asan builds, ${TORTURE_BACKEND:-io_uring and epoll}): no violation"
