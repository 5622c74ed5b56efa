/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The shapes check (layers and models): params() is stable; every batch
 * size from 1 to CC_MAX_BATCH runs forward and backward, writing every
 * output and gradient and leaving the caller's matrices as they were;
 * matrices that are views (tda > columns) give the same numbers. */
#include <config.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "plugin/contract_internal.h"

/* Two forwards of a correct plugin on a view and on a contiguous matrix
 * may round differently (vector paths depend on alignment); reading
 * with the wrong stride is off by far more than this. */
#define CC_VIEW_RTOL 1e-9
#define CC_SENTINEL 12345.678 /* padding of views: must stay untouched */

/* What params() handed out first: the array, its length and matrices. */
typedef struct param_ids {
  nn_param *array;
  size_t n;
  nn__cc_mat_id *value, *grad; /* n each */
} param_ids;

static int param_ids_take(param_ids *ids, nn_param *p, size_t n) {
  ids->array = p;
  ids->n = n;
  ids->value = calloc(n ? n : 1, sizeof *ids->value);
  ids->grad = calloc(n ? n : 1, sizeof *ids->grad);
  if (!ids->value || !ids->grad)
    return 0;
  for (size_t k = 0; k < n; k++) {
    ids->value[k] = nn__cc_mat_id_of(p[k].value);
    ids->grad[k] = nn__cc_mat_id_of(p[k].grad);
  }
  return 1;
}

static void param_ids_free(param_ids *ids) {
  free(ids->value);
  free(ids->grad);
}

/* 1 if params() still gives what ids recorded; else 0 and why in d. */
static int params_stable(nn__cc_subject *s, const param_ids *ids,
                         const char *when, char *d, size_t size) {
  size_t n;
  nn_param *p = nn__cc_subject_params(s, &n);
  if (p != ids->array || n != ids->n)
    return nn__cc_verdict(d, size, 0,
                          "params() %s gave %zu parameters at %p, first %zu "
                          "at %p",
                          when, n, (void *)p, ids->n, (void *)ids->array);
  for (size_t k = 0; k < n; k++)
    if (!p[k].value || !p[k].grad ||
        !nn__cc_mat_id_same(ids->value[k], p[k].value) ||
        !nn__cc_mat_id_same(ids->grad[k], p[k].grad))
      return nn__cc_verdict(d, size, 0,
                            "params() %s: parameter %s is another matrix or "
                            "shape",
                            when, p[k].name ? p[k].name : "?");
  return 1;
}

static int written(const gsl_matrix *m, const char *what, const char *call,
                   size_t rows, char *d, size_t size) {
  size_t i, j;
  if (nn__cc_all_finite(m, &i, &j))
    return 1;
  return nn__cc_verdict(d, size, 0,
                        "%s at batch %zu left %s[%zu,%zu] unwritten (or not "
                        "finite)",
                        call, rows, what, i, j);
}

/* Forward and backward at batch size B on fresh data; every output and
 * gradient is preset to NaN, so one left unwritten (or accumulated into)
 * shows.  With dx_null, backward gets dX = NULL (a first layer). */
static int shapes_batch(nn__cc_checker *c, nn__cc_pool *pl, nn__cc_subject *s,
                        nn_param *p, size_t n, size_t B, int dx_null,
                        char *d, size_t size) {
  nn_error e;
  char et[600];
  gsl_matrix *X = nn__cc_pool_random(pl, B, s->n_in, c->drng);
  gsl_matrix *Y = nn__cc_pool_mat(pl, B, s->n_out);
  gsl_matrix *dY = nn__cc_pool_random(pl, B, s->n_out, c->drng);
  gsl_matrix *dX =
      s->layer && !dx_null ? nn__cc_pool_mat(pl, B, s->n_in) : NULL;
  if (pl->oom)
    return nn__cc_oom_verdict(c, d, size);
  nn__cc_mat_set(Y, NAN);
  int rc = nn__cc_subject_forward(s, &nn__cc_eval, X, Y, &e);
  if (rc != NN_OK)
    return nn__cc_verdict(d, size, 0, "forward on a batch of %zu failed: %s",
                          B, nn__cc_err_text(rc, &e, et, sizeof et));
  if (!written(Y, "Y", "forward", B, d, size))
    return 0;
  for (size_t k = 0; k < n; k++)
    nn__cc_mat_set(p[k].grad, NAN);
  if (dX)
    nn__cc_mat_set(dX, NAN);
  rc = nn__cc_subject_backward(s, X, Y, dY, dX, &e);
  if (rc != NN_OK)
    return nn__cc_verdict(d, size, 0,
                          "backward on a batch of %zu%s failed: %s", B,
                          dx_null ? " (dX NULL)" : "",
                          nn__cc_err_text(rc, &e, et, sizeof et));
  if (dX && !written(dX, "dX", "backward", B, d, size))
    return 0;
  for (size_t k = 0; k < n; k++) {
    char what[96];
    snprintf(what, sizeof what, "the gradient of %s", p[k].name);
    if (!written(p[k].grad, what, "backward", B, d, size))
      return 0;
  }
  return 1;
}

