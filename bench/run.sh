#!/bin/sh
# SPDX-License-Identifier: MIT
# run.sh -- build the engine benchmark (release, its own build dir), run it and the PyTorch
# baseline in interleaved rounds (so machine noise hits both), and write bench/RESULTS.md.
#
#   bench/run.sh [--rounds N] [--min-time SECONDS] [--rev GITREV] [--no-profile]
#
# --rev benchmarks a committed revision of lib/ (git archive) instead of the working tree's,
# so work in progress on the engine neither breaks nor skews the run.
# Raw JSON of every round goes to build-bench/results/. Needs python3-torch (installed
# through scripts/setup.sh when missing). Uses /usr/bin/python3: pyenv shims may shadow it.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD="$ROOT/build-bench"
PY=/usr/bin/python3
ROUNDS=5
MIN_TIME=0.3
REV=""
PROFILE=1
CMD="bench/run.sh $*"

while [ $# -gt 0 ]; do
	case "$1" in
	--rounds) ROUNDS=$2; shift 2 ;;
	--min-time) MIN_TIME=$2; shift 2 ;;
	--rev) REV=$2; shift 2 ;;
	--no-profile) PROFILE=0; shift ;;
	*) echo "usage: bench/run.sh [--rounds N] [--min-time S] [--rev GITREV] [--no-profile]" >&2
	   exit 2 ;;
	esac
done

if ! $PY -c 'import torch' 2>/dev/null; then
	"$ROOT/scripts/setup.sh" python3-torch
fi

# Source: a private copy of lib/ and the top-level meson files, from the working tree or a
# committed revision, with the current bench/ on top; the top-level meson.build is cut down
# to lib and bench, so work in progress in train/, daemon/... cannot break this build.
HASH=$(git -C "$ROOT" rev-parse --short "${REV:-HEAD}")
if [ -n "$REV" ]; then
	TAG=$HASH
	ENGINE="$HASH (git archive of lib/; bench/ from the working tree)"
else
	TAG=tree
	if git -C "$ROOT" diff --quiet HEAD -- lib; then
		ENGINE="$HASH (working tree, lib/ as committed)"
	else
		ENGINE="$HASH + uncommitted changes in lib/ (working tree)"
	fi
fi
SRC="$BUILD/src-$TAG"
BDIR="$BUILD/build-$TAG"
rm -rf "$SRC.new"
mkdir -p "$SRC.new/bench"
if [ -n "$REV" ]; then
	git -C "$ROOT" archive "$HASH" lib meson.build meson_options.txt | tar -x -C "$SRC.new"
else
	cp -r "$ROOT/lib" "$ROOT/meson.build" "$ROOT/meson_options.txt" "$SRC.new/"
fi
cp "$HERE"/*.c "$HERE"/*.h "$HERE"/meson.build "$SRC.new/bench/"
sed -i -e "/^subdir('lib')/b" -e "/^subdir('bench')/b" -e '/^ *subdir(/d' -e '/^if cmocka.found()/,/^endif/d' \
	"$SRC.new/meson.build"
# Replace the copy only when it changed, so ninja rebuilds only what did.
if [ -d "$SRC" ] && diff -r -q "$SRC" "$SRC.new" >/dev/null; then
	rm -rf "$SRC.new"
else
	rm -rf "$SRC"
	mv "$SRC.new" "$SRC"
fi

# Release build of the benchmark only. werror is off here because -O3 raises warnings -O2
# does not, in files bench/ does not own; the default (debugoptimized, --werror) tree build
# checks bench/ itself.
if [ ! -f "$BDIR/build.ninja" ]; then
	meson setup "$BDIR" "$SRC" -Dbuildtype=release -Dwerror=false -Dtests=disabled >/dev/null
fi
ninja -C "$BDIR" bench/bench_engine >/dev/null
BENCH="$BDIR/bench/bench_engine"

OUT="$BUILD/results"
rm -rf "$OUT"
mkdir -p "$OUT"
uptime >"$OUT/load-start.txt"
i=1
while [ "$i" -le "$ROUNDS" ]; do
	echo "run.sh: round $i/$ROUNDS" >&2
	# Alternate which goes first so neither always gets the quieter slot.
	# PyTorch runs twice: OpenMP's default wait policy (spinning) and PASSIVE, which
	# behaves better when other jobs share the cores; the report compares with the better.
	if [ $((i % 2)) -eq 1 ]; then
		"$BENCH" --json --min-time "$MIN_TIME" >"$OUT/engine.$i.json"
		$PY "$HERE/pytorch_vgg7.py" --min-time "$MIN_TIME" >"$OUT/torch.$i.json"
		OMP_WAIT_POLICY=PASSIVE $PY "$HERE/pytorch_vgg7.py" --min-time "$MIN_TIME" \
			>"$OUT/torch.passive.$i.json"
	else
		OMP_WAIT_POLICY=PASSIVE $PY "$HERE/pytorch_vgg7.py" --min-time "$MIN_TIME" \
			>"$OUT/torch.passive.$i.json"
		$PY "$HERE/pytorch_vgg7.py" --min-time "$MIN_TIME" >"$OUT/torch.$i.json"
		"$BENCH" --json --min-time "$MIN_TIME" >"$OUT/engine.$i.json"
	fi
	i=$((i + 1))
done
if [ "$PROFILE" -eq 1 ]; then
	echo "run.sh: per-layer profile" >&2
	"$BENCH" --json --profile --no-cells --min-time "$MIN_TIME" >"$OUT/profile.json"
fi
uptime >"$OUT/load-end.txt"

$PY "$HERE/report.py" --dir "$OUT" --command "$CMD" --engine "$ENGINE" \
	--findings "$HERE/FINDINGS.md" >"$OUT/RESULTS.md"
# Keep the sections other benchmarks wrote (daemon, energy record cost, ...): every "## "
# section of the old file whose heading this report does not write.
if [ -f "$HERE/RESULTS.md" ]; then
	awk '/^## /{keep = ($0 !~ /^## (Ceiling|Engine|PyTorch|Ours vs PyTorch|Per-layer profile|Findings)/)}
	     keep' "$HERE/RESULTS.md" >"$OUT/others.md"
	if [ -s "$OUT/others.md" ]; then
		printf '\n' >>"$OUT/RESULTS.md"
		cat "$OUT/others.md" >>"$OUT/RESULTS.md"
	fi
fi
cp "$OUT/RESULTS.md" "$HERE/RESULTS.md"
echo "run.sh: wrote $HERE/RESULTS.md" >&2
