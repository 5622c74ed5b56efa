/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `flatten` layer plugin: c x h x w examples become 1 x 1 x (c h w)
 * vectors, the values in the same (c, h, w) order.
 *
 * The numbers pass through unchanged (Y = X, dX = dY); only the shape the
 * next layer is created with changes.  A dense layer flattens its input by
 * itself, so flatten is there to say so in the config (and in --describe)
 * where a network turns from images into vectors. */
#include <config.h>

#include <stdint.h>
#include <string.h>

#include "elementwise.h"

static int flatten_create(const nn_value *opts, nn_shape in, size_t max_batch,
                          gsl_rng *rng, nn_shape *out_shape, void **out,
                          nn_error *err) {
  (void)opts, (void)rng;
  if (nn_shape_size(in) > UINT32_MAX)
    return nn_error_set(err, NN_EINVAL,
                        "flatten: %zu values per example do not fit a shape",
                        nn_shape_size(in));
  int rc = elementwise_create("flatten", in, max_batch, out_shape, out, err);
  if (rc == NN_OK)
    *out_shape = (nn_shape){1, 1, (uint32_t)nn_shape_size(in)};
  return rc;
}

static int flatten_memory(const nn_value *opts, nn_shape in, size_t n_out,
                          size_t max_batch, nn_memory *need) {
  if (nn_shape_size(in) > UINT32_MAX)
    return NN_EINVAL;
  int rc = elementwise_memory(opts, in, n_out, max_batch, need);
  if (rc == NN_OK)
    need->out = (nn_shape){1, 1, (uint32_t)nn_shape_size(in)};
  return rc;
}

/* dst = src row by row (either may be a view with its own stride). */
static void copy_rows(const gsl_matrix *src, gsl_matrix *dst, size_t n) {
  for (size_t i = 0; i < src->size1; i++)
    memcpy(dst->data + i * dst->tda, src->data + i * src->tda,
           n * sizeof(double));
}

static int flatten_forward(void *self, const nn_context *ctx,
                           const gsl_matrix *X, gsl_matrix *Y, nn_error *err) {
  const elementwise_layer *l = self;
  (void)ctx;
  int rc = elementwise_check(l, X, Y, "Y", err);
  if (rc == NN_OK)
    copy_rows(X, Y, l->n);
  return rc;
}

static int flatten_backward(void *self, const gsl_matrix *X,
                            const gsl_matrix *Y, gsl_matrix *dY,
                            gsl_matrix *dX, nn_error *err) {
  const elementwise_layer *l = self;
  (void)Y;
  int rc = elementwise_check_backward(l, X, NULL, dY, dX, err);
  if (rc == NN_OK && dX)
    copy_rows(dY, dX, l->n);
  return rc;
}

static const nn_layer_ops flatten_ops = {
    .size = sizeof(nn_layer_ops),
    .create = flatten_create,
    .destroy = elementwise_destroy,
    .memory = flatten_memory,
    .forward = flatten_forward,
    .backward = flatten_backward,
};

NN_LAYER_PLUGIN("flatten", "0.1.0",
                "c x h x w examples to vectors of c h w values, unchanged",
                NULL, &flatten_ops);
