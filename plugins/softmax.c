/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `softmax` model plugin: softmax regression with a ReLU in front of the
 * softmax, the course's first network.
 *
 *   scores = ReLU(X W1)      W1: n_in x n_out, no bias
 *
 * The core applies softmax + cross-entropy to the scores; this plugin only
 * maps X to scores and dscores to dW1.  All scratch is allocated once in
 * create for max_batch rows; forward/backward only take views of it.
 * Both products run on the batch as compressed sparse rows (MNIST is 81 %
 * zeros) through nn_csr_matmul: X W1, and dW1 = X^T dZ as transpose(X)
 * times dZ.  The core hands sparse batches over directly (the sparse-input
 * extension); a dense X is compressed first, so both paths compute the
 * same numbers. */
#include <config.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <nn/math.h>
#include <nn/plugin.h>
#include <nn/plugin_ext.h>

typedef struct softmax_model {
  size_t n_in, n_out, max_batch;
  size_t last_rows; /* rows of the last successful forward(); 0 = none */
  nn_param param;   /* W1; value and grad owned by this struct */
  gsl_matrix *Z;    /* max_batch x n_out pre-activations X W1, kept for the
                       ReLU derivative because the core may overwrite the
                       scores (dscores aliases them) before backward() */
  nn_csr_buffer Xd; /* a dense X compressed (dense forward/backward only) */
  nn_csr_buffer Xt; /* X^T for dW1, made here (see softmax_sparse): n_in
                       rows */
} softmax_model;

static void softmax_destroy(void *self) {
  softmax_model *m = self;
  if (!m)
    return;
  gsl_matrix_free(m->param.value);
  gsl_matrix_free(m->param.grad);
  gsl_matrix_free(m->Z);
  nn_csr_buffer_free(&m->Xd);
  nn_csr_buffer_free(&m->Xt);
  free(m);
}

/* What softmax_create allocates for these arguments (nn_memory). */
static int softmax_memory(const nn_value *opts, nn_shape in, size_t n_out,
                          size_t max_batch, nn_memory *need) {
  (void)opts; /* no options */
  const size_t n_in = nn_shape_size(in);
  if (!need || n_in == 0 || n_out == 0 || max_batch == 0)
    return NN_EINVAL;
  const uint64_t weights = nn_mem_doubles(n_in, n_out); /* W1 */
  const uint64_t cells = nn_mem_mul(max_batch, n_in);
  uint64_t bytes = nn_mem_mul(weights, 2); /* W1 and its gradient */
  bytes = nn_mem_add(bytes, nn_mem_doubles(max_batch, n_out)); /* Z */
  bytes = nn_mem_add(bytes, nn_mem_add(nn_mem_csr(max_batch, cells),
                                       nn_mem_csr(n_in, cells)));
  *need = (nn_memory){.bytes = nn_mem_add(bytes, sizeof(softmax_model)),
                      .weights = weights};
  return NN_OK;
}

