/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The checks of a layer or model instance other than gradient and shapes
 * (which have files of their own): create, names, determinism, state and
 * errors. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>

#include <nn/nn.h>
#include <nn/registry.h>

#include "plugin/contract_internal.h"

/* ------------------------------------------------------------ create, names */

int nn__cc_check_create_subject(nn__cc_checker *c, char *d, size_t size) {
  nn_error e;
  char kind[64];
  nn__cc_subject s;
  int rc = nn__cc_subject_create(c, &s, &e);
  if (c->p->layer)
    snprintf(kind, sizeof kind, "input %dx%dx%d, batches up to %d",
             CC_LAYER_C, CC_LAYER_H, CC_LAYER_W, CC_MAX_BATCH);
  else
    snprintf(kind, sizeof kind, "%d inputs, %d classes, batches up to %d",
             CC_N_IN, CC_N_OUT, CC_MAX_BATCH);
  if (rc != NN_OK)
    return nn__cc_verdict(d, size, 0, "create (%s) failed: %s; options: %s",
                          kind, nn__cc_msg_of(&e), c->opts_text);
  nn__cc_subject_destroy(&s);
  return nn__cc_verdict(d, size, 1, "%s; options: %s", kind, c->opts_text);
}

int nn__cc_check_names_subject(nn__cc_checker *c, char *d, size_t size) {
  nn_error e;
  char list[256] = "";
  int passed;
  nn__cc_subject s;
  if (!nn__cc_subject_open(c, &s, "create", d, size))
    return 0;
  size_t n, ns;
  nn_param *p = nn__cc_subject_params(&s, &n);
  nn_param *st = nn__cc_subject_state(&s, &ns);
  nn__cc_err_clear(&e);
  if (nn_check_param_names(c->p->name, p, n, st, ns, &e) != NN_OK) {
    passed = nn__cc_verdict(d, size, 0, "%s", e.msg);
  } else {
    nn__cc_names_list(p, n, list, sizeof list);
    nn__cc_names_list(st, ns, list, sizeof list);
    passed = nn__cc_verdict(d, size, 1,
                            "%zu parameter%s, %zu state buffer%s%s%s", n,
                            nn__cc_plural(n), ns, nn__cc_plural(ns),
                            n + ns ? ": " : "", list);
  }
  nn__cc_subject_destroy(&s);
  return passed;
}

/* ------------------------------------------------------------ determinism */

/* One forward and backward of s on (X, dY) with the stream reseeded:
 * outputs into Y, gradients (parameters, then dX) copied into out[]. */
static int det_run(nn__cc_checker *c, nn__cc_pool *pl, nn__cc_subject *s,
                   const gsl_matrix *X, const gsl_matrix *dY0, gsl_matrix *Y,
                   gsl_matrix **out, nn_error *err) {
  const int stochastic = (nn__cc_subject_flags(s) & NN_STOCHASTIC) != 0;
  gsl_rng_set(c->srng, CC_SEED_STREAM);
  const nn_context ctx = {(uint32_t)sizeof(nn_context), stochastic ? 1u : 0u,
                          0, 0, stochastic ? c->srng : NULL};
  /* backward may use dY as scratch */
  gsl_matrix *dY = nn__cc_pool_copy(pl, dY0);
  gsl_matrix *dX = s->layer ? nn__cc_pool_mat(pl, X->size1, X->size2) : NULL;
  if (pl->oom)
    return NN_ENOMEM;
  int rc = nn__cc_subject_forward(s, &ctx, X, Y, err);
  if (rc == NN_OK)
    rc = nn__cc_subject_backward(s, X, Y, dY, dX, err);
  if (rc != NN_OK)
    return rc;
  size_t n;
  nn_param *p = nn__cc_subject_params(s, &n);
  for (size_t k = 0; k < n; k++)
    out[k] = nn__cc_pool_copy(pl, p[k].grad);
  out[n] = dX;
  return pl->oom ? NN_ENOMEM : NN_OK;
}

