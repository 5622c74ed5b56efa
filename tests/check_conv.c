/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests of the image layers (conv2d, maxpool2d, flatten), loaded straight
 * from $NN_PLUGIN_PATH: forward values against small examples worked out
 * by hand, conv2d against a direct six-loop convolution on random data
 * for several geometries (the "same" fast path and the general one),
 * finite-difference gradients, output shapes, and options that do not fit
 * the input refused as configuration errors naming the option. */
#include <config.h>

#include <math.h>
#include <string.h>
#include <strings.h>

#include <gsl/gsl_rng.h>

#include <nn/math.h>
#include <nn/plugin.h>

#include "testutil.h"

/* ------------------------------------------------------------- helpers */

#define MAX_OPTS 8

typedef struct opts {
  nn_value v[MAX_OPTS];
} opts;

/* The plugin's defaults, then "key=value" pairs (integers, or a string
 * for init, or true/false for bias). */
static opts opts_of(const nn_plugin *d, const char *const *kv) {
  opts o;
  memset(&o, 0, sizeof o);
  for (size_t k = 0; d->options && d->options[k].key; k++) {
    ck_assert_uint_lt(k, MAX_OPTS);
    const nn_option *t = &d->options[k];
    const char *text = t->def;
    for (size_t i = 0; kv && kv[i]; i++) {
      const size_t n = strlen(t->key);
      if (strncmp(kv[i], t->key, n) == 0 && kv[i][n] == '=')
        text = kv[i] + n + 1;
    }
    if (!text)
      continue;
    if (t->type == NN_OPT_INT)
      o.v[k].i = strtoll(text, NULL, 10);
    else if (t->type == NN_OPT_BOOL)
      o.v[k].b = strcasecmp(text, "true") == 0;
    else if (t->type == NN_OPT_STRING)
      o.v[k].s = text;
    else
      ck_abort_msg("%s: option %s has type %u", d->name, t->key, t->type);
  }
  return o;
}

typedef struct layer {
  test_plugin p;
  void *self;
  nn_shape in, out;
  size_t n_in, n_out;
} layer;

static layer layer_make(const char *name, const char *const *kv, nn_shape in,
                        size_t max_batch) {
  layer l = {test_plugin_load(name), NULL, in, {0, 0, 0}, 0, 0};
  ck_assert_ptr_nonnull(l.p.desc->layer);
  opts o = opts_of(l.p.desc, kv);
  gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
  gsl_rng_set(r, 5);
  nn_error err = {0, ""};
  int rc = l.p.desc->layer->create(o.v, in, max_batch, r, &l.out, &l.self,
                                   &err);
  gsl_rng_free(r);
  ck_assert_msg(rc == NN_OK, "create %s: %s", name, err.msg);
  l.n_in = nn_shape_size(in);
  l.n_out = nn_shape_size(l.out);
  return l;
}

static void layer_free(layer *l) {
  l->p.desc->layer->destroy(l->self);
  test_plugin_unload(&l->p);
}

static nn_param *params(const layer *l, size_t *n) {
  *n = 0;
  return l->p.desc->layer->params ? l->p.desc->layer->params(l->self, n)
                                  : NULL;
}

static const nn_context eval_ctx = {sizeof(nn_context), 0, 0, 0, NULL};

static void forward(const layer *l, const gsl_matrix *X, gsl_matrix *Y) {
  nn_error err = {0, ""};
  ck_assert_msg(l->p.desc->layer->forward(l->self, &eval_ctx, X, Y, &err) ==
                    NN_OK,
                "%s forward: %s", l->p.desc->name, err.msg);
}

static void backward(const layer *l, const gsl_matrix *X, const gsl_matrix *Y,
                     gsl_matrix *dY, gsl_matrix *dX) {
  nn_error err = {0, ""};
  ck_assert_msg(l->p.desc->layer->backward(l->self, X, Y, dY, dX, &err) ==
                    NN_OK,
                "%s backward: %s", l->p.desc->name, err.msg);
}

static gsl_matrix *mat(size_t rows, size_t cols) {
  gsl_matrix *m = gsl_matrix_calloc(rows, cols);
  ck_assert_ptr_nonnull(m);
  return m;
}

