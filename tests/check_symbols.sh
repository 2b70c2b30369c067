#!/bin/sh
# check_symbols: each shared library exports its public API and nothing else.
#  - nm -D --defined-only: every symbol matches ^amio_ and is an AMIO_API
#    declaration of the library's headers (or a listed test hook), versioned
#    by the library's node (AMIO_<major>.<minor>, AMIO_FRAME_<major>.<minor>);
#  - every AMIO_API declaration of those headers is exported;
#  - SONAME lib<name>.so.<major>; NEEDED only libc where asked ("libc");
#  - the static archive defines no global symbol outside ^amio_.
# Usage: check_symbols.sh NM OBJDUMP {lib SO SONAME ARCHIVE HOOKS|- NEEDED(any|libc) HEADER...}...
set -u
nm=$1 objdump=$2
shift 2
fail=0
err() {
	echo "check_symbols: FAILED: $*" >&2
	fail=1
}
# The function names declared AMIO_API in the headers given (one per line).
api_names() {
	sed -n 's/^AMIO_API[^(]*[^A-Za-z0-9_]\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*(.*/\1/p' "$@" | sort
}

while [ $# -gt 0 ]; do
	[ "$1" = lib ] && [ $# -ge 7 ] || { echo "usage: see $0" >&2; exit 2; }
	so=$2 soname=$3 ar=$4 hooks=$5 needed=$6
	shift 6
	headers=""
	while [ $# -gt 0 ] && [ "$1" != lib ]; do
		headers="$headers $1"
		shift
	done
	name=$(basename "$so")
	# shellcheck disable=SC2086
	api=$(api_names $headers)
	# shellcheck disable=SC2086
	decls=$(grep -h '^AMIO_API' $headers | wc -l)
	[ "$decls" -eq "$(echo "$api" | grep -c .)" ] ||
		err "$headers: $decls AMIO_API lines, $(echo "$api" | grep -c .) function names read"
	allowed=$(printf '%s\n%s\n' "$api" "$(echo "$hooks" | tr ',' '\n' | grep -v '^-$')" | sort -u)

	out=$("$nm" -D --defined-only "$so") || { err "nm -D $so"; continue; }
	exported=""
	nodes=""
	while read -r _addr type sym; do
		[ -n "$sym" ] || continue
		case $sym in
		*@*) base=${sym%%@*} ver=${sym##*@} ;;
		*) base=$sym ver="" ;;
		esac
		if [ "$type" = A ] && [ -z "$ver" ]; then # a version node
			echo "$base" | grep -Eq '^AMIO(_FRAME)?_[0-9]+\.[0-9]+$' || err "$name: version node $base"
			nodes="$nodes $base"
			continue
		fi
		echo "$base" | grep -q '^amio_' || err "$name exports $base (not amio_*)"
		echo "$allowed" | grep -qx "$base" || err "$name exports $base, not an AMIO_API declaration"
		case $sym in
		*@@AMIO_[0-9]*.[0-9]* | *@@AMIO_FRAME_[0-9]*.[0-9]*) ;;
		*) err "$name: $sym has no default version AMIO[_FRAME]_<major>.<minor>" ;;
		esac
		exported="$exported
$base"
	done <<EOT
$out
EOT
	for f in $api; do
		echo "$exported" | grep -qx "$f" || err "$name does not export $f (declared AMIO_API)"
	done

	got=$("$objdump" -p "$so" | awk '$1 == "SONAME" { print $2 }')
	[ "$got" = "$soname" ] || err "$name: SONAME '$got', expected $soname"
	if [ "$needed" = libc ]; then
		for n in $("$objdump" -p "$so" | awk '$1 == "NEEDED" { print $2 }'); do
			case $n in
			libc.so.* | ld-linux* | libasan.so.* | libubsan.so.* | libtsan.so.*) ;;
			*) err "$name needs $n: libc only" ;;
			esac
		done
	fi

	bad=$("$nm" -g --defined-only "$ar" | awk 'NF == 3 { print $3 }' | grep -v '^amio_' | sort -u)
	[ -z "$bad" ] || err "$(basename "$ar") defines globals outside amio_*: $(echo $bad)"

	echo "check_symbols: $name: $(echo "$exported" | grep -c .) symbols exported," \
		"$(echo "$api" | grep -c .) declared; node(s)$nodes; SONAME $got"
done
exit $fail
