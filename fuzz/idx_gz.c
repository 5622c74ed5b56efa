/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Fuzz target: the IDX reader on .gz files, the fuzzed bytes compressed,
 * so the parser sees them through zlib's inflate. */
#include "idx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fuzz_idx(data, size, 1);
}
