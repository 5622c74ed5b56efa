/* metrics.csv: the per-epoch learning curves, written atomically so that a
 * reader (or a crash) never sees half a file. */
#include <config.h>

#include <nn/train.h>

#include "atomic_file.h"

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
