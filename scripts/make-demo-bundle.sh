#!/bin/sh
# SPDX-License-Identifier: MIT
# make-demo-bundle.sh -- builds models/demo.mime from the trained parent, end to end:
#
#   parent (models/fmnist-parent.mime, `mime-train parent`)
#     -> phases: 5 nested phases (coarse, fine, coarse, fine, coarse) built from the
#        constraints (`mime-train phases`; the JSON record in models/phases.json), the
#        parent's weights in phase-major order; this is the parent every later step uses
#     -> + fmnist thresholds  (the parent task: its own head, retrained with the thresholds)
#     -> + mnist thresholds   (new head)
#     -> + digits thresholds  (new head; 20x20 digits padded/centred to 28x28 by the spec)
#     -> + baselines: full fine-tune (conventional/<task>/*) and head-only (headonly/<task>/*)
#        for mnist and digits; the parent itself is fmnist's conventional model
#     -> + every task's head and thresholds per phase (`mime-train phase-tasks`)
#     -> (HALF=1) every task's tensors stored as F16 (`mime-train bundle half`)
#   = models/demo.mime, then every task evaluated through the engine in every mode, and
#     sample PNGs in models/samples/<task>/.
#
# Every step writes its bundle, log and JSON report to $WORK and is skipped when its bundle
# is already there, so an interrupted run resumes where it stopped (delete $WORK to start
# over). Each step prints its wall time; the total is printed at the end.
#
# Usage: scripts/make-demo-bundle.sh [--extras] | --report
#   --extras   also the report's side runs (not in the demo bundle): the paper's exp(t)
#              regulariser and per-channel thresholds, in $WORK/extra-*.
#   --report   only prints the measured tables (markdown) from $WORK's JSON reports.
# Environment (defaults):
#   MIME_TRAIN=build/train/mime-train   PARENT=models/fmnist-parent.mime  OUT=models/demo.mime
#   PHASES_JSON=<OUT's directory>/phases.json  (the phase record with every task's accuracy)
#   WORK=out/demo  EPOCHS=20  THREADS=2  SEED=1
#   FMNIST_EPOCHS=3  FMNIST_LIMIT=0  (the fmnist thresholds: epochs, and training images,
#             0 = all 60,000: 3 epochs of 54,000 are more steps than 20 of mnist's 7,200)
#   HALF=1  (a last step stores every task's head and thresholds as F16, `mime-train
#             bundle half`: half the bytes per task; mimed reads the halves in place and
#             its engine decodes a phase's when it enters it; 0 keeps F32)
#   VAL=10%  (--val of every trained step: held out of its training images, stratified;
#             the epoch with the best validation accuracy is kept, for MIME and baselines)
#   LIMIT=0  (training images for mnist and digits, every mode; 0 = all: a quick smoke run
#             of the whole script takes e.g. LIMIT=300 EPOCHS=1 FMNIST_LIMIT=300 WORK=/tmp/d)
#   MIME_DATA=$HOME/.cache/mime/data  (scripts/fetch-data.sh all)
#   PHASE_FLAGS="--train-limit 0 --epochs 2 --search-epochs 2"  (mime-train phases)
#   PHASE_TASK_FLAGS="--epochs 2 --train-limit 10000"  (mime-train phase-tasks; it gets
#             --val $VAL too: per (task, phase) the sliced or the trained tensors, whichever
#             does better on the held-out images)
#   MIME_FLAGS="--reg-sign minus --beta 1e-4"  (threshold runs of the demo bundle)
#
# Why MIME_FLAGS: with the paper's regulariser beta * sum exp(t) at beta = 1e-6 (the
# command's defaults) the thresholds moved by about 0.02 in 240 Adam steps at lr 1e-3 on a
# development parent and the sparsity stayed at the ReLU level; Dynamic Sparse Training's
# sign, beta * sum exp(-t), at 1e-4 raised it above ReLU in every layer at the same
# accuracy. --extras measures the paper's setting on the real parent for the report.
set -eu

