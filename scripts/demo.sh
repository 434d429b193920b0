#!/bin/sh
# demo.sh -- the README's main job on the shipped defaults: install what is missing, build,
# fetch the datasets if missing, then
#   1. classify the shipped sample images offline (mimectl run) and measure the shipped
#      model's test accuracy through the inference engine (mime-train eval);
#   2. start mimed on the shipped bundle on a temporary socket, send interleaved requests of
#      every task, run one image in each of the bundle's phases, squeeze the memory budget so
#      the phase policy steps down and lift it so it climbs back, change the budgets (socket
#      API and signals), show the status with the
#      modelled energy, print the daemon's batch records, and stop it cleanly (SIGTERM).
# MIME_BUILD_DIR overrides the build directory (default build/).
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
B=${MIME_BUILD_DIR:-build}
[ -d "$B" ] || meson setup "$B" --werror
meson compile -C "$B"
MIME_TRAIN="$B/train/mime-train" ./scripts/fetch-data.sh # after the build: it runs mime-train

DATA=${MIME_DATA:-$HOME/.cache/mime/data}
MIMECTL="$B/client/mimectl"
TRAIN="$B/train/mime-train"
BUNDLE=models/demo.mime
[ -f "$BUNDLE" ] || BUNDLE=models/fmnist-parent.mime

say() { printf '\n== %s\n' "$*"; }

tasks=$("$TRAIN" bundle inspect "$BUNDLE" | sed -n 's/^  \([A-Za-z0-9_.-]*\): [0-9]* classes.*/\1/p')
[ -n "$tasks" ] || { echo "demo: $BUNDLE lists no tasks" >&2; exit 1; }

say "bundle $BUNDLE"
"$TRAIN" bundle verify "$BUNDLE"

for t in $tasks; do
	[ -d "models/samples/$t" ] || continue
	say "offline: mimectl run --bundle $BUNDLE --task $t models/samples/$t/*.png"
	"$MIMECTL" run --bundle "$BUNDLE" --task "$t" --top 2 "models/samples/$t"/*.png
	if [ -f "$DATA/$t/t10k-images-idx3-ubyte.gz" ]; then
		say "accuracy of task $t on its test split (through the inference engine)"
		"$TRAIN" eval --bundle "$BUNDLE" --task "$t" --threads 2 \
			--images "$DATA/$t/t10k-images-idx3-ubyte.gz" \
			--labels "$DATA/$t/t10k-labels-idx1-ubyte.gz"
	fi
done

# --- the daemon -------------------------------------------------------------------------
RUN=$(mktemp -d)
SOCK="$RUN/mimed.sock"
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$RUN"' EXIT INT TERM
say "starting mimed --bundle $BUNDLE --socket $SOCK"
"$B/daemon/mimed" --bundle "$BUNDLE" --socket "$SOCK" 2>"$RUN/mimed.log" &
PID=$!
i=0
while [ ! -S "$SOCK" ]; do
	i=$((i + 1))
	[ "$i" -lt 100 ] || { cat "$RUN/mimed.log"; echo "demo: mimed did not start" >&2; exit 1; }
	sleep 0.1
done
export MIME_SOCKET="$SOCK"

say "mimectl tasks"
"$MIMECTL" tasks

say "interleaved requests of every task"
for n in 0 1 2; do
	for t in $tasks; do
		f=$(ls "models/samples/$t"/*-"$n".png 2>/dev/null | head -n 3 || true)
		# shellcheck disable=SC2086
		[ -z "$f" ] || "$MIMECTL" infer --task "$t" $f
	done
done

say "closed-loop load: mimectl bench -n 600 -c 8 (tasks interleaved)"
"$MIMECTL" bench -n 600 -c 8

NPH=$("$MIMECTL" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["n_phases"])')
if [ "$NPH" -gt 1 ]; then
	say "the bundle's $NPH nested phases (Multi-phase CNN): one image in each, mimectl infer --phase N"
	f=$(ls models/samples/fmnist/*-0.png | head -n 1)
	p=1
	while [ "$p" -le "$NPH" ]; do
		"$MIMECTL" infer --task fmnist --phase "$p" "$f"
		p=$((p + 1))
	done
	# a memory budget only phase 1 fits (held against the daemon's predicted RSS in each
	# phase): the policy steps down at once; lifted, it climbs
	# back after K = 3 evaluations (docs/PROTOCOL.md, "Phases and budgets")
	LOW=$("$MIMECTL" status --json | python3 -c 'import json,sys
ph = json.load(sys.stdin)["phases"]
r = [p["predicted_rss_bytes"] for p in ph]
print((r[0] + min(r[1:])) // 2)')
	say "memory budget $LOW bytes (the daemon's predicted RSS fits it in phase 1 only): mimectl budget --memory $LOW"
	"$MIMECTL" budget --memory "$LOW"
	sleep 0.3
	"$MIMECTL" status | sed -n '/^phases /,/^$/p'
	"$MIMECTL" infer --task mnist "$(ls models/samples/mnist/*-0.png | head -n 1)"
	say "budget lifted (mimectl budget --memory none): the policy climbs back"
	"$MIMECTL" budget --memory none
	sleep 2
	"$MIMECTL" status | sed -n '1,3p'
fi

say "budgets through the socket: mimectl budget --memory 64M --latency 5ms"
"$MIMECTL" budget --memory 64M --latency 5ms
say "phase down / up through signals (SIGUSR1, SIGUSR2), then back to auto"
kill -USR1 "$PID"
sleep 0.2
"$MIMECTL" status | sed -n '1,3p'
kill -USR2 "$PID"
sleep 0.2
"$MIMECTL" phase auto
"$MIMECTL" status | sed -n '1,3p'

say "mimectl status"
"$MIMECTL" status

say "stopping mimed (SIGTERM: drain, answer, exit 0)"
kill -TERM "$PID"
wait "$PID"
PID=
say "the daemon's log: one key=value record per batch (with modelled accelerator energy)"
grep -E 'batch id=' "$RUN/mimed.log" | tail -n 5
grep -vE 'batch id=' "$RUN/mimed.log" | tail -n 12
say "demo done"
