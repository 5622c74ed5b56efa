/* SPDX-License-Identifier: GPL-3.0-or-later */
/* INI configuration: parsed with inih, remembered with file and line so that
 * every error can say where it comes from, and validated against option
 * tables (the core's own for [data] and [train], each plugin's for [model]
 * and [optimizer]). */
#ifndef NN_CONFIG_H
#define NN_CONFIG_H

#include <nn/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nn_config nn_config; /* opaque; owns every string in it */

/* Parse `path`.  Syntax errors (no '=', unclosed '[', over-long line,
 * duplicate key) fail with "FILE:LINE: ..." in err.  *out is owned by the
 * caller and released with nn_config_free. */
int nn_config_load(nn_config **out, const char *path, nn_error *err);
/* Apply "SECTION.KEY=VALUE" (the CLI's --set): replaces or adds the key. */
int nn_config_set(nn_config *cfg, const char *assignment, nn_error *err);
void nn_config_free(nn_config *cfg); /* NULL-safe */

const char *nn_config_path(const nn_config *cfg);
/* The config's stem: "configs/mlp.ini" -> "mlp". */
const char *nn_config_name(const nn_config *cfg);
/* Raw value of section.key, or NULL.  *where (if non-NULL) receives a
 * description of its origin ("configs/mlp.ini:7" or "--set"), owned by cfg. */
const char *nn_config_get(const nn_config *cfg, const char *section,
                          const char *key, const char **where);

/* The i-th key of [section] in file order (--set keys last), or NULL past
 * the end; *value and *where (each may be NULL) receive its value and
 * origin.  Strings are owned by cfg. */
const char *nn_config_key_at(const nn_config *cfg, const char *section,
                             size_t i, const char **value, const char **where);

/* The i-th section in order of first appearance (file order, then --set),
 * keys or none, or NULL past the end; *where (may be NULL) receives where
 * it first appears.  A [layer NAME] header that appears twice in the file
 * is a load error. */
const char *nn_config_section_at(const nn_config *cfg, size_t i,
                                 const char **where);

/* Fail if the config has a section not in `names` (NULL-terminated; an
 * entry "PREFIX *" accepts every "PREFIX NAME"). */
int nn_config_check_sections(const nn_config *cfg, const char *const *names,
                             nn_error *err);

/* Validate [section] against `table` ({NULL}-terminated) and fill
 * values[k] for table[k]: defaults for missing keys, strict parsing,
 * bounds.  Keys in `extra` (NULL-terminated, may be NULL) are accepted and
 * skipped (e.g. "type").  An unknown key fails with its file, line, section
 * and the list of accepted keys; `owner` names the table's owner in
 * messages (e.g. "sgd").  String values point into cfg. */
int nn_config_resolve(const nn_config *cfg, const char *section,
                      const char *owner, const nn_option *table,
                      const char *const *extra, nn_value *values,
                      nn_error *err);
/* Parse one value against an option (shared with resolve; used by tests). */
int nn_option_parse(const nn_option *opt, const char *text, nn_value *out,
                    nn_error *err);
/* Number of entries in a {NULL}-terminated option table (0 for NULL). */
size_t nn_option_count(const nn_option *table);

#ifdef __cplusplus
}
#endif
#endif /* NN_CONFIG_H */
