#!/bin/sh
# Micro-benchmarks: cross-thread wakeups (bench/wakeup_bench.c: amio channel vs
# Amy's eventfd channel vs a pipe) and registrations per second
# (bench/register_bench.c: amio on io_uring and on its epoll backend vs
# epoll_ctl vs libevent).
#   sh bench/micro.sh [build_dir]        (default build/release)
#   QUICK=1 sh bench/micro.sh ...        short runs, under ~40 s (what `make bench` runs)
#   env: REPS, MSGS (per sender), LAT_N, IDLE_N, GAP_US, SECS, SOCKETS,
#   RESULTS_DIR, BENCH_AMIO_SPIN_US=us (amio pollers' idle spin, spin_us; default:
#   the library's default config), BENCH_AMIO_NO_SPIN=1 (AMIO_POLLER_NO_SPIN)
# Every row runs REPS times, the modes taking turns (interleaved); tables show
# medians (throughput as median (min-max)) and ratios. wakeup_bench pins its
# receiver to CPU 0 and senders to CPU 1; register_bench is not pinned (every
# mode may use both CPUs). Syscalls come from one extra untimed pass under
# `perf stat -e raw_syscalls:sys_enter`, counting only the measured window
# (perf --control: the bench enables and disables the counter itself); without
# perf, amio's own counters (io_uring_enter + MSG_RING wakeups) are shown for
# amio and n/a for the others.
# Writes bench/results/micro-YYYY-MM-DD.md (and .tsv with the raw runs) and prints it,
# then runs bench/properties.sh (what the unit tests do not bound: wakeup counts,
# timer and deadline latency), which writes properties-YYYY-MM-DD.md.
set -eu

BUILD=${1:-build/release}
BIN=$BUILD/bench
HERE=$(cd "$(dirname "$0")" && pwd)
OUT_DIR=${RESULTS_DIR:-$HERE/results}
OUT=$OUT_DIR/micro-$(date +%F).md
QUICK=${QUICK:-0}
REPS=${REPS:-3}
GAP_US=${GAP_US:-500}
SOCKETS=${SOCKETS:-256}
if [ "$QUICK" = 1 ]; then
	MSGS=${MSGS:-100000}
	LAT_N=${LAT_N:-2000}
	IDLE_N=${IDLE_N:-400}
	SECS=${SECS:-0.25}
else
	MSGS=${MSGS:-500000}
	LAT_N=${LAT_N:-20000}
	IDLE_N=${IDLE_N:-2000}
	SECS=${SECS:-2}
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

for b in wakeup_bench register_bench; do
	[ -x "$BIN/$b" ] || { echo "micro.sh: no $BIN/$b (build first)" >&2; exit 1; }
done
WAKE_MODES="amio eventfd pipe"
REG_MODES="amio amio-armed amio-epoll amio-armed-epoll epoll"
if "$BIN/register_bench" -m libevent -k 1 -t 0.01 >/dev/null 2>&1; then
	REG_MODES="$REG_MODES libevent"
fi

# perf with --control: the bench writes enable/disable to fd 7, perf acks on 8.
PERF=""
mkfifo "$TMP/ctl" "$TMP/ack"
exec 7<>"$TMP/ctl" 8<>"$TMP/ack"
if command -v perf >/dev/null 2>&1 &&
	perf stat -x, -e raw_syscalls:sys_enter -D -1 --control fd:7,8 -o /dev/null true \
		>/dev/null 2>&1; then
	PERF=perf
fi

# Value of key $1 in RESULT line $2.
field() {
	echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

# Syscalls of one run's measured window, under perf; prints the count.
count_syscalls() {
	BENCH_PERF_CTL_FD=7 BENCH_PERF_ACK_FD=8 perf stat -x, -e raw_syscalls:sys_enter \
		-D -1 --control fd:7,8 -o "$TMP/perf" -- "$@" >"$TMP/out" 2>>"$TMP/err" || return 1
	awk -F, '/raw_syscalls/ { print $1 }' "$TMP/perf"
}

# row -> wakeup_bench arguments
wake_args() {
	case $1 in
	tput-1) echo "-s 1 -n $MSGS" ;;
	tput-4) echo "-s 4 -n $MSGS" ;;
	lat-busy) echo "-l -n $LAT_N" ;;
	lat-idle) echo "-l -n $IDLE_N -g $GAP_US" ;;
	esac
}

