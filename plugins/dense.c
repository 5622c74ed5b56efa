/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `dense` layer plugin: the fully connected layer Y = X W + b.
 *
 *   W: n_in x units (NN_PARAM_WEIGHT), b: 1 x units (NN_PARAM_BIAS, absent
 *   with bias = false); the input may have any shape (it is flattened).
 *
 * A network of these layers must compute the numbers of the built-in
 * models bit for bit (dense -> sigmoid -> dense is twolayer, dense without
 * bias -> relu is softmax), so every product goes through the libnn
 * function those models use, with the same arguments:
 *   - on a dense input (a hidden or output layer) with a small W,
 *     nn_dense_matmul, with dX = dY W^T through a transposed copy of W, as
 *     twolayer's output layer does;
 *   - on a dense input with a larger W (a hidden layer of a deeper
 *     network), BLAS's dgemm: nn_dense_matmul is written for products of
 *     a few thousand elements and runs several times slower than dgemm at
 *     256 x 128;
 *   - as the first layer, on the sparse batch (NN_EXT_LAYER_SPARSE),
 *     nn_csr_matmul for X W + b and for dW = X^T dY, and the optimizer
 *     step inside backward (backward_step) as twolayer takes it for W1. */
#include <config.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_blas.h>

#include <nn/math.h>
#include <nn/plugin.h>
#include <nn/plugin_ext.h>

#define DENSE_MAX_UNITS 1000000

/* Rows of W per block of the step inside backward: 32 rows of dW (32 KB
 * at 128 units) are still in L1 when the optimizer reads them back. */
#define DENSE_STEP_ROWS 32

enum { DENSE_W, DENSE_B }; /* parameter indices, also the stepper's k */
enum { OPT_UNITS, OPT_BIAS, OPT_INIT, OPT_STD };

static const nn_option dense_options[] = {
    {"units", NN_OPT_INT, NULL, "number of output units",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1.0, (double)DENSE_MAX_UNITS},
    {"bias", NN_OPT_BOOL, "true", "add a learned bias b", 0, 0.0, 0.0},
    {"init", NN_OPT_STRING, "normal",
     "weight init: normal (N(0, std^2)), xavier or he", 0, 0.0, 0.0},
    {"std", NN_OPT_REAL, "0.001", "standard deviation for init = normal",
     NN_OPT_HAS_MIN | NN_OPT_MIN_EXCLUSIVE, 0.0, 0.0},
    {NULL, 0, NULL, NULL, 0, 0.0, 0.0},
};

/* Owns every matrix and buffer it points to (freed by dense_destroy). */
typedef struct dense_layer {
  size_t n_in, units, max_batch;
  size_t n_params;    /* 2, or 1 (W alone) without bias */
  nn_param params[2]; /* W, b */
  gsl_matrix *Wt;     /* units x n_in: W transposed, so that dX = dY W^T
                         runs along contiguous rows (as twolayer's W2t) */
  nn_csr_buffer Xt;   /* X^T of a sparse batch, when the core gives none */
} dense_layer;

static void dense_destroy(void *self) {
  dense_layer *l = self;
  if (!l)
    return;
  for (size_t k = 0; k < 2; k++) {
    gsl_matrix_free(l->params[k].value);
    gsl_matrix_free(l->params[k].grad);
  }
  gsl_matrix_free(l->Wt);
  nn_csr_buffer_free(&l->Xt);
  free(l);
}

/* a * b doubles are addressable (checked up front, so that a layer too
 * large says so rather than "cannot allocate"). */
/* W with more elements than this goes to dgemm (see the top of the file):
 * twolayer's output layer, 128 x 10, stays on nn_dense_matmul. */
#define DENSE_SMALL_W 4096

static int dense_is_small(const dense_layer *l) {
  return l->n_in * l->units <= DENSE_SMALL_W;
}

static int dense_fits(size_t a, size_t b) {
  return b == 0 || a <= SIZE_MAX / sizeof(double) / b;
}

/* The standard deviation of the initial weights for option `init`, or a
 * negative number for an unknown name. */
static double dense_init_std(const char *init, double std, size_t n_in,
                             size_t units) {
  if (strcmp(init, "normal") == 0)
    return std;
  if (strcmp(init, "xavier") == 0) /* Glorot normal */
    return sqrt(2.0 / ((double)n_in + (double)units));
  if (strcmp(init, "he") == 0)
    return sqrt(2.0 / (double)n_in);
  return -1.0;
}

