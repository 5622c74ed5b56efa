/* The contract checks every plugin must pass (see <nn/contract.h>).
 *
 * Not a hot path: every check makes its own instances on tiny shapes and
 * its own matrices (kept in a pool, freed at the end of the check), so
 * that one check's failure cannot leave another a broken instance.  Test
 * data come from fixed seeds: a plugin gets the same verdict every run.
 *
 * Libraries must not touch process-wide state, so nothing here prints or
 * changes GSL's error handler; matrices are made with
 * nn_matrix_calloc_aligned and copied with plain loops, neither of which
 * goes through that handler. */
#include <config.h>

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_rng.h>

#include <nn/config.h>
#include <nn/contract.h>
#include <nn/math.h>
#include <nn/nn.h>
#include <nn/plugin_ext.h>
#include <nn/registry.h>

/* The shapes the checks run on: small enough for finite differences on
 * every value, large enough to catch a transposed index. */
#define CC_N_IN 6
#define CC_N_OUT 4     /* a model's classes */
#define CC_MAX_BATCH 5 /* every batch size 1..this is run */
#define CC_GRAD_ROWS 3 /* the gradient check's batch */

/* Finite differences: central, step 1e-6 in double.  An element passes
 * when |a - n| <= ATOL + RTOL * max(|a|, |n|): the absolute term keeps
 * tiny correct gradients (rounding noise around 1e-10) from counting as
 * large relative errors, the relative one scales with the gradient. */
#define CC_STEP 1e-6
#define CC_ATOL 1e-6
#define CC_RTOL 1e-4
/* Finite differences on at most this many values of one parameter
 * (spread evenly over it), so that a large default model stays quick. */
#define CC_GRAD_MAX_VALUES 1024

/* Two forwards of a correct plugin on a view and on a contiguous matrix
 * may round differently (vector paths depend on alignment); reading
 * with the wrong stride is off by far more than this. */
#define CC_VIEW_RTOL 1e-9
#define CC_SENTINEL 12345.678 /* padding of views: must stay untouched */

#define CC_SEED_WEIGHTS 20240501UL /* the rng lent to create */
#define CC_SEED_DATA 7UL           /* inputs, labels, gradients */
#define CC_SEED_STREAM 99UL        /* ctx->rng of stochastic plugins */

#define CC_DETAIL 1024

/* ------------------------------------------------------------ matrices */

/* Matrices owned by one check, freed together at its end. */
typedef struct pool {
  gsl_matrix **m;
  size_t n, cap;
  int oom;
} pool;

static gsl_matrix *pool_mat(pool *pl, size_t rows, size_t cols) {
  if (pl->n == pl->cap) {
    size_t cap = pl->cap ? 2 * pl->cap : 32;
    gsl_matrix **m = realloc(pl->m, cap * sizeof *m);
    if (!m) {
      pl->oom = 1;
      return NULL;
    }
    pl->m = m;
    pl->cap = cap;
  }
  gsl_matrix *x = nn_matrix_calloc_aligned(rows, cols);
  if (!x) {
    pl->oom = 1;
    return NULL;
  }
  pl->m[pl->n++] = x;
  return x;
}

static void pool_free(pool *pl) {
  for (size_t i = 0; i < pl->n; i++)
    gsl_matrix_free(pl->m[i]);
  free(pl->m);
  *pl = (pool){0};
}

static double *at(const gsl_matrix *m, size_t i, size_t j) {
  return m->data + i * m->tda + j;
}

static void mat_set(gsl_matrix *m, double v) {
  for (size_t i = 0; i < m->size1; i++)
    for (size_t j = 0; j < m->size2; j++)
      *at(m, i, j) = v;
}

static void mat_uniform(gsl_matrix *m, gsl_rng *r) {
  for (size_t i = 0; i < m->size1; i++)
    for (size_t j = 0; j < m->size2; j++)
      *at(m, i, j) = 2.0 * gsl_rng_uniform(r) - 1.0;
}

static int same_shape(const gsl_matrix *a, const gsl_matrix *b) {
  return a->size1 == b->size1 && a->size2 == b->size2;
}

/* dst = src (same shape, checked by the caller). */
static void mat_copy(gsl_matrix *dst, const gsl_matrix *src) {
  for (size_t i = 0; i < src->size1; i++)
    memcpy(at(dst, i, 0), at(src, i, 0), src->size2 * sizeof(double));
}

/* A copy of m in the pool, or NULL. */
static gsl_matrix *pool_copy(pool *pl, const gsl_matrix *m) {
  gsl_matrix *c = pool_mat(pl, m->size1, m->size2);
  if (c)
    mat_copy(c, m);
  return c;
}

static int same_bits(const gsl_matrix *a, const gsl_matrix *b) {
  if (!same_shape(a, b))
    return 0;
  for (size_t i = 0; i < a->size1; i++)
    if (memcmp(at(a, i, 0), at(b, i, 0), a->size2 * sizeof(double)))
      return 0;
  return 1;
}

/* 1 when every element is finite; else 0 and the first one's place. */
static int all_finite(const gsl_matrix *m, size_t *bi, size_t *bj) {
  for (size_t i = 0; i < m->size1; i++)
    for (size_t j = 0; j < m->size2; j++)
      if (!isfinite(*at(m, i, j))) {
        *bi = i, *bj = j;
        return 0;
      }
  return 1;
}

/* What a call may not change in the caller's matrix. */
typedef struct mat_id {
  size_t size1, size2, tda;
  double *data;
} mat_id;

static mat_id mat_id_of(const gsl_matrix *m) {
  return (mat_id){m->size1, m->size2, m->tda, m->data};
}

static int mat_id_same(mat_id a, const gsl_matrix *m) {
  return a.size1 == m->size1 && a.size2 == m->size2 && a.tda == m->tda &&
         a.data == m->data;
}

/* ------------------------------------------------------------ checker */

typedef struct checker {
  const nn_plugin *p;
  nn_contract_report report;
  void *user;
  size_t n_failed;
  nn_value *opts;   /* one per option; NULL for a plugin without options */
  char opts_text[512]; /* "units=4 (required: stand-in), bias=true" */
  gsl_rng *wrng;    /* lent to create, reseeded for each instance */
  gsl_rng *drng;    /* test data, reseeded by each check */
  gsl_rng *srng;    /* ctx->rng for stochastic plugins */
  int oom;          /* the checker itself ran out of memory */
} checker;

