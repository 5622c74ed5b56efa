/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The training loop: batching, softmax + cross-entropy, optimizer steps,
 * validation, best-model tracking, evaluation.  Owns the seeded RNG. */
#ifndef NN_TRAIN_H
#define NN_TRAIN_H

#include <signal.h>

#include <nn/data.h>
#include <nn/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The plugin call in progress, kept up to date by the trainer (and a
 * sequential network, for its layers) for a program that wants to name
 * the plugin when the process dies of a fatal signal: its signal handler
 * reads it.  `op` is the operation ("create", "forward", ...), NULL
 * between plugin calls; while it is set, `plugin` names the plugin
 * ("twolayer"; a layer of a network is "fc1 (dense)").  Both are set
 * before each call (plugin first) and op is cleared after it.  Volatile:
 * a handler may read them at any instruction. */
typedef struct nn_call_record {
  const char *volatile plugin;
  const char *volatile op;
} nn_call_record;

/* GSL reports an error through one process-wide handler
 * (gsl_set_error_handler), which a library must leave to the program.  A
 * program that installs a handler remembering the error for the thread it
 * happened on can hand the trainer this function, which takes the error
 * back: it returns 1 and fills msg (size bytes) if a GSL error was
 * reported on the calling thread since it last returned, forgetting it,
 * and 0 otherwise.  The trainer asks it after every plugin call, so a GSL
 * function that failed inside a plugin (a product of mismatched shapes)
 * fails that call, named, instead of leaving its output unwritten. */
typedef int (*nn_gsl_trap_fn)(char *msg, size_t size);

typedef struct nn_train_opts {
  size_t epochs;
  size_t batch_size;
  uint64_t seed; /* seeds the RNG used for weights, then for shuffling */
  int shuffle;   /* reshuffle training batches every epoch */
  size_t threads;/* >= 2: gather the next batch on a second thread while
                    the model computes, and lend layers that take threads
                    (NN_EXT_LAYER_PARALLEL) this many to compute on (0 or
                    1: one thread); the results do not depend on it */
  nn_call_record *calls; /* optional (NULL: none), lent: must outlive the
                            trainer, which records its plugin calls in it */
  size_t patience; /* early stopping (0: off): end the run once this many
                      epochs in a row brought no better validation accuracy
                      than the best so far (see nn_early_stop) */
  nn_gsl_trap_fn gsl_trap; /* optional (NULL: GSL errors are not asked
                              about); see nn_gsl_trap_fn */
  const struct nn_comm *comm; /* optional (NULL: one process), lent: the
                      ranks of a data-parallel run (<nn/dist.h>); must
                      outlive the trainer */
} nn_train_opts;

/* The CPUs this process may run on (its affinity mask, else the CPUs
 * online; at least 1). */
size_t nn_cpus_available(void);
/* Seconds on a monotonic clock (for timings: differences only). */
double nn_now_seconds(void);

typedef struct nn_epoch_metrics {
  size_t epoch;         /* counts from 0 */
  double train_loss;    /* mean of the epoch's batch losses */
  double train_accuracy;/* hits / samples over the epoch */
  double val_loss;      /* mean of validation batch losses */
  double val_accuracy;
  double train_seconds; /* training part of the epoch only */
  double val_seconds;
  double lr;            /* the learning rate of the epoch's first batch
                           (NaN: the optimizer does not say) */
} nn_epoch_metrics;

/* Called after each epoch; a non-zero return stops training early. */
typedef int (*nn_epoch_fn)(void *user, const nn_epoch_metrics *m);

typedef struct nn_trainer nn_trainer; /* opaque */

/* One layer of a network: a loaded layer plugin and its validated option
 * values, under the name of its config section ([layer NAME]). */
typedef struct nn_layer_spec {
  const char *name;
  const nn_plugin *plugin;
  const nn_value *opts;
} nn_layer_spec;

/* The model to train: a model plugin with its option values, or (plugin
 * NULL) a network of n_layers layers in order (`sequential`). */
typedef struct nn_model_spec {
  const nn_plugin *plugin;
  const nn_value *opts;
  const nn_layer_spec *layers;
  size_t n_layers;
} nn_model_spec;

/* Create model and optimizer instances for examples of shape `in` and
 * n_out classes.  Everything the specs point to is lent for the call,
 * except the plugins' descriptors, which must outlive the trainer.  *out
 * is owned by the caller (nn_trainer_free). */
