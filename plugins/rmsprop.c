/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `rmsprop` optimizer plugin: RMSprop (Hinton) as torch.optim.RMSprop
 * computes it (centered = false), with L2 (`reg`, PyTorch's weight_decay)
 * added to the gradient of weights only:
 *
 *   g = g + reg * w                       (weights only)
 *   v = alpha * v + (1 - alpha) * g * g
 *   momentum == 0:  w = w - lr * g / (sqrt(v) + eps)
 *   momentum  > 0:  b = momentum * b + g / (sqrt(v) + eps);  w = w - lr * b
 *
 * The operations are torch 1.13's, in its order (addcdiv's
 * w + (-lr * g) / avg as written), each a separate statement rounded on
 * its own, so float64 results agree with PyTorch's to a few ulps (its CPU
 * kernels fuse some multiply-adds; tests/check_optim.c).  No step counter:
 * a step in parts is its rows and blocks alone.  Defaults are PyTorch's. */
#include <config.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <nn/plugin.h>
#include <nn/plugin_ext.h>

#include "optim_slots.h"

static const nn_option rmsprop_options[] = {
    {"learning_rate", NN_OPT_REAL, "0.01", "step size",
     NN_OPT_HAS_MIN | NN_OPT_MIN_EXCLUSIVE, 0.0, 0.0},
    {"alpha", NN_OPT_REAL, "0.99",
     "decay of the squared gradient's running mean",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX | NN_OPT_MAX_EXCLUSIVE, 0.0, 1.0},
    {"eps", NN_OPT_REAL, "1e-8", "added to the denominator",
     NN_OPT_HAS_MIN | NN_OPT_MIN_EXCLUSIVE, 0.0, 0.0},
    {"momentum", NN_OPT_REAL, "0", "momentum factor in [0, 1); 0 = none",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX | NN_OPT_MAX_EXCLUSIVE, 0.0, 1.0},
    {"reg", NN_OPT_REAL, "0",
     "L2 strength added to the gradient of weights (not biases)",
     NN_OPT_HAS_MIN, 0.0, 0.0},
    {NULL, 0, NULL, NULL, 0, 0.0, 0.0},
};

/* Owns slots: buffer v (0) for every parameter, and b (1) with momentum. */
typedef struct rmsprop_opt {
  double lr, alpha, eps, momentum, reg;
  double one_m_alpha, neg_lr; /* 1 - alpha, -lr */
  opt_slots slots;
  int avx2; /* the AVX2 path (optim_slots.h) */
} rmsprop_opt;

static const char *const rmsprop_bufs[] = {"v", "momentum"};

static void rmsprop_destroy(void *self) {
  rmsprop_opt *r = self;
  if (!r)
    return;
  opt_slots_free(&r->slots);
  free(r);
}

static int rmsprop_create(const nn_value *opts, const nn_param *params,
                          size_t n, void **out, nn_error *err) {
  if (!out)
    return nn_error_set(err, NN_EINVAL, "rmsprop: NULL output pointer");
  *out = NULL;
  /* opts == NULL means "all defaults" (convenient for tests and tools). */
  const double lr = opts ? opts[0].r : 0.01;
  const double alpha = opts ? opts[1].r : 0.99;
  const double eps = opts ? opts[2].r : 1e-8;
  const double mom = opts ? opts[3].r : 0.0;
  const double reg = opts ? opts[4].r : 0.0;
  /* The core checks the table's bounds; these repeat them (plus
   * finiteness) because a plugin must not trust its caller. */
  if (!(lr > 0.0) || !isfinite(lr))
    return nn_error_set(err, NN_EINVAL,
                        "rmsprop: learning_rate must be > 0 and finite, got "
                        "%g", lr);
  if (!(alpha >= 0.0 && alpha < 1.0))
    return nn_error_set(err, NN_EINVAL,
                        "rmsprop: alpha must be in [0, 1), got %g", alpha);
  if (!(eps > 0.0) || !isfinite(eps))
    return nn_error_set(err, NN_EINVAL,
                        "rmsprop: eps must be > 0 and finite, got %g", eps);
  if (!(mom >= 0.0 && mom < 1.0))
    return nn_error_set(err, NN_EINVAL,
                        "rmsprop: momentum must be in [0, 1), got %g", mom);
  if (!(reg >= 0.0) || !isfinite(reg))
    return nn_error_set(err, NN_EINVAL,
                        "rmsprop: reg must be >= 0 and finite, got %g", reg);
  rmsprop_opt *r = calloc(1, sizeof *r);
  if (!r)
    return nn_error_set(err, NN_ENOMEM, "rmsprop: out of memory");
  *r = (rmsprop_opt){.lr = lr, .alpha = alpha, .eps = eps, .momentum = mom,
                     .reg = reg, .one_m_alpha = 1.0 - alpha, .neg_lr = -lr,
                     .avx2 = opt_has_avx2()};
  /* Without momentum PyTorch keeps no momentum buffer: neither do we. */
  int rc = opt_slots_init(&r->slots, "rmsprop", params, n, rmsprop_bufs,
                          mom > 0.0 ? 2 : 1, 0, err);
  if (rc != NN_OK) {
    free(r);
    return rc;
  }
  *out = r;
  return NN_OK;
}

