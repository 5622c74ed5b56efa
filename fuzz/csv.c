/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Fuzz target: the CSV reader on the bytes as given (plain files, and
 * gzip files when the seeds or mutations make them). */
#include "csv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fuzz_csv(data, size, 0);
}
