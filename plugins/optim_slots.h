/* SPDX-License-Identifier: GPL-3.0-or-later */
/* What the adam, adamw and rmsprop optimizer plugins share: buffers
 * shaped like each parameter (moments, velocities), an optional step
 * counter, their exposure as checkpoint state, and the checks every call
 * makes.  Header-only (static inline) so that each plugin stays one shared
 * object exporting one symbol.
 *
 * State names are "<plugin>.<buffer>.<parameter>" and "<plugin>.step";
 * create refuses parameters whose names would collide with them, since a
 * checkpoint stores parameters and optimizer state side by side by name.
 *
 * The step counter is a 1 x 1 matrix holding the count as a double: the
 * matrix itself is the state the core saves and restores, so the count is
 * read back from it at the start of every step (a restored checkpoint
 * needs no other hook).  Counts are exact up to 2^53. */
#ifndef NN_PLUGINS_OPTIM_SLOTS_H
#define NN_PLUGINS_OPTIM_SLOTS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nn/math.h>
#include <nn/plugin.h>

/* x86-64 with GCC or Clang: the elementwise rules have an AVX2 path,
 * chosen in create from the CPU's feature bits.  Its vector multiplies,
 * divides, square roots and adds round exactly as the scalar statements
 * do (IEEE; no FMA, which the target does not even allow), so both paths
 * give the same bits: a step in parts may mix them.  Scalar, Adam's square
 * root and two divisions per element made the two-layer epoch 3.5 times as
 * long as sgd's; with AVX2 it is 1.9 times.  NN_NO_SIMD builds the scalar
 * paths only, as in libnn. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(NN_NO_SIMD)
#include <immintrin.h>
#define OPT_X86 1
#define OPT_AVX2 __attribute__((target("avx2")))
#endif

static inline int opt_has_avx2(void) {
#ifdef OPT_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") != 0;
#else
  return 0;
#endif
}

/* Owns bufs (and their matrices), step, state and names.  The plugin name
 * and buffer names are the caller's static strings. */
typedef struct opt_slots {
  const char *plugin;
  size_t n;        /* parameters */
  size_t n_bufs;   /* buffers per parameter (>= 1) */
  gsl_matrix **buf; /* n * n_bufs: buffer b of parameter k at k * n_bufs + b */
  gsl_matrix *step; /* 1 x 1, or NULL without a step counter */
  nn_param *state;  /* n_state entries: step first, then every buf */
  size_t n_state;
  char *names; /* the state names, each NUL-terminated, back to back */
} opt_slots;

static inline void opt_slots_free(opt_slots *s) {
  if (s->buf)
    for (size_t i = 0; i < s->n * s->n_bufs; i++)
      gsl_matrix_free(s->buf[i]);
  gsl_matrix_free(s->step);
  free(s->buf);
  free(s->state);
  free(s->names);
  memset(s, 0, sizeof *s);
}

static inline const char *opt_name(const nn_param *p) {
  return p->name ? p->name : "?";
}

/* 1 if some parameter is named `name`. */
static inline int opt_slots_taken(const nn_param *params, size_t n,
                                  const char *name) {
  for (size_t k = 0; k < n; k++)
    if (params[k].name && strcmp(params[k].name, name) == 0)
      return 1;
  return 0;
}

/* Names the state buffers into s->names (allocated here) and fills
 * s->state; NN_EINVAL when a name is a parameter's. */
static inline int opt_slots_name(opt_slots *s, const nn_param *params,
                                 const char *const *bufs, nn_error *err) {
  size_t len = strlen(s->plugin) + sizeof ".step";
  for (size_t k = 0; k < s->n; k++)
    for (size_t b = 0; b < s->n_bufs; b++)
      len += strlen(s->plugin) + strlen(bufs[b]) +
             strlen(opt_name(&params[k])) + 3; /* two dots and a NUL */
  s->names = malloc(len);
  s->state = calloc(s->n * s->n_bufs + 1, sizeof *s->state);
  if (!s->names || !s->state)
    return nn_error_set(err, NN_ENOMEM, "%s: out of memory", s->plugin);
  char *at = s->names;
  size_t left = len;
  if (s->step) {
    const int w = snprintf(at, left, "%s.step", s->plugin);
    s->state[s->n_state++] = (nn_param){at, s->step, NULL, 0};
    at += w + 1;
    left -= (size_t)w + 1;
  }
  for (size_t k = 0; k < s->n; k++)
    for (size_t b = 0; b < s->n_bufs; b++) {
      const int w = snprintf(at, left, "%s.%s.%s", s->plugin, bufs[b],
                             opt_name(&params[k]));
      s->state[s->n_state++] =
          (nn_param){at, s->buf[k * s->n_bufs + b], NULL, 0};
      at += w + 1;
      left -= (size_t)w + 1;
    }
  for (size_t i = 0; i < s->n_state; i++)
    if (opt_slots_taken(params, s->n, s->state[i].name))
      return nn_error_set(err, NN_EINVAL,
                          "%s: a parameter is named '%s', the name of the "
                          "optimizer's state buffer",
                          s->plugin, s->state[i].name);
  return NN_OK;
}

