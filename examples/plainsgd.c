/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Example out-of-tree optimizer plugin (shown in the README): plain SGD with
 * the course's L2 rule.  `make installcheck` builds it against the installed
 * headers and library and loads it with the installed nnrun. */
#include <stdlib.h>
#include <gsl/gsl_matrix.h>
#include <nn/math.h>
#include <nn/plugin.h>

/* Options, in table order: the core validates the [optimizer] section
 * against this table and hands create() one nn_value per entry. */
static const nn_option plainsgd_options[] = {
    {"learning_rate", NN_OPT_REAL, "0.1", "step size",
     NN_OPT_HAS_MIN | NN_OPT_MIN_EXCLUSIVE, 0, 0},
    {"reg", NN_OPT_REAL, "0", "L2 strength (weights only)", NN_OPT_HAS_MIN, 0, 0},
    {NULL, 0, NULL, NULL, 0, 0, 0}};

typedef struct { double lr, reg; } plainsgd;

static int plainsgd_create(const nn_value *opts, const nn_param *params,
                           size_t n, void **out, nn_error *err) {
  (void)params, (void)n;
  plainsgd *s = malloc(sizeof *s);
  if (!s) return nn_error_set(err, NN_ENOMEM, "plainsgd: out of memory");
  s->lr = opts[0].r;
  s->reg = opts[1].r;
  *out = s;
  return NN_OK;
}

static void plainsgd_destroy(void *self) { free(self); }

static int plainsgd_step(void *self, nn_param *params, size_t n, nn_error *err) {
  plainsgd *s = self;
  if (nn_apply_l2(params, n, s->reg))
    return nn_error_set(err, NN_EINVAL, "plainsgd: bad parameter shapes");
  for (size_t k = 0; k < n; k++) {
    gsl_matrix_scale(params[k].grad, s->lr);
    gsl_matrix_sub(params[k].value, params[k].grad);
  }
  return NN_OK;
}

/* Plain SGD keeps nothing between steps; saying so (no buffers) is what
 * lets a run with it be resumed. */
static nn_param *plainsgd_state(void *self, size_t *n) {
  (void)self;
  *n = 0;
  return NULL;
}

/* Designated initializers: the optional extension op stays NULL. */
static const nn_optim_ops plainsgd_ops = {.size = sizeof(nn_optim_ops),
                                          .create = plainsgd_create,
                                          .destroy = plainsgd_destroy,
                                          .step = plainsgd_step,
                                          .state = plainsgd_state};
NN_OPTIMIZER_PLUGIN("plainsgd", "1.0", "SGD in 30 lines", plainsgd_options,
                    &plainsgd_ops);
