/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Shared numerics (see <nn/math.h>): activations, softmax, cross-entropy,
 * the fused softmax + cross-entropy used by the training loop, and the L2
 * rule.  Every function works on caller-owned matrices (views included,
 * so rows are addressed through tda), never allocates and never reports
 * errors through GSL's handler: shape problems come back as NN_EINVAL. */
#include <config.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_randist.h>

#include <nn/math.h>

#include "math/simd.h"


int nn_sigmoid(const gsl_matrix *x, gsl_matrix *out) {
  if (!same_shape(x, out))
    return NN_EINVAL;
  for (size_t i = 0; i < x->size1; i++) {
    const double *xr = row_cptr(x, i);
    double *o = row_ptr(out, i);
    for (size_t j = 0; j < x->size2; j++)
      o[j] = sigmoid1(xr[j]);
  }
  return NN_OK;
}

int nn_sigmoid_deriv(const gsl_matrix *x, gsl_matrix *out) {
  if (!same_shape(x, out))
    return NN_EINVAL;
  for (size_t i = 0; i < x->size1; i++) {
    const double *xr = row_cptr(x, i);
    double *o = row_ptr(out, i);
    for (size_t j = 0; j < x->size2; j++) {
      double s = sigmoid1(xr[j]);
      o[j] = s * (1.0 - s);
    }
  }
  return NN_OK;
}

int nn_relu(const gsl_matrix *x, gsl_matrix *out) {
  if (!same_shape(x, out))
    return NN_EINVAL;
  for (size_t i = 0; i < x->size1; i++) {
    const double *xr = row_cptr(x, i);
    double *o = row_ptr(out, i);
    /* Written as "x < 0 ? 0 : x" so a NaN passes through and the trainer's
     * finiteness check still sees it. */
    for (size_t j = 0; j < x->size2; j++)
      o[j] = xr[j] < 0.0 ? 0.0 : xr[j];
  }
  return NN_OK;
}

int nn_relu_deriv(const gsl_matrix *x, gsl_matrix *out) {
  if (!same_shape(x, out))
    return NN_EINVAL;
  for (size_t i = 0; i < x->size1; i++) {
    const double *xr = row_cptr(x, i);
    double *o = row_ptr(out, i);
    for (size_t j = 0; j < x->size2; j++)
      o[j] = xr[j] > 0.0 ? 1.0 : 0.0;
  }
  return NN_OK;
}

int nn_softmax_rows(const gsl_matrix *x, gsl_matrix *out) {
  if (!same_shape(x, out))
    return NN_EINVAL;
  const size_t cols = x->size2;
  if (cols == 0)
    return NN_OK; /* nothing to normalise (and no xr[0] to read) */
  for (size_t i = 0; i < x->size1; i++) {
    const double *xr = row_cptr(x, i);
    double *o = row_ptr(out, i);
    double mx = xr[0];
    for (size_t j = 1; j < cols; j++)
      if (xr[j] > mx)
        mx = xr[j];
    /* Shifting by the row maximum keeps every exponent <= 0, so exp never
     * overflows and at least one term of the sum is exactly 1. */
    double sum = 0.0;
    for (size_t j = 0; j < cols; j++) {
      o[j] = exp(xr[j] - mx);
      sum += o[j];
    }
    const double inv = 1.0 / sum;
    for (size_t j = 0; j < cols; j++)
      o[j] *= inv;
  }
  return NN_OK;
}

static int labels_ok(const uint32_t *labels, size_t rows, size_t cols) {
  if (rows > 0 && !labels)
    return 0;
  for (size_t i = 0; i < rows; i++)
    if (labels[i] >= cols)
      return 0;
  return 1;
}

int nn_cross_entropy(const gsl_matrix *probs, const uint32_t *labels,
                     double *loss) {
  if (!probs || !loss || !labels_ok(labels, probs->size1, probs->size2))
    return NN_EINVAL;
  if (probs->size1 == 0) {
    *loss = 0.0;
    return NN_OK;
  }
  /* A probability of exactly 0 (or a denormal) is clamped to DBL_MIN, the
   * smallest normal double, so the loss of that row is at most
   * -log(DBL_MIN) ~= 708.4: large and finite instead of +inf. */
  double sum = 0.0;
  for (size_t i = 0; i < probs->size1; i++) {
    double p = row_cptr(probs, i)[labels[i]];
    sum -= log(p > DBL_MIN ? p : DBL_MIN);
  }
  *loss = sum / (double)probs->size1;
  return NN_OK;
}

