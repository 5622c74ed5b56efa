/* SPDX-License-Identifier: GPL-3.0-or-later */
/* summary.json: see run_summary.h. */
#include <config.h>

#include "run_summary.h"

#include "files/atomic_file.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_version.h>
#include <jansson.h>

/* JSON has no NaN or infinity (a diverged run has them): those become null. */
static json_t *number(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *option_value(const nn_option *opt, const nn_value *v) {
  switch (opt->type) {
    case NN_OPT_INT: return json_integer((json_int_t)v->i);
    case NN_OPT_REAL: return number(v->r);
    case NN_OPT_BOOL: return json_boolean(v->b);
    case NN_OPT_STRING: return json_string(v->s);
  }
  return json_null();
}

static json_t *config_json(const run_summary *s) {
  json_t *cfg = json_object();
  for (size_t k = 0; k < s->n_sections; k++) {
    const run_section *sec = &s->sections[k];
    /* A section listed twice (a plugin's keys, then the core's keys of
     * the same section) is one object. */
    json_t *o = json_object_get(cfg, sec->name);
    if (!o) {
      o = json_object();
      json_object_set_new(cfg, sec->name, o);
    }
    if (sec->type) json_object_set_new(o, "type", json_string(sec->type));
    for (size_t i = 0; sec->table && sec->table[i].key; i++)
      json_object_set_new(o, sec->table[i].key,
                          option_value(&sec->table[i], &sec->values[i]));
  }
  return cfg;
}

static json_t *epochs_json(const run_summary *s) {
  json_t *a = json_array();
  for (size_t e = 0; e < s->n_epochs; e++) {
    const nn_epoch_metrics *m = &s->metrics[e];
    json_array_append_new(
        a, json_pack("{s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "epoch",
                     (json_int_t)m->epoch, "train_loss", number(m->train_loss),
                     "train_accuracy", number(m->train_accuracy), "val_loss",
                     number(m->val_loss), "val_accuracy", number(m->val_accuracy),
                     "train_seconds", number(m->train_seconds), "val_seconds",
                     number(m->val_seconds), "lr", number(m->lr)));
  }
  return a;
}

static json_t *plugin_json(const nn_plugin *p, const char *file) {
  if (!p) /* the sequential model is libnn's */
    return json_pack("{s:s, s:s, s:s}", "name", "sequential", "version",
                     nn_version_string(), "file", file);
  return json_pack("{s:s, s:s, s:s}", "name", p->name, "version", p->version,
                   "file", file);
}

static json_t *layers_json(const run_summary *s) {
  json_t *a = json_array();
  for (size_t i = 0; i < s->n_layers; i++)
    json_array_append_new(a, plugin_json(nn_loaded_desc(s->layers[i]),
                                         nn_loaded_path(s->layers[i])));
  return a;
}

int run_summary_write(const char *path, const run_summary *s, nn_error *err) {
  double train_total = 0;
  for (size_t e = 0; e < s->n_epochs; e++) train_total += s->metrics[e].train_seconds;
  char abi[32];
  snprintf(abi, sizeof abi, "%u.%u", NN_ABI_MAJOR, NN_ABI_MINOR);
  double best_val = s->best_epoch >= 0 && (size_t)s->best_epoch < s->n_epochs
                        ? s->metrics[s->best_epoch].val_accuracy
                        : NAN;
  json_t *root = json_pack(
      "{s:s, s:o, s:I, s:o, s:I, s:o, s:{s:o, s:o}, s:{s:o, s:o, s:o}, "
      "s:{s:o, s:o, s:o}, s:{s:s, s:s, s:s, s:s}}",
      "config_file", s->config_path, "config", config_json(s), "seed",
      (json_int_t)s->seed, "epochs", epochs_json(s), "best_epoch",
      (json_int_t)s->best_epoch, "best_val_accuracy", number(best_val), "test",
      "loss", number(s->test_loss), "accuracy", number(s->test_accuracy),
      "timings", "load_seconds", number(s->load_seconds), "train_seconds",
      number(train_total), "total_seconds", number(s->total_seconds),
      "plugins", "model", plugin_json(s->model, s->model_file), "optimizer",
      plugin_json(s->optim, s->optim_file), "layers", layers_json(s),
      "versions", "nnrun",
      nn_version_string(), "plugin_abi", abi, "gsl", GSL_VERSION, "cblas",
      nn_cblas_name());
  json_t *stopped = s->stop_reason
                        ? json_pack("{s:s, s:I, s:I}", "reason",
                                    s->stop_reason, "after_epoch",
                                    (json_int_t)s->stopped_after, "patience",
                                    (json_int_t)s->patience)
                        : json_null();
  if (root && s->schedule &&
      json_object_set_new(json_object_get(root, "plugins"), "schedule",
                          plugin_json(nn_loaded_desc(s->schedule),
                                      nn_loaded_path(s->schedule)))) {
    json_decref(root);
    root = NULL;
  }
  if (root &&
      (json_object_set_new(root, "stopped", stopped) ||
       json_object_set_new(root, "status", json_string(s->status)))) {
    json_decref(root);
    root = NULL;
    stopped = NULL;
  }
  if (!root) {
    json_decref(stopped); /* NULL-safe; set_new takes it when root is */
    return nn_error_set(err, NN_ENOMEM, "cannot build %s", path);
  }
  /* JSON_REAL_PRECISION(17): every double survives the round trip. */
  char *text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
  json_decref(root);
  if (!text) return nn_error_set(err, NN_ENOMEM, "cannot format %s", path);
  nn__atomic_file f;
  int rc = nn__atomic_open(&f, path, err);
  if (rc == NN_OK) {
    fputs(text, f.fp);
    fputc('\n', f.fp);
    rc = nn__atomic_commit(&f, err);
  }
  free(text);
  return rc;
}
