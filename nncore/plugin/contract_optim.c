/* SPDX-License-Identifier: GPL-3.0-or-later */
/* An optimizer under check, and its checks: create, names, determinism,
 * state and errors (an optimizer has no forward: no gradient or shapes).
 * It is stepped on two small parameters whose values and gradients come
 * from the data stream. */
#include <config.h>

#include <stdlib.h>

#include <nn/nn.h>
#include <nn/registry.h>

#include "plugin/contract_internal.h"

/* ------------------------------------------------------------ instance */

int nn__cc_optim_params(nn__cc_checker *c, nn__cc_pool *pl, nn_param *p) {
  /* One statement each: the draws are in this order (an initializer
   * list's expressions would be unsequenced). */
  gsl_matrix *w = nn__cc_pool_random(pl, 3, 4, c->drng);
  gsl_matrix *w_grad = nn__cc_pool_random(pl, 3, 4, c->drng);
  gsl_matrix *b = nn__cc_pool_random(pl, 1, 4, c->drng);
  gsl_matrix *b_grad = nn__cc_pool_random(pl, 1, 4, c->drng);
  p[0] = (nn_param){"W", w, w_grad, NN_PARAM_WEIGHT};
  p[1] = (nn_param){"b", b, b_grad, NN_PARAM_BIAS};
  return !pl->oom;
}

int nn__cc_optim_create(nn__cc_checker *c, nn_param *p, size_t n, void **out,
                        nn_error *err) {
  *out = NULL;
  nn__cc_err_clear(err);
  int rc = c->p->optim->create(c->opts, p, n, out, err);
  if (rc != NN_OK)
    *out = NULL; /* not ours to destroy */
  return rc;
}

nn_param *nn__cc_optim_state(nn__cc_checker *c, void *o, size_t *n) {
  return nn__cc_param_list(c->p->optim->state, o, n);
}

int nn__cc_optim_step(nn__cc_checker *c, void *o, nn_param *p, size_t n,
                      nn_error *err) {
  nn__cc_err_clear(err);
  return c->p->optim->step(o, p, n, err);
}

int nn__cc_optim_pair_open(nn__cc_checker *c, nn__cc_pool *pl,
                           unsigned long seed, nn__cc_optim_pair *pr,
                           char *d, size_t size) {
  nn_error e;
  pr->oa = pr->ob = NULL;
  gsl_rng_set(c->drng, seed);
  if (!nn__cc_optim_params(c, pl, pr->a) ||
      !nn__cc_optim_params(c, pl, pr->b))
    return nn__cc_oom_verdict(c, d, size);
  for (size_t k = 0; k < CC_OPT_N; k++)
    nn__cc_mat_copy(pr->b[k].value, pr->a[k].value);
  if (nn__cc_optim_create(c, pr->a, CC_OPT_N, &pr->oa, &e) ||
      nn__cc_optim_create(c, pr->b, CC_OPT_N, &pr->ob, &e))
    return nn__cc_verdict(d, size, 0, "create failed: %s", nn__cc_msg_of(&e));
  return 1;
}

void nn__cc_optim_pair_new_grads(nn__cc_checker *c, nn__cc_optim_pair *pr) {
  for (size_t k = 0; k < CC_OPT_N; k++) {
    nn__cc_mat_uniform(pr->a[k].grad, c->drng);
    nn__cc_mat_copy(pr->b[k].grad, pr->a[k].grad);
  }
}

/* ------------------------------------------------------------ create, names */

int nn__cc_check_create_optim(nn__cc_checker *c, char *d, size_t size) {
  nn_error e;
  nn__cc_pool pl = {0};
  nn_param p[CC_OPT_N];
  void *o = NULL;
  const char *kind = "on a 3x4 weight and a 1x4 bias";
  gsl_rng_set(c->drng, CC_SEED_DATA);
  if (!nn__cc_optim_params(c, &pl, p)) {
    nn__cc_pool_free(&pl);
    return nn__cc_oom_verdict(c, d, size);
  }
  int rc = nn__cc_optim_create(c, p, CC_OPT_N, &o, &e);
  if (rc == NN_OK)
    c->p->optim->destroy(o);
  nn__cc_pool_free(&pl);
  if (rc != NN_OK)
    return nn__cc_verdict(d, size, 0, "create %s failed: %s; options: %s",
                          kind, nn__cc_msg_of(&e), c->opts_text);
  return nn__cc_verdict(d, size, 1, "%s; options: %s", kind, c->opts_text);
}

