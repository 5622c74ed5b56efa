/* Checkpoints: see checkpoint.h. */
#include <config.h>

#include "checkpoint.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define META_STATE "nnrun.optimizer_state"

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

int checkpoint_save(nn_trainer *t, const char *dir, size_t epoch,
                    const char *model_name, const char *optim_name,
                    nn_error *err) {
  char path[4200], epoch_s[32], best_s[32], acc_s[40];
  size_t n, n_state, rng_size;
  long best_epoch;
  double best_acc;
  nn_param *params = nn_trainer_weights(t, &n);
  nn_param *state = nn_trainer_optim_state(t, &n_state);
  nn_param *best = nn_trainer_best(t, &n, &best_epoch, &best_acc);
  snprintf(epoch_s, sizeof epoch_s, "%zu", epoch);
  snprintf(best_s, sizeof best_s, "%ld", best_epoch);
  snprintf(acc_s, sizeof acc_s, "%.17g", best_acc); /* exact round trip */
  int rc;
  if (best_epoch == (long)epoch) {
    const char *meta[] = {"format", "nnrun", "model", model_name, "epoch",
                          epoch_s, "val_accuracy", acc_s, NULL};
    snprintf(path, sizeof path, "%s/best.safetensors", dir);
    if ((rc = nn_safetensors_save(path, best, n, NN_DTYPE_F64, meta, err)))
      return rc;
  }
  /* last: parameters, then optimizer state; RNG state as hex metadata. */
  nn_trainer_rng_state(t, NULL, &rng_size);
  nn_param *all = malloc((n + n_state) * sizeof *all);
  unsigned char *rng = malloc(rng_size);
  char *rng_hex = malloc(2 * rng_size + 1);
  size_t names_len = 1;
  for (size_t i = 0; i < n_state; i++) names_len += strlen(state[i].name) + 1;
  char *names = malloc(names_len);
  if (!all || !rng || !rng_hex || !names) {
    rc = nn_error_set(err, NN_ENOMEM, "out of memory for a checkpoint");
    goto out;
  }
  memcpy(all, params, n * sizeof *all);
  if (n_state) memcpy(all + n, state, n_state * sizeof *all); /* may be NULL */
  nn_trainer_rng_state(t, rng, &rng_size);
  for (size_t i = 0; i < rng_size; i++)
    snprintf(rng_hex + 2 * i, 3, "%02x", rng[i]);
  names[0] = '\0';
  for (size_t i = 0; i < n_state; i++) {
    if (i) strcat(names, ",");
    strcat(names, state[i].name);
  }
  const char *meta[] = {"format", "nnrun", "model", model_name, "optimizer",
                        optim_name, "epoch", epoch_s, "best_epoch", best_s,
                        "best_val_accuracy", acc_s, "rng_state", rng_hex,
                        META_STATE, names, NULL};
  snprintf(path, sizeof path, "%s/last.safetensors", dir);
  rc = nn_safetensors_save(path, all, n + n_state, NN_DTYPE_F64, meta, err);
out:
  free(all);
  free(rng);
  free(rng_hex);
  free(names);
  return rc;
}

int checkpoint_load_weights(const char *path, nn_param *params, size_t n,
                            nn_error *err) {
  nn_safetensors *f = NULL;
  int rc = nn_safetensors_open(&f, path, err);
  if (rc) return rc;
  /* A last.safetensors also holds the optimizer's state, listed in its
   * metadata as "a,b,c": those tensors are skipped. */
  const char *state = nn_safetensors_meta(f, META_STATE);
  char *names = strdup(state ? state : "");
  const char **skip = calloc(strlen(names) / 2 + 2, sizeof *skip);
  if (!names || !skip) {
    rc = nn_error_set(err, NN_ENOMEM, "out of memory");
  } else {
    size_t k = 0;
    for (char *p = names; *p; k++) {
      skip[k] = p;
      char *comma = strchr(p, ',');
      if (!comma) break;
      *comma = '\0';
      p = comma + 1;
    }
    rc = nn_safetensors_read_params(f, params, n, skip, err);
  }
  free(skip);
  free(names);
  nn_safetensors_close(f);
  return rc;
}