MIME_TRAIN=${MIME_TRAIN:-build/train/mime-train}
PARENT=${PARENT:-models/fmnist-parent.mime}
OUT=${OUT:-models/demo.mime}
PHASES_JSON=${PHASES_JSON:-$(dirname "$OUT")/phases.json}
WORK=${WORK:-out/demo}
EPOCHS=${EPOCHS:-20}
THREADS=${THREADS:-2}
SEED=${SEED:-1}
FMNIST_EPOCHS=${FMNIST_EPOCHS:-3}
HALF=${HALF:-1}
FMNIST_LIMIT=${FMNIST_LIMIT:-0}
VAL=${VAL:-10%}
LIMIT=${LIMIT:-0}
MIME_FLAGS=${MIME_FLAGS:---reg-sign minus --beta 1e-4}
DATA=${MIME_DATA:-$HOME/.cache/mime/data}
PHASE_FLAGS=${PHASE_FLAGS:---train-limit 0 --epochs 2 --search-epochs 2}
PHASE_TASK_FLAGS=${PHASE_TASK_FLAGS:---epochs 2 --train-limit 10000}
DIGITS=0,1,2,3,4,5,6,7,8,9
EXTRAS=0
[ "${1:-}" = "--extras" ] && EXTRAS=1

# report: the tables of models/REPORT.md from the JSON files the steps and evals wrote.
report() {
	python3 - "$WORK" "$PARENT" "$OUT" <<'EOF'
import json, os, struct, sys

work, parent, out = sys.argv[1:4]
def load(name):
    p = os.path.join(work, name)
    return json.load(open(p)) if os.path.exists(p) else None
def tensor_bytes(path, prefix):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        h = json.loads(f.read(n))
    return sum(v['data_offsets'][1] - v['data_offsets'][0]
               for k, v in h.items() if k != '__metadata__' and k.startswith(prefix))
pct = lambda x: '%.2f' % (100 * x)
parent_w = tensor_bytes(parent, 'parent/')
head_b = tensor_bytes(parent, 'task/fmnist/head.')
mime = {t: load(f) for t, f in [('fmnist', '1-fmnist.json'), ('mnist', '2-mnist.json'),
                                ('digits', '3-digits.json')]}
ft = {'mnist': load('4-ft-mnist.json'), 'digits': load('5-ft-digits.json')}
ho = {'mnist': load('6-ho-mnist.json'), 'digits': load('7-ho-digits.json')}
par = load('eval-fmnist-parent.json')
print('### Accuracy (test splits, through the engine)\n')
print('| task | MIME | full fine-tune | head-only | MIME - fine-tune (points) | '
      'train s: MIME / fine-tune / head-only |')
print('|---|---|---|---|---|---|')
for t in ['fmnist', 'mnist', 'digits']:
    m = mime[t]
    if not m:
        continue
    if t == 'fmnist':
        f, h = par, load('eval-fmnist-head-only.json')
        fs = '%s (the parent)' % pct(f['accuracy']) if f else '-'
        hs = '%s (the parent)' % pct(h['accuracy']) if h else '-'
        d = '%+.2f' % (100 * (m['accuracy'] - f['accuracy'])) if f else '-'
        secs = '%.0f / (parent run) / -' % m['training']['train_seconds']
    else:
        f, h = ft[t], ho[t]
        fs = pct(f['accuracy']) if f else '-'
        hs = pct(h['accuracy']) if h else '-'
        d = '%+.2f' % (100 * (m['accuracy'] - f['accuracy'])) if f else '-'
        secs = '%.0f / %s / %s' % (m['training']['train_seconds'],
                                   '%.0f' % f['training']['train_seconds'] if f else '-',
                                   '%.0f' % h['training']['train_seconds'] if h else '-')
    print('| %s (%d train img, %d epochs) | %s | %s | %s | %s | %s |' % (
        t, m['training']['train_images'], m['training']['epochs'], pct(m['accuracy']), fs, hs,
        d, secs))
print('\n### Mean neuron sparsity per masked layer (fraction of zero activations, test '
      'splits)\n')
layers = list(mime['fmnist']['sparsity'].keys()) if mime['fmnist'] else []
print('| task | mode | ' + ' | '.join(layers) + ' |')
print('|---|---|' + '---|' * len(layers))
for t in ['fmnist', 'mnist', 'digits']:
    m = mime[t]
    if not m:
        continue
    rows = [('MIME thresholds', m['sparsity']), ('frozen parent, ReLU', m['relu_sparsity'])]
    if t != 'fmnist' and ft[t]:
        rows.append(('fine-tuned copy, ReLU', ft[t]['sparsity']))
    for name, sp in rows:
        print('| %s | %s | ' % (t, name) + ' | '.join('%.3f' % sp[l] for l in layers) + ' |')
print('\n### Bytes per task\n')
print('parent weights (parent/*): %d bytes; the fmnist head: %d bytes.\n' % (parent_w, head_b))
print('| task | MIME thresholds + head | % of parent weights | fine-tuned copy (weights + head) |')
print('|---|---|---|---|')
for t in ['fmnist', 'mnist', 'digits']:
    m = mime[t]
    if m:
        print('| %s | %d | %.1f%% | %s |' % (t, m['task_bytes'], 100.0 * m['task_bytes'] /
              parent_w, ft[t]['task_bytes'] if t != 'fmnist' and ft[t] else parent_w + head_b))
ch = [load('extra-ch-%s.json' % t) for t in ['fmnist', 'mnist', 'digits']]
for c in ch:
    if c:
        print('| %s, per-channel | %d | %.2f%% | |' % (c['task'], c['task_bytes'],
              100.0 * c['task_bytes'] / parent_w))
known = [mime[t]['task_bytes'] for t in ['fmnist', 'mnist', 'digits'] if mime[t]]
if known:
    avg = sum(known) / len(known)
    print('\n### Storage for n tasks (parent + n thresholds/heads vs n fine-tuned copies)\n')
    print('n <= %d measured (the tasks above, in order), beyond: the mean task.\n' % len(known))
    print('| n | MIME bytes | conventional bytes | conventional / MIME |')
    print('|---|---|---|---|')
    for n in range(1, 9):
        mb = parent_w + sum(known[:n]) + max(0, n - len(known)) * avg
        cb = n * (parent_w + head_b)
        print('| %d%s | %d | %d | %.2fx |' % (n, '' if n <= len(known) else ' (extrapolated)',
              mb, cb, cb / mb))
extra = [('paper regulariser exp(t), beta 1e-6', 'extra-paper-%s.json', ['mnist', 'digits']),
         ('per-channel thresholds', 'extra-ch-%s.json', ['fmnist', 'mnist', 'digits'])]
rows = []
for name, pat, tasks in extra:
    for t in tasks:
        e = load(pat % t)
        if e:
            rows.append('| %s | %s | %s | %s | %d | %.0f |' % (
                t, name, pct(e['accuracy']),
                ' '.join('%.3f' % v for v in e['sparsity'].values()), e['task_bytes'],
                e['training']['train_seconds']))
if rows:
    print('\n### Side runs (not in the demo bundle)\n')
    print('| task | setting | accuracy | sparsity ' + ' '.join(layers) + ' | task bytes | train s |')
    print('|---|---|---|---|---|---|')
    print('\n'.join(rows))
if os.path.exists(out):
    print('\n%s: %d bytes.' % (out, os.path.getsize(out)))
EOF
}
if [ "${1:-}" = "--report" ]; then
	report
	exit 0
