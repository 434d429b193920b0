#!/bin/sh
# test.sh -- the README's test command: set up, build with warnings as errors, run every
# test suite. MIME_BUILD_DIR overrides the build directory (default build/).
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
B=${MIME_BUILD_DIR:-build}
[ -d "$B" ] || meson setup "$B" --werror
meson compile -C "$B"
MIME_TRAIN="$B/train/mime-train" ./scripts/fetch-data.sh # after the build: it runs mime-train
meson test -C "$B" --print-errorlogs "$@"
