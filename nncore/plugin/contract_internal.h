/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private: what the contract check files share (see <nn/contract.h>).
 *
 *   contract.c                 nn_contract_check: the order of the checks,
 *                              their verdicts and the report
 *   contract_options.c         the option values instances are made with
 *   contract_matrix.c          a check's matrices (the pool): made, filled,
 *                              compared
 *   contract_subject.c         a layer or model instance behind one
 *                              interface (a "subject")
 *   contract_subject_checks.c  create, names, determinism, state, errors
 *                              of a subject
 *   contract_gradient.c        gradient (subjects)
 *   contract_shapes.c          shapes (subjects)
 *   contract_optim.c           an optimizer instance and its checks
 *   contract_optim_parts.c     a step in parts gives step()'s bits (part
 *                              of an optimizer's state check)
 *   contract_schedule.c        a schedule instance and its checks
 *
 * Not a hot path: every check makes its own instances on tiny shapes and
 * its own matrices (kept in a pool, freed at the end of the check), so
 * that one check's failure cannot leave another a broken instance.  Test
 * data come from fixed seeds: a plugin gets the same verdict every run.
 *
 * Libraries must not touch process-wide state, so nothing here prints or
 * changes GSL's error handler; matrices are made with
 * nn_matrix_calloc_aligned and copied with plain loops, neither of which
 * goes through that handler.
 *
 * Functions shared between the files are nn__cc_* ("contract check"):
 * libnn exports every non-static symbol, and the prefix keeps these out
 * of a plugin's way. */
#ifndef NN_CONTRACT_INTERNAL_H
#define NN_CONTRACT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <gsl/gsl_matrix.h>
#include <gsl/gsl_rng.h>

#include <nn/contract.h>
#include <nn/plugin.h>

/* The shapes the checks run on: small enough for finite differences on
 * every value, large enough to catch a transposed index. */
#define CC_N_IN 6      /* a model's inputs */
#define CC_N_OUT 4     /* a model's classes */
/* A layer's examples are small images, so that layers that read the
 * image's structure (conv2d, maxpool2d) are checked too: channels, height
 * and width all unequal, so a swapped index shows, and height and width
 * even, so the usual 2 x 2 window tiles them. */
#define CC_LAYER_C 2
#define CC_LAYER_H 4
#define CC_LAYER_W 6
#define CC_MAX_BATCH 5 /* every batch size 1..this is run */

#define CC_SEED_WEIGHTS 20240501UL /* the rng lent to create */
#define CC_SEED_DATA 7UL           /* inputs, labels, gradients */
#define CC_SEED_STREAM 99UL        /* ctx->rng of stochastic plugins */

#if defined(__GNUC__)
#define CC_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define CC_PRINTF(fmt, args)
#endif

/* ------------------------------------------------------------ checker */

typedef struct nn__cc_checker {
  const nn_plugin *p;
  nn_contract_report report;
  void *user;
  size_t n_failed;
  nn_value *opts;      /* one per option; NULL for a plugin without options */
  char opts_text[512]; /* "units=4 (required: stand-in), bias=true" */
  gsl_rng *wrng;       /* lent to create, reseeded for each instance */
  gsl_rng *drng;       /* test data, reseeded by each check */
  gsl_rng *srng;       /* ctx->rng for stochastic plugins */
  int oom;             /* the checker itself ran out of memory */
} nn__cc_checker;

/* A check: fills the detail d (size bytes) and returns passed (1) or
 * not (0). */
typedef int (*nn__cc_check_fn)(nn__cc_checker *c, char *d, size_t size);

/* (contract.c) A check's verdict: fills the detail and returns passed. */
int nn__cc_verdict(char *d, size_t size, int passed, const char *fmt, ...)
    CC_PRINTF(4, 5);

/* (contract.c) The checker itself ran out of memory: marks it, says so
 * in d and returns 0. */
int nn__cc_oom_verdict(nn__cc_checker *c, char *d, size_t size);

/* (contract.c) The plugin's error for a detail, "NN_EINVAL: message",
 * in buf; says so when the message is missing (a contract breach of its
 * own).  Returns buf. */
const char *nn__cc_err_text(int rc, const nn_error *e, char *buf,
                            size_t size);

/* (contract.c) printf to the end of the string in buf, cut at size. */
void nn__cc_append(char *buf, size_t size, const char *fmt, ...)
    CC_PRINTF(3, 4);

/* (contract.c) The names of p[0..n) appended to buf, ", " between. */
void nn__cc_names_list(const nn_param *p, size_t n, char *buf, size_t size);

/* (contract.c) A bad call (described by call) must be refused, and say
 * why: 1 when it returned an error with a message, else 0 and what it
 * did in d. */
int nn__cc_refused(int rc, const nn_error *e, const char *call, char *d,
                   size_t size);