fi

for f in "$MIME_TRAIN" "$PARENT"; do
	[ -e "$f" ] || { echo "make-demo-bundle: $f is missing" >&2; exit 1; }
done
for t in fmnist mnist digits; do
	[ -e "$DATA/$t/train-images-idx3-ubyte.gz" ] ||
		{ echo "make-demo-bundle: no $t data in $DATA (scripts/fetch-data.sh all)" >&2; exit 1; }
done
mkdir -p "$WORK"
T0=$(date +%s)
STEP=0
NSTEPS=11

# step NAME IN OUT ARGS...: runs `mime-train ARGS -o OUT --json OUT.json` unless OUT exists.
step() {
	name=$1 in=$2 out=$3
	shift 3
	STEP=$((STEP + 1))
	if [ -e "$out" ]; then
		echo "[$STEP/$NSTEPS] $name: $out exists, skipped"
		return
	fi
	echo "[$STEP/$NSTEPS] $name ... (log: ${out%.mime}.log)"
	s=$(date +%s)
	"$MIME_TRAIN" "$@" --bundle "$in" --threads "$THREADS" --seed "$SEED" \
		--json "${out%.mime}.json" -o "$out.tmp" 2>"${out%.mime}.log" ||
		{ tail -5 "${out%.mime}.log" >&2; exit 1; }
	mv "$out.tmp" "$out"
	grep -E "test accuracy|collapse" "${out%.mime}.log" | sed 's/^/    /'
	echo "    done in $(($(date +%s) - s)) s"
}

