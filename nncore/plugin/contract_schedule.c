/* SPDX-License-Identifier: GPL-3.0-or-later */
/* A schedule under check, and its checks: create, names, rates,
 * determinism, state and errors.  A schedule has no matrices to compute
 * on: it is asked for the rate of every batch of CC_SCHED_EPOCHS epochs
 * and told fixed metrics after each (better, then flat, then worse, so a
 * schedule that watches them has something to react to). */
#include <config.h>

#include <math.h>
#include <string.h>

#include <nn/nn.h>
#include <nn/registry.h>

#include "plugin/contract_internal.h"

#define CC_SCHED_EPOCHS 30
#define CC_SCHED_BATCHES 3
#define CC_SCHED_SPLIT 12 /* the state check's first part, in epochs */
#define CC_SCHED_RATES (CC_SCHED_EPOCHS * CC_SCHED_BATCHES)
static const double cc_base_lr = 0.1;

static const nn_schedule_ops *ops_of(const nn__cc_checker *c) {
  return c->p->schedule;
}

static int sched_create(nn__cc_checker *c, void **out, nn_error *err) {
  *out = NULL;
  nn__cc_err_clear(err);
  int rc = ops_of(c)->create(c->opts, cc_base_lr, out, err);
  if (rc != NN_OK)
    *out = NULL; /* not ours to destroy */
  return rc;
}

static void sched_destroy(nn__cc_checker *c, void *s) {
  if (s)
    ops_of(c)->destroy(s);
}

/* The metrics of epoch e. */
static nn_schedule_metrics metrics_of(size_t e) {
  const double x = (double)e;
  const double fall = x < 8 ? x : 8.0, rise = x > 16 ? x - 16.0 : 0.0;
  return (nn_schedule_metrics){(uint32_t)sizeof(nn_schedule_metrics),
                               e,
                               1.0 / (1.0 + fall),
                               0.5 + 0.05 * fall,
                               0.8 / (1.0 + 0.5 * fall) + 0.01 * rise +
                                   0.002 * sin(2.3 * x),
                               0.6 + 0.04 * fall - 0.003 * rise +
                                   0.001 * cos(1.9 * x)};
}

/* Epochs [from, to) as the trainer runs them: each batch's rate (asked
 * twice: the same bits, >= 0, finite) into lr[(e - from) * batches + b],
 * then the epoch's metrics.  1, or 0 with why in d. */
static int sched_run(nn__cc_checker *c, void *s, size_t from, size_t to,
                     double *lr, char *d, size_t size) {
  const nn_schedule_ops *o = ops_of(c);
  nn_error e;
  for (size_t ep = from; ep < to; ep++) {
    for (size_t b = 0; b < CC_SCHED_BATCHES; b++) {
      const nn_schedule_point at = {(uint32_t)sizeof at, ep, b,
                                    CC_SCHED_BATCHES};
      double r1, r2;
      nn__cc_err_clear(&e);
      int rc = o->lr(s, &at, &r1, &e);
      if (rc == NN_OK)
        rc = o->lr(s, &at, &r2, &e);
      if (rc != NN_OK)
        return nn__cc_verdict(d, size, 0, "lr at epoch %zu batch %zu "
                              "failed: %s", ep, b, nn__cc_msg_of(&e));
      if (!(r1 >= 0.0) || !isfinite(r1))
        return nn__cc_verdict(d, size, 0, "lr at epoch %zu batch %zu is %g, "
                              "not >= 0 and finite", ep, b, r1);
      if (memcmp(&r1, &r2, sizeof r1))
        return nn__cc_verdict(d, size, 0, "lr at epoch %zu batch %zu gave "
                              "%.17g, then %.17g: asking changed it", ep, b,
                              r1, r2);
      lr[(ep - from) * CC_SCHED_BATCHES + b] = r1;
    }
    if (o->observe) {
      const nn_schedule_metrics m = metrics_of(ep);
      nn__cc_err_clear(&e);
      if (o->observe(s, &m, &e) != NN_OK)
        return nn__cc_verdict(d, size, 0, "observe of epoch %zu failed: %s",
                              ep, nn__cc_msg_of(&e));
    }
  }
  return 1;
}

/* The first place two runs' rates differ, into d; 1 when none. */
static int same_rates(const double *a, const double *b, size_t n,
                      size_t first_epoch, const char *what, char *d,
                      size_t size) {
  for (size_t i = 0; i < n; i++)
    if (memcmp(&a[i], &b[i], sizeof a[i]))
      return nn__cc_verdict(d, size, 0, "%s: epoch %zu batch %zu: %.17g "
                            "against %.17g", what,
                            first_epoch + i / CC_SCHED_BATCHES,
                            i % CC_SCHED_BATCHES, a[i], b[i]);
  return 1;
}

