/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Fuzz target: nnrun's checkpoint reader (checkpoint.c of the CLI) on a
 * run directory's pair of files: one input carries last.safetensors and
 * best.safetensors (split by fuzz_split; an empty second part means no
 * best file).  It checks the pair's metadata against each other
 * (checkpoint_check_best, as `nnrun eval --weights` does) and loads the
 * weights of each file as a model shaped like it would, and as one with
 * only some of its tensors (checkpoint_load_weights). */
#include <stddef.h>
#include <stdint.h>

#include <gsl/gsl_errno.h>

#include "checkpoint.h"
#include "fuzz.h"
#include "params.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  gsl_set_error_handler_off(); /* as nnrun does: errors are returned */
  return 0;
}

static void load_weights(const char *path) {
  nn_safetensors *f = NULL;
  nn_error err;
  if (nn_safetensors_open(&f, path, &err) != NN_OK) return;
  nn_param *params;
  size_t n = fuzz_params(f, &params);
  (void)checkpoint_load_weights(path, params, n, &err);
  /* A model with only some of the file's tensors: the others must be
   * optimizer state, looked up in the file's list of it. */
  (void)checkpoint_load_weights(path, params, n / 2, &err);
  fuzz_params_free(params, n);
  nn_safetensors_close(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *last, *best;
  size_t last_len, best_len;
  fuzz_split(data, size, &last, &last_len, &best, &best_len);
  const char *last_path = fuzz_write("last.safetensors", last, last_len, 0);
  const char *best_path = fuzz_path("best.safetensors");
  if (best_len)
    (void)fuzz_write("best.safetensors", best, best_len, 0);
  else
    fuzz_remove("best.safetensors");
  nn_error err;
  (void)checkpoint_check_best(best_path, &err);
  load_weights(last_path);
  if (best_len) load_weights(best_path);
  return 0;
}
