/* Shared zlib helpers of the data readers: see gzio.h. */
#include <config.h>

#include "data/gzio.h"

#include <errno.h>
#include <string.h>

int nn__gz_open(gzFile *out, const char *path, unsigned buffer_size,
                nn_error *err) {
  errno = 0;
  *out = gzopen(path, "rb");
  if (!*out) {
    int e = errno;
    if (e == 0) /* zlib sets no errno only when its own malloc failed */
      return nn_error_set(err, NN_ENOMEM, "%s: cannot allocate zlib state",
                          path);
    return nn_error_set(err, e == ENOENT ? NN_ENOTFOUND : NN_EIO,
                        "cannot open %s: %s", path, strerror(e));
  }
  /* Only a hint: a failure leaves zlib's default buffer, which still works. */
  (void)gzbuffer(*out, buffer_size);
  return NN_OK;
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
