/* Atomic file replacement: see atomic_file.h. */
#include <config.h>

#include "atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int nn__atomic_open(nn__atomic_file *f, const char *path, nn_error *err) {
  memset(f, 0, sizeof *f);
  if (strlen(path) + 48 >= sizeof f->tmp)
    return nn_error_set(err, NN_EINVAL, "%s: path too long", path);
  strcpy(f->path, path);
  /* open(O_EXCL) with mode 0666 rather than mkstemp: mkstemp's files are
   * 0600, and the finished file should get the user's usual permissions
   * (0666 less the umask) like any other file the program writes.  The
   * name is unique per process and attempt; O_EXCL settles any clash. */
  int fd = -1;
  for (unsigned attempt = 0; attempt < 100 && fd < 0; attempt++) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(f->tmp, sizeof f->tmp, "%s.tmp%ld.%lx%u", path, (long)getpid(),
             (unsigned long)ts.tv_nsec, attempt);
    fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
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
  /* e: the first failure's errno.  A write that failed earlier left only
   * the stream's error flag (its errno is long overwritten): EIO. */
  int e = 0;
  if (ferror(f->fp))
    e = EIO;
  else if (fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0)
    e = errno ? errno : EIO;
  if (fclose(f->fp) != 0 && !e) e = errno ? errno : EIO;
  f->fp = NULL;
  if (!e && rename(f->tmp, f->path) != 0) e = errno ? errno : EIO;
  if (e) {
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