/* A check's verdict: fills the detail and returns passed (1) or not. */
static int verdict(char *d, size_t size, int passed, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
static int verdict(char *d, size_t size, int passed, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(d, size, fmt, ap);
  va_end(ap);
  return passed;
}

static int oom_verdict(checker *c, char *d, size_t size) {
  c->oom = 1;
  return verdict(d, size, 0, "the checker ran out of memory");
}

/* "s" unless n is 1: "1 parameter", "2 parameters". */
static const char *plural(size_t n) { return n == 1 ? "" : "s"; }

static void err_clear(nn_error *e) {
  e->code = NN_OK;
  e->msg[0] = '\0';
}

static const char *msg_of(const nn_error *e) {
  return e->msg[0] ? e->msg : "(no message)";
}

/* The plugin's error for a detail: "NN_EINVAL: message", and says so when
 * the message is missing (a contract breach of its own). */
static const char *err_text(int rc, const nn_error *e, char *buf,
                            size_t size) {
  snprintf(buf, size, "%s: %s", nn_err_name(rc), msg_of(e));
  return buf;
}

/* ------------------------------------------------------------ options */

/* A stand-in for a required option, as text: int 4, real the middle of
 * its bounds (else 0.5), each moved into the bounds; bool false. */
static void stand_in(const nn_option *o, char *buf, size_t size) {
  const int lo = (o->bounds & NN_OPT_HAS_MIN) != 0;
  const int hi = (o->bounds & NN_OPT_HAS_MAX) != 0;
  const int lo_x = (o->bounds & NN_OPT_MIN_EXCLUSIVE) != 0;
  const int hi_x = (o->bounds & NN_OPT_MAX_EXCLUSIVE) != 0;
  if (o->type == NN_OPT_INT) {
    double v = 4.0;
    if (lo) {
      const double m = lo_x ? floor(o->min) + 1.0 : ceil(o->min);
      if (v < m)
        v = m;
    }
    if (hi) {
      const double m = hi_x ? ceil(o->max) - 1.0 : floor(o->max);
      if (v > m)
        v = m;
    }
    snprintf(buf, size, "%.0f", v);
  } else if (o->type == NN_OPT_REAL) {
    double v = 0.5;
    if (lo && hi)
      v = 0.5 * (o->min + o->max);
    else if (lo && (v < o->min || (lo_x && v <= o->min)))
      v = o->min + 0.5;
    else if (hi && (v > o->max || (hi_x && v >= o->max)))
      v = o->max - 0.5;
    snprintf(buf, size, "%.17g", v);
  } else if (o->type == NN_OPT_BOOL) {
    snprintf(buf, size, "false");
  } else {
    buf[0] = '\0';
  }
}

static void append(char *buf, size_t size, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void append(char *buf, size_t size, const char *fmt, ...) {
  const size_t len = strlen(buf);
  if (len + 1 >= size)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + len, size - len, fmt, ap);
  va_end(ap);
}

/* c->opts from the defaults (stand-ins for required options), described
 * in c->opts_text.  Returns 0, or -1 with the reason in d when a value
 * does not parse (the loader checks defaults, so only a stand-in can). */
static int build_options(checker *c, char *d, size_t size) {
  const nn_option *t = c->p->options;
  const size_t n = nn_option_count(t);
  c->opts_text[0] = '\0';
  if (n == 0) {
    snprintf(c->opts_text, sizeof c->opts_text, "none");
    return 0;
  }
  c->opts = calloc(n, sizeof *c->opts);
  if (!c->opts) {
    oom_verdict(c, d, size);
    return -1;
  }
  for (size_t k = 0; k < n; k++) {
    char text[64];
    const char *src = t[k].def;
    if (!src) {
      stand_in(&t[k], text, sizeof text);
      src = text;
    }
    append(c->opts_text, sizeof c->opts_text, "%s%s=%s%s", k ? ", " : "",
           t[k].key, src, t[k].def ? "" : " (required: stand-in)");
    if (t[k].type == NN_OPT_STRING && !*src) {
      c->opts[k].s = ""; /* nn_option_parse refuses an empty string */
      continue;
    }
    /* (Only a string's value points into its text, and a string's
     * stand-in is "", handled above: nothing points into `text`.) */
    nn_error e;
    err_clear(&e);
    if (nn_option_parse(&t[k], src, &c->opts[k], &e) != NN_OK) {
      verdict(d, size, 0, "option %s = '%s' is not usable: %s", t[k].key,
              src, e.msg);
      return -1;
    }
  }
  return 0;
}

/* ------------------------------------------------------------ subjects
 * A model or a layer instance, behind one interface: forward maps n_in to
 * n_out values per row; backward takes dY (dscores) and, for a layer,
 * writes dX when it is non-NULL. */
typedef struct subject {
  const nn_layer_ops *layer; /* exactly one of layer, model is set */
  const nn_model_ops *model;
  void *self;
  size_t n_in, n_out;
  nn_shape out_shape; /* a layer's, from create */
} subject;

static int subject_create(checker *c, subject *s, nn_error *err) {
  *s = (subject){c->p->layer, c->p->model, NULL, CC_N_IN, 0, {0, 0, 0}};
  const nn_shape in = {1, 1, CC_N_IN};
  gsl_rng_set(c->wrng, CC_SEED_WEIGHTS);
  err_clear(err);
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

static void subject_destroy(subject *s) {
  if (s->layer)
    s->layer->destroy(s->self);
  else if (s->model)
    s->model->destroy(s->self);
  s->self = NULL;
}

static nn_param *subject_params(subject *s, size_t *n) {
  *n = 0;
  nn_param *(*fn)(void *, size_t *) =
      s->layer ? s->layer->params : s->model->params;
  nn_param *p = fn ? fn(s->self, n) : NULL;
  if (!p)
    *n = 0;
  return p;
}

static nn_param *subject_state(subject *s, size_t *n) {
  *n = 0;
  nn_param *(*fn)(void *, size_t *) =
      s->layer ? s->layer->state : s->model->state;
  nn_param *p = fn ? fn(s->self, n) : NULL;
  if (!p)
    *n = 0;
  return p;
}

static uint32_t subject_flags(const subject *s) {
  return s->layer ? s->layer->flags : s->model->flags;
}

/* The plugin gets copies of the headers of the matrices it may write:
 * their elements are the caller's, their sizes, stride and data pointer
 * are not the plugin's to change.  A plugin that changes one anyway
 * (making "its" output as many rows as it likes) fails the call, and the
 * checks go on with intact matrices. */
static int header_kept(const gsl_matrix *copy, const gsl_matrix *orig,
                       const char *call, const char *what, nn_error *err) {
  if (mat_id_same(mat_id_of(orig), copy))
    return NN_OK;
  return nn_error_set(err, NN_EPLUGIN,
                      "%s changed %s from %zux%zu (tda %zu) to %zux%zu "
                      "(tda %zu)",
                      call, what, orig->size1, orig->size2, orig->tda,
                      copy->size1, copy->size2, copy->tda);
}

static int subject_forward(subject *s, const nn_context *ctx,
                           const gsl_matrix *X, gsl_matrix *Y, nn_error *err) {
  err_clear(err);
  gsl_matrix y = *Y;
  int rc = s->layer ? s->layer->forward(s->self, ctx, X, &y, err)
                    : s->model->forward(s->self, ctx, X, &y, err);
  if (rc == NN_OK)
    rc = header_kept(&y, Y, "forward", "Y", err);
  return rc;
}

static int subject_backward(subject *s, const gsl_matrix *X,
                            const gsl_matrix *Y, gsl_matrix *dY,
                            gsl_matrix *dX, nn_error *err) {
  err_clear(err);
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

static const nn_context cc_eval = {(uint32_t)sizeof(nn_context), 0, 0, 0,
                                   NULL};

/* The instance's parameters, usable by the checks (present, named, with
 * grads of their shape); 0 and the reason in d when not. */
static int usable_params(checker *c, subject *s, nn_param **out, size_t *n,
                         char *d, size_t size) {
  nn_param *p = subject_params(s, n);
  nn_error e;
  err_clear(&e);
  if (*n && nn_check_param_names(c->p->name, p, *n, NULL, 0, &e) != NN_OK)
    return verdict(d, size, 0, "parameters unusable: %s", e.msg);
  *out = p;
  return 1;
}

/* ------------------------------------------------------------ optimizer
 * The parameters an optimizer is checked on: a 3 x 4 weight and a 1 x 4
 * bias, values and grads from the data stream. */
#define CC_OPT_N 2

static int opt_params(checker *c, pool *pl, nn_param *p) {
  p[0] = (nn_param){"W", pool_mat(pl, 3, 4), pool_mat(pl, 3, 4),
                    NN_PARAM_WEIGHT};
  p[1] = (nn_param){"b", pool_mat(pl, 1, 4), pool_mat(pl, 1, 4),
                    NN_PARAM_BIAS};
  if (pl->oom)
    return 0;
  for (size_t k = 0; k < CC_OPT_N; k++) {
    mat_uniform(p[k].value, c->drng);
    mat_uniform(p[k].grad, c->drng);
  }
  return 1;
}

static int opt_create(checker *c, nn_param *p, size_t n, void **out,
                      nn_error *err) {
  *out = NULL;
  err_clear(err);
  int rc = c->p->optim->create(c->opts, p, n, out, err);
  if (rc != NN_OK)
    *out = NULL; /* not ours to destroy */
  return rc;
}

static nn_param *opt_state(checker *c, void *o, size_t *n) {
  *n = 0;
  nn_param *s = c->p->optim->state ? c->p->optim->state(o, n) : NULL;
  if (!s)
    *n = 0;
  return s;
}

static int opt_step(checker *c, void *o, nn_param *p, size_t n,
                    nn_error *err) {
  err_clear(err);
  return c->p->optim->step(o, p, n, err);
}

/* ------------------------------------------------------------ gradient */

/* The worst element so far of a gradient comparison. */
typedef struct grad_tally {
  size_t n_values, n_bad, n_kinks, n_skipped;
  double excess; /* |a - n| / tolerance of the worst element */
  char where[96];
  double a, num;
} grad_tally;

/* The fixed loss the layer's gradient is checked on: sum of Y .* R for a
 * fixed random R (so dY = R); for a model the trainer's own, mean
 * softmax cross-entropy of the scores (dscores from nn_softmax_xent). */
typedef struct grad_setup {
  subject *s;
  const gsl_matrix *X;
  const gsl_matrix *R;     /* layers */
  const uint32_t *labels;  /* models */
  gsl_matrix *Y;
} grad_setup;

static int grad_loss(const grad_setup *g, double *loss, nn_error *err) {
  int rc = subject_forward(g->s, &cc_eval, g->X, g->Y, err);
  if (rc != NN_OK)
    return rc;
  if (g->s->model) {
    size_t hits;
    if (nn_softmax_xent(g->Y, g->labels, NULL, loss, &hits) != NN_OK)
      return nn_error_set(err, NN_EINVAL, "the scores are not %zux%d",
                          (size_t)CC_GRAD_ROWS, CC_N_OUT);
    return NN_OK;
  }
  double sum = 0.0;
  for (size_t i = 0; i < g->Y->size1; i++)
    for (size_t j = 0; j < g->Y->size2; j++)
      sum += *at(g->Y, i, j) * *at(g->R, i, j);
  *loss = sum;
  return NN_OK;
}

/* Compare analytic value a of d(loss)/d(*w) with central differences
 * around *w (restored afterwards).  Where the loss has a kink within the
 * step (relu at 0), the central difference is neither one-sided slope;
 * an a between the two one-sided slopes is then accepted. */
static int grad_element(const grad_setup *g, double *w, double a, double L0,
                        const char *name, size_t i, size_t j, grad_tally *t,
                        nn_error *err) {
  const double orig = *w;
  double lp = 0.0, lm = 0.0;
  *w = orig + CC_STEP;
  const double hp = *w - orig; /* the step as represented */
  int rc = grad_loss(g, &lp, err);
  if (rc == NN_OK) {
    *w = orig - CC_STEP;
    rc = grad_loss(g, &lm, err);
  }
  const double hm = orig - *w;
  *w = orig;
  if (rc != NN_OK)
    return rc;
  const double num = (lp - lm) / (hp + hm);
  const double dp = (lp - L0) / hp, dm = (L0 - lm) / hm;
  const double tol = CC_ATOL + CC_RTOL * fmax(fabs(a), fabs(num));
  double excess = fabs(a - num) / tol;
  if (!isfinite(a) || !isfinite(num))
    excess = INFINITY;
  t->n_values++;
  if (excess > 1.0 && isfinite(excess) && a >= fmin(dp, dm) - tol &&
      a <= fmax(dp, dm) + tol) {
    t->n_kinks++;
    return NN_OK;
  }
  if (excess > 1.0)
    t->n_bad++;
  if (!t->where[0] || excess > t->excess || isnan(excess)) {
    t->excess = isnan(excess) ? INFINITY : excess;
    snprintf(t->where, sizeof t->where, "%s[%zu,%zu]", name, i, j);
    t->a = a;
    t->num = num;
  }
  return NN_OK;
}

/* Every value (or CC_GRAD_MAX_VALUES spread over it) of m against the
 * analytic gradient A of the same shape. */
static int grad_matrix(const grad_setup *g, gsl_matrix *m, const gsl_matrix *A,
                       double L0, const char *name, grad_tally *t,
                       nn_error *err) {
  const size_t total = m->size1 * m->size2;
  const size_t count = total < CC_GRAD_MAX_VALUES ? total : CC_GRAD_MAX_VALUES;
  for (size_t q = 0; q < count; q++) {
    const size_t e = count == total ? q : q * total / count;
    const size_t i = e / m->size2, j = e % m->size2;
    int rc = grad_element(g, at(m, i, j), *at(A, i, j), L0, name, i, j, t,
                          err);
    if (rc != NN_OK)
      return rc;
  }
  t->n_skipped += total - count;
  return NN_OK;
}

static int check_gradient(checker *c, char *d, size_t size) {
  pool pl = {0};
  subject s;
  nn_error e;
  char et[600];
  int passed = 0;
  if (subject_create(c, &s, &e) != NN_OK)
    return verdict(d, size, 0, "create failed: %s", msg_of(&e));
  nn_param *p = NULL;
  size_t n = 0;
  if (!usable_params(c, &s, &p, &n, d, size))
    goto out;
  gsl_rng_set(c->drng, CC_SEED_DATA);
  const size_t B = CC_GRAD_ROWS;
  gsl_matrix *X = pool_mat(&pl, B, s.n_in), *Y = pool_mat(&pl, B, s.n_out);
  gsl_matrix *R = pool_mat(&pl, B, s.n_out), *dY = pool_mat(&pl, B, s.n_out);
  gsl_matrix *dX = s.layer ? pool_mat(&pl, B, s.n_in) : NULL;
  gsl_matrix **A = calloc(n ? n : 1, sizeof *A);
  if (!A || pl.oom) {
    free(A);
    passed = oom_verdict(c, d, size);
    goto out;
  }
  uint32_t labels[CC_GRAD_ROWS];
  mat_uniform(X, c->drng);
  mat_uniform(R, c->drng);
  for (size_t i = 0; i < B; i++)
    labels[i] = (uint32_t)gsl_rng_uniform_int(c->drng, CC_N_OUT);
  const grad_setup g = {&s, X, R, labels, Y};

  /* The analytic gradients, copied before the finite differences run
   * forward again. */
  double L0 = 0.0;
  int rc = subject_forward(&s, &cc_eval, X, Y, &e);
  if (rc == NN_OK) {
    if (s.model) {
      size_t hits;
      if (nn_softmax_xent(Y, labels, dY, &L0, &hits) != NN_OK)
        rc = nn_error_set(&e, NN_EINVAL, "bad scores");
    } else {
      mat_copy(dY, R); /* backward may use dY as scratch */
    }
  }
  if (rc == NN_OK)
    rc = subject_backward(&s, X, Y, dY, dX, &e);
  if (rc != NN_OK) {
    passed = verdict(d, size, 0, "forward/backward failed: %s",
                     err_text(rc, &e, et, sizeof et));
    free(A);
    goto out;
  }
  for (size_t k = 0; k < n; k++)
    A[k] = pool_copy(&pl, p[k].grad);
  gsl_matrix *AX = dX ? pool_copy(&pl, dX) : NULL;
  if (pl.oom) {
    free(A);
    passed = oom_verdict(c, d, size);
    goto out;
  }

  /* The loss at the unperturbed point, for the one-sided slopes. */
  grad_tally t = {0};
  rc = grad_loss(&g, &L0, &e);
  for (size_t k = 0; rc == NN_OK && k < n; k++)
    rc = grad_matrix(&g, p[k].value, A[k], L0, p[k].name, &t, &e);
  if (rc == NN_OK && AX)
    rc = grad_matrix(&g, X, AX, L0, "dX", &t, &e);
  free(A);
  if (rc != NN_OK) {
    passed = verdict(d, size, 0, "forward failed during finite differences: "
                     "%s", err_text(rc, &e, et, sizeof et));
    goto out;
  }
  char extra[128] = "";
  if (t.n_kinks)
    append(extra, sizeof extra, "; %zu at kinks", t.n_kinks);
  if (t.n_skipped)
    append(extra, sizeof extra, "; %zu not sampled", t.n_skipped);
  if (t.n_values == 0) {
    passed = verdict(d, size, 1, "no parameters and no input gradient");
  } else if (t.n_bad) {
    passed = verdict(d, size, 0,
                     "%zu of %zu values off; worst %s: analytic %.9g, "
                     "numeric %.9g (|a - n| > %g + %g max(|a|, |n|))%s",
                     t.n_bad, t.n_values, t.where, t.a, t.num, CC_ATOL,
                     CC_RTOL, extra);
  } else {
    passed = verdict(d, size, 1,
                     "%zu values%s within %g + %g max(|a|, |n|); worst %s: "
                     "analytic %.9g, numeric %.9g%s",
                     t.n_values, s.layer ? " (parameters and dX)" : "",
                     CC_ATOL, CC_RTOL, t.where, t.a, t.num, extra);
  }
out:
  subject_destroy(&s);
  pool_free(&pl);
  return passed;
}

/* ------------------------------------------------------------ shapes */

/* What params() handed out first: the array, its length and matrices. */
typedef struct param_ids {
  nn_param *array;
  size_t n;
  mat_id *value, *grad; /* n each */
} param_ids;

static int param_ids_take(param_ids *ids, nn_param *p, size_t n) {
  ids->array = p;
  ids->n = n;
  ids->value = calloc(n ? n : 1, sizeof *ids->value);
  ids->grad = calloc(n ? n : 1, sizeof *ids->grad);
  if (!ids->value || !ids->grad)
    return 0;
  for (size_t k = 0; k < n; k++) {
    ids->value[k] = mat_id_of(p[k].value);
    ids->grad[k] = mat_id_of(p[k].grad);
  }
  return 1;
}

static void param_ids_free(param_ids *ids) {
  free(ids->value);
  free(ids->grad);
}

/* 1 if params() still gives what ids recorded; else 0 and why in d. */
static int params_stable(subject *s, const param_ids *ids, const char *when,
                         char *d, size_t size) {
  size_t n;
  nn_param *p = subject_params(s, &n);
  if (p != ids->array || n != ids->n)
    return verdict(d, size, 0,
                   "params() %s gave %zu parameters at %p, first %zu at %p",
                   when, n, (void *)p, ids->n, (void *)ids->array);
  for (size_t k = 0; k < n; k++)
    if (!p[k].value || !p[k].grad || !mat_id_same(ids->value[k], p[k].value) ||
        !mat_id_same(ids->grad[k], p[k].grad))
      return verdict(d, size, 0,
                     "params() %s: parameter %s is another matrix or shape",
                     when, p[k].name ? p[k].name : "?");
  return 1;
}

static int written(const gsl_matrix *m, const char *what, const char *call,
                   size_t rows, char *d, size_t size) {
  size_t i, j;
  if (all_finite(m, &i, &j))
    return 1;
  return verdict(d, size, 0, "%s at batch %zu left %s[%zu,%zu] unwritten "
                 "(or not finite)", call, rows, what, i, j);
}

/* Forward and backward at batch size B on fresh data; every output and
 * gradient is preset to NaN, so one left unwritten (or accumulated into)
 * shows.  With dx_null, backward gets dX = NULL (a first layer). */
static int shapes_batch(checker *c, pool *pl, subject *s, nn_param *p,
                        size_t n, size_t B, int dx_null, char *d,
                        size_t size) {
  nn_error e;
  char et[600];
  gsl_matrix *X = pool_mat(pl, B, s->n_in), *Y = pool_mat(pl, B, s->n_out);
  gsl_matrix *dY = pool_mat(pl, B, s->n_out);
  gsl_matrix *dX = s->layer && !dx_null ? pool_mat(pl, B, s->n_in) : NULL;
  if (pl->oom)
    return oom_verdict(c, d, size);
  mat_uniform(X, c->drng);
  mat_uniform(dY, c->drng);
  mat_set(Y, NAN);
  int rc = subject_forward(s, &cc_eval, X, Y, &e);
  if (rc != NN_OK)
    return verdict(d, size, 0, "forward on a batch of %zu failed: %s", B,
                   err_text(rc, &e, et, sizeof et));
  if (!written(Y, "Y", "forward", B, d, size))
    return 0;
  for (size_t k = 0; k < n; k++)
    mat_set(p[k].grad, NAN);
  if (dX)
    mat_set(dX, NAN);
  rc = subject_backward(s, X, Y, dY, dX, &e);
  if (rc != NN_OK)
    return verdict(d, size, 0, "backward on a batch of %zu%s failed: %s", B,
                   dx_null ? " (dX NULL)" : "",
                   err_text(rc, &e, et, sizeof et));
  if (dX && !written(dX, "dX", "backward", B, d, size))
    return 0;
  for (size_t k = 0; k < n; k++) {
    char what[96];
    snprintf(what, sizeof what, "the gradient of %s", p[k].name);
    if (!written(p[k].grad, what, "backward", B, d, size))
      return 0;
  }
  return 1;
}

/* A view of rows x cols inside a matrix pad columns wider, the padding
 * set to CC_SENTINEL. */
static gsl_matrix *padded(pool *pl, size_t rows, size_t cols, size_t pad,
                          gsl_matrix_view *v) {
  gsl_matrix *m = pool_mat(pl, rows, cols + pad);
  if (!m)
    return NULL;
  mat_set(m, CC_SENTINEL);
  *v = gsl_matrix_submatrix(m, 0, 0, rows, cols);
  return &v->matrix;
}

static int padding_kept(const gsl_matrix *view, const char *what,
                        const char *call, char *d, size_t size) {
  /* The view's rows are view->tda apart; the padding follows each row. */
  for (size_t i = 0; i < view->size1; i++)
    for (size_t j = view->size2; j < view->tda; j++)
      if (*at(view, i, j) != CC_SENTINEL)
        return verdict(d, size, 0,
                       "%s on views wrote past the end of row %zu of %s "
                       "(tda %zu, %zu columns)",
                       call, i, what, view->tda, view->size2);
  return 1;
}

static int close_enough(const gsl_matrix *a, const gsl_matrix *b, size_t *bi,
                size_t *bj) {
  for (size_t i = 0; i < a->size1; i++)
    for (size_t j = 0; j < a->size2; j++) {
      const double x = *at(a, i, j), y = *at(b, i, j);
      if (!(fabs(x - y) <= CC_VIEW_RTOL * fmax(1.0, fmax(fabs(x), fabs(y))))) {
        *bi = i, *bj = j;
        return 0;
      }
    }
  return 1;
}

/* Forward and backward with every matrix a view (tda > size2): the same
 * numbers as on contiguous matrices, and the padding untouched. */
static int shapes_views(checker *c, pool *pl, subject *s, nn_param *p,
                        size_t n, char *d, size_t size) {
  const size_t B = CC_MAX_BATCH;
  nn_error e;
  char et[600];
  gsl_matrix_view vx, vy, vdy, vdx;
  gsl_matrix *X = pool_mat(pl, B, s->n_in), *Y = pool_mat(pl, B, s->n_out);
  gsl_matrix *dY = pool_mat(pl, B, s->n_out);
  gsl_matrix *dX = s->layer ? pool_mat(pl, B, s->n_in) : NULL;
  gsl_matrix *Xv = padded(pl, B, s->n_in, 3, &vx);
  gsl_matrix *Yv = padded(pl, B, s->n_out, 2, &vy);
  gsl_matrix *dYv = padded(pl, B, s->n_out, 5, &vdy);
  gsl_matrix *dXv = s->layer ? padded(pl, B, s->n_in, 1, &vdx) : NULL;
  gsl_matrix **G = calloc(n ? n : 1, sizeof *G);
  if (!G || pl->oom) {
    free(G);
    return oom_verdict(c, d, size);
  }
  mat_uniform(X, c->drng);
  mat_uniform(dY, c->drng);
  mat_copy(Xv, X);
  mat_copy(dYv, dY);
  int ok = 1;
  int rc = subject_forward(s, &cc_eval, X, Y, &e);
  if (rc == NN_OK)
    rc = subject_backward(s, X, Y, dY, dX, &e);
  for (size_t k = 0; rc == NN_OK && k < n; k++)
    if (!(G[k] = pool_copy(pl, p[k].grad)))
      ok = oom_verdict(c, d, size);
  if (rc == NN_OK && ok)
    rc = subject_forward(s, &cc_eval, Xv, Yv, &e);
  const char *call = "forward";
  if (rc == NN_OK && ok) {
    call = "backward";
    if (!padding_kept(Yv, "Y", "forward", d, size) ||
        !padding_kept(Xv, "X", "forward", d, size))
      ok = 0;
    else
      rc = subject_backward(s, Xv, Yv, dYv, dXv, &e);
  }
  if (rc != NN_OK) {
    free(G);
    return verdict(d, size, 0, "%s on views (tda > columns) failed: %s",
                   call, err_text(rc, &e, et, sizeof et));
  }
  size_t i = 0, j = 0;
  if (ok && !close_enough(Yv, Y, &i, &j))
    ok = verdict(d, size, 0, "forward on views: Y[%zu,%zu] is %.17g, %.17g "
                 "on contiguous matrices", i, j, *at(Yv, i, j), *at(Y, i, j));
  if (ok && dXv && !close_enough(dXv, dX, &i, &j))
    ok = verdict(d, size, 0, "backward on views: dX[%zu,%zu] is %.17g, "
                 "%.17g on contiguous matrices", i, j, *at(dXv, i, j),
                 *at(dX, i, j));
  for (size_t k = 0; ok && k < n; k++)
    if (!close_enough(p[k].grad, G[k], &i, &j))
      ok = verdict(d, size, 0, "backward on views: the gradient of %s "
                   "[%zu,%zu] is %.17g, %.17g on contiguous matrices",
                   p[k].name, i, j, *at(p[k].grad, i, j), *at(G[k], i, j));
  if (ok && dXv && !padding_kept(dXv, "dX", "backward", d, size))
    ok = 0;
  free(G);
  return ok;
}

static int check_shapes(checker *c, char *d, size_t size) {
  pool pl = {0};
  subject s, s2 = {0};
  nn_error e;
  param_ids ids = {0};
  int passed = 0;
  if (subject_create(c, &s, &e) != NN_OK)
    return verdict(d, size, 0, "create failed: %s", msg_of(&e));
  nn_param *p = NULL;
  size_t n = 0;
  if (!usable_params(c, &s, &p, &n, d, size))
    goto out;
  if (!param_ids_take(&ids, p, n)) {
    passed = oom_verdict(c, d, size);
    goto out;
  }
  if (!params_stable(&s, &ids, "called again", d, size))
    goto out;
  /* Same options, same shapes: a second instance must agree. */
  if (subject_create(c, &s2, &e) != NN_OK) {
    passed = verdict(d, size, 0, "a second create failed: %s", msg_of(&e));
    goto out;
  }
  if (s.layer && (s2.out_shape.c != s.out_shape.c ||
                  s2.out_shape.h != s.out_shape.h ||
                  s2.out_shape.w != s.out_shape.w)) {
    passed = verdict(d, size, 0, "two creates gave output shapes %ux%ux%u "
                     "and %ux%ux%u",
                     (unsigned)s.out_shape.c, (unsigned)s.out_shape.h,
                     (unsigned)s.out_shape.w, (unsigned)s2.out_shape.c,
                     (unsigned)s2.out_shape.h, (unsigned)s2.out_shape.w);
    goto out;
  }
  gsl_rng_set(c->drng, CC_SEED_DATA);
  for (size_t B = 1; B <= CC_MAX_BATCH; B++) {
    if (!shapes_batch(c, &pl, &s, p, n, B, 0, d, size))
      goto out;
    if (!params_stable(&s, &ids, "after forward and backward", d, size))
      goto out;
  }
  if (s.layer && !shapes_batch(c, &pl, &s, p, n, CC_MAX_BATCH, 1, d, size))
    goto out;
  if (!shapes_views(c, &pl, &s, p, n, d, size) ||
      !params_stable(&s, &ids, "after forward and backward", d, size))
    goto out;
  char io[64];
  if (s.layer)
    snprintf(io, sizeof io, "1x1x%d -> %ux%ux%u", CC_N_IN,
             (unsigned)s.out_shape.c, (unsigned)s.out_shape.h,
             (unsigned)s.out_shape.w);
  else
    snprintf(io, sizeof io, "%d inputs -> %d scores", CC_N_IN, CC_N_OUT);
  passed = verdict(d, size, 1,
                   "%s; batches 1..%d and views: every output and gradient "
                   "written; params() stable (%zu)",
                   io, CC_MAX_BATCH, n);
out:
  param_ids_free(&ids);
  subject_destroy(&s2);
  subject_destroy(&s);
  pool_free(&pl);
  return passed;
}

/* ------------------------------------------------------------ determinism */

/* One forward and backward of s on (X, dY) with the stream reseeded:
 * outputs into Y, gradients (parameters, then dX) copied into out[]. */
static int det_run(checker *c, pool *pl, subject *s, const gsl_matrix *X,
                   const gsl_matrix *dY0, gsl_matrix *Y, gsl_matrix **out,
                   nn_error *err) {
  const int stochastic = (subject_flags(s) & NN_STOCHASTIC) != 0;
  gsl_rng_set(c->srng, CC_SEED_STREAM);
  const nn_context ctx = {(uint32_t)sizeof(nn_context), stochastic ? 1u : 0u,
                          0, 0, stochastic ? c->srng : NULL};
  gsl_matrix *dY = pool_copy(pl, dY0); /* backward may use it as scratch */
  gsl_matrix *dX = s->layer ? pool_mat(pl, X->size1, X->size2) : NULL;
  if (pl->oom)
    return NN_ENOMEM;
  int rc = subject_forward(s, &ctx, X, Y, err);
  if (rc == NN_OK)
    rc = subject_backward(s, X, Y, dY, dX, err);
  if (rc != NN_OK)
    return rc;
  size_t n;
  nn_param *p = subject_params(s, &n);
  for (size_t k = 0; k < n; k++)
    out[k] = pool_copy(pl, p[k].grad);
  out[n] = dX;
  return pl->oom ? NN_ENOMEM : NN_OK;
}

/* "" when runs a and b gave the same bits, else what differs. */
static const char *det_diff(const gsl_matrix *Ya, const gsl_matrix *Yb,
                            gsl_matrix *const *ga, gsl_matrix *const *gb,
                            const nn_param *p, size_t n) {
  if (!same_bits(Ya, Yb))
    return "the outputs";
  for (size_t k = 0; k < n; k++)
    if (!same_bits(ga[k], gb[k]))
      return p[k].name;
  if (ga[n] && !same_bits(ga[n], gb[n]))
    return "dX";
  return "";
}

static int check_determinism_unit(checker *c, char *d, size_t size) {
  pool pl = {0};
  subject a, b = {0};
  nn_error e;
  char et[600];
  int passed = 0;
  gsl_matrix **g1 = NULL, **g2 = NULL, **g3 = NULL;
  if (subject_create(c, &a, &e) != NN_OK)
    return verdict(d, size, 0, "create failed: %s", msg_of(&e));
  nn_param *p = NULL;
  size_t n = 0;
  if (!usable_params(c, &a, &p, &n, d, size))
    goto out;
  if (subject_create(c, &b, &e) != NN_OK) {
    passed = verdict(d, size, 0, "a second create failed: %s", msg_of(&e));
    goto out;
  }
  size_t nb;
  subject_params(&b, &nb);
  if (nb != n) {
    passed = verdict(d, size, 0, "two instances with the same options have "
                     "%zu and %zu parameters", n, nb);
    goto out;
  }
  g1 = calloc(n + 1, sizeof *g1);
  g2 = calloc(n + 1, sizeof *g2);
  g3 = calloc(n + 1, sizeof *g3);
  gsl_rng_set(c->drng, CC_SEED_DATA);
  const size_t B = CC_MAX_BATCH;
  gsl_matrix *X = pool_mat(&pl, B, a.n_in), *dY = pool_mat(&pl, B, a.n_out);
  gsl_matrix *Y1 = pool_mat(&pl, B, a.n_out), *Y2 = pool_mat(&pl, B, a.n_out);
  gsl_matrix *Y3 = pool_mat(&pl, B, a.n_out);
  if (!g1 || !g2 || !g3 || pl.oom) {
    passed = oom_verdict(c, d, size);
    goto out;
  }
  mat_uniform(X, c->drng);
  mat_uniform(dY, c->drng);
  int rc = det_run(c, &pl, &a, X, dY, Y1, g1, &e);
  if (rc == NN_OK)
    rc = det_run(c, &pl, &a, X, dY, Y2, g2, &e);
  if (rc == NN_OK)
    rc = det_run(c, &pl, &b, X, dY, Y3, g3, &e);
  if (rc == NN_ENOMEM && pl.oom) {
    passed = oom_verdict(c, d, size);
    goto out;
  }
  if (rc != NN_OK) {
    passed = verdict(d, size, 0, "forward/backward failed: %s",
                     err_text(rc, &e, et, sizeof et));
    goto out;
  }
  const int stochastic = (subject_flags(&a) & NN_STOCHASTIC) != 0;
  const char *what = det_diff(Y1, Y2, g1, g2, p, n);
  if (*what) {
    passed = verdict(d, size, 0, "two runs of one instance on the same input%s "
                     "differ in %s", stochastic ? " and random stream" : "",
                     what);
    goto out;
  }
  if (*(what = det_diff(Y1, Y3, g1, g3, p, n))) {
    passed = verdict(d, size, 0, "two instances created from the same seed "
                     "differ in %s on the same input%s", what,
                     stochastic ? " and random stream" : "");
    goto out;
  }
  passed = verdict(d, size, 1,
                   "outputs and gradients bit-identical across runs and "
                   "instances (%s)",
                   stochastic ? "training, the same random stream"
                              : "evaluation");
out:
  free(g1);
  free(g2);
  free(g3);
  subject_destroy(&b);
  subject_destroy(&a);
  pool_free(&pl);
  return passed;
}

/* Two optimizers on equal parameters and gradients, two steps each. */
static int check_determinism_optim(checker *c, char *d, size_t size) {
  pool pl = {0};
  nn_param pa[CC_OPT_N], pb[CC_OPT_N];
  void *oa = NULL, *ob = NULL;
  nn_error e;
  char et[600];
  int passed = 0;
  gsl_rng_set(c->drng, CC_SEED_DATA);
  if (!opt_params(c, &pl, pa) || !opt_params(c, &pl, pb)) {
    passed = oom_verdict(c, d, size);
    goto out;
  }
  for (size_t k = 0; k < CC_OPT_N; k++)
    mat_copy(pb[k].value, pa[k].value);
  if (opt_create(c, pa, CC_OPT_N, &oa, &e) ||
      opt_create(c, pb, CC_OPT_N, &ob, &e)) {
    passed = verdict(d, size, 0, "create failed: %s", msg_of(&e));
    goto out;
  }
  for (int step = 0; step < 2; step++) {
    for (size_t k = 0; k < CC_OPT_N; k++) {
      mat_uniform(pa[k].grad, c->drng);
      mat_copy(pb[k].grad, pa[k].grad);
    }
    int rc = opt_step(c, oa, pa, CC_OPT_N, &e);
    if (rc == NN_OK)
      rc = opt_step(c, ob, pb, CC_OPT_N, &e);
    if (rc != NN_OK) {
      passed = verdict(d, size, 0, "step failed: %s",
                       err_text(rc, &e, et, sizeof et));
      goto out;
    }
    for (size_t k = 0; k < CC_OPT_N; k++)
      if (!same_bits(pa[k].value, pb[k].value)) {
        passed = verdict(d, size, 0, "two optimizers on the same values and "
                         "gradients differ in %s after step %d",
                         pa[k].name, step + 1);
        goto out;
      }
  }
  passed = verdict(d, size, 1, "two optimizers on the same values and "
                   "gradients give the same bits over two steps");
out:
  c->p->optim->destroy(ob);
  c->p->optim->destroy(oa);
  pool_free(&pl);
  return passed;
}

/* ------------------------------------------------------------ state */

static int check_state_unit(checker *c, char *d, size_t size) {
  pool pl = {0};
  subject s;
  nn_error e;
  char et[600];
  int passed = 0;
  if (!(c->p->layer ? c->p->layer->state : c->p->model->state))
    return verdict(d, size, 1, "no state op");
  if (subject_create(c, &s, &e) != NN_OK)
    return verdict(d, size, 0, "create failed: %s", msg_of(&e));
  size_t n, np;
  nn_param *st = subject_state(&s, &n);
  nn_param *p = subject_params(&s, &np);
  if (n == 0) {
    passed = verdict(d, size, 1, "the state op gives no buffers");
    goto out;
  }
  for (size_t k = 0; k < n; k++)
    if (st[k].grad) {
      passed = verdict(d, size, 0, "state buffer %s has a grad (must be "
                       "NULL)", st[k].name ? st[k].name : "?");
      goto out;
    }
  err_clear(&e);
  if (nn_check_param_names(c->p->name, p, np, st, n, &e) != NN_OK) {
    passed = verdict(d, size, 0, "%s", e.msg);
    goto out;
  }
  /* Stable like params(): the core saves and restores through it. */
  gsl_rng_set(c->drng, CC_SEED_DATA);
  gsl_matrix *X = pool_mat(&pl, 2, s.n_in), *Y = pool_mat(&pl, 2, s.n_out);
  gsl_matrix *dY = pool_mat(&pl, 2, s.n_out);
  if (pl.oom) {
    passed = oom_verdict(c, d, size);
    goto out;
  }
  mat_uniform(X, c->drng);
  mat_uniform(dY, c->drng);
  int rc = subject_forward(&s, &cc_eval, X, Y, &e);
  if (rc == NN_OK)
    rc = subject_backward(&s, X, Y, dY, NULL, &e);
  if (rc != NN_OK) {
    passed = verdict(d, size, 0, "forward/backward failed: %s",
                     err_text(rc, &e, et, sizeof et));
    goto out;
  }
  size_t n2;
  nn_param *st2 = subject_state(&s, &n2);
  if (st2 != st || n2 != n) {
    passed = verdict(d, size, 0, "state() gave another array after forward "
                     "and backward");
    goto out;
  }
  passed = verdict(d, size, 1, "%zu state buffer%s, named, grad NULL, stable",
                   n, plural(n));
out:
  subject_destroy(&s);
  pool_free(&pl);
  return passed;
}

/* Copies of the optimizer's state matrices and the parameter values. */
typedef struct opt_snap {
  size_t n_state;
  gsl_matrix **state; /* n_state */
  gsl_matrix *value[CC_OPT_N];
} opt_snap;

static int snap_take(checker *c, pool *pl, void *o, const nn_param *p,
                     opt_snap *sn) {
  nn_param *st = opt_state(c, o, &sn->n_state);
  sn->state = calloc(sn->n_state ? sn->n_state : 1, sizeof *sn->state);
  if (!sn->state)
    return 0;
  for (size_t k = 0; k < sn->n_state; k++)
    if (!st[k].value || !(sn->state[k] = pool_copy(pl, st[k].value)))
      return 0;
  for (size_t k = 0; k < CC_OPT_N; k++)
    if (!(sn->value[k] = pool_copy(pl, p[k].value)))
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
    if (!same_bits(a->value[k], b->value[k]))
      return p[k].name;
  for (size_t k = 0; k < a->n_state; k++)
    if (!same_bits(a->state[k], b->state[k]))
      return st[k].name ? st[k].name : "a state buffer";
  return "";
}

static void set_grads(nn_param *p, gsl_matrix *const *g) {
  for (size_t k = 0; k < CC_OPT_N; k++)
    mat_copy(p[k].grad, g[k]);
}

/* How a step in parts is driven. */
enum { PARTS_ROWS, PARTS_BLOCK, PARTS_RULE };
static const char *const parts_mode_name[] = {"rows", "block", "sgd-rule"};

/* The extension's member, read only when its size covers it. */
#define CC_EXT_HAS(ext, type, member)                                        \
  ((ext)->size >= offsetof(type, member) + sizeof((ext)->member) &&         \
   (ext)->member)

/* One step of o on p in parts: begin, every row of every parameter (one
 * row at a time, or each row as two blocks of columns, or through the
 * plain SGD rule where the optimizer hands it over), end. */
static int parts_step(pool *pl, void *o, nn_param *p, int mode,
                      const nn_optim_parts *pt, const nn_optim_sgd_rule *rule,
                      nn_error *err) {
  int rc = NN_OK;
  err_clear(err);
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
        gsl_matrix *g = pool_mat(pl, 1, c1 - c0);
        if (!g)
          return NN_ENOMEM;
        for (size_t j = c0; j < c1; j++)
          *at(g, 0, j - c0) = *at(p[k].grad, r, j);
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
static int check_parts_mode(checker *c, int mode, char *d, size_t size) {
  pool pl = {0};
  nn_param pa[CC_OPT_N], pb[CC_OPT_N];
  void *oa = NULL, *ob = NULL;
  nn_error e;
  char et[600];
  int ok = 0;
  gsl_rng_set(c->drng, CC_SEED_DATA + 1);
  if (!opt_params(c, &pl, pa) || !opt_params(c, &pl, pb)) {
    ok = oom_verdict(c, d, size);
    goto out;
  }
  for (size_t k = 0; k < CC_OPT_N; k++)
    mat_copy(pb[k].value, pa[k].value);
  if (opt_create(c, pa, CC_OPT_N, &oa, &e) ||
      opt_create(c, pb, CC_OPT_N, &ob, &e)) {
    ok = verdict(d, size, 0, "create failed: %s", msg_of(&e));
    goto out;
  }
  const nn_optim_ops *ops = c->p->optim;
  const nn_optim_parts *pt = ops->extension(ob, NN_EXT_OPTIM_PARTS);
  const nn_optim_sgd_rule *rule =
      mode == PARTS_RULE ? ops->extension(ob, NN_EXT_OPTIM_SGD_RULE) : NULL;
  if (!pt || !CC_EXT_HAS(pt, nn_optim_parts, rows) ||
      (mode == PARTS_BLOCK && !CC_EXT_HAS(pt, nn_optim_parts, block)) ||
      (mode == PARTS_RULE &&
       (!rule || !CC_EXT_HAS(rule, nn_optim_sgd_rule, rule)))) {
    ok = verdict(d, size, 0, "the extension offered by one instance is "
                 "missing from another");
    goto out;
  }
  for (int step = 1; step <= 2; step++) {
    for (size_t k = 0; k < CC_OPT_N; k++) {
      mat_uniform(pa[k].grad, c->drng);
      mat_copy(pb[k].grad, pa[k].grad);
    }
    int rc = opt_step(c, oa, pa, CC_OPT_N, &e);
    if (rc != NN_OK) {
      ok = verdict(d, size, 0, "step failed: %s",
                   err_text(rc, &e, et, sizeof et));
      goto out;
    }
    rc = parts_step(&pl, ob, pb, mode, pt, rule, &e);
    if (rc == NN_ENOMEM && pl.oom) {
      ok = oom_verdict(c, d, size);
      goto out;
    }
    if (rc != NN_OK) {
      ok = verdict(d, size, 0, "step in parts (%s) failed: %s",
                   parts_mode_name[mode], err_text(rc, &e, et, sizeof et));
      goto out;
    }
    size_t na, nb;
    nn_param *sa = opt_state(c, oa, &na), *sb = opt_state(c, ob, &nb);
    const char *what = na != nb ? "the number of state buffers" : "";
    for (size_t k = 0; !*what && k < CC_OPT_N; k++)
      if (!same_bits(pa[k].value, pb[k].value))
        what = pa[k].name;
    for (size_t k = 0; !*what && k < na; k++)
      if (sa[k].value && sb[k].value && !same_bits(sa[k].value, sb[k].value))
        what = sa[k].name ? sa[k].name : "a state buffer";
    if (*what) {
      ok = verdict(d, size, 0, "a step in parts (%s) differs from step() in "
                   "%s after step %d", parts_mode_name[mode], what, step);
      goto out;
    }
  }
  ok = 1;
out:
  if (oa)
    c->p->optim->destroy(oa);
  if (ob)
    c->p->optim->destroy(ob);
  pool_free(&pl);
  return ok;
}

/* Which ways of stepping in parts the optimizer offers (bit per mode). */
static unsigned parts_modes(checker *c, void *o) {
  const nn_optim_ops *ops = c->p->optim;
  if (!ops->extension)
    return 0;
  const nn_optim_parts *pt = ops->extension(o, NN_EXT_OPTIM_PARTS);
  if (!pt || !CC_EXT_HAS(pt, nn_optim_parts, rows))
    return 0;
  unsigned modes = 1u << PARTS_ROWS;
  if (CC_EXT_HAS(pt, nn_optim_parts, block))
    modes |= 1u << PARTS_BLOCK;
  const nn_optim_sgd_rule *r = ops->extension(o, NN_EXT_OPTIM_SGD_RULE);
  if (r && CC_EXT_HAS(r, nn_optim_sgd_rule, rule))
    modes |= 1u << PARTS_RULE;
  return modes;
}

/* step; save state and values; step -> R1; restore; step -> R2 == R1.
 * A state the optimizer keeps but does not expose (a step counter, a
 * moment) makes R2 differ: resuming from a checkpoint would too. */
static int check_state_optim(checker *c, char *d, size_t size) {
  pool pl = {0};
  nn_param p[CC_OPT_N];
  gsl_matrix *g1[CC_OPT_N], *g2[CC_OPT_N];
  opt_snap saved = {0}, r1 = {0}, r2 = {0};
  void *o = NULL;
  nn_error e;
  char et[600];
  int passed = 0;
  gsl_rng_set(c->drng, CC_SEED_DATA);
  if (!opt_params(c, &pl, p)) {
    passed = oom_verdict(c, d, size);
    goto out;
  }
  for (size_t k = 0; k < CC_OPT_N; k++) {
    g1[k] = pool_mat(&pl, p[k].grad->size1, p[k].grad->size2);
    g2[k] = pool_mat(&pl, p[k].grad->size1, p[k].grad->size2);
    if (!g1[k] || !g2[k]) {
      passed = oom_verdict(c, d, size);
      goto out;
    }
    mat_uniform(g1[k], c->drng);
    mat_uniform(g2[k], c->drng);
  }
  if (opt_create(c, p, CC_OPT_N, &o, &e) != NN_OK) {
    passed = verdict(d, size, 0, "create failed: %s", msg_of(&e));
    goto out;
  }
  size_t ns;
  nn_param *st = opt_state(c, o, &ns);
  for (size_t k = 0; k < ns; k++)
    if (!st[k].value || st[k].grad) {
      passed = verdict(d, size, 0, "state buffer %s has %s",
                       st[k].name ? st[k].name : "?",
                       st[k].value ? "a grad (must be NULL)" : "no value");
      goto out;
    }
  set_grads(p, g1);
  int rc = opt_step(c, o, p, CC_OPT_N, &e);
  if (rc == NN_OK && !snap_take(c, &pl, o, p, &saved))
    rc = NN_ENOMEM;
  if (rc == NN_OK) {
    set_grads(p, g2);
    rc = opt_step(c, o, p, CC_OPT_N, &e);
  }
  if (rc == NN_OK && !snap_take(c, &pl, o, p, &r1))
    rc = NN_ENOMEM;
  if (rc == NN_OK) {
    /* Restore what a checkpoint holds, through the state op again. */
    size_t n2;
    nn_param *st2 = opt_state(c, o, &n2);
    if (n2 != saved.n_state) {
      passed = verdict(d, size, 0, "state() gave %zu buffers, then %zu",
                       saved.n_state, n2);
      goto out;
    }
    for (size_t k = 0; k < n2; k++) {
      if (!st2[k].value || !same_shape(st2[k].value, saved.state[k])) {
        passed = verdict(d, size, 0, "state buffer %s changed shape",
                         st2[k].name ? st2[k].name : "?");
        goto out;
      }
      mat_copy(st2[k].value, saved.state[k]);
    }
    for (size_t k = 0; k < CC_OPT_N; k++)
      mat_copy(p[k].value, saved.value[k]);
    set_grads(p, g2);
    rc = opt_step(c, o, p, CC_OPT_N, &e);
  }
  if (rc == NN_OK && !snap_take(c, &pl, o, p, &r2))
    rc = NN_ENOMEM;
  if (rc == NN_ENOMEM && pl.oom) {
    passed = oom_verdict(c, d, size);
    goto out;
  }
  if (rc != NN_OK) {
    passed = verdict(d, size, 0, "step failed: %s",
                     err_text(rc, &e, et, sizeof et));
    goto out;
  }
  st = opt_state(c, o, &ns);
  const char *what = snap_diff(&r1, &r2, p, st);
  if (*what) {
    passed = verdict(d, size, 0, "a step after restoring the saved state "
                     "and values differs in %s: the optimizer keeps state "
                     "that state() does not expose", what);
    goto out;
  }
  char parts[160] = "";
  const unsigned modes = parts_modes(c, o);
  for (int m = PARTS_ROWS; m <= PARTS_RULE; m++) {
    if (!(modes & (1u << m)))
      continue;
    if (!check_parts_mode(c, m, d, size))
      goto out;
    append(parts, sizeof parts, "%s%s", parts[0] ? ", " : "",
           parts_mode_name[m]);
  }
  passed = verdict(d, size, 1, "%zu state buffer%s; a restored step repeats "
                   "bit for bit%s%s%s",
                   ns, plural(ns), parts[0] ? "; steps in parts (" : "", parts,
                   parts[0] ? ") give step()'s bits" : "");
out:
  if (o)
    c->p->optim->destroy(o);
  free(saved.state);
  free(r1.state);
  free(r2.state);
  pool_free(&pl);
  return passed;
}

/* ------------------------------------------------------------ errors */

/* A refused bad call must say why: code and message. */
static int refused(int rc, const nn_error *e, const char *call, char *d,
                   size_t size) {
  if (rc == NN_OK)
    return verdict(d, size, 0, "%s was accepted", call);
  if (!e->msg[0])
    return verdict(d, size, 0, "%s returned %s without a message", call,
                   nn_err_name(rc));
  return 1;
}

static int check_errors_unit(checker *c, char *d, size_t size) {
  pool pl = {0};
  subject s;
  nn_error e;
  char et[600], call[96];
  int passed = 0;
  if (subject_create(c, &s, &e) != NN_OK)
    return verdict(d, size, 0, "create failed: %s", msg_of(&e));
  gsl_rng_set(c->drng, CC_SEED_DATA);
  const size_t B = 2;
  gsl_matrix *Xw = pool_mat(&pl, B, s.n_in + 1), *X = pool_mat(&pl, B, s.n_in);
  gsl_matrix *Y = pool_mat(&pl, B, s.n_out);
  gsl_matrix *dYw = pool_mat(&pl, B, s.n_out + 1);
  gsl_matrix *dX = s.layer ? pool_mat(&pl, B, s.n_in) : NULL;
  if (pl.oom) {
    passed = oom_verdict(c, d, size);
    goto out;
  }
  mat_uniform(Xw, c->drng);
  mat_uniform(X, c->drng);
  mat_uniform(dYw, c->drng);
  /* Wider than expected, so a plugin that does not check reads in bounds. */
  snprintf(call, sizeof call, "forward on a %zux%zu batch (width %zu)", B,
           s.n_in + 1, s.n_in);
  int rc = subject_forward(&s, &cc_eval, Xw, Y, &e);
  if (!refused(rc, &e, call, d, size))
    goto out;
  char m1[600];
  err_text(rc, &e, m1, sizeof m1);
  rc = subject_forward(&s, &cc_eval, X, Y, &e);
  if (rc != NN_OK) {
    passed = verdict(d, size, 0, "forward on a good batch after a refused "
                     "one failed: %s", err_text(rc, &e, et, sizeof et));
    goto out;
  }
  snprintf(call, sizeof call, "backward with a %zux%zu %s", B, s.n_out + 1,
           s.layer ? "dY" : "dscores");
  rc = subject_backward(&s, X, Y, dYw, dX, &e);
  if (!refused(rc, &e, call, d, size))
    goto out;
  passed = verdict(d, size, 1, "wrong widths refused with a message: %s",
                   m1);
out:
  subject_destroy(&s);
  pool_free(&pl);
  return passed;
}

static int check_errors_optim(checker *c, char *d, size_t size) {
  pool pl = {0};
  nn_param p[CC_OPT_N];
  void *o = NULL;
  nn_error e;
  int passed = 0;
  gsl_rng_set(c->drng, CC_SEED_DATA);
  if (!opt_params(c, &pl, p)) {
    passed = oom_verdict(c, d, size);
    goto out;
  }
  /* No parameters: refusing is optional, but then with a message. */
  int rc = opt_create(c, p, 0, &o, &e);
  const int empty_refused = rc != NN_OK;
  if (rc != NN_OK && !e.msg[0]) {
    passed = verdict(d, size, 0, "create with no parameters returned %s "
                     "without a message", nn_err_name(rc));
    goto out;
  }
  if (o)
    c->p->optim->destroy(o);
  o = NULL;
  if (opt_create(c, p, CC_OPT_N, &o, &e) != NN_OK) {
    passed = verdict(d, size, 0, "create failed: %s", msg_of(&e));
    goto out;
  }
  /* A grad of another shape than its value: a 2x3 view inside a 4x5
   * matrix, so that a plugin that does not check stays in bounds. */
  gsl_matrix *big = pool_mat(&pl, 4, 5);
  if (!big) {
    passed = oom_verdict(c, d, size);
    goto out;
  }
  gsl_matrix_view gv = gsl_matrix_submatrix(big, 0, 0, 2, 3);
  nn_param bad[CC_OPT_N] = {p[0], p[1]};
  bad[0].grad = &gv.matrix;
  rc = opt_step(c, o, bad, CC_OPT_N, &e);
  if (!refused(rc, &e, "step with a 2x3 gradient for the 3x4 W", d, size))
    goto out;
  char m[600];
  err_text(rc, &e, m, sizeof m);
  /* Fewer parameters than created for: optional, with a message. */
  rc = opt_step(c, o, p, 1, &e);
  if (rc != NN_OK && !e.msg[0]) {
    passed = verdict(d, size, 0, "step on 1 of the 2 parameters returned %s "
                     "without a message", nn_err_name(rc));
    goto out;
  }
  passed = verdict(d, size, 1, "mismatched gradient refused with a message "
                   "(%s); no parameters %s", m,
                   empty_refused ? "refused with a message" : "accepted");
out:
  if (o)
    c->p->optim->destroy(o);
  pool_free(&pl);
  return passed;
}

/* ------------------------------------------------------------ create, names */

static int check_create(checker *c, char *d, size_t size) {
  nn_error e;
  char kind[64];
  if (c->p->optim) {
    pool pl = {0};
    nn_param p[CC_OPT_N];
    void *o = NULL;
    gsl_rng_set(c->drng, CC_SEED_DATA);
    if (!opt_params(c, &pl, p)) {
      pool_free(&pl);
      return oom_verdict(c, d, size);
    }
    int rc = opt_create(c, p, CC_OPT_N, &o, &e);
    if (rc == NN_OK)
      c->p->optim->destroy(o);
    pool_free(&pl);
    snprintf(kind, sizeof kind, "on a 3x4 weight and a 1x4 bias");
    if (rc != NN_OK)
      return verdict(d, size, 0, "create %s failed: %s; options: %s", kind,
                     msg_of(&e), c->opts_text);
    return verdict(d, size, 1, "%s; options: %s", kind, c->opts_text);
  }
  subject s;
  int rc = subject_create(c, &s, &e);
  if (c->p->layer)
    snprintf(kind, sizeof kind, "input 1x1x%d, batches up to %d", CC_N_IN,
             CC_MAX_BATCH);
  else
    snprintf(kind, sizeof kind, "%d inputs, %d classes, batches up to %d",
             CC_N_IN, CC_N_OUT, CC_MAX_BATCH);
  if (rc != NN_OK)
    return verdict(d, size, 0, "create (%s) failed: %s; options: %s", kind,
                   msg_of(&e), c->opts_text);
  subject_destroy(&s);
  return verdict(d, size, 1, "%s; options: %s", kind, c->opts_text);
}

static void names_list(const nn_param *p, size_t n, char *buf, size_t size) {
  for (size_t k = 0; k < n; k++)
    append(buf, size, "%s%s", buf[0] ? ", " : "", p[k].name);
}

static int check_names(checker *c, char *d, size_t size) {
  nn_error e;
  err_clear(&e);
  char list[256] = "";
  int passed;
  if (c->p->optim) {
    pool pl = {0};
    nn_param p[CC_OPT_N];
    void *o = NULL;
    gsl_rng_set(c->drng, CC_SEED_DATA);
    if (!opt_params(c, &pl, p)) {
      pool_free(&pl);
      return oom_verdict(c, d, size);
    }
    if (opt_create(c, p, CC_OPT_N, &o, &e) != NN_OK) {
      pool_free(&pl);
      return verdict(d, size, 0, "create failed: %s", msg_of(&e));
    }
    size_t ns;
    nn_param *st = opt_state(c, o, &ns);
    err_clear(&e);
    if (nn_check_param_names(c->p->name, NULL, 0, st, ns, &e) != NN_OK) {
      passed = verdict(d, size, 0, "%s", e.msg);
    } else {
      names_list(st, ns, list, sizeof list);
      passed = verdict(d, size, 1, "%zu state buffer%s%s%s", ns, plural(ns),
                       ns ? ": " : "", list);
    }
    c->p->optim->destroy(o);
    pool_free(&pl);
    return passed;
  }
  subject s;
  if (subject_create(c, &s, &e) != NN_OK)
    return verdict(d, size, 0, "create failed: %s", msg_of(&e));
  size_t n, ns;
  nn_param *p = subject_params(&s, &n);
  nn_param *st = subject_state(&s, &ns);
  err_clear(&e);
  if (nn_check_param_names(c->p->name, p, n, st, ns, &e) != NN_OK) {
    passed = verdict(d, size, 0, "%s", e.msg);
  } else {
    names_list(p, n, list, sizeof list);
    names_list(st, ns, list, sizeof list);
    passed = verdict(d, size, 1, "%zu parameter%s, %zu state buffer%s%s%s",
                     n, plural(n), ns, plural(ns), n + ns ? ": " : "", list);
  }
  subject_destroy(&s);
  return passed;
}

/* ------------------------------------------------------------ driver */

typedef int (*check_fn)(checker *c, char *d, size_t size);

typedef struct check_entry {
  const char *name;
  check_fn unit;  /* models and layers (NULL: not for them) */
  check_fn optim; /* optimizers (NULL: not for them) */
} check_entry;

static const check_entry checks[] = {
    {"names", check_names, check_names},
    {"gradient", check_gradient, NULL},
    {"shapes", check_shapes, NULL},
    {"determinism", check_determinism_unit, check_determinism_optim},
    {"state", check_state_unit, check_state_optim},
    {"errors", check_errors_unit, check_errors_optim},
};

static void run_check(checker *c, const char *name, check_fn fn) {
  char detail[CC_DETAIL];
  detail[0] = '\0';
  const int passed = fn(c, detail, sizeof detail);
  if (!passed)
    c->n_failed++;
  c->report(c->user, name, passed, detail);
}

int nn_contract_check(const nn_plugin *p, nn_contract_report report,
                      void *user, size_t *n_failed, nn_error *err) {
  if (n_failed)
    *n_failed = 0;
  if (!p || !report)
    return nn_error_set(err, NN_EINVAL, "contract check: NULL argument");
  const int is_unit = (p->kind == NN_KIND_LAYER && p->layer) ||
                      (p->kind == NN_KIND_MODEL && p->model);
  if (!is_unit && !(p->kind == NN_KIND_OPTIMIZER && p->optim))
    return nn_error_set(err, NN_EINVAL,
                        "contract check: '%s' is not a loaded model, layer "
                        "or optimizer", p->name ? p->name : "?");
  /* Only the ops of the plugin's kind are looked at. */
  nn_plugin view = *p;
  view.model = p->kind == NN_KIND_MODEL ? p->model : NULL;
  view.layer = p->kind == NN_KIND_LAYER ? p->layer : NULL;
  view.optim = p->kind == NN_KIND_OPTIMIZER ? p->optim : NULL;
  checker c = {.p = &view, .report = report, .user = user};
  c.wrng = gsl_rng_alloc(gsl_rng_mt19937);
  c.drng = gsl_rng_alloc(gsl_rng_mt19937);
  c.srng = gsl_rng_alloc(gsl_rng_mt19937);
  int rc = NN_OK;
  if (!c.wrng || !c.drng || !c.srng) {
    rc = nn_error_set(err, NN_ENOMEM, "contract check: out of memory");
    goto out;
  }
  char detail[CC_DETAIL];
  int created = 0;
  if (build_options(&c, detail, sizeof detail) == 0)
    created = check_create(&c, detail, sizeof detail);
  if (!created)
    c.n_failed++;
  report(user, "create", created, detail);
  /* Without an instance there is nothing more to check. */
  for (size_t i = 0; created && i < sizeof checks / sizeof *checks; i++) {
    check_fn fn = is_unit ? checks[i].unit : checks[i].optim;
    if (fn)
      run_check(&c, checks[i].name, fn);
  }
  if (c.oom)
    rc = nn_error_set(err, NN_ENOMEM,
                      "contract check: out of memory (some checks did not "
                      "run to the end)");
out:
  if (n_failed)
    *n_failed = c.n_failed;
  free(c.opts);
  if (c.wrng)
    gsl_rng_free(c.wrng);
  if (c.drng)
    gsl_rng_free(c.drng);
  if (c.srng)
    gsl_rng_free(c.srng);
  return rc;
}
