/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to the CLI: the state of one training run (cli_train) and the
 * files it keeps current in its directory: metrics.csv, best and last
 * checkpoints, summary.json (with the run's status) and the learning
 * curves, each replaced atomically. */
#ifndef NN_RUN_OUTPUTS_H
#define NN_RUN_OUTPUTS_H

#include <nn/nn.h>

#include "checkpoint.h"
#include "cli.h"
#include "cli_setup.h"

typedef struct run_state {
  const cli_options *opt;
  cli_run *run;
  int live;                  /* stderr is a terminal: draw a progress line */
  double epoch_start;        /* for the progress line's elapsed / ETA */
  size_t bar_epoch;          /* the epoch it is drawn for, and the batches */
  size_t bar_first;          /* of it done before (a resumed epoch's) */
  double last_draw;
  double t_start;            /* when the command started */
  char out_dir[4096];
  char metrics_path[4200];
  nn_epoch_metrics *metrics; /* owned: one entry per epoch */
  size_t n_epochs_done;
  int write_failed;
  nn_error write_err;
  checkpoint_best best_file; /* what out_dir/best.safetensors holds */
  int lock_fd;               /* owned: run_dir_claim's lock, or -1 */
  int lock_new;              /* this process made run.lock where no run
                                was: removed again if it fails before
                                training, so the directory stays free */
  int trained;               /* training began */
  char *config;              /* owned: run_config_text, recorded in last */
  int curves_off;            /* plotting failed once (warned): no more */
} run_state;

/* After epoch m->epoch: metrics.csv, best and last checkpoints, in that
 * order (see checkpoint.h for why a crash anywhere leaves files a resumed
 * run continues from), then summary.json ("running") and the curves. */
int run_outputs_epoch(run_state *st, const nn_epoch_metrics *m,
                      nn_error *err);
/* A checkpoint inside an epoch (pos->batch > 0; nothing otherwise: the
 * epoch's own is current). */
int run_outputs_position(run_state *st, const nn_train_position *pos,
                         nn_error *err);

/* How the run ended, for summary.json. */
typedef struct run_end {
  const char *status;      /* "running", "interrupted", "failed", "finished" */
  long best_epoch;
  double test_loss, test_accuracy; /* NAN: not tested */
  nn_stop_reason why;      /* NN_STOP_NONE: not ended by the trainer */
  long stopped_after;
} run_end;
int run_outputs_summary(const run_state *st, const run_end *end,
                        nn_error *err);
/* curves.png / curves.svg of the epochs so far.  A run without plotting
 * still succeeds: the first failure is a warning, then no more tries. */
void run_outputs_curves(run_state *st);

#endif