/* A metadata value that must be there. */
static const char *meta(const nn_safetensors *f, const char *path,
                        const char *key, nn_error *err) {
  const char *v = nn_safetensors_meta(f, key);
  if (!v) nn_error_set(err, NN_EFORMAT, "%s: not an nnrun checkpoint (no '%s')",
                       path, key);
  return v;
}

int checkpoint_resume(nn_trainer *t, const char *dir, const char *model_name,
                      const char *optim_name, size_t *epoch, nn_error *err) {
  char path[4200];
  snprintf(path, sizeof path, "%s/last.safetensors", dir);
  nn_safetensors *last = NULL, *best = NULL;
  unsigned char *rng = NULL;
  nn_param *all = NULL;
  int rc = nn_safetensors_open(&last, path, err);
  if (rc) return rc;
  const char *m, *o, *e, *be, *ba, *rh, *st;
  if (!(m = meta(last, path, "model", err)) ||
      !(o = meta(last, path, "optimizer", err)) ||
      !(e = meta(last, path, "epoch", err)) ||
      !(be = meta(last, path, "best_epoch", err)) ||
      !(ba = meta(last, path, "best_val_accuracy", err)) ||
      !(rh = meta(last, path, "rng_state", err)) ||
      !(st = meta(last, path, META_STATE, err))) {
    rc = NN_EFORMAT;
    goto out;
  }
  if (strcmp(m, model_name) || strcmp(o, optim_name)) {
    rc = nn_error_set(err, NN_EINVAL,
                      "%s was written by %s + %s; the config asks for %s + %s",
                      path, m, o, model_name, optim_name);
    goto out;
  }
  size_t n, n_state, rng_size;
  nn_param *params = nn_trainer_weights(t, &n);
  nn_param *state = nn_trainer_optim_state(t, &n_state);
  all = malloc((n + n_state + 1) * sizeof *all);
  nn_trainer_rng_state(t, NULL, &rng_size);
  rng = malloc(rng_size);
  if (!all || !rng) {
    rc = nn_error_set(err, NN_ENOMEM, "out of memory");
    goto out;
  }
  if (strlen(rh) != 2 * rng_size) {
    rc = nn_error_set(err, NN_EFORMAT, "%s: RNG state has the wrong length", path);
    goto out;
  }
  for (size_t i = 0; i < rng_size; i++) {
    int hi = hex_value(rh[2 * i]), lo = hex_value(rh[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      rc = nn_error_set(err, NN_EFORMAT, "%s: RNG state is not hex", path);
      goto out;
    }
    rng[i] = (unsigned char)(hi << 4 | lo);
  }
  memcpy(all, params, n * sizeof *all);
  if (n_state) memcpy(all + n, state, n_state * sizeof *all); /* may be NULL */
  if ((rc = nn_safetensors_read_params(last, all, n + n_state, NULL, err)) ||
      (rc = nn_trainer_set_rng_state(t, rng, rng_size, err)))
    goto out;
  char *end;
  long best_epoch = strtol(be, &end, 10);
  double best_acc = strtod(ba, NULL);
  *epoch = strtoul(e, NULL, 10);
  if (best_epoch >= 0) {
    snprintf(path, sizeof path, "%s/best.safetensors", dir);
    size_t nb;
    nn_param *bp = nn_trainer_best(t, &nb, NULL, NULL);
    if ((rc = nn_safetensors_open(&best, path, err)) ||
        (rc = nn_safetensors_read_params(best, bp, nb, NULL, err)))
      goto out;
  }
  nn_trainer_set_best(t, best_epoch, best_acc);
out:
  nn_safetensors_close(last);
  nn_safetensors_close(best);
  free(all);
  free(rng);
  return rc;
}

int checkpoint_status(int rc) {
  switch (rc) {
    case NN_OK: return EXIT_OK;
    case NN_ENOTFOUND:
    case NN_EINVAL:
    case NN_ECONFIG: return EXIT_USAGE;
    default: return EXIT_RUNTIME;
  }
}
