/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Sweeps: one training run per combination of values ([sweep] section and
 * --sweep options; several keys give their Cartesian product), N at a time
 * in child processes, each in its own subdirectory; then DIR/sweep.csv,
 * comparison charts and DIR/report.md. */
/* realpath is XSI. */
#define _XOPEN_SOURCE 700
#include <config.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include <nn/nn.h>
#include <nn/plot.h>

#include "files/atomic_file.h"
#include "cli.h"
#include "cli_mpi.h"
#include "cli_setup.h"
#include "run_dir.h"
#include "run_signals.h"
#include "sweep_proc.h"

#define MAX_AXES 16
#define MAX_VALUES 64
#define MAX_RUNS 4096

/* One swept key and its values (strings into `text`, owned). */
typedef struct axis {
  char key[160];     /* SECTION.KEY */
  char *text;        /* owned copy of the value list, split in place */
  const char *values[MAX_VALUES];
  size_t n;
} axis;

/* One run of the sweep and, after it finished, its results. */
typedef struct sweep_run {
  size_t idx[MAX_AXES];  /* value index per axis */
  char name[512];        /* its directory inside the sweep's */
  char dir[4096 + 512 + 1]; /* sweep directory / name, set by place_runs */
  char label[512];       /* "learning_rate=0.1, reg=0.01" */
  pid_t pid;
  int status;            /* exit status; -1 while not run */
  int resume;            /* it started in an earlier sweep process */
  double seconds;
  double best_val, test_acc, final_loss;
  long best_epoch;
  double *val_acc, *train_loss; /* owned, per epoch */
  size_t n_epochs;
} sweep_run;

typedef struct sweep {
  axis axes[MAX_AXES];
  size_t n_axes;
  sweep_run *runs; /* owned */
  size_t n_runs;
  char dir[4096];
} sweep;

static void sweep_free(sweep *s) {
  for (size_t i = 0; i < s->n_axes; i++) free(s->axes[i].text);
  for (size_t i = 0; s->runs && i < s->n_runs; i++) {
    free(s->runs[i].val_acc);
    free(s->runs[i].train_loss);
  }
  free(s->runs);
}

static const char *const run_sections[] = {"data",     "train",
                                           "model",    "optimizer",
                                           "schedule", NULL};
/* Layer sections ("layer fc1") hold a space and a name of the config's
 * own. */
#define LAYER_SECTION "layer "

/* Add or replace the axis KEY with the comma-separated values in list. */
static int add_axis(sweep *s, const char *key, const char *list,
                    const char *where, nn_error *err) {
  const char *dot = strchr(key, '.');
  int section_ok = 0;
  for (const char *const *p = run_sections; dot && *p; p++)
    section_ok |= strlen(*p) == (size_t)(dot - key) && !strncmp(*p, key, (size_t)(dot - key));
  section_ok |= dot && !strncmp(key, LAYER_SECTION, strlen(LAYER_SECTION)) &&
                dot > key + strlen(LAYER_SECTION);
  if (!dot || !section_ok || !dot[1] || strlen(key) >= sizeof s->axes[0].key)
    return nn_error_set(err, NN_ECONFIG,
                        "%s: sweep key '%s': expected SECTION.KEY with SECTION "
                        "one of data, train, model, optimizer, schedule or "
                        "layer NAME", where, key);
  axis *a = NULL;
  for (size_t i = 0; i < s->n_axes; i++)
    if (!strcmp(s->axes[i].key, key)) a = &s->axes[i]; /* --sweep overrides */
  if (!a) {
    if (s->n_axes == MAX_AXES)
      return nn_error_set(err, NN_ECONFIG, "%s: more than %d swept keys", where,
                          MAX_AXES);
    a = &s->axes[s->n_axes++];
  }
  free(a->text);
  memset(a, 0, sizeof *a);
  snprintf(a->key, sizeof a->key, "%s", key);
  a->text = strdup(list);
  if (!a->text) return nn_error_set(err, NN_ENOMEM, "out of memory");
  for (char *p = a->text; p;) {
    char *comma = strchr(p, ',');
    if (comma) *comma = '\0';
    while (*p == ' ' || *p == '\t') p++;
    char *e = p + strlen(p);
    while (e > p && (e[-1] == ' ' || e[-1] == '\t')) *--e = '\0';
    if (!*p)
      return nn_error_set(err, NN_ECONFIG, "%s: %s: empty value in '%s'", where,
                          key, list);
    if (a->n == MAX_VALUES)
      return nn_error_set(err, NN_ECONFIG, "%s: %s: more than %d values", where,
                          key, MAX_VALUES);
    a->values[a->n++] = p;
    p = comma ? comma + 1 : NULL;
  }
  return NN_OK;
}