/* A view of rows x cols inside a matrix pad columns wider, the padding
 * set to CC_SENTINEL. */
static gsl_matrix *padded(nn__cc_pool *pl, size_t rows, size_t cols,
                          size_t pad, gsl_matrix_view *v) {
  gsl_matrix *m = nn__cc_pool_mat(pl, rows, cols + pad);
  if (!m)
    return NULL;
  nn__cc_mat_set(m, CC_SENTINEL);
  *v = gsl_matrix_submatrix(m, 0, 0, rows, cols);
  return &v->matrix;
}

static int padding_kept(const gsl_matrix *view, const char *what,
                        const char *call, char *d, size_t size) {
  /* The view's rows are view->tda apart; the padding follows each row. */
  for (size_t i = 0; i < view->size1; i++)
    for (size_t j = view->size2; j < view->tda; j++)
      if (*nn__cc_at(view, i, j) != CC_SENTINEL)
        return nn__cc_verdict(d, size, 0,
                              "%s on views wrote past the end of row %zu of "
                              "%s (tda %zu, %zu columns)",
                              call, i, what, view->tda, view->size2);
  return 1;
}

static int close_enough(const gsl_matrix *a, const gsl_matrix *b, size_t *bi,
                        size_t *bj) {
  for (size_t i = 0; i < a->size1; i++)
    for (size_t j = 0; j < a->size2; j++) {
      const double x = *nn__cc_at(a, i, j), y = *nn__cc_at(b, i, j);
      if (!(fabs(x - y) <= CC_VIEW_RTOL * fmax(1.0, fmax(fabs(x), fabs(y))))) {
        *bi = i, *bj = j;
        return 0;
      }
    }
  return 1;
}

/* Forward and backward with every matrix a view (tda > size2): the same
 * numbers as on contiguous matrices, and the padding untouched. */
static int shapes_views(nn__cc_checker *c, nn__cc_pool *pl, nn__cc_subject *s,
                        nn_param *p, size_t n, char *d, size_t size) {
  const size_t B = CC_MAX_BATCH;
  nn_error e;
  char et[600];
  gsl_matrix_view vx, vy, vdy, vdx;
  gsl_matrix *X = nn__cc_pool_random(pl, B, s->n_in, c->drng);
  gsl_matrix *Y = nn__cc_pool_mat(pl, B, s->n_out);
  gsl_matrix *dY = nn__cc_pool_random(pl, B, s->n_out, c->drng);
  gsl_matrix *dX = s->layer ? nn__cc_pool_mat(pl, B, s->n_in) : NULL;
  gsl_matrix *Xv = padded(pl, B, s->n_in, 3, &vx);
  gsl_matrix *Yv = padded(pl, B, s->n_out, 2, &vy);
  gsl_matrix *dYv = padded(pl, B, s->n_out, 5, &vdy);
  gsl_matrix *dXv = s->layer ? padded(pl, B, s->n_in, 1, &vdx) : NULL;
  gsl_matrix **G = calloc(n ? n : 1, sizeof *G);
  if (!G || pl->oom) {
    free(G);
    return nn__cc_oom_verdict(c, d, size);
  }
  nn__cc_mat_copy(Xv, X);
  nn__cc_mat_copy(dYv, dY);
  int ok = 1;
  int rc = nn__cc_subject_forward(s, &nn__cc_eval, X, Y, &e);
  if (rc == NN_OK)
    rc = nn__cc_subject_backward(s, X, Y, dY, dX, &e);
  for (size_t k = 0; rc == NN_OK && k < n; k++)
    if (!(G[k] = nn__cc_pool_copy(pl, p[k].grad)))
      ok = nn__cc_oom_verdict(c, d, size);
  if (rc == NN_OK && ok)
    rc = nn__cc_subject_forward(s, &nn__cc_eval, Xv, Yv, &e);
  const char *call = "forward";
  if (rc == NN_OK && ok) {
    call = "backward";
    if (!padding_kept(Yv, "Y", "forward", d, size) ||
        !padding_kept(Xv, "X", "forward", d, size))
      ok = 0;
    else
      rc = nn__cc_subject_backward(s, Xv, Yv, dYv, dXv, &e);
  }
  if (rc != NN_OK) {
    free(G);
    return nn__cc_verdict(d, size, 0,
                          "%s on views (tda > columns) failed: %s", call,
                          nn__cc_err_text(rc, &e, et, sizeof et));
  }
  size_t i = 0, j = 0;
  if (ok && !close_enough(Yv, Y, &i, &j))
    ok = nn__cc_verdict(d, size, 0,
                        "forward on views: Y[%zu,%zu] is %.17g, %.17g on "
                        "contiguous matrices",
                        i, j, *nn__cc_at(Yv, i, j), *nn__cc_at(Y, i, j));
  if (ok && dXv && !close_enough(dXv, dX, &i, &j))
    ok = nn__cc_verdict(d, size, 0,
                        "backward on views: dX[%zu,%zu] is %.17g, %.17g on "
                        "contiguous matrices",
                        i, j, *nn__cc_at(dXv, i, j), *nn__cc_at(dX, i, j));
  for (size_t k = 0; ok && k < n; k++)
    if (!close_enough(p[k].grad, G[k], &i, &j))
      ok = nn__cc_verdict(d, size, 0,
                          "backward on views: the gradient of %s [%zu,%zu] "
                          "is %.17g, %.17g on contiguous matrices",
                          p[k].name, i, j, *nn__cc_at(p[k].grad, i, j),
                          *nn__cc_at(G[k], i, j));
  if (ok && dXv && !padding_kept(dXv, "dX", "backward", d, size))
    ok = 0;
  free(G);
  return ok;
}