static gsl_matrix *mat_random(size_t rows, size_t cols, gsl_rng *r) {
  gsl_matrix *m = mat(rows, cols);
  for (size_t k = 0; k < rows * cols; k++)
    m->data[k] = 2.0 * gsl_rng_uniform(r) - 1.0;
  return m;
}

static void expect_row(const gsl_matrix *Y, size_t row, const double *want,
                       size_t n, const char *what) {
  ck_assert_uint_eq(Y->size2, n);
  for (size_t j = 0; j < n; j++)
    ck_assert_msg(gsl_matrix_get(Y, row, j) == want[j],
                  "%s: value %zu is %.17g, expected %.17g", what, j,
                  gsl_matrix_get(Y, row, j), want[j]);
}

/* ------------------------------------------------------ forward values */

/* A 2x2 filter (1 2 / 3 4) on the image 1..9 (3x3), no padding: each
 * output is x00 + 2 x01 + 3 x10 + 4 x11 of its window, plus the bias;
 * a flipped filter (a true convolution) would give other numbers. */
START_TEST(test_conv_values_valid) {
  static const char *const kv[] = {"out_channels=1", "kernel=2", NULL};
  layer l = layer_make("conv2d", kv, (nn_shape){1, 3, 3}, 1);
  ck_assert(l.out.c == 1 && l.out.h == 2 && l.out.w == 2);
  size_t n;
  nn_param *p = params(&l, &n);
  ck_assert_uint_eq(n, 2);
  ck_assert_str_eq(p[0].name, "W");
  ck_assert(p[0].value->size1 == 1 && p[0].value->size2 == 4);
  ck_assert_str_eq(p[1].name, "b");
  for (size_t k = 0; k < 4; k++)
    p[0].value->data[k] = (double)(k + 1);
  p[1].value->data[0] = 0.5;
  gsl_matrix *X = mat(1, 9), *Y = mat(1, 4);
  for (size_t k = 0; k < 9; k++)
    X->data[k] = (double)(k + 1);
  forward(&l, X, Y);
  static const double want[] = {37.5, 47.5, 67.5, 77.5};
  expect_row(Y, 0, want, 4, "conv2d 2x2 filter");
  gsl_matrix_free(X);
  gsl_matrix_free(Y);
  layer_free(&l);
}
END_TEST

/* Padding 1, stride 2, two channels in and two filters out on 3x3 images:
 * channel 0 is 1..9, channel 1 is 10..18.  Filter 0 sums channel 0 over
 * the 3x3 window (the windows at the corners see 4 pixels and 5 zeros);
 * filter 1 takes twice channel 1's centre pixel, bias -1. */
START_TEST(test_conv_values_padded_strided) {
  static const char *const kv[] = {"out_channels=2", "kernel=3", "stride=2",
                                   "padding=1", NULL};
  layer l = layer_make("conv2d", kv, (nn_shape){2, 3, 3}, 1);
  ck_assert(l.out.c == 2 && l.out.h == 2 && l.out.w == 2);
  size_t n;
  nn_param *p = params(&l, &n);
  ck_assert(p[0].value->size1 == 2 && p[0].value->size2 == 18);
  gsl_matrix_set_zero(p[0].value);
  for (size_t k = 0; k < 9; k++)
    gsl_matrix_set(p[0].value, 0, k, 1.0); /* filter 0, channel 0 */
  gsl_matrix_set(p[0].value, 1, 9 + 4, 2.0); /* filter 1, channel 1 centre */
  p[1].value->data[1] = -1.0;
  gsl_matrix *X = mat(1, 18), *Y = mat(1, 8);
  for (size_t k = 0; k < 18; k++)
    X->data[k] = (double)(k + 1);
  forward(&l, X, Y);
  /* filter 0: 1+2+4+5, 2+3+5+6, 4+5+7+8, 5+6+8+9;
   * filter 1: 2 * (10, 12, 16, 18) - 1 */
  static const double want[] = {12, 16, 24, 28, 19, 23, 31, 35};
  expect_row(Y, 0, want, 8, "conv2d padded, strided");
  gsl_matrix_free(X);
  gsl_matrix_free(Y);
  layer_free(&l);
}
END_TEST