# One timed run; appends a line to $TMP/raw: bench row mode v1 v2 v3 v4 v5.
run_wake() {
	row=$1 mode=$2
	# shellcheck disable=SC2046 # split the argument list
	res=$("$BIN/wakeup_bench" -m "$mode" $(wake_args "$row") 2>>"$TMP/err" | grep '^RESULT') ||
		{ echo "micro.sh: wakeup_bench $mode $row failed" >&2; return 0; }
	echo "rep $rep $row $mode: ${res#RESULT }"
	amio_sys=-
	if [ "$mode" = amio ]; then
		amio_sys=$(awk -v e="$(field amio_enters_per_1k "$res")" \
			-v w="$(field amio_wakeups_per_1k "$res")" 'BEGIN { printf "%.2f", e + w }')
	fi
	case $row in
	tput-*) printf 'wakeup\t%s\t%s\t%s\t%s\t%s\t%s\t-\n' "$row" "$mode" \
		"$(field msgs_per_s "$res")" "$(field cpu_us_per_msg "$res")" \
		"$(field full_waits "$res")" "$amio_sys" >>"$TMP/raw" ;;
	*) printf 'wakeup\t%s\t%s\t%s\t%s\t-\t%s\t-\n' "$row" "$mode" \
		"$(field p50_ns "$res")" "$(field p99_ns "$res")" "$amio_sys" >>"$TMP/raw" ;;
	esac
}

run_reg() {
	row=$1 mode=$2
	res=$("$BIN/register_bench" -m "$mode" -T "${row#reg-}" -k "$SOCKETS" -t "$SECS" \
		2>>"$TMP/err" | grep '^RESULT') ||
		{ echo "micro.sh: register_bench $mode $row failed" >&2; return 0; }
	echo "rep $rep $row $mode: ${res#RESULT }"
	sqes=- amio_sys=-
	wait_ms=$(field apply_wait_ms "$res")
	case $mode in
	amio*)
		sqes=$(field amio_sqes_per_reg "$res")
		amio_sys=$(awk -v e="$(field amio_enters_per_1k "$res")" \
			-v w="$(field amio_wakeups_per_1k "$res")" 'BEGIN { printf "%.3f", (e + w) / 1000 }')
		;;
	esac
	printf 'register\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$mode" \
		"$(field regs_per_s "$res")" "$(field cpu_us_per_reg "$res")" "$sqes" "$amio_sys" \
		"${wait_ms:--}" >>"$TMP/raw"
}

# The syscall pass: one untimed run per row and mode; appends to $TMP/sys.
sys_wake() {
	row=$1 mode=$2
	# shellcheck disable=SC2046
	n=$(count_syscalls "$BIN/wakeup_bench" -m "$mode" $(wake_args "$row")) || return 0
	res=$(grep '^RESULT' "$TMP/out")
	awk -v n="$n" -v m="$(field messages "$res")" -v k="$row" -v s="$mode" \
		'BEGIN { printf "%s\t%s\t%.2f\n", k, s, n * 1000 / m }' >>"$TMP/sys"
}

sys_reg() {
	row=$1 mode=$2
	n=$(count_syscalls "$BIN/register_bench" -m "$mode" -T "${row#reg-}" -k "$SOCKETS" \
		-t "$SECS") || return 0
	res=$(grep '^RESULT' "$TMP/out")
	awk -v n="$n" -v m="$(field regs "$res")" -v k="$row" -v s="$mode" \
		'BEGIN { printf "%s\t%s\t%.3f\n", k, s, n / m }' >>"$TMP/sys"
}

# 1. The matrix: rep, then row, then mode (interleaved).
: >"$TMP/raw"
: >"$TMP/sys"
rep=1
while [ $rep -le "$REPS" ]; do
	for row in tput-1 tput-4 lat-busy lat-idle; do
		for mode in $WAKE_MODES; do run_wake "$row" "$mode"; done
	done
	for row in reg-1 reg-4; do
		for mode in $REG_MODES; do run_reg "$row" "$mode"; done
	done
	rep=$((rep + 1))
done
if [ -n "$PERF" ]; then
	echo "syscall pass (perf)"
	for row in tput-1 tput-4 lat-busy lat-idle; do
		for mode in $WAKE_MODES; do sys_wake "$row" "$mode"; done
	done
	for row in reg-1 reg-4; do
		for mode in $REG_MODES; do sys_reg "$row" "$mode"; done
	done
fi
# Failures the benches explained (lost messages, setup errors).
if grep 'wakeup_bench:\|register_bench:' "$TMP/err" >&2; then :; fi

