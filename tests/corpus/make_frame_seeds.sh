#!/bin/sh
# Writes the tiny seed inputs of tests/fuzz_frame_reader.c into corpus/frame/.
# Byte 0: max_frame index (bits 0-2), chunk range (bits 3-4), read mode (bit 5);
# bytes 1-2: PRNG seed; then the stream.
set -eu
d="$(dirname "$0")/frame"
mkdir -p "$d"
# feed, max_frame 16, chunks 1..7: "hello", an empty frame, "hi"
printf '\014\001\000\000\000\000\005hello\000\000\000\000\000\000\000\002hi' >"$d/feed-three-frames"
# read() from a socket, max_frame 100, chunks 1..64: two frames
printf '\065\007\000\000\000\000\003abc\000\000\000\001z' >"$d/read-two-frames"
# max_frame 3: a frame that fits, then a header announcing 4 (-EMSGSIZE)
printf '\002\003\000\000\000\000\001a\000\000\000\004abcd' >"$d/over-max-frame"
# read(), max_frame 1000, 1-byte chunks: EOF in the middle of a frame (-EPROTO)
printf '\046\011\000\000\000\000\011abc' >"$d/eof-mid-frame"
# max_frame 0: nothing but zero-length frames
printf '\000\005\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' >"$d/zero-length-only"