static int collect_axes(sweep *s, const cli_options *opt, const nn_config *cfg,
                        nn_error *err) {
  const char *value, *where;
  const char *key;
  int rc;
  for (size_t i = 0; (key = nn_config_key_at(cfg, "sweep", i, &value, &where)); i++)
    if ((rc = add_axis(s, key, value, where, err))) return rc;
  for (size_t i = 0; i < opt->n_sweeps; i++) {
    const char *eq = strchr(opt->sweeps[i], '=');
    char key_buf[200];
    if (!eq || (size_t)(eq - opt->sweeps[i]) >= sizeof key_buf)
      return nn_error_set(err, NN_ECONFIG,
                          "--sweep '%s': expected SECTION.KEY=V1,V2,...",
                          opt->sweeps[i]);
    memcpy(key_buf, opt->sweeps[i], (size_t)(eq - opt->sweeps[i]));
    key_buf[eq - opt->sweeps[i]] = '\0';
    if ((rc = add_axis(s, key_buf, eq + 1, "--sweep", err))) return rc;
  }
  return NN_OK;
}

/* The runs: every combination, last axis fastest. */
static int enumerate(sweep *s, nn_error *err) {
  size_t total = 1;
  for (size_t i = 0; i < s->n_axes; i++) {
    total *= s->axes[i].n;
    if (total > MAX_RUNS)
      return nn_error_set(err, NN_ECONFIG, "the sweep has more than %d runs",
                          MAX_RUNS);
  }
  s->runs = calloc(total, sizeof *s->runs);
  if (!s->runs) return nn_error_set(err, NN_ENOMEM, "out of memory");
  s->n_runs = total;
  for (size_t r = 0; r < total; r++) {
    sweep_run *run = &s->runs[r];
    size_t rest = r;
    for (size_t i = s->n_axes; i-- > 0;) {
      run->idx[i] = rest % s->axes[i].n;
      rest /= s->axes[i].n;
    }
    /* Name: NN-key=value-key=value, with the section dropped and any '/'
     * replaced so a value can never escape the sweep directory. */
    size_t len = (size_t)snprintf(run->name, sizeof run->name, "%02zu", r + 1);
    size_t lab = 0;
    for (size_t i = 0; i < s->n_axes; i++) {
      const char *k = strchr(s->axes[i].key, '.') + 1;
      const char *v = s->axes[i].values[run->idx[i]];
      if (len < sizeof run->name)
        len += (size_t)snprintf(run->name + len, sizeof run->name - len, "-%s=%s",
                                k, v);
      if (lab < sizeof run->label)
        lab += (size_t)snprintf(run->label + lab, sizeof run->label - lab,
                                "%s%s=%s", i ? ", " : "", k, v);
    }
    for (char *p = run->name; *p; p++)
      if (*p == '/' || *p == ' ') *p = '_';
    run->status = -1;
  }
  return NN_OK;
}

/* Once the sweep directory exists: every run's directory inside it. */
static void place_runs(sweep *s) {
  for (size_t r = 0; r < s->n_runs; r++)
    snprintf(s->runs[r].dir, sizeof s->runs[r].dir, "%s/%s", s->dir,
             s->runs[r].name);
}

/* The options of one run: the user's --set overrides, then the run's
 * values.  (The run keeps -j: with several runs at once, an automatic
 * thread count is 1 per run; see setup_config.) */
static void run_options(const sweep *s, const sweep_run *run,
                        const cli_options *opt, cli_options *child,
                        const char **sets, char (*buf)[400]) {
  *child = *opt;
  child->sets = sets;
  child->n_sets = 0;
  child->n_sweeps = 0;
  child->single_run = 1;
  child->resume_dir = NULL;
  child->force = opt->force;
  for (size_t i = 0; i < opt->n_sets; i++) sets[child->n_sets++] = opt->sets[i];
  for (size_t i = 0; i < s->n_axes; i++) {
    snprintf(buf[i], sizeof buf[i], "%s=%s", s->axes[i].key,
             s->axes[i].values[run->idx[i]]);
    sets[child->n_sets++] = buf[i];
  }
  child->output_dir = run->dir;
  child->verbosity = 0;
}

/* Check every run's configuration before starting any. */
static int validate_runs(const sweep *s, const cli_options *opt, nn_error *err) {
  const char **sets = malloc((opt->n_sets + MAX_AXES) * sizeof *sets);
  char(*buf)[400] = malloc(MAX_AXES * sizeof *buf);
  int status = EXIT_OK;
  if (!sets || !buf) {
    nn_error_set(err, NN_ENOMEM, "out of memory");
    status = EXIT_RUNTIME;
  }
  for (size_t r = 0; !status && r < s->n_runs; r++) {
    cli_options child;
    run_options(s, &s->runs[r], opt, &child, sets, buf);
    cli_run run = {0};
    nn_error e;
    status = cli_run_setup(&run, &child, SETUP_CONFIG | SETUP_PLUGINS, &e);
    cli_run_free(&run);
    if (status)
      nn_error_set(err, e.code, "sweep run %zu (%s): %s", r + 1,
                   s->runs[r].label, e.msg);
  }
  free(sets);
  free(buf);
  return status;
}

/* What a run's child process needs. */
typedef struct child_args {
  const sweep *s;
  const sweep_run *run;
  const cli_options *opt;
} child_args;

/* Child process: one run (resumed where an earlier sweep left it), its
 * messages into DIR/log.txt. */
