/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `relu` layer plugin: Y = max(X, 0), element by element.
 *
 * dense (no bias) -> relu must give the bits of the softmax model, so the
 * rules are its: forward is nn_relu's rule (x < 0 ? 0 : x, so a NaN passes
 * through), and backward keeps dY where X > 0 and writes 0 elsewhere, at 0
 * and for a NaN too.
 *
 * Both loops select with a bit mask instead of a branch: after a
 * convolution the signs of X are close to random, and a branch per value
 * would be mispredicted every other time.  The mask keeps the rules'
 * exact bits: +0.0 where they write 0, the value itself otherwise. */
#include <config.h>

#include <stdint.h>
#include <string.h>

#include "elementwise.h"

/* v where keep is 1, +0.0 where it is 0. */
static inline double relu_select(double v, int keep) {
  uint64_t b;
  memcpy(&b, &v, sizeof b);
  b &= (uint64_t)0 - (uint64_t)keep;
  memcpy(&v, &b, sizeof v);
  return v;
}

ELEMENTWISE_CREATE(relu)

static void relu_forward_task(void *arg, size_t t, uint32_t slot) {
  const elementwise_job *j = arg;
  (void)slot;
  size_t i0, i1;
  rows_of_task(j->X->size1, j->n_tasks, t, &i0, &i1);
  for (size_t i = i0; i < i1; i++) {
    const double *x = j->X->data + i * j->X->tda;
    double *y = j->out->data + i * j->out->tda;
    for (size_t k = 0; k < j->l->n; k++)
      y[k] = relu_select(x[k], !(x[k] < 0.0));
  }
}

static int relu_forward(void *self, const nn_context *ctx, const gsl_matrix *X,
                        gsl_matrix *Y, nn_error *err) {
  (void)ctx;
  int rc = elementwise_check(self, X, Y, "Y", err);
  if (rc != NN_OK)
    return rc;
  elementwise_job j = {.l = self, .X = X, .out = Y};
  elementwise_rows(&j, relu_forward_task);
  return NN_OK;
}

static void relu_backward_task(void *arg, size_t t, uint32_t slot) {
  const elementwise_job *j = arg;
  (void)slot;
  size_t i0, i1;
  rows_of_task(j->X->size1, j->n_tasks, t, &i0, &i1);
  for (size_t i = i0; i < i1; i++) {
    const double *x = j->X->data + i * j->X->tda;
    const double *d = j->dY->data + i * j->dY->tda;
    double *o = j->out->data + i * j->out->tda;
    for (size_t k = 0; k < j->l->n; k++)
      o[k] = relu_select(d[k], x[k] > 0.0);
  }
}

static int relu_backward(void *self, const gsl_matrix *X, const gsl_matrix *Y,
                         gsl_matrix *dY, gsl_matrix *dX, nn_error *err) {
  (void)Y; /* the rule reads X */
  int rc = elementwise_check_backward(self, X, NULL, dY, dX, err);
  if (rc != NN_OK || !dX)
    return rc;
  elementwise_job j = {.l = self, .X = X, .dY = dY, .out = dX};
  elementwise_rows(&j, relu_backward_task);
  return NN_OK;
}

static const nn_layer_ops relu_ops = {
    .size = sizeof(nn_layer_ops),
    .create = relu_create,
    .destroy = elementwise_destroy,
    .memory = elementwise_memory,
    .forward = relu_forward,
    .backward = relu_backward,
    .extension = elementwise_extension,
};

NN_LAYER_PLUGIN("relu", "0.1.0", "rectified linear unit, element-wise", NULL,
                &relu_ops);
