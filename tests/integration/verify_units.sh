#!/bin/sh
# verify_units.sh SYSTEMD_ANALYZE SERVICE SOCKET -- runs 'systemd-analyze verify' on mimed's
# units, as mimed.service / mimed.socket side by side in a temporary directory (the socket
# unit names its service by its own name).
set -eu
analyze=$1 service=$2 socket=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp "$service" "$dir/mimed.service"
cp "$socket" "$dir/mimed.socket"
out=$("$analyze" verify "$dir/mimed.service" "$dir/mimed.socket" 2>&1) || {
	echo "$out"
	exit 1
}
# verify also prints warnings about units it pulls in; ours must be clean.
if echo "$out" | grep -E "mimed\.(service|socket)"; then
	exit 1
fi
echo "systemd-analyze verify: mimed.service and mimed.socket are clean"
