/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Part of an optimizer's state check: a step in parts (the step-parts
 * extension, driven by rows or by blocks of columns, or the plain SGD
 * rule where the optimizer hands it over) gives the bits of step().  The
 * trainer steps in parts to overlap the update with backward, so a
 * difference here is a run that depends on the thread count. */
#include <config.h>

#include <stddef.h>

#include <nn/math.h>
#include <nn/plugin_ext.h>

#include "plugin/contract_internal.h"

/* How a step in parts is driven. */
enum { PARTS_ROWS, PARTS_BLOCK, PARTS_RULE };
static const char *const parts_mode_name[] = {"rows", "block", "sgd-rule"};

/* The extension's member, read only when its size covers it. */
#define CC_EXT_HAS(ext, type, member)                                        \
  ((ext)->size >= offsetof(type, member) + sizeof((ext)->member) &&         \
   (ext)->member)

/* Whether the extensions pt and rule (either may be NULL) offer mode. */
static int parts_offered(const nn_optim_parts *pt,
                         const nn_optim_sgd_rule *rule, int mode) {
  if (!pt || !CC_EXT_HAS(pt, nn_optim_parts, rows))
    return 0;
  if (mode == PARTS_BLOCK)
    return CC_EXT_HAS(pt, nn_optim_parts, block) != 0;
  if (mode == PARTS_RULE)
    return rule && CC_EXT_HAS(rule, nn_optim_sgd_rule, rule);
  return 1;
}

/* One step of o on p in parts: begin, every row of every parameter (one
 * row at a time, or each row as two blocks of columns, or through the
 * plain SGD rule where the optimizer hands it over), end. */
static int parts_step(nn__cc_pool *pl, void *o, nn_param *p, int mode,
                      const nn_optim_parts *pt, const nn_optim_sgd_rule *rule,
                      nn_error *err) {
  int rc = NN_OK;
  nn__cc_err_clear(err);
  if (CC_EXT_HAS(pt, nn_optim_parts, begin))
    rc = pt->begin(o, p, CC_OPT_N, err);
  for (size_t k = 0; rc == NN_OK && k < CC_OPT_N; k++) {
    gsl_matrix *w = p[k].value;
    double lr, reg;
    if (mode == PARTS_RULE && rule->rule(o, p, CC_OPT_N, k, &lr, &reg)) {
      if (nn_sgd_update(w, p[k].grad, NULL, lr, reg, 0.0) != NN_OK)
        rc = nn_error_set(err, NN_EINVAL, "nn_sgd_update refused %s",
                          p[k].name);
      continue;
    }
    for (size_t r = 0; rc == NN_OK && r < w->size1; r++) {
      if (mode != PARTS_BLOCK) {
        rc = pt->rows(o, p, CC_OPT_N, k, r, r + 1, err);
        continue;
      }
      /* Two blocks per row, each with its gradient handed over. */
      const size_t half = w->size2 / 2 ? w->size2 / 2 : w->size2;
      for (size_t c0 = 0; rc == NN_OK && c0 < w->size2; c0 += half) {
        const size_t c1 = c0 + half < w->size2 ? c0 + half : w->size2;
        gsl_matrix *g = nn__cc_pool_mat(pl, 1, c1 - c0);
        if (!g)
          return NN_ENOMEM;
        for (size_t j = c0; j < c1; j++)
          *nn__cc_at(g, 0, j - c0) = *nn__cc_at(p[k].grad, r, j);
        rc = pt->block(o, p, CC_OPT_N, k, r, r + 1, c0, c1, g, err);
      }
    }
  }
  if (rc == NN_OK && CC_EXT_HAS(pt, nn_optim_parts, end))
    rc = pt->end(o, p, CC_OPT_N, err);
  return rc;
}

/* A step in parts gives the bits of step(): two optimizers on equal
 * parameters, one stepped each way, twice.  Returns 1, or 0 with why. */
