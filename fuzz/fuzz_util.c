/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Temporary files for the fuzz targets: see fuzz.h. */
#define _POSIX_C_SOURCE 200809L

#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#define FUZZ_MAX_FILES 8

static char dir[64];                 /* the temporary directory, or "" */
static char paths[FUZZ_MAX_FILES][128]; /* files made in it so far */
static size_t n_paths;

static void fuzz_cleanup(void) {
  for (size_t i = 0; i < n_paths; i++) unlink(paths[i]);
  if (dir[0]) rmdir(dir);
}

static void die(const char *what, const char *path) {
  perror(path);
  fprintf(stderr, "fuzz: cannot %s %s\n", what, path);
  exit(2);
}

const char *fuzz_path(const char *name) {
  if (!dir[0]) {
    /* Every input is written to a file: in memory (/dev/shm) that is ten
     * times faster than on a disk, so it is tried first unless TMPDIR
     * says where to go. */
    const char *tmp = getenv("TMPDIR");
    int mine = tmp && *tmp && strlen(tmp) < 40;
    snprintf(dir, sizeof dir, "%s/nnfuzz.XXXXXX", mine ? tmp : "/dev/shm");
    if (!mkdtemp(dir)) {
      if (mine) die("make the directory", dir);
      snprintf(dir, sizeof dir, "/tmp/nnfuzz.XXXXXX");
      if (!mkdtemp(dir)) die("make the directory", dir);
    }
    atexit(fuzz_cleanup);
  }
  for (size_t i = 0; i < n_paths; i++) {
    const char *base = strrchr(paths[i], '/') + 1;
    if (!strcmp(base, name)) return paths[i];
  }
  if (n_paths == FUZZ_MAX_FILES || strlen(name) > 60) {
    fprintf(stderr, "fuzz: too many or too long file names (%s)\n", name);
    exit(2);
  }
  snprintf(paths[n_paths], sizeof paths[n_paths], "%s/%s", dir, name);
  return paths[n_paths++];
}

const char *fuzz_write(const char *name, const uint8_t *data, size_t size,
                       int gzip) {
  const char *path = fuzz_path(name);
  if (gzip) {
    gzFile gz = gzopen(path, "wb");
    if (!gz) die("create", path);
    /* gzwrite takes an unsigned length; fuzz inputs are far smaller. */
    if (size && gzwrite(gz, data, (unsigned)size) != (int)size)
      die("compress into", path);
    if (gzclose(gz) != Z_OK) die("close", path);
    return path;
  }
  FILE *fp = fopen(path, "wb");
  if (!fp) die("create", path);
  if (size && fwrite(data, 1, size, fp) != size) die("write", path);
  if (fclose(fp) != 0) die("close", path);
  return path;
}

void fuzz_remove(const char *name) { unlink(fuzz_path(name)); }

void fuzz_split(const uint8_t *data, size_t size, const uint8_t **a,
                size_t *a_len, const uint8_t **b, size_t *b_len) {
  size_t want = size >= 2 ? (size_t)data[0] << 8 | data[1] : 0;
  const uint8_t *rest = size >= 2 ? data + 2 : data;
  size_t rest_len = size >= 2 ? size - 2 : 0;
  *a = rest;
  *a_len = want < rest_len ? want : rest_len;
  *b = rest + *a_len;
  *b_len = rest_len - *a_len;
}
