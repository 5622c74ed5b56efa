#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# Beyond one process (TAP): data-parallel training under mpirun (two ranks
# reproduce themselves bit for bit, with shared memory or messages alike,
# end close to the one-process run, follow
# a learning-rate schedule batch by batch as one process does, stop
# together with one message, catch ranks that diverge or train another run,
# survive a dead rank through --resume, with the number of ranks changed
# too), a sweep spread over the ranks, and a sweep run by run
# (--sweep-run, then collect).  The MPI tests are skipped in a build
# without MPI; --sweep-run and collect need none.  Uses the MNIST subset
# in tests/data.
set -u
NNRUN=${NNRUN:-cli/nnrun}
DATA=${NN_TEST_DATA:-tests/data}
KILLAT=${NN_FIXTURE_DIR:-tests/fixtures/.libs}/killat.so
MPIRUN=${MPIRUN:-mpirun}
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"

# Enough epochs for the model to learn (so the runs differ), few examples.
cat >"$tmp/base.ini" <<INI
[data]
dir = $DATA

[train]
epochs = 5
batch_size = 50
seed = 7
threads = 1

[model]
type = twolayer
hidden_size = 32

[optimizer]
type = sgd
learning_rate = 0.5
INI
cp "$tmp/base.ini" "$tmp/sweep.ini"
printf '%s\n' '[sweep]' 'optimizer.learning_rate = 0.1, 0.5' \
  'model.hidden_size = 16, 32' >>"$tmp/sweep.ini"

# mp N ARGS...: nnrun on N ranks, output as nn's.
mp() {
  np=$1
  shift
  "$MPIRUN" -np "$np" --oversubscribe "$NNRUN" "$@" >"$tmp/out" 2>"$tmp/err"
  rc=$?
}
# The per-epoch numbers of a metrics.csv, without the times.
numbers() { cut -d, -f1-5 "$1"; }
# sweep.csv without the seconds column (two axes: field 7).
results() { cut -d, -f1-6,8- "$1"; }
# test accuracy from a `test loss=... accuracy=A ...` line in $tmp/out.
accuracy() { sed -n 's/.*accuracy=\([0-9.]*\).*/\1/p' "$tmp/out"; }
# messages: the lines nnrun itself wrote on stderr (not mpirun's).
messages() { grep -c '^nnrun: ' "$tmp/err"; }

# ---------------------------------------------------------------- sweep-run
nn -q -c "$tmp/sweep.ini" -o "$tmp/ref"
check "a sweep in one process (the reference)" test "$rc" -eq 0
for i in 1 2 3; do nn -q -c "$tmp/sweep.ini" --sweep-run "$i" -o "$tmp/arr"; done
check "--sweep-run runs one run into its directory" \
  test "$rc" -eq 0 -a -f "$tmp/arr/03-learning_rate=0.5-hidden_size=16/summary.json" \
  -a ! -e "$tmp/arr/04-learning_rate=0.5-hidden_size=32"
nn collect "$tmp/arr"
check "collect with a run missing fails and lists it as not finished" \
  sh -c "test $rc -eq 1 && grep -q 'not finished' '$tmp/arr/report.md' &&
         grep -q '1 of 4 sweep runs have not finished' '$tmp/err'"
nn -q -c "$tmp/sweep.ini" --sweep-run 4 -o "$tmp/arr"
cp "$tmp/arr/04-learning_rate=0.5-hidden_size=32/summary.json" "$tmp/summary4"
nn -c "$tmp/sweep.ini" --sweep-run 4 -o "$tmp/arr"
check "a finished run started again does nothing" \
  sh -c "test $rc -eq 0 && grep -q 'finished already' '$tmp/err' &&
         cmp -s '$tmp/summary4' '$tmp/arr/04-learning_rate=0.5-hidden_size=32/summary.json'"
nn collect "$tmp/arr"
results "$tmp/ref/sweep.csv" >"$tmp/ref.csv"
results "$tmp/arr/sweep.csv" >"$tmp/arr.csv"
check "collect writes the sweep's sweep.csv, report and charts" \
  sh -c "test $rc -eq 0 && cmp -s '$tmp/ref.csv' '$tmp/arr.csv' &&
         test -f '$tmp/arr/report.md' -a -f '$tmp/arr/sweep_val_accuracy.png'"
nn -c "$tmp/sweep.ini" --sweep-run 5 -o "$tmp/arr"
check "--sweep-run past the last run is a usage error" \
  sh -c "test $rc -eq 2 && grep -q 'the sweep has 4 runs' '$tmp/err'"

# ---------------------------------------------------------------- MPI
if [ "${NN_MPI:-no}" != yes ] || ! command -v "$MPIRUN" >/dev/null 2>&1; then
  for t in reproduce shared close losses schedule stop diverged plan setup resume resume1 dead signal sweep; do
    n=$((n + 1))
    echo "ok $n - # SKIP $t: nnrun built without MPI"
  done
  tap_end
  exit $?
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

