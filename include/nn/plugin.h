/* nnrun plugin ABI: the one header a plugin author needs.
 *
 * A plugin is a shared object that exports exactly one data symbol,
 * `nn_plugin_desc` (an nn_plugin), filled in with NN_PLUGIN_DEFINE.  The
 * loader reads its first three fields (ABI major, minor, struct size) before
 * anything else, so those fields never move.
 *
 * Compatibility rule (checked by the loader):
 *   - abi_major must equal NN_ABI_MAJOR;
 *   - abi_minor must be <= the loader's NN_ABI_MINOR (older plugins load,
 *     plugins built for a newer minor are refused);
 *   - a field appended in a later minor is read only when `size` covers it.
 *
 * ABI history (bump in the same commit as the struct change):
 *   1.0  first version: descriptor, option table, model ops
 *        (create/destroy/params/forward/backward), optimizer ops
 *        (create/destroy/step).
 *   1.1  nn_optim_ops.state: an optimizer's state (momentum buffers) as named
 *        matrices, so checkpoints can save it and a resumed run continues
 *        bit for bit.  Optional: 1.0 optimizers (and NULL) have no state.
 *   1.2  nn_model_ops.forward_csr / backward_csr: the same two operations
 *        on a batch handed over as compressed sparse rows (nn_csr), so a
 *        model can skip the zeros of its input (81 % of MNIST's pixels)
 *        and the core never expands the batch to a dense matrix.
 *        Optional: without them (1.0/1.1 models, or NULL) the core gathers
 *        dense batches and calls forward / backward as before.
 *   1.3  nn_model_ops.backward_step and nn_optim_ops.step_rows: the
 *        optimizer step taken inside the backward pass, a block of rows at
 *        a time while the block's gradient is still in cache, instead of
 *        a separate pass over every parameter afterwards (for the
 *        two-layer network's W1 and its gradient, 1.6 MB, more than a
 *        core's L2).  Optional: the core uses them only when the model has
 *        backward_step and the optimizer step_rows; otherwise it calls
 *        backward_csr and step as before.  The numbers are the same.
 *   1.4  nn_model_ops.backward_step_forward, nn_optim_ops.step_block and
 *        nn_stepper.block: the next batch's forward taken inside the
 *        backward pass and step, and steps on blocks of columns with the
 *        gradient handed over directly.  A model whose first weight matrix
 *        is larger than a core's L2 (the two-layer network from 256 hidden
 *        units up) can then update a band of W1's columns and run the next
 *        batch through that band while it is still in L2, and keep the
 *        band's gradient in a small scratch block: one pass over W1 per
 *        batch instead of three.  Optional: the core uses it only with the
 *        1.3 pair; otherwise it calls backward_step and forward_csr in
 *        turn.  The numbers are the same.
 *   1.5  nn_optim_ops.sgd_rule and nn_stepper.sgd: an optimizer whose
 *        step of a parameter is plain SGD with L2 (w -= lr * (g + reg * w),
 *        no state) says so, with lr and reg, and a model may then take
 *        that step itself, inside the product that makes the gradient
 *        (nn_csr_matmul_sgd), so the gradient is never stored and W is
 *        passed over once.  Optional: without it a model steps through
 *        rows or block as before.  The numbers are the same.
 *
 * Ownership, in one place:
 *   - The descriptor, option table, ops tables and every string in them live
 *     in the plugin's read-only data; the core never frees them and unloads
 *     the plugin only after every instance is destroyed.
 *   - Option values (nn_value) are lent by the core for the duration of
 *     `create` only; a plugin that needs a string later copies it.
 *   - Batches (X, scores, dscores) and the RNG are the core's; a plugin never
 *     frees or resizes them and keeps no pointer to them after the call.
 *   - A model owns its parameters (value and gradient matrices) and scratch;
 *     an optimizer owns its state (e.g. momentum buffers).
 *   - Errors go into a caller-owned nn_error; plugins never print, exit,
 *     abort or assert on bad input.
 *
 * Threads: the core calls an instance's operations from one thread at a
 * time (its helper thread, with [train] threads >= 2, only gathers
 * batches and never calls a plugin), so a plugin needs no locking.
 *
 * Shapes: rows are examples.  X is B x n_in, scores and dscores are
 * B x n_out, with B <= max_batch given to create (the last batch of an
 * epoch may be smaller).  Matrices may be views: never assume tda == size2.
 */
#ifndef NN_PLUGIN_H
#define NN_PLUGIN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <gsl/gsl_matrix.h>
#include <gsl/gsl_rng.h>
#include <gsl/gsl_version.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NN_ABI_MAJOR 1u
#define NN_ABI_MINOR 5u
#define NN_PLUGIN_SYMBOL "nn_plugin_desc"

