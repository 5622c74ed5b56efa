/* SPDX-License-Identifier: GPL-3.0-or-later */
/* nnrun -c FILE: set up the run, train (or resume), keep the best epoch,
 * test, and keep the run's outputs current (run_outputs.h).  Every
 * failure is reported with where it comes from and mapped to an exit
 * status (see cli.h); SIGINT and SIGTERM stop it resumably
 * (run_signals.h). */
#include <config.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nn/nn.h>

#include "cli.h"
#include "cli_mpi.h"
#include "cli_setup.h"
#include "run_config.h"
#include "run_dir.h"
#include "run_outputs.h"
#include "run_resume.h"
#include "run_signals.h"

/* The live progress line: bar, batches, running loss and accuracy, elapsed
 * and ETA.  Redrawn at most 10 times a second so it costs nothing. */
static void on_batch(void *user, size_t epoch, size_t batch, size_t n_batches,
                     double loss, double accuracy) {
  run_state *st = user;
  double now = nn_now_seconds();
  if (batch == 1 || epoch != st->bar_epoch) {
    st->epoch_start = now;
    st->bar_epoch = epoch;
    st->bar_first = batch - 1;
  }
  if (batch != n_batches && now - st->last_draw < 0.1) return;
  st->last_draw = now;
  double elapsed = now - st->epoch_start;
  double eta = elapsed * (double)(n_batches - batch) /
               (double)(batch - st->bar_first);
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

/* After each epoch: the epoch line, then the files (run_outputs_epoch). */
static int save_epoch(void *user, const nn_epoch_metrics *m) {
  run_state *st = user;
  st->metrics[m->epoch] = *m;
  st->n_epochs_done = m->epoch + 1;
  if (st->live) fputs("\r\033[K", stderr); /* the epoch line replaces the bar */
  char lr[40] = ""; /* the rate, when a schedule changes it */
  if (st->run->schedule.loaded) snprintf(lr, sizeof lr, "  lr %.4g", m->lr);
  if (st->opt->verbosity > 0)
    fprintf(stderr,
            "epoch %3zu  train loss %.4f acc %.4f  val loss %.4f acc %.4f  "
            "%.2fs%s\n",
            m->epoch, m->train_loss, m->train_accuracy, m->val_loss,
            m->val_accuracy, m->train_seconds, lr);
  if (run_outputs_epoch(st, m, &st->write_err)) {
    st->write_failed = 1;
    return 1; /* stop: a run whose results cannot be saved is pointless */
  }
  return 0;
}

/* After each epoch.  Under MPI the ranks first compare their weights, so
 * that no checkpoint is saved of ranks that diverged; rank 0 alone saves,
 * and every rank stops when that failed. */
static int on_epoch(void *user, const nn_epoch_metrics *m) {
  run_state *st = user;
  int stop = cli_mpi_check_weights(st->run->trainer, m->epoch,
                                   &st->write_err) != NN_OK;
  if (!stop && cli_mpi_lead()) stop = save_epoch(user, m);
  stop = cli_mpi_agree(stop ? EXIT_RUNTIME : EXIT_OK, &st->write_err) != 0;
  st->write_failed |= stop;
  return stop;
}

/* A signal came (run_signals.h): checkpoint where training stands; stop
 * for SIGINT / SIGTERM, go on for SIGHUP / SIGUSR1. */
static int on_signal(void *user, const nn_train_position *pos) {
  run_state *st = user;
  run_signal_raised = 0; /* before reading: a signal from now on raises it */
  const int stop = run_signals_stop() != 0, save = run_signals_take_save();
  if (!stop && !save) return 0;
  if (!cli_mpi_lead()) return stop; /* rank 0 saves (the ranks agree) */
  if (st->live) fputs("\r\033[K", stderr);
  if (run_outputs_position(st, pos, &st->write_err)) {
    st->write_failed = 1;
    return 1;
  }
  if (!stop && st->opt->verbosity > 0)
    fprintf(stderr, "nnrun: checkpoint at epoch %zu, batch %zu in "
            "%s/last.safetensors\n", pos->epoch, pos->batch, st->out_dir);
  return stop;
}

/* How to resume: the command with the same config and --set options. */
static void print_resume_hint(const run_state *st, const nn_train_position *p) {
  fprintf(stderr, "nnrun: interrupted at epoch %zu, batch %zu; resume with: "
          "nnrun -c %s", p->epoch, p->batch, st->opt->config);
  for (size_t i = 0; i < st->opt->n_sets; i++)
    fprintf(stderr, " --set '%s'", st->opt->sets[i]);
  fprintf(stderr, " --resume %s\n", st->out_dir);
}

/* The directory the run goes in, checked and claimed: --resume DIR, or an
 * -o DIR that exists (claimed before the data loads, so a second nnrun on
 * it fails at once).  A directory to be made waits for claim_new. */
static int claim_existing(run_state *st, int *started, nn_error *err) {
  const cli_options *opt = st->opt;
  const char *dir = opt->resume_dir ? opt->resume_dir : opt->output_dir;
  struct stat sb;
  char msg[512];
  *started = 0;
  if (opt->resume_dir &&
      (stat(opt->resume_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))) {
    nn_error_set(err, NN_ECONFIG, "--resume %s: no such run directory",
                 opt->resume_dir);
    return EXIT_USAGE;
  }
  if (!dir || stat(dir, &sb) != 0) return EXIT_OK;
  if (opt->resume_dir && run_dir_is_sweep(dir)) {
    nn_error_set(err, NN_ECONFIG, "--resume %s: it holds a sweep; resume it "
                 "with the sweep's config and --sweep options", dir);
    return EXIT_USAGE;
  }
  /* Asked before run_dir_claim makes run.lock, a mark of a run. */
  *started = run_dir_started(dir);
  if (opt->resume_dir && !*started) {
    nn_error_set(err, NN_ECONFIG, "--resume %s: no checkpoint there "
                 "(%s/last.safetensors is missing)", dir, dir);
    return EXIT_USAGE;
  }
  snprintf(st->out_dir, sizeof st->out_dir, "%s", dir);
  /* One process per run directory; what killed writers left goes first. */
  if ((st->lock_fd = run_dir_claim(dir, msg, sizeof msg)) < 0) {
    nn_error_set(err, NN_EIO, "%s", msg);
    return EXIT_RUNTIME;
  }
  st->lock_new = !*started;
  if (*started && !opt->resume_dir && !opt->force) {
    nn_error_set(err, NN_ECONFIG, "-o %s: the directory already holds a "
                 "run: use --resume %s to continue it, or --force to start "
                 "it over there", dir, dir);
    return EXIT_USAGE;
  }
  return EXIT_OK;
}

/* Set up everything up to training; returns an exit status. */
static int prepare(run_state *st, cli_run *run, nn_error *err) {
  const cli_options *opt = st->opt;
  char msg[512];
  int started, status;
  if (opt->output_dir && !*opt->output_dir) {
    nn_error_set(err, NN_ECONFIG, "-o '': the directory name is empty");
    return EXIT_USAGE;
  }
  if (opt->resume_dir && !*opt->resume_dir) {
    nn_error_set(err, NN_ECONFIG, "--resume '': the directory name is empty");
    return EXIT_USAGE;
  }
  if ((status = cli_run_setup(run, opt, SETUP_CONFIG, err))) return status;
  if (opt->resume_dir && opt->output_dir &&
      !run_dir_same(opt->resume_dir, opt->output_dir)) {
    nn_error_set(err, NN_ECONFIG, "--resume %s and -o %s name different "
                 "directories: a run resumes where it is", opt->resume_dir,
                 opt->output_dir);
    return EXIT_USAGE;
  }
  if ((status = cli_run_setup(run, opt, SETUP_PLUGINS, err))) return status;
  if (!(st->config = run_config_text(run))) {
    nn_error_set(err, NN_ENOMEM, "out of memory");
    return EXIT_RUNTIME;
  }
  /* Under MPI rank 0 alone claims and makes the run directory. */
  started = 0;
  if (cli_mpi_lead() && (status = claim_existing(st, &started, err)))
    return status;
  if (opt->resume_dir &&
      (status = run_resume_check_config(opt->resume_dir, st->config,
                                        opt->verbosity, err)))
    return status;
  /* The output before the data: loading MNIST takes a while, the probe
   * none.  Then the data is loaded and checked, all before a new run
   * directory is made, so a failure leaves nothing behind. */
  if (run_dir_probe(st->out_dir[0] ? st->out_dir
                    : opt->output_dir ? opt->output_dir : "runs",
                    msg, sizeof msg)) {
    nn_error_set(err, NN_EIO, "%s", msg);
    return EXIT_RUNTIME;
  }
  if ((status = cli_run_setup(run, opt, SETUP_DATA | SETUP_TRAINER, err)))
    return status;
  /* A resumed run takes its weights from its checkpoint instead. */
  if (!opt->resume_dir && (status = cli_init_weights(run, err)))
    return status;
  if (!cli_mpi_lead()) {
    /* Rank 0 reads the checkpoint; the others take its state (cli_train). */
  } else if (!st->out_dir[0]) {
    if (run_dir_create(opt->output_dir, nn_config_name(run->cfg), st->out_dir,
                       sizeof st->out_dir, msg, sizeof msg) ||
        (st->lock_fd = run_dir_claim(st->out_dir, msg, sizeof msg)) < 0) {
      nn_error_set(err, NN_EIO, "%s", msg);
      return EXIT_RUNTIME;
    }
    st->lock_new = 1;
  } else if (started && opt->force && !opt->resume_dir &&
             run_dir_clear(st->out_dir, msg, sizeof msg)) {
    nn_error_set(err, NN_EIO, "%s", msg);
    return EXIT_RUNTIME;
  }
  snprintf(st->metrics_path, sizeof st->metrics_path, "%s/metrics.csv",
           st->out_dir);
  if (!(st->metrics = calloc(run->topts.epochs, sizeof *st->metrics))) {
    nn_error_set(err, NN_ENOMEM, "out of memory");
    return EXIT_RUNTIME;
  }
  if (opt->verbosity > 0)
    fprintf(stderr,
            "nnrun: %s: %s + %s, %zu training / %zu validation / %zu test "
            "examples, output in %s\n",
            nn_config_path(run->cfg), cli_model_name(run),
            nn_loaded_desc(run->optim.loaded)->name, run->train.n, run->val.n,
            run->test.n, st->out_dir);
  if (opt->verbosity > 1)
    fprintf(stderr, "nnrun: model %s, optimizer %s, CBLAS %s, seed %llu\n",
            cli_model_file(run), nn_loaded_path(run->optim.loaded),
            nn_cblas_name(), (unsigned long long)run->topts.seed);
  if (opt->resume_dir) return cli_mpi_lead() ? run_resume(st, err) : EXIT_OK;
  nn_error why;
  if (opt->verbosity > 0 && nn_trainer_resumable(run->trainer, &why))
    fprintf(stderr, "nnrun: warning: this run cannot be resumed: %s\n",
            why.msg);
  return EXIT_OK;
}

int cli_train(const cli_options *opt) {
  nn_error err = {0};
  cli_run run = {0};
  run_state st = {.opt = opt, .run = &run, .best_file = {-1, 0},
                  .lock_fd = -1, .t_start = nn_now_seconds(),
                  .bar_epoch = (size_t)-1};
  run_end end = {"failed", -1, NAN, NAN, NN_STOP_NONE, -1};
  int status = prepare(&st, &run, &err);
  /* Every rank ready, training the same run, from rank 0's state; or none. */
  status = cli_mpi_agree(status, &err);
  if (!status &&
      cli_mpi_check_plan(run.trainer, &run.topts, run.train.n, &err))
    status = EXIT_USAGE;
  if (!status && cli_mpi_size() > 1 && nn_trainer_broadcast(run.trainer, &err))
    status = EXIT_RUNTIME;
  if (status) goto done;
  if (cli_mpi_size() > 1 && opt->verbosity > 0)
    fprintf(stderr, "nnrun: data-parallel on %zu ranks: each takes 1/%zu of "
            "every batch of %zu\n", cli_mpi_size(), cli_mpi_size(),
            run.topts.batch_size);
  if (run_signals_install()) {
    nn_error_set(&err, NN_EIO, "cannot install the signal handlers");
    status = EXIT_RUNTIME;
    goto done;
  }
  nn_trainer_watch(run.trainer, &run_signal_raised, on_signal, &st);
  st.live = opt->verbosity > 0 && isatty(STDERR_FILENO);
  if (st.live) nn_trainer_on_batch(run.trainer, on_batch, &st);
  st.trained = 1;
  int rc = nn_trainer_run(run.trainer, &run.train, &run.val, on_epoch, &st, NULL,
                          NULL, &err);
  if (st.write_failed) err = st.write_err;
  if (rc || st.write_failed) {
    status = rc == NN_EPLUGIN ? EXIT_PLUGIN : EXIT_RUNTIME;
    goto done;
  }
  if (!cli_mpi_lead()) goto done; /* rank 0 tests and writes the results */
  end.why = nn_trainer_stopped(run.trainer, &end.stopped_after);
  if (end.why == NN_STOP_REQUEST) {
    nn_train_position pos;
    nn_trainer_position(run.trainer, &pos);
    nn_trainer_best(run.trainer, &(size_t){0}, &end.best_epoch, NULL);
    end.status = "interrupted";
    end.why = NN_STOP_NONE;
    if (run_outputs_summary(&st, &end, &err)) {
      status = EXIT_RUNTIME;
      goto done;
    }
    print_resume_hint(&st, &pos);
    status = 128 + run_signals_stop();
    goto done;
  }
  end.best_epoch = nn_trainer_restore_best(run.trainer);
  const long best = end.best_epoch, after = end.stopped_after;
  if (end.why == NN_STOP_PATIENCE && opt->verbosity > 0)
    fprintf(stderr,
            "nnrun: stopped early after epoch %ld: no better validation "
            "accuracy for %ld epoch%s (best: epoch %ld)\n",
            after, after - best, after - best == 1 ? "" : "s", best);
  if ((rc = nn_trainer_evaluate(run.trainer, &run.test, &end.test_loss,
                                &end.test_accuracy, &err))) {
    status = rc == NN_EPLUGIN ? EXIT_PLUGIN : EXIT_RUNTIME;
    goto done;
  }
  end.status = "finished";
  if (run_outputs_summary(&st, &end, &err)) {
    status = EXIT_RUNTIME;
    end.status = "failed";
    goto done;
  }
  printf("test loss=%.6f accuracy=%.4f best_epoch=%ld\n", end.test_loss,
         end.test_accuracy, best);
  if (fflush(stdout) != 0) {
    nn_error_set(&err, NN_EIO, "cannot write to standard output");
    status = EXIT_RUNTIME;
  }

done:
  if (status && status < 128 && cli_mpi_lead())
    fprintf(stderr, "nnrun: %s\n", err.msg);
  /* A run that trained and then failed says so in its summary, if the
   * disk lets it: the error above is what counts. */
  if (status && status < 128 && st.metrics && st.lock_fd >= 0 &&
      !strcmp(end.status, "failed") && run.trainer) {
    nn_error ignored;
    run_outputs_summary(&st, &end, &ignored);
  }
  if (status && !st.trained && st.lock_new) {
    char lock[4200];
    snprintf(lock, sizeof lock, "%s/%s", st.out_dir, RUN_DIR_LOCK);
    unlink(lock);
  }
  cli_run_free(&run);
  free(st.metrics);
  free(st.config);
  if (st.lock_fd >= 0) close(st.lock_fd);
  return status;
}
