/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `sigmoid` layer plugin: Y = 1 / (1 + exp(-X)), element by element.
 *
 * dense -> sigmoid must give the bits of twolayer, whose hidden layer
 * applies the sigmoid inside nn_csr_matmul (NN_ACT_SIGMOID).  That
 * sigmoid is the product kernels' vector one where the CPU has AVX2 or
 * AVX-512, while nn_sigmoid calls libm's exp: on such CPUs a few percent
 * of the outputs differ in the last bit (3 % of a 64 x 128 batch of
 * N(0, 1) pre-activations).  So forward takes the kernels' sigmoid: each
 * row of Y is the 1 x 1 identity times that row of X through
 * nn_csr_matmul with NN_ACT_SIGMOID, whose sum is the one exact product
 * 1.0 * x = x before the activation.  It is no slower than nn_sigmoid's
 * scalar exp (about 15 against 80 us for 64 x 128).  backward is
 * d * (y * (1 - y)), the expression of nn_sigmoid_backward. */
#include <config.h>

#include <stdint.h>

#include "elementwise.h"

/* The 1 x 1 identity as compressed rows. */
static const size_t sigmoid_one_start[2] = {0, 1};
static const uint32_t sigmoid_one_index[1] = {0};
static const double sigmoid_one_value[1] = {1.0};
static const nn_csr sigmoid_one = {sizeof(nn_csr), 1, 1, sigmoid_one_start,
                                   sigmoid_one_index, sigmoid_one_value};

ELEMENTWISE_CREATE(sigmoid)

static int sigmoid_forward(void *self, const nn_context *ctx,
                           const gsl_matrix *X, gsl_matrix *Y, nn_error *err) {
  const elementwise_layer *l = self;
  (void)ctx;
  int rc = elementwise_check(l, X, Y, "Y", err);
  if (rc != NN_OK)
    return rc;
  for (size_t i = 0; i < X->size1; i++) {
    gsl_matrix_const_view x = gsl_matrix_const_submatrix(X, i, 0, 1, l->n);
    gsl_matrix_view y = gsl_matrix_submatrix(Y, i, 0, 1, l->n);
    if (nn_csr_matmul(&sigmoid_one, &x.matrix, NULL, NN_ACT_SIGMOID,
                      &y.matrix) != NN_OK)
      return nn_error_set(err, NN_EINVAL, "sigmoid: shape mismatch");
  }
  return NN_OK;
}

static int sigmoid_backward(void *self, const gsl_matrix *X,
                            const gsl_matrix *Y, gsl_matrix *dY,
                            gsl_matrix *dX, nn_error *err) {
  const elementwise_layer *l = self;
  int rc = elementwise_check_backward(l, X, Y, dY, dX, err);
  if (rc != NN_OK || !dX)
    return rc;
  for (size_t i = 0; i < X->size1; i++) {
    const double *y = Y->data + i * Y->tda, *d = dY->data + i * dY->tda;
    double *o = dX->data + i * dX->tda;
    for (size_t j = 0; j < l->n; j++)
      o[j] = d[j] * (y[j] * (1.0 - y[j]));
  }
  return NN_OK;
}

static const nn_layer_ops sigmoid_ops = {
    .size = sizeof(nn_layer_ops),
    .create = sigmoid_create,
    .destroy = elementwise_destroy,
    .memory = elementwise_memory,
    .forward = sigmoid_forward,
    .backward = sigmoid_backward,
};

NN_LAYER_PLUGIN("sigmoid", "0.1.0", "logistic sigmoid, element-wise", NULL,
                &sigmoid_ops);
