/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to the CLI: GSL's errors caught instead of ignored.
 *
 * GSL reports an error by calling one process-wide handler, so only the
 * program may choose it (libnn keeps no global state and leaves it
 * alone).  nnrun's handler remembers the error in a slot per thread, for
 * the thread that made the failing call to take back: the trainer asks
 * after every plugin call (nn_train_opts.gsl_trap), so a GSL function
 * that failed inside a plugin fails that call, named, where GSL's "off"
 * handler would let the plugin carry on with an unwritten result, and its
 * default handler would abort the process. */
#ifndef NN_CLI_GSL_TRAP_H
#define NN_CLI_GSL_TRAP_H

#include <stddef.h>

/* Install the handler (once, in main, before any GSL call). */
void cli_gsl_trap_install(void);
/* nn_gsl_trap_fn: the calling thread's GSL error since the last take. */
int cli_gsl_trap_take(char *msg, size_t size);

#endif
