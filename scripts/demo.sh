#!/bin/sh
# demo.sh -- the README's main job: install, build, fetch data if missing, classify the
# shipped sample images with the shipped model.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
B=${MIME_BUILD_DIR:-build}
[ -d "$B" ] || meson setup "$B" --werror
meson compile -C "$B"
MIME_TRAIN="$B/train/mime-train" ./scripts/fetch-data.sh # after the build: it runs mime-train
echo "demo: not complete yet"
