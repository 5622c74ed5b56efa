/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Plugin failures with their context, the parameters' matrices held to
 * what create made, and the scan for values that are not finite.  See
 * train/guard.h. */
#include <config.h>

#include <math.h>
#include <string.h>

#include <nn/nn.h>

#include "train/guard.h"

void nn__guard_reset(nn__guard *g) {
  if (!g) return;
  g->op = NULL;
  g->who[0] = '\0';
  char discard[8];
  if (g->trap) g->trap(discard, sizeof discard);
}

int nn__guard_call(nn__guard *g, const char *who, const char *op, int rc,
                   nn_error *err) {
  char gsl[256];
  if (!rc) {
    if (!g || !g->trap || !g->trap(gsl, sizeof gsl)) return NN_OK;
    /* The plugin went on after GSL refused: whatever it returned was
     * computed without the call that failed. */
    nn_error_set(err, NN_EPLUGIN, "GSL error: %s", gsl);
    rc = NN_EPLUGIN;
  } else if (err && !err->msg[0]) {
    nn_error_set(err, rc, "returned error %d (%s) without a message", rc,
                 nn_err_name(rc));
  }
  if (g && !g->op) {
    snprintf(g->who, sizeof g->who, "%s", who ? who : "?");
    g->op = op;
  }
  const int keep = rc == NN_ECONFIG && !strcmp(op, "create");
  if (err) err->code = keep ? rc : NN_EPLUGIN;
  return keep ? rc : NN_EPLUGIN;
}

int nn__guard_report(nn__guard *g, const char *when, int rc, nn_error *err) {
  if (!g || !g->op) return rc;
  if (err) {
    char msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "%s", err->msg);
    nn_error_set(err, rc, "%s.%s%s: %s", g->who, g->op, when, msg);
  }
  g->op = NULL;
  return rc;
}

void nn__guard_snap_take(nn__guard_snap *s, const nn_param *p) {
  const gsl_matrix *v = p->value, *g = p->grad;
  *s = (nn__guard_snap){v, g, v ? v->data : NULL, g ? g->data : NULL,
                        v ? v->size1 : 0, v ? v->size2 : 0, v ? v->tda : 0,
                        g ? g->size1 : 0, g ? g->size2 : 0};
}

int nn__guard_snap_check(const nn__guard_snap *s, const nn_param *p,
                         nn_error *err) {
  nn__guard_snap now;
  nn__guard_snap_take(&now, p);
  const char *name = p->name ? p->name : "?";
  if (now.value != s->value || now.grad != s->grad)
    return nn_error_set(err, NN_EPLUGIN,
                        "%s is now another matrix than the one create made "
                        "(the optimizer and the core keep that one): "
                        "matrices must stay until destroy", name);
  if (now.size1 != s->size1 || now.size2 != s->size2 || now.tda != s->tda ||
      now.grad_size1 != s->grad_size1 || now.grad_size2 != s->grad_size2)
    return nn_error_set(err, NN_EPLUGIN,
                        "%s changed shape from %zux%zu to %zux%zu (gradient "
                        "%zux%zu) since create", name,
                        s->size1, s->size2, now.size1, now.size2,
                        now.grad_size1, now.grad_size2);
  if (now.value_data != s->value_data || now.grad_data != s->grad_data)
    return nn_error_set(err, NN_EPLUGIN,
                        "%s points at other memory than at create: its "
                        "data must stay until destroy", name);
  return NN_OK;
}

uint64_t nn__guard_bytes(const nn_param *p, size_t n) {
  uint64_t bytes = 0;
  /* Rows are tda apart: a plugin that pads its rows counts the padding in
   * what it declares, as it allocates it. */
  for (size_t i = 0; i < n; i++)
    if (p[i].value)
      bytes = nn_mem_add(bytes, nn_mem_doubles(p[i].value->size1,
                                               p[i].value->tda));
  return bytes;
}

size_t nn_find_nonfinite(const nn_param *p, size_t n, size_t *row,
                         size_t *col, double *value) {
  for (size_t k = 0; k < n; k++) {
    const gsl_matrix *m = p[k].value;
    if (!m) continue;
    for (size_t i = 0; i < m->size1; i++) {
      const double *r = m->data + i * m->tda;
      /* x * 0 is 0 for a finite x and NaN otherwise: one test per row,
       * and a loop the compiler vectorizes. */
      double sum = 0;
      for (size_t j = 0; j < m->size2; j++) sum += r[j] * 0.0;
      if (sum == 0.0) continue;
      for (size_t j = 0; j < m->size2; j++)
        if (!isfinite(r[j])) {
          if (row) *row = i;
          if (col) *col = j;
          if (value) *value = r[j];
          return k;
        }
    }
  }
  return n;
}

nn__guard_num_text nn__guard_num(double v) {
  nn__guard_num_text t;
  if (isnan(v))
    snprintf(t.s, sizeof t.s, "NaN");
  else
    snprintf(t.s, sizeof t.s, "%g", v);
  return t;
}

double nn__guard_largest(const nn_param *p, size_t n, size_t *which) {
  double big = 0;
  if (which) *which = 0;
  for (size_t k = 0; k < n; k++) {
    const gsl_matrix *m = p[k].value;
    for (size_t i = 0; m && i < m->size1; i++)
      for (size_t j = 0; j < m->size2; j++) {
        const double a = fabs(m->data[i * m->tda + j]);
        if (a > big) {
          big = a;
          if (which) *which = k;
        }
      }
  }
  return big;
}
