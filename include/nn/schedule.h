/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Learning-rate schedules: a schedule plugin (ABI 2.2) behind the core's
 * linear warm-up.  The trainer owns one when the config has [schedule]
 * (nn_trainer_set_schedule); tests and tools can drive one directly.
 *
 * The warm-up (keys of [schedule] read by the core, not the plugin) is
 * PyTorch's LinearLR followed by the schedule through SequentialLR: for
 * the first `epochs` epochs the rate is
 *     base_lr * (start_factor + (1 - start_factor) * e / epochs)
 * with e the epoch (per_batch: the epoch as a fraction, epoch + batch /
 * batches, so the rate rises every batch); after it the plugin answers,
 * its epochs counted from 0 and its observe told only the epochs after
 * the warm-up. */
#ifndef NN_SCHEDULE_H
#define NN_SCHEDULE_H

#include <nn/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nn_warmup {
  size_t epochs;       /* 0: no warm-up */
  double start_factor; /* in (0, 1]: the first rate is base_lr times it */
  int per_batch;       /* rise every batch instead of every epoch */
} nn_warmup;

/* The warm-up's keys in [schedule], in the order of nn_warmup's members
 * ({NULL}-terminated; defaults: no warm-up, PyTorch LinearLR's 1/3). */
extern const nn_option nn_warmup_options[];
enum { NN_WARMUP_EPOCHS, NN_WARMUP_START_FACTOR, NN_WARMUP_PER_BATCH,
       NN_WARMUP_N_OPTIONS };
/* The warm-up from values resolved against nn_warmup_options. */
nn_warmup nn_warmup_from(const nn_value *values);

typedef struct nn_schedule nn_schedule; /* opaque */

/* A schedule from plugin p (a validated schedule descriptor, which must
 * outlive it) with its option values (lent for the call) and warm-up, for
 * an optimizer whose configured rate is base_lr.  *out is owned by the
 * caller (nn_schedule_free). */
int nn_schedule_create(nn_schedule **out, const nn_plugin *p,
                       const nn_value *opts, const nn_warmup *warmup,
                       double base_lr, nn_error *err);
void nn_schedule_free(nn_schedule *s); /* NULL-safe */

/* Whether the rate may change between batches of one epoch (the plugin's
 * NN_SCHEDULE_PER_BATCH, or a per-batch warm-up that has not ended by
 * `epoch`). */
int nn_schedule_per_batch(const nn_schedule *s, size_t epoch);
/* The rate for batch `batch` (of `batches`) of `epoch`: >= 0 and finite,
 * else an error naming the plugin. */
int nn_schedule_lr(nn_schedule *s, size_t epoch, size_t batch, size_t batches,
                   double *lr, nn_error *err);
/* After an epoch's validation: its metrics (epoch counted from 0 of the
 * run; warm-up epochs are not passed on to the plugin). */
int nn_schedule_observe(nn_schedule *s, size_t epoch, double train_loss,
                        double train_accuracy, double val_loss,
                        double val_accuracy, nn_error *err);
/* The plugin's state matrices (n = 0: none), owned by the plugin. */
nn_param *nn_schedule_state(nn_schedule *s, size_t *n);
/* The plugin's name. */
const char *nn_schedule_name(const nn_schedule *s);

#ifdef __cplusplus
}
#endif
#endif /* NN_SCHEDULE_H */
