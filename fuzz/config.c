/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Fuzz target: the INI config loader (nn_config_load) and everything a
 * run does with a loaded config before any plugin sees it: walking the
 * sections and keys, checking section names, a --set, and strict
 * validation of a section against an option table of every type. */
#include <stddef.h>
#include <stdint.h>

#include <nn/config.h>

#include "fuzz.h"

/* One option of each type, with bounds, as the core's own tables have. */
static const nn_option table[] = {
    {"epochs", NN_OPT_INT, "10", "passes", NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1,
     1e6},
    {"learning_rate", NN_OPT_REAL, "0.1", "step",
     NN_OPT_HAS_MIN | NN_OPT_MIN_EXCLUSIVE, 0, 0},
    {"shuffle", NN_OPT_BOOL, "true", "reshuffle", 0, 0, 0},
    {"dir", NN_OPT_STRING, "data", "where", 0, 0, 0},
    {NULL, 0, NULL, NULL, 0, 0, 0}};
static const char *const extra[] = {"type", NULL};
static const char *const sections[] = {"data", "train", "model", "optimizer",
                                       "layer *", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_write("fuzz.ini", data, size, 0);
  nn_config *cfg = NULL;
  nn_error err;
  if (nn_config_load(&cfg, path, &err) != NN_OK) return 0;
  const char *where, *value, *name;
  for (size_t i = 0; (name = nn_config_section_at(cfg, i, &where)); i++) {
    for (size_t k = 0; nn_config_key_at(cfg, name, k, &value, &where); k++)
      (void)value;
    nn_value values[sizeof table / sizeof table[0]];
    (void)nn_config_resolve(cfg, name, "fuzz", table, extra, values, &err);
  }
  (void)nn_config_check_sections(cfg, sections, &err);
  (void)nn_config_get(cfg, "train", "epochs", &where);
  (void)nn_config_set(cfg, "train.epochs = 3", &err);
  (void)nn_config_set(cfg, "fuzz.new=1", &err);
  nn_config_free(cfg);
  return 0;
}
