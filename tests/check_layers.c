/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests of the layer plugins (dense, relu, sigmoid, tanh, dropout), loaded
 * straight from $NN_PLUGIN_PATH with dlopen: descriptors and options,
 * shapes, forward values against hand-computed numbers, finite-difference
 * gradients, dropout's mask, the step inside backward, and that
 * dense -> sigmoid -> dense and dense -> relu give the bits of the
 * twolayer and softmax models (computed here with libnn's functions,
 * called as those models call them). */
#include <config.h>

#include <dlfcn.h>
#include <math.h>
#include <strings.h>
#include <string.h>

#include <gsl/gsl_rng.h>

#include <nn/math.h>
#include <nn/plugin.h>
#include <nn/plugin_ext.h>
#include <nn/registry.h>

#include "testutil.h"

/* ------------------------------------------------------------- helpers */

typedef test_plugin loaded;

/* A layer plugin from the build tree. */
static loaded load(const char *name) {
  loaded l = test_plugin_load(name);
  ck_assert_ptr_nonnull(l.desc->layer);
  return l;
}

#define MAX_OPTS 8

/* Option values: the table's defaults, then set_opt for the rest. */
typedef struct opts {
  nn_value v[MAX_OPTS];
} opts;

static opts default_opts(const nn_plugin *d) {
  opts o;
  memset(&o, 0, sizeof o);
  for (size_t k = 0; d->options && d->options[k].key; k++) {
    ck_assert_uint_lt(k, MAX_OPTS);
    const nn_option *t = &d->options[k];
    if (!t->def)
      continue;
    switch (t->type) {
      case NN_OPT_INT: o.v[k].i = strtoll(t->def, NULL, 10); break;
      case NN_OPT_REAL: o.v[k].r = strtod(t->def, NULL); break;
      case NN_OPT_BOOL: o.v[k].b = strcasecmp(t->def, "true") == 0; break;
      case NN_OPT_STRING: o.v[k].s = t->def; break;
      default: ck_abort_msg("%s: option %s has type %u", d->name, t->key,
                            t->type);
    }
  }
  return o;
}

static void set_opt(const nn_plugin *d, opts *o, const char *key,
                    nn_value v) {
  for (size_t k = 0; d->options && d->options[k].key; k++)
    if (strcmp(d->options[k].key, key) == 0) {
      o->v[k] = v;
      return;
    }
  ck_abort_msg("%s has no option %s", d->name, key);
}

static gsl_rng *rng_seeded(unsigned long seed) {
  gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
  ck_assert_ptr_nonnull(r);
  gsl_rng_set(r, seed);
  return r;
}

static nn_shape flat(uint32_t n) { return (nn_shape){1, 1, n}; }

/* A layer instance; its output shape in *out (if non-NULL). */
static void *layer_new_rng(const loaded *l, const opts *o, nn_shape in,
                           size_t max_batch, gsl_rng *r, nn_shape *out) {
  void *self = NULL;
  nn_shape s = {0, 0, 0};
  nn_error err = {0, ""};
  int rc = l->desc->layer->create(o ? o->v : NULL, in, max_batch, r, &s, &self, &err);
  ck_assert_msg(rc == NN_OK, "create %s: %s", l->desc->name, err.msg);
  ck_assert_ptr_nonnull(self);
  if (out)
    *out = s;
  return self;
}

static void *layer_new(const loaded *l, const opts *o, nn_shape in,
                       size_t max_batch, unsigned long seed, nn_shape *out) {
  gsl_rng *r = rng_seeded(seed);
  void *self = layer_new_rng(l, o, in, max_batch, r, out);
  gsl_rng_free(r);
  return self;
}

/* A dense layer of `units` with the other options at their defaults. */
static opts dense_opts(const loaded *l, int64_t units, int bias) {
  opts o = default_opts(l->desc);
  set_opt(l->desc, &o, "units", (nn_value){.i = units});
  set_opt(l->desc, &o, "bias", (nn_value){.b = bias});
  return o;
}

static const nn_layer_sparse *sparse_ext(const loaded *l, void *self) {
  ck_assert_ptr_nonnull(l->desc->layer->extension);
  const nn_layer_sparse *s = l->desc->layer->extension(self, NN_EXT_LAYER_SPARSE);
  ck_assert_ptr_nonnull(s);
  ck_assert_uint_ge(s->size, sizeof *s);
  return s;
}

static nn_param *params_of(const loaded *l, void *self, size_t *n) {
  *n = 0;
  return l->desc->layer->params ? l->desc->layer->params(self, n) : NULL;
}

static gsl_matrix *mat_alloc(size_t rows, size_t cols) {
  gsl_matrix *m = gsl_matrix_calloc(rows, cols);
  ck_assert_ptr_nonnull(m);
  return m;
}

static gsl_matrix *mat_gauss(size_t rows, size_t cols, gsl_rng *r,
                             double scale) {
  gsl_matrix *m = mat_alloc(rows, cols);
  nn_fill_gaussian(m, r, scale);
  return m;
}

static gsl_matrix *mat_from(size_t rows, size_t cols, const double *v) {
  gsl_matrix *m = mat_alloc(rows, cols);
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < cols; j++)
      gsl_matrix_set(m, i, j, v[i * cols + j]);
  return m;
}

static gsl_matrix *mat_copy(const gsl_matrix *a) {
  gsl_matrix *m = mat_alloc(a->size1, a->size2);
  gsl_matrix_memcpy(m, a);
  return m;
}

/* The same bits, element by element (views allowed). */
static int mat_same_bits(const gsl_matrix *a, const gsl_matrix *b) {
  if (a->size1 != b->size1 || a->size2 != b->size2)
    return 0;
  for (size_t i = 0; i < a->size1; i++)
    if (memcmp(a->data + i * a->tda, b->data + i * b->tda,
               a->size2 * sizeof(double)) != 0)
      return 0;
  return 1;
}

#define ck_assert_same_bits(a, b, what) \
  ck_assert_msg(mat_same_bits((a), (b)), "%s: not the same bits", (what))

static gsl_matrix_view top_rows(gsl_matrix *m, size_t rows) {
  return gsl_matrix_submatrix(m, 0, 0, rows, m->size2);
}

static const nn_context eval_ctx = {sizeof(nn_context), 0, 0, 0, NULL};

static void assert_error(int rc, const nn_error *err, const char *prefix,
                         const char *needle) {
  ck_assert_int_ne(rc, NN_OK);
  ck_assert_int_eq(err->code, rc);
  ck_assert_msg(strncmp(err->msg, prefix, strlen(prefix)) == 0,
                "message '%s' should start with '%s'", err->msg, prefix);
  ck_assert_msg(strstr(err->msg, needle) != NULL,
                "message '%s' should mention '%s'", err->msg, needle);
}

/* A random B x n batch with about `density` of its entries non-zero, in
 * [0, 1) like pixels; with an all-zero row 0 (an empty row of the sparse
 * batch, whose pre-activations are exactly the bias). */
static gsl_matrix *sparse_batch(size_t B, size_t n, double density,
                                gsl_rng *r) {
  gsl_matrix *X = mat_alloc(B, n);
  for (size_t i = 1; i < B; i++)
    for (size_t j = 0; j < n; j++)
      if (gsl_rng_uniform(r) < density)
        gsl_matrix_set(X, i, j, gsl_rng_uniform(r));
  return X;
}

static const char *const LAYERS[] = {"dense", "relu", "sigmoid", "tanh",
                                     "dropout"};
#define N_LAYERS (sizeof LAYERS / sizeof LAYERS[0])

