/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The IDX fuzz targets (idx.c: the files as given; idx_gz.c: the same
 * bytes gzip-compressed): one input carries the image file and the label
 * file (split by fuzz_split), loaded with nn_dataset_load_idx. */
#ifndef NN_FUZZ_IDX_H
#define NN_FUZZ_IDX_H

#include <stddef.h>
#include <stdint.h>

int fuzz_idx(const uint8_t *data, size_t size, int gzip);

#endif
