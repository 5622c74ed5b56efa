/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Fuzz target: the CSV reader on .gz files, the fuzzed bytes compressed,
 * so lines reach the parser through zlib's inflate. */
#include "csv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fuzz_csv(data, size, 1);
}
