/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Checkpoints: see checkpoint.h. */
#include <config.h>

#include "checkpoint.h"
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gsl/gsl_rng.h>

#define META_STATE "nnrun.optimizer_state"
/* The schedule's state tensors, when it has any (absent otherwise, as in
 * checkpoints of runs without a schedule). */
#define META_SCHEDULE "nnrun.schedule_state"
#define META_BEST_HASH "best_fnv1a64"
#define META_CONFIG "config"
/* Inside an epoch: its batches done, and the sums of their metrics. */
#define META_BATCH "batch"
#define META_LOSS_SUM "batch_loss_sum"
#define META_HITS "batch_hits"
#define META_SEEN "batch_seen"
#define META_SECONDS "batch_seconds"

/* ---------------------------------------------------------------- hashing */

/* 64-bit FNV-1a of a file's bytes. */
static int file_fnv1a(const char *path, uint64_t *out, nn_error *err) {
  FILE *fp = fopen(path, "rb");
  if (!fp)
    return nn_error_set(err, errno == ENOENT ? NN_ENOTFOUND : NN_EIO,
                        "cannot read %s: %s", path, strerror(errno));
  uint64_t h = 0xcbf29ce484222325u;
  unsigned char buf[1 << 16];
  size_t got;
  while ((got = fread(buf, 1, sizeof buf, fp)) > 0)
    for (size_t i = 0; i < got; i++) {
      h ^= buf[i];
      h *= 0x100000001b3u;
    }
  int bad = ferror(fp);
  fclose(fp);
  if (bad) return nn_error_set(err, NN_EIO, "cannot read %s", path);
  *out = h;
  return NN_OK;
}

/* ------------------------------------------------- metadata, read strictly */

/* A metadata value that must be there. */
static int need(const nn_safetensors *f, const char *path, const char *key,
                const char **out, nn_error *err) {
  *out = nn_safetensors_meta(f, key);
  if (!*out)
    return nn_error_set(err, NN_EFORMAT,
                        "%s: not an nnrun checkpoint (no metadata '%s')", path,
                        key);
  return NN_OK;
}

/* A field that does not hold what it must: the file, the field, its value
 * (cut short) and what was expected. */
static int bad_field(nn_error *err, const char *path, const char *key,
                     const char *value, const char *expected) {
  return nn_error_set(err, NN_EFORMAT,
                      "%s: metadata '%s' is \"%.40s%s\"; expected %s", path,
                      key, value, strlen(value) > 40 ? "..." : "", expected);
}

/* An epoch number as the writer prints it: decimal digits, no sign, no
 * leading zero, at most LONG_MAX. */
