/* Plugin discovery, loading and validation: the only file that calls
 * dlopen/dlsym/dlclose.  See <nn/registry.h>.
 *
 * Plain dlopen (not libltdl) so that the user sees the loader's real reason
 * (a missing dependency, an undefined symbol, a file that is not ELF). */
#include <config.h>

#include <stddef.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "strlist.h"
#include <nn/config.h>
#include <nn/registry.h>

/* The descriptor and ops tables of ABI 2.0: every later minor appends, so
 * a 2.x plugin's tables are at least this large. */
#define NN_PLUGIN_V2_0_SIZE sizeof(nn_plugin)
#define NN_OPS_V2_0_SIZE(type) sizeof(type)

struct nn_loaded {
  void *handle;           /* dlopen handle, closed by nn_plugin_close */
  const nn_plugin *desc;  /* lives in the plugin's memory */
  char *path;             /* owned */
};

const char *nn_plugin_dir(void) { return NN_PLUGINDIR; }

char *nn_plugin_default_path(char *buf, size_t size) {
  const char *env = getenv("NN_PLUGIN_PATH");
  if (env && *env)
    snprintf(buf, size, "%s:%s", env, NN_PLUGINDIR);
  else
    snprintf(buf, size, "%s", NN_PLUGINDIR);
  return buf;
}

const char *nn_kind_name(uint32_t kind) {
  switch (kind) {
    case NN_KIND_MODEL: return "model";
    case NN_KIND_OPTIMIZER: return "optimizer";
    case NN_KIND_LAYER: return "layer";
  }
  return "?";
}

const nn_plugin *nn_loaded_desc(const nn_loaded *p) { return p->desc; }

const char *nn_loaded_path(const nn_loaded *p) { return p->path; }

void nn_plugin_close(nn_loaded *p) {
  if (!p) return;
  if (p->handle) dlclose(p->handle);
  free(p->path);
  free(p);
}

/* The stem of a plugin file: "/x/softmax.so" -> "softmax". */
static void file_stem(const char *path, char *buf, size_t size) {
  const char *base = strrchr(path, '/');
  snprintf(buf, size, "%s", base ? base + 1 : path);
  size_t n = strlen(buf);
  if (n > 3 && !strcmp(buf + n - 3, ".so")) buf[n - 3] = '\0';
}

/* "a model", "an optimizer", "a layer". */
static const char *a_kind(uint32_t kind) {
  switch (kind) {
    case NN_KIND_MODEL: return "a model";
    case NN_KIND_OPTIMIZER: return "an optimizer";
    case NN_KIND_LAYER: return "a layer";
  }
  return "an unknown";
}

/* The ops table of the descriptor's kind: its size must cover ABI 2.0's
 * table and the operations every plugin of the kind needs must be there. */
static int validate_ops(const nn_plugin *d, const char *path, nn_error *err) {
  uint32_t size = 0, need = 0;
  int complete = 0;
  const char *required = "";
  if (d->kind == NN_KIND_MODEL && d->model) {
    const nn_model_ops *m = d->model;
    size = m->size, need = NN_OPS_V2_0_SIZE(nn_model_ops);
    complete = m->create && m->destroy && m->params && m->forward && m->backward;
    required = "create, destroy, params, forward, backward";
  } else if (d->kind == NN_KIND_OPTIMIZER && d->optim) {
    const nn_optim_ops *o = d->optim;
    size = o->size, need = NN_OPS_V2_0_SIZE(nn_optim_ops);
    complete = o->create && o->destroy && o->step;
    required = "create, destroy, step";
  } else if (d->kind == NN_KIND_LAYER && d->layer) {
    const nn_layer_ops *l = d->layer;
    size = l->size, need = NN_OPS_V2_0_SIZE(nn_layer_ops);
    complete = l->create && l->destroy && l->forward && l->backward;
    required = "create, destroy, forward, backward";
  } else if (d->kind == NN_KIND_MODEL || d->kind == NN_KIND_OPTIMIZER ||
             d->kind == NN_KIND_LAYER) {
    return nn_error_set(err, NN_EPLUGIN,
                        "%s: '%s' is %s plugin without its operations table",
                        path, d->name, a_kind(d->kind));
  } else {
    return nn_error_set(err, NN_EPLUGIN, "%s: plugin '%s' has unknown kind %u",
                        path, d->name, (unsigned)d->kind);
  }
  if (size == 0)
    return nn_error_set(err, NN_EPLUGIN,
                        "%s: the operations table of %s plugin '%s' has no "
                        "size (set .size = sizeof the table)",
                        path, nn_kind_name(d->kind), d->name);
  if (size < need)
    return nn_error_set(err, NN_EPLUGIN,
                        "%s: the operations table of %s plugin '%s' is %u "
                        "bytes, ABI 2.0's is %u: it was not built against "
                        "<nn/plugin.h>",
                        path, nn_kind_name(d->kind), d->name, (unsigned)size,
                        (unsigned)need);
  if (!complete)
    return nn_error_set(err, NN_EPLUGIN,
                        "%s: %s plugin '%s' lacks required operations (%s)",
                        path, nn_kind_name(d->kind), d->name, required);
  return NN_OK;
}

