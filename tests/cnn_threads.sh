#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# A convolutional network gives the same bits on one thread and on
# several (TAP): conv2d, maxpool2d and relu spread each batch over the
# threads [train] threads lends them, and a run with threads = 1, 2 or 3
# must write the same checkpoints.  Part of `make check-threads`, so that
# ThreadSanitizer sees the layers' tasks run on the pool.
set -u
NNRUN=${NNRUN:-nncore/nnrun}
DATA=${NN_TEST_DATA:-tests/data}
CONFIGS=${NN_SRCDIR:-.}/configs
# shellcheck source=tests/tap.sh
. "$(dirname "$0")/tap.sh"

# cnn THREADS DIR: configs/cnn.ini with 4 and 8 filters, 2 epochs of the
# fixture, on THREADS threads, into DIR.
cnn() {
  "$NNRUN" -q -o "$2" -c "$CONFIGS/cnn.ini" --set "data.dir=$DATA" \
    --set 'layer conv1.out_channels=4' --set 'layer conv2.out_channels=8' \
    --set train.epochs=2 --set train.batch_size=32 \
    --set "train.threads=$1" >"$2.out" 2>"$2.err"
}

for k in 1 2 3; do
  cnn "$k" "$tmp/t$k"
  check "cnn.ini (small) on $k thread(s) exits 0" test $? -eq 0
done
for k in 2 3; do
  check "$k threads write one thread's last.safetensors" \
    cmp -s "$tmp/t1/last.safetensors" "$tmp/t$k/last.safetensors"
  check "$k threads print one thread's test line" \
    cmp -s "$tmp/t1.out" "$tmp/t$k.out"
done
tap_end
