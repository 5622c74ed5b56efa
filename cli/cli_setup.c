/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Setting up a run from its config: see cli_setup.h. */
#include <config.h>

#include "cli_mpi.h"
#include "cli_setup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <nn/safetensors.h>

#include "checkpoint.h"
#include "cli_paths.h"
#include "sweep_proc.h"
#include "gsl_trap.h"

#ifdef HAVE_OPENBLAS
/* From OpenBLAS (cblas.h); declared here to avoid depending on where the
 * distribution puts that header.  Process-wide, so only the CLI calls it. */
void openblas_set_num_threads(int num_threads);
#endif

/* Zero (no call in progress) until a trainer records one. */
nn_call_record cli_plugin_call;

/* The core's own sections.  Plugins declare [model] / [optimizer] keys. */
const nn_option cli_data_options[] = {
    {"dir", NN_OPT_STRING, "data", "directory holding the MNIST files", 0, 0, 0},
    {"format", NN_OPT_STRING, "idx", "idx (raw or .gz IDX files) or csv", 0, 0, 0},
    {NULL, 0, NULL, NULL, 0, 0, 0}};

const nn_option cli_train_options[] = {
    {"epochs", NN_OPT_INT, "10", "passes over the training set",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1, 1e6},
    {"batch_size", NN_OPT_INT, "64", "examples per optimizer step",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1, 1e6},
    {"seed", NN_OPT_INT, "1024", "seeds weight init and shuffling",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 0, 4294967295.0},
    {"shuffle", NN_OPT_BOOL, "true", "reshuffle training batches every epoch",
     0, 0, 0},
    {"threads", NN_OPT_INT, "0",
     "2+: gather the next batch on a second thread; 0: 2 if this process "
     "may run on 2 CPUs, else 1. Results do not depend on it",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 0, 256},
    {"patience", NN_OPT_INT, "0",
     "stop after this many epochs in a row without a better validation "
     "accuracy; 0: off",
     NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 0, 1e6},
    {NULL, 0, NULL, NULL, 0, 0, 0}};

static const char *const sections[] = {"data", "train", "model", "optimizer",
                                       "sweep", "layer *", "schedule", NULL};
static const char *const model_extra[] = {"type", "init_from", NULL};
static const char *const optim_extra[] = {"type", NULL};
static const char *const layer_extra[] = {"type", NULL};
/* [schedule] holds the plugin's keys and the core's warm-up keys. */
static const char *const schedule_extra[] = {
    "type", "warmup_epochs", "warmup_start_factor", "warmup_per_batch", NULL};
#define LAYER_PREFIX "layer "


/* The fraction of the training file used for training (the rest validates). */
#define TRAIN_FRACTION 0.8
/* MNIST's digits: the labels the data may hold and the model's outputs. */
#define MNIST_CLASSES 10

static void slot_free(plugin_slot *s) {
  nn_plugin_close(s->loaded);
  free(s->values);
  s->loaded = NULL;
  s->values = NULL;
}

void cli_run_free(cli_run *r) {
  nn_trainer_free(r->trainer); /* before the plugins it came from */
  r->trainer = NULL;
  slot_free(&r->optim);
  slot_free(&r->schedule);
  slot_free(&r->model);
  for (size_t i = 0; i < r->n_layers; i++) slot_free(&r->layers[i]);
  free(r->layers);
  free(r->layer_specs);
  r->layers = NULL;
  r->layer_specs = NULL;
  r->n_layers = 0;
  nn_dataset_free(&r->all);
  nn_dataset_free(&r->test);
  nn_config_free(r->cfg);
  r->cfg = NULL;
}

/* --resume of a sweep's run: its own values (sweep_proc.h), before the
 * --set options, so that one that contradicts them shows as a difference
 * from the run's configuration. */
static int apply_run_values(nn_config *cfg, const char *dir, nn_error *err) {
  char path[4200], line[1024];
  snprintf(path, sizeof path, "%s/" SWEEP_VALUES_FILE, dir);
  FILE *fp = fopen(path, "r");
  if (!fp) return NN_OK; /* not a sweep's run */
  int rc = NN_OK;
  while (!rc && fgets(line, sizeof line, fp)) {
    line[strcspn(line, "\n")] = '\0';
    if (!*line) continue;
    nn_error e;
    if ((rc = nn_config_set(cfg, line, &e)))
      nn_error_set(err, rc, "%s: %s", path, e.msg);
  }
  if (!rc && ferror(fp))
    rc = nn_error_set(err, NN_EIO, "cannot read %s", path);
  fclose(fp);
  return rc;
}

