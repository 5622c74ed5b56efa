# SPDX-License-Identifier: GPL-3.0-or-later
"""What bench/torch_mlp.py and bench/torch_cnn.py share: reading MNIST's
IDX files and timing training epochs the way nnrun's train_seconds counts
them (the training loop alone, the data preloaded as tensors)."""
import statistics
import struct
import time


def read_idx(path):
    """An IDX file as a numpy array of its dimensions (uint8 values)."""
    import numpy as np
    with open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndims = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndims, data[4:4 + 4 * ndims])
    return np.frombuffer(data, dtype=np.uint8,
                         offset=4 + 4 * ndims).reshape(dims)


def time_epochs(forward, opt, loss_fn, x, y, batch, epochs, gen):
    """A warm-up epoch, then `epochs` timed ones, each over x in a fresh
    order drawn from gen, in batches of `batch`.  Returns the median and
    the fastest epoch's seconds, and the last epoch's training accuracy
    (counted during it)."""
    import torch
    n = x.shape[0]
    times, acc = [], 0.0
    for epoch in range(epochs + 1):  # epoch 0 is the warm-up
        order = torch.randperm(n, generator=gen)
        t0 = time.perf_counter()
        hits = 0
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            xb, yb = x[idx], y[idx]
            scores = forward(xb)
            loss = loss_fn(scores, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hits += int((scores.argmax(1) == yb).sum())
        dt = time.perf_counter() - t0
        acc = hits / n
        if epoch > 0:
            times.append(dt)
    return statistics.median(times), min(times), acc