/* (contract_options.c) c->opts from the defaults (stand-ins for required
 * options), described in c->opts_text.  Returns 0, or -1 with the reason
 * in d when a value does not parse (the loader checks defaults, so only
 * a stand-in can). */
int nn__cc_build_options(nn__cc_checker *c, char *d, size_t size);

/* "s" unless n is 1: "1 parameter", "2 parameters". */
static inline const char *nn__cc_plural(size_t n) { return n == 1 ? "" : "s"; }

static inline void nn__cc_err_clear(nn_error *e) {
  e->code = NN_OK;
  e->msg[0] = '\0';
}

static inline const char *nn__cc_msg_of(const nn_error *e) {
  return e->msg[0] ? e->msg : "(no message)";
}

/* The list a params() or state() op gives (fn NULL: none); *n is 0
 * whenever the list is NULL. */
static inline nn_param *nn__cc_param_list(nn_param *(*fn)(void *, size_t *),
                                          void *self, size_t *n) {
  *n = 0;
  nn_param *p = fn ? fn(self, n) : NULL;
  if (!p)
    *n = 0;
  return p;
}

/* ------------------------------------------------------------ matrices
 * (contract_matrix.c) */

/* Matrices owned by one check, freed together at its end. */
typedef struct nn__cc_pool {
  gsl_matrix **m;
  size_t n, cap;
  int oom;
} nn__cc_pool;

/* A zeroed rows x cols matrix of the pool, or NULL (and pl->oom set). */
gsl_matrix *nn__cc_pool_mat(nn__cc_pool *pl, size_t rows, size_t cols);
/* The same, filled from r (mat_uniform), or NULL (r is not drawn from). */
gsl_matrix *nn__cc_pool_random(nn__cc_pool *pl, size_t rows, size_t cols,
                               gsl_rng *r);
/* A copy of m in the pool, or NULL. */
gsl_matrix *nn__cc_pool_copy(nn__cc_pool *pl, const gsl_matrix *m);
void nn__cc_pool_free(nn__cc_pool *pl);

static inline double *nn__cc_at(const gsl_matrix *m, size_t i, size_t j) {
  return m->data + i * m->tda + j;
}

static inline int nn__cc_same_shape(const gsl_matrix *a,
                                    const gsl_matrix *b) {
  return a->size1 == b->size1 && a->size2 == b->size2;
}

void nn__cc_mat_set(gsl_matrix *m, double v);
/* Every element uniform in [-1, 1), drawn row by row. */
void nn__cc_mat_uniform(gsl_matrix *m, gsl_rng *r);
/* dst = src (same shape, checked by the caller). */
void nn__cc_mat_copy(gsl_matrix *dst, const gsl_matrix *src);
int nn__cc_same_bits(const gsl_matrix *a, const gsl_matrix *b);
/* 1 when every element is finite; else 0 and the first one's place. */
int nn__cc_all_finite(const gsl_matrix *m, size_t *bi, size_t *bj);

/* What a call may not change in the caller's matrix. */
typedef struct nn__cc_mat_id {
  size_t size1, size2, tda;
  double *data;
} nn__cc_mat_id;

static inline nn__cc_mat_id nn__cc_mat_id_of(const gsl_matrix *m) {
  return (nn__cc_mat_id){m->size1, m->size2, m->tda, m->data};
}

static inline int nn__cc_mat_id_same(nn__cc_mat_id a, const gsl_matrix *m) {
  return a.size1 == m->size1 && a.size2 == m->size2 && a.tda == m->tda &&
         a.data == m->data;
}

/* ------------------------------------------------------------ subjects
 * (contract_subject.c) A model or a layer instance, behind one
 * interface: forward maps n_in to n_out values per row; backward takes
 * dY (dscores) and, for a layer, writes dX when it is non-NULL. */
typedef struct nn__cc_subject {
  const nn_layer_ops *layer; /* exactly one of layer, model is set */
  const nn_model_ops *model;
  void *self;
  size_t n_in, n_out;
  nn_shape out_shape; /* a layer's, from create */
} nn__cc_subject;

/* The context of an evaluation forward (not training, no stream). */
extern const nn_context nn__cc_eval;

/* An instance with c->opts on the check shapes, the weights rng
 * reseeded.  On failure s->self is NULL and the plugin's error in err. */
int nn__cc_subject_create(nn__cc_checker *c, nn__cc_subject *s,
                          nn_error *err);
/* subject_create for a check: 1, or 0 with "<what> failed: <message>"
 * in d (what: "create", "a second create"). */
int nn__cc_subject_open(nn__cc_checker *c, nn__cc_subject *s,
                        const char *what, char *d, size_t size);
