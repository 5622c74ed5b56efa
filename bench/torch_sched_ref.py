#!/usr/bin/python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""PyTorch's learning-rate schedulers on fixed settings: the reference that
tests/check_sched.c holds nnrun's schedule plugins (and libnn's warm-up) to.

Run with Debian's python3-torch (torch 1.13):

    /usr/bin/python3 bench/torch_sched_ref.py > tests/data/sched_ref.txt

Each case gives the learning rate of every epoch (and, for a per-batch
warm-up, of every batch) as torch.optim.lr_scheduler computes it in
float64, for nnrun's [schedule] options.  The warm-up is LinearLR then the
schedule: through SequentialLR where PyTorch has it (a warm-up by epochs
before step, multistep, exponential or cosine), otherwise (a warm-up by
batches, or one before ReduceLROnPlateau, which SequentialLR does not
take) the two schedulers one after the other, the second on a fresh
optimizer from the base rate, which is what SequentialLR does.

The plateau cases feed fixed validation metrics, formulas of the epoch e
that the C test evaluates the same way (the same libm):

    val_loss(e)     = 0.5 / (1 + 0.3 * min(e, 6)) + 0.004 * max(e - 10, 0)
                      + 0.01 * sin(2.1 * e)
    val_accuracy(e) = 0.95 - 0.05 / (1 + min(e, 8)) - 0.001 * max(e - 12, 0)
                      + 0.002 * cos(1.7 * e)

(better, then noisy, then worse: every plateau case reduces the rate).

The C side computes closed forms where PyTorch steps from the previous rate
(StepLR, ExponentialLR, ...), so the two agree to rounding, not bit for
bit; the test allows 1e-12 relative.
"""

import math
import sys
import warnings

import torch

# SequentialLR starts the second scheduler with step(0), which PyTorch
# warns about; no optimizer steps here at all.
warnings.filterwarnings("ignore", category=UserWarning)

S = torch.optim.lr_scheduler

# name, plugin, base rate, epochs, batches per epoch, nnrun options
CASES = [
    ("step", "step", 0.1, 20, 1, {"step_size": 3, "gamma": 0.5}),
    ("step_default", "step", 0.05, 12, 1, {"step_size": 4}),
    ("multistep", "multistep", 0.1, 20, 1,
     {"milestones": "3,7,7,12", "gamma": 0.3}),
    ("exponential", "exponential", 0.2, 25, 1, {"gamma": 0.9}),
    ("cosine", "cosine", 0.1, 25, 1, {"T_max": 10, "eta_min": 0.001}),
    ("cosine_default", "cosine", 0.01, 8, 1, {"T_max": 8}),
    ("plateau_min", "plateau", 0.1, 30, 1,
     {"mode": "min", "factor": 0.5, "patience": 2, "cooldown": 1}),
    ("plateau_max_abs", "plateau", 0.1, 30, 1,
     {"mode": "max", "factor": 0.3, "patience": 1, "threshold": 0.001,
      "threshold_mode": "abs", "min_lr": 0.01}),
    ("plateau_default", "plateau", 0.1, 30, 1, {}),
    ("cosine_warmup", "cosine", 0.1, 20, 1,
     {"T_max": 17, "warmup_epochs": 3}),
    ("step_warmup", "step", 0.1, 15, 1,
     {"step_size": 4, "gamma": 0.5, "warmup_epochs": 2,
      "warmup_start_factor": 0.1}),
    ("multistep_warmup", "multistep", 0.1, 15, 1,
     {"milestones": "2,5", "warmup_epochs": 3,
      "warmup_start_factor": 0.25}),
    ("exponential_warmup", "exponential", 0.2, 12, 1,
     {"gamma": 0.8, "warmup_epochs": 4}),
    ("cosine_warmup_batch", "cosine", 0.1, 10, 5,
     {"T_max": 8, "eta_min": 0.0005, "warmup_epochs": 2,
      "warmup_start_factor": 0.05, "warmup_per_batch": True}),
    ("plateau_warmup", "plateau", 0.1, 25, 1,
     {"mode": "min", "factor": 0.5, "patience": 1, "warmup_epochs": 2,
      "warmup_start_factor": 0.5}),
]

WARMUP_KEYS = ("warmup_epochs", "warmup_start_factor", "warmup_per_batch")
LINEAR_START = 1.0 / 3.0  # LinearLR's default start_factor


def val_loss(e):
    return (0.5 / (1 + 0.3 * min(e, 6)) + 0.004 * max(e - 10, 0)
            + 0.01 * math.sin(2.1 * e))


def val_accuracy(e):
    return (0.95 - 0.05 / (1 + min(e, 8)) - 0.001 * max(e - 12, 0)
            + 0.002 * math.cos(1.7 * e))


def optimizer(lr):
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    return torch.optim.SGD([w], lr=lr)


def lr_of(opt):
    return opt.param_groups[0]["lr"]


def main_scheduler(plugin, opt, o):
    if plugin == "step":
        return S.StepLR(opt, step_size=o["step_size"],
                        gamma=o.get("gamma", 0.1))
    if plugin == "multistep":
        ms = [int(m) for m in o["milestones"].split(",")]
        return S.MultiStepLR(opt, milestones=ms, gamma=o.get("gamma", 0.1))
    if plugin == "exponential":
        return S.ExponentialLR(opt, gamma=o["gamma"])
    if plugin == "cosine":
        return S.CosineAnnealingLR(opt, T_max=o["T_max"],
                                   eta_min=o.get("eta_min", 0.0))
    if plugin == "plateau":
        return S.ReduceLROnPlateau(
            opt, mode=o.get("mode", "min"), factor=o.get("factor", 0.1),
            patience=o.get("patience", 10),
            threshold=o.get("threshold", 1e-4),
            threshold_mode=o.get("threshold_mode", "rel"),
            cooldown=o.get("cooldown", 0), min_lr=o.get("min_lr", 0.0),
            eps=o.get("eps", 1e-8))
    raise ValueError(plugin)


def step(plugin, sched, o, e):
    """The scheduler's step after epoch e."""
    if plugin == "plateau":
        metric = val_accuracy(e) if o.get("mode") == "max" else val_loss(e)
        sched.step(metric)
    else:
        sched.step()


