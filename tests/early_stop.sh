#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# Early stopping ([train] patience), end to end (TAP): a run stops where
# the rule applied to its own metrics says, says so on stderr and in
# summary.json, keeps only the epochs it ran; resumed (at an epoch boundary
# or after a kill -9) it stops at the same epoch with the same files; a run
# that had stopped trains no further.  Uses the MNIST subset in tests/data.
set -u
NNRUN=${NNRUN:-cli/nnrun}
DATA=${NN_TEST_DATA:-tests/data}
KILLAT=${NN_FIXTURE_DIR:-tests/fixtures/.libs}/killat.so
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"

# Validation accuracy wobbles below its best after a few epochs here.
cat >"$tmp/base.ini" <<INI
[data]
dir = $DATA

[train]
epochs = 15
batch_size = 8
seed = 11

[model]
type = twolayer
hidden_size = 16

[optimizer]
type = sgd
learning_rate = 0.5
momentum = 0.5
INI

# rule_stop PATIENCE METRICS_CSV: "EPOCH BEST", the first epoch after which
# PATIENCE epochs in a row have not beaten the best before them (strictly
# greater wins), and that best; nothing if there is none.
rule_stop() {
  awk -F, -v p="$1" 'NR > 1 {
    v = $5 + 0
    if (NR == 2 || v > best) { best = v; best_e = $1; without = 0 }
    else if (++without == p) { print $1, best_e; exit }
  }' "$2"
}

# stopped DIR: summary.json's "stopped" object on one line, without spaces.
stopped() {
  tr -d ' \n' <"$1/summary.json" | grep -o '"stopped":{[^}]*}'
}

# same_run DIR1 DIR2: same metrics (but the seconds) and byte-identical
# checkpoints.
same_run() {
  cut -d, -f1-5 "$1/metrics.csv" >"$tmp/m1"
  cut -d, -f1-5 "$2/metrics.csv" >"$tmp/m2"
  cmp -s "$tmp/m1" "$tmp/m2" && cmp -s "$1/last.safetensors" "$2/last.safetensors" &&
    cmp -s "$1/best.safetensors" "$2/best.safetensors"
}

# ---- patience 0 (the default) runs every epoch (its renames logged by the
# kill shim, for the last test)
NN_KILL_DIR="$tmp/full" NN_KILL_LOG="$tmp/calls" LD_PRELOAD="$KILLAT" \
  "$NNRUN" -c "$tmp/base.ini" -o "$tmp/full" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "a run without patience exits 0" test "$rc" -eq 0
check "a run without patience runs every epoch" test "$(wc -l <"$tmp/full/metrics.csv")" -eq 16
check "a run without patience says nothing about stopping" sh -c "! grep -q 'stopped' '$tmp/err'"
check "summary.json: stopped after the last epoch, patience 0" \
  test "$(stopped "$tmp/full")" = '"stopped":{"reason":"epochs","after_epoch":14,"patience":0}'
check "summary.json records patience in the config" grep -q '"patience": 0' "$tmp/full/summary.json"

# The epoch the rule gives for this run's own metrics.
# shellcheck disable=SC2046 # two words: the epoch and the best
set -- $(rule_stop 3 "$tmp/full/metrics.csv")
stop=${1:-}
best=${2:-}
check "the rule stops this run early (after epoch ${stop:-none} of 14)" \
  test -n "$stop" -a "${stop:-14}" -lt 14

# ---- patience 3: stops where the rule says
nn -c "$tmp/base.ini" --set train.patience=3 -o "$tmp/pat"
check "a run with patience exits 0" test "$rc" -eq 0
check "it says why and when it stopped" \
  grep -qx "nnrun: stopped early after epoch $stop: no better validation accuracy for 3 epochs (best: epoch $best)" "$tmp/err"
check "it runs no epoch after that" sh -c "! grep -q '^epoch *$((stop + 1)) ' '$tmp/err'"
check "the test line evaluates the best epoch" grep -q "best_epoch=$best\$" "$tmp/out"
check "metrics.csv has exactly the epochs run" test "$(wc -l <"$tmp/pat/metrics.csv")" -eq $((stop + 2))
check "metrics.csv ends with the epoch it stopped after" test "$(tail -n 1 "$tmp/pat/metrics.csv" | cut -d, -f1)" = "$stop"
head -n $((stop + 2)) "$tmp/full/metrics.csv" | cut -d, -f1-5 >"$tmp/full_head"
check "those epochs are the run without patience's" sh -c "cut -d, -f1-5 '$tmp/pat/metrics.csv' | cmp -s - '$tmp/full_head'"
check "summary.json: stopped by patience, after that epoch" \
  test "$(stopped "$tmp/pat")" = "\"stopped\":{\"reason\":\"patience\",\"after_epoch\":$stop,\"patience\":3}"
check "summary.json: the best epoch" grep -q "\"best_epoch\": $best," "$tmp/pat/summary.json"
cp "$tmp/out" "$tmp/pat_line"
nn -q -c "$tmp/base.ini" --set train.patience=3 -o "$tmp/pat_q"
check "-q silences the message" test ! -s "$tmp/err"
check "-q stops at the same epoch" same_run "$tmp/pat" "$tmp/pat_q"