/* Plugin kinds (carried as uint32_t in the descriptor). */
#define NN_KIND_MODEL 1u
#define NN_KIND_OPTIMIZER 2u

/* Parameter flags.  L2 regularization touches NN_PARAM_WEIGHT only. */
#define NN_PARAM_WEIGHT (1u << 0)
#define NN_PARAM_BIAS (1u << 1)

/* Option types. */
#define NN_OPT_INT 1u
#define NN_OPT_REAL 2u
#define NN_OPT_BOOL 3u
#define NN_OPT_STRING 4u

/* Option bound flags: which of nn_option.min / .max apply. */
#define NN_OPT_HAS_MIN (1u << 0)      /* value >= min */
#define NN_OPT_MIN_EXCLUSIVE (1u << 1) /* value >  min (with HAS_MIN) */
#define NN_OPT_HAS_MAX (1u << 2)      /* value <= max */
#define NN_OPT_MAX_EXCLUSIVE (1u << 3) /* value <  max (with HAS_MAX) */

/* Error codes shared by the core and plugins.  Codes are appended, never
 * renumbered.  nn_strerror() in libnn gives their names. */
#define NN_ERRNO_MAP(X)                                                      \
  X(NN_OK, 0, "success")                                                     \
  X(NN_ENOMEM, 1, "out of memory")                                           \
  X(NN_EINVAL, 2, "invalid argument")                                        \
  X(NN_EIO, 3, "input/output error")                                         \
  X(NN_EFORMAT, 4, "malformed data file")                                    \
  X(NN_ECONFIG, 5, "configuration error")                                    \
  X(NN_EPLUGIN, 6, "plugin error")                                           \
  X(NN_EABI, 7, "plugin ABI mismatch")                                       \
  X(NN_ENUMERIC, 8, "numerical error")                                       \
  X(NN_ENOTFOUND, 9, "not found")

enum {
#define NN_ERR_ENUM_(name, value, text) name = value,
  NN_ERRNO_MAP(NN_ERR_ENUM_)
#undef NN_ERR_ENUM_
};

/* Caller-owned error report: a code and a human-readable message. */
typedef struct nn_error {
  int32_t code;
  char msg[512];
} nn_error;

/* Fill `err` (if non-NULL) and return `code`, so that a plugin can write
 * `return nn_error_set(err, NN_EINVAL, "hidden_size %ld too big", h);`. */
