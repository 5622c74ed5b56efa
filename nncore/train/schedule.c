/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Learning-rate schedules: a plugin behind the core's warm-up.  See
 * <nn/schedule.h>. */
#include <config.h>

#include <math.h>
#include <stdlib.h>

#include <nn/registry.h>
#include <nn/schedule.h>

/* The default start factor is LinearLR's 1/3: "0.3333333333333333" is the
 * shortest text that parses to the double nearest 1/3. */
const nn_option nn_warmup_options[] = {
    {"warmup_epochs", NN_OPT_INT, "0",
     "epochs of linear warm-up before the schedule; 0: none",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 0, 1e6},
    {"warmup_start_factor", NN_OPT_REAL, "0.3333333333333333",
     "the warm-up's first rate as a fraction of learning_rate",
     NN_OPT_HAS_MIN | NN_OPT_MIN_EXCLUSIVE | NN_OPT_HAS_MAX, 0, 1},
    {"warmup_per_batch", NN_OPT_BOOL, "false",
     "raise the rate every batch of the warm-up, not every epoch", 0, 0, 0},
    {NULL, 0, NULL, NULL, 0, 0, 0}};

nn_warmup nn_warmup_from(const nn_value *v) {
  return (nn_warmup){(size_t)v[NN_WARMUP_EPOCHS].i,
                     v[NN_WARMUP_START_FACTOR].r,
                     v[NN_WARMUP_PER_BATCH].b != 0};
}

struct nn_schedule {
  const nn_plugin *desc;       /* lent; outlives the schedule */
  const nn_schedule_ops *ops;  /* the descriptor's */
  void *self;                  /* owned: ops->destroy */
  nn_warmup warmup;
  double base_lr;
};

void nn_schedule_free(nn_schedule *s) {
  if (!s) return;
  if (s->self) s->ops->destroy(s->self);
  free(s);
}

/* A plugin that failed without a message still gets one naming it. */
static int failed(const nn_schedule *s, int rc, const char *op,
                  nn_error *err) {
  if (rc && err && !err->msg[0])
    nn_error_set(err, rc, "schedule %s: %s failed (code %d) without a "
                 "message", s->desc->name, op, rc);
  return rc;
}

int nn_schedule_create(nn_schedule **out, const nn_plugin *p,
                       const nn_value *opts, const nn_warmup *warmup,
                       double base_lr, nn_error *err) {
  *out = NULL;
  const nn_schedule_ops *ops = nn_plugin_schedule_ops(p);
  if (!ops)
    return nn_error_set(err, NN_EINVAL, "'%s' is not a schedule plugin",
                        p && p->name ? p->name : "?");
  if (!(base_lr > 0.0) || !isfinite(base_lr))
    return nn_error_set(err, NN_EINVAL,
                        "schedule %s: the optimizer's learning rate %g is "
                        "not > 0 and finite", p->name, base_lr);
  if (warmup && warmup->epochs &&
      !(warmup->start_factor > 0.0 && warmup->start_factor <= 1.0))
    return nn_error_set(err, NN_EINVAL,
                        "schedule %s: warmup_start_factor must be in (0, 1], "
                        "got %g", p->name, warmup->start_factor);
  nn_schedule *s = calloc(1, sizeof *s);
  if (!s) return nn_error_set(err, NN_ENOMEM, "out of memory");
  s->desc = p;
  s->ops = ops;
  s->base_lr = base_lr;
  if (warmup) s->warmup = *warmup;
  if (err) err->msg[0] = '\0';
  int rc = ops->create(opts, base_lr, &s->self, err);
  if (rc) {
    s->self = NULL;
    failed(s, rc, "create", err);
    nn_schedule_free(s);
    return rc;
  }
  *out = s;
  return NN_OK;
}

int nn_schedule_per_batch(const nn_schedule *s, size_t epoch) {
  return (s->ops->flags & NN_SCHEDULE_PER_BATCH) ||
         (s->warmup.per_batch && epoch < s->warmup.epochs);
}

int nn_schedule_lr(nn_schedule *s, size_t epoch, size_t batch, size_t batches,
                   double *lr, nn_error *err) {
  const nn_warmup *w = &s->warmup;
  if (epoch < w->epochs) {
    /* LinearLR's closed form: the step reached over the steps in all. */
    double done = (double)epoch, steps = (double)w->epochs;
    if (w->per_batch && batches) {
      done = (double)epoch * (double)batches + (double)batch;
      steps = (double)w->epochs * (double)batches;
    }
    const double s0 = w->start_factor;
    *lr = s->base_lr * (s0 + (1.0 - s0) * done / steps);
    return NN_OK;
  }
  const nn_schedule_point at = {(uint32_t)sizeof at, epoch - w->epochs, batch,
                                batches};
  if (err) err->msg[0] = '\0';
  int rc = s->ops->lr(s->self, &at, lr, err);
  if (rc) return failed(s, rc, "lr", err);
  if (!(*lr >= 0.0) || !isfinite(*lr))
    return nn_error_set(err, NN_EPLUGIN,
                        "schedule %s gave the learning rate %g for epoch %zu "
                        "batch %zu: not >= 0 and finite",
                        s->desc->name, *lr, epoch, batch);
  return NN_OK;
}

int nn_schedule_observe(nn_schedule *s, size_t epoch, double train_loss,
                        double train_accuracy, double val_loss,
                        double val_accuracy, nn_error *err) {
  if (epoch < s->warmup.epochs || !s->ops->observe) return NN_OK;
  const nn_schedule_metrics m = {(uint32_t)sizeof m, epoch - s->warmup.epochs,
                                 train_loss, train_accuracy, val_loss,
                                 val_accuracy};
  if (err) err->msg[0] = '\0';
  return failed(s, s->ops->observe(s->self, &m, err), "observe", err);
}

nn_param *nn_schedule_state(nn_schedule *s, size_t *n) {
  *n = 0;
  nn_param *p = s->ops->state ? s->ops->state(s->self, n) : NULL;
  if (!p) *n = 0;
  return p;
}

const char *nn_schedule_name(const nn_schedule *s) { return s->desc->name; }
