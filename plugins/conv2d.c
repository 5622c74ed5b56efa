/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `conv2d` layer plugin: a 2-D convolution (cross-correlation, as in every
 * framework) of c x h x w images with out_channels square filters.
 *
 *   W: out_channels x (c kernel kernel), a filter per row, its weights in
 *      (c, kh, kw) order (NN_PARAM_WEIGHT); b: 1 x out_channels
 *      (NN_PARAM_BIAS, absent with bias = false).
 *   Y[o, oh, ow] = b[o] + sum over c, kh, kw of
 *                  W[o, (c, kh, kw)] X[c, oh s - p + kh, ow s - p + kw],
 *   the input being 0 outside the image (padding p on each side).
 *
 * Method: im2col and one matrix product per image (im2col.h), in BLAS
 * (docs/performance.md, "Convolution", has the measurements).  The
 * products dominate: a window's K = c kernel^2 values meet every filter,
 * and dgemm does that at several times the speed of any loop written
 * here, while laying out the columns costs one copy of K values per
 * output position.  One product per image, rather than one for the batch,
 * writes each image's output straight into its row of Y in (o, oh, ow)
 * order, with no transposition, and keeps each image's columns (K x P
 * doubles: 220 KB for 16 channels on 14 x 14) in the L2 cache between
 * im2col and the product.  Backward lays the columns out again rather
 * than keeping the batch's from forward: a batch's columns (14 MB for the
 * same layer at batch 64) would make the round trip through memory,
 * while one image's stay in cache and cost one copy of the image per
 * filter position.
 *
 * Threads (NN_EXT_LAYER_PARALLEL): a batch is cut into at most CONV_TASKS
 * runs of consecutive images, by its size alone.  Each run is a task with
 * the scratch of the slot it runs on; forward and the input's gradient
 * are per image anyway, and the parameters' gradients are summed per run
 * into a buffer of the run's own, then the runs' sums are added in run
 * order.  So the bits depend on the batch and not on the threads, and one
 * thread (no par, or par with one slot) computes the very same sums. */
#include <config.h>

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_cblas.h>

#include <nn/math.h>
#include <nn/plugin.h>

#include "im2col.h"
#include "rows_parallel.h"
#include "window.h"

#define CONV_MAX_CHANNELS 65536
/* Runs of images per batch: enough for a few threads to share the work
 * evenly when one of them starts late; each costs a partial sum of the
 * gradients (o K + o values). */
#define CONV_TASKS 16

enum { CONV_W, CONV_B }; /* parameter indices */
enum { OPT_OUT, OPT_KERNEL, OPT_STRIDE, OPT_PADDING, OPT_BIAS, OPT_INIT };

static const nn_option conv_options[] = {
    {"out_channels", NN_OPT_INT, NULL, "number of filters (output channels)",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1.0, (double)CONV_MAX_CHANNELS},
    {"kernel", NN_OPT_INT, "3", "filter height and width",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1.0, (double)WINDOW_MAX},
    {"stride", NN_OPT_INT, "1", "step between windows, in pixels",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1.0, (double)WINDOW_MAX},
    {"padding", NN_OPT_INT, "0",
     "rows and columns of zeros added on each side (less than kernel)",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 0.0, (double)WINDOW_MAX},
    {"bias", NN_OPT_BOOL, "true", "add a learned bias per output channel", 0,
     0.0, 0.0},
    {"init", NN_OPT_STRING, "he", "weight init: he or xavier", 0, 0.0, 0.0},
    {NULL, 0, NULL, NULL, 0, 0.0, 0.0},
};

/* Owns its parameters, cols, dcols and part (freed by conv_destroy). */
typedef struct conv_layer {
  window_geom g;
  uint32_t c, o;           /* input and output channels */
  size_t K, P;             /* values per window, output positions */
  size_t n_in, n_out, max_batch;
  size_t n_params;         /* 2, or 1 (W alone) without bias */
  nn_param params[2];      /* W, b */
  uint32_t slots;          /* scratch sets in cols and dcols */
  double *cols;            /* slots x (K x P): one image's columns */
  double *dcols;           /* slots x (K x P): their gradients */
  double *part;            /* CONV_TASKS x (o K + o): a run's dW, db sums */
  const nn_parallel *par;  /* lent by attach, or NULL: one thread */
} conv_layer;

static void conv_destroy(void *self) {
  conv_layer *l = self;
  if (!l)
    return;
  for (size_t k = 0; k < 2; k++) {
    gsl_matrix_free(l->params[k].value);
    gsl_matrix_free(l->params[k].grad);
  }
  free(l->cols);
  free(l->dcols);
  free(l->part);
  free(l);
}

/* The sizes of a layer with these options on input `in`, checked (the
 * geometry, the init name, products that fit in memory arithmetic):
 * create's checks, shared with the memory operation. */
