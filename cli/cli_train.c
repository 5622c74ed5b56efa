/* nnrun -c FILE: set up the run, train (or resume), keep the best epoch,
 * test, and write the run's outputs: metrics.csv, best/last checkpoints,
 * summary.json and the learning curves.  Every failure is reported with
 * where it comes from and mapped to an exit status (see cli.h). */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nn/nn.h>
#include <nn/plot.h>

#include "checkpoint.h"
#include "cli.h"
#include "cli_setup.h"
#include "run_dir.h"
#include "run_summary.h"

typedef struct run_state {
  const cli_options *opt;
  cli_run *run;
  int live;                  /* stderr is a terminal: draw a progress line */
  double epoch_start;        /* for the progress line's elapsed / ETA */
  double last_draw;
  char out_dir[4096];
  char metrics_path[4200];
  nn_epoch_metrics *metrics; /* owned: one entry per epoch */
  size_t n_epochs_done;
  int write_failed;
  nn_error write_err;
  checkpoint_best best_file; /* what out_dir/best.safetensors holds */
  int lock_fd;               /* owned: run_dir_claim's lock, or -1 */
} run_state;

/* The live progress line: bar, batches, running loss and accuracy, elapsed
 * and ETA.  Redrawn at most 10 times a second so it costs nothing. */
static void on_batch(void *user, size_t epoch, size_t batch, size_t n_batches,
                     double loss, double accuracy) {
  run_state *st = user;
  double now = nn_now_seconds();
  if (batch == 1) st->epoch_start = now;
  if (batch != n_batches && now - st->last_draw < 0.1) return;
  st->last_draw = now;
  double elapsed = now - st->epoch_start;
  double eta = elapsed * (double)(n_batches - batch) / (double)batch;
  enum { WIDTH = 24 };
  char bar[WIDTH + 1];
  size_t filled = batch * WIDTH / n_batches;
  for (size_t i = 0; i < WIDTH; i++) bar[i] = i < filled ? '#' : '-';
  bar[WIDTH] = '\0';
  fprintf(stderr,
          "\r\033[Kepoch %3zu [%s] %zu/%zu  loss %.4f acc %.4f  %.1fs eta %.1fs",
          epoch, bar, batch, n_batches, loss, accuracy, elapsed, eta);
  fflush(stderr);
}

/* After each epoch: the epoch line, then metrics.csv, best and last
 * checkpoints, in that order, so a crash at any point leaves files a
 * resumed run can continue from: it ignores metrics rows past its
 * checkpoint, and last.safetensors records the best.safetensors written
 * before it (checkpoint.h). */
static int on_epoch(void *user, const nn_epoch_metrics *m) {
  run_state *st = user;
  st->metrics[m->epoch] = *m;
  st->n_epochs_done = m->epoch + 1;
  if (st->live) fputs("\r\033[K", stderr); /* the epoch line replaces the bar */
  if (st->opt->verbosity > 0)
    fprintf(stderr,
            "epoch %3zu  train loss %.4f acc %.4f  val loss %.4f acc %.4f  "
            "%.2fs\n",
            m->epoch, m->train_loss, m->train_accuracy, m->val_loss,
            m->val_accuracy, m->train_seconds);
  if (nn_metrics_write_csv(st->metrics_path, st->metrics, st->n_epochs_done,
                           &st->write_err) ||
      checkpoint_save(st->run->trainer, st->out_dir, m->epoch,
                      cli_model_name(st->run),
                      nn_loaded_desc(st->run->optim.loaded)->name,
                      &st->best_file, &st->write_err)) {
    st->write_failed = 1;
    return 1; /* stop: a run whose results cannot be saved is pointless */
  }
  return 0;
}

/* The trainer's best epoch (-1: none). */
static long best_before(cli_run *r) {
  size_t n;
  long best;
  nn_trainer_best(r->trainer, &n, &best, NULL);
  return best;
}

/* Continue the run in st->out_dir from its last checkpoint.  A directory
 * where a run started but was killed before its first checkpoint has
 * nothing to continue: the run starts over there.  Returns an exit
 * status. */
