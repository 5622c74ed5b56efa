/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Shared by the CSV fuzz targets: see csv.h. */
#include "csv.h"

#include <nn/data.h>

#include "fuzz.h"

int fuzz_csv(const uint8_t *data, size_t size, int gzip) {
  const char *path = fuzz_write(gzip ? "data.csv.gz" : "data.csv", data, size,
                                gzip);
  nn_dataset ds;
  nn_error err;
  if (nn_dataset_load_csv(&ds, path, &err) == NN_OK) {
    volatile uint8_t sink = ds.pixels[ds.n * ds.dim - 1] ^ ds.labels[ds.n - 1];
    (void)sink;
    nn_dataset_free(&ds);
  }
  return 0;
}
