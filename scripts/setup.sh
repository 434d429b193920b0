#!/bin/sh
# setup.sh -- install the Debian 12 packages mime needs, only those missing.
# Used by both README commands and by .ci/run. Run as root (or with sudo available).
set -eu

# strace: tests/integration/check_syscalls.sh (the unit's system call filter).
PKGS="build-essential meson ninja-build pkg-config clang-format strace
libopenblas-dev libyaml-dev libjansson-dev libuv1-dev libcmocka-dev zlib1g-dev libpng-dev
dataset-fashion-mnist"
# Extra packages for optional parts, passed as arguments (e.g. python3-torch for bench/).
PKGS="$PKGS $*"

missing=""
for p in $PKGS; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case "$st" in
	*"install ok installed"*) ;;
	*) missing="$missing $p" ;;
	esac
done

if [ -z "$missing" ]; then
	echo "setup: all packages present"
	exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || { echo "setup: need root to install:$missing" >&2; exit 1; }
	SUDO=sudo
fi
echo "setup: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
