#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# End-to-end tests of a run's outputs (TAP): checkpoints, summary.json,
# learning curves, eval, init_from, resume (at an epoch boundary and after
# a kill mid-epoch), shuffle, sweeps and the progress line.  Uses the
# shipped MNIST fixture (tests/data); no network.
set -u
NNRUN=${NNRUN:-cli/nnrun}
DATA=${NN_TEST_DATA:-tests/data}
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"

three_epoch_ini "$tmp/base.ini" 0.5

# png_size FILE: "WIDTHxHEIGHT" from the PNG's IHDR, or nothing.
png_size() {
  sig=$(od -An -tx1 -N8 "$1" | tr -d ' \n')
  [ "$sig" = 89504e470d0a1a0a ] || return 0
  w=$(od -An -tu1 -j16 -N4 "$1" | awk '{print $1*16777216+$2*65536+$3*256+$4}')
  h=$(od -An -tu1 -j20 -N4 "$1" | awk '{print $1*16777216+$2*65536+$3*256+$4}')
  echo "${w}x$h"
}

# ---- one run: every output file
nn -q -c "$tmp/base.ini" -o "$tmp/a"
check "a run exits 0" test "$rc" -eq 0
for f in metrics.csv best.safetensors last.safetensors summary.json curves.png curves.svg; do
  check "a run writes $f" test -s "$tmp/a/$f"
done
check "curves.png is a 1200x500 PNG" test "$(png_size "$tmp/a/curves.png")" = 1200x500
check "curves.svg is an SVG of the same size" grep -q '<svg[^>]*width="1200' "$tmp/a/curves.svg"
check "curves.svg is complete" grep -q '</svg>' "$tmp/a/curves.svg"
for k in '"config"' '"hidden_size": 16' '"momentum": 0.5' '"epochs"' '"best_epoch"' \
  '"test"' '"timings"' '"seed": 11' '"nnrun"' '"plugin_abi"' '"gsl"' '"cblas"' '"shuffle": true'; do
  check "summary.json has $k" grep -q "$k" "$tmp/a/summary.json"
done
check "no temporary files are left" test -z "$(find "$tmp/a" -name '*.tmp*')"
tail -n 1 "$tmp/out" | sed 's/ best_epoch=.*//' >"$tmp/test_line"

# ---- eval agrees with the run's test line
nn eval -c "$tmp/base.ini" --weights "$tmp/a/best.safetensors"
check "eval of best.safetensors repeats the run's test line" cmp -s "$tmp/out" "$tmp/test_line"
nn eval -c "$tmp/base.ini" --set model.hidden_size=17 --weights "$tmp/a/best.safetensors"
check "eval with the wrong shapes exits 2" test "$rc" -eq 2
check "eval names the tensor and both shapes" grep -q "W1' is 784x16 (shape \[784, 16\]) but the parameter is 784x17" "$tmp/err"
nn eval -c "$tmp/base.ini"
check "eval without --weights is a usage error" test "$rc" -eq 2
# eval reads the test files only: a directory without the training files
# gives the same line.
mkdir "$tmp/testonly"
for f in "$DATA"/t10k-*; do ln -s "$(cd "$(dirname "$f")" && pwd)/$(basename "$f")" "$tmp/testonly/"; done
nn eval -c "$tmp/base.ini" --set "data.dir=$tmp/testonly" --weights "$tmp/a/best.safetensors"
check "eval needs no training file" cmp -s "$tmp/out" "$tmp/test_line"
nn -q -c "$tmp/base.ini" --set "data.dir=$tmp/testonly" -o "$tmp/notrain"
check "training without the training file exits 1" test "$rc" -eq 1
check "training without the training file names it" grep -q "train-images-idx3-ubyte" "$tmp/err"

# ---- init_from
nn -q -c "$tmp/base.ini" -o "$tmp/init" --set "model.init_from=$tmp/a/best.safetensors" --set train.epochs=1
check "init_from a checkpoint trains" test "$rc" -eq 0
first_loss() { sed -n 2p "$1" | cut -d, -f2; }
check "init_from starts from the given weights (lower first loss)" \
  awk -v a="$(first_loss "$tmp/init/metrics.csv")" -v b="$(first_loss "$tmp/a/metrics.csv")" 'BEGIN { exit !(a < b / 2) }'
printf '[data]\ndir = %s\n[train]\nepochs = 1\n[model]\ntype = softmax\ninit_from = %s\n[optimizer]\ntype = sgd\n' \
  "$DATA" "$tmp/a/best.safetensors" >"$tmp/soft.ini"