/* Configuration, in the order a user would fix it. */
static int setup_config(cli_run *r, const cli_options *opt, nn_error *err) {
  if (nn_config_load(&r->cfg, opt->config, err)) return EXIT_USAGE;
  if (opt->resume_dir && apply_run_values(r->cfg, opt->resume_dir, err))
    return EXIT_USAGE;
  for (size_t i = 0; i < opt->n_sets; i++)
    if (nn_config_set(r->cfg, opt->sets[i], err)) return EXIT_USAGE;
  if (nn_config_check_sections(r->cfg, sections, err) ||
      nn_config_resolve(r->cfg, "data", "[data]", cli_data_options, NULL,
                        r->data_v, err) ||
      nn_config_resolve(r->cfg, "train", "[train]", cli_train_options, NULL,
                        r->train_v, err))
    return EXIT_USAGE;
  const char *fmt = r->data_v[DATA_FORMAT].s;
  if (strcmp(fmt, "idx") && strcmp(fmt, "csv")) {
    const char *where;
    nn_config_get(r->cfg, "data", "format", &where);
    nn_error_set(err, NN_ECONFIG, "%s: [data] format = %s: expected idx or csv",
                 where, fmt);
    return EXIT_USAGE;
  }
  /* threads = 0: the measured best here, 2 (a helper thread gathers the
   * next batch), when there is a second CPU for it - and 1 for each run of
   * a sweep that runs several at once (-j), or for each MPI rank when the
   * ranks on this machine leave none spare: they share the CPUs.  A count
   * the user chose (config, --set or sweep axis) stays.  The resolved
   * value is what the run records. */
  if (r->train_v[TRAIN_THREADS].i == 0)
    r->train_v[TRAIN_THREADS].i =
        opt->jobs <= 1 && nn_cpus_available() >= 2 * cli_mpi_local_size()
            ? 2
            : 1;
  r->topts = (nn_train_opts){.epochs = (size_t)r->train_v[TRAIN_EPOCHS].i,
                             .batch_size = (size_t)r->train_v[TRAIN_BATCH_SIZE].i,
                             .seed = (uint64_t)r->train_v[TRAIN_SEED].i,
                             .shuffle = r->train_v[TRAIN_SHUFFLE].b,
                             .threads = (size_t)r->train_v[TRAIN_THREADS].i,
                             .calls = &cli_plugin_call,
                             .gsl_trap = cli_gsl_trap_take,
                             .patience = (size_t)r->train_v[TRAIN_PATIENCE].i,
                             /* under mpirun: the ranks train it together */
                             .comm = cli_mpi_comm()};
  return EXIT_OK;
}

/* Load the plugin named by [section] type and validate the section against
 * its option table. */
/* Where [section] first appears (its header's FILE:LINE), or the file. */
static const char *section_where(const nn_config *cfg, const char *section) {
  const char *name, *where;
  for (size_t i = 0; (name = nn_config_section_at(cfg, i, &where)); i++)
    if (!strcmp(name, section)) return where;
  return nn_config_path(cfg);
}