/* What dense_create allocates for these arguments, and the output shape
 * it sets (nn_memory).  No answer for units out of range (create says
 * why); the other options do not change the sizes. */
static int dense_memory(const nn_value *opts, nn_shape in, size_t n_out,
                        size_t max_batch, nn_memory *need) {
  (void)n_out; /* a layer: units says */
  const size_t n_in = nn_shape_size(in);
  if (!need || !opts || n_in == 0 || max_batch == 0)
    return NN_EINVAL;
  const int64_t units = opts[OPT_UNITS].i;
  if (units < 1 || units > DENSE_MAX_UNITS)
    return NN_EINVAL;
  const size_t nu = (size_t)units;
  uint64_t weights = nn_mem_doubles(n_in, nu); /* W */
  if (opts[OPT_BIAS].b)
    weights = nn_mem_add(weights, nn_mem_doubles(1, nu)); /* b */
  uint64_t bytes = nn_mem_mul(weights, 2); /* values and gradients */
  if (nn_mem_mul(n_in, nu) <= DENSE_SMALL_W)
    bytes = nn_mem_add(bytes, nn_mem_doubles(nu, n_in)); /* Wt */
  bytes = nn_mem_add(bytes, nn_mem_csr(n_in, nn_mem_mul(max_batch, n_in)));
  *need = (nn_memory){.bytes = nn_mem_add(bytes, sizeof(dense_layer)),
                      .weights = weights,
                      .out = {1, 1, (uint32_t)nu}};
  return NN_OK;
}

static int dense_create(const nn_value *opts, nn_shape in, size_t max_batch,
                        gsl_rng *rng, nn_shape *out_shape, void **out,
                        nn_error *err) {
  if (!out || !out_shape)
    return nn_error_set(err, NN_EINVAL, "dense: NULL output pointer");
  *out = NULL;
  if (!opts)
    return nn_error_set(err, NN_EINVAL, "dense: units is required");
  const int64_t units = opts[OPT_UNITS].i;
  const char *init = opts[OPT_INIT].s ? opts[OPT_INIT].s : "normal";
  const double std = opts[OPT_STD].r;
  const size_t n_in = nn_shape_size(in);
  if (units < 1 || units > DENSE_MAX_UNITS)
    return nn_error_set(err, NN_EINVAL, "dense: units must be 1..%d, not %lld",
                        DENSE_MAX_UNITS, (long long)units);
  if (!(std > 0.0) || !isfinite(std))
    return nn_error_set(err, NN_EINVAL, "dense: std must be > 0, not %g", std);
  const double scale = dense_init_std(init, std, n_in, (size_t)units);
  if (scale < 0.0)
    return nn_error_set(err, NN_EINVAL,
                        "dense: init must be normal, xavier or he, not '%s'",
                        init);
  if (n_in == 0 || max_batch == 0)
    return nn_error_set(err, NN_EINVAL,
                        "dense: input size (%zu) and max_batch (%zu) must be "
                        "positive",
                        n_in, max_batch);
  if (!rng)
    return nn_error_set(err, NN_EINVAL, "dense: NULL random generator");
  const size_t nu = (size_t)units;
  if (!dense_fits(n_in, nu) || !dense_fits(max_batch, nu) ||
      !dense_fits(max_batch, n_in))
    return nn_error_set(err, NN_EINVAL,
                        "dense: %zu x %zu weights with batch %zu are too large",
                        n_in, nu, max_batch);

  dense_layer *l = calloc(1, sizeof *l);
  if (!l)
    return nn_error_set(err, NN_ENOMEM, "dense: out of memory");
  l->n_in = n_in;
  l->units = nu;
  l->max_batch = max_batch;
  l->n_params = opts[OPT_BIAS].b ? 2 : 1;
  /* Zeroed (biases start at exactly zero) and cache-line aligned for the
   * products' vector loads. */
  l->params[DENSE_W] = (nn_param){"W", nn_matrix_calloc_aligned(n_in, nu),
                                  nn_matrix_calloc_aligned(n_in, nu),
                                  NN_PARAM_WEIGHT};
  int ok = l->params[DENSE_W].value && l->params[DENSE_W].grad;
  if (l->n_params == 2) {
    l->params[DENSE_B] = (nn_param){"b", nn_matrix_calloc_aligned(1, nu),
                                    nn_matrix_calloc_aligned(1, nu),
                                    NN_PARAM_BIAS};
    ok &= l->params[DENSE_B].value && l->params[DENSE_B].grad;
  }
  /* W's transpose serves the small products only (dgemm transposes as
   * it reads). */
  if (dense_is_small(l))
    ok &= (l->Wt = nn_matrix_calloc_aligned(nu, n_in)) != NULL;
  /* Room for a fully dense batch, the worst case; only a first layer
   * without the core's transpose touches it. */
  ok &= nn_csr_buffer_init(&l->Xt, n_in, max_batch * n_in) == NN_OK;
  if (!ok) {
    dense_destroy(l);
    return nn_error_set(err, NN_ENOMEM,
                        "dense: cannot allocate %zu x %zu weights for batches "
                        "of %zu",
                        n_in, nu, max_batch);
  }
  nn_fill_gaussian(l->params[DENSE_W].value, rng, scale);
  *out_shape = (nn_shape){1, 1, (uint32_t)nu};
  *out = l;
  return NN_OK;
}