static int resume(run_state *st, nn_error *err) {
  cli_run *r = st->run;
  size_t last, n_rows;
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
                             nn_loaded_desc(r->optim.loaded)->name, &last,
                             &st->best_file, err);
  if (rc) return checkpoint_status(rc);
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
  int status = nn_metrics_read_csv(st->metrics_path, rows, cap, &n_rows, err)
                   ? EXIT_RUNTIME
                   : EXIT_OK;
  if (!status && n_rows < cap && n_rows < last + 1) {
    nn_error_set(err, NN_EFORMAT,
                 "%s: metadata 'epoch' is %zu, but %s has only %zu epochs",
                 path, last, st->metrics_path, n_rows);
    status = EXIT_RUNTIME;
  } else if (!status && last + 1 > r->topts.epochs) {
    nn_error_set(err, NN_ECONFIG,
                 "%s has %zu epochs done; the config asks for only %zu",
                 st->out_dir, last + 1, r->topts.epochs);
    status = EXIT_USAGE;
  } else if (!status && st->best_file.epoch > (long)last &&
             last + 1 == r->topts.epochs) {
    /* best.safetensors is that epoch's: only running it again makes the
     * checkpoints one state. */
    nn_error_set(err, NN_ECONFIG,
                 "%s was stopped while saving epoch %zu, which must run "
                 "again: resume with train.epochs >= %zu (the config has "
                 "%zu)",
                 st->out_dir, last + 1, last + 2, r->topts.epochs);
    status = EXIT_USAGE;
  } else if (!status && st->best_file.epoch > (long)last &&
             nn_early_stop(r->topts.patience, last, best_before(r))) {
    /* The same, when a patience other than the run's would end it before
     * that epoch: the run it was did not stop there. */
    nn_error_set(err, NN_ECONFIG,
                 "%s was stopped while saving epoch %zu, which must run "
                 "again, but train.patience = %zu ends the run after epoch "
                 "%zu: resume with train.patience = 0 or > %zu",
                 st->out_dir, last + 1, r->topts.patience, last,
                 last - (size_t)best_before(r));
    status = EXIT_USAGE;
  }
  if (!status) {
    memcpy(st->metrics, rows, (last + 1) * sizeof *rows);
    st->n_epochs_done = last + 1;
    nn_trainer_start_at(r->trainer, last + 1);
    if (st->opt->verbosity > 0)
      fprintf(stderr, "nnrun: resuming %s after epoch %zu\n", st->out_dir,
              last);
  }
  free(rows);
  return status;
}

/* curves.png / curves.svg; a run without plotting still succeeds. */
static void draw_curves(const run_state *st, const char *name) {
  char png[4200], svg[4200], title[300];
  snprintf(png, sizeof png, "%s/curves.png", st->out_dir);
  snprintf(svg, sizeof svg, "%s/curves.svg", st->out_dir);
  snprintf(title, sizeof title, "%s: learning curves", name);
  nn_error err;
  if (nn_plot_curves(png, svg, title, st->metrics, st->n_epochs_done, &err))
    fprintf(stderr, "nnrun: warning: no learning curves: %s\n", err.msg);
}

static int write_summary(const run_state *st, long best, double loss,
                         double acc, nn_stop_reason why, long stopped_after,
                         double t_start, nn_error *err) {
  const cli_run *r = st->run;
  const nn_plugin *md = r->model.loaded ? nn_loaded_desc(r->model.loaded)
                                        : NULL;
  const nn_plugin *od = nn_loaded_desc(r->optim.loaded);
  run_section secs[4 + RUN_SUMMARY_MAX_LAYERS];
  size_t n_secs = 0;
  secs[n_secs++] = (run_section){"data", NULL, cli_data_options, r->data_v};
  secs[n_secs++] = (run_section){"train", NULL, cli_train_options, r->train_v};
  secs[n_secs++] = (run_section){"model", cli_model_name(r),
                                 md ? md->options : NULL, r->model.values};
  secs[n_secs++] = (run_section){"optimizer", od->name, od->options,
                                 r->optim.values};
  const nn_loaded *layers[RUN_SUMMARY_MAX_LAYERS];
  char names[RUN_SUMMARY_MAX_LAYERS][80];
  for (size_t i = 0; i < r->n_layers && i < RUN_SUMMARY_MAX_LAYERS; i++) {
    const nn_plugin *ld = nn_loaded_desc(r->layers[i].loaded);
    snprintf(names[i], sizeof names[i], "layer %s", r->layer_specs[i].name);
    secs[n_secs++] = (run_section){names[i], ld->name, ld->options,
                                   r->layers[i].values};
    layers[i] = r->layers[i].loaded;
  }
  run_summary sum = {.config_path = nn_config_path(r->cfg), .sections = secs,
                     .n_sections = n_secs, .model = md, .optim = od,
                     .model_file = cli_model_file(r),
                     .optim_file = nn_loaded_path(r->optim.loaded),
                     .layers = layers,
                     .n_layers = r->n_layers < RUN_SUMMARY_MAX_LAYERS
                                     ? r->n_layers
                                     : RUN_SUMMARY_MAX_LAYERS,
                     .seed = r->topts.seed, .metrics = st->metrics,
                     .n_epochs = st->n_epochs_done, .best_epoch = best,
                     .stop_reason = why == NN_STOP_PATIENCE ? "patience"
                                                            : "epochs",
                     .stopped_after = stopped_after,
                     .patience = r->topts.patience,
                     .test_loss = loss, .test_accuracy = acc,
                     .load_seconds = r->load_seconds,
                     .total_seconds = nn_now_seconds() - t_start};
  char path[4200];
  snprintf(path, sizeof path, "%s/summary.json", st->out_dir);
  return run_summary_write(path, &sum, err);
}

