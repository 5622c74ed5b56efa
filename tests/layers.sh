#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# End-to-end tests of networks built from layer plugins (TAP):
# [model] type = sequential with [layer NAME] sections gives the numbers of
# the built-in models, --describe, the config errors of layer sections, and
# a dropout network that resumes bit for bit after a kill and evaluates to
# its run's test line.  Uses the shipped MNIST fixture (tests/data).
set -u
NNRUN=${NNRUN:-cli/nnrun}
DATA=${NN_TEST_DATA:-tests/data}
CONFIGS=${NN_SRCDIR:-.}/configs
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"

# run NAME EXPECTED_STATUS PATTERN_IN_STDERR ARGS...
run() {
  name=$1 want=$2 pat=$3
  shift 3
  nn "$@"
  if [ "$rc" -ne "$want" ]; then
    not_ok "$name (exit $rc, expected $want)"
  elif [ -n "$pat" ] && ! grep -q -- "$pat" "$tmp/err"; then
    not_ok "$name (stderr lacks '$pat')"
  else
    ok "$name"
  fi
}

# same_metrics DIR1 DIR2: metrics.csv equal in every column but train_seconds.
same_metrics() {
  cut -d, -f1-5 "$1/metrics.csv" >"$tmp/m1" 2>/dev/null
  cut -d, -f1-5 "$2/metrics.csv" >"$tmp/m2" 2>/dev/null
  [ "$(lines "$tmp/m1")" -ge 2 ] && cmp -s "$tmp/m1" "$tmp/m2"
}

# lines FILE: its number of lines (0 if it does not exist).
lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

# The run's test line without best_epoch (what `nnrun eval` prints).
test_line() { tail -n 1 "$1" | sed 's/ best_epoch=.*//'; }

