#!/bin/sh
# Installs the Debian packages named on the command line that are missing.
# As root it runs apt-get; otherwise it prints the one line to run and fails.
set -eu
missing=""
for pkg in "$@"; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $pkg"
	fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "amio: missing packages:$missing" >&2
	echo "amio: run: sudo apt-get install -y$missing" >&2
	exit 1
fi
echo "amio: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine has no package lists yet; a failed install retries after an update.
apt-get install -y -q $missing >/dev/null 2>&1 ||
	{ apt-get update -q >/dev/null && apt-get install -y -q $missing >/dev/null; }