static int conv_plan(const nn_value *opts, nn_shape in, size_t max_batch,
                     conv_layer *l, nn_error *err) {
  if (!opts)
    return nn_error_set(err, NN_EINVAL, "conv2d: out_channels is required");
  const int64_t out = opts[OPT_OUT].i;
  if (out < 1 || out > CONV_MAX_CHANNELS)
    return nn_error_set(err, NN_ECONFIG,
                        "conv2d: out_channels must be 1..%d, not %lld",
                        CONV_MAX_CHANNELS, (long long)out);
  const char *init = opts[OPT_INIT].s ? opts[OPT_INIT].s : "";
  if (strcmp(init, "he") != 0 && strcmp(init, "xavier") != 0)
    return nn_error_set(err, NN_ECONFIG,
                        "conv2d: init must be he or xavier, not '%s'", init);
  if (max_batch == 0)
    return nn_error_set(err, NN_EINVAL, "conv2d: max_batch must be positive");
  int rc = window_geom_make("conv2d", "kernel", "padding", in,
                            opts[OPT_KERNEL].i, opts[OPT_STRIDE].i,
                            opts[OPT_PADDING].i, &l->g, err);
  if (rc != NN_OK)
    return rc;
  l->c = in.c;
  l->o = (uint32_t)out;
  l->K = (size_t)in.c * l->g.k * l->g.k;
  l->P = (size_t)l->g.oh * l->g.ow;
  l->n_in = nn_shape_size(in);
  l->n_out = (size_t)l->o * l->P;
  l->max_batch = max_batch;
  if (l->K > SIZE_MAX / sizeof(double) / l->P ||
      l->P > UINT32_MAX / l->o || l->K > SIZE_MAX / sizeof(double) / l->o ||
      l->K > INT_MAX || l->P > INT_MAX) /* BLAS takes int sizes */
    return nn_error_set(err, NN_ECONFIG,
                        "conv2d: %u filters of %zu values over %zu positions "
                        "with batch %zu are too large",
                        l->o, l->K, l->P, max_batch);
  return NN_OK;
}

/* What conv_create allocates for these arguments, and its output shape. */
static int conv_memory(const nn_value *opts, nn_shape in, size_t n_out,
                       size_t max_batch, nn_memory *need) {
  (void)n_out; /* a layer: out_channels says */
  conv_layer l = {0};
  if (!need || conv_plan(opts, in, max_batch, &l, NULL) != NN_OK)
    return NN_EINVAL;
  uint64_t weights = nn_mem_doubles(l.o, l.K); /* W */
  if (opts[OPT_BIAS].b)
    weights = nn_mem_add(weights, nn_mem_doubles(1, l.o)); /* b */
  uint64_t bytes = nn_mem_mul(weights, 2); /* values and gradients */
  bytes = nn_mem_add(bytes, nn_mem_mul(nn_mem_doubles(l.K, l.P), 2));
  bytes = nn_mem_add(bytes, nn_mem_doubles(CONV_TASKS, l.o * (l.K + 1)));
  *need = (nn_memory){.bytes = nn_mem_add(bytes, sizeof(conv_layer)),
                      .weights = weights,
                      .out = {l.o, l.g.oh, l.g.ow}};
  return NN_OK;
}

static int conv_create(const nn_value *opts, nn_shape in, size_t max_batch,
                       gsl_rng *rng, nn_shape *out_shape, void **out,
                       nn_error *err) {
  if (!out || !out_shape)
    return nn_error_set(err, NN_EINVAL, "conv2d: NULL output pointer");
  *out = NULL;
  if (!rng)
    return nn_error_set(err, NN_EINVAL, "conv2d: NULL random generator");
  conv_layer plan = {0};
  int rc = conv_plan(opts, in, max_batch, &plan, err);
  if (rc != NN_OK)
    return rc;
  conv_layer *l = malloc(sizeof *l);
  if (!l)
    return nn_error_set(err, NN_ENOMEM, "conv2d: out of memory");
  *l = plan;
  l->n_params = opts[OPT_BIAS].b ? 2 : 1;
  /* Zeroed: biases start at exactly zero. */
  l->params[CONV_W] = (nn_param){"W", nn_matrix_calloc_aligned(l->o, l->K),
                                 nn_matrix_calloc_aligned(l->o, l->K),
                                 NN_PARAM_WEIGHT};
  int ok = l->params[CONV_W].value && l->params[CONV_W].grad;
  if (l->n_params == 2) {
    l->params[CONV_B] = (nn_param){"b", nn_matrix_calloc_aligned(1, l->o),
                                   nn_matrix_calloc_aligned(1, l->o),
                                   NN_PARAM_BIAS};
    ok &= l->params[CONV_B].value && l->params[CONV_B].grad;
  }
  l->slots = 1;
  l->par = NULL;
  ok &= (l->cols = malloc(l->K * l->P * sizeof(double))) != NULL;
  ok &= (l->dcols = malloc(l->K * l->P * sizeof(double))) != NULL;
  ok &= (l->part = malloc(CONV_TASKS * l->o * (l->K + 1) * sizeof(double))) !=
        NULL;
  if (!ok) {
    conv_destroy(l);
    return nn_error_set(err, NN_ENOMEM,
                        "conv2d: cannot allocate %u filters of %zu values "
                        "for batches of %zu",
                        plan.o, plan.K, max_batch);
  }
  /* He: variance 2 / fan_in keeps a ReLU network's activations at scale;
   * Xavier (Glorot normal): 2 / (fan_in + fan_out), for tanh or none. */
  const double fan_in = (double)l->K;
  const double fan_out = (double)l->o * l->g.k * l->g.k;
  const double std = strcmp(opts[OPT_INIT].s, "he") == 0
                         ? sqrt(2.0 / fan_in)
                         : sqrt(2.0 / (fan_in + fan_out));
  nn_fill_gaussian(l->params[CONV_W].value, rng, std);
  *out_shape = (nn_shape){l->o, l->g.oh, l->g.ow};
  *out = l;
  return NN_OK;
}

