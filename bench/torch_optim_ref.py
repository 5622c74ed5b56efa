#!/usr/bin/python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""PyTorch's optimizers on fixed gradients: the reference that
tests/check_optim.c holds nnrun's optimizer plugins to.

Run with Debian's python3-torch (torch 1.13):

    /usr/bin/python3 bench/torch_optim_ref.py > tests/data/optim_ref.txt

Each case runs one torch.optim optimizer (single-tensor path, float64) for
STEPS steps on a 3x4 weight W, decayed (L2 or weight decay), and a 1x4
bias b, never decayed, and prints their final values.  Initial values and
gradients come from formulas of the step and the element's index, which the
C test evaluates the same way (the same libm), so it needs no RNG and no
PyTorch:

    W[i] = 0.5 * cos(1.3 i + 0.2)     i = 0 .. 11 (row-major)
    b[j] = 0.25 * sin(0.9 j + 0.4)    j = 0 .. 3
    grad at step s (1 .. STEPS) of element i (W: 0 .. 11, b: 12 .. 15):
        sin(0.37 s + 0.11 i) * (1 + 0.1 i)

PyTorch's CPU kernels fuse some multiply-adds and the plugins round every
operation on its own, so the two agree to a few ulps (at most 7e-15
relative here), not bit for bit; the C test allows 1e-12.

A case lists nnrun's option keys.  An option a case leaves out takes the
plugin's default in C and torch's default here, so the reference also holds
the plugins' defaults to PyTorch's.
"""

import math
import sys

import torch

STEPS = 50
W_ROWS, W_COLS, B_COLS = 3, 4, 4

# name, plugin, nnrun options (key: value)
CASES = [
    ("sgd", "sgd", {"learning_rate": 0.05, "reg": 0.01}),
    ("sgd_momentum", "sgd",
     {"learning_rate": 0.05, "reg": 0.01, "momentum": 0.9}),
    ("sgd_nesterov", "sgd",
     {"learning_rate": 0.05, "reg": 0.01, "momentum": 0.9, "nesterov": True}),
    ("adam", "adam", {"learning_rate": 0.01, "reg": 0.01}),
    ("adam_betas", "adam",
     {"learning_rate": 0.02, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6,
      "reg": 0.05}),
    ("adamw", "adamw", {"learning_rate": 0.01, "weight_decay": 0.1}),
    ("adamw_default", "adamw", {}),
    ("rmsprop", "rmsprop", {"learning_rate": 0.01, "reg": 0.01}),
    ("rmsprop_momentum", "rmsprop",
     {"learning_rate": 0.005, "alpha": 0.9, "eps": 1e-6, "momentum": 0.9,
      "reg": 0.01}),
]


def initial():
    w = [0.5 * math.cos(1.3 * i + 0.2) for i in range(W_ROWS * W_COLS)]
    b = [0.25 * math.sin(0.9 * j + 0.4) for j in range(B_COLS)]
    return w, b


def grad(step, i):
    return math.sin(0.37 * step + 0.11 * i) * (1 + 0.1 * i)


def make_optimizer(plugin, opts, w, b):
    """The torch.optim optimizer of one case: decay on w's group only."""
    kw = {"foreach": False}
    if "learning_rate" in opts:
        kw["lr"] = opts["learning_rate"]
    decay_key = "weight_decay" if plugin == "adamw" else "reg"
    groups = [{"params": [w]}, {"params": [b], "weight_decay": 0.0}]
    if decay_key in opts:
        groups[0]["weight_decay"] = opts[decay_key]
    if plugin == "sgd":
        kw["momentum"] = opts.get("momentum", 0.0)
        kw["nesterov"] = opts.get("nesterov", False)
        return torch.optim.SGD(groups, **kw)
    if plugin in ("adam", "adamw"):
        if "beta1" in opts or "beta2" in opts:
            kw["betas"] = (opts["beta1"], opts["beta2"])
        if "eps" in opts:
            kw["eps"] = opts["eps"]
        cls = torch.optim.AdamW if plugin == "adamw" else torch.optim.Adam
        return cls(groups, **kw)
    if plugin == "rmsprop":
        for key in ("alpha", "eps", "momentum"):
            if key in opts:
                kw[key] = opts[key]
        return torch.optim.RMSprop(groups, **kw)
    raise ValueError(plugin)


def run(plugin, opts):
    w0, b0 = initial()
    w = torch.tensor(w0, dtype=torch.float64).reshape(W_ROWS, W_COLS)
    b = torch.tensor(b0, dtype=torch.float64).reshape(1, B_COLS)
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = make_optimizer(plugin, opts, w, b)
    nw = W_ROWS * W_COLS
    for step in range(1, STEPS + 1):
        w.grad = torch.tensor([grad(step, i) for i in range(nw)],
                              dtype=torch.float64).reshape(W_ROWS, W_COLS)
        b.grad = torch.tensor([grad(step, nw + j) for j in range(B_COLS)],
                              dtype=torch.float64).reshape(1, B_COLS)
        opt.step()
    return w.detach().flatten().tolist(), b.detach().flatten().tolist()


def fmt_opt(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def main():
    out = sys.stdout
    out.write("# Final parameters of torch.optim optimizers on fixed "
              "gradients, written by\n"
              "# bench/torch_optim_ref.py with torch %s (float64, "
              "single-tensor path).\n"
              "# Read by tests/check_optim.c; regenerate, do not edit.\n"
              "# case NAME PLUGIN KEY=VALUE...: nnrun options (the rest "
              "default)\n"
              "# W and b: the final 3x4 weight (row-major) and 1x4 bias, "
              "%%.17g\n" % torch.__version__)
    out.write("steps %d\n" % STEPS)
    for name, plugin, opts in CASES:
        w, b = run(plugin, opts)
        spec = " ".join("%s=%s" % (k, fmt_opt(v)) for k, v in opts.items())
        out.write(("case %s %s %s" % (name, plugin, spec)).rstrip() + "\n")
        out.write("W " + " ".join("%.17g" % x for x in w) + "\n")
        out.write("b " + " ".join("%.17g" % x for x in b) + "\n")


if __name__ == "__main__":
    main()