void nn__cc_subject_destroy(nn__cc_subject *s);
nn_param *nn__cc_subject_params(nn__cc_subject *s, size_t *n);
nn_param *nn__cc_subject_state(nn__cc_subject *s, size_t *n);
uint32_t nn__cc_subject_flags(const nn__cc_subject *s);
/* forward and backward on copies of the headers of the matrices the
 * plugin writes: a plugin that changes a header fails the call. */
int nn__cc_subject_forward(nn__cc_subject *s, const nn_context *ctx,
                           const gsl_matrix *X, gsl_matrix *Y,
                           nn_error *err);
int nn__cc_subject_backward(nn__cc_subject *s, const gsl_matrix *X,
                            const gsl_matrix *Y, gsl_matrix *dY,
                            gsl_matrix *dX, nn_error *err);
/* The instance's parameters, usable by the checks (present, named, with
 * grads of their shape); 0 and the reason in d when not. */
int nn__cc_usable_params(nn__cc_checker *c, nn__cc_subject *s,
                         nn_param **out, size_t *n, char *d, size_t size);

/* (contract_subject_checks.c, contract_gradient.c, contract_shapes.c) */
int nn__cc_check_create_subject(nn__cc_checker *c, char *d, size_t size);
int nn__cc_check_names_subject(nn__cc_checker *c, char *d, size_t size);
int nn__cc_check_gradient(nn__cc_checker *c, char *d, size_t size);
int nn__cc_check_shapes(nn__cc_checker *c, char *d, size_t size);
int nn__cc_check_determinism_subject(nn__cc_checker *c, char *d,
                                     size_t size);
int nn__cc_check_state_subject(nn__cc_checker *c, char *d, size_t size);
int nn__cc_check_errors_subject(nn__cc_checker *c, char *d, size_t size);

/* ------------------------------------------------------------ optimizers
 * (contract_optim.c) An optimizer is checked on a 3 x 4 weight "W" and a
 * 1 x 4 bias "b", values and grads from the data stream. */
#define CC_OPT_N 2

/* Those parameters, in the pool: 1, or 0 when out of memory. */
int nn__cc_optim_params(nn__cc_checker *c, nn__cc_pool *pl, nn_param *p);
/* An instance on p[0..n); on failure *out is NULL and the error in err. */
int nn__cc_optim_create(nn__cc_checker *c, nn_param *p, size_t n, void **out,
                        nn_error *err);
nn_param *nn__cc_optim_state(nn__cc_checker *c, void *o, size_t *n);
int nn__cc_optim_step(nn__cc_checker *c, void *o, nn_param *p, size_t n,
                      nn_error *err);

/* Two optimizers on equal parameters, for checks that step both and
 * compare the bits. */
typedef struct nn__cc_optim_pair {
  nn_param a[CC_OPT_N], b[CC_OPT_N];
  void *oa, *ob; /* NULL until made; the caller destroys them */
} nn__cc_optim_pair;

/* The data stream reseeded with seed, the parameters (b's values a copy
 * of a's) and both instances: 1, or 0 with why in d. */
int nn__cc_optim_pair_open(nn__cc_checker *c, nn__cc_pool *pl,
                           unsigned long seed, nn__cc_optim_pair *pr,
                           char *d, size_t size);
/* New gradients for a from the data stream, copied to b. */
void nn__cc_optim_pair_new_grads(nn__cc_checker *c, nn__cc_optim_pair *pr);

int nn__cc_check_create_optim(nn__cc_checker *c, char *d, size_t size);
int nn__cc_check_names_optim(nn__cc_checker *c, char *d, size_t size);
int nn__cc_check_determinism_optim(nn__cc_checker *c, char *d, size_t size);
int nn__cc_check_state_optim(nn__cc_checker *c, char *d, size_t size);
int nn__cc_check_errors_optim(nn__cc_checker *c, char *d, size_t size);

/* (contract_optim_parts.c) When the instance o offers steps in parts:
 * each way it offers gives the bits of step().  Returns 1 with the ways
 * checked in modes ("rows, block", "" for none), or 0 with why in d. */
int nn__cc_check_parts(nn__cc_checker *c, void *o, char *modes,
                       size_t modes_size, char *d, size_t size);

/* ------------------------------------------------------------ schedules
 * (contract_schedule.c) A schedule made with base rate 0.1, asked for
 * every batch's rate of 30 epochs of 3 batches and told fixed metrics. */
int nn__cc_check_create_schedule(nn__cc_checker *c, char *d, size_t size);
int nn__cc_check_names_schedule(nn__cc_checker *c, char *d, size_t size);
int nn__cc_check_rates_schedule(nn__cc_checker *c, char *d, size_t size);
int nn__cc_check_determinism_schedule(nn__cc_checker *c, char *d,
                                      size_t size);
int nn__cc_check_state_schedule(nn__cc_checker *c, char *d, size_t size);
int nn__cc_check_errors_schedule(nn__cc_checker *c, char *d, size_t size);

#endif /* NN_CONTRACT_INTERNAL_H */
