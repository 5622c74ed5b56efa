#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# End-to-end tests of the nnrun command line (TAP output for automake).
# Each broken config must exit with the documented status and a message that
# names the file and line; a good run must write metrics.csv and the test
# line.  Runs on the shipped MNIST fixture (tests/data), no network.
set -u
NNRUN=${NNRUN:-cli/nnrun}
DATA=${NN_TEST_DATA:-tests/data}
FIX=${NN_FIXTURE_DIR:-tests/fixtures/.libs}
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"

# run NAME EXPECTED_STATUS PATTERN_IN_STDERR ARGS...
run() {
  name=$1 want=$2 pat=$3
  shift 3
  "$NNRUN" "$@" >"$tmp/out" 2>"$tmp/err"
  got=$?
  if [ "$got" -ne "$want" ]; then
    not_ok "$name (exit $got, expected $want)"
  elif [ -n "$pat" ] && ! grep -q -- "$pat" "$tmp/err"; then
    not_ok "$name (stderr lacks '$pat')"
  else
    ok "$name"
  fi
}

# A small valid config on the fixture; tests break one thing at a time.
good() {
  cat <<INI
[data]
dir = $DATA
format = idx

[train]
epochs = 2
batch_size = 32
seed = 5

[model]
type = twolayer
hidden_size = 16

[optimizer]
type = sgd
learning_rate = 0.1
reg = 0.001
INI
}
good >"$tmp/good.ini"

run "--help exits 0 and documents exit codes" 0 "" --help
check "--help text lists exit statuses" grep -q "Exit status" "$tmp/out"
run "--version exits 0" 0 "" --version
check "--version names the ABI" grep -q "plugin ABI" "$tmp/out"
run "--list-plugins exits 0" 0 "" --list-plugins
for p in softmax twolayer sgd; do
  check "--list-plugins shows $p" grep -q "^$p " "$tmp/out"
done
run "no config is a usage error" 2 "no configuration" 
run "unknown option is a usage error" 2 "" --frobnicate
run "stray argument is a usage error" 2 "unexpected argument" -c "$tmp/good.ini" extra

# Broken configs: exit 2 and FILE:LINE in the message.
sed 's/^learning_rate/learing_rate/' "$tmp/good.ini" >"$tmp/typo.ini"
run "unknown key names file:line and accepted keys" 2 "typo.ini:16: unknown key 'learing_rate'" -c "$tmp/typo.ini"
check "unknown key lists accepted keys" grep -q "learning_rate, reg, momentum" "$tmp/err"
sed 's/^epochs = 2/epochs = two/' "$tmp/good.ini" >"$tmp/type.ini"
run "wrong type names file:line" 2 "type.ini:6: \[train\] epochs = 'two': expected an integer" -c "$tmp/type.ini"
sed 's/^learning_rate = 0.1/learning_rate = -1/' "$tmp/good.ini" >"$tmp/range.ini"
run "out-of-range value names file:line" 2 "range.ini:16: \[optimizer\] learning_rate = -1 is out of range" -c "$tmp/range.ini"
sed 's/^hidden_size = 16/hidden_size = 0/' "$tmp/good.ini" >"$tmp/hidden.ini"
run "plugin option out of range" 2 "hidden.ini:12:" -c "$tmp/hidden.ini"
sed 's/^type = twolayer/type = threelayer/' "$tmp/good.ini" >"$tmp/plugin.ini"
run "unknown plugin names file:line and lists models" 2 "plugin.ini:11: \[model\] type = threelayer" -c "$tmp/plugin.ini"
check "unknown plugin lists the plugin files, closest first" grep -q "available: twolayer, .*dense" "$tmp/err"
sed 's/^type = twolayer/type = sgd/' "$tmp/good.ini" >"$tmp/kind.ini"
run "optimizer as model is refused" 3 "kind.ini:11:" -c "$tmp/kind.ini"
run "missing config file names the path tried" 2 "nope.ini.: No such file" -c "$tmp/../nope.ini"
run "missing relative config file" 2 "cannot open config file 'nope.ini' (tried /" -c nope.ini
check "missing config names the shipped configs' directory too" grep -q "then the shipped configs: /.*/nope.ini)" "$tmp/err"
sed 's/^format = idx/format = png/' "$tmp/good.ini" >"$tmp/format.ini"
run "bad data format names file:line" 2 "format.ini:3: \[data\] format = png" -c "$tmp/format.ini"
sed "s|^dir = .*|dir = $tmp/nodata|" "$tmp/good.ini" >"$tmp/nodata.ini"
run "missing data exits 1 naming the paths tried" 1 "nodata.ini:2: \[data\] dir = .*train-images-idx3-ubyte" -c "$tmp/nodata.ini"
check "missing data names the fetch command for that directory" grep -q "fetch MNIST into it with: .*/data/get_data.sh $tmp/nodata\$" "$tmp/err"
printf '[train]\nepochs = 2\n[trian]\nx = 1\n' >"$tmp/section.ini"
run "unknown section names file:line" 2 "section.ini:3: unknown section \[trian\]" -c "$tmp/section.ini"
printf '[train]\nepochs\n' >"$tmp/syntax.ini"
run "syntax error names file:line" 2 "syntax.ini:2: syntax error" -c "$tmp/syntax.ini"
sed '/^type = sgd/d' "$tmp/good.ini" >"$tmp/notype.ini"
run "missing plugin type" 2 "\[optimizer\] needs 'type'" -c "$tmp/notype.ini"
run "--set is validated like the file" 2 "--set: \[optimizer\] reg = 'lots'" -c "$tmp/good.ini" --set optimizer.reg=lots
run "--set needs SECTION.KEY=VALUE" 2 "expected SECTION.KEY=VALUE" -c "$tmp/good.ini" --set reg=1
sed "s|^type = twolayer|type = $FIX/bad_major.so|; /^hidden_size/d" "$tmp/good.ini" >"$tmp/abi.ini"
run "plugin for another ABI exits 3 with both versions" 3 "ABI [0-9]*\.[0-9]*; this nnrun supports ABI [0-9]*\.[0-9]*" -c "$tmp/abi.ini"