nn -q -c "$tmp/soft.ini" -o "$tmp/bad"
check "init_from with other names exits 2" test "$rc" -eq 2
check "init_from names the file, line and the stray tensor" grep -q "soft.ini:7: \[model\] init_from = .*b1' is not a parameter" "$tmp/err"
nn -q -c "$tmp/base.ini" -o "$tmp/bad2" --set model.hidden_size=32 --set "model.init_from=$tmp/a/best.safetensors"
check "init_from with other shapes exits 2" test "$rc" -eq 2
check "init_from names both shapes" grep -q "W1' is 784x16 (shape \[784, 16\]) but the parameter is 784x32" "$tmp/err"
nn -q -c "$tmp/base.ini" -o "$tmp/bad3" --set "model.init_from=$tmp/nope.safetensors"
check "init_from a missing file exits 2" test "$rc" -eq 2
check "init_from a missing file names it" grep -q "init_from = .*nope.safetensors: cannot read it" "$tmp/err"
check "a bad init_from leaves no run directory" test ! -e "$tmp/bad3"
nn eval -c "$tmp/base.ini" --set "model.init_from=$tmp/nope.safetensors" --weights "$tmp/a/best.safetensors"
check "eval ignores init_from (its weights are --weights)" cmp -s "$tmp/out" "$tmp/test_line"
nn -q -c "$tmp/base.ini" -o "$tmp/init2" --set "model.init_from=$tmp/a/last.safetensors" --set train.epochs=1
check "init_from last.safetensors (with optimizer state) works" test "$rc" -eq 0

# ---- shuffle = false
nn -q -c "$tmp/base.ini" -o "$tmp/ns1" --set train.shuffle=false --set train.epochs=2
nn -q -c "$tmp/base.ini" -o "$tmp/ns2" --set train.shuffle=false --set train.epochs=2 --set train.seed=12
check "shuffle=false trains" test "$rc" -eq 0
check "shuffle=false changes the batches" sh -c "! cmp -s '$tmp/a/metrics.csv' '$tmp/ns1/metrics.csv'"
check "summary records shuffle=false" grep -q '"shuffle": false' "$tmp/ns1/summary.json"

# ---- resume at an epoch boundary: 2 epochs, then continue to 5
same_run() { # DIR1 DIR2: same metrics (but times) and byte-identical checkpoints
  cut -d, -f1-5 "$1/metrics.csv" >"$tmp/m1"
  cut -d, -f1-5 "$2/metrics.csv" >"$tmp/m2"
  cmp -s "$tmp/m1" "$tmp/m2" && cmp -s "$1/last.safetensors" "$2/last.safetensors" &&
    cmp -s "$1/best.safetensors" "$2/best.safetensors"
}
nn -q -c "$tmp/base.ini" -o "$tmp/full" --set train.epochs=5
nn -q -c "$tmp/base.ini" -o "$tmp/part" --set train.epochs=2
nn -q -c "$tmp/base.ini" --resume "$tmp/part" --set train.epochs=5
check "resume exits 0" test "$rc" -eq 0
check "resume at an epoch boundary is bit-identical" same_run "$tmp/full" "$tmp/part"
check "resumed run has 5 epochs of metrics" test "$(wc -l <"$tmp/part/metrics.csv")" -eq 6
tail -n 1 "$tmp/out" >"$tmp/r_line"
nn -q -c "$tmp/base.ini" --resume "$tmp/part" --set model.type=softmax --set model.hidden_size=1
check "resume with another model is refused" test "$rc" -ne 0
nn -q -c "$tmp/base.ini" --resume "$tmp/nowhere"
check "resume of a missing directory exits 2" test "$rc" -eq 2
mkdir "$tmp/empty"
nn -q -c "$tmp/base.ini" --resume "$tmp/empty"
check "resume of a directory without a checkpoint exits 2" test "$rc" -eq 2
check "resume says the checkpoint is missing" grep -q "no checkpoint there" "$tmp/err"

# ---- resume after a kill mid-epoch (a slower model so an epoch lasts)
slow="--set model.hidden_size=400 --set train.batch_size=1 --set train.epochs=3"
# shellcheck disable=SC2086
"$NNRUN" -q -c "$tmp/base.ini" -o "$tmp/slow_full" $slow >/dev/null 2>&1
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
nn -q -c "$tmp/base.ini" --resume "$tmp/slow" $slow
check "resume after a kill exits 0" test "$rc" -eq 0
check "resume after a kill mid-epoch is bit-identical" same_run "$tmp/slow_full" "$tmp/slow"

