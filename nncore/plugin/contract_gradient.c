/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The gradient check (layers and models): backward's gradients, every
 * parameter's and a layer's dX, against central differences of a fixed
 * loss. */
#include <config.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <nn/math.h>

#include "plugin/contract_internal.h"

#define CC_GRAD_ROWS 3 /* the check's batch */

/* Finite differences: central, step 1e-6 in double.  An element passes
 * when |a - n| <= ATOL + RTOL * max(|a|, |n|): the absolute term keeps
 * tiny correct gradients (rounding noise around 1e-10) from counting as
 * large relative errors, the relative one scales with the gradient. */
#define CC_STEP 1e-6
#define CC_ATOL 1e-6
#define CC_RTOL 1e-4
/* Finite differences on at most this many values of one parameter
 * (spread evenly over it), so that a large default model stays quick. */
#define CC_GRAD_MAX_VALUES 1024

/* The worst element so far of a gradient comparison. */
typedef struct grad_tally {
  size_t n_values, n_bad, n_kinks, n_skipped;
  double excess; /* |a - n| / tolerance of the worst element */
  char where[96];
  double a, num;
} grad_tally;

/* The fixed loss the layer's gradient is checked on: sum of Y .* R for a
 * fixed random R (so dY = R); for a model the trainer's own, mean
 * softmax cross-entropy of the scores (dscores from nn_softmax_xent). */
typedef struct grad_setup {
  nn__cc_subject *s;
  const gsl_matrix *X;
  const gsl_matrix *R;    /* layers */
  const uint32_t *labels; /* models */
  gsl_matrix *Y;
} grad_setup;

static int grad_loss(const grad_setup *g, double *loss, nn_error *err) {
  int rc = nn__cc_subject_forward(g->s, &nn__cc_eval, g->X, g->Y, err);
  if (rc != NN_OK)
    return rc;
  if (g->s->model) {
    size_t hits;
    if (nn_softmax_xent(g->Y, g->labels, NULL, loss, &hits) != NN_OK)
      return nn_error_set(err, NN_EINVAL, "the scores are not %zux%d",
                          (size_t)CC_GRAD_ROWS, CC_N_OUT);
    return NN_OK;
  }
  double sum = 0.0;
  for (size_t i = 0; i < g->Y->size1; i++)
    for (size_t j = 0; j < g->Y->size2; j++)
      sum += *nn__cc_at(g->Y, i, j) * *nn__cc_at(g->R, i, j);
  *loss = sum;
  return NN_OK;
}

/* Compare analytic value a of d(loss)/d(*w) with central differences
 * around *w (restored afterwards).  Where the loss has a kink within the
 * step (relu at 0), the central difference is neither one-sided slope;
 * an a between the two one-sided slopes is then accepted. */
static int grad_element(const grad_setup *g, double *w, double a, double L0,
                        const char *name, size_t i, size_t j, grad_tally *t,
                        nn_error *err) {
  const double orig = *w;
  double lp = 0.0, lm = 0.0;
  *w = orig + CC_STEP;
  const double hp = *w - orig; /* the step as represented */
  int rc = grad_loss(g, &lp, err);
  if (rc == NN_OK) {
    *w = orig - CC_STEP;
    rc = grad_loss(g, &lm, err);
  }
  const double hm = orig - *w;
  *w = orig;
  if (rc != NN_OK)
    return rc;
  const double num = (lp - lm) / (hp + hm);
  const double dp = (lp - L0) / hp, dm = (L0 - lm) / hm;
  const double tol = CC_ATOL + CC_RTOL * fmax(fabs(a), fabs(num));
  double excess = fabs(a - num) / tol;
  if (!isfinite(a) || !isfinite(num))
    excess = INFINITY;
  t->n_values++;
  if (excess > 1.0 && isfinite(excess) && a >= fmin(dp, dm) - tol &&
      a <= fmax(dp, dm) + tol) {
    t->n_kinks++;
    return NN_OK;
  }
  if (excess > 1.0)
    t->n_bad++;
  if (!t->where[0] || excess > t->excess || isnan(excess)) {
    t->excess = isnan(excess) ? INFINITY : excess;
    snprintf(t->where, sizeof t->where, "%s[%zu,%zu]", name, i, j);
    t->a = a;
    t->num = num;
  }
  return NN_OK;
}

/* Every value (or CC_GRAD_MAX_VALUES spread over it) of m against the
 * analytic gradient A of the same shape. */
static int grad_matrix(const grad_setup *g, gsl_matrix *m, const gsl_matrix *A,
                       double L0, const char *name, grad_tally *t,
                       nn_error *err) {
  const size_t total = m->size1 * m->size2;
  const size_t count = total < CC_GRAD_MAX_VALUES ? total : CC_GRAD_MAX_VALUES;
  for (size_t q = 0; q < count; q++) {
    const size_t e = count == total ? q : q * total / count;
    const size_t i = e / m->size2, j = e % m->size2;
    int rc = grad_element(g, nn__cc_at(m, i, j), *nn__cc_at(A, i, j), L0,
                          name, i, j, t, err);
    if (rc != NN_OK)
      return rc;
  }
  t->n_skipped += total - count;
  return NN_OK;
}

