#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# Fault injection (TAP): a run killed at each rename and each fsync of its
# writes resumes to exactly the files of a run never interrupted, with no
# temporary file left and best/last agreeing; damaged checkpoint metadata
# is refused (exit 1) naming the file and the field; the run lock and the
# removal of dead writers' temporary files.  The kills come from
# tests/fixtures/killat.so (LD_PRELOAD).  Uses the MNIST subset in
# tests/data.
set -u
NNRUN=${NNRUN:-cli/nnrun}
DATA=${NN_TEST_DATA:-tests/data}
KILLAT=${NN_FIXTURE_DIR:-tests/fixtures/.libs}/killat.so
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"
# shellcheck source=tests/st_header.sh
. "$(dirname "$0")/st_header.sh"

unwrap_nnrun

# Three epochs of which the last is not the best: every kind of epoch end
# (best rewritten or not) and a best epoch that is not the last.
three_epoch_ini "$tmp/base.ini"

# same_run DIR1 DIR2: metrics.csv equal but for the seconds column, and
# both checkpoints byte for byte.
same_run() {
  cut -d, -f1-5 "$1/metrics.csv" >"$tmp/m1" 2>/dev/null
  cut -d, -f1-5 "$2/metrics.csv" >"$tmp/m2" 2>/dev/null
  cmp -s "$tmp/m1" "$tmp/m2" && cmp -s "$1/last.safetensors" "$2/last.safetensors" &&
    cmp -s "$1/best.safetensors" "$2/best.safetensors"
}
# no_temp DIR: no temporary file of an atomic write in DIR.
no_temp() { test -z "$(find "$1" -name '*.tmp[0-9]*')"; }

# ---- the uninterrupted run, its calls counted by the shim
env LD_PRELOAD="$KILLAT" NN_KILL_DIR="$tmp/clean" NN_KILL_LOG="$tmp/calls" \
  "$NNRUN" -q -c "$tmp/base.ini" -o "$tmp/clean" >"$tmp/clean.out" 2>"$tmp/err"
check "the uninterrupted run (under the shim) exits 0" test $? -eq 0
check "its best epoch is not its last" grep -q 'best_epoch=1$' "$tmp/clean.out"
nn eval -c "$tmp/base.ini" --weights "$tmp/clean/best.safetensors"
check "eval of its best.safetensors (checked against last) exits 0" test "$rc" -eq 0
grep '^rename ' "$tmp/calls" | sed 's|^rename .*/||' >"$tmp/renames" # file names
renames=$(wc -l <"$tmp/renames")
fsyncs=$(grep -c '^fsync ' "$tmp/calls")
# Per epoch metrics, best (epochs 0 and 1), last, summary, two curves; then
# the finished summary.
check "the shim counted every rename ($renames)" test "$renames" -eq 18
check "and a file and a directory fsync for each ($fsyncs)" test "$fsyncs" -eq 36

# ---- a kill at every rename and every fsync, then --resume
ahead_at=0 # the last rename of a last.safetensors right after a best's
for kind in rename fsync; do
  count=$renames
  [ "$kind" = fsync ] && count=$fsyncs
  i=1
  while [ "$i" -le "$count" ]; do
    d=$tmp/$kind-$i
    env LD_PRELOAD="$KILLAT" NN_KILL_DIR="$d" NN_KILL_AT="$kind:$i" \
      "$NNRUN" -q -c "$tmp/base.ini" -o "$d" >/dev/null 2>"$tmp/err"
    killed=$?
    what="killed at $kind $i of $count"
    # Killed between writing best and last: eval says so rather than
    # evaluate a best.safetensors that the last.safetensors next to it
    # does not record.
    if [ "$kind" = rename ] && [ -e "$d/last.safetensors" ] &&
      [ "$(sed -n "${i}p" "$tmp/renames")" = last.safetensors ] &&
      [ "$(sed -n "$((i - 1))p" "$tmp/renames")" = best.safetensors ]; then
      ahead_at=$i
      nn eval -c "$tmp/base.ini" --weights "$d/best.safetensors"
      check "$what (best written, last not): eval exits 1" test "$rc" -eq 1
      check "$what: eval says the run was interrupted" grep -q "interrupted while saving; finish it with --resume $d" "$tmp/err"
    fi
    nn -q -c "$tmp/base.ini" --resume "$d"
    if [ "$killed" -ne 137 ]; then
      not_ok "$what: the run was not killed (exit $killed)"
    elif [ "$rc" -ne 0 ]; then
      not_ok "$what: --resume exits $rc"
    elif ! cmp -s "$tmp/out" "$tmp/clean.out"; then
      not_ok "$what: the resumed run's test line differs"
    elif ! same_run "$tmp/clean" "$d"; then
      not_ok "$what: metrics or checkpoints differ from the uninterrupted run's"
    elif ! no_temp "$d"; then
      not_ok "$what: a temporary file is left: $(ls "$d")"
    else
      # Both checkpoints are the uninterrupted run's, byte for byte, whose
      # agreement eval checked above: so these agree too.
      ok "$what: resumes to the uninterrupted run's files, no temporary file, best and last agree"
    fi
    i=$((i + 1))
  done