/* "Same" padding (the fast path): a 3x3 filter whose only weight is the
 * top-left one moves the image one pixel down and right, zeros coming in
 * from the padding; without bias. */
START_TEST(test_conv_values_same) {
  static const char *const kv[] = {"out_channels=1", "kernel=3", "padding=1",
                                   "bias=false", NULL};
  layer l = layer_make("conv2d", kv, (nn_shape){1, 3, 3}, 2);
  ck_assert(l.out.c == 1 && l.out.h == 3 && l.out.w == 3);
  size_t n;
  nn_param *p = params(&l, &n);
  ck_assert_uint_eq(n, 1);
  gsl_matrix_set_zero(p[0].value);
  p[0].value->data[0] = 1.0;
  gsl_matrix *X = mat(2, 9), *Y = mat(2, 9);
  for (size_t k = 0; k < 18; k++)
    X->data[k] = (double)(k + 1);
  forward(&l, X, Y);
  static const double want0[] = {0, 0, 0, 0, 1, 2, 0, 4, 5};
  static const double want1[] = {0, 0, 0, 0, 10, 11, 0, 13, 14};
  expect_row(Y, 0, want0, 9, "conv2d same, image 0");
  expect_row(Y, 1, want1, 9, "conv2d same, image 1");
  gsl_matrix_free(X);
  gsl_matrix_free(Y);
  layer_free(&l);
}
END_TEST

/* Y from the definition, one multiply-add at a time. */
static double direct_conv(const layer *l, const gsl_matrix *X, size_t i,
                          size_t o, size_t oh, size_t ow, long k, long s,
                          long pad) {
  size_t n;
  nn_param *p = params(l, &n);
  double y = n == 2 ? p[1].value->data[o] : 0.0;
  for (size_t c = 0; c < l->in.c; c++)
    for (long kh = 0; kh < k; kh++)
      for (long kw = 0; kw < k; kw++) {
        const long ih = (long)oh * s - pad + kh, iw = (long)ow * s - pad + kw;
        if (ih < 0 || iw < 0 || ih >= (long)l->in.h || iw >= (long)l->in.w)
          continue;
        y += gsl_matrix_get(p[0].value, o, (c * k + kh) * k + kw) *
             gsl_matrix_get(X, i, (c * l->in.h + ih) * l->in.w + iw);
      }
  return y;
}

START_TEST(test_conv_against_direct) {
  static const struct {
    nn_shape in;
    const char *kernel, *stride, *padding;
  } cases[] = {
      {{3, 7, 6}, "kernel=3", "stride=1", "padding=1"}, /* same */
      {{2, 5, 5}, "kernel=5", "stride=1", "padding=2"}, /* same */
      {{2, 7, 5}, "kernel=3", "stride=2", "padding=1"},
      {{1, 6, 8}, "kernel=2", "stride=2", "padding=0"},
      {{2, 5, 6}, "kernel=2", "stride=1", "padding=1"},
      {{3, 4, 4}, "kernel=1", "stride=1", "padding=0"}, /* same, k = 1 */
      {{1, 6, 6}, "kernel=2", "stride=3", "padding=1"}, /* gaps */
  };
  gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
  for (size_t t = 0; t < sizeof cases / sizeof *cases; t++) {
    const char *const kv[] = {"out_channels=3", cases[t].kernel,
                              cases[t].stride, cases[t].padding, NULL};
    layer l = layer_make("conv2d", kv, cases[t].in, 3);
    size_t n;
    nn_param *p = params(&l, &n);
    for (size_t k = 0; k < n; k++)
      for (size_t e = 0; e < p[k].value->size1 * p[k].value->size2; e++)
        p[k].value->data[e] = 2.0 * gsl_rng_uniform(r) - 1.0;
    gsl_matrix *X = mat_random(3, l.n_in, r), *Y = mat(3, l.n_out);
    forward(&l, X, Y);
    const long k = atol(cases[t].kernel + 7), s = atol(cases[t].stride + 7),
               pad = atol(cases[t].padding + 8);
    for (size_t i = 0; i < 3; i++)
      for (size_t o = 0; o < l.out.c; o++)
        for (size_t oh = 0; oh < l.out.h; oh++)
          for (size_t ow = 0; ow < l.out.w; ow++) {
            const double want = direct_conv(&l, X, i, o, oh, ow, k, s, pad);
            const double got = gsl_matrix_get(
                Y, i, (o * l.out.h + oh) * l.out.w + ow);
            ck_assert_msg(fabs(got - want) <= 1e-12 * (1.0 + fabs(want)),
                          "case %zu, image %zu, (%zu, %zu, %zu): %.17g, "
                          "expected %.17g",
                          t, i, o, oh, ow, got, want);
          }
    gsl_matrix_free(X);
    gsl_matrix_free(Y);
    layer_free(&l);
  }
  gsl_rng_free(r);
}
END_TEST

