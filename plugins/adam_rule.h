/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The Adam rule shared by the adam and adamw plugins, which differ only in
 * how weight decay enters (and in their option tables).  The including
 * file defines ADAM_NAME (the plugin's name, also its state prefix) and
 * ADAM_DECOUPLED (0 or 1) first:
 *
 *   ADAM_DECOUPLED 0 (adam):  g = g + decay * w          (L2, on the gradient)
 *   ADAM_DECOUPLED 1 (adamw): w = w * (1 - lr * decay)   (decoupled)
 *   then, with t the step count from 1:
 *     m = beta1 * m + (1 - beta1) * g
 *     v = beta2 * v + (1 - beta2) * g * g
 *     w = w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 *
 * Decay touches NN_PARAM_WEIGHT parameters only, never biases.  Every
 * operation is the one torch.optim.Adam / AdamW (torch 1.13, single-tensor
 * path) performs, in its order: the bias corrections come from pow() on
 * the step count as Python's float ** does, and addcdiv's
 * w + (value * m) / denom is kept as written.  Each multiply, divide and
 * add is a separate C statement, rounded on its own: PyTorch's CPU kernels
 * fuse some multiply-adds, which would make the bits depend on the CPU.
 * float64 results agree with PyTorch's to a few ulps (tests/check_optim.c
 * against tests/data/optim_ref.txt).  PyTorch counts steps in a float32
 * tensor, exact to 2^24 steps; past that the two part ways.
 *
 * The step in parts: begin advances the counter and fixes the step's
 * constants; rows and block then update elements independently, so any
 * split gives the bits of step(). */
#ifndef NN_PLUGINS_ADAM_RULE_H
#define NN_PLUGINS_ADAM_RULE_H

#if !defined(ADAM_NAME) || !defined(ADAM_DECOUPLED)
#error "define ADAM_NAME and ADAM_DECOUPLED before including adam_rule.h"
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <nn/plugin.h>
#include <nn/plugin_ext.h>

#include "optim_slots.h"

typedef struct adam_hyper {
  double lr, beta1, beta2, eps;
  double decay; /* adam's reg or adamw's weight_decay */
} adam_hyper;

/* Owns slots.  The members from t on belong to the step begun last. */
typedef struct adam_opt {
  adam_hyper h;
  double one_m_b1, one_m_b2; /* 1 - beta1, 1 - beta2 */
  double shrink;             /* 1 - lr * decay (decoupled decay) */
  opt_slots slots;           /* buffers m (0) and v (1), the step counter */
  double t;                  /* the step begun last; 0: none yet */
  double neg_step_size;      /* -lr / (1 - beta1^t) */
  double bc2_sqrt;           /* sqrt(1 - beta2^t) */
  int avx2;                  /* the AVX2 path (optim_slots.h) */
} adam_opt;

static const char *const adam_bufs[] = {"m", "v"};

static void adam_destroy(void *self) {
  adam_opt *a = self;
  if (!a)
    return;
  opt_slots_free(&a->slots);
  free(a);
}