static void run_child(void *arg) {
  const child_args *a = arg;
  const sweep_run *run = a->run;
  /* Freed by _exit: this process only runs cli_train and ends. */
  const char **sets = malloc((a->opt->n_sets + MAX_AXES) * sizeof *sets);
  char(*buf)[400] = malloc(MAX_AXES * sizeof *buf);
  cli_options child;
  if (!sets || !buf) _exit(EXIT_RUNTIME);
  run_options(a->s, run, a->opt, &child, sets, buf);
  char msg[512], dir[sizeof run->dir];
  if (run_dir_create(run->dir, "", dir, sizeof dir, msg, sizeof msg) ||
      sweep_child_log(run->dir, run->resume))
    _exit(EXIT_RUNTIME);
  /* The run's own values, for a --resume of its directory alone. */
  if (sweep_values_write(run->dir, sets + a->opt->n_sets, a->s->n_axes, msg,
                         sizeof msg)) {
    fprintf(stderr, "nnrun: %s\n", msg);
    _exit(EXIT_RUNTIME);
  }
  if (run->resume) {
    child.resume_dir = run->dir;
    child.output_dir = NULL;
  }
  child.verbosity = 1; /* the log gets the epoch lines */
  const int status = cli_train(&child);
  fflush(NULL); /* _exit skips stdio's flush */
  _exit(status);
}

/* Whether the run in dir finished (its summary.json says so). */
static int run_finished(const char *dir) {
  char path[sizeof ((sweep_run *)0)->dir + 16];
  snprintf(path, sizeof path, "%s/summary.json", dir);
  json_t *root = json_load_file(path, 0, NULL);
  const char *st = json_string_value(json_object_get(root, "status"));
  const int done = st && !strcmp(st, "finished");
  json_decref(root);
  return done;
}

/* Read a finished run's summary.json. */
static void read_results(sweep_run *run) {
  char path[sizeof run->dir + 16];
  snprintf(path, sizeof path, "%s/summary.json", run->dir);
  json_t *root = json_load_file(path, 0, NULL);
  if (!root) {
    if (run->status == 0) run->status = EXIT_RUNTIME;
    return;
  }
  json_t *epochs = json_object_get(root, "epochs");
  size_t n = json_array_size(epochs);
  run->val_acc = calloc(n ? n : 1, sizeof *run->val_acc);
  run->train_loss = calloc(n ? n : 1, sizeof *run->train_loss);
  if (run->val_acc && run->train_loss) {
    for (size_t e = 0; e < n; e++) {
      json_t *m = json_array_get(epochs, e);
      json_t *va = json_object_get(m, "val_accuracy");
      json_t *tl = json_object_get(m, "train_loss");
      run->val_acc[e] = json_is_number(va) ? json_number_value(va) : NAN;
      run->train_loss[e] = json_is_number(tl) ? json_number_value(tl) : NAN;
    }
    run->n_epochs = n;
  }
  json_t *be = json_object_get(root, "best_epoch");
  run->best_epoch = json_is_integer(be) ? (long)json_integer_value(be) : -1;
  json_t *bv = json_object_get(root, "best_val_accuracy");
  run->best_val = json_is_number(bv) ? json_number_value(bv) : NAN;
  json_t *ta = json_object_get(json_object_get(root, "test"), "accuracy");
  run->test_acc = json_is_number(ta) ? json_number_value(ta) : NAN;
  if (!isfinite(run->seconds)) { /* finished by an earlier sweep process */
    json_t *ts = json_object_get(json_object_get(root, "timings"),
                                 "total_seconds");
    run->seconds = json_is_number(ts) ? json_number_value(ts) : NAN;
  }
  run->final_loss = n ? run->train_loss[n - 1] : NAN;
  json_decref(root);
}

/* Run r ended with exit status `status` after `seconds`: its results, and
 * the progress line, numbered by run as its directory is (08-...), not by
 * when it finished: with -j or several ranks the two orders differ. */
static void run_ended(sweep *s, size_t r, int status, double seconds,
                      const cli_options *opt) {
  sweep_run *run = &s->runs[r];
  run->status = status;
  run->seconds = seconds;
  /* A failed run's directory may hold a summary.json from an earlier
   * sweep into the same -o: only a finished run's is its own. */
  if (run->status == 0) read_results(run);
  if (opt->verbosity > 0) {
    if (run->status == 0)
      fprintf(stderr, "[%zu/%zu] %s: val %.4f (epoch %ld) test %.4f  %.1fs\n",
              r + 1, s->n_runs, run->label, run->best_val, run->best_epoch,
              run->test_acc, run->seconds);
    else
      fprintf(stderr, "[%zu/%zu] %s: failed (exit %d), see %s/log.txt\n",
              r + 1, s->n_runs, run->label, run->status, run->dir);
  }
}

/* Run everything, at most opt->jobs at a time; after a stop signal, no
 * new run starts and the running ones stop with a checkpoint (they got
 * the signal too). */