/* 2x2 windows, stride 2, on one 4x4 channel: the maximum of each; backward
 * sends each output's gradient to the pixel that held it. */
START_TEST(test_maxpool_values) {
  layer l = layer_make("maxpool2d", NULL, (nn_shape){1, 4, 4}, 1);
  ck_assert(l.out.c == 1 && l.out.h == 2 && l.out.w == 2);
  static const double x[] = {1, 5, -2, 0,   /* */
                             3, 2, -1, -3,  /* */
                             0, 0, 7, 8,    /* */
                             -4, 6, 9, 1};
  gsl_matrix *X = mat(1, 16), *Y = mat(1, 4), *dY = mat(1, 4),
             *dX = mat(1, 16);
  memcpy(X->data, x, sizeof x);
  forward(&l, X, Y);
  static const double want[] = {5, 0, 6, 9};
  expect_row(Y, 0, want, 4, "maxpool2d");
  for (size_t j = 0; j < 4; j++)
    dY->data[j] = 10.0 * (double)(j + 1);
  gsl_matrix_set_all(dX, 99.0); /* overwritten everywhere */
  backward(&l, X, Y, dY, dX);
  static const double want_dx[] = {0, 10, 0, 20, /* */
                                   0, 0, 0, 0,   /* */
                                   0, 0, 0, 0,   /* */
                                   0, 30, 40, 0};
  expect_row(dX, 0, want_dx, 16, "maxpool2d dX");
  gsl_matrix_free(X);
  gsl_matrix_free(Y);
  gsl_matrix_free(dY);
  gsl_matrix_free(dX);
  layer_free(&l);
}
END_TEST

/* Overlapping windows (size 2, stride 1) on two channels: a pixel that is
 * the maximum of several windows collects all their gradients, and on a
 * tie the first pixel of the window (row-major) wins. */
START_TEST(test_maxpool_overlap_ties) {
  static const char *const kv[] = {"size=2", "stride=1", NULL};
  layer l = layer_make("maxpool2d", kv, (nn_shape){2, 3, 3}, 1);
  ck_assert(l.out.c == 2 && l.out.h == 2 && l.out.w == 2);
  static const double x[] = {1, 2, 1, /* channel 0: 9 in the middle */
                             2, 9, 0, /* */
                             0, 3, 4, /* */
                             5, 5, 1, /* channel 1: ties */
                             5, 5, 1, /* */
                             2, 2, 2};
  gsl_matrix *X = mat(1, 18), *Y = mat(1, 8), *dY = mat(1, 8),
             *dX = mat(1, 18);
  memcpy(X->data, x, sizeof x);
  forward(&l, X, Y);
  static const double want[] = {9, 9, 9, 9, 5, 5, 5, 5};
  expect_row(Y, 0, want, 8, "maxpool2d overlapping");
  for (size_t j = 0; j < 8; j++)
    dY->data[j] = (double)(1 << j);
  backward(&l, X, Y, dY, dX);
  /* channel 0: the middle pixel gets 1 + 2 + 4 + 8; channel 1: each
   * window's first 5 in row-major order, so window (0,0) picks the
   * top-left pixel, (0,1) the one right of it, (1,0) the one below it and
   * (1,1) the middle one. */
  static const double want_dx[] = {0, 0,  0, 0, 15, 0, 0, 0, 0,
                                   16, 32, 0, 64, 128, 0, 0, 0, 0};
  expect_row(dX, 0, want_dx, 18, "maxpool2d overlapping dX");
  gsl_matrix_free(X);
  gsl_matrix_free(Y);
  gsl_matrix_free(dY);
  gsl_matrix_free(dX);
  layer_free(&l);
}
END_TEST

