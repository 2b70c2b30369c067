#!/bin/sh
# check_man: a man3 page for every AMIO_API declaration (and none for anything
# else), each with NAME, SYNOPSIS, DESCRIPTION, RETURN VALUE, ERRORS, THREADS
# and SEE ALSO, no part "Not documented in the header." (the comment lacks a
# summary or a Thread: line), every amio_* page it refers to existing; and
# every page, amio(7) included, rendered by groff -man -ww -z (ps and utf8
# devices) without a warning.
# Usage: check_man.sh GROFF MAN3DIR AMIO7|- HEADER...
set -u
groff=$1 man3=$2 man7=$3
shift 3
fail=0
err() {
	echo "check_man: FAILED: $*" >&2
	fail=1
}
api=$(sed -n 's/^AMIO_API[^(]*[^A-Za-z0-9_]\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*(.*/\1/p' "$@")
[ -n "$api" ] || err "no AMIO_API declaration in $*"
for f in $api; do
	[ -f "$man3/$f.3" ] || err "no man page for $f: $man3/$f.3"
done
pages=0
for p in "$man3"/*.3 "$man7"; do
	[ -f "$p" ] || continue
	pages=$((pages + 1))
	base=$(basename "$p")
	case $base in
	*.3)
		echo "$api" | grep -qx "${base%.3}" || err "$base: no AMIO_API declaration ${base%.3}"
		sections="NAME SYNOPSIS DESCRIPTION RETURN_VALUE ERRORS THREADS SEE_ALSO"
		;;
	*) sections="NAME SYNOPSIS DESCRIPTION SEE_ALSO" ;;
	esac
	for s in $sections; do
		s=$(echo "$s" | tr _ ' ')
		grep -Eq "^\\.SH \"?$s\"?\$" "$p" || err "$base: no $s section"
	done
	grep -q 'Not documented in the header' "$p" &&
		err "$base: the header comment lacks its summary or its Thread: line"
	for ref in $(sed -n 's/^\.BR \(amio_[a-z0-9_]*\) (3).*/\1/p' "$p" | sort -u); do
		[ -f "$man3/$ref.3" ] || err "$base refers to $ref(3), which has no page"
	done
	for dev in ps utf8; do
		w=$("$groff" -man -ww -z -T"$dev" "$p" 2>&1)
		[ -z "$w" ] || err "$base: groff -man -ww -T$dev: $w"
	done
done
echo "check_man: $pages pages, $(echo "$api" | wc -l) AMIO_API declarations"
exit $fail