static void run_all(sweep *s, const cli_options *opt) {
  size_t next = 0, running = 0, done = 0;
  double *start = calloc(s->n_runs, sizeof *start);
  fflush(NULL); /* children must not inherit unwritten output */
  while (done < s->n_runs) {
    while (running < opt->jobs && next < s->n_runs && !run_signals_stop()) {
      sweep_run *run = &s->runs[next++];
      if (run->status != -1) { /* finished by an earlier sweep process */
        done++;
        continue;
      }
      if (start) start[run - s->runs] = nn_now_seconds();
      child_args args = {s, run, opt};
      run->pid = sweep_spawn(run_child, &args);
      if (run->pid < 0) {
        run->status = EXIT_RUNTIME;
        done++;
        continue;
      }
      running++;
    }
    if (!running) {
      if (run_signals_stop()) break;
      continue;
    }
    int wstatus;
    pid_t pid = wait(&wstatus);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    sweep_reaped(pid);
    for (size_t r = 0; r < s->n_runs; r++) {
      sweep_run *run = &s->runs[r];
      if (run->pid != pid || run->status != -1) continue;
      running--;
      run_ended(s, r, WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : EXIT_RUNTIME,
                start ? nn_now_seconds() - start[r] : NAN, opt);
      done++;
    }
  }
  free(start);
}

/* ---- under MPI: the runs spread over the ranks (cli_farm_run) */

typedef struct farm_ctx {
  sweep *s;
  const cli_options *opt;
  size_t *todo; /* owned by farm_runs: the runs not finished yet */
} farm_ctx;

static void farm_child(void *arg) {
  cli_mpi_detach(); /* the run is a process of its own, MPI-free */
  run_child(arg);
}

static pid_t farm_start(void *ctx, size_t i) {
  farm_ctx *c = ctx;
  child_args args = {c->s, &c->s->runs[c->todo[i]], c->opt};
  fflush(NULL); /* the child must not inherit unwritten output */
  return sweep_spawn(farm_child, &args);
}

static void farm_reaped(void *ctx, pid_t pid) {
  (void)ctx;
  sweep_reaped(pid);
}

static void farm_finished(void *ctx, size_t i, int status, double seconds,
                          size_t rank) {
  (void)rank;
  farm_ctx *c = ctx;
  run_ended(c->s, c->todo[i], status, seconds, c->opt);
}

/* The runs not finished yet (every rank has the same list: rank 0's) over
 * the ranks.  Collective; fails on every rank when one has no memory. */
static int farm_runs(sweep *s, const cli_options *opt, nn_error *err) {
  farm_ctx c = {s, opt, calloc(s->n_runs ? s->n_runs : 1, sizeof(size_t))};
  int status = EXIT_OK;
  if (!c.todo)
    status = EXIT_RUNTIME, nn_error_set(err, NN_ENOMEM, "out of memory");
  if ((status = cli_mpi_agree(status, err))) {
    free(c.todo);
    return status;
  }
  size_t n = 0;
  for (size_t r = 0; r < s->n_runs; r++)
    if (s->runs[r].status == -1) c.todo[n++] = r;
  const cli_farm farm = {n, opt->jobs, &c, farm_start, farm_finished,
                         farm_reaped};
  cli_farm_run(&farm);
  free(c.todo);
  return EXIT_OK;
}

static int write_csv(const sweep *s, nn_error *err) {
  char path[4200];
  snprintf(path, sizeof path, "%s/sweep.csv", s->dir);
  nn__atomic_file f;
  int rc = nn__atomic_open(&f, path, err);
  if (rc) return rc;
  for (size_t i = 0; i < s->n_axes; i++) fprintf(f.fp, "%s,", s->axes[i].key);
  fputs("best_val_accuracy,best_epoch,test_accuracy,final_train_loss,seconds,"
        "status,run\n", f.fp);
  for (size_t r = 0; r < s->n_runs; r++) {
    const sweep_run *run = &s->runs[r];
    for (size_t i = 0; i < s->n_axes; i++)
      fprintf(f.fp, "%s,", s->axes[i].values[run->idx[i]]);
    fprintf(f.fp, "%.10g,%ld,%.10g,%.10g,%.3f,%d,%s\n", run->best_val,
            run->best_epoch, run->test_acc, run->final_loss, run->seconds,
            run->status, run->name);
  }
  return nn__atomic_commit(&f, err);
}

/* Comparison charts; missing plotting is a warning, not a failure. */
static int draw_comparisons(const sweep *s, const char *name) {
  nn_plot_series *series = calloc(s->n_runs ? s->n_runs : 1, sizeof *series);
  if (!series) return 0;
  size_t n = 0;
  for (size_t pass = 0; pass < 2; pass++) {
    n = 0;
    for (size_t r = 0; r < s->n_runs; r++) {
      if (!s->runs[r].n_epochs) continue;
      series[n].label = s->runs[r].label;
      series[n].y = pass ? s->runs[r].train_loss : s->runs[r].val_acc;
      series[n].n = s->runs[r].n_epochs;
      n++;
    }
    if (!n) break;
    char png[4200], svg[4200], title[300];
    const char *stem = pass ? "sweep_train_loss" : "sweep_val_accuracy";
    snprintf(png, sizeof png, "%s/%s.png", s->dir, stem);
    snprintf(svg, sizeof svg, "%s/%s.svg", s->dir, stem);
    snprintf(title, sizeof title, "%s: %s", name,
             pass ? "training loss per epoch" : "validation accuracy per epoch");
    nn_error err;
    if (nn_plot_compare(png, svg, title, pass ? "training loss" : "validation accuracy",
                        series, n, &err)) {
      fprintf(stderr, "nnrun: warning: no comparison charts: %s\n", err.msg);
      free(series);
      return 0;
    }
  }
  free(series);
  return n > 0;
}