# the phases, on the parent as trained; from here on the phased network is the parent
STEP=$((STEP + 1))
if [ -e "$WORK/00-phases.mime" ]; then
	echo "[$STEP/$NSTEPS] phases: $WORK/00-phases.mime exists, skipped"
else
	echo "[$STEP/$NSTEPS] phases ... (log: $WORK/00-phases.log)"
	s=$(date +%s)
	"$MIME_TRAIN" phases --bundle "$PARENT" --task fmnist --data "$DATA/fmnist" \
		--train-threads "$THREADS" --seed "$SEED" $PHASE_FLAGS \
		--json "$WORK/00-phases.json" -o "$WORK/00-phases.mime.tmp" 2>"$WORK/00-phases.log" ||
		{ tail -5 "$WORK/00-phases.log" >&2; exit 1; }
	mv "$WORK/00-phases.mime.tmp" "$WORK/00-phases.mime"
	grep -E "^combined_5p phase|^search step [0-9]+: acc|^highest|^regression" \
		"$WORK/00-phases.log" | sed 's/^/    /'
	echo "    done in $(($(date +%s) - s)) s"
fi
PARENT_IN=$PARENT
PARENT=$WORK/00-phases.mime

# fmnist's conventional and head-only models are the parent itself (0 epochs: the copies
# are the parent's weights and head), so fmnist has all three models in the bundle too
step "conventional fmnist = the parent (0 epochs)" "$PARENT" "$WORK/0a-ft-fmnist.mime" \
	finetune --task fmnist --data "$DATA/fmnist" --epochs 0 --train-limit 100
step "head-only fmnist = the parent (0 epochs)" "$WORK/0a-ft-fmnist.mime" \
	"$WORK/0b-ho-fmnist.mime" finetune --head-only --task fmnist --data "$DATA/fmnist" \
	--epochs 0 --train-limit 100
step "thresholds fmnist (train limit $FMNIST_LIMIT)" "$WORK/0b-ho-fmnist.mime" "$WORK/1-fmnist.mime" \
	thresholds --task fmnist --data "$DATA/fmnist" --epochs "$FMNIST_EPOCHS" \
	--train-limit "$FMNIST_LIMIT" --val "$VAL" $MIME_FLAGS
step "thresholds mnist" "$WORK/1-fmnist.mime" "$WORK/2-mnist.mime" \
	thresholds --task mnist --data "$DATA/mnist" --classes "$DIGITS" --epochs "$EPOCHS" \
	--train-limit "$LIMIT" --val "$VAL" $MIME_FLAGS