int nn__cc_check_create_schedule(nn__cc_checker *c, char *d, size_t size) {
  nn_error e;
  void *s;
  if (sched_create(c, &s, &e) != NN_OK)
    return nn__cc_verdict(d, size, 0, "create with %s failed: %s",
                          c->opts_text, nn__cc_msg_of(&e));
  sched_destroy(c, s);
  ops_of(c)->destroy(NULL); /* NULL-safe */
  return nn__cc_verdict(d, size, 1, "options %s, base rate %g",
                        c->opts_text, cc_base_lr);
}

int nn__cc_check_names_schedule(nn__cc_checker *c, char *d, size_t size) {
  nn_error e;
  void *s;
  if (sched_create(c, &s, &e) != NN_OK)
    return nn__cc_verdict(d, size, 0, "create failed: %s", nn__cc_msg_of(&e));
  char list[256] = "";
  size_t ns;
  nn_param *st = nn__cc_param_list(ops_of(c)->state, s, &ns);
  int passed;
  nn__cc_err_clear(&e);
  if (nn_check_param_names(c->p->name, NULL, 0, st, ns, &e) != NN_OK) {
    passed = nn__cc_verdict(d, size, 0, "%s", e.msg);
  } else {
    passed = 1;
    for (size_t k = 0; passed && k < ns; k++)
      if (!st[k].value || st[k].grad)
        passed = nn__cc_verdict(d, size, 0, "state %s: %s", st[k].name,
                                st[k].value ? "grad must be NULL"
                                            : "no matrix");
    if (passed) {
      nn__cc_names_list(st, ns, list, sizeof list);
      passed = nn__cc_verdict(d, size, 1, "%zu state matri%s%s%s", ns,
                              ns == 1 ? "x" : "ces", ns ? ": " : "", list);
    }
  }
  sched_destroy(c, s);
  return passed;
}

int nn__cc_check_rates_schedule(nn__cc_checker *c, char *d, size_t size) {
  nn_error e;
  void *s;
  double lr[CC_SCHED_RATES];
  if (sched_create(c, &s, &e) != NN_OK)
    return nn__cc_verdict(d, size, 0, "create failed: %s", nn__cc_msg_of(&e));
  int passed = sched_run(c, s, 0, CC_SCHED_EPOCHS, lr, d, size);
  sched_destroy(c, s);
  if (!passed)
    return 0;
  double lo = lr[0], hi = lr[0];
  for (size_t i = 1; i < CC_SCHED_RATES; i++) {
    lo = lr[i] < lo ? lr[i] : lo;
    hi = lr[i] > hi ? lr[i] : hi;
  }
  return nn__cc_verdict(d, size, 1, "%d epochs x %d batches: rates in "
                        "[%g, %g], the same when asked twice",
                        CC_SCHED_EPOCHS, CC_SCHED_BATCHES, lo, hi);
}

int nn__cc_check_determinism_schedule(nn__cc_checker *c, char *d,
                                      size_t size) {
  nn_error e;
  void *a, *b;
  double la[CC_SCHED_RATES], lb[CC_SCHED_RATES];
  if (sched_create(c, &a, &e) != NN_OK)
    return nn__cc_verdict(d, size, 0, "create failed: %s", nn__cc_msg_of(&e));
  if (sched_create(c, &b, &e) != NN_OK) {
    sched_destroy(c, a);
    return nn__cc_verdict(d, size, 0, "a second create failed: %s",
                          nn__cc_msg_of(&e));
  }
  int passed = sched_run(c, a, 0, CC_SCHED_EPOCHS, la, d, size) &&
               sched_run(c, b, 0, CC_SCHED_EPOCHS, lb, d, size) &&
               same_rates(la, lb, CC_SCHED_RATES, 0, "two instances", d,
                          size);
  if (passed)
    passed = nn__cc_verdict(d, size, 1, "two instances, the same metrics: "
                            "the same %d rates, bit for bit",
                            CC_SCHED_RATES);
  sched_destroy(c, a);
  sched_destroy(c, b);
  return passed;
}

/* A fresh instance given the state of one that ran CC_SCHED_SPLIT epochs
 * (as a resumed run's checkpoint gives it) answers as that one does from
 * there on: everything the rate depends on besides the point is state. */
