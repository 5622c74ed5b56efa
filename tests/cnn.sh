#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# End-to-end tests of convolutional networks (TAP): a small configs/cnn.ini
# (fewer filters) trains on the shipped MNIST fixture (tests/data),
# --describe shows the image shapes layer by layer, `nnrun eval` repeats
# the run's test line, a run killed with -9 after its first epoch resumes
# to the uninterrupted run's bits, and options that do not fit the image
# are configuration errors (exit 2) naming the layer and the option.
set -u
NNRUN=${NNRUN:-nncore/nnrun}
DATA=${NN_TEST_DATA:-tests/data}
CONFIGS=${NN_SRCDIR:-.}/configs
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"

# lines FILE: its number of lines (0 if it does not exist).
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

# same_metrics DIR1 DIR2: metrics.csv equal in every column but train_seconds.
same_metrics() {
  cut -d, -f1-5 "$1/metrics.csv" >"$tmp/m1" 2>/dev/null
  cut -d, -f1-5 "$2/metrics.csv" >"$tmp/m2" 2>/dev/null
  [ "$(lines "$tmp/m1")" -ge 2 ] && cmp -s "$tmp/m1" "$tmp/m2"
}

# The run's test line without best_epoch (what `nnrun eval` prints).
test_line() { tail -n 1 "$1" | sed 's/ best_epoch=.*//'; }

# cnn ARGS...: nnrun ARGS... on configs/cnn.ini with 4 and 8 filters, on
# the fixture, for EPOCHS epochs (the layer sections' names in --set hold
# a space, hence a function rather than a variable).
EPOCHS=3
cnn() {
  "$NNRUN" "$@" -c "$CONFIGS/cnn.ini" --set "data.dir=$DATA" \
    --set 'layer conv1.out_channels=4' --set 'layer conv2.out_channels=8' \
    --set "train.epochs=$EPOCHS" --set train.batch_size=32
}

# ---- --describe: image shapes through the network
cnn --describe >"$tmp/out" 2>"$tmp/err"
check "--describe of cnn.ini exits 0" test $? -eq 0
check "--describe lists conv1: conv2d 1x28x28 -> 4x28x28, 40 values" \
  grep -Eq '^0 +conv1 +conv2d +1x28x28 +4x28x28 +40 ' "$tmp/out"
check "--describe lists pool1: maxpool2d 4x28x28 -> 4x14x14" \
  grep -Eq '^2 +pool1 +maxpool2d +4x28x28 +4x14x14 +0 ' "$tmp/out"
check "--describe lists conv2: conv2d 4x14x14 -> 8x14x14, 296 values" \
  grep -Eq '^3 +conv2 +conv2d +4x14x14 +8x14x14 +296 ' "$tmp/out"
check "--describe lists flat: flatten 8x7x7 -> 1x1x392" \
  grep -Eq '^6 +flat +flatten +8x7x7 +1x1x392 +0 ' "$tmp/out"

# ---- trains, learns, and eval repeats the test line
cnn -q -o "$tmp/run" >"$tmp/out" 2>"$tmp/err"
check "cnn.ini (small) trains on the fixture" test $? -eq 0
test_line "$tmp/out" >"$tmp/run.test"
check "the run prints a test line" grep -q '^test loss=' "$tmp/run.test"
# The fixture's 2400 training images: three epochs take a small network
# well past chance (0.1), so the layers learn.
acc=$(sed -n 's/.*accuracy=\([0-9.]*\).*/\1/p' "$tmp/run.test")
check "the small cnn learns (test accuracy $acc > 0.5)" \
  awk -v a="${acc:-0}" 'BEGIN { exit !(a > 0.5) }'
cnn eval --weights "$tmp/run/best.safetensors" >"$tmp/out" 2>"$tmp/err"
check "eval of the cnn run's best.safetensors exits 0" test $? -eq 0
check "eval of the cnn run's best.safetensors repeats its test line" \
  cmp -s "$tmp/out" "$tmp/run.test"
cnn -q -o "$tmp/again" >/dev/null 2>&1
check "a second run with the same seed has the same last.safetensors" \
  cmp -s "$tmp/run/last.safetensors" "$tmp/again/last.safetensors"

# ---- kill -9 after the first epoch, resume, same bits
EPOCHS=12
cnn -q -o "$tmp/full" >/dev/null 2>&1
check "the 12-epoch cnn run exits 0" test $? -eq 0
# The background job must be nnrun itself (exec), so that the kill below
# reaches it and not a subshell.
(exec "$NNRUN" -q -o "$tmp/killed" -c "$CONFIGS/cnn.ini" \
   --set "data.dir=$DATA" --set 'layer conv1.out_channels=4' \
   --set 'layer conv2.out_channels=8' --set "train.epochs=$EPOCHS" \
   --set train.batch_size=32) >/dev/null 2>&1 &
kill_after_first_epoch $! "$tmp/killed" 6000
check "the killed cnn run had finished its first epoch" \
  test "$(lines "$tmp/killed/metrics.csv")" -ge 2
check "the killed cnn run did not finish" not_finished "$tmp/killed"
cnn -q --resume "$tmp/killed" >"$tmp/out" 2>"$tmp/err"
check "resuming the cnn run exits 0" test $? -eq 0
check "the resumed cnn run has the uninterrupted run's metrics.csv (but train_seconds)" \
  same_metrics "$tmp/full" "$tmp/killed"
check "the resumed cnn run has 12 epochs" \
  test "$(lines "$tmp/killed/metrics.csv")" -eq 13
check "the resumed cnn run has the same last.safetensors" \
  cmp -s "$tmp/full/last.safetensors" "$tmp/killed/last.safetensors"
check "the resumed cnn run has the same best.safetensors" \
  cmp -s "$tmp/full/best.safetensors" "$tmp/killed/best.safetensors"

# ---- options that do not fit the images: exit 2, the layer and key named
EPOCHS=1
# refused NAME PATTERN SET: cnn with --set SET exits 2 and its stderr
# matches PATTERN (grep -E); nothing is trained.
refused() {
  cnn -q -o "$tmp/bad" --set "$3" >"$tmp/out" 2>"$tmp/err"
  got=$?
  if [ "$got" -ne 2 ]; then
    not_ok "$1 (exit $got, expected 2)"
  elif ! grep -Eq -- "$2" "$tmp/err"; then
    not_ok "$1 (stderr lacks '$2')"
  else
    ok "$1"
  fi
  check "$1: nothing is trained" test ! -f "$tmp/bad/metrics.csv"
  rm -rf "$tmp/bad"
}
refused "a kernel larger than the image" \
  'conv1.*conv2d: kernel = 40 is larger than the input' \
  'layer conv1.kernel=40'
refused "stride 0" '\[layer conv1\] stride = 0 is out of range' \
  'layer conv1.stride=0'
refused "a stride that does not tile the image" \
  'conv2.*conv2d: kernel = 3 and stride = 2 do not tile' \
  'layer conv2.stride=2'
refused "padding as large as the kernel" \
  'conv1.*conv2d: padding must be' 'layer conv1.padding=3'
refused "a pooling window that does not tile the image" \
  'pool2.*maxpool2d: size = 3 and stride = 2 do not tile' \
  'layer pool2.size=3'
refused "an unknown init" "conv1.*conv2d: init must be he or xavier, not 'uniform'" \
  'layer conv1.init=uniform'
refused "a kernel that is not a number" '\[layer conv1\] kernel' \
  'layer conv1.kernel='

tap_end