def run_main(plugin, base, o, first, epochs, batches, out):
    """The schedule alone from epoch `first` of the run, on a fresh
    optimizer: its rate for every batch of epochs first .. epochs-1."""
    opt = optimizer(base)
    sched = main_scheduler(plugin, opt, o)
    for e in range(first, epochs):
        out.extend([lr_of(opt)] * batches)
        step(plugin, sched, o, e)


def rates(plugin, base, epochs, batches, o):
    w = o.get("warmup_epochs", 0)
    start = o.get("warmup_start_factor", LINEAR_START)
    out = []
    if w == 0:
        run_main(plugin, base, o, 0, epochs, batches, out)
    elif o.get("warmup_per_batch"):
        opt = optimizer(base)
        lin = S.LinearLR(opt, start_factor=start, total_iters=w * batches)
        for _ in range(w * batches):
            out.append(lr_of(opt))
            lin.step()
        run_main(plugin, base, o, w, epochs, batches, out)
    elif plugin == "plateau":
        opt = optimizer(base)
        lin = S.LinearLR(opt, start_factor=start, total_iters=w)
        for _ in range(w):
            out.append(lr_of(opt))
            lin.step()
        run_main(plugin, base, o, w, epochs, batches, out)
    else:
        opt = optimizer(base)
        lin = S.LinearLR(opt, start_factor=start, total_iters=w)
        sched = S.SequentialLR(opt, [lin, main_scheduler(plugin, opt, o)],
                               milestones=[w])
        for e in range(epochs):
            out.extend([lr_of(opt)] * batches)
            sched.step()
    return out


def text(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def main():
    w = sys.stdout.write
    w("# Learning rates of torch.optim.lr_scheduler, written by\n")
    w("# bench/torch_sched_ref.py with torch %s (float64).\n" %
      torch.__version__)
    w("# Read by tests/check_sched.c; regenerate, do not edit.\n")
    w("# case NAME PLUGIN BASE_LR EPOCHS BATCHES KEY=VALUE...: nnrun's "
      "[schedule] options\n")
    w("# lr: the rate of every batch of every epoch, in order, %.17g\n")
    for name, plugin, base, epochs, batches, o in CASES:
        opts = " ".join("%s=%s" % (k, text(v)) for k, v in o.items())
        w("case %s %s %r %d %d %s\n" % (name, plugin, base, epochs, batches,
                                        opts))
        lrs = rates(plugin, base, epochs, batches, o)
        assert len(lrs) == epochs * batches
        w("lr %s\n" % " ".join("%.17g" % v for v in lrs))


if __name__ == "__main__":
    main()
