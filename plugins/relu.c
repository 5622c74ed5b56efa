/* `relu` layer plugin: Y = max(X, 0), element by element.
 *
 * dense (no bias) -> relu must give the bits of the softmax model, so the
 * rules are its: forward is nn_relu (a NaN passes through), and backward
 * keeps dY where X > 0 and writes 0 elsewhere, at 0 and for a NaN too. */
#include <config.h>

#include <stdlib.h>

#include <nn/math.h>
#include <nn/plugin.h>

/* Owns nothing but itself. */
typedef struct relu_layer {
  size_t n, max_batch;
} relu_layer;

static int relu_create(const nn_value *opts, nn_shape in, size_t max_batch,
                       gsl_rng *rng, nn_shape *out_shape, void **out,
                       nn_error *err) {
  (void)opts, (void)rng;
  if (!out || !out_shape)
    return nn_error_set(err, NN_EINVAL, "relu: NULL output pointer");
  *out = NULL;
  if (nn_shape_size(in) == 0 || max_batch == 0)
    return nn_error_set(err, NN_EINVAL,
                        "relu: input size and max_batch must be positive");
  relu_layer *l = malloc(sizeof *l);
  if (!l)
    return nn_error_set(err, NN_ENOMEM, "relu: out of memory");
  *l = (relu_layer){nn_shape_size(in), max_batch};
  *out_shape = in;
  *out = l;
  return NN_OK;
}

static void relu_destroy(void *self) { free(self); }

static int relu_check(const relu_layer *l, const gsl_matrix *X,
                      const gsl_matrix *s, const char *what, nn_error *err) {
  if (!l || !X)
    return nn_error_set(err, NN_EINVAL, "relu: NULL argument");
  return nn_check_batch("relu", X->size1, X->size2, l->n, l->max_batch, s,
                        l->n, what, err);
}

static int relu_forward(void *self, const nn_context *ctx, const gsl_matrix *X,
                        gsl_matrix *Y, nn_error *err) {
  (void)ctx;
  int rc = relu_check(self, X, Y, "Y", err);
  if (rc != NN_OK)
    return rc;
  return nn_relu(X, Y) == NN_OK
             ? NN_OK
             : nn_error_set(err, NN_EINVAL, "relu: shape mismatch");
}

static int relu_backward(void *self, const gsl_matrix *X, const gsl_matrix *Y,
                         gsl_matrix *dY, gsl_matrix *dX, nn_error *err) {
  const relu_layer *l = self;
  (void)Y;
  int rc = relu_check(l, X, dY, "dY", err);
  if (rc == NN_OK && dX)
    rc = relu_check(l, X, dX, "dX", err);
  if (rc != NN_OK || !dX)
    return rc;
  for (size_t i = 0; i < X->size1; i++) {
    const double *x = X->data + i * X->tda, *d = dY->data + i * dY->tda;
    double *o = dX->data + i * dX->tda;
    for (size_t j = 0; j < l->n; j++)
      o[j] = x[j] > 0.0 ? d[j] : 0.0;
  }
  return NN_OK;
}

static const nn_layer_ops relu_ops = {
    .size = sizeof(nn_layer_ops),
    .create = relu_create,
    .destroy = relu_destroy,
    .forward = relu_forward,
    .backward = relu_backward,
};

NN_LAYER_PLUGIN("relu", "0.1.0", "rectified linear unit, element-wise", NULL,
                &relu_ops);