static nn_param *dense_params(void *self, size_t *n) {
  dense_layer *l = self;
  if (n)
    *n = l ? l->n_params : 0;
  return l ? l->params : NULL;
}

static gsl_matrix *dense_bias(const dense_layer *l, int grad) {
  if (l->n_params < 2)
    return NULL;
  return grad ? l->params[DENSE_B].grad : l->params[DENSE_B].value;
}

/* X (rows x cols) against the layer's input and s (Y or dY) against its
 * output. */
static int dense_check(const dense_layer *l, size_t rows, size_t cols,
                       const gsl_matrix *s, const char *what, nn_error *err) {
  if (!l)
    return nn_error_set(err, NN_EINVAL, "dense: NULL layer");
  return nn_check_batch("dense", rows, cols, l->n_in, l->max_batch, s,
                        l->units, what, err);
}

/* ------------------------------------------------------- dense input */


/* The large-W products through dgemm (GSL's CBLAS is OpenBLAS here). */
static int dense_forward_blas(dense_layer *l, const gsl_matrix *X,
                              gsl_matrix *Y) {
  const gsl_matrix *b = dense_bias(l, 0);
  if (gsl_blas_dgemm(CblasNoTrans, CblasNoTrans, 1.0, X,
                     l->params[DENSE_W].value, 0.0, Y))
    return NN_EINVAL;
  return b ? nn_add_row_vector(Y, b) : NN_OK;
}

static int dense_backward_blas(dense_layer *l, const gsl_matrix *X,
                               const gsl_matrix *dY, gsl_matrix *dX) {
  gsl_matrix *db = dense_bias(l, 1);
  if (gsl_blas_dgemm(CblasTrans, CblasNoTrans, 1.0, X, dY, 0.0,
                     l->params[DENSE_W].grad) ||
      (db && nn_column_sums(dY, db) != NN_OK))
    return NN_EINVAL;
  if (dX && gsl_blas_dgemm(CblasNoTrans, CblasTrans, 1.0, dY,
                           l->params[DENSE_W].value, 0.0, dX))
    return NN_EINVAL;
  return NN_OK;
}

static int dense_forward(void *self, const nn_context *ctx,
                         const gsl_matrix *X, gsl_matrix *Y, nn_error *err) {
  dense_layer *l = self;
  (void)ctx;
  if (!X)
    return nn_error_set(err, NN_EINVAL, "dense: NULL X");
  int rc = dense_check(l, X->size1, X->size2, Y, "Y", err);
  if (rc != NN_OK)
    return rc;
  if (!dense_is_small(l))
    return dense_forward_blas(l, X, Y) == NN_OK
               ? NN_OK
               : nn_error_set(err, NN_EINVAL, "dense: X W failed in BLAS");
  if (nn_dense_matmul(X, 0, l->params[DENSE_W].value, dense_bias(l, 0), Y) !=
      NN_OK)
    return nn_error_set(err, NN_EINVAL, "dense: X W shape mismatch");
  return NN_OK;
}

