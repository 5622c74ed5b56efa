#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# Learning-rate schedules through nnrun (TAP): [schedule] configs and their
# errors, the lr column and summary.json, a schedule that keeps the rate
# equal to a run without one, and resumes after kill -9 that repeat the
# uninterrupted run bit for bit: adam with a cosine schedule (and a
# per-batch warm-up) killed mid-epoch, and the plateau (whose state lives
# in last.safetensors) killed between epochs by tests/fixtures/killat.so.
# Uses the MNIST subset in tests/data.
set -u
NNRUN=${NNRUN:-cli/nnrun}
DATA=${NN_TEST_DATA:-tests/data}
KILLAT=${NN_FIXTURE_DIR:-tests/fixtures/.libs}/killat.so
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"

unwrap_nnrun

# same_run DIR1 DIR2: metrics.csv equal but for the seconds column (lr
# included), and both checkpoints byte for byte.
same_run() {
  cut -d, -f1-5,7 "$1/metrics.csv" >"$tmp/m1" 2>/dev/null
  cut -d, -f1-5,7 "$2/metrics.csv" >"$tmp/m2" 2>/dev/null
  cmp -s "$tmp/m1" "$tmp/m2" && cmp -s "$1/last.safetensors" "$2/last.safetensors" &&
    cmp -s "$1/best.safetensors" "$2/best.safetensors"
}
lines() { wc -l <"$1" | tr -d ' '; }

# Twelve short epochs: adam under a cosine schedule after a warm-up that
# raises the rate every batch.
cat >"$tmp/cos.ini" <<INI
[data]
dir = $DATA

[train]
epochs = 12
batch_size = 16
seed = 5

[model]
type = twolayer
hidden_size = 16

[optimizer]
type = adam
learning_rate = 0.01

[schedule]
type = cosine
T_max = 10
eta_min = 0.0001
warmup_epochs = 2
warmup_per_batch = true
INI

nn -q -c "$tmp/cos.ini" -o "$tmp/full"
check "adam + cosine trains (exit 0)" test "$rc" -eq 0
cp "$tmp/out" "$tmp/full.test"
check "metrics.csv has an lr column" \
  grep -qx 'epoch,train_loss,train_accuracy,val_loss,val_accuracy,train_seconds,lr' "$tmp/full/metrics.csv"
# Epoch 2 is the schedule's first: the configured rate itself.
check "the first epoch after the warm-up runs at learning_rate" \
  test "$(sed -n 4p "$tmp/full/metrics.csv" | cut -d, -f7)" = 0.01
check "the warm-up's first epoch starts lower" \
  awk -F, 'NR == 2 { exit !($7 < 0.01 * 0.5) }' "$tmp/full/metrics.csv"
check "the rate falls every epoch after the warm-up" \
  awk -F, 'NR > 4 && !($7 < prev) { bad = 1 } NR > 3 { prev = $7 } END { exit bad }' "$tmp/full/metrics.csv"
check "summary.json has each epoch's lr" grep -q '"lr": 0.01$' "$tmp/full/summary.json"
check "summary.json has [schedule] with its warm-up" \
  sh -c "grep -q '\"T_max\": 10' '$tmp/full/summary.json' && grep -q '\"warmup_per_batch\": true' '$tmp/full/summary.json'"

# ---- kill -9 mid-epoch (once the first epoch is saved), then --resume
(exec "$NNRUN" -q -c "$tmp/cos.ini" -o "$tmp/killed") >/dev/null 2>&1 &
kill_after_first_epoch $! "$tmp/killed"
check "the killed run had saved its first epoch" \
  test "$(lines "$tmp/killed/metrics.csv")" -ge 2
check "the killed run did not finish" \
  sh -c "! grep -q '\"status\": \"finished\"' '$tmp/killed/summary.json'"
nn -q -c "$tmp/cos.ini" --resume "$tmp/killed"
check "--resume exits 0" test "$rc" -eq 0
check "the resumed run prints the uninterrupted run's test line" cmp -s "$tmp/out" "$tmp/full.test"
check "the resumed run has the uninterrupted run's metrics (lr too) and checkpoints" \
  same_run "$tmp/full" "$tmp/killed"

# ---- a resume with another schedule is not the run it continues
nn -q -c "$tmp/cos.ini" --resume "$tmp/killed" --set schedule.T_max=9 --set train.epochs=13
check "--resume with another T_max exits 2 (got $rc)" test "$rc" -eq 2
check "naming the key and both values" grep -q "schedule.T_max: 10 in the run, 9 now" "$tmp/err"

# ---- the plateau: its counters and best in last.safetensors
sed -e 's/^type = cosine$/type = plateau/' -e '/^T_max/d' -e '/^eta_min/d' \
  -e '/^warmup/d' "$tmp/cos.ini" >"$tmp/plateau.ini"
printf '%s\n' 'patience = 1' 'factor = 0.5' 'mode = max' >>"$tmp/plateau.ini"
env LD_PRELOAD="$KILLAT" NN_KILL_DIR="$tmp/pfull" NN_KILL_LOG="$tmp/calls" \
  "$NNRUN" -q -c "$tmp/plateau.ini" -o "$tmp/pfull" >"$tmp/pfull.test" 2>"$tmp/err"
