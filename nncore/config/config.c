/* SPDX-License-Identifier: GPL-3.0-or-later */
/* INI configuration: parsing (inih), provenance of every value, and strict
 * validation against option tables.  See <nn/config.h>. */
#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>

#include "util/strlist.h"
#include <nn/config.h>

/* One key = value, with where it came from. */
typedef struct entry {
  char *section, *key, *value;
  char *where; /* "FILE:LINE" or "--set"; owned by the entry */
} entry;

/* A section as it first appears: in the file (its header's line) or in
 * --set. */
typedef struct section {
  char *name, *where; /* owned */
} section;

struct nn_config {
  char *path; /* as given by the user */
  char *name; /* stem of path */
  entry *entries;
  size_t n, cap;
  section *sections; /* in order of first appearance */
  size_t n_sections, cap_sections;
};

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static void entry_free(entry *e) {
  free(e->section);
  free(e->key);
  free(e->value);
  free(e->where);
}

void nn_config_free(nn_config *cfg) {
  if (!cfg) return;
  for (size_t i = 0; i < cfg->n_sections; i++) {
    free(cfg->sections[i].name);
    free(cfg->sections[i].where);
  }
  free(cfg->sections);
  for (size_t i = 0; i < cfg->n; i++) entry_free(&cfg->entries[i]);
  free(cfg->entries);
  free(cfg->path);
  free(cfg->name);
  free(cfg);
}

static entry *find_entry(const nn_config *cfg, const char *section,
                         const char *key) {
  for (size_t i = 0; i < cfg->n; i++)
    if (!strcmp(cfg->entries[i].section, section) &&
        !strcmp(cfg->entries[i].key, key))
      return &cfg->entries[i];
  return NULL;
}

static const section *find_section(const nn_config *cfg, const char *name) {
  for (size_t i = 0; i < cfg->n_sections; i++)
    if (!strcmp(cfg->sections[i].name, name)) return &cfg->sections[i];
  return NULL;
}

/* Remember a section unless it is known; copies the strings. */
static int add_section(nn_config *cfg, const char *name, const char *where) {
  if (find_section(cfg, name)) return NN_OK;
  if (cfg->n_sections == cfg->cap_sections) {
    size_t cap = cfg->cap_sections ? 2 * cfg->cap_sections : 8;
    section *p = realloc(cfg->sections, cap * sizeof *p);
    if (!p) return NN_ENOMEM;
    cfg->sections = p;
    cfg->cap_sections = cap;
  }
  section *sec = &cfg->sections[cfg->n_sections];
  sec->name = dup_str(name);
  sec->where = dup_str(where);
  if (!sec->name || !sec->where) {
    free(sec->name);
    free(sec->where);
    return NN_ENOMEM;
  }
  cfg->n_sections++;
  return NN_OK;
}

/* Append an entry; takes nothing over from the caller (copies strings). */
static int add_entry(nn_config *cfg, const char *section, const char *key,
                     const char *value, const char *where) {
  if (cfg->n == cfg->cap) {
    size_t cap = cfg->cap ? 2 * cfg->cap : 16;
    entry *e = realloc(cfg->entries, cap * sizeof *e);
    if (!e) return NN_ENOMEM;
    cfg->entries = e;
    cfg->cap = cap;
  }
  if (add_section(cfg, section, where) != NN_OK) return NN_ENOMEM;
  entry *e = &cfg->entries[cfg->n];
  e->section = dup_str(section);
  e->key = dup_str(key);
  e->value = dup_str(value);
  e->where = dup_str(where);
  if (!e->section || !e->key || !e->value || !e->where) {
    entry_free(e);
    return NN_ENOMEM;
  }
  cfg->n++;
  return NN_OK;
}

/* ------------------------------------------------------------- parsing */

/* inih's handler is not told the line number (Debian builds it with
 * INI_HANDLER_LINENO 0), so the reader counts lines itself: inih calls the
 * handler for a line right after reading it.  The reader also catches lines
 * longer than inih's buffer, which inih would silently cut in two. */
