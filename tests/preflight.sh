#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# Checks before training (TAP): bad data (labels outside 0-9 in the
# training, validation or test part, too few examples to split, training
# and test images of different sizes, a missing data directory) and an
# output directory that cannot be written are refused before anything
# trains and before a run directory exists, with the file, the example and
# what was expected; plugin files that cannot be plugins (a directory, a
# shared object for another machine, a file that is not ELF) and `-o ''`
# get messages that say so.  Bad data is built here from the MNIST fixture
# (tests/data) by patching bytes of copies.
set -u
NNRUN=${NNRUN:-cli/nnrun}
DATA=${NN_TEST_DATA:-tests/data}
PLUGINS=${NN_PLUGIN_PATH:-plugins/.libs}
PLUGINS=${PLUGINS%%:*}
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"
# Runs below start in other directories: every path absolute.
case $NNRUN in /*) ;; *) NNRUN=$(pwd)/$NNRUN ;; esac
case $DATA in /*) ;; *) DATA=$(pwd)/$DATA ;; esac
case $PLUGINS in /*) ;; *) PLUGINS=$(pwd)/$PLUGINS ;; esac

# patch FILE OFFSET OCTAL: overwrite one byte of FILE.
patch() {
  # shellcheck disable=SC2059
  printf "\\$3" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}

# shorten FILE SIZE: keep its first SIZE bytes.
shorten() { head -c "$2" "$1" >"$1.part" && mv "$1.part" "$1"; }

# dataset NAME: $tmp/NAME, a fresh copy of the fixture's IDX and CSV files,
# uncompressed so that bytes can be patched.
dataset() {
  d=$tmp/$1
  mkdir -p "$d"
  for f in train-images-idx3-ubyte train-labels-idx1-ubyte mnist_train.csv \
           mnist_test.csv; do
    gunzip -c "$DATA/$f.gz" >"$d/$f"
  done
  cp "$DATA/t10k-images-idx3-ubyte" "$DATA/t10k-labels-idx1-ubyte" "$d/"
}

# config NAME DATA_DIR [FORMAT [MODEL_TYPE]]: $tmp/NAME.ini, a short run.
config() {
  cat >"$tmp/$1.ini" <<INI
[data]
dir = $2
format = ${3:-idx}

[train]
epochs = 1
batch_size = 64

[model]
type = ${4:-softmax}

[optimizer]
type = sgd
INI
}

# refused NAME STATUS PATTERN CONFIG [ARGS...]: nnrun -c CONFIG exits with
# STATUS and PATTERN on stderr, trains nothing (no epoch line) and makes no
# directory: neither -o $tmp/o_NAME nor, run without -o in an empty
# directory, runs/ there (nor leaves the probe's file behind).
refused() {
  name=$1 want=$2 pat=$3 cfg=$4
  shift 4
  out=$tmp/o_$(echo "$name" | tr -c 'a-zA-Z0-9\n' _)
  "$NNRUN" -c "$cfg" -o "$out" "$@" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  if [ "$rc" -ne "$want" ]; then
    not_ok "$name: exit $rc, expected $want"
  elif ! grep -q -- "$pat" "$tmp/err"; then
    not_ok "$name: stderr lacks '$pat'"
  elif grep -q "^epoch" "$tmp/err"; then
    not_ok "$name: it trained first"
  elif [ -e "$out" ]; then
    not_ok "$name: -o $out was created"
  else
    ok "$name: exit $want, message, nothing trained, no -o directory"
  fi
  rm -rf "$tmp/cwd"
  mkdir "$tmp/cwd"
  (cd "$tmp/cwd" && "$NNRUN" -c "$cfg" "$@" >"$tmp/out" 2>"$tmp/err")
  rc=$?
  if [ "$rc" -ne "$want" ]; then
    not_ok "$name without -o: exit $rc, expected $want"
  elif ! grep -q -- "$pat" "$tmp/err"; then
    not_ok "$name without -o: stderr lacks '$pat'"
  elif [ -n "$(ls -A "$tmp/cwd")" ]; then
    not_ok "$name without -o: left $(ls -A "$tmp/cwd") in the working directory"
  else
    ok "$name without -o: exit $want, message, no runs/ directory"
  fi
}

dataset good
config good "$tmp/good"
"$NNRUN" -q -c "$tmp/good.ini" -o "$tmp/run_good" >"$tmp/out" 2>"$tmp/err"
check "the copied fixture trains (exit 0)" test "$?" -eq 0

# ---- labels outside 0..9, reported by file and example index

dataset test10
patch "$tmp/test10/t10k-labels-idx1-ubyte" 10 012 # example 2: label 10
config test10 "$tmp/test10"
refused "test label 10" 1 \
  "test10/t10k-labels-idx1-ubyte: example 2 (counting from 0) has label 10; expected 0 to 9" \
  "$tmp/test10.ini"
"$NNRUN" eval -c "$tmp/test10.ini" --weights "$tmp/run_good/best.safetensors" \
  >"$tmp/out" 2>"$tmp/err"
rc=$?
check "eval refuses the test label 10 too (exit 1, names the file)" \
  sh -c "[ $rc -eq 1 ] && grep -q 't10k-labels-idx1-ubyte: example 2 ' '$tmp/err'"

dataset train200
patch "$tmp/train200/train-labels-idx1-ubyte" 13 310 # example 5: label 200
config train200 "$tmp/train200"
refused "training label 200" 1 \
  "train200/train-labels-idx1-ubyte: example 5 (counting from 0) has label 200" \
  "$tmp/train200.ini"

# The fixture's training file has 3000 examples: 2400 train, 600 validate;
# the message counts in the file, not in the validation part.
dataset val10
patch "$tmp/val10/train-labels-idx1-ubyte" $((8 + 2999)) 012
config val10 "$tmp/val10"
refused "validation label 10" 1 \
  "val10/train-labels-idx1-ubyte: example 2999 (counting from 0) has label 10" \
  "$tmp/val10.ini"

dataset csv10
sed '3s/^[0-9]*,/10,/' "$tmp/csv10/mnist_test.csv" >"$tmp/csv10/t" &&
  mv "$tmp/csv10/t" "$tmp/csv10/mnist_test.csv"
config csv10 "$tmp/csv10" csv
refused "CSV test label 10 (file:line)" 1 \
  "csv10/mnist_test.csv:3: example 2 (counting from 0) has label 10" \
  "$tmp/csv10.ini"

# ---- too few examples: one example leaves the training part empty

dataset one
# IDX headers: 16 bytes (images), 8 (labels); the count is in bytes 4-7,
# big-endian: 3000 (0x0bb8) becomes 1.
shorten "$tmp/one/train-images-idx3-ubyte" $((16 + 784))
shorten "$tmp/one/train-labels-idx1-ubyte" $((8 + 1))
for f in "$tmp"/one/train-*-ubyte; do
  patch "$f" 6 000
  patch "$f" 7 001
done
config one "$tmp/one"
refused "one training example" 1 \
  "one/train-images-idx3-ubyte: 1 example is too few: the file splits into 0 for training and 1 for validation" \
  "$tmp/one.ini"

# ---- training and test images of different sizes (28x14 test images)

dataset narrow
f=$tmp/narrow/t10k-images-idx3-ubyte
shorten "$f" $((16 + 200 * 28 * 14))
patch "$f" 15 016 # columns: 14
config narrow "$tmp/narrow"
refused "test images of another size" 1 \
  "narrow/t10k-images-idx3-ubyte: images of 392 pixels, but .*train-images-idx3-ubyte has images of 784 (28x28)" \
  "$tmp/narrow.ini"

# ---- a missing data directory is a data failure: exit 1

config nodata "$tmp/nodata"
refused "missing data directory" 1 \
  "nodata.ini:2: \[data\] dir = $tmp/nodata: MNIST file train-images-idx3-ubyte not found" \
  "$tmp/nodata.ini"

# ---- the output directory: probed before the data is loaded

: >"$tmp/blocker"
"$NNRUN" -c "$tmp/nodata.ini" -o "$tmp/blocker/out" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "output under a file: exit 1 before the data is looked at" \
  sh -c "[ $rc -eq 1 ] && grep -q 'output directory $tmp/blocker/out: $tmp/blocker is not a directory' '$tmp/err'"
check "output under a file: nothing created" test -f "$tmp/blocker" -a ! -s "$tmp/blocker"
if [ "$(id -u)" -ne 0 ]; then
  mkdir "$tmp/ro" && chmod 555 "$tmp/ro"
  "$NNRUN" -c "$tmp/good.ini" -o "$tmp/ro/out" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  check "read-only parent: exit 1, cannot create files" \
    sh -c "[ $rc -eq 1 ] && grep -q 'cannot create files in $tmp/ro' '$tmp/err'"
  check "read-only parent: no run directory" test ! -e "$tmp/ro/out"
  chmod 755 "$tmp/ro"
else
  n=$((n + 1))
  echo "ok $n # SKIP read-only output directory (root writes anywhere)"
fi
mkdir "$tmp/kept"
"$NNRUN" -c "$tmp/test10.ini" -o "$tmp/kept/out" >"$tmp/out" 2>"$tmp/err"
check "the probe leaves no file behind" test -z "$(ls -A "$tmp/kept")"

"$NNRUN" -c "$tmp/good.ini" -o '' >"$tmp/out" 2>"$tmp/err"
rc=$?
check "-o '': exit 2, the directory name is empty" \
  sh -c "[ $rc -eq 2 ] && grep -q \"the directory name is empty\" '$tmp/err'"

# ---- plugin files that cannot be plugins

mkdir "$tmp/plug"
config dirtype "$tmp/good" idx "$tmp/plug"
refused "[model] type naming a directory" 2 \
  "dirtype.ini:10: \[model\] type = $tmp/plug: plugin file $tmp/plug is a directory" \
  "$tmp/dirtype.ini"

# A copy of a built plugin with e_machine (bytes 18-19, little-endian here)
# set to another machine, and one with the 32-bit class (byte 4).
if [ "$(uname -m)" = aarch64 ]; then other='076 000' name=x86-64
else other='267 000' name=AArch64; fi
cp "$PLUGINS/softmax.so" "$tmp/plug/softmax.so"
patch "$tmp/plug/softmax.so" 18 "${other% *}"
patch "$tmp/plug/softmax.so" 19 "${other#* }"
config machine "$tmp/good" idx "$tmp/plug/softmax.so"
refused "plugin for another machine" 3 \
  "softmax.so: it is not a plugin for this machine: it was built for $name (64-bit, little-endian)" \
  "$tmp/machine.ini"
mkdir "$tmp/plug32"
cp "$PLUGINS/softmax.so" "$tmp/plug32/softmax.so"
patch "$tmp/plug32/softmax.so" 4 001
config class32 "$tmp/good" idx "$tmp/plug32/softmax.so"
refused "plugin of the other word size" 3 \
  "not a plugin for this machine: it was built for .* (32-bit, little-endian)" \
  "$tmp/class32.ini"
mkdir "$tmp/plugtxt"
echo "not a library" >"$tmp/plugtxt/softmax.so"
config notelf "$tmp/good" idx "$tmp/plugtxt/softmax.so"
refused "plugin that is not ELF" 3 \
  "softmax.so: it is not a shared object (no ELF header)" "$tmp/notelf.ini"

tap_end