done

# ---- killed between best and last of epoch 1: that epoch must run again
d=$tmp/ahead
env LD_PRELOAD="$KILLAT" NN_KILL_DIR="$d" NN_KILL_AT="rename:$ahead_at" \
  "$NNRUN" -q -c "$tmp/base.ini" -o "$d" >/dev/null 2>&1
nn -q -c "$tmp/base.ini" --resume "$d" --set train.epochs=1
check "a resume that would not run that epoch again exits 2" test "$rc" -eq 2
check "and says which epochs it needs" grep -q "$d was stopped while saving epoch 1, which must run again: resume with train.epochs >= 2 (the config has 1)" "$tmp/err"
nn -q -c "$tmp/base.ini" --resume "$d"
check "the same directory then resumes to the uninterrupted run" same_run "$tmp/clean" "$d"

# ---- damaged metadata in last.safetensors (a run with 2 of 3 epochs done)
nn -q -c "$tmp/base.ini" --set train.epochs=2 -o "$tmp/part"
check "a 2-epoch run to damage exits 0" test "$rc" -eq 0

# refused NAME KEY VALUE PATTERN: --resume of a copy of the run with KEY
# set to VALUE in last.safetensors exits 1 with PATTERN on stderr.
case_n=0
refused() {
  case_n=$((case_n + 1))
  d=$tmp/damaged-$case_n
  cp -R "$tmp/part" "$d"
  set_meta "$d/last.safetensors" "$2" "$3"
  nn -q -c "$tmp/base.ini" --resume "$d"
  if [ "$rc" -ne 1 ]; then
    not_ok "$1: --resume exits $rc, not 1"
  elif ! grep -q "$d/last.safetensors: metadata '$2'" "$tmp/err" &&
    ! grep -q "$d/last.safetensors.*'$2'" "$tmp/err"; then
    not_ok "$1: the message does not name last.safetensors and '$2'"
  elif ! grep -q -- "$4" "$tmp/err"; then
    not_ok "$1: the message lacks '$4'"
  else
    ok "$1 is refused (exit 1) naming the file and '$2'"
  fi
}
# The untouched copy resumes: the edits, not the copying, are refused.
cp -R "$tmp/part" "$tmp/intact"
set_meta "$tmp/intact/last.safetensors" epoch "$(get_meta "$tmp/part/last.safetensors" epoch)"
nn -q -c "$tmp/base.ini" --resume "$tmp/intact"
check "a copy rewritten by set_meta with the same values resumes" test "$rc" -eq 0
check "and ends as the uninterrupted run" same_run "$tmp/clean" "$tmp/intact"

