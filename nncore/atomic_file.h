/* Private: write a file so that readers see either the old file or the
 * complete new one, never half of it (temp file in the same directory,
 * fflush + fsync, rename over the target). */
#ifndef NN_ATOMIC_FILE_H
#define NN_ATOMIC_FILE_H

#include <stdio.h>

#include <nn/plugin.h>

typedef struct nn__atomic_file {
  FILE *fp;        /* write here; owned until commit/abort */
  char tmp[4096];  /* temporary path next to the target */
  char path[4096]; /* final path */
} nn__atomic_file;

/* Open a temporary file next to `path`. */
int nn__atomic_open(nn__atomic_file *f, const char *path, nn_error *err);
/* Flush, fsync, close and rename over the target; on any failure the
 * temporary file is removed and the target left untouched. */
int nn__atomic_commit(nn__atomic_file *f, nn_error *err);
/* Close and remove the temporary file (after a write error). */
void nn__atomic_abort(nn__atomic_file *f);

#endif