/* How runs rank: by best validation accuracy; failed runs and runs
 * without a number (-1) last.  The report's order and the printed best
 * both come from it. */
static double rank_key(const sweep_run *r) {
  return r->status == 0 && isfinite(r->best_val) ? r->best_val : -1;
}

static int by_val_desc(const void *a, const void *b) {
  const double vx = rank_key(*(const sweep_run *const *)a);
  const double vy = rank_key(*(const sweep_run *const *)b);
  return vx < vy ? 1 : vx > vy ? -1 : 0;
}

static int write_report(const sweep *s, const cli_options *opt, const char *name,
                        int charts, nn_error *err) {
  const sweep_run **order = malloc(s->n_runs * sizeof *order);
  if (!order) return nn_error_set(err, NN_ENOMEM, "out of memory");
  for (size_t r = 0; r < s->n_runs; r++) order[r] = &s->runs[r];
  qsort(order, s->n_runs, sizeof *order, by_val_desc);
  char path[4200];
  snprintf(path, sizeof path, "%s/report.md", s->dir);
  nn__atomic_file f;
  int rc = nn__atomic_open(&f, path, err);
  if (rc) {
    free(order);
    return rc;
  }
  FILE *o = f.fp;
  fprintf(o, "# Sweep report: %s\n\n", name);
  fprintf(o, "Config `%s`; %zu runs of", opt->config, s->n_runs);
  for (size_t i = 0; i < s->n_axes; i++) {
    fprintf(o, "%s `%s` in {", i ? " ×" : "", s->axes[i].key);
    for (size_t v = 0; v < s->axes[i].n; v++)
      fprintf(o, "%s%s", v ? ", " : "", s->axes[i].values[v]);
    fputs("}", o);
  }
  fputs(". Sorted by best validation accuracy; the model of each run's best "
        "epoch is the one tested.\n\n", o);
  fputs("| rank |", o);
  for (size_t i = 0; i < s->n_axes; i++) fprintf(o, " %s |", s->axes[i].key);
  fputs(" best val accuracy | best epoch | test accuracy | final train loss | "
        "seconds | run |\n|---|", o);
  for (size_t i = 0; i < s->n_axes; i++) fputs("---|", o);
  fputs("---|---|---|---|---|---|\n", o);
  for (size_t k = 0; k < s->n_runs; k++) {
    const sweep_run *run = order[k];
    const char *mark = k == 0 && run->status == 0 ? "**" : "";
    fprintf(o, "| %s%zu%s |", mark, k + 1, mark);
    for (size_t i = 0; i < s->n_axes; i++)
      fprintf(o, " %s%s%s |", mark, s->axes[i].values[run->idx[i]], mark);
    if (run->status == 0)
      fprintf(o, " %s%.4f%s | %ld | %.4f | %.4f | %.1f |", mark, run->best_val,
              mark, run->best_epoch, run->test_acc, run->final_loss, run->seconds);
    else
      fprintf(o, run->status < 0 ? " not finished | | | | |"
                                 : " failed (exit %d) | | | | %.1f |",
              run->status, run->seconds);
    fprintf(o, " [%s](%s/curves.png) |\n", run->name, run->name);
  }
  if (s->n_runs && order[0]->status == 0)
    fprintf(o, "\n**Best:** %s: validation accuracy %.4f at epoch %ld, test "
               "accuracy %.4f.\n", order[0]->label, order[0]->best_val,
            order[0]->best_epoch, order[0]->test_acc);
  if (charts)
    fputs("\n## Validation accuracy\n\n![validation accuracy per epoch]"
          "(sweep_val_accuracy.png)\n\n## Training loss\n\n"
          "![training loss per epoch](sweep_train_loss.png)\n", o);
  free(order);
  return nn__atomic_commit(&f, err);
}

/* The sweep's directory in s->dir, claimed like a run's (run_dir.h):
 * --resume DIR (with -o naming the same, or none); a new runs/<name>-<N>;
 * or -o DIR, refused when it holds a sweep or run already unless --force
 * (whose children then start their runs over).  Returns an exit status. */
