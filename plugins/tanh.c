/* `tanh` layer plugin: Y = tanh(X), element by element; backward uses the
 * stored output, d * (1 - y^2), so it needs no second tanh. */
#include <config.h>

#include <math.h>
#include <stdlib.h>

#include <nn/math.h>
#include <nn/plugin.h>

/* Owns nothing but itself. */
typedef struct tanh_layer {
  size_t n, max_batch;
} tanh_layer;

static int tanh_create(const nn_value *opts, nn_shape in, size_t max_batch,
                       gsl_rng *rng, nn_shape *out_shape, void **out,
                       nn_error *err) {
  (void)opts, (void)rng;
  if (!out || !out_shape)
    return nn_error_set(err, NN_EINVAL, "tanh: NULL output pointer");
  *out = NULL;
  if (nn_shape_size(in) == 0 || max_batch == 0)
    return nn_error_set(err, NN_EINVAL,
                        "tanh: input size and max_batch must be positive");
  tanh_layer *l = malloc(sizeof *l);
  if (!l)
    return nn_error_set(err, NN_ENOMEM, "tanh: out of memory");
  *l = (tanh_layer){nn_shape_size(in), max_batch};
  *out_shape = in;
  *out = l;
  return NN_OK;
}

static void tanh_destroy(void *self) { free(self); }

static int tanh_check(const tanh_layer *l, const gsl_matrix *X,
                      const gsl_matrix *s, const char *what, nn_error *err) {
  if (!l || !X)
    return nn_error_set(err, NN_EINVAL, "tanh: NULL argument");
  return nn_check_batch("tanh", X->size1, X->size2, l->n, l->max_batch, s,
                        l->n, what, err);
}

static int tanh_forward(void *self, const nn_context *ctx, const gsl_matrix *X,
                        gsl_matrix *Y, nn_error *err) {
  const tanh_layer *l = self;
  (void)ctx;
  int rc = tanh_check(l, X, Y, "Y", err);
  if (rc != NN_OK)
    return rc;
  for (size_t i = 0; i < X->size1; i++) {
    const double *x = X->data + i * X->tda;
    double *y = Y->data + i * Y->tda;
    for (size_t j = 0; j < l->n; j++)
      y[j] = tanh(x[j]);
  }
  return NN_OK;
}

static int tanh_backward(void *self, const gsl_matrix *X, const gsl_matrix *Y,
                         gsl_matrix *dY, gsl_matrix *dX, nn_error *err) {
  const tanh_layer *l = self;
  int rc = tanh_check(l, X, dY, "dY", err);
  if (rc == NN_OK)
    rc = tanh_check(l, X, Y, "Y", err);
  if (rc == NN_OK && dX)
    rc = tanh_check(l, X, dX, "dX", err);
  if (rc != NN_OK || !dX)
    return rc;
  for (size_t i = 0; i < X->size1; i++) {
    const double *y = Y->data + i * Y->tda, *d = dY->data + i * dY->tda;
    double *o = dX->data + i * dX->tda;
    for (size_t j = 0; j < l->n; j++)
      o[j] = d[j] * (1.0 - y[j] * y[j]);
  }
  return NN_OK;
}

static const nn_layer_ops tanh_ops = {
    .size = sizeof(nn_layer_ops),
    .create = tanh_create,
    .destroy = tanh_destroy,
    .forward = tanh_forward,
    .backward = tanh_backward,
};

NN_LAYER_PLUGIN("tanh", "0.1.0", "hyperbolic tangent, element-wise", NULL,
                &tanh_ops);