typedef struct parse_ctx {
  FILE *fp;
  int line;          /* line last handed to inih (1-based) */
  int long_line;     /* first over-long line, 0 if none */
  nn_config *cfg;
  int err_code;      /* first handler error */
  int err_line;
  char err_msg[400];
} parse_ctx;

static int trim_into(char *buf, size_t size, const char *s, size_t len);

/* Layer sections are told apart by name, so one named twice is an error. */
#define LAYER_PREFIX "layer "

/* A section header line: inih does not report headers (Debian builds it
 * without INI_CALL_HANDLER_ON_NEW_SECTION), so sections with no keys and
 * the order of sections are learned here. */
static void note_section(parse_ctx *ctx, const char *line) {
  const char *close = strchr(line, ']');
  char name[256];
  if (!close || ctx->err_code ||
      !trim_into(name, sizeof name, line + 1, (size_t)(close - line - 1)))
    return; /* inih reports the syntax error */
  char where[4200];
  snprintf(where, sizeof where, "%s:%d", ctx->cfg->path, ctx->line);
  const section *seen = find_section(ctx->cfg, name);
  if (seen && !strncmp(name, LAYER_PREFIX, strlen(LAYER_PREFIX))) {
    ctx->err_code = NN_ECONFIG;
    ctx->err_line = ctx->line;
    snprintf(ctx->err_msg, sizeof ctx->err_msg,
             "%.120s: [%.60s] appears twice (first at %.120s); every layer needs a name "
             "of its own", where, name, seen->where);
  } else if (add_section(ctx->cfg, name, where) != NN_OK) {
    ctx->err_code = NN_ENOMEM;
    ctx->err_line = ctx->line;
    snprintf(ctx->err_msg, sizeof ctx->err_msg, "%s: out of memory",
             ctx->cfg->path);
  }
}

static char *read_line(char *buf, int size, void *stream) {
  parse_ctx *ctx = stream;
  if (!fgets(buf, size, ctx->fp)) return NULL;
  ctx->line++;
  size_t len = strlen(buf);
  if (len > 0 && buf[len - 1] != '\n' && !feof(ctx->fp)) {
    int c = fgetc(ctx->fp);
    if (c == '\n' || c == EOF) return buf; /* the line just fit */
    /* Too long: remember it, skip the rest, hand inih an empty line so the
     * line numbers of later lines stay right. */
    if (!ctx->long_line) ctx->long_line = ctx->line;
    while (c != '\n' && c != EOF) c = fgetc(ctx->fp);
    buf[0] = '\0';
  }
  /* inih takes an indented line for the continuation of the key above it
   * (so `  batch_size = 32` under `epochs = 5` was "epochs set twice"):
   * here indentation means nothing, so it is dropped. */
  size_t lead = strspn(buf, " \t");
  if (lead) memmove(buf, buf + lead, strlen(buf + lead) + 1);
  if (buf[0] == '[') note_section(ctx, buf);
  return buf;
}

static int handle_pair(void *user, const char *section, const char *key,
                       const char *value) {
  parse_ctx *ctx = user;
  const entry *e;
  if (ctx->err_code) return 1; /* keep the first error only */
  const char *path = ctx->cfg->path;
  if (!*section) {
    ctx->err_code = NN_ECONFIG;
    snprintf(ctx->err_msg, sizeof ctx->err_msg,
             "%s:%d: key '%s' is outside any [section]", path, ctx->line, key);
  } else if ((e = find_entry(ctx->cfg, section, key))) {
    ctx->err_code = NN_ECONFIG;
    snprintf(ctx->err_msg, sizeof ctx->err_msg,
             "%s:%d: [%s] %s is set twice (first at %s)", path, ctx->line,
             section, key, e->where);
  } else {
    char where[4200];
    snprintf(where, sizeof where, "%s:%d", path, ctx->line);
    if (add_entry(ctx->cfg, section, key, value, where) != NN_OK) {
      ctx->err_code = NN_ENOMEM;
      snprintf(ctx->err_msg, sizeof ctx->err_msg, "%s: out of memory", path);
    }
  }
  if (ctx->err_code) {
    ctx->err_line = ctx->line;
    return 0;
  }
  return 1;
}

