#!/bin/sh
# check_subproject: tests/subproject, a parent project with targets named like
# amio's examples, tests and benchmarks, builds amio through add_subdirectory,
# links amio::amio (echo_server) and amio::amio_static (check_poller), runs
# both, and installs nothing of amio.
# Usage: check_subproject.sh SOURCE WORKDIR CMAKE CC [GENERATOR]
set -eu
src=$1 work=$2 cmake=$3 cc=$4 gen=${5:-}
die() {
	echo "check_subproject: FAILED: $*" >&2
	exit 1
}
rm -rf "$work"
mkdir -p "$work"
if [ -n "$gen" ]; then
	set -- -G "$gen"
else
	set --
fi
echo "check_subproject: configure tests/subproject with add_subdirectory($src)"
"$cmake" "$@" -S "$src/tests/subproject" -B "$work/build" -DCMAKE_C_COMPILER="$cc" \
	-DAMIO_SOURCE_DIR="$src" >"$work/build.log" 2>&1 || { cat "$work/build.log"; die "configure"; }
"$cmake" --build "$work/build" >>"$work/build.log" 2>&1 || { cat "$work/build.log"; die "build"; }
for p in echo_server check_poller; do
	echo "check_subproject: running $p"
	"$work/build/$p" || die "$p exited with $?"
done
DESTDIR=$work/root "$cmake" --install "$work/build" >>"$work/build.log" 2>&1 || die "install"
if [ -d "$work/root" ] && [ -n "$(find "$work/root" ! -type d)" ]; then
	find "$work/root" ! -type d
	die "the parent's install holds amio files (above)"
fi
echo "check_subproject: passed"
