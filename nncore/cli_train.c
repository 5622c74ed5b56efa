/* nnrun -c FILE: load and validate the configuration, load the plugins and
 * the data, train, keep the best epoch, test.  Every failure is reported
 * with where it comes from and mapped to an exit status (see cli.h). */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nn/nn.h>

#include "cli.h"
#include "run_dir.h"
#include "run_summary.h"

/* The core's own sections.  Plugins declare [model] / [optimizer] keys. */
static const nn_option data_options[] = {
    {"dir", NN_OPT_STRING, "data", "directory holding the MNIST files", 0, 0, 0},
    {"format", NN_OPT_STRING, "idx", "idx (raw or .gz IDX files) or csv", 0, 0, 0},
    {NULL, 0, NULL, NULL, 0, 0, 0}};
enum { DATA_DIR, DATA_FORMAT, N_DATA };

static const nn_option train_options[] = {
    {"epochs", NN_OPT_INT, "10", "passes over the training set",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1, 1e6},
    {"batch_size", NN_OPT_INT, "64", "examples per optimizer step",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1, 1e6},
    {"seed", NN_OPT_INT, "1024", "seeds weight init and shuffling",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 0, 4294967295.0},
    {"shuffle", NN_OPT_BOOL, "true", "reshuffle training batches every epoch",
     0, 0, 0},
    {NULL, 0, NULL, NULL, 0, 0, 0}};
enum { TRAIN_EPOCHS, TRAIN_BATCH_SIZE, TRAIN_SEED, TRAIN_SHUFFLE, N_TRAIN };

static const char *const sections[] = {"data", "train", "model", "optimizer",
                                       NULL};
static const char *const type_key[] = {"type", NULL};

/* The fraction of the training file used for training (the rest validates). */
#define TRAIN_FRACTION 0.8

typedef struct run_state {
  const cli_options *opt;
  int live;                  /* stderr is a terminal: draw a progress line */
  double epoch_start;        /* for the progress line's elapsed / ETA */
  double last_draw;
  char out_dir[4096];
  char metrics_path[4200];
  nn_epoch_metrics *metrics; /* owned: one entry per epoch */
  size_t n_epochs_done;
  int write_failed;
  nn_error write_err;
} run_state;

static int fail(int status, const nn_error *err) {
  fprintf(stderr, "nnrun: %s\n", err->msg);
  return status;
}

/* A loaded plugin and its validated option values. */
typedef struct plugin_slot {
  nn_loaded *loaded;  /* owned */
  nn_value *values;   /* owned; strings point into the config */
} plugin_slot;

static void slot_free(plugin_slot *s) {
  nn_plugin_close(s->loaded);
  free(s->values);
}

/* Load the plugin named by [section] type and validate the section against
 * its option table. */
static int load_slot(const nn_config *cfg, const char *section, uint32_t kind,
                     plugin_slot *slot, nn_error *err) {
  const char *where;
  const char *type = nn_config_get(cfg, section, "type", &where);
  if (!type) {
    nn_error_set(err, NN_ECONFIG, "%s: [%s] needs 'type' (the %s plugin to use)",
                 nn_config_path(cfg), section, nn_kind_name(kind));
    return EXIT_USAGE;
  }
  char search[8192];
  nn_error perr;
  int rc = nn_plugin_open(&slot->loaded, type, kind,
                          nn_plugin_default_path(search, sizeof search), &perr);
  if (rc) {
    nn_error_set(err, rc, "%s: [%s] type = %s: %s", where, section, type,
                 perr.msg);
    /* A name that matches no plugin is a config mistake; a plugin that is
     * there but cannot be used is a plugin problem. */
    return rc == NN_ENOTFOUND ? EXIT_USAGE : EXIT_PLUGIN;
  }
  const nn_plugin *d = nn_loaded_desc(slot->loaded);
  size_t n = nn_option_count(d->options);
  slot->values = calloc(n ? n : 1, sizeof *slot->values);
  if (!slot->values) {
    nn_error_set(err, NN_ENOMEM, "out of memory");
    return EXIT_RUNTIME;
  }
  rc = nn_config_resolve(cfg, section, d->name, d->options, type_key,
                         slot->values, err);
  if (rc) return rc == NN_EPLUGIN ? EXIT_PLUGIN : EXIT_USAGE;
  return EXIT_OK;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The live progress line: bar, batches, running loss and accuracy, elapsed
 * and ETA.  Redrawn at most 10 times a second so it costs nothing. */
static void on_batch(void *user, size_t epoch, size_t batch, size_t n_batches,
                     double loss, double accuracy) {
  run_state *st = user;
  double now = now_seconds();
  if (batch == 1) st->epoch_start = now;
  if (batch != n_batches && now - st->last_draw < 0.1) return;
  st->last_draw = now;
  double elapsed = now - st->epoch_start;
  double eta = batch ? elapsed * (double)(n_batches - batch) / (double)batch : 0;
  enum { WIDTH = 24 };
  char bar[WIDTH + 1];
  size_t filled = n_batches ? batch * WIDTH / n_batches : 0;
  for (size_t i = 0; i < WIDTH; i++) bar[i] = i < filled ? '#' : '-';
  bar[WIDTH] = '\0';
  fprintf(stderr, "\r\033[Kepoch %3zu [%s] %zu/%zu  loss %.4f acc %.4f  %.1fs eta %.1fs",
          epoch, bar, batch, n_batches, loss, accuracy, elapsed, eta);
  fflush(stderr);
}

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
  /* Rewrite metrics.csv every epoch: an interrupted run keeps its curves. */
  if (nn_metrics_write_csv(st->metrics_path, st->metrics, st->n_epochs_done,
                           &st->write_err)) {
    st->write_failed = 1;
    return 1; /* stop: a run whose results cannot be saved is pointless */
  }
  return 0;
}

