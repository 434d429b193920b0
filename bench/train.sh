#!/bin/sh
# SPDX-License-Identifier: MIT
# train.sh -- how long learning a task takes (issue 3: "thresholds for 10 epochs: state the
# time; faster than fine-tuning the same task"): `mime-train thresholds` (frozen parent,
# thresholds + head), `finetune` (every weight + a new head) and `finetune --head-only` on the
# same task, data, epochs, batch and threads, alternating round by round (the order reversed
# every other round) so that the machine's other load falls on all of them alike.
#
#   bench/train.sh [--bundle FILE] [--task mnist] [--epochs 2] [--train-limit 0]
#                  [--threads 1] [--rounds 3] [--classes a,b,...] [--json FILE]
#
# --classes: the class names of a task the bundle does not have yet (e.g. mnist on a bare
# parent bundle: --classes 0,1,2,3,4,5,6,7,8,9), passed to every run. --json: the settings,
# the per-mode medians and ratios and every run, as JSON (what `mime-train report
# --train-bench` reads for the training-time goal).
#
# Prints per run the training loop's seconds as the command reports them (wall, and CPU time
# of all its threads) and the whole process's CPU seconds (user + system, /usr/bin/time:
# with loading the data, the test evaluation and writing the bundle), then per mode the
# medians and the medians of the per-round ratios to fine-tuning. The training loop's CPU
# time is the steadier figure on a shared machine. Builds mime-train in its own release directory. bench/RESULTS.md records runs by
# hand with the command, date and load.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BUILD="$ROOT/build-bench-train"
BUNDLE="$ROOT/models/demo.mime"
TASK=mnist
EPOCHS=2
LIMIT=0
THREADS=1
ROUNDS=3
CLASSES=
JSON=
DATA=${MIME_DATA:-$HOME/.cache/mime/data}

while [ $# -gt 0 ]; do
	case "$1" in
	--bundle) BUNDLE=$2; shift 2 ;;
	--task) TASK=$2; shift 2 ;;
	--epochs) EPOCHS=$2; shift 2 ;;
	--train-limit) LIMIT=$2; shift 2 ;;
	--threads) THREADS=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	--classes) CLASSES=$2; shift 2 ;;
	--json) JSON=$2; shift 2 ;;
	*) echo "usage: bench/train.sh [--bundle FILE] [--task T] [--epochs N] [--train-limit N]" \
		"[--threads T] [--rounds R] [--classes LIST] [--json FILE]" >&2
	   exit 2 ;;
	esac
done
[ -d "$DATA/$TASK" ] || { echo "bench/train.sh: no data in $DATA/$TASK (scripts/fetch-data.sh)" >&2; exit 1; }
if [ ! -f "$BUILD/build.ninja" ]; then
	meson setup "$BUILD" "$ROOT" -Dbuildtype=release -Dwerror=false -Dtests=disabled >/dev/null
fi
ninja -C "$BUILD" train/mime-train >/dev/null
MT="$BUILD/train/mime-train"
TMP=$(mktemp -d /tmp/mime-bench-train-XXXXXX)
trap 'rm -rf "$TMP"' EXIT INT TERM

# the MIME flags of the demo bundle (scripts/make-demo-bundle.sh)
run_mode() { # mode round
	case "$1" in
	mime) set -- "$1" "$2" thresholds --reg-sign minus --beta 1e-4 ;;
	finetune) set -- "$1" "$2" finetune ;;
	head-only) set -- "$1" "$2" finetune --head-only ;;
	esac
	mode=$1 round=$2
	shift 2
	[ -z "$CLASSES" ] || set -- "$@" --classes "$CLASSES"
	/usr/bin/time -f "%U %S" -o "$TMP/time" "$MT" "$@" --bundle "$BUNDLE" --task "$TASK" \
		--data "$DATA/$TASK" --epochs "$EPOCHS" --train-limit "$LIMIT" --test-limit 100 \
		--threads "$THREADS" --json "$TMP/r.json" -o "$TMP/out.mime" 2>"$TMP/log" ||
		{ tail -3 "$TMP/log" >&2; exit 1; }
	python3 - "$TMP/r.json" "$TMP/time" "$mode" "$round" >>"$TMP/runs" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
