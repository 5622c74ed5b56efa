/* SPDX-License-Identifier: GPL-3.0-or-later */
/* metrics.csv: the per-epoch learning curves, written atomically so that a
 * reader (or a crash) never sees half a file. */
#include <config.h>

#include <errno.h>
#include <math.h>
#include <string.h>

#include <nn/train.h>

#include "files/atomic_file.h"

/* The header; files written before the lr column have HEADER_OLD. */
#define HEADER_OLD \
  "epoch,train_loss,train_accuracy,val_loss,val_accuracy,train_seconds"
#define HEADER_LR HEADER_OLD ",lr\n"

int nn_metrics_write_csv(const char *path, const nn_epoch_metrics *m,
                         size_t n, nn_error *err) {
  nn__atomic_file f;
  int rc = nn__atomic_open(&f, path, err);
  if (rc) return rc;
  fputs(HEADER_LR, f.fp);
  /* %.17g keeps every bit of the doubles: runs can be compared exactly.
   * lr comes last so that the columns before it keep their places. */
  for (size_t i = 0; i < n; i++)
    fprintf(f.fp, "%zu,%.17g,%.17g,%.17g,%.17g,%.6f,%.17g\n", m[i].epoch,
            m[i].train_loss, m[i].train_accuracy, m[i].val_loss,
            m[i].val_accuracy, m[i].train_seconds, m[i].lr);
  return nn__atomic_commit(&f, err);
}

int nn_metrics_read_csv(const char *path, nn_epoch_metrics *m, size_t max,
                        size_t *n, nn_error *err) {
  *n = 0;
  FILE *f = fopen(path, "r");
  if (!f)
    return nn_error_set(err, NN_EIO, "cannot open %s: %s", path, strerror(errno));
  char line[512];
  int rc = NN_OK;
  const int header = fgets(line, sizeof line, f) != NULL;
  const int with_lr = header && !strcmp(line, HEADER_LR);
  if (!with_lr && (!header || strcmp(line, HEADER_OLD "\n"))) {
    rc = nn_error_set(err, NN_EFORMAT, "%s:1: not a metrics.csv header", path);
  } else {
    for (size_t lineno = 2; fgets(line, sizeof line, f); lineno++) {
      nn_epoch_metrics e = {.lr = NAN};
      int used = 0, used_lr = 0;
      /* %lf reads what %.17g wrote back to the same double ("nan"
       * included). */
      int ok = sscanf(line, "%zu,%lf,%lf,%lf,%lf,%lf%n", &e.epoch,
                      &e.train_loss, &e.train_accuracy, &e.val_loss,
                      &e.val_accuracy, &e.train_seconds, &used) == 6;
      if (ok && with_lr) {
        ok = sscanf(line + used, ",%lf%n", &e.lr, &used_lr) == 1;
        used += used_lr;
      }
      if (!ok || (line[used] != '\n' && line[used] != '\0') ||
          e.epoch != *n) {
        rc = nn_error_set(err, NN_EFORMAT, "%s:%zu: expected epoch %zu's metrics",
                          path, lineno, *n);
        break;
      }
      if (*n == max) break;
      m[(*n)++] = e;
    }
  }
  fclose(f);
  return rc;
}