int nn__cc_check_shapes(nn__cc_checker *c, char *d, size_t size) {
  nn__cc_pool pl = {0};
  nn__cc_subject s, s2 = {0};
  param_ids ids = {0};
  int passed = 0;
  if (!nn__cc_subject_open(c, &s, "create", d, size))
    return 0;
  nn_param *p = NULL;
  size_t n = 0;
  if (!nn__cc_usable_params(c, &s, &p, &n, d, size))
    goto out;
  if (!param_ids_take(&ids, p, n)) {
    passed = nn__cc_oom_verdict(c, d, size);
    goto out;
  }
  if (!params_stable(&s, &ids, "called again", d, size))
    goto out;
  /* Same options, same shapes: a second instance must agree. */
  if (!nn__cc_subject_open(c, &s2, "a second create", d, size))
    goto out;
  if (s.layer && (s2.out_shape.c != s.out_shape.c ||
                  s2.out_shape.h != s.out_shape.h ||
                  s2.out_shape.w != s.out_shape.w)) {
    passed = nn__cc_verdict(d, size, 0,
                            "two creates gave output shapes %ux%ux%u and "
                            "%ux%ux%u",
                            (unsigned)s.out_shape.c, (unsigned)s.out_shape.h,
                            (unsigned)s.out_shape.w, (unsigned)s2.out_shape.c,
                            (unsigned)s2.out_shape.h,
                            (unsigned)s2.out_shape.w);
    goto out;
  }
  gsl_rng_set(c->drng, CC_SEED_DATA);
  for (size_t B = 1; B <= CC_MAX_BATCH; B++) {
    if (!shapes_batch(c, &pl, &s, p, n, B, 0, d, size))
      goto out;
    if (!params_stable(&s, &ids, "after forward and backward", d, size))
      goto out;
  }
  if (s.layer && !shapes_batch(c, &pl, &s, p, n, CC_MAX_BATCH, 1, d, size))
    goto out;
  if (!shapes_views(c, &pl, &s, p, n, d, size) ||
      !params_stable(&s, &ids, "after forward and backward", d, size))
    goto out;
  char io[64];
  if (s.layer)
    snprintf(io, sizeof io, "%dx%dx%d -> %ux%ux%u", CC_LAYER_C, CC_LAYER_H,
             CC_LAYER_W, (unsigned)s.out_shape.c, (unsigned)s.out_shape.h,
             (unsigned)s.out_shape.w);
  else
    snprintf(io, sizeof io, "%d inputs -> %d scores", CC_N_IN, CC_N_OUT);
  passed = nn__cc_verdict(d, size, 1,
                          "%s; batches 1..%d and views: every output and "
                          "gradient written; params() stable (%zu)",
                          io, CC_MAX_BATCH, n);
out:
  param_ids_free(&ids);
  nn__cc_subject_destroy(&s2);
  nn__cc_subject_destroy(&s);
  nn__cc_pool_free(&pl);
  return passed;
}
