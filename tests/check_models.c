/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests of the built model and optimizer plugins, loaded straight from
 * $NN_PLUGIN_PATH with dlopen (independent of the core's registry):
 * gradient checks, parameter layout, initialisation, batch handling,
 * error paths and the SGD update rule in closed form. */
#include <config.h>

#include <dlfcn.h>
#include <math.h>
#include <string.h>

#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>

#include <nn/math.h>
#include <nn/plugin.h>
#include <nn/plugin_ext.h>
#include <nn/train.h>

#include "testutil.h"

/* ------------------------------------------------------------- helpers */

typedef test_plugin loaded;

static gsl_rng *rng_seeded(unsigned long seed) {
  gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
  ck_assert_ptr_nonnull(r);
  gsl_rng_set(r, seed);
  return r;
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

/* Model options for the tests: twolayer gets a small hidden layer. */
static const nn_value *model_opts(const char *name) {
  static const nn_value twolayer_small[] = {{.i = 5}};
  return strcmp(name, "twolayer") == 0 ? twolayer_small : NULL;
}

/* Examples of n values, a flat vector. */
static nn_shape flat(size_t n) { return (nn_shape){1, 1, (uint32_t)n}; }

/* What the models' forward is told: a training batch.  These models
 * ignore it (they are not stochastic). */
static const nn_context train_ctx = {(uint32_t)sizeof(nn_context), 1, 0, 0,
                                     NULL};

static void *model_new_shape(const loaded *l, const nn_value *opts,
                             nn_shape in, size_t n_out, size_t max_batch,
                             unsigned long seed) {
  gsl_rng *r = rng_seeded(seed);
  void *m = NULL;
  nn_error err = {0, ""};
  int rc = l->desc->model->create(opts, in, n_out, max_batch, r, &m, &err);
  gsl_rng_free(r);
  ck_assert_msg(rc == NN_OK, "create %s: %s", l->desc->name, err.msg);
  ck_assert_ptr_nonnull(m);
  return m;
}

static void *model_new(const loaded *l, const nn_value *opts, size_t n_in,
                       size_t n_out, size_t max_batch, unsigned long seed) {
  return model_new_shape(l, opts, flat(n_in), n_out, max_batch, seed);
}

static double mat_std(const gsl_matrix *m, double *mean_out) {
  double sum = 0.0, sq = 0.0;
  const double n = (double)(m->size1 * m->size2);
  for (size_t i = 0; i < m->size1; i++)
    for (size_t j = 0; j < m->size2; j++) {
      const double x = gsl_matrix_get(m, i, j);
      sum += x;
      sq += x * x;
    }
  const double mean = sum / n;
  if (mean_out)
    *mean_out = mean;
  return sqrt(sq / n - mean * mean);
}

static double max_abs_diff(const gsl_matrix *a, const gsl_matrix *b) {
  ck_assert_uint_eq(a->size1, b->size1);
  ck_assert_uint_eq(a->size2, b->size2);
  double d = 0.0;
  for (size_t i = 0; i < a->size1; i++)
    for (size_t j = 0; j < a->size2; j++)
      d = fmax(d, fabs(gsl_matrix_get(a, i, j) - gsl_matrix_get(b, i, j)));
  return d;
}

static const char *const MODELS[] = {"softmax", "twolayer"};

/* ---------------------------------------------------------- descriptors */

START_TEST(test_descriptors) {
  static const struct {
    const char *name;
    uint32_t kind;
  } want[] = {{"softmax", NN_KIND_MODEL},
              {"twolayer", NN_KIND_MODEL},
              {"sgd", NN_KIND_OPTIMIZER}};
  for (size_t k = 0; k < 3; k++) {
    loaded l = test_plugin_load(want[k].name);
    const nn_plugin *d = l.desc;
    ck_assert_uint_eq(d->abi_major, NN_ABI_MAJOR);
    ck_assert_uint_eq(d->abi_minor, NN_ABI_MINOR);
    ck_assert_uint_eq(d->size, sizeof(nn_plugin));
    ck_assert_uint_eq(d->kind, want[k].kind);
    ck_assert_uint_eq(d->gsl_major, GSL_MAJOR_VERSION);
    ck_assert_str_eq(d->name, want[k].name);
    ck_assert_str_eq(d->version, "0.1.0");
    ck_assert(d->summary && *d->summary && !strchr(d->summary, '\n'));
    ck_assert_ptr_null(d->layer);
    if (want[k].kind == NN_KIND_MODEL) {
      ck_assert(d->model && !d->optim);
      ck_assert_uint_eq(d->model->size, sizeof(nn_model_ops));
      ck_assert_uint_eq(d->model->flags, 0); /* not stochastic */
      ck_assert(d->model->state == NULL);    /* no buffers to save */
      ck_assert(d->model->extension != NULL);
    } else {
      ck_assert(d->optim && !d->model);
      ck_assert_uint_eq(d->optim->size, sizeof(nn_optim_ops));
      ck_assert(d->optim->state != NULL);
      ck_assert(d->optim->extension != NULL);
    }
    test_plugin_unload(&l);
  }
}
END_TEST

START_TEST(test_option_tables) {
  loaded l = test_plugin_load("softmax");
  ck_assert(l.desc->options == NULL || l.desc->options[0].key == NULL);
  test_plugin_unload(&l);

  l = test_plugin_load("twolayer");
  const nn_option *o = l.desc->options;
  ck_assert_ptr_nonnull(o);
  ck_assert_str_eq(o[0].key, "hidden_size");
  ck_assert_uint_eq(o[0].type, NN_OPT_INT);
  ck_assert_str_eq(o[0].def, "128");
  ck_assert(o[0].bounds & NN_OPT_HAS_MIN);
  ck_assert(!(o[0].bounds & NN_OPT_MIN_EXCLUSIVE));
  ck_assert(o[0].min == 1.0);
  ck_assert_ptr_null(o[1].key);
  test_plugin_unload(&l);

  l = test_plugin_load("sgd");
  o = l.desc->options;
  ck_assert_ptr_nonnull(o);
  static const char *const keys[] = {"learning_rate", "reg", "momentum"};
  static const char *const defs[] = {"0.1", "0.001", "0"};
  for (size_t k = 0; k < 3; k++) {
    ck_assert_str_eq(o[k].key, keys[k]);
    ck_assert_uint_eq(o[k].type, NN_OPT_REAL);
    ck_assert_str_eq(o[k].def, defs[k]);
    ck_assert(o[k].help && *o[k].help);
    ck_assert(o[k].bounds & NN_OPT_HAS_MIN);
    ck_assert(o[k].min == 0.0);
  }
  ck_assert(o[0].bounds & NN_OPT_MIN_EXCLUSIVE); /* learning_rate > 0 */
  ck_assert(!(o[1].bounds & NN_OPT_MIN_EXCLUSIVE)); /* reg >= 0 */
  ck_assert(o[2].bounds & NN_OPT_HAS_MAX);
  ck_assert(o[2].max <= 1.0); /* momentum */
  ck_assert_str_eq(o[3].key, "nesterov");
  ck_assert_ptr_null(o[4].key);
  test_plugin_unload(&l);
}
END_TEST

/* ------------------------------------------------------------ gradients */

/* nn_gradcheck on 6 examples, 7 features, 4 classes, with weights and
 * biases redrawn from N(0, 0.5) so the gradients are far from zero. */
static void gradcheck_model(const char *name) {
  loaded l = test_plugin_load(name);
  const nn_model_ops *ops = l.desc->model;
  void *m = model_new(&l, model_opts(name), 7, 4, 6, 1);
  gsl_rng *r = rng_seeded(2024);
  size_t n = 0;
  nn_param *p = ops->params(m, &n);
  for (size_t k = 0; k < n; k++)
    nn_fill_gaussian(p[k].value, r, 0.5);
  gsl_matrix *X = mat_gauss(6, 7, r, 1.0);
  uint32_t y[6];
  for (size_t i = 0; i < 6; i++)
    y[i] = (uint32_t)gsl_rng_uniform_int(r, 4);
  y[0] = 3; /* make sure several classes appear */
  y[1] = 0;

  double worst = -1.0;
  const char *worst_name = NULL;
  nn_error err = {0, ""};
  int rc = nn_gradcheck(ops, m, X, y, 4, 1e-5, &worst, &worst_name, &err);
  ck_assert_msg(rc == NN_OK, "gradcheck %s: %s", name, err.msg);
  ck_assert_ptr_nonnull(worst_name);
  /* The worst entry over all parameters bounds every parameter's error. */
  ck_assert_msg(worst >= 0.0 && worst < 1e-6,
                "%s: max relative error %g in %s", name, worst, worst_name);

  gsl_matrix_free(X);
  gsl_rng_free(r);
  ops->destroy(m);
  test_plugin_unload(&l);
}

START_TEST(test_gradcheck_softmax) { gradcheck_model("softmax"); }
END_TEST

START_TEST(test_gradcheck_twolayer) { gradcheck_model("twolayer"); }
END_TEST

START_TEST(test_gradcheck_rejects_bad_input) {
  loaded l = test_plugin_load("twolayer");
  const nn_model_ops *ops = l.desc->model;
  void *m = model_new(&l, model_opts("twolayer"), 7, 4, 6, 1);
  gsl_rng *r = rng_seeded(3);
  gsl_matrix *X = mat_gauss(6, 7, r, 1.0), *Xbad = mat_gauss(6, 8, r, 1.0);
  uint32_t y[6] = {0, 1, 2, 3, 0, 1}, ybad[6] = {0, 1, 2, 4, 0, 1};
  double worst;
  nn_error err = {0, ""};
  ck_assert_int_eq(nn_gradcheck(ops, m, Xbad, y, 4, 1e-5, &worst, NULL, &err),
                   NN_EINVAL);
  ck_assert(strstr(err.msg, "columns") != NULL);
  ck_assert_int_eq(nn_gradcheck(ops, m, X, ybad, 4, 1e-5, &worst, NULL, &err),
                   NN_EINVAL);
  ck_assert_int_eq(nn_gradcheck(ops, m, X, y, 4, 0.0, &worst, NULL, &err),
                   NN_EINVAL);
  ck_assert_int_eq(nn_gradcheck(ops, m, X, y, 4, 1e-5, &worst, NULL, &err),
                   NN_OK);
  gsl_matrix_free(X);
  gsl_matrix_free(Xbad);
  gsl_rng_free(r);
  ops->destroy(m);
  test_plugin_unload(&l);
}
END_TEST

/* --------------------------------------------------------------- layout */

START_TEST(test_params_layout) {
  loaded l = test_plugin_load("softmax");
  /* An image's c h w values are its inputs. */
  void *m = model_new_shape(&l, NULL, (nn_shape){1, 28, 28}, 10, 64, 1);
  size_t n = 0;
  nn_param *p = l.desc->model->params(m, &n);
  ck_assert_uint_eq(n, 1);
  ck_assert_str_eq(p[0].name, "W1");
  ck_assert_uint_eq(p[0].flags, NN_PARAM_WEIGHT);
  ck_assert_uint_eq(p[0].value->size1, 784);
  ck_assert_uint_eq(p[0].value->size2, 10);
  ck_assert_uint_eq(p[0].grad->size1, 784);
  ck_assert_uint_eq(p[0].grad->size2, 10);
  /* Same array on every call. */
  ck_assert_ptr_eq(l.desc->model->params(m, &n), p);
  l.desc->model->destroy(m);
  test_plugin_unload(&l);

  l = test_plugin_load("twolayer");
  static const nn_value h[] = {{.i = 32}};
  m = model_new(&l, h, 20, 10, 64, 1);
  p = l.desc->model->params(m, &n);
  ck_assert_uint_eq(n, 4);
  static const struct {
    const char *name;
    uint32_t flags;
    size_t rows, cols;
  } want[] = {{"W1", NN_PARAM_WEIGHT, 20, 32},
              {"b1", NN_PARAM_BIAS, 1, 32},
              {"W2", NN_PARAM_WEIGHT, 32, 10},
              {"b2", NN_PARAM_BIAS, 1, 10}};
  for (size_t k = 0; k < 4; k++) {
    ck_assert_str_eq(p[k].name, want[k].name);
    ck_assert_uint_eq(p[k].flags, want[k].flags);
    ck_assert_uint_eq(p[k].value->size1, want[k].rows);
    ck_assert_uint_eq(p[k].value->size2, want[k].cols);
    ck_assert_uint_eq(p[k].grad->size1, want[k].rows);
    ck_assert_uint_eq(p[k].grad->size2, want[k].cols);
  }
  l.desc->model->destroy(m);
  test_plugin_unload(&l);
}
END_TEST

START_TEST(test_init_distribution) {
  loaded l = test_plugin_load("twolayer");
  static const nn_value h[] = {{.i = 100}};
  void *m = model_new(&l, h, 300, 50, 8, 7);
  size_t n = 0;
  nn_param *p = l.desc->model->params(m, &n);
  double mean;
  /* W1: 30000 draws, W2: 5000 draws of 0.001 * N(0, 1). */
  ck_assert_double_eq_tol(mat_std(p[0].value, &mean), 0.001, 3e-5);
  ck_assert_double_lt(fabs(mean), 3e-5);
  ck_assert_double_eq_tol(mat_std(p[2].value, &mean), 0.001, 6e-5);
  ck_assert_double_lt(fabs(mean), 6e-5);
  ck_assert(gsl_matrix_isnull(p[1].value));
  ck_assert(gsl_matrix_isnull(p[3].value));
  l.desc->model->destroy(m);
  test_plugin_unload(&l);

  l = test_plugin_load("softmax");
  m = model_new(&l, NULL, 784, 10, 8, 7);
  p = l.desc->model->params(m, &n);
  ck_assert_double_eq_tol(mat_std(p[0].value, &mean), 0.001, 5e-5);
  ck_assert_double_lt(fabs(mean), 5e-5);
  l.desc->model->destroy(m);
  test_plugin_unload(&l);
}
END_TEST

START_TEST(test_same_seed_same_weights) {
  for (size_t k = 0; k < 2; k++) {
    loaded l = test_plugin_load(MODELS[k]);
    void *a = model_new(&l, model_opts(MODELS[k]), 30, 10, 4, 1234);
    void *b = model_new(&l, model_opts(MODELS[k]), 30, 10, 4, 1234);
    void *c = model_new(&l, model_opts(MODELS[k]), 30, 10, 4, 1235);
    size_t na, nb, nc;
    nn_param *pa = l.desc->model->params(a, &na);
    nn_param *pb = l.desc->model->params(b, &nb);
    nn_param *pc = l.desc->model->params(c, &nc);
    ck_assert_uint_eq(na, nb);
    for (size_t i = 0; i < na; i++) {
      const gsl_matrix *va = pa[i].value, *vb = pb[i].value;
      for (size_t r = 0; r < va->size1; r++)
        ck_assert(memcmp(gsl_matrix_const_ptr(va, r, 0),
                         gsl_matrix_const_ptr(vb, r, 0),
                         va->size2 * sizeof(double)) == 0);
    }
    ck_assert(!gsl_matrix_equal(pa[0].value, pc[0].value));
    l.desc->model->destroy(a);
    l.desc->model->destroy(b);
    l.desc->model->destroy(c);
    test_plugin_unload(&l);
  }
}
END_TEST

/* ---------------------------------------------------------- forward pass */

START_TEST(test_forward_formula) {
  gsl_rng *r = rng_seeded(11);
  gsl_matrix *X = mat_gauss(5, 6, r, 1.0);

  /* softmax: scores = ReLU(X W1) */
  loaded l = test_plugin_load("softmax");
  void *m = model_new(&l, NULL, 6, 3, 5, 1);
  size_t n;
  nn_param *p = l.desc->model->params(m, &n);
  nn_fill_gaussian(p[0].value, r, 1.0);
  gsl_matrix *s = mat_alloc(5, 3), *ref = mat_alloc(5, 3);
  nn_error err = {0, ""};
  ck_assert_int_eq(l.desc->model->forward(m, &train_ctx, X, s, &err), NN_OK);
  for (size_t i = 0; i < 5; i++)
    for (size_t c = 0; c < 3; c++) {
      double z = 0.0;
      for (size_t j = 0; j < 6; j++)
        z += gsl_matrix_get(X, i, j) * gsl_matrix_get(p[0].value, j, c);
      gsl_matrix_set(ref, i, c, z > 0.0 ? z : 0.0);
    }
  ck_assert_double_lt(max_abs_diff(s, ref), 1e-12);
  l.desc->model->destroy(m);
  test_plugin_unload(&l);

  /* twolayer: scores = sigmoid(X W1 + b1) W2 + b2, with non-zero biases */
  l = test_plugin_load("twolayer");
  m = model_new(&l, model_opts("twolayer"), 6, 3, 5, 1);
  p = l.desc->model->params(m, &n);
  for (size_t k = 0; k < n; k++)
    nn_fill_gaussian(p[k].value, r, 1.0);
  ck_assert_int_eq(l.desc->model->forward(m, &train_ctx, X, s, &err), NN_OK);
  for (size_t i = 0; i < 5; i++)
    for (size_t c = 0; c < 3; c++) {
      double out = gsl_matrix_get(p[3].value, 0, c);
      for (size_t h = 0; h < 5; h++) {
        double z = gsl_matrix_get(p[1].value, 0, h);
        for (size_t j = 0; j < 6; j++)
          z += gsl_matrix_get(X, i, j) * gsl_matrix_get(p[0].value, j, h);
        out += gsl_matrix_get(p[2].value, h, c) / (1.0 + exp(-z));
      }
      gsl_matrix_set(ref, i, c, out);
    }
  ck_assert_double_lt(max_abs_diff(s, ref), 1e-12);
  l.desc->model->destroy(m);
  test_plugin_unload(&l);

  gsl_matrix_free(X);
  gsl_matrix_free(s);
  gsl_matrix_free(ref);
  gsl_rng_free(r);
}
END_TEST

/* A model built for 8-row batches handles a 3-row last batch: same scores
 * as the first rows of the full batch, and the same gradients as a model
 * built for exactly 3 rows. */
START_TEST(test_small_last_batch) {
  for (size_t k = 0; k < 2; k++) {
    loaded l = test_plugin_load(MODELS[k]);
    const nn_model_ops *ops = l.desc->model;
    const nn_value *o = model_opts(MODELS[k]);
    void *big = model_new(&l, o, 7, 4, 8, 5);
    void *small = model_new(&l, o, 7, 4, 3, 5);
    gsl_rng *r = rng_seeded(6);
    size_t nb, ns;
    nn_param *pb = ops->params(big, &nb), *ps = ops->params(small, &ns);
    for (size_t i = 0; i < nb; i++) {
      nn_fill_gaussian(pb[i].value, r, 0.5);
      gsl_matrix_memcpy(ps[i].value, pb[i].value);
    }
    gsl_matrix *X = mat_gauss(8, 7, r, 1.0);
    gsl_matrix *full = mat_alloc(8, 4), *s3 = mat_alloc(3, 4),
               *t3 = mat_alloc(3, 4);
    gsl_matrix_view X3 = gsl_matrix_submatrix(X, 0, 0, 3, 7);
    static const uint32_t y[] = {0, 3, 1};
    nn_error err = {0, ""};
    double loss;
    size_t hits;

    ck_assert_int_eq(ops->forward(big, &train_ctx, X, full, &err), NN_OK);
    ck_assert_int_eq(ops->forward(big, &train_ctx, &X3.matrix, s3, &err),
                     NN_OK);
    gsl_matrix_view full3 = gsl_matrix_submatrix(full, 0, 0, 3, 4);
    ck_assert_double_lt(max_abs_diff(s3, &full3.matrix), 1e-12);
    ck_assert_int_eq(nn_softmax_xent(s3, y, s3, &loss, &hits), NN_OK);
    ck_assert_int_eq(ops->backward(big, &X3.matrix, s3, &err), NN_OK);

    ck_assert_int_eq(ops->forward(small, &train_ctx, &X3.matrix, t3, &err),
                     NN_OK);
    ck_assert_int_eq(nn_softmax_xent(t3, y, t3, &loss, &hits), NN_OK);
    ck_assert_int_eq(ops->backward(small, &X3.matrix, t3, &err), NN_OK);
    for (size_t i = 0; i < nb; i++)
      ck_assert_double_lt(max_abs_diff(pb[i].grad, ps[i].grad), 1e-12);

    /* More rows than max_batch is refused. */
    ck_assert_int_eq(ops->forward(small, &train_ctx, X, full, &err), NN_EINVAL);
    ck_assert(strstr(err.msg, "8 rows") != NULL);

    gsl_matrix_free(X);
    gsl_matrix_free(full);
    gsl_matrix_free(s3);
    gsl_matrix_free(t3);
    gsl_rng_free(r);
    ops->destroy(big);
    ops->destroy(small);
    test_plugin_unload(&l);
  }
}
END_TEST

START_TEST(test_shape_errors) {
  for (size_t k = 0; k < 2; k++) {
    loaded l = test_plugin_load(MODELS[k]);
    const nn_model_ops *ops = l.desc->model;
    void *m = model_new(&l, model_opts(MODELS[k]), 784, 10, 4, 1);
    gsl_matrix *X = mat_alloc(4, 780), *Xok = mat_alloc(4, 784);
    gsl_matrix *s = mat_alloc(4, 10), *s9 = mat_alloc(4, 9),
               *s3 = mat_alloc(3, 10);
    nn_error err = {0, ""};

    /* backward with no forward before it */
    ck_assert_int_eq(ops->backward(m, Xok, s, &err), NN_EINVAL);

    err.msg[0] = '\0';
    ck_assert_int_eq(ops->forward(m, &train_ctx, X, s, &err), NN_EINVAL);
    ck_assert_int_eq(err.code, NN_EINVAL);
    ck_assert_msg(strstr(err.msg, "780") && strstr(err.msg, "784"),
                  "unhelpful message: %s", err.msg);
    ck_assert_int_eq(ops->forward(m, &train_ctx, Xok, s9, &err), NN_EINVAL);
    ck_assert_int_eq(ops->forward(m, &train_ctx, Xok, s3, &err), NN_EINVAL);
    ck_assert_int_eq(ops->forward(m, &train_ctx, NULL, s, &err), NN_EINVAL);

    ck_assert_int_eq(ops->forward(m, &train_ctx, Xok, s, &err), NN_OK);
    ck_assert_int_eq(ops->backward(m, X, s, &err), NN_EINVAL);
    ck_assert_int_eq(ops->backward(m, Xok, s9, &err), NN_EINVAL);
    ck_assert_int_eq(ops->backward(m, Xok, s, &err), NN_OK);

    /* Invalid sizes at create time leave *out NULL. */
    gsl_rng *r = rng_seeded(1);
    const nn_value *o = model_opts(MODELS[k]);
    void *bad = (void *)&err;
    ck_assert_int_eq(ops->create(o, flat(0), 10, 4, r, &bad, &err), NN_EINVAL);
    ck_assert_ptr_null(bad);
    ck_assert_int_eq(
        ops->create(o, (nn_shape){0, 28, 28}, 10, 4, r, &bad, &err), NN_EINVAL);
    ck_assert_int_eq(ops->create(o, flat(784), 0, 4, r, &bad, &err), NN_EINVAL);
    ck_assert_int_eq(ops->create(o, flat(784), 10, 0, r, &bad, &err),
                     NN_EINVAL);
    ck_assert_int_eq(ops->create(o, flat(784), 10, 4, NULL, &bad, &err),
                     NN_EINVAL);
    ck_assert_ptr_null(bad);
    gsl_rng_free(r);

    gsl_matrix_free(X);
    gsl_matrix_free(Xok);
    gsl_matrix_free(s);
    gsl_matrix_free(s9);
    gsl_matrix_free(s3);
    ops->destroy(m);
    test_plugin_unload(&l);
  }
}
END_TEST

START_TEST(test_twolayer_bad_hidden) {
  loaded l = test_plugin_load("twolayer");
  gsl_rng *r = rng_seeded(1);
  void *m = NULL;
  nn_error err = {0, ""};
  static const nn_value zero[] = {{.i = 0}}, huge[] = {{.i = 2000000}};
  ck_assert_int_eq(l.desc->model->create(zero, flat(4), 2, 2, r, &m, &err),
                   NN_EINVAL);
  ck_assert(strstr(err.msg, "hidden_size") != NULL);
  ck_assert_int_eq(l.desc->model->create(huge, flat(4), 2, 2, r, &m, &err),
                   NN_EINVAL);
  ck_assert_ptr_null(m);
  gsl_rng_free(r);
  test_plugin_unload(&l);
}
END_TEST

START_TEST(test_destroy_null) {
  static const char *const all[] = {"softmax", "twolayer", "sgd"};
  for (size_t k = 0; k < 3; k++) {
    loaded l = test_plugin_load(all[k]);
    if (l.desc->model)
      l.desc->model->destroy(NULL);
    else
      l.desc->optim->destroy(NULL);
    test_plugin_unload(&l);
  }
}
END_TEST

/* ------------------------------------------------------------------ sgd */

/* Two parameters, a 3x4 weight and a 1x4 bias, with random values and
 * grads; the matrices are owned by the fixture and freed by params_free. */
static void params_make(nn_param p[2], gsl_rng *r) {
  p[0] = (nn_param){"W", mat_gauss(3, 4, r, 1.0), mat_gauss(3, 4, r, 1.0),
                    NN_PARAM_WEIGHT};
  p[1] = (nn_param){"b", mat_gauss(1, 4, r, 1.0), mat_gauss(1, 4, r, 1.0),
                    NN_PARAM_BIAS};
}

/* q = a copy of p (values and grads), owned by the caller (params_free). */
static void params_copy(nn_param q[2], const nn_param p[2]) {
  for (size_t k = 0; k < 2; k++) {
    q[k] = p[k];
    q[k].value = mat_alloc(p[k].value->size1, p[k].value->size2);
    q[k].grad = mat_alloc(p[k].value->size1, p[k].value->size2);
    gsl_matrix_memcpy(q[k].value, p[k].value);
    gsl_matrix_memcpy(q[k].grad, p[k].grad);
  }
}

static void params_free(nn_param p[2]) {
  for (size_t k = 0; k < 2; k++) {
    gsl_matrix_free(p[k].value);
    gsl_matrix_free(p[k].grad);
  }
}

static void *sgd_new(const loaded *l, double lr, double reg, double mom,
                     const nn_param *p, size_t n) {
  const nn_value o[4] = {{.r = lr}, {.r = reg}, {.r = mom}};
  void *s = NULL;
  nn_error err = {0, ""};
  int rc = l->desc->optim->create(o, p, n, &s, &err);
  ck_assert_msg(rc == NN_OK, "sgd create: %s", err.msg);
  return s;
}

START_TEST(test_sgd_one_step) {
  loaded l = test_plugin_load("sgd");
  gsl_rng *r = rng_seeded(9);
  nn_param p[2];
  params_make(p, r);
  const double lr = 0.1, reg = 0.01;
  gsl_matrix *w0 = mat_alloc(3, 4), *g0 = mat_alloc(3, 4);
  gsl_matrix *b0 = mat_alloc(1, 4), *gb0 = mat_alloc(1, 4);
  gsl_matrix_memcpy(w0, p[0].value);
  gsl_matrix_memcpy(g0, p[0].grad);
  gsl_matrix_memcpy(b0, p[1].value);
  gsl_matrix_memcpy(gb0, p[1].grad);

  void *s = sgd_new(&l, lr, reg, 0.0, p, 2);
  nn_error err = {0, ""};
  ck_assert_int_eq(l.desc->optim->step(s, p, 2, &err), NN_OK);
  for (size_t i = 0; i < 3; i++)
    for (size_t j = 0; j < 4; j++) {
      const double w = gsl_matrix_get(w0, i, j);
      const double g = gsl_matrix_get(g0, i, j) + reg * w;
      ck_assert(gsl_matrix_get(p[0].value, i, j) == w - lr * g);
    }
  /* The bias gets no L2 term. */
  for (size_t j = 0; j < 4; j++)
    ck_assert(gsl_matrix_get(p[1].value, 0, j) ==
              gsl_matrix_get(b0, 0, j) - lr * gsl_matrix_get(gb0, 0, j));

  l.desc->optim->destroy(s);
  params_free(p);
  gsl_matrix_free(w0);
  gsl_matrix_free(g0);
  gsl_matrix_free(b0);
  gsl_matrix_free(gb0);
  gsl_rng_free(r);
  test_plugin_unload(&l);
}
END_TEST

START_TEST(test_sgd_reg_weights_only) {
  /* Zero gradients: only the L2 term moves anything. */
  loaded l = test_plugin_load("sgd");
  gsl_rng *r = rng_seeded(10);
  nn_param p[2];
  params_make(p, r);
  gsl_matrix_set_zero(p[0].grad);
  gsl_matrix_set_zero(p[1].grad);
  gsl_matrix *w0 = mat_alloc(3, 4), *b0 = mat_alloc(1, 4);
  gsl_matrix_memcpy(w0, p[0].value);
  gsl_matrix_memcpy(b0, p[1].value);
  void *s = sgd_new(&l, 0.5, 0.1, 0.0, p, 2);
  nn_error err = {0, ""};
  ck_assert_int_eq(l.desc->optim->step(s, p, 2, &err), NN_OK);
  ck_assert(gsl_matrix_equal(p[1].value, b0));
  for (size_t i = 0; i < 3; i++)
    for (size_t j = 0; j < 4; j++) {
      const double w = gsl_matrix_get(w0, i, j);
      ck_assert(gsl_matrix_get(p[0].value, i, j) == w - 0.5 * (0.0 + 0.1 * w));
    }
  l.desc->optim->destroy(s);
  params_free(p);
  gsl_matrix_free(w0);
  gsl_matrix_free(b0);
  gsl_rng_free(r);
  test_plugin_unload(&l);
}
END_TEST

START_TEST(test_sgd_momentum_two_steps) {
  loaded l = test_plugin_load("sgd");
  gsl_rng *r = rng_seeded(12);
  nn_param p[2];
  params_make(p, r);
  const double lr = 0.05, reg = 0.001, mom = 0.9;
  gsl_matrix *g2[2] = {mat_gauss(3, 4, r, 1.0), mat_gauss(1, 4, r, 1.0)};
  /* Expected values, computed element-wise in the optimizer's order. */
  gsl_matrix *want[2] = {mat_alloc(3, 4), mat_alloc(1, 4)};
  for (size_t k = 0; k < 2; k++) {
    const double rk = (p[k].flags & NN_PARAM_WEIGHT) ? reg : 0.0;
    for (size_t i = 0; i < p[k].value->size1; i++)
      for (size_t j = 0; j < p[k].value->size2; j++) {
        const double w0 = gsl_matrix_get(p[k].value, i, j);
        const double g1 = gsl_matrix_get(p[k].grad, i, j) + rk * w0;
        const double v1 = mom * 0.0 + g1;
        const double w1 = w0 - lr * v1;
        const double g2p = gsl_matrix_get(g2[k], i, j) + rk * w1;
        const double v2 = mom * v1 + g2p;
        gsl_matrix_set(want[k], i, j, w1 - lr * v2);
      }
  }
  void *s = sgd_new(&l, lr, reg, mom, p, 2);
  nn_error err = {0, ""};
  ck_assert_int_eq(l.desc->optim->step(s, p, 2, &err), NN_OK);
  gsl_matrix_memcpy(p[0].grad, g2[0]);
  gsl_matrix_memcpy(p[1].grad, g2[1]);
  ck_assert_int_eq(l.desc->optim->step(s, p, 2, &err), NN_OK);
  for (size_t k = 0; k < 2; k++)
    for (size_t i = 0; i < p[k].value->size1; i++)
      for (size_t j = 0; j < p[k].value->size2; j++) {
        const double got = gsl_matrix_get(p[k].value, i, j);
        const double exp_ = gsl_matrix_get(want[k], i, j);
        ck_assert_msg(fabs(got - exp_) <= 1e-15 * fmax(1.0, fabs(exp_)),
                      "param %zu [%zu,%zu]: %.17g vs %.17g", k, i, j, got,
                      exp_);
      }
  l.desc->optim->destroy(s);
  params_free(p);
  for (size_t k = 0; k < 2; k++) {
    gsl_matrix_free(g2[k]);
    gsl_matrix_free(want[k]);
  }
  gsl_rng_free(r);
  test_plugin_unload(&l);
}
END_TEST

START_TEST(test_sgd_errors) {
  loaded l = test_plugin_load("sgd");
  gsl_rng *r = rng_seeded(13);
  nn_param p[2];
  params_make(p, r);
  const nn_optim_ops *ops = l.desc->optim;
  nn_error err = {0, ""};
  void *s = NULL;
  const nn_value bad_lr[4] = {{.r = 0.0}, {.r = 0.0}, {.r = 0.0}};
  const nn_value bad_reg[4] = {{.r = 0.1}, {.r = -1.0}, {.r = 0.0}};
  const nn_value bad_mom[4] = {{.r = 0.1}, {.r = 0.0}, {.r = 1.5}};
  ck_assert_int_eq(ops->create(bad_lr, p, 2, &s, &err), NN_EINVAL);
  ck_assert(strstr(err.msg, "learning_rate") != NULL);
  ck_assert_int_eq(ops->create(bad_reg, p, 2, &s, &err), NN_EINVAL);
  ck_assert_int_eq(ops->create(bad_mom, p, 2, &s, &err), NN_EINVAL);
  ck_assert_int_eq(ops->create(NULL, p, 0, &s, &err), NN_EINVAL);
  ck_assert_ptr_null(s);

  s = sgd_new(&l, 0.1, 0.001, 0.5, p, 2);
  /* Wrong count, or a parameter of another shape: refused, nothing moves. */
  gsl_matrix *w0 = mat_alloc(3, 4);
  gsl_matrix_memcpy(w0, p[0].value);
  ck_assert_int_eq(ops->step(s, p, 1, &err), NN_EINVAL);
  nn_param swapped[2] = {p[1], p[0]};
  ck_assert_int_eq(ops->step(s, swapped, 2, &err), NN_EINVAL);
  ck_assert(gsl_matrix_equal(p[0].value, w0));
  ck_assert_int_eq(ops->step(s, p, 2, &err), NN_OK);
  ops->destroy(s);

  gsl_matrix_free(w0);
  params_free(p);
  gsl_rng_free(r);
  test_plugin_unload(&l);
}
END_TEST

/* ------------------------------------------------------------ end to end */

/* A few full steps (forward, loss, backward, SGD) on one batch must lower
 * the loss: the pieces fit together. */
START_TEST(test_training_lowers_loss) {
  loaded opt = test_plugin_load("sgd");
  for (size_t k = 0; k < 2; k++) {
    loaded l = test_plugin_load(MODELS[k]);
    const nn_model_ops *ops = l.desc->model;
    void *m = model_new(&l, model_opts(MODELS[k]), 7, 4, 6, 21);
    gsl_rng *r = rng_seeded(22);
    size_t n;
    nn_param *p = ops->params(m, &n);
    for (size_t i = 0; i < n; i++)
      if (p[i].flags & NN_PARAM_WEIGHT)
        nn_fill_gaussian(p[i].value, r, 0.3);
    gsl_matrix *X = mat_gauss(6, 7, r, 1.0), *s = mat_alloc(6, 4);
    static const uint32_t y[] = {0, 1, 2, 3, 1, 2};
    void *o = sgd_new(&opt, 0.5, 0.0, 0.5, p, n);
    nn_error err = {0, ""};
    double first = 0.0, loss = 0.0;
    size_t hits;
    for (int it = 0; it < 30; it++) {
      ck_assert_int_eq(ops->forward(m, &train_ctx, X, s, &err), NN_OK);
      ck_assert_int_eq(nn_softmax_xent(s, y, s, &loss, &hits), NN_OK);
      if (it == 0)
        first = loss;
      ck_assert_int_eq(ops->backward(m, X, s, &err), NN_OK);
      ck_assert_int_eq(opt.desc->optim->step(o, p, n, &err), NN_OK);
    }
    ck_assert_msg(loss < 0.8 * first, "%s: loss %g -> %g", MODELS[k], first,
                  loss);
    opt.desc->optim->destroy(o);
    ops->destroy(m);
    gsl_matrix_free(X);
    gsl_matrix_free(s);
    gsl_rng_free(r);
    test_plugin_unload(&l);
  }
  test_plugin_unload(&opt);
}
END_TEST

/* ----------------------------------------------------------- extensions */

/* The extension `id` of a plugin instance, which must offer it, built
 * with these headers (its size is the struct's). */
static const void *ext_of(const void *(*extension)(void *, const char *),
                          void *self, const char *id, size_t size) {
  ck_assert(extension != NULL);
  const void *e = extension(self, id);
  ck_assert_msg(e != NULL, "no extension %s", id);
  ck_assert_uint_eq(*(const uint32_t *)e, size);
  return e;
}

#define EXT(ops, self, type, id)                                             \
  ((const type *)ext_of((ops)->extension, (self), (id), sizeof(type)))

/* Which plugin offers which extension, and their flags.  Ids name their
 * version: another version of an offered id is not offered. */
START_TEST(test_extensions) {
  static const char *const ids[] = {NN_EXT_MODEL_SPARSE,
                                    NN_EXT_MODEL_FUSED_STEP,
                                    NN_EXT_LAYER_SPARSE,
                                    NN_EXT_OPTIM_PARTS,
                                    NN_EXT_OPTIM_SGD_RULE,
                                    "nn.model.sparse-input/2",
                                    "nn.optim.step-parts",
                                    ""};
  static const struct {
    const char *name;
    int offers[8];
  } want[] = {{"softmax", {1, 0, 0, 0, 0, 0, 0, 0}},
              {"twolayer", {1, 1, 0, 0, 0, 0, 0, 0}},
              {"sgd", {0, 0, 0, 1, 1, 0, 0, 0}}};
  nn_param p[2];
  gsl_rng *r = rng_seeded(41);
  params_make(p, r);
  for (size_t k = 0; k < 3; k++) {
    loaded l = test_plugin_load(want[k].name);
    const nn_model_ops *mo = l.desc->model;
    const nn_optim_ops *oo = l.desc->optim;
    void *self = mo ? model_new(&l, model_opts(want[k].name), 7, 4, 6, 1)
                    : sgd_new(&l, 0.1, 0.01, 0.0, p, 2);
    for (size_t i = 0; i < 8; i++) {
      const void *e = mo ? mo->extension(self, ids[i])
                         : oo->extension(self, ids[i]);
      ck_assert_msg((e != NULL) == want[k].offers[i], "%s: %s %s",
                    want[k].name, want[k].offers[i] ? "lacks" : "offers",
                    ids[i]);
    }
    if (mo) {
      const nn_model_sparse *sp =
          EXT(mo, self, nn_model_sparse, NN_EXT_MODEL_SPARSE);
      ck_assert(sp->forward && sp->backward);
      /* softmax transposes the batch itself (see softmax.c); twolayer has
       * the core do it. */
      ck_assert_uint_eq(sp->flags, k == 0 ? 0 : NN_SPARSE_TRANSPOSE);
      if (k == 1) {
        const nn_model_fused_step *fs =
            EXT(mo, self, nn_model_fused_step, NN_EXT_MODEL_FUSED_STEP);
        ck_assert(fs->backward_step && fs->backward_step_forward);
      }
      mo->destroy(self);
    } else {
      const nn_optim_parts *parts =
          EXT(oo, self, nn_optim_parts, NN_EXT_OPTIM_PARTS);
      ck_assert(parts->rows && parts->block);
      const nn_optim_sgd_rule *rule =
          EXT(oo, self, nn_optim_sgd_rule, NN_EXT_OPTIM_SGD_RULE);
      ck_assert(rule->rule != NULL);
      oo->destroy(self);
    }
    test_plugin_unload(&l);
  }
  params_free(p);
  gsl_rng_free(r);
}
END_TEST

/* The sparse-input extension gives the bits of forward / backward on the
 * same batch, with or without the transpose handed over. */
START_TEST(test_sparse_equals_dense) {
  for (size_t k = 0; k < 2; k++) {
    loaded l = test_plugin_load(MODELS[k]);
    const nn_model_ops *ops = l.desc->model;
    const size_t n_in = 30, B = 6;
    void *a = model_new(&l, model_opts(MODELS[k]), n_in, 4, B, 42);
    void *b = model_new(&l, model_opts(MODELS[k]), n_in, 4, B, 42);
    const nn_model_sparse *sp =
        EXT(ops, b, nn_model_sparse, NN_EXT_MODEL_SPARSE);
    size_t na, nb;
    nn_param *pa = ops->params(a, &na), *pb = ops->params(b, &nb);
    gsl_rng *r = rng_seeded(43);
    nn_csr_buffer xb, xt;
    ck_assert_int_eq(nn_csr_buffer_init(&xb, B, B * n_in), NN_OK);
    ck_assert_int_eq(nn_csr_buffer_init(&xt, n_in, B * n_in), NN_OK);
    gsl_matrix *sa = mat_alloc(B, 4), *sb = mat_alloc(B, 4);
    static const uint32_t y[] = {0, 1, 2, 3, 1, 2};
    nn_error err = {0, ""};
    double loss;
    size_t hits;
    for (int it = 0; it < 2; it++) {
      gsl_matrix *X = mat_alloc(B, n_in);
      for (size_t i = 0; i < B; i++)
        for (size_t j = 0; j < n_in; j++)
          if (gsl_rng_uniform(r) < 0.5)
            gsl_matrix_set(X, i, j, gsl_ran_gaussian(r, 1.0));
      ck_assert_int_eq(nn_csr_from_dense(&xb, X), NN_OK);
      ck_assert_int_eq(nn_csr_transpose(&xt, &xb.csr), NN_OK);
      ck_assert_int_eq(ops->forward(a, &train_ctx, X, sa, &err), NN_OK);
      ck_assert_int_eq(sp->forward(b, &train_ctx, &xb.csr, sb, &err), NN_OK);
      ck_assert(gsl_matrix_equal(sa, sb));
      ck_assert_int_eq(nn_softmax_xent(sa, y, sa, &loss, &hits), NN_OK);
      ck_assert_int_eq(nn_softmax_xent(sb, y, sb, &loss, &hits), NN_OK);
      ck_assert_int_eq(ops->backward(a, X, sa, &err), NN_OK);
      ck_assert_int_eq(sp->backward(b, &xb.csr, it ? &xt.csr : NULL, sb, &err),
                       NN_OK);
      for (size_t i = 0; i < na; i++)
        ck_assert_msg(gsl_matrix_equal(pa[i].grad, pb[i].grad),
                      "%s: grad of %s differs", MODELS[k], pa[i].name);
      gsl_matrix_free(X);
    }
    ck_assert_uint_eq(na, nb);
    nn_csr_buffer_free(&xb);
    nn_csr_buffer_free(&xt);
    gsl_matrix_free(sa);
    gsl_matrix_free(sb);
    gsl_rng_free(r);
    ops->destroy(a);
    ops->destroy(b);
    test_plugin_unload(&l);
  }
}
END_TEST

/* -------------------------------------------- fused step, step in parts */

/* A stepper for the tests: hands rows and blocks to sgd's step in parts
 * and counts the rows and elements each parameter got. */
typedef struct count_stepper {
  const nn_optim_parts *parts;
  const nn_optim_sgd_rule *rule;
  void *opt;
  nn_param *p;
  size_t n;
  size_t rows[8];  /* through rows and sgd */
  size_t elems[8]; /* through rows, block and sgd */
  int blocked[8];  /* parameters stepped through block */
  int ruled[8];    /* parameters whose step the model took (sgd) */
} count_stepper;

static int count_rows(void *ctx, size_t k, size_t r0, size_t r1,
                      nn_error *err) {
  count_stepper *c = ctx;
  ck_assert_uint_lt(k, c->n);
  c->rows[k] += r1 - r0;
  c->elems[k] += (r1 - r0) * c->p[k].value->size2;
  return c->parts->rows(c->opt, c->p, c->n, k, r0, r1, err);
}

static int count_block(void *ctx, size_t k, size_t r0, size_t r1, size_t c0,
                       size_t c1, const gsl_matrix *g, nn_error *err) {
  count_stepper *c = ctx;
  ck_assert_uint_lt(k, c->n);
  c->elems[k] += (r1 - r0) * (c1 - c0);
  c->blocked[k] = 1;
  return c->parts->block(c->opt, c->p, c->n, k, r0, r1, c0, c1, g, err);
}

/* The optimizer's plain SGD rule, handed to the model, which then steps
 * the whole parameter itself. */
static int count_sgd(void *ctx, size_t k, double *lr, double *reg) {
  count_stepper *c = ctx;
  ck_assert_uint_lt(k, c->n);
  if (!c->rule->rule(c->opt, c->p, c->n, k, lr, reg)) return 0;
  c->rows[k] += c->p[k].value->size1;
  c->elems[k] += c->p[k].value->size1 * c->p[k].value->size2;
  c->ruled[k] = 1;
  return 1;
}

/* A counting stepper over sgd instance opt (on p, n) and the nn_stepper
 * that the core would lend: rows always, block and sgd when asked. */
static void count_make(count_stepper *c, nn_stepper *st, const loaded *opt,
                       void *o, nn_param *p, size_t n, int block, int rule) {
  const nn_optim_ops *oo = opt->desc->optim;
  *c = (count_stepper){0};
  c->parts = EXT(oo, o, nn_optim_parts, NN_EXT_OPTIM_PARTS);
  c->rule = EXT(oo, o, nn_optim_sgd_rule, NN_EXT_OPTIM_SGD_RULE);
  c->opt = o;
  c->p = p;
  c->n = n;
  ck_assert_uint_le(n, 8);
  *st = (nn_stepper){(uint32_t)sizeof(nn_stepper), c, count_rows,
                     block ? count_block : NULL, rule ? count_sgd : NULL};
}

/* A step in parts is bracketed by begin and end, when the optimizer has
 * them. */
static void count_begin(const count_stepper *c) {
  nn_error err = {0, ""};
  if (c->parts->begin)
    ck_assert_int_eq(c->parts->begin(c->opt, c->p, c->n, &err), NN_OK);
}

static void count_end(const count_stepper *c) {
  nn_error err = {0, ""};
  if (c->parts->end)
    ck_assert_int_eq(c->parts->end(c->opt, c->p, c->n, &err), NN_OK);
}

/* A batch with about half its entries zero, as compressed rows. */
static gsl_matrix *sparse_batch(size_t rows, size_t cols, gsl_rng *r) {
  gsl_matrix *X = mat_alloc(rows, cols);
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < cols; j++)
      if (gsl_rng_uniform(r) < 0.5)
        gsl_matrix_set(X, i, j, gsl_rng_uniform(r));
  return X;
}

/* The fused step's backward_step with sgd's rows must leave exactly the
 * parameters, gradients and momentum of the sparse backward + step: 75
 * inputs (three blocks of rows of W1, the last one partial) and 24 hidden
 * units (the wide kernels).  With rule, the stepper also offers the
 * optimizer's plain SGD rule: the model takes W1's step itself when there
 * is no momentum, and leaves W1's grad as it was. */
static void fused_equals_separate(double mom, int rule) {
  loaded opt = test_plugin_load("sgd"), l = test_plugin_load("twolayer");
  const nn_model_ops *ops = l.desc->model;
  const nn_optim_ops *oo = opt.desc->optim;
  static const nn_value hidden24[] = {{.i = 24}};
  const size_t n_in = 75, n_out = 4, B = 9;
  void *a = model_new(&l, hidden24, n_in, n_out, B, 31);
  void *b = model_new(&l, hidden24, n_in, n_out, B, 31);
  const nn_model_sparse *sp = EXT(ops, a, nn_model_sparse, NN_EXT_MODEL_SPARSE);
  const nn_model_fused_step *fs =
      EXT(ops, b, nn_model_fused_step, NN_EXT_MODEL_FUSED_STEP);
  ck_assert(fs->backward_step != NULL);
  size_t na, nb;
  nn_param *pa = ops->params(a, &na), *pb = ops->params(b, &nb);
  ck_assert_uint_eq(na, nb);
  void *oa = sgd_new(&opt, 0.1, 0.01, mom, pa, na);
  void *ob = sgd_new(&opt, 0.1, 0.01, mom, pb, nb);
  gsl_rng *r = rng_seeded(32);
  nn_csr_buffer xb, xt;
  ck_assert_int_eq(nn_csr_buffer_init(&xb, B, B * n_in), NN_OK);
  ck_assert_int_eq(nn_csr_buffer_init(&xt, n_in, B * n_in), NN_OK);
  gsl_matrix *sa = mat_alloc(B, n_out), *sb = mat_alloc(B, n_out);
  static const uint32_t y[] = {0, 1, 2, 3, 1, 2, 0, 3, 1};
  nn_error err = {0, ""};
  for (int it = 0; it < 3; it++) {
    gsl_matrix *X = sparse_batch(B, n_in, r);
    ck_assert_int_eq(nn_csr_from_dense(&xb, X), NN_OK);
    ck_assert_int_eq(nn_csr_transpose(&xt, &xb.csr), NN_OK);
    double loss;
    size_t hits;
    ck_assert_int_eq(sp->forward(a, &train_ctx, &xb.csr, sa, &err), NN_OK);
    ck_assert_int_eq(sp->forward(b, &train_ctx, &xb.csr, sb, &err), NN_OK);
    ck_assert(gsl_matrix_equal(sa, sb));
    ck_assert_int_eq(nn_softmax_xent(sa, y, sa, &loss, &hits), NN_OK);
    ck_assert_int_eq(nn_softmax_xent(sb, y, sb, &loss, &hits), NN_OK);
    /* Every other step with the transpose handed over (the core makes it
     * for twolayer, NN_SPARSE_TRANSPOSE); without it the model makes its
     * own.  The fused step is always given it. */
    ck_assert_int_eq(
        sp->backward(a, &xb.csr, it % 2 ? &xt.csr : NULL, sa, &err), NN_OK);
    ck_assert_int_eq(oo->step(oa, pa, na, &err), NN_OK);
    count_stepper c;
    nn_stepper st;
    count_make(&c, &st, &opt, ob, pb, nb, 0, rule);
    count_begin(&c);
    ck_assert_msg(fs->backward_step(b, &xb.csr, &xt.csr, sb, &st, &err) ==
                      NN_OK,
                  "%s", err.msg);
    count_end(&c);
    for (size_t k = 0; k < na; k++) {
      ck_assert_uint_eq(c.rows[k], pa[k].value->size1);
      ck_assert_msg(gsl_matrix_equal(pa[k].value, pb[k].value),
                    "step %d: %s differs", it, pa[k].name);
      ck_assert_msg(c.ruled[k] || gsl_matrix_equal(pa[k].grad, pb[k].grad),
                    "step %d: grad of %s differs", it, pa[k].name);
    }
    /* W1 (the first parameter) is the one the model steps itself. */
    ck_assert_int_eq(c.ruled[0], rule && mom == 0.0);
    for (size_t k = 1; k < na; k++) ck_assert(!c.ruled[k]);
    gsl_matrix_free(X);
  }
  /* A "transpose" of the wrong shape is refused before anything moves. */
  {
    count_stepper c;
    nn_stepper st;
    count_make(&c, &st, &opt, ob, pb, nb, 0, rule);
    ck_assert_int_eq(sp->forward(b, &train_ctx, &xb.csr, sb, &err), NN_OK);
    ck_assert_int_eq(fs->backward_step(b, &xb.csr, &xb.csr, sb, &st, &err),
                     NN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "not the transpose"));
    for (size_t k = 0; k < nb; k++) ck_assert_uint_eq(c.rows[k], 0);
    err.msg[0] = '\0';
    ck_assert_int_eq(sp->backward(b, &xb.csr, &xb.csr, sb, &err), NN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "not the transpose"));
    /* So is a stepper whose size was left unset. */
    st.size = 0;
    ck_assert_int_eq(fs->backward_step(b, &xb.csr, &xt.csr, sb, &st, &err),
                     NN_EINVAL);
    for (size_t k = 0; k < nb; k++) ck_assert_uint_eq(c.rows[k], 0);
  }
  if (mom != 0.0) {
    size_t qa, qb;
    nn_param *va = oo->state(oa, &qa), *vb = oo->state(ob, &qb);
    ck_assert_uint_eq(qa, qb);
    for (size_t k = 0; k < qa; k++)
      ck_assert(gsl_matrix_equal(va[k].value, vb[k].value));
  }
  nn_csr_buffer_free(&xb);
  nn_csr_buffer_free(&xt);
  gsl_matrix_free(sa);
  gsl_matrix_free(sb);
  oo->destroy(oa);
  oo->destroy(ob);
  ops->destroy(a);
  ops->destroy(b);
  gsl_rng_free(r);
  test_plugin_unload(&l);
  test_plugin_unload(&opt);
}