step "thresholds digits" "$WORK/2-mnist.mime" "$WORK/3-digits.mime" \
	thresholds --task digits --data "$DATA/digits" --classes "$DIGITS" --epochs "$EPOCHS" \
	--train-limit "$LIMIT" --val "$VAL" $MIME_FLAGS
step "fine-tune mnist" "$WORK/3-digits.mime" "$WORK/4-ft-mnist.mime" \
	finetune --task mnist --data "$DATA/mnist" --epochs "$EPOCHS" --train-limit "$LIMIT" \
	--val "$VAL"
step "fine-tune digits" "$WORK/4-ft-mnist.mime" "$WORK/5-ft-digits.mime" \
	finetune --task digits --data "$DATA/digits" --epochs "$EPOCHS" --train-limit "$LIMIT" \
	--val "$VAL"
step "head-only mnist" "$WORK/5-ft-digits.mime" "$WORK/6-ho-mnist.mime" \
	finetune --head-only --task mnist --data "$DATA/mnist" --epochs "$EPOCHS" \
	--train-limit "$LIMIT" --val "$VAL"
step "head-only digits" "$WORK/6-ho-mnist.mime" "$WORK/7-ho-digits.mime" \
	finetune --head-only --task digits --data "$DATA/digits" --epochs "$EPOCHS" \
	--train-limit "$LIMIT" --val "$VAL"

STEP=$((STEP + 1))
if [ -e "$WORK/8-phase-tasks.mime" ]; then
	echo "[$STEP/$NSTEPS] phase-tasks: $WORK/8-phase-tasks.mime exists, skipped"
else
	echo "[$STEP/$NSTEPS] every task per phase ... (log: $WORK/8-phase-tasks.log)"
	s=$(date +%s)
	"$MIME_TRAIN" phase-tasks --bundle "$WORK/7-ho-digits.mime" --data-root "$DATA" \
		--threads "$THREADS" --seed "$SEED" --val "$VAL" $PHASE_TASK_FLAGS \
		--json "$WORK/8-phase-tasks.json" -o "$WORK/8-phase-tasks.mime.tmp" \
		2>"$WORK/8-phase-tasks.log" || { tail -5 "$WORK/8-phase-tasks.log" >&2; exit 1; }
	mv "$WORK/8-phase-tasks.mime.tmp" "$WORK/8-phase-tasks.mime"
	sed 's/^/    /' "$WORK/8-phase-tasks.log"
	echo "    done in $(($(date +%s) - s)) s"
fi

"$MIME_TRAIN" bundle verify "$WORK/8-phase-tasks.mime" >/dev/null
if [ "$HALF" = 1 ]; then
	echo "every task's head and thresholds as F16 ..."
	"$MIME_TRAIN" bundle half "$WORK/8-phase-tasks.mime" -o "$WORK/9-half.mime" | sed 's/^/    /'
	cp "$WORK/9-half.mime" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
else
	cp "$WORK/8-phase-tasks.mime" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
fi
# every task in every phase of the bundle as written (F16 tensors when HALF=1)
for t in fmnist mnist digits; do
	"$MIME_TRAIN" eval --bundle "$OUT" --task "$t" --phase all --threads "$THREADS" \
		--images "$DATA/$t/t10k-images-idx3-ubyte.gz" \
		--labels "$DATA/$t/t10k-labels-idx1-ubyte.gz" --json >"$WORK/eval-phases-$t.json"
done
# the phase build record for `mime-train report`, with every task's accuracy per phase: as
# served (measured on the bundle just written), and sliced from the whole-parent tensors
# without training (phase-tasks' measure)
python3 - "$WORK/00-phases.json" "$WORK/8-phase-tasks.json" "$PHASES_JSON" "$WORK" <<'EOF'
import json, sys
rec, tasks = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
served = {t: {r['phase']: r['accuracy']
              for r in json.load(open('%s/eval-phases-%s.json' % (sys.argv[4], t)))}
          for t in tasks if isinstance(tasks[t], list)}
