#!/bin/sh
# completion_frame_echo_server with 64-byte pool buffers and SO_SNDBUF 4096,
# 8 clients pipelining 3,000 frames of 0 B to 64 KiB each in odd-sized writes
# while reading (pipelined_frames.py checks every byte comes back). Many
# frames per buffer, frames cut across buffers, the backpressure pause, and
# sends on full sockets: on io_uring a send could end with -EAGAIN there
# (the connection was closed) until amio re-armed it with POLL_FIRST.
# usage: check_completion_pipelined.sh SERVER PYTHON_SCRIPT
set -u
server=$1 script=$2
log=$(mktemp)
"$server" -p 0 -w 2 -b 64 -n 64 -s 4096 >"$log" 2>&1 &
srv=$!
port=""
for _ in $(seq 50); do
	port=$(grep -o '127.0.0.1:[0-9]*' "$log" | head -n 1 | cut -d: -f2)
	[ -n "$port" ] && break
	sleep 0.1
done
[ -n "$port" ] || { cat "$log"; echo "check_completion_pipelined: no port"; kill $srv; exit 1; }
timeout 120 python3 "$script" "$port" 1 8
rc=$?
kill -INT $srv
wait $srv
if grep -q -- '-EAGAIN' "$log"; then
	grep -- '-EAGAIN' "$log" | head -n 3
	echo "check_completion_pipelined: FAILED: a send ended with -EAGAIN"
	rc=1
fi
[ $rc -eq 0 ] || tail -n 20 "$log"
rm -f "$log"
exit $rc
