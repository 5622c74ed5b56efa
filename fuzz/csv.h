/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The CSV fuzz targets (csv.c: the file as given; csv_gz.c: the same bytes
 * gzip-compressed), loaded with nn_dataset_load_csv. */
#ifndef NN_FUZZ_CSV_H
#define NN_FUZZ_CSV_H

#include <stddef.h>
#include <stdint.h>

int fuzz_csv(const uint8_t *data, size_t size, int gzip);

#endif