# ---- a run that had stopped is finished
cp -R "$tmp/pat" "$tmp/done"
nn -c "$tmp/base.ini" --set train.patience=3 --resume "$tmp/done"
check "resuming a run that stopped early exits 0" test "$rc" -eq 0
check "it trains nothing" sh -c "! grep -q '^epoch ' '$tmp/err'"
check "it says again where it stopped" grep -q "stopped early after epoch $stop:" "$tmp/err"
check "its test line is the run's" cmp -s "$tmp/out" "$tmp/pat_line"
check "its files are unchanged" sh -c "cmp -s '$tmp/pat/metrics.csv' '$tmp/done/metrics.csv' && cmp -s '$tmp/pat/last.safetensors' '$tmp/done/last.safetensors'"
nn -c "$tmp/base.ini" --set train.patience=3 --set train.epochs=30 --resume "$tmp/done"
check "train.epochs=30 on it exits 0" test "$rc" -eq 0
check "train.epochs=30 on it stops again at once" sh -c "! grep -q '^epoch ' '$tmp/err' && cmp -s '$tmp/pat/metrics.csv' '$tmp/done/metrics.csv'"
# A larger patience goes on: to where a run with it from the start stops.
nn -q -c "$tmp/base.ini" --set train.patience=5 -o "$tmp/pat5"
nn -c "$tmp/base.ini" --set train.patience=5 --resume "$tmp/done"
check "a larger patience on resume trains on" grep -q "^epoch *$((stop + 1)) " "$tmp/err"
check "... as a run with that patience from the start" same_run "$tmp/pat5" "$tmp/done"

# ---- resume at an epoch boundary before the stop
nn -q -c "$tmp/base.ini" --set train.patience=3 --set train.epochs=$((stop - 1)) -o "$tmp/part"
nn -c "$tmp/base.ini" --set train.patience=3 --resume "$tmp/part"
check "resumed before its stop, it exits 0" test "$rc" -eq 0
check "it stops after the same epoch" grep -q "stopped early after epoch $stop:" "$tmp/err"
check "its files are the uninterrupted run's" same_run "$tmp/pat" "$tmp/part"
check "summary.json: the same stop" test "$(stopped "$tmp/part")" = "$(stopped "$tmp/pat")"

# ---- kill -9 mid-run, then resume (a slower model, so that an epoch lasts)
slow="--set model.hidden_size=400 --set train.batch_size=1 --set optimizer.learning_rate=0.1 --set train.patience=1"
# shellcheck disable=SC2086
nn -c "$tmp/base.ini" -o "$tmp/slow_full" $slow
grep 'stopped early' "$tmp/err" >"$tmp/slow_msg"
check "the slow run stops early" grep -q '"reason": "patience"' "$tmp/slow_full/summary.json"
# shellcheck disable=SC2086
"$NNRUN" -q -c "$tmp/base.ini" -o "$tmp/slow" $slow >/dev/null 2>&1 &
pid=$!
i=0
while [ ! -f "$tmp/slow/last.safetensors" ] && [ $i -lt 6000 ]; do sleep 0.01; i=$((i + 1)); done
sleep 0.2
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
check "the killed run did not finish" not_finished "$tmp/slow"
# shellcheck disable=SC2086
nn -c "$tmp/base.ini" --resume "$tmp/slow" $slow
check "resume after a kill exits 0" test "$rc" -eq 0
check "resume after a kill stops after the same epoch" sh -c "grep 'stopped early' '$tmp/err' | cmp -s - '$tmp/slow_msg'"
check "resume after a kill gives the same metrics and checkpoints" same_run "$tmp/slow_full" "$tmp/slow"
check "resume after a kill: the same stop in summary.json" test "$(stopped "$tmp/slow")" = "$(stopped "$tmp/slow_full")"

# ---- killed between an epoch's best and last checkpoints, that epoch must
# run again: a patience that would end the run before it is refused.  The
# epoch: the first best after an epoch that was not ("gap" epochs without
# a better accuracy before it), found in the full run's renames.
at=$(grep '^rename ' "$tmp/calls" | sed 's|.*/||' | awk '
  /^metrics.csv$/ { e++ }
  /^best.safetensors$/ { if (seen && e - 1 - pb >= 1 && !k) { k = e; gap = e - 1 - pb } pb = e; seen = 1 }
  /^last.safetensors$/ { if (k && !done) { print NR, k, gap; done = 1 } }' e=-1)
# shellcheck disable=SC2086 # three words
set -- $at
check "the full run has a best epoch after a worse one (${2:-none})" test -n "$at"
NN_KILL_DIR="$tmp/ahead" NN_KILL_AT="rename:${1:-0}" LD_PRELOAD="$KILLAT" \
  "$NNRUN" -q -c "$tmp/base.ini" -o "$tmp/ahead" >/dev/null 2>&1
check "killed before last.safetensors of epoch ${2:-?}" test $? -eq 137
nn -q -c "$tmp/base.ini" --set train.patience="${3:-0}" --resume "$tmp/ahead"
check "resuming it with patience ${3:-?} is refused (exit 2)" test "$rc" -eq 2
check "... saying why" grep -q "saving epoch ${2:-?}, which must run again, but train.patience = ${3:-?} ends the run after epoch $((${2:-1} - 1))" "$tmp/err"
nn -q -c "$tmp/base.ini" --resume "$tmp/ahead"
check "resuming it without patience gives the full run" same_run "$tmp/full" "$tmp/ahead"

# ---- the value is checked like any other
nn -q -c "$tmp/base.ini" --set train.patience=-1 -o "$tmp/bad"
check "patience -1 exits 2" test "$rc" -eq 2
check "patience -1 names the key" grep -q "patience" "$tmp/err"

tap_end
