#!/bin/sh
# SPDX-License-Identifier: MIT
# phases.sh -- build bench_phase (release, its own build dir) and run it: sparse-kernel and
# coarse speedups, per-phase forward time, switch latency and RSS (issue 4).
#
#   bench/phases.sh [--bundle FILE] [--min-time SECONDS] [--parts abcd] [--switches N]
#
# Without --bundle: models/demo.mime when it lists phases, else a random-weight VGG-7 half
# width bundle with 3 nested phases written by mkbundle (tests/integration/mkbundle.c).
# Prints markdown; bench/RESULTS.md records runs by hand with the command, date and load.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD="$ROOT/build-bench-phase"
BUNDLE=""
ARGS=""

while [ $# -gt 0 ]; do
	case "$1" in
	--bundle) BUNDLE=$2; shift 2 ;;
	--min-time|--parts|--switches) ARGS="$ARGS $1 $2"; shift 2 ;;
	*) echo "usage: bench/phases.sh [--bundle FILE] [--min-time S] [--parts abcd] [--switches N]" >&2
	   exit 2 ;;
	esac
done

if [ ! -f "$BUILD/build.ninja" ]; then
	meson setup "$BUILD" "$ROOT" -Dbuildtype=release -Dwerror=false >/dev/null
fi
ninja -C "$BUILD" bench/bench_phase daemon/mkbundle >/dev/null

if [ -z "$BUNDLE" ]; then
	DEMO="$ROOT/models/demo.mime"
	if [ -f "$DEMO" ] && [ "$("$BUILD/bench/bench_phase" --probe "$DEMO")" -gt 0 ]; then
		BUNDLE=$DEMO
	else
		BUNDLE="$BUILD/vgg7-half-3phases.mime"
		"$BUILD/daemon/mkbundle" "$BUNDLE" 1 --graph vgg7-half --phases 3
	fi
fi

echo "<!-- bench/phases.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- lib || echo ' + uncommitted lib/'), load $(cut -d' ' -f1-3 /proc/loadavg) -->"
# shellcheck disable=SC2086 # ARGS is a list of words
"$BUILD/bench/bench_phase" --bundle "$BUNDLE" $ARGS
echo "<!-- done $(date -u '+%H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg) -->"
