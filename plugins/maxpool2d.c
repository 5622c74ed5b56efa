/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `maxpool2d` layer plugin: the maximum of each size x size window, moved
 * by stride, channel by channel (c x h x w -> c x oh x ow).  No padding:
 * the windows must tile the image (window.h says why).
 *
 * Forward records, per output value, which input held the maximum (the
 * first in the window's row-major order on a tie), and backward sends
 * each output's gradient to that input alone: the gradient of the max
 * where it is unique, and the choice every framework makes on ties.  A
 * NaN in a window is never the maximum unless it comes first (comparisons
 * with NaN are false).
 *
 * Every image is pooled on its own, so the batch's images are spread over
 * the threads the core lends (rows_parallel.h) with the same bits. */
#include <config.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <nn/math.h>
#include <nn/plugin.h>

#include "rows_parallel.h"
#include "window.h"

enum { OPT_SIZE, OPT_STRIDE };

static const nn_option pool_options[] = {
    {"size", NN_OPT_INT, "2", "window height and width",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1.0, (double)WINDOW_MAX},
    {"stride", NN_OPT_INT, "2", "step between windows, in pixels",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1.0, (double)WINDOW_MAX},
    {NULL, 0, NULL, NULL, 0, 0.0, 0.0},
};

/* Owns `arg`. */
typedef struct pool_layer {
  window_geom g;
  uint32_t c;
  size_t n_in, n_out, max_batch;
  uint32_t *arg;    /* max_batch x n_out: the index within the example of
                       the input each output of the last forward took */
  size_t last_rows; /* rows of the last forward; 0 = none */
  const nn_parallel *par; /* lent by attach, or NULL: one thread */
} pool_layer;

/* Runs of images per batch for the threads. */
#define POOL_TASKS 8

static void pool_destroy(void *self) {
  pool_layer *l = self;
  if (!l)
    return;
  free(l->arg);
  free(l);
}

/* create's checks and sizes, shared with the memory operation. */
static int pool_plan(const nn_value *opts, nn_shape in, size_t max_batch,
                     pool_layer *l, nn_error *err) {
  if (!opts)
    return nn_error_set(err, NN_EINVAL, "maxpool2d: NULL options");
  if (max_batch == 0)
    return nn_error_set(err, NN_EINVAL,
                        "maxpool2d: max_batch must be positive");
  int rc = window_geom_make("maxpool2d", "size", NULL, in, opts[OPT_SIZE].i,
                            opts[OPT_STRIDE].i, 0, &l->g, err);
  if (rc != NN_OK)
    return rc;
  l->c = in.c;
  l->n_in = nn_shape_size(in);
  l->n_out = (size_t)in.c * l->g.oh * l->g.ow;
  l->max_batch = max_batch;
  if (l->n_in > UINT32_MAX || /* the indices are 32-bit */
      l->n_out > SIZE_MAX / sizeof(uint32_t) / max_batch)
    return nn_error_set(err, NN_ECONFIG,
                        "maxpool2d: %zu outputs with batch %zu are too many",
                        l->n_out, max_batch);
  return NN_OK;
}

static int pool_memory(const nn_value *opts, nn_shape in, size_t n_out,
                       size_t max_batch, nn_memory *need) {
  (void)n_out;
  pool_layer l = {0};
  if (!need || pool_plan(opts, in, max_batch, &l, NULL) != NN_OK)
    return NN_EINVAL;
  *need = (nn_memory){
      .bytes = nn_mem_add(sizeof(pool_layer),
                          nn_mem_mul(nn_mem_mul(max_batch, l.n_out),
                                     sizeof(uint32_t))),
      .out = {l.c, l.g.oh, l.g.ow}};
  return NN_OK;
}

static int pool_create(const nn_value *opts, nn_shape in, size_t max_batch,
                       gsl_rng *rng, nn_shape *out_shape, void **out,
                       nn_error *err) {
  (void)rng; /* no weights */
  if (!out || !out_shape)
    return nn_error_set(err, NN_EINVAL, "maxpool2d: NULL output pointer");
  *out = NULL;
  pool_layer plan = {0};
  int rc = pool_plan(opts, in, max_batch, &plan, err);
  if (rc != NN_OK)
    return rc;
  pool_layer *l = malloc(sizeof *l);
  if (!l)
    return nn_error_set(err, NN_ENOMEM, "maxpool2d: out of memory");
  *l = plan;
  if (!(l->arg = malloc(max_batch * l->n_out * sizeof *l->arg))) {
    pool_destroy(l);
    return nn_error_set(err, NN_ENOMEM,
                        "maxpool2d: cannot allocate %zu x %zu indices",
                        max_batch, plan.n_out);
  }
  *out_shape = (nn_shape){l->c, l->g.oh, l->g.ow};
  *out = l;
  return NN_OK;
}

static int pool_check(const pool_layer *l, const gsl_matrix *X,
                      const gsl_matrix *s, size_t cols_s, const char *what,
                      nn_error *err) {
  if (!l || !X || !s)
    return nn_error_set(err, NN_EINVAL, "maxpool2d: NULL argument");
  return nn_check_batch("maxpool2d", X->size1, X->size2, l->n_in,
                        l->max_batch, s, cols_s, what, err);
}

/* One image: y and its argmax indices from x. */
static void pool_image(const pool_layer *l, const double *x, double *y,
                       uint32_t *arg) {
  const window_geom *g = &l->g;
  for (uint32_t c = 0; c < l->c; c++) {
    const size_t base = (size_t)c * g->h * g->w;
    for (uint32_t oh = 0; oh < g->oh; oh++)
      for (uint32_t ow = 0; ow < g->ow; ow++) {
        size_t best = base + (size_t)oh * g->s * g->w + (size_t)ow * g->s;
        double m = x[best];
        for (uint32_t kh = 0; kh < g->k; kh++) {
          const size_t r = base + ((size_t)oh * g->s + kh) * g->w +
                           (size_t)ow * g->s;
          /* selects, not a branch: which input wins is close to random */
          for (uint32_t kw = 0; kw < g->k; kw++) {
            const double v = x[r + kw];
            const int gt = v > m;
            m = gt ? v : m;
            best = gt ? r + kw : best;
          }
        }
        *y++ = m;
        *arg++ = (uint32_t)best;
      }
  }
}

/* One forward or backward call, shared by its tasks. */
typedef struct pool_job {
  const pool_layer *l;
  const gsl_matrix *X;
  gsl_matrix *Y, *dY, *dX; /* Y: forward; dY, dX: backward */
  size_t n_tasks;
} pool_job;

static void pool_forward_task(void *arg, size_t t, uint32_t slot) {
  const pool_job *j = arg;
  const pool_layer *l = j->l;
  (void)slot; /* no scratch */
  size_t i0, i1;
  rows_of_task(j->X->size1, j->n_tasks, t, &i0, &i1);
  for (size_t i = i0; i < i1; i++)
    pool_image(l, j->X->data + i * j->X->tda, j->Y->data + i * j->Y->tda,
               l->arg + i * l->n_out);
}

static int pool_forward(void *self, const nn_context *ctx,
                        const gsl_matrix *X, gsl_matrix *Y, nn_error *err) {
  pool_layer *l = self;
  (void)ctx;
  if (l)
    l->last_rows = 0; /* a failed forward leaves no indices */
  int rc = pool_check(l, X, Y, l ? l->n_out : 0, "Y", err);
  if (rc != NN_OK)
    return rc;
  pool_job j = {l, X, Y, NULL, NULL, rows_tasks(X->size1, POOL_TASKS)};
  rows_run(l->par, j.n_tasks, X->size1 * l->n_in, pool_forward_task, &j);
  l->last_rows = X->size1;
  return NN_OK;
}

static void pool_backward_task(void *arg, size_t t, uint32_t slot) {
  const pool_job *j = arg;
  const pool_layer *l = j->l;
  (void)slot;
  size_t i0, i1;
  rows_of_task(j->X->size1, j->n_tasks, t, &i0, &i1);
  for (size_t i = i0; i < i1; i++) {
    double *dx = j->dX->data + i * j->dX->tda;
    const double *dy = j->dY->data + i * j->dY->tda;
    const uint32_t *arg_i = l->arg + i * l->n_out;
    memset(dx, 0, l->n_in * sizeof *dx);
    /* += : overlapping windows (stride < size) may pick the same input */
    for (size_t k = 0; k < l->n_out; k++)
      dx[arg_i[k]] += dy[k];
  }
}

static int pool_backward(void *self, const gsl_matrix *X, const gsl_matrix *Y,
                         gsl_matrix *dY, gsl_matrix *dX, nn_error *err) {
  const pool_layer *l = self;
  (void)Y;
  int rc = pool_check(l, X, dY, l ? l->n_out : 0, "dY", err);
  if (rc == NN_OK && dX)
    rc = pool_check(l, X, dX, l->n_in, "dX", err);
  if (rc != NN_OK || !dX)
    return rc;
  if (l->last_rows != X->size1)
    return nn_error_set(err, NN_EINVAL,
                        "maxpool2d: backward on %zu rows needs a forward on "
                        "the same batch first",
                        X->size1);
  pool_job j = {l, X, NULL, dY, dX, rows_tasks(X->size1, POOL_TASKS)};
  rows_run(l->par, j.n_tasks, X->size1 * l->n_in, pool_backward_task, &j);
  return NN_OK;
}

static int pool_attach(void *self, const nn_parallel *par, nn_error *err) {
  pool_layer *l = self;
  if (!l)
    return nn_error_set(err, NN_EINVAL, "maxpool2d: NULL layer");
  l->par = rows_parallel_usable(par);
  return NN_OK;
}

ROWS_PARALLEL_EXTENSION(pool, pool_attach)

static const nn_layer_ops pool_ops = {
    .size = sizeof(nn_layer_ops),
    .flags = 0,
    .create = pool_create,
    .destroy = pool_destroy,
    .forward = pool_forward,
    .backward = pool_backward,
    .extension = pool_extension,
    .memory = pool_memory,
};

NN_LAYER_PLUGIN("maxpool2d", "0.1.0",
                "2-D max pooling: the maximum of each size x size window",
                pool_options, &pool_ops);
