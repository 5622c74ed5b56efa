/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `plateau` schedule plugin: torch.optim.lr_scheduler.ReduceLROnPlateau.
 * After each epoch the monitored metric (mode min: the validation loss;
 * mode max: the validation accuracy) is compared with the best so far; an
 * epoch that does not beat it by the threshold is a bad epoch, and more
 * than `patience` bad epochs in a row (outside a cooldown) multiply the
 * rate by factor, down to min_lr (a change smaller than eps is skipped).
 * PyTorch's rule, step for step:
 *     better:  rel min  a < best * (1 - threshold)   abs min  a < best - threshold
 *              rel max  a > best * (1 + threshold)   abs max  a > best + threshold
 *     bad = better ? 0 : bad + 1;  best = better ? a : best
 *     in cooldown: cooldown - 1, bad = 0
 *     bad > patience: lr' = max(lr * factor, min_lr), taken if lr - lr' > eps;
 *                     cooldown = cooldown option, bad = 0
 * The rate, the best value and both counters are the state a resumed run
 * needs: four 1x1 matrices. */
#include <config.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <nn/math.h>

#include "schedule_common.h"

enum { ST_LR, ST_BEST, ST_BAD, ST_COOLDOWN, N_STATE };
static const char *const state_names[N_STATE] = {
    "plateau.lr", "plateau.best", "plateau.bad_epochs", "plateau.cooldown"};

/* Owns the state matrices and the array naming them. */
typedef struct plateau {
  int maximize, relative;
  double factor, threshold, min_lr, eps;
  double patience, cooldown;
  gsl_matrix *m[N_STATE];
  nn_param state[N_STATE];
} plateau;

static const nn_option plateau_options[] = {
    {"mode", NN_OPT_STRING, "min",
     "min: watch the validation loss; max: the validation accuracy", 0, 0, 0},
    {"factor", NN_OPT_REAL, "0.1", "factor of each reduction",
     NN_OPT_HAS_MIN | NN_OPT_MIN_EXCLUSIVE | NN_OPT_HAS_MAX |
         NN_OPT_MAX_EXCLUSIVE, 0, 1},
    {"patience", NN_OPT_INT, "10",
     "bad epochs in a row tolerated before a reduction",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 0, 1e9},
    {"threshold", NN_OPT_REAL, "1e-4",
     "how much better than the best an epoch must be", NN_OPT_HAS_MIN, 0, 0},
    {"threshold_mode", NN_OPT_STRING, "rel",
     "rel: threshold is relative to the best; abs: absolute", 0, 0, 0},
    {"cooldown", NN_OPT_INT, "0",
     "epochs after a reduction before bad epochs count again",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 0, 1e9},
    {"min_lr", NN_OPT_REAL, "0", "the rate is never reduced below this",
     NN_OPT_HAS_MIN, 0, 0},
    {"eps", NN_OPT_REAL, "1e-8", "a smaller reduction is not made",
     NN_OPT_HAS_MIN, 0, 0},
    {NULL, 0, NULL, NULL, 0, 0, 0}};

static void plateau_destroy(void *self) {
  plateau *p = self;
  if (!p)
    return;
  for (int i = 0; i < N_STATE; i++)
    gsl_matrix_free(p->m[i]);
  free(p);
}

static int plateau_create(const nn_value *opts, double base_lr, void **out,
                          nn_error *err) {
  int rc = sched_check_create("plateau", base_lr, out, err);
  if (rc)
    return rc;
  /* opts == NULL means "all defaults" (PyTorch's). */
  const char *mode = opts ? opts[0].s : "min";
  const char *tmode = opts ? opts[4].s : "rel";
  const double factor = opts ? opts[1].r : 0.1;
  const long long patience = opts ? (long long)opts[2].i : 10;
  const double threshold = opts ? opts[3].r : 1e-4;
  const long long cooldown = opts ? (long long)opts[5].i : 0;
  const double min_lr = opts ? opts[6].r : 0.0;
  const double eps = opts ? opts[7].r : 1e-8;
  if (!mode || (strcmp(mode, "min") && strcmp(mode, "max")))
    return nn_error_set(err, NN_EINVAL,
                        "plateau: mode = '%s': expected min (validation loss) "
                        "or max (validation accuracy)", mode ? mode : "");
  if (!tmode || (strcmp(tmode, "rel") && strcmp(tmode, "abs")))
    return nn_error_set(err, NN_EINVAL,
                        "plateau: threshold_mode = '%s': expected rel or abs",
                        tmode ? tmode : "");
  if (!(factor > 0.0 && factor < 1.0))
    return nn_error_set(err, NN_EINVAL,
                        "plateau: factor must be in (0, 1), got %g", factor);
  if (patience < 0 || cooldown < 0 || !(threshold >= 0.0) ||
      !isfinite(threshold) || !(min_lr >= 0.0) || !isfinite(min_lr) ||
      !(eps >= 0.0) || !isfinite(eps))
    return nn_error_set(err, NN_EINVAL,
                        "plateau: patience, cooldown, threshold, min_lr and "
                        "eps must be >= 0 and finite");
  plateau *p = calloc(1, sizeof *p);
  if (!p)
    return nn_error_set(err, NN_ENOMEM, "plateau: out of memory");
  *p = (plateau){.maximize = !strcmp(mode, "max"),
                 .relative = !strcmp(tmode, "rel"),
                 .factor = factor,
                 .threshold = threshold,
                 .min_lr = min_lr,
                 .eps = eps,
                 .patience = (double)patience,
                 .cooldown = (double)cooldown};
  for (int i = 0; i < N_STATE; i++) {
    if (!(p->m[i] = nn_matrix_calloc_aligned(1, 1))) {
      plateau_destroy(p);
      return nn_error_set(err, NN_ENOMEM, "plateau: out of memory");
    }
    p->state[i] = (nn_param){state_names[i], p->m[i], NULL, 0};
  }
  /* No best yet: the worst value of the mode, which every metric beats. */
  gsl_matrix_set(p->m[ST_LR], 0, 0, base_lr);
  gsl_matrix_set(p->m[ST_BEST], 0, 0, p->maximize ? -INFINITY : INFINITY);
  *out = p;
  return NN_OK;
}