/* "" when runs a and b gave the same bits, else what differs. */
static const char *det_diff(const gsl_matrix *Ya, const gsl_matrix *Yb,
                            gsl_matrix *const *ga, gsl_matrix *const *gb,
                            const nn_param *p, size_t n) {
  if (!nn__cc_same_bits(Ya, Yb))
    return "the outputs";
  for (size_t k = 0; k < n; k++)
    if (!nn__cc_same_bits(ga[k], gb[k]))
      return p[k].name;
  if (ga[n] && !nn__cc_same_bits(ga[n], gb[n]))
    return "dX";
  return "";
}

/* A stand-in for the core's threads (nn_parallel): the tasks one after
 * another, the last first, on slots that change from task to task, so
 * that a plugin whose bits depend on the order of its tasks or on the
 * slot shows it, without a thread. */
#define CC_PAR_SLOTS 3u
static void cc_par_run(void *ctx, size_t n,
                       void (*task)(void *arg, size_t i, uint32_t slot),
                       void *arg) {
  (void)ctx;
  for (size_t i = n; i-- > 0;) task(arg, i, (uint32_t)(i % CC_PAR_SLOTS));
}
static const nn_parallel cc_par = {(uint32_t)sizeof(nn_parallel),
                                   CC_PAR_SLOTS, NULL, cc_par_run};

/* s's threads extension, or NULL. */
static const nn_parallel_attach *det_attach_ext(const nn__cc_subject *s) {
  const void *(*ext)(void *, const char *) =
      s->layer ? s->layer->extension : s->model->extension;
  if (!ext) return NULL;
  const nn_parallel_attach *a =
      ext(s->self, s->layer ? NN_EXT_LAYER_PARALLEL : NN_EXT_MODEL_PARALLEL);
  return a && a->size >= NN_EXT_SIZE_TO(nn_parallel_attach, attach) &&
                 a->attach
             ? a
             : NULL;
}

/* With threads lent (cc_par), one more run of s on (X, dY) into Y and g;
 * the threads are taken back after it. */
static int det_run_threads(nn__cc_checker *c, nn__cc_pool *pl,
                           nn__cc_subject *s, const nn_parallel_attach *a,
                           const gsl_matrix *X, const gsl_matrix *dY,
                           gsl_matrix *Y, gsl_matrix **g, nn_error *err) {
  int rc = a->attach(s->self, &cc_par, err);
  if (rc == NN_OK) rc = det_run(c, pl, s, X, dY, Y, g, err);
  const int rc_back = a->attach(s->self, NULL, NULL);
  return rc != NN_OK ? rc : rc_back;
}

