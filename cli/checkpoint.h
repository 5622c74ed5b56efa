/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to the CLI: a run's checkpoints in safetensors form.
 *
 *   DIR/best.safetensors  the parameters of the best epoch so far
 *                         (metadata: format, model, epoch, val_accuracy)
 *   DIR/last.safetensors  the parameters after the last finished epoch (or
 *                         batch, see below) plus
 *                         the optimizer's state (its tensor names are listed
 *                         in the metadata key nnrun.optimizer_state), the
 *                         RNG state, the best epoch, its accuracy and the
 *                         64-bit FNV-1a hash of best.safetensors' bytes
 *                         (best_fnv1a64), the run's resolved
 *                         configuration (config: run_config.h's lines)
 *                         and, when taken inside an epoch, its position
 *                         (batch: batches done of epoch + 1, whose
 *                         shuffle the RNG state comes before; the sums
 *                         batch_loss_sum, batch_hits, batch_seen,
 *                         batch_seconds): all a resumed run needs to
 *                         continue bit for bit.
 *
 * After an epoch best.safetensors is written first (when the epoch is the
 * best so far), then last.safetensors, each atomically.  So after a crash
 * at any point best.safetensors is either the file last.safetensors
 * records by hash, or the best of the one epoch after last's, written just
 * before the crash; anything else is damage.  Metadata holds no times or
 * paths, so two identical runs write byte-identical files. */
#ifndef NN_CHECKPOINT_H
#define NN_CHECKPOINT_H

#include <stdint.h>

#include <nn/nn.h>

/* best.safetensors as the run directory holds it: its epoch (-1: none)
 * and the FNV-1a hash of its bytes.  The CLI keeps it between saves, so
 * that last.safetensors records the file actually on disk. */
typedef struct checkpoint_best {
  long epoch;
  uint64_t fnv1a;
} checkpoint_best;

/* Save where training stands (*pos: batch 0 after epoch pos->epoch - 1
 * finished, else inside pos->epoch).  After an epoch: best.safetensors if
 * that epoch is the best so far (updating *best), then last.safetensors
 * recording *best; inside an epoch, last.safetensors alone.  config (may
 * be NULL) is recorded as it is.  Refuses (before writing last) when
 * best.safetensors holds another epoch than the trainer's best, which
 * happens only when a resumed run did not repeat the epoch its
 * interrupted run had found best. */
int checkpoint_save(nn_trainer *t, const char *dir,
                    const nn_train_position *pos, const char *model_name,
                    const char *optim_name, const char *config,
                    checkpoint_best *best, nn_error *err);
/* Restore a trainer (created from the same config) from DIR's checkpoints,
 * after validating every metadata field (NN_EFORMAT naming the file and
 * the field).  *pos receives where the run goes on (for
 * nn_trainer_resume_at; pos->epoch - 1 is the last finished epoch) and
 * *best what best.safetensors holds.  best->epoch == pos->epoch means the
 * run was killed between writing best and last: the resumed run must
 * repeat that epoch, which finds the same best and rewrites the file (the
 * trainer's best weights are not loaded then). */
int checkpoint_resume(nn_trainer *t, const char *dir, const char *model_name,
                      const char *optim_name, nn_train_position *pos,
                      checkpoint_best *best, nn_error *err);
/* The configuration DIR/last.safetensors records: *config (owned by the
 * caller) is NULL when it records none (a checkpoint of an nnrun that did
 * not record it).  NN_ENOTFOUND when there is no last.safetensors. */
int checkpoint_read_config(const char *dir, char **config, nn_error *err);
/* Load model weights from any checkpoint (best or last) or a plain
 * safetensors file with exactly the model's tensors; declared optimizer
 * state is skipped.  Names and shapes are checked before anything is
 * copied. */
int checkpoint_load_weights(const char *path, nn_param *params, size_t n,
                            nn_error *err);
/* When `weights` is a best.safetensors with a last.safetensors next to
 * it: whether the two agree (the hash and epoch last records).  NN_OK when
 * they do or there is no last.safetensors; NN_EFORMAT when they disagree,
 * saying whether the run was interrupted while saving (resume it) or a
 * file is damaged or from another run. */
int checkpoint_check_best(const char *weights, nn_error *err);
/* The exit status for a checkpoint_* error, the same wherever weights are
 * loaded (--weights, init_from, --resume): a file that is not there or
 * does not fit the configured model is the user's mistake (EXIT_USAGE); a
 * damaged or unreadable one is a runtime failure. */
int checkpoint_status(int rc);

#endif
