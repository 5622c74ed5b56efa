/* `twolayer` model plugin: the course's two-layer network.
 *
 *   H      = sigmoid(X W1 + b1)     W1: n_in x h, b1: 1 x h
 *   scores = H W2 + b2              W2: h x n_out, b2: 1 x n_out
 *
 * The core applies softmax + cross-entropy to the scores.  This is the hot
 * loop of a training run, so every buffer is allocated once in create for
 * max_batch rows, products go through gsl_blas_dgemm, and the element-wise
 * work is fused into as few passes over memory as possible. */
#include <config.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <gsl/gsl_blas.h>
#include <gsl/gsl_errno.h>

#include <nn/math.h>
#include <nn/plugin.h>

enum { TWOLAYER_W1, TWOLAYER_B1, TWOLAYER_W2, TWOLAYER_B2, TWOLAYER_NPARAM };

#define TWOLAYER_MAX_HIDDEN 1000000

typedef struct twolayer_model {
  size_t n_in, n_hidden, n_out, max_batch;
  size_t last_rows; /* rows of the last successful forward(); 0 = none */
  /* W1, b1, W2, b2 in that order; every value and grad is owned here. */
  nn_param params[TWOLAYER_NPARAM];
  gsl_matrix *H;  /* max_batch x h: hidden activations of the last forward,
                     kept for dW2 and for sigmoid' = H (1 - H) */
  gsl_matrix *dH; /* max_batch x h: dscores W2^T, then dZ1 in place */
} twolayer_model;

static const nn_option twolayer_options[] = {
    {"hidden_size", NN_OPT_INT, "128", "number of sigmoid hidden units",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1.0, (double)TWOLAYER_MAX_HIDDEN},
    {NULL, 0, NULL, NULL, 0, 0.0, 0.0},
};

static void twolayer_destroy(void *self) {
  twolayer_model *m = self;
  if (!m)
    return;
  for (size_t k = 0; k < TWOLAYER_NPARAM; k++) {
    gsl_matrix_free(m->params[k].value);
    gsl_matrix_free(m->params[k].grad);
  }
  gsl_matrix_free(m->H);
  gsl_matrix_free(m->dH);
  free(m);
}

/* a * b * sizeof(double) fits in size_t (gsl_matrix_alloc does not check). */
static int twolayer_fits(size_t a, size_t b) {
  return a <= SIZE_MAX / sizeof(double) / b;
}

static int twolayer_param_init(nn_param *p, const char *name, uint32_t flags,
                               size_t rows, size_t cols) {
  p->name = name;
  p->flags = flags;
  /* calloc: biases must start at exactly zero, and grads start defined. */
  p->value = gsl_matrix_calloc(rows, cols);
  p->grad = gsl_matrix_calloc(rows, cols);
  return p->value && p->grad;
}