/* Whether the run can write where its output goes, tried before the data
 * is loaded so that a place it cannot write fails at once.  target may not
 * exist yet (run_dir_create makes it with its parents): the probe then goes
 * in its nearest existing ancestor.  It creates and removes one file, never
 * a directory. */
static int probe_output(const char *target, nn_error *err) {
  char dir[4096];
  size_t len = strlen(target);
  if (len >= sizeof dir)
    return nn_error_set(err, NN_EIO, "output directory path too long: %s",
                        target);
  memcpy(dir, target, len + 1);
  struct stat sb;
  for (;;) {
    while (len > 1 && dir[len - 1] == '/') dir[--len] = '\0';
    if (stat(dir, &sb) == 0) break;
    /* ENOTDIR: a file in the path; going up finds it and says so below. */
    if (errno != ENOENT && errno != ENOTDIR)
      return nn_error_set(err, NN_EIO, "output directory %s: cannot access "
                          "%s: %s", target, dir, strerror(errno));
    /* Up one level; "." and "/" have none (a deleted working directory). */
    char *slash = strrchr(dir, '/');
    if (!strcmp(dir, ".") || !strcmp(dir, "/"))
      return nn_error_set(err, NN_EIO, "output directory %s: %s is gone",
                          target, dir);
    if (!slash)
      snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
      dir[1] = '\0'; /* "/x" goes up to "/" */
    else
      *slash = '\0';
    len = strlen(dir);
  }
  if (!S_ISDIR(sb.st_mode))
    return nn_error_set(err, NN_EIO, "output directory %s: %s is not a "
                        "directory", target, dir);
  char probe[4200];
  snprintf(probe, sizeof probe, "%s/.nnrun-probe-XXXXXX", dir);
  int fd = mkstemp(probe);
  if (fd < 0)
    return nn_error_set(err, NN_EIO, "output directory %s: cannot create "
                        "files in %s: %s", target, dir, strerror(errno));
  close(fd);
  unlink(probe);
  return NN_OK;
}