static int check_parts_mode(nn__cc_checker *c, int mode, char *d,
                            size_t size) {
  nn__cc_pool pl = {0};
  nn__cc_optim_pair pr;
  nn_error e;
  char et[600];
  int ok = 0;
  if (!nn__cc_optim_pair_open(c, &pl, CC_SEED_DATA + 1, &pr, d, size))
    goto out;
  const nn_optim_ops *ops = c->p->optim;
  const nn_optim_parts *pt = ops->extension(pr.ob, NN_EXT_OPTIM_PARTS);
  const nn_optim_sgd_rule *rule =
      mode == PARTS_RULE ? ops->extension(pr.ob, NN_EXT_OPTIM_SGD_RULE)
                         : NULL;
  if (!parts_offered(pt, rule, mode)) {
    ok = nn__cc_verdict(d, size, 0,
                        "the extension offered by one instance is missing "
                        "from another");
    goto out;
  }
  for (int step = 1; step <= 2; step++) {
    nn__cc_optim_pair_new_grads(c, &pr);
    int rc = nn__cc_optim_step(c, pr.oa, pr.a, CC_OPT_N, &e);
    if (rc != NN_OK) {
      ok = nn__cc_verdict(d, size, 0, "step failed: %s",
                          nn__cc_err_text(rc, &e, et, sizeof et));
      goto out;
    }
    rc = parts_step(&pl, pr.ob, pr.b, mode, pt, rule, &e);
    if (rc == NN_ENOMEM && pl.oom) {
      ok = nn__cc_oom_verdict(c, d, size);
      goto out;
    }
    if (rc != NN_OK) {
      ok = nn__cc_verdict(d, size, 0, "step in parts (%s) failed: %s",
                          parts_mode_name[mode],
                          nn__cc_err_text(rc, &e, et, sizeof et));
      goto out;
    }
    size_t na, nb;
    nn_param *sa = nn__cc_optim_state(c, pr.oa, &na);
    nn_param *sb = nn__cc_optim_state(c, pr.ob, &nb);
    const char *what = na != nb ? "the number of state buffers" : "";
    for (size_t k = 0; !*what && k < CC_OPT_N; k++)
      if (!nn__cc_same_bits(pr.a[k].value, pr.b[k].value))
        what = pr.a[k].name;
    for (size_t k = 0; !*what && k < na; k++)
      if (sa[k].value && sb[k].value &&
          !nn__cc_same_bits(sa[k].value, sb[k].value))
        what = sa[k].name ? sa[k].name : "a state buffer";
    if (*what) {
      ok = nn__cc_verdict(d, size, 0,
                          "a step in parts (%s) differs from step() in %s "
                          "after step %d",
                          parts_mode_name[mode], what, step);
      goto out;
    }
  }
  ok = 1;
out:
  if (pr.oa)
    c->p->optim->destroy(pr.oa);
  if (pr.ob)
    c->p->optim->destroy(pr.ob);
  nn__cc_pool_free(&pl);
  return ok;
}

/* Which ways of stepping in parts the optimizer offers (bit per mode). */
static unsigned parts_modes(nn__cc_checker *c, void *o) {
  const nn_optim_ops *ops = c->p->optim;
  if (!ops->extension)
    return 0;
  const nn_optim_parts *pt = ops->extension(o, NN_EXT_OPTIM_PARTS);
  if (!parts_offered(pt, NULL, PARTS_ROWS))
    return 0;
  const nn_optim_sgd_rule *rule = ops->extension(o, NN_EXT_OPTIM_SGD_RULE);
  unsigned modes = 0;
  for (int m = PARTS_ROWS; m <= PARTS_RULE; m++)
    if (parts_offered(pt, rule, m))
      modes |= 1u << m;
  return modes;
}

int nn__cc_check_parts(nn__cc_checker *c, void *o, char *modes,
                       size_t modes_size, char *d, size_t size) {
  const unsigned offered = parts_modes(c, o);
  for (int m = PARTS_ROWS; m <= PARTS_RULE; m++) {
    if (!(offered & (1u << m)))
      continue;
    if (!check_parts_mode(c, m, d, size))
      return 0;
    nn__cc_append(modes, modes_size, "%s%s", modes[0] ? ", " : "",
                  parts_mode_name[m]);
  }
  return 1;
}