# Good runs.
run "twolayer trains on the fixture" 0 "epoch   1" -c "$tmp/good.ini" -o "$tmp/run1"
tail -n 1 "$tmp/out" >"$tmp/last"
check "last stdout line is the test line" grep -Eqx 'test loss=[0-9.]+ accuracy=[0-9.]+ best_epoch=[01]' "$tmp/last"
head -n 1 "$tmp/run1/metrics.csv" >"$tmp/header"
check "metrics.csv header" grep -qx 'epoch,train_loss,train_accuracy,val_loss,val_accuracy,train_seconds,lr' "$tmp/header"
check "metrics.csv has one row per epoch" test "$(wc -l <"$tmp/run1/metrics.csv")" -eq 3
cp "$tmp/out" "$tmp/out1"
run "same seed, same result" 0 "" -q -c "$tmp/good.ini" -o "$tmp/run2"
check "-q prints nothing on stderr" test ! -s "$tmp/err"
check "same seed gives the same test line" cmp -s "$tmp/out" "$tmp/out1"
cut -d, -f1-5 "$tmp/run1/metrics.csv" >"$tmp/m1"; cut -d, -f1-5 "$tmp/run2/metrics.csv" >"$tmp/m2"
check "same seed gives bit-identical metrics" cmp -s "$tmp/m1" "$tmp/m2"
run "keys are checked against the chosen plugin" 2 "unknown key 'hidden_size' in \[model\]; softmax accepts: type" -q -c "$tmp/good.ini" --set model.type=softmax
sed '/^hidden_size/d' "$tmp/good.ini" >"$tmp/soft.ini"
run "softmax on csv data" 0 "" -q -c "$tmp/soft.ini" -o "$tmp/run4" --set data.format=csv --set model.type=softmax
(cd "$tmp" && "$NNRUN" -q -c good.ini >/dev/null 2>&1 && "$NNRUN" -q -c good.ini >/dev/null 2>&1)
check "default output dirs are fresh per run" test -f "$tmp/runs/good-1/metrics.csv" -a -f "$tmp/runs/good-2/metrics.csv"
: >"$tmp/blocker"
run "unwritable output dir is a runtime error" 1 "blocker" -q -c "$tmp/good.ini" -o "$tmp/blocker/out"

tap_end
