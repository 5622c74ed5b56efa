/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `multistep` schedule plugin: torch.optim.lr_scheduler.MultiStepLR.  The
 * rate is multiplied by gamma at each milestone epoch:
 *     lr(e) = base_lr * gamma ^ (number of milestones <= e)
 * (a milestone listed twice decays twice, as PyTorch counts it), in closed
 * form from the epoch: no state. */
#include <config.h>

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "schedule_common.h"

/* Owns at. */
typedef struct ms_sched {
  double base, gamma;
  uint64_t *at; /* the milestones, ascending */
  size_t n;
} ms_sched;

static const nn_option ms_options[] = {
    {"milestones", NN_OPT_STRING, NULL,
     "epochs at which the rate decays, ascending, comma-separated: 30,80", 0,
     0, 0},
    {"gamma", NN_OPT_REAL, "0.1", "factor of each decay",
     NN_OPT_HAS_MIN | NN_OPT_MIN_EXCLUSIVE, 0, 0},
    {NULL, 0, NULL, NULL, 0, 0, 0}};

static void ms_destroy(void *self) {
  ms_sched *s = self;
  if (!s)
    return;
  free(s->at);
  free(s);
}

/* "30,80" into s->at: whole epochs, ascending (equal ones allowed),
 * comma-separated, nothing else.  "" is no milestone at all (a constant
 * rate). */
static int ms_parse(ms_sched *s, const char *text, nn_error *err) {
  size_t cap = 1;
  for (const char *p = text; *p; p++)
    cap += *p == ',';
  if (!(s->at = calloc(cap, sizeof *s->at)))
    return nn_error_set(err, NN_ENOMEM, "multistep: out of memory");
  const char *p = text;
  while (*p) {
    if (*p < '0' || *p > '9')
      return nn_error_set(err, NN_EINVAL,
                          "multistep: milestones = '%s': expected epochs "
                          "(whole numbers) separated by commas", text);
    char *end;
    errno = 0;
    const unsigned long long v = strtoull(p, &end, 10);
    if (errno || (*end && *end != ','))
      return nn_error_set(err, NN_EINVAL,
                          "multistep: milestones = '%s': expected epochs "
                          "(whole numbers) separated by commas", text);
    if (s->n && v < s->at[s->n - 1])
      return nn_error_set(err, NN_EINVAL,
                          "multistep: milestones = '%s': %llu comes after "
                          "%llu; list them in ascending order",
                          text, v, (unsigned long long)s->at[s->n - 1]);
    s->at[s->n++] = (uint64_t)v;
    p = *end ? end + 1 : end;
    if (*end && !*p)
      return nn_error_set(err, NN_EINVAL,
                          "multistep: milestones = '%s' ends with a comma",
                          text);
  }
  return NN_OK;
}

static int ms_create(const nn_value *opts, double base_lr, void **out,
                     nn_error *err) {
  int rc = sched_check_create("multistep", base_lr, out, err);
  if (rc)
    return rc;
  /* opts == NULL means "all defaults", with milestones (required) none. */
  const char *milestones = opts && opts[0].s ? opts[0].s : "";
  const double gamma = opts ? opts[1].r : 0.1;
  if ((rc = sched_positive("multistep", "gamma", gamma, err)))
    return rc;
  ms_sched *s = calloc(1, sizeof *s);
  if (!s)
    return nn_error_set(err, NN_ENOMEM, "multistep: out of memory");
  s->base = base_lr;
  s->gamma = gamma;
  if ((rc = ms_parse(s, milestones, err))) {
    ms_destroy(s);
    return rc;
  }
  *out = s;
  return NN_OK;
}

static int ms_lr(void *self, const nn_schedule_point *at, double *lr,
                 nn_error *err) {
  int rc = sched_check_lr("multistep", self, at, lr, err);
  if (rc)
    return rc;
  const ms_sched *s = self;
  size_t passed = 0;
  while (passed < s->n && s->at[passed] <= at->epoch)
    passed++;
  *lr = s->base * pow(s->gamma, (double)passed);
  return NN_OK;
}

static const nn_schedule_ops ms_ops = {
    .size = sizeof(nn_schedule_ops),
    .flags = 0,
    .create = ms_create,
    .destroy = ms_destroy,
    .lr = ms_lr,
};

NN_SCHEDULE_PLUGIN("multistep", "0.1.0",
                   "decay the learning rate by gamma at each milestone epoch",
                   ms_options, &ms_ops);