static const char *path_stem(const char *path, char *buf, size_t size) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  snprintf(buf, size, "%s", base);
  char *dot = strrchr(buf, '.');
  if (dot && dot != buf) *dot = '\0';
  return buf;
}

int nn_config_load(nn_config **out, const char *path, nn_error *err) {
  *out = NULL;
  nn_config *cfg = calloc(1, sizeof *cfg);
  if (!cfg) return nn_error_set(err, NN_ENOMEM, "out of memory");
  char stem[256];
  cfg->path = dup_str(path);
  cfg->name = dup_str(path_stem(path, stem, sizeof stem));
  if (!cfg->path || !cfg->name) {
    nn_config_free(cfg);
    return nn_error_set(err, NN_ENOMEM, "out of memory");
  }
  parse_ctx ctx = {.cfg = cfg};
  ctx.fp = fopen(path, "r");
  if (!ctx.fp) {
    int e = errno;
    /* Relative paths resolve against the current directory: say which. */
    char tried[4200] = "";
    char cwd[2048];
    if (path[0] != '/' && getcwd(cwd, sizeof cwd))
      snprintf(tried, sizeof tried, " (tried %s/%s)", cwd, path);
    nn_config_free(cfg);
    return nn_error_set(err, NN_ECONFIG, "cannot open config file '%s'%s: %s",
                        path, tried, strerror(e));
  }
  int rc = ini_parse_stream(read_line, &ctx, handle_pair, &ctx);
  fclose(ctx.fp);
  /* Report whichever problem comes first in the file. */
  int first = 0, code;
  if (ctx.long_line) first = ctx.long_line;
  if (rc > 0 && (!first || rc < first)) first = rc;
  if (ctx.err_code && ctx.err_line == first && ctx.long_line != first) {
    code = nn_error_set(err, ctx.err_code, "%s", ctx.err_msg);
  } else if (first && first == ctx.long_line) {
    code = nn_error_set(err, NN_ECONFIG,
                        "%s:%d: line too long (at most %d characters)", path,
                        first, INI_MAX_LINE - 2);
  } else if (rc > 0) {
    code = nn_error_set(err, NN_ECONFIG,
                        "%s:%d: syntax error: expected '[section]', 'key = "
                        "value' or a comment", path, rc);
  } else if (rc < 0) {
    code = nn_error_set(err, rc == -2 ? NN_ENOMEM : NN_EIO, "%s: cannot read",
                        path);
  } else if (ctx.err_code) { /* not expected: inih reports a handler's line */
    code = nn_error_set(err, ctx.err_code, "%s", ctx.err_msg);
  } else {
    *out = cfg;
    return NN_OK;
  }
  nn_config_free(cfg);
  return code; /* the right code even when err is NULL */
}

/* s[0..len) without surrounding blanks into buf; 0 if it does not fit. */
static int trim_into(char *buf, size_t size, const char *s, size_t len) {
  while (len && isspace((unsigned char)*s)) s++, len--;
  while (len && isspace((unsigned char)s[len - 1])) len--;
  if (len >= size) return 0;
  memcpy(buf, s, len);
  buf[len] = '\0';
  return 1;
}

int nn_config_set(nn_config *cfg, const char *assignment, nn_error *err) {
  const char *dot = strchr(assignment, '.');
  const char *eq = strchr(assignment, '=');
  if (!dot || !eq || dot > eq)
    return nn_error_set(err, NN_ECONFIG,
                        "--set '%s': expected SECTION.KEY=VALUE, e.g. "
                        "optimizer.learning_rate=0.01", assignment);
  char section[128], key[128], value[1024];
  if (!trim_into(section, sizeof section, assignment, (size_t)(dot - assignment)) ||
      !trim_into(key, sizeof key, dot + 1, (size_t)(eq - dot - 1)) ||
      !trim_into(value, sizeof value, eq + 1, strlen(eq + 1)))
    return nn_error_set(err, NN_ECONFIG,
                        "--set '%.60s...': too long (sections and keys take "
                        "up to %zu characters, values up to %zu)",
                        assignment, sizeof section - 1, sizeof value - 1);
  if (!*section || !*key)
    return nn_error_set(err, NN_ECONFIG,
                        "--set '%s': empty section or key", assignment);
  entry *e = find_entry(cfg, section, key);
  if (e) {
    char *v = dup_str(value), *w = dup_str("--set");
    if (!v || !w) {
      free(v);
      free(w);
      return nn_error_set(err, NN_ENOMEM, "out of memory");
    }
    free(e->value);
    free(e->where);
    e->value = v;
    e->where = w;
    return NN_OK;
  }
  if (add_entry(cfg, section, key, value, "--set") != NN_OK)
    return nn_error_set(err, NN_ENOMEM, "out of memory");
  return NN_OK;
}