int nn__cc_check_names_optim(nn__cc_checker *c, char *d, size_t size) {
  nn_error e;
  char list[256] = "";
  int passed;
  nn__cc_pool pl = {0};
  nn_param p[CC_OPT_N];
  void *o = NULL;
  gsl_rng_set(c->drng, CC_SEED_DATA);
  if (!nn__cc_optim_params(c, &pl, p)) {
    nn__cc_pool_free(&pl);
    return nn__cc_oom_verdict(c, d, size);
  }
  if (nn__cc_optim_create(c, p, CC_OPT_N, &o, &e) != NN_OK) {
    nn__cc_pool_free(&pl);
    return nn__cc_verdict(d, size, 0, "create failed: %s", nn__cc_msg_of(&e));
  }
  size_t ns;
  nn_param *st = nn__cc_optim_state(c, o, &ns);
  nn__cc_err_clear(&e);
  if (nn_check_param_names(c->p->name, NULL, 0, st, ns, &e) != NN_OK) {
    passed = nn__cc_verdict(d, size, 0, "%s", e.msg);
  } else {
    nn__cc_names_list(st, ns, list, sizeof list);
    passed = nn__cc_verdict(d, size, 1, "%zu state buffer%s%s%s", ns,
                            nn__cc_plural(ns), ns ? ": " : "", list);
  }
  c->p->optim->destroy(o);
  nn__cc_pool_free(&pl);
  return passed;
}

/* ------------------------------------------------------------ determinism */

/* Two optimizers on equal parameters and gradients, two steps each. */
int nn__cc_check_determinism_optim(nn__cc_checker *c, char *d, size_t size) {
  nn__cc_pool pl = {0};
  nn__cc_optim_pair pr;
  nn_error e;
  char et[600];
  int passed = 0;
  if (!nn__cc_optim_pair_open(c, &pl, CC_SEED_DATA, &pr, d, size))
    goto out;
  for (int step = 0; step < 2; step++) {
    nn__cc_optim_pair_new_grads(c, &pr);
    int rc = nn__cc_optim_step(c, pr.oa, pr.a, CC_OPT_N, &e);
    if (rc == NN_OK)
      rc = nn__cc_optim_step(c, pr.ob, pr.b, CC_OPT_N, &e);
    if (rc != NN_OK) {
      passed = nn__cc_verdict(d, size, 0, "step failed: %s",
                              nn__cc_err_text(rc, &e, et, sizeof et));
      goto out;
    }
    for (size_t k = 0; k < CC_OPT_N; k++)
      if (!nn__cc_same_bits(pr.a[k].value, pr.b[k].value)) {
        passed = nn__cc_verdict(d, size, 0,
                                "two optimizers on the same values and "
                                "gradients differ in %s after step %d",
                                pr.a[k].name, step + 1);
        goto out;
      }
  }
  passed = nn__cc_verdict(d, size, 1,
                          "two optimizers on the same values and gradients "
                          "give the same bits over two steps");
out:
  c->p->optim->destroy(pr.ob);
  c->p->optim->destroy(pr.oa);
  nn__cc_pool_free(&pl);
  return passed;
}

/* ------------------------------------------------------------ state */

/* Copies of the optimizer's state matrices and the parameter values. */
typedef struct opt_snap {
  size_t n_state;
  gsl_matrix **state; /* n_state */
  gsl_matrix *value[CC_OPT_N];
} opt_snap;

static int snap_take(nn__cc_checker *c, nn__cc_pool *pl, void *o,
                     const nn_param *p, opt_snap *sn) {
  nn_param *st = nn__cc_optim_state(c, o, &sn->n_state);
  sn->state = calloc(sn->n_state ? sn->n_state : 1, sizeof *sn->state);
  if (!sn->state)
    return 0;
  for (size_t k = 0; k < sn->n_state; k++)
    if (!st[k].value || !(sn->state[k] = nn__cc_pool_copy(pl, st[k].value)))
      return 0;
  for (size_t k = 0; k < CC_OPT_N; k++)
    if (!(sn->value[k] = nn__cc_pool_copy(pl, p[k].value)))
      return 0;
  return 1;
}

