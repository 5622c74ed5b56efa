#!/usr/bin/python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Train configs/cnn.ini's network in PyTorch, the same way, and time the epochs.

The network, layer for layer as in configs/cnn.ini:
  conv 3x3, padding 1, C1 filters -> ReLU -> max pool 2x2
  conv 3x3, padding 1, C2 filters -> ReLU -> max pool 2x2
  flatten -> dropout 0.25 -> dense to HIDDEN units -> ReLU -> dropout 0.5
  (these three left out with --hidden 0) -> dense to 10 scores
He initialisation (std sqrt(2 / fan_in)) for the convolutions and the
hidden dense layer, Glorot (Xavier) normal for the last, biases start at 0; Adam, learning
rate 0.001, no weight decay; batch 64, mean cross-entropy, the first
48,000 training images train (pixels / 255, as 1x28x28 images),
reshuffled every epoch.  The data is preloaded as tensors, so an epoch's
time is the training loop alone, like nnrun's train_seconds.

For every thread count asked for, the script runs itself again in a child
process with torch.set_num_threads(n) and OPENBLAS_NUM_THREADS =
OMP_NUM_THREADS = n (a thread pool is sized from the environment when its
library loads).  Each child runs a warm-up epoch, then --epochs timed
epochs, and prints one line:

  torch model=cnn c1=16 c2=32 hidden=128 dtype=float32 threads=1 median=... min=... acc=...

(acc: the training accuracy of the last epoch, counted during it.)
bench/run parses these lines and keeps the best thread setting.
Usage: bench/torch_cnn.py [--data DIR] [--c1 N] [--c2 N] [--hidden N]
                          [--batch N] [--dtype float32|float64]
                          [--threads 1,2] [--epochs N]
"""
import argparse
import os
import subprocess
import sys

from torch_timing import read_idx, time_epochs




def build(args, dtype, gen):
    """Parameters (weights, biases) and the forward function."""
    def normal(std, *shape):
        return (std * torch.randn(*shape, generator=gen, dtype=torch.float64)
                ).to(dtype).requires_grad_()

    def zeros(n):
        return torch.zeros(n, dtype=dtype, requires_grad=True)

    c1, c2, hidden = args.c1, args.c2, args.hidden
    w1 = normal((2.0 / 9) ** 0.5, c1, 1, 3, 3)
    w2 = normal((2.0 / (9 * c1)) ** 0.5, c2, c1, 3, 3)
    flat = c2 * 7 * 7
    dims = [flat, hidden, 10] if hidden else [flat, 10]
    dense = [normal((2.0 / a) ** 0.5, b, a) for a, b in zip(dims, dims[1:-1])]
    dense.append(normal((2.0 / (dims[-2] + dims[-1])) ** 0.5, 10, dims[-2]))
    biases = [zeros(c1), zeros(c2)] + [zeros(b) for b in dims[1:]]
    weights = [w1, w2] + dense

    def forward(x):
        h = F.max_pool2d(F.relu(F.conv2d(x, w1, biases[0], padding=1)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, w2, biases[1], padding=1)), 2)
        h = h.flatten(1)
        for k, w in enumerate(dense):
            if k + 1 < len(dense):
                h = F.dropout(F.relu(F.linear(F.dropout(h, 0.25), w,
                                              biases[2 + k])), 0.5)
            else:
                h = F.linear(h, w, biases[2 + k])
        return h
    return weights, biases, forward


def run(args, threads, x, y):
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(1024)
    weights, biases, forward = build(args, x.dtype, gen)
    opt = torch.optim.Adam(weights + biases, lr=0.001)
    return time_epochs(forward, opt, F.cross_entropy, x, y, args.batch,
                       args.epochs, gen)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--data", default=os.path.join(here, "..", "data"))
    p.add_argument("--c1", type=int, default=16)
    p.add_argument("--c2", type=int, default=32)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dtype", default="float32",
                   choices=["float32", "float64"])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    if not args.child:
        rc = 0
        for threads in args.threads.split(","):
            env = dict(os.environ, OPENBLAS_NUM_THREADS=threads,
                       OMP_NUM_THREADS=threads)
            argv = [sys.executable, os.path.abspath(__file__), "--child",
                    "--threads", threads, "--data", args.data,
                    "--c1", str(args.c1), "--c2", str(args.c2),
                    "--hidden", str(args.hidden), "--batch", str(args.batch),
                    "--dtype", args.dtype, "--epochs", str(args.epochs)]
            rc |= subprocess.call(argv, env=env)
        return rc

    global np, torch, F
    import numpy as np
    import torch
    import torch.nn.functional as F
    images = read_idx(os.path.join(args.data, "train-images-idx3-ubyte"))
    labels = read_idx(os.path.join(args.data, "train-labels-idx1-ubyte"))
    n_train = int(images.shape[0] * 0.8)
    dtype = getattr(torch, args.dtype)
    x = torch.from_numpy(images[:n_train].astype(np.float64) / 255.0).to(
        dtype).reshape(n_train, 1, 28, 28).contiguous()
    y = torch.from_numpy(labels[:n_train].astype(np.int64))
    for threads in [int(t) for t in args.threads.split(",")]:
        med, best, acc = run(args, threads, x, y)
        print("torch model=cnn c1=%d c2=%d hidden=%d dtype=%s threads=%d "
              "median=%.4f min=%.4f acc=%.4f" % (
                  args.c1, args.c2, args.hidden, args.dtype, threads, med,
                  best, acc))
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
