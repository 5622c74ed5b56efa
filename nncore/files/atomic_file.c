/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Atomic file replacement: see atomic_file.h. */
#define _GNU_SOURCE /* O_TMPFILE */
#include <config.h>

#include "files/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The directory part of path ("." when there is none). */
static void dir_of(const char *path, char *dir, size_t size) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    snprintf(dir, size, ".");
  else if (slash == path)
    snprintf(dir, size, "/");
  else
    snprintf(dir, size, "%.*s", (int)(slash - path), path);
}

/* A fresh temporary name for f->path: the pattern of atomic_file.h.  The
 * hex part differs per attempt and per nanosecond; O_EXCL or linkat's
 * EEXIST settles the rare clash. */
static void temp_name(nn__atomic_file *f, unsigned attempt) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  unsigned long salt =
      ((unsigned long)ts.tv_nsec ^ (attempt * 0x9e3779b9UL)) & 0xffffffffUL;
  snprintf(f->tmp, sizeof f->tmp, "%s.tmp%ld.%08lx", f->path, (long)getpid(),
           salt);
}

/* A file without a name in the target's directory, or -1 where the kernel
 * or the file system cannot make one, or /proc (needed to name it later)
 * is missing. */
static int open_nameless(const char *path) {
#ifdef O_TMPFILE
  if (access("/proc/self/fd", X_OK) != 0) return -1;
  char dir[4096];
  dir_of(path, dir, sizeof dir);
  /* 0666: the finished file gets the user's usual permissions (0666 less
   * the umask), like any other file the program writes. */
  return open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
#else
  (void)path;
  return -1;
#endif
}

int nn__atomic_open(nn__atomic_file *f, const char *path, nn_error *err) {
  memset(f, 0, sizeof *f);
  if (strlen(path) >= sizeof f->path)
    return nn_error_set(err, NN_EINVAL, "%s: path too long", path);
  strcpy(f->path, path);
  int fd = open_nameless(path);
  /* Otherwise a named file: open(O_EXCL) with mode 0666 rather than
   * mkstemp, whose files are 0600 and whose names lack the writer's id. */
  for (unsigned attempt = 0; fd < 0 && attempt < 100; attempt++) {
    temp_name(f, attempt);
    fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0)
      f->named = 1;
    else if (errno != EEXIST)
      break;
  }
  if (fd < 0)
    return nn_error_set(err, NN_EIO, "cannot create a temporary file for %s: %s",
                        path, strerror(errno));
  f->fp = fdopen(fd, "w");
  if (!f->fp) {
    int e = errno;
    close(fd);
    if (f->named) unlink(f->tmp);
    return nn_error_set(err, NN_EIO, "%s: %s", path, strerror(e));
  }
  return NN_OK;
}

/* Give the nameless file f->fp a temporary name.  Returns 0 or an errno. */
static int name_temp(nn__atomic_file *f) {
  char proc[64];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fileno(f->fp));
  for (unsigned attempt = 0; attempt < 100; attempt++) {
    temp_name(f, attempt);
    if (linkat(AT_FDCWD, proc, AT_FDCWD, f->tmp, AT_SYMLINK_FOLLOW) == 0) {
      f->named = 1;
      return 0;
    }
    if (errno != EEXIST) return errno;
  }
  return EEXIST;
}

/* fsync the directory of path, so that a rename in it survives a crash of
 * the machine.  File systems that cannot sync a directory say EINVAL:
 * there is nothing more to do on those. */
static int sync_dir(const char *path) {
  char dir[4096];
  dir_of(path, dir, sizeof dir);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int e = fsync(fd) != 0 && errno != EINVAL ? errno : 0;
  close(fd);
  return e;
}

int nn__atomic_commit(nn__atomic_file *f, nn_error *err) {
  /* e: the first failure's errno.  A write that failed earlier left only
   * the stream's error flag (its errno is long overwritten): EIO. */
  int e = 0;
  if (ferror(f->fp))
    e = EIO;
  else if (fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0)
    e = errno ? errno : EIO;
  if (!e && !f->named) e = name_temp(f);
  if (fclose(f->fp) != 0 && !e) e = errno ? errno : EIO;
  f->fp = NULL;
  if (!e && rename(f->tmp, f->path) != 0) e = errno ? errno : EIO;
  if (e) {
    if (f->named) unlink(f->tmp);
    f->named = 0;
    return nn_error_set(err, NN_EIO, "cannot write %s: %s", f->path,
                        strerror(e));
  }
  f->named = 0; /* the name is the target's now */
  if ((e = sync_dir(f->path)))
    return nn_error_set(err, NN_EIO, "cannot sync the directory of %s: %s",
                        f->path, strerror(e));
  return NN_OK;
}

void nn__atomic_abort(nn__atomic_file *f) {
  if (f->fp) fclose(f->fp);
  f->fp = NULL;
  if (f->named) unlink(f->tmp);
  f->named = 0;
}

long nn__atomic_temp_writer(const char *name) {
  /* Read the pattern from the end: ".tmp" <digits> "." <8 hex>. */
  size_t len = strlen(name);
  if (len < 4 + 1 + 1 + 8) return 0;
  const char *hex = name + len - 8;
  for (size_t i = 0; i < 8; i++)
    if (!strchr("0123456789abcdef", hex[i])) return 0;
  if (hex[-1] != '.') return 0;
  const char *digits_end = hex - 1, *p = digits_end;
  while (p > name && p[-1] >= '0' && p[-1] <= '9') p--;
  if (p == digits_end || digits_end - p > 9 || *p == '0') return 0;
  if (p - name < 5 || memcmp(p - 4, ".tmp", 4) != 0) return 0;
  long pid = 0;
  for (const char *d = p; d < digits_end; d++) pid = pid * 10 + (*d - '0');
  return pid;
}
