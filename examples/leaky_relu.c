/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Example out-of-tree layer plugin: the leaky ReLU,
 *
 *   y = x          where x > 0
 *   y = slope * x  elsewhere
 *
 * Build it against the installed headers and library, then put the .so on
 * the plugin path ($NN_PLUGIN_PATH) and use `type = leaky_relu` in a
 * [layer] section of a sequential model:
 *
 *   cc -shared -fPIC -Wall -Wextra -Werror -Wl,--no-undefined \
 *     $(pkg-config --cflags nn) -o leaky_relu.so leaky_relu.c \
 *     $(pkg-config --libs nn)
 */
#include <stdlib.h>

#include <nn/plugin.h>

/* Options, in table order: the core checks the config section against
 * this table (types, bounds, defaults) and hands create() one nn_value per
 * entry. */
static const nn_option leaky_relu_options[] = {
    {"slope", NN_OPT_REAL, "0.01", "gradient for x <= 0", NN_OPT_HAS_MIN, 0,
     0},
    {NULL, 0, NULL, NULL, 0, 0, 0}};

/* One instance: its sizes and option.  No parameters, no scratch. */
typedef struct leaky_relu {
  size_t n;         /* values per example */
  size_t max_batch; /* rows per batch, at most */
  double slope;
} leaky_relu;

static int leaky_relu_create(const nn_value *opts, nn_shape in,
                             size_t max_batch, gsl_rng *rng,
                             nn_shape *out_shape, void **out, nn_error *err) {
  (void)rng; /* no weights to draw */
  leaky_relu *l = malloc(sizeof *l);
  if (!l)
    return nn_error_set(err, NN_ENOMEM, "leaky_relu: out of memory");
  l->n = nn_shape_size(in);
  l->max_batch = max_batch;
  l->slope = opts[0].r; /* the core has checked it against the table */
  *out_shape = in; /* element-wise: the output has the input's shape */
  *out = l;
  return NN_OK;
}

static void leaky_relu_destroy(void *self) { free(self); }

/* M is a batch of `rows` examples of this layer's shape.  Matrices may be
 * views: a row starts tda doubles after the previous one. */
static int leaky_relu_check(const leaky_relu *l, const gsl_matrix *M,
                            size_t rows, const char *what, nn_error *err) {
  if (!M || M->size1 != rows || M->size2 != l->n || rows == 0 ||
      rows > l->max_batch)
    return nn_error_set(err, NN_EINVAL,
                        "leaky_relu: %s is not a batch of 1..%zu rows of %zu",
                        what, l->max_batch, l->n);
  return NN_OK;
}

static int leaky_relu_forward(void *self, const nn_context *ctx,
                              const gsl_matrix *X, gsl_matrix *Y,
                              nn_error *err) {
  const leaky_relu *l = self;
  (void)ctx; /* the same in training and evaluation */
  const size_t rows = X ? X->size1 : 0;
  int rc = leaky_relu_check(l, X, rows, "X", err);
  if (rc == NN_OK)
    rc = leaky_relu_check(l, Y, rows, "Y", err);
  if (rc != NN_OK)
    return rc;
  for (size_t i = 0; i < X->size1; i++) {
    const double *x = X->data + i * X->tda;
    double *y = Y->data + i * Y->tda;
    for (size_t j = 0; j < l->n; j++)
      y[j] = x[j] > 0.0 ? x[j] : l->slope * x[j];
  }
  return NN_OK;
}

/* dX = dY * dy/dx.  dX is NULL when this is the first layer. */
static int leaky_relu_backward(void *self, const gsl_matrix *X,
                               const gsl_matrix *Y, gsl_matrix *dY,
                               gsl_matrix *dX, nn_error *err) {
  const leaky_relu *l = self;
  (void)Y;
  const size_t rows = X ? X->size1 : 0;
  int rc = leaky_relu_check(l, X, rows, "X", err);
  if (rc == NN_OK)
    rc = leaky_relu_check(l, dY, rows, "dY", err);
  if (rc == NN_OK && dX)
    rc = leaky_relu_check(l, dX, rows, "dX", err);
  if (rc != NN_OK || !dX)
    return rc;
  for (size_t i = 0; i < X->size1; i++) {
    const double *x = X->data + i * X->tda, *d = dY->data + i * dY->tda;
    double *o = dX->data + i * dX->tda;
    for (size_t j = 0; j < l->n; j++)
      o[j] = x[j] > 0.0 ? d[j] : l->slope * d[j];
  }
  return NN_OK;
}

/* Designated initializers: members a later ABI minor appends stay NULL. */
static const nn_layer_ops leaky_relu_ops = {
    .size = sizeof(nn_layer_ops),
    .create = leaky_relu_create,
    .destroy = leaky_relu_destroy,
    .forward = leaky_relu_forward,
    .backward = leaky_relu_backward,
};

NN_LAYER_PLUGIN("leaky_relu", "1.0", "leaky ReLU: slope * x for x <= 0",
                leaky_relu_options, &leaky_relu_ops);
