#!/bin/sh
# Echo benchmark: every built server against the same client, in the same run.
#   sh bench/run.sh [build_dir]        (default build/release)
#   QUICK=1 sh bench/run.sh ...        short windows (what `make bench` runs)
#   env: REPS, WARM, SECS (seconds), PORT, SRV_CPU, CLI_CPU, RESULTS_DIR,
#   BENCH_AMIO_SPIN_US=us (amio servers' idle spin, spin_us; default adaptive),
#   BENCH_SERVERS="name:binary[:VAR=value...] ..." (a subset, e.g. "amio-amy:srv_amio_amy
#     epoll-amy:srv_epoll_amy"; binary: in build_dir/bench, or an absolute path;
#     VAR=value pieces, colon-separated, go to that server's environment:
#     "amio-amy-epoll:srv_amio_amy:AMIO_BACKEND=epoll"),
#   "amio on io_uring unchanged" target: amio-X against amio-X-before in the same
#     run where there is one (e.g. "amio-single-before:/tmp/old/build/bench/srv_amio_single",
#     a build of an earlier commit), else against BENCH_BASELINE=file.tsv (an earlier
#     run; default: the newest untagged echo-DATE.tsv in the results directory),
#   BENCH_POLL_SCHED_BATCH=1 (two-thread servers' poll thread in SCHED_BATCH),
#   BENCH_TAG=name (results file echo-DATE-name.md),
#   BENCH_ROWS="name:conns:bytes:depth ..." (a subset of the rows, e.g. "latency:1:64:1")
# Each server must first pass an integrity run (1 B..64 KiB messages written
# in random split pieces, 256 in flight per connection, reads paused now and
# then so the server's writes come back partial (EAGAIN), every byte checked)
# or it is not benchmarked; an amio server must also log the backend its
# AMIO_BACKEND asks for ("<srv>: backend epoll" on stderr), and hold no
# io_uring fd on epoll (/proc/PID/fd). Then, for REPS repetitions, the servers take
# turns (interleaved); each runs every row. Server pinned to CPU 0, client to CPU 1. Server CPU per request comes
# from /proc/PID/stat (utime+stime, all threads) over the whole client run,
# syscalls per request from `perf stat -e raw_syscalls:sys_enter -p PID`
# (--per-thread: a thread named "amio-worker", the worker of
# amio-completion-inbox, is also counted alone, as "worker syscalls/req").
# Writes bench/results/echo-YYYY-MM-DD.md (the table with medians, min-max
# and ratios to epoll and uring-poll, amio on io_uring vs on epoll, and the
# targets) and prints it.
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

