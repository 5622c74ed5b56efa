/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The files of a run: see run_outputs.h. */
#include <config.h>

#include "run_outputs.h"

#include <math.h>
#include <stdio.h>

#include <nn/plot.h>

#include "run_summary.h"

int run_outputs_summary(const run_state *st, const run_end *end,
                        nn_error *err) {
  const cli_run *r = st->run;
  const nn_plugin *md = r->model.loaded ? nn_loaded_desc(r->model.loaded)
                                        : NULL;
  const nn_plugin *od = nn_loaded_desc(r->optim.loaded);
  run_section secs[6 + RUN_SUMMARY_MAX_LAYERS];
  size_t n_secs = 0;
  secs[n_secs++] = (run_section){"data", NULL, cli_data_options, r->data_v};
  secs[n_secs++] = (run_section){"train", NULL, cli_train_options, r->train_v};
  secs[n_secs++] = (run_section){"model", cli_model_name(r),
                                 md ? md->options : NULL, r->model.values};
  secs[n_secs++] = (run_section){"optimizer", od->name, od->options,
                                 r->optim.values};
  if (r->schedule.loaded) {
    const nn_plugin *sd = nn_loaded_desc(r->schedule.loaded);
    secs[n_secs++] = (run_section){"schedule", sd->name, sd->options,
                                   r->schedule.values};
    secs[n_secs++] = (run_section){"schedule", NULL, nn_warmup_options,
                                   r->warmup_v};
  }
  const nn_loaded *layers[RUN_SUMMARY_MAX_LAYERS];
  char names[RUN_SUMMARY_MAX_LAYERS][80];
  for (size_t i = 0; i < r->n_layers && i < RUN_SUMMARY_MAX_LAYERS; i++) {
    const nn_plugin *ld = nn_loaded_desc(r->layers[i].loaded);
    snprintf(names[i], sizeof names[i], "layer %s", r->layer_specs[i].name);
    secs[n_secs++] = (run_section){names[i], ld->name, ld->options,
                                   r->layers[i].values};
    layers[i] = r->layers[i].loaded;
  }
  const char *reason = end->why == NN_STOP_PATIENCE ? "patience"
                       : end->why == NN_STOP_EPOCHS ? "epochs"
                                                    : NULL;
  run_summary sum = {.config_path = nn_config_path(r->cfg), .sections = secs,
                     .n_sections = n_secs, .model = md, .optim = od,
                     .model_file = cli_model_file(r),
                     .optim_file = nn_loaded_path(r->optim.loaded),
                     .layers = layers,
                     .schedule = r->schedule.loaded,
                     .n_layers = r->n_layers < RUN_SUMMARY_MAX_LAYERS
                                     ? r->n_layers
                                     : RUN_SUMMARY_MAX_LAYERS,
                     .seed = r->topts.seed, .metrics = st->metrics,
                     .n_epochs = st->n_epochs_done,
                     .best_epoch = end->best_epoch, .status = end->status,
                     .stop_reason = reason,
                     .stopped_after = end->stopped_after,
                     .patience = r->topts.patience,
                     .test_loss = end->test_loss,
                     .test_accuracy = end->test_accuracy,
                     .load_seconds = r->load_seconds,
                     .total_seconds = nn_now_seconds() - st->t_start};
  char path[4200];
  snprintf(path, sizeof path, "%s/summary.json", st->out_dir);
  return run_summary_write(path, &sum, err);
}

void run_outputs_curves(run_state *st) {
  if (st->curves_off || !st->n_epochs_done) return;
  char png[4200], svg[4200], title[300];
  snprintf(png, sizeof png, "%s/curves.png", st->out_dir);
  snprintf(svg, sizeof svg, "%s/curves.svg", st->out_dir);
  snprintf(title, sizeof title, "%s: learning curves",
           nn_config_name(st->run->cfg));
  nn_error err;
  if (nn_plot_curves(png, svg, title, st->metrics, st->n_epochs_done, &err)) {
    fprintf(stderr, "nnrun: warning: no learning curves: %s\n", err.msg);
    st->curves_off = 1;
  }
}

/* The trainer's best epoch (-1: none). */
static long best_epoch(cli_run *r) {
  size_t n;
  long best;
  nn_trainer_best(r->trainer, &n, &best, NULL);
  return best;
}

int run_outputs_epoch(run_state *st, const nn_epoch_metrics *m,
                      nn_error *err) {
  cli_run *r = st->run;
  const nn_train_position next = {.epoch = m->epoch + 1};
  int rc;
  if ((rc = nn_metrics_write_csv(st->metrics_path, st->metrics,
                                 st->n_epochs_done, err)) ||
      (rc = checkpoint_save(r->trainer, st->out_dir, &next, cli_model_name(r),
                            nn_loaded_desc(r->optim.loaded)->name, st->config,
                            &st->best_file, err)))
    return rc;
  const run_end running = {"running", best_epoch(r), NAN, NAN, NN_STOP_NONE,
                           (long)m->epoch};
  if ((rc = run_outputs_summary(st, &running, err))) return rc;
  run_outputs_curves(st);
  return NN_OK;
}

int run_outputs_position(run_state *st, const nn_train_position *pos,
                         nn_error *err) {
  if (!pos->batch) return NN_OK;
  cli_run *r = st->run;
  return checkpoint_save(r->trainer, st->out_dir, pos, cli_model_name(r),
                         nn_loaded_desc(r->optim.loaded)->name, st->config,
                         &st->best_file, err);
}