static int softmax_create(const nn_value *opts, nn_shape in, size_t n_out,
                          size_t max_batch, gsl_rng *rng, void **out,
                          nn_error *err) {
  (void)opts; /* no options */
  if (!out)
    return nn_error_set(err, NN_EINVAL, "softmax: NULL output pointer");
  *out = NULL;
  /* Each example is a flat vector of its c h w values. */
  const size_t n_in = nn_shape_size(in);
  if (n_in == 0 || n_out == 0 || max_batch == 0)
    return nn_error_set(err, NN_EINVAL,
                        "softmax: n_in (%zu), n_out (%zu) and max_batch (%zu) "
                        "must all be positive",
                        n_in, n_out, max_batch);
  if (!rng)
    return nn_error_set(err, NN_EINVAL, "softmax: NULL random generator");
  /* Shapes too large to address say so, rather than "cannot allocate". */
  if (n_in > SIZE_MAX / sizeof(double) / n_out ||
      max_batch > SIZE_MAX / sizeof(double) / n_out ||
      max_batch > SIZE_MAX / sizeof(double) / n_in)
    return nn_error_set(err, NN_EINVAL,
                        "softmax: shape %zux%zu (batch %zu) is too large",
                        n_in, n_out, max_batch);

  softmax_model *m = calloc(1, sizeof *m);
  if (!m)
    return nn_error_set(err, NN_ENOMEM, "softmax: out of memory");
  m->n_in = n_in;
  m->n_out = n_out;
  m->max_batch = max_batch;
  m->param.name = "W1";
  m->param.flags = NN_PARAM_WEIGHT;
  m->param.value = nn_matrix_calloc_aligned(n_in, n_out);
  m->param.grad = nn_matrix_calloc_aligned(n_in, n_out);
  m->Z = nn_matrix_calloc_aligned(max_batch, n_out);
  /* Room for a fully dense batch: the worst case, touched only as far as
   * the batches actually fill it. */
  int ok = nn_csr_buffer_init(&m->Xd, max_batch, max_batch * n_in) == NN_OK;
  ok &= nn_csr_buffer_init(&m->Xt, n_in, max_batch * n_in) == NN_OK;
  if (!ok || !m->param.value || !m->param.grad || !m->Z) {
    softmax_destroy(m);
    return nn_error_set(err, NN_ENOMEM,
                        "softmax: cannot allocate W1 (%zux%zu) and a %zu-row "
                        "batch buffer",
                        n_in, n_out, max_batch);
  }
  nn_fill_gaussian(m->param.value, rng, 0.001);
  *out = m;
  return NN_OK;
}

static nn_param *softmax_params(void *self, size_t *n) {
  softmax_model *m = self;
  if (!m) {
    if (n)
      *n = 0;
    return NULL;
  }
  if (n)
    *n = 1;
  return &m->param;
}

/* Shapes of a call on a batch given as compressed rows (Xs) or as a
 * dense matrix (Xd), the other NULL: X is B x n_in with 1 <= B <=
 * max_batch, and s (the scores or dscores, named `what`) is B x n_out. */
static int softmax_check(const softmax_model *m, const nn_csr *Xs,
                         const gsl_matrix *Xd, const gsl_matrix *s,
                         const char *what, nn_error *err) {
  if (!m || (!Xs && !Xd))
    return nn_error_set(err, NN_EINVAL, "softmax: NULL argument");
  return nn_check_batch("softmax", Xs ? Xs->rows : Xd->size1,
                        Xs ? Xs->cols : Xd->size2, m->n_in, m->max_batch, s,
                        m->n_out, what, err);
}

static int softmax_forward_core(softmax_model *m, const nn_csr *X,
                                gsl_matrix *scores, nn_error *err) {
  m->last_rows = 0; /* a failed forward leaves nothing for backward */
  const size_t B = X->rows;
  gsl_matrix_view Z = gsl_matrix_submatrix(m->Z, 0, 0, B, m->n_out);
  if (nn_csr_matmul(X, m->param.value, NULL, NN_ACT_NONE, &Z.matrix) != NN_OK)
    return nn_error_set(err, NN_EINVAL, "softmax: X W1 shape mismatch");
  if (nn_relu(&Z.matrix, scores) != NN_OK)
    return nn_error_set(err, NN_EINVAL, "softmax: ReLU shape mismatch");
  m->last_rows = B;
  return NN_OK;
}

static int softmax_forward_csr(void *self, const nn_context *ctx,
                               const nn_csr *X, gsl_matrix *scores,
                               nn_error *err) {
  softmax_model *m = self;
  (void)ctx; /* the same in training and evaluation, and not random */
  int rc = softmax_check(m, X, NULL, scores, "scores", err);
  if (rc != NN_OK)
    return rc;
  return softmax_forward_core(m, X, scores, err);
}

static int softmax_forward(void *self, const nn_context *ctx,
                           const gsl_matrix *X, gsl_matrix *scores,
                           nn_error *err) {
  softmax_model *m = self;
  (void)ctx; /* the same in training and evaluation, and not random */
  int rc = softmax_check(m, NULL, X, scores, "scores", err);
  if (rc != NN_OK)
    return rc;
  m->last_rows = 0;
  if (nn_csr_from_dense(&m->Xd, X) != NN_OK)
    return nn_error_set(err, NN_EINVAL, "softmax: cannot compress X");
  return softmax_forward_core(m, &m->Xd.csr, scores, err);
}