/* Index of the first maximum of a row (ties go to the lower index, like
 * numpy's argmax). */
static inline size_t row_argmax(const double *r, size_t cols) {
  size_t best = 0;
  for (size_t j = 1; j < cols; j++)
    if (r[j] > r[best])
      best = j;
  return best;
}

size_t nn_count_hits(const gsl_matrix *scores, const uint32_t *labels) {
  if (!scores || !labels)
    return 0;
  size_t hits = 0;
  for (size_t i = 0; i < scores->size1; i++)
    if (row_argmax(row_cptr(scores, i), scores->size2) == labels[i])
      hits++;
  return hits;
}

double nn_accuracy(const gsl_matrix *scores, const uint32_t *labels) {
  if (!scores || scores->size1 == 0)
    return 0.0;
  return (double)nn_count_hits(scores, labels) / (double)scores->size1;
}

int nn_softmax_xent(const gsl_matrix *scores, const uint32_t *labels,
                    gsl_matrix *dscores, double *loss, size_t *hits) {
  if (!scores || !loss || !hits)
    return NN_EINVAL;
  if (dscores && !same_shape(scores, dscores))
    return NN_EINVAL;
  const size_t rows = scores->size1, cols = scores->size2;
  /* Labels are checked up front: with dscores aliasing scores, failing
   * half-way would leave the caller's batch half overwritten. */
  if (!labels_ok(labels, rows, cols))
    return NN_EINVAL;
  if (rows == 0) {
    *loss = 0.0;
    *hits = 0;
    return NN_OK;
  }
  const double inv_b = 1.0 / (double)rows;
  double total = 0.0;
  size_t nhits = 0;
  const int isa = cpu_isa();
  double tmp[64]; /* exp(s - max) of a row when there is no dscores */
  for (size_t i = 0; i < rows; i++) {
    const double *s = row_cptr(scores, i);
    double *d = dscores ? row_ptr(dscores, i) : NULL;
    const size_t y = labels[i];
    const size_t am = row_argmax(s, cols);
    const double mx = s[am];
    /* Read the label's score before d (possibly == s) is written. */
    const double s_y = s[y];
    nhits += am == y;
    double sum = 0.0;
    /* exp(s - max) goes into d (or tmp) so the normalisation below needs
     * no second exp, with the vector exp when there is one (the scalar
     * calls were most of this function's time); each s[j] is read before
     * d[j] is written, so aliasing is fine. */
    double *e = d ? d : cols <= 64 ? tmp : NULL;
    if (e && exp_row(s, mx, e, cols, isa)) {
      for (size_t j = 0; j < cols; j++)
        sum += e[j];
    } else if (d) {
      for (size_t j = 0; j < cols; j++) {
        d[j] = exp(s[j] - mx);
        sum += d[j];
      }
    } else {
      for (size_t j = 0; j < cols; j++)
        sum += exp(s[j] - mx);
    }
    /* -log softmax(s)[y] = logsumexp(s) - s[y]: exact even when the
     * probability itself would underflow to 0, so no clamp is needed. */
    total += (mx + log(sum)) - s_y;
    if (d) {
      const double scale = inv_b / sum;
      for (size_t j = 0; j < cols; j++)
        d[j] *= scale;
      d[y] -= inv_b;
    }
  }
  *loss = total * inv_b;
  *hits = nhits;
  return NN_OK;
}

int nn_add_row_vector(gsl_matrix *m, const gsl_matrix *b) {
  if (!m || !b || b->size1 != 1 || b->size2 != m->size2)
    return NN_EINVAL;
  const double *bv = row_cptr(b, 0);
  for (size_t i = 0; i < m->size1; i++) {
    double *r = row_ptr(m, i);
    for (size_t j = 0; j < m->size2; j++)
      r[j] += bv[j];
  }
  return NN_OK;
}