static int parse_epoch(const char *s, long *out) {
  if (!*s || (s[0] == '0' && s[1])) return -1;
  long v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    int d = *s - '0';
    if (v > (LONG_MAX - d) / 10) return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

/* An accuracy: a whole number string, finite, in [0, 1]. */
static int parse_accuracy(const char *s, double *out) {
  if (!*s || !strchr("0123456789.", s[0])) return -1;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (*end || errno || !isfinite(v) || v < 0 || v > 1) return -1;
  *out = v;
  return 0;
}

/* A hash as the writer prints it: 16 lowercase hex digits. */
static int parse_hash(const char *s, uint64_t *out) {
  uint64_t v = 0;
  size_t i = 0;
  for (; s[i] && i < 16; i++) {
    const char *d = strchr("0123456789abcdef", s[i]);
    if (!d) return -1;
    v = v << 4 | (uint64_t)(d - "0123456789abcdef");
  }
  if (i != 16 || s[i]) return -1;
  *out = v;
  return 0;
}

/* A count or sum of a mid-epoch position: a finite number >= 0. */
static int parse_sum(const char *s, double *out) {
  if (!*s || !strchr("0123456789.", s[0])) return -1;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (*end || errno || !isfinite(v) || v < 0) return -1;
  *out = v;
  return 0;
}

/* What last.safetensors' metadata says, checked field by field. */
typedef struct last_meta {
  const char *model, *optimizer, *state_names, *rng_hex; /* owned by the file */
  long epoch, best_epoch;   /* epoch: the last finished (-1: none, only
                               inside epoch 0); best_epoch: -1 for none */
  double best_val_accuracy;
  uint64_t best_fnv1a;      /* when best_epoch >= 0 */
  nn_train_position pos;    /* where the run goes on */
} last_meta;

/* The position fields of a checkpoint taken inside epoch m->epoch + 1. */
static int read_position(const nn_safetensors *f, const char *path,
                         last_meta *m, nn_error *err) {
  m->pos = (nn_train_position){.epoch = (size_t)(m->epoch + 1)};
  const char *batch = nn_safetensors_meta(f, META_BATCH);
  if (!batch) return NN_OK; /* taken at the end of an epoch */
  const char *keys[] = {META_LOSS_SUM, META_HITS, META_SEEN, META_SECONDS};
  double v[4];
  long b;
  if (parse_epoch(batch, &b) || b < 1)
    return bad_field(err, path, META_BATCH, batch, "a batch count >= 1");
  for (size_t i = 0; i < 4; i++) {
    const char *s;
    int rc = need(f, path, keys[i], &s, err);
    if (rc) return rc;
    if (parse_sum(s, &v[i]))
      return bad_field(err, path, keys[i], s, "a finite number >= 0");
  }
  if (v[1] != (size_t)v[1] || v[2] != (size_t)v[2] || v[1] > v[2])
    return nn_error_set(err, NN_EFORMAT,
                        "%s: metadata '" META_HITS "' and '" META_SEEN
                        "' must be whole numbers, hits <= examples",
                        path);
  m->pos.batch = (size_t)b;
  m->pos.loss_sum = v[0];
  m->pos.hits = (size_t)v[1];
  m->pos.seen = (size_t)v[2];
  m->pos.train_seconds = v[3];
  return NN_OK;
}

static int read_last_meta(const nn_safetensors *f, const char *path,
                          last_meta *m, nn_error *err) {
  const char *format, *epoch, *best_epoch, *best_acc, *hash;
  int rc;
  if ((rc = need(f, path, "format", &format, err)) ||
      (rc = need(f, path, "model", &m->model, err)) ||
      (rc = need(f, path, "optimizer", &m->optimizer, err)) ||
      (rc = need(f, path, "epoch", &epoch, err)) ||
      (rc = need(f, path, "best_epoch", &best_epoch, err)) ||
      (rc = need(f, path, "best_val_accuracy", &best_acc, err)) ||
      (rc = need(f, path, "rng_state", &m->rng_hex, err)) ||
      (rc = need(f, path, META_STATE, &m->state_names, err)))
    return rc;
  if (strcmp(format, "nnrun"))
    return bad_field(err, path, "format", format, "\"nnrun\"");
  /* -1: inside the first epoch, which has a position (read_position). */
  if (!strcmp(epoch, "-1") && nn_safetensors_meta(f, META_BATCH))
    m->epoch = -1;
  else if (parse_epoch(epoch, &m->epoch))
    return bad_field(err, path, "epoch", epoch, "an epoch number (0, 1, 2, ...)");
  if ((rc = read_position(f, path, m, err))) return rc;
  if (!strcmp(best_epoch, "-1"))
    m->best_epoch = -1;
  else if (parse_epoch(best_epoch, &m->best_epoch))
    return bad_field(err, path, "best_epoch", best_epoch,
                     "an epoch number, or -1 for none");
  if (m->best_epoch > m->epoch)
    return nn_error_set(err, NN_EFORMAT,
                        "%s: metadata 'best_epoch' is %ld, after the "
                        "checkpoint's epoch %ld",
                        path, m->best_epoch, m->epoch);
  if (parse_accuracy(best_acc, &m->best_val_accuracy))
    return bad_field(err, path, "best_val_accuracy", best_acc,
                     "a finite accuracy in [0, 1]");
  m->best_fnv1a = 0;
  if (m->best_epoch >= 0) {
    if (!(hash = nn_safetensors_meta(f, META_BEST_HASH)))
      return nn_error_set(err, NN_EFORMAT,
                          "%s: no metadata '" META_BEST_HASH "' (the hash of "
                          "the best.safetensors it goes with): damaged, or "
                          "written by an older nnrun",
                          path);
    if (parse_hash(hash, &m->best_fnv1a))
      return bad_field(err, path, META_BEST_HASH, hash, "16 hex digits");
  }
  return NN_OK;
}

/* What best.safetensors' metadata says. */
typedef struct best_meta {
  const char *model; /* owned by the file */
  long epoch;
  double val_accuracy;
} best_meta;

static int read_best_meta(const nn_safetensors *f, const char *path,
                          best_meta *m, nn_error *err) {
  const char *format, *epoch, *acc;
  int rc;
  if ((rc = need(f, path, "format", &format, err)) ||
      (rc = need(f, path, "model", &m->model, err)) ||
      (rc = need(f, path, "epoch", &epoch, err)) ||
      (rc = need(f, path, "val_accuracy", &acc, err)))
    return rc;
  if (strcmp(format, "nnrun"))
    return bad_field(err, path, "format", format, "\"nnrun\"");
  if (parse_epoch(epoch, &m->epoch))
    return bad_field(err, path, "epoch", epoch, "an epoch number (0, 1, 2, ...)");
  if (parse_accuracy(acc, &m->val_accuracy))
    return bad_field(err, path, "val_accuracy", acc,
                     "a finite accuracy in [0, 1]");
  return NN_OK;
}

/* ---------------------------------------------------------- RNG state */

/* GSL's MT19937 state (gsl/rng/mt.c), the trainer's generator: 624 words
 * of 32 bits and the position of the next one. */
typedef struct mt19937_state {
  unsigned long mt[624];
  int mti;
} mt19937_state;

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Decode rng_state into size bytes and check that GSL can draw from it:
 * a position within the block, 32-bit words, and not the all-zero state
 * (from which MT19937 draws only zeros, for ever). */
static int read_rng(const char *hex, const char *path, unsigned char *out,
                    size_t size, nn_error *err) {
  if (strlen(hex) != 2 * size)
    return nn_error_set(err, NN_EFORMAT,
                        "%s: metadata 'rng_state' has %zu hex digits; "
                        "expected %zu (the state of the trainer's RNG)",
                        path, strlen(hex), 2 * size);
  for (size_t i = 0; i < size; i++) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return nn_error_set(err, NN_EFORMAT,
                          "%s: metadata 'rng_state' is not lowercase hex "
                          "(character %zu)",
                          path, hi < 0 ? 2 * i + 1 : 2 * i + 2);
    out[i] = (unsigned char)(hi << 4 | lo);
  }
  /* The layout is GSL's, for MT19937 only: another generator gets the
   * length check alone. */
  if (size != sizeof(mt19937_state) || gsl_rng_mt19937->size != size)
    return NN_OK;
  mt19937_state s;
  memcpy(&s, out, sizeof s);
  if (s.mti < 0 || s.mti > 624)
    return nn_error_set(err, NN_EFORMAT,
                        "%s: metadata 'rng_state' puts MT19937 at word %d; "
                        "expected 0..624",
                        path, s.mti);
  int zero = (s.mt[0] & 0x80000000UL) == 0;
  for (size_t i = 0; i < 624; i++) {
    if (s.mt[i] > 0xffffffffUL)
      return nn_error_set(err, NN_EFORMAT,
                          "%s: metadata 'rng_state': MT19937 word %zu has "
                          "more than 32 bits",
                          path, i);
    if (i > 0 && s.mt[i]) zero = 0;
  }
  if (zero)
    return nn_error_set(err, NN_EFORMAT,
                        "%s: metadata 'rng_state' is the all-zero MT19937 "
                        "state, which draws only zeros",
                        path);
  return NN_OK;
}