static int claim_sweep_dir(sweep *s, const cli_options *opt, const char *name,
                           int *lock_fd, nn_error *err) {
  const char *dir = opt->resume_dir ? opt->resume_dir : opt->output_dir;
  char msg[512];
  struct stat sb;
  if (opt->resume_dir && opt->output_dir &&
      !run_dir_same(opt->resume_dir, opt->output_dir)) {
    nn_error_set(err, NN_ECONFIG, "--resume %s and -o %s name different "
                 "directories: a sweep resumes where it is", opt->resume_dir,
                 opt->output_dir);
    return EXIT_USAGE;
  }
  const int exists = dir && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode);
  const int started = exists && run_dir_started(dir);
  char mark[4200];
  snprintf(mark, sizeof mark, "%s/metrics.csv", dir ? dir : ".");
  if (opt->resume_dir && (!started || access(mark, F_OK) == 0)) {
    nn_error_set(err, NN_ECONFIG, "--resume %s: no sweep there%s", dir,
                 started ? " (it holds one run)" : "");
    return EXIT_USAGE;
  }
  if (run_dir_create(dir, name, s->dir, sizeof s->dir, msg, sizeof msg) ||
      (*lock_fd = run_dir_claim(s->dir, msg, sizeof msg)) < 0) {
    nn_error_set(err, NN_EIO, "%s", msg);
    return EXIT_RUNTIME;
  }
  if (started && !opt->resume_dir) {
    if (!opt->force) {
      nn_error_set(err, NN_ECONFIG, "-o %s: the directory already holds a "
                   "sweep or run: use --resume %s to continue it, or --force "
                   "to start it over there", dir, dir);
      return EXIT_USAGE;
    }
    if (run_dir_clear(s->dir, msg, sizeof msg)) {
      nn_error_set(err, NN_EIO, "%s", msg);
      return EXIT_RUNTIME;
    }
  }
  if (run_signals_install()) {
    nn_error_set(err, NN_EIO, "cannot install the signal handlers");
    return EXIT_RUNTIME;
  }
  return EXIT_OK;
}

int cli_sweep(const cli_options *opt) {
  nn_error err = {0};
  sweep s = {0};
  cli_run base = {0};
  int status = EXIT_OK;
  int lock_fd = -1;
  status = cli_run_setup(&base, opt, SETUP_CONFIG, &err);
  if (!status && (collect_axes(&s, opt, base.cfg, &err) || enumerate(&s, &err)))
    status = EXIT_USAGE;
  if (status) goto done;
  /* Every run's configuration is checked before anything is created, so a
   * bad value leaves no empty sweep directory behind (the checks do not
   * need the run directories). */
  if ((status = validate_runs(&s, opt, &err))) goto done;
  /* The sweep directory, claimed (by rank 0 under MPI: the other ranks
   * learn it from rank 0), then the run directories inside it. */
  if (cli_mpi_lead())
    status = claim_sweep_dir(&s, opt, nn_config_name(base.cfg), &lock_fd,
                             &err);
  if ((status = cli_mpi_agree(status, &err))) goto done;
  cli_mpi_bcast(s.dir, sizeof s.dir);
  place_runs(&s);
  /* Which runs are finished is rank 0's finding, handed to every rank:
   * the farm's task i is the i-th unfinished run on every rank, so the
   * lists must be the same even when a rank sees the directory late. */
  unsigned char *ended = calloc(s.n_runs ? s.n_runs : 1, 1);
  if (!ended)
    status = EXIT_RUNTIME, nn_error_set(&err, NN_ENOMEM, "out of memory");
  if ((status = cli_mpi_agree(status, &err))) {
    free(ended);
    goto done;
  }
  for (size_t r = 0; cli_mpi_lead() && opt->resume_dir && r < s.n_runs; r++)
    ended[r] = run_finished(s.runs[r].dir) != 0;
  cli_mpi_bcast(ended, s.n_runs);
  size_t finished = 0;
  for (size_t r = 0; opt->resume_dir && r < s.n_runs; r++) {
    sweep_run *run = &s.runs[r];
    if (ended[r]) {
      run->status = 0;
      run->seconds = NAN;
      read_results(run);
      finished++;
    } else {
      run->resume = run_dir_started(run->dir);
    }
  }
  free(ended);
  if (opt->verbosity > 0)
    fprintf(stderr, "nnrun: sweep of %zu runs, %zu at a time%s, in %s%s\n",
            s.n_runs, opt->jobs, cli_mpi_size() > 1 ? " per rank" : "", s.dir,
            finished ? " (resumed: the finished ones are kept)" : "");
  if (cli_mpi_size() > 1) {
    if ((status = farm_runs(&s, opt, &err))) goto done;
    if (!cli_mpi_lead()) goto done; /* rank 0 writes the report */
  } else {
    run_all(&s, opt);
  }
  if (run_signals_stop()) {
    fprintf(stderr, "nnrun: sweep interrupted; resume with: nnrun -c %s",
            opt->config);
    for (size_t i = 0; i < opt->n_sets; i++)
      fprintf(stderr, " --set '%s'", opt->sets[i]);
    for (size_t i = 0; i < opt->n_sweeps; i++)
      fprintf(stderr, " --sweep '%s'", opt->sweeps[i]);
    fprintf(stderr, " --resume %s\n", s.dir);
    status = 128 + run_signals_stop();
    goto done;
  }
  int charts = draw_comparisons(&s, nn_config_name(base.cfg));
  if (write_csv(&s, &err) ||
      write_report(&s, opt, nn_config_name(base.cfg), charts, &err)) {
    status = EXIT_RUNTIME;
    goto done;
  }
  size_t failed = 0, best = 0;
  for (size_t r = 0; r < s.n_runs; r++) {
    if (s.runs[r].status) failed++;
    if (rank_key(&s.runs[r]) > rank_key(&s.runs[best])) best = r;
  }
  if (rank_key(&s.runs[best]) >= 0)
    printf("best %s val_accuracy=%.4f test accuracy=%.4f report=%s/report.md\n",
           s.runs[best].label, s.runs[best].best_val, s.runs[best].test_acc, s.dir);
  if (failed) {
    nn_error_set(&err, NN_EIO, "%zu of %zu sweep runs failed", failed, s.n_runs);
    status = EXIT_RUNTIME;
  }
done:
  if (status && status < 128 && cli_mpi_lead())
    fprintf(stderr, "nnrun: %s\n", err.msg);
  if (lock_fd >= 0) close(lock_fd);
  cli_run_free(&base);
  sweep_free(&s);
  return status;
}

