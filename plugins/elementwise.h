/* SPDX-License-Identifier: GPL-3.0-or-later */
/* What the element-wise activation layers (relu, sigmoid, tanh) share: the
 * output has the input's shape, there are no parameters, and an instance
 * holds only its sizes and name.  Each plugin includes this header and
 * writes its own forward and backward loops.  flatten, which passes the
 * values through and changes only the shape, uses it too.  A plugin whose
 * ops table has `.extension = elementwise_extension` spreads large batches
 * over the threads the core lends (rows_parallel.h): every row is computed
 * on its own, so the bits are the same. */
#ifndef NN_PLUGINS_ELEMENTWISE_H
#define NN_PLUGINS_ELEMENTWISE_H

#include <stdlib.h>

#include <string.h>

#include <nn/math.h>
#include <nn/plugin.h>

#include "rows_parallel.h"

/* One instance; owns nothing but itself (freed by elementwise_destroy). */
typedef struct elementwise_layer {
  const char *name; /* the plugin's, for messages (static storage) */
  size_t n;         /* values per example */
  size_t max_batch;
  const nn_parallel *par; /* lent by attach, or NULL: one thread */
} elementwise_layer;

/* Runs of rows per batch for the threads. */
#define ELEMENTWISE_TASKS 8

static inline int elementwise_create(const char *name, nn_shape in,
                                     size_t max_batch, nn_shape *out_shape,
                                     void **out, nn_error *err) {
  if (!out || !out_shape)
    return nn_error_set(err, NN_EINVAL, "%s: NULL output pointer", name);
  *out = NULL;
  if (nn_shape_size(in) == 0 || max_batch == 0)
    return nn_error_set(err, NN_EINVAL,
                        "%s: input size and max_batch must be positive", name);
  elementwise_layer *l = malloc(sizeof *l);
  if (!l) return nn_error_set(err, NN_ENOMEM, "%s: out of memory", name);
  *l = (elementwise_layer){name, nn_shape_size(in), max_batch, NULL};
  *out_shape = in;
  *out = l;
  return NN_OK;
}

static inline void elementwise_destroy(void *self) { free(self); }

/* The memory answer of every element-wise layer: its output has the
 * input's shape and it allocates only its instance. */
static inline int elementwise_memory(const nn_value *opts, nn_shape in,
                                     size_t n_out, size_t max_batch,
                                     nn_memory *need) {
  (void)opts, (void)n_out, (void)max_batch;
  if (!need || nn_shape_size(in) == 0) return NN_EINVAL;
  *need = (nn_memory){.bytes = sizeof(elementwise_layer), .out = in};
  return NN_OK;
}

/* s (named `what` in messages) is a batch of X's rows of this layer's
 * width, and X one of at most max_batch rows. */
static inline int elementwise_check(const elementwise_layer *l,
                                    const gsl_matrix *X, const gsl_matrix *s,
                                    const char *what, nn_error *err) {
  if (!l || !X || !s)
    return nn_error_set(err, NN_EINVAL, "%s: NULL argument",
                        l ? l->name : "layer");
  return nn_check_batch(l->name, X->size1, X->size2, l->n, l->max_batch, s,
                        l->n, what, err);
}

/* The checks of backward: dY, and Y and dX when given (dX NULL: the
 * input needs no gradient). */
static inline int elementwise_check_backward(const elementwise_layer *l,
                                             const gsl_matrix *X,
                                             const gsl_matrix *Y,
                                             const gsl_matrix *dY,
                                             const gsl_matrix *dX,
                                             nn_error *err) {
  int rc = elementwise_check(l, X, dY, "dY", err);
  if (rc == NN_OK && Y) rc = elementwise_check(l, X, Y, "Y", err);
  if (rc == NN_OK && dX) rc = elementwise_check(l, X, dX, "dX", err);
  return rc;
}

/* create for plugin NAME: `ELEMENTWISE_CREATE(relu)` defines relu_create. */
#define ELEMENTWISE_CREATE(name_)                                            \
  static int name_##_create(const nn_value *opts, nn_shape in,               \
                            size_t max_batch, gsl_rng *rng,                  \
                            nn_shape *out_shape, void **out, nn_error *err) { \
    (void)opts, (void)rng;                                                   \
    return elementwise_create(#name_, in, max_batch, out_shape, out, err);   \
  }

/* One forward or backward call over a batch, cut into runs of rows. */
typedef struct elementwise_job {
  const elementwise_layer *l;
  const gsl_matrix *X, *Y, *dY;
  gsl_matrix *out; /* Y in forward, dX in backward */
  size_t n_tasks;
} elementwise_job;

/* rows(job, i0, i1) for every row of the batch: in runs on the lent
 * threads when the batch is large, else here. */
static inline void elementwise_rows(elementwise_job *j, rows_task_fn task) {
  j->n_tasks = rows_tasks(j->X->size1, ELEMENTWISE_TASKS);
  rows_run(j->l->par, j->n_tasks, j->X->size1 * j->l->n, task, j);
}

static inline int elementwise_attach(void *self, const nn_parallel *par,
                                     nn_error *err) {
  elementwise_layer *l = self;
  if (!l) return nn_error_set(err, NN_EINVAL, "layer: NULL instance");
  l->par = rows_parallel_usable(par);
  return NN_OK;
}

/* The threads extension of an element-wise plugin: its ops table's
 * `.extension = elementwise_extension`. */
ROWS_PARALLEL_EXTENSION(elementwise, elementwise_attach)

#endif /* NN_PLUGINS_ELEMENTWISE_H */