START_TEST(test_fused_step_plain_sgd) { fused_equals_separate(0.0, 0); }
END_TEST

START_TEST(test_fused_step_momentum) { fused_equals_separate(0.9, 0); }
END_TEST

START_TEST(test_fused_step_sgd_rule) { fused_equals_separate(0.0, 1); }
END_TEST

/* With momentum the optimizer keeps the step: the rule is refused. */
START_TEST(test_fused_step_rule_momentum) { fused_equals_separate(0.9, 1); }
END_TEST

/* backward_step_forward with sgd's rows and blocks (and with rule, its
 * plain SGD rule) must give exactly the parameters, momentum and next
 * scores of the sparse backward, step and the next batch's forward, over
 * batches of 9, 9 and 5 rows.  784 inputs and 256 hidden units make W1
 * (1.6 MB) larger than the L2 twolayer is tuned for: it steps W1 band by
 * band, through block or the rule, each band right before the next
 * batch's forward through it.  At 270 units the last band is widened
 * rather than left narrow (a narrow product sums in another order).
 * 75 x 24 does not band. */
static void pipeline_equals_separate(size_t n_in, int64_t hidden, double mom,
                                     int rule) {
  loaded opt = test_plugin_load("sgd"), l = test_plugin_load("twolayer");
  const nn_model_ops *ops = l.desc->model;
  const nn_optim_ops *oo = opt.desc->optim;
  const nn_value h[] = {{.i = hidden}};
  enum { NB = 4 };
  const size_t n_out = 4, B = 9, rows[NB] = {9, 9, 5, 9};
  const int banded = n_in == 784;
  void *a = model_new(&l, h, n_in, n_out, B, 51);
  void *b = model_new(&l, h, n_in, n_out, B, 51);
  const nn_model_sparse *sp = EXT(ops, a, nn_model_sparse, NN_EXT_MODEL_SPARSE);
  const nn_model_fused_step *fs =
      EXT(ops, b, nn_model_fused_step, NN_EXT_MODEL_FUSED_STEP);
  ck_assert(fs->backward_step_forward != NULL);
  size_t na, nb;
  nn_param *pa = ops->params(a, &na), *pb = ops->params(b, &nb);
  ck_assert_uint_eq(na, nb);
  void *oa = sgd_new(&opt, 0.1, 0.01, mom, pa, na);
  void *ob = sgd_new(&opt, 0.1, 0.01, mom, pb, nb);
  gsl_rng *r = rng_seeded(52);
  nn_csr_buffer xb[NB], xt[NB];
  for (size_t i = 0; i < NB; i++) {
    ck_assert_int_eq(nn_csr_buffer_init(&xb[i], B, B * n_in), NN_OK);
    ck_assert_int_eq(nn_csr_buffer_init(&xt[i], n_in, B * n_in), NN_OK);
    gsl_matrix *X = sparse_batch(rows[i], n_in, r);
    ck_assert_int_eq(nn_csr_from_dense(&xb[i], X), NN_OK);
    ck_assert_int_eq(nn_csr_transpose(&xt[i], &xb[i].csr), NN_OK);
    gsl_matrix_free(X);
  }
  gsl_matrix *sa = mat_alloc(B, n_out),
             *sb[2] = {mat_alloc(B, n_out), mat_alloc(B, n_out)};
  static const uint32_t y[] = {0, 1, 2, 3, 1, 2, 0, 3, 1};
  nn_error err = {0, ""};
  double loss;
  size_t hits;
  gsl_matrix_view Sb = gsl_matrix_submatrix(sb[0], 0, 0, rows[0], n_out);
  ck_assert_int_eq(sp->forward(b, &train_ctx, &xb[0].csr, &Sb.matrix, &err),
                   NN_OK);
  for (size_t i = 0; i + 1 < NB; i++) {
    gsl_matrix_view Sa = gsl_matrix_submatrix(sa, 0, 0, rows[i], n_out);
    gsl_matrix_view Sn =
        gsl_matrix_submatrix(sb[(i + 1) % 2], 0, 0, rows[i + 1], n_out);
    Sb = gsl_matrix_submatrix(sb[i % 2], 0, 0, rows[i], n_out);
    ck_assert_int_eq(sp->forward(a, &train_ctx, &xb[i].csr, &Sa.matrix, &err),
                     NN_OK);
    ck_assert(gsl_matrix_equal(&Sa.matrix, &Sb.matrix));
    ck_assert_int_eq(nn_softmax_xent(&Sa.matrix, y, &Sa.matrix, &loss, &hits),
                     NN_OK);
    ck_assert_int_eq(nn_softmax_xent(&Sb.matrix, y, &Sb.matrix, &loss, &hits),
                     NN_OK);
    ck_assert_int_eq(sp->backward(a, &xb[i].csr, &xt[i].csr, &Sa.matrix, &err),
                     NN_OK);
    ck_assert_int_eq(oo->step(oa, pa, na, &err), NN_OK);
    count_stepper c;
    nn_stepper st;
    count_make(&c, &st, &opt, ob, pb, nb, 1, rule);
    nn_context next = train_ctx;
    next.batch = i + 1;
    count_begin(&c);
    ck_assert_msg(fs->backward_step_forward(b, &xb[i].csr, &xt[i].csr,
                                            &Sb.matrix, &st, &next,
                                            &xb[i + 1].csr, &Sn.matrix,
                                            &err) == NN_OK,
                  "%s", err.msg);
    count_end(&c);
    for (size_t k = 0; k < na; k++) {
      ck_assert_uint_eq(c.elems[k],
                        pa[k].value->size1 * pa[k].value->size2);
      ck_assert_msg(gsl_matrix_equal(pa[k].value, pb[k].value),
                    "batch %zu: %s differs", i, pa[k].name);
      ck_assert_msg(c.ruled[k] || c.blocked[k] ||
                        gsl_matrix_equal(pa[k].grad, pb[k].grad),
                    "batch %zu: grad of %s differs", i, pa[k].name);
    }
    /* Only W1 is banded, through block unless the model has the rule. */
    const int ruled = rule && mom == 0.0;
    ck_assert_int_eq(c.ruled[0], ruled);
    ck_assert_int_eq(c.blocked[0], banded && !ruled);
    for (size_t k = 1; k < na; k++) ck_assert(!c.ruled[k] && !c.blocked[k]);
    /* The next batch's scores are those of its own forward. */
    gsl_matrix_view Sa1 = gsl_matrix_submatrix(sa, 0, 0, rows[i + 1], n_out);
    ck_assert_int_eq(
        sp->forward(a, &train_ctx, &xb[i + 1].csr, &Sa1.matrix, &err), NN_OK);
    ck_assert_msg(gsl_matrix_equal(&Sa1.matrix, &Sn.matrix),
                  "batch %zu: next scores differ", i);
  }
  if (mom != 0.0) {
    size_t qa, qb;
    nn_param *va = oo->state(oa, &qa), *vb = oo->state(ob, &qb);
    ck_assert_uint_eq(qa, qb);
    for (size_t k = 0; k < qa; k++)
      ck_assert(gsl_matrix_equal(va[k].value, vb[k].value));
  }
  for (size_t i = 0; i < NB; i++) {
    nn_csr_buffer_free(&xb[i]);
    nn_csr_buffer_free(&xt[i]);
  }
  gsl_matrix_free(sa);
  gsl_matrix_free(sb[0]);
  gsl_matrix_free(sb[1]);
  oo->destroy(oa);
  oo->destroy(ob);
  ops->destroy(a);
  ops->destroy(b);
  gsl_rng_free(r);
  test_plugin_unload(&l);
  test_plugin_unload(&opt);
}

