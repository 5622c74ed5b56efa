/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `exponential` schedule plugin: torch.optim.lr_scheduler.ExponentialLR.
 *     lr(e) = base_lr * gamma ^ e
 * in closed form from the epoch: no state. */
#include <config.h>

#include <math.h>
#include <stdlib.h>

#include "schedule_common.h"

typedef struct exp_sched {
  double base, gamma;
} exp_sched;

static const nn_option exp_options[] = {
    {"gamma", NN_OPT_REAL, NULL, "factor of each epoch's decay",
     NN_OPT_HAS_MIN | NN_OPT_MIN_EXCLUSIVE, 0, 0},
    {NULL, 0, NULL, NULL, 0, 0, 0}};

static void exp_destroy(void *self) { free(self); }

static int exp_create(const nn_value *opts, double base_lr, void **out,
                      nn_error *err) {
  int rc = sched_check_create("exponential", base_lr, out, err);
  if (rc)
    return rc;
  /* opts == NULL means "all defaults", with gamma (required) 0.5. */
  const double gamma = opts ? opts[0].r : 0.5;
  if ((rc = sched_positive("exponential", "gamma", gamma, err)))
    return rc;
  exp_sched *s = malloc(sizeof *s);
  if (!s)
    return nn_error_set(err, NN_ENOMEM, "exponential: out of memory");
  *s = (exp_sched){base_lr, gamma};
  *out = s;
  return NN_OK;
}

static int exp_lr(void *self, const nn_schedule_point *at, double *lr,
                  nn_error *err) {
  int rc = sched_check_lr("exponential", self, at, lr, err);
  if (rc)
    return rc;
  const exp_sched *s = self;
  *lr = s->base * pow(s->gamma, (double)at->epoch);
  return NN_OK;
}

static const nn_schedule_ops exp_ops = {
    .size = sizeof(nn_schedule_ops),
    .flags = 0,
    .create = exp_create,
    .destroy = exp_destroy,
    .lr = exp_lr,
};

NN_SCHEDULE_PLUGIN("exponential", "0.1.0",
                   "decay the learning rate by gamma every epoch",
                   exp_options, &exp_ops);
