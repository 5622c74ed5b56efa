/* SPDX-License-Identifier: GPL-3.0-or-later */
/* A layer or a model instance under check (a "subject"), behind one
 * interface, so that every check of a layer is also one of a model: the
 * two differ only in create's arguments, a layer's dX and a model's
 * fixed number of outputs (its classes). */
#include <config.h>

#include <nn/registry.h>

#include "plugin/contract_internal.h"

const nn_context nn__cc_eval = {(uint32_t)sizeof(nn_context), 0, 0, 0, NULL};

int nn__cc_subject_create(nn__cc_checker *c, nn__cc_subject *s,
                          nn_error *err) {
  const nn_shape in = c->p->layer
                         ? (nn_shape){CC_LAYER_C, CC_LAYER_H, CC_LAYER_W}
                         : (nn_shape){1, 1, CC_N_IN};
  *s = (nn__cc_subject){c->p->layer, c->p->model, NULL, nn_shape_size(in), 0,
                        {0, 0, 0}};
  gsl_rng_set(c->wrng, CC_SEED_WEIGHTS);
  nn__cc_err_clear(err);
  int rc;
  if (s->layer) {
    rc = s->layer->create(c->opts, in, CC_MAX_BATCH, c->wrng, &s->out_shape,
                          &s->self, err);
    s->n_out = nn_shape_size(s->out_shape);
  } else {
    rc = s->model->create(c->opts, in, CC_N_OUT, CC_MAX_BATCH, c->wrng,
                          &s->self, err);
    s->n_out = CC_N_OUT;
  }
  if (rc != NN_OK) {
    s->self = NULL; /* not ours to destroy */
    return rc;
  }
  if (s->n_out == 0) {
    (s->layer ? s->layer->destroy : s->model->destroy)(s->self);
    s->self = NULL;
    return nn_error_set(err, NN_EPLUGIN,
                        "create gave an empty output shape %ux%ux%u",
                        (unsigned)s->out_shape.c, (unsigned)s->out_shape.h,
                        (unsigned)s->out_shape.w);
  }
  return NN_OK;
}

int nn__cc_subject_open(nn__cc_checker *c, nn__cc_subject *s,
                        const char *what, char *d, size_t size) {
  nn_error e;
  if (nn__cc_subject_create(c, s, &e) != NN_OK)
    return nn__cc_verdict(d, size, 0, "%s failed: %s", what,
                          nn__cc_msg_of(&e));
  return 1;
}

void nn__cc_subject_destroy(nn__cc_subject *s) {
  if (s->layer)
    s->layer->destroy(s->self);
  else if (s->model)
    s->model->destroy(s->self);
  s->self = NULL;
}

nn_param *nn__cc_subject_params(nn__cc_subject *s, size_t *n) {
  return nn__cc_param_list(s->layer ? s->layer->params : s->model->params,
                           s->self, n);
}

nn_param *nn__cc_subject_state(nn__cc_subject *s, size_t *n) {
  return nn__cc_param_list(s->layer ? s->layer->state : s->model->state,
                           s->self, n);
}

uint32_t nn__cc_subject_flags(const nn__cc_subject *s) {
  return s->layer ? s->layer->flags : s->model->flags;
}

/* The plugin gets copies of the headers of the matrices it may write:
 * their elements are the caller's, their sizes, stride and data pointer
 * are not the plugin's to change.  A plugin that changes one anyway
 * (making "its" output as many rows as it likes) fails the call, and the
 * checks go on with intact matrices. */
static int header_kept(const gsl_matrix *copy, const gsl_matrix *orig,
                       const char *call, const char *what, nn_error *err) {
  if (nn__cc_mat_id_same(nn__cc_mat_id_of(orig), copy))
    return NN_OK;
  return nn_error_set(err, NN_EPLUGIN,
                      "%s changed %s from %zux%zu (tda %zu) to %zux%zu "
                      "(tda %zu)",
                      call, what, orig->size1, orig->size2, orig->tda,
                      copy->size1, copy->size2, copy->tda);
}

int nn__cc_subject_forward(nn__cc_subject *s, const nn_context *ctx,
                           const gsl_matrix *X, gsl_matrix *Y,
                           nn_error *err) {
  nn__cc_err_clear(err);
  gsl_matrix y = *Y;
  int rc = s->layer ? s->layer->forward(s->self, ctx, X, &y, err)
                    : s->model->forward(s->self, ctx, X, &y, err);
  if (rc == NN_OK)
    rc = header_kept(&y, Y, "forward", "Y", err);
  return rc;
}

int nn__cc_subject_backward(nn__cc_subject *s, const gsl_matrix *X,
                            const gsl_matrix *Y, gsl_matrix *dY,
                            gsl_matrix *dX, nn_error *err) {
  nn__cc_err_clear(err);
  gsl_matrix dy = *dY, dx = dX ? *dX : *dY;
  int rc = s->layer ? s->layer->backward(s->self, X, Y, &dy, dX ? &dx : NULL,
                                         err)
                    : s->model->backward(s->self, X, &dy, err);
  if (rc == NN_OK)
    rc = header_kept(&dy, dY, "backward", "dY", err);
  if (rc == NN_OK && dX)
    rc = header_kept(&dx, dX, "backward", "dX", err);
  return rc;
}

int nn__cc_usable_params(nn__cc_checker *c, nn__cc_subject *s,
                         nn_param **out, size_t *n, char *d, size_t size) {
  nn_param *p = nn__cc_subject_params(s, n);
  nn_error e;
  nn__cc_err_clear(&e);
  if (*n && nn_check_param_names(c->p->name, p, *n, NULL, 0, &e) != NN_OK)
    return nn__cc_verdict(d, size, 0, "parameters unusable: %s", e.msg);
  *out = p;
  return 1;
}