int nn__cc_check_determinism_subject(nn__cc_checker *c, char *d,
                                     size_t size) {
  nn__cc_pool pl = {0};
  nn__cc_subject a, b = {0};
  nn_error e;
  char et[600];
  int passed = 0;
  gsl_matrix **g1 = NULL, **g2 = NULL, **g3 = NULL, **g4 = NULL;
  if (!nn__cc_subject_open(c, &a, "create", d, size))
    return 0;
  nn_param *p = NULL;
  size_t n = 0;
  if (!nn__cc_usable_params(c, &a, &p, &n, d, size))
    goto out;
  if (!nn__cc_subject_open(c, &b, "a second create", d, size))
    goto out;
  size_t nb;
  nn__cc_subject_params(&b, &nb);
  if (nb != n) {
    passed = nn__cc_verdict(d, size, 0,
                            "two instances with the same options have %zu "
                            "and %zu parameters",
                            n, nb);
    goto out;
  }
  g1 = calloc(n + 1, sizeof *g1);
  g2 = calloc(n + 1, sizeof *g2);
  g3 = calloc(n + 1, sizeof *g3);
  g4 = calloc(n + 1, sizeof *g4);
  gsl_rng_set(c->drng, CC_SEED_DATA);
  const size_t B = CC_MAX_BATCH;
  gsl_matrix *X = nn__cc_pool_random(&pl, B, a.n_in, c->drng);
  gsl_matrix *dY = nn__cc_pool_random(&pl, B, a.n_out, c->drng);
  gsl_matrix *Y1 = nn__cc_pool_mat(&pl, B, a.n_out);
  gsl_matrix *Y2 = nn__cc_pool_mat(&pl, B, a.n_out);
  gsl_matrix *Y3 = nn__cc_pool_mat(&pl, B, a.n_out);
  gsl_matrix *Y4 = nn__cc_pool_mat(&pl, B, a.n_out);
  if (!g1 || !g2 || !g3 || !g4 || pl.oom) {
    passed = nn__cc_oom_verdict(c, d, size);
    goto out;
  }
  int rc = det_run(c, &pl, &a, X, dY, Y1, g1, &e);
  if (rc == NN_OK)
    rc = det_run(c, &pl, &a, X, dY, Y2, g2, &e);
  if (rc == NN_OK)
    rc = det_run(c, &pl, &b, X, dY, Y3, g3, &e);
  const nn_parallel_attach *threads = det_attach_ext(&a);
  if (rc == NN_OK && threads)
    rc = det_run_threads(c, &pl, &a, threads, X, dY, Y4, g4, &e);
  if (rc == NN_ENOMEM && pl.oom) {
    passed = nn__cc_oom_verdict(c, d, size);
    goto out;
  }
  if (rc != NN_OK) {
    passed = nn__cc_verdict(d, size, 0, "forward/backward failed: %s",
                            nn__cc_err_text(rc, &e, et, sizeof et));
    goto out;
  }
  const int stochastic = (nn__cc_subject_flags(&a) & NN_STOCHASTIC) != 0;
  const char *what = det_diff(Y1, Y2, g1, g2, p, n);
  if (*what) {
    passed = nn__cc_verdict(d, size, 0,
                            "two runs of one instance on the same input%s "
                            "differ in %s",
                            stochastic ? " and random stream" : "", what);
    goto out;
  }
  if (*(what = det_diff(Y1, Y3, g1, g3, p, n))) {
    passed = nn__cc_verdict(d, size, 0,
                            "two instances created from the same seed differ "
                            "in %s on the same input%s",
                            what, stochastic ? " and random stream" : "");
    goto out;
  }
  if (threads && *(what = det_diff(Y1, Y4, g1, g4, p, n))) {
    passed = nn__cc_verdict(d, size, 0,
                            "with threads lent (%u slots, its tasks run in "
                            "another order) it differs from one thread in %s",
                            CC_PAR_SLOTS, what);
    goto out;
  }
  passed = nn__cc_verdict(d, size, 1,
                          "outputs and gradients bit-identical across runs "
                          "and instances%s (%s)",
                          threads ? " and with threads lent" : "",
                          stochastic ? "training, the same random stream"
                                     : "evaluation");
out:
  free(g4);
  free(g1);
  free(g2);
  free(g3);
  nn__cc_subject_destroy(&b);
  nn__cc_subject_destroy(&a);
  nn__cc_pool_free(&pl);
  return passed;
}

/* ------------------------------------------------------------ state */