int nn_column_sums(const gsl_matrix *m, gsl_matrix *out) {
  if (!m || !out || out->size1 != 1 || out->size2 != m->size2)
    return NN_EINVAL;
  double *o = row_ptr(out, 0);
  if (m->size1 == 0) {
    for (size_t j = 0; j < m->size2; j++)
      o[j] = 0.0;
    return NN_OK;
  }
  /* Start from row 0 instead of zeroing, so out may alias a 1-row m. */
  const double *r0 = row_cptr(m, 0);
  for (size_t j = 0; j < m->size2; j++)
    o[j] = r0[j];
  for (size_t i = 1; i < m->size1; i++) {
    const double *r = row_cptr(m, i);
    for (size_t j = 0; j < m->size2; j++)
      o[j] += r[j];
  }
  return NN_OK;
}

gsl_matrix *nn_matrix_calloc_aligned(size_t rows, size_t cols) {
  return nn_matrix_calloc_strided(rows, cols, cols);
}

gsl_matrix *nn_matrix_calloc_strided(size_t rows, size_t cols, size_t tda) {
  if (rows == 0 || cols == 0 || tda < cols ||
      tda > SIZE_MAX / sizeof(double) / rows)
    return NULL;
  /* aligned_alloc wants a size that is a multiple of the alignment. */
  const size_t bytes = (rows * tda * sizeof(double) + 63) / 64 * 64;
  gsl_matrix *m = malloc(sizeof *m);
  gsl_block *b = malloc(sizeof *b);
  double *data = bytes >= rows * tda * sizeof(double) ? aligned_alloc(64, bytes)
                                                       : NULL;
  if (!m || !b || !data) {
    free(m);
    free(b);
    free(data);
    return NULL;
  }
  memset(data, 0, bytes);
  b->size = rows * tda;
  b->data = data;
  /* Filled in here rather than by gsl_matrix_alloc_from_block, whose
   * failure goes through GSL's error handler (abort, unless the program
   * turned it off): library code must return NULL instead.  The matrix
   * owns the block, so gsl_matrix_free frees it with gsl_block_free:
   * free(data) and free(block), valid for aligned_alloc and malloc. */
  *m = (gsl_matrix){.size1 = rows, .size2 = cols, .tda = tda, .data = data,
                    .block = b, .owner = 1};
  return m;
}

void nn_fill_gaussian(gsl_matrix *m, gsl_rng *rng, double scale) {
  if (!m || !rng)
    return;
  /* Row-major draw order is part of the reproducibility contract: the same
   * seed gives the same weights whatever the matrix's tda. */
  for (size_t i = 0; i < m->size1; i++) {
    double *r = row_ptr(m, i);
    for (size_t j = 0; j < m->size2; j++)
      r[j] = scale * gsl_ran_gaussian(rng, 1.0);
  }
}

int nn_apply_l2(nn_param *params, size_t n, double reg) {
  if (n > 0 && !params)
    return NN_EINVAL;
  /* Validate everything first so an error leaves every grad untouched. */
  for (size_t k = 0; k < n; k++)
    if ((params[k].flags & NN_PARAM_WEIGHT) &&
        !same_shape(params[k].value, params[k].grad))
      return NN_EINVAL;
  if (reg == 0.0)
    return NN_OK; /* saves a pass, and 0 * inf would turn a grad into NaN */
  for (size_t k = 0; k < n; k++) {
    if (!(params[k].flags & NN_PARAM_WEIGHT))
      continue;
    const gsl_matrix *w = params[k].value;
    gsl_matrix *g = params[k].grad;
    for (size_t i = 0; i < w->size1; i++) {
      const double *wr = row_cptr(w, i);
      double *gr = row_ptr(g, i);
      for (size_t j = 0; j < w->size2; j++)
        gr[j] += reg * wr[j];
    }
  }
  return NN_OK;
}

int nn_check_batch(const char *model, size_t rows, size_t cols, size_t n_in,
                   size_t max_batch, const gsl_matrix *s, size_t n_out,
                   const char *what, nn_error *err) {
  if (!s)
    return nn_error_set(err, NN_EINVAL, "%s: NULL %s", model, what);
  if (cols != n_in)
    return nn_error_set(err, NN_EINVAL, "%s: X has %zu columns, model expects %zu",
                        model, cols, n_in);
  if (rows == 0 || rows > max_batch)
    return nn_error_set(err, NN_EINVAL, "%s: batch of %zu rows, model accepts 1..%zu",
                        model, rows, max_batch);
  if (s->size1 != rows || s->size2 != n_out)
    return nn_error_set(err, NN_EINVAL, "%s: %s is %zux%zu, expected %zux%zu",
                        model, what, s->size1, s->size2, rows, n_out);
  return NN_OK;
}
