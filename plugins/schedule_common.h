/* SPDX-License-Identifier: GPL-3.0-or-later */
/* What the schedule plugins share: the checks every create and every lr
 * call makes.  Header-only (static inline) so that each plugin stays one
 * shared object exporting nn_plugin_desc alone. */
#ifndef NN_PLUGINS_SCHEDULE_COMMON_H
#define NN_PLUGINS_SCHEDULE_COMMON_H

#include <math.h>
#include <stdlib.h>

#include <nn/plugin.h>

/* create's arguments: an output pointer and a usable base rate. */
static inline int sched_check_create(const char *name, double base_lr,
                                     void **out, nn_error *err) {
  if (!out)
    return nn_error_set(err, NN_EINVAL, "%s: NULL output pointer", name);
  *out = NULL;
  if (!(base_lr > 0.0) || !isfinite(base_lr))
    return nn_error_set(err, NN_EINVAL,
                        "%s: the base learning rate must be > 0 and finite, "
                        "got %g", name, base_lr);
  return NN_OK;
}

/* lr's arguments: an instance, a point and somewhere to put the rate. */
static inline int sched_check_lr(const char *name, const void *self,
                                 const nn_schedule_point *at, const double *lr,
                                 nn_error *err) {
  if (!self || !at || !lr)
    return nn_error_set(err, NN_EINVAL, "%s: NULL argument", name);
  return NN_OK;
}

/* A real option that must be finite and > 0 (gamma, factor). */
static inline int sched_positive(const char *name, const char *key, double v,
                                 nn_error *err) {
  if (!(v > 0.0) || !isfinite(v))
    return nn_error_set(err, NN_EINVAL, "%s: %s must be > 0 and finite, "
                        "got %g", name, key, v);
  return NN_OK;
}

#endif /* NN_PLUGINS_SCHEDULE_COMMON_H */