/* "" when a and b hold the same bits, else the first matrix that does
 * not (state names from st). */
static const char *snap_diff(const opt_snap *a, const opt_snap *b,
                             const nn_param *p, const nn_param *st) {
  if (a->n_state != b->n_state)
    return "the number of state buffers";
  for (size_t k = 0; k < CC_OPT_N; k++)
    if (!nn__cc_same_bits(a->value[k], b->value[k]))
      return p[k].name;
  for (size_t k = 0; k < a->n_state; k++)
    if (!nn__cc_same_bits(a->state[k], b->state[k]))
      return st[k].name ? st[k].name : "a state buffer";
  return "";
}

static void set_grads(nn_param *p, gsl_matrix *const *g) {
  for (size_t k = 0; k < CC_OPT_N; k++)
    nn__cc_mat_copy(p[k].grad, g[k]);
}

/* step; save state and values; step -> R1; restore; step -> R2 == R1.
 * A state the optimizer keeps but does not expose (a step counter, a
 * moment) makes R2 differ: resuming from a checkpoint would too.  Then
 * every way of stepping in parts the optimizer offers. */
int nn__cc_check_state_optim(nn__cc_checker *c, char *d, size_t size) {
  nn__cc_pool pl = {0};
  nn_param p[CC_OPT_N];
  gsl_matrix *g1[CC_OPT_N], *g2[CC_OPT_N];
  opt_snap saved = {0}, r1 = {0}, r2 = {0};
  void *o = NULL;
  nn_error e;
  char et[600];
  int passed = 0;
  gsl_rng_set(c->drng, CC_SEED_DATA);
  if (!nn__cc_optim_params(c, &pl, p)) {
    passed = nn__cc_oom_verdict(c, d, size);
    goto out;
  }
  for (size_t k = 0; k < CC_OPT_N; k++) {
    const size_t rows = p[k].grad->size1, cols = p[k].grad->size2;
    g1[k] = nn__cc_pool_random(&pl, rows, cols, c->drng);
    g2[k] = nn__cc_pool_random(&pl, rows, cols, c->drng);
    if (!g1[k] || !g2[k]) {
      passed = nn__cc_oom_verdict(c, d, size);
      goto out;
    }
  }
  if (nn__cc_optim_create(c, p, CC_OPT_N, &o, &e) != NN_OK) {
    passed = nn__cc_verdict(d, size, 0, "create failed: %s",
                            nn__cc_msg_of(&e));
    goto out;
  }
  size_t ns;
  nn_param *st = nn__cc_optim_state(c, o, &ns);
  for (size_t k = 0; k < ns; k++)
    if (!st[k].value || st[k].grad) {
      passed = nn__cc_verdict(d, size, 0, "state buffer %s has %s",
                              st[k].name ? st[k].name : "?",
                              st[k].value ? "a grad (must be NULL)"
                                          : "no value");
      goto out;
    }
  set_grads(p, g1);
  int rc = nn__cc_optim_step(c, o, p, CC_OPT_N, &e);
  if (rc == NN_OK && !snap_take(c, &pl, o, p, &saved))
    rc = NN_ENOMEM;
  if (rc == NN_OK) {
    set_grads(p, g2);
    rc = nn__cc_optim_step(c, o, p, CC_OPT_N, &e);
  }
  if (rc == NN_OK && !snap_take(c, &pl, o, p, &r1))
    rc = NN_ENOMEM;
  if (rc == NN_OK) {
    /* Restore what a checkpoint holds, through the state op again. */
    size_t n2;
    nn_param *st2 = nn__cc_optim_state(c, o, &n2);
    if (n2 != saved.n_state) {
      passed = nn__cc_verdict(d, size, 0, "state() gave %zu buffers, then %zu",
                              saved.n_state, n2);
      goto out;
    }
    for (size_t k = 0; k < n2; k++) {
      if (!st2[k].value || !nn__cc_same_shape(st2[k].value, saved.state[k])) {
        passed = nn__cc_verdict(d, size, 0, "state buffer %s changed shape",
                                st2[k].name ? st2[k].name : "?");
        goto out;
      }
      nn__cc_mat_copy(st2[k].value, saved.state[k]);
    }
    for (size_t k = 0; k < CC_OPT_N; k++)
      nn__cc_mat_copy(p[k].value, saved.value[k]);
    set_grads(p, g2);
    rc = nn__cc_optim_step(c, o, p, CC_OPT_N, &e);
  }
  if (rc == NN_OK && !snap_take(c, &pl, o, p, &r2))
    rc = NN_ENOMEM;
  if (rc == NN_ENOMEM && pl.oom) {
    passed = nn__cc_oom_verdict(c, d, size);
    goto out;
  }
  if (rc != NN_OK) {
    passed = nn__cc_verdict(d, size, 0, "step failed: %s",
                            nn__cc_err_text(rc, &e, et, sizeof et));
    goto out;
  }
  st = nn__cc_optim_state(c, o, &ns);
  const char *what = snap_diff(&r1, &r2, p, st);
  if (*what) {
    passed = nn__cc_verdict(d, size, 0,
                            "a step after restoring the saved state and "
                            "values differs in %s: the optimizer keeps state "
                            "that state() does not expose",
                            what);
    goto out;
  }
  char parts[160] = "";
  if (!nn__cc_check_parts(c, o, parts, sizeof parts, d, size))
    goto out;
  passed = nn__cc_verdict(d, size, 1,
                          "%zu state buffer%s; a restored step repeats bit "
                          "for bit%s%s%s",
                          ns, nn__cc_plural(ns),
                          parts[0] ? "; steps in parts (" : "", parts,
                          parts[0] ? ") give step()'s bits" : "");
out:
  if (o)
    c->p->optim->destroy(o);
  free(saved.state);
  free(r1.state);
  free(r2.state);
  nn__cc_pool_free(&pl);
  return passed;
}

