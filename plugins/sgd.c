/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `sgd` optimizer plugin: stochastic gradient descent with the course's L2
 * rule and optional momentum.
 *
 *   g' = g + reg * W                  (weights only: nn_apply_l2's rule)
 *   momentum == 0:  W -= lr * g'      (the course's vanilla SGD)
 *   momentum  > 0:  v = momentum * v + g';  W -= lr * v   (PyTorch's form)
 *   nesterov:       v = momentum * v + g';  W -= lr * (g' + momentum * v)
 *
 * momentum is accepted in [0, 1): at 1 the velocity never decays.
 * nesterov is torch.optim.SGD's (dampening 0) and needs momentum > 0. */
#include <config.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nn/math.h>
#include <nn/plugin.h>
#include <nn/plugin_ext.h>

/* Per-parameter state: the shape the optimizer was created for (checked on
 * every step) and, with momentum, the velocity buffer. */
typedef struct sgd_slot {
  size_t rows, cols;
  gsl_matrix *v; /* owned; NULL when momentum == 0 */
} sgd_slot;

typedef struct sgd_state {
  double lr, reg, momentum;
  int nesterov;
  size_t n;
  sgd_slot *slots;  /* owned, n entries */
  nn_param *state;  /* owned array; matrices are the slots' v (with momentum) */
  size_t n_state;
  char (*state_names)[72]; /* owned: "momentum.<param name>" */
} sgd_state;

static const nn_option sgd_options[] = {
    {"learning_rate", NN_OPT_REAL, "0.1", "step size", NN_OPT_HAS_MIN |
     NN_OPT_MIN_EXCLUSIVE, 0.0, 0.0},
    {"reg", NN_OPT_REAL, "0.001", "L2 strength on weights (not biases)",
     NN_OPT_HAS_MIN, 0.0, 0.0},
    {"momentum", NN_OPT_REAL, "0",
     "momentum factor in [0, 1); 0 = plain SGD",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX | NN_OPT_MAX_EXCLUSIVE, 0.0, 1.0},
    {"nesterov", NN_OPT_BOOL, "false",
     "Nesterov momentum (PyTorch's form; needs momentum > 0)", 0, 0.0, 0.0},
    {NULL, 0, NULL, NULL, 0, 0.0, 0.0},
};

static void sgd_destroy(void *self) {
  sgd_state *s = self;
  if (!s)
    return;
  if (s->slots)
    for (size_t k = 0; k < s->n; k++)
      gsl_matrix_free(s->slots[k].v);
  free(s->slots);
  free(s->state);
  free(s->state_names);
  free(s);
}

