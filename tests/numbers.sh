#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# Never a silent wrong result (TAP): a run whose numbers stop being finite
# stops at once, saying where and why, and keeps its last good checkpoint;
# weights that are not finite are not evaluated; plugins that fail, fail
# without a message, make GSL fail, give a parameter a shape they did not
# declare or move it are named with the operation, epoch and batch (exit
# 3); an optimizer without a state operation is not resumed.  The faulty
# plugins are tests/fixtures/faulty*.c and nostate.c.
set -u
NNRUN=${NNRUN:-cli/nnrun}
DATA=${NN_TEST_DATA:-tests/data}
CONFIGS=${NN_SRCDIR:-.}/configs
FIX=${NN_FIXTURE_DIR:-tests/fixtures/.libs}
PLUGINS=${NN_PLUGIN_PATH:-plugins/.libs}
NN_PLUGIN_PATH=$FIX:$PLUGINS
export NN_PLUGIN_PATH
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"
# shellcheck source=tests/st_header.sh
. "$(dirname "$0")/st_header.sh"

# err_has TEXT: stderr holds TEXT (fixed string).
err_has() { grep -qF -- "$1" "$tmp/err"; }

# ---- a learning rate that makes the weights overflow.  With this seed
# epoch 0 ends with huge but finite weights and epoch 1 overflows: the run
# stops there, and last.safetensors stays epoch 0's.
mlp() { nn -q -c "$CONFIGS/mlp.ini" --set "data.dir=$DATA" "$@"; }
mlp --set optimizer.learning_rate=1e10 --set train.epochs=1 -o "$tmp/one"
check "one epoch at learning_rate 1e10 still finishes (got $rc)" test "$rc" -eq 0
mlp --set optimizer.learning_rate=1e10 --set train.epochs=2 -o "$tmp/huge"
check "at learning_rate 1e10 the run stops with exit 1 (got $rc)" test "$rc" -eq 1
check "the message names the epoch, batch, loss and the parameter" \
  err_has "nnrun: the training loss is NaN at epoch 1, batch 6: parameter W2 of twolayer is -inf at row 0, column 0"
check "and the likely cause" \
  err_has "likely cause: the updates diverged: try a smaller learning_rate"
check "nothing goes to stdout (no test line)" test ! -s "$tmp/out"
# (the headers differ: each records its own train.epochs)
tensors() { tail -c +$((9 + $(header_len "$1"))) "$1"; }
tensors "$tmp/one/last.safetensors" >"$tmp/one.bin"
tensors "$tmp/huge/last.safetensors" >"$tmp/huge.bin"
check "last.safetensors holds epoch 0's tensors, byte for byte" \
  cmp -s "$tmp/one.bin" "$tmp/huge.bin"
check "metrics.csv has epoch 0 only" \
  test "$(wc -l <"$tmp/huge/metrics.csv")" -eq 2
check "summary.json says the run failed" \
  grep -q '"status": *"failed"' "$tmp/huge/summary.json"
nn eval -c "$CONFIGS/mlp.ini" --set "data.dir=$DATA" \
  --weights "$tmp/huge/last.safetensors"
check "its last.safetensors loads and evaluates (got $rc)" test "$rc" -eq 0
mlp --set optimizer.learning_rate=1e10 --set train.epochs=2 --resume "$tmp/huge"
check "resumed as it was, it stops at the same place (got $rc)" \
  test "$rc" -eq 1
check "with the same message" \
  err_has "nnrun: the training loss is NaN at epoch 1, batch 6: parameter W2 of twolayer is -inf at row 0, column 0"
mlp --set optimizer.learning_rate=0.1 --set train.epochs=2 --resume "$tmp/huge"
check "a smaller learning rate is another run: resume refuses it (got $rc)" \
  test "$rc" -eq 2
check "naming the difference" err_has "optimizer.learning_rate"

# ---- eval of weights holding NaN: the first value of the data made NaN
# (a copy without its last.safetensors, which records best's hash).
cp "$tmp/one/best.safetensors" "$tmp/nan.safetensors"
hlen=$(od -An -tu8 -N8 "$tmp/nan.safetensors" | tr -d ' ')
printf '\000\000\000\000\000\000\370\177' |
  dd of="$tmp/nan.safetensors" bs=1 seek=$((8 + hlen)) conv=notrunc 2>/dev/null
nn eval -c "$CONFIGS/mlp.ini" --set "data.dir=$DATA" \
  --weights "$tmp/nan.safetensors"
check "eval of weights holding NaN exits 1 (got $rc)" test "$rc" -eq 1
check "naming the file and the tensor" \
  grep -q "nnrun: $tmp/nan.safetensors: tensor [A-Za-z0-9]* holds NaN at row 0, column 0: weights that are not finite cannot be evaluated" "$tmp/err"
check "and printing no result" test ! -s "$tmp/out"

# ---- the faulty model: a correct run first, then one fault at a time
cat >"$tmp/f.ini" <<INI
[data]
dir = $DATA
[train]
epochs = 2
batch_size = 8
seed = 3
[model]
type = faulty
[optimizer]
type = sgd
learning_rate = 0.1
INI
faulty() { nn -q -c "$tmp/f.ini" "$@"; }
faulty -o "$tmp/f-none"
check "the faulty model without a fault trains (got $rc)" test "$rc" -eq 0

