/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Shared zlib helpers of the data readers: see gzio.h. */
#include <config.h>

#include "data/gzio.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int nn__gz_open(gzFile *out, const char *path, unsigned buffer_size,
                uint64_t *file_size, nn_error *err) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return nn_error_set(err, e == ENOENT ? NN_ENOTFOUND : NN_EIO,
                        "cannot open %s: %s", path, strerror(e));
  }
  struct stat st;
  if (file_size) {
    if (fstat(fd, &st) != 0) {
      int e = errno;
      close(fd);
      return nn_error_set(err, NN_EIO, "cannot open %s: %s", path,
                          strerror(e));
    }
    *file_size = st.st_size > 0 ? (uint64_t)st.st_size : 0;
  }
  /* gzdopen fails only when zlib cannot allocate its state; then the
   * descriptor is still ours to close.  Once it succeeds, gzclose closes
   * the descriptor. */
  *out = gzdopen(fd, "rb");
  if (!*out) {
    close(fd);
    return nn_error_set(err, NN_ENOMEM, "%s: cannot allocate zlib state",
                        path);
  }
  /* Only a hint: a failure leaves zlib's default buffer, which still works. */
  (void)gzbuffer(*out, buffer_size);
  return NN_OK;
}

uint64_t nn__gz_max_output(uint64_t file_size, int direct) {
  if (direct) return file_size;
  return file_size > UINT64_MAX / 1032 ? UINT64_MAX : file_size * 1032;
}

const char *nn__gz_reason(const char *zmsg, const char *path) {
  size_t len = strlen(path);
  if (strncmp(zmsg, path, len) == 0 && zmsg[len] == ':' &&
      zmsg[len + 1] == ' ')
    return zmsg + len + 2;
  return zmsg;
}

int nn__gz_read_error(gzFile f, const char *path, const char *where,
                      nn_error *err) {
  int zerr;
  const char *zmsg = gzerror(f, &zerr);
  if (zerr == Z_ERRNO)
    return nn_error_set(err, NN_EIO, "cannot read %s: %s", path,
                        strerror(errno));
  if (zerr == Z_MEM_ERROR)
    return nn_error_set(err, NN_ENOMEM, "%s: out of memory in zlib", where);
  return nn_error_set(err, NN_EFORMAT, "%s: corrupt gzip data: %s", where,
                      nn__gz_reason(zmsg, path));
}

int nn__gz_cut_short(gzFile f) {
  int zerr;
  (void)gzerror(f, &zerr);
  return zerr == Z_BUF_ERROR;
}
