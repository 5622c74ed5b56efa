#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# Guard rails around plugins (TAP): a mistyped plugin name loads nothing,
# plugin files other users could replace are refused, a plugin that
# crashes is named with the operation it was in, and a model too large for
# the memory is refused before anything is allocated.
set -u
NNRUN=${NNRUN:-cli/nnrun}
DATA=${NN_TEST_DATA:-tests/data}
CONFIGS=${NN_SRCDIR:-.}/configs
FIX=${NN_FIXTURE_DIR:-tests/fixtures/.libs}
PLUGINS=${NN_PLUGIN_PATH:-plugins/.libs}
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"
# Crashing on purpose must not leave core files behind.
# shellcheck disable=SC3045
ulimit -c 0 2>/dev/null

# run [VAR=VALUE...] COMMAND ARGS...: stdout to $tmp/out, stderr to
# $tmp/err, the exit status (128 + N for signal N) in $rc.
run() {
  env "$@" >"$tmp/out" 2>"$tmp/err"
  rc=$?
}

# err_has TEXT: stderr holds TEXT (fixed string).
err_has() { grep -qF -- "$1" "$tmp/err"; }

# skip NAME: a test that cannot run here.
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP"; }

# ---- a typo in `type` loads nothing; names come from the file names
mkdir "$tmp/p"
cp "$FIX/marker.so" "$tmp/p/marker.so"
marker=$tmp/marker-was-loaded
run NN_TEST_MARKER="$marker" NN_PLUGIN_PATH="$tmp/p:$PLUGINS" \
  "$NNRUN" -q -c "$CONFIGS/mlp.ini" --set "data.dir=$DATA" \
  --set model.type=twolayr -o "$tmp/typo"
check "a mistyped model type exits 2 (got $rc)" test "$rc" -eq 2
check "it suggests the closest name" err_has "did you mean 'twolayer'?"
check "it lists the plugin files by name, closest first" \
  grep -q "available: twolayer, .*marker" "$tmp/err"
check "no library on the path was loaded (the marker's constructor did not run)" \
  test ! -e "$marker"
check "nothing was written for the run" test ! -e "$tmp/typo"
# The fixture works: listing loads every plugin, and says so.
run NN_TEST_MARKER="$marker" NN_PLUGIN_PATH="$tmp/p:$PLUGINS" \
  "$NNRUN" --list-plugins
check "--list-plugins does load them (the marker appears)" test -e "$marker"
check "--list-plugins says it loaded them" err_has "loaded every plugin file"
run "$NNRUN" --help
check "--help says --list-plugins loads every plugin" \
  grep -q "loads every plugin on the path" "$tmp/out"
rm -f "$marker"

# ---- plugin files others could replace are refused before loading
w=$tmp/w
mkdir "$w"
cp "$PLUGINS/twolayer.so" "$w/twolayer.so"
chmod 755 "$w" "$w/twolayer.so"
describe() {
  run NN_PLUGIN_PATH="$w:$PLUGINS" "$@" "$NNRUN" --describe \
    -c "$CONFIGS/mlp.ini"
}
describe
check "a private copy of twolayer.so loads (got $rc)" test "$rc" -eq 0
check "the copy is the one used" grep -qF "$w/twolayer.so" "$tmp/out"
chmod 777 "$w/twolayer.so"
describe
check "a world-writable plugin file exits 3 (got $rc)" test "$rc" -eq 3
check "the message names the file and why" \
  err_has "refusing to load plugin $w/twolayer.so: the file $w/twolayer.so is world-writable"
check "the message says how to load it anyway" \
  err_has "NN_PLUGIN_ALLOW_WRITABLE=1"
describe NN_PLUGIN_ALLOW_WRITABLE=1
check "NN_PLUGIN_ALLOW_WRITABLE=1 loads it (got $rc)" test "$rc" -eq 0
chmod 755 "$w/twolayer.so"
chmod 777 "$w"
describe
check "a world-writable plugin directory exits 3 (got $rc)" test "$rc" -eq 3
check "the message names the directory and why" \
  err_has "the directory $w is world-writable without the sticky bit"
chmod 1777 "$w"
describe
check "a world-writable directory with the sticky bit is fine (got $rc)" \
  test "$rc" -eq 0
chmod 777 "$w"
cp "$FIX/marker.so" "$w/marker.so"
chmod 755 "$w/marker.so"
run NN_TEST_MARKER="$marker" NN_PLUGIN_PATH="$w" "$NNRUN" --list-plugins
check "--list-plugins does not load from a world-writable directory" \
  test ! -e "$marker"
