#!/bin/sh
# test-cross.sh -- the NEON path of the conv GEMM and of the F16 decode: cross-compile the portable kernel test for
# aarch64 with Debian's gcc-aarch64-linux-gnu and run it under qemu-user (edge boxes are often
# ARM; this machine is not). Installs the cross compiler and qemu-user if missing.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
mkdir -p build-cross
aarch64-linux-gnu-gcc -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -static -I. \
	tests/cross/test_gemm_portable.c lib/gemm.c lib/kernels.c lib/half.c -lm \
	-o build-cross/test_gemm_portable
qemu-aarch64 build-cross/test_gemm_portable