/* Keys a plugin may not declare: the core reads them from the section
 * itself. */
static const char *const reserved_keys[] = {"type", "init_from", NULL};

/* The option table: keys present, unique, not reserved, of a known type;
 * every default parses and is within its bounds. */
static int validate_options(const nn_plugin *d, const char *path,
                            nn_error *err) {
  if (!d->options) return NN_OK;
  for (size_t i = 0; d->options[i].key; i++) {
    const nn_option *o = &d->options[i];
    if (!*o->key)
      return nn_error_set(err, NN_EPLUGIN, "%s: plugin '%s': option %zu has "
                          "an empty key", path, d->name, i);
    for (size_t r = 0; reserved_keys[r]; r++)
      if (!strcmp(o->key, reserved_keys[r]))
        return nn_error_set(err, NN_EPLUGIN,
                            "%s: plugin '%s' declares the option '%s', which "
                            "is reserved for the core", path, d->name, o->key);
    for (size_t j = 0; j < i; j++)
      if (!strcmp(d->options[j].key, o->key))
        return nn_error_set(err, NN_EPLUGIN,
                            "%s: plugin '%s' declares the option '%s' twice",
                            path, d->name, o->key);
    if (o->type < NN_OPT_INT || o->type > NN_OPT_STRING)
      return nn_error_set(err, NN_EPLUGIN,
                          "%s: plugin '%s': option '%s' has unknown type %u",
                          path, d->name, o->key, (unsigned)o->type);
    if (o->def) {
      nn_value v;
      nn_error e;
      if (nn_option_parse(o, o->def, &v, &e))
        return nn_error_set(err, NN_EPLUGIN,
                            "%s: plugin '%s': the default of option '%s' is "
                            "not valid: %s", path, d->name, o->key, e.msg);
    }
  }
  return NN_OK;
}

/* Everything we check before trusting a descriptor. */
static int validate(const nn_plugin *d, const char *path, const char *name,
                    uint32_t want_kind, nn_error *err) {
  if (d->abi_major != NN_ABI_MAJOR)
    return nn_error_set(err, NN_EABI,
                        "%s: plugin built for nnrun plugin ABI %u.%u; this nnrun "
                        "supports ABI %u.x (up to %u.%u): rebuild the plugin "
                        "against the installed headers (pkg-config --cflags nn)",
                        path, (unsigned)d->abi_major, (unsigned)d->abi_minor,
                        NN_ABI_MAJOR, NN_ABI_MAJOR, NN_ABI_MINOR);
  if (d->abi_minor > NN_ABI_MINOR)
    return nn_error_set(err, NN_EABI,
                        "%s: plugin built for nnrun plugin ABI %u.%u, newer than "
                        "this nnrun's %u.%u: update nnrun, or rebuild the plugin "
                        "against the installed headers (pkg-config --cflags nn)",
                        path, (unsigned)d->abi_major, (unsigned)d->abi_minor,
                        NN_ABI_MAJOR, NN_ABI_MINOR);
  if (d->size < NN_PLUGIN_V2_0_SIZE)
    return nn_error_set(err, NN_EPLUGIN,
                        "%s: incomplete plugin descriptor (%u bytes, ABI %u.%u "
                        "needs at least %zu)", path, (unsigned)d->size,
                        (unsigned)d->abi_major, (unsigned)d->abi_minor,
                        (size_t)NN_PLUGIN_V2_0_SIZE);
  if (d->gsl_major != GSL_MAJOR_VERSION)
    return nn_error_set(err, NN_EABI,
                        "%s: plugin built against GSL %u.x, nnrun uses GSL %d.x",
                        path, (unsigned)d->gsl_major, GSL_MAJOR_VERSION);
  if (!d->name || !d->version)
    return nn_error_set(err, NN_EPLUGIN, "%s: plugin descriptor has no name "
                        "or version", path);
  if (name && strcmp(d->name, name))
    return nn_error_set(err, NN_EPLUGIN,
                        "%s: file is named '%s' but the plugin calls itself '%s'",
                        path, name, d->name);
  int rc = validate_ops(d, path, err);
  if (!rc) rc = validate_options(d, path, err);
  if (rc) return rc;
  if (want_kind && d->kind != want_kind)
    return nn_error_set(err, NN_EPLUGIN,
                        "%s: '%s' is %s plugin, but %s is needed here", path,
                        d->name, a_kind(d->kind), a_kind(want_kind));
  return NN_OK;
}

