/* Output directories of runs: see run_dir.h. */
#include <config.h>

#include "run_dir.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* mkdir -p: create every missing component of path. */
static int make_dirs(const char *path, char *msg, size_t msg_size) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
    snprintf(msg, msg_size, "output directory path too long: %s", path);
    return -1;
  }
  for (char *p = buf + 1;; p++) {
    int end = *p == '\0';
    if (*p == '/' || end) {
      *p = '\0';
      if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
        snprintf(msg, msg_size, "cannot create directory %s: %s", buf,
                 strerror(errno));
        return -1;
      }
      if (end) break;
      *p = '/';
    }
  }
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
    snprintf(msg, msg_size, "%s exists and is not a directory", path);
    return -1;
  }
  return 0;
}

int run_dir_create(const char *explicit, const char *name, char *out,
                   size_t out_size, char *msg, size_t msg_size) {
  if (explicit) {
    if (make_dirs(explicit, msg, msg_size)) return -1;
    snprintf(out, out_size, "%s", explicit);
    return 0;
  }
  if (make_dirs("runs", msg, msg_size)) return -1;
  /* mkdir is atomic: two runs started together never share a directory. */
  for (unsigned n = 1; n < 1000000; n++) {
    snprintf(out, out_size, "runs/%s-%u", name, n);
    if (mkdir(out, 0777) == 0) return 0;
    if (errno != EEXIST) {
      snprintf(msg, msg_size, "cannot create directory %s: %s", out,
               strerror(errno));
      return -1;
    }
  }
  snprintf(msg, msg_size, "no free run directory under runs/ for %s", name);
  return -1;
}