int nn_trainer_create(nn_trainer **out, const nn_model_spec *model,
                      const nn_plugin *optim, const nn_value *optim_opts,
                      nn_shape in, size_t n_out, const nn_train_opts *opts,
                      nn_error *err);
void nn_trainer_free(nn_trainer *t); /* NULL-safe */

/* What nn_trainer_create would allocate, in bytes, asked of the model's
 * plugins before anything is created (their memory operation, ABI 2.1). */
typedef struct nn_memory_estimate {
  uint64_t total;   /* model, a copy of its weights (the best epoch's), an
                       allowance for the optimizer's state (two buffers the
                       size of the weights, as Adam keeps) and the batch
                       buffers: a lower bound unless complete */
  uint64_t model;   /* the model's own (a network's: its layers' and the
                       buffers between them) */
  uint64_t weights; /* of which parameter values and state */
  int complete;     /* 1: every plugin answered; 0: a model without the
                       memory operation (nothing but the batches counted),
                       or a network counted up to its first layer without
                       one (the layers after it take its output shape,
                       known only once it is created) */
  size_t largest;   /* a network's layer that needs most, and how much */
  uint64_t largest_bytes;
} nn_memory_estimate;

/* Fill *est for this model, input shape, class count and options (batch
 * size and threads matter).  Allocates nothing, creates nothing. */
void nn_trainer_memory(const nn_model_spec *model, nn_shape in, size_t n_out,
                       const nn_train_opts *opts, nn_memory_estimate *est);

/* Faults.  A plugin call that fails (or during which GSL reported an
 * error, see nn_gsl_trap_fn) fails with NN_EPLUGIN and the message
 * "PLUGIN.OPERATION (epoch E, batch B): why", where PLUGIN is the model's
 * or optimizer's name or, for a layer of a network, "TYPE[NAME]"
 * ("dense[fc1].backward"); evaluation batches read "(validation after
 * epoch E, batch B)" or "(evaluation, batch B)".  A plugin that gave no
 * message gets "returned error N (NAME) without a message".  The core also
 * holds plugins to what they declared: after create, the parameters'
 * sizes against their memory operation (a network's layers: their output
 * shape too); after every epoch, the parameters and state the params and
 * state operations hand out against those of create (same arrays, same
 * matrices, same shapes and data).
 *
 * Numbers: the loss of every training batch, the parameters and state
 * after every epoch and the validation loss must be finite.  The first
 * value that is not ends the run with NN_ENUMERIC, before the epoch is
 * reported to on_epoch (so a checkpoint written there is the last good
 * one), saying where (epoch, batch, parameter, row and column), what it
 * was, and the likely cause: parameters that grew without bound (a
 * learning rate too large) or a model that computed non-finite scores from
 * finite parameters.  nn_trainer_evaluate fails the same way on a
 * non-finite loss.  None of this changes a number: a run that passes every
 * check is the run without them, bit for bit. */

/* The first NaN or infinity in p[0..n): returns its index in p, with its
 * row, column and value (n: every value is finite; the outputs untouched). */
size_t nn_find_nonfinite(const nn_param *p, size_t n, size_t *row,
                         size_t *col, double *value);

/* Train for opts->epochs on `train`, validating on `val` after each epoch
 * and remembering the parameters of the epoch with the best validation
 * accuracy (strictly greater wins).  With opts->patience, training ends
 * before an epoch when nn_early_stop says so for the epoch before it: also
 * at once, training nothing, when a resumed run (nn_trainer_start_at,
 * nn_trainer_set_best) had already stopped there.  metrics (if non-NULL)
 * receives one entry per epoch run; *n_run (if non-NULL) how many.
 * nn_trainer_stopped says why it ended. */
int nn_trainer_run(nn_trainer *t, const nn_dataset *train,
                   const nn_dataset *val, nn_epoch_fn on_epoch, void *user,
                   nn_epoch_metrics *metrics, size_t *n_run, nn_error *err);

/* Early stopping's rule: whether a run stops after `epoch` (counting from
 * 0) when best_epoch (-1: none) is its best so far, with this patience (0:
 * never).  The best epoch is the last one that beat every epoch before it
 * (strictly greater wins), so the epochs after it, up to `epoch`, are the
 * ones in a row without a better validation accuracy: the run stops when
 * there are `patience` of them.  A function of the metrics so far only (the
 * best epoch is), so a resumed run stops where the uninterrupted one did. */