/* flatten: the same values, one row per example, shape 1 x 1 x n. */
START_TEST(test_flatten_values) {
  layer l = layer_make("flatten", NULL, (nn_shape){2, 3, 4}, 2);
  ck_assert(l.out.c == 1 && l.out.h == 1 && l.out.w == 24);
  gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
  gsl_matrix *X = mat_random(2, 24, r), *Y = mat(2, 24);
  gsl_matrix *dY = mat_random(2, 24, r), *dX = mat(2, 24);
  forward(&l, X, Y);
  ck_assert(gsl_matrix_equal(X, Y));
  backward(&l, X, Y, dY, dX);
  ck_assert(gsl_matrix_equal(dX, dY));
  gsl_matrix_free(X);
  gsl_matrix_free(Y);
  gsl_matrix_free(dY);
  gsl_matrix_free(dX);
  gsl_rng_free(r);
  layer_free(&l);
}
END_TEST

/* ----------------------------------------------------------- gradients */

/* L = sum(G .* layer(X)); central differences against backward for every
 * input and parameter value. */
static double loss(const layer *l, const gsl_matrix *X, const gsl_matrix *G,
                   gsl_matrix *Y) {
  forward(l, X, Y);
  double s = 0.0;
  for (size_t k = 0; k < Y->size1 * Y->size2; k++)
    s += G->data[k] * Y->data[k];
  return s;
}

static void grad_compare(const layer *l, const gsl_matrix *X,
                         const gsl_matrix *G, gsl_matrix *Y, double *v,
                         double analytic, const char *what, size_t k) {
  const double h = 1e-6, keep = *v;
  *v = keep + h;
  const double up = loss(l, X, G, Y);
  *v = keep - h;
  const double down = loss(l, X, G, Y);
  *v = keep;
  const double num = (up - down) / (2.0 * h);
  ck_assert_msg(fabs(analytic - num) <= 1e-7 + 1e-6 * fabs(num),
                "%s %s[%zu]: analytic %.12g, numeric %.12g",
                l->p.desc->name, what, k, analytic, num);
}

static void gradcheck(const char *name, const char *const *kv, nn_shape in) {
  layer l = layer_make(name, kv, in, 2);
  gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
  gsl_rng_set(r, 17);
  size_t n;
  nn_param *p = params(&l, &n);
  for (size_t k = 0; k < n; k++) /* non-zero biases too */
    for (size_t e = 0; e < p[k].value->size1 * p[k].value->size2; e++)
      p[k].value->data[e] = 2.0 * gsl_rng_uniform(r) - 1.0;
  gsl_matrix *X = mat_random(2, l.n_in, r), *G = mat_random(2, l.n_out, r);
  gsl_matrix *Y = mat(2, l.n_out), *dY = mat(2, l.n_out), *dX = mat(2, l.n_in);
  loss(&l, X, G, Y);
  gsl_matrix_memcpy(dY, G);
  backward(&l, X, Y, dY, dX);
  gsl_matrix *dXa = mat(2, l.n_in);
  gsl_matrix_memcpy(dXa, dX);
  for (size_t k = 0; k < 2 * l.n_in; k++)
    grad_compare(&l, X, G, Y, &X->data[k], dXa->data[k], "dX", k);
  for (size_t q = 0; q < n; q++)
    for (size_t k = 0; k < p[q].value->size1 * p[q].value->size2; k++)
      grad_compare(&l, X, G, Y, &p[q].value->data[k], p[q].grad->data[k],
                   p[q].name, k);
  gsl_matrix_free(X);
  gsl_matrix_free(G);
  gsl_matrix_free(Y);
  gsl_matrix_free(dY);
  gsl_matrix_free(dX);
  gsl_matrix_free(dXa);
  gsl_rng_free(r);
  layer_free(&l);
}

