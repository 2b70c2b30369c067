#!/bin/sh
# Echo benchmark: every built server against the same client, in the same run.
#   sh bench/run.sh [build_dir]        (default build/release)
#   QUICK=1 sh bench/run.sh ...        short windows (what `make bench` runs)
#   env: REPS, WARM, SECS (seconds), PORT, SRV_CPU, CLI_CPU, RESULTS_DIR,
#   BENCH_AMIO_SPIN_US=us (amio servers' idle spin, spin_us; default adaptive),
#   BENCH_SERVERS="name:binary ..." (a subset, e.g. "amio-amy:srv_amio_amy epoll-amy:srv_epoll_amy"),
#   BENCH_POLL_SCHED_BATCH=1 (two-thread servers' poll thread in SCHED_BATCH),
#   BENCH_TAG=name (results file echo-DATE-name.md)
# Each server must first pass an integrity run (1 B..64 KiB messages written
# in random split pieces, 256 in flight per connection, reads paused now and
# then so the server's writes come back partial (EAGAIN), every byte checked)
# or it is not benchmarked. Then, for REPS repetitions, the servers take
# turns (interleaved); each runs every row. Server pinned to CPU 0, client to CPU 1. Server CPU per request comes
# from /proc/PID/stat (utime+stime, all threads) over the whole client run,
# syscalls per request from `perf stat -e raw_syscalls:sys_enter -p PID`.
# Writes bench/results/echo-YYYY-MM-DD.md (the table with medians, min-max
# and ratios to epoll and uring-poll) and prints it.
set -eu

BUILD=${1:-build/release}
BIN=$BUILD/bench
HERE=$(cd "$(dirname "$0")" && pwd)
OUT_DIR=${RESULTS_DIR:-$HERE/results}
# BENCH_TAG=name: results go to echo-DATE-name.md (a variant run beside the main one).
STEM=echo-$(date +%F)${BENCH_TAG:+-$BENCH_TAG}
OUT=$OUT_DIR/$STEM.md
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
	REPS=${REPS:-3}
	WARM=${WARM:-0.2}
	SECS=${SECS:-0.45}
else
	REPS=${REPS:-3}
	WARM=${WARM:-1}
	SECS=${SECS:-5}
