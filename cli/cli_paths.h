/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to the CLI: where the installed configs and the MNIST fetcher
 * are, and finding a config the user named. */
#ifndef NN_CLI_PATHS_H
#define NN_CLI_PATHS_H

#include <stddef.h>

#include <nn/nn.h>

/* The directory of the shipped configs (make install puts them there). */
const char *cli_config_dir(void);

/* -c NAME: NAME itself when it exists, or when it names a directory part
 * ("configs/mlp.ini", "./x.ini"); otherwise, for a bare file name, the
 * shipped config of that name (NAME, then NAME.ini) in cli_config_dir().
 * Writes the path to open into out.  Fails (NN_ECONFIG) naming every place
 * it looked. */
int cli_config_find(const char *name, char *out, size_t size, nn_error *err);

/* The command that fetches MNIST into a directory given after it: the
 * installed nnrun-get-data for an installed nnrun (its full path when its
 * directory is not on $PATH), the source tree's data/get_data.sh for the
 * build tree's. */
const char *cli_fetch_command(char *buf, size_t size);

#endif