static nn_param *plateau_state(void *self, size_t *n) {
  plateau *p = self;
  *n = N_STATE;
  return p->state;
}

static double get(const plateau *p, int i) {
  return gsl_matrix_get(p->m[i], 0, 0);
}

/* A count restored from a file: a whole number in [0, 2^53). */
static int is_count(double c) {
  return c >= 0.0 && c < 9007199254740992.0 && c == floor(c);
}

/* The state as a resumed run may have written it back: checked before
 * it is used. */
static int plateau_check_state(const plateau *p, nn_error *err) {
  const double lr = get(p, ST_LR), best = get(p, ST_BEST);
  if (!(lr >= 0.0) || !isfinite(lr))
    return nn_error_set(err, NN_EINVAL,
                        "plateau: the rate %g in plateau.lr is not >= 0 and "
                        "finite", lr);
  if (isnan(best))
    return nn_error_set(err, NN_EINVAL, "plateau: plateau.best is NaN");
  if (!is_count(get(p, ST_BAD)) || !is_count(get(p, ST_COOLDOWN)))
    return nn_error_set(err, NN_EINVAL,
                        "plateau: plateau.bad_epochs (%g) and "
                        "plateau.cooldown (%g) must be whole numbers >= 0",
                        get(p, ST_BAD), get(p, ST_COOLDOWN));
  return NN_OK;
}

static int plateau_lr(void *self, const nn_schedule_point *at, double *lr,
                      nn_error *err) {
  int rc = sched_check_lr("plateau", self, at, lr, err);
  if (!rc)
    rc = plateau_check_state(self, err);
  if (!rc)
    *lr = get(self, ST_LR);
  return rc;
}

static int better(const plateau *p, double a, double best) {
  if (p->maximize)
    return p->relative ? a > best * (p->threshold + 1.0)
                       : a > best + p->threshold;
  return p->relative ? a < best * (1.0 - p->threshold)
                     : a < best - p->threshold;
}

static int plateau_observe(void *self, const nn_schedule_metrics *m,
                           nn_error *err) {
  plateau *p = self;
  if (!p || !m)
    return nn_error_set(err, NN_EINVAL, "plateau: NULL argument");
  int rc = plateau_check_state(p, err);
  if (rc)
    return rc;
  const double a = p->maximize ? m->val_accuracy : m->val_loss;
  if (isnan(a))
    return nn_error_set(err, NN_ENUMERIC,
                        "plateau: the validation %s of epoch %llu is NaN",
                        p->maximize ? "accuracy" : "loss",
                        (unsigned long long)m->epoch);
  double best = get(p, ST_BEST), bad = get(p, ST_BAD);
  double cool = get(p, ST_COOLDOWN), lr = get(p, ST_LR);
  if (better(p, a, best)) {
    best = a;
    bad = 0.0;
  } else {
    bad = bad + 1.0;
  }
  if (cool > 0.0) {
    cool = cool - 1.0;
    bad = 0.0;
  }
  if (bad > p->patience) {
    double next = lr * p->factor;
    if (next < p->min_lr)
      next = p->min_lr;
    if (lr - next > p->eps)
      lr = next;
    cool = p->cooldown;
    bad = 0.0;
  }
  gsl_matrix_set(p->m[ST_BEST], 0, 0, best);
  gsl_matrix_set(p->m[ST_BAD], 0, 0, bad);
  gsl_matrix_set(p->m[ST_COOLDOWN], 0, 0, cool);
  gsl_matrix_set(p->m[ST_LR], 0, 0, lr);
  return NN_OK;
}

static const nn_schedule_ops plateau_ops = {
    .size = sizeof(nn_schedule_ops),
    .flags = 0,
    .create = plateau_create,
    .destroy = plateau_destroy,
    .lr = plateau_lr,
    .observe = plateau_observe,
    .state = plateau_state,
};

NN_SCHEDULE_PLUGIN("plateau", "0.1.0",
                   "reduce the learning rate when the validation loss (or "
                   "accuracy) stops improving",
                   plateau_options, &plateau_ops);