static int sgd_create(const nn_value *opts, const nn_param *params, size_t n,
                      void **out, nn_error *err) {
  if (!out)
    return nn_error_set(err, NN_EINVAL, "sgd: NULL output pointer");
  *out = NULL;
  /* opts == NULL means "all defaults" (convenient for tests and tools). */
  const double lr = opts ? opts[0].r : 0.1;
  const double reg = opts ? opts[1].r : 0.001;
  const double mom = opts ? opts[2].r : 0.0;
  const int nesterov = opts ? opts[3].b != 0 : 0;
  /* The core checks the table's bounds; these repeat them (plus
   * finiteness) because a plugin must not trust its caller. */
  if (!(lr > 0.0) || !isfinite(lr))
    return nn_error_set(err, NN_EINVAL,
                        "sgd: learning_rate must be > 0 and finite, got %g",
                        lr);
  if (!(reg >= 0.0) || !isfinite(reg))
    return nn_error_set(err, NN_EINVAL,
                        "sgd: reg must be >= 0 and finite, got %g", reg);
  if (!(mom >= 0.0 && mom < 1.0))
    return nn_error_set(err, NN_EINVAL,
                        "sgd: momentum must be in [0, 1), got %g", mom);
  /* Without a velocity Nesterov's look-ahead is plain SGD: a config
   * asking for it has a mistake (NN_ECONFIG: each option is valid alone,
   * so the core's checks of the table cannot catch it). */
  if (nesterov && !(mom > 0.0))
    return nn_error_set(err, NN_ECONFIG,
                        "sgd: nesterov needs momentum > 0, got momentum %g",
                        mom);
  if (n == 0 || !params)
    return nn_error_set(err, NN_EINVAL, "sgd: no parameters to optimize");
  for (size_t k = 0; k < n; k++)
    if (!params[k].value || !params[k].grad ||
        params[k].value->size1 != params[k].grad->size1 ||
        params[k].value->size2 != params[k].grad->size2)
      return nn_error_set(err, NN_EINVAL,
                          "sgd: parameter %zu (%s) has a missing or "
                          "mis-shaped value/grad",
                          k, params[k].name ? params[k].name : "?");

  sgd_state *s = calloc(1, sizeof *s);
  if (!s)
    return nn_error_set(err, NN_ENOMEM, "sgd: out of memory");
  s->lr = lr;
  s->reg = reg;
  s->momentum = mom;
  s->nesterov = nesterov;
  s->n = n;
  s->slots = calloc(n, sizeof *s->slots);
  if (!s->slots) {
    sgd_destroy(s);
    return nn_error_set(err, NN_ENOMEM, "sgd: out of memory");
  }
  for (size_t k = 0; k < n; k++) {
    sgd_slot *sl = &s->slots[k];
    sl->rows = params[k].value->size1;
    sl->cols = params[k].value->size2;
    if (mom != 0.0) {
      /* Velocity starts at zero, so the first step equals plain SGD.  Its
       * rows as far apart as the parameter's: a model that pads them (so
       * that blocks of columns stay spread over the L1 sets) gets the
       * same layout for the velocity it updates alongside. */
      sl->v = nn_matrix_calloc_strided(sl->rows, sl->cols,
                                       params[k].value->tda);
      if (!sl->v) {
        sgd_destroy(s);
        return nn_error_set(err, NN_ENOMEM,
                            "sgd: cannot allocate the %zux%zu velocity of %s",
                            params[k].value->size1, params[k].value->size2,
                            params[k].name ? params[k].name : "?");
      }
    }
  }
  /* With momentum the velocities are the state a resumed run needs. */
  if (mom != 0.0) {
    s->state = calloc(n, sizeof *s->state);
    s->state_names = calloc(n, sizeof *s->state_names);
    if (!s->state || !s->state_names) {
      sgd_destroy(s);
      return nn_error_set(err, NN_ENOMEM, "sgd: out of memory");
    }
    for (size_t k = 0; k < n; k++) {
      snprintf(s->state_names[k], sizeof s->state_names[k], "momentum.%s",
               params[k].name ? params[k].name : "?");
      s->state[k].name = s->state_names[k];
      s->state[k].value = s->slots[k].v;
    }
    s->n_state = n;
  }
  *out = s;
  return NN_OK;
}

static nn_param *sgd_state_of(void *self, size_t *n) {
  sgd_state *s = self;
  *n = s->n_state;
  return s->state;
}

/* Parameter k is the matrix the optimizer was created for, with a grad of
 * its shape. */
static int sgd_check_param(const sgd_state *s, const nn_param *params,
                           size_t k, nn_error *err) {
  const gsl_matrix *w = params[k].value, *g = params[k].grad;
  if (!w || !g || w->size1 != s->slots[k].rows ||
      w->size2 != s->slots[k].cols || g->size1 != w->size1 ||
      g->size2 != w->size2)
    return nn_error_set(err, NN_EINVAL,
                        "sgd: parameter %zu (%s) is not the %zux%zu matrix "
                        "the optimizer was created for",
                        k, params[k].name ? params[k].name : "?",
                        s->slots[k].rows, s->slots[k].cols);
  return NN_OK;
}

static int sgd_check_call(const sgd_state *s, const nn_param *params,
                          size_t n, nn_error *err) {
  if (!s || !params)
    return nn_error_set(err, NN_EINVAL, "sgd: NULL argument");
  if (n != s->n)
    return nn_error_set(err, NN_EINVAL,
                        "sgd: step on %zu parameters, created for %zu", n,
                        s->n);
  return NN_OK;
}

/* The L2 strength for parameter p: the course's L2 touches weights only
 * (nn_apply_l2's rule), never biases. */
static double sgd_reg(const sgd_state *s, const nn_param *p) {
  return (p->flags & NN_PARAM_WEIGHT) ? s->reg : 0.0;
}

/* Nesterov's step on w, with its gradient g and velocity v (views of one
 * shape), in torch.optim.SGD's order: g' = g + reg * w (reg == 0:
 * g, no 0 * w term, as nn_sgd_update), v = momentum * v + g',
 * d = g' + momentum * v, w = w - lr * d; each operation a separate
 * statement so that no compiler fuses two into one rounding. */
