/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Fuzz target: the safetensors reader (nn_safetensors_open) and every
 * query a caller makes of an opened file, including copying each tensor
 * out and loading a model's parameters from it. */
#include <stddef.h>
#include <stdint.h>

#include <gsl/gsl_errno.h>

#include <nn/safetensors.h>

#include "fuzz.h"
#include "params.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  gsl_set_error_handler_off(); /* as nnrun does: errors are returned */
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_write("model.safetensors", data, size, 0);
  nn_safetensors *f = NULL;
  nn_error err;
  if (nn_safetensors_open(&f, path, &err) != NN_OK) return 0;
  (void)nn_safetensors_meta(f, "format");
  (void)nn_safetensors_meta(f, "");
  nn_param *params;
  size_t n = fuzz_params(f, &params);
  for (size_t i = 0; i < n; i++) {
    (void)nn_safetensors_dtype(f, params[i].name);
    (void)nn_safetensors_read(f, params[i].name, params[i].value, &err);
  }
  /* The whole set, then all but the first (the file then has a stray). */
  (void)nn_safetensors_read_params(f, params, n, NULL, &err);
  if (n) (void)nn_safetensors_read_params(f, params + 1, n - 1, NULL, &err);
  fuzz_params_free(params, n);
  nn_safetensors_close(f);
  return 0;
}
