/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests of the optimizer plugins adam, adamw, rmsprop and sgd (with
 * Nesterov momentum) against PyTorch: tests/data/optim_ref.txt holds the
 * final parameters of torch.optim's optimizers after 50 steps on fixed
 * gradients (bench/torch_optim_ref.py made it; PyTorch is not needed
 * here).  Also: a checkpoint's state resumes bit for bit, a step in parts
 * (and inside twolayer's fused backward) gives the bits of step(), biases
 * are never decayed, and the error paths. */
#include <config.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <gsl/gsl_rng.h>

#include <nn/math.h>
#include <nn/plugin.h>
#include <nn/plugin_ext.h>
#include <nn/registry.h>

#include "testutil.h"

/* The problem of bench/torch_optim_ref.py: a 3x4 weight W and a 1x4 bias
 * b, from formulas of the index (and the step, for the gradients). */
#define WR 3
#define WC 4
#define BC 4
#define NW (WR * WC)
#define MAX_CASES 16
#define MAX_OPTS 16
/* Columns of padding: the plugins must follow tda, not size2. */
#define PAD 3

static double w_init(size_t i) { return 0.5 * cos(1.3 * (double)i + 0.2); }
static double b_init(size_t j) { return 0.25 * sin(0.9 * (double)j + 0.4); }
/* Element i counts W's elements (row-major) and then b's. */
static double grad_at(long step, size_t i) {
  return sin(0.37 * (double)step + 0.11 * (double)i) * (1 + 0.1 * (double)i);
}

/* ------------------------------------------------------ the reference */

typedef struct ref_case {
  char name[64], plugin[64];
  char spec[512]; /* " key=value key=value ": nnrun options */
  double W[NW], b[BC];
} ref_case;

typedef struct ref_file {
  long steps;
  size_t n;
  ref_case c[MAX_CASES];
} ref_file;

/* Reads count values after the tag of line into out. */
static void parse_values(const char *line, double *out, size_t count) {
  const char *s = line + 1;
  for (size_t i = 0; i < count; i++) {
    char *end;
    out[i] = strtod(s, &end);
    ck_assert_msg(end != s, "optim_ref.txt: too few values in: %s", line);
    s = end;
  }
  while (*s == ' ' || *s == '\n')
    s++;
  ck_assert_msg(*s == '\0', "optim_ref.txt: too many values in: %s", line);
}

static void ref_load(ref_file *r) {
  FILE *f = fopen(test_data_path("optim_ref.txt"), "r");
  ck_assert_msg(f != NULL, "cannot open %s", test_data_path("optim_ref.txt"));
  memset(r, 0, sizeof *r);
  char line[4096];
  ref_case *c = NULL;
  while (fgets(line, sizeof line, f)) {
    int used = 0;
    if (line[0] == '#' || line[0] == '\n')
      continue;
    if (sscanf(line, "steps %ld", &r->steps) == 1)
      continue;
    if (strncmp(line, "case ", 5) == 0) {
      ck_assert_uint_lt(r->n, MAX_CASES);
      c = &r->c[r->n++];
      ck_assert_int_eq(sscanf(line, "case %63s %63s%n", c->name, c->plugin,
                              &used), 2);
      snprintf(c->spec, sizeof c->spec, "%s", line + used);
      /* One space on each side of every key=value, for spec_get. */
      for (char *p = c->spec; *p; p++)
        if (*p == '\n')
          *p = ' ';
    } else if (line[0] == 'W' && c) {
      parse_values(line, c->W, NW);
    } else if (line[0] == 'b' && c) {
      parse_values(line, c->b, BC);
    } else {
      ck_abort_msg("optim_ref.txt: unexpected line: %s", line);
    }
  }
  fclose(f);
  ck_assert_int_eq(r->steps, 50);
  ck_assert_uint_ge(r->n, 6);
}

/* The value of key in spec (" k=v k=v "), copied into buf; 0 if absent. */
static int spec_get(const char *spec, const char *key, char *buf,
                    size_t size) {
  char pat[80];
  snprintf(pat, sizeof pat, " %s=", key);
  const char *at = strstr(spec, pat);
  if (!at)
    return 0;
  at += strlen(pat);
  size_t len = strcspn(at, " ");
  ck_assert_uint_lt(len, size);
  memcpy(buf, at, len);
  buf[len] = '\0';
  return 1;
}

/* One nn_value per option of d, in table order, as the core hands them
 * to create: spec's value where it names the key, else the default. */
static void opts_for(const nn_plugin *d, const char *spec, nn_value *v) {
  size_t k = 0, named = 0;
  for (const nn_option *o = d->options; o && o->key; o++, k++) {
    ck_assert_uint_lt(k, MAX_OPTS);
    char buf[64];
    const char *text = o->def;
    if (spec_get(spec, o->key, buf, sizeof buf)) {
      text = buf;
      named++;
    }
    ck_assert_ptr_nonnull(text);
    char *end = NULL;
    switch (o->type) {
      case NN_OPT_REAL:
        v[k].r = strtod(text, &end);
        ck_assert_msg(end != text && *end == '\0', "%s=%s", o->key, text);
        break;
      case NN_OPT_INT:
        v[k].i = strtoll(text, &end, 10);
        ck_assert_msg(end != text && *end == '\0', "%s=%s", o->key, text);
        break;
      case NN_OPT_BOOL:
        ck_assert(!strcmp(text, "true") || !strcmp(text, "false"));
        v[k].b = strcmp(text, "true") == 0;
        break;
      default:
        ck_abort_msg("%s: option %s of an unexpected type", d->name, o->key);
    }
  }
  /* Every key the case names is one of the plugin's. */
  size_t given = 0;
  for (const char *p = spec; (p = strchr(p, '=')) != NULL; p++)
    given++;
  ck_assert_msg(named == given, "%s: unknown key in '%s'", d->name, spec);
}

/* ------------------------------------------------------ an optimizer */

/* A plugin instance on its own W and b: views of wider matrices (PAD
 * columns of padding), with their gradients.  Owns everything. */
typedef struct inst {
  nn_loaded *lib;
  const nn_plugin *d;
  const nn_optim_ops *ops;
  void *o;
  gsl_matrix *store[4]; /* W, dW, b, db, padded */
  gsl_matrix_view view[4];
  nn_param p[2];
} inst;

static void inst_new_spec(inst *s, const char *plugin, const char *spec) {
  nn_error err = {0, ""};
  memset(s, 0, sizeof *s);
  ck_assert_msg(nn_plugin_open(&s->lib, plugin, NN_KIND_OPTIMIZER,
                               test_plugin_path(), &err) == NN_OK,
                "%s", err.msg);
  s->d = nn_loaded_desc(s->lib);
  s->ops = s->d->optim;
  const size_t rows[4] = {WR, WR, 1, 1}, cols[4] = {WC, WC, BC, BC};
  for (size_t m = 0; m < 4; m++) {
    s->store[m] = gsl_matrix_calloc(rows[m], cols[m] + PAD);
    ck_assert_ptr_nonnull(s->store[m]);
    s->view[m] = gsl_matrix_submatrix(s->store[m], 0, 0, rows[m], cols[m]);
  }
  for (size_t i = 0; i < NW; i++)
    gsl_matrix_set(&s->view[0].matrix, i / WC, i % WC, w_init(i));
  for (size_t j = 0; j < BC; j++)
    gsl_matrix_set(&s->view[2].matrix, 0, j, b_init(j));
  s->p[0] = (nn_param){"W", &s->view[0].matrix, &s->view[1].matrix,
                       NN_PARAM_WEIGHT};
  s->p[1] = (nn_param){"b", &s->view[2].matrix, &s->view[3].matrix,
                       NN_PARAM_BIAS};
  nn_value v[MAX_OPTS];
  opts_for(s->d, spec, v);
  ck_assert_msg(s->ops->create(v, s->p, 2, &s->o, &err) == NN_OK, "%s: %s",
                plugin, err.msg);
}

static void inst_new(inst *s, const ref_case *c) {
  inst_new_spec(s, c->plugin, c->spec);
}

static void inst_free(inst *s) {
  if (s->ops)
    s->ops->destroy(s->o);
  for (size_t m = 0; m < 4; m++)
    gsl_matrix_free(s->store[m]);
  nn_plugin_close(s->lib);
  memset(s, 0, sizeof *s);
}

/* The gradients of step `step`, or zeros. */
static void set_grads(inst *s, long step, int zero) {
  for (size_t i = 0; i < NW; i++)
    gsl_matrix_set(s->p[0].grad, i / WC, i % WC, zero ? 0.0 : grad_at(step, i));
  for (size_t j = 0; j < BC; j++)
    gsl_matrix_set(s->p[1].grad, 0, j, zero ? 0.0 : grad_at(step, NW + j));
}

enum { BY_STEP, BY_ROWS, BY_BLOCKS };

static const nn_optim_parts *parts_of(const inst *s) {
  const nn_optim_parts *pt = s->ops->extension
                                 ? s->ops->extension(s->o, NN_EXT_OPTIM_PARTS)
                                 : NULL;
  ck_assert_msg(pt && pt->size >= NN_EXT_SIZE_TO(nn_optim_parts, end) &&
                    pt->rows && pt->block,
                "%s offers no step in parts with rows and block", s->d->name);
  return pt;
}

/* One step: step(), or in parts: begin, then every row once, last
 * parameter and last row first (the core's fused step may go in any
 * order), one row at a time or as two blocks of columns with their
 * gradient handed over, then end.  For blocks the parameter's own grad
 * is poisoned with NaN: block must not read it. */
static void step_once(inst *s, int how) {
  nn_error err = {0, ""};
  if (how == BY_STEP) {
    ck_assert_msg(s->ops->step(s->o, s->p, 2, &err) == NN_OK, "%s: %s",
                  s->d->name, err.msg);
    return;
  }
  const nn_optim_parts *pt = parts_of(s);
  if (pt->begin)
    ck_assert_msg(pt->begin(s->o, s->p, 2, &err) == NN_OK, "%s", err.msg);
  for (size_t k = 2; k-- > 0;) {
    gsl_matrix *g = s->p[k].grad;
    const size_t cols = g->size2, half = cols / 2;
    for (size_t r = g->size1; r-- > 0;) {
      if (how == BY_ROWS) {
        ck_assert_msg(pt->rows(s->o, s->p, 2, k, r, r + 1, &err) == NN_OK,
                      "%s", err.msg);
        continue;
      }
      gsl_matrix *part[2] = {gsl_matrix_alloc(1, half),
                             gsl_matrix_alloc(1, cols - half)};
      for (size_t j = 0; j < cols; j++) {
        gsl_matrix_set(part[j >= half], 0, j - (j >= half ? half : 0),
                       gsl_matrix_get(g, r, j));
        gsl_matrix_set(g, r, j, NAN);
      }
      ck_assert_msg(pt->block(s->o, s->p, 2, k, r, r + 1, half, cols,
                              part[1], &err) == NN_OK, "%s", err.msg);
      ck_assert_msg(pt->block(s->o, s->p, 2, k, r, r + 1, 0, half, part[0],
                              &err) == NN_OK, "%s", err.msg);
      gsl_matrix_free(part[0]);
      gsl_matrix_free(part[1]);
    }
  }
  if (pt->end)
    ck_assert_msg(pt->end(s->o, s->p, 2, &err) == NN_OK, "%s", err.msg);
}

/* Steps first .. last of the reference's gradients. */
static void run_steps(inst *s, long first, long last, int how) {
  for (long t = first; t <= last; t++) {
    set_grads(s, t, 0);
    step_once(s, how);
  }
}

static int same_bits(const gsl_matrix *a, const gsl_matrix *b) {
  if (a->size1 != b->size1 || a->size2 != b->size2)
    return 0;
  for (size_t i = 0; i < a->size1; i++)
    if (memcmp(a->data + i * a->tda, b->data + i * b->tda,
               a->size2 * sizeof(double)) != 0)
      return 0;
  return 1;
}

/* The parameters and every state buffer of a and b hold the same bits
 * (state matched by name). */
static void assert_same(const inst *a, const inst *b, const char *what) {
  for (size_t k = 0; k < 2; k++)
    ck_assert_msg(same_bits(a->p[k].value, b->p[k].value), "%s: %s: %s",
                  a->d->name, what, a->p[k].name);
  size_t na, nb;
  nn_param *sa = a->ops->state(a->o, &na), *sb = b->ops->state(b->o, &nb);
  ck_assert_uint_eq(na, nb);
  for (size_t k = 0; k < na; k++) {
    ck_assert_str_eq(sa[k].name, sb[k].name);
    ck_assert_msg(same_bits(sa[k].value, sb[k].value), "%s: %s: state %s",
                  a->d->name, what, sa[k].name);
  }
}

/* ------------------------------------------------------ against PyTorch */

/* |got - want| <= 1e-12 |want| for every value of W and b. */
static void assert_matches(const inst *s, const ref_case *c) {
  for (size_t i = 0; i < NW + BC; i++) {
    const double got = i < NW ? gsl_matrix_get(s->p[0].value, i / WC, i % WC)
                              : gsl_matrix_get(s->p[1].value, 0, i - NW);
    const double want = i < NW ? c->W[i] : c->b[i - NW];
    ck_assert_msg(fabs(got - want) <= 1e-12 * fabs(want),
                  "%s: %s[%zu] = %.17g, PyTorch %.17g (relative %.3g)",
                  c->name, i < NW ? "W" : "b", i < NW ? i : i - NW, got, want,
                  fabs(got - want) / fabs(want));
  }
}

START_TEST(test_matches_pytorch) {
  static ref_file r;
  ref_load(&r);
  /* Every plugin of this suite is among the cases. */
  static const char *const want[] = {"sgd", "adam", "adamw", "rmsprop"};
  for (size_t k = 0; k < 4; k++) {
    int found = 0;
    for (size_t i = 0; i < r.n; i++)
      found |= strcmp(r.c[i].plugin, want[k]) == 0;
    ck_assert_msg(found, "no reference case for %s", want[k]);
  }
  for (size_t i = 0; i < r.n; i++) {
    inst s;
    inst_new(&s, &r.c[i]);
    run_steps(&s, 1, r.steps, BY_STEP);
    assert_matches(&s, &r.c[i]);
    inst_free(&s);
  }
}
END_TEST

/* ------------------------------------------------------ parts, state */

START_TEST(test_parts_equal_step) {
  static ref_file r;
  ref_load(&r);
  for (size_t i = 0; i < r.n; i++) {
    inst whole, rows, blocks;
    inst_new(&whole, &r.c[i]);
    inst_new(&rows, &r.c[i]);
    inst_new(&blocks, &r.c[i]);
    for (long t = 1; t <= r.steps; t++) {
      set_grads(&whole, t, 0);
      set_grads(&rows, t, 0);
      set_grads(&blocks, t, 0);
      step_once(&whole, BY_STEP);
      step_once(&rows, BY_ROWS);
      step_once(&blocks, BY_BLOCKS);
      assert_same(&whole, &rows, "rows one at a time");
      assert_same(&whole, &blocks, "blocks");
    }
    inst_free(&whole);
    inst_free(&rows);
    inst_free(&blocks);
  }
}
END_TEST

/* A checkpoint after 20 steps (the state and the parameters, copied),
 * restored into a fresh instance, which then takes the last 30 steps:
 * the bits of 50 uninterrupted steps. */
START_TEST(test_state_resumes) {
  static ref_file r;
  ref_load(&r);
  for (size_t i = 0; i < r.n; i++) {
    inst full, first, resumed;
    inst_new(&full, &r.c[i]);
    run_steps(&full, 1, r.steps, BY_STEP);

    inst_new(&first, &r.c[i]);
    run_steps(&first, 1, 20, BY_STEP);
    size_t n;
    nn_param *st = first.ops->state(first.o, &n);
    gsl_matrix *saved[16], *params[2];
    const char *names[16];
    ck_assert_uint_le(n, 16);
    for (size_t k = 0; k < n; k++) {
      ck_assert_ptr_null(st[k].grad);
      saved[k] = gsl_matrix_alloc(st[k].value->size1, st[k].value->size2);
      gsl_matrix_memcpy(saved[k], st[k].value);
      names[k] = st[k].name;
    }
    for (size_t k = 0; k < 2; k++) {
      params[k] = gsl_matrix_alloc(first.p[k].value->size1,
                                   first.p[k].value->size2);
      gsl_matrix_memcpy(params[k], first.p[k].value);
    }

    inst_new(&resumed, &r.c[i]);
    for (size_t k = 0; k < 2; k++)
      gsl_matrix_memcpy(resumed.p[k].value, params[k]);
    size_t m;
    nn_param *rs = resumed.ops->state(resumed.o, &m);
    ck_assert_uint_eq(m, n);
    for (size_t k = 0; k < m; k++) { /* by name, as a checkpoint does */
      size_t j = 0;
      while (j < n && strcmp(names[j], rs[k].name) != 0)
        j++;
      ck_assert_msg(j < n, "%s: no saved state %s", r.c[i].name, rs[k].name);
      gsl_matrix_memcpy(rs[k].value, saved[j]);
    }
    inst_free(&first); /* names[] point into it */
    run_steps(&resumed, 21, r.steps, BY_STEP);
    assert_same(&full, &resumed, "resumed after 20 steps");
    for (size_t k = 0; k < n; k++)
      gsl_matrix_free(saved[k]);
    for (size_t k = 0; k < 2; k++)
      gsl_matrix_free(params[k]);
    inst_free(&resumed);
    inst_free(&full);
  }
}
END_TEST

/* Names: prefixed by the plugin, one per buffer, the step count after 50
 * steps; none is a parameter's. */
START_TEST(test_state_names) {
  static const struct {
    const char *plugin, *spec;
    const char *names[6];
  } want[] = {
      {"adam", " ", {"adam.step", "adam.m.W", "adam.v.W", "adam.m.b",
                     "adam.v.b", NULL}},
      {"adamw", " ", {"adamw.step", "adamw.m.W", "adamw.v.W", "adamw.m.b",
                      "adamw.v.b", NULL}},
      {"rmsprop", " ", {"rmsprop.v.W", "rmsprop.v.b", NULL}},
      {"rmsprop", " momentum=0.5 ", {"rmsprop.v.W", "rmsprop.momentum.W",
                                     "rmsprop.v.b", "rmsprop.momentum.b",
                                     NULL}},
  };
  for (size_t c = 0; c < sizeof want / sizeof *want; c++) {
    inst s;
    inst_new_spec(&s, want[c].plugin, want[c].spec);
    run_steps(&s, 1, 50, BY_STEP);
    size_t n;
    nn_param *st = s.ops->state(s.o, &n);
    size_t k = 0;
    for (; want[c].names[k]; k++) {
      ck_assert_uint_lt(k, n);
      ck_assert_str_eq(st[k].name, want[c].names[k]);
      ck_assert_ptr_null(st[k].grad);
      const int is_step = strstr(st[k].name, ".step") != NULL;
      const gsl_matrix *shape = is_step ? NULL
                                : strstr(st[k].name, ".W") ? s.p[0].value
                                                           : s.p[1].value;
      ck_assert_uint_eq(st[k].value->size1, shape ? shape->size1 : 1);
      ck_assert_uint_eq(st[k].value->size2, shape ? shape->size2 : 1);
      if (is_step)
        ck_assert(gsl_matrix_get(st[k].value, 0, 0) == 50.0);
    }
    ck_assert_uint_eq(n, k);
    ck_assert_ptr_eq(s.ops->state(s.o, &n), st); /* stable */
    inst_free(&s);
  }
}
END_TEST

/* With zero gradients only the decay moves anything: every element of W
 * moves, b keeps its bits. */
START_TEST(test_bias_never_decayed) {
  static ref_file r;
  ref_load(&r);
  for (size_t i = 0; i < r.n; i++) {
    inst s;
    inst_new(&s, &r.c[i]);
    for (int t = 0; t < 10; t++) {
      set_grads(&s, 0, 1);
      step_once(&s, t % 2 ? BY_BLOCKS : BY_STEP);
    }
    for (size_t j = 0; j < BC; j++) {
      const double b0 = b_init(j), b = gsl_matrix_get(s.p[1].value, 0, j);
      ck_assert_msg(memcmp(&b, &b0, sizeof b) == 0,
                    "%s: bias %zu moved from %.17g to %.17g", r.c[i].name, j,
                    b0, b);
    }
    for (size_t j = 0; j < NW; j++)
      ck_assert_msg(gsl_matrix_get(s.p[0].value, j / WC, j % WC) !=
                        w_init(j),
                    "%s: weight %zu was not decayed", r.c[i].name, j);
    inst_free(&s);
  }
}
END_TEST

/* ------------------------------------------------------ sgd's nesterov */

START_TEST(test_sgd_nesterov) {
  nn_loaded *lib = NULL;
  nn_error err = {0, ""};
  ck_assert_int_eq(nn_plugin_open(&lib, "sgd", NN_KIND_OPTIMIZER,
                                  test_plugin_path(), &err), NN_OK);
  const nn_plugin *d = nn_loaded_desc(lib);
  const nn_option *o = d->options;
  ck_assert_str_eq(o[3].key, "nesterov");
  ck_assert_uint_eq(o[3].type, NN_OPT_BOOL);
  ck_assert_str_eq(o[3].def, "false");
  ck_assert_ptr_null(o[4].key);

  inst s;
  inst_new_spec(&s, "sgd", " learning_rate=0.1 ");
  nn_value v[MAX_OPTS];
  void *bad = NULL;
  /* Without momentum there is no look-ahead: an error, not plain SGD. */
  opts_for(d, " nesterov=true ", v);
  ck_assert_int_eq(d->optim->create(v, s.p, 2, &bad, &err), NN_ECONFIG);
  ck_assert_ptr_null(bad);
  ck_assert_msg(strncmp(err.msg, "sgd: ", 5) == 0 &&
                    strstr(err.msg, "nesterov") && strstr(err.msg, "momentum"),
                "%s", err.msg);
  inst_free(&s);

  /* The plain-SGD rule is offered without momentum only, never with
   * nesterov. */
  static const struct {
    const char *spec;
    int rule;
  } cases[] = {{" momentum=0 ", 1},
               {" momentum=0.9 ", 0},
               {" momentum=0.9 nesterov=true ", 0}};
  for (size_t c = 0; c < 3; c++) {
    inst_new_spec(&s, "sgd", cases[c].spec);
    const nn_optim_sgd_rule *rule =
        s.ops->extension(s.o, NN_EXT_OPTIM_SGD_RULE);
    ck_assert_ptr_nonnull(rule);
    const nn_optim_parts *pt = parts_of(&s);
    double lr = -1.0, reg = -1.0;
    if (pt->begin)
      ck_assert_int_eq(pt->begin(s.o, s.p, 2, &err), NN_OK);
    for (size_t k = 0; k < 2; k++)
      ck_assert_int_eq(rule->rule(s.o, s.p, 2, k, &lr, &reg), cases[c].rule);
    inst_free(&s);
  }
  nn_plugin_close(lib);
}
END_TEST

/* One Nesterov step by hand: v = m v + g', w -= lr (g' + m v). */
START_TEST(test_sgd_nesterov_formula) {
  inst s;
  inst_new_spec(&s, "sgd",
                " learning_rate=0.5 reg=0.25 momentum=0.75 nesterov=true ");
  double v[NW + BC] = {0};
  for (long t = 1; t <= 2; t++) {
    set_grads(&s, t, 0);
    double want[NW + BC];
    for (size_t i = 0; i < NW + BC; i++) {
      const int is_w = i < NW;
      gsl_matrix *m = s.p[is_w ? 0 : 1].value;
      const size_t r = is_w ? i / WC : 0, c = is_w ? i % WC : i - NW;
      const double w = gsl_matrix_get(m, r, c);
      double g = grad_at(t, i);
      if (is_w)
        g = g + 0.25 * w;
      v[i] = 0.75 * v[i] + g;
      want[i] = w - 0.5 * (g + 0.75 * v[i]);
    }
    step_once(&s, BY_STEP);
    for (size_t i = 0; i < NW + BC; i++) {
      const double got =
          i < NW ? gsl_matrix_get(s.p[0].value, i / WC, i % WC)
                 : gsl_matrix_get(s.p[1].value, 0, i - NW);
      ck_assert_msg(got == want[i], "step %ld element %zu: %.17g, want %.17g",
                    t, i, got, want[i]);
    }
  }
  inst_free(&s);
}
END_TEST

/* ------------------------------------------------------ defaults, errors */

/* Defaults are PyTorch's (the reference's adamw_default case runs on
 * them; these pin the table). */
START_TEST(test_option_tables) {
  static const struct {
    const char *plugin;
    const char *keys[6], *defs[6];
  } want[] = {
      {"adam",
       {"learning_rate", "beta1", "beta2", "eps", "reg", NULL},
       {"0.001", "0.9", "0.999", "1e-8", "0", NULL}},
      {"adamw",
       {"learning_rate", "beta1", "beta2", "eps", "weight_decay", NULL},
       {"0.001", "0.9", "0.999", "1e-8", "0.01", NULL}},
      {"rmsprop",
       {"learning_rate", "alpha", "eps", "momentum", "reg", NULL},
       {"0.01", "0.99", "1e-8", "0", "0", NULL}},
  };
  for (size_t p = 0; p < 3; p++) {
    nn_loaded *lib = NULL;
    nn_error err = {0, ""};
    ck_assert_msg(nn_plugin_open(&lib, want[p].plugin, NN_KIND_OPTIMIZER,
                                 test_plugin_path(), &err) == NN_OK,
                  "%s", err.msg);
    const nn_plugin *d = nn_loaded_desc(lib);
    ck_assert_str_eq(d->name, want[p].plugin);
    ck_assert_uint_eq(d->kind, NN_KIND_OPTIMIZER);
    ck_assert(d->optim->state && d->optim->extension);
    size_t k = 0;
    for (; want[p].keys[k]; k++) {
      ck_assert_str_eq(d->options[k].key, want[p].keys[k]);
      ck_assert_uint_eq(d->options[k].type, NN_OPT_REAL);
      ck_assert_str_eq(d->options[k].def, want[p].defs[k]);
      ck_assert(d->options[k].help && *d->options[k].help);
      ck_assert(d->options[k].bounds & NN_OPT_HAS_MIN);
    }
    ck_assert_ptr_null(d->options[k].key);
    /* No plain-SGD rule: none of their steps is one. */
    inst s;
    inst_new_spec(&s, want[p].plugin, " ");
    ck_assert_ptr_null(s.ops->extension(s.o, NN_EXT_OPTIM_SGD_RULE));
    inst_free(&s);
    nn_plugin_close(lib);
  }
}
END_TEST

/* create fails with code and a message naming the plugin and needle. */
static void expect_create_error(const char *plugin, const char *spec,
                                const char *param_name, int code,
                                const char *needle) {
  inst s;
  inst_new_spec(&s, plugin, " ");
  nn_value v[MAX_OPTS];
  opts_for(s.d, spec, v);
  nn_param p[2] = {s.p[0], s.p[1]};
  if (param_name)
    p[1].name = param_name;
  void *o = NULL;
  nn_error err = {0, ""};
  ck_assert_int_eq(s.ops->create(v, p, 2, &o, &err), code);
  ck_assert_ptr_null(o);
  char prefix[80];
  snprintf(prefix, sizeof prefix, "%s: ", plugin);
  ck_assert_msg(strncmp(err.msg, prefix, strlen(prefix)) == 0 &&
                    strstr(err.msg, needle),
                "%s %s: %s", plugin, spec, err.msg);
  inst_free(&s);
}

START_TEST(test_create_errors) {
  /* Bounds of one option (the core checks them first, but a plugin does
   * not trust its caller). */
  expect_create_error("adam", " eps=0 ", NULL, NN_EINVAL, "eps");
  expect_create_error("adam", " beta1=1 ", NULL, NN_EINVAL, "beta1");
  expect_create_error("adam", " beta2=-0.5 ", NULL, NN_EINVAL, "beta2");
  expect_create_error("adam", " learning_rate=0 ", NULL, NN_EINVAL,
                      "learning_rate");
  expect_create_error("adam", " reg=-1 ", NULL, NN_EINVAL, "reg");
  expect_create_error("rmsprop", " alpha=1 ", NULL, NN_EINVAL, "alpha");
  expect_create_error("rmsprop", " momentum=1 ", NULL, NN_EINVAL, "momentum");
  /* Options valid alone, not together: a configuration error. */
  expect_create_error("adamw", " learning_rate=0.5 weight_decay=2 ", NULL,
                      NN_ECONFIG, "weight_decay");
  /* A checkpoint stores parameters and state by name side by side. */
  expect_create_error("adam", " ", "adam.step", NN_EINVAL, "adam.step");
  expect_create_error("adamw", " ", "adamw.m.W", NN_EINVAL, "adamw.m.W");
  expect_create_error("rmsprop", " ", "rmsprop.v.W", NN_EINVAL,
                      "rmsprop.v.W");
}
END_TEST

START_TEST(test_step_errors) {
  static const char *const plugins[] = {"adam", "adamw", "rmsprop"};
  for (size_t p = 0; p < 3; p++) {
    inst s;
    inst_new_spec(&s, plugins[p], " ");
    char prefix[80];
    snprintf(prefix, sizeof prefix, "%s: ", plugins[p]);
    nn_error err = {0, ""};
    /* The wrong number of parameters, a parameter of another shape: an
     * error, and nothing moves. */
    set_grads(&s, 1, 0);
    const double w00 = gsl_matrix_get(s.p[0].value, 0, 0);
    ck_assert_int_eq(s.ops->step(s.o, s.p, 1, &err), NN_EINVAL);
    ck_assert(strncmp(err.msg, prefix, strlen(prefix)) == 0);
    nn_param bad[2] = {s.p[0], s.p[1]};
    gsl_matrix_view v = gsl_matrix_submatrix(s.p[1].value, 0, 0, 1, 3);
    bad[1].value = &v.matrix;
    err.msg[0] = '\0';
    ck_assert_int_eq(s.ops->step(s.o, bad, 2, &err), NN_EINVAL);
    ck_assert(strncmp(err.msg, prefix, strlen(prefix)) == 0);
    ck_assert(gsl_matrix_get(s.p[0].value, 0, 0) == w00);
    /* Parts out of range. */
    const nn_optim_parts *pt = parts_of(&s);
    if (pt->begin)
      ck_assert_int_eq(pt->begin(s.o, s.p, 2, &err), NN_OK);
    ck_assert_int_eq(pt->rows(s.o, s.p, 2, 2, 0, 1, &err), NN_EINVAL);
    ck_assert_int_eq(pt->rows(s.o, s.p, 2, 0, 2, 4, &err), NN_EINVAL);
    ck_assert_int_eq(pt->rows(s.o, s.p, 2, 0, 1, 1, &err), NN_EINVAL);
    gsl_matrix *g = gsl_matrix_calloc(1, 2);
    ck_assert_int_eq(pt->block(s.o, s.p, 2, 0, 0, 1, 0, 3, g, &err),
                     NN_EINVAL);
    ck_assert_int_eq(pt->block(s.o, s.p, 2, 0, 0, 1, 3, 5, g, &err),
                     NN_EINVAL);
    ck_assert_int_eq(pt->block(s.o, s.p, 2, 0, 0, 1, 0, 2, NULL, &err),
                     NN_EINVAL);
    ck_assert(strncmp(err.msg, prefix, strlen(prefix)) == 0);
    gsl_matrix_free(g);
    ck_assert(gsl_matrix_get(s.p[0].value, 0, 0) == w00);
    inst_free(&s);
  }
}
END_TEST

/* Adam's parts belong to a step: before any begin, or after the counter
 * was restored behind the step's back, they are refused; a counter that
 * is not a whole number is refused by begin. */
START_TEST(test_adam_step_counter) {
  inst s;
  inst_new_spec(&s, "adam", " ");
  const nn_optim_parts *pt = parts_of(&s);
  nn_error err = {0, ""};
  set_grads(&s, 1, 0);
  ck_assert_int_eq(pt->rows(s.o, s.p, 2, 0, 0, 1, &err), NN_EINVAL);
  ck_assert_msg(strncmp(err.msg, "adam: ", 6) == 0 && strstr(err.msg, "begin"),
                "%s", err.msg);
  size_t n;
  nn_param *st = s.ops->state(s.o, &n);
  ck_assert_str_eq(st[0].name, "adam.step");
  ck_assert_int_eq(pt->begin(s.o, s.p, 2, &err), NN_OK);
  ck_assert(gsl_matrix_get(st[0].value, 0, 0) == 1.0);
  ck_assert_int_eq(pt->rows(s.o, s.p, 2, 0, 0, 1, &err), NN_OK);
  gsl_matrix_set(st[0].value, 0, 0, 7.0); /* a checkpoint restored */
  ck_assert_int_eq(pt->rows(s.o, s.p, 2, 0, 1, 2, &err), NN_EINVAL);
  ck_assert_int_eq(pt->begin(s.o, s.p, 2, &err), NN_OK);
  ck_assert(gsl_matrix_get(st[0].value, 0, 0) == 8.0);
  ck_assert_int_eq(pt->rows(s.o, s.p, 2, 0, 1, 2, &err), NN_OK);
  static const double bad[] = {-1.0, 2.5, INFINITY, NAN};
  for (size_t i = 0; i < 4; i++) {
    gsl_matrix_set(st[0].value, 0, 0, bad[i]);
    err.msg[0] = '\0';
    ck_assert_int_eq(s.ops->step(s.o, s.p, 2, &err), NN_EINVAL);
    ck_assert_msg(strstr(err.msg, "adam.step") != NULL, "%s", err.msg);
  }
  inst_free(&s);
}
END_TEST

START_TEST(test_destroy_null) {
  static const char *const plugins[] = {"adam", "adamw", "rmsprop"};
  for (size_t p = 0; p < 3; p++) {
    nn_loaded *lib = NULL;
    nn_error err = {0, ""};
    ck_assert_int_eq(nn_plugin_open(&lib, plugins[p], NN_KIND_OPTIMIZER,
                                    test_plugin_path(), &err), NN_OK);
    nn_loaded_desc(lib)->optim->destroy(NULL);
    nn_plugin_close(lib);
  }
}
END_TEST

/* ------------------------------------------------------ the fused step */

/* Hands the model's rows and blocks to the optimizer's step in parts, as
 * the core's stepper does. */
typedef struct parts_stepper {
  const nn_optim_parts *parts;
  void *opt;
  nn_param *p;
  size_t n;
} parts_stepper;

static int ps_rows(void *ctx, size_t k, size_t r0, size_t r1, nn_error *err) {
  parts_stepper *c = ctx;
  return c->parts->rows(c->opt, c->p, c->n, k, r0, r1, err);
}

static int ps_block(void *ctx, size_t k, size_t r0, size_t r1, size_t c0,
                    size_t c1, const gsl_matrix *g, nn_error *err) {
  parts_stepper *c = ctx;
  return c->parts->block(c->opt, c->p, c->n, k, r0, r1, c0, c1, g, err);
}

/* twolayer's backward_step with the optimizer's parts leaves the bits of
 * its sparse backward followed by step(): 75 inputs, 24 hidden units,
 * three batches. */
static void fused_equals_step(const char *plugin, const char *spec) {
  nn_loaded *ml = NULL, *ol = NULL;
  nn_error err = {0, ""};
  ck_assert_int_eq(nn_plugin_open(&ml, "twolayer", NN_KIND_MODEL,
                                  test_plugin_path(), &err), NN_OK);
  ck_assert_int_eq(nn_plugin_open(&ol, plugin, NN_KIND_OPTIMIZER,
                                  test_plugin_path(), &err), NN_OK);
  const nn_model_ops *ops = nn_loaded_desc(ml)->model;
  const nn_optim_ops *oo = nn_loaded_desc(ol)->optim;
  static const nn_value hidden24[] = {{.i = 24}};
  const size_t n_in = 75, n_out = 4, B = 9;
  void *a = NULL, *b = NULL;
  for (int m = 0; m < 2; m++) {
    gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
    gsl_rng_set(r, 31);
    ck_assert_int_eq(ops->create(hidden24, (nn_shape){1, 1, n_in}, n_out, B,
                                 r, m ? &b : &a, &err), NN_OK);
    gsl_rng_free(r);
  }
  const nn_model_sparse *sp = ops->extension(a, NN_EXT_MODEL_SPARSE);
  const nn_model_fused_step *fs = ops->extension(b, NN_EXT_MODEL_FUSED_STEP);
  ck_assert(sp && fs && fs->backward_step);
  size_t na, nb;
  nn_param *pa = ops->params(a, &na), *pb = ops->params(b, &nb);
  nn_value v[MAX_OPTS];
  opts_for(nn_loaded_desc(ol), spec, v);
  void *oa = NULL, *ob = NULL;
  ck_assert_int_eq(oo->create(v, pa, na, &oa, &err), NN_OK);
  ck_assert_int_eq(oo->create(v, pb, nb, &ob, &err), NN_OK);
  parts_stepper c = {oo->extension(ob, NN_EXT_OPTIM_PARTS), ob, pb, nb};
  ck_assert_ptr_nonnull(c.parts);
  const nn_stepper st = {(uint32_t)sizeof(nn_stepper), &c, ps_rows, ps_block,
                         NULL};
  nn_csr_buffer xb, xt;
  ck_assert_int_eq(nn_csr_buffer_init(&xb, B, B * n_in), NN_OK);
  ck_assert_int_eq(nn_csr_buffer_init(&xt, n_in, B * n_in), NN_OK);
  gsl_matrix *X = gsl_matrix_calloc(B, n_in);
  gsl_matrix *sa = gsl_matrix_calloc(B, n_out);
  gsl_matrix *sb = gsl_matrix_calloc(B, n_out);
  static const uint32_t y[] = {0, 1, 2, 3, 1, 2, 0, 3, 1};
  for (int it = 0; it < 3; it++) {
    /* About half the inputs zero, from a formula. */
    for (size_t i = 0; i < B; i++)
      for (size_t j = 0; j < n_in; j++) {
        const double u = sin(0.7 * (double)(i * n_in + j) + it);
        gsl_matrix_set(X, i, j, u > 0.0 ? u : 0.0);
      }
    ck_assert_int_eq(nn_csr_from_dense(&xb, X), NN_OK);
    ck_assert_int_eq(nn_csr_transpose(&xt, &xb.csr), NN_OK);
    double loss;
    size_t hits;
    const nn_context ctx = {(uint32_t)sizeof(nn_context), 1, 0, (uint64_t)it,
                            NULL};
    ck_assert_int_eq(sp->forward(a, &ctx, &xb.csr, sa, &err), NN_OK);
    ck_assert_int_eq(sp->forward(b, &ctx, &xb.csr, sb, &err), NN_OK);
    ck_assert_int_eq(nn_softmax_xent(sa, y, sa, &loss, &hits), NN_OK);
    ck_assert_int_eq(nn_softmax_xent(sb, y, sb, &loss, &hits), NN_OK);
    ck_assert_int_eq(sp->backward(a, &xb.csr, &xt.csr, sa, &err), NN_OK);
    ck_assert_msg(oo->step(oa, pa, na, &err) == NN_OK, "%s", err.msg);
    if (c.parts->begin)
      ck_assert_int_eq(c.parts->begin(ob, pb, nb, &err), NN_OK);
    ck_assert_msg(fs->backward_step(b, &xb.csr, &xt.csr, sb, &st, &err) ==
                      NN_OK, "%s: %s", plugin, err.msg);
    if (c.parts->end)
      ck_assert_int_eq(c.parts->end(ob, pb, nb, &err), NN_OK);
    for (size_t k = 0; k < na; k++)
      ck_assert_msg(same_bits(pa[k].value, pb[k].value),
                    "%s, batch %d: %s differs", plugin, it, pa[k].name);
  }
  size_t qa, qb;
  nn_param *va = oo->state(oa, &qa), *vb = oo->state(ob, &qb);
  ck_assert_uint_eq(qa, qb);
  for (size_t k = 0; k < qa; k++)
    ck_assert_msg(same_bits(va[k].value, vb[k].value), "%s: state %s",
                  plugin, va[k].name);
  nn_csr_buffer_free(&xb);
  nn_csr_buffer_free(&xt);
  gsl_matrix_free(X);
  gsl_matrix_free(sa);
  gsl_matrix_free(sb);
  oo->destroy(oa);
  oo->destroy(ob);
  ops->destroy(a);
  ops->destroy(b);
  nn_plugin_close(ol);
  nn_plugin_close(ml);
}

START_TEST(test_fused_step) {
  fused_equals_step("adam", " learning_rate=0.01 reg=0.01 ");
  fused_equals_step("adamw", " learning_rate=0.01 ");
  fused_equals_step("rmsprop", " reg=0.01 ");
  fused_equals_step("rmsprop", " momentum=0.9 ");
  fused_equals_step("sgd", " momentum=0.9 nesterov=true ");
}
END_TEST

static Suite *optim_suite(void) {
  Suite *s = suite_create("optim");
  TCase *tc = tcase_create("pytorch");
  tcase_add_test(tc, test_matches_pytorch);
  tcase_add_test(tc, test_parts_equal_step);
  tcase_add_test(tc, test_state_resumes);
  tcase_add_test(tc, test_bias_never_decayed);
  suite_add_tcase(s, tc);

  tc = tcase_create("plugins");
  tcase_add_test(tc, test_option_tables);
  tcase_add_test(tc, test_state_names);
  tcase_add_test(tc, test_sgd_nesterov);
  tcase_add_test(tc, test_sgd_nesterov_formula);
  tcase_add_test(tc, test_create_errors);
  tcase_add_test(tc, test_step_errors);
  tcase_add_test(tc, test_adam_step_counter);
  tcase_add_test(tc, test_destroy_null);
  tcase_add_test(tc, test_fused_step);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return test_run_suite(optim_suite()); }