/* ---------------------------------------------------------- descriptors */

START_TEST(test_descriptors) {
  for (size_t i = 0; i < N_LAYERS; i++) {
    loaded l = load(LAYERS[i]);
    const nn_plugin *d = l.desc;
    ck_assert_str_eq(d->name, LAYERS[i]);
    ck_assert_uint_eq(d->kind, NN_KIND_LAYER);
    ck_assert_uint_eq(d->abi_major, NN_ABI_MAJOR);
    ck_assert_uint_le(d->abi_minor, NN_ABI_MINOR);
    ck_assert_uint_eq(d->size, sizeof(nn_plugin));
    ck_assert_ptr_null(d->model);
    ck_assert_ptr_null(d->optim);
    ck_assert_uint_eq(d->layer->size, sizeof(nn_layer_ops));
    ck_assert(d->layer->create && d->layer->destroy && d->layer->forward &&
              d->layer->backward);
    const int stochastic = strcmp(LAYERS[i], "dropout") == 0;
    ck_assert_uint_eq(d->layer->flags, stochastic ? NN_STOCHASTIC : 0u);
    d->layer->destroy(NULL); /* NULL-safe */
    test_plugin_unload(&l);
  }
}
END_TEST

START_TEST(test_option_tables) {
  loaded l = load("dense");
  static const char *const keys[] = {"units", "bias", "init", "std"};
  static const uint32_t types[] = {NN_OPT_INT, NN_OPT_BOOL, NN_OPT_STRING,
                                   NN_OPT_REAL};
  for (size_t k = 0; k < 4; k++) {
    ck_assert_str_eq(l.desc->options[k].key, keys[k]);
    ck_assert_uint_eq(l.desc->options[k].type, types[k]);
  }
  ck_assert_ptr_null(l.desc->options[4].key);
  ck_assert_ptr_null(l.desc->options[0].def); /* units is required */
  ck_assert_str_eq(l.desc->options[1].def, "true");
  ck_assert_str_eq(l.desc->options[2].def, "normal");
  ck_assert_double_eq(strtod(l.desc->options[3].def, NULL), 0.001);
  test_plugin_unload(&l);
  l = load("dropout");
  ck_assert_str_eq(l.desc->options[0].key, "p");
  ck_assert_double_eq(strtod(l.desc->options[0].def, NULL), 0.5);
  ck_assert_uint_eq(l.desc->options[0].bounds,
                    NN_OPT_HAS_MIN | NN_OPT_HAS_MAX | NN_OPT_MAX_EXCLUSIVE);
  ck_assert_ptr_null(l.desc->options[1].key);
  test_plugin_unload(&l);
}
END_TEST

/* The core's loader accepts every layer (kind, sizes, option tables). */
START_TEST(test_registry_accepts) {
  for (size_t i = 0; i < N_LAYERS; i++) {
    nn_loaded *p = NULL;
    nn_error err = {0, ""};
    int rc = nn_plugin_open(&p, LAYERS[i], NN_KIND_LAYER, test_plugin_path(),
                            &err);
    ck_assert_msg(rc == NN_OK, "open %s: %s", LAYERS[i], err.msg);
    ck_assert_str_eq(nn_loaded_desc(p)->name, LAYERS[i]);
    nn_plugin_close(p);
  }
}
END_TEST

/* --------------------------------------------------------------- shapes */

START_TEST(test_shapes) {
  const nn_shape in = {2, 3, 4};
  loaded l = load("dense");
  opts o = dense_opts(&l, 5, 1);
  nn_shape out;
  void *self = layer_new(&l, &o, in, 8, 1, &out);
  ck_assert(out.c == 1 && out.h == 1 && out.w == 5);
  size_t n;
  nn_param *p = params_of(&l, self, &n);
  ck_assert_uint_eq(n, 2);
  ck_assert_str_eq(p[0].name, "W");
  ck_assert_uint_eq(p[0].flags, NN_PARAM_WEIGHT);
  ck_assert(p[0].value->size1 == 24 && p[0].value->size2 == 5);
  ck_assert(p[0].grad->size1 == 24 && p[0].grad->size2 == 5);
  ck_assert_str_eq(p[1].name, "b");
  ck_assert_uint_eq(p[1].flags, NN_PARAM_BIAS);
  ck_assert(p[1].value->size1 == 1 && p[1].value->size2 == 5);
  l.desc->layer->destroy(self);
  test_plugin_unload(&l);
  for (size_t i = 1; i < N_LAYERS; i++) {
    l = load(LAYERS[i]);
    opts d = default_opts(l.desc);
    self = layer_new(&l, &d, in, 8, 1, &out);
    ck_assert_msg(out.c == 2 && out.h == 3 && out.w == 4, "%s", LAYERS[i]);
    p = params_of(&l, self, &n);
    ck_assert_uint_eq(n, 0);
    l.desc->layer->destroy(self);
    test_plugin_unload(&l);
  }
}
END_TEST

START_TEST(test_dense_no_bias) {
  loaded l = load("dense");
  opts o = dense_opts(&l, 3, 0);
  void *self = layer_new(&l, &o, flat(2), 4, 1, NULL);
  size_t n;
  nn_param *p = params_of(&l, self, &n);
  ck_assert_uint_eq(n, 1);
  ck_assert_str_eq(p[0].name, "W");
  /* Y = X W, nothing added. */
  const double w[] = {1, 0, -1, 2, 1, 0.5};
  for (size_t k = 0; k < 6; k++)
    p[0].value->data[k] = w[k];
  const double x[] = {1, 2, -3, 4};
  gsl_matrix *X = mat_from(2, 2, x), *Y = mat_alloc(2, 3);
  nn_error err = {0, ""};
  ck_assert_int_eq(l.desc->layer->forward(self, &eval_ctx, X, Y, &err), NN_OK);
  const double want[] = {5, 2, 0, 5, 4, 5};
  for (size_t k = 0; k < 6; k++)
    ck_assert_double_eq(Y->data[k], want[k]);
  gsl_matrix_free(X);
  gsl_matrix_free(Y);
  l.desc->layer->destroy(self);
  test_plugin_unload(&l);
}
END_TEST

/* -------------------------------------------------------- forward values */