static int load_slot(const nn_config *cfg, const char *section, uint32_t kind,
                     const char *const *extra, plugin_slot *slot,
                     nn_error *err) {
  const char *where;
  const char *type = nn_config_get(cfg, section, "type", &where);
  if (!type) {
    nn_error_set(err, NN_ECONFIG, "%s: [%s] needs 'type' (the %s plugin to use)",
                 section_where(cfg, section), section, nn_kind_name(kind));
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
  rc = nn_config_resolve(cfg, section, d->name, d->options, extra, slot->values,
                         err);
  if (rc) return rc == NN_EPLUGIN ? EXIT_PLUGIN : EXIT_USAGE;
  return EXIT_OK;
}

const char *cli_model_name(const cli_run *r) {
  return r->model.loaded ? nn_loaded_desc(r->model.loaded)->name
                         : CLI_SEQUENTIAL;
}

const char *cli_model_file(const cli_run *r) {
  return r->model.loaded ? nn_loaded_path(r->model.loaded) : "libnn";
}

/* [model] type = sequential: [model] takes no options of its own, and
 * every [layer NAME] section, in file order, is one layer. */
static int load_layers(cli_run *r, nn_error *err) {
  const nn_option none[] = {{NULL, 0, NULL, NULL, 0, 0, 0}};
  r->model.values = calloc(1, sizeof *r->model.values);
  if (!r->model.values) {
    nn_error_set(err, NN_ENOMEM, "out of memory");
    return EXIT_RUNTIME;
  }
  int rc = nn_config_resolve(r->cfg, "model", CLI_SEQUENTIAL, none,
                             model_extra, r->model.values, err);
  if (rc) return EXIT_USAGE;
  size_t n = 0;
  const char *name;
  for (size_t i = 0; (name = nn_config_section_at(r->cfg, i, NULL)); i++)
    n += !strncmp(name, LAYER_PREFIX, strlen(LAYER_PREFIX));
  if (!n) {
    const char *where;
    nn_config_get(r->cfg, "model", "type", &where);
    nn_error_set(err, NN_ECONFIG,
                 "%s: [model] type = sequential needs its layers: one "
                 "[layer NAME] section per layer, in order, each with a "
                 "type (e.g. [layer fc1] type = dense, units = 128)", where);
    return EXIT_USAGE;
  }
  r->layers = calloc(n, sizeof *r->layers);
  r->layer_specs = calloc(n, sizeof *r->layer_specs);
  if (!r->layers || !r->layer_specs) {
    nn_error_set(err, NN_ENOMEM, "out of memory");
    return EXIT_RUNTIME;
  }
  for (size_t i = 0; (name = nn_config_section_at(r->cfg, i, NULL)); i++) {
    if (strncmp(name, LAYER_PREFIX, strlen(LAYER_PREFIX))) continue;
    plugin_slot *slot = &r->layers[r->n_layers];
    int status = load_slot(r->cfg, name, NN_KIND_LAYER, layer_extra, slot, err);
    if (status) {
      /* Not counted in n_layers yet, so cli_run_free would miss it. */
      slot_free(slot);
      return status;
    }
    r->layer_specs[r->n_layers] = (nn_layer_spec){
        name + strlen(LAYER_PREFIX), nn_loaded_desc(slot->loaded),
        slot->values};
    r->n_layers++;
  }
  return EXIT_OK;
}

/* The model: a model plugin, or a sequential network of layer plugins. */
static int load_model(cli_run *r, nn_error *err) {
  const char *type = nn_config_get(r->cfg, "model", "type", NULL);
  if (type && !strcmp(type, CLI_SEQUENTIAL)) return load_layers(r, err);
  const char *name, *where;
  for (size_t i = 0; (name = nn_config_section_at(r->cfg, i, &where)); i++)
    if (!strncmp(name, LAYER_PREFIX, strlen(LAYER_PREFIX))) {
      nn_error_set(err, NN_ECONFIG,
                   "%s: [%s] is a layer, but [model] type is %s: layers "
                   "make a model only with [model] type = sequential",
                   where, name, type ? type : "not set");
      return EXIT_USAGE;
    }
  return load_slot(r->cfg, "model", NN_KIND_MODEL, model_extra, &r->model,
                   err);
}

/* [schedule], when the config has one: its plugin (with the plugin's
 * keys) and the core's warm-up keys, each checked against its own table
 * with the other's keys let through. */
static int load_schedule(cli_run *r, nn_error *err) {
  const char *name;
  size_t i = 0;
  while ((name = nn_config_section_at(r->cfg, i, NULL)) &&
         strcmp(name, "schedule"))
    i++;
  if (!name) return EXIT_OK; /* a constant rate: the optimizer's own */
  int status = load_slot(r->cfg, "schedule", NN_KIND_SCHEDULE, schedule_extra,
                         &r->schedule, err);
  if (status) return status;
  const nn_option *table = nn_loaded_desc(r->schedule.loaded)->options;
  const size_t n = nn_option_count(table);
  const char **extra = calloc(n + 2, sizeof *extra);
  if (!extra) {
    nn_error_set(err, NN_ENOMEM, "out of memory");
    return EXIT_RUNTIME;
  }
  extra[0] = "type";
  for (size_t i = 0; i < n; i++) extra[i + 1] = table[i].key;
  int rc = nn_config_resolve(r->cfg, "schedule", "[schedule]",
                             nn_warmup_options, extra, r->warmup_v, err);
  free(extra);
  return rc ? EXIT_USAGE : EXIT_OK;
}

static int setup_data(cli_run *r, int test_only, nn_error *err) {
  double t0 = nn_now_seconds();
  const char *dir = r->data_v[DATA_DIR].s;
  int rc = nn_mnist_load(dir, r->data_v[DATA_FORMAT].s,
                         test_only ? NULL : &r->all, &r->test, err);
  r->load_seconds = nn_now_seconds() - t0;
  if (rc) {
    /* Data that is missing or unreadable is a data failure (exit 1), with
     * where the config asked for it and, when files are missing, the
     * command that fetches them there. */
    const char *where;
    nn_config_get(r->cfg, "data", "dir", &where);
    char msg[sizeof err->msg], cwd[1024] = "", fetch[1200] = "";
    snprintf(msg, sizeof msg, "%s", err->msg);
    /* Relative paths resolve against the current directory: say which. */
    if (dir[0] != '/' && !getcwd(cwd, sizeof cwd)) cwd[0] = '\0';
    if (rc == NN_ENOTFOUND) {
      char cmd[1024];
      snprintf(fetch, sizeof fetch, "; fetch MNIST into it with: %s %s%s",
               cli_fetch_command(cmd, sizeof cmd), dir,
               strcmp(r->data_v[DATA_FORMAT].s, "csv") ? "" : " --csv");
    }
    nn_error_set(err, rc, "%s: [data] dir = %s%s%s%s: %s%s", where, dir,
                 cwd[0] ? " (in " : "", cwd, cwd[0] ? ")" : "", msg, fetch);
    return EXIT_RUNTIME;
  }
  if (!test_only) nn_dataset_split(&r->all, TRAIN_FRACTION, &r->train, &r->val);
  /* Now, before anything trains or a run directory exists: a bad label
   * found by the trainer would cost the training before it (test labels
   * are first read after the last epoch). */
  if (nn_mnist_check(dir, r->data_v[DATA_FORMAT].s,
                     test_only ? NULL : &r->train, test_only ? NULL : &r->val,
                     &r->test, MNIST_CLASSES, err))
    return EXIT_RUNTIME;
  return EXIT_OK;
}

/* ---------------------------------------------------------------- memory
 * A model too large for the machine is refused before anything is
 * allocated: creating it would fail after minutes and gigabytes, or push
 * the machine into swap. */

/* "7.8 GiB" */
static const char *bytes_text(uint64_t n, char *buf, size_t size) {
  static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB",
                                      "PiB", "EiB"};
  double v = (double)n;
  size_t u = 0;
  while (v >= 1024.0 && u + 1 < sizeof units / sizeof units[0]) {
    v /= 1024.0;
    u++;
  }
  snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

/* The memory this process may use: the machine's physical memory and, if
 * set, its address-space limit (RLIMIT_AS: ulimit -v).  0: unknown. */
static void memory_limits(uint64_t *physical, uint64_t *address_space) {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  *physical = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
  struct rlimit rl;
  *address_space = getrlimit(RLIMIT_AS, &rl) == 0 &&
                           rl.rlim_cur != RLIM_INFINITY
                       ? (uint64_t)rl.rlim_cur
                       : 0;
}

/* Fails (NN_ECONFIG, with what is needed and what there is) when the
 * model's plugins say it needs more memory than the process may have. */
static int check_memory(const cli_run *r, const nn_model_spec *spec,
                        nn_shape in, nn_error *err) {
  nn_memory_estimate est;
  nn_trainer_memory(spec, in, MNIST_CLASSES, &r->topts, &est);
  uint64_t physical, address_space;
  memory_limits(&physical, &address_space);
  const int by_rlimit = address_space && (!physical || address_space < physical);
  const uint64_t limit = by_rlimit ? address_space : physical;
  if (!limit || est.total <= limit) return NN_OK;
  char total[64], model[32], layer[32], lim[32], phys[32], part[300] = "";
  const char *where = nn_config_path(r->cfg);
  if (spec->plugin) {
    where = section_where(r->cfg, "model");
  } else if (est.largest_bytes) {
    /* The layer to make smaller, and where it is. */
    const nn_layer_spec *l = &spec->layers[est.largest];
    char section[300];
    snprintf(section, sizeof section, LAYER_PREFIX "%s", l->name);
    where = section_where(r->cfg, section);
    snprintf(part, sizeof part, ", of which layer %s (%s) %s", l->name,
             l->plugin->name, bytes_text(est.largest_bytes, layer, sizeof layer));
  }
  if (est.total == UINT64_MAX)
    snprintf(total, sizeof total, "more than can be addressed");
  else
    snprintf(total, sizeof total, "%s%s", est.complete ? "about " : "at least ",
             bytes_text(est.total, lim, sizeof lim));
  char limits[200];
  if (by_rlimit)
    snprintf(limits, sizeof limits,
             "the address-space limit of %s (RLIMIT_AS, ulimit -v; the "
             "machine has %s of physical memory)",
             bytes_text(address_space, lim, sizeof lim),
             physical ? bytes_text(physical, phys, sizeof phys) : "?");
  else
    snprintf(limits, sizeof limits, "this machine's %s of physical memory",
             bytes_text(physical, phys, sizeof phys));
  return nn_error_set(err, NN_ECONFIG,
                      "%s: this run needs %s of memory (model %s: %s%s; "
                      "then a copy of its weights, optimizer state and "
                      "batches of %zu), more than %s: make the model or the "
                      "batches smaller",
                      where, total, cli_model_name(r),
                      bytes_text(est.model, model, sizeof model), part,
                      r->topts.batch_size, limits);
}

static int setup_trainer(cli_run *r, nn_error *err) {
#ifdef HAVE_OPENBLAS
  /* One BLAS thread whatever [train] threads says: the products a model
   * hands to BLAS (a hidden dense layer: 64 x 256 x 128) gained nothing
   * from a second thread, and OpenBLAS's threads spin-wait for each
   * other, so with another process on one CPU an epoch took 2-4x as
   * long. */
  openblas_set_num_threads(1);
#endif
  const nn_model_spec spec = {
      r->model.loaded ? nn_loaded_desc(r->model.loaded) : NULL,
      r->model.values, r->layer_specs, r->n_layers};
  const nn_shape in = nn_dataset_shape(r->all.n ? &r->all : &r->test);
  if (check_memory(r, &spec, in, err)) return EXIT_USAGE;
  int rc = nn_trainer_create(&r->trainer, &spec,
                             nn_loaded_desc(r->optim.loaded), r->optim.values,
                             in, MNIST_CLASSES, &r->topts, err);
  if (!rc && r->schedule.loaded) {
    const nn_warmup w = nn_warmup_from(r->warmup_v);
    nn_error e = {0};
    rc = nn_trainer_set_schedule(r->trainer, nn_loaded_desc(r->schedule.loaded),
                                 r->schedule.values, &w, &e);
    /* Options each valid alone that do not fit together or with the
     * optimizer's rate (cosine's eta_min above it) are the config's. */
    if (rc == NN_EINVAL) rc = NN_ECONFIG;
    if (rc)
      nn_error_set(err, rc, "%s: [schedule] type = %s: %s",
                   section_where(r->cfg, "schedule"),
                   nn_loaded_desc(r->schedule.loaded)->name, e.msg);
  }
  if (rc)
    return rc == NN_ECONFIG ? EXIT_USAGE
           : rc == NN_EPLUGIN ? EXIT_PLUGIN : EXIT_RUNTIME;
  return EXIT_OK;
}

int cli_init_weights(cli_run *r, nn_error *err) {
  const char *where;
  const char *path = nn_config_get(r->cfg, "model", "init_from", &where);
  if (!path) return EXIT_OK;
  size_t n;
  nn_param *p = nn_trainer_weights(r->trainer, &n);
  if (access(path, R_OK) != 0) {
    nn_error_set(err, NN_ECONFIG, "%s: [model] init_from = %s: cannot read it",
                 where, path);
    return EXIT_USAGE;
  }
  nn_error e;
  int rc = checkpoint_load_weights(path, p, n, &e);
  if (rc)
    nn_error_set(err, rc, "%s: [model] init_from = %s: %s", where, path, e.msg);
  return checkpoint_status(rc);
}

int cli_run_setup(cli_run *r, const cli_options *opt, unsigned what,
                  nn_error *err) {
  int status = EXIT_OK;
  if (what & SETUP_CONFIG) status = setup_config(r, opt, err);
  if (!status && (what & SETUP_PLUGINS)) {
    status = load_model(r, err);
    if (!status)
      status = load_slot(r->cfg, "optimizer", NN_KIND_OPTIMIZER, optim_extra,
                         &r->optim, err);
    if (!status) status = load_schedule(r, err);
  }
  if (!status && (what & SETUP_DATA))
    status = setup_data(r, (what & SETUP_TEST_ONLY) != 0, err);
  if (!status && (what & SETUP_TRAINER)) status = setup_trainer(r, err);
  return status;
}

int cli_wants_sweep(const cli_options *opt) {
  if (opt->single_run) return 0;
  /* A sweep's run, resumed by itself. */
  char path[4200];
  if (opt->resume_dir) {
    snprintf(path, sizeof path, "%s/" SWEEP_VALUES_FILE, opt->resume_dir);
    if (access(path, F_OK) == 0) return 0;
  }
  if (opt->n_sweeps > 0) return 1;
  nn_config *cfg = NULL;
  nn_error err = {0};
  /* A config that does not load is cli_train's to report. */
  int yes = nn_config_load(&cfg, opt->config, &err) == NN_OK;
  for (size_t i = 0; yes && i < opt->n_sets; i++)
    yes = nn_config_set(cfg, opt->sets[i], &err) == NN_OK;
  yes = yes && nn_config_key_at(cfg, "sweep", 0, NULL, NULL) != NULL;
  nn_config_free(cfg);
  return yes;
}