static int adam_new(const adam_hyper *h, const nn_param *params, size_t n,
                    void **out, nn_error *err) {
  if (!out)
    return nn_error_set(err, NN_EINVAL, ADAM_NAME ": NULL output pointer");
  *out = NULL;
  /* The core checks the table's bounds; these repeat them (plus
   * finiteness) because a plugin must not trust its caller. */
  if (!(h->lr > 0.0) || !isfinite(h->lr))
    return nn_error_set(err, NN_EINVAL,
                        ADAM_NAME ": learning_rate must be > 0 and finite, "
                        "got %g", h->lr);
  if (!(h->beta1 >= 0.0 && h->beta1 < 1.0) ||
      !(h->beta2 >= 0.0 && h->beta2 < 1.0))
    return nn_error_set(err, NN_EINVAL,
                        ADAM_NAME ": beta1 and beta2 must be in [0, 1), got "
                        "%g and %g", h->beta1, h->beta2);
  if (!(h->eps > 0.0) || !isfinite(h->eps))
    return nn_error_set(err, NN_EINVAL,
                        ADAM_NAME ": eps must be > 0 and finite, got %g",
                        h->eps);
  if (!(h->decay >= 0.0) || !isfinite(h->decay))
    return nn_error_set(err, NN_EINVAL,
                        ADAM_NAME ": %s must be >= 0 and finite, got %g",
                        ADAM_DECOUPLED ? "weight_decay" : "reg", h->decay);
  /* At lr * decay >= 1 the decoupled decay would zero the weights or flip
   * their sign on every step (NN_ECONFIG: each option is valid alone, so
   * the core's checks of the table cannot catch it). */
  if (ADAM_DECOUPLED && !(h->lr * h->decay < 1.0))
    return nn_error_set(err, NN_ECONFIG,
                        ADAM_NAME ": learning_rate * weight_decay must be "
                        "< 1, got %g", h->lr * h->decay);
  adam_opt *a = calloc(1, sizeof *a);
  if (!a)
    return nn_error_set(err, NN_ENOMEM, ADAM_NAME ": out of memory");
  a->h = *h;
  a->one_m_b1 = 1.0 - h->beta1;
  a->one_m_b2 = 1.0 - h->beta2;
  a->shrink = 1.0 - h->lr * h->decay;
  a->avx2 = opt_has_avx2();
  int rc = opt_slots_init(&a->slots, ADAM_NAME, params, n, adam_bufs, 2, 1,
                          err);
  if (rc != NN_OK) {
    free(a);
    return rc;
  }
  *out = a;
  return NN_OK;
}

static nn_param *adam_state(void *self, size_t *n) {
  adam_opt *a = self;
  *n = a->slots.n_state;
  return a->slots.state;
}

/* Starts a step: the counter advances and the step's constants follow it.
 * Every parameter is checked first, so an error changes nothing. */
static int adam_begin(void *self, nn_param *params, size_t n, nn_error *err) {
  adam_opt *a = self;
  if (!a)
    return nn_error_set(err, NN_EINVAL, ADAM_NAME ": NULL optimizer");
  int rc = opt_slots_check_all(&a->slots, params, n, err);
  double t = 0.0;
  if (rc == NN_OK)
    rc = opt_slots_advance(&a->slots, &t, err);
  if (rc != NN_OK)
    return rc;
  const double bias_correction1 = 1.0 - pow(a->h.beta1, t);
  const double bias_correction2 = 1.0 - pow(a->h.beta2, t);
  const double step_size = a->h.lr / bias_correction1;
  a->neg_step_size = -step_size;
  a->bc2_sqrt = sqrt(bias_correction2);
  a->t = t;
  return NN_OK;
}

/* len elements of one row: the parameter w, its gradient g, moments m
 * and v; decayed: a weight, with a non-zero decay. */
static void adam_row_scalar(const adam_opt *a, double *w, const double *g,
                            double *m, double *v, size_t len, int decayed) {
  const double b1 = a->h.beta1, b2 = a->h.beta2, eps = a->h.eps;
  const double c1 = a->one_m_b1, c2 = a->one_m_b2;
  const double nss = a->neg_step_size, bc2s = a->bc2_sqrt;
  const double decay = a->h.decay, shrink = a->shrink;
  for (size_t j = 0; j < len; j++) {
    double gj = g[j], wj = w[j];
    if (decayed && !ADAM_DECOUPLED) {
      const double d = decay * wj;
      gj = gj + d;
    }
    if (decayed && ADAM_DECOUPLED)
      wj = wj * shrink;
    double mj = m[j] * b1;
    const double gm = c1 * gj;
    mj = mj + gm;
    double vj = v[j] * b2;
    double gv = c2 * gj;
    gv = gv * gj;
    vj = vj + gv;
    double denom = sqrt(vj);
    denom = denom / bc2s;
    denom = denom + eps;
    double u = nss * mj;
    u = u / denom;
    m[j] = mj;
    v[j] = vj;
    w[j] = wj + u;
  }
}

