/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `adamw` optimizer plugin: Adam with decoupled weight decay (Loshchilov &
 * Hutter) as torch.optim.AdamW computes it: weights shrink by
 * 1 - learning_rate * weight_decay before the Adam update; biases are
 * never decayed.  The rule, its rounding and the step in parts are in
 * adam_rule.h, shared with adam.  Defaults are PyTorch's. */
#include <config.h>

#define ADAM_NAME "adamw"
#define ADAM_DECOUPLED 1
#include "adam_rule.h"

static const nn_option adamw_options[] = {
    {"learning_rate", NN_OPT_REAL, "0.001", "step size",
     NN_OPT_HAS_MIN | NN_OPT_MIN_EXCLUSIVE, 0.0, 0.0},
    {"beta1", NN_OPT_REAL, "0.9", "decay of the gradient's running mean",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX | NN_OPT_MAX_EXCLUSIVE, 0.0, 1.0},
    {"beta2", NN_OPT_REAL, "0.999",
     "decay of the squared gradient's running mean",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX | NN_OPT_MAX_EXCLUSIVE, 0.0, 1.0},
    {"eps", NN_OPT_REAL, "1e-8", "added to the denominator",
     NN_OPT_HAS_MIN | NN_OPT_MIN_EXCLUSIVE, 0.0, 0.0},
    {"weight_decay", NN_OPT_REAL, "0.01",
     "decoupled decay of weights (not biases): w *= 1 - lr * weight_decay",
     NN_OPT_HAS_MIN, 0.0, 0.0},
    {NULL, 0, NULL, NULL, 0, 0.0, 0.0},
};

static int adamw_create(const nn_value *opts, const nn_param *params,
                        size_t n, void **out, nn_error *err) {
  /* opts == NULL means "all defaults" (convenient for tests and tools). */
  const adam_hyper h = {
      .lr = opts ? opts[0].r : 0.001,
      .beta1 = opts ? opts[1].r : 0.9,
      .beta2 = opts ? opts[2].r : 0.999,
      .eps = opts ? opts[3].r : 1e-8,
      .decay = opts ? opts[4].r : 0.01,
  };
  return adam_new(&h, params, n, out, err);
}

static const nn_optim_ops adamw_ops = {
    .size = sizeof(nn_optim_ops),
    .create = adamw_create,
    .destroy = adam_destroy,
    .step = adam_step,
    .state = adam_state,
    .extension = adam_extension,
};

NN_OPTIMIZER_PLUGIN("adamw", "0.1.0",
                    "Adam with decoupled weight decay on weights (PyTorch's "
                    "AdamW rule)",
                    adamw_options, &adamw_ops);