START_TEST(test_dense_forward_values) {
  loaded l = load("dense");
  opts o = dense_opts(&l, 3, 1);
  void *self = layer_new(&l, &o, flat(2), 4, 1, NULL);
  size_t n;
  nn_param *p = params_of(&l, self, &n);
  const double w[] = {1, 0, -1, 2, 1, 0}, b[] = {0.5, -1, 2};
  for (size_t k = 0; k < 6; k++)
    p[0].value->data[k] = w[k];
  for (size_t k = 0; k < 3; k++)
    p[1].value->data[k] = b[k];
  /* X and Y as views into wider matrices (tda != size2). */
  gsl_matrix *Xw = mat_alloc(4, 5), *Yw = mat_alloc(4, 7);
  const double x[] = {1, 2, 3, 4};
  for (size_t i = 0; i < 2; i++)
    for (size_t j = 0; j < 2; j++)
      gsl_matrix_set(Xw, i, j + 1, x[i * 2 + j]);
  gsl_matrix_view X = gsl_matrix_submatrix(Xw, 0, 1, 2, 2);
  gsl_matrix_view Y = gsl_matrix_submatrix(Yw, 0, 2, 2, 3);
  nn_error err = {0, ""};
  ck_assert_int_eq(l.desc->layer->forward(self, &eval_ctx, &X.matrix, &Y.matrix, &err),
                   NN_OK);
  /* [1 2] W = [5 2 -1], [3 4] W = [11 4 -3], plus b. */
  const double want[] = {5.5, 1, 1, 11.5, 3, -1};
  for (size_t i = 0; i < 2; i++)
    for (size_t j = 0; j < 3; j++)
      ck_assert_double_eq(gsl_matrix_get(&Y.matrix, i, j), want[i * 3 + j]);
  ck_assert_double_eq(gsl_matrix_get(Yw, 0, 1), 0.0); /* outside the view */
  ck_assert_double_eq(gsl_matrix_get(Yw, 0, 5), 0.0);

  /* The sparse path: the same numbers. */
  const nn_layer_sparse *s = sparse_ext(&l, self);
  ck_assert_uint_eq(s->flags & NN_SPARSE_TRANSPOSE, NN_SPARSE_TRANSPOSE);
  nn_csr_buffer cb;
  ck_assert_int_eq(nn_csr_buffer_init(&cb, 4, 8), NN_OK);
  ck_assert_int_eq(nn_csr_from_dense(&cb, &X.matrix), NN_OK);
  gsl_matrix *Ys = mat_alloc(2, 3);
  ck_assert_int_eq(s->forward(self, &eval_ctx, &cb.csr, Ys, &err), NN_OK);
  for (size_t k = 0; k < 6; k++)
    ck_assert_double_eq(Ys->data[k], want[k]);
  ck_assert_ptr_null(l.desc->layer->extension(self, "nn.layer.no-such-thing/1"));
  nn_csr_buffer_free(&cb);
  gsl_matrix_free(Ys);
  gsl_matrix_free(Xw);
  gsl_matrix_free(Yw);
  l.desc->layer->destroy(self);
  test_plugin_unload(&l);
}
END_TEST

/* Forward of an element-wise layer on one row; Y is compared to want
 * within tol (0: exactly). */
static void check_unary(const char *name, const double *x, const double *want,
                        size_t n, double tol) {
  loaded l = load(name);
  opts o = default_opts(l.desc);
  void *self = layer_new(&l, &o, flat((uint32_t)n), 2, 1, NULL);
  gsl_matrix *X = mat_from(1, n, x), *Y = mat_alloc(1, n);
  nn_error err = {0, ""};
  ck_assert_int_eq(l.desc->layer->forward(self, &eval_ctx, X, Y, &err), NN_OK);
  for (size_t j = 0; j < n; j++)
    ck_assert_msg(fabs(Y->data[j] - want[j]) <= tol,
                  "%s(%g) = %.17g, want %.17g", name, x[j], Y->data[j],
                  want[j]);
  gsl_matrix_free(X);
  gsl_matrix_free(Y);
  l.desc->layer->destroy(self);
  test_plugin_unload(&l);
}

START_TEST(test_activation_values) {
  const double xr[] = {-1, 0, 2, -0.5, 1e-300};
  const double yr[] = {0, 0, 2, 0, 1e-300};
  check_unary("relu", xr, yr, 5, 0.0);
  const double xs[] = {0, log(3.0), -log(3.0), 800, -800};
  const double ys[] = {0.5, 0.75, 0.25, 1, 0};
  check_unary("sigmoid", xs, ys, 5, 1e-15);
  const double xt[] = {0, atanh(0.5), -atanh(0.25), 30};
  const double yt[] = {0, 0.5, -0.25, 1};
  check_unary("tanh", xt, yt, 4, 1e-15);
  const double xd[] = {-1, 0, 3.5};
  check_unary("dropout", xd, xd, 3, 0.0); /* evaluation: the identity */
}
END_TEST

/* ------------------------------------------------------- gradient check */

/* L = sum(G .* layer(X)); with ctx->train, each forward gets a fresh
 * stream seeded with `seed` (so dropout draws the same mask every time). */
static double gc_loss(const loaded *l, void *self, int train,
                      unsigned long seed, const gsl_matrix *X,
                      const gsl_matrix *G, gsl_matrix *Y) {
  gsl_rng *r = train ? rng_seeded(seed) : NULL;
  const nn_context ctx = {sizeof(nn_context), (uint32_t)train, 0, 0, r};
  nn_error err = {0, ""};
  ck_assert_msg(l->desc->layer->forward(self, &ctx, X, Y, &err) == NN_OK, "%s: %s",
                l->desc->name, err.msg);
  if (r)
    gsl_rng_free(r);
  double s = 0.0;
  for (size_t i = 0; i < Y->size1; i++)
    for (size_t j = 0; j < Y->size2; j++)
      s += gsl_matrix_get(G, i, j) * gsl_matrix_get(Y, i, j);
  return s;
}

/* Analytic against central differences, |a - n| <= atol + rtol * max(|a|,
 * |n|): the absolute term for entries whose derivative is about 0, the
 * relative one for the rest. */
static void gc_compare(const char *what, size_t k, double a, double num) {
  const double atol = 1e-8, rtol = 1e-6;
  const double bound = atol + rtol * fmax(fabs(a), fabs(num));
  ck_assert_msg(fabs(a - num) <= bound,
                "%s[%zu]: analytic %.12g, numeric %.12g", what, k, a, num);
}

static double gc_numeric(const loaded *l, void *self, int train,
                         const gsl_matrix *X, const gsl_matrix *G,
                         gsl_matrix *Y, double *v, double h) {
  const double keep = *v;
  *v = keep + h;
  const double up = gc_loss(l, self, train, 7, X, G, Y);
  *v = keep - h;
  const double down = gc_loss(l, self, train, 7, X, G, Y);
  *v = keep;
  return (up - down) / (2.0 * h);
}

static void gradcheck_layer(const char *name, const opts *o, int train,
                            size_t B, size_t n_in, double xscale) {
  loaded l = load(name);
  opts d = default_opts(l.desc);
  nn_shape out;
  void *self = layer_new(&l, o ? o : &d, flat((uint32_t)n_in), B, 3, &out);
  const size_t n_out = nn_shape_size(out);
  gsl_rng *r = rng_seeded(11);
  gsl_matrix *X = mat_gauss(B, n_in, r, xscale);
  /* Away from the kinks of relu (0) by far more than the step. */
  for (size_t k = 0; k < B * n_in; k++)
    if (fabs(X->data[k]) < 1e-2)
      X->data[k] = X->data[k] < 0 ? -0.5 : 0.5;
  size_t np;
  nn_param *p = params_of(&l, self, &np);
  for (size_t k = 0; k < np; k++) /* non-zero biases too */
    nn_fill_gaussian(p[k].value, r, 0.5);
  gsl_matrix *G = mat_gauss(B, n_out, r, 1.0), *Y = mat_alloc(B, n_out);
  gsl_matrix *dY = mat_copy(G), *dX = mat_alloc(B, n_in);

  gc_loss(&l, self, train, 7, X, G, Y);
  nn_error err = {0, ""};
  ck_assert_msg(l.desc->layer->backward(self, X, Y, dY, dX, &err) == NN_OK, "%s: %s",
                name, err.msg);
  const double h = 1e-5;
  for (size_t k = 0; k < B * n_in; k++)
    gc_compare("dX", k, dX->data[k],
               gc_numeric(&l, self, train, X, G, Y, &X->data[k], h));
  for (size_t q = 0; q < np; q++) {
    gsl_matrix *v = p[q].value;
    for (size_t k = 0; k < v->size1 * v->size2; k++)
      gc_compare(p[q].name, k, p[q].grad->data[k],
                 gc_numeric(&l, self, train, X, G, Y, &v->data[k], h));
  }
  gsl_matrix_free(X);
  gsl_matrix_free(G);
  gsl_matrix_free(Y);
  gsl_matrix_free(dY);
  gsl_matrix_free(dX);
  gsl_rng_free(r);
  l.desc->layer->destroy(self);
  test_plugin_unload(&l);
}

