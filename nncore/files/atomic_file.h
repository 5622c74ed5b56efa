/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private: write a file so that readers see either the old file or the
 * complete new one, never half of it, and so that a crash leaves nothing
 * a later run cannot recognize and remove.
 *
 * The data goes to a file with no name (Linux O_TMPFILE), or, where that
 * is not supported, to a temporary file named
 *
 *     <target>.tmp<pid>.<8 hex digits>
 *
 * next to the target (<pid>: the writing process).  On commit the data is
 * fsynced, the nameless file gets such a name (linkat through
 * /proc/self/fd), is renamed over the target, and the directory is
 * fsynced so that the rename itself is on disk.  A process killed before
 * the rename leaves at most one complete temporary file of that pattern:
 * nn__atomic_temp_writer tells whose it is. */
#ifndef NN_ATOMIC_FILE_H
#define NN_ATOMIC_FILE_H

#include <stdio.h>

#include <nn/plugin.h>

typedef struct nn__atomic_file {
  FILE *fp;        /* write here; owned until commit/abort */
  int named;       /* tmp names a file on disk (to remove on failure) */
  char path[4096];      /* final path */
  char tmp[4096 + 40];  /* the temporary name, once there is one: path
                           and the pattern's suffix */
} nn__atomic_file;

/* Open a temporary file next to `path`. */
int nn__atomic_open(nn__atomic_file *f, const char *path, nn_error *err);
/* Flush, fsync, close, rename over the target and fsync the directory; on
 * a failure before the rename the temporary file is removed and the target
 * left untouched. */
int nn__atomic_commit(nn__atomic_file *f, nn_error *err);
/* Close and remove the temporary file (after a write error). */
void nn__atomic_abort(nn__atomic_file *f);

/* If `name` (a file name without directories) has the temporary-file
 * pattern above, the process id of its writer; else 0. */
long nn__atomic_temp_writer(const char *name);

#endif
