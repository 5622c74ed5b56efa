/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `cosine` schedule plugin: torch.optim.lr_scheduler.CosineAnnealingLR.
 *     lr(e) = eta_min + (base_lr - eta_min) * (1 + cos(pi * e / T_max)) / 2
 * PyTorch's own closed form (the one SequentialLR starts it with); its
 * step-by-step form gives the same curve to within rounding, which also
 * goes on past T_max (back up to base_lr at 2 T_max, and so on).  No
 * state: the rate is a function of the epoch. */
#include <config.h>

#include <math.h>
#include <stdlib.h>

#include "schedule_common.h"

/* Python's math.pi (M_PI is not in strict C11): the same double. */
#define COS_PI 3.141592653589793

typedef struct cos_sched {
  double base, eta_min;
  double t_max;
} cos_sched;

static const nn_option cos_options[] = {
    {"T_max", NN_OPT_INT, NULL,
     "epochs from learning_rate down to eta_min (usually the run's epochs)",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1, 1e9},
    {"eta_min", NN_OPT_REAL, "0", "the lowest learning rate", NN_OPT_HAS_MIN,
     0, 0},
    {NULL, 0, NULL, NULL, 0, 0, 0}};

static void cos_destroy(void *self) { free(self); }

static int cos_create(const nn_value *opts, double base_lr, void **out,
                      nn_error *err) {
  int rc = sched_check_create("cosine", base_lr, out, err);
  if (rc)
    return rc;
  /* opts == NULL means "all defaults", with T_max (required) 10. */
  const long long t_max = opts ? (long long)opts[0].i : 10;
  const double eta_min = opts ? opts[1].r : 0.0;
  if (t_max < 1)
    return nn_error_set(err, NN_EINVAL, "cosine: T_max must be >= 1, got %lld",
                        t_max);
  /* At eta_min = base_lr the curve is flat, above it upside down. */
  if (!(eta_min >= 0.0) || !(eta_min < base_lr))
    return nn_error_set(err, NN_EINVAL,
                        "cosine: eta_min must be in [0, learning_rate = %g), "
                        "got %g", base_lr, eta_min);
  cos_sched *s = malloc(sizeof *s);
  if (!s)
    return nn_error_set(err, NN_ENOMEM, "cosine: out of memory");
  *s = (cos_sched){base_lr, eta_min, (double)t_max};
  *out = s;
  return NN_OK;
}

static int cos_lr(void *self, const nn_schedule_point *at, double *lr,
                  nn_error *err) {
  int rc = sched_check_lr("cosine", self, at, lr, err);
  if (rc)
    return rc;
  const cos_sched *s = self;
  /* In PyTorch's order of operations: pi * e first, then / T_max. */
  const double angle = COS_PI * (double)at->epoch / s->t_max;
  *lr = s->eta_min + (s->base - s->eta_min) * (1.0 + cos(angle)) / 2.0;
  return NN_OK;
}

static const nn_schedule_ops cos_ops = {
    .size = sizeof(nn_schedule_ops),
    .flags = 0,
    .create = cos_create,
    .destroy = cos_destroy,
    .lr = cos_lr,
};

NN_SCHEDULE_PLUGIN("cosine", "0.1.0",
                   "cosine annealing from learning_rate to eta_min over "
                   "T_max epochs",
                   cos_options, &cos_ops);