START_TEST(test_gradcheck_dense) {
  loaded l = load("dense");
  opts o = dense_opts(&l, 4, 1);
  gradcheck_layer("dense", &o, 0, 3, 5, 1.0);
  o = dense_opts(&l, 3, 0);
  gradcheck_layer("dense", &o, 0, 2, 4, 1.0);
  test_plugin_unload(&l);
}
END_TEST

START_TEST(test_gradcheck_activations) {
  gradcheck_layer("relu", NULL, 0, 3, 4, 1.0);
  gradcheck_layer("sigmoid", NULL, 0, 3, 4, 2.0);
  gradcheck_layer("tanh", NULL, 0, 3, 4, 1.0);
}
END_TEST

START_TEST(test_gradcheck_dropout) {
  gradcheck_layer("dropout", NULL, 1, 4, 5, 1.0); /* training: the mask */
  gradcheck_layer("dropout", NULL, 0, 2, 3, 1.0); /* evaluation */
}
END_TEST

/* The sparse path's gradients equal the dense path's (up to rounding: the
 * sums skip the zeros and, for 16 columns and fewer, alternate between two
 * accumulators). */
START_TEST(test_dense_sparse_gradients) {
  loaded l = load("dense");
  const size_t B = 6, n_in = 30;
  for (int units = 5; units <= 40; units += 35) {
    opts o = dense_opts(&l, units, 1);
    void *self = layer_new(&l, &o, flat((uint32_t)n_in), 8, 5, NULL);
    const nn_layer_sparse *s = sparse_ext(&l, self);
    gsl_rng *r = rng_seeded(9);
    gsl_matrix *X = sparse_batch(B, n_in, 0.3, r);
    gsl_matrix *dY = mat_gauss(B, (size_t)units, r, 1.0);
    gsl_matrix *Y = mat_alloc(B, (size_t)units);
    size_t np;
    nn_param *p = params_of(&l, self, &np);
    nn_error err = {0, ""};
    ck_assert_int_eq(l.desc->layer->forward(self, &eval_ctx, X, Y, &err), NN_OK);
    ck_assert_int_eq(l.desc->layer->backward(self, X, Y, dY, NULL, &err), NN_OK);
    gsl_matrix *dW = mat_copy(p[0].grad), *db = mat_copy(p[1].grad);
    nn_csr_buffer cb;
    ck_assert_int_eq(nn_csr_buffer_init(&cb, B, B * n_in), NN_OK);
    ck_assert_int_eq(nn_csr_from_dense(&cb, X), NN_OK);
    gsl_matrix_set_all(p[0].grad, NAN);
    gsl_matrix_set_all(p[1].grad, NAN);
    /* Xt NULL: the layer transposes the batch itself. */
    ck_assert_int_eq(s->backward(self, &cb.csr, NULL, Y, dY, &err), NN_OK);
    for (size_t k = 0; k < n_in * (size_t)units; k++)
      ck_assert_double_eq_tol(p[0].grad->data[k], dW->data[k], 1e-13);
    for (size_t k = 0; k < (size_t)units; k++)
      ck_assert_double_eq_tol(p[1].grad->data[k], db->data[k], 1e-13);
    nn_csr_buffer_free(&cb);
    gsl_matrix_free(X);
    gsl_matrix_free(dY);
    gsl_matrix_free(Y);
    gsl_matrix_free(dW);
    gsl_matrix_free(db);
    gsl_rng_free(r);
    l.desc->layer->destroy(self);
  }
  test_plugin_unload(&l);
}
END_TEST

/* --------------------------------------------------------------- dense init */

START_TEST(test_dense_init) {
  loaded l = load("dense");
  const size_t n_in = 60, units = 40;
  static const char *const inits[] = {"normal", "xavier", "he"};
  const double scales[] = {0.001, sqrt(2.0 / (60.0 + 40.0)), sqrt(2.0 / 60.0)};
  for (size_t t = 0; t < 3; t++) {
    opts o = dense_opts(&l, (int64_t)units, 1);
    set_opt(l.desc, &o, "init", (nn_value){.s = inits[t]});
    void *self = layer_new(&l, &o, flat((uint32_t)n_in), 4, 42, NULL);
    size_t np;
    nn_param *p = params_of(&l, self, &np);
    /* The draws of nn_fill_gaussian from the lent stream, and no others
     * (the next layer draws after them). */
    gsl_rng *r = rng_seeded(42);
    gsl_matrix *W = mat_gauss(n_in, units, r, scales[t]);
    ck_assert_same_bits(p[0].value, W, inits[t]);
    for (size_t k = 0; k < units; k++)
      ck_assert(p[1].value->data[k] == 0.0 && !signbit(p[1].value->data[k]));
    gsl_matrix_free(W);
    gsl_rng_free(r);
    l.desc->layer->destroy(self);
  }
  /* std applies to init = normal. */
  opts o = dense_opts(&l, 3, 1);
  set_opt(l.desc, &o, "std", (nn_value){.r = 0.25});
  void *self = layer_new(&l, &o, flat(2), 4, 8, NULL);
  size_t np;
  nn_param *p = params_of(&l, self, &np);
  gsl_rng *r = rng_seeded(8);
  gsl_matrix *W = mat_gauss(2, 3, r, 0.25);
  ck_assert_same_bits(p[0].value, W, "std 0.25");
  gsl_matrix_free(W);
  gsl_rng_free(r);
  l.desc->layer->destroy(self);
  test_plugin_unload(&l);
}
END_TEST

/* ---------------------------------------------------------------- errors */

static void create_fails(const loaded *l, const opts *o, nn_shape in,
                         size_t max_batch, const char *needle) {
  gsl_rng *r = rng_seeded(1);
  void *self = (void *)1;
  nn_shape out;
  nn_error err = {0, ""};
  char prefix[64];
  snprintf(prefix, sizeof prefix, "%s: ", l->desc->name);
  int rc = l->desc->layer->create(o ? o->v : NULL, in, max_batch, r, &out, &self,
                          &err);
  assert_error(rc, &err, prefix, needle);
  ck_assert_ptr_null(self);
  gsl_rng_free(r);
}

START_TEST(test_option_errors) {
  loaded l = load("dense");
  opts o = dense_opts(&l, 0, 1);
  create_fails(&l, &o, flat(4), 2, "units");
  o = dense_opts(&l, -3, 1);
  create_fails(&l, &o, flat(4), 2, "units");
  o = dense_opts(&l, 2, 1);
  set_opt(l.desc, &o, "init", (nn_value){.s = "uniform"});
  create_fails(&l, &o, flat(4), 2, "uniform");
  o = dense_opts(&l, 2, 1);
  set_opt(l.desc, &o, "std", (nn_value){.r = 0.0});
  create_fails(&l, &o, flat(4), 2, "std");
  create_fails(&l, NULL, flat(4), 2, "units");
  o = dense_opts(&l, 2, 1);
  create_fails(&l, &o, flat(0), 2, "input");
  create_fails(&l, &o, flat(4), 0, "max_batch");
  test_plugin_unload(&l);

  l = load("dropout");
  static const double bad_p[] = {1.0, -0.1, 1.5};
  for (size_t k = 0; k < 3; k++) {
    o = default_opts(l.desc);
    set_opt(l.desc, &o, "p", (nn_value){.r = bad_p[k]});
    create_fails(&l, &o, flat(4), 2, "p must be");
  }
  test_plugin_unload(&l);
}
END_TEST

