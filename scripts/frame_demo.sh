#!/bin/sh
# Runs a framed echo server (frame_echo_server, or
# completion_frame_echo_server) and frame_client on 127.0.0.1 (frames of 0 bytes to
# 64 KiB) and shuts the server down with SIGINT, as a user would with Ctrl-C.
# Fails if any frame came back wrong or either program failed.
# usage: frame_demo.sh BUILD_DIR [seconds] [connections] [port: 0 = pick a free one]
#                      [server SO_SNDBUF bytes: 0 = default; small makes writes come up short]
#                      [server]
set -eu
build=$1
seconds=${2:-5}
conns=${3:-64}
port=${4:-0}
sndbuf=${5:-0}
server_name=${6:-frame_echo_server}
max=65536
if [ "$port" = 0 ]; then
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 9124)
fi
"$build/examples/$server_name" -p "$port" -w 2 -f "$max" -s "$sndbuf" &
server=$!
trap 'kill -INT $server 2>/dev/null || true' EXIT
status=0
"$build/examples/frame_client" -p "$port" -c "$conns" -d "$seconds" -M "$max" || status=$?
kill -INT "$server"
wait "$server" || status=$?
trap - EXIT
exit $status
