#!/bin/sh
# Does the command pass on a busy machine? Runs it while N busy loops
# (default 2) compete for the CPUs, as other work on a shared machine or a
# CI runner would; the suites assert contracts, not speed, so `make test`
# must pass like this.
#   sh scripts/busy.sh [-n N] [-p] command [args...]
#   -n N  busy loops (default: BUSY_LOOPS, else 2)
#   -p    pin loop i to CPU i mod nproc (taskset); default: not pinned, the
#         scheduler moves them like any other load
# The loops are killed when the command ends, fails or is interrupted
# (Ctrl-C, SIGTERM); the exit status is the command's (130/143 if
# interrupted).
set -u

usage() {
	echo "usage: sh scripts/busy.sh [-n loops] [-p] command [args...]" >&2
	exit 2
}

loops=${BUSY_LOOPS:-2}
pin=0
while getopts n:p opt; do
	case $opt in
	n) loops=$OPTARG ;;
	p) pin=1 ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || usage
case $loops in
'' | *[!0-9]*) usage ;;
esac
if [ "$pin" = 1 ] && ! command -v taskset >/dev/null 2>&1; then
	echo "busy.sh: no taskset (util-linux): loops not pinned" >&2
	pin=0
fi
ncpu=$(nproc 2>/dev/null || echo 1)

pids=""
# A loop signalled before its forked shell has exec'd can lose the signal
# (the copy of this shell still holds our TERM trap): ask again until it is
# gone, then SIGKILL.
stop_loops() {
	for pid in $pids; do
		tries=0
		while kill "$pid" 2>/dev/null && [ "$tries" -lt 20 ]; do
			sleep 0.1 2>/dev/null || sleep 1
			tries=$((tries + 1))
		done
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	pids=""
}
trap stop_loops EXIT
trap 'stop_loops; exit 130' INT
trap 'stop_loops; exit 143' TERM HUP

i=0
while [ "$i" -lt "$loops" ]; do
	if [ "$pin" = 1 ]; then
		taskset -c $((i % ncpu)) sh -c 'while :; do :; done' &
	else
		sh -c 'while :; do :; done' &
	fi
	pids="$pids $!"
	i=$((i + 1))
done
echo "busy.sh: $loops busy loop(s) on $ncpu CPU(s) (pids$pids): $*" >&2

"$@"
rc=$?
stop_loops
echo "busy.sh: exit status $rc" >&2
exit $rc