fi
PORT=${PORT:-19000}
SRV_CPU=${SRV_CPU:-0}
CLI_CPU=${CLI_CPU:-1}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# name:binary, in table order.
ALL=${BENCH_SERVERS:-"amio-amy:srv_amio_amy amio-inbox:srv_amio_inbox amio-single:srv_amio_single
uring-poll:srv_uring_poll uring-completion:srv_uring_completion epoll:srv_epoll
epoll-amy:srv_epoll_amy libuv:srv_libuv libevent:srv_libevent libev:srv_libev"}
# row name:conns:bytes:depth
ROWS="latency:1:64:1 throughput:64:64:1 saturation:64:64:16 many-conns:1000:1024:1"

[ -x "$BIN/echo_load" ] || { echo "run.sh: no $BIN/echo_load (build first)" >&2; exit 1; }
# Syscall counter for the untimed pass: perf's tracepoint, else strace -c.
PERF=""
if command -v perf >/dev/null 2>&1 &&
	perf stat -e raw_syscalls:sys_enter -x, true >/dev/null 2>&1; then
	PERF=perf
elif command -v strace >/dev/null 2>&1; then
	PERF=strace
fi
PIN_S="" PIN_C=""
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
	PIN_S="taskset -c $SRV_CPU" PIN_C="taskset -c $CLI_CPU"
fi
HZ=$(getconf CLK_TCK)

# Start server $1 on a fresh port; sets SPID and SPORT.
start_server() {
	PORT=$((PORT + 1))
	SPORT=$PORT
	$PIN_S "$BIN/$1" -p "$SPORT" &
	SPID=$!
	hex=$(printf '%04X' "$SPORT")
	i=0
	while ! grep -q "^ *[0-9]*: 0100007F:$hex 00000000:0000 0A" /proc/net/tcp; do
		i=$((i + 1))
		if [ $i -gt 300 ] || ! kill -0 "$SPID" 2>/dev/null; then
			echo "run.sh: $1 did not start" >&2
			return 1
		fi
		sleep 0.01
	done
}

stop_server() {
	kill -INT "$SPID" 2>/dev/null || true
	wait "$SPID" 2>/dev/null || echo "run.sh: server exited with an error" >&2
}

# utime + stime of the whole server process, in clock ticks.
cpu_ticks() {
	awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$SPID/stat"
}

# Value of key $1 in RESULT line $2.
field() {
	echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

# 1. Integrity.
SERVERS=""
for entry in $ALL; do
	name=${entry%%:*} bin=${entry#*:}
	[ -x "$BIN/$bin" ] || continue
	start_server "$bin" || continue
	if res=$($PIN_C "$BIN/echo_load" -p "$SPORT" -i -c 8 -d 256 -w 0.2 -t 1 2>"$TMP/err") &&
		[ "$(field mismatches "$res")" = 0 ]; then
		echo "integrity: $name ok ($(field total "$res") messages of 1 B..64 KiB)"
		SERVERS="$SERVERS $entry"
	else
		echo "integrity: $name FAILED, not benchmarked: $(cat "$TMP/err") $res" >&2
		echo "$name" >>"$TMP/failed"
	fi
	stop_server
done
[ -n "$SERVERS" ] || { echo "run.sh: no server passed" >&2; exit 1; }

# One row against the running server; appends a line to $TMP/raw. With
# $COUNT_SYSCALLS set, perf counts the server's syscalls and the line goes
# to $TMP/sys instead (the tracepoint slows every syscall: never timed).
run_row() {
	row=$1 conns=$2 bytes=$3 depth=$4
	c0=$(cpu_ticks)
	if [ -n "${COUNT_SYSCALLS:-}" ]; then
		if [ "$PERF" = perf ]; then
			perf stat -x, -e raw_syscalls:sys_enter -p "$SPID" -o "$TMP/perf" &
		else
			strace -c -f -q -p "$SPID" -o "$TMP/perf" &
		fi
		perf_pid=$!
		sleep 0.1
	fi
	res=$($PIN_C "$BIN/echo_load" -p "$SPORT" -c "$conns" -s "$bytes" -d "$depth" \
		-w "$WARM" -t "$SECS" 2>>"$TMP/err") || echo "run.sh: $name $row failed" >&2
	c1=$(cpu_ticks)
	total=$(field total "$res")
	[ -n "$total" ] && [ "$total" != 0 ] || return 0
	if [ -n "${COUNT_SYSCALLS:-}" ]; then
		kill -INT "$perf_pid" 2>/dev/null || true
		wait "$perf_pid" 2>/dev/null || true
		# perf: "count,,raw_syscalls:sys_enter"; strace: the "total" row.
		awk -F, -v n="$total" -v k="$row	$name" '
			/raw_syscalls/ { printf "%s\t%.2f\n", k, $1 / n }
			/ total$/ { split($0, f, " "); printf "%s\t%.2f\n", k, f[4] / n }' \
			"$TMP/perf" >>"$TMP/sys"
		return 0
	fi
	cpu_us=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$total" \
		'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$name" "$(field rps "$res")" \
		"$(field p50_us "$res")" "$(field p99_us "$res")" "$cpu_us" \
		"$(field client_cpu_pct "$res")" "$(field p999_us "$res")" >>"$TMP/raw"
	echo "rep $rep $row $name: $res cpu_us/req=$cpu_us"
}

# 2. The matrix: rep, then server (interleaved), then row. A last untimed
# pass counts syscalls.
: >"$TMP/raw"
: >"$TMP/sys"
rep=1
last=$REPS
[ -n "$PERF" ] && last=$((REPS + 1))
while [ $rep -le "$last" ]; do
	[ $rep -gt "$REPS" ] && COUNT_SYSCALLS=1 && echo "syscall pass (perf)"
	for entry in $SERVERS; do
		name=${entry%%:*} bin=${entry#*:}
		start_server "$bin" || continue
		for row in $ROWS; do
			# shellcheck disable=SC2046 # split name:conns:bytes:depth
			run_row $(echo "$row" | tr ':' ' ')
		done
		stop_server
	done
	rep=$((rep + 1))
done

# 3. The table: medians over repetitions, min-max of requests/s, ratios.
mkdir -p "$OUT_DIR"
{
	echo "# Echo benchmark, $(date '+%F %H:%M')"
	echo
	echo "$(uname -srm), $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1))."
	if [ -n "$PIN_S" ]; then
		echo "Server pinned to CPU $SRV_CPU (all its threads), client to CPU $CLI_CPU (taskset)."
	else
		echo "Not pinned (taskset or a second CPU missing)."
	fi
	echo "$REPS repetitions, servers interleaved; warm-up $WARM s, measured $SECS s per run; medians, requests/s as median (min-max)."
	if [ -n "${BENCH_AMIO_SPIN_US:-}" ]; then
		echo "amio servers: spin_us = $BENCH_AMIO_SPIN_US (the poll thread watches its queues that long before sleeping)."
	else
		echo "amio servers: default poller config (adaptive idle spin; BENCH_AMIO_SPIN_US=us fixes it, BENCH_AMIO_FLAGS=8 turns it off)."
	fi
	if [ "${BENCH_POLL_SCHED_BATCH:-0}" = 1 ]; then
		echo "Two-thread servers (amio-amy, amio-inbox, epoll-amy): poll thread in SCHED_BATCH (BENCH_POLL_SCHED_BATCH=1), so its wakeups do not preempt the worker on the shared CPU."
	fi
	echo "CPU us/req: server utime+stime (all threads) over the whole client run / requests completed."
	if [ "$PERF" = perf ]; then
		echo "Syscalls/req: perf stat -e raw_syscalls:sys_enter on the server process, in one extra untimed pass (the tracepoint slows every syscall)."
	elif [ "$PERF" = strace ]; then
		echo "Syscalls/req: strace -c -f on the server process (perf not available), in one extra untimed pass."
	else
		echo "Syscalls/req: not measured (perf not installed or not permitted)."
	fi
	echo "Ratios: requests/s relative to epoll and uring-poll (> 1 is faster); CPU x uring-poll: CPU us/req relative to uring-poll (< 1 is cheaper). *client-bound*: the client used >= 90% of its CPU, so the row measures the client too."
	[ -f "$TMP/failed" ] && echo "Failed integrity, not benchmarked: $(tr '\n' ' ' <"$TMP/failed")."
	echo
	awk -F'\t' -v order="$(for e in $SERVERS; do printf '%s ' "${e%%:*}"; done)" \
		-v rows="latency throughput saturation many-conns" '
	function median(s,   a, n, i, j, t) {
		n = split(s, a, " ")
		for (i = 2; i <= n; i++)
			for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) {
				t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
			}
		MIN = a[1]; MAX = a[n]
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	FILENAME ~ /sys$/ { sys[$1, $2] = $3; next }
	{
		k = $1 SUBSEP $2
		rps[k] = rps[k] " " $3; p50[k] = p50[k] " " $4; p99[k] = p99[k] " " $5
		cpu[k] = cpu[k] " " $6; ccpu[k] = ccpu[k] " " $7; p999[k] = p999[k] " " $8
	}
	END {
		nr = split(rows, R, " "); ns = split(order, S, " ")
		for (r = 1; r <= nr; r++) {
			row = R[r]
			desc = row == "latency" ? "1 conn x 64 B x depth 1" : \
			       row == "throughput" ? "64 conns x 64 B x depth 1" : \
			       row == "saturation" ? "64 conns x 64 B x depth 16" : \
			       "1,000 conns x 1 KiB x depth 1"
			printf "## %s (%s)\n\n", row, desc
			print "| server | requests/s | p50 us | p99 us | p99.9 us | CPU us/req | syscalls/req | x epoll | x uring-poll | CPU x uring-poll | note |"
			print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
			be = (row SUBSEP "epoll") in rps ? median(rps[row, "epoll"]) : 0
			bu = (row SUBSEP "uring-poll") in rps ? median(rps[row, "uring-poll"]) : 0
			cu = (row SUBSEP "uring-poll") in cpu ? median(cpu[row, "uring-poll"]) : 0
			for (s = 1; s <= ns; s++) {
				k = row SUBSEP S[s]
				if (!(k in rps))
					continue
				m = median(rps[k]); lo = MIN; hi = MAX
				sy = k in sys ? sys[k] : "-"
				note = median(ccpu[k]) >= 90 ? "*client-bound*" : ""
				c = median(cpu[k])
				printf "| %s | %.0f (%.0f-%.0f) | %.1f | %.1f | %.1f | %.2f | %s | %s | %s | %s | %s |\n", \
				       S[s], m, lo, hi, median(p50[k]), median(p99[k]), median(p999[k]), c, sy, \
				       be ? sprintf("%.2f", m / be) : "-", bu ? sprintf("%.2f", m / bu) : "-", \
				       cu ? sprintf("%.2f", c / cu) : "-", note
			}
			print ""
		}
	}' "$TMP/sys" "$TMP/raw"
} >"$OUT"
cp "$TMP/raw" "$OUT_DIR/$STEM.tsv"
cat "$OUT"
echo "run.sh: wrote $OUT"