static nn_param *conv_params(void *self, size_t *n) {
  conv_layer *l = self;
  if (n)
    *n = l ? l->n_params : 0;
  return l ? l->params : NULL;
}

/* X against the layer's input and s (Y, dY or dX, named what) against
 * width cols_s. */
static int conv_check(const conv_layer *l, const gsl_matrix *X,
                      const gsl_matrix *s, size_t cols_s, const char *what,
                      nn_error *err) {
  if (!l || !X || !s)
    return nn_error_set(err, NN_EINVAL, "conv2d: NULL argument");
  return nn_check_batch("conv2d", X->size1, X->size2, l->n_in, l->max_batch,
                        s, cols_s, what, err);
}

/* One forward or backward call, shared by its tasks. */
typedef struct conv_job {
  conv_layer *l;
  const gsl_matrix *X;
  gsl_matrix *Y;  /* forward */
  gsl_matrix *dY; /* backward */
  gsl_matrix *dX; /* backward; NULL: not wanted */
  size_t n_tasks;
} conv_job;

/* Run every task of job j: on the lent threads, or here in order. */
static void conv_run(const conv_layer *l, conv_job *j, rows_task_fn task) {
  /* a product per image: always worth a thread */
  rows_run(l->par, j->n_tasks, SIZE_MAX, task, j);
}

static void conv_forward_task(void *arg, size_t t, uint32_t slot) {
  const conv_job *j = arg;
  const conv_layer *l = j->l;
  const gsl_matrix *W = l->params[CONV_W].value;
  const double *b = l->n_params == 2 ? l->params[CONV_B].value->data : NULL;
  double *cols = l->cols + (size_t)slot * l->K * l->P;
  size_t i0, i1;
  rows_of_task(j->X->size1, j->n_tasks, t, &i0, &i1);
  for (size_t i = i0; i < i1; i++) {
    double *y = j->Y->data + i * j->Y->tda;
    im2col(&l->g, l->c, j->X->data + i * j->X->tda, cols);
    /* Y_i (o x P) = W (o x K) cols (K x P) + b, the bias first. */
    for (size_t o = 0; o < l->o; o++) {
      const double v = b ? b[o] : 0.0;
      for (size_t q = 0; q < l->P; q++)
        y[o * l->P + q] = v;
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)l->o,
                (int)l->P, (int)l->K, 1.0, W->data, (int)W->tda, cols,
                (int)l->P, 1.0, y, (int)l->P);
  }
}

static int conv_forward(void *self, const nn_context *ctx,
                        const gsl_matrix *X, gsl_matrix *Y, nn_error *err) {
  conv_layer *l = self;
  (void)ctx;
  int rc = conv_check(l, X, Y, l ? l->n_out : 0, "Y", err);
  if (rc != NN_OK)
    return rc;
  conv_job j = {l, X, Y, NULL, NULL, rows_tasks(X->size1, CONV_TASKS)};
  conv_run(l, &j, conv_forward_task);
  return NN_OK;
}

/* Task t's images: their share of dW and db into the run's own part, and
 * their rows of dX. */
