/* SPDX-License-Identifier: GPL-3.0-or-later */
/* For the safetensors and checkpoint fuzz targets: parameters shaped like
 * an opened file's tensors, as a model that fits the file would have. */
#ifndef NN_FUZZ_PARAMS_H
#define NN_FUZZ_PARAMS_H

#include <nn/safetensors.h>

/* One nn_param per tensor of f that loads into a matrix (1-D or 2-D, no
 * empty dimension, at most FUZZ_PARAM_MAX elements: the file has that
 * many bytes, so nothing here is larger than the input), named as in f
 * and filled with zeros.  Returns the count (*out NULL for none, or when
 * out of memory); *out and its matrices are the caller's, released with
 * fuzz_params_free.  Names are borrowed from f. */
#define FUZZ_PARAM_MAX ((size_t)1 << 20)
size_t fuzz_params(const nn_safetensors *f, nn_param **out);
void fuzz_params_free(nn_param *params, size_t n);

#endif
