/* SPDX-License-Identifier: GPL-3.0-or-later */
/* nnrun plugin ABI 2: extensions, the optional fast paths.
 *
 * An ops table's `extension(self, id)` returns the struct for an id it
 * offers, or NULL.  Each struct starts with its size (sizeof when the
 * plugin was built); the core reads a member only when the size covers it
 * and the member is non-NULL.  An id names its version: a change that is
 * not an append gets a new id.  A plugin offering none of these still runs,
 * with the same numbers: the core then calls forward, backward and step.
 *
 * What the core lends here (nn_csr, nn_stepper) carries its size too. */
#ifndef NN_PLUGIN_EXT_H
#define NN_PLUGIN_EXT_H

#include <nn/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The size of an extension struct up to and including `member`: a host
 * reads a struct whose size covers the members it uses, so a plugin built
 * before members were appended keeps its fast path. */
#define NN_EXT_SIZE_TO(type, member)                                         \
  (offsetof(type, member) + sizeof(((type *)0)->member))

/* A batch (rows x cols) in compressed sparse rows.  The stored entries of
 * row i are positions start[i] .. start[i + 1] - 1 of `index` (columns,
 * strictly ascending) and `value`; entries not stored are zero.  Lent for
 * the duration of one call.  MNIST's pixels are 81 % zeros: a first layer
 * that takes this skips them. */
typedef struct nn_csr {
  uint32_t size; /* sizeof(nn_csr) of the side that filled it in */
  size_t rows, cols;
  const size_t *start;
  const uint32_t *index;
  const double *value;
} nn_csr;

/* For memory answers (nn_memory): the bytes of a CSR buffer with room for
 * `rows` rows and `nnz` stored entries (libnn's nn_csr_buffer_init). */
static inline uint64_t nn_mem_csr(uint64_t rows, uint64_t nnz) {
  return nn_mem_add(nn_mem_mul(nn_mem_add(rows, 1), sizeof(size_t)),
                    nn_mem_mul(nnz, sizeof(uint32_t) + sizeof(double)));
}

/* Lent by the core to a backward pass that takes the optimizer step
 * itself, as each parameter's gradient becomes final (while it is still
 * in cache).  k is the parameter's index in the caller's params array.
 * Every element of every parameter must be stepped exactly once per call,
 * through `rows`, `block` or `sgd`; the core counts and stops the run,
 * naming the plugin, if not.  Each returns NN_OK or an error code (which
 * the backward pass then returns). */
typedef struct nn_stepper {
  uint32_t size;
  void *ctx;
  /* Update rows [r0, r1) of parameter k from the same rows of its grad. */
  int (*rows)(void *ctx, size_t k, size_t r0, size_t r1, nn_error *err);
  /* NULL unless the optimizer steps blocks: update [r0, r1) x [c0, c1) of
   * parameter k with g ((r1 - r0) x (c1 - c0), lent) as their gradient; k's
   * own grad is not read (nor written) for them. */
  int (*block)(void *ctx, size_t k, size_t r0, size_t r1, size_t c0,
               size_t c1, const gsl_matrix *g, nn_error *err);
  /* NULL unless the optimizer has a plain-SGD rule: when parameter k's
   * step is exactly nn_sgd_update(w, g, NULL, lr, reg, 0), fills lr and
   * reg, counts all of k as stepped and returns 1; the caller must then
   * apply that rule to every element of k itself (nn_csr_matmul_sgd does
   * it inside the product that makes the gradient).  Returns 0 otherwise:
   * step k through rows or block. */
  int (*sgd)(void *ctx, size_t k, double *lr, double *reg);
} nn_stepper;

/* ------------------------------------------------------------ models */

/* Flags of the sparse-input extensions: the plugin wants the batch's
 * transpose Xt (X->cols rows, each row's columns ascending, as
 * nn_csr_transpose makes it) for its weight gradient X^T dZ.  The core
 * then makes it with the batch, on its helper thread when it has one;
 * otherwise backward gets Xt = NULL. */
#define NN_SPARSE_TRANSPOSE (1u << 0)

/* The batch as nn_csr instead of a dense matrix, with the same results as
 * forward / backward. */
#define NN_EXT_MODEL_SPARSE "nn.model.sparse-input/1"
typedef struct nn_model_sparse {
  uint32_t size;
  uint32_t flags; /* NN_SPARSE_TRANSPOSE or 0 */
  int (*forward)(void *self, const nn_context *ctx, const nn_csr *X,
                 gsl_matrix *scores, nn_error *err);
  int (*backward)(void *self, const nn_csr *X, const nn_csr *Xt,
                  gsl_matrix *dscores, nn_error *err);
} nn_model_sparse;

/* The step inside backward (needs the sparse input too): backward on the
 * sparse batch that steps through st; Xt is always given.  forward_next (may be NULL) also
 * runs the next batch's forward inside the same pass, with the numbers of
 * the two calls in turn. */
#define NN_EXT_MODEL_FUSED_STEP "nn.model.fused-step/1"
typedef struct nn_model_fused_step {
  uint32_t size;
  int (*backward_step)(void *self, const nn_csr *X, const nn_csr *Xt,
                       gsl_matrix *dscores, const nn_stepper *st,
                       nn_error *err);
  int (*backward_step_forward)(void *self, const nn_csr *X, const nn_csr *Xt,
                               gsl_matrix *dscores, const nn_stepper *st,
                               const nn_context *next_ctx,
                               const nn_csr *Xnext, gsl_matrix *scores_next,
                               nn_error *err);
} nn_model_fused_step;

