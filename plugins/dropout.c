/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `dropout` layer plugin: inverted dropout.
 *
 * While training, each unit of each example is kept with probability
 * 1 - p and scaled by 1 / (1 - p), or set to 0; so the expected output is
 * the input, and evaluation needs no rescaling: there the layer is the
 * identity.  The mask comes from the random stream the core lends for
 * the batch (ctx->rng, derived from the seed, epoch and batch), one
 * uniform draw per unit in row-major order, so a run reproduces and
 * resumes bit for bit.  backward applies the mask of the last forward. */
#include <config.h>

#include <stdint.h>
#include <stdlib.h>

#include <gsl/gsl_rng.h>

#include <nn/math.h>
#include <nn/plugin.h>

static const nn_option dropout_options[] = {
    {"p", NN_OPT_REAL, "0.5", "probability of dropping a unit while training",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX | NN_OPT_MAX_EXCLUSIVE, 0.0, 1.0},
    {NULL, 0, NULL, NULL, 0, 0.0, 0.0},
};

/* Owns `keep`. */
typedef struct dropout_layer {
  size_t n, max_batch;
  double p, scale;     /* scale = 1 / (1 - p) */
  unsigned char *keep; /* max_batch x n: 1 where the last training forward
                          kept the unit */
  size_t last_rows;    /* rows of the last forward; 0 = none */
  int last_train;      /* the last forward was training (keep is its mask) */
} dropout_layer;

static void dropout_destroy(void *self) {
  dropout_layer *l = self;
  if (!l)
    return;
  free(l->keep);
  free(l);
}

/* What dropout_create allocates: the instance and its mask, one byte per
 * unit of a batch; the output has the input's shape. */
static int dropout_memory(const nn_value *opts, nn_shape in, size_t n_out,
                          size_t max_batch, nn_memory *need) {
  (void)opts, (void)n_out;
  if (!need || nn_shape_size(in) == 0 || max_batch == 0) return NN_EINVAL;
  *need = (nn_memory){
      .bytes = nn_mem_add(sizeof(dropout_layer),
                          nn_mem_mul(max_batch, nn_shape_size(in))),
      .out = in};
  return NN_OK;
}

static int dropout_create(const nn_value *opts, nn_shape in, size_t max_batch,
                          gsl_rng *rng, nn_shape *out_shape, void **out,
                          nn_error *err) {
  (void)rng; /* no weights to draw */
  if (!out || !out_shape)
    return nn_error_set(err, NN_EINVAL, "dropout: NULL output pointer");
  *out = NULL;
  const double p = opts ? opts[0].r : 0.5;
  if (!(p >= 0.0 && p < 1.0))
    return nn_error_set(err, NN_EINVAL, "dropout: p must be in [0, 1), not %g",
                        p);
  const size_t n = nn_shape_size(in);
  if (n == 0 || max_batch == 0)
    return nn_error_set(err, NN_EINVAL,
                        "dropout: input size and max_batch must be positive");
  if (max_batch > SIZE_MAX / n)
    return nn_error_set(err, NN_EINVAL,
                        "dropout: %zu units with batch %zu are too many", n,
                        max_batch);
  dropout_layer *l = calloc(1, sizeof *l);
  if (!l || !(l->keep = malloc(max_batch * n))) {
    dropout_destroy(l);
    return nn_error_set(err, NN_ENOMEM,
                        "dropout: cannot allocate a %zu x %zu mask", max_batch,
                        n);
  }
  l->n = n;
  l->max_batch = max_batch;
  l->p = p;
  l->scale = 1.0 / (1.0 - p);
  *out_shape = in;
  *out = l;
  return NN_OK;
}

static int dropout_check(const dropout_layer *l, const gsl_matrix *X,
                         const gsl_matrix *s, const char *what,
                         nn_error *err) {
  if (!l || !X)
    return nn_error_set(err, NN_EINVAL, "dropout: NULL argument");
  return nn_check_batch("dropout", X->size1, X->size2, l->n, l->max_batch, s,
                        l->n, what, err);
}

static int dropout_forward(void *self, const nn_context *ctx,
                           const gsl_matrix *X, gsl_matrix *Y, nn_error *err) {
  dropout_layer *l = self;
  if (!l)
    return nn_error_set(err, NN_EINVAL, "dropout: NULL layer");
  l->last_rows = 0; /* a failed forward leaves no mask */
  int rc = dropout_check(l, X, Y, "Y", err);
  if (rc != NN_OK)
    return rc;
  const int train = ctx && ctx->train;
  if (train && !ctx->rng)
    return nn_error_set(err, NN_EINVAL,
                        "dropout: training needs the batch's random stream");
  for (size_t i = 0; i < X->size1; i++) {
    const double *x = X->data + i * X->tda;
    double *y = Y->data + i * Y->tda;
    unsigned char *k = l->keep + i * l->n;
    for (size_t j = 0; j < l->n; j++) {
      if (train)
        k[j] = gsl_rng_uniform(ctx->rng) >= l->p;
      y[j] = !train ? x[j] : k[j] ? x[j] * l->scale : 0.0;
    }
  }
  l->last_rows = X->size1;
  l->last_train = train;
  return NN_OK;
}

static int dropout_backward(void *self, const gsl_matrix *X,
                            const gsl_matrix *Y, gsl_matrix *dY,
                            gsl_matrix *dX, nn_error *err) {
  const dropout_layer *l = self;
  (void)Y;
  int rc = dropout_check(l, X, dY, "dY", err);
  if (rc == NN_OK && dX)
    rc = dropout_check(l, X, dX, "dX", err);
  if (rc != NN_OK || !dX)
    return rc;
  if (l->last_rows != X->size1)
    return nn_error_set(err, NN_EINVAL,
                        "dropout: backward on %zu rows needs a forward on the "
                        "same batch first",
                        X->size1);
  for (size_t i = 0; i < X->size1; i++) {
    const double *d = dY->data + i * dY->tda;
    const unsigned char *k = l->keep + i * l->n;
    double *o = dX->data + i * dX->tda;
    for (size_t j = 0; j < l->n; j++)
      o[j] = !l->last_train ? d[j] : k[j] ? d[j] * l->scale : 0.0;
  }
  return NN_OK;
}

static const nn_layer_ops dropout_ops = {
    .size = sizeof(nn_layer_ops),
    .flags = NN_STOCHASTIC,
    .create = dropout_create,
    .destroy = dropout_destroy,
    .memory = dropout_memory,
    .forward = dropout_forward,
    .backward = dropout_backward,
};

NN_LAYER_PLUGIN("dropout", "0.1.0",
                "inverted dropout: drops units with probability p in training",
                dropout_options, &dropout_ops);
