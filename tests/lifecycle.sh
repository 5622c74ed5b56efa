#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# A run's life (TAP): one run per directory (the lock, -o into a run's
# directory, --force, --resume with -o); a resumed run is the same run
# (the configuration its checkpoint records); summary.json and the curves
# current after every epoch; SIGTERM and SIGINT stop with a checkpoint
# that resumes bit for bit, SIGUSR1 checkpoints and goes on; a full disk
# fails naming the file and leaves the last checkpoint loadable
# (tests/fixtures/nospace.so, LD_PRELOAD); a sweep's runs die with it and
# --resume finishes the sweep.  Uses the MNIST subset in tests/data.
set -u
NNRUN=${NNRUN:-cli/nnrun}
DATA=${NN_TEST_DATA:-tests/data}
NOSPACE=${NN_FIXTURE_DIR:-tests/fixtures/.libs}/nospace.so
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"
# shellcheck source=tests/st_header.sh
. "$(dirname "$0")/st_header.sh"

unwrap_nnrun

three_epoch_ini "$tmp/base.ini"
# Slow enough (seconds per epoch) for a signal to land inside an epoch.
slow="--set model.hidden_size=400 --set train.batch_size=1"

# same_run DIR1 DIR2: metrics.csv equal but for the seconds column, and
# both checkpoints byte for byte.
same_run() {
  cut -d, -f1-5 "$1/metrics.csv" >"$tmp/m1" 2>/dev/null
  cut -d, -f1-5 "$2/metrics.csv" >"$tmp/m2" 2>/dev/null
  cmp -s "$tmp/m1" "$tmp/m2" && cmp -s "$1/last.safetensors" "$2/last.safetensors" &&
    cmp -s "$1/best.safetensors" "$2/best.safetensors"
}
no_temp() { test -z "$(find "$1" -name '*.tmp[0-9]*')"; }
status_is() { grep -q "\"status\": \"$2\"" "$1/summary.json"; }
# wait_for FILE: up to a minute.
wait_for() {
  i=0
  while [ ! -s "$1" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
  test -s "$1"
}
# start DIR ARGS...: nnrun -c base.ini -o DIR ARGS in the background
# ($pid), its stdout and stderr in DIR.out and DIR.err.
start() {
  d=$1
  shift
  "$NNRUN" -c "$tmp/base.ini" -o "$d" "$@" >"$d.out" 2>"$d.err" &
  pid=$!
}

nn --help
check "--help lists --force" grep -q -- '--force  *start over in -o DIR' "$tmp/out"
check "--help lists the signal exit statuses" grep -q '130 / 143 stopped by SIGINT / SIGTERM' "$tmp/out"

# ---- the reference runs
nn -q -c "$tmp/base.ini" -o "$tmp/ref"
check "the reference run exits 0" test "$rc" -eq 0
cp "$tmp/out" "$tmp/ref.line"
check "its summary.json says finished" status_is "$tmp/ref" finished
# shellcheck disable=SC2086
nn -q -c "$tmp/base.ini" -o "$tmp/slow_ref" $slow
check "the slow reference run exits 0" test "$rc" -eq 0
cp "$tmp/out" "$tmp/slow.line"

# ---- a running run: current files, its lock, SIGTERM inside an epoch
# shellcheck disable=SC2086
start "$tmp/live" $slow
wait_for "$tmp/live/curves.svg"
check "after the first epoch the curves are drawn" test -s "$tmp/live/curves.png"
check "and summary.json says running" status_is "$tmp/live" running
check "with that epoch in it" grep -q '"epoch": 0,' "$tmp/live/summary.json"
# shellcheck disable=SC2086
nn -q -c "$tmp/base.ini" -o "$tmp/live" $slow
check "a second nnrun on its directory exits 1" test "$rc" -eq 1
check "naming the process that holds it" grep -q "in use by another nnrun (process $pid," "$tmp/err"
# shellcheck disable=SC2086
nn -q -c "$tmp/base.ini" --resume "$tmp/live" $slow
check "so does --resume of it" sh -c "test $rc -eq 1 && grep -q 'process $pid,' '$tmp/err'"
kill -TERM "$pid"
wait "$pid"
check "SIGTERM: exit 143" test $? -eq 143
check "it says where it stopped and how to resume" grep -q "^nnrun: interrupted at epoch 1, batch [0-9]*; resume with: nnrun -c $tmp/base.ini --set 'model.hidden_size=400' --set 'train.batch_size=1' --resume $tmp/live$" "$tmp/live.err"
batch=$(sed -n 's/.*interrupted at epoch 1, batch \([0-9]*\);.*/\1/p' "$tmp/live.err")
check "inside the epoch (batch ${batch:-?})" test "${batch:-0}" -gt 0
check "summary.json says interrupted" status_is "$tmp/live" interrupted
check "no temporary file is left" no_temp "$tmp/live"
# shellcheck disable=SC2086
nn -q -c "$tmp/base.ini" --resume "$tmp/live" $slow
check "--resume exits 0" test "$rc" -eq 0
check "and prints the uninterrupted run's test line" cmp -s "$tmp/out" "$tmp/slow.line"
check "metrics.csv and both checkpoints are the uninterrupted run's" same_run "$tmp/slow_ref" "$tmp/live"
check "summary.json says finished" status_is "$tmp/live" finished

# ---- SIGINT
# shellcheck disable=SC2086
start "$tmp/int" $slow
wait_for "$tmp/int/curves.svg"
kill -INT "$pid"
wait "$pid"
check "SIGINT: exit 130" test $? -eq 130
# shellcheck disable=SC2086
nn -q -c "$tmp/base.ini" --resume "$tmp/int" $slow
check "resumed after SIGINT, the uninterrupted run" same_run "$tmp/slow_ref" "$tmp/int"

# ---- SIGUSR1: a checkpoint, and the run goes on
# shellcheck disable=SC2086
start "$tmp/usr" $slow
wait_for "$tmp/usr/curves.svg"
kill -USR1 "$pid"
i=0
while ! grep -q 'checkpoint at epoch' "$tmp/usr.err" && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
# Held still while copied: the copy is the checkpoint inside the epoch.
kill -STOP "$pid"
cp -R "$tmp/usr" "$tmp/usr_copy"
kill -CONT "$pid"
wait "$pid"
check "SIGUSR1: the run goes on to exit 0" test $? -eq 0
# Where the signal lands depends on the machine's speed: any batch
# boundary will do, as long as the message and the checkpoint agree.
check "it says where it saved" grep -q "^nnrun: checkpoint at epoch [0-9]*, batch [0-9]* in $tmp/usr/last.safetensors$" "$tmp/usr.err"
check "the run is the uninterrupted one" same_run "$tmp/slow_ref" "$tmp/usr"
usr_batch=$(sed -n 's/^nnrun: checkpoint at epoch [0-9]*, batch \([0-9]*\) in .*/\1/p' "$tmp/usr.err" | head -1)
usr_meta=$(get_meta "$tmp/usr_copy/last.safetensors" batch)
check "the checkpoint records its batch (${usr_batch:-?})" \
  test "${usr_meta:-0}" = "${usr_batch:-none}"
# shellcheck disable=SC2086
nn -q -c "$tmp/base.ini" --resume "$tmp/usr_copy" $slow
check "a copy taken then resumes to the uninterrupted run" same_run "$tmp/slow_ref" "$tmp/usr_copy"

# ---- -o into a directory that holds a run
cp -R "$tmp/ref" "$tmp/done"
nn -q -c "$tmp/base.ini" -o "$tmp/done"
check "-o into a finished run's directory exits 2" test "$rc" -eq 2
check "saying to use --resume or --force" grep -q "use --resume $tmp/done to continue it, or --force to start it over there" "$tmp/err"
check "and leaves its files alone" same_run "$tmp/ref" "$tmp/done"
cp -R "$tmp/live" "$tmp/begun"
rm "$tmp/begun/summary.json" "$tmp/begun/last.safetensors" "$tmp/begun/best.safetensors" "$tmp/begun/metrics.csv"
nn -q -c "$tmp/base.ini" -o "$tmp/begun"
check "so does -o into one a run only began in (run.lock)" test "$rc" -eq 2
nn -q -c "$tmp/base.ini" -o "$tmp/done" --force --set train.seed=12
check "--force exits 0" test "$rc" -eq 0
check "and starts over there (the new seed)" grep -q '"seed": 12' "$tmp/done/summary.json"
nn -q -c "$tmp/base.ini" -o "$tmp/done" --force
check "--force again with the first config" test "$rc" -eq 0
check "gives the reference run's files" same_run "$tmp/ref" "$tmp/done"
mkdir "$tmp/empty"
nn -q -c "$tmp/base.ini" -o "$tmp/empty"
check "-o into an existing empty directory exits 0" test "$rc" -eq 0
mkdir "$tmp/empty3"
nn -q -c "$tmp/base.ini" -o "$tmp/empty3" --set data.dir="$tmp/none"
nn -q -c "$tmp/base.ini" -o "$tmp/empty3"
check "a run that failed before training leaves the directory free" test "$rc" -eq 0
nn -q -c "$tmp/base.ini" --resume "$tmp/ref" -o "$tmp/ref"
check "--resume DIR -o DIR exits 0" test "$rc" -eq 0
nn -q -c "$tmp/base.ini" --resume "$tmp/ref" -o "$tmp/ref/../ref/"
check "-o naming the same directory otherwise too" test "$rc" -eq 0
nn -q -c "$tmp/base.ini" --resume "$tmp/ref" -o "$tmp/empty"
check "--resume DIR -o OTHER exits 2" test "$rc" -eq 2
check "saying they differ" grep -q "name different directories" "$tmp/err"

# ---- a resumed run keeps its configuration
nn -q -c "$tmp/base.ini" --resume "$tmp/ref" --set optimizer.learning_rate=0.5
check "--resume with another learning rate exits 2" test "$rc" -eq 2
check "listing the difference" grep -q "^optimizer.learning_rate: 2 in the run, 0.5 now$" "$tmp/err"
nn -q -c "$tmp/base.ini" --resume "$tmp/ref" --set model.hidden_size=17 --set train.seed=3 --set data.format=csv
check "with three differences, exit 2" test "$rc" -eq 2
check "one line each" sh -c "grep -c ' in the run, .* now$' '$tmp/err' | grep -qx 3"
check "the model's option among them" grep -q "^model.hidden_size: 16 in the run, 17 now$" "$tmp/err"
check "and the count" grep -q "differs from the run's in 3 keys" "$tmp/err"
cp -R "$tmp/ref" "$tmp/longer"
nn -q -c "$tmp/base.ini" --resume "$tmp/longer" --set train.epochs=4 --set train.threads=1
check "train.epochs and train.threads may change" test "$rc" -eq 0
check "and the run goes on (4 epochs)" test "$(wc -l <"$tmp/longer/metrics.csv")" -eq 5
cp -R "$tmp/ref" "$tmp/old"
rewrite_header "$tmp/old/last.safetensors" 's/"config":"[^"]*",\{0,1\}//; s/,}/}/'
check "a checkpoint without the recorded config (as an older nnrun wrote)" test -z "$(get_meta "$tmp/old/last.safetensors" config)"
nn -c "$tmp/base.ini" --resume "$tmp/old" --set optimizer.learning_rate=0.5
check "resumes (exit 0)" test "$rc" -eq 0
check "with a warning that nothing was checked" grep -q "records no configuration (an older nnrun wrote it): resuming without checking" "$tmp/err"

# ---- a full disk
i=1
while [ "$i" -le 8 ]; do
  d=$tmp/full-$i
  env LD_PRELOAD="$NOSPACE" NN_NOSPACE_DIR="$d" NN_NOSPACE_AT="$i" \
    "$NNRUN" -q -c "$tmp/base.ini" -o "$d" >/dev/null 2>"$tmp/err"
  failed=$?
  what="disk full from fsync $i on"
  file=$(sed -n "s|^nnrun: cannot write $d/\([a-z.]*\): No space left on device$|\1|p" "$tmp/err")
  nn -q -c "$tmp/base.ini" --resume "$d"
  if [ "$failed" -ne 1 ]; then
    not_ok "$what: exit $failed, not 1"
  elif [ -z "$file" ]; then
    not_ok "$what: no message naming the file"
  elif ! no_temp "$d"; then
    not_ok "$what: a temporary file is left"
  elif [ "$rc" -ne 0 ] || ! same_run "$tmp/ref" "$d"; then
    not_ok "$what: --resume (exit $rc) does not give the uninterrupted run"
  else
    ok "$what: exit 1 naming $file; the run resumes from what is left"
  fi
  i=$((i + 1))
done

# ---- sweeps: the runs die with the sweep, and --resume finishes it
# shellcheck disable=SC2086
"$NNRUN" -c "$tmp/base.ini" -o "$tmp/sw" $slow --sweep optimizer.learning_rate=2,1 -j 2 >/dev/null 2>"$tmp/sw.err" &
pid=$!
r1="$tmp/sw/01-learning_rate=2"
r2="$tmp/sw/02-learning_rate=1"
wait_for "$r1/run.lock"
wait_for "$r2/run.lock"
wait_for "$r1/curves.svg"
kids="$(cat "$r1/run.lock") $(cat "$r2/run.lock")"
check "a run's log.txt is written as it goes" grep -q '^epoch   0 ' "$r1/log.txt"
kill -KILL "$pid"
wait "$pid" 2>/dev/null
i=0
alive=1
while [ "$alive" -eq 1 ] && [ $i -lt 300 ]; do
  alive=0
  for k in $kids; do kill -0 "$k" 2>/dev/null && alive=1; done
  [ "$alive" -eq 1 ] && sleep 0.1
  i=$((i + 1))
done
check "the sweep killed with SIGKILL leaves no training process ($kids)" test "$alive" -eq 0
check "its runs stopped with a checkpoint" grep -q 'interrupted at epoch' "$r1/log.txt"
# shellcheck disable=SC2086
nn -q -c "$tmp/base.ini" --resume "$r2" $slow
check "a sweep's run resumed by itself exits 0" test "$rc" -eq 0
check "with its own learning rate" grep -q '"learning_rate": 1\(\.0\)\{0,1\},' "$r2/summary.json"
# shellcheck disable=SC2086
nn -c "$tmp/base.ini" --resume "$tmp/sw" $slow --sweep optimizer.learning_rate=2,1 -j 2
check "--resume of the sweep exits 0" test "$rc" -eq 0
check "it keeps the finished run" grep -q "resumed: the finished ones are kept" "$tmp/err"
check "and writes the report" test -s "$tmp/sw/report.md"
check "sweep.csv: both runs finished" sh -c "grep -c ',0,0[0-9]-learning_rate' '$tmp/sw/sweep.csv' | grep -qx 2"
check "the resumed run is the uninterrupted one" same_run "$tmp/slow_ref" "$r1"
nn -q -c "$tmp/base.ini" --resume "$tmp/sw"
check "--resume of a sweep without its sweep options exits 2" test "$rc" -eq 2

tap_end
