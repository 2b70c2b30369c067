#!/bin/sh
# HTTP benchmark: examples/http_server against nginx, both answering GET / with
# "Hello, World!" (nginx: `location / { return 200 "Hello, World!"; }`, one
# worker, access_log off, keep-alive), driven by wrk.
#   sh bench/http.sh [build_dir]          (default build/release; `make bench-http`)
#   env: ROUNDS (3), DURATION (seconds per run, 8), WARMUP (seconds, 1), ROWS
#   (wrk connections per row, "1 50 400"), PORT (first port tried, 19600),
#   SRV_CPU (0), CLI_CPU (1), WORKERS (http_server -w, 1), SYSCALLS (1: count
#   them; 0: not), RESULTS_DIR, BENCH_TAG (results file http-DATE-TAG.md),
#   AMIO_BACKEND (io_uring or epoll: passed to http_server, named in the table).
# Rounds interleave the servers (amio nginx amio nginx ...); each server is
# started afresh per round, warmed up, then runs every row. Server pinned to
# SRV_CPU (taskset: all its threads; nginx's master and worker), wrk to CLI_CPU:
# `taskset -c CLI_CPU wrk -t1 -cN -dDURATIONs --latency`. Per run: requests/s and
# p99 latency (wrk), server CPU us per request (utime+stime of all the server's
# threads and processes, /proc/PID/stat, before and after the run, over wrk's
# request count) and syscalls per request (`perf stat -e raw_syscalls:sys_enter
# -p PIDS` over the run: perf attaches to every thread the processes have when
# it starts, which here is all of them; strace -c -f where perf cannot). The
# tracepoint costs both servers per syscall; SYSCALLS=0 measures without it.
# Then medians per row and amio/nginx ratios; the table goes to
# bench/results/http-DATE.md and stdout.
set -eu

BUILD=${1:-build/release}
HERE=$(cd "$(dirname "$0")" && pwd)
SRV=$BUILD/examples/http_server
OUT_DIR=${RESULTS_DIR:-$HERE/results}
OUT=$OUT_DIR/http-$(date +%F)${BENCH_TAG:+-$BENCH_TAG}.md
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-1}
ROWS=${ROWS:-"1 50 400"}
PORT=${PORT:-19600}
SRV_CPU=${SRV_CPU:-0}
CLI_CPU=${CLI_CPU:-1}
WORKERS=${WORKERS:-1}
SYSCALLS=${SYSCALLS:-1}
HZ=$(getconf CLK_TCK)

[ -x "$SRV" ] || { echo "http.sh: no $SRV (make bench-http builds it)" >&2; exit 1; }
for tool in nginx wrk; do
	command -v $tool >/dev/null 2>&1 || { echo "http.sh: no $tool (apt-get install -y nginx wrk)" >&2; exit 1; }
done
NGINX=$(command -v nginx)
PIN_S="" PIN_C=""
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
	PIN_S="taskset -c $SRV_CPU" PIN_C="taskset -c $CLI_CPU"
fi
COUNT=""
if [ "$SYSCALLS" = 1 ]; then
	if command -v perf >/dev/null 2>&1 && perf stat -e raw_syscalls:sys_enter -x, true >/dev/null 2>&1; then
		COUNT=perf
	elif command -v strace >/dev/null 2>&1; then
		COUNT=strace
	fi