static void sgd_nesterov_block(gsl_matrix *w, const gsl_matrix *g,
                               gsl_matrix *v, double lr, double reg,
                               double mom) {
  for (size_t i = 0; i < w->size1; i++) {
    double *wr = w->data + i * w->tda, *vr = v->data + i * v->tda;
    const double *gr = g->data + i * g->tda;
    for (size_t j = 0; j < w->size2; j++) {
      double gj = gr[j];
      if (reg != 0.0) {
        const double l2 = reg * wr[j];
        gj = gj + l2;
      }
      double vj = mom * vr[j];
      vj = vj + gj;
      vr[j] = vj;
      double d = mom * vj;
      d = gj + d;
      d = lr * d;
      wr[j] = wr[j] - d;
    }
  }
}

/* Elements [r0, r1) x [c0, c1) of parameter k (checked by the caller),
 * with gblock as their gradient, or the same elements of the grad when
 * gblock is NULL.
 *
 * L2 (nn_apply_l2's rule, g + reg * w on weights only) is folded into the
 * update: the same operations in the same order, so the same bits, but
 * one pass over each parameter instead of two.  For W1 of the two-layer
 * network (2 x 800 KB with its gradient, more than a core's L2 cache) the
 * separate pass cost as much as the update itself. */
static int sgd_update_block(sgd_state *s, nn_param *params, size_t k,
                            size_t r0, size_t r1, size_t c0, size_t c1,
                            const gsl_matrix *gblock, nn_error *err) {
  gsl_matrix *w = params[k].value, *v = s->slots[k].v;
  gsl_matrix_view wv = gsl_matrix_submatrix(w, r0, c0, r1 - r0, c1 - c0);
  /* The block's gradient: handed over (the parts' block) or the grad's
   * rows. */
  gsl_matrix_const_view gv =
      gblock ? gsl_matrix_const_submatrix(gblock, 0, 0, r1 - r0, c1 - c0)
             : gsl_matrix_const_submatrix(params[k].grad, r0, c0, r1 - r0,
                                          c1 - c0);
  gsl_matrix_view vv;
  if (v)
    vv = gsl_matrix_submatrix(v, r0, c0, r1 - r0, c1 - c0);
  if (s->nesterov) { /* create made sure v exists */
    sgd_nesterov_block(&wv.matrix, &gv.matrix, &vv.matrix, s->lr,
                       sgd_reg(s, &params[k]), s->momentum);
    return NN_OK;
  }
  if (nn_sgd_update(&wv.matrix, &gv.matrix, v ? &vv.matrix : NULL, s->lr,
                    sgd_reg(s, &params[k]), s->momentum) != NN_OK)
    return nn_error_set(err, NN_EINVAL, "sgd: parameter shapes changed");
  return NN_OK;
}

static int sgd_step(void *self, nn_param *params, size_t n, nn_error *err) {
  sgd_state *s = self;
  int rc = sgd_check_call(s, params, n, err);
  /* Check every shape before touching anything, so an error leaves the
   * model and the velocities unchanged. */
  for (size_t k = 0; rc == NN_OK && k < n; k++)
    rc = sgd_check_param(s, params, k, err);
  for (size_t k = 0; rc == NN_OK && k < n; k++)
    rc = sgd_update_block(s, params, k, 0, params[k].value->size1, 0,
                          params[k].value->size2, NULL, err);
  return rc;
}

/* The call and parameter k, for a step in parts. */
static int sgd_check_one(const sgd_state *s, const nn_param *params,
                         size_t n, size_t k, nn_error *err) {
  int rc = sgd_check_call(s, params, n, err);
  if (rc == NN_OK && k >= n)
    rc = nn_error_set(err, NN_EINVAL, "sgd: parameter %zu of %zu", k, n);
  if (rc == NN_OK)
    rc = sgd_check_param(s, params, k, err);
  return rc;
}

/* A step in parts: the same update on a block of one parameter's rows. */
static int sgd_step_rows(void *self, nn_param *params, size_t n, size_t k,
                         size_t r0, size_t r1, nn_error *err) {
  sgd_state *s = self;
  int rc = sgd_check_one(s, params, n, k, err);
  if (rc == NN_OK && !(r0 < r1 && r1 <= params[k].value->size1))
    rc = nn_error_set(err, NN_EINVAL,
                      "sgd: rows [%zu, %zu) of %s, which has %zu rows", r0,
                      r1, params[k].name ? params[k].name : "?",
                      params[k].value->size1);
  if (rc == NN_OK)
    rc = sgd_update_block(s, params, k, r0, r1, 0, params[k].value->size2,
                          NULL, err);
  return rc;
}

