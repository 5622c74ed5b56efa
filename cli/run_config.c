/* SPDX-License-Identifier: GPL-3.0-or-later */
/* A run's configuration as text: see run_config.h. */
#include <config.h>

#include "run_config.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growing string; NULL text after a failed allocation. */
typedef struct text {
  char *s; /* owned */
  size_t len, cap;
  int failed;
} text;

static void add(text *t, const char *fmt, ...) {
  if (t->failed) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0,
                      fmt, ap);
    va_end(ap);
    if (n < 0) {
      t->failed = 1;
      return;
    }
    if (t->s && t->len + (size_t)n < t->cap) {
      t->len += (size_t)n;
      return;
    }
    size_t cap = 2 * (t->cap + (size_t)n) + 64;
    char *s = realloc(t->s, cap);
    if (!s) {
      t->failed = 1;
      return;
    }
    t->s = s;
    t->cap = cap;
  }
}

/* The shortest %g form of v that reads back as v. */
static void real_text(double v, char *buf, size_t size) {
  for (int digits = 15; digits <= 17; digits++) {
    snprintf(buf, size, "%.*g", digits, v);
    if (strtod(buf, NULL) == v) return;
  }
}

static void add_section(text *t, const char *name, const char *type,
                        const nn_option *table, const nn_value *values) {
  if (type) add(t, "%s.type=%s\n", name, type);
  for (size_t i = 0; table && table[i].key; i++) {
    const nn_value *v = &values[i];
    /* The results do not depend on it, and it is resolved per machine (and
     * per sweep -j): recorded, it would make two runs' checkpoints differ
     * where their numbers do not. */
    if (!strcmp(name, "train") && !strcmp(table[i].key, "threads")) continue;
    char real[40];
    switch (table[i].type) {
      case NN_OPT_INT:
        add(t, "%s.%s=%" PRId64 "\n", name, table[i].key, v->i);
        break;
      case NN_OPT_REAL:
        real_text(v->r, real, sizeof real);
        add(t, "%s.%s=%s\n", name, table[i].key, real);
        break;
      case NN_OPT_BOOL:
        add(t, "%s.%s=%s\n", name, table[i].key, v->b ? "true" : "false");
        break;
      case NN_OPT_STRING:
        add(t, "%s.%s=%s\n", name, table[i].key, v->s ? v->s : "");
        break;
    }
  }
}

char *run_config_text(const cli_run *r) {
  text t = {0};
  add_section(&t, "data", NULL, cli_data_options, r->data_v);
  add_section(&t, "train", NULL, cli_train_options, r->train_v);
  const nn_plugin *md = r->model.loaded ? nn_loaded_desc(r->model.loaded)
                                        : NULL;
  add_section(&t, "model", cli_model_name(r), md ? md->options : NULL,
              r->model.values);
  const char *init = nn_config_get(r->cfg, "model", "init_from", NULL);
  if (init) add(&t, "model.init_from=%s\n", init);
  if (r->n_layers) {
    add(&t, "model.layers=");
    for (size_t i = 0; i < r->n_layers; i++)
      add(&t, "%s%s", i ? "," : "", r->layer_specs[i].name);
    add(&t, "\n");
  }
  const nn_plugin *od = nn_loaded_desc(r->optim.loaded);
  add_section(&t, "optimizer", od->name, od->options, r->optim.values);
  for (size_t i = 0; i < r->n_layers; i++) {
    const nn_plugin *ld = nn_loaded_desc(r->layers[i].loaded);
    char name[300];
    snprintf(name, sizeof name, "layer %s", r->layer_specs[i].name);
    add_section(&t, name, ld->name, ld->options, r->layers[i].values);
  }
  /* A schedule changes the numbers from its first epoch on: a run resumed
   * with another one would not be the run it continues.  Without one the
   * text is what it was, so those runs' checkpoints keep their bytes. */
  if (r->schedule.loaded) {
    const nn_plugin *sd = nn_loaded_desc(r->schedule.loaded);
    add_section(&t, "schedule", sd->name, sd->options, r->schedule.values);
    add_section(&t, "schedule", NULL, nn_warmup_options, r->warmup_v);
  }
  if (t.failed || !t.s) {
    free(t.s);
    return NULL;
  }
  return t.s;
}

int run_config_may_differ(const char *key) {
  /* train.patience, like train.epochs, moves only where the run ends. */
  static const char *const keys[] = {"train.epochs", "train.threads",
                                     "train.patience", NULL};
  for (const char *const *k = keys; *k; k++)
    if (!strcmp(key, *k)) return 1;
  return 0;
}

/* The value of key in a record (a pointer into it, up to the line's end),
 * or NULL. */
static const char *find(const char *rec, const char *key, size_t key_len,
                        size_t *value_len) {
  for (const char *line = rec; line && *line;) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    if (len > key_len && !strncmp(line, key, key_len) && line[key_len] == '=') {
      *value_len = len - key_len - 1;
      return line + key_len + 1;
    }
    line = end ? end + 1 : NULL;
  }
  return NULL;
}

/* Report a's keys that b lacks or holds otherwise; with `a_is_run`, a is
 * the run's record, else the one given now (then only keys the run lacks
 * are reported: the others were when a was the run's). */
static int compare(text *t, const char *a, const char *b, int a_is_run) {
  int n = 0;
  for (const char *line = a; line && *line;) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    const char *eq = memchr(line, '=', len);
    if (eq) {
      size_t key_len = (size_t)(eq - line), a_len = len - key_len - 1, b_len;
      const char *bv = find(b, line, key_len, &b_len);
      char key[400];
      snprintf(key, sizeof key, "%.*s", (int)key_len, line);
      if (!run_config_may_differ(key) &&
          (!bv || (a_is_run && (a_len != b_len || memcmp(eq + 1, bv, a_len))))) {
        n++;
        if (!bv && a_is_run)
          add(t, "%s: %.*s in the run, not set now\n", key, (int)a_len, eq + 1);
        else if (!bv)
          add(t, "%s: not set in the run, %.*s now\n", key, (int)a_len, eq + 1);
        else
          add(t, "%s: %.*s in the run, %.*s now\n", key, (int)a_len, eq + 1,
              (int)b_len, bv);
      }
    }
    line = end ? end + 1 : NULL;
  }
  return n;
}

int run_config_diff(const char *run, const char *now, char **report) {
  text t = {0};
  int n = compare(&t, run, now, 1) + compare(&t, now, run, 0);
  *report = NULL;
  if (t.failed) {
    free(t.s);
    return -1;
  }
  if (n) *report = t.s;
  else free(t.s);
  return n;
}