fi
TMP=$(mktemp -d)
SPID=""
cleanup() {
	[ -z "$SPID" ] || kill "$SPID" 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# A port nothing listens on (state 0A in /proc/net/tcp), from $PORT up.
free_port() {
	while grep -q ":$(printf '%04X' "$PORT") 00000000:0000 0A" /proc/net/tcp; do
		PORT=$((PORT + 1))
	done
	echo "$PORT"
}

wait_listening() { # port pid
	hex=$(printf '%04X' "$1")
	i=0
	until grep -q "^ *[0-9]*: 0100007F:$hex 00000000:0000 0A" /proc/net/tcp; do
		i=$((i + 1))
		if [ $i -gt 500 ] || ! kill -0 "$2" 2>/dev/null; then
			echo "http.sh: server did not start: $(cat "$TMP/srv.err" 2>/dev/null)" >&2
			return 1
		fi
		sleep 0.01
	done
}

# Start server $1 (amio or nginx) on a free port: SPID (what to signal), PIDS
# (every process to measure, comma-separated), SPORT.
start_server() {
	SPORT=$(free_port)
	PORT=$((SPORT + 1))
	if [ "$1" = amio ]; then
		# shellcheck disable=SC2086 # PIN_S: the taskset words
		$PIN_S "$SRV" -p "$SPORT" -w "$WORKERS" >"$TMP/srv.out" 2>"$TMP/srv.err" &
		SPID=$!
		wait_listening "$SPORT" "$SPID"
		PIDS=$SPID
		sed -n 's/.*backend \([a-z_]*\).*/\1/p' "$TMP/srv.out" | head -n 1 >"$TMP/backend"
	else
		mkdir -p "$TMP/nginx"
		cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	default_type text/plain;
	keepalive_timeout 65;
	keepalive_requests 100000000;
	client_body_temp_path $TMP/nginx/body;
	proxy_temp_path $TMP/nginx/proxy;
	fastcgi_temp_path $TMP/nginx/fastcgi;
	uwsgi_temp_path $TMP/nginx/uwsgi;
	scgi_temp_path $TMP/nginx/scgi;
	server {
		listen 127.0.0.1:$SPORT;
		location / { return 200 "Hello, World!"; }
	}
}
EOF
		# shellcheck disable=SC2086
		$PIN_S "$NGINX" -e "$TMP/nginx/error.log" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" \
			>"$TMP/srv.out" 2>"$TMP/srv.err" &
		SPID=$!
		wait_listening "$SPORT" "$SPID"
		i=0 # the worker, forked by the master: measured with it
		until kids=$(ps -o pid= --ppid "$SPID") && [ -n "$kids" ]; do
			i=$((i + 1))
			[ $i -le 500 ] || { echo "http.sh: nginx started no worker" >&2; return 1; }
			sleep 0.01
		done
		PIDS=$SPID
		for k in $kids; do PIDS="$PIDS,$k"; done
	fi
}

stop_server() {
	if [ "$1" = amio ]; then
		kill -TERM "$SPID"
		wait "$SPID" || echo "http.sh: http_server exited with status $?" >&2
	else
		kill -QUIT "$SPID" # nginx: graceful shutdown
		wait "$SPID" || true
	fi
	SPID=""
}