#ifdef OPT_X86
/* adam_row_scalar four elements at a time, the same operations in the
 * same order. */
OPT_AVX2 static void adam_row_avx2(const adam_opt *a, double *w,
                                   const double *g, double *m, double *v,
                                   size_t len, int decayed) {
  const __m256d b1 = _mm256_set1_pd(a->h.beta1);
  const __m256d b2 = _mm256_set1_pd(a->h.beta2);
  const __m256d eps = _mm256_set1_pd(a->h.eps);
  const __m256d c1 = _mm256_set1_pd(a->one_m_b1);
  const __m256d c2 = _mm256_set1_pd(a->one_m_b2);
  const __m256d nss = _mm256_set1_pd(a->neg_step_size);
  const __m256d bc2s = _mm256_set1_pd(a->bc2_sqrt);
  const __m256d decay = _mm256_set1_pd(a->h.decay);
  const __m256d shrink = _mm256_set1_pd(a->shrink);
  size_t j = 0;
  for (; j + 4 <= len; j += 4) {
    __m256d gj = _mm256_loadu_pd(g + j), wj = _mm256_loadu_pd(w + j);
    if (decayed && !ADAM_DECOUPLED)
      gj = _mm256_add_pd(gj, _mm256_mul_pd(decay, wj));
    if (decayed && ADAM_DECOUPLED)
      wj = _mm256_mul_pd(wj, shrink);
    const __m256d mj =
        _mm256_add_pd(_mm256_mul_pd(_mm256_loadu_pd(m + j), b1),
                      _mm256_mul_pd(c1, gj));
    const __m256d vj =
        _mm256_add_pd(_mm256_mul_pd(_mm256_loadu_pd(v + j), b2),
                      _mm256_mul_pd(_mm256_mul_pd(c2, gj), gj));
    const __m256d denom =
        _mm256_add_pd(_mm256_div_pd(_mm256_sqrt_pd(vj), bc2s), eps);
    const __m256d u = _mm256_div_pd(_mm256_mul_pd(nss, mj), denom);
    _mm256_storeu_pd(m + j, mj);
    _mm256_storeu_pd(v + j, vj);
    _mm256_storeu_pd(w + j, _mm256_add_pd(wj, u));
  }
  adam_row_scalar(a, w + j, g + j, m + j, v + j, len - j, decayed);
}
#endif

static void adam_row(const adam_opt *a, double *w, const double *g,
                     double *m, double *v, size_t len, int decayed) {
#ifdef OPT_X86
  if (a->avx2) {
    adam_row_avx2(a, w, g, m, v, len, decayed);
    return;
  }
#endif
  adam_row_scalar(a, w, g, m, v, len, decayed);
}

/* Block [r0, r1) x [c0, c1) of parameter k (checked), with gblock as its
 * gradient, or the grad's elements when gblock is NULL. */
static void adam_update(adam_opt *a, nn_param *params, size_t k, size_t r0,
                        size_t r1, size_t c0, size_t c1,
                        const gsl_matrix *gblock) {
  gsl_matrix *w = params[k].value;
  gsl_matrix *m = opt_slots_buf(&a->slots, k, 0);
  gsl_matrix *v = opt_slots_buf(&a->slots, k, 1);
  const int decayed =
      (params[k].flags & NN_PARAM_WEIGHT) && a->h.decay != 0.0;
  for (size_t i = r0; i < r1; i++) {
    const double *g = gblock ? opt_crow(gblock, i - r0, 0)
                             : opt_crow(params[k].grad, i, c0);
    adam_row(a, opt_row(w, i, c0), g, opt_row(m, i, c0), opt_row(v, i, c0),
             c1 - c0, decayed);
  }
}

/* A part belongs to the step begun last, and the counter is still the one
 * that begin set (a state restored since then needs a new begin). */
