/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Parameters shaped like a file's tensors: see params.h. */
#include "params.h"

#include <stdlib.h>

size_t fuzz_params(const nn_safetensors *f, nn_param **out) {
  size_t total = nn_safetensors_count(f), n = 0;
  *out = NULL;
  nn_param *p = calloc(total ? total : 1, sizeof *p);
  if (!p) return 0;
  for (size_t i = 0; i < total; i++) {
    size_t rows, cols;
    const char *name = nn_safetensors_name(f, i);
    if (nn_safetensors_shape(f, name, &rows, &cols) != NN_OK || !rows ||
        !cols || rows > FUZZ_PARAM_MAX / cols)
      continue;
    gsl_matrix *m = gsl_matrix_calloc(rows, cols);
    if (!m) break;
    p[n].name = name;
    p[n].value = m;
    n++;
  }
  *out = p;
  return n;
}

void fuzz_params_free(nn_param *params, size_t n) {
  for (size_t i = 0; params && i < n; i++) gsl_matrix_free(params[i].value);
  free(params);
}
