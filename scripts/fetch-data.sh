#!/bin/sh
# fetch-data.sh -- put each task's IDX files under ${MIME_DATA:-$HOME/.cache/mime/data}/<task>/
# with Fashion-MNIST's file names and a SHA256SUMS file, and check them. Data never goes
# into git. fmnist: Debian's dataset-fashion-mnist (60,000 train / 10,000 test).
set -eu
DATA=${MIME_DATA:-$HOME/.cache/mime/data}
SRC=/usr/share/datasets/fashion-mnist

if [ ! -f "$SRC/train-images-idx3-ubyte.gz" ]; then
	"$(dirname "$0")/setup.sh" dataset-fashion-mnist
fi
mkdir -p "$DATA/fmnist"
# SHA-256 of the files in Debian 12's dataset-fashion-mnist 0.0~git20200523.55506a9-1.
cat > "$DATA/fmnist/SHA256SUMS" <<'SUMS'
b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7  train-images-idx3-ubyte.gz
0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056  train-labels-idx1-ubyte.gz
cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa  t10k-images-idx3-ubyte.gz
8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05  t10k-labels-idx1-ubyte.gz
SUMS
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz \
	t10k-labels-idx1-ubyte.gz; do
	[ -f "$DATA/fmnist/$f" ] || cp "$SRC/$f" "$DATA/fmnist/$f"
done
if ! (cd "$DATA/fmnist" && sha256sum --quiet -c SHA256SUMS); then
	echo "fetch-data: fmnist files in $DATA/fmnist do not match SHA256SUMS" >&2
	exit 1
fi
echo "fetch-data: fmnist ready in $DATA/fmnist"
