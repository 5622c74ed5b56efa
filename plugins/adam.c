/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `adam` optimizer plugin: Adam (Kingma & Ba) as torch.optim.Adam computes
 * it, with L2 (`reg`, PyTorch's weight_decay) added to the gradient of
 * weights only.  The rule, its rounding and the step in parts are in
 * adam_rule.h, shared with adamw.  Defaults are PyTorch's. */
#include <config.h>

#define ADAM_NAME "adam"
#define ADAM_DECOUPLED 0
#include "adam_rule.h"

static const nn_option adam_options[] = {
    {"learning_rate", NN_OPT_REAL, "0.001", "step size",
     NN_OPT_HAS_MIN | NN_OPT_MIN_EXCLUSIVE, 0.0, 0.0},
    {"beta1", NN_OPT_REAL, "0.9", "decay of the gradient's running mean",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX | NN_OPT_MAX_EXCLUSIVE, 0.0, 1.0},
    {"beta2", NN_OPT_REAL, "0.999",
     "decay of the squared gradient's running mean",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX | NN_OPT_MAX_EXCLUSIVE, 0.0, 1.0},
    {"eps", NN_OPT_REAL, "1e-8", "added to the denominator",
     NN_OPT_HAS_MIN | NN_OPT_MIN_EXCLUSIVE, 0.0, 0.0},
    {"reg", NN_OPT_REAL, "0",
     "L2 strength added to the gradient of weights (not biases)",
     NN_OPT_HAS_MIN, 0.0, 0.0},
    {NULL, 0, NULL, NULL, 0, 0.0, 0.0},
};

static int adam_create(const nn_value *opts, const nn_param *params,
                       size_t n, void **out, nn_error *err) {
  /* opts == NULL means "all defaults" (convenient for tests and tools). */
  const adam_hyper h = {
      .lr = opts ? opts[0].r : 0.001,
      .beta1 = opts ? opts[1].r : 0.9,
      .beta2 = opts ? opts[2].r : 0.999,
      .eps = opts ? opts[3].r : 1e-8,
      .decay = opts ? opts[4].r : 0.0,
  };
  return adam_new(&h, params, n, out, err);
}

static const nn_optim_ops adam_ops = {
    .size = sizeof(nn_optim_ops),
    .create = adam_create,
    .destroy = adam_destroy,
    .step = adam_step,
    .state = adam_state,
    .extension = adam_extension,
};

NN_OPTIMIZER_PLUGIN("adam", "0.1.0",
                    "Adam with bias correction and L2 on weights (PyTorch's "
                    "rule)",
                    adam_options, &adam_ops);
