/* SPDX-License-Identifier: GPL-3.0-or-later */
/* --resume: see run_resume.h. */
#include <config.h>

#include "run_resume.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "run_config.h"

int run_resume_check_config(const char *dir, const char *config,
                            int verbosity, nn_error *err) {
  char *recorded = NULL, *report = NULL;
  nn_error e;
  int rc = checkpoint_read_config(dir, &recorded, &e);
  if (rc == NN_ENOTFOUND) return EXIT_OK;
  if (rc) {
    nn_error_set(err, rc, "%s", e.msg);
    return checkpoint_status(rc);
  }
  if (!recorded) {
    if (verbosity > 0)
      fprintf(stderr,
              "nnrun: warning: %s/last.safetensors records no configuration "
              "(an older nnrun wrote it): resuming without checking that "
              "the configuration is the run's\n",
              dir);
    return EXIT_OK;
  }
  int n = run_config_diff(recorded, config, &report);
  int status = EXIT_OK;
  if (n < 0) {
    nn_error_set(err, NN_ENOMEM, "out of memory");
    status = EXIT_RUNTIME;
  } else if (n > 0) {
    /* The whole list: a message would cut it short. */
    fprintf(stderr,
            "nnrun: --resume %s: the configuration differs from the run's "
            "in %d key%s (only train.epochs, train.patience and "
            "train.threads may change):\n%s",
            dir, n, n == 1 ? "" : "s", report);
    nn_error_set(err, NN_ECONFIG,
                 "--resume %s: not the run's configuration; give its values "
                 "back, or start a new run elsewhere",
                 dir);
    status = EXIT_USAGE;
  }
  free(recorded);
  free(report);
  return status;
}

/* The trainer's best epoch (-1: none). */
static long best_before(cli_run *r) {
  size_t n;
  long best;
  nn_trainer_best(r->trainer, &n, &best, NULL);
  return best;
}

int run_resume(run_state *st, nn_error *err) {
  cli_run *r = st->run;
  nn_train_position pos;
  size_t n_rows;
  char path[4200];
  snprintf(path, sizeof path, "%s/last.safetensors", st->out_dir);
  if (access(path, F_OK) != 0) {
    if (st->opt->verbosity > 0)
      fprintf(stderr,
              "nnrun: %s has no finished epoch: starting the run over\n",
              st->out_dir);
    return cli_init_weights(r, err);
  }
  /* Before anything is read: an optimizer whose state a checkpoint cannot
   * hold would continue as another run. */
  if (nn_trainer_resumable(r->trainer, err)) return EXIT_PLUGIN;
  int rc = checkpoint_resume(r->trainer, st->out_dir, cli_model_name(r),
                             nn_loaded_desc(r->optim.loaded)->name, &pos,
                             &st->best_file, err);
  if (rc) return checkpoint_status(rc);
  const size_t done = pos.epoch; /* epochs finished */
  const long last = (long)done - 1;
  /* metrics.csv is written before the checkpoints: it has the checkpoint's
   * epochs, perhaps one more that the resumed run repeats.  Reading one
   * row past the config's epochs tells a config that stops too early from
   * a checkpoint whose epoch is damaged. */
  const size_t cap = r->topts.epochs + 1;
  nn_epoch_metrics *rows = calloc(cap, sizeof *rows);
  if (!rows) {
    nn_error_set(err, NN_ENOMEM, "out of memory");
    return EXIT_RUNTIME;
  }
  int status = EXIT_OK;
  if (done > 0 && nn_metrics_read_csv(st->metrics_path, rows, cap, &n_rows,
                                      err))
    status = EXIT_RUNTIME;
  if (!done) n_rows = 0;
  if (!status && n_rows < cap && n_rows < done) {
    nn_error_set(err, NN_EFORMAT,
                 "%s: metadata 'epoch' is %ld, but %s has only %zu epochs",
                 path, last, st->metrics_path, n_rows);
    status = EXIT_RUNTIME;
  } else if (!status && (done > r->topts.epochs ||
                         (pos.batch && done == r->topts.epochs))) {
    nn_error_set(err, NN_ECONFIG,
                 "%s has %zu epochs done%s; the config asks for only %zu",
                 st->out_dir, done, pos.batch ? " and one begun" : "",
                 r->topts.epochs);
    status = EXIT_USAGE;
  } else if (!status && st->best_file.epoch > last &&
             done == r->topts.epochs) {
    /* best.safetensors is that epoch's: only running it again makes the
     * checkpoints one state. */
    nn_error_set(err, NN_ECONFIG,
                 "%s was stopped while saving epoch %zu, which must run "
                 "again: resume with train.epochs >= %zu (the config has "
                 "%zu)",
                 st->out_dir, done, done + 1, r->topts.epochs);
    status = EXIT_USAGE;
  } else if (!status && st->best_file.epoch > last && done > 0 &&
             nn_early_stop(r->topts.patience, (size_t)last, best_before(r))) {
    /* The same, when a patience other than the run's would end it before
     * that epoch: the run it was did not stop there. */
    nn_error_set(err, NN_ECONFIG,
                 "%s was stopped while saving epoch %zu, which must run "
                 "again, but train.patience = %zu ends the run after epoch "
                 "%ld: resume with train.patience = 0 or > %ld",
                 st->out_dir, done, r->topts.patience, last,
                 last - best_before(r));
    status = EXIT_USAGE;
  }
  if (!status) {
    memcpy(st->metrics, rows, done * sizeof *rows);
    st->n_epochs_done = done;
    nn_trainer_resume_at(r->trainer, &pos);
    if (st->opt->verbosity > 0) {
      if (pos.batch)
        fprintf(stderr, "nnrun: resuming %s in epoch %zu after batch %zu\n",
                st->out_dir, pos.epoch, pos.batch);
      else
        fprintf(stderr, "nnrun: resuming %s after epoch %ld\n", st->out_dir,
                last);
    }
  }
  free(rows);
  return status;
}
