#!/bin/sh
# Runs echo_server and echo_client on 127.0.0.1 and shuts the server down with
# SIGINT, as a user would with Ctrl-C. Fails if any byte came back wrong.
# usage: demo.sh BUILD_DIR [seconds] [connections] [port: 0 = pick a free one]
set -eu
build=$1
seconds=${2:-5}
conns=${3:-64}
port=${4:-0}
msg=64
if [ "$port" = 0 ]; then
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 9123)
fi
"$build/examples/echo_server" -p "$port" -w 2 -m "$msg" &
server=$!
trap 'kill -INT $server 2>/dev/null || true' EXIT
status=0
"$build/examples/echo_client" -p "$port" -c "$conns" -m "$msg" -d "$seconds" || status=$?
kill -INT "$server"
wait "$server" || status=$?
trap - EXIT
exit $status
