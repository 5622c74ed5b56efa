/* SPDX-License-Identifier: GPL-3.0-or-later */
/* nnrun plugin ABI 2: the one header a plugin author needs.
 *
 * A plugin is a shared object that exports one data symbol, `nn_plugin_desc`
 * (an nn_plugin), defined with NN_MODEL_PLUGIN, NN_LAYER_PLUGIN or
 * NN_OPTIMIZER_PLUGIN or NN_SCHEDULE_PLUGIN.  There are four kinds:
 *   - a layer maps a batch of examples of one shape to another shape (dense,
 *     relu, dropout, ...); `[model] type = sequential` stacks layers;
 *   - a model maps a batch of inputs to class scores on its own;
 *   - an optimizer updates parameters from their gradients;
 *   - a schedule (ABI 2.2) gives the optimizer's learning rate for each
 *     epoch (or batch) from the epoch, the batch and the validation
 *     metrics so far.
 * The core owns the loss (softmax + cross-entropy), batching and the loop.
 *
 * Compatibility (checked when the plugin loads): abi_major must equal this
 * header's NN_ABI_MAJOR and abi_minor must not be newer than its
 * NN_ABI_MINOR.  Every struct here starts with (or carries) its size, so a
 * later minor appends fields and the core reads a field only when the size
 * covers it.  Optional speed-ups are extensions, asked for by id
 * (<nn/plugin_ext.h>); a plugin that offers none runs correctly.
 *
 * Ownership:
 *   - The descriptor, option table, ops tables and their strings live in the
 *     plugin's read-only data.
 *   - Option values are lent for the duration of `create` only.
 *   - Batches, the context and its random stream are lent for one call.
 *   - A model or layer owns its parameters, state and scratch; an optimizer
 *     owns its state.  Allocate everything in `create` for `max_batch`
 *     rows: nothing should allocate per batch.
 *   - Errors go into the caller's nn_error.  Plugins never print, exit,
 *     abort or assert on bad input.  The core reports a failure as
 *     "PLUGIN.OPERATION (epoch E, batch B): message", fails a call during
 *     which GSL reported an error (when the program installed a handler
 *     that remembers it; see nn_gsl_trap_fn in <nn/train.h>), and holds
 *     parameters to the sizes `memory` declared and to the matrices of
 *     create (see <nn/train.h>, Faults).
 * Threads: the core calls one instance from one thread at a time.
 * Shapes: rows are examples, each example's values in (c, h, w) order.
 * Matrices may be views: never assume tda == size2. */
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

#define NN_ABI_MAJOR 2u
#define NN_ABI_MINOR 3u /* 2.1: the optional memory operation;
                          2.2: the schedule kind;
                          2.3: threads lent to layers (nn_parallel) */
#define NN_PLUGIN_SYMBOL "nn_plugin_desc"

#define NN_KIND_MODEL 1u
#define NN_KIND_OPTIMIZER 2u
#define NN_KIND_LAYER 3u
#define NN_KIND_SCHEDULE 4u /* ABI 2.2 */

/* Parameter flags.  L2 regularization touches NN_PARAM_WEIGHT only. */
#define NN_PARAM_WEIGHT (1u << 0)
#define NN_PARAM_BIAS (1u << 1)

/* Ops flags: the plugin draws random numbers in forward (from ctx->rng). */
#define NN_STOCHASTIC (1u << 0)

/* Error codes shared by the core and plugins; appended, never renumbered.
 * nn_strerror() in libnn gives their names. */
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

/* Caller-owned error report: a code and a message. */
typedef struct nn_error {
  int32_t code;
  char msg[512];
} nn_error;

/* Fill err (if non-NULL) and return code:
 *   return nn_error_set(err, NN_EINVAL, "dense: units %ld too big", u); */
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

/* ------------------------------------------------------------ options
 * A plugin declares its options in a table ending with {NULL}.  The core
 * checks the config section against it (unknown keys, types, bounds) and
 * hands `create` one nn_value per entry, in table order.  The loader
 * refuses a table with a duplicate key, the reserved key `type`, or a
 * default that does not parse or is out of bounds. */
#define NN_OPT_INT 1u
#define NN_OPT_REAL 2u
#define NN_OPT_BOOL 3u
#define NN_OPT_STRING 4u

#define NN_OPT_HAS_MIN (1u << 0)       /* value >= min */
#define NN_OPT_MIN_EXCLUSIVE (1u << 1) /* value >  min (with HAS_MIN) */
#define NN_OPT_HAS_MAX (1u << 2)       /* value <= max */
#define NN_OPT_MAX_EXCLUSIVE (1u << 3) /* value <  max (with HAS_MAX) */