static void conv_backward_task(void *arg, size_t t, uint32_t slot) {
  const conv_job *j = arg;
  const conv_layer *l = j->l;
  const gsl_matrix *W = l->params[CONV_W].value;
  double *cols = l->cols + (size_t)slot * l->K * l->P;
  double *dcols = l->dcols + (size_t)slot * l->K * l->P;
  double *dW = l->part + t * l->o * (l->K + 1), *db = dW + l->o * l->K;
  size_t i0, i1;
  rows_of_task(j->X->size1, j->n_tasks, t, &i0, &i1);
  for (size_t i = i0; i < i1; i++) {
    const double *dy = j->dY->data + i * j->dY->tda;
    im2col(&l->g, l->c, j->X->data + i * j->X->tda, cols);
    for (size_t o = 0; o < l->o; o++) {
      double s = 0.0;
      for (size_t q = 0; q < l->P; q++)
        s += dy[o * l->P + q];
      db[o] = i == i0 ? s : db[o] + s;
    }
    /* dW (o x K) (+)= dY_i (o x P) cols^T (P x K): the run's first image
     * overwrites. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)l->o, (int)l->K,
                (int)l->P, 1.0, dy, (int)l->P, cols, (int)l->P,
                i == i0 ? 0.0 : 1.0, dW, (int)l->K);
    if (!j->dX)
      continue;
    /* dcols (K x P) = W^T (K x o) dY_i (o x P), then back onto the image */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)l->K,
                (int)l->P, (int)l->o, 1.0, W->data, (int)W->tda, dy,
                (int)l->P, 0.0, dcols, (int)l->P);
    col2im(&l->g, l->c, dcols, j->dX->data + i * j->dX->tda);
  }
}

static int conv_backward(void *self, const gsl_matrix *X, const gsl_matrix *Y,
                         gsl_matrix *dY, gsl_matrix *dX, nn_error *err) {
  conv_layer *l = self;
  (void)Y;
  int rc = conv_check(l, X, dY, l ? l->n_out : 0, "dY", err);
  if (rc == NN_OK && dX)
    rc = conv_check(l, X, dX, l->n_in, "dX", err);
  if (rc != NN_OK)
    return rc;
  gsl_matrix *dW = l->params[CONV_W].grad;
  double *db = l->n_params == 2 ? l->params[CONV_B].grad->data : NULL;
  conv_job j = {l, X, NULL, dY, dX, rows_tasks(X->size1, CONV_TASKS)};
  conv_run(l, &j, conv_backward_task);
  /* The runs' sums, added in run order (an empty batch: zeros). */
  const size_t stride = l->o * (l->K + 1);
  for (size_t o = 0; o < l->o; o++) {
    double *w = dW->data + o * dW->tda;
    for (size_t k = 0; k < l->K; k++) {
      double s = 0.0;
      for (size_t t = 0; t < j.n_tasks; t++)
        s = t ? s + l->part[t * stride + o * l->K + k]
              : l->part[o * l->K + k];
      w[k] = s;
    }
    if (db) {
      double s = 0.0;
      for (size_t t = 0; t < j.n_tasks; t++)
        s = t ? s + l->part[t * stride + l->o * l->K + o]
              : l->part[l->o * l->K + o];
      db[o] = s;
    }
  }
  return NN_OK;
}

/* Take the threads: scratch for each slot (kept when par goes away). */
static int conv_attach(void *self, const nn_parallel *par, nn_error *err) {
  conv_layer *l = self;
  if (!l)
    return nn_error_set(err, NN_EINVAL, "conv2d: NULL layer");
  if (!(par = rows_parallel_usable(par))) {
    l->par = NULL;
    return NN_OK;
  }
  if (par->slots > l->slots) {
    const size_t each = l->K * l->P * sizeof(double);
    l->par = NULL; /* one thread until the scratch is there */
    if (par->slots > SIZE_MAX / each)
      return nn_error_set(err, NN_ENOMEM, "conv2d: %u threads' scratch is "
                          "too large", (unsigned)par->slots);
    double *cols = realloc(l->cols, par->slots * each);
    if (cols)
      l->cols = cols;
    double *dcols = cols ? realloc(l->dcols, par->slots * each) : NULL;
    if (dcols)
      l->dcols = dcols;
    if (!cols || !dcols)
      return nn_error_set(err, NN_ENOMEM,
                          "conv2d: out of memory for %u threads' scratch",
                          (unsigned)par->slots);
    l->slots = par->slots;
  }
  l->par = par;
  return NN_OK;
}

ROWS_PARALLEL_EXTENSION(conv, conv_attach)

static const nn_layer_ops conv_ops = {
    .size = sizeof(nn_layer_ops),
    .flags = 0,
    .create = conv_create,
    .destroy = conv_destroy,
    .params = conv_params,
    .forward = conv_forward,
    .backward = conv_backward,
    .extension = conv_extension,
    .memory = conv_memory,
};

NN_LAYER_PLUGIN("conv2d", "0.1.0",
                "2-D convolution: out_channels filters of kernel x kernel",
                conv_options, &conv_ops);
