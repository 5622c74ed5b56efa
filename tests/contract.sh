#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# `nnrun check-plugin`: every shipped plugin passes the contract checks,
# and each fixture plugin fails exactly the check it was written to fail
# (TAP output for automake).
set -u
NNRUN=${NNRUN:-cli/nnrun}
FIX=${NN_FIXTURE_DIR:-tests/fixtures/.libs}
NN_PLUGIN_PATH=${NN_PLUGIN_PATH:-plugins/.libs}
export NN_PLUGIN_PATH
PLUGINS=${NN_PLUGIN_PATH%%:*} # the built plugins: the path's first dir
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"

# check_plugin NAME|PATH: run it, keeping status, stdout and stderr.
check_plugin() {
  "$NNRUN" check-plugin "$1" >"$tmp/out" 2>"$tmp/err"
  got=$?
}

# The checks that failed, by name, sorted, on one line.
failed_checks() {
  awk '$1 == "FAIL" { print $2 }' "$tmp/out" | sort | tr '\n' ' ' | sed 's/ $//'
}

# Every shipped plugin passes: exit 0, no FAIL line, the summary says so.
found=0
for so in "$PLUGINS"/*.so; do
  [ -f "$so" ] || continue
  name=$(basename "$so" .so)
  found=$((found + 1))
  check_plugin "$name"
  if [ "$got" -ne 0 ]; then
    not_ok "$name passes check-plugin (exit $got)"
  elif ! grep -q "^check-plugin: $name (" "$tmp/out" ||
       ! grep -Eq '^[0-9]+ checks, 0 failed$' "$tmp/out"; then
    not_ok "$name passes check-plugin (no header or summary line)"
  else
    ok "$name passes check-plugin"
  fi
done
check "shipped plugins found in $PLUGINS" test "$found" -gt 0
for name in softmax twolayer sgd; do
  check "$name is among them" test -f "$PLUGINS/$name.so"
done
check_plugin softmax
for c in create names gradient shapes determinism state errors silent; do
  check "softmax: check '$c' is reported" grep -q "^ok  *$c  " "$tmp/out"
done

# expect_fail FIXTURE "CHECKS": exit 3 and exactly these checks FAIL.
expect_fail() {
  check_plugin "$FIX/$1.so"
  failed=$(failed_checks)
  if [ "$got" -ne 3 ]; then
    not_ok "$1 fails check-plugin with exit 3 (exit $got)"
  elif [ "$failed" != "$2" ]; then
    not_ok "$1 fails exactly: $2 (failed: $failed)"
  else
    ok "$1 fails exactly: $2"
  fi
}
expect_fail wrong_grad "gradient"
check "wrong_grad: the detail names the parameter and both values" \
  grep -Eq '^FAIL  gradient .*w\[0,[0-9]+\]: analytic .*numeric ' "$tmp/out"
expect_fail unstable_shapes "shapes"
check "unstable_shapes: the detail blames params()" \
  grep -q '^FAIL  shapes .*params()' "$tmp/out"
expect_fail prints "errors silent"
check "prints: silent shows what was printed" \
  grep -q '^FAIL  silent .*prints: bad batch shape' "$tmp/out"
check "prints: errors says the message is missing" \
  grep -q '^FAIL  errors .*without a message' "$tmp/out"
check "prints: nothing reaches the terminal" test ! -s "$tmp/err"
expect_fail hidden_state "state"
check "hidden_state: the detail names the epoch where the rates part" \
  grep -q '^FAIL  state .*restoring the state of epoch 11: epoch 12 batch 0' "$tmp/out"
expect_fail slot_order "determinism"
check "slot_order: the detail says threads changed the bits" \
  grep -q '^FAIL  determinism .*with threads lent' "$tmp/out"
check_plugin plateau
for c in create names rates determinism state errors silent; do
  check "plateau: check '$c' is reported" grep -q "^ok  *$c  " "$tmp/out"
done
check "plateau: its four state matrices are named" \
  grep -q '^ok  *names .*plateau.lr, plateau.best, plateau.bad_epochs, plateau.cooldown' "$tmp/out"

# Refused by the loader: exit 3 and its message, naming plugin and key.
check_plugin "$FIX/bad_decl.so"
check "bad_decl exits 3 (got $got)" test "$got" -eq 3
check "bad_decl: the loader names the duplicate key" \
  grep -q "plugin 'bad_decl' declares the option 'scale' twice" "$tmp/err"
check_plugin "$FIX/bad_major.so"
check "a plugin for another ABI exits 3 (got $got)" test "$got" -eq 3

check_plugin no_such_plugin
check "an unknown name exits 2 (got $got)" test "$got" -eq 2
check "an unknown name lists what is available" grep -q "available: " "$tmp/err"
"$NNRUN" check-plugin >"$tmp/out" 2>"$tmp/err"
got=$?
check "check-plugin without a name is a usage error (got $got)" test "$got" -eq 2

tap_end