# 2. The tables.
mkdir -p "$OUT_DIR"
{
	echo "# Micro-benchmarks, $(date '+%F %H:%M')"
	echo
	echo "$(uname -srm), $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1))."
	echo "$REPS repetitions, modes interleaved; medians, rates as median (min-max)."
	if [ "${BENCH_AMIO_NO_SPIN:-0}" = 1 ]; then
		echo "amio pollers: AMIO_POLLER_NO_SPIN (the poll thread sleeps at once when idle)."
	elif [ -n "${BENCH_AMIO_SPIN_US:-}" ]; then
		echo "amio pollers: spin_us = $BENCH_AMIO_SPIN_US (the poll thread watches its queues that long before sleeping)."
	else
		echo "amio pollers: the library's default config (see spin_us in include/amio.h; BENCH_AMIO_SPIN_US=us sets the idle spin)."
	fi
	if [ -n "$PERF" ]; then
		echo "Syscalls: perf stat -e raw_syscalls:sys_enter over the measured window only (perf --control), all threads, one extra untimed pass."
	else
		echo "Syscalls: perf not available; amio rows show amio's own counters (io_uring_enter + MSG_RING wakeups, so futex and sched_yield calls are missing), others n/a."
	fi
	echo
	awk -F'\t' -v modes="$WAKE_MODES" -v regmodes="$REG_MODES" -v msgs="$MSGS" \
		-v latn="$LAT_N" -v idlen="$IDLE_N" -v gap="$GAP_US" -v secs="$SECS" \
		-v sockets="$SOCKETS" -v perf="$PERF" '
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
	function ratio(x, y) { return y > 0 ? sprintf("%.2f", x / y) : "-" }
	# Syscalls: perf pass, else amio counters (amio rows), else n/a.
	function sys_cell(k, fmt) {
		if (k in sys) return sys[k]
		if (perf == "" && (k in v4)) return sprintf(fmt " (amio counters)", median(v4[k]))
		return "n/a"
	}
	FILENAME ~ /sys$/ { sys[$1, $2] = $3; next }
	{
		k = $2 SUBSEP $3
		v1[k] = v1[k] " " $4; v2[k] = v2[k] " " $5
		if ($6 != "-") v3[k] = v3[k] " " $6
		if ($7 != "-") v4[k] = v4[k] " " $7
		if ($8 != "-") v5[k] = v5[k] " " $8
	}
	function tput_table(   r, i, k, m, lo, hi, be, bp, row) {
		printf "## Wakeups: messages/s (8-byte messages, %d per sender; receiver on CPU 0, senders on CPU 1)\n\n", msgs
		print "| senders | mode | messages/s | CPU us/msg | sends that found it full | syscalls/1k msgs | x eventfd | x pipe |"
		print "|---:|---|---:|---:|---:|---:|---:|---:|"
		for (r = 1; r <= 4; r *= 4) {
			row = "tput-" r
			be = median(v1[row, "eventfd"]); bp = median(v1[row, "pipe"])
			for (i = 1; i <= NM; i++) {
				k = row SUBSEP M[i]
				if (!(k in v1)) continue
				m = median(v1[k]); lo = MIN; hi = MAX
				printf "| %d | %s | %.0f (%.0f-%.0f) | %.3f | %s | %s | %s | %s |\n", r, M[i], \
				       m, lo, hi, median(v2[k]), (k in v3) ? median(v3[k]) : "-", \
				       sys_cell(k, "%.2f"), ratio(m, be), ratio(m, bp)
			}
		}
		print ""
	}
	function lat_table(   r, i, k, p50, be, bp, row, what) {
		print "## Wakeups: one-way latency (1 sender, one message in flight; first 10% dropped)\n"
		print "| receiver | mode | p50 us | p99 us | syscalls/1k msgs | p50 / eventfd | p50 / pipe |"
		print "|---|---|---:|---:|---:|---:|---:|"
		for (r = 1; r <= 2; r++) {
			row = r == 1 ? "lat-busy" : "lat-idle"
			what = r == 1 ? sprintf("busy (next message at once, %d msgs)", latn) : \
			       sprintf("idle (%d us gap, %d msgs)", gap, idlen)
			be = median(v1[row, "eventfd"]); bp = median(v1[row, "pipe"])
			for (i = 1; i <= NM; i++) {
				k = row SUBSEP M[i]
				if (!(k in v1)) continue
				p50 = median(v1[k])
				printf "| %s | %s | %.1f | %.1f | %s | %s | %s |\n", what, M[i], p50 / 1e3, \
				       median(v2[k]) / 1e3, sys_cell(k, "%.2f"), ratio(p50, be), ratio(p50, bp)
			}
		}
		print "\np50 / eventfd below 1 means faster than the eventfd channel.\n"
	}
	function reg_table(   t, i, k, m, lo, hi, be, row, tw) {
		printf "## Registrations/s (%d live TCP sockets per thread; register+deregister = 1; %s s windows)\n\n", sockets, secs
		print "| threads | mode | registrations/s | CPU us/reg | syscalls/reg | amio SQEs/reg | amio apply wait ms | x epoll_ctl | x io_uring |"
		print "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
		for (t = 1; t <= 4; t *= 4) {
			row = "reg-" t
			be = median(v1[row, "epoll"])
			for (i = 1; i <= NR; i++) {
				k = row SUBSEP R[i]
				if (!(k in v1)) continue
				# amio on epoll: relative to the same mode on io_uring
				tw = R[i] ~ /^amio.*-epoll$/ ? row SUBSEP substr(R[i], 1, length(R[i]) - 6) : ""
				m = median(v1[k]); lo = MIN; hi = MAX
				printf "| %d | %s | %.0f (%.0f-%.0f) | %.3f | %s | %s | %s | %s | %s |\n", t, \
				       R[i] == "epoll" ? "epoll_ctl" : R[i], m, lo, hi, median(v2[k]), \
				       sys_cell(k, "%.3f"), (k in v3) ? sprintf("%.3f", median(v3[k])) : "-", \
				       (k in v5) ? sprintf("%.3f", median(v5[k])) : "-", ratio(m, be), \
				       (tw in v1) ? ratio(m, median(v1[tw])) : "-"
			}
		}
		print ""
		print "amio: amio_register only queues a command; each window ends once the poll thread has applied every command (that wait is included, see apply wait)."
		print "amio skips the kernel for a register whose deregister is queued before the poll thread applies it (SQEs/reg < 2);"
		print "amio-armed waits each round (a 0 ms timer behind the registers) until they are applied, so every registration arms and removes a poll (2 SQEs);"
		print "its syscalls include the sched_yield() calls of workers waiting for that timer."
		print "amio-epoll, amio-armed-epoll: the same on amio'"'"'s epoll backend (AMIO_BACKEND_EPOLL), where the poll thread applies each command with epoll_ctl"
		print "on a dup of the fd (amio SQEs/reg: those epoll_ctl calls); x io_uring: relative to the same mode on io_uring (amio, amio-armed).\n"
	}
	function verdict(ok) { return ok ? "**met**" : "**missed**" }
	function targets(   a, e, r) {
		print "## Targets\n"
		a = median(v1["tput-4", "amio"]); e = median(v1["tput-4", "eventfd"])
		printf "- amio channel >= 3x the eventfd channel'"'"'s messages/s with 4 senders: %sx, %s.\n", ratio(a, e), verdict(e > 0 && a >= 3 * e)
		a = median(v1["lat-busy", "amio"]); e = median(v1["lat-busy", "eventfd"])
		printf "- amio latency p50 no worse than eventfd'"'"'s: busy %.1f vs %.1f us, %s", a / 1e3, e / 1e3, verdict(e > 0 && a <= e)
		a = median(v1["lat-idle", "amio"]); e = median(v1["lat-idle", "eventfd"])
		printf "; idle %.1f vs %.1f us, %s.\n", a / 1e3, e / 1e3, verdict(e > 0 && a <= e)
		e = median(v1["reg-4", "epoll"]); a = median(v1["reg-4", "amio"]); r = median(v1["reg-4", "amio-armed"])
		printf "- amio registrations >= 1.5x epoll_ctl with 4 threads: amio %sx, %s; amio-armed %sx, %s.\n", \
		       ratio(a, e), verdict(e > 0 && a >= 1.5 * e), ratio(r, e), verdict(e > 0 && r >= 1.5 * e)
		if (("reg-4" SUBSEP "amio-epoll") in v1 && ("reg-4" SUBSEP "amio-armed-epoll") in v1)
			printf "- amio on epoll, 4 threads (no target): amio-epoll %sx epoll_ctl, %sx amio on io_uring; amio-armed-epoll %sx epoll_ctl, %sx amio-armed on io_uring.\n", \
			       ratio(median(v1["reg-4", "amio-epoll"]), e), ratio(median(v1["reg-4", "amio-epoll"]), a), \
			       ratio(median(v1["reg-4", "amio-armed-epoll"]), e), ratio(median(v1["reg-4", "amio-armed-epoll"]), r)
	}
	END {
		NM = split(modes, M, " "); NR = split(regmodes, R, " ")
		tput_table(); lat_table(); reg_table(); targets()
	}' "$TMP/sys" "$TMP/raw"
} >"$OUT"
cp "$TMP/raw" "$OUT_DIR/micro-$(date +%F).tsv"
cat "$OUT"
echo "micro.sh: wrote $OUT"
sh "$HERE/properties.sh" "$BUILD"