const char *nn_config_path(const nn_config *cfg) { return cfg->path; }
const char *nn_config_name(const nn_config *cfg) { return cfg->name; }

const char *nn_config_get(const nn_config *cfg, const char *section,
                          const char *key, const char **where) {
  const entry *e = find_entry(cfg, section, key);
  if (where) *where = e ? e->where : cfg->path;
  return e ? e->value : NULL;
}

const char *nn_config_key_at(const nn_config *cfg, const char *section,
                             size_t i, const char **value, const char **where) {
  for (size_t k = 0; k < cfg->n; k++) {
    const entry *e = &cfg->entries[k];
    if (strcmp(e->section, section) || i--) continue;
    if (value) *value = e->value;
    if (where) *where = e->where;
    return e->key;
  }
  return NULL;
}

const char *nn_config_section_at(const nn_config *cfg, size_t i,
                                 const char **where) {
  if (i >= cfg->n_sections) return NULL;
  if (where) *where = cfg->sections[i].where;
  return cfg->sections[i].name;
}

/* name matches a pattern of names: exact, or "PREFIX *" for PREFIX and a
 * non-empty rest ("layer *" matches "layer fc1"). */
static int section_matches(const char *name, const char *pattern) {
  size_t n = strlen(pattern);
  if (n >= 2 && !strcmp(pattern + n - 2, " *"))
    return !strncmp(name, pattern, n - 1) && name[n - 1] &&
           !isspace((unsigned char)name[n - 1]);
  return !strcmp(name, pattern);
}

int nn_config_check_sections(const nn_config *cfg, const char *const *names,
                             nn_error *err) {
  for (size_t i = 0; i < cfg->n_sections; i++) {
    const section *sec = &cfg->sections[i];
    int known = 0;
    for (const char *const *p = names; *p && !known; p++)
      known = section_matches(sec->name, *p);
    if (known) continue;
    char list[512] = "";
    for (const char *const *p = names; *p; p++) {
      char shown[128];
      snprintf(shown, sizeof shown, "%s", *p);
      size_t n = strlen(shown);
      if (n >= 2 && !strcmp(shown + n - 2, " *")) /* "layer *" -> "layer NAME" */
        snprintf(shown + n - 1, sizeof shown - (n - 1), "NAME");
      nn__list_add(list, sizeof list, "[", shown, "]");
    }
    return nn_error_set(err, NN_ECONFIG,
                        "%s: unknown section [%s]; expected one of %s",
                        sec->where, sec->name, list);
  }
  return NN_OK;
}

/* -------------------------------------------------------- validation */

size_t nn_option_count(const nn_option *table) {
  size_t n = 0;
  while (table && table[n].key) n++;
  return n;
}

static const char *type_name(uint32_t type) {
  switch (type) {
    case NN_OPT_INT: return "an integer";
    case NN_OPT_REAL: return "a number";
    case NN_OPT_BOOL: return "true or false";
    case NN_OPT_STRING: return "a string";
  }
  return "?";
}

