/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to the CLI: DIR/summary.json, everything about a run in one
 * machine-readable file (written with jansson, atomically), rewritten
 * after every epoch and when the run ends. */
#ifndef NN_RUN_SUMMARY_H
#define NN_RUN_SUMMARY_H

#include <nn/nn.h>

/* One config section as resolved: its option table and values, plus the
 * plugin type for [model] / [optimizer] (NULL otherwise).  A section may
 * be listed twice with different tables ([schedule]: the plugin's keys,
 * then the core's warm-up keys): its keys are merged. */
typedef struct run_section {
  const char *name;
  const char *type;
  const nn_option *table;
  const nn_value *values;
} run_section;

/* Layers listed in a summary (a longer network lists its first ones). */
#define RUN_SUMMARY_MAX_LAYERS 64

typedef struct run_summary {
  const char *config_path;
  const run_section *sections;
  size_t n_sections;
  const nn_plugin *model, *optim; /* descriptors, for name and version;
                                     model is NULL for a sequential one */
  const char *model_file, *optim_file;
  const nn_loaded *const *layers; /* a sequential model's layer plugins */
  size_t n_layers;
  const nn_loaded *schedule;      /* [schedule]'s plugin, or NULL */
  uint64_t seed;
  const nn_epoch_metrics *metrics; /* epochs 0..n_epochs-1 */
  size_t n_epochs;
  long best_epoch;
  /* "running", "interrupted", "failed" or "finished". */
  const char *status;
  /* Why training ended: "patience" (early stopping) or "epochs" (all of
   * them ran), after which epoch, and [train] patience; NULL (written as
   * null) while it has not. */
  const char *stop_reason;
  long stopped_after;
  size_t patience;
  double test_loss, test_accuracy; /* NAN (null) until tested */
  double load_seconds, total_seconds;
} run_summary;

int run_summary_write(const char *path, const run_summary *s, nn_error *err);

#endif