int cli_train(const cli_options *opt) {
  double t_start = nn_now_seconds();
  nn_error err = {0};
  cli_run run = {0};
  run_state st = {.opt = opt, .run = &run, .best_file = {-1, 0},
                  .lock_fd = -1};
  int status = EXIT_OK;
  if (opt->output_dir && !*opt->output_dir) {
    nn_error_set(&err, NN_ECONFIG, "-o '': the directory name is empty");
    status = EXIT_USAGE;
  } else if (opt->resume_dir && !*opt->resume_dir) {
    nn_error_set(&err, NN_ECONFIG, "--resume '': the directory name is empty");
    status = EXIT_USAGE;
  }
  if (!status) status = cli_run_setup(&run, opt, SETUP_CONFIG, &err);
  if (!status && opt->resume_dir && opt->output_dir) {
    nn_error_set(&err, NN_ECONFIG, "--resume DIR already names the output "
                                   "directory; drop -o");
    status = EXIT_USAGE;
  }
  if (!status) status = cli_run_setup(&run, opt, SETUP_PLUGINS, &err);
  /* The output before the data: loading MNIST takes a while, the probe
   * none.  Then the data is loaded and checked, all before the run
   * directory is made, so a failure leaves nothing behind. */
  if (!status &&
      probe_output(opt->resume_dir   ? opt->resume_dir
                   : opt->output_dir ? opt->output_dir
                                     : "runs",
                   &err))
    status = EXIT_RUNTIME;
  if (!status)
    status = cli_run_setup(&run, opt, SETUP_DATA | SETUP_TRAINER, &err);
  /* Before the run directory exists, so a bad file leaves nothing behind;
   * a resumed run takes its weights from its checkpoint instead. */
  if (!status && !opt->resume_dir) status = cli_init_weights(&run, &err);
  if (status) goto done;

  char msg[512];
  struct stat sb;
  if (opt->resume_dir) {
    if (stat(opt->resume_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
      nn_error_set(&err, NN_ECONFIG, "--resume %s: no such run directory",
                   opt->resume_dir);
      status = EXIT_USAGE;
      goto done;
    }
    /* Asked before run_dir_claim makes run.lock, a mark of a run. */
    if (!run_dir_started(opt->resume_dir)) {
      nn_error_set(&err, NN_ECONFIG,
                   "--resume %s: no checkpoint there (%s/last.safetensors "
                   "is missing)",
                   opt->resume_dir, opt->resume_dir);
      status = EXIT_USAGE;
      goto done;
    }
    snprintf(st.out_dir, sizeof st.out_dir, "%s", opt->resume_dir);
  } else if (run_dir_create(opt->output_dir, nn_config_name(run.cfg), st.out_dir,
                            sizeof st.out_dir, msg, sizeof msg)) {
    nn_error_set(&err, NN_EIO, "%s", msg);
    status = EXIT_RUNTIME;
    goto done;
  }
  /* One process per run directory; what killed writers left goes first. */
  if ((st.lock_fd = run_dir_claim(st.out_dir, msg, sizeof msg)) < 0) {
    nn_error_set(&err, NN_EIO, "%s", msg);
    status = EXIT_RUNTIME;
    goto done;
  }
  snprintf(st.metrics_path, sizeof st.metrics_path, "%s/metrics.csv", st.out_dir);
  st.metrics = calloc(run.topts.epochs, sizeof *st.metrics);
  if (!st.metrics) {
    nn_error_set(&err, NN_ENOMEM, "out of memory");
    status = EXIT_RUNTIME;
    goto done;
  }
  if (opt->verbosity > 0)
    fprintf(stderr,
            "nnrun: %s: %s + %s, %zu training / %zu validation / %zu test "
            "examples, output in %s\n",
            nn_config_path(run.cfg), cli_model_name(&run),
            nn_loaded_desc(run.optim.loaded)->name, run.train.n, run.val.n,
            run.test.n, st.out_dir);
  if (opt->verbosity > 1)
    fprintf(stderr, "nnrun: model %s, optimizer %s, CBLAS %s, seed %llu\n",
            cli_model_file(&run), nn_loaded_path(run.optim.loaded),
            nn_cblas_name(), (unsigned long long)run.topts.seed);
  if (opt->resume_dir) {
    if ((status = resume(&st, &err))) goto done;
  } else if (opt->verbosity > 0) {
    nn_error why;
    if (nn_trainer_resumable(run.trainer, &why))
      fprintf(stderr, "nnrun: warning: this run cannot be resumed: %s\n",
              why.msg);
  }

  st.live = opt->verbosity > 0 && isatty(STDERR_FILENO);
  if (st.live) nn_trainer_on_batch(run.trainer, on_batch, &st);
  int rc = nn_trainer_run(run.trainer, &run.train, &run.val, on_epoch, &st, NULL,
                          NULL, &err);
  if (st.write_failed) err = st.write_err;
  if (rc || st.write_failed) {
    status = rc == NN_EPLUGIN ? EXIT_PLUGIN : EXIT_RUNTIME;
    goto done;
  }
  long best = nn_trainer_restore_best(run.trainer), stopped_after;
  const nn_stop_reason why = nn_trainer_stopped(run.trainer, &stopped_after);
  if (why == NN_STOP_PATIENCE && opt->verbosity > 0)
    fprintf(stderr,
            "nnrun: stopped early after epoch %ld: no better validation "
            "accuracy for %ld epoch%s (best: epoch %ld)\n",
            stopped_after, stopped_after - best,
            stopped_after - best == 1 ? "" : "s", best);
  double loss, acc;
  if ((rc = nn_trainer_evaluate(run.trainer, &run.test, &loss, &acc, &err)) ||
      write_summary(&st, best, loss, acc, why, stopped_after, t_start,
                    &err)) {
    status = rc == NN_EPLUGIN ? EXIT_PLUGIN : EXIT_RUNTIME;
    goto done;
  }
  draw_curves(&st, nn_config_name(run.cfg));
  printf("test loss=%.6f accuracy=%.4f best_epoch=%ld\n", loss, acc, best);
  if (fflush(stdout) != 0) {
    nn_error_set(&err, NN_EIO, "cannot write to standard output");
    status = EXIT_RUNTIME;
  }

done:
  if (status) fprintf(stderr, "nnrun: %s\n", err.msg);
  cli_run_free(&run);
  free(st.metrics);
  if (st.lock_fd >= 0) close(st.lock_fd);
  return status;
}