u, s = open(sys.argv[2]).read().split()[-2:]
print(sys.argv[3], sys.argv[4], r['training']['train_seconds'],
      r['training']['train_cpu_seconds'], float(u) + float(s), r['training']['train_images'])
EOF
}

START=$(date -u +%FT%TZ)
LOAD0=$(uptime | sed 's/.*load average: //')
echo "bench/train.sh: $START, load average: $LOAD0"
echo "bundle $BUNDLE, task $TASK, $EPOCHS epochs, train limit $LIMIT, threads $THREADS, $ROUNDS rounds"
r=1
while [ "$r" -le "$ROUNDS" ]; do
	if [ $((r % 2)) -eq 1 ]; then order="mime finetune head-only"; else order="head-only finetune mime"; fi
	for m in $order; do run_mode "$m" "$r"; done
	r=$((r + 1))
done
LOAD1=$(uptime | sed 's/.*load average: //')
echo "end: load average: $LOAD1"
case "$BUNDLE" in "$ROOT"/*) SHOWN=${BUNDLE#"$ROOT"/} ;; *) SHOWN=$BUNDLE ;; esac
python3 - "$TMP/runs" "$JSON" "$START" "$LOAD0" "$LOAD1" "$SHOWN" "$TASK" "$EPOCHS" \
	"$LIMIT" "$THREADS" "$ROUNDS" <<'EOF'
import json, statistics, sys
runs = [l.split() for l in open(sys.argv[1])]
by = {}
for mode, rnd, wall, cpu, proc, _ in runs:
    by.setdefault(mode, {})[int(rnd)] = (float(wall), float(cpu), float(proc))
print('\n| mode | training loop s, wall | training loop s, CPU | process CPU s | '
      'wall / fine-tune | CPU / fine-tune |')
print('|---|---|---|---|---|---|')
for mode in ('mime', 'finetune', 'head-only'):
    rs = sorted(by[mode])
    med = [statistics.median(by[mode][r][k] for r in rs) for k in range(3)]
    rw = statistics.median(by[mode][r][0] / by['finetune'][r][0] for r in rs)
    rc = statistics.median(by[mode][r][1] / by['finetune'][r][1] for r in rs)
    print('| %s | %.1f | %.1f | %.1f | %.2fx | %.2fx |' % (mode, *med, rw, rc))
print('\nper run (mode round training_wall_s training_cpu_s process_cpu_s train_images):')
for l in runs:
    print('   ', ' '.join(l))
if sys.argv[2]:
    start, load0, load1, bundle, task, epochs, limit, threads, rounds = sys.argv[3:12]
    out = {'command': 'bench/train.sh', 'date': start, 'load_start': load0, 'load_end': load1,
           'bundle': bundle, 'task': task, 'epochs': int(epochs), 'train_limit': int(limit),
           'train_images': int(runs[0][5]),
           'threads': int(threads), 'rounds': int(rounds), 'modes': {}}
    for mode in ('mime', 'finetune', 'head-only'):
        rs = sorted(by[mode])
        out['modes'][mode] = {
            'train_seconds': statistics.median(by[mode][r][0] for r in rs),
            'train_cpu_seconds': statistics.median(by[mode][r][1] for r in rs),
            'process_cpu_seconds': statistics.median(by[mode][r][2] for r in rs),
            'cpu_vs_finetune': statistics.median(by[mode][r][1] / by['finetune'][r][1]
                                                 for r in rs),
            'runs': [{'round': r, 'train_seconds': by[mode][r][0],
                      'train_cpu_seconds': by[mode][r][1]} for r in rs]}
    with open(sys.argv[2], 'w') as f:
        json.dump(out, f, indent=1)
        f.write('\n')
    print('wrote', sys.argv[2])
EOF
