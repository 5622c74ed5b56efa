/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to the CLI: turning a config file (plus --set overrides) into a
 * ready-to-train run: validated sections, loaded plugins, loaded data and a
 * trainer.  Shared by training, evaluation and sweeps. */
#ifndef NN_CLI_SETUP_H
#define NN_CLI_SETUP_H

#include <nn/nn.h>

#include "cli.h"

enum { DATA_DIR, DATA_FORMAT, N_DATA };
enum {
  TRAIN_EPOCHS,
  TRAIN_BATCH_SIZE,
  TRAIN_SEED,
  TRAIN_SHUFFLE,
  TRAIN_THREADS,
  TRAIN_PATIENCE,
  N_TRAIN
};
extern const nn_option cli_data_options[];
extern const nn_option cli_train_options[];

/* The plugin call in progress (see nn_call_record): lent to every trainer
 * set up here, read by nnrun's fatal-signal handler to name the plugin
 * that crashed.  The CLI's, for the life of the process. */
extern nn_call_record cli_plugin_call;

/* A loaded plugin and its validated option values. */
typedef struct plugin_slot {
  nn_loaded *loaded; /* owned */
  nn_value *values;  /* owned; strings point into the config */
} plugin_slot;

/* [model] type = sequential: a network of [layer NAME] sections. */
#define CLI_SEQUENTIAL "sequential"

typedef struct cli_run {
  nn_config *cfg; /* owned */
  nn_value data_v[N_DATA], train_v[N_TRAIN];
  plugin_slot model, optim; /* model.loaded is NULL for a sequential model,
                               whose values are those of [model] itself */
  plugin_slot schedule;     /* loaded is NULL without [schedule] */
  nn_value warmup_v[NN_WARMUP_N_OPTIONS]; /* [schedule]'s warm-up keys */
  plugin_slot *layers;      /* owned: n_layers, in file order */
  nn_layer_spec *layer_specs; /* owned array; names point into cfg */
  size_t n_layers;
  nn_dataset all, test;   /* owned */
  nn_dataset train, val;  /* views of `all` */
  nn_train_opts topts;
  nn_trainer *trainer;    /* owned */
  double load_seconds;
} cli_run;

/* What to set up.  SETUP_TEST_ONLY: SETUP_DATA loads the test set only
 * (evaluation; all, train and val stay empty). */
enum { SETUP_CONFIG = 1, SETUP_PLUGINS = 2, SETUP_DATA = 4, SETUP_TRAINER = 8,
       SETUP_ALL = 15, SETUP_TEST_ONLY = 16 };

/* Set up `what` (each step needs the ones before it).  Returns an exit
 * status; on failure err says why (FILE:LINE where it applies). */
int cli_run_setup(cli_run *r, const cli_options *opt, unsigned what,
                  nn_error *err);
void cli_run_free(cli_run *r); /* safe on a partly set-up run */
/* The model's name ("twolayer", "sequential") and plugin file (libnn's
 * for a sequential model), after SETUP_PLUGINS. */
const char *cli_model_name(const cli_run *r);
const char *cli_model_file(const cli_run *r);
/* A fresh training run's starting weights: [model] init_from, when set,
 * loaded into the trainer's parameters (after SETUP_TRAINER).  Not for
 * resumed runs or evaluation, whose weights come from elsewhere.  Returns
 * an exit status; err says why, with the config's FILE:LINE. */
int cli_init_weights(cli_run *r, nn_error *err);

/* Whether the command line or the config asks for a sweep ([sweep] or
 * --sweep) rather than one run; a sweep's own runs (single_run) never. */
int cli_wants_sweep(const cli_options *opt);

#endif