check "adam + plateau trains (exit 0)" test $? -eq 0
check "the plateau lowered the rate" \
  awk -F, 'NR > 1 && $7 < 0.01 { low = 1 } END { exit !low }' "$tmp/pfull/metrics.csv"
# Killed at the rename of epoch 8's metrics.csv: trained, nothing saved.
at=$(grep '^rename ' "$tmp/calls" | grep -n '/metrics.csv$' | sed -n 9p | cut -d: -f1)
env LD_PRELOAD="$KILLAT" NN_KILL_DIR="$tmp/pkilled" NN_KILL_AT="rename:$at" \
  "$NNRUN" -q -c "$tmp/plateau.ini" -o "$tmp/pkilled" >/dev/null 2>&1
check "the plateau run was killed (exit 137) at rename $at" test $? -eq 137
check "with 8 epochs saved" test "$(lines "$tmp/pkilled/metrics.csv")" -eq 9
nn -q -c "$tmp/plateau.ini" --resume "$tmp/pkilled"
check "the plateau run resumes (exit 0)" test "$rc" -eq 0
check "to the uninterrupted run's metrics (lr too) and checkpoints" \
  same_run "$tmp/pfull" "$tmp/pkilled"
check "and its test line" cmp -s "$tmp/out" "$tmp/pfull.test"

# ---- a schedule that keeps the rate: the bits of a run without one
sed -e '/^\[schedule\]/,$d' -e 's/^type = adam$/type = sgd/' \
  -e 's/^learning_rate = 0.01$/learning_rate = 0.1/' "$tmp/cos.ini" >"$tmp/flat.ini"
nn -q -c "$tmp/flat.ini" -o "$tmp/flat"
check "sgd without a schedule trains (exit 0)" test "$rc" -eq 0
cp "$tmp/out" "$tmp/flat.test"
check "its lr column is the configured rate" \
  awk -F, 'NR > 1 && $7 != 0.10000000000000001 { bad = 1 } END { exit bad }' "$tmp/flat/metrics.csv"
printf '%s\n' '[schedule]' 'type = step' 'step_size = 1' 'gamma = 1' >>"$tmp/flat.ini"
nn -q -c "$tmp/flat.ini" -o "$tmp/flat_step"
cut -d, -f1-5,7 "$tmp/flat_step/metrics.csv" >"$tmp/m_flat"
# last.safetensors records the configuration, [schedule] included: the
# numbers are compared, in metrics.csv, best.safetensors and the test line.
check "step with gamma = 1 gives the run without a schedule, bit for bit" \
  sh -c "cut -d, -f1-5,7 '$tmp/flat/metrics.csv' | cmp -s - '$tmp/m_flat' &&
    cmp -s '$tmp/flat/best.safetensors' '$tmp/flat_step/best.safetensors' &&
    cmp -s '$tmp/out' '$tmp/flat.test'"

# ---- config errors: exit 2 and where
printf '%s\n' '[schedule]' 'type = cosine' 'T_max = 5' 'warmup_epoch = 2' >"$tmp/typo.ini"
sed '/^\[schedule\]/,$d' "$tmp/cos.ini" >"$tmp/base.ini"
cat "$tmp/base.ini" "$tmp/typo.ini" >"$tmp/bad.ini"
nn -q -c "$tmp/bad.ini" -o "$tmp/x"
check "an unknown [schedule] key exits 2" test "$rc" -eq 2
check "and is named with its line" grep -q "bad.ini:[0-9]*.*warmup_epoch" "$tmp/err"
printf '%s\n' '[schedule]' 'type = cosine' >"$tmp/typo.ini"
cat "$tmp/base.ini" "$tmp/typo.ini" >"$tmp/bad.ini"
nn -q -c "$tmp/bad.ini" -o "$tmp/x"
check "cosine without T_max exits 2" test "$rc" -eq 2
check "and says T_max is needed" grep -q "T_max" "$tmp/err"
printf '%s\n' '[schedule]' 'type = step' 'step_size = 2' 'warmup_start_factor = 0' >"$tmp/typo.ini"
cat "$tmp/base.ini" "$tmp/typo.ini" >"$tmp/bad.ini"
nn -q -c "$tmp/bad.ini" -o "$tmp/x"
check "warmup_start_factor = 0 exits 2" test "$rc" -eq 2
printf '%s\n' '[schedule]' 'type = cosine' 'T_max = 5' 'eta_min = 0.5' >"$tmp/typo.ini"
cat "$tmp/base.ini" "$tmp/typo.ini" >"$tmp/bad.ini"
nn -q -c "$tmp/bad.ini" -o "$tmp/x"
check "cosine's eta_min above learning_rate exits 2 (got $rc)" test "$rc" -eq 2
check "naming [schedule] with its line" grep -q "bad.ini:[0-9]*: \[schedule\] type = cosine: cosine: eta_min" "$tmp/err"
printf '%s\n' '[schedule]' 'type = sgd' >"$tmp/typo.ini"
cat "$tmp/base.ini" "$tmp/typo.ini" >"$tmp/bad.ini"
nn -q -c "$tmp/bad.ini" -o "$tmp/x"
check "an optimizer as [schedule] type fails (exit $rc)" test "$rc" -ne 0
check "saying a schedule is needed" grep -q "a schedule is needed here" "$tmp/err"
check "no run directory is left by a config error" test ! -e "$tmp/x"

tap_end
