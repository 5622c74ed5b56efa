#!/usr/bin/python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Train nnrun's two models in PyTorch, the same way, and time the epochs.

Same models and hyper-parameters as configs/mlp.ini, configs/softmax.ini and
bench/deep.ini:
  twolayer  784-H-10, sigmoid hidden layer, biases start at 0
  softmax   scores = ReLU(X W1), W1 784x10, no bias
  deep      784-256-128-10, ReLU after each hidden layer, He initialisation,
            biases start at 0
weights start at 0.001 * N(0, 1); SGD, learning rate 0.1, L2 0.001 applied
as g += reg * W to weights only (torch's weight_decay on a parameter group
of the weights), batch 64, mean cross-entropy, the first 48,000 training
images train (pixels / 255), reshuffled every epoch.  The data is preloaded
as tensors, so an epoch's time is the training loop alone, like nnrun's
train_seconds.

--optim picks the optimizer, as nnrun's [optimizer] section would (OPTIMS
below lists each one's nnrun keys).  --opt KEY=VALUE, in nnrun's names,
sets a key: bench/run's optimizer section passes every key it gives nnrun
this way, so both sides train with its keys whatever OPTIMS says.
  sgd       the default above (configs/mlp.ini)
  momentum  sgd, momentum 0.9                      torch.optim.SGD
  nesterov  sgd, momentum 0.9, nesterov            torch.optim.SGD
  adam      learning rate 0.001, reg 0             torch.optim.Adam
  adamw     learning rate 0.001, weight_decay 0.01 torch.optim.AdamW
  rmsprop   learning rate 0.001, reg 0             torch.optim.RMSprop
A key left out takes nnrun's plugin default (README.md's configuration
reference), not torch's.  reg (sgd, adam, rmsprop: L2, g += reg * W) and
weight_decay (adamw: decoupled) go to torch's weight_decay on the weights'
parameter group only; the biases' group has none, as in nnrun.

For every thread count asked for, the script runs itself again in a child
process with torch.set_num_threads(n) and OPENBLAS_NUM_THREADS = n: torch's
matrix products run on OpenBLAS, whose own thread pool is sized from the
environment when it loads, and the two pools fighting over two cores made
the weight-gradient product 8x slower.  Each child runs a warm-up epoch and
then --epochs timed epochs, and prints one line:

  torch model=twolayer hidden=128 dtype=float32 optim=sgd threads=1 median=0.1790 min=... acc=...

(acc: the training accuracy of the last epoch, counted during it.)
bench/run parses these lines; it keeps the best thread setting.
Usage: bench/torch_mlp.py [--data DIR] [--model twolayer|softmax|deep]
                          [--hidden N] [--dtype float32|float64]
                          [--optim sgd|momentum|nesterov|adam|adamw|rmsprop]
                          [--opt KEY=VALUE]... [--threads 1,2] [--epochs N]
"""
import argparse
import os
import subprocess
import sys

from torch_timing import read_idx, time_epochs




# --optim NAME: nnrun's plugin and [optimizer] keys (bench/run's optimizer
# section uses the same and passes them again with --opt).
OPTIMS = {
    "sgd": ("sgd", {"learning_rate": 0.1, "reg": 0.001}),
    "momentum": ("sgd", {"learning_rate": 0.1, "reg": 0.001,
                         "momentum": 0.9}),
    "nesterov": ("sgd", {"learning_rate": 0.1, "reg": 0.001,
                         "momentum": 0.9, "nesterov": True}),
    "adam": ("adam", {"learning_rate": 0.001, "reg": 0.0}),
    "adamw": ("adamw", {"learning_rate": 0.001, "weight_decay": 0.01}),
    "rmsprop": ("rmsprop", {"learning_rate": 0.001, "reg": 0.0}),
}
# nnrun's plugin defaults (README.md): a key a run leaves out takes these.
PLUGIN_DEFAULTS = {
    "sgd": {"learning_rate": 0.1, "reg": 0.001, "momentum": 0.0,
            "nesterov": False},
    "adam": {"learning_rate": 0.001, "beta1": 0.9, "beta2": 0.999,
             "eps": 1e-8, "reg": 0.0},
    "adamw": {"learning_rate": 0.001, "beta1": 0.9, "beta2": 0.999,
              "eps": 1e-8, "weight_decay": 0.01},
    "rmsprop": {"learning_rate": 0.01, "alpha": 0.99, "eps": 1e-8,
                "momentum": 0.0, "reg": 0.0},
}


def optim_keys(args):
    """(plugin, nnrun keys) of --optim with --opt's overrides applied."""
    plugin, keys = OPTIMS[args.optim]
    keys = dict(PLUGIN_DEFAULTS[plugin], **keys)
    for item in args.opt:
        key, sep, value = item.partition("=")
        key = key.strip()
        if key.startswith("optimizer."):
            key = key[len("optimizer."):]
        if key == "type":
            if value.strip() != plugin:
                sys.exit("torch_mlp.py: --opt type=%s, but --optim %s is %s"
                         % (value.strip(), args.optim, plugin))
            continue
        if not sep or key not in PLUGIN_DEFAULTS[plugin]:
            sys.exit("torch_mlp.py: --opt %s: %s accepts %s" % (
                item, plugin, ", ".join(sorted(PLUGIN_DEFAULTS[plugin]))))
        if isinstance(PLUGIN_DEFAULTS[plugin][key], bool):
            keys[key] = value.strip().lower() in ("1", "true", "yes", "on")
        else:
            keys[key] = float(value)
    return plugin, keys