START_TEST(test_pipeline_banded) { pipeline_equals_separate(784, 256, 0.0, 0); }
END_TEST

START_TEST(test_pipeline_banded_momentum) {
  pipeline_equals_separate(784, 270, 0.9, 0);
}
END_TEST

START_TEST(test_pipeline_banded_sgd_rule) {
  pipeline_equals_separate(784, 270, 0.0, 1);
}
END_TEST

START_TEST(test_pipeline_unbanded) { pipeline_equals_separate(75, 24, 0.9, 1); }
END_TEST

/* Two sgd optimizers (with momentum) on equal copies of the same
 * parameters: one steps whole (sp on p), the other in parts (sq on q). */
typedef struct sgd_twins {
  loaded l;
  const nn_optim_ops *ops;
  const nn_optim_parts *parts; /* sq's */
  gsl_rng *r;
  nn_param p[2], q[2];
  void *sp, *sq;
} sgd_twins;

static void twins_make(sgd_twins *t, unsigned long seed) {
  t->l = test_plugin_load("sgd");
  t->ops = t->l.desc->optim;
  t->r = rng_seeded(seed);
  params_make(t->p, t->r);
  params_copy(t->q, t->p);
  t->sp = sgd_new(&t->l, 0.1, 0.01, 0.5, t->p, 2);
  t->sq = sgd_new(&t->l, 0.1, 0.01, 0.5, t->q, 2);
  t->parts = EXT(t->ops, t->sq, nn_optim_parts, NN_EXT_OPTIM_PARTS);
}