check "--list-plugins says why those files are unusable" \
  grep -q "world-writable" "$tmp/out"
rm -f "$w/marker.so"
chmod 755 "$w"
if [ "$(id -u)" -eq 0 ] && chown 65534 "$w/twolayer.so" 2>/dev/null; then
  describe
  check "a plugin owned by another user exits 3 (got $rc)" test "$rc" -eq 3
  check "the message names the owner" err_has "is owned by user 65534"
else
  skip "a plugin owned by another user (needs root, and a chown that works)"
  skip "the message names the owner"
fi

# ---- a plugin that crashes is named, and the process dies of the signal
cat >"$tmp/crash.ini" <<EOF
[data]
dir = $DATA
[train]
epochs = 1
[model]
type = crash
[optimizer]
type = sgd
EOF
for op in forward create; do
  run NN_PLUGIN_PATH="$FIX:$PLUGINS" "$NNRUN" -q -c "$tmp/crash.ini" \
    --set "model.crash_in=$op" -o "$tmp/crash-$op"
  check "a crash in $op dies of SIGSEGV (status $rc, expected 139)" \
    test "$rc" -eq 139
  check "the message names the plugin and $op" \
    err_has "nnrun: plugin 'crash' crashed in $op (SIGSEGV)"
done

# ---- memory up front: refused at once, naming what is needed and what
# there is.  Under an address-space limit (8 GiB), so that a check that
# let a model through could not exhaust the machine either.
# limited COMMAND...: run under an 8 GiB address-space limit.
# shellcheck disable=SC3045 # ulimit -v: dash and bash have it
limited() {
  rm -f "$tmp/rc"
  (ulimit -v 8388608 && run "$@" && echo "$rc" >"$tmp/rc")
  rc=$(cat "$tmp/rc" 2>/dev/null || echo "no ulimit -v")
}
if [ "${NN_SANITIZERS:-no}" != no ]; then
  for t in "hidden_size = 1000000 exits 2" "at once: before the run directory is made" \
    "the message" "dense units = 1000000 exits 2" "the message names fc1" \
    "an address-space limit is named"; do
    skip "$t (ulimit -v cannot run under ASan or TSan)"
  done
else
  limited "$NNRUN" -q -c "$CONFIGS/mlp.ini" \
    --set "data.dir=$DATA" --set model.hidden_size=1000000 -o "$tmp/big"
  check "hidden_size = 1000000 exits 2 (got $rc)" test "$rc" -eq 2
  check "at once: before the run directory is made" test ! -e "$tmp/big"
  check "the message names the need, the model and the memory" \
    grep -q "mlp.ini:[0-9]*: this run needs about [0-9.]* GiB of memory (model twolayer: [0-9.]* GiB.*physical memory" "$tmp/err"
  limited "$NNRUN" -q -c "$CONFIGS/mlp_layers.ini" \
    --set "data.dir=$DATA" --set "layer fc1.units=1000000" -o "$tmp/big"
  check "dense units = 1000000 exits 2 (got $rc)" test "$rc" -eq 2
  check "the message names fc1, the layer to make smaller" \
    grep -q "mlp_layers.ini:[0-9]*: this run needs about .*layer fc1 (dense) [0-9.]* GiB" "$tmp/err"
  # 100000 hidden units need about 3 GiB: over a 2 GiB limit.
  rm -f "$tmp/rc"
  # shellcheck disable=SC3045
  (ulimit -v 2097152 && run "$NNRUN" -q -c "$CONFIGS/mlp.ini" \
    --set "data.dir=$DATA" --set model.hidden_size=100000 -o "$tmp/big" &&
    echo "$rc" >"$tmp/rc")
  rc=$(cat "$tmp/rc" 2>/dev/null || echo "no ulimit -v")
  check "an address-space limit (ulimit -v) is named (got $rc)" \
    err_has "the address-space limit of 2.0 GiB (RLIMIT_AS"
fi
check "no run directory was made for a refused model" test ! -e "$tmp/big"
# What fits still trains, under the same limit.
if [ "${NN_SANITIZERS:-no}" = no ]; then
  limited "$NNRUN" -q -c "$CONFIGS/mlp.ini" \
    --set "data.dir=$DATA" --set train.epochs=1 -o "$tmp/fits"
  check "a model that fits trains under the limit (got $rc)" test "$rc" -eq 0
fi

tap_end
