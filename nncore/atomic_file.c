/* Atomic file replacement: see atomic_file.h. */
#include <config.h>

#include "atomic_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int nn__atomic_open(nn__atomic_file *f, const char *path, nn_error *err) {
  memset(f, 0, sizeof *f);
  if (strlen(path) + 16 >= sizeof f->tmp)
    return nn_error_set(err, NN_EINVAL, "%s: path too long", path);
  strcpy(f->path, path);
  snprintf(f->tmp, sizeof f->tmp, "%s.tmpXXXXXX", path);
  int fd = mkstemp(f->tmp);
  if (fd < 0)
    return nn_error_set(err, NN_EIO, "cannot create a temporary file for %s: %s",
                        path, strerror(errno));
  f->fp = fdopen(fd, "w");
  if (!f->fp) {
    int e = errno;
    close(fd);
    unlink(f->tmp);
    return nn_error_set(err, NN_EIO, "%s: %s", f->tmp, strerror(e));
  }
  return NN_OK;
}

int nn__atomic_commit(nn__atomic_file *f, nn_error *err) {
  int failed = ferror(f->fp) || fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0;
  int e = errno;
  if (fclose(f->fp) != 0 && !failed) {
    failed = 1;
    e = errno;
  }
  f->fp = NULL;
  if (!failed && rename(f->tmp, f->path) != 0) {
    failed = 1;
    e = errno;
  }
  if (failed) {
    unlink(f->tmp);
    return nn_error_set(err, NN_EIO, "cannot write %s: %s", f->path,
                        strerror(e));
  }
  return NN_OK;
}

void nn__atomic_abort(nn__atomic_file *f) {
  if (f->fp) fclose(f->fp);
  f->fp = NULL;
  unlink(f->tmp);
}
