/* SPDX-License-Identifier: GPL-3.0-or-later */
/* nnrun's small commands: --list-plugins (the one command that loads every
 * plugin on the path) and export-csv. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>

#include <nn/nn.h>

#include "cli.h"
#include "cli_paths.h"

static const char *option_type(uint32_t type) {
  switch (type) {
    case NN_OPT_INT: return "int";
    case NN_OPT_REAL: return "real";
    case NN_OPT_BOOL: return "bool";
    case NN_OPT_STRING: return "string";
  }
  return "?";
}

/* With -v: each option of the plugin, its type, default and help. */
static void print_options(const char *path) {
  nn_loaded *p = NULL;
  if (nn_plugin_open(&p, path, 0, NULL, NULL)) return;
  const nn_option *o = nn_loaded_desc(p)->options;
  for (size_t k = 0; o && o[k].key; k++)
    printf("    %-16s %-6s default %-8s %s\n", o[k].key, option_type(o[k].type),
           o[k].def ? o[k].def : "(required)", o[k].help ? o[k].help : "");
  nn_plugin_close(p);
}

int cli_list_plugins(int verbosity) {
  char search[8192];
  nn_plugin_default_path(search, sizeof search);
  nn_plugin_info *list = NULL;
  size_t n = 0;
  nn_error err;
  if (nn_plugin_list(search, &list, &n, &err)) {
    fprintf(stderr, "nnrun: %s\n", err.msg);
    return EXIT_RUNTIME;
  }
  if (verbosity > 1) printf("search path: %s\n", search);
  printf("%-12s %-10s %-8s %s\n", "NAME", "KIND", "VERSION", "FILE");
  int broken = 0;
  for (size_t i = 0; i < n; i++) {
    if (!list[i].kind) {
      printf("%-12s %-10s %-8s %s\n", list[i].name, "unusable", "-", list[i].path);
      printf("    %s\n", list[i].problem);
      broken = 1;
      continue;
    }
    printf("%-12s %-10s %-8s %s\n", list[i].name, nn_kind_name(list[i].kind),
           list[i].version, list[i].path);
    if (verbosity > 1) print_options(list[i].path);
  }
  if (!n) fprintf(stderr, "nnrun: no plugins found (searched %s)\n", search);
  else if (verbosity > 0)
    fprintf(stderr, "nnrun: the listing loaded every plugin file it could "
                    "(their code ran); a run loads only those its config "
                    "names\n");
  free(list);
  return !n ? EXIT_PLUGIN : broken ? EXIT_PLUGIN : EXIT_OK;
}

int cli_export_csv(const char *dir, int verbosity) {
  nn_dataset train = {0}, test = {0};
  nn_error err;
  int status = EXIT_OK;
  char path[4200];
  if (nn_mnist_load(dir, "idx", &train, &test, &err)) {
    char cmd[1024];
    if (err.code == NN_ENOTFOUND)
      fprintf(stderr, "nnrun: %s; fetch MNIST into it with: %s %s\n", err.msg,
              cli_fetch_command(cmd, sizeof cmd), dir);
    else
      fprintf(stderr, "nnrun: %s\n", err.msg);
    status = EXIT_RUNTIME;
    goto out;
  }
  snprintf(path, sizeof path, "%s/mnist_train.csv", dir);
  if (nn_dataset_write_csv(&train, path, &err)) {
    status = EXIT_RUNTIME;
    goto done;
  }
  if (verbosity > 0) fprintf(stderr, "nnrun: wrote %s (%zu rows)\n", path, train.n);
  snprintf(path, sizeof path, "%s/mnist_test.csv", dir);
  if (nn_dataset_write_csv(&test, path, &err)) {
    status = EXIT_RUNTIME;
    goto done;
  }
  if (verbosity > 0) fprintf(stderr, "nnrun: wrote %s (%zu rows)\n", path, test.n);
done:
  if (status) fprintf(stderr, "nnrun: %s\n", err.msg);
out:
  nn_dataset_free(&train);
  nn_dataset_free(&test);
  return status;
}