/* dlopen + dlsym + validate one file.  name = expected plugin name or NULL. */
static int open_file(nn_loaded **out, const char *path, const char *name,
                     uint32_t want_kind, nn_error *err) {
  *out = NULL;
  dlerror();
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *why = dlerror();
    return nn_error_set(err, NN_EPLUGIN,
                        "cannot load plugin %s: %s (check its dependencies with "
                        "ldd)", path, why ? why : "unknown reason");
  }
  const nn_plugin *d = dlsym(h, NN_PLUGIN_SYMBOL);
  if (!d) {
    dlclose(h);
    return nn_error_set(err, NN_EPLUGIN,
                        "%s: not an nnrun plugin (it does not export the symbol "
                        "'%s')", path, NN_PLUGIN_SYMBOL);
  }
  int rc = validate(d, path, name, want_kind, err);
  nn_loaded *p = rc ? NULL : calloc(1, sizeof *p);
  if (!rc && p) p->path = strdup(path);
  if (rc || !p || !p->path) {
    if (p) free(p);
    dlclose(h);
    return rc ? rc : nn_error_set(err, NN_ENOMEM, "out of memory");
  }
  p->handle = h;
  p->desc = d;
  *out = p;
  return NN_OK;
}

static int is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Call fn(dir) for each non-empty element of a colon-separated list; stops
 * at the first non-zero return and returns it. */
static int each_dir(const char *search_path, int (*fn)(const char *, void *),
                    void *user) {
  const char *p = search_path ? search_path : "";
  while (*p) {
    const char *colon = strchr(p, ':');
    size_t len = colon ? (size_t)(colon - p) : strlen(p);
    if (len > 0 && len < 4096) {
      char dir[4096];
      memcpy(dir, p, len);
      dir[len] = '\0';
      int rc = fn(dir, user);
      if (rc) return rc;
    }
    p += len;
    if (*p == ':') p++;
  }
  return 0;
}

typedef struct find_ctx {
  const char *name;
  char path[4200];
} find_ctx;

static int find_in_dir(const char *dir, void *user) {
  find_ctx *f = user;
  snprintf(f->path, sizeof f->path, "%s/%s.so", dir, f->name);
  return is_file(f->path);
}

/* "softmax, twolayer" for the plugins of a kind on the path. */
static void available(const char *search_path, uint32_t kind, char *buf,
                      size_t size) {
  nn_plugin_info *list = NULL;
  size_t n = 0;
  buf[0] = '\0';
  if (nn_plugin_list(search_path, &list, &n, NULL) == NN_OK) {
    for (size_t i = 0; i < n; i++) {
      if (!list[i].kind || (kind && list[i].kind != kind)) continue;
      nn__list_add(buf, size, "", list[i].name, "");
    }
  }
  free(list);
  if (!buf[0]) snprintf(buf, size, "none");
}