/* ------------------------------------------------------------ errors */

int nn__cc_check_errors_optim(nn__cc_checker *c, char *d, size_t size) {
  nn__cc_pool pl = {0};
  nn_param p[CC_OPT_N];
  void *o = NULL;
  nn_error e;
  int passed = 0;
  gsl_rng_set(c->drng, CC_SEED_DATA);
  if (!nn__cc_optim_params(c, &pl, p)) {
    passed = nn__cc_oom_verdict(c, d, size);
    goto out;
  }
  /* No parameters: refusing is optional, but then with a message. */
  int rc = nn__cc_optim_create(c, p, 0, &o, &e);
  const int empty_refused = rc != NN_OK;
  if (rc != NN_OK && !e.msg[0]) {
    passed = nn__cc_verdict(d, size, 0,
                            "create with no parameters returned %s without "
                            "a message",
                            nn_err_name(rc));
    goto out;
  }
  if (o)
    c->p->optim->destroy(o);
  o = NULL;
  if (nn__cc_optim_create(c, p, CC_OPT_N, &o, &e) != NN_OK) {
    passed = nn__cc_verdict(d, size, 0, "create failed: %s",
                            nn__cc_msg_of(&e));
    goto out;
  }
  /* A grad of another shape than its value: a 2x3 view inside a 4x5
   * matrix, so that a plugin that does not check stays in bounds. */
  gsl_matrix *big = nn__cc_pool_mat(&pl, 4, 5);
  if (!big) {
    passed = nn__cc_oom_verdict(c, d, size);
    goto out;
  }
  gsl_matrix_view gv = gsl_matrix_submatrix(big, 0, 0, 2, 3);
  nn_param bad[CC_OPT_N] = {p[0], p[1]};
  bad[0].grad = &gv.matrix;
  rc = nn__cc_optim_step(c, o, bad, CC_OPT_N, &e);
  if (!nn__cc_refused(rc, &e, "step with a 2x3 gradient for the 3x4 W", d,
                      size))
    goto out;
  char m[600];
  nn__cc_err_text(rc, &e, m, sizeof m);
  /* Fewer parameters than created for: optional, with a message. */
  rc = nn__cc_optim_step(c, o, p, 1, &e);
  if (rc != NN_OK && !e.msg[0]) {
    passed = nn__cc_verdict(d, size, 0,
                            "step on 1 of the 2 parameters returned %s "
                            "without a message",
                            nn_err_name(rc));
    goto out;
  }
  passed = nn__cc_verdict(d, size, 1,
                          "mismatched gradient refused with a message (%s); "
                          "no parameters %s",
                          m, empty_refused ? "refused with a message"
                                           : "accepted");
out:
  if (o)
    c->p->optim->destroy(o);
  nn__cc_pool_free(&pl);
  return passed;
}