/* Batches that do not fit the layer come back as errors naming it. */
START_TEST(test_batch_errors) {
  for (size_t i = 0; i < N_LAYERS; i++) {
    loaded l = load(LAYERS[i]);
    opts o = strcmp(LAYERS[i], "dense") == 0 ? dense_opts(&l, 4, 1)
                                             : default_opts(l.desc);
    nn_shape out;
    void *self = layer_new(&l, &o, flat(4), 2, 1, &out);
    const size_t n_out = nn_shape_size(out);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s: ", LAYERS[i]);
    nn_error err = {0, ""};
    gsl_matrix *X3 = mat_alloc(3, 4), *Y3 = mat_alloc(3, n_out);
    gsl_matrix *X5 = mat_alloc(1, 5), *Y1 = mat_alloc(1, n_out);
    gsl_matrix *Ybad = mat_alloc(1, n_out + 1), *X1 = mat_alloc(1, 4);
    assert_error(l.desc->layer->forward(self, &eval_ctx, X3, Y3, &err), &err, prefix,
                 "batch of 3 rows");
    assert_error(l.desc->layer->forward(self, &eval_ctx, X5, Y1, &err), &err, prefix,
                 "5 columns");
    assert_error(l.desc->layer->forward(self, &eval_ctx, X1, Ybad, &err), &err,
                 prefix, "Y");
    gsl_matrix_free(X3);
    gsl_matrix_free(Y3);
    gsl_matrix_free(X5);
    gsl_matrix_free(Y1);
    gsl_matrix_free(Ybad);
    gsl_matrix_free(X1);
    l.desc->layer->destroy(self);
    test_plugin_unload(&l);
  }
}
END_TEST

/* --------------------------------------------------------------- dropout */

typedef struct drop_fixture {
  loaded l;
  void *self;
  gsl_matrix *X, *Y, *dY, *dX;
  double p;
} drop_fixture;

static drop_fixture drop_new(double p, size_t B, size_t n) {
  drop_fixture f;
  f.l = load("dropout");
  opts o = default_opts(f.l.desc);
  set_opt(f.l.desc, &o, "p", (nn_value){.r = p});
  f.self = layer_new(&f.l, &o, flat((uint32_t)n), B, 1, NULL);
  f.X = mat_alloc(B, n);
  gsl_matrix_set_all(f.X, 1.0);
  f.Y = mat_alloc(B, n);
  f.dY = mat_alloc(B, n);
  f.dX = mat_alloc(B, n);
  f.p = p;
  return f;
}

static void drop_free(drop_fixture *f) {
  gsl_matrix_free(f->X);
  gsl_matrix_free(f->Y);
  gsl_matrix_free(f->dY);
  gsl_matrix_free(f->dX);
  f->l.desc->layer->destroy(f->self);
  test_plugin_unload(&f->l);
}

static void drop_forward(drop_fixture *f, int train, unsigned long seed) {
  gsl_rng *r = train ? rng_seeded(seed) : NULL;
  const nn_context ctx = {sizeof(nn_context), (uint32_t)train, 2, 5, r};
  nn_error err = {0, ""};
  ck_assert_msg(f->l.desc->layer->forward(f->self, &ctx, f->X, f->Y, &err) == NN_OK,
                "%s", err.msg);
  if (r)
    gsl_rng_free(r);
}

START_TEST(test_dropout_eval_identity) {
  drop_fixture f = drop_new(0.5, 4, 6);
  gsl_rng *r = rng_seeded(3);
  nn_fill_gaussian(f.X, r, 1.0);
  nn_fill_gaussian(f.dY, r, 1.0);
  drop_forward(&f, 0, 0);
  ck_assert_same_bits(f.Y, f.X, "eval forward");
  nn_error err = {0, ""};
  ck_assert_int_eq(f.l.desc->layer->backward(f.self, f.X, f.Y, f.dY, f.dX, &err),
                   NN_OK);
  ck_assert_same_bits(f.dX, f.dY, "eval backward");
  gsl_rng_free(r);
  drop_free(&f);
}
END_TEST

START_TEST(test_dropout_mask) {
  const size_t B = 200, n = 100;
  drop_fixture f = drop_new(0.3, B, n);
  const double scale = 1.0 / (1.0 - 0.3);
  drop_forward(&f, 1, 17);
  gsl_matrix *first = mat_copy(f.Y);
  size_t dropped = 0;
  for (size_t k = 0; k < B * n; k++) {
    ck_assert(f.Y->data[k] == 0.0 || f.Y->data[k] == scale);
    dropped += f.Y->data[k] == 0.0;
  }
  /* 20000 units: the dropped fraction is within 0.02 of p (6 sigma). */
  ck_assert_double_eq_tol((double)dropped / (double)(B * n), 0.3, 0.02);
  /* The same stream gives the same mask; another stream another one. */
  drop_forward(&f, 1, 17);
  ck_assert_same_bits(f.Y, first, "same seed");
  drop_forward(&f, 1, 18);
  ck_assert(!mat_same_bits(f.Y, first));
  /* Backward applies the mask of the last forward (seed 18), scaled. */
  gsl_rng *r = rng_seeded(4);
  nn_fill_gaussian(f.dY, r, 1.0);
  nn_error err = {0, ""};
  ck_assert_int_eq(f.l.desc->layer->backward(f.self, f.X, f.Y, f.dY, f.dX, &err),
                   NN_OK);
  for (size_t k = 0; k < B * n; k++)
    ck_assert(f.dX->data[k] ==
              (f.Y->data[k] != 0.0 ? f.dY->data[k] * scale : 0.0));
  gsl_matrix_free(first);
  gsl_rng_free(r);
  drop_free(&f);
}
END_TEST

START_TEST(test_dropout_edges) {
  /* p = 0: nothing dropped, nothing scaled. */
  drop_fixture f = drop_new(0.0, 3, 5);
  gsl_rng *r = rng_seeded(5);
  nn_fill_gaussian(f.X, r, 1.0);
  drop_forward(&f, 1, 1);
  ck_assert_same_bits(f.Y, f.X, "p = 0");
  /* Training without a stream is an error, not a crash. */
  const nn_context ctx = {sizeof(nn_context), 1, 0, 0, NULL};
  nn_error err = {0, ""};
  assert_error(f.l.desc->layer->forward(f.self, &ctx, f.X, f.Y, &err), &err,
               "dropout: ", "random");
  /* ... and leaves no mask for backward. */
  assert_error(f.l.desc->layer->backward(f.self, f.X, f.Y, f.dY, f.dX, &err), &err,
               "dropout: ", "forward");
  /* A batch of fewer rows than max_batch, as views: its mask is the
   * first rows of the full batch's (the same draws, in row order). */
  drop_free(&f);
  f = drop_new(0.5, 3, 5);
  nn_fill_gaussian(f.X, r, 1.0);
  drop_forward(&f, 1, 1);
  gsl_matrix *full = mat_copy(f.Y);
  gsl_matrix_set_all(f.Y, 7.0);
  gsl_matrix_view X2 = top_rows(f.X, 2), Y2 = top_rows(f.Y, 2);
  gsl_rng *s = rng_seeded(1);
  const nn_context train = {sizeof(nn_context), 1, 0, 0, s};
  ck_assert_int_eq(
      f.l.desc->layer->forward(f.self, &train, &X2.matrix, &Y2.matrix, &err), NN_OK);
  gsl_matrix_view full2 = top_rows(full, 2);
  ck_assert_same_bits(&Y2.matrix, &full2.matrix, "2 of 3 rows");
  ck_assert_double_eq(gsl_matrix_get(f.Y, 2, 0), 7.0); /* untouched */
  gsl_matrix_free(full);
  gsl_rng_free(s);
  gsl_rng_free(r);
  drop_free(&f);
}
END_TEST