# name:binary[:VAR=value...], in table order. The amio servers name their
# backend, so an AMIO_BACKEND in the caller's environment changes no row.
ALL=${BENCH_SERVERS:-"amio-amy:srv_amio_amy:AMIO_BACKEND=io_uring
amio-amy-epoll:srv_amio_amy:AMIO_BACKEND=epoll
amio-inbox:srv_amio_inbox:AMIO_BACKEND=io_uring
amio-inbox-epoll:srv_amio_inbox:AMIO_BACKEND=epoll
amio-single:srv_amio_single:AMIO_BACKEND=io_uring
amio-single-epoll:srv_amio_single:AMIO_BACKEND=epoll
amio-completion:srv_amio_completion:AMIO_BACKEND=io_uring
amio-completion-epoll:srv_amio_completion:AMIO_BACKEND=epoll
amio-completion-inbox:srv_amio_completion_inbox:AMIO_BACKEND=io_uring
amio-completion-inbox-epoll:srv_amio_completion_inbox:AMIO_BACKEND=epoll
uring-poll:srv_uring_poll uring-completion:srv_uring_completion epoll:srv_epoll
epoll-amy:srv_epoll_amy libuv:srv_libuv libevent:srv_libevent libev:srv_libev"}
# The "amio on io_uring unchanged" target compares with an earlier run.
STEM_GLOB='echo-[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9].tsv'
if [ -z "${BENCH_BASELINE:-}" ]; then
	for f in "$OUT_DIR"/$STEM_GLOB; do
		if [ -f "$f" ] && [ "$f" != "$OUT_DIR/$STEM.tsv" ]; then BENCH_BASELINE=$f; fi
	done
fi
BASELINE=${BENCH_BASELINE:-}
[ -z "$BASELINE" ] || [ -f "$BASELINE" ] || { echo "run.sh: no $BASELINE" >&2; exit 1; }
[ -z "$BASELINE" ] || cp "$BASELINE" "$TMP/base"
# row name:conns:bytes:depth
ROWS=${BENCH_ROWS:-"latency:1:64:1 throughput:64:64:1 saturation:64:64:16 many-conns:1000:1024:1"}

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

# Split server entry $1 (name:binary[:VAR=value...]); sets name, bin (the
# path), envs.
parse_entry() {
	name=${1%%:*} rest=${1#*:}
	bin=${rest%%:*} envs=""
	[ "$rest" = "$bin" ] || envs=$(echo "${rest#*:}" | tr ':' ' ')
	case $bin in
	/*) ;;
	*) bin=$BIN/$bin ;;
	esac
}

# Start server $bin with $envs on a fresh port; sets SPID and SPORT. Its
# stderr goes to $TMP/srv.err (stop_server passes it on).
start_server() {
	PORT=$((PORT + 1))
	SPORT=$PORT
	# shellcheck disable=SC2086 # $envs: VAR=value words
	env $envs $PIN_S "$bin" -p "$SPORT" 2>"$TMP/srv.err" &
	SPID=$!
	hex=$(printf '%04X' "$SPORT")
	i=0
	while ! grep -q "^ *[0-9]*: 0100007F:$hex 00000000:0000 0A" /proc/net/tcp; do
		i=$((i + 1))
		if [ $i -gt 300 ] || ! kill -0 "$SPID" 2>/dev/null; then
			echo "run.sh: $bin did not start: $(cat "$TMP/srv.err")" >&2
			return 1
		fi
		sleep 0.01
	done
}

stop_server() {
	kill -INT "$SPID" 2>/dev/null || true
	wait "$SPID" 2>/dev/null || echo "run.sh: server exited with an error" >&2
	grep -v '^[^ ]*: backend [^ ]*$' "$TMP/srv.err" >&2 || true
}

# The backend the running server logged ("-" for the non-amio servers) and
# how many io_uring fds it holds.
srv_backend() {
	sed -n 's/^[^ ]*: backend \([^ ]*\)$/\1/p' "$TMP/srv.err" | head -n 1 | grep . || echo -
}
uring_fds() {
	n=0
	for f in "/proc/$SPID/fd/"*; do
		[ "$(readlink "$f" 2>/dev/null)" != "anon_inode:[io_uring]" ] || n=$((n + 1))
	done
	echo "$n"
}

# The integrity run's check of an entry's AMIO_BACKEND=want: the server
# logged that backend; on epoll it holds no io_uring fd, on io_uring some.
backend_ok() {
	want=$(echo "$envs" | tr ' ' '\n' | sed -n 's/^AMIO_BACKEND=//p' | tail -n 1)
	[ -n "$want" ] || return 0
	[ "$1" = "$want" ] || return 1
	case $want in
	epoll) [ "$2" = 0 ] ;;
	io_uring) [ "$2" -gt 0 ] ;;
	esac
}

# utime + stime of the whole server process, in clock ticks.
cpu_ticks() {
	awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$SPID/stat"
}

# Value of key $1 in RESULT line $2.
field() {
	echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

# 1. Integrity (and each server's backend, to $TMP/backends).
SERVERS=""
: >"$TMP/backends"
for entry in $ALL; do
	parse_entry "$entry"
	[ -x "$bin" ] || continue
	start_server || continue
	res=$($PIN_C "$BIN/echo_load" -p "$SPORT" -i -c 8 -d 256 -w 0.2 -t 1 2>"$TMP/err") || res=""
	be=$(srv_backend) nu=$(uring_fds)
	if ! backend_ok "$be" "$nu"; then
		echo "integrity: $name FAILED, not benchmarked: $envs but backend $be, $nu io_uring fds" >&2
		echo "$name" >>"$TMP/failed"
	elif [ -n "$res" ] && [ "$(field mismatches "$res")" = 0 ]; then
		echo "integrity: $name ok ($(field total "$res") messages of 1 B..64 KiB; backend $be, $nu io_uring fds)"
		SERVERS="$SERVERS $entry"
		[ "$be" = - ] || printf '%s\t%s\n' "$name" "$be" >>"$TMP/backends"
	else
		echo "integrity: $name FAILED, not benchmarked: $(cat "$TMP/err") $res" >&2
		echo "$name" >>"$TMP/failed"
	fi
	stop_server
done
[ -n "$SERVERS" ] || { echo "run.sh: no server passed" >&2; exit 1; }

# One row against the running server; appends a line to $TMP/raw. With
# $COUNT_SYSCALLS set, perf counts the server's syscalls and the line goes
# to $TMP/sys instead (the tracepoint slows every syscall: never timed):
# row, server, syscalls/req of the process, and of its "amio-worker" thread
# ("-" without one, or under strace).
run_row() {
	row=$1 conns=$2 bytes=$3 depth=$4
	c0=$(cpu_ticks)
	if [ -n "${COUNT_SYSCALLS:-}" ]; then
		if [ "$PERF" = perf ]; then
			perf stat --per-thread -x, -e raw_syscalls:sys_enter -p "$SPID" \
				-o "$TMP/perf" &
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
		# perf: "comm-tid,count,,raw_syscalls:sys_enter,..." per thread
		# (count "<not counted>": none); strace: the "total" row.
		awk -F, -v n="$total" -v k="$row	$name" '
			/raw_syscalls/ {
				c = $2 ~ /^[0-9]+$/ ? $2 : 0
				all += c; perf = 1
				if ($1 ~ /^amio-worker-[0-9]+$/) { w += c; hw = 1 }
			}
			/ total$/ { split($0, f, " "); printf "%s\t%.2f\t-\n", k, f[4] / n }
			END {
				if (perf)
					printf "%s\t%.2f\t%s\n", k, all / n, hw ? sprintf("%.3f", w / n) : "-"
			}' "$TMP/perf" >>"$TMP/sys"
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
		parse_entry "$entry"
		start_server || continue
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
		echo "Syscalls/req: perf stat -e raw_syscalls:sys_enter on the server process, in one extra untimed pass (the tracepoint slows every syscall). Worker syscalls/req: the same count for the server's thread named amio-worker alone (perf stat --per-thread; amio-completion-inbox's worker; - for servers without one)."
	elif [ "$PERF" = strace ]; then
		echo "Syscalls/req: strace -c -f on the server process (perf not available), in one extra untimed pass."
	else
		echo "Syscalls/req: not measured (perf not installed or not permitted)."
	fi
	if [ -s "$TMP/backends" ]; then
		echo "amio backends, as the servers logged them (the -epoll rows: the same binary with AMIO_BACKEND=epoll, checked to hold no io_uring fd): $(awk -F'\t' '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }' "$TMP/backends")."
	fi
	echo "Ratios: requests/s relative to epoll and uring-poll (> 1 is faster); CPU x epoll, CPU x uring-poll: CPU us/req relative to epoll, uring-poll (< 1 is cheaper). *client-bound*: the client used >= 90% of its CPU, so the row measures the client too."
	[ -f "$TMP/failed" ] && echo "Failed integrity, not benchmarked: $(tr '\n' ' ' <"$TMP/failed")."
	echo
	awk -F'\t' -v order="$(for e in $SERVERS; do printf '%s ' "${e%%:*}"; done)" \
		-v rows="latency throughput saturation many-conns" \
		-v baseline="${BASELINE:+$(basename "$BASELINE")}" -v tol=0.05 '
	function median(s,   a, n, i, j, t) {
		n = split(s, a, " ")
		if (n == 0) { MIN = MAX = 0; return 0 }
		for (i = 2; i <= n; i++)
			for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) {
				t = a[j]; a[j] = a[j - 1]; a[j - 1] = t
			}
		MIN = a[1]; MAX = a[n]
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	# x / y to two decimals, as printed (verdicts compare the printed value).
	function ratio(x, y) { return y > 0 ? sprintf("%.2f", x / y) : "-" }
	function verdict(ok) { return ok ? "**met**" : "**missed**" }
	function ran(s) { return (s in IN) }
	FILENAME ~ /sys$/ { sys[$1, $2] = $3; wsys[$1, $2] = $4; next }
	FILENAME ~ /backends$/ { backend[$1] = $2; next }
	FILENAME ~ /base$/ {
		k = $1 SUBSEP $2
		brps[k] = brps[k] " " $3; bcpu[k] = bcpu[k] " " $6
		next
	}
	{
		k = $1 SUBSEP $2
		rps[k] = rps[k] " " $3; p50[k] = p50[k] " " $4; p99[k] = p99[k] " " $5
		cpu[k] = cpu[k] " " $6; ccpu[k] = ccpu[k] " " $7; p999[k] = p999[k] " " $8
	}
	# Medians of server s in row r: MR (requests/s) and MC (CPU us/req); 0 if not run.
	function med(s, r,   k) {
		k = r SUBSEP s
		MR = (k in rps) ? median(rps[k]) : 0
		MC = (k in cpu) ? median(cpu[k]) : 0
	}
	function row_tables(   r, s, k, m, lo, hi, sy, wsy, note, c, row, desc, be, bu, ce, cu) {
		for (r = 1; r <= NRW; r++) {
			row = R[r]
			desc = row == "latency" ? "1 conn x 64 B x depth 1" : \
			       row == "throughput" ? "64 conns x 64 B x depth 1" : \
			       row == "saturation" ? "64 conns x 64 B x depth 16" : \
			       "1,000 conns x 1 KiB x depth 1"
			printf "## %s (%s)\n\n", row, desc
			print "| server | requests/s | p50 us | p99 us | p99.9 us | CPU us/req | syscalls/req | worker syscalls/req | x epoll | x uring-poll | CPU x epoll | CPU x uring-poll | note |"
			print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
			med("epoll", row); be = MR; ce = MC
			med("uring-poll", row); bu = MR; cu = MC
			for (s = 1; s <= NS; s++) {
				k = row SUBSEP S[s]
				if (!(k in rps))
					continue
				m = median(rps[k]); lo = MIN; hi = MAX
				sy = k in sys ? sys[k] : "-"
				wsy = k in wsys ? wsys[k] : "-"
				note = median(ccpu[k]) >= 90 ? "*client-bound*" : ""
				c = median(cpu[k])
				printf "| %s | %.0f (%.0f-%.0f) | %.1f | %.1f | %.1f | %.2f | %s | %s | %s | %s | %s | %s | %s |\n", \
				       S[s], m, lo, hi, median(p50[k]), median(p99[k]), median(p999[k]), c, sy, \
				       wsy, ratio(m, be), ratio(m, bu), ratio(c, ce), ratio(c, cu), note
			}
			print ""
		}
	}
	# Every server X-epoll run beside its twin X: the same binary on both backends.
	function backend_table(   s, t, r, row, k, ku, ru, re, cu_, ce) {
		NP = 0
		for (s = 1; s <= NS; s++) {
			t = S[s]
			if (t !~ /-epoll$/ || !ran(substr(t, 1, length(t) - 6)))
				continue
			PE[++NP] = t; PU[NP] = substr(t, 1, length(t) - 6)
		}
		if (!NP)
			return
		print "## amio: io_uring vs epoll (the same server binary on each backend)\n"
		print "| row | server | io_uring requests/s | epoll requests/s | epoll x io_uring | io_uring CPU us/req | epoll CPU us/req | CPU epoll x io_uring | io_uring syscalls/req | epoll syscalls/req |"
		print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
		for (r = 1; r <= NRW; r++) {
			row = R[r]
			for (s = 1; s <= NP; s++) {
				ku = row SUBSEP PU[s]; k = row SUBSEP PE[s]
				if (!(k in rps) || !(ku in rps))
					continue
				med(PU[s], row); ru = MR; cu_ = MC
				med(PE[s], row); re = MR; ce = MC
				printf "| %s | %s | %.0f | %.0f | %s | %.2f | %.2f | %s | %s | %s |\n", row, PU[s], \
				       ru, re, ratio(re, ru), cu_, ce, ratio(ce, cu_), \
				       (ku in sys) ? sys[ku] : "-", (k in sys) ? sys[k] : "-"
			}
		}
		print "\nepoll x io_uring: > 1 is more requests/s (or more CPU per request) on epoll.\n"
	}
	# Is row r one of the space-separated rows in only ("": all)?
	function among(r, only) {
		return only == "" || index(" " only " ", " " r " ") > 0
	}
	# Did server x run all the rows in only?
	function rows_ran(x, only,   w, n, i) {
		n = split(only, w, " ")
		for (i = 1; i <= n; i++)
			if (!((w[i] SUBSEP x) in rps))
				return 0
		return 1
	}
	# Per row (those in only, "" for all), "ratio (row), ..." of server x
	# over server y in requests/s (what "rps") or CPU/request ("cpu"); OK
	# stays 1 while every printed ratio is within [lo, hi].
	function row_ratios(x, y, what, lo, hi, only,   r, out, v) {
		out = ""
		for (r = 1; r <= NRW; r++) {
			if (!among(R[r], only))
				continue
			med(x, R[r]); v = MR
			if (what == "cpu") v = MC
			med(y, R[r])
			v = ratio(v, what == "cpu" ? MC : MR)
			if (v == "-") { OK = 0; continue }
			if (v + 0 < lo || v + 0 > hi) OK = 0
			out = out (out == "" ? "" : ", ") v "x (" R[r] ")"
		}
		return out
	}
	# Per row (those in only), "value (row), ..." of the syscalls of server x
	# per request in a (sys: the process; wsys: its amio-worker thread);
	# OK stays 1 while every row is run, measured and at most max.
	function row_sys(x, a, max, only,   r, out, k, v) {
		out = ""
		for (r = 1; r <= NRW; r++) {
			if (!among(R[r], only))
				continue
			k = R[r] SUBSEP x
			if (!(k in rps)) { OK = 0; continue }
			v = (k in a) ? a[k] : "-"
			if (v == "-" || v + 0 > max) OK = 0
			out = out (out == "" ? "" : ", ") v " (" R[r] ")"
		}
		return out
	}
	# Completion I/O: amio-completion against raw liburing doing the same,
	# amio-completion-inbox (a worker making no syscall) against epoll-amy.
	function completion_targets(   c, y, yu, ok, r, w, tr) {
		if (ran("amio-completion") && ran("uring-completion")) {
			OK = 1; c = row_ratios("amio-completion", "uring-completion", "cpu", 0, 1.05)
			y = row_sys("amio-completion", sys, 0.3)
			ok = OK; yu = row_sys("uring-completion", sys, 1e9); OK = ok
			printf "- amio-completion: CPU/request within 1.05x of uring-completion: %s; at most 0.3 syscalls/request: %s (uring-completion: %s): %s.\n", c, y, yu, verdict(OK)
		} else
			print "- amio-completion within 1.05x of uring-completion CPU/request, at most 0.3 syscalls/request: not run (needs amio-completion and uring-completion)."
		tr = "throughput many-conns"
		if (ran("amio-completion-inbox") && ran("epoll-amy") && rows_ran("amio-completion-inbox", tr) &&
		    rows_ran("epoll-amy", tr)) {
			OK = 1; r = row_ratios("amio-completion-inbox", "epoll-amy", "rps", 1.25, 1e9, tr)
			c = row_ratios("amio-completion-inbox", "epoll-amy", "cpu", 0, 0.99, tr)
			w = row_sys("amio-completion-inbox", wsys, 0.05, tr)
			printf "- amio-completion-inbox against epoll-amy (throughput and many-conns rows): requests/s at least 1.25x: %s; CPU/request lower: %s; worker at most 0.05 syscalls/request: %s: %s.\n", r, c, w, verdict(OK)
		} else
			print "- amio-completion-inbox at least 1.25x epoll-amy requests/s with lower CPU/request, worker at most 0.05 syscalls/request: not run (needs amio-completion-inbox, epoll-amy and the throughput and many-conns rows)."
	}
	function targets(   s, u, out, r, c, k, line, rr, cc, nb, nf) {
		print "## Targets (issue 12)\n"
		if (ran("amio-single-epoll") && ran("epoll")) {
			OK = 1; out = row_ratios("amio-single-epoll", "epoll", "cpu", 0, 1.05)
			printf "- amio-single on epoll: CPU/request within 1.05x of the epoll server: %s: %s.\n", out, verdict(OK)
		} else
			print "- amio-single on epoll within 1.05x of epoll CPU/request: not run (needs amio-single-epoll and epoll)."
		if (ran("amio-amy-epoll") && ran("epoll-amy")) {
			OK = 1; r = row_ratios("amio-amy-epoll", "epoll-amy", "rps", 1, 1e9)
			c = row_ratios("amio-amy-epoll", "epoll-amy", "cpu", 0, 1)
			printf "- amio-amy on epoll at least level with epoll-amy: requests/s %s; CPU/request %s: %s.\n", r, c, verdict(OK)
		} else
			print "- amio-amy on epoll at least level with epoll-amy: not run (needs amio-amy-epoll and epoll-amy)."
		# Against u-before in this run, else against the baseline file.
		line = ""; OK = 1; nb = nf = 0
		for (s = 1; s <= NS; s++) {
			u = S[s]
			if (u !~ /^amio-/ || u ~ /-(epoll|before)$/ || (u in backend && backend[u] != "io_uring"))
				continue
			out = ""
			for (r = 1; r <= NRW; r++) {
				med(u, R[r]); rr = MR; cc = MC
				k = R[r] SUBSEP u
				if (ran(u "-before")) {
					med(u "-before", R[r]); rr = ratio(rr, MR); cc = ratio(cc, MC)
				} else if (k in brps) {
					rr = ratio(rr, median(brps[k])); cc = ratio(cc, median(bcpu[k]))
				} else
					rr = cc = "-"
				if (rr == "-" || cc == "-") { OK = 0; continue }
				if (rr + 0 < 1 - tol || cc + 0 > 1 + tol) OK = 0
				out = out (out == "" ? "" : ", ") rr "x/" cc "x (" R[r] ")"
			}
			if (ran(u "-before")) nb++; else nf++
			line = line sprintf("%s%s %s%s", line == "" ? ": " : "; ", u, \
			                    ran(u "-before") ? "x " u "-before " : "", \
			                    out == "" ? "not compared (no " u "-before row, not in the baseline file)" : out)
		}
		if (line == "")
			print "- amio on io_uring unchanged: no amio server on io_uring in this run."
		else if (nf && baseline == "")
			printf "- amio on io_uring unchanged (no earlier run to compare with: add amio-X-before rows or BENCH_BASELINE=file.tsv)%s: %s.\n", line, verdict(0)
		else
			printf "- amio on io_uring unchanged against %s (requests/s / CPU per request, this run x that; within %.0f%%)%s: %s.\n", \
			       nf ? (nb ? "the -before rows and " baseline : baseline " (another run: compare machines)") : "the -before rows (an earlier build, same run)", \
			       tol * 100, line, verdict(OK)
		line = ""
		for (s = 1; s <= NP; s++) {
			OK = 1
			line = line sprintf("%s%s %s", line == "" ? ": " : "; ", PU[s], \
			                    row_ratios(PE[s], PU[s], "cpu", 0, 1e9))
		}
		if (line != "")
			printf "- amio, io_uring vs epoll, CPU/request on epoll x on io_uring (no target; table above)%s.\n", line
		completion_targets()
	}
	END {
		NRW = split(rows, R, " "); NS = split(order, S, " ")
		for (s = 1; s <= NS; s++)
			IN[S[s]] = 1
		row_tables()
		backend_table()
		targets()
	}' "$TMP/sys" "$TMP/backends" ${BASELINE:+"$TMP/base"} "$TMP/raw"
} >"$OUT"
cp "$TMP/raw" "$OUT_DIR/$STEM.tsv"
cat "$OUT"
echo "run.sh: wrote $OUT"