static void twins_free(sgd_twins *t) {
  t->ops->destroy(t->sp);
  t->ops->destroy(t->sq);
  params_free(t->p);
  params_free(t->q);
  gsl_rng_free(t->r);
  test_plugin_unload(&t->l);
}

/* The parts' rows on a block equals step on those rows; bad blocks are
 * refused without touching anything. */
START_TEST(test_sgd_step_rows) {
  sgd_twins t;
  twins_make(&t, 33);
  const nn_optim_ops *ops = t.ops;
  const nn_optim_parts *parts = t.parts;
  nn_param *p = t.p, *q = t.q;
  void *sp = t.sp, *sq = t.sq;
  nn_error err = {0, ""};
  ck_assert_int_eq(ops->step(sp, p, 2, &err), NN_OK);
  /* W (3 rows) in two blocks, out of order; b in one. */
  ck_assert_int_eq(parts->rows(sq, q, 2, 0, 2, 3, &err), NN_OK);
  ck_assert_int_eq(parts->rows(sq, q, 2, 1, 0, 1, &err), NN_OK);
  ck_assert_int_eq(parts->rows(sq, q, 2, 0, 0, 2, &err), NN_OK);
  for (size_t k = 0; k < 2; k++)
    ck_assert(gsl_matrix_equal(p[k].value, q[k].value));
  gsl_matrix *before = mat_alloc(3, 4);
  gsl_matrix_memcpy(before, q[0].value);
  ck_assert_int_eq(parts->rows(sq, q, 2, 2, 0, 1, &err), NN_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "parameter 2 of 2"));
  ck_assert_int_eq(parts->rows(sq, q, 2, 0, 1, 1, &err), NN_EINVAL);
  ck_assert_int_eq(parts->rows(sq, q, 2, 0, 2, 4, &err), NN_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "rows [2, 4) of W"));
  ck_assert_int_eq(parts->rows(sq, q, 1, 0, 0, 1, &err), NN_EINVAL);
  ck_assert(gsl_matrix_equal(before, q[0].value));
  gsl_matrix_free(before);
  twins_free(&t);
}
END_TEST