nn -q -c "$tmp/base.ini" -o "$tmp/one"
acc1=$(accuracy)
mp 2 -q -c "$tmp/base.ini" -o "$tmp/a"
acc2=$(accuracy)
mp 2 -q -c "$tmp/base.ini" -o "$tmp/b"
numbers "$tmp/a/metrics.csv" >"$tmp/a.csv"
numbers "$tmp/b/metrics.csv" >"$tmp/b.csv"
check "two ranks reproduce themselves bit for bit" \
  sh -c "test $rc -eq 0 && cmp -s '$tmp/a.csv' '$tmp/b.csv' &&
         cmp -s '$tmp/a/best.safetensors' '$tmp/b/best.safetensors' &&
         cmp -s '$tmp/a/last.safetensors' '$tmp/b/last.safetensors'"
# The ranks share this machine: their steps trade gradients through shared
# memory.  By messages instead (NN_MPI_SHARED_MEMORY=0), the bits are the
# same.
export NN_MPI_SHARED_MEMORY=0
mp 2 -q -c "$tmp/base.ini" -o "$tmp/msg"
unset NN_MPI_SHARED_MEMORY
numbers "$tmp/msg/metrics.csv" >"$tmp/msg.csv"
check "shared memory and messages give two ranks the same bits" \
  sh -c "test $rc -eq 0 && cmp -s '$tmp/a.csv' '$tmp/msg.csv' &&
         cmp -s '$tmp/a/last.safetensors' '$tmp/msg/last.safetensors'"
# Only the order of additions differs from one process: the same epochs,
# losses equal to about 1e-12, the same test accuracy give or take an
# example.
check "two ranks end where one process does (accuracy $acc2 vs $acc1)" \
  awk -v a="$acc1" -v b="$acc2" 'BEGIN { d = a - b; exit !(a > 0.5 && d * d < 0.0001) }'
check "two ranks' per-epoch losses are the one-process run's to 1e-9" \
  awk -F, 'NR == FNR { l[$1] = $2; next }
           FNR > 1 { d = l[$1] - $2; if (d * d > 1e-18) bad = 1; m++ }
           END { exit bad || m != 5 }' "$tmp/one/metrics.csv" "$tmp/a/metrics.csv"

# A cosine schedule whose warm-up sets the rate every batch: each rank
# steps with the one-process run's rate, batch by batch.
cp "$tmp/base.ini" "$tmp/cos.ini"
printf '%s\n' '[schedule]' 'type = cosine' 'T_max = 3' 'eta_min = 0.01' \
  'warmup_epochs = 2' 'warmup_per_batch = true' >>"$tmp/cos.ini"
nn -q -c "$tmp/cos.ini" -o "$tmp/cos1"
mp 2 -q -c "$tmp/cos.ini" -o "$tmp/cosa"
rca=$rc
mp 2 -q -c "$tmp/cos.ini" -o "$tmp/cosb"
cut -d, -f1-5,7 "$tmp/cosa/metrics.csv" >"$tmp/cosa.csv"
cut -d, -f1-5,7 "$tmp/cosb/metrics.csv" >"$tmp/cosb.csv"
cut -d, -f1,7 "$tmp/cos1/metrics.csv" >"$tmp/cos1.lr"
cut -d, -f1,7 "$tmp/cosa/metrics.csv" >"$tmp/cosa.lr"
check "two ranks under a cosine schedule reproduce themselves, with the one-process run's lr column and losses" \
  sh -c "test $rca -eq 0 -a $rc -eq 0 && cmp -s '$tmp/cosa.csv' '$tmp/cosb.csv' &&
         cmp -s '$tmp/cosa/last.safetensors' '$tmp/cosb/last.safetensors' &&
         cmp -s '$tmp/cos1.lr' '$tmp/cosa.lr' &&
         awk -F, 'NR == FNR { l[\$1] = \$2; next }
                  FNR > 1 { d = l[\$1] - \$2; if (d * d > 1e-18) bad = 1; m++ }
                  END { exit bad || m != 5 }' '$tmp/cos1/metrics.csv' '$tmp/cosa/metrics.csv'"

mp 2 -c "$tmp/base.ini" --set optimizer.learning_rate=1e200 -o "$tmp/nan"
check "a non-finite loss stops every rank at the same step, one message" \
  sh -c "test $rc -ne 0 && test \$(grep -c 'training loss is' '$tmp/err') -eq 1"

"$MPIRUN" --oversubscribe -np 1 "$NNRUN" -q -c "$tmp/base.ini" -o "$tmp/div" : \
  -np 1 "$NNRUN" -q -c "$tmp/base.ini" --set optimizer.learning_rate=0.4 \
  -o "$tmp/div" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "ranks whose weights differ at a checkpoint stop with an error" \
  sh -c "test $rc -ne 0 && grep -q 'after epoch 0 rank 1 holds other weights' '$tmp/err' &&
         test ! -f '$tmp/div/last.safetensors'"

