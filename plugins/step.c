/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `step` schedule plugin: torch.optim.lr_scheduler.StepLR.  The rate is
 * multiplied by gamma every step_size epochs:
 *     lr(e) = base_lr * gamma ^ floor(e / step_size)
 * computed in closed form from the epoch, so it needs no state. */
#include <config.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "schedule_common.h"

typedef struct step_sched {
  double base, gamma;
  uint64_t step_size;
} step_sched;

static const nn_option step_options[] = {
    {"step_size", NN_OPT_INT, NULL, "epochs between two decays",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1, 1e9},
    {"gamma", NN_OPT_REAL, "0.1", "factor of each decay",
     NN_OPT_HAS_MIN | NN_OPT_MIN_EXCLUSIVE, 0, 0},
    {NULL, 0, NULL, NULL, 0, 0, 0}};

static void step_destroy(void *self) { free(self); }

static int step_create(const nn_value *opts, double base_lr, void **out,
                       nn_error *err) {
  int rc = sched_check_create("step", base_lr, out, err);
  if (rc)
    return rc;
  /* opts == NULL means "all defaults", with step_size (required) 1. */
  const int64_t size = opts ? opts[0].i : 1;
  const double gamma = opts ? opts[1].r : 0.1;
  if (size < 1)
    return nn_error_set(err, NN_EINVAL,
                        "step: step_size must be >= 1, got %lld",
                        (long long)size);
  if ((rc = sched_positive("step", "gamma", gamma, err)))
    return rc;
  step_sched *s = malloc(sizeof *s);
  if (!s)
    return nn_error_set(err, NN_ENOMEM, "step: out of memory");
  *s = (step_sched){base_lr, gamma, (uint64_t)size};
  *out = s;
  return NN_OK;
}

static int step_lr(void *self, const nn_schedule_point *at, double *lr,
                   nn_error *err) {
  int rc = sched_check_lr("step", self, at, lr, err);
  if (rc)
    return rc;
  const step_sched *s = self;
  *lr = s->base * pow(s->gamma, (double)(at->epoch / s->step_size));
  return NN_OK;
}

static const nn_schedule_ops step_ops = {
    .size = sizeof(nn_schedule_ops),
    .flags = 0,
    .create = step_create,
    .destroy = step_destroy,
    .lr = step_lr,
};

NN_SCHEDULE_PLUGIN("step", "0.1.0",
                   "decay the learning rate by gamma every step_size epochs",
                   step_options, &step_ops);
