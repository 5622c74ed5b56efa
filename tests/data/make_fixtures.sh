#!/bin/bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Regenerate the MNIST test fixtures in this directory from the full MNIST
# files: the first 3000 training and the first 200 test examples as IDX, and
# the first 500 training and the 200 test examples as CSV (3000 IDX examples
# let one epoch of the course's twolayer model learn something; 3000 CSV
# lines would push the fixtures past 1 MB).  Needs only head, tail, od, awk and gzip (no nnrun, no python), so
# the fixtures can be rebuilt before anything is compiled.
#
#   tests/data/make_fixtures.sh MNIST_DIR [OUT_DIR]
#
# MNIST_DIR holds the four raw IDX files (train-images-idx3-ubyte, ...),
# plain or .gz; OUT_DIR defaults to the directory of this script.
set -euo pipefail

NTRAIN=3000
NTRAIN_CSV=500
NTEST=200
DIM=784 # 28 x 28

usage() {
  echo "usage: $0 MNIST_DIR [OUT_DIR]" >&2
  exit 2
}
if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
src=$1
out=${2:-$(cd "$(dirname "$0")" && pwd)}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Stage a raw (uncompressed) copy of an input file in $tmp: head on a
# regular file reads only what it needs, which avoids SIGPIPE'd producers
# under pipefail.
stage() {
  if [ -f "$src/$1" ]; then
    cp "$src/$1" "$tmp/$1"
  elif [ -f "$src/$1.gz" ]; then
    gzip -dc "$src/$1.gz" >"$tmp/$1"
  else
    echo "$0: neither $src/$1 nor $src/$1.gz exists" >&2
    exit 1
  fi
}

# A 32-bit big-endian integer as 4 raw bytes.
be32() {
  printf '%b' "$(printf '\\0%03o\\0%03o\\0%03o\\0%03o' \
    $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"
}

# idx_subset FILE HEADER_BYTES BYTES_PER_ITEM COUNT: the first COUNT items
# of an IDX file, with the count in its header rewritten.
idx_subset() {
  local f=$tmp/$1 hdr=$2 per=$3 count=$4
  head -c 4 "$f"                   # magic
  be32 "$count"                    # the new count
  head -c "$hdr" "$f" | tail -c +9 # other dimensions (none for labels)
  head -c $((hdr + per * count)) "$f" | tail -c +$((hdr + 1))
}

# csv IMAGES LABELS: one `label,p0,...,p783` line per example.
csv() {
  od -An -v -tu1 -j 16 "$1" |
    awk -v dim="$DIM" -v lcmd="od -An -v -tu1 -j 8 '$2'" '
      BEGIN {
        n = 0; r = 0; k = 0
        while ((lcmd | getline line) > 0) {
          m = split(line, a, " ")
          for (i = 1; i <= m; i++) label[n++] = a[i]
        }
        close(lcmd)
      }
      {
        for (i = 1; i <= NF; i++) {
          if (k == 0) row = label[r]
          row = row "," $i
          if (++k == dim) { print row; k = 0; r++ }
        }
      }'
}

for f in train-images-idx3-ubyte train-labels-idx1-ubyte \
  t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  stage "$f"
done

idx_subset train-images-idx3-ubyte 16 "$DIM" "$NTRAIN" >"$tmp/train-images"
idx_subset train-labels-idx1-ubyte 8 1 "$NTRAIN" >"$tmp/train-labels"
idx_subset t10k-images-idx3-ubyte 16 "$DIM" "$NTEST" >"$tmp/test-images"
idx_subset t10k-labels-idx1-ubyte 8 1 "$NTEST" >"$tmp/test-labels"
idx_subset train-images-idx3-ubyte 16 "$DIM" "$NTRAIN_CSV" >"$tmp/csv-images"
idx_subset train-labels-idx1-ubyte 8 1 "$NTRAIN_CSV" >"$tmp/csv-labels"

# -n: no name or time stamp in the gzip header, so reruns are byte-identical.
gzip -9 -n -c "$tmp/train-images" >"$out/train-images-idx3-ubyte.gz"
gzip -9 -n -c "$tmp/train-labels" >"$out/train-labels-idx1-ubyte.gz"
cp "$tmp/test-images" "$out/t10k-images-idx3-ubyte"
cp "$tmp/test-labels" "$out/t10k-labels-idx1-ubyte"
csv "$tmp/csv-images" "$tmp/csv-labels" |
  gzip -9 -n >"$out/mnist_train.csv.gz"
csv "$tmp/test-images" "$tmp/test-labels" |
  gzip -9 -n >"$out/mnist_test.csv.gz"

du -ch "$out"/train-*-ubyte.gz "$out"/t10k-*-ubyte "$out"/mnist_*.csv.gz