/* Configuration, in the order a user would fix it. */
static int load_config(const cli_options *opt, nn_config **cfg,
                       nn_value *data, nn_value *train, nn_error *err) {
  if (nn_config_load(cfg, opt->config, err)) return EXIT_USAGE;
  for (size_t i = 0; i < opt->n_sets; i++)
    if (nn_config_set(*cfg, opt->sets[i], err)) return EXIT_USAGE;
  if (nn_config_check_sections(*cfg, sections, err) ||
      nn_config_resolve(*cfg, "data", "[data]", data_options, NULL, data, err) ||
      nn_config_resolve(*cfg, "train", "[train]", train_options, NULL, train,
                        err))
    return EXIT_USAGE;
  const char *fmt = data[DATA_FORMAT].s;
  if (strcmp(fmt, "idx") && strcmp(fmt, "csv")) {
    const char *where;
    nn_config_get(*cfg, "data", "format", &where);
    nn_error_set(err, NN_ECONFIG, "%s: [data] format = %s: expected idx or csv",
                 where, fmt);
    return EXIT_USAGE;
  }
  return EXIT_OK;
}

int cli_train(const cli_options *opt) {
  nn_error err = {0};
  nn_config *cfg = NULL;
  nn_value data_v[N_DATA], train_v[N_TRAIN];
  plugin_slot model = {0}, optim = {0};
  nn_dataset all = {0}, test = {0};
  nn_trainer *trainer = NULL;
  run_state st = {.opt = opt};
  int status = load_config(opt, &cfg, data_v, train_v, &err);
  if (status) goto done;
  if ((status = load_slot(cfg, "model", NN_KIND_MODEL, &model, &err)) ||
      (status = load_slot(cfg, "optimizer", NN_KIND_OPTIMIZER, &optim, &err)))
    goto done;

  double t_start = now_seconds();
  int rc = nn_mnist_load(data_v[DATA_DIR].s, data_v[DATA_FORMAT].s, &all, &test,
                         &err);
  double load_seconds = now_seconds() - t_start;
  if (rc) {
    /* A data directory that does not exist is the config's mistake. */
    const char *where;
    nn_config_get(cfg, "data", "dir", &where);
    char msg[sizeof err.msg], cwd[1024] = "";
    snprintf(msg, sizeof msg, "%s", err.msg);
    /* Relative paths resolve against the current directory: say which. */
    if (data_v[DATA_DIR].s[0] != '/' && !getcwd(cwd, sizeof cwd)) cwd[0] = '\0';
    nn_error_set(&err, rc, "%s: [data] dir = %s%s%s%s: %s", where,
                 data_v[DATA_DIR].s, cwd[0] ? " (in " : "", cwd,
                 cwd[0] ? ")" : "", msg);
    status = rc == NN_ENOTFOUND ? EXIT_USAGE : EXIT_RUNTIME;
    goto done;
  }
  nn_dataset train, val;
  nn_dataset_split(&all, TRAIN_FRACTION, &train, &val);

  nn_train_opts topts = {.epochs = (size_t)train_v[TRAIN_EPOCHS].i,
                         .batch_size = (size_t)train_v[TRAIN_BATCH_SIZE].i,
                         .seed = (uint64_t)train_v[TRAIN_SEED].i,
                         .shuffle = train_v[TRAIN_SHUFFLE].b};
  rc = nn_trainer_create(&trainer, nn_loaded_desc(model.loaded), model.values,
                         nn_loaded_desc(optim.loaded), optim.values, all.dim, 10,
                         &topts, &err);
  if (rc) {
    status = rc == NN_ECONFIG ? EXIT_USAGE
             : rc == NN_EPLUGIN ? EXIT_PLUGIN : EXIT_RUNTIME;
    goto done;
  }

  char msg[512];
  if (run_dir_create(opt->output_dir, nn_config_name(cfg), st.out_dir,
                     sizeof st.out_dir, msg, sizeof msg)) {
    nn_error_set(&err, NN_EIO, "%s", msg);
    status = EXIT_RUNTIME;
    goto done;
  }
  snprintf(st.metrics_path, sizeof st.metrics_path, "%s/metrics.csv", st.out_dir);
  st.metrics = calloc(topts.epochs, sizeof *st.metrics);
  if (!st.metrics) {
    nn_error_set(&err, NN_ENOMEM, "out of memory");
    status = EXIT_RUNTIME;
    goto done;
  }
  if (opt->verbosity > 0)
    fprintf(stderr,
            "nnrun: %s: %s + %s, %zu training / %zu validation / %zu test "
            "examples, output in %s\n",
            nn_config_path(cfg), nn_loaded_desc(model.loaded)->name,
            nn_loaded_desc(optim.loaded)->name, train.n, val.n, test.n,
            st.out_dir);
  if (opt->verbosity > 1)
    fprintf(stderr, "nnrun: model %s, optimizer %s, CBLAS %s, seed %llu\n",
            nn_loaded_path(model.loaded), nn_loaded_path(optim.loaded),
            nn_cblas_name(), (unsigned long long)topts.seed);

  st.live = opt->verbosity > 0 && isatty(STDERR_FILENO);
  if (st.live) nn_trainer_on_batch(trainer, on_batch, &st);
  rc = nn_trainer_run(trainer, &train, &val, on_epoch, &st, NULL, NULL, &err);
  if (st.write_failed) err = st.write_err;
  if (rc || st.write_failed) {
    status = rc == NN_EPLUGIN ? EXIT_PLUGIN : EXIT_RUNTIME;
    goto done;
  }
  long best = nn_trainer_restore_best(trainer);
  double loss, acc;
  if (nn_trainer_evaluate(trainer, &test, &loss, &acc, &err)) {
    status = EXIT_RUNTIME;
    goto done;
  }
  run_section secs[] = {
      {"data", NULL, data_options, data_v},
      {"train", NULL, train_options, train_v},
      {"model", nn_loaded_desc(model.loaded)->name,
       nn_loaded_desc(model.loaded)->options, model.values},
      {"optimizer", nn_loaded_desc(optim.loaded)->name,
       nn_loaded_desc(optim.loaded)->options, optim.values}};
  run_summary sum = {
      .config_path = nn_config_path(cfg), .sections = secs, .n_sections = 4,
      .model = nn_loaded_desc(model.loaded), .optim = nn_loaded_desc(optim.loaded),
      .model_file = nn_loaded_path(model.loaded),
      .optim_file = nn_loaded_path(optim.loaded), .seed = topts.seed,
      .metrics = st.metrics, .n_epochs = st.n_epochs_done, .best_epoch = best,
      .test_loss = loss, .test_accuracy = acc, .load_seconds = load_seconds,
      .total_seconds = now_seconds() - t_start};
  char path[4200];
  snprintf(path, sizeof path, "%s/summary.json", st.out_dir);
  if (run_summary_write(path, &sum, &err)) {
    status = EXIT_RUNTIME;
    goto done;
  }
  printf("test loss=%.6f accuracy=%.4f best_epoch=%ld\n", loss, acc, best);
  if (fflush(stdout) != 0) {
    nn_error_set(&err, NN_EIO, "cannot write to standard output");
    status = EXIT_RUNTIME;
  }

done:
  if (status) fail(status, &err);
  nn_trainer_free(trainer); /* before the plugins it came from */
  slot_free(&optim);
  slot_free(&model);
  nn_dataset_free(&all);
  nn_dataset_free(&test);
  nn_config_free(cfg);
  free(st.metrics);
  return status;
}