"$MPIRUN" --oversubscribe -np 1 "$NNRUN" -q -c "$tmp/base.ini" -o "$tmp/plan" : \
  -np 1 "$NNRUN" -q -c "$tmp/base.ini" --set train.batch_size=40 \
  -o "$tmp/plan" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "a rank with another config is refused before training" \
  sh -c "test $rc -ne 0 && grep -q 'rank 1 trains another run' '$tmp/err'"

"$MPIRUN" --oversubscribe -np 1 "$NNRUN" -q -c "$tmp/base.ini" -o "$tmp/setup" : \
  -np 1 "$NNRUN" -q -c "$tmp/base.ini" --set data.dir="$tmp/nowhere" \
  -o "$tmp/setup" >"$tmp/out" 2>"$tmp/err"
rc=$?
check "a rank that cannot load its data stops the job, named, once" \
  sh -c "test $rc -ne 0 && test \$(grep -c '^nnrun: rank 1: .*not found' '$tmp/err') -eq 1"

mp 2 -q -c "$tmp/base.ini" --set train.epochs=2 -o "$tmp/res"
mp 2 -q -c "$tmp/base.ini" --resume "$tmp/res"
check "a two-rank run resumed on two ranks is the uninterrupted one" \
  sh -c "test $rc -eq 0 && cmp -s '$tmp/a/best.safetensors' '$tmp/res/best.safetensors' &&
         cmp -s '$tmp/a/last.safetensors' '$tmp/res/last.safetensors'"
mp 2 -q -c "$tmp/base.ini" --set train.epochs=2 -o "$tmp/res1"
nn -q -c "$tmp/base.ini" --resume "$tmp/res1"
check "a two-rank run resumes in one process" \
  sh -c "test $rc -eq 0 && test \$(wc -l <'$tmp/res1/metrics.csv') -eq 6"

# Rank 0 killed while it saves epoch 1 (its 5th rename in the run
# directory): the job ends; the run resumes from its last checkpoint.
"$MPIRUN" --oversubscribe -np 2 env LD_PRELOAD="$KILLAT" NN_KILL_AT=rename:5 \
  NN_KILL_DIR="$tmp/dead" "$NNRUN" -q -c "$tmp/base.ini" -o "$tmp/dead" \
  >"$tmp/out" 2>"$tmp/err"
rc=$?
dead_rc=$rc
mp 2 -q -c "$tmp/base.ini" --resume "$tmp/dead"
check "a dead rank ends the job (exit $dead_rc); --resume finishes the run" \
  sh -c "test $dead_rc -ne 0 && test $rc -eq 0 &&
         cmp -s '$tmp/a/best.safetensors' '$tmp/dead/best.safetensors'"

# SIGTERM to mpirun reaches every rank, maybe at different steps: they
# stop together at one batch, rank 0 checkpoints there, and the resumed
# run is the uninterrupted one.
long="--set train.epochs=40 --set train.batch_size=8 --set model.hidden_size=64"
# shellcheck disable=SC2086
mp 2 -q -c "$tmp/base.ini" $long -o "$tmp/sigref"
# shellcheck disable=SC2086
"$MPIRUN" -np 2 --oversubscribe "$NNRUN" -c "$tmp/base.ini" $long -o "$tmp/sig" \
  >"$tmp/out" 2>"$tmp/err" &
pid=$!
while [ ! -s "$tmp/sig/metrics.csv" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
kill -TERM "$pid"
wait "$pid"
cp "$tmp/err" "$tmp/sigerr"
# shellcheck disable=SC2086
mp 2 -q -c "$tmp/base.ini" $long --resume "$tmp/sig"
check "SIGTERM stops the ranks together at one batch; resumed, the run is the uninterrupted one" \
  sh -c "test $rc -eq 0 && grep -q 'interrupted at epoch' '$tmp/sigerr' &&
         cmp -s '$tmp/sig/best.safetensors' '$tmp/sigref/best.safetensors' &&
         cmp -s '$tmp/sig/last.safetensors' '$tmp/sigref/last.safetensors'"

mp 2 -q -c "$tmp/sweep.ini" -o "$tmp/dsw"
results "$tmp/dsw/sweep.csv" >"$tmp/dsw.csv"
check "a sweep on two ranks writes the one-process sweep's results" \
  sh -c "test $rc -eq 0 && cmp -s '$tmp/ref.csv' '$tmp/dsw.csv' &&
         test -f '$tmp/dsw/report.md' -a -f '$tmp/dsw/sweep_train_loss.png' &&
         test -f '$tmp/dsw/04-learning_rate=0.5-hidden_size=32/log.txt'"

tap_end
