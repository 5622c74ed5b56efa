/* SPDX-License-Identifier: GPL-3.0-or-later */
/* An example schedule plugin: the learning rate falls in a straight line
 * from the optimizer's learning_rate to end_factor times it over `epochs`
 * epochs, and stays there.  Build it against the installed headers:
 *
 *   cc -shared -fPIC -Wall -Wl,--no-undefined $(pkg-config --cflags nn) \
 *      -o linear_decay.so linear_decay.c $(pkg-config --libs nn)
 *   nnrun check-plugin ./linear_decay.so
 *
 * and use it with [schedule] type = linear_decay.  The rate is a function
 * of the epoch alone, so the plugin has no state (and no observe). */
#include <math.h>
#include <stdlib.h>

#include <nn/plugin.h>

static const nn_option options[] = {
    {"epochs", NN_OPT_INT, NULL, "epochs from learning_rate to the end rate",
     NN_OPT_HAS_MIN, 1, 0},
    {"end_factor", NN_OPT_REAL, "0.01", "the end rate, times learning_rate",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 0, 1},
    {NULL, 0, NULL, NULL, 0, 0, 0},
};

/* Owned by the core through create / destroy. */
typedef struct linear {
  double base, end_factor, epochs;
} linear;

static int linear_create(const nn_value *opts, double base_lr, void **out,
                         nn_error *err) {
  if (!out)
    return nn_error_set(err, NN_EINVAL, "linear_decay: NULL output pointer");
  *out = NULL;
  if (!(base_lr > 0.0) || !isfinite(base_lr))
    return nn_error_set(err, NN_EINVAL,
                        "linear_decay: base rate %g is not > 0 and finite",
                        base_lr);
  const long long epochs = opts ? (long long)opts[0].i : 10;
  const double end = opts ? opts[1].r : 0.01;
  if (epochs < 1 || !(end >= 0.0 && end <= 1.0))
    return nn_error_set(err, NN_EINVAL,
                        "linear_decay: epochs must be >= 1 and end_factor "
                        "in [0, 1]");
  linear *l = malloc(sizeof *l);
  if (!l)
    return nn_error_set(err, NN_ENOMEM, "linear_decay: out of memory");
  *l = (linear){base_lr, end, (double)epochs};
  *out = l;
  return NN_OK;
}

static void linear_destroy(void *self) { free(self); }

static int linear_lr(void *self, const nn_schedule_point *at, double *lr,
                     nn_error *err) {
  if (!self || !at || !lr)
    return nn_error_set(err, NN_EINVAL, "linear_decay: NULL argument");
  const linear *l = self;
  const double e = (double)at->epoch < l->epochs ? (double)at->epoch
                                                 : l->epochs;
  *lr = l->base * (1.0 - (1.0 - l->end_factor) * e / l->epochs);
  return NN_OK;
}

static const nn_schedule_ops ops = {
    .size = sizeof(nn_schedule_ops),
    .create = linear_create,
    .destroy = linear_destroy,
    .lr = linear_lr,
};

NN_SCHEDULE_PLUGIN("linear_decay", "1.0.0",
                   "the learning rate falls linearly to end_factor times it",
                   options, &ops);
