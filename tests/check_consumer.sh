#!/bin/sh
# check_consumer: stages `cmake --install` of this build in a DESTDIR, checks
# what it holds, then builds and runs tests/consumer against it with
# find_package(amio) and with pkg-config, shared and static (consumer/run.sh).
# Usage: check_consumer.sh BUILD PREFIX LIBDIR WORKDIR CMAKE CC OBJDUMP VERSION [GENERATOR]
set -eu
build=$1 prefix=$2 libdir=$3 work=$4
shift 4
here=$(cd "$(dirname "$0")" && pwd)
root=$work/root
rm -rf "$work"
mkdir -p "$work"
echo "check_consumer: DESTDIR=$root cmake --install $build (prefix $prefix)"
DESTDIR=$root "$1" --install "$build" >"$work/install.log" 2>&1 ||
	{ cat "$work/install.log"; echo "check_consumer: FAILED: cmake --install" >&2; exit 1; }
case $libdir in
/*) lib=$root$libdir ;;
*) lib=$root$prefix/$libdir ;;
esac
missing=""
for f in "$root$prefix/include/amio.h" "$root$prefix/include/amio/frame.h" \
	"$root$prefix/include/amio/version.h" "$lib/libamio.so.0" "$lib/libamio.so" "$lib/libamio.a" \
	"$lib/libamio_frame.so.0" "$lib/libamio_frame.so" "$lib/libamio_frame.a" \
	"$lib/cmake/amio/amioConfig.cmake" "$lib/cmake/amio/amioConfigVersion.cmake" \
	"$lib/pkgconfig/amio.pc" "$lib/pkgconfig/amio-frame.pc" \
	"$root$prefix/share/man/man3/amio_poller_new.3" "$root$prefix/share/man/man7/amio.7"; do
	[ -e "$f" ] || missing="$missing ${f#"$root"}"
done
[ -z "$missing" ] || { echo "check_consumer: FAILED: not installed:$missing" >&2; exit 1; }
exec sh "$here/consumer/run.sh" "$root" "$prefix" "$libdir" "$work" "$@"