/* ------------------------------------------ the step inside backward */

/* A stepper that records which rows of which parameter were stepped and,
 * when `rule` is set, hands over plain SGD for parameter 0. */
typedef struct step_log {
  size_t rows[2][256]; /* times each row of W (k = 0) and b (1) stepped */
  size_t sgd_asked;
  int rule;
  double lr, reg;
} step_log;

static int log_rows(void *ctx, size_t k, size_t r0, size_t r1,
                    nn_error *err) {
  step_log *s = ctx;
  if (k > 1 || r1 > 256 || r0 >= r1)
    return nn_error_set(err, NN_EINVAL, "stepper: bad rows");
  if (k == 0 && r1 - r0 > 32)
    return nn_error_set(err, NN_EINVAL, "stepper: a block of %zu rows",
                        r1 - r0);
  for (size_t r = r0; r < r1; r++)
    s->rows[k][r]++;
  return NN_OK;
}

static int fail_rows(void *ctx, size_t k, size_t r0, size_t r1,
                     nn_error *err) {
  (void)ctx, (void)k, (void)r0, (void)r1;
  return nn_error_set(err, NN_ENUMERIC, "stepper: the disk is full");
}

static int log_sgd(void *ctx, size_t k, double *lr, double *reg) {
  step_log *s = ctx;
  s->sgd_asked++;
  if (!s->rule || k != 0)
    return 0;
  *lr = s->lr;
  *reg = s->reg;
  return 1;
}

/* ------------------------------------------------ same bits as the models */

/* One batch through dense(h) -> sigmoid -> dense(c) and through twolayer's
 * calls (plugins/twolayer.c: twolayer_hidden, twolayer_output,
 * twolayer_backward_core, twolayer_step_w1), compared bit for bit.  The
 * batch has B < max_batch rows and the layers' buffers are views of
 * max_batch rows, as the core hands them.  wscale != 0 redraws W1 (in
 * both) at that scale, for pre-activations far from 0. */
static void twolayer_bits(double wscale, int stepped, int rule) {
  const size_t n_in = 100, h = 128, c = 10, B = 20, max_batch = 32;
  loaded dl = load("dense"), sl = load("sigmoid");
  opts o1 = dense_opts(&dl, (int64_t)h, 1), o2 = dense_opts(&dl, (int64_t)c, 1);
  gsl_rng *r = rng_seeded(2024);
  nn_shape s1, s2, s3;
  void *d1 = layer_new_rng(&dl, &o1, flat((uint32_t)n_in), max_batch, r, &s1);
  void *sg = layer_new_rng(&sl, NULL, s1, max_batch, r, &s2);
  void *d2 = layer_new_rng(&dl, &o2, s2, max_batch, r, &s3);
  ck_assert_uint_eq(nn_shape_size(s3), c);
  gsl_rng_free(r);
  size_t np;
  nn_param *p1 = params_of(&dl, d1, &np), *p2 = params_of(&dl, d2, &np);

  /* twolayer's create: W1 then W2 from one stream, biases zero. */
  r = rng_seeded(2024);
  gsl_matrix *W1 = mat_gauss(n_in, h, r, 0.001), *W2 = mat_gauss(h, c, r, 0.001);
  ck_assert_same_bits(p1[0].value, W1, "W1");
  ck_assert_same_bits(p2[0].value, W2, "W2");
  if (wscale != 0.0) {
    nn_fill_gaussian(W1, r, wscale);
    gsl_matrix_memcpy(p1[0].value, W1);
  }
  /* Non-zero biases, so that their paths count. */
  gsl_matrix *b1 = mat_gauss(1, h, r, 0.5), *b2 = mat_gauss(1, c, r, 0.5);
  gsl_matrix_memcpy(p1[1].value, b1);
  gsl_matrix_memcpy(p2[1].value, b2);

  gsl_matrix *Xd = sparse_batch(B, n_in, 0.2, r);
  uint32_t labels[20];
  for (size_t i = 0; i < B; i++)
    labels[i] = (uint32_t)gsl_rng_uniform_int(r, c);
  nn_csr_buffer X, Xt;
  ck_assert_int_eq(nn_csr_buffer_init(&X, B, B * n_in), NN_OK);
  ck_assert_int_eq(nn_csr_buffer_init(&Xt, n_in, B * n_in), NN_OK);
  ck_assert_int_eq(nn_csr_from_dense(&X, Xd), NN_OK);
  ck_assert_int_eq(nn_csr_transpose(&Xt, &X.csr), NN_OK);

  /* twolayer: forward. */
  gsl_matrix *H = mat_alloc(B, h), *S = mat_alloc(B, c);
  ck_assert_int_eq(nn_csr_matmul(&X.csr, W1, b1, NN_ACT_SIGMOID, H), NN_OK);
  ck_assert_int_eq(nn_dense_matmul(H, 0, W2, b2, S), NN_OK);
  /* twolayer: backward. */
  gsl_matrix *dS = mat_alloc(B, c);
  double loss;
  size_t hits;
  ck_assert_int_eq(nn_softmax_xent(S, labels, dS, &loss, &hits), NN_OK);
  gsl_matrix *dSl = mat_copy(dS); /* the layers' copy */
  gsl_matrix *dW2 = mat_alloc(h, c), *db2 = mat_alloc(1, c);
  gsl_matrix *W2t = mat_alloc(c, h), *dH = mat_alloc(B, h);
  gsl_matrix *db1 = mat_alloc(1, h), *dW1 = mat_alloc(n_in, h);
  ck_assert_int_eq(nn_dense_matmul(H, 1, dS, NULL, dW2), NN_OK);
  ck_assert_int_eq(nn_column_sums(dS, db2), NN_OK);
  for (size_t j = 0; j < h; j++)
    for (size_t k = 0; k < c; k++)
      gsl_matrix_set(W2t, k, j, gsl_matrix_get(W2, j, k));
  ck_assert_int_eq(nn_dense_matmul(dS, 0, W2t, NULL, dH), NN_OK);
  gsl_matrix *dHpre = mat_copy(dH);
  ck_assert_int_eq(nn_sigmoid_backward(dH, H, db1), NN_OK);
  ck_assert_int_eq(nn_csr_matmul(&Xt.csr, dH, NULL, NN_ACT_NONE, dW1), NN_OK);

  /* The layers, on views of max_batch-row buffers. */
  gsl_matrix *Y1b = mat_alloc(max_batch, h), *Y2b = mat_alloc(max_batch, h);
  gsl_matrix *Y3b = mat_alloc(max_batch, c);
  gsl_matrix *dX2b = mat_alloc(max_batch, h), *dX1b = mat_alloc(max_batch, h);
  gsl_matrix_view Y1 = top_rows(Y1b, B), Y2 = top_rows(Y2b, B),
                  Y3 = top_rows(Y3b, B), dX2 = top_rows(dX2b, B),
                  dX1 = top_rows(dX1b, B);
  const nn_layer_sparse *sp = sparse_ext(&dl, d1);
  nn_error err = {0, ""};
  ck_assert_int_eq(sp->forward(d1, &eval_ctx, &X.csr, &Y1.matrix, &err),
                   NN_OK);
  ck_assert_int_eq(
      sl.desc->layer->forward(sg, &eval_ctx, &Y1.matrix, &Y2.matrix, &err), NN_OK);
  ck_assert_int_eq(
      dl.desc->layer->forward(d2, &eval_ctx, &Y2.matrix, &Y3.matrix, &err), NN_OK);
  ck_assert_same_bits(&Y2.matrix, H, "H");
  ck_assert_same_bits(&Y3.matrix, S, "scores");

  ck_assert_int_eq(dl.desc->layer->backward(d2, &Y2.matrix, &Y3.matrix, dSl,
                                    &dX2.matrix, &err),
                   NN_OK);
  ck_assert_same_bits(p2[0].grad, dW2, "dW2");
  ck_assert_same_bits(p2[1].grad, db2, "db2");
  ck_assert_same_bits(&dX2.matrix, dHpre, "dH");
  ck_assert_int_eq(sl.desc->layer->backward(sg, &Y1.matrix, &Y2.matrix, &dX2.matrix,
                                    &dX1.matrix, &err),
                   NN_OK);
  ck_assert_same_bits(&dX1.matrix, dH, "dZ1");
  if (!stepped) {
    ck_assert_int_eq(
        sp->backward(d1, &X.csr, &Xt.csr, &Y1.matrix, &dX1.matrix, &err),
        NN_OK);
    ck_assert_same_bits(p1[0].grad, dW1, "dW1");
    ck_assert_same_bits(p1[1].grad, db1, "db1");
  } else {
    step_log log;
    memset(&log, 0, sizeof log);
    log.rule = rule;
    log.lr = 0.1;
    log.reg = 1e-3;
    const nn_stepper st = {sizeof(nn_stepper), &log, log_rows, NULL, log_sgd};
    ck_assert_msg(sp->backward_step(d1, &X.csr, &Xt.csr, &Y1.matrix,
                                    &dX1.matrix, &st, &err) == NN_OK,
                  "%s", err.msg);
    ck_assert_same_bits(p1[1].grad, db1, "db1");
    ck_assert_uint_eq(log.rows[1][0], 1);
    ck_assert_uint_eq(log.sgd_asked, 1);
    if (rule) {
      /* twolayer_step_w1 with the rule: W1 updated inside the product. */
      ck_assert_int_eq(nn_csr_matmul_sgd(&Xt.csr, dH, W1, 0.1, 1e-3), NN_OK);
      ck_assert_same_bits(p1[0].value, W1, "W1 after the rule");
      for (size_t i = 0; i < n_in; i++)
        ck_assert_uint_eq(log.rows[0][i], 0);
    } else {
      ck_assert_same_bits(p1[0].grad, dW1, "dW1 in blocks");
      for (size_t i = 0; i < n_in; i++)
        ck_assert_uint_eq(log.rows[0][i], 1);
    }
  }

  nn_csr_buffer_free(&X);
  nn_csr_buffer_free(&Xt);
  gsl_matrix *const all[] = {W1,  W2,   b1,   b2,   Xd,  H,    S,   dS,
                             dSl, dW2,  db2,  W2t,  dH,  db1,  dW1, Y1b,
                             Y2b, Y3b,  dX2b, dX1b, dHpre};
  for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
    gsl_matrix_free(all[k]);
  gsl_rng_free(r);
  dl.desc->layer->destroy(d1);
  sl.desc->layer->destroy(sg);
  dl.desc->layer->destroy(d2);
  test_plugin_unload(&sl);
  test_plugin_unload(&dl);
}