# ---- layers give the built-in models' numbers, bit for bit
sub="--set data.dir=$DATA --set train.epochs=3"
for pair in mlp:mlp_layers softmax:softmax_layers; do
  a=${pair%%:*} b=${pair#*:}
  # shellcheck disable=SC2086
  nn -q -c "$CONFIGS/$a.ini" -o "$tmp/$a" $sub
  check "$a.ini trains on the fixture" test "$rc" -eq 0
  test_line "$tmp/out" >"$tmp/$a.test"
  # shellcheck disable=SC2086
  nn -q -c "$CONFIGS/$b.ini" -o "$tmp/$b" $sub
  check "$b.ini trains on the fixture" test "$rc" -eq 0
  test_line "$tmp/out" >"$tmp/$b.test"
  check "$b.ini gives $a.ini's metrics.csv (but train_seconds)" \
    same_metrics "$tmp/$a" "$tmp/$b"
  check "$b.ini gives $a.ini's test line" cmp -s "$tmp/$a.test" "$tmp/$b.test"
done
# Batches of 7 (a last batch of 6) and momentum, where the two-layer
# network learns in two epochs.
more="--set data.dir=$DATA --set train.epochs=2 --set train.batch_size=7 --set optimizer.learning_rate=0.5 --set optimizer.momentum=0.5"
# shellcheck disable=SC2086
nn -q -c "$CONFIGS/mlp.ini" -o "$tmp/mlp7" $more
check "mlp.ini with batches of 7 and momentum trains" test "$rc" -eq 0
# shellcheck disable=SC2086
nn -q -c "$CONFIGS/mlp_layers.ini" -o "$tmp/mlp7_layers" $more
check "mlp_layers.ini with batches of 7 and momentum trains" test "$rc" -eq 0
check "mlp_layers.ini gives mlp.ini's metrics with batches of 7 and momentum" \
  same_metrics "$tmp/mlp7" "$tmp/mlp7_layers"

# ---- --describe: the network layer by layer, without data or training
nn --describe -c "$CONFIGS/mlp_layers.ini"
check "--describe exits 0" test "$rc" -eq 0
check "--describe lists fc1: dense 1x28x28 -> 1x1x128, 100480 values" \
  grep -Eq '^0 +fc1 +dense +1x28x28 +1x1x128 +100480 ' "$tmp/out"
check "--describe lists act1: sigmoid 1x1x128 -> 1x1x128, 0 values" \
  grep -Eq '^1 +act1 +sigmoid +1x1x128 +1x1x128 +0 ' "$tmp/out"
check "--describe lists fc2: dense 1x1x128 -> 1x1x10, 1290 values" \
  grep -Eq '^2 +fc2 +dense +1x1x128 +1x1x10 +1290 ' "$tmp/out"
check "--describe counts 101770 trainable parameters" \
  grep -q '^trainable parameters: 101770$' "$tmp/out"

# ---- config errors: exit 2 and FILE:LINE
cat >"$tmp/net.ini" <<INI
[data]
dir = $DATA

[train]
epochs = 1
batch_size = 64
seed = 3

[model]
type = sequential

[layer fc1]
type = dense
units = 16

[layer act1]
type = sigmoid

[layer fc2]
type = dense
units = 10

[optimizer]
type = sgd
INI
run "a small network trains" 0 "" -q -c "$tmp/net.ini" -o "$tmp/net"
sed 's/^units = 16$/units = 16\nunit = 3/' "$tmp/net.ini" >"$tmp/key.ini"
run "an unknown key in a layer section names file:line" 2 \
  "key.ini:15: unknown key 'unit' in \[layer fc1\]" -q -c "$tmp/key.ini" -o "$tmp/x"
check "an unknown key in a layer section lists the accepted keys" \
  grep -q "dense accepts: type, units, bias, init, std" "$tmp/err"
sed 's/^\[layer act1\]$/[layer fc1]/' "$tmp/net.ini" >"$tmp/twice.ini"
run "a layer section twice names file:line" 2 \
  "twice.ini:16: \[layer fc1\] appears twice" -q -c "$tmp/twice.ini" -o "$tmp/x"
sed '/^type = sigmoid$/d' "$tmp/net.ini" >"$tmp/notype.ini"
run "a layer section without type names file:line" 2 \
  "notype.ini:[0-9][0-9]*: \[layer act1\] needs 'type'" -q -c "$tmp/notype.ini" -o "$tmp/x"
sed 's/^type = sequential$/type = twolayer/' "$tmp/net.ini" >"$tmp/twolayer.ini"
run "layer sections with [model] type = twolayer name file:line" 2 \
  "twolayer.ini:12: \[layer fc1\] is a layer, but \[model\] type is twolayer" \
  -q -c "$tmp/twolayer.ini" -o "$tmp/x"
sed '/^\[layer/,/^$/d' "$tmp/net.ini" >"$tmp/nolayers.ini"
run "sequential without layer sections names file:line" 2 \
  "nolayers.ini:10: \[model\] type = sequential needs its layers" \
  -q -c "$tmp/nolayers.ini" -o "$tmp/x"
sed 's/^units = 10$/units = 7/' "$tmp/net.ini" >"$tmp/seven.ini"
run "a last layer of 7 units exits 2" 2 "" -q -c "$tmp/seven.ini" -o "$tmp/x"
check "a last layer of 7 units is named, with its 7 values and 10 classes" \
  grep -q "layer fc2 (dense).*7 values.*10 classes" "$tmp/err"

# ---- dropout: kill -9 after the first epoch, resume, same bits
# A small dropout.ini (784-32-16-10).  Its epochs take a few hundredths of
# a second: 12 of them leave time to kill the run once its first epoch is
# written, and before it ends.
# drop ARGS...: nnrun ARGS... on the small dropout.ini (the layer sections'
# names hold a space, hence one function rather than a variable).
drop() {
  "$NNRUN" "$@" -c "$CONFIGS/dropout.ini" --set "data.dir=$DATA" \
    --set 'layer fc1.units=32' --set 'layer fc2.units=16' --set train.epochs=12
}
drop -q -o "$tmp/drop_full" >"$tmp/out" 2>"$tmp/err"
check "dropout.ini (small) trains" test $? -eq 0
test_line "$tmp/out" >"$tmp/drop.test"
# The background job must be nnrun itself (exec), so that the kill below
# reaches it and not a subshell.
(exec "$NNRUN" -q -o "$tmp/drop" -c "$CONFIGS/dropout.ini" \
   --set "data.dir=$DATA" --set 'layer fc1.units=32' \
   --set 'layer fc2.units=16' --set train.epochs=12) >/dev/null 2>&1 &
kill_after_first_epoch $! "$tmp/drop"
check "the killed dropout run had finished its first epoch" \
  test "$(lines "$tmp/drop/metrics.csv")" -ge 2
check "the killed dropout run did not finish" not_finished "$tmp/drop"
drop -q --resume "$tmp/drop" >"$tmp/out" 2>"$tmp/err"
check "resuming the dropout run exits 0" test $? -eq 0
check "the resumed dropout run has the uninterrupted run's metrics.csv (but train_seconds)" \
  same_metrics "$tmp/drop_full" "$tmp/drop"
check "the resumed dropout run has 12 epochs" \
  test "$(lines "$tmp/drop/metrics.csv")" -eq 13
check "the resumed dropout run has the same last.safetensors" \
  cmp -s "$tmp/drop_full/last.safetensors" "$tmp/drop/last.safetensors"
check "the resumed dropout run has the same best.safetensors" \
  cmp -s "$tmp/drop_full/best.safetensors" "$tmp/drop/best.safetensors"
drop eval --weights "$tmp/drop_full/best.safetensors" >"$tmp/out" 2>"$tmp/err"
check "eval of the dropout run's best.safetensors exits 0" test $? -eq 0
check "eval of the dropout run's best.safetensors repeats its test line" \
  cmp -s "$tmp/out" "$tmp/drop.test"

tap_end
