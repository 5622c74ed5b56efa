/* Private to the CLI: a run's checkpoints in safetensors form.
 *
 *   DIR/best.safetensors  the parameters of the best epoch so far
 *                         (metadata: epoch, val_accuracy)
 *   DIR/last.safetensors  the parameters after the last finished epoch plus
 *                         the optimizer's state (its tensor names are listed
 *                         in the metadata key nnrun.optimizer_state), the
 *                         RNG state, the best epoch and its accuracy: all a
 *                         resumed run needs to continue bit for bit.
 *
 * Both are written atomically; metadata holds no times or paths, so two
 * identical runs write byte-identical files. */
#ifndef NN_CHECKPOINT_H
#define NN_CHECKPOINT_H

#include <nn/nn.h>

/* Save after `epoch` finished: best.safetensors if that epoch is the best
 * so far, then last.safetensors. */
int checkpoint_save(nn_trainer *t, const char *dir, size_t epoch,
                    const char *model_name, const char *optim_name,
                    nn_error *err);
/* Restore a trainer (created from the same config) from DIR's checkpoints;
 * *epoch receives the last finished epoch. */
int checkpoint_resume(nn_trainer *t, const char *dir, const char *model_name,
                      const char *optim_name, size_t *epoch, nn_error *err);
/* Load model weights from any checkpoint (best or last) or a plain
 * safetensors file with exactly the model's tensors; declared optimizer
 * state is skipped.  Names and shapes are checked before anything is
 * copied. */
int checkpoint_load_weights(const char *path, nn_param *params, size_t n,
                            nn_error *err);
/* The exit status for a checkpoint_* error, the same wherever weights are
 * loaded (--weights, init_from, --resume): a file that is not there or
 * does not fit the configured model is the user's mistake (EXIT_USAGE); a
 * damaged or unreadable one is a runtime failure. */
int checkpoint_status(int rc);

#endif