START_TEST(test_twolayer_bits) {
  twolayer_bits(0.0, 0, 0);
  twolayer_bits(0.3, 0, 0); /* pre-activations of several units */
}
END_TEST

START_TEST(test_twolayer_bits_step) {
  twolayer_bits(0.3, 1, 0); /* blocks of rows through st->rows */
  twolayer_bits(0.3, 1, 1); /* the SGD rule handed over */
}
END_TEST

/* dense(c, bias = false) -> relu against the softmax model's calls
 * (plugins/softmax.c: softmax_forward_core, softmax_backward_core).  Row 0
 * of the batch is empty, so its pre-activations are exactly 0: the rule
 * at 0 counts.  The layer gets no Xt and transposes the batch itself, as
 * softmax does. */
START_TEST(test_softmax_bits) {
  const size_t n_in = 50, c = 10, B = 12, max_batch = 16;
  loaded dl = load("dense"), rl = load("relu");
  opts o = dense_opts(&dl, (int64_t)c, 0);
  gsl_rng *r = rng_seeded(77);
  nn_shape s1;
  void *d = layer_new_rng(&dl, &o, flat((uint32_t)n_in), max_batch, r, &s1);
  void *re = layer_new_rng(&rl, NULL, s1, max_batch, r, NULL);
  gsl_rng_free(r);
  size_t np;
  nn_param *p = params_of(&dl, d, &np);
  ck_assert_uint_eq(np, 1);
  r = rng_seeded(77);
  gsl_matrix *W = mat_gauss(n_in, c, r, 0.001);
  ck_assert_same_bits(p[0].value, W, "W1");
  gsl_matrix *Xd = sparse_batch(B, n_in, 0.3, r);
  uint32_t labels[12];
  for (size_t i = 0; i < B; i++)
    labels[i] = (uint32_t)gsl_rng_uniform_int(r, c);
  nn_csr_buffer X, Xt;
  ck_assert_int_eq(nn_csr_buffer_init(&X, B, B * n_in), NN_OK);
  ck_assert_int_eq(nn_csr_buffer_init(&Xt, n_in, B * n_in), NN_OK);
  ck_assert_int_eq(nn_csr_from_dense(&X, Xd), NN_OK);

  /* softmax: forward and backward. */
  gsl_matrix *Z = mat_alloc(B, c), *S = mat_alloc(B, c), *dS = mat_alloc(B, c);
  gsl_matrix *dW = mat_alloc(n_in, c);
  ck_assert_int_eq(nn_csr_matmul(&X.csr, W, NULL, NN_ACT_NONE, Z), NN_OK);
  ck_assert_int_eq(nn_relu(Z, S), NN_OK);
  double loss;
  size_t hits;
  ck_assert_int_eq(nn_softmax_xent(S, labels, dS, &loss, &hits), NN_OK);
  gsl_matrix *dSl = mat_copy(dS);
  for (size_t k = 0; k < B * c; k++)
    if (!(Z->data[k] > 0.0))
      dS->data[k] = 0.0;
  ck_assert_int_eq(nn_csr_transpose(&Xt, &X.csr), NN_OK);
  ck_assert_int_eq(nn_csr_matmul(&Xt.csr, dS, NULL, NN_ACT_NONE, dW), NN_OK);

  /* The layers. */
  gsl_matrix *Y1b = mat_alloc(max_batch, c), *Y2b = mat_alloc(max_batch, c);
  gsl_matrix *dX1b = mat_alloc(max_batch, c);
  gsl_matrix_view Y1 = top_rows(Y1b, B), Y2 = top_rows(Y2b, B),
                  dX1 = top_rows(dX1b, B);
  const nn_layer_sparse *sp = sparse_ext(&dl, d);
  nn_error err = {0, ""};
  ck_assert_int_eq(sp->forward(d, &eval_ctx, &X.csr, &Y1.matrix, &err), NN_OK);
  ck_assert_int_eq(
      rl.desc->layer->forward(re, &eval_ctx, &Y1.matrix, &Y2.matrix, &err), NN_OK);
  ck_assert_same_bits(&Y2.matrix, S, "scores");
  ck_assert_int_eq(
      rl.desc->layer->backward(re, &Y1.matrix, &Y2.matrix, dSl, &dX1.matrix, &err),
      NN_OK);
  ck_assert_same_bits(&dX1.matrix, dS, "dZ");
  ck_assert_int_eq(sp->backward(d, &X.csr, NULL, &Y1.matrix, &dX1.matrix, &err),
                   NN_OK);
  ck_assert_same_bits(p[0].grad, dW, "dW1");

  nn_csr_buffer_free(&X);
  nn_csr_buffer_free(&Xt);
  gsl_matrix *const all[] = {W, Xd, Z, S, dS, dW, dSl, Y1b, Y2b, dX1b};
  for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
    gsl_matrix_free(all[k]);
  gsl_rng_free(r);
  dl.desc->layer->destroy(d);
  rl.desc->layer->destroy(re);
  test_plugin_unload(&rl);
  test_plugin_unload(&dl);
}
END_TEST