typedef struct nn_option {
  const char *key;  /* snake_case name used in the INI section */
  uint32_t type;    /* NN_OPT_* */
  const char *def;  /* default, as text; NULL = the key is required */
  const char *help; /* one line, shown by `nnrun --list-plugins -v` */
  uint32_t bounds;  /* NN_OPT_HAS_MIN | ..., or'ed */
  double min, max;  /* for INT and REAL options, per `bounds` */
} nn_option;

/* A checked option value; the member follows nn_option.type. */
typedef union nn_value {
  int64_t i;
  double r;
  int32_t b;
  const char *s;
} nn_value;

/* ------------------------------------------------------------ data
 * A named matrix of a model, layer or optimizer.  For parameters, `grad`
 * has the shape of `value` and backward overwrites it (never accumulates);
 * for state (buffers that are saved in checkpoints but not trained, such
 * as momentum or running means) `grad` is NULL.  Names are unique within
 * a plugin instance; the loader refuses duplicates. */
typedef struct nn_param {
  const char *name;
  gsl_matrix *value;
  gsl_matrix *grad;
  uint32_t flags; /* NN_PARAM_WEIGHT or NN_PARAM_BIAS (0 for state) */
} nn_param;

/* The shape of one example: channels x height x width.  A flat vector of n
 * values is {1, 1, n}.  A batch of B examples is a B x (c h w) matrix. */
typedef struct nn_shape {
  uint32_t c, h, w;
} nn_shape;

static inline size_t nn_shape_size(nn_shape s) {
  return (size_t)s.c * s.h * s.w;
}

/* What forward is told about the batch (lent for the call). */
typedef struct nn_context {
  uint32_t size;  /* sizeof(nn_context) of the core */
  uint32_t train; /* 1 while training, 0 in evaluation (dropout is off) */
  uint64_t epoch; /* epoch and batch within it, from 0 */
  uint64_t batch;
  /* A random stream for this batch alone, derived from the seed, epoch and
   * batch, so runs reproduce and resume bit for bit.  Non-NULL only while
   * training a plugin whose ops have NN_STOCHASTIC. */
  gsl_rng *rng;
} nn_context;

/* ------------------------------------------------------------ memory
 * What create would allocate, told before anything is created (ABI 2.1),
 * so that nnrun refuses at once a network that cannot fit in memory
 * instead of failing (or exhausting the machine) half-way through.  The
 * core zeroes it, then the plugin's memory operation fills it in; a total
 * too large for 64 bits is UINT64_MAX (nn_mem_add, nn_mem_mul saturate). */
typedef struct nn_memory {
  uint64_t bytes;   /* everything create allocates for these arguments:
                       parameters, gradients, state and scratch */
  uint64_t weights; /* of which parameter values and state buffers (the
                       core keeps a copy of them: the best epoch's) */
  nn_shape out;     /* layers: the output shape create would set */
} nn_memory;

static inline uint64_t nn_mem_add(uint64_t a, uint64_t b) {
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}
static inline uint64_t nn_mem_mul(uint64_t a, uint64_t b) {
  return b && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}
/* A rows x cols matrix of doubles. */
static inline uint64_t nn_mem_doubles(uint64_t rows, uint64_t cols) {
  return nn_mem_mul(nn_mem_mul(rows, cols), sizeof(double));
}

/* ------------------------------------------------------------ layers */
typedef struct nn_layer_ops {
  uint32_t size;  /* sizeof(nn_layer_ops) when the plugin was built */
  uint32_t flags; /* NN_STOCHASTIC or 0 */
  /* A layer for examples of shape `in`, in batches of at most max_batch;
   * sets *out_shape.  Weights are drawn from rng (lent, not kept; the
   * layers of a network draw in order), biases start at zero. */
  int (*create)(const nn_value *opts, nn_shape in, size_t max_batch,
                gsl_rng *rng, nn_shape *out_shape, void **out, nn_error *err);
  void (*destroy)(void *self); /* NULL-safe */
  /* Parameters (NULL or n = 0: none); stable until destroy. */
  nn_param *(*params)(void *self, size_t *n);
  /* Y = layer(X); X is B x size(in), Y is B x size(out). */
  int (*forward)(void *self, const nn_context *ctx, const gsl_matrix *X,
                 gsl_matrix *Y, nn_error *err);
  /* Given X and Y of the immediately preceding forward and dY, overwrite
   * the parameters' grads and, unless dX is NULL (the input needs no
   * gradient: the first layer), write dX.  dY may be used as scratch. */
  int (*backward)(void *self, const gsl_matrix *X, const gsl_matrix *Y,
                  gsl_matrix *dY, gsl_matrix *dX, nn_error *err);
  /* Optional (NULL: none): state buffers, as nn_param with grad NULL. */
  nn_param *(*state)(void *self, size_t *n);
  /* Optional: the extension with this id (<nn/plugin_ext.h>), or NULL. */
  const void *(*extension)(void *self, const char *id);
  /* Optional (ABI 2.1; NULL: the layer is not checked, and the layers
   * after it neither, since their input shape is this one's output): fill
   * *need as create(opts, in, max_batch, ...) would allocate, need->out
   * included, without allocating anything.  n_out is 0 (a layer's output
   * size comes from its options).  Returns NN_OK, or non-zero for options
   * that create refuses (create then says why). */
  int (*memory)(const nn_value *opts, nn_shape in, size_t n_out,
                size_t max_batch, nn_memory *need);
} nn_layer_ops;

