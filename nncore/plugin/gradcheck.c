/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Central-difference gradient check of a model plugin (see <nn/train.h>).
 *
 * Not a hot path: it allocates its own buffers and runs two forward passes
 * per parameter entry.  It exercises exactly the pipeline the trainer uses
 * (forward, nn_softmax_xent, backward), so a model that passes it trains
 * with correct gradients. */
#include <config.h>

#include <math.h>
#include <stdlib.h>

#include <gsl/gsl_errno.h>

#include <nn/math.h>
#include <nn/train.h>

/* Loss of the model on (X, labels) at the current parameter values; with
 * dscores (which may be scores) also its gradient, for a backward pass. */
static int gradcheck_loss(const nn_model_ops *ops, void *model,
                          const gsl_matrix *X, const uint32_t *labels,
                          gsl_matrix *scores, gsl_matrix *dscores,
                          double *loss, nn_error *err) {
  /* Evaluation mode: a stochastic model (dropout) is deterministic then. */
  const nn_context ctx = {(uint32_t)sizeof(nn_context), 0, 0, 0, NULL};
  int rc = ops->forward(model, &ctx, X, scores, err);
  if (rc != NN_OK)
    return rc;
  size_t hits;
  if (nn_softmax_xent(scores, labels, dscores, loss, &hits) != NN_OK)
    return nn_error_set(err, NN_EINVAL,
                        "gradcheck: bad labels for a %zu-class model",
                        scores->size2);
  return NN_OK;
}

int nn_gradcheck(const nn_model_ops *ops, void *model, const gsl_matrix *X,
                 const uint32_t *labels, size_t n_out, double step,
                 double *max_rel_err,
                 const char **worst_param, nn_error *err) {
  if (!ops || !ops->forward || !ops->backward || !ops->params || !model ||
      !X || !labels || !max_rel_err)
    return nn_error_set(err, NN_EINVAL, "gradcheck: NULL argument");
  if (n_out == 0 || X->size1 == 0)
    return nn_error_set(err, NN_EINVAL, "gradcheck: empty batch or no classes");
  if (!(step > 0.0) || !isfinite(step))
    return nn_error_set(err, NN_EINVAL,
                        "gradcheck: step must be a positive finite number, "
                        "got %g",
                        step);
  size_t n = 0;
  nn_param *params = ops->params(model, &n);
  if (!params || n == 0)
    return nn_error_set(err, NN_EINVAL, "gradcheck: model has no parameters");
  for (size_t k = 0; k < n; k++)
    if (!params[k].value || !params[k].grad ||
        params[k].value->size1 != params[k].grad->size1 ||
        params[k].value->size2 != params[k].grad->size2)
      return nn_error_set(err, NN_EINVAL,
                          "gradcheck: parameter %zu (%s) has a missing or "
                          "mis-shaped value/grad",
                          k, params[k].name ? params[k].name : "?");


  /* Owned here, released at `out` on every path.  One buffer serves as
   * scores and dscores: nn_softmax_xent allows the alias and backward may
   * use dscores as scratch. */
  gsl_matrix *scores = NULL;
  gsl_matrix **analytic = calloc(n, sizeof *analytic);
  int rc = NN_OK;
  if (!analytic) {
    rc = nn_error_set(err, NN_ENOMEM, "gradcheck: out of memory");
    goto out;
  }
  scores = nn_matrix_calloc_aligned(X->size1, n_out);
  if (!scores) {
    rc = nn_error_set(err, NN_ENOMEM,
                      "gradcheck: cannot allocate a %zux%zu score matrix",
                      X->size1, n_out);
    goto out;
  }

  /* Analytic gradients, copied so that nothing the model does during the
   * numeric passes can change what they are compared against. */
  double loss;
  rc = gradcheck_loss(ops, model, X, labels, scores, scores, &loss, err);
  if (rc != NN_OK)
    goto out;
  rc = ops->backward(model, X, scores, err);
  if (rc != NN_OK)
    goto out;
  for (size_t k = 0; k < n; k++) {
    const gsl_matrix *g = params[k].grad;
    analytic[k] = nn_matrix_calloc_aligned(g->size1, g->size2);
    if (!analytic[k] || gsl_matrix_memcpy(analytic[k], g) != GSL_SUCCESS) {
      rc = nn_error_set(err, NN_ENOMEM,
                        "gradcheck: cannot copy the gradient of %s",
                        params[k].name ? params[k].name : "?");
      goto out;
    }
  }

  double worst = 0.0;
  const char *worst_name = params[0].name;
  for (size_t k = 0; k < n; k++) {
    gsl_matrix *v = params[k].value;
    for (size_t i = 0; i < v->size1; i++) {
      for (size_t j = 0; j < v->size2; j++) {
        double *w = gsl_matrix_ptr(v, i, j);
        const double orig = *w;
        double lp, lm;
        *w = orig + step;
        rc = gradcheck_loss(ops, model, X, labels, scores, NULL, &lp, err);
        if (rc == NN_OK) {
          *w = orig - step;
          rc = gradcheck_loss(ops, model, X, labels, scores, NULL, &lm, err);
        }
        /* Restore before any exit so the model is left as it was found. */
        *w = orig;
        if (rc != NN_OK)
          goto out;
        const double num = (lp - lm) / (2.0 * step);
        const double ana = gsl_matrix_get(analytic[k], i, j);
        const double den = fmax(fabs(ana) + fabs(num), 1e-12);
        const double rel = fabs(ana - num) / den;
        if (!isfinite(rel)) {
          rc = nn_error_set(err, NN_ENUMERIC,
                            "gradcheck: non-finite gradient at %s[%zu,%zu] "
                            "(analytic %g, numeric %g)",
                            params[k].name ? params[k].name : "?", i, j, ana,
                            num);
          goto out;
        }
        if (rel > worst) {
          worst = rel;
          worst_name = params[k].name;
        }
      }
    }
  }
  *max_rel_err = worst;
  if (worst_param)
    *worst_param = worst_name;

out:
  if (analytic)
    for (size_t k = 0; k < n; k++)
      gsl_matrix_free(analytic[k]);
  free(analytic);
  gsl_matrix_free(scores);
  return rc;
}