faulty --set model.fault=nan_forward -o "$tmp/f-nan"
check "a forward that writes NaN stops the run with exit 1 (got $rc)" \
  test "$rc" -eq 1
check "the message names the batch and blames the plugin's forward" \
  err_has "nnrun: the training loss is NaN at epoch 0, batch 2: the parameters are finite (largest |value| 0.0452); likely cause: faulty's forward computed values that are not finite from them, a fault of the plugin"
check "no checkpoint was written" test ! -e "$tmp/f-nan/last.safetensors"

faulty --set model.fault=nan_forward --set model.at_epoch=1 -o "$tmp/f-nan1"
check "NaN in epoch 1: exit 1 (got $rc)" test "$rc" -eq 1
check "epoch 0's checkpoint is kept, epoch 1's not written" \
  grep -q '"epoch":"0"' "$tmp/f-nan1/last.safetensors"

faulty --set model.fault=silent_error -o "$tmp/f-silent"
check "a forward failing without a message exits 3 (got $rc)" test "$rc" -eq 3
check "the stand-in message names plugin.operation, epoch and batch" \
  err_has "nnrun: faulty.forward (epoch 0, batch 2): returned error 2 (NN_EINVAL) without a message"
faulty --set model.fault=silent_error --set model.in=backward \
  --set model.at_epoch=1 --set model.at_batch=5 -o "$tmp/f-silentb"
check "the same in backward, epoch 1: exit 3 (got $rc)" test "$rc" -eq 3
check "named faulty.backward (epoch 1, batch 5)" \
  err_has "nnrun: faulty.backward (epoch 1, batch 5): returned error 2 (NN_EINVAL) without a message"

faulty --set model.fault=gsl_error -o "$tmp/f-gsl"
check "a GSL error inside the plugin exits 3 (got $rc)" test "$rc" -eq 3
check "named with its context and GSL's reason" \
  err_has "nnrun: faulty.forward (epoch 0, batch 2): GSL error: invalid length"

faulty --set model.fault=wrong_shape -o "$tmp/f-shape"
check "a parameter of an undeclared shape exits 3 (got $rc)" test "$rc" -eq 3
check "the message names the plugin, the parameter shapes and the declaration" \
  err_has "nnrun: faulty.create: its parameters and state take 69072 bytes (W 784x11, b 1x10), but its memory operation declared 62800"
check "and nothing was written" test ! -e "$tmp/f-shape"

faulty --set model.fault=moving_param -o "$tmp/f-move"
check "a parameter moved to another matrix exits 3 (got $rc)" test "$rc" -eq 3
check "found after the epoch, named" \
  err_has "nnrun: faulty.params (after epoch 0): W is now another matrix than the one create made"

# ---- a layer of a network: TYPE[SECTION].OPERATION
cat >"$tmp/l.ini" <<INI
[data]
dir = $DATA
[train]
epochs = 1
batch_size = 8
[model]
type = sequential
[layer fc1]
type = dense
units = 16
[layer odd]
type = faulty_layer
at_batch = 4
[layer act]
type = relu
[layer out]
type = dense
units = 10
[optimizer]
type = sgd
INI
nn -q -c "$tmp/l.ini" -o "$tmp/l"
check "a layer failing without a message exits 3 (got $rc)" test "$rc" -eq 3
check "named faulty_layer[odd].backward (epoch 0, batch 4)" \
  err_has "nnrun: faulty_layer[odd].backward (epoch 0, batch 4): returned error 2 (NN_EINVAL) without a message"

# ---- an optimizer without a state operation cannot be resumed
nn -c "$tmp/f.ini" --set optimizer.type=nostate --set train.epochs=1 \
  -o "$tmp/ns"
check "an optimizer without a state operation trains (got $rc)" test "$rc" -eq 0
check "with a warning that the run cannot be resumed" \
  err_has "nnrun: warning: this run cannot be resumed: optimizer nostate has no state operation"
nn -q -c "$tmp/f.ini" --set optimizer.type=nostate --resume "$tmp/ns"
check "--resume with it exits 3 (got $rc)" test "$rc" -eq 3
check "saying why" \
  err_has "nnrun: optimizer nostate has no state operation, so a checkpoint cannot hold what it keeps between steps"
check "the run directory is left as it was" \
  test "$(wc -l <"$tmp/ns/metrics.csv")" -eq 2
nn -q -c "$tmp/f.ini" --set optimizer.type=adam --set train.epochs=1 \
  -o "$tmp/adam"
nn -q -c "$tmp/f.ini" --set optimizer.type=adam --resume "$tmp/adam"
check "adam, which has one, resumes (got $rc)" test "$rc" -eq 0
nn -q -c "$tmp/f.ini" --set optimizer.type=adam -o "$tmp/adam2"
check "to the run never interrupted, byte for byte" \
  cmp -s "$tmp/adam/last.safetensors" "$tmp/adam2/last.safetensors"

tap_end
