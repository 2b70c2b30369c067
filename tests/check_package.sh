#!/bin/sh
# check_package: `cpack -G DEB` of this build into a temporary directory, the
# two packages' fields and contents checked, both unpacked with dpkg-deb -x
# into one root, then tests/consumer built and run against that root
# (consumer/run.sh).
# Usage: check_package.sh CPACK BUILD PREFIX LIBDIR WORKDIR CMAKE CC OBJDUMP VERSION [GENERATOR]
set -eu
cpack=$1 build=$2 prefix=$3 libdir=$4 work=$5 version=$9
shift 5
here=$(cd "$(dirname "$0")" && pwd)
die() {
	echo "check_package: FAILED: $*" >&2
	exit 1
}
rm -rf "$work"
mkdir -p "$work/pkg"
echo "check_package: cpack -G DEB --config $build/CPackConfig.cmake -B $work/pkg"
"$cpack" -G DEB --config "$build/CPackConfig.cmake" -B "$work/pkg" >"$work/cpack.log" 2>&1 ||
	{ cat "$work/cpack.log"; die "cpack"; }
run=$(ls "$work"/pkg/libamio0_*.deb 2>/dev/null) || die "no libamio0 package"
dev=$(ls "$work"/pkg/libamio-dev_*.deb 2>/dev/null) || die "no libamio-dev package"
echo "check_package: $(basename "$run") $(basename "$dev")"

field() {
	dpkg-deb -f "$1" "$2"
}
[ "$(field "$run" Version)" = "$version" ] || die "libamio0 Version $(field "$run" Version)"
for dep in liburing2 libck0 libc6; do
	field "$run" Depends | grep -q "\\b$dep\\b" || die "libamio0 does not depend on $dep"
done
field "$dev" Depends | grep -q "libamio0 (= $version)" || die "libamio-dev: no libamio0 (= $version)"
for dep in liburing-dev libck-dev; do
	field "$dev" Depends | grep -q "\\b$dep\\b" || die "libamio-dev does not depend on $dep"
done

# Contents: the runtime package holds the versioned libraries only.
dpkg-deb -c "$run" | awk '{ print $6 }' >"$work/runtime.txt"
dpkg-deb -c "$dev" | awk '{ print $6 }' >"$work/dev.txt"
for f in libamio.so.0 libamio_frame.so.0; do
	grep -q "/$f\$" "$work/runtime.txt" || die "libamio0 lacks $f"
done
if grep -E '\.(h|a|pc|cmake|3|7)$|/lib[a-z_]*\.so$' "$work/runtime.txt"; then
	die "libamio0 holds development files (above)"
fi
for f in include/amio.h include/amio/frame.h include/amio/version.h libamio.so libamio.a \
	libamio_frame.so libamio_frame.a pkgconfig/amio.pc pkgconfig/amio-frame.pc \
	cmake/amio/amioConfig.cmake cmake/amio/amioConfigVersion.cmake man3/amio_poller_new.3 \
	man3/amio_frame_reader_init.3 man7/amio.7; do
	grep -q "/$f\$" "$work/dev.txt" || die "libamio-dev lacks $f"
done
if grep -E '\.so\.[0-9]' "$work/dev.txt"; then
	die "libamio-dev holds runtime files (above)"
fi

dpkg-deb -x "$run" "$work/root"
dpkg-deb -x "$dev" "$work/root"
echo "check_package: unpacked both into $work/root"
exec sh "$here/consumer/run.sh" "$work/root" "$prefix" "$libdir" "$work" "$@"
