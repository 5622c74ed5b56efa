/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to the CLI: --resume DIR, continuing the run in DIR as the same
 * run: its recorded configuration, then its checkpoints. */
#ifndef NN_RUN_RESUME_H
#define NN_RUN_RESUME_H

#include "run_outputs.h"

/* Whether the configuration given now is the one DIR's run recorded in
 * its last.safetensors (run_config.h; keys that cannot change the numbers
 * may differ).  EXIT_USAGE with every difference, one per line, when it
 * is not.  A run without a checkpoint yet starts over: anything goes.  A
 * checkpoint that records no configuration (an older nnrun's) is resumed
 * with a warning, its model, optimizer and tensor shapes still checked.
 * Returns an exit status. */
int run_resume_check_config(const char *dir, const char *config,
                            int verbosity, nn_error *err);

/* Continue the run in st->out_dir from its last checkpoint (a run killed
 * before its first checkpoint starts over).  Returns an exit status. */
int run_resume(run_state *st, nn_error *err);

#endif
