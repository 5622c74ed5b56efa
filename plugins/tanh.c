/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `tanh` layer plugin: Y = tanh(X), element by element; backward uses the
 * stored output, d * (1 - y^2), so it needs no second tanh. */
#include <config.h>

#include <math.h>

#include "elementwise.h"

ELEMENTWISE_CREATE(tanh)

static int tanh_forward(void *self, const nn_context *ctx, const gsl_matrix *X,
                        gsl_matrix *Y, nn_error *err) {
  const elementwise_layer *l = self;
  (void)ctx;
  int rc = elementwise_check(l, X, Y, "Y", err);
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
  const elementwise_layer *l = self;
  int rc = elementwise_check_backward(l, X, Y, dY, dX, err);
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
    .destroy = elementwise_destroy,
    .memory = elementwise_memory,
    .forward = tanh_forward,
    .backward = tanh_backward,
};

NN_LAYER_PLUGIN("tanh", "0.1.0", "hyperbolic tangent, element-wise", NULL,
                &tanh_ops);