/* Zeroed buffers bufs[0 .. n_bufs) for each of the n parameters (checked:
 * a value and a grad of its shape), and the step counter at 0 when
 * with_step.  On error *s is left empty. */
static inline int opt_slots_init(opt_slots *s, const char *plugin,
                                 const nn_param *params, size_t n,
                                 const char *const *bufs, size_t n_bufs,
                                 int with_step, nn_error *err) {
  memset(s, 0, sizeof *s);
  s->plugin = plugin;
  if (n == 0 || !params)
    return nn_error_set(err, NN_EINVAL, "%s: no parameters to optimize",
                        plugin);
  for (size_t k = 0; k < n; k++)
    if (!params[k].value || !params[k].grad ||
        params[k].value->size1 != params[k].grad->size1 ||
        params[k].value->size2 != params[k].grad->size2)
      return nn_error_set(err, NN_EINVAL,
                          "%s: parameter %zu (%s) has a missing or "
                          "mis-shaped value/grad",
                          plugin, k, opt_name(&params[k]));
  s->n = n;
  s->n_bufs = n_bufs;
  s->buf = calloc(n * n_bufs, sizeof *s->buf);
  int rc = s->buf ? NN_OK
                  : nn_error_set(err, NN_ENOMEM, "%s: out of memory", plugin);
  for (size_t k = 0; rc == NN_OK && k < n; k++) {
    const gsl_matrix *w = params[k].value;
    for (size_t b = 0; rc == NN_OK && b < n_bufs; b++) {
      /* Rows as far apart as the parameter's, as sgd's velocity: a model
       * that pads its rows (to spread blocks of columns over the L1 sets)
       * gets the same layout for the buffers updated alongside. */
      gsl_matrix *m = nn_matrix_calloc_strided(w->size1, w->size2, w->tda);
      s->buf[k * n_bufs + b] = m;
      if (!m)
        rc = nn_error_set(err, NN_ENOMEM,
                          "%s: cannot allocate the %zux%zu %s buffer of %s",
                          plugin, w->size1, w->size2, bufs[b],
                          opt_name(&params[k]));
    }
  }
  if (rc == NN_OK && with_step && !(s->step = nn_matrix_calloc_aligned(1, 1)))
    rc = nn_error_set(err, NN_ENOMEM, "%s: out of memory", plugin);
  if (rc == NN_OK)
    rc = opt_slots_name(s, params, bufs, err);
  if (rc != NN_OK)
    opt_slots_free(s);
  return rc;
}

static inline gsl_matrix *opt_slots_buf(const opt_slots *s, size_t k,
                                        size_t b) {
  return s->buf[k * s->n_bufs + b];
}

/* The call is on the parameters the optimizer was created for. */
static inline int opt_slots_check_call(const opt_slots *s,
                                       const nn_param *params, size_t n,
                                       nn_error *err) {
  if (!params)
    return nn_error_set(err, NN_EINVAL, "%s: NULL argument", s->plugin);
  if (n != s->n)
    return nn_error_set(err, NN_EINVAL, "%s: step on %zu parameters, "
                        "created for %zu", s->plugin, n, s->n);
  return NN_OK;
}

/* Parameter k is the matrix the optimizer was created for, with a grad of
 * its shape. */