static int dense_backward(void *self, const gsl_matrix *X,
                          const gsl_matrix *Y, gsl_matrix *dY, gsl_matrix *dX,
                          nn_error *err) {
  dense_layer *l = self;
  (void)Y;
  if (!X)
    return nn_error_set(err, NN_EINVAL, "dense: NULL X");
  int rc = dense_check(l, X->size1, X->size2, dY, "dY", err);
  if (rc != NN_OK)
    return rc;
  if (dX && (dX->size1 != X->size1 || dX->size2 != X->size2))
    return nn_error_set(err, NN_EINVAL, "dense: dX is %zux%zu, expected %zux%zu",
                        dX->size1, dX->size2, X->size1, X->size2);
  if (!dense_is_small(l))
    return dense_backward_blas(l, X, dY, dX) == NN_OK
               ? NN_OK
               : nn_error_set(err, NN_EINVAL, "dense: dW or dX failed in BLAS");
  gsl_matrix *db = dense_bias(l, 1);
  if (nn_dense_matmul(X, 1, dY, NULL, l->params[DENSE_W].grad) != NN_OK ||
      (db && nn_column_sums(dY, db) != NN_OK))
    return nn_error_set(err, NN_EINVAL, "dense: dW shape mismatch");
  if (!dX)
    return NN_OK;
  const gsl_matrix *W = l->params[DENSE_W].value;
  for (size_t i = 0; i < l->n_in; i++)
    for (size_t j = 0; j < l->units; j++)
      l->Wt->data[j * l->Wt->tda + i] = W->data[i * W->tda + j];
  if (nn_dense_matmul(dY, 0, l->Wt, NULL, dX) != NN_OK)
    return nn_error_set(err, NN_EINVAL, "dense: dX shape mismatch");
  return NN_OK;
}

/* ------------------------------------------------------- sparse input */

static int dense_forward_csr(void *self, const nn_context *ctx,
                             const nn_csr *X, gsl_matrix *Y, nn_error *err) {
  dense_layer *l = self;
  (void)ctx;
  if (!X || !X->start)
    return nn_error_set(err, NN_EINVAL, "dense: NULL X");
  int rc = dense_check(l, X->rows, X->cols, Y, "Y", err);
  if (rc != NN_OK)
    return rc;
  if (nn_csr_matmul(X, l->params[DENSE_W].value, dense_bias(l, 0),
                    NN_ACT_NONE, Y) != NN_OK)
    return nn_error_set(err, NN_EINVAL, "dense: X W shape mismatch");
  return NN_OK;
}

/* The arguments of a sparse backward; *Xt is the core's transpose, or
 * ours when it gave none. */
static int dense_check_csr(dense_layer *l, const nn_csr *X, const nn_csr **Xt,
                           const gsl_matrix *dY, nn_error *err) {
  if (!X || !X->start)
    return nn_error_set(err, NN_EINVAL, "dense: NULL X");
  int rc = dense_check(l, X->rows, X->cols, dY, "dY", err);
  if (rc != NN_OK)
    return rc;
  const size_t nnz = X->start[X->rows] - X->start[0];
  const nn_csr *T = *Xt;
  if (T) {
    if (T->rows != X->cols || T->cols != X->rows || !T->start ||
        T->start[T->rows] - T->start[0] != nnz)
      return nn_error_set(err, NN_EINVAL,
                          "dense: X^T is %zux%zu, not the transpose of the "
                          "%zux%zu batch",
                          T->rows, T->cols, X->rows, X->cols);
    return NN_OK;
  }
  /* nn_csr_transpose reads entries from 0: it takes no row view. */
  if (X->start[0] != 0 || nn_csr_transpose(&l->Xt, X) != NN_OK)
    return nn_error_set(err, NN_EINVAL, "dense: cannot transpose X");
  *Xt = &l->Xt.csr;
  return NN_OK;
}

/* db = the column sums of dY, each from +0.0 down the rows.  That is the
 * order of nn_column_sums, but nn_column_sums starts from the first row,
 * so a column of -0.0 sums to -0.0 there and to +0.0 here.  twolayer's
 * first-layer bias gradient comes from nn_sigmoid_backward, which sums
 * from zero: this gives its bits in every case. */