static int check_bounds(const nn_option *opt, double v, const char *text,
                        nn_error *err) {
  if (opt->bounds & NN_OPT_HAS_MIN) {
    int excl = (opt->bounds & NN_OPT_MIN_EXCLUSIVE) != 0;
    if (excl ? !(v > opt->min) : !(v >= opt->min))
      return nn_error_set(err, NN_ECONFIG, "%s = %s is out of range: must be %s %g",
                          opt->key, text, excl ? ">" : ">=", opt->min);
  }
  if (opt->bounds & NN_OPT_HAS_MAX) {
    int excl = (opt->bounds & NN_OPT_MAX_EXCLUSIVE) != 0;
    if (excl ? !(v < opt->max) : !(v <= opt->max))
      return nn_error_set(err, NN_ECONFIG, "%s = %s is out of range: must be %s %g",
                          opt->key, text, excl ? "<" : "<=", opt->max);
  }
  return NN_OK;
}

int nn_option_parse(const nn_option *opt, const char *text, nn_value *out,
                    nn_error *err) {
  char *end = NULL;
  errno = 0;
  switch (opt->type) {
    case NN_OPT_INT: {
      long long v = strtoll(text, &end, 10);
      if (end == text || *end || errno == ERANGE)
        break;
      out->i = v;
      return check_bounds(opt, (double)v, text, err);
    }
    case NN_OPT_REAL: {
      double v = strtod(text, &end);
      if (end == text || *end || errno == ERANGE || !isfinite(v)) break;
      out->r = v;
      return check_bounds(opt, v, text, err);
    }
    case NN_OPT_BOOL: {
      static const char *const yes[] = {"true", "yes", "on", "1"};
      static const char *const no[] = {"false", "no", "off", "0"};
      for (size_t k = 0; k < 4; k++) {
        if (!strcasecmp(text, yes[k])) { out->b = 1; return NN_OK; }
        if (!strcasecmp(text, no[k])) { out->b = 0; return NN_OK; }
      }
      break;
    }
    case NN_OPT_STRING:
      if (!*text) break;
      out->s = text;
      return NN_OK;
    default:
      return nn_error_set(err, NN_EPLUGIN, "option '%s' has unknown type %u",
                          opt->key, (unsigned)opt->type);
  }
  return nn_error_set(err, NN_ECONFIG, "%s = '%s': expected %s", opt->key, text,
                      type_name(opt->type));
}

static void accepted_keys(const nn_option *table, const char *const *extra,
                          char *buf, size_t size) {
  buf[0] = '\0';
  for (const char *const *p = extra; p && *p; p++)
    nn__list_add(buf, size, "", *p, "");
  for (size_t k = 0; table && table[k].key; k++)
    nn__list_add(buf, size, "", table[k].key, "");
  if (!buf[0]) snprintf(buf, size, "(no keys)");
}

int nn_config_resolve(const nn_config *cfg, const char *section,
                      const char *owner, const nn_option *table,
                      const char *const *extra, nn_value *values,
                      nn_error *err) {
  /* Unknown keys first: a typo must never be silently ignored. */
  for (size_t i = 0; i < cfg->n; i++) {
    const entry *e = &cfg->entries[i];
    if (strcmp(e->section, section) || nn__in_list(e->key, extra)) continue;
    int known = 0;
    for (size_t k = 0; table && table[k].key; k++)
      if (!strcmp(table[k].key, e->key)) known = 1;
    if (known) continue;
    char keys[600];
    accepted_keys(table, extra, keys, sizeof keys);
    return nn_error_set(err, NN_ECONFIG,
                        "%s: unknown key '%s' in [%s]; %s accepts: %s",
                        e->where, e->key, section, owner, keys);
  }
  for (size_t k = 0; table && table[k].key; k++) {
    const nn_option *opt = &table[k];
    const entry *e = find_entry(cfg, section, opt->key);
    if (!e && !opt->def)
      return nn_error_set(err, NN_ECONFIG, "%s: [%s] needs '%s' (%s)", cfg->path,
                          section, opt->key, opt->help ? opt->help : owner);
    nn_error why;
    if (nn_option_parse(opt, e ? e->value : opt->def, &values[k], &why)) {
      if (!e) /* a default that does not parse is the plugin's bug */
        return nn_error_set(err, NN_EPLUGIN, "%s: bad default for '%s': %s",
                            owner, opt->key, why.msg);
      return nn_error_set(err, why.code, "%s: [%s] %s", e->where, section,
                          why.msg);
    }
  }
  return NN_OK;
}