/* ---- for batch schedulers: one run by its number, and the report of the
 * runs finished so far (nnrun -c FILE --sweep-run I -o DIR, nnrun collect
 * DIR).  DIR/sweep.args keeps the command line that defines the sweep, so
 * collect rebuilds the same runs. */

#define SWEEP_ARGS "sweep.args"

/* DIR/sweep.args: the config (an absolute path: collect may run elsewhere)
 * and the overrides, one per line.  Every run of a job array writes the
 * same bytes, atomically. */
static int write_args(const sweep *s, const cli_options *opt, nn_error *err) {
  char config[4096], path[4200];
  if (!realpath(opt->config, config))
    return nn_error_set(err, NN_EIO, "%s: %s", opt->config, strerror(errno));
  snprintf(path, sizeof path, "%s/" SWEEP_ARGS, s->dir);
  nn__atomic_file f;
  int rc = nn__atomic_open(&f, path, err);
  if (rc) return rc;
  fprintf(f.fp, "config=%s\n", config);
  for (size_t i = 0; i < opt->n_sets; i++) fprintf(f.fp, "set=%s\n", opt->sets[i]);
  for (size_t i = 0; i < opt->n_sweeps; i++)
    fprintf(f.fp, "sweep=%s\n", opt->sweeps[i]);
  return nn__atomic_commit(&f, err);
}

/* The sweep of config and overrides in opt, its runs placed in dir. */
static int plan(sweep *s, cli_run *base, const cli_options *opt,
                const char *dir, nn_error *err) {
  int status = cli_run_setup(base, opt, SETUP_CONFIG, err);
  if (status) return status;
  if (collect_axes(s, opt, base->cfg, err) || enumerate(s, err))
    return EXIT_USAGE;
  if (!s->n_axes) {
    nn_error_set(err, NN_ECONFIG, "%s has no [sweep] section (and there is "
                 "no --sweep)", opt->config);
    return EXIT_USAGE;
  }
  snprintf(s->dir, sizeof s->dir, "%s", dir);
  place_runs(s);
  return EXIT_OK;
}

int cli_sweep_run(const cli_options *opt) {
  nn_error err = {0};
  sweep s = {0};
  cli_run base = {0};
  int status = EXIT_OK;
  char msg[512], dir[4096];
  if (!opt->output_dir || !*opt->output_dir) {
    nn_error_set(&err, NN_ECONFIG, "--sweep-run needs -o SWEEP_DIR, the same "
                                   "for every run of the sweep");
    status = EXIT_USAGE;
  } else if (opt->resume_dir) {
    nn_error_set(&err, NN_ECONFIG, "--sweep-run resumes an interrupted run "
                                   "by itself: drop --resume");
    status = EXIT_USAGE;
  }
  if (!status) status = plan(&s, &base, opt, opt->output_dir, &err);
  if (!status && opt->sweep_run > s.n_runs) {
    nn_error_set(&err, NN_ECONFIG, "--sweep-run %zu: the sweep has %zu runs "
                 "(1 to %zu)", opt->sweep_run, s.n_runs, s.n_runs);
    status = EXIT_USAGE;
  }
  if (!status && cli_mpi_lead() &&
      run_dir_create(opt->output_dir, "", dir, sizeof dir, msg, sizeof msg)) {
    nn_error_set(&err, NN_EIO, "%s", msg);
    status = EXIT_RUNTIME;
  }
  if (!status && cli_mpi_lead() && write_args(&s, opt, &err))
    status = EXIT_RUNTIME;
  if ((status = cli_mpi_agree(status, &err))) goto done;
  sweep_run *run = &s.runs[opt->sweep_run - 1];
  if (run_finished(run->dir)) {
    if (opt->verbosity > 0)
      fprintf(stderr, "nnrun: sweep run %zu (%s) has finished already: "
              "%s/summary.json\n", opt->sweep_run, run->label, run->dir);
    goto done;
  }
  const char **sets = malloc((opt->n_sets + MAX_AXES) * sizeof *sets);
  char(*buf)[400] = malloc(MAX_AXES * sizeof *buf);
  if (!sets || !buf) {
    nn_error_set(&err, NN_ENOMEM, "out of memory");
    status = EXIT_RUNTIME;
  } else {
    cli_options child;
    run_options(&s, run, opt, &child, sets, buf);
    child.verbosity = opt->verbosity;
    child.sweep_run = 0;
    /* Started before (a requeued task): it continues where it stopped. */
    if (run_dir_started(run->dir)) {
      child.resume_dir = run->dir;
      child.output_dir = NULL;
    }
    if (opt->verbosity > 0)
      fprintf(stderr, "nnrun: sweep run %zu of %zu: %s\n", opt->sweep_run,
              s.n_runs, run->label);
    status = cli_train(&child);
  }
  free(sets);
  free(buf);
  cli_run_free(&base);
  sweep_free(&s);
  return status; /* cli_train said why */
done:
  if (status && cli_mpi_lead()) fprintf(stderr, "nnrun: %s\n", err.msg);
  cli_run_free(&base);
  sweep_free(&s);
  return status;
}

