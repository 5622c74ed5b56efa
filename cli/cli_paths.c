/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Installed paths and config lookup: see cli_paths.h. */
/* realpath is XSI. */
#define _XOPEN_SOURCE 700
#include <config.h>
#include <nn_paths.h>

#include "cli_paths.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *cli_config_dir(void) { return NN_CONFIGDIR; }

/* 1 when `path` names something (a broken file is still the user's: it is
 * opened and its own error reported). */
static int exists(const char *path) {
  return access(path, F_OK) == 0 || (errno != ENOENT && errno != ENOTDIR);
}

int cli_config_find(const char *name, char *out, size_t size, nn_error *err) {
  char shipped[PATH_MAX], shipped_ini[PATH_MAX];
  const size_t len = strlen(name);
  const int has_ini = len >= 4 && !strcmp(name + len - 4, ".ini");
  if (exists(name) || strchr(name, '/') || !*name) {
    snprintf(out, size, "%s", name);
    return NN_OK;
  }
  snprintf(shipped, sizeof shipped, "%s/%s", NN_CONFIGDIR, name);
  snprintf(shipped_ini, sizeof shipped_ini, "%s/%s.ini", NN_CONFIGDIR, name);
  const char *found = exists(shipped)               ? shipped
                      : !has_ini && exists(shipped_ini) ? shipped_ini
                                                        : NULL;
  if (found) {
    snprintf(out, size, "%s", found);
    return NN_OK;
  }
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, ".");
  return nn_error_set(err, NN_ECONFIG,
                      "cannot open config file '%s' (tried %s/%s, then the "
                      "shipped configs: %s%s%s): no such file",
                      name, cwd, name, shipped, has_ini ? "" : " and ",
                      has_ini ? "" : shipped_ini);
}

/* Whether this process is the installed nnrun (not the build tree's). */
static int installed(void) {
  char self[PATH_MAX], bin[PATH_MAX];
  if (!realpath("/proc/self/exe", self)) return 1; /* cannot tell */
  return realpath(NN_BINDIR "/nnrun", bin) && !strcmp(self, bin);
}

/* Whether dir is one of $PATH's directories. */
static int on_path(const char *dir) {
  const char *p = getenv("PATH");
  const size_t n = strlen(dir);
  while (p && *p) {
    const char *end = strchr(p, ':');
    const size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len == n && !strncmp(p, dir, n)) return 1;
    p = end ? end + 1 : NULL;
  }
  return 0;
}

const char *cli_fetch_command(char *buf, size_t size) {
  if (!installed())
    snprintf(buf, size, "%s/data/get_data.sh", NN_SRCDIR);
  else if (on_path(NN_BINDIR))
    snprintf(buf, size, "nnrun-get-data");
  else
    snprintf(buf, size, "%s/nnrun-get-data", NN_BINDIR);
  return buf;
}