static int adam_check_begun(const adam_opt *a, nn_error *err) {
  if (!(a->t >= 1.0) || gsl_matrix_get(a->slots.step, 0, 0) != a->t)
    return nn_error_set(err, NN_EINVAL,
                        ADAM_NAME ": a part of a step before its begin");
  return NN_OK;
}

static int adam_rows(void *self, nn_param *params, size_t n, size_t k,
                     size_t r0, size_t r1, nn_error *err) {
  adam_opt *a = self;
  if (!a)
    return nn_error_set(err, NN_EINVAL, ADAM_NAME ": NULL optimizer");
  int rc = opt_slots_check_rows(&a->slots, params, n, k, r0, r1, err);
  if (rc == NN_OK)
    rc = adam_check_begun(a, err);
  if (rc == NN_OK)
    adam_update(a, params, k, r0, r1, 0, params[k].value->size2, NULL);
  return rc;
}

static int adam_block(void *self, nn_param *params, size_t n, size_t k,
                      size_t r0, size_t r1, size_t c0, size_t c1,
                      const gsl_matrix *g, nn_error *err) {
  adam_opt *a = self;
  if (!a)
    return nn_error_set(err, NN_EINVAL, ADAM_NAME ": NULL optimizer");
  int rc = opt_slots_check_block(&a->slots, params, n, k, r0, r1, c0, c1, g,
                                 err);
  if (rc == NN_OK)
    rc = adam_check_begun(a, err);
  if (rc == NN_OK)
    adam_update(a, params, k, r0, r1, c0, c1, g);
  return rc;
}

static int adam_step(void *self, nn_param *params, size_t n, nn_error *err) {
  adam_opt *a = self;
  int rc = adam_begin(self, params, n, err);
  for (size_t k = 0; rc == NN_OK && k < n; k++)
    adam_update(a, params, k, 0, params[k].value->size1, 0,
                params[k].value->size2, NULL);
  return rc;
}

/* No end: a step is over with its last part. */
static const nn_optim_parts adam_parts_ext = {
    .size = sizeof(nn_optim_parts),
    .begin = adam_begin,
    .rows = adam_rows,
    .block = adam_block,
    .end = NULL,
};

static double adam_get_lr(void *self) { return ((const adam_opt *)self)->h.lr; }

/* A schedule's rate for the next steps.  The step size follows it in
 * begin; the decoupled decay's factor is made here, as create makes it,
 * so that the rate create was given yields the same bits. */
static int adam_set_lr(void *self, double lr, nn_error *err) {
  adam_opt *a = self;
  if (!a)
    return nn_error_set(err, NN_EINVAL, ADAM_NAME ": NULL optimizer");
  if (!(lr >= 0.0) || !isfinite(lr))
    return nn_error_set(err, NN_EINVAL,
                        ADAM_NAME ": learning rate must be >= 0 and finite, "
                        "got %g", lr);
  if (ADAM_DECOUPLED && !(lr * a->h.decay < 1.0))
    return nn_error_set(err, NN_EINVAL,
                        ADAM_NAME ": learning rate * weight_decay must be "
                        "< 1, got %g", lr * a->h.decay);
  a->h.lr = lr;
  a->shrink = 1.0 - lr * a->h.decay;
  return NN_OK;
}

static const nn_optim_lr adam_lr_ext = {
    .size = sizeof(nn_optim_lr),
    .get = adam_get_lr,
    .set = adam_set_lr,
};

/* No sgd-rule: no Adam step is plain SGD. */
static const void *adam_extension(void *self, const char *id) {
  (void)self;
  if (id && strcmp(id, NN_EXT_OPTIM_PARTS) == 0)
    return &adam_parts_ext;
  if (id && strcmp(id, NN_EXT_OPTIM_LR) == 0)
    return &adam_lr_ext;
  return NULL;
}

#endif /* NN_PLUGINS_ADAM_RULE_H */