# utime + stime of every process in $PIDS, in clock ticks (threads included).
cpu_ticks() {
	t=0
	for p in $(echo "$PIDS" | tr ',' ' '); do
		t=$((t + $(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")))
	done
	echo "$t"
}

# wrk's latency ("120.00us", "1.20ms", "1.00s") in us.
to_us() {
	echo "$1" | awk '{ v = $1 + 0; u = $1; sub(/^[0-9.]+/, "", u);
		printf "%.1f", u == "us" ? v : u == "ms" ? v * 1000 : u == "s" ? v * 1e6 : v }'
}

# One run: server $1 with $2 connections; appends "server conns rps p99_us
# cpu_us_req sys_req" to $TMP/raw and prints the line.
run_row() {
	c0=$(cpu_ticks)
	if [ -n "$COUNT" ]; then
		if [ "$COUNT" = perf ]; then
			perf stat -e raw_syscalls:sys_enter -x, -p "$PIDS" -o "$TMP/sys" &
		else
			# shellcheck disable=SC2046 # one "-p PID" pair per process
			strace -c -f -q $(echo "$PIDS" | tr ',' '\n' | sed 's/^/-p /') -o "$TMP/sys" &
		fi
		cpid=$!
		sleep 0.2
	fi
	# shellcheck disable=SC2086
	$PIN_C wrk -t1 -c"$2" -d"${DURATION}s" --latency "http://127.0.0.1:$SPORT/" >"$TMP/wrk" 2>&1 ||
		echo "http.sh: wrk failed: $(cat "$TMP/wrk")" >&2
	c1=$(cpu_ticks)
	sys=-
	if [ -n "$COUNT" ]; then
		kill -INT "$cpid" 2>/dev/null || true
		wait "$cpid" 2>/dev/null || true
		# perf: "count,,raw_syscalls:sys_enter,..."; strace: its "total" row.
		sys=$(awk -F, '/raw_syscalls/ { n += $1 } / total$/ { split($0, f, " "); n += f[4] }
			END { print n + 0 }' "$TMP/sys")
	fi
	reqs=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$TMP/wrk")
	rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$TMP/wrk")
	p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$TMP/wrk")")
	errs=$(sed -n 's/^ *Non-2xx or 3xx responses: *//p; s/^ *Socket errors: *//p' "$TMP/wrk" | tr '\n' ' ')
	if [ -z "$reqs" ] || [ "$reqs" = 0 ]; then
		echo "http.sh: $1 -c$2: no requests: $(cat "$TMP/wrk")" >&2
		return 0
	fi
	cpu=$(awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
	[ "$sys" = - ] || sys=$(awk -v s="$sys" -v n="$reqs" 'BEGIN { printf "%.2f", s / n }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$rps" "$p99" "$cpu" "$sys" >>"$TMP/raw"
	printf 'round %s %-5s -c%-4s %10s req/s  p99 %8s us  CPU %6s us/req  syscalls %5s/req%s\n' \
		"$round" "$1" "$2" "$rps" "$p99" "$cpu" "$sys" "${errs:+  ($errs)}"
}

: >"$TMP/raw"
echo "http.sh: $ROUNDS rounds x {amio, nginx} x rows -c{$(echo "$ROWS" | tr ' ' ',')}, ${DURATION} s each" \
	"(warm-up ${WARMUP} s); server on CPU $SRV_CPU, wrk on CPU $CLI_CPU"
round=1
while [ "$round" -le "$ROUNDS" ]; do
	for s in amio nginx; do
		start_server $s
		# shellcheck disable=SC2086
		$PIN_C wrk -t1 -c50 -d"${WARMUP}s" "http://127.0.0.1:$SPORT/" >/dev/null 2>&1 || true
		for c in $ROWS; do
			run_row $s "$c"
		done
		stop_server $s
	done
	round=$((round + 1))
done

# The table: medians over the rounds, amio / nginx per row.
mkdir -p "$OUT_DIR"
{
	echo "# HTTP benchmark, $(date '+%F %H:%M')"
	echo
	echo "$(uname -srm), $(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -n 1))."
	echo "examples/http_server -w $WORKERS (amio $(cat "$TMP/backend" 2>/dev/null || echo ?) backend)" \
		"against $("$NGINX" -v 2>&1 | sed 's/^nginx version: //') (1 worker, access_log off," \
		"\`return 200 \"Hello, World!\"\`), both on 127.0.0.1, GET / with keep-alive."
	if [ -n "$PIN_S" ]; then
		echo "Server pinned to CPU $SRV_CPU (all threads), wrk to CPU $CLI_CPU: \`wrk -t1 -cN -d${DURATION}s --latency\`."
	else
		echo "Not pinned (taskset or a second CPU missing): \`wrk -t1 -cN -d${DURATION}s --latency\`."
	fi
	echo "$ROUNDS rounds, servers interleaved (each started afresh per round, warmed up ${WARMUP} s); medians, requests/s as median (min-max)."
	echo "CPU us/req: utime+stime of the server's threads and processes over the run / requests."
	case $COUNT in
	perf) echo "Syscalls/req: perf stat -e raw_syscalls:sys_enter -p (every thread and process of the server) over the same run (its tracepoint cost is in the timings, for both)." ;;
	strace) echo "Syscalls/req: strace -c -f over the same run (perf not available; strace slows the run)." ;;
	*) echo "Syscalls/req: not measured." ;;
	esac
	echo "Responses: amio's head is 3 lines (status, Content-Length, Connection); nginx adds Server, Date and Content-Type."
	echo
	echo "| conns | server | requests/s | p99 us | CPU us/req | syscalls/req | x nginx requests/s | x nginx CPU/req |"
	echo "|---:|---|---:|---:|---:|---:|---:|---:|"
	awk -F'\t' -v rows="$ROWS" '
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
	{
		k = $2 SUBSEP $1
		rps[k] = rps[k] " " $3; p99[k] = p99[k] " " $4; cpu[k] = cpu[k] " " $5
		if ($6 != "-") sys[k] = sys[k] " " $6
	}
	END {
		nr = split(rows, R, " ")
		for (r = 1; r <= nr; r++) {
			kn = R[r] SUBSEP "nginx"
			nrps = median(rps[kn]); ncpu = median(cpu[kn])
			for (s = 1; s <= 2; s++) {
				sv = s == 1 ? "amio" : "nginx"
				k = R[r] SUBSEP sv
				if (!(k in rps))
					continue
				m = median(rps[k]); lo = MIN; hi = MAX; c = median(cpu[k])
				sy = (k in sys) ? sprintf("%.2f", median(sys[k])) : "-"
				xr = (nrps > 0) ? sprintf("%.2f", m / nrps) : "-"
				xc = (ncpu > 0) ? sprintf("%.2f", c / ncpu) : "-"
				printf "| %s | %s | %.0f (%.0f-%.0f) | %.1f | %.2f | %s | %s | %s |\n", R[r], sv, \
				       m, lo, hi, median(p99[k]), c, sy, xr, xc
			}
		}
	}' "$TMP/raw"
	echo
	echo "x nginx: amio / nginx (> 1 is more requests/s; < 1 is less CPU per request)."
} >"$OUT"
cat "$OUT"
echo "http.sh: wrote $OUT"