int nn__cc_check_state_subject(nn__cc_checker *c, char *d, size_t size) {
  nn__cc_pool pl = {0};
  nn__cc_subject s;
  nn_error e;
  char et[600];
  int passed = 0;
  if (!(c->p->layer ? c->p->layer->state : c->p->model->state))
    return nn__cc_verdict(d, size, 1, "no state op");
  if (!nn__cc_subject_open(c, &s, "create", d, size))
    return 0;
  size_t n, np;
  nn_param *st = nn__cc_subject_state(&s, &n);
  nn_param *p = nn__cc_subject_params(&s, &np);
  if (n == 0) {
    passed = nn__cc_verdict(d, size, 1, "the state op gives no buffers");
    goto out;
  }
  for (size_t k = 0; k < n; k++)
    if (st[k].grad) {
      passed = nn__cc_verdict(d, size, 0,
                              "state buffer %s has a grad (must be NULL)",
                              st[k].name ? st[k].name : "?");
      goto out;
    }
  nn__cc_err_clear(&e);
  if (nn_check_param_names(c->p->name, p, np, st, n, &e) != NN_OK) {
    passed = nn__cc_verdict(d, size, 0, "%s", e.msg);
    goto out;
  }
  /* Stable like params(): the core saves and restores through it. */
  gsl_rng_set(c->drng, CC_SEED_DATA);
  gsl_matrix *X = nn__cc_pool_random(&pl, 2, s.n_in, c->drng);
  gsl_matrix *Y = nn__cc_pool_mat(&pl, 2, s.n_out);
  gsl_matrix *dY = nn__cc_pool_random(&pl, 2, s.n_out, c->drng);
  if (pl.oom) {
    passed = nn__cc_oom_verdict(c, d, size);
    goto out;
  }
  int rc = nn__cc_subject_forward(&s, &nn__cc_eval, X, Y, &e);
  if (rc == NN_OK)
    rc = nn__cc_subject_backward(&s, X, Y, dY, NULL, &e);
  if (rc != NN_OK) {
    passed = nn__cc_verdict(d, size, 0, "forward/backward failed: %s",
                            nn__cc_err_text(rc, &e, et, sizeof et));
    goto out;
  }
  size_t n2;
  nn_param *st2 = nn__cc_subject_state(&s, &n2);
  if (st2 != st || n2 != n) {
    passed = nn__cc_verdict(d, size, 0,
                            "state() gave another array after forward and "
                            "backward");
    goto out;
  }
  passed = nn__cc_verdict(d, size, 1,
                          "%zu state buffer%s, named, grad NULL, stable", n,
                          nn__cc_plural(n));
out:
  nn__cc_subject_destroy(&s);
  nn__cc_pool_free(&pl);
  return passed;
}

/* ------------------------------------------------------------ errors */

int nn__cc_check_errors_subject(nn__cc_checker *c, char *d, size_t size) {
  nn__cc_pool pl = {0};
  nn__cc_subject s;
  nn_error e;
  char et[600], call[96];
  int passed = 0;
  if (!nn__cc_subject_open(c, &s, "create", d, size))
    return 0;
  gsl_rng_set(c->drng, CC_SEED_DATA);
  const size_t B = 2;
  gsl_matrix *Xw = nn__cc_pool_random(&pl, B, s.n_in + 1, c->drng);
  gsl_matrix *X = nn__cc_pool_random(&pl, B, s.n_in, c->drng);
  gsl_matrix *Y = nn__cc_pool_mat(&pl, B, s.n_out);
  gsl_matrix *dYw = nn__cc_pool_random(&pl, B, s.n_out + 1, c->drng);
  gsl_matrix *dX = s.layer ? nn__cc_pool_mat(&pl, B, s.n_in) : NULL;
  if (pl.oom) {
    passed = nn__cc_oom_verdict(c, d, size);
    goto out;
  }
  /* Wider than expected, so a plugin that does not check reads in bounds. */
  snprintf(call, sizeof call, "forward on a %zux%zu batch (width %zu)", B,
           s.n_in + 1, s.n_in);
  int rc = nn__cc_subject_forward(&s, &nn__cc_eval, Xw, Y, &e);
  if (!nn__cc_refused(rc, &e, call, d, size))
    goto out;
  char m1[600];
  nn__cc_err_text(rc, &e, m1, sizeof m1);
  rc = nn__cc_subject_forward(&s, &nn__cc_eval, X, Y, &e);
  if (rc != NN_OK) {
    passed = nn__cc_verdict(d, size, 0,
                            "forward on a good batch after a refused one "
                            "failed: %s",
                            nn__cc_err_text(rc, &e, et, sizeof et));
    goto out;
  }
  snprintf(call, sizeof call, "backward with a %zux%zu %s", B, s.n_out + 1,
           s.layer ? "dY" : "dscores");
  rc = nn__cc_subject_backward(&s, X, Y, dYw, dX, &e);
  if (!nn__cc_refused(rc, &e, call, d, size))
    goto out;
  passed = nn__cc_verdict(d, size, 1,
                          "wrong widths refused with a message: %s", m1);
out:
  nn__cc_subject_destroy(&s);
  nn__cc_pool_free(&pl);
  return passed;
}
