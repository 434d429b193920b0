#!/bin/sh
# SPDX-License-Identifier: MIT
# make-channel-bundle.sh -- builds models/demo-channel.mime: the demo's phased parent with the
# three tasks learned with per-channel thresholds and heads pruned to a quarter of their
# weights (stored sparse), then every task per phase, then F16 (models/REPORT.md, "Per-channel
# thresholds with a pruned head"; issue 3's per-channel byte goal):
#
#   $PHASED (the demo's phased parent: scripts/make-demo-bundle.sh's $WORK/00-phases.mime)
#     -> + fmnist thresholds per channel, head 25% (3 epochs, all 54,000 training images)
#     -> + mnist  thresholds per channel, head 25% (20 epochs)
#     -> + digits thresholds per channel, head 25% (20 epochs)
#     -> + every task's head and thresholds per phase (`mime-train phase-tasks`)
#     -> F16 task tensors (`mime-train bundle half`) -> $OUT
#
# The head is pruned by magnitude before the middle epoch and the rest retrained with the
# pruned weights held at 0 (`--head-density 0.25`); --val 10% keeps the best of those epochs.
# Each step writes its bundle, JSON record and log to $WORK and is skipped when its bundle
# exists, so an interrupted run resumes. Took ~15 min here with THREADS=1 beside other jobs
# (fmnist 280 s, mnist 254 s, digits 124 s, phase-tasks 183 s).
#
# Environment: PHASED=out/demo/00-phases.mime  OUT=models/demo-channel.mime
#   WORK=out/channel  THREADS=1  SEED=1  DENSITY=0.25  MIME_DATA (the datasets,
#   scripts/fetch-data.sh)  MIME_TRAIN (default build/train/mime-train)
set -eu

cd "$(dirname "$0")/.."
MIME_TRAIN=${MIME_TRAIN:-build/train/mime-train}
PHASED=${PHASED:-out/demo/00-phases.mime}
OUT=${OUT:-models/demo-channel.mime}
WORK=${WORK:-out/channel}
THREADS=${THREADS:-1}
SEED=${SEED:-1}
DENSITY=${DENSITY:-0.25}
DATA=${MIME_DATA:-$HOME/.cache/mime/data}
DIGITS=0,1,2,3,4,5,6,7,8,9

[ -x "$MIME_TRAIN" ] || { echo "make-channel-bundle.sh: no $MIME_TRAIN (build first)" >&2; exit 1; }
[ -f "$PHASED" ] || {
	echo "make-channel-bundle.sh: no $PHASED (scripts/make-demo-bundle.sh makes it)" >&2
	exit 1
}
mkdir -p "$WORK"
T0=$(date +%s)

# step IN OUT TASK ARGS...: one task's per-channel thresholds and pruned head
step() {
	in=$1 out=$2 task=$3
	shift 3
	if [ -e "$out.mime" ]; then
		echo "$task: $out.mime exists, skipped"
		return
	fi
	echo "$task ... (log: $out.log)"
	"$MIME_TRAIN" thresholds --bundle "$in" --task "$task" --data "$DATA/$task" \
		--granularity channel --head-density "$DENSITY" --val 10% \
		--reg-sign minus --beta 1e-4 --threads "$THREADS" --seed "$SEED" "$@" \
		--json "$out.json" -o "$out.tmp.mime" 2>"$out.log" ||
		{ tail -5 "$out.log" >&2; exit 1; }
	mv "$out.tmp.mime" "$out.mime"
	grep -E "test accuracy|collapse" "$out.log" | sed 's/^/    /'
}

step "$PHASED" "$WORK/c1-fmnist" fmnist --epochs 3
step "$WORK/c1-fmnist.mime" "$WORK/c2-mnist" mnist --classes "$DIGITS" --epochs 20
step "$WORK/c2-mnist.mime" "$WORK/c3-digits" digits --classes "$DIGITS" --epochs 20
if [ ! -e "$WORK/c4-phase-tasks.mime" ]; then
	echo "every task per phase ... (log: $WORK/c4-phase-tasks.log)"
	"$MIME_TRAIN" phase-tasks --bundle "$WORK/c3-digits.mime" --data-root "$DATA" \
		--threads "$THREADS" --seed "$SEED" --val 10% --epochs 2 --train-limit 10000 \
		--json "$WORK/c4-phase-tasks.json" -o "$WORK/c4.tmp.mime" \
		2>"$WORK/c4-phase-tasks.log" || { tail -5 "$WORK/c4-phase-tasks.log" >&2; exit 1; }
	mv "$WORK/c4.tmp.mime" "$WORK/c4-phase-tasks.mime"
fi
"$MIME_TRAIN" bundle half "$WORK/c4-phase-tasks.mime" -o "$OUT"
"$MIME_TRAIN" bundle verify "$OUT" >/dev/null
echo "wrote $OUT in $(($(date +%s) - T0)) s"