int nn__cc_check_gradient(nn__cc_checker *c, char *d, size_t size) {
  nn__cc_pool pl = {0};
  nn__cc_subject s;
  nn_error e;
  char et[600];
  int passed = 0;
  if (!nn__cc_subject_open(c, &s, "create", d, size))
    return 0;
  nn_param *p = NULL;
  size_t n = 0;
  if (!nn__cc_usable_params(c, &s, &p, &n, d, size))
    goto out;
  gsl_rng_set(c->drng, CC_SEED_DATA);
  const size_t B = CC_GRAD_ROWS;
  gsl_matrix *X = nn__cc_pool_random(&pl, B, s.n_in, c->drng);
  gsl_matrix *Y = nn__cc_pool_mat(&pl, B, s.n_out);
  gsl_matrix *R = nn__cc_pool_random(&pl, B, s.n_out, c->drng);
  gsl_matrix *dY = nn__cc_pool_mat(&pl, B, s.n_out);
  gsl_matrix *dX = s.layer ? nn__cc_pool_mat(&pl, B, s.n_in) : NULL;
  gsl_matrix **A = calloc(n ? n : 1, sizeof *A);
  if (!A || pl.oom) {
    free(A);
    passed = nn__cc_oom_verdict(c, d, size);
    goto out;
  }
  uint32_t labels[CC_GRAD_ROWS];
  for (size_t i = 0; i < B; i++)
    labels[i] = (uint32_t)gsl_rng_uniform_int(c->drng, CC_N_OUT);
  const grad_setup g = {&s, X, R, labels, Y};

  /* The analytic gradients, copied before the finite differences run
   * forward again. */
  double L0 = 0.0;
  int rc = nn__cc_subject_forward(&s, &nn__cc_eval, X, Y, &e);
  if (rc == NN_OK) {
    if (s.model) {
      size_t hits;
      if (nn_softmax_xent(Y, labels, dY, &L0, &hits) != NN_OK)
        rc = nn_error_set(&e, NN_EINVAL, "bad scores");
    } else {
      nn__cc_mat_copy(dY, R); /* backward may use dY as scratch */
    }
  }
  if (rc == NN_OK)
    rc = nn__cc_subject_backward(&s, X, Y, dY, dX, &e);
  if (rc != NN_OK) {
    passed = nn__cc_verdict(d, size, 0, "forward/backward failed: %s",
                            nn__cc_err_text(rc, &e, et, sizeof et));
    free(A);
    goto out;
  }
  for (size_t k = 0; k < n; k++)
    A[k] = nn__cc_pool_copy(&pl, p[k].grad);
  gsl_matrix *AX = dX ? nn__cc_pool_copy(&pl, dX) : NULL;
  if (pl.oom) {
    free(A);
    passed = nn__cc_oom_verdict(c, d, size);
    goto out;
  }

  /* The loss at the unperturbed point, for the one-sided slopes. */
  grad_tally t = {0};
  rc = grad_loss(&g, &L0, &e);
  for (size_t k = 0; rc == NN_OK && k < n; k++)
    rc = grad_matrix(&g, p[k].value, A[k], L0, p[k].name, &t, &e);
  if (rc == NN_OK && AX)
    rc = grad_matrix(&g, X, AX, L0, "dX", &t, &e);
  free(A);
  if (rc != NN_OK) {
    passed = nn__cc_verdict(d, size, 0,
                            "forward failed during finite differences: %s",
                            nn__cc_err_text(rc, &e, et, sizeof et));
    goto out;
  }
  char extra[128] = "";
  if (t.n_kinks)
    nn__cc_append(extra, sizeof extra, "; %zu at kinks", t.n_kinks);
  if (t.n_skipped)
    nn__cc_append(extra, sizeof extra, "; %zu not sampled", t.n_skipped);
  if (t.n_values == 0) {
    passed = nn__cc_verdict(d, size, 1,
                            "no parameters and no input gradient");
  } else if (t.n_bad) {
    passed = nn__cc_verdict(d, size, 0,
                            "%zu of %zu values off; worst %s: analytic "
                            "%.9g, numeric %.9g (|a - n| > %g + %g "
                            "max(|a|, |n|))%s",
                            t.n_bad, t.n_values, t.where, t.a, t.num,
                            CC_ATOL, CC_RTOL, extra);
  } else {
    passed = nn__cc_verdict(d, size, 1,
                            "%zu values%s within %g + %g max(|a|, |n|); "
                            "worst %s: analytic %.9g, numeric %.9g%s",
                            t.n_values,
                            s.layer ? " (parameters and dX)" : "", CC_ATOL,
                            CC_RTOL, t.where, t.a, t.num, extra);
  }
out:
  nn__cc_subject_destroy(&s);
  nn__cc_pool_free(&pl);
  return passed;
}