/* ------------------------------------------------------------ models */
typedef struct nn_model_ops {
  uint32_t size;  /* sizeof(nn_model_ops) when the plugin was built */
  uint32_t flags; /* NN_STOCHASTIC or 0 */
  /* A model from inputs of shape `in` to n_out class scores, for batches
   * of at most max_batch rows; weights from rng (lent, not kept). */
  int (*create)(const nn_value *opts, nn_shape in, size_t n_out,
                size_t max_batch, gsl_rng *rng, void **out, nn_error *err);
  void (*destroy)(void *self); /* NULL-safe */
  nn_param *(*params)(void *self, size_t *n); /* stable until destroy */
  /* scores = model(X).  May keep activations for the next backward. */
  int (*forward)(void *self, const nn_context *ctx, const gsl_matrix *X,
                 gsl_matrix *scores, nn_error *err);
  /* Given d(loss)/d(scores) for the preceding forward on the same X,
   * overwrite every parameter's grad.  dscores may be used as scratch. */
  int (*backward)(void *self, const gsl_matrix *X, gsl_matrix *dscores,
                  nn_error *err);
  nn_param *(*state)(void *self, size_t *n);             /* optional */
  const void *(*extension)(void *self, const char *id); /* optional */
  /* Optional (ABI 2.1; NULL: not checked): fill *need as create would
   * allocate with the same arguments, without allocating anything.
   * Returns NN_OK, or non-zero for options create refuses. */
  int (*memory)(const nn_value *opts, nn_shape in, size_t n_out,
                size_t max_batch, nn_memory *need);
} nn_model_ops;

/* ------------------------------------------------------------ optimizers */
typedef struct nn_optim_ops {
  uint32_t size; /* sizeof(nn_optim_ops) when the plugin was built */
  /* Optimizer for these parameters (lent: they outlive the optimizer). */
  int (*create)(const nn_value *opts, const nn_param *params, size_t n,
                void **out, nn_error *err);
  void (*destroy)(void *self); /* NULL-safe */
  /* Update every parameter from its grad (grad may be modified).  L2 goes
   * to NN_PARAM_WEIGHT parameters only (nn_apply_l2, nn_sgd_update). */
  int (*step)(void *self, nn_param *params, size_t n, nn_error *err);
  /* Optional: state (moments, step counts) for checkpoints.  Without it a
   * run cannot be resumed (the core refuses, since what the optimizer
   * keeps between steps would restart silently); an optimizer that keeps
   * nothing offers one that sets *n = 0 and returns NULL. */
  nn_param *(*state)(void *self, size_t *n);
  const void *(*extension)(void *self, const char *id); /* optional */
} nn_optim_ops;

/* ------------------------------------------------------------ schedules
 * A learning-rate schedule (ABI 2.2).  The core asks it for the learning
 * rate before each epoch's first batch (before every batch with
 * NN_SCHEDULE_PER_BATCH), hands the answer to the optimizer (whose
 * learning-rate extension, nn.optim.learning-rate/1, takes it), and tells
 * it each epoch's metrics after validation.  A linear warm-up is the
 * core's: during it the schedule is not asked, and after it the schedule's
 * epochs count from 0 again (PyTorch's SequentialLR).
 *
 * Whatever the rate depends on besides the point asked about (a plateau's
 * best metric and counters) is state: matrices exposed by `state`, saved
 * in checkpoints and written back before a resumed run continues, so the
 * rate must be a function of the state and the point alone. */

/* Flags of a schedule's ops: the rate may change within an epoch. */
#define NN_SCHEDULE_PER_BATCH (1u << 0)