START_TEST(test_conv_gradients) {
  static const char *const same[] = {"out_channels=3", "kernel=3",
                                     "padding=1", NULL};
  static const char *const strided[] = {"out_channels=2", "kernel=3",
                                        "stride=2", "padding=1", NULL};
  static const char *const gaps[] = {"out_channels=2", "kernel=2",
                                     "stride=3", "bias=false", NULL};
  gradcheck("conv2d", same, (nn_shape){2, 4, 5});
  gradcheck("conv2d", strided, (nn_shape){2, 5, 7});
  gradcheck("conv2d", gaps, (nn_shape){1, 5, 8});
}
END_TEST

START_TEST(test_pool_gradients) {
  static const char *const overlap[] = {"size=3", "stride=1", NULL};
  gradcheck("maxpool2d", NULL, (nn_shape){3, 4, 6});
  gradcheck("maxpool2d", overlap, (nn_shape){2, 5, 4});
  gradcheck("flatten", NULL, (nn_shape){2, 3, 2});
}
END_TEST

/* -------------------------------------------------------------- errors */

/* create refuses with NN_ECONFIG (the options come from a config section)
 * and a message from the plugin that mentions `needle`. */
static void refused(const char *name, const char *const *kv, nn_shape in,
                    const char *needle) {
  test_plugin p = test_plugin_load(name);
  opts o = opts_of(p.desc, kv);
  gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
  void *self = (void *)1;
  nn_shape out;
  nn_error err = {0, ""};
  int rc = p.desc->layer->create(o.v, in, 4, r, &out, &self, &err);
  ck_assert_msg(rc == NN_ECONFIG, "%s: create gave %d (%s)", name, rc,
                err.msg);
  ck_assert_ptr_null(self);
  ck_assert_msg(strncmp(err.msg, name, strlen(name)) == 0 &&
                    strstr(err.msg, needle),
                "%s: message '%s' should name '%s'", name, err.msg, needle);
  nn_memory need;
  ck_assert_int_ne(p.desc->layer->memory(o.v, in, 0, 4, &need), NN_OK);
  gsl_rng_free(r);
  test_plugin_unload(&p);
}

START_TEST(test_bad_options) {
  static const char *const big[] = {"out_channels=2", "kernel=5", NULL};
  static const char *const tile[] = {"out_channels=2", "kernel=3",
                                     "stride=2", NULL};
  static const char *const pad[] = {"out_channels=2", "kernel=3",
                                    "padding=3", NULL};
  static const char *const stride0[] = {"out_channels=2", "stride=0", NULL};
  static const char *const init[] = {"out_channels=2", "init=normal", NULL};
  refused("conv2d", big, (nn_shape){1, 4, 6}, "kernel = 5");
  refused("conv2d", tile, (nn_shape){1, 6, 6}, "stride = 2");
  refused("conv2d", pad, (nn_shape){1, 6, 6}, "padding");
  refused("conv2d", stride0, (nn_shape){1, 6, 6}, "stride");
  refused("conv2d", init, (nn_shape){1, 6, 6}, "init");
  static const char *const pool_big[] = {"size=5", NULL};
  static const char *const pool_odd[] = {"size=2", "stride=2", NULL};
  refused("maxpool2d", pool_big, (nn_shape){2, 4, 4}, "size = 5");
  refused("maxpool2d", pool_odd, (nn_shape){2, 7, 4}, "height");
}
END_TEST

static Suite *conv_suite(void) {
  Suite *s = suite_create("conv");
  TCase *tc = tcase_create("conv");
  tcase_add_test(tc, test_conv_values_valid);
  tcase_add_test(tc, test_conv_values_padded_strided);
  tcase_add_test(tc, test_conv_values_same);
  tcase_add_test(tc, test_conv_against_direct);
  tcase_add_test(tc, test_maxpool_values);
  tcase_add_test(tc, test_maxpool_overlap_ties);
  tcase_add_test(tc, test_flatten_values);
  tcase_add_test(tc, test_conv_gradients);
  tcase_add_test(tc, test_pool_gradients);
  tcase_add_test(tc, test_bad_options);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return test_run_suite(conv_suite()); }