static int softmax_backward_core(softmax_model *m, const nn_csr *X,
                                 gsl_matrix *dscores, nn_error *err) {
  const size_t B = X->rows;
  if (m->last_rows != B)
    return nn_error_set(err, NN_EINVAL,
                        "softmax: backward on %zu rows needs a forward on the "
                        "same batch first",
                        B);
  /* dZ = dscores * ReLU'(Z), written over dscores (the ABI lends it as
   * scratch), so no extra buffer or pass is needed. */
  const size_t C = m->n_out;
  for (size_t i = 0; i < B; i++) {
    const double *z = m->Z->data + i * m->Z->tda;
    double *d = dscores->data + i * dscores->tda;
    for (size_t j = 0; j < C; j++)
      if (!(z[j] > 0.0))
        d[j] = 0.0;
  }
  /* dW1 = X^T dZ, as the rows of X^T (one per input) times dZ. */
  if (nn_csr_transpose(&m->Xt, X) != NN_OK ||
      nn_csr_matmul(&m->Xt.csr, dscores, NULL, NN_ACT_NONE, m->param.grad) !=
          NN_OK)
    return nn_error_set(err, NN_EINVAL, "softmax: X^T dZ shape mismatch");
  return NN_OK;
}

/* Xt is NULL (softmax_sparse asks for none): the transpose is made here. */
static int softmax_backward_csr(void *self, const nn_csr *X, const nn_csr *Xt,
                                gsl_matrix *dscores, nn_error *err) {
  softmax_model *m = self;
  (void)Xt;
  int rc = softmax_check(m, X, NULL, dscores, "dscores", err);
  if (rc != NN_OK)
    return rc;
  return softmax_backward_core(m, X, dscores, err);
}

static int softmax_backward(void *self, const gsl_matrix *X,
                            gsl_matrix *dscores, nn_error *err) {
  softmax_model *m = self;
  int rc = softmax_check(m, NULL, X, dscores, "dscores", err);
  if (rc != NN_OK)
    return rc;
  /* Compressed again rather than trusting that Xd still holds this X. */
  if (nn_csr_from_dense(&m->Xd, X) != NN_OK)
    return nn_error_set(err, NN_EINVAL, "softmax: cannot compress X");
  return softmax_backward_core(m, &m->Xd.csr, dscores, err);
}

/* Flags 0, no NN_SPARSE_TRANSPOSE: the model makes X^T itself.  Having
 * the core make it on its helper thread (as twolayer does) made this
 * model's 2-thread epoch 0.036 -> 0.088 s: writing the transpose on the
 * other core took longer than this model's whole batch, so the main
 * thread waited for it.  No fused-step extension either: it is always
 * handed the core's transpose, and W1 is 784 x 10, so a separate step
 * costs nothing. */
static const nn_model_sparse softmax_sparse = {
    .size = sizeof(nn_model_sparse),
    .flags = 0,
    .forward = softmax_forward_csr,
    .backward = softmax_backward_csr,
};

static const void *softmax_extension(void *self, const char *id) {
  (void)self;
  if (id && strcmp(id, NN_EXT_MODEL_SPARSE) == 0)
    return &softmax_sparse;
  return NULL;
}

static const nn_model_ops softmax_ops = {
    .size = sizeof(nn_model_ops),
    .flags = 0, /* forward draws no random numbers */
    .create = softmax_create,
    .destroy = softmax_destroy,
    .params = softmax_params,
    .forward = softmax_forward,
    .backward = softmax_backward,
    .state = NULL, /* no buffers besides W1 */
    .extension = softmax_extension,
    .memory = softmax_memory,
};

NN_MODEL_PLUGIN("softmax", "0.1.0",
                "softmax regression: scores = ReLU(X W1), no bias", NULL,
                &softmax_ops);