shipped = next(v for v in rec['variants'] if v.get('shipped'))
for ph in shipped['phases']:
    ph['task_accuracy'], ph['task_accuracy_shared'] = {}, {}
    for task, rows in tasks.items():
        for r in rows if isinstance(rows, list) else []:
            if r['phase'] == ph['phase']:
                ph['task_accuracy'][task] = served[task][ph['phase']]
                ph['task_accuracy_shared'][task] = r['shared']
json.dump(rec, open(sys.argv[3], 'w'), indent=2)
EOF
echo "wrote $OUT: $(stat -c %s "$OUT") bytes"

echo "evaluating every task in every mode through the engine (test splits) ..."
for t in fmnist mnist digits; do
	for mode in mime conventional head-only; do
		"$MIME_TRAIN" eval --bundle "$OUT" --task "$t" --mode "$mode" --threads "$THREADS" \
			--images "$DATA/$t/t10k-images-idx3-ubyte.gz" \
			--labels "$DATA/$t/t10k-labels-idx1-ubyte.gz" --json >"$WORK/eval-$t-$mode.json"
		printf '    %-7s %-13s accuracy %s\n' "$t" "$mode" \
			"$(sed -n 's/.*"accuracy": \([0-9.]*\).*/\1/p' "$WORK/eval-$t-$mode.json")"
	done
done
# the parent as it was (ReLU, its own head): fmnist's conventional model
"$MIME_TRAIN" eval --bundle "$PARENT_IN" --task fmnist --threads "$THREADS" --json \
	--images "$DATA/fmnist/t10k-images-idx3-ubyte.gz" \
	--labels "$DATA/fmnist/t10k-labels-idx1-ubyte.gz" >"$WORK/eval-fmnist-parent.json"

for t in mnist digits; do
	[ -d "models/samples/$t" ] ||
		"$MIME_TRAIN" samples --images "$DATA/$t/t10k-images-idx3-ubyte.gz" \
			--labels "$DATA/$t/t10k-labels-idx1-ubyte.gz" --out "models/samples/$t" \
			--per-class 3
done

if [ "$EXTRAS" = 1 ]; then
	NSTEPS=$((NSTEPS + 5))
	step "extra: paper regulariser exp(t), beta 1e-6, mnist" "$WORK/1-fmnist.mime" \
		"$WORK/extra-paper-mnist.mime" thresholds --task mnist --data "$DATA/mnist" \
		--classes "$DIGITS" --epochs "$EPOCHS" --train-limit "$LIMIT"
	step "extra: paper regulariser exp(t), beta 1e-6, digits" "$WORK/extra-paper-mnist.mime" \
		"$WORK/extra-paper-digits.mime" thresholds --task digits --data "$DATA/digits" \
		--classes "$DIGITS" --epochs "$EPOCHS" --train-limit "$LIMIT"
	step "extra: channel thresholds mnist" "$WORK/1-fmnist.mime" \
		"$WORK/extra-ch-mnist.mime" thresholds --task mnist --data "$DATA/mnist" \
		--classes "$DIGITS" --epochs "$EPOCHS" --granularity channel --train-limit "$LIMIT" \
		$MIME_FLAGS
	step "extra: channel thresholds digits" "$WORK/extra-ch-mnist.mime" \
		"$WORK/extra-ch-digits.mime" thresholds --task digits --data "$DATA/digits" \
		--classes "$DIGITS" --epochs "$EPOCHS" --granularity channel --train-limit "$LIMIT" \
		$MIME_FLAGS
	step "extra: channel thresholds fmnist" "$WORK/extra-ch-digits.mime" \
		"$WORK/extra-ch-fmnist.mime" thresholds --task fmnist --data "$DATA/fmnist" \
		--epochs "$EPOCHS" --train-limit "$FMNIST_LIMIT" --granularity channel $MIME_FLAGS
fi
echo "total $(($(date +%s) - T0)) s"
