/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Finding, validating and unloading plugins (the only user of dlopen).
 *
 * Search order for a plugin name: a name containing '/' is a path to a .so;
 * otherwise <dir>/<name>.so for each directory of the search path, in order.
 * The default search path is $NN_PLUGIN_PATH (colon-separated) followed by
 * the installed plugin directory.
 *
 * Loading a plugin runs its code (its constructors run inside dlopen), so:
 *   - only the file asked for is loaded; a name that matches no file is
 *     answered from file names alone;
 *   - a file that others could replace is refused before dlopen: the file
 *     or one of the directories above it is world-writable (a directory
 *     with the sticky bit, as /tmp, is fine) or owned by a user other than
 *     the caller or root.  NN_PLUGIN_ALLOW_WRITABLE=1 in the environment
 *     lifts this check. */
#ifndef NN_REGISTRY_H
#define NN_REGISTRY_H

#include <nn/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nn_loaded nn_loaded; /* opaque: a dlopen'ed, validated plugin */

/* The installed plugin directory, compiled in. */
const char *nn_plugin_dir(void);
/* Write the default search path ($NN_PLUGIN_PATH then nn_plugin_dir()) into
 * buf; returns buf. */
char *nn_plugin_default_path(char *buf, size_t size);

/* Load plugin `name` (or a path), check its ABI version, size and kind
 * (want_kind = NN_KIND_MODEL / NN_KIND_OPTIMIZER / NN_KIND_LAYER /
 * NN_KIND_SCHEDULE, or 0 for any) and its declarations (option table: unique, unreserved keys,
 * defaults that parse).  Errors:
 * NN_ENOTFOUND (message lists the plugin files on the path by name, the
 * closest to `name` first; none of them is loaded),
 * NN_EPLUGIN (a file others could replace, named with the reason; dlopen's
 * own reason, or "not an nnrun plugin", wrong kind, incomplete
 * descriptor), NN_EABI (both versions named).  *out is owned by the
 * caller; close it only after destroying every instance made from it. */
int nn_plugin_open(nn_loaded **out, const char *name, uint32_t want_kind,
                   const char *search_path, nn_error *err);
const nn_plugin *nn_loaded_desc(const nn_loaded *p);
const char *nn_loaded_path(const nn_loaded *p);
void nn_plugin_close(nn_loaded *p); /* NULL-safe */

/* One entry of a plugin listing. */
typedef struct nn_plugin_info {
  char name[256];
  char version[64];
  uint32_t kind;  /* 0 when the file could not be loaded */
  char path[4200];
  char problem[512]; /* empty, or why the file is not usable */
} nn_plugin_info;

/* Every <dir>/<name>.so on the search path (first occurrence of a name wins),
 * sorted by name.  Each file is loaded to read its descriptor (so its code
 * runs), except those others could replace, listed with that problem.
 * *out is malloc'ed, owned by the caller (free()). */
int nn_plugin_list(const char *search_path, nn_plugin_info **out, size_t *n,
                   nn_error *err);
const char *nn_kind_name(uint32_t kind); /* "model", "layer", ... "?" */

/* The memory operation of a model or layer plugin, or NULL when it has
 * none: its ops table predates ABI 2.1 (read only as far as its size
 * says) or leaves it out.  Such a plugin is not checked. */
typedef int (*nn_memory_fn)(const nn_value *opts, nn_shape in, size_t n_out,
                            size_t max_batch, nn_memory *need);
nn_memory_fn nn_plugin_memory_op(const nn_plugin *d);

/* The ops of a schedule plugin (ABI 2.2), or NULL for another kind or a
 * descriptor too short to hold them. */
const nn_schedule_ops *nn_plugin_schedule_ops(const nn_plugin *d);

/* Parameter and state names of one plugin instance must be unique: the
 * first duplicate among params (n) and state (n_state) fails with
 * "<owner>: two <what> named '<name>'" (NN_EPLUGIN). */
int nn_check_param_names(const char *owner, const nn_param *params, size_t n,
                         const nn_param *state, size_t n_state, nn_error *err);

#ifdef __cplusplus
}
#endif
#endif /* NN_REGISTRY_H */