int nn_plugin_open(nn_loaded **out, const char *name, uint32_t want_kind,
                   const char *search_path, nn_error *err) {
  *out = NULL;
  if (!name || !*name)
    return nn_error_set(err, NN_EINVAL, "empty plugin name");
  if (strchr(name, '/')) { /* an explicit path */
    if (!is_file(name))
      return nn_error_set(err, NN_ENOTFOUND, "plugin file %s: %s", name,
                          strerror(ENOENT));
    return open_file(out, name, NULL, want_kind, err);
  }
  find_ctx f = {.name = name};
  if (!each_dir(search_path, find_in_dir, &f)) {
    char avail[1024];
    available(search_path, want_kind, avail, sizeof avail);
    return nn_error_set(err, NN_ENOTFOUND,
                        "no %s%splugin named '%s' (searched %s); available: %s",
                        want_kind ? nn_kind_name(want_kind) : "",
                        want_kind ? " " : "", name,
                        search_path && *search_path ? search_path : "nothing",
                        avail);
  }
  return open_file(out, f.path, name, want_kind, err);
}

/* ------------------------------------------------------------- listing */

typedef struct list_ctx {
  nn_plugin_info *items;
  size_t n, cap;
  int oom;
} list_ctx;

static int seen(const list_ctx *l, const char *name) {
  for (size_t i = 0; i < l->n; i++)
    if (!strcmp(l->items[i].name, name)) return 1;
  return 0;
}

static int list_dir(const char *dir, void *user) {
  list_ctx *l = user;
  DIR *d = opendir(dir);
  if (!d) return 0; /* a missing directory on the path is not an error */
  struct dirent *de;
  while ((de = readdir(d))) {
    size_t len = strlen(de->d_name);
    if (len <= 3 || strcmp(de->d_name + len - 3, ".so")) continue;
    char path[4200], stem[256];
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    file_stem(de->d_name, stem, sizeof stem);
    if (!is_file(path) || seen(l, stem)) continue;
    if (l->n == l->cap) {
      size_t cap = l->cap ? 2 * l->cap : 16;
      nn_plugin_info *p = realloc(l->items, cap * sizeof *p);
      if (!p) {
        l->oom = 1;
        break;
      }
      l->items = p;
      l->cap = cap;
    }
    nn_plugin_info *it = &l->items[l->n++];
    memset(it, 0, sizeof *it);
    snprintf(it->name, sizeof it->name, "%s", stem);
    snprintf(it->path, sizeof it->path, "%s", path);
    nn_loaded *p = NULL;
    nn_error e;
    if (open_file(&p, path, stem, 0, &e) == NN_OK) {
      it->kind = p->desc->kind;
      snprintf(it->version, sizeof it->version, "%s", p->desc->version);
      nn_plugin_close(p);
    } else {
      snprintf(it->problem, sizeof it->problem, "%s", e.msg);
    }
  }
  closedir(d);
  return l->oom;
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const nn_plugin_info *)a)->name,
                ((const nn_plugin_info *)b)->name);
}

int nn_plugin_list(const char *search_path, nn_plugin_info **out, size_t *n,
                   nn_error *err) {
  list_ctx l = {0};
  each_dir(search_path, list_dir, &l);
  if (l.oom) {
    free(l.items);
    *out = NULL;
    *n = 0;
    return nn_error_set(err, NN_ENOMEM, "out of memory");
  }
  if (l.n) qsort(l.items, l.n, sizeof *l.items, by_name);
  *out = l.items;
  *n = l.n;
  return NN_OK;
}

/* ------------------------------------------------------------- instances */

int nn_check_param_names(const char *owner, const nn_param *params, size_t n,
                         const nn_param *state, size_t n_state,
                         nn_error *err) {
  const size_t total = n + n_state;
  for (size_t i = 0; i < total; i++) {
    const nn_param *a = i < n ? &params[i] : &state[i - n];
    if (!a->name || !*a->name || !a->value)
      return nn_error_set(err, NN_EPLUGIN,
                          "%s: %s %zu has no name or no value", owner,
                          i < n ? "parameter" : "state buffer",
                          i < n ? i : i - n);
    if (i < n && (!a->grad || a->grad->size1 != a->value->size1 ||
                  a->grad->size2 != a->value->size2))
      return nn_error_set(err, NN_EPLUGIN,
                          "%s: parameter '%s' has no gradient of its shape",
                          owner, a->name);
    for (size_t j = 0; j < i; j++) {
      const nn_param *b = j < n ? &params[j] : &state[j - n];
      if (!strcmp(a->name, b->name))
        return nn_error_set(err, NN_EPLUGIN, "%s: two %s named '%s'", owner,
                            j < n && i < n ? "parameters" : "parameters or state buffers",
                            a->name);
    }
  }
  return NN_OK;
}