/* ------------------------------------------------- best against last */

/* Check best_path against last's record of it.  Either it is the file
 * last records (same hash and epoch), or it is exactly one epoch ahead of
 * last with a better accuracy: the run was killed after writing best and
 * before writing last.  *found receives the epoch and hash of what is
 * there ({-1, 0}: no file); *ahead whether it is the second case; *out (if
 * not NULL) the opened file, owned by the caller. */
static int match_best(const char *best_path, const char *last_path,
                      const last_meta *lm, checkpoint_best *found, int *ahead,
                      nn_safetensors **out, nn_error *err) {
  nn_safetensors *f = NULL;
  best_meta bm;
  *found = (checkpoint_best){-1, 0};
  *ahead = 0;
  if (out) *out = NULL;
  int rc = file_fnv1a(best_path, &found->fnv1a, err);
  if (rc == NN_ENOTFOUND) {
    if (lm->best_epoch < 0) return NN_OK;
    return nn_error_set(err, NN_EFORMAT,
                        "%s records best epoch %ld, but %s is missing",
                        last_path, lm->best_epoch, best_path);
  }
  if (rc || (rc = nn_safetensors_open(&f, best_path, err)) ||
      (rc = read_best_meta(f, best_path, &bm, err)))
    goto out;
  found->epoch = bm.epoch;
  if (strcmp(bm.model, lm->model)) {
    rc = nn_error_set(err, NN_EFORMAT,
                      "%s was written by model %s, %s by model %s: not one "
                      "run's checkpoints",
                      best_path, bm.model, last_path, lm->model);
  } else if (lm->best_epoch >= 0 && found->fnv1a == lm->best_fnv1a) {
    if (bm.epoch != lm->best_epoch || bm.val_accuracy != lm->best_val_accuracy)
      rc = nn_error_set(err, NN_EFORMAT,
                        "%s: metadata 'best_epoch' and 'best_val_accuracy' "
                        "(%ld, %.17g) disagree with %s, the file they record "
                        "(epoch %ld, %.17g)",
                        last_path, lm->best_epoch, lm->best_val_accuracy,
                        best_path, bm.epoch, bm.val_accuracy);
  } else if (bm.epoch == lm->epoch + 1 &&
             (lm->best_epoch < 0 || bm.val_accuracy > lm->best_val_accuracy)) {
    *ahead = 1;
  } else if (lm->best_epoch < 0) {
    rc = nn_error_set(err, NN_EFORMAT,
                      "%s records no best epoch, but %s holds epoch %ld",
                      last_path, best_path, bm.epoch);
  } else {
    rc = nn_error_set(err, NN_EFORMAT,
                      "%s (epoch %ld, FNV-1a %016" PRIx64
                      ") is not the best epoch %s records (epoch %ld, "
                      "metadata '" META_BEST_HASH "' %016" PRIx64
                      "): damaged, or from another run",
                      best_path, bm.epoch, found->fnv1a, last_path,
                      lm->best_epoch, lm->best_fnv1a);
  }
out:
  if (rc || !out)
    nn_safetensors_close(f);
  else
    *out = f;
  return rc;
}