int nn__cc_check_state_schedule(nn__cc_checker *c, char *d, size_t size) {
  enum { REST = (CC_SCHED_EPOCHS - CC_SCHED_SPLIT) * CC_SCHED_BATCHES };
  nn_error e;
  void *a, *b;
  double first[CC_SCHED_SPLIT * CC_SCHED_BATCHES], la[REST], lb[REST];
  if (sched_create(c, &a, &e) != NN_OK)
    return nn__cc_verdict(d, size, 0, "create failed: %s", nn__cc_msg_of(&e));
  if (sched_create(c, &b, &e) != NN_OK) {
    sched_destroy(c, a);
    return nn__cc_verdict(d, size, 0, "a second create failed: %s",
                          nn__cc_msg_of(&e));
  }
  int passed = sched_run(c, a, 0, CC_SCHED_SPLIT, first, d, size);
  size_t na = 0, nb = 0;
  nn_param *sa = nn__cc_param_list(ops_of(c)->state, a, &na);
  nn_param *sb = nn__cc_param_list(ops_of(c)->state, b, &nb);
  if (passed && na != nb)
    passed = nn__cc_verdict(d, size, 0, "two instances have %zu and %zu "
                            "state matrices", na, nb);
  for (size_t k = 0; passed && k < na; k++) {
    if (!sa[k].value || !sb[k].value ||
        !nn__cc_same_shape(sa[k].value, sb[k].value) ||
        strcmp(sa[k].name ? sa[k].name : "", sb[k].name ? sb[k].name : ""))
      passed = nn__cc_verdict(d, size, 0, "state matrix %zu differs in name "
                              "or shape between two instances", k);
    else
      nn__cc_mat_copy(sb[k].value, sa[k].value);
  }
  passed = passed &&
           sched_run(c, a, CC_SCHED_SPLIT, CC_SCHED_EPOCHS, la, d, size) &&
           sched_run(c, b, CC_SCHED_SPLIT, CC_SCHED_EPOCHS, lb, d, size) &&
           same_rates(la, lb, REST, CC_SCHED_SPLIT,
                      "after restoring the state of epoch 11", d, size);
  if (passed)
    passed = nn__cc_verdict(d, size, 1, "%zu state matri%s restored after "
                            "%d epochs: the next %d rates repeat bit for bit",
                            na, na == 1 ? "x" : "ces", CC_SCHED_SPLIT,
                            REST);
  sched_destroy(c, a);
  sched_destroy(c, b);
  return passed;
}

int nn__cc_check_errors_schedule(nn__cc_checker *c, char *d, size_t size) {
  const nn_schedule_ops *o = ops_of(c);
  nn_error e;
  void *s = NULL;
  nn__cc_err_clear(&e);
  int rc = o->create(c->opts, cc_base_lr, NULL, &e);
  if (!nn__cc_refused(rc, &e, "create with a NULL output pointer", d, size))
    return 0;
  const double bad[] = {0.0, -1.0, NAN, INFINITY};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char call[64];
    snprintf(call, sizeof call, "create with the base rate %g", bad[i]);
    nn__cc_err_clear(&e);
    rc = o->create(c->opts, bad[i], &s, &e);
    if (rc == NN_OK)
      sched_destroy(c, s);
    if (!nn__cc_refused(rc, &e, call, d, size))
      return 0;
  }
  if (sched_create(c, &s, &e) != NN_OK)
    return nn__cc_verdict(d, size, 0, "create failed: %s", nn__cc_msg_of(&e));
  const nn_schedule_point at = {(uint32_t)sizeof at, 0, 0, 1};
  nn__cc_err_clear(&e);
  rc = o->lr(s, &at, NULL, &e);
  int passed = nn__cc_refused(rc, &e, "lr with a NULL output", d, size);
  if (passed) {
    nn__cc_err_clear(&e);
    rc = o->lr(s, NULL, &(double){0}, &e);
    passed = nn__cc_refused(rc, &e, "lr with a NULL point", d, size);
  }
  if (passed && o->observe) {
    nn__cc_err_clear(&e);
    rc = o->observe(s, NULL, &e);
    passed = nn__cc_refused(rc, &e, "observe with NULL metrics", d, size);
  }
  sched_destroy(c, s);
  if (passed)
    passed = nn__cc_verdict(d, size, 1, "a NULL output pointer, base rates "
                            "0, -1, NaN and inf, and NULL arguments to lr%s "
                            "are refused with a message",
                            o->observe ? " and observe" : "");
  return passed;
}
