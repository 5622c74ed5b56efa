/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The contract checks every plugin must pass (see <nn/contract.h>):
 * nn_contract_check, which runs them in order and reports each, and the
 * verdict helpers every check writes its detail with.  The checks
 * themselves, and what they share, are listed in contract_internal.h. */
#include <config.h>

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_rng.h>

#include <nn/contract.h>
#include <nn/nn.h>
#include <nn/registry.h>

#include "plugin/contract_internal.h"

#define CC_DETAIL 1024

/* ------------------------------------------------------------ verdicts */

int nn__cc_verdict(char *d, size_t size, int passed, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(d, size, fmt, ap);
  va_end(ap);
  return passed;
}

int nn__cc_oom_verdict(nn__cc_checker *c, char *d, size_t size) {
  c->oom = 1;
  return nn__cc_verdict(d, size, 0, "the checker ran out of memory");
}

const char *nn__cc_err_text(int rc, const nn_error *e, char *buf,
                            size_t size) {
  snprintf(buf, size, "%s: %s", nn_err_name(rc), nn__cc_msg_of(e));
  return buf;
}

void nn__cc_append(char *buf, size_t size, const char *fmt, ...) {
  const size_t len = strlen(buf);
  if (len + 1 >= size)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + len, size - len, fmt, ap);
  va_end(ap);
}

void nn__cc_names_list(const nn_param *p, size_t n, char *buf, size_t size) {
  for (size_t k = 0; k < n; k++)
    nn__cc_append(buf, size, "%s%s", buf[0] ? ", " : "", p[k].name);
}

int nn__cc_refused(int rc, const nn_error *e, const char *call, char *d,
                   size_t size) {
  if (rc == NN_OK)
    return nn__cc_verdict(d, size, 0, "%s was accepted", call);
  if (!e->msg[0])
    return nn__cc_verdict(d, size, 0, "%s returned %s without a message",
                          call, nn_err_name(rc));
  return 1;
}

/* ------------------------------------------------------------ driver */

/* A check and its variants: one for models and layers, one for
 * optimizers, one for schedules (NULL: not for that kind). */
typedef struct check_entry {
  const char *name;
  nn__cc_check_fn subject;
  nn__cc_check_fn optim;
  nn__cc_check_fn schedule;
} check_entry;

/* Run in this order after create (which runs first, on its own: when it
 * fails there is no instance to check). */
static const check_entry checks[] = {
    {"names", nn__cc_check_names_subject, nn__cc_check_names_optim,
     nn__cc_check_names_schedule},
    {"gradient", nn__cc_check_gradient, NULL, NULL},
    {"shapes", nn__cc_check_shapes, NULL, NULL},
    {"rates", NULL, NULL, nn__cc_check_rates_schedule},
    {"determinism", nn__cc_check_determinism_subject,
     nn__cc_check_determinism_optim, nn__cc_check_determinism_schedule},
    {"state", nn__cc_check_state_subject, nn__cc_check_state_optim,
     nn__cc_check_state_schedule},
    {"errors", nn__cc_check_errors_subject, nn__cc_check_errors_optim,
     nn__cc_check_errors_schedule},
};

static void run_check(nn__cc_checker *c, const char *name,
                      nn__cc_check_fn fn) {
  char detail[CC_DETAIL];
  detail[0] = '\0';
  const int passed = fn(c, detail, sizeof detail);
  if (!passed)
    c->n_failed++;
  c->report(c->user, name, passed, detail);
}

int nn_contract_check(const nn_plugin *p, nn_contract_report report,
                      void *user, size_t *n_failed, nn_error *err) {
  if (n_failed)
    *n_failed = 0;
  if (!p || !report)
    return nn_error_set(err, NN_EINVAL, "contract check: NULL argument");
  const int is_subject = (p->kind == NN_KIND_LAYER && p->layer) ||
                         (p->kind == NN_KIND_MODEL && p->model);
  const int is_schedule = nn_plugin_schedule_ops(p) != NULL;
  if (!is_subject && !is_schedule &&
      !(p->kind == NN_KIND_OPTIMIZER && p->optim))
    return nn_error_set(err, NN_EINVAL,
                        "contract check: '%s' is not a loaded model, layer, "
                        "optimizer or schedule", p->name ? p->name : "?");
  /* Only the ops of the plugin's kind are looked at; a descriptor built
   * before ABI 2.2 is copied only as far as its size (schedule stays
   * NULL). */
  nn_plugin view = {0};
  memcpy(&view, p, p->size < sizeof view ? p->size : sizeof view);
  view.model = p->kind == NN_KIND_MODEL ? p->model : NULL;
  view.layer = p->kind == NN_KIND_LAYER ? p->layer : NULL;
  view.optim = p->kind == NN_KIND_OPTIMIZER ? p->optim : NULL;
  view.schedule = nn_plugin_schedule_ops(p);
  nn__cc_checker c = {.p = &view, .report = report, .user = user};
  c.wrng = gsl_rng_alloc(gsl_rng_mt19937);
  c.drng = gsl_rng_alloc(gsl_rng_mt19937);
  c.srng = gsl_rng_alloc(gsl_rng_mt19937);
  int rc = NN_OK;
  if (!c.wrng || !c.drng || !c.srng) {
    rc = nn_error_set(err, NN_ENOMEM, "contract check: out of memory");
    goto out;
  }
  char detail[CC_DETAIL];
  int created = 0;
  if (nn__cc_build_options(&c, detail, sizeof detail) == 0)
    created = is_subject
                  ? nn__cc_check_create_subject(&c, detail, sizeof detail)
              : is_schedule
                  ? nn__cc_check_create_schedule(&c, detail, sizeof detail)
                  : nn__cc_check_create_optim(&c, detail, sizeof detail);
  if (!created)
    c.n_failed++;
  report(user, "create", created, detail);
  /* Without an instance there is nothing more to check. */
  for (size_t i = 0; created && i < sizeof checks / sizeof *checks; i++) {
    nn__cc_check_fn fn = is_subject    ? checks[i].subject
                         : is_schedule ? checks[i].schedule
                                       : checks[i].optim;
    if (fn)
      run_check(&c, checks[i].name, fn);
  }
  if (c.oom)
    rc = nn_error_set(err, NN_ENOMEM,
                      "contract check: out of memory (some checks did not "
                      "run to the end)");
out:
  if (n_failed)
    *n_failed = c.n_failed;
  free(c.opts);
  if (c.wrng)
    gsl_rng_free(c.wrng);
  if (c.drng)
    gsl_rng_free(c.drng);
  if (c.srng)
    gsl_rng_free(c.srng);
  return rc;
}