/* ------------------------------------------------------------- saving */

/* best.safetensors: the best epoch's weights. */
static int save_best(nn_trainer *t, const char *path, size_t epoch,
                     const char *model_name, checkpoint_best *best,
                     nn_error *err) {
  char epoch_s[32], acc_s[40];
  size_t n;
  double acc;
  nn_param *params = nn_trainer_best(t, &n, NULL, &acc);
  snprintf(epoch_s, sizeof epoch_s, "%zu", epoch);
  snprintf(acc_s, sizeof acc_s, "%.17g", acc); /* exact round trip */
  const char *meta[] = {"format", "nnrun", "model", model_name, "epoch",
                        epoch_s, "val_accuracy", acc_s, NULL};
  int rc = nn_safetensors_save(path, params, n, NN_DTYPE_F64, meta, err);
  /* The hash of the bytes as they are on disk now: last records it. */
  if (!rc) rc = file_fnv1a(path, &best->fnv1a, err);
  best->epoch = rc ? -1 : (long)epoch;
  return rc;
}

int checkpoint_save(nn_trainer *t, const char *dir,
                    const nn_train_position *pos, const char *model_name,
                    const char *optim_name, const char *config,
                    checkpoint_best *best, nn_error *err) {
  char path[4200], epoch_s[32], best_s[32], acc_s[40], hash_s[20];
  char batch_s[32], loss_s[40], hits_s[32], seen_s[32], seconds_s[40];
  const int inside = pos->batch > 0;
  const long epoch = (long)pos->epoch - 1; /* the last finished */
  size_t n, n_state, rng_size;
  long best_epoch;
  double best_acc;
  nn_param *params = nn_trainer_weights(t, &n);
  nn_param *state = nn_trainer_optim_state(t, &n_state);
  size_t n_sched;
  nn_param *sched = nn_trainer_schedule_state(t, &n_sched);
  nn_trainer_best(t, &n, &best_epoch, &best_acc);
  int rc;
  snprintf(path, sizeof path, "%s/best.safetensors", dir);
  if (!inside && best_epoch == epoch &&
      (rc = save_best(t, path, (size_t)epoch, model_name, best, err)))
    return rc;
  /* Inside the epoch after a best.safetensors that a run killed while
   * saving wrote ahead of its last.safetensors: the file stays ahead, as
   * checkpoint_resume accepts (a hash of 0 names no file). */
  const int ahead = inside && best->epoch == (long)pos->epoch &&
                    best->epoch > best_epoch;
  if (best->epoch != best_epoch && !ahead)
    return nn_error_set(err, NN_EFORMAT,
                        "%s holds epoch %ld, but the run's best epoch is %ld: "
                        "the resumed run did not repeat the interrupted one "
                        "(was the configuration changed?)",
                        path, best->epoch, best_epoch);
  snprintf(epoch_s, sizeof epoch_s, "%ld", epoch);
  snprintf(best_s, sizeof best_s, "%ld", best_epoch);
  snprintf(acc_s, sizeof acc_s, "%.17g", best_acc); /* exact round trip */
  snprintf(hash_s, sizeof hash_s, "%016" PRIx64, ahead ? 0 : best->fnv1a);
  snprintf(batch_s, sizeof batch_s, "%zu", pos->batch);
  snprintf(loss_s, sizeof loss_s, "%.17g", pos->loss_sum);
  snprintf(hits_s, sizeof hits_s, "%zu", pos->hits);
  snprintf(seen_s, sizeof seen_s, "%zu", pos->seen);
  snprintf(seconds_s, sizeof seconds_s, "%.17g", pos->train_seconds);
  /* last: parameters, then optimizer state, then schedule state; RNG state
   * as hex metadata. */
  nn_trainer_rng_state(t, NULL, &rng_size);
  nn_param *all = malloc((n + n_state + n_sched) * sizeof *all);
  unsigned char *rng = malloc(rng_size);
  char *rng_hex = malloc(2 * rng_size + 1);
  size_t names_len = 1, sched_len = 1;
  for (size_t i = 0; i < n_state; i++) names_len += strlen(state[i].name) + 1;
  for (size_t i = 0; i < n_sched; i++) sched_len += strlen(sched[i].name) + 1;
  char *names = malloc(names_len);
  char *sched_names = malloc(sched_len);
  if (!all || !rng || !rng_hex || !names || !sched_names) {
    rc = nn_error_set(err, NN_ENOMEM, "out of memory for a checkpoint");
    goto out;
  }
  memcpy(all, params, n * sizeof *all);
  if (n_state) memcpy(all + n, state, n_state * sizeof *all); /* may be NULL */
  if (n_sched) memcpy(all + n + n_state, sched, n_sched * sizeof *all);
  nn_trainer_rng_state(t, rng, &rng_size);
  for (size_t i = 0; i < rng_size; i++)
    snprintf(rng_hex + 2 * i, 3, "%02x", rng[i]);
  names[0] = '\0';
  for (size_t i = 0; i < n_state; i++) {
    if (i) strcat(names, ",");
    strcat(names, state[i].name);
  }
  sched_names[0] = '\0';
  for (size_t i = 0; i < n_sched; i++) {
    if (i) strcat(sched_names, ",");
    strcat(sched_names, sched[i].name);
  }
  /* The optional fields go last: each missing one ends the list. */
  const char *opt[][2] = {
      {best_epoch >= 0 ? META_BEST_HASH : NULL, hash_s},
      {config ? META_CONFIG : NULL, config},
      {inside ? META_BATCH : NULL, batch_s}, {META_LOSS_SUM, loss_s},
      {META_HITS, hits_s}, {META_SEEN, seen_s}, {META_SECONDS, seconds_s}};
  const char *meta[16 + 2 + 2 * 7 + 1] = {
      "format", "nnrun", "model", model_name, "optimizer", optim_name,
      "epoch", epoch_s, "best_epoch", best_s, "best_val_accuracy", acc_s,
      "rng_state", rng_hex, META_STATE, names};
  size_t k = 16;
  if (n_sched) {
    meta[k++] = META_SCHEDULE;
    meta[k++] = sched_names;
  }
  for (size_t i = 0; i < sizeof opt / sizeof opt[0]; i++) {
    if (!opt[i][0] && i < 3) continue;
    if (i >= 3 && !inside) break;
    meta[k++] = opt[i][0];
    meta[k++] = opt[i][1];
  }
  meta[k] = NULL;
  snprintf(path, sizeof path, "%s/last.safetensors", dir);
  rc = nn_safetensors_save(path, all, n + n_state + n_sched, NN_DTYPE_F64,
                           meta, err);
out:
  free(sched_names);
  free(all);
  free(rng);
  free(rng_hex);
  free(names);
  return rc;
}