/* Where in training the rate is asked for (lent for the call). */
typedef struct nn_schedule_point {
  uint32_t size;    /* sizeof(nn_schedule_point) of the core */
  uint64_t epoch;   /* from 0 (after the warm-up, if any) */
  uint64_t batch;   /* within the epoch, from 0 */
  uint64_t batches; /* batches per epoch */
} nn_schedule_point;

/* An epoch's results, told to `observe` (lent for the call). */
typedef struct nn_schedule_metrics {
  uint32_t size;  /* sizeof(nn_schedule_metrics) of the core */
  uint64_t epoch; /* as in nn_schedule_point */
  double train_loss, train_accuracy;
  double val_loss, val_accuracy;
} nn_schedule_metrics;

typedef struct nn_schedule_ops {
  uint32_t size;  /* sizeof(nn_schedule_ops) when the plugin was built */
  uint32_t flags; /* NN_SCHEDULE_PER_BATCH or 0 */
  /* A schedule for an optimizer whose configured learning rate is base_lr
   * (> 0, finite): the rate it starts from. */
  int (*create)(const nn_value *opts, double base_lr, void **out,
                nn_error *err);
  void (*destroy)(void *self); /* NULL-safe */
  /* *lr = the rate at `at`: >= 0 and finite.  Changes nothing (asking
   * twice gives the same bits). */
  int (*lr)(void *self, const nn_schedule_point *at, double *lr,
            nn_error *err);
  /* Optional (NULL: the rate depends on the point alone): take an epoch's
   * metrics, after its validation; the next `lr` may answer otherwise. */
  int (*observe)(void *self, const nn_schedule_metrics *m, nn_error *err);
  /* Optional: state matrices (grad NULL) for checkpoints. */
  nn_param *(*state)(void *self, size_t *n);
  const void *(*extension)(void *self, const char *id); /* optional */
} nn_schedule_ops;

/* ------------------------------------------------------------ descriptor */
typedef struct nn_plugin {
  uint32_t abi_major; /* first, never moves */
  uint32_t abi_minor;
  uint32_t size;      /* sizeof(nn_plugin) when the plugin was built */
  uint32_t kind;      /* NN_KIND_* */
  uint32_t gsl_major; /* gsl_matrix's layout is part of the ABI */
  const char *name;   /* equals the file stem: dense.so -> "dense" */
  const char *version;
  const char *summary;
  const nn_option *options;  /* may be NULL: no options */
  const nn_model_ops *model; /* the one matching kind is non-NULL */
  const nn_optim_ops *optim;
  const nn_layer_ops *layer;
  /* ABI 2.2: read only when `size` covers it (an older plugin's
   * descriptor ends before it). */
  const nn_schedule_ops *schedule;
} nn_plugin;

#if defined(__GNUC__)
#define NN_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define NN_PLUGIN_EXPORT
#endif

#define NN_PLUGIN_DEFINE_(kind_, name_, version_, summary_, options_, model_, \
                          optim_, layer_, schedule_)                          \
  NN_PLUGIN_EXPORT extern const nn_plugin nn_plugin_desc;                     \
  const nn_plugin nn_plugin_desc = {                                          \
      NN_ABI_MAJOR, NN_ABI_MINOR, (uint32_t)sizeof(nn_plugin), (kind_),       \
      (uint32_t)GSL_MAJOR_VERSION, (name_), (version_), (summary_),           \
      (options_), (model_), (optim_), (layer_), (schedule_)}

/* Once per plugin, at file scope: name, version, summary, option table
 * (or NULL) and the ops table. */
#define NN_MODEL_PLUGIN(name, version, summary, options, ops)                \
  NN_PLUGIN_DEFINE_(NN_KIND_MODEL, name, version, summary, options, ops,     \
                    NULL, NULL, NULL)
#define NN_LAYER_PLUGIN(name, version, summary, options, ops)                \
  NN_PLUGIN_DEFINE_(NN_KIND_LAYER, name, version, summary, options, NULL,    \
                    NULL, ops, NULL)
#define NN_OPTIMIZER_PLUGIN(name, version, summary, options, ops)            \
  NN_PLUGIN_DEFINE_(NN_KIND_OPTIMIZER, name, version, summary, options,      \
                    NULL, ops, NULL, NULL)
#define NN_SCHEDULE_PLUGIN(name, version, summary, options, ops)             \
  NN_PLUGIN_DEFINE_(NN_KIND_SCHEDULE, name, version, summary, options, NULL, \
                    NULL, NULL, ops)

#ifdef __cplusplus
}
#endif
#endif /* NN_PLUGIN_H */