static void dense_bias_grad_from_zero(const gsl_matrix *dY, gsl_matrix *db) {
  double *o = db->data;
  for (size_t j = 0; j < dY->size2; j++)
    o[j] = 0.0;
  for (size_t i = 0; i < dY->size1; i++) {
    const double *r = dY->data + i * dY->tda;
    for (size_t j = 0; j < dY->size2; j++)
      o[j] += r[j];
  }
}

static int dense_backward_csr(void *self, const nn_csr *X, const nn_csr *Xt,
                              const gsl_matrix *Y, gsl_matrix *dY,
                              nn_error *err) {
  dense_layer *l = self;
  (void)Y;
  int rc = dense_check_csr(l, X, &Xt, dY, err);
  if (rc != NN_OK)
    return rc;
  gsl_matrix *db = dense_bias(l, 1);
  if (db)
    dense_bias_grad_from_zero(dY, db);
  if (nn_csr_matmul(Xt, dY, NULL, NN_ACT_NONE, l->params[DENSE_W].grad) !=
      NN_OK)
    return nn_error_set(err, NN_EINVAL, "dense: X^T dY shape mismatch");
  return NN_OK;
}

/* backward_csr with the step of each parameter taken through st as soon
 * as its gradient is final: b at once, W in blocks of DENSE_STEP_ROWS
 * rows, each stepped while it is still in L1; or, when the optimizer hands
 * its plain SGD rule over, W updated row by row inside the product that
 * makes dW (nn_csr_matmul_sgd), so dW is never stored. */
static int dense_backward_step(void *self, const nn_csr *X, const nn_csr *Xt,
                               const gsl_matrix *Y, gsl_matrix *dY,
                               const nn_stepper *st, nn_error *err) {
  dense_layer *l = self;
  (void)Y;
  if (!st || !st->rows)
    return nn_error_set(err, NN_EINVAL, "dense: NULL stepper");
  int rc = dense_check_csr(l, X, &Xt, dY, err);
  if (rc != NN_OK)
    return rc;
  gsl_matrix *db = dense_bias(l, 1);
  if (db) {
    dense_bias_grad_from_zero(dY, db);
    if ((rc = st->rows(st->ctx, DENSE_B, 0, 1, err)) != NN_OK)
      return rc;
  }
  gsl_matrix *W = l->params[DENSE_W].value;
  double lr, reg;
  if (st->sgd && st->sgd(st->ctx, DENSE_W, &lr, &reg)) {
    if (nn_csr_matmul_sgd(Xt, dY, W, lr, reg) != NN_OK)
      return nn_error_set(err, NN_EINVAL, "dense: X^T dY shape mismatch");
    return NN_OK;
  }
  for (size_t r0 = 0; r0 < l->n_in; r0 += DENSE_STEP_ROWS) {
    const size_t r1 =
        l->n_in - r0 < DENSE_STEP_ROWS ? l->n_in : r0 + DENSE_STEP_ROWS;
    const nn_csr part = nn_csr_rows(Xt, r0, r1);
    gsl_matrix_view g = gsl_matrix_submatrix(l->params[DENSE_W].grad, r0, 0,
                                             r1 - r0, l->units);
    if (nn_csr_matmul(&part, dY, NULL, NN_ACT_NONE, &g.matrix) != NN_OK)
      return nn_error_set(err, NN_EINVAL, "dense: X^T dY shape mismatch");
    if ((rc = st->rows(st->ctx, DENSE_W, r0, r1, err)) != NN_OK)
      return rc;
  }
  return NN_OK;
}

static const nn_layer_sparse dense_sparse = {
    .size = sizeof(nn_layer_sparse),
    .flags = NN_SPARSE_TRANSPOSE,
    .forward = dense_forward_csr,
    .backward = dense_backward_csr,
    .backward_step = dense_backward_step,
};

static const void *dense_extension(void *self, const char *id) {
  (void)self;
  return id && strcmp(id, NN_EXT_LAYER_SPARSE) == 0 ? &dense_sparse : NULL;
}

static const nn_layer_ops dense_ops = {
    .size = sizeof(nn_layer_ops),
    .flags = 0,
    .create = dense_create,
    .destroy = dense_destroy,
    .params = dense_params,
    .forward = dense_forward,
    .backward = dense_backward,
    .extension = dense_extension,
    .memory = dense_memory,
};

NN_LAYER_PLUGIN("dense", "0.1.0", "fully connected layer: Y = X W + b",
                dense_options, &dense_ops);