/* ------------------------------------------------------------ loading */

int checkpoint_load_weights(const char *path, nn_param *params, size_t n,
                            nn_error *err) {
  nn_safetensors *f = NULL;
  int rc = nn_safetensors_open(&f, path, err);
  if (rc) return rc;
  /* A last.safetensors also holds the optimizer's state and the
   * schedule's, listed in its metadata as "a,b,c": those tensors are
   * skipped. */
  const char *state = nn_safetensors_meta(f, META_STATE);
  const char *sched = nn_safetensors_meta(f, META_SCHEDULE);
  state = state ? state : "";
  sched = sched ? sched : "";
  char *names = malloc(strlen(state) + strlen(sched) + 2);
  if (names)
    snprintf(names, strlen(state) + strlen(sched) + 2, "%s%s%s", state,
             *state && *sched ? "," : "", sched);
  /* One entry per comma-separated name, empty ones included (",," is
   * three), and the NULL that ends the list. */
  size_t n_names = 1;
  for (const char *c = names; c && *c; c++) n_names += *c == ',';
  const char **skip = calloc(n_names + 1, sizeof *skip);
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

int checkpoint_resume(nn_trainer *t, const char *dir, const char *model_name,
                      const char *optim_name, nn_train_position *pos,
                      checkpoint_best *best, nn_error *err) {
  char path[4200], best_path[4200];
  snprintf(path, sizeof path, "%s/last.safetensors", dir);
  snprintf(best_path, sizeof best_path, "%s/best.safetensors", dir);
  nn_safetensors *last = NULL, *bestf = NULL;
  unsigned char *rng = NULL;
  nn_param *all = NULL;
  last_meta lm;
  int ahead = 0;
  int rc = nn_safetensors_open(&last, path, err);
  if (rc) return rc;
  if ((rc = read_last_meta(last, path, &lm, err))) goto out;
  if (strcmp(lm.model, model_name) || strcmp(lm.optimizer, optim_name)) {
    rc = nn_error_set(err, NN_EINVAL,
                      "%s was written by %s + %s; the config asks for %s + %s",
                      path, lm.model, lm.optimizer, model_name, optim_name);
    goto out;
  }
  size_t n, n_state, n_sched, rng_size;
  nn_param *params = nn_trainer_weights(t, &n);
  nn_param *state = nn_trainer_optim_state(t, &n_state);
  nn_param *sched = nn_trainer_schedule_state(t, &n_sched);
  all = malloc((n + n_state + n_sched + 1) * sizeof *all);
  nn_trainer_rng_state(t, NULL, &rng_size);
  rng = malloc(rng_size);
  if (!all || !rng) {
    rc = nn_error_set(err, NN_ENOMEM, "out of memory");
    goto out;
  }
  if ((rc = read_rng(lm.rng_hex, path, rng, rng_size, err)) ||
      (rc = match_best(best_path, path, &lm, best, &ahead, &bestf, err)))
    goto out;
  /* Everything is checked: now the trainer takes it. */
  memcpy(all, params, n * sizeof *all);
  if (n_state) memcpy(all + n, state, n_state * sizeof *all); /* may be NULL */
  if (n_sched) memcpy(all + n + n_state, sched, n_sched * sizeof *all);
  if ((rc = nn_safetensors_read_params(last, all, n + n_state + n_sched, NULL,
                                       err)) ||
      (rc = nn_trainer_set_rng_state(t, rng, rng_size, err)))
    goto out;
  if (bestf && !ahead) {
    size_t nb;
    nn_param *bp = nn_trainer_best(t, &nb, NULL, NULL);
    if ((rc = nn_safetensors_read_params(bestf, bp, nb, NULL, err))) goto out;
  }
  nn_trainer_set_best(t, lm.best_epoch, lm.best_val_accuracy);
  *pos = lm.pos;
out:
  nn_safetensors_close(last);
  nn_safetensors_close(bestf);
  free(all);
  free(rng);
  return rc;
}

int checkpoint_check_best(const char *weights, nn_error *err) {
  const char *slash = strrchr(weights, '/');
  const char *base = slash ? slash + 1 : weights;
  if (strcmp(base, "best.safetensors")) return NN_OK;
  char dir[4200], last_path[4300];
  snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - weights) : 1,
           slash ? weights : ".");
  snprintf(last_path, sizeof last_path, "%s/last.safetensors", dir);
  if (access(last_path, F_OK) != 0) return NN_OK;
  nn_safetensors *last = NULL;
  last_meta lm;
  checkpoint_best found;
  int ahead = 0;
  int rc = nn_safetensors_open(&last, last_path, err);
  if (!rc) rc = read_last_meta(last, last_path, &lm, err);
  if (!rc) rc = match_best(weights, last_path, &lm, &found, &ahead, NULL, err);
  if (!rc && ahead)
    rc = nn_error_set(err, NN_EFORMAT,
                      "%s (epoch %ld) is newer than %s (epoch %ld): the run "
                      "was interrupted while saving; finish it with "
                      "--resume %s",
                      weights, found.epoch, last_path, lm.epoch, dir);
  nn_safetensors_close(last);
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

int checkpoint_read_config(const char *dir, char **config, nn_error *err) {
  char path[4200];
  snprintf(path, sizeof path, "%s/last.safetensors", dir);
  *config = NULL;
  if (access(path, F_OK) != 0)
    return nn_error_set(err, NN_ENOTFOUND, "%s: no checkpoint", path);
  nn_safetensors *f = NULL;
  int rc = nn_safetensors_open(&f, path, err);
  if (rc) return rc;
  const char *text = nn_safetensors_meta(f, META_CONFIG);
  if (text && !(*config = strdup(text)))
    rc = nn_error_set(err, NN_ENOMEM, "out of memory");
  nn_safetensors_close(f);
  return rc;
}