/* A hidden unit saturated over the whole batch (h = 1 exactly) with a
 * negative gradient: its column of dZ1 is all -0.0.  twolayer's db1 (from
 * nn_sigmoid_backward, summed from +0) is +0 there; the sparse dense
 * layer's db must be too. */
START_TEST(test_bias_grad_negative_zero) {
  const size_t B = 3, n_in = 4, h = 5;
  loaded dl = load("dense");
  opts o = dense_opts(&dl, (int64_t)h, 1);
  void *d = layer_new(&dl, &o, flat((uint32_t)n_in), B, 1, NULL);
  const nn_layer_sparse *sp = sparse_ext(&dl, d);
  gsl_rng *r = rng_seeded(6);
  gsl_matrix *Xd = sparse_batch(B, n_in, 0.5, r);
  gsl_matrix *Hm = mat_alloc(B, h), *dZ = mat_gauss(B, h, r, 1.0);
  gsl_matrix *db1 = mat_alloc(1, h), *Y = mat_alloc(B, h);
  gsl_matrix_set_all(Hm, 0.25);
  for (size_t i = 0; i < B; i++) {
    gsl_matrix_set(Hm, i, 2, 1.0);
    gsl_matrix_set(dZ, i, 2, -fabs(gsl_matrix_get(dZ, i, 2)) - 0.1);
  }
  ck_assert_int_eq(nn_sigmoid_backward(dZ, Hm, db1), NN_OK);
  for (size_t i = 0; i < B; i++)
    ck_assert(gsl_matrix_get(dZ, i, 2) == 0.0 &&
              signbit(gsl_matrix_get(dZ, i, 2)));
  nn_csr_buffer X;
  ck_assert_int_eq(nn_csr_buffer_init(&X, B, B * n_in), NN_OK);
  ck_assert_int_eq(nn_csr_from_dense(&X, Xd), NN_OK);
  size_t np;
  nn_param *p = params_of(&dl, d, &np);
  nn_error err = {0, ""};
  ck_assert_int_eq(sp->backward(d, &X.csr, NULL, Y, dZ, &err), NN_OK);
  ck_assert_same_bits(p[1].grad, db1, "db1");
  ck_assert(!signbit(gsl_matrix_get(p[1].grad, 0, 2)));
  nn_csr_buffer_free(&X);
  gsl_matrix_free(Xd);
  gsl_matrix_free(Hm);
  gsl_matrix_free(dZ);
  gsl_matrix_free(db1);
  gsl_matrix_free(Y);
  gsl_rng_free(r);
  dl.desc->layer->destroy(d);
  test_plugin_unload(&dl);
}
END_TEST

/* Every row of W and b stepped exactly once, W in blocks of at most 32
 * rows, for an input size that is not a multiple of 32; without bias only
 * W. */
START_TEST(test_step_counts) {
  const size_t n_in = 70, B = 5;
  loaded dl = load("dense");
  for (int bias = 0; bias <= 1; bias++) {
    opts o = dense_opts(&dl, 20, bias);
    void *d = layer_new(&dl, &o, flat((uint32_t)n_in), B, 1, NULL);
    const nn_layer_sparse *sp = sparse_ext(&dl, d);
    gsl_rng *r = rng_seeded(12);
    gsl_matrix *Xd = sparse_batch(B, n_in, 0.3, r);
    gsl_matrix *Y = mat_alloc(B, 20), *dY = mat_gauss(B, 20, r, 1.0);
    nn_csr_buffer X;
    ck_assert_int_eq(nn_csr_buffer_init(&X, B, B * n_in), NN_OK);
    ck_assert_int_eq(nn_csr_from_dense(&X, Xd), NN_OK);
    step_log log;
    memset(&log, 0, sizeof log);
    nn_stepper st = {sizeof(nn_stepper), &log, log_rows, NULL, NULL};
    nn_error err = {0, ""};
    /* No Xt: the layer falls back on its own transpose. */
    ck_assert_msg(sp->backward_step(d, &X.csr, NULL, Y, dY, &st, &err) ==
                      NN_OK,
                  "%s", err.msg);
    for (size_t i = 0; i < n_in; i++)
      ck_assert_uint_eq(log.rows[0][i], 1);
    ck_assert_uint_eq(log.rows[1][0], (size_t)bias);
    /* A stepper without rows is refused. */
    st.rows = NULL;
    assert_error(sp->backward_step(d, &X.csr, NULL, Y, dY, &st, &err), &err,
                 "dense: ", "stepper");
    /* The stepper's error comes back as it is. */
    st.rows = fail_rows;
    assert_error(sp->backward_step(d, &X.csr, NULL, Y, dY, &st, &err), &err,
                 "stepper: ", "full");
    /* A batch that does not fit is refused before any step. */
    st.rows = log_rows;
    memset(&log, 0, sizeof log);
    const nn_csr bad = {sizeof(nn_csr), B, n_in + 1, X.csr.start, X.csr.index,
                        X.csr.value};
    assert_error(sp->backward_step(d, &bad, NULL, Y, dY, &st, &err), &err,
                 "dense: ", "columns");
    ck_assert_uint_eq(log.rows[0][0] + log.rows[1][0], 0);
    nn_csr_buffer_free(&X);
    gsl_matrix_free(Xd);
    gsl_matrix_free(Y);
    gsl_matrix_free(dY);
    gsl_rng_free(r);
    dl.desc->layer->destroy(d);
  }
  test_plugin_unload(&dl);
}
END_TEST

static Suite *layers_suite(void) {
  Suite *s = suite_create("layers");
  TCase *tc = tcase_create("layers");
  tcase_add_test(tc, test_descriptors);
  tcase_add_test(tc, test_option_tables);
  tcase_add_test(tc, test_registry_accepts);
  tcase_add_test(tc, test_shapes);
  tcase_add_test(tc, test_dense_no_bias);
  tcase_add_test(tc, test_dense_forward_values);
  tcase_add_test(tc, test_activation_values);
  tcase_add_test(tc, test_gradcheck_dense);
  tcase_add_test(tc, test_gradcheck_activations);
  tcase_add_test(tc, test_gradcheck_dropout);
  tcase_add_test(tc, test_dense_sparse_gradients);
  tcase_add_test(tc, test_dense_init);
  tcase_add_test(tc, test_option_errors);
  tcase_add_test(tc, test_batch_errors);
  tcase_add_test(tc, test_dropout_eval_identity);
  tcase_add_test(tc, test_dropout_mask);
  tcase_add_test(tc, test_dropout_edges);
  tcase_add_test(tc, test_twolayer_bits);
  tcase_add_test(tc, test_twolayer_bits_step);
  tcase_add_test(tc, test_softmax_bits);
  tcase_add_test(tc, test_bias_grad_negative_zero);
  tcase_add_test(tc, test_step_counts);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return test_run_suite(layers_suite()); }
