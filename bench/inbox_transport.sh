#!/bin/sh
# Inbox transport (DESIGN section 1): MSG_RING per notification vs ck_ring + doorbell,
#   sh bench/inbox_transport.sh [build_dir]   (about 20 s; RESULT lines, rep=N added)
# 3 interleaved repetitions: every config runs once per rep, modes alternating.
set -eu
B=${1:-build/release}/bench/inbox_transport_bench
[ -x "$B" ] || { echo "inbox_transport.sh: no $B (build first)" >&2; exit 1; }
for rep in 1 2 3; do
	for cfg in "-b 1 -n 2000000" "-b 64 -n 2000000" "-b 1 -n 2000000 -S" "-b 64 -n 2000000 -S" \
		"-l -n 20000" "-l -n 20000 -S" "-b 1 -n 2000000 -P" "-b 64 -n 2000000 -P"; do
		for m in msgring ring; do
			$B -m $m $cfg | grep '^RESULT' | sed "s/^RESULT /RESULT rep=$rep /"
		done
	done
done
