#!/bin/sh
# SPDX-License-Identifier: MIT
# daemon.sh -- benchmarks of mimed (issue 5): mimectl bench with the tasks interleaved at
# concurrency 1, 8 and 32, MIME vs conventional mode in the same run (and a single-task
# stream, and other worker/thread splits); RSS of mimed serving 1, 2, 3 tasks in each mode
# (with Pss, the bundle mapping and "model memory" over a tiny-model floor; --memory-only
# runs just that part and writes nothing);
# the socket path's overhead at batch 1 against the in-process engine call (bench_socket).
# Builds what it needs in its own release build directory, then runs bench/daemon.py,
# which replaces (or appends) its own section of bench/RESULTS.md and leaves the rest alone.
#
#   bench/daemon.sh [--rounds N] [--requests N] [--graph vgg7-half|vgg7] [--bundle FILE]
#                   [--no-write] [--memory-only]
#
# The bundle: --bundle FILE, else models/demo.mime when it has conventional tensors for
# every task, else a random-weight bundle from tests/integration/mkbundle (--graph, default
# vgg7-half: the demo parent's shape; then the socket path and the 3-task RSS are also
# measured on VGG-7 full width). Defaults: 3 rounds of 600 requests per cell, a few
# minutes on 2 cores. Raw results: build-dbench/daemon-results.json.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD="$ROOT/build-dbench"
CMD="bench/daemon.sh${*:+ $*}"

if [ ! -f "$BUILD/build.ninja" ]; then
	# -Dwerror=false: -O3 finds maybe-uninitialized warnings -O2 does not (lib/idx.c).
	meson setup "$BUILD" "$ROOT" --buildtype=release -Dwerror=false -Dtests=disabled >/dev/null
fi
# Only the daemon's targets: others' work in progress elsewhere in the tree cannot stop us.
ninja -C "$BUILD" daemon/mimed client/mimectl daemon/mkbundle bench/bench_socket >/dev/null

exec python3 "$HERE/daemon.py" --build "$BUILD" --root "$ROOT" --command "$CMD" "$@"