static int twolayer_create(const nn_value *opts, size_t n_in, size_t n_out,
                           size_t max_batch, gsl_rng *rng, void **out,
                           nn_error *err) {
  if (!out)
    return nn_error_set(err, NN_EINVAL, "twolayer: NULL output pointer");
  *out = NULL;
  /* opts == NULL means "all defaults" (convenient for tests and tools). */
  const int64_t h = opts ? opts[0].i : 128;
  if (h < 1 || h > TWOLAYER_MAX_HIDDEN)
    return nn_error_set(err, NN_EINVAL,
                        "twolayer: hidden_size %lld is outside 1..%d",
                        (long long)h, TWOLAYER_MAX_HIDDEN);
  if (n_in == 0 || n_out == 0 || max_batch == 0)
    return nn_error_set(err, NN_EINVAL,
                        "twolayer: n_in (%zu), n_out (%zu) and max_batch "
                        "(%zu) must all be positive",
                        n_in, n_out, max_batch);
  if (!rng)
    return nn_error_set(err, NN_EINVAL, "twolayer: NULL random generator");
  const size_t nh = (size_t)h;
  if (!twolayer_fits(n_in, nh) || !twolayer_fits(nh, n_out) ||
      !twolayer_fits(max_batch, nh))
    return nn_error_set(err, NN_EINVAL,
                        "twolayer: %zu-%zu-%zu network with batch %zu is too "
                        "large",
                        n_in, nh, n_out, max_batch);

  twolayer_model *m = calloc(1, sizeof *m);
  if (!m)
    return nn_error_set(err, NN_ENOMEM, "twolayer: out of memory");
  m->n_in = n_in;
  m->n_hidden = nh;
  m->n_out = n_out;
  m->max_batch = max_batch;
  int ok = twolayer_param_init(&m->params[TWOLAYER_W1], "W1", NN_PARAM_WEIGHT,
                               n_in, nh);
  ok &= twolayer_param_init(&m->params[TWOLAYER_B1], "b1", NN_PARAM_BIAS, 1,
                            nh);
  ok &= twolayer_param_init(&m->params[TWOLAYER_W2], "W2", NN_PARAM_WEIGHT,
                            nh, n_out);
  ok &= twolayer_param_init(&m->params[TWOLAYER_B2], "b2", NN_PARAM_BIAS, 1,
                            n_out);
  m->H = gsl_matrix_alloc(max_batch, nh);
  m->dH = gsl_matrix_alloc(max_batch, nh);
  if (!ok || !m->H || !m->dH) {
    twolayer_destroy(m);
    return nn_error_set(err, NN_ENOMEM,
                        "twolayer: cannot allocate a %zu-%zu-%zu network for "
                        "batches of %zu",
                        n_in, nh, n_out, max_batch);
  }
  /* Draw order (W1 fully, then W2) is part of the seed contract. */
  nn_fill_gaussian(m->params[TWOLAYER_W1].value, rng, 0.001);
  nn_fill_gaussian(m->params[TWOLAYER_W2].value, rng, 0.001);
  *out = m;
  return NN_OK;
}

static nn_param *twolayer_params(void *self, size_t *n) {
  twolayer_model *m = self;
  if (n)
    *n = m ? TWOLAYER_NPARAM : 0;
  return m ? m->params : NULL;
}

static int twolayer_check(const twolayer_model *m, const gsl_matrix *X,
                          const gsl_matrix *s, const char *what,
                          nn_error *err) {
  if (!m || !X || !s)
    return nn_error_set(err, NN_EINVAL, "twolayer: NULL argument");
  if (X->size2 != m->n_in)
    return nn_error_set(err, NN_EINVAL,
                        "twolayer: X has %zu columns, model expects %zu",
                        X->size2, m->n_in);
  if (X->size1 == 0 || X->size1 > m->max_batch)
    return nn_error_set(err, NN_EINVAL,
                        "twolayer: batch of %zu rows, model accepts 1..%zu",
                        X->size1, m->max_batch);
  if (s->size1 != X->size1 || s->size2 != m->n_out)
    return nn_error_set(err, NN_EINVAL,
                        "twolayer: %s is %zux%zu, expected %zux%zu", what,
                        s->size1, s->size2, X->size1, m->n_out);
  return NN_OK;
}

/* Overflow-free logistic function: exp's argument is never positive. */
static inline double twolayer_sigmoid(double x) {
  if (x >= 0.0)
    return 1.0 / (1.0 + exp(-x));
  const double e = exp(x);
  return e / (1.0 + e);
}

static int twolayer_gemm_failed(nn_error *err, const char *what, int gs) {
  return nn_error_set(err, NN_ENUMERIC, "twolayer: %s failed: %s", what,
                      gsl_strerror(gs));
}

