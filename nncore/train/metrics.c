/* metrics.csv: the per-epoch learning curves, written atomically so that a
 * reader (or a crash) never sees half a file. */
#include <config.h>

#include <errno.h>
#include <string.h>

#include <nn/train.h>

#include "files/atomic_file.h"

int nn_metrics_write_csv(const char *path, const nn_epoch_metrics *m,
                         size_t n, nn_error *err) {
  nn__atomic_file f;
  int rc = nn__atomic_open(&f, path, err);
  if (rc) return rc;
  fputs("epoch,train_loss,train_accuracy,val_loss,val_accuracy,train_seconds\n",
        f.fp);
  /* %.17g keeps every bit of the doubles: runs can be compared exactly. */
  for (size_t i = 0; i < n; i++)
    fprintf(f.fp, "%zu,%.17g,%.17g,%.17g,%.17g,%.6f\n", m[i].epoch,
            m[i].train_loss, m[i].train_accuracy, m[i].val_loss,
            m[i].val_accuracy, m[i].train_seconds);
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
  if (!fgets(line, sizeof line, f) ||
      strcmp(line, "epoch,train_loss,train_accuracy,val_loss,val_accuracy,"
                   "train_seconds\n")) {
    rc = nn_error_set(err, NN_EFORMAT, "%s:1: not a metrics.csv header", path);
  } else {
    for (size_t lineno = 2; fgets(line, sizeof line, f); lineno++) {
      nn_epoch_metrics e = {0};
      int used = 0;
      /* %lf reads what %.17g wrote back to the same double. */
      if (sscanf(line, "%zu,%lf,%lf,%lf,%lf,%lf%n", &e.epoch, &e.train_loss,
                 &e.train_accuracy, &e.val_loss, &e.val_accuracy,
                 &e.train_seconds, &used) != 6 ||
          (line[used] != '\n' && line[used] != '\0') || e.epoch != *n) {
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