int nn_early_stop(size_t patience, size_t epoch, long best_epoch);

/* Why the last nn_trainer_run ended. */
typedef enum nn_stop_reason {
  NN_STOP_NONE = 0,  /* no run yet, or it failed */
  NN_STOP_EPOCHS,    /* every epoch up to opts->epochs has run (even when
                        the patience ran out after the last one) */
  NN_STOP_PATIENCE,  /* early stopping, before opts->epochs */
  NN_STOP_CALLBACK,  /* on_epoch returned non-zero */
  NN_STOP_REQUEST    /* the watch (nn_trainer_watch) asked to stop */
} nn_stop_reason;
/* How the last nn_trainer_run ended and *after_epoch (if non-NULL) the
 * last epoch finished then, by it or before a resume (-1: none). */
nn_stop_reason nn_trainer_stopped(const nn_trainer *t, long *after_epoch);
/* Put the best epoch's parameters back into the model; returns that epoch
 * (or -1 if no epoch ran, leaving the model as is). */
long nn_trainer_restore_best(nn_trainer *t);
/* Loss (mean of batch losses) and accuracy of the current model on ds,
 * in order, in batches of batch_size. */
int nn_trainer_evaluate(nn_trainer *t, const nn_dataset *ds, double *loss,
                        double *accuracy, nn_error *err);

/* The model's parameters (owned by the model, inside the trainer). */
nn_param *nn_trainer_params(nn_trainer *t, size_t *n);
/* What a weights file holds: the parameters, then the model's state
 * buffers (grad NULL).  Owned by the trainer. */
nn_param *nn_trainer_weights(nn_trainer *t, size_t *n);
/* The model's name for messages ("twolayer", "sequential"). */
const char *nn_trainer_model_name(const nn_trainer *t);
/* The model instance and its ops (owned by the trainer). */
void *nn_trainer_model(nn_trainer *t, const nn_model_ops **ops);

/* Progress: called after every batch of training with the epoch, batches
 * done and in all, and the epoch's running mean loss and accuracy.  Meant
 * for displays; it must not touch the trainer. */
typedef void (*nn_batch_fn)(void *user, size_t epoch, size_t batch,
                            size_t n_batches, double loss, double accuracy);
void nn_trainer_on_batch(nn_trainer *t, nn_batch_fn fn, void *user);

/* Follow a schedule (plugin p, a validated schedule descriptor that must
 * outlive the trainer, with its option values, lent for the call, and a
 * warm-up or NULL) instead of the optimizer's configured learning rate,
 * which becomes the schedule's base.  NN_ECONFIG when the optimizer lacks
 * the learning-rate extension.  The trainer owns the schedule.  Without
 * a schedule the optimizer is never told a rate: results are those of
 * its own. */
struct nn_warmup;
int nn_trainer_set_schedule(nn_trainer *t, const nn_plugin *p,
                            const nn_value *opts,
                            const struct nn_warmup *warmup, nn_error *err);

/* ---- Checkpoints and resuming (all state lives in the trainer). ---- */
/* Whether a run of this trainer can be resumed from a checkpoint: NN_OK,
 * or NN_EPLUGIN saying why not.  An optimizer without the `state`
 * operation cannot: what it keeps (moments, step counts) would restart
 * silently.  A stateless optimizer says so with a state operation that
 * hands out no buffers (see <nn/plugin.h>). */
int nn_trainer_resumable(const nn_trainer *t, nn_error *err);
/* The schedule's state matrices (n = 0: no schedule, or none). */
nn_param *nn_trainer_schedule_state(nn_trainer *t, size_t *n);
/* The optimizer's state matrices (its `state` op; n = 0 without). */
nn_param *nn_trainer_optim_state(nn_trainer *t, size_t *n);
/* The weights (nn_trainer_weights) of the best epoch so far, named like
 * the model's (grad is NULL), and that epoch (-1 if none) and its validation accuracy.
 * Writing into the returned values and calling nn_trainer_set_best restores
 * a saved best model. */
nn_param *nn_trainer_best(nn_trainer *t, size_t *n, long *epoch,
                          double *val_accuracy);
void nn_trainer_set_best(nn_trainer *t, long epoch, double val_accuracy);
/* The RNG's state as bytes, as a run resuming where training stands
 * starts from: inside an epoch (in a watch callback, or after a stop
 * there), the state before that epoch's shuffle, which the resumed run
 * draws again.  *size receives its length; buf (may be NULL) receives a
 * copy when non-NULL. */