static nn_param *rmsprop_state(void *self, size_t *n) {
  rmsprop_opt *r = self;
  *n = r->slots.n_state;
  return r->slots.state;
}

/* len elements of one row: the parameter w, its gradient g, the running
 * mean square v and (with momentum, else NULL) the buffer b; l2: a weight,
 * with a non-zero reg. */
static void rmsprop_row_scalar(const rmsprop_opt *r, double *w,
                               const double *g, double *v, double *b,
                               size_t len, int l2) {
  const double alpha = r->alpha, c = r->one_m_alpha, eps = r->eps;
  const double mom = r->momentum, neg_lr = r->neg_lr, reg = r->reg;
  for (size_t j = 0; j < len; j++) {
    double gj = g[j];
    if (l2) {
      const double d = reg * w[j];
      gj = gj + d;
    }
    double vj = v[j] * alpha;
    double gv = c * gj;
    gv = gv * gj;
    vj = vj + gv;
    v[j] = vj;
    double avg = sqrt(vj);
    avg = avg + eps;
    if (b) {
      double bj = b[j] * mom;
      const double q = gj / avg;
      bj = bj + q;
      b[j] = bj;
      const double u = neg_lr * bj;
      w[j] = w[j] + u;
    } else {
      double u = neg_lr * gj;
      u = u / avg;
      w[j] = w[j] + u;
    }
  }
}

#ifdef OPT_X86
/* rmsprop_row_scalar four elements at a time, the same operations in the
 * same order. */
OPT_AVX2 static void rmsprop_row_avx2(const rmsprop_opt *r, double *w,
                                      const double *g, double *v, double *b,
                                      size_t len, int l2) {
  const __m256d alpha = _mm256_set1_pd(r->alpha);
  const __m256d c = _mm256_set1_pd(r->one_m_alpha);
  const __m256d eps = _mm256_set1_pd(r->eps);
  const __m256d mom = _mm256_set1_pd(r->momentum);
  const __m256d neg_lr = _mm256_set1_pd(r->neg_lr);
  const __m256d reg = _mm256_set1_pd(r->reg);
  size_t j = 0;
  for (; j + 4 <= len; j += 4) {
    const __m256d wj = _mm256_loadu_pd(w + j);
    __m256d gj = _mm256_loadu_pd(g + j);
    if (l2)
      gj = _mm256_add_pd(gj, _mm256_mul_pd(reg, wj));
    const __m256d vj =
        _mm256_add_pd(_mm256_mul_pd(_mm256_loadu_pd(v + j), alpha),
                      _mm256_mul_pd(_mm256_mul_pd(c, gj), gj));
    _mm256_storeu_pd(v + j, vj);
    const __m256d avg = _mm256_add_pd(_mm256_sqrt_pd(vj), eps);
    __m256d u;
    if (b) {
      const __m256d bj =
          _mm256_add_pd(_mm256_mul_pd(_mm256_loadu_pd(b + j), mom),
                        _mm256_div_pd(gj, avg));
      _mm256_storeu_pd(b + j, bj);
      u = _mm256_mul_pd(neg_lr, bj);
    } else {
      u = _mm256_div_pd(_mm256_mul_pd(neg_lr, gj), avg);
    }
    _mm256_storeu_pd(w + j, _mm256_add_pd(wj, u));
  }
  rmsprop_row_scalar(r, w + j, g + j, v + j, b ? b + j : NULL, len - j, l2);
}
#endif

static void rmsprop_row(const rmsprop_opt *r, double *w, const double *g,
                        double *v, double *b, size_t len, int l2) {
#ifdef OPT_X86
  if (r->avx2) {
    rmsprop_row_avx2(r, w, g, v, b, len, l2);
    return;
  }
#endif
  rmsprop_row_scalar(r, w, g, v, b, len, l2);
}

/* Block [r0, r1) x [c0, c1) of parameter k (checked), with gblock as its
 * gradient, or the grad's elements when gblock is NULL. */