def make_optimizer(plugin, keys, weights, biases):
    """torch.optim's twin of nnrun's optimizer: decay on weights only."""
    decay = keys["weight_decay" if plugin == "adamw" else "reg"]
    groups = [{"params": weights, "weight_decay": decay}]
    if biases:
        groups.append({"params": biases, "weight_decay": 0.0})
    lr = keys["learning_rate"]
    if plugin == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=keys["momentum"],
                               nesterov=keys["nesterov"])
    if plugin in ("adam", "adamw"):
        cls = torch.optim.AdamW if plugin == "adamw" else torch.optim.Adam
        return cls(groups, lr=lr, betas=(keys["beta1"], keys["beta2"]),
                   eps=keys["eps"])
    return torch.optim.RMSprop(groups, lr=lr, alpha=keys["alpha"],
                               eps=keys["eps"], momentum=keys["momentum"])


def build(model, hidden, dtype, gen):
    """Parameters in nnrun's draw order; returns (weights, biases, forward)."""
    def gauss(*shape):
        return (0.001 * torch.randn(*shape, generator=gen, dtype=torch.float64)
                ).to(dtype).requires_grad_()

    if model == "twolayer":
        w1, w2 = gauss(784, hidden), gauss(hidden, 10)
        b1 = torch.zeros(hidden, dtype=dtype, requires_grad=True)
        b2 = torch.zeros(10, dtype=dtype, requires_grad=True)

        def forward(x):
            return torch.addmm(b2, torch.sigmoid(torch.addmm(b1, x, w1)), w2)
        return [w1, w2], [b1, b2], forward
    if model == "deep":
        def he(fan_in, fan_out):
            return ((2.0 / fan_in) ** 0.5 * torch.randn(
                fan_in, fan_out, generator=gen, dtype=torch.float64)
            ).to(dtype).requires_grad_()
        w1, w2, w3 = he(784, 256), he(256, 128), he(128, 10)
        b1, b2, b3 = (torch.zeros(k, dtype=dtype, requires_grad=True)
                      for k in (256, 128, 10))

        def forward(x):
            h = torch.relu(torch.addmm(b1, x, w1))
            h = torch.relu(torch.addmm(b2, h, w2))
            return torch.addmm(b3, h, w3)
        return [w1, w2, w3], [b1, b2, b3], forward
    w1 = gauss(784, 10)

    def forward(x):
        return torch.relu(x @ w1)
    return [w1], [], forward


def run(args, threads, x, y):
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(1024)
    weights, biases, forward = build(args.model, args.hidden, x.dtype, gen)
    opt = make_optimizer(*optim_keys(args), weights, biases)
    loss_fn = torch.nn.CrossEntropyLoss()
    return time_epochs(forward, opt, loss_fn, x, y, 64, args.epochs, gen)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--data", default=os.path.join(here, "..", "data"))
    p.add_argument("--model", default="twolayer",
                   choices=["twolayer", "softmax", "deep"])
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--dtype", default="float32",
                   choices=["float32", "float64"])
    p.add_argument("--optim", default="sgd", choices=sorted(OPTIMS))
    p.add_argument("--opt", action="append", default=[],
                   metavar="KEY=VALUE",
                   help="an nnrun [optimizer] key for --optim (repeatable)")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--epochs", type=int, default=5)
    args = p.parse_args()
    optim_keys(args)  # a wrong --opt fails here, before any child starts
    if not args.child:
        rc = 0
        for threads in args.threads.split(","):
            env = dict(os.environ, OPENBLAS_NUM_THREADS=threads,
                       OMP_NUM_THREADS=threads)
            argv = [sys.executable, os.path.abspath(__file__), "--child",
                    "--threads", threads, "--data", args.data,
                    "--model", args.model, "--hidden", str(args.hidden),
                    "--dtype", args.dtype, "--epochs", str(args.epochs),
                    "--optim", args.optim]
            for item in args.opt:
                argv += ["--opt", item]
            rc |= subprocess.call(argv, env=env)
        return rc

    global np, torch
    import numpy as np
    import torch
    images = read_idx(os.path.join(args.data, "train-images-idx3-ubyte"))
    labels = read_idx(os.path.join(args.data, "train-labels-idx1-ubyte"))
    n_train = int(images.shape[0] * 0.8)
    dtype = getattr(torch, args.dtype)
    x = torch.from_numpy(images[:n_train].reshape(n_train, -1).astype(
        np.float64) / 255.0).to(dtype).contiguous()
    y = torch.from_numpy(labels[:n_train].astype(np.int64))
    for threads in [int(t) for t in args.threads.split(",")]:
        med, best, acc = run(args, threads, x, y)
        print("torch model=%s hidden=%d dtype=%s optim=%s threads=%d "
              "median=%.4f min=%.4f acc=%.4f" % (
                  args.model, args.hidden if args.model == "twolayer" else 0,
                  args.dtype, args.optim, threads, med, best, acc))
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
