/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Shared by the IDX fuzz targets: see idx.h. */
#include "idx.h"

#include <nn/data.h>

#include "fuzz.h"

int fuzz_idx(const uint8_t *data, size_t size, int gzip) {
  const uint8_t *img, *lab;
  size_t img_len, lab_len;
  fuzz_split(data, size, &img, &img_len, &lab, &lab_len);
  const char *img_path = fuzz_write("images-idx3-ubyte", img, img_len, gzip);
  const char *lab_path = fuzz_write("labels-idx1-ubyte", lab, lab_len, gzip);
  nn_dataset ds;
  nn_error err;
  if (nn_dataset_load_idx(&ds, img_path, lab_path, &err) == NN_OK) {
    /* A loaded dataset must be all there: touch its last bytes. */
    volatile uint8_t sink = ds.pixels[ds.n * ds.dim - 1] ^ ds.labels[ds.n - 1];
    (void)sink;
    nn_dataset_free(&ds);
  }
  return 0;
}
