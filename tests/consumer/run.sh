#!/bin/sh
# Builds tests/consumer against an amio installed in ROOT (a DESTDIR or an
# unpacked package; "" for a real install) under PREFIX, four ways, and runs
# each program:
#   find_package(amio) + amio::amio, amio::amio_static    (CMAKE_PREFIX_PATH)
#   pkg-config --cflags --libs amio amio-frame, shared and static
#                                      (PKG_CONFIG_PATH, PKG_CONFIG_SYSROOT_DIR)
# Usage: run.sh ROOT PREFIX LIBDIR WORKDIR CMAKE CC OBJDUMP VERSION [GENERATOR]
set -eu
root=$1 prefix=$2 libdir=$3 work=$4 cmake=$5 cc=$6 objdump=$7 version=$8 gen=${9:-}
here=$(cd "$(dirname "$0")" && pwd)
case $libdir in
/*) lib=$root$libdir ;;
*) lib=$root$prefix/$libdir ;;
esac
pkgconf=${PKG_CONFIG:-pkg-config}

die() {
	echo "consumer: FAILED: $*" >&2
	exit 1
}
needed() {
	"$objdump" -p "$1" | awk '$1 == "NEEDED" { print $2 }'
}
# Runs a consumer program; a shared one must load amio from $lib.
run() {
	echo "consumer: running $1"
	if needed "$1" | grep -q '^libamio'; then
		for so in libamio.so.0 libamio_frame.so.0; do
			needed "$1" | grep -qx "$so" || die "$1 does not load $so"
			where=$(LD_LIBRARY_PATH=$lib ldd "$1" | awk -v so="$so" '$1 == so { print $3 }')
			[ "$where" = "$lib/$so" ] || die "$1 loads $so from '$where', not $lib"
		done
	fi
	LD_LIBRARY_PATH=$lib "$1" || die "$1 exited with $?"
}
mkdir -p "$work"

echo "consumer: find_package(amio) with CMAKE_PREFIX_PATH=$root$prefix"
rm -rf "$work/cmake"
log=$work/cmake.log
if [ -n "$gen" ]; then
	set -- -G "$gen"
else
	set --
fi
"$cmake" "$@" -S "$here" -B "$work/cmake" -DCMAKE_C_COMPILER="$cc" \
	-DCMAKE_PREFIX_PATH="$root$prefix" -DAMIO_EXPECT_VERSION="$version" >"$log" 2>&1 ||
	{ cat "$log"; die "configure tests/consumer"; }
"$cmake" --build "$work/cmake" >>"$log" 2>&1 || { cat "$log"; die "build tests/consumer"; }
grep 'amio .* in ' "$log" || true
needed "$work/cmake/consumer_static" | grep -q '^libamio' && die "consumer_static loads a shared amio"
run "$work/cmake/consumer_shared"
run "$work/cmake/consumer_static"

echo "consumer: pkg-config with PKG_CONFIG_PATH=$lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$root"
export PKG_CONFIG_PATH="$lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$root"
got=$($pkgconf --modversion amio) || die "pkg-config --modversion amio"
[ "$got" = "$version" ] || die "pkg-config says amio $got, expected $version"
got=$($pkgconf --modversion amio-frame) || die "pkg-config --modversion amio-frame"
[ "$got" = "$version" ] || die "pkg-config says amio-frame $got, expected $version"
cflags=$($pkgconf --cflags amio amio-frame) || die "pkg-config --cflags"
libs=$($pkgconf --libs amio amio-frame) || die "pkg-config --libs"
static=""
for w in $($pkgconf --static --libs amio amio-frame); do
	case $w in
	-lamio | -lamio_frame) w="-l:lib${w#-l}.a" ;; # the archives, not the .so next to them
	esac
	static="$static $w"
done
echo "consumer:   --cflags: $cflags"
echo "consumer:   --libs: $libs"
echo "consumer:   --static --libs:$static"
flags="-std=c11 -Wall -Wextra -Wpedantic -Werror -DAMIO_EXPECT_VERSION=\"$version\""
# shellcheck disable=SC2086 # word splitting of the flags is intended
$cc $flags -o "$work/pc_shared" "$here/main.c" $cflags $libs || die "cc with pkg-config --libs"
# shellcheck disable=SC2086
$cc $flags -o "$work/pc_static" "$here/main.c" $cflags $static ||
	die "cc with pkg-config --static --libs"
needed "$work/pc_static" | grep -q '^libamio' && die "pc_static loads a shared amio"
run "$work/pc_shared"
run "$work/pc_static"
echo "consumer: all four builds ran"