/* Read DIR/sweep.args into opt; the strings go to *text (owned by the
 * caller), the arrays to opt (owned by the caller). */
static int read_args(const char *dir, cli_options *opt, char **text,
                     nn_error *err) {
  char path[4200];
  snprintf(path, sizeof path, "%s/" SWEEP_ARGS, dir);
  FILE *fp = fopen(path, "r");
  if (!fp)
    return nn_error_set(err, NN_EIO, "%s: %s (not a sweep directory of "
                        "--sweep-run runs?)", path, strerror(errno));
  size_t cap = 0, len = 0, lines = 0;
  *text = NULL;
  for (int c; (c = fgetc(fp)) != EOF;) {
    if (len + 2 > cap) {
      char *t = realloc(*text, cap = cap ? 2 * cap : 4096);
      if (!t) {
        fclose(fp);
        return nn_error_set(err, NN_ENOMEM, "out of memory");
      }
      *text = t;
    }
    (*text)[len++] = (char)c;
    lines += c == '\n';
  }
  fclose(fp);
  if (!*text) return nn_error_set(err, NN_EFORMAT, "%s is empty", path);
  (*text)[len] = '\0';
  opt->sets = calloc(lines + 1, sizeof *opt->sets);
  opt->sweeps = calloc(lines + 1, sizeof *opt->sweeps);
  if (!opt->sets || !opt->sweeps)
    return nn_error_set(err, NN_ENOMEM, "out of memory");
  for (char *line = *text, *nl; *line; line = nl + 1) {
    if (!(nl = strchr(line, '\n'))) nl = line + strlen(line) - 1;
    else *nl = '\0';
    if (!strncmp(line, "config=", 7)) opt->config = line + 7;
    else if (!strncmp(line, "set=", 4)) opt->sets[opt->n_sets++] = line + 4;
    else if (!strncmp(line, "sweep=", 6)) opt->sweeps[opt->n_sweeps++] = line + 6;
    else if (*line)
      return nn_error_set(err, NN_EFORMAT, "%s: unexpected line '%s'", path,
                          line);
  }
  if (!opt->config)
    return nn_error_set(err, NN_EFORMAT, "%s names no config", path);
  return NN_OK;
}

int cli_sweep_collect(const char *dir, int verbosity) {
  nn_error err = {0};
  sweep s = {0};
  cli_run base = {0};
  cli_options opt = {.verbosity = verbosity, .jobs = 1};
  char *text = NULL;
  int status = read_args(dir, &opt, &text, &err) ? EXIT_USAGE : EXIT_OK;
  if (!status) status = plan(&s, &base, &opt, dir, &err);
  if (status) goto done;
  size_t missing = 0;
  for (size_t r = 0; r < s.n_runs; r++) {
    sweep_run *run = &s.runs[r];
    if (!run_finished(run->dir)) {
      missing++;
      continue;
    }
    run->status = 0;
    run->seconds = NAN; /* read_results takes the run's own */
    read_results(run);
  }
  int charts = draw_comparisons(&s, nn_config_name(base.cfg));
  if (write_csv(&s, &err) ||
      write_report(&s, &opt, nn_config_name(base.cfg), charts, &err)) {
    status = EXIT_RUNTIME;
    goto done;
  }
  size_t best = 0;
  for (size_t r = 0; r < s.n_runs; r++)
    if (rank_key(&s.runs[r]) > rank_key(&s.runs[best])) best = r;
  if (rank_key(&s.runs[best]) >= 0)
    printf("best %s val_accuracy=%.4f test accuracy=%.4f report=%s/report.md\n",
           s.runs[best].label, s.runs[best].best_val, s.runs[best].test_acc,
           s.dir);
  if (missing) {
    nn_error_set(&err, NN_EIO, "%zu of %zu sweep runs have not finished "
                 "(report.md lists them)", missing, s.n_runs);
    status = EXIT_RUNTIME;
  }
done:
  if (status) fprintf(stderr, "nnrun: %s\n", err.msg);
  cli_run_free(&base);
  sweep_free(&s);
  free(opt.sets);
  free(opt.sweeps);
  free(text);
  return status;
}