static void rmsprop_update(rmsprop_opt *r, nn_param *params, size_t k,
                           size_t r0, size_t r1, size_t c0, size_t c1,
                           const gsl_matrix *gblock) {
  gsl_matrix *w = params[k].value;
  gsl_matrix *v = opt_slots_buf(&r->slots, k, 0);
  gsl_matrix *b = r->slots.n_bufs > 1 ? opt_slots_buf(&r->slots, k, 1) : NULL;
  const int l2 = (params[k].flags & NN_PARAM_WEIGHT) && r->reg != 0.0;
  for (size_t i = r0; i < r1; i++) {
    const double *g = gblock ? opt_crow(gblock, i - r0, 0)
                             : opt_crow(params[k].grad, i, c0);
    rmsprop_row(r, opt_row(w, i, c0), g, opt_row(v, i, c0),
                b ? opt_row(b, i, c0) : NULL, c1 - c0, l2);
  }
}

/* Every parameter is checked before any changes. */
static int rmsprop_step(void *self, nn_param *params, size_t n,
                        nn_error *err) {
  rmsprop_opt *r = self;
  if (!r)
    return nn_error_set(err, NN_EINVAL, "rmsprop: NULL optimizer");
  int rc = opt_slots_check_all(&r->slots, params, n, err);
  for (size_t k = 0; rc == NN_OK && k < n; k++)
    rmsprop_update(r, params, k, 0, params[k].value->size1, 0,
                   params[k].value->size2, NULL);
  return rc;
}

static int rmsprop_rows(void *self, nn_param *params, size_t n, size_t k,
                        size_t r0, size_t r1, nn_error *err) {
  rmsprop_opt *r = self;
  if (!r)
    return nn_error_set(err, NN_EINVAL, "rmsprop: NULL optimizer");
  int rc = opt_slots_check_rows(&r->slots, params, n, k, r0, r1, err);
  if (rc == NN_OK)
    rmsprop_update(r, params, k, r0, r1, 0, params[k].value->size2, NULL);
  return rc;
}

static int rmsprop_block(void *self, nn_param *params, size_t n, size_t k,
                         size_t r0, size_t r1, size_t c0, size_t c1,
                         const gsl_matrix *g, nn_error *err) {
  rmsprop_opt *r = self;
  if (!r)
    return nn_error_set(err, NN_EINVAL, "rmsprop: NULL optimizer");
  int rc = opt_slots_check_block(&r->slots, params, n, k, r0, r1, c0, c1, g,
                                 err);
  if (rc == NN_OK)
    rmsprop_update(r, params, k, r0, r1, c0, c1, g);
  return rc;
}

/* No begin or end: no step counter. */
static const nn_optim_parts rmsprop_parts_ext = {
    .size = sizeof(nn_optim_parts),
    .begin = NULL,
    .rows = rmsprop_rows,
    .block = rmsprop_block,
    .end = NULL,
};

static double rmsprop_get_lr(void *self) {
  return ((const rmsprop_opt *)self)->lr;
}

/* A schedule's rate for the next steps; -lr is made as create makes it. */
static int rmsprop_set_lr(void *self, double lr, nn_error *err) {
  rmsprop_opt *r = self;
  if (!r)
    return nn_error_set(err, NN_EINVAL, "rmsprop: NULL optimizer");
  if (!(lr >= 0.0) || !isfinite(lr))
    return nn_error_set(err, NN_EINVAL,
                        "rmsprop: learning rate must be >= 0 and finite, got "
                        "%g", lr);
  r->lr = lr;
  r->neg_lr = -lr;
  return NN_OK;
}

static const nn_optim_lr rmsprop_lr_ext = {
    .size = sizeof(nn_optim_lr),
    .get = rmsprop_get_lr,
    .set = rmsprop_set_lr,
};

/* No sgd-rule: no RMSprop step is plain SGD. */
static const void *rmsprop_extension(void *self, const char *id) {
  (void)self;
  if (id && strcmp(id, NN_EXT_OPTIM_PARTS) == 0)
    return &rmsprop_parts_ext;
  if (id && strcmp(id, NN_EXT_OPTIM_LR) == 0)
    return &rmsprop_lr_ext;
  return NULL;
}

static const nn_optim_ops rmsprop_ops = {
    .size = sizeof(nn_optim_ops),
    .create = rmsprop_create,
    .destroy = rmsprop_destroy,
    .step = rmsprop_step,
    .state = rmsprop_state,
    .extension = rmsprop_extension,
};

NN_OPTIMIZER_PLUGIN("rmsprop", "0.1.0",
                    "RMSprop with optional momentum and L2 on weights "
                    "(PyTorch's rule)",
                    rmsprop_options, &rmsprop_ops);
