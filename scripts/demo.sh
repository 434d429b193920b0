#!/bin/sh
# demo.sh -- the README's main job: install, build, fetch data if missing, classify the
# shipped sample images with the shipped model.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/fetch-data.sh
B=${MIME_BUILD_DIR:-build}
[ -d "$B" ] || meson setup "$B" --werror
meson compile -C "$B"
echo "demo: not complete yet"
