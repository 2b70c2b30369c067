#!/bin/sh
# Runs an echo server (echo_server, or completion_echo_server) and echo_client
# on 127.0.0.1 and shuts the server down with SIGINT, as a user would with
# Ctrl-C. Fails if any byte came back wrong.
# With SYSCALLS=1 (completion_echo_server only: it prints its byte count on
# SIGUSR1) it also counts the server's syscalls in a window inside the run,
# per thread (perf stat -e raw_syscalls:sys_enter --per-thread; strace -f
# where perf cannot), and prints them per 1,000 messages: the whole process,
# the poll thread, and the workers, whose steady state is the point.
# usage: demo.sh BUILD_DIR [seconds] [connections] [port: 0 = pick a free one] [server]
set -eu
build=$1
seconds=${2:-5}
conns=${3:-64}
port=${4:-0}
server_name=${5:-echo_server}
msg=64
if [ "$port" = 0 ]; then
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 9123)
fi
tmp=$(mktemp -d)
"$build/examples/$server_name" -p "$port" -w 2 -m "$msg" >"$tmp/server.log" &
server=$!
trap 'kill -INT $server 2>/dev/null || true; rm -rf "$tmp"' EXIT
i=0
until grep -q listening "$tmp/server.log" || [ $i -ge 100 ]; do sleep 0.05; i=$((i + 1)); done
status=0
"$build/examples/echo_client" -p "$port" -c "$conns" -m "$msg" -d "$seconds" &
client=$!
if [ "${SYSCALLS:-0}" = 1 ]; then
	# A window that starts after the connections are up and ends before
	# the client stops: steady state. The SIGUSR1s bracket it from inside.
	win=$((seconds - 2))
	[ "$win" -ge 1 ] || win=1
	sleep 1
	mark="kill -USR1 $server; sleep $win; kill -USR1 $server"
	if perf stat -e raw_syscalls:sys_enter --per-thread -x, -o "$tmp/perf.csv" -p "$server" \
		-- sh -c "$mark" 2>"$tmp/perf.err" && grep -q raw_syscalls "$tmp/perf.csv"; then
		how="perf stat -e raw_syscalls:sys_enter --per-thread"
		# "name-tid,count,..." -> "name count"
		grep raw_syscalls "$tmp/perf.csv" | sed 's/^\(.*\)-[0-9]*,\([0-9]*\),.*/\1 \2/' >"$tmp/counts"
	elif command -v strace >/dev/null; then
		how="strace -f (slows the server: the counts stand, the rate does not)"
		strace -qq -f -o "$tmp/st" -p "$server" &
		tracer=$!
		sleep 1
		sh -c "$mark"
		kill -INT "$tracer"
		wait "$tracer" || true
		for t in /proc/"$server"/task/*; do
			tid=${t##*/}
			echo "$(cat "$t/comm") $(grep -c "^$tid " "$tmp/st" || true)"
		done >"$tmp/counts"
	else
		echo "demo: neither perf nor strace can count syscalls here" >&2
		status=1
	fi
fi
wait "$client" || status=$?
kill -INT "$server"
wait "$server" || status=$?
trap - EXIT
cat "$tmp/server.log"
if [ -s "$tmp/counts" ] 2>/dev/null; then
	awk -v how="$how" -v msg="$msg" '
		FNR == NR { if ($0 ~ /so far/) { b[++k] = $(NF - 3) } next }
		{ n = $NF; name = $1; total += n
		  if (name ~ /^amio-worker/) { workers += n; each = each sprintf(" %s %d", name, n) }
		  else if (name == "amio-poll") poll += n
		  else other += n }
		END {
			m = (b[2] - b[1]) / msg
			if (m <= 0) { print "demo: no messages in the window"; exit 1 }
			printf "demo: syscalls in the steady-state window (%d messages; %s):\n", m, how
			printf "demo:   whole process %d = %.1f per 1,000 messages\n", total, 1000 * total / m
			printf "demo:   poll thread   %d = %.1f per 1,000 messages\n", poll, 1000 * poll / m
			printf "demo:   workers       %d = %.1f per 1,000 messages (%s )\n", workers, 1000 * workers / m, each
			printf "demo:   main thread   %d (the SIGUSR1 marks)\n", other
		}' "$tmp/server.log" "$tmp/counts" || status=1
fi
rm -rf "$tmp"
exit $status
