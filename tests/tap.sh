# SPDX-License-Identifier: GPL-3.0-or-later
# shellcheck shell=sh
# Shared by the shell tests (sourced): TAP output and a scratch directory.
# Sets $tmp (removed on exit); `ok`, `not_ok` and `check` print TAP lines,
# `nn` runs $NNRUN, and `tap_end` prints the plan and sets the exit status.  A failing test
# shows the last command's stderr ($tmp/err) and stdout ($tmp/out).
tmp=$(mktemp -d /tmp/nn_test_XXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
  n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"
  sed 's/^/# /' "$tmp/err" "$tmp/out" 2>/dev/null | head -20
}
# check NAME COMMAND...: passes when COMMAND succeeds.
check() {
  name=$1
  shift
  if "$@"; then ok "$name"; else not_ok "$name"; fi
}
# nn ARGS...: run $NNRUN (set by the test) with ARGS, stdout to $tmp/out,
# stderr to $tmp/err; sets $rc.
nn() {
  "$NNRUN" "$@" >"$tmp/out" 2>"$tmp/err"
  rc=$?
}
# not_finished DIR: the run in DIR has not finished (summary.json, rewritten
# after every epoch, does not say "finished").
not_finished() { ! grep -q '"status": "finished"' "$1/summary.json" 2>/dev/null; }
tap_end() {
  echo "1..$n"
  [ "$fails" -eq 0 ]
}
# unwrap_nnrun: in a build tree $NNRUN is libtool's wrapper script, which
# takes longer to start than a small run and is not the process that
# trains (the tests that signal or time it need that one): point NNRUN at
# the program behind it, with the library path the wrapper would set.
unwrap_nnrun() {
  real_nnrun=$(dirname "$NNRUN")/.libs/$(basename "$NNRUN")
  if [ -x "$real_nnrun" ] && grep -q 'libtool' "$NNRUN" 2>/dev/null; then
    libdir=$(sed -n 's/^ *LD_LIBRARY_PATH="\([^:"]*\):.*/\1/p' "$NNRUN" | head -n 1)
    if [ -n "$libdir" ]; then
      LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
      export LD_LIBRARY_PATH
      NNRUN=$real_nnrun
    fi
  fi
}
# kill_after_first_epoch PID DIR [TICKS]: kill -9 the run PID (writing into
# DIR) once its first epoch is saved, and reap it.  metrics.csv appears when
# the first epoch ends and its checkpoint follows (best.safetensors, then
# last.safetensors), so both are waited for; at most TICKS hundredths of a
# second (default 3000), and not after the run has ended on its own.
kill_after_first_epoch() {
  i=0
  while ! { [ -f "$2/metrics.csv" ] && [ -f "$2/last.safetensors" ]; } &&
    kill -0 "$1" 2>/dev/null && [ $i -lt "${3:-3000}" ]; do
    sleep 0.01
    i=$((i + 1))
  done
  kill -9 "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}

# three_epoch_ini FILE [LEARNING_RATE]: a small run on the fixture data in
# $DATA (three epochs; at the default rate 2 the last is not the best), for
# the tests that kill, signal or resume runs.
three_epoch_ini() {
  cat >"$1" <<INI
[data]
dir = $DATA

[train]
epochs = 3
batch_size = 8
seed = 11

[model]
type = twolayer
hidden_size = 16

[optimizer]
type = sgd
learning_rate = ${2:-2}
momentum = 0.5
INI
}