/* The same update on a block of rows and columns, with the block's
 * gradient handed over (the update is elementwise, so any block gives the
 * bits of the whole step). */
static int sgd_step_block(void *self, nn_param *params, size_t n, size_t k,
                          size_t r0, size_t r1, size_t c0, size_t c1,
                          const gsl_matrix *g, nn_error *err) {
  sgd_state *s = self;
  int rc = sgd_check_one(s, params, n, k, err);
  if (rc == NN_OK && !(r0 < r1 && r1 <= params[k].value->size1 && c0 < c1 &&
                       c1 <= params[k].value->size2))
    rc = nn_error_set(err, NN_EINVAL,
                      "sgd: block [%zu, %zu) x [%zu, %zu) of %s, which is "
                      "%zux%zu",
                      r0, r1, c0, c1, params[k].name ? params[k].name : "?",
                      params[k].value->size1, params[k].value->size2);
  if (rc == NN_OK && (!g || g->size1 != r1 - r0 || g->size2 != c1 - c0))
    rc = nn_error_set(err, NN_EINVAL,
                      "sgd: the gradient of a %zux%zu block of %s is %s",
                      r1 - r0, c1 - c0, params[k].name ? params[k].name : "?",
                      g ? "another shape" : "missing");
  if (rc == NN_OK)
    rc = sgd_update_block(s, params, k, r0, r1, c0, c1, g, err);
  return rc;
}

/* Without momentum (so without nesterov, which needs it), the step is
 * nn_sgd_update's plain rule with no state, which a model may then apply
 * itself (nn_csr_matmul_sgd). */
static int sgd_rule(void *self, const nn_param *params, size_t n, size_t k,
                    double *lr, double *reg) {
  const sgd_state *s = self;
  if (!s || !params || n != s->n || k >= n || s->momentum != 0.0 ||
      s->nesterov || !lr || !reg)
    return 0;
  *lr = s->lr;
  *reg = sgd_reg(s, &params[k]);
  return 1;
}

/* No begin or end: sgd keeps no step counter, so a step in parts is
 * just its rows and blocks. */
static const nn_optim_parts sgd_parts_ext = {
    .size = sizeof(nn_optim_parts),
    .begin = NULL,
    .rows = sgd_step_rows,
    .block = sgd_step_block,
    .end = NULL,
};

static const nn_optim_sgd_rule sgd_rule_ext = {
    .size = sizeof(nn_optim_sgd_rule),
    .rule = sgd_rule,
};

static double sgd_get_lr(void *self) { return ((const sgd_state *)self)->lr; }

/* A schedule's rate for the next steps (the velocity is kept, as
 * torch.optim.SGD keeps its momentum buffer when a scheduler changes lr). */
static int sgd_set_lr(void *self, double lr, nn_error *err) {
  sgd_state *s = self;
  if (!s)
    return nn_error_set(err, NN_EINVAL, "sgd: NULL optimizer");
  if (!(lr >= 0.0) || !isfinite(lr))
    return nn_error_set(err, NN_EINVAL,
                        "sgd: learning rate must be >= 0 and finite, got %g",
                        lr);
  s->lr = lr;
  return NN_OK;
}

static const nn_optim_lr sgd_lr_ext = {
    .size = sizeof(nn_optim_lr),
    .get = sgd_get_lr,
    .set = sgd_set_lr,
};

static const void *sgd_extension(void *self, const char *id) {
  (void)self;
  if (!id)
    return NULL;
  if (strcmp(id, NN_EXT_OPTIM_LR) == 0)
    return &sgd_lr_ext;
  if (strcmp(id, NN_EXT_OPTIM_PARTS) == 0)
    return &sgd_parts_ext;
  if (strcmp(id, NN_EXT_OPTIM_SGD_RULE) == 0)
    return &sgd_rule_ext;
  return NULL;
}

static const nn_optim_ops sgd_ops = {
    .size = sizeof(nn_optim_ops),
    .create = sgd_create,
    .destroy = sgd_destroy,
    .step = sgd_step,
    .state = sgd_state_of,
    .extension = sgd_extension,
};

NN_OPTIMIZER_PLUGIN("sgd", "0.1.0",
                    "stochastic gradient descent with L2 and optional momentum",
                    sgd_options, &sgd_ops);