static int twolayer_forward(void *self, const gsl_matrix *X,
                            gsl_matrix *scores, nn_error *err) {
  twolayer_model *m = self;
  int rc = twolayer_check(m, X, scores, "scores", err);
  if (rc != NN_OK)
    return rc;
  m->last_rows = 0; /* a failed forward leaves nothing for backward */
  const size_t B = X->size1, nh = m->n_hidden, C = m->n_out;
  gsl_matrix_view H = gsl_matrix_submatrix(m->H, 0, 0, B, nh);

  int gs = gsl_blas_dgemm(CblasNoTrans, CblasNoTrans, 1.0, X,
                          m->params[TWOLAYER_W1].value, 0.0, &H.matrix);
  if (gs != GSL_SUCCESS)
    return twolayer_gemm_failed(err, "X W1", gs);
  /* Bias add and sigmoid in one pass over H. */
  const double *b1 = m->params[TWOLAYER_B1].value->data;
  for (size_t i = 0; i < B; i++) {
    double *h = H.matrix.data + i * H.matrix.tda;
    for (size_t j = 0; j < nh; j++)
      h[j] = twolayer_sigmoid(h[j] + b1[j]);
  }

  /* scores = b2 (broadcast) + H W2: seeding the output with the bias and
   * letting dgemm accumulate (beta = 1) saves a pass over the scores. */
  const double *b2 = m->params[TWOLAYER_B2].value->data;
  for (size_t i = 0; i < B; i++) {
    double *s = scores->data + i * scores->tda;
    for (size_t j = 0; j < C; j++)
      s[j] = b2[j];
  }
  gs = gsl_blas_dgemm(CblasNoTrans, CblasNoTrans, 1.0, &H.matrix,
                      m->params[TWOLAYER_W2].value, 1.0, scores);
  if (gs != GSL_SUCCESS)
    return twolayer_gemm_failed(err, "H W2", gs);
  m->last_rows = B;
  return NN_OK;
}

static int twolayer_backward(void *self, const gsl_matrix *X,
                             gsl_matrix *dscores, nn_error *err) {
  twolayer_model *m = self;
  int rc = twolayer_check(m, X, dscores, "dscores", err);
  if (rc != NN_OK)
    return rc;
  const size_t B = X->size1, nh = m->n_hidden;
  if (m->last_rows != B)
    return nn_error_set(err, NN_EINVAL,
                        "twolayer: backward on %zu rows needs a forward on "
                        "the same batch first",
                        B);
  gsl_matrix_view H = gsl_matrix_submatrix(m->H, 0, 0, B, nh);
  gsl_matrix_view dH = gsl_matrix_submatrix(m->dH, 0, 0, B, nh);

  /* Output layer: dW2 = H^T dscores, db2 = column sums of dscores. */
  int gs = gsl_blas_dgemm(CblasTrans, CblasNoTrans, 1.0, &H.matrix, dscores,
                          0.0, m->params[TWOLAYER_W2].grad);
  if (gs != GSL_SUCCESS)
    return twolayer_gemm_failed(err, "H^T dscores", gs);
  if (nn_column_sums(dscores, m->params[TWOLAYER_B2].grad) != NN_OK)
    return nn_error_set(err, NN_EINVAL, "twolayer: db2 shape mismatch");

  /* Back into the hidden layer: dH = dscores W2^T. */
  gs = gsl_blas_dgemm(CblasNoTrans, CblasTrans, 1.0, dscores,
                      m->params[TWOLAYER_W2].value, 0.0, &dH.matrix);
  if (gs != GSL_SUCCESS)
    return twolayer_gemm_failed(err, "dscores W2^T", gs);

  /* dZ1 = dH * H (1 - H) in place, with db1 accumulated in the same pass.
   * The derivative comes from the stored activation, so no exp here. */
  double *db1 = m->params[TWOLAYER_B1].grad->data;
  for (size_t j = 0; j < nh; j++)
    db1[j] = 0.0;
  for (size_t i = 0; i < B; i++) {
    const double *h = H.matrix.data + i * H.matrix.tda;
    double *d = dH.matrix.data + i * dH.matrix.tda;
    for (size_t j = 0; j < nh; j++) {
      d[j] *= h[j] * (1.0 - h[j]);
      db1[j] += d[j];
    }
  }

  /* dW1 = X^T dZ1 */
  gs = gsl_blas_dgemm(CblasTrans, CblasNoTrans, 1.0, X, &dH.matrix, 0.0,
                      m->params[TWOLAYER_W1].grad);
  if (gs != GSL_SUCCESS)
    return twolayer_gemm_failed(err, "X^T dZ1", gs);
  return NN_OK;
}

static const nn_model_ops twolayer_ops = {
    (uint32_t)sizeof(nn_model_ops), twolayer_create,  twolayer_destroy,
    twolayer_params,                 twolayer_forward, twolayer_backward,
};

NN_PLUGIN_DEFINE(NN_KIND_MODEL, "twolayer", "0.1.0",
                 "two-layer network: sigmoid hidden layer, linear output",
                 twolayer_options, &twolayer_ops, NULL);
