/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The contract checks' matrices: each check keeps the ones it makes in a
 * pool and frees them together at its end; test data are drawn from the
 * checker's seeded streams; results are compared bit for bit.  Plain
 * loops throughout: nothing here goes through GSL's error handler. */
#include <config.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <nn/math.h>

#include "plugin/contract_internal.h"

gsl_matrix *nn__cc_pool_mat(nn__cc_pool *pl, size_t rows, size_t cols) {
  if (pl->n == pl->cap) {
    size_t cap = pl->cap ? 2 * pl->cap : 32;
    gsl_matrix **m = realloc(pl->m, cap * sizeof *m);
    if (!m) {
      pl->oom = 1;
      return NULL;
    }
    pl->m = m;
    pl->cap = cap;
  }
  gsl_matrix *x = nn_matrix_calloc_aligned(rows, cols);
  if (!x) {
    pl->oom = 1;
    return NULL;
  }
  pl->m[pl->n++] = x;
  return x;
}

gsl_matrix *nn__cc_pool_random(nn__cc_pool *pl, size_t rows, size_t cols,
                               gsl_rng *r) {
  gsl_matrix *x = nn__cc_pool_mat(pl, rows, cols);
  if (x)
    nn__cc_mat_uniform(x, r);
  return x;
}

gsl_matrix *nn__cc_pool_copy(nn__cc_pool *pl, const gsl_matrix *m) {
  gsl_matrix *c = nn__cc_pool_mat(pl, m->size1, m->size2);
  if (c)
    nn__cc_mat_copy(c, m);
  return c;
}

void nn__cc_pool_free(nn__cc_pool *pl) {
  for (size_t i = 0; i < pl->n; i++)
    gsl_matrix_free(pl->m[i]);
  free(pl->m);
  *pl = (nn__cc_pool){0};
}

void nn__cc_mat_set(gsl_matrix *m, double v) {
  for (size_t i = 0; i < m->size1; i++)
    for (size_t j = 0; j < m->size2; j++)
      *nn__cc_at(m, i, j) = v;
}

void nn__cc_mat_uniform(gsl_matrix *m, gsl_rng *r) {
  for (size_t i = 0; i < m->size1; i++)
    for (size_t j = 0; j < m->size2; j++)
      *nn__cc_at(m, i, j) = 2.0 * gsl_rng_uniform(r) - 1.0;
}

void nn__cc_mat_copy(gsl_matrix *dst, const gsl_matrix *src) {
  for (size_t i = 0; i < src->size1; i++)
    memcpy(nn__cc_at(dst, i, 0), nn__cc_at(src, i, 0),
           src->size2 * sizeof(double));
}

int nn__cc_same_bits(const gsl_matrix *a, const gsl_matrix *b) {
  if (!nn__cc_same_shape(a, b))
    return 0;
  for (size_t i = 0; i < a->size1; i++)
    if (memcmp(nn__cc_at(a, i, 0), nn__cc_at(b, i, 0),
               a->size2 * sizeof(double)))
      return 0;
  return 1;
}

int nn__cc_all_finite(const gsl_matrix *m, size_t *bi, size_t *bj) {
  for (size_t i = 0; i < m->size1; i++)
    for (size_t j = 0; j < m->size2; j++)
      if (!isfinite(*nn__cc_at(m, i, j))) {
        *bi = i, *bj = j;
        return 0;
      }
  return 1;
}
