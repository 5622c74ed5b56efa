/* Private to the CLI: choosing and creating a run's output directory. */
#ifndef NN_RUN_DIR_H
#define NN_RUN_DIR_H

#include <stddef.h>

/* Create the output directory.  With `explicit` (-o DIR) that directory
 * (and its parents) is created if missing and reused if present.  Without,
 * a fresh runs/<name>-<N> is made with the smallest N >= 1 not yet taken, so
 * an earlier run is never overwritten.  The chosen path goes to out.
 * Returns 0, or -1 with a message in msg. */
int run_dir_create(const char *explicit, const char *name, char *out,
                   size_t out_size, char *msg, size_t msg_size);

#endif
