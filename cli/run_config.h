/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to the CLI: a run's resolved configuration as text, recorded in
 * its checkpoint so that --resume continues the same run, and the
 * comparison of two such records. */
#ifndef NN_RUN_CONFIG_H
#define NN_RUN_CONFIG_H

#include "cli_setup.h"

/* Every resolved key of the run (after SETUP_PLUGINS) as lines
 * "SECTION.KEY=VALUE\n": [data], [train], [model] and [optimizer] with
 * their types, model.init_from when set, model.layers (the layer order)
 * and each [layer NAME] as "layer NAME.KEY".  Defaults are included, so a
 * changed default shows as a difference too; train.threads is not (the
 * numbers do not depend on it).  Reals are written in the
 * fewest digits that read back to the same double.  Returns a string owned
 * by the caller (free), or NULL when out of memory. */
char *run_config_text(const cli_run *r);

/* The keys a resumed run may change: those that decide only how long it
 * runs or how many threads compute it, never what an epoch computes. */
int run_config_may_differ(const char *key);

/* Compare the configuration recorded by a run (`run`) with the one given
 * now: one line per differing key, "KEY: A in the run, B now", keys that
 * may differ left out.  Returns the number of differences; *report (owned
 * by the caller, NULL when there are none) lists them.  -1: out of
 * memory. */
int run_config_diff(const char *run, const char *now, char **report);

#endif