static inline int opt_slots_check_param(const opt_slots *s,
                                        const nn_param *params, size_t k,
                                        nn_error *err) {
  const gsl_matrix *w = params[k].value, *g = params[k].grad;
  const gsl_matrix *b = opt_slots_buf(s, k, 0);
  if (!w || !g || w->size1 != b->size1 || w->size2 != b->size2 ||
      g->size1 != w->size1 || g->size2 != w->size2)
    return nn_error_set(err, NN_EINVAL,
                        "%s: parameter %zu (%s) is not the %zux%zu matrix "
                        "the optimizer was created for",
                        s->plugin, k, opt_name(&params[k]), b->size1,
                        b->size2);
  return NN_OK;
}

/* Every parameter, before a step touches any. */
static inline int opt_slots_check_all(const opt_slots *s,
                                      const nn_param *params, size_t n,
                                      nn_error *err) {
  int rc = opt_slots_check_call(s, params, n, err);
  for (size_t k = 0; rc == NN_OK && k < n; k++)
    rc = opt_slots_check_param(s, params, k, err);
  return rc;
}

/* A part of a step touches parameter k of the ones created for. */
static inline int opt_slots_check_one(const opt_slots *s,
                                      const nn_param *params, size_t n,
                                      size_t k, nn_error *err) {
  int rc = opt_slots_check_call(s, params, n, err);
  if (rc == NN_OK && k >= n)
    rc = nn_error_set(err, NN_EINVAL, "%s: parameter %zu of %zu", s->plugin,
                      k, n);
  if (rc == NN_OK)
    rc = opt_slots_check_param(s, params, k, err);
  return rc;
}

/* Rows [r0, r1) of parameter k. */
static inline int opt_slots_check_rows(const opt_slots *s,
                                       const nn_param *params, size_t n,
                                       size_t k, size_t r0, size_t r1,
                                       nn_error *err) {
  int rc = opt_slots_check_one(s, params, n, k, err);
  if (rc == NN_OK && !(r0 < r1 && r1 <= params[k].value->size1))
    rc = nn_error_set(err, NN_EINVAL,
                      "%s: rows [%zu, %zu) of %s, which has %zu rows",
                      s->plugin, r0, r1, opt_name(&params[k]),
                      params[k].value->size1);
  return rc;
}

/* Block [r0, r1) x [c0, c1) of parameter k, with g as its gradient. */
static inline int opt_slots_check_block(const opt_slots *s,
                                        const nn_param *params, size_t n,
                                        size_t k, size_t r0, size_t r1,
                                        size_t c0, size_t c1,
                                        const gsl_matrix *g, nn_error *err) {
  int rc = opt_slots_check_one(s, params, n, k, err);
  if (rc != NN_OK)
    return rc;
  const gsl_matrix *w = params[k].value;
  if (!(r0 < r1 && r1 <= w->size1 && c0 < c1 && c1 <= w->size2))
    return nn_error_set(err, NN_EINVAL,
                        "%s: block [%zu, %zu) x [%zu, %zu) of %s, which is "
                        "%zux%zu",
                        s->plugin, r0, r1, c0, c1, opt_name(&params[k]),
                        w->size1, w->size2);
  if (!g || g->size1 != r1 - r0 || g->size2 != c1 - c0)
    return nn_error_set(err, NN_EINVAL,
                        "%s: the gradient of a %zux%zu block of %s is %s",
                        s->plugin, r1 - r0, c1 - c0, opt_name(&params[k]),
                        g ? "another shape" : "missing");
  return NN_OK;
}

/* Advances the step counter and returns the new count in *t.  A counter
 * restored from a file is checked: it must be a whole number that can
 * still grow exactly. */
static inline int opt_slots_advance(opt_slots *s, double *t, nn_error *err) {
  const double c = gsl_matrix_get(s->step, 0, 0);
  if (!(c >= 0.0 && c < 9007199254740992.0 && c == floor(c)))
    return nn_error_set(err, NN_EINVAL,
                        "%s: the step count %g in %s.step is not a whole "
                        "number in [0, 2^53)",
                        s->plugin, c, s->plugin);
  *t = c + 1.0;
  gsl_matrix_set(s->step, 0, 0, *t);
  return NN_OK;
}

/* The row pointer of element (i, c0) of m. */
static inline double *opt_row(gsl_matrix *m, size_t i, size_t c0) {
  return m->data + i * m->tda + c0;
}

static inline const double *opt_crow(const gsl_matrix *m, size_t i,
                                     size_t c0) {
  return m->data + i * m->tda + c0;
}

#endif /* NN_PLUGINS_OPTIM_SLOTS_H */