refused "epoch = -1" epoch -1 'expected an epoch number'
refused "epoch = 18446744073709551615" epoch 18446744073709551615 'expected an epoch number'
refused "epoch = two" epoch two 'expected an epoch number'
refused "epoch = 01" epoch 01 'expected an epoch number'
refused "an empty epoch" epoch '' 'expected an epoch number'
refused "epoch past metrics.csv" epoch 7 "is 7, but .*/metrics.csv has only 2 epochs"
refused "best_epoch after epoch" best_epoch 2 "after the checkpoint's epoch 1"
refused "best_epoch = -2" best_epoch -2 'an epoch number, or -1 for none'
refused "best_epoch naming another epoch than best.safetensors" best_epoch 0 'disagree with'
refused "best_val_accuracy = nan" best_val_accuracy nan 'a finite accuracy in \[0, 1\]'
refused "best_val_accuracy = inf" best_val_accuracy inf 'a finite accuracy in \[0, 1\]'
refused "best_val_accuracy = 1.5" best_val_accuracy 1.5 'a finite accuracy in \[0, 1\]'
refused "best_val_accuracy = -0.25" best_val_accuracy -0.25 'a finite accuracy in \[0, 1\]'
refused "best_val_accuracy = 0.5x" best_val_accuracy 0.5x 'a finite accuracy in \[0, 1\]'
refused "best_fnv1a64 of other bytes" best_fnv1a64 0123456789abcdef 'is not the best epoch'
refused "best_fnv1a64 = xyz" best_fnv1a64 xyz '16 hex digits'
rng=$(get_meta "$tmp/part/last.safetensors" rng_state)
check "the RNG state is MT19937's 5000 bytes" test ${#rng} -eq 10000
refused "a short rng_state" rng_state "${rng%??}" 'has 9998 hex digits; expected 10000'
refused "a non-hex rng_state" rng_state "g${rng#?}" 'not lowercase hex'
zeros=$(awk 'BEGIN { for (i = 0; i < 9984; i++) printf "0" }')
refused "an all-zero rng_state" rng_state "$zeros$(printf '%s' "$rng" | cut -c9985-)" 'all-zero MT19937 state'
refused "an rng_state past its block" rng_state "$(printf '%s' "$rng" | cut -c1-9984)71020000$(printf '%s' "$rng" | cut -c9993-)" 'at word 625; expected 0..624'
refused "an rng_state word of 40 bits" rng_state "$(printf '%s' "$rng" | cut -c1-8)01$(printf '%s' "$rng" | cut -c11-)" 'word 0 has more than 32 bits'

# A missing field, and a best.safetensors that is not the one last records.
d=$tmp/nofield
cp -R "$tmp/part" "$d"
rewrite_header "$d/last.safetensors" 's/"epoch":/"epoxh":/'
nn -q -c "$tmp/base.ini" --resume "$d"
check "a last.safetensors without 'epoch' exits 1" test "$rc" -eq 1
check "and says which field is missing" grep -q "$d/last.safetensors: not an nnrun checkpoint (no metadata 'epoch')" "$tmp/err"

d=$tmp/otherbest
cp -R "$tmp/part" "$d"
set_meta "$d/best.safetensors" val_accuracy 0.5
nn -q -c "$tmp/base.ini" --resume "$d"
check "a best.safetensors changed after last recorded it: --resume exits 1" test "$rc" -eq 1
check "and names both files and the hash" grep -q "$d/best.safetensors (epoch 1, FNV-1a [0-9a-f]*) is not the best epoch $d/last.safetensors records (epoch 1, metadata 'best_fnv1a64'" "$tmp/err"
nn eval -c "$tmp/base.ini" --weights "$d/best.safetensors"
check "eval of that best.safetensors exits 1" test "$rc" -eq 1
check "eval names the mismatch" grep -q "is not the best epoch" "$tmp/err"
nn eval -c "$tmp/base.ini" --weights "$d/last.safetensors"
check "eval of its last.safetensors still works" test "$rc" -eq 0
# The optimizer-state list names the tensors eval skips; ",,," names
# only empty ones, which skip nothing: the momentum tensors are then
# strays, an error.
cp "$d/last.safetensors" "$tmp/state-list.safetensors"
set_meta "$tmp/state-list.safetensors" nnrun.optimizer_state ",,,"
nn eval -c "$tmp/base.ini" --weights "$tmp/state-list.safetensors"
check "eval with an optimizer-state list of empty names exits 2 (got $rc)" test "$rc" -eq 2
check "and names a state tensor as not the model's" grep -q "state-list.safetensors: tensor '.*' is not a parameter of the model" "$tmp/err"
set_meta "$d/best.safetensors" val_accuracy 2
nn -q -c "$tmp/base.ini" --resume "$d"
check "best.safetensors' val_accuracy is checked too" grep -q "$d/best.safetensors: metadata 'val_accuracy' is \"2\"; expected a finite accuracy" "$tmp/err"
rm "$d/best.safetensors"
nn -q -c "$tmp/base.ini" --resume "$d"
check "a missing best.safetensors: exit 1" test "$rc" -eq 1
check "a missing best.safetensors is named" grep -q "records best epoch 1, but $d/best.safetensors is missing" "$tmp/err"

# ---- the directory: dead writers' temporary files go, live ones stay
d=$tmp/debris
cp -R "$tmp/part" "$d"
# shellcheck disable=SC2016 # the child shell's own $$
sh -c 'echo $$ >"$1"' sh "$tmp/deadpid"
dead=$(cat "$tmp/deadpid")
printf 'half' >"$d/last.safetensors.tmp$dead.0badf00d"
printf 'half' >"$d/metrics.csv.tmp$$.0badf00d"
nn -q -c "$tmp/base.ini" --resume "$d"
check "a resume with debris exits 0" test "$rc" -eq 0
check "it removes a dead writer's temporary file" test ! -e "$d/last.safetensors.tmp$dead.0badf00d"
check "it keeps a live process's temporary file" test -e "$d/metrics.csv.tmp$$.0badf00d"
check "and ends as the uninterrupted run" same_run "$tmp/clean" "$d"
check "a run's directory holds its lock file with its process id" grep -q '^[0-9][0-9]*$' "$d/run.lock"

# ---- one process per run directory
if command -v flock >/dev/null 2>&1; then
  d=$tmp/locked
  cp -R "$tmp/part" "$d"
  flock "$d/run.lock" sleep 5 &
  holder=$!
  i=0
  while flock -n "$d/run.lock" true 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
  nn -q -c "$tmp/base.ini" --resume "$d"
  kill "$holder" 2>/dev/null
  wait "$holder" 2>/dev/null
  check "a run directory in use is refused (exit 1)" test "$rc" -eq 1
  check "the refusal names the directory and the lock" grep -q "$d is in use by another nnrun (process .*, holding $d/run.lock)" "$tmp/err"
  check "the refused run changed nothing" same_run "$tmp/part" "$d"
fi

# ---- killed before the first checkpoint, with and without run.lock
d=$tmp/early
mkdir "$d"
head -n 2 "$tmp/clean/metrics.csv" >"$d/metrics.csv"
nn -q -c "$tmp/base.ini" --resume "$d"
check "a directory with metrics.csv but no checkpoint starts over (exit 0)" test "$rc" -eq 0
check "and ends as the uninterrupted run" same_run "$tmp/clean" "$d"
mkdir "$tmp/bare"
nn -q -c "$tmp/base.ini" --resume "$tmp/bare"
check "a directory without any run file is still refused (exit 2)" test "$rc" -eq 2

tap_end