/* ------------------------------------------------------------ layers */

/* A first layer that takes the sparse batch (only the first layer of a
 * network is asked).  backward never needs dX: the input is data.
 * backward_step (may be NULL) also takes the step of the layer's own
 * parameters through st (k counts the layer's own params from 0); it is
 * always given Xt. */
#define NN_EXT_LAYER_SPARSE "nn.layer.sparse-input/1"
typedef struct nn_layer_sparse {
  uint32_t size;
  uint32_t flags; /* NN_SPARSE_TRANSPOSE or 0 */
  int (*forward)(void *self, const nn_context *ctx, const nn_csr *X,
                 gsl_matrix *Y, nn_error *err);
  int (*backward)(void *self, const nn_csr *X, const nn_csr *Xt,
                  const gsl_matrix *Y, gsl_matrix *dY, nn_error *err);
  int (*backward_step)(void *self, const nn_csr *X, const nn_csr *Xt,
                       const gsl_matrix *Y, gsl_matrix *dY,
                       const nn_stepper *st, nn_error *err);
} nn_layer_sparse;

/* ------------------------------------------------------------ threads */

/* Lent by the core (ABI 2.3): runs a layer's independent tasks on the
 * trainer's threads.  run calls task(arg, i, slot) once for every i in
 * [0, n) and returns when all have returned.  Tasks may run at the same
 * time, in any order, on any thread; two tasks running at once never share
 * a slot (slot < slots), so a layer keeps scratch per slot.  Which tasks
 * share a slot is not fixed: a layer whose results must not depend on the
 * thread count (every layer's) writes disjoint outputs from its tasks and
 * adds partial sums in task order afterwards, never in slot order. */
typedef struct nn_parallel {
  uint32_t size;
  uint32_t slots; /* >= 1 */
  void *ctx;
  void (*run)(void *ctx, size_t n,
              void (*task)(void *arg, size_t i, uint32_t slot), void *arg);
} nn_parallel;

/* A layer (NN_EXT_LAYER_PARALLEL) or model (NN_EXT_MODEL_PARALLEL) that
 * spreads its forward and backward over threads.  attach lends par until
 * the next attach (NULL: back to one thread) or until destroy: the core
 * frees its threads only after one of them.  The layer may allocate
 * per-slot scratch there (and then fail with NN_ENOMEM, keeping to one
 * thread).  The results must be the same bits with any par or
 * none: the core runs a network on one thread, or on several, or
 * evaluates it after training without par, and expects one answer. */
#define NN_EXT_LAYER_PARALLEL "nn.layer.parallel/1"
#define NN_EXT_MODEL_PARALLEL "nn.model.parallel/1"
typedef struct nn_parallel_attach {
  uint32_t size;
  int (*attach)(void *self, const nn_parallel *par, nn_error *err);
} nn_parallel_attach;

/* ------------------------------------------------------------ optimizers */

/* The step in parts, for a backward pass that steps as it goes.  A step
 * in parts is begin, then every row of every parameter exactly once
 * through rows or block (in any order), then end; the numbers are those
 * of step.  begin and end bracket one step (a step counter advances in
 * begin; either may be NULL).  block may be NULL (only elementwise rules
 * can offer it). */
#define NN_EXT_OPTIM_PARTS "nn.optim.step-parts/1"
typedef struct nn_optim_parts {
  uint32_t size;
  int (*begin)(void *self, nn_param *params, size_t n, nn_error *err);
  int (*rows)(void *self, nn_param *params, size_t n, size_t k, size_t r0,
              size_t r1, nn_error *err);
  int (*block)(void *self, nn_param *params, size_t n, size_t k, size_t r0,
               size_t r1, size_t c0, size_t c1, const gsl_matrix *g,
               nn_error *err);
  int (*end)(void *self, nn_param *params, size_t n, nn_error *err);
} nn_optim_parts;

/* Returns 1 and fills lr and reg when this step of parameter k is exactly
 * nn_sgd_update(w, g, NULL, lr, reg, 0) with no state read or changed
 * (sgd without momentum); 0 otherwise.  Asked between begin and end. */
#define NN_EXT_OPTIM_SGD_RULE "nn.optim.sgd-rule/1"
typedef struct nn_optim_sgd_rule {
  uint32_t size;
  int (*rule)(void *self, const nn_param *params, size_t n, size_t k,
              double *lr, double *reg);
} nn_optim_sgd_rule;

/* The learning rate, for a schedule ([schedule]): get returns the rate
 * the next step uses (at first the configured learning_rate), set makes
 * the next steps use lr (>= 0, finite; refused with a message when the
 * optimizer cannot take it) and changes nothing else: with the rate it
 * already has, steps give the same bits as without the call.  Called
 * between steps only, never between a step's begin and end.  An optimizer
 * without this extension runs at its configured rate, and a config that
 * gives it a schedule is refused. */
#define NN_EXT_OPTIM_LR "nn.optim.learning-rate/1"
typedef struct nn_optim_lr {
  uint32_t size;
  double (*get)(void *self);
  int (*set)(void *self, double lr, nn_error *err);
} nn_optim_lr;

#ifdef __cplusplus
}
#endif
#endif /* NN_PLUGIN_EXT_H */