# ---- sweeps
nn -q -c "$tmp/base.ini" -o "$tmp/sw" --sweep optimizer.learning_rate=0.5,0.1 -j 2
check "a two-value sweep exits 0" test "$rc" -eq 0
check "sweep.csv has a header and two rows" test "$(wc -l <"$tmp/sw/sweep.csv")" -eq 3
check "sweep.csv names the swept key" grep -q '^optimizer.learning_rate,best_val_accuracy,best_epoch,test_accuracy,final_train_loss,seconds' "$tmp/sw/sweep.csv"
check "each sweep run has its own directory" test -s "$tmp/sw/01-learning_rate=0.5/summary.json" -a -s "$tmp/sw/02-learning_rate=0.1/summary.json"
check "each sweep run's log.txt holds its epoch lines" grep -q '^epoch *0 ' "$tmp/sw/01-learning_rate=0.5/log.txt"
check "with -j 2 an automatic thread count is 1 per run" grep -q '"threads": 1' "$tmp/sw/01-learning_rate=0.5/summary.json"
for f in sweep_val_accuracy sweep_train_loss; do
  check "sweep writes $f.png" test "$(png_size "$tmp/sw/$f.png")" = 1000x560
  check "sweep writes $f.svg" grep -q '</svg>' "$tmp/sw/$f.svg"
done
check "report.md has the table" grep -q '^| \*\*1\*\* | \*\*0\.' "$tmp/sw/report.md"
check "report.md embeds the charts" grep -q '!\[validation accuracy per epoch\](sweep_val_accuracy.png)' "$tmp/sw/report.md"
check "the sweep prints the best run" grep -q '^best learning_rate=' "$tmp/out"
# Progress lines carry the run's number (its directory's), in whatever
# order the runs finish.
nn -c "$tmp/base.ini" -o "$tmp/swn" --sweep optimizer.learning_rate=0.5,0.1,0.05 -j 3
k=0
for v in 0.5 0.1 0.05; do
  k=$((k + 1))
  check "sweep progress line [$k/3] is run $k's (learning_rate=$v)" \
    sh -c "grep -q '^\[$k/3\] learning_rate=$v: val ' '$tmp/err' && test -d '$tmp/swn/0$k-learning_rate=$v'"
done
sed 's/^seed = 11$/seed = 11\nthreads = 3/' "$tmp/base.ini" >"$tmp/thr.ini"
nn -q -c "$tmp/thr.ini" -o "$tmp/swt" --sweep train.epochs=1,2 -j 2
check "with -j 2 a thread count set in the config file stays" grep -q '"threads": 3' "$tmp/swt/01-epochs=1/summary.json"
printf '[sweep]\noptimizer.learning_rate = 0.5, 0.1\n' >>"$tmp/base.ini"
nn -q -c "$tmp/base.ini" -o "$tmp/sw2" --sweep train.seed=1,2
check "[sweep] and --sweep combine (4 runs)" test "$(wc -l <"$tmp/sw2/sweep.csv")" -eq 5
nn -q -c "$tmp/base.ini" -o "$tmp/sw3" --sweep optimizer.learning_rate=0.5,-1
check "a bad sweep value exits 2" test "$rc" -eq 2
check "a bad sweep value is reported before any run" test ! -e "$tmp/sw3/01-learning_rate=0.5"
check "a bad sweep value leaves no sweep directory" test ! -e "$tmp/sw3"
check "a bad sweep value names the run and the key" grep -q "learning_rate=-1.*out of range" "$tmp/err"
nn -q -c "$tmp/base.ini" --sweep learning_rate=1,2
check "a sweep key without a section exits 2" test "$rc" -eq 2
printf '[sweep]\nnosuch.key = 1, 2\n' >>"$tmp/base.ini"
nn -q -c "$tmp/base.ini" -o "$tmp/sw4"
check "a bad [sweep] key names file:line" grep -q "base.ini:20: sweep key 'nosuch.key'" "$tmp/err"

# ---- progress: a live bar on a terminal, plain lines otherwise
sed -i '/^\[sweep\]/,$d' "$tmp/base.ini"
if command -v script >/dev/null 2>&1; then
  script -qec "$NNRUN -c $tmp/base.ini -o $tmp/tty" /dev/null >"$tmp/tty.txt" 2>&1
  check "on a terminal a progress bar is drawn" grep -q 'eta' "$tmp/tty.txt"
fi
nn -c "$tmp/base.ini" -o "$tmp/notty"
check "off a terminal only the epoch lines" sh -c "! grep -q 'eta' '$tmp/err' && grep -q '^epoch   2  train loss' '$tmp/err'"

tap_end