/* The parts' block on blocks of rows and columns, each with its
 * gradient handed over, equals step, momentum included; the parameters'
 * own grads are not read (they are poisoned here); bad blocks and
 * mis-shaped gradients are refused without touching anything. */
START_TEST(test_sgd_step_block) {
  sgd_twins t;
  twins_make(&t, 34);
  const nn_optim_ops *ops = t.ops;
  const nn_optim_parts *parts = t.parts;
  nn_param *p = t.p, *q = t.q;
  void *sp = t.sp, *sq = t.sq;
  ck_assert(parts->block != NULL);
  for (size_t k = 0; k < 2; k++)
    gsl_matrix_set_all(q[k].grad, NAN);
  nn_error err = {0, ""};
  /* W (3 x 4) in blocks [0,2)x[0,3), [0,2)x[3,4), [2,3)x[0,4); b whole.
   * Twice, so the velocities written by the blocks are read back. */
  static const size_t blocks[4][5] = {
      {0, 0, 2, 0, 3}, {0, 0, 2, 3, 4}, {0, 2, 3, 0, 4}, {1, 0, 1, 0, 4}};
  for (int round = 0; round < 2; round++) {
    ck_assert_int_eq(ops->step(sp, p, 2, &err), NN_OK);
    for (size_t i = 0; i < 4; i++) {
      const size_t *b = blocks[i];
      gsl_matrix_const_view g = gsl_matrix_const_submatrix(
          p[b[0]].grad, b[1], b[3], b[2] - b[1], b[4] - b[3]);
      ck_assert_msg(parts->block(sq, q, 2, b[0], b[1], b[2], b[3], b[4],
                                 &g.matrix, &err) == NN_OK,
                    "%s", err.msg);
    }
  }
  for (size_t k = 0; k < 2; k++)
    ck_assert(gsl_matrix_equal(p[k].value, q[k].value));
  gsl_matrix *before = mat_alloc(3, 4), *g = mat_alloc(2, 2);
  gsl_matrix_memcpy(before, q[0].value);
  ck_assert_int_eq(parts->block(sq, q, 2, 0, 0, 2, 0, 3, g, &err), NN_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "another shape"));
  ck_assert_int_eq(parts->block(sq, q, 2, 0, 0, 2, 0, 2, NULL, &err),
                   NN_EINVAL);
  ck_assert_int_eq(parts->block(sq, q, 2, 0, 0, 2, 3, 5, g, &err), NN_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "[3, 5) of W"));
  ck_assert_int_eq(parts->block(sq, q, 2, 0, 1, 1, 0, 2, g, &err), NN_EINVAL);
  ck_assert_int_eq(parts->block(sq, q, 2, 2, 0, 2, 0, 2, g, &err), NN_EINVAL);
  ck_assert(gsl_matrix_equal(before, q[0].value));
  gsl_matrix_free(before);
  gsl_matrix_free(g);
  twins_free(&t);
}
END_TEST