static inline int nn_error_set(nn_error *err, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static inline int nn_error_set(nn_error *err, int code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return code;
}

/* One configurable option of a plugin; tables end with a {NULL} entry.
 * The core validates the config against this table (unknown keys, types,
 * bounds) and hands the plugin one nn_value per entry, in table order. */
typedef struct nn_option {
  const char *key;  /* snake_case name used in the INI section */
  uint32_t type;    /* NN_OPT_* */
  const char *def;  /* default, as text; NULL = the key is required */
  const char *help; /* one line, shown by `nnrun --list-plugins -v` */
  uint32_t bounds;  /* NN_OPT_HAS_MIN, NN_OPT_MIN_EXCLUSIVE, NN_OPT_HAS_MAX,
                       NN_OPT_MAX_EXCLUSIVE, or'ed */
  double min, max;  /* for INT and REAL options, per `bounds` */
} nn_option;

/* A validated option value; which member is set follows nn_option.type.
 * Strings are borrowed from the core for the duration of create(). */
typedef union nn_value {
  int64_t i;
  double r;
  int32_t b;
  const char *s;
} nn_value;

/* A named trainable matrix.  Owned by the model; `grad` has the shape of
 * `value` and is overwritten (not accumulated) by backward(). */
typedef struct nn_param {
  const char *name; /* "W1", "b1", ...; static storage or model-owned */
  gsl_matrix *value;
  gsl_matrix *grad;
  uint32_t flags; /* NN_PARAM_WEIGHT or NN_PARAM_BIAS */
} nn_param;

/* ABI 1.2: a batch (B x n_in) in compressed sparse rows.  The stored
 * entries of row i are positions start[i] .. start[i + 1] - 1 of `index`
 * (their columns, strictly ascending) and `value`; every entry not stored
 * is zero (stored entries may be zero too).  start has rows + 1 elements,
 * start[0] == 0.  Lent for the duration of one call, like X. */
typedef struct nn_csr {
  size_t rows, cols;
  const size_t *start;
  const uint32_t *index;
  const double *value;
} nn_csr;

/* ABI 1.3: what backward_step calls to update parameter k's rows
 * [r0, r1) once their gradient is final (the core routes it to the
 * optimizer's step_rows).  Lent for one call; returns NN_OK or an error
 * code with err filled in, and backward_step then returns that code. */
typedef struct nn_stepper {
  void *ctx;
  int (*rows)(void *ctx, size_t k, size_t r0, size_t r1, nn_error *err);
  /* ABI 1.4 (NULL when the optimizer has no step_block; a model built
   * for 1.3 never reads it): update the elements [r0, r1) x [c0, c1) of
   * parameter k, with g ((r1 - r0) x (c1 - c0), lent for the call) as
   * their gradient.  The parameter's own grad matrix is not read, so a
   * model may compute the block's gradient into scratch of its own; the
   * parameter's grad is then left as it was for those elements. */
  int (*block)(void *ctx, size_t k, size_t r0, size_t r1, size_t c0,
               size_t c1, const gsl_matrix *g, nn_error *err);
  /* ABI 1.5 (NULL when the optimizer has no sgd_rule; a model built for
   * 1.3 or 1.4 never reads it): when the step of parameter k is plain SGD
   * with L2, exactly nn_sgd_update(w, g, NULL, lr, reg, 0) on every
   * element, fills *lr and *reg, counts all of k's elements as stepped
   * and returns 1.  The model must then apply that rule to every element
   * of k exactly once before backward_step returns (nn_csr_matmul_sgd
   * does it with a sparse product's gradient, which is never stored; k's
   * grad is then left as it was).  Returns 0, with nothing counted, when
   * k's step is another rule or k is not a parameter: step k through rows
   * or block instead. */
  int (*sgd)(void *ctx, size_t k, double *lr, double *reg);
} nn_stepper;

typedef struct nn_model_ops {
  uint32_t size; /* sizeof(nn_model_ops) when the plugin was built */
  /* Allocate a model for n_in inputs, n_out classes and batches of at most
   * max_batch rows.  Weights are drawn from `rng` (lent, not kept), biases
   * start at zero.  On success *out is the new model, owned by the caller
   * and released with destroy(). */
  int (*create)(const nn_value *opts, size_t n_in, size_t n_out,
                size_t max_batch, gsl_rng *rng, void **out, nn_error *err);
  void (*destroy)(void *self); /* NULL-safe */
  /* The model's parameters; array and matrices stay valid (same addresses)
   * until destroy(). */
  nn_param *(*params)(void *self, size_t *n);
  /* scores = model(X).  May keep activations for the next backward(). */
  int (*forward)(void *self, const gsl_matrix *X, gsl_matrix *scores,
                 nn_error *err);
  /* Given d(loss)/d(scores) for the batch of the immediately preceding
   * forward() on the same X, overwrite every parameter's grad with the
   * data-term gradient.  The model may overwrite dscores (scratch). */
  int (*backward)(void *self, const gsl_matrix *X, gsl_matrix *dscores,
                  nn_error *err);
  /* ABI 1.2, optional (read only when `size` covers them; the core uses
   * them only when both are non-NULL): forward and backward with the batch
   * as compressed sparse rows.  Same contract and the same results as the
   * dense pair for the same batch; backward_csr follows forward_csr on the
   * same X. */
  int (*forward_csr)(void *self, const nn_csr *X, gsl_matrix *scores,
                     nn_error *err);
  int (*backward_csr)(void *self, const nn_csr *X, gsl_matrix *dscores,
                      nn_error *err);
  /* ABI 1.3, optional (read only when `size` covers it; used only with
   * forward_csr / backward_csr): backward_csr that also takes the
   * optimizer step.  Xt is X transposed (X->cols rows, each row's columns
   * ascending, as nn_csr_transpose makes it), which every sparse model
   * needs for its weight gradient (X^T dZ): the core builds it together
   * with the batch, on its helper thread when it has one.  Lent like X.
   * Once rows [r0, r1) of parameter k's gradient are final and the model
   * no longer needs those rows of its value, it calls
   * st->rows(st->ctx, k, r0, r1, err), which updates them.  Every row of
   * every parameter must be passed exactly once per call (in any blocks,
   * in any order; a whole parameter is one block); the core checks the
   * count.  The gradients are written as by backward_csr, except where
   * the model stepped with a gradient of its own (st->block, 1.4) or took
   * a parameter's step itself (st->sgd, 1.5): those are left as they
   * were. */
  int (*backward_step)(void *self, const nn_csr *X, const nn_csr *Xt,
                       gsl_matrix *dscores, const nn_stepper *st,
                       nn_error *err);
  /* ABI 1.4, optional (read only when `size` covers it; used only with
   * backward_step): backward_step on (X, Xt, dscores, st), then
   * forward_csr on the next batch (Xnext, scores_next), in one call, with
   * the same results as those two calls.  The model may interleave them:
   * the next batch's forward through a block of a parameter may run as
   * soon as that block is stepped.  Every element of every parameter is
   * stepped exactly once, through st->rows or st->block (the core counts
   * elements); st->block may be NULL.  Afterwards backward_csr /
   * backward_step follow on Xnext. */
  int (*backward_step_forward)(void *self, const nn_csr *X, const nn_csr *Xt,
                               gsl_matrix *dscores, const nn_stepper *st,
                               const nn_csr *Xnext, gsl_matrix *scores_next,
                               nn_error *err);
} nn_model_ops;

typedef struct nn_optim_ops {
  uint32_t size; /* sizeof(nn_optim_ops) when the plugin was built */
  /* Allocate optimizer state for the given parameters (lent: they outlive
   * the optimizer).  *out is owned by the caller, released with destroy(). */
  int (*create)(const nn_value *opts, const nn_param *params, size_t n,
                void **out, nn_error *err);
  void (*destroy)(void *self); /* NULL-safe */
  /* Update every parameter's value from its grad (grad may be modified). */
  int (*step)(void *self, nn_param *params, size_t n, nn_error *err);
  /* ABI 1.1, optional (read only when `size` covers it and non-NULL): the
   * optimizer's state as named matrices (only `name` and `value` are used),
   * owned by the optimizer and stable until destroy().  The core saves them
   * in checkpoints and writes them back in place to resume a run; names
   * must be unique and differ from the model's parameter names. */
  nn_param *(*state)(void *self, size_t *n);
  /* ABI 1.3, optional (read only when `size` covers it and non-NULL):
   * update rows [r0, r1) of parameter k from the same rows of its grad,
   * exactly as step would update them.  A step taken through step_rows
   * covers every row of every parameter once; rows are independent, so
   * the order of the blocks changes no result.  The core checks k and the
   * rows against the parameters; the optimizer checks them too. */
  int (*step_rows)(void *self, nn_param *params, size_t n, size_t k,
                   size_t r0, size_t r1, nn_error *err);
  /* ABI 1.4, optional (read only when `size` covers it and non-NULL):
   * update elements [r0, r1) x [c0, c1) of parameter k, exactly as step
   * would update them, with g ((r1 - r0) x (c1 - c0), lent) as their
   * gradient instead of the parameter's grad (which is not read).  Only
   * an optimizer whose update is elementwise can offer this.  Checks as
   * step_rows. */
  int (*step_block)(void *self, nn_param *params, size_t n, size_t k,
                    size_t r0, size_t r1, size_t c0, size_t c1,
                    const gsl_matrix *g, nn_error *err);
  /* ABI 1.5, optional (read only when `size` covers it and non-NULL):
   * returns 1 and fills *lr and *reg when step would update parameter k
   * by exactly nn_sgd_update(w, g, NULL, *lr, *reg, 0), with no state of
   * the optimizer's read or changed; 0 otherwise (momentum, another rule,
   * a k out of range).  The core then lets the model apply that rule
   * itself (nn_stepper.sgd) and does not call step_rows or step_block for
   * k in that step. */
  int (*sgd_rule)(void *self, const nn_param *params, size_t n, size_t k,
                  double *lr, double *reg);
} nn_optim_ops;

/* The exported descriptor.  Never reorder; append only, bumping the minor. */
typedef struct nn_plugin {
  uint32_t abi_major; /* NN_ABI_MAJOR at build time: first, never moves */
  uint32_t abi_minor; /* NN_ABI_MINOR at build time */
  uint32_t size;      /* sizeof(nn_plugin) at build time */
  uint32_t kind;      /* NN_KIND_MODEL or NN_KIND_OPTIMIZER */
  uint32_t gsl_major; /* GSL_MAJOR_VERSION: gsl_matrix's layout is ABI */
  const char *name;   /* equals the file stem: softmax.so -> "softmax" */
  const char *version;
  const char *summary;
  const nn_option *options;  /* {NULL}-terminated; may be NULL */
  const nn_model_ops *model; /* non-NULL iff kind == NN_KIND_MODEL */
  const nn_optim_ops *optim; /* non-NULL iff kind == NN_KIND_OPTIMIZER */
} nn_plugin;

#if defined(__GNUC__)
#define NN_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define NN_PLUGIN_EXPORT
#endif

/* Define the plugin's descriptor with the version and size fields filled in.
 * Use once per plugin, at file scope. */
#define NN_PLUGIN_DEFINE(kind_, name_, version_, summary_, options_, model_, \
                         optim_)                                             \
  NN_PLUGIN_EXPORT extern const nn_plugin nn_plugin_desc;                    \
  const nn_plugin nn_plugin_desc = {                                         \
      NN_ABI_MAJOR,       NN_ABI_MINOR, (uint32_t)sizeof(nn_plugin),         \
      (kind_),            (uint32_t)GSL_MAJOR_VERSION,                       \
      (name_),            (version_),   (summary_),                          \
      (options_),         (model_),     (optim_)}

#ifdef __cplusplus
}
#endif
#endif /* NN_PLUGIN_H */