void nn_trainer_rng_state(const nn_trainer *t, void *buf, size_t *size);
int nn_trainer_set_rng_state(nn_trainer *t, const void *buf, size_t size,
                             nn_error *err);
/* The next nn_trainer_run starts at this epoch (default 0) and runs up to
 * opts->epochs; metrics[] is still indexed by epoch. */
void nn_trainer_start_at(nn_trainer *t, size_t epoch);

/* Where training stands: inside `epoch`, `batch` of its batches done, with
 * the sums its metrics are made of so far.  Between epochs batch is 0 and
 * the sums are 0.  A checkpoint taken at a batch boundary holds it, with
 * the weights, the optimizer's state and nn_trainer_rng_state. */
typedef struct nn_train_position {
  size_t epoch;
  size_t batch;         /* batches of `epoch` done */
  double loss_sum;      /* the sum of their losses */
  size_t hits, seen;    /* correct predictions and examples among them */
  double train_seconds; /* the time they took */
} nn_train_position;
/* Where training stands now (after a stop: where it stopped). */
void nn_trainer_position(const nn_trainer *t, nn_train_position *pos);
/* The next nn_trainer_run starts at *pos, the position of a checkpoint
 * (restored with it: weights, optimizer state, RNG state, best epoch):
 * it shuffles pos->epoch as the uninterrupted run did, skips the batches
 * done and adds the rest to the sums, so its metrics are that run's, bit
 * for bit.  With pos->batch == 0 it is nn_trainer_start_at(pos->epoch). */
void nn_trainer_resume_at(nn_trainer *t, const nn_train_position *pos);

/* Called from inside nn_trainer_run when the watched flag is non-zero:
 * after a batch, and before an epoch (at batch 0), with where training
 * stands.  It may save a checkpoint (everything in the trainer is whole
 * then) and lower the flag.  Non-zero: stop there; nn_trainer_run
 * returns NN_OK and nn_trainer_stopped says NN_STOP_REQUEST. */
typedef int (*nn_watch_fn)(void *user, const nn_train_position *pos);
/* Watch *flag (lent; NULL: none), e.g. one a signal handler of the
 * program raises: the trainer only reads it, once per batch, and installs
 * no handler itself. */
void nn_trainer_watch(nn_trainer *t, const volatile sig_atomic_t *flag,
                      nn_watch_fn fn, void *user);

/* ---- Data-parallel runs (nn_train_opts.comm with 2+ ranks). ---- */
/* Every rank's weights, optimizer state, schedule state, best epoch and
 * its weights and RNG state become rank 0's.  Called by every rank after the weights are
 * set (initial weights, init_from or a resumed checkpoint); NN_OK at once
 * without a communicator. */
int nn_trainer_broadcast(nn_trainer *t, nn_error *err);
/* A checksum (FNV-1a) of the weights, the optimizer's state and the
 * schedule's, for ranks to compare: equal on every rank unless something went wrong. */
uint64_t nn_trainer_checksum(nn_trainer *t);

/* Write metrics as CSV (header epoch,train_loss,train_accuracy,val_loss,
 * val_accuracy,train_seconds,lr) atomically: temp file, fsync, rename. */
int nn_metrics_write_csv(const char *path, const nn_epoch_metrics *m,
                         size_t n, nn_error *err);

/* Read a metrics.csv written by nn_metrics_write_csv: up to max epochs
 * (which must be 0, 1, 2, ... in order) into m, their count into *n.
 * Doubles come back bit for bit.  A file without the lr column (written
 * before it existed) reads with lr NaN. */
int nn_metrics_read_csv(const char *path, nn_epoch_metrics *m, size_t max,
                        size_t *n, nn_error *err);

/* Central-difference gradient check of a model instance on (X, labels)
 * (n_out classes) under softmax + mean cross-entropy: the largest relative error
 * |analytic - numeric| / max(|analytic| + |numeric|, 1e-12) over every
 * entry of every parameter, and which parameter had it. */
int nn_gradcheck(const nn_model_ops *ops, void *model, const gsl_matrix *X,
                 const uint32_t *labels, size_t n_out, double step,
                 double *max_rel_err,
                 const char **worst_param, nn_error *err);

#ifdef __cplusplus
}
#endif
#endif /* NN_TRAIN_H */