static Suite *models_suite(void) {
  Suite *s = suite_create("models");
  TCase *tc = tcase_create("plugins");
  tcase_add_test(tc, test_descriptors);
  tcase_add_test(tc, test_option_tables);
  tcase_add_test(tc, test_destroy_null);
  tcase_add_test(tc, test_extensions);
  suite_add_tcase(s, tc);

  tc = tcase_create("models");
  tcase_add_test(tc, test_gradcheck_softmax);
  tcase_add_test(tc, test_gradcheck_twolayer);
  tcase_add_test(tc, test_gradcheck_rejects_bad_input);
  tcase_add_test(tc, test_params_layout);
  tcase_add_test(tc, test_init_distribution);
  tcase_add_test(tc, test_same_seed_same_weights);
  tcase_add_test(tc, test_forward_formula);
  tcase_add_test(tc, test_small_last_batch);
  tcase_add_test(tc, test_sparse_equals_dense);
  tcase_add_test(tc, test_shape_errors);
  tcase_add_test(tc, test_twolayer_bad_hidden);
  suite_add_tcase(s, tc);

  tc = tcase_create("sgd");
  tcase_add_test(tc, test_sgd_one_step);
  tcase_add_test(tc, test_sgd_reg_weights_only);
  tcase_add_test(tc, test_sgd_momentum_two_steps);
  tcase_add_test(tc, test_sgd_errors);
  tcase_add_test(tc, test_training_lowers_loss);
  tcase_add_test(tc, test_sgd_step_rows);
  tcase_add_test(tc, test_sgd_step_block);
  tcase_add_test(tc, test_fused_step_plain_sgd);
  tcase_add_test(tc, test_fused_step_momentum);
  tcase_add_test(tc, test_fused_step_sgd_rule);
  tcase_add_test(tc, test_fused_step_rule_momentum);
  tcase_add_test(tc, test_pipeline_banded);
  tcase_add_test(tc, test_pipeline_banded_momentum);
  tcase_add_test(tc, test_pipeline_banded_sgd_rule);
  tcase_add_test(tc, test_pipeline_unbanded);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return test_run_suite(models_suite()); }
