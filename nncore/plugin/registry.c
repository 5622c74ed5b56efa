/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Plugin discovery, loading and validation: the only file that calls
 * dlopen/dlsym/dlclose.  See <nn/registry.h>.
 *
 * Plain dlopen (not libltdl) so that the user sees the loader's real reason
 * (a missing dependency, an undefined symbol, a file that is not ELF). */
/* For realpath and S_ISVTX (the sticky bit), which are XSI: strict POSIX
 * mode hides them. */
#define _XOPEN_SOURCE 700
#include <config.h>
#include <nn_paths.h>

#include <stddef.h>

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#ifdef __linux__
#include <elf.h>
#endif
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/strlist.h"
#include <nn/config.h>
#include <nn/registry.h>

/* The descriptor and ops tables of ABI 2.0: every later minor appends, so
 * a 2.x plugin's tables are at least this large.  2.1 appended `memory` to
 * the model and layer tables; 2.2 appended `schedule` to the descriptor. */
#define NN_PLUGIN_V2_0_SIZE offsetof(nn_plugin, schedule)
#define NN_SCHEDULE_OPS_V2_2_SIZE sizeof(nn_schedule_ops)
#define NN_MODEL_OPS_V2_0_SIZE offsetof(nn_model_ops, memory)
#define NN_LAYER_OPS_V2_0_SIZE offsetof(nn_layer_ops, memory)
#define NN_OPTIM_OPS_V2_0_SIZE sizeof(nn_optim_ops)
/* An ops table's size covers `member`: a plugin built before the minor
 * that appended it has a smaller table. */
#define NN_OPS_COVERS(type, ops, member)                                     \
  ((ops)->size >= offsetof(type, member) + sizeof(((type *)0)->member))

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
    case NN_KIND_SCHEDULE: return "schedule";
  }
  return "?";
}

const nn_schedule_ops *nn_plugin_schedule_ops(const nn_plugin *d) {
  if (!d || d->kind != NN_KIND_SCHEDULE ||
      d->size < offsetof(nn_plugin, schedule) + sizeof d->schedule)
    return NULL;
  return d->schedule;
}

nn_memory_fn nn_plugin_memory_op(const nn_plugin *d) {
  if (!d) return NULL;
  if (d->kind == NN_KIND_MODEL && d->model &&
      NN_OPS_COVERS(nn_model_ops, d->model, memory))
    return d->model->memory;
  if (d->kind == NN_KIND_LAYER && d->layer &&
      NN_OPS_COVERS(nn_layer_ops, d->layer, memory))
    return d->layer->memory;
  return NULL;
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
    case NN_KIND_SCHEDULE: return "a schedule";
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
    size = m->size, need = NN_MODEL_OPS_V2_0_SIZE;
    complete = m->create && m->destroy && m->params && m->forward && m->backward;
    required = "create, destroy, params, forward, backward";
  } else if (d->kind == NN_KIND_OPTIMIZER && d->optim) {
    const nn_optim_ops *o = d->optim;
    size = o->size, need = NN_OPTIM_OPS_V2_0_SIZE;
    complete = o->create && o->destroy && o->step;
    required = "create, destroy, step";
  } else if (d->kind == NN_KIND_LAYER && d->layer) {
    const nn_layer_ops *l = d->layer;
    size = l->size, need = NN_LAYER_OPS_V2_0_SIZE;
    complete = l->create && l->destroy && l->forward && l->backward;
    required = "create, destroy, forward, backward";
  } else if (d->kind == NN_KIND_SCHEDULE && nn_plugin_schedule_ops(d)) {
    const nn_schedule_ops *s = nn_plugin_schedule_ops(d);
    size = s->size, need = NN_SCHEDULE_OPS_V2_2_SIZE;
    complete = s->create && s->destroy && s->lr;
    required = "create, destroy, lr";
  } else if (d->kind == NN_KIND_MODEL || d->kind == NN_KIND_OPTIMIZER ||
             d->kind == NN_KIND_LAYER || d->kind == NN_KIND_SCHEDULE) {
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
 * itself.  A schedule's section also holds the core's warm-up keys. */
static const char *const reserved_keys[] = {"type", "init_from", NULL};
static const char *const reserved_schedule_keys[] = {
    "warmup_epochs", "warmup_start_factor", "warmup_per_batch", NULL};

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
    for (size_t r = 0; d->kind == NN_KIND_SCHEDULE && reserved_schedule_keys[r];
         r++)
      if (!strcmp(o->key, reserved_schedule_keys[r]))
        return nn_error_set(err, NN_EPLUGIN,
                            "%s: plugin '%s' declares the option '%s', which "
                            "is reserved for the core's warm-up", path,
                            d->name, o->key);
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

/* ------------------------------------------------------------- trust */

#define NN_ALLOW_WRITABLE_ENV "NN_PLUGIN_ALLOW_WRITABLE"

/* Why the plugin file (is_dir 0) or a directory above it (is_dir 1)
 * would let a user other than the caller or root replace the plugin, or
 * NULL.  A world-writable directory with the sticky bit (/tmp) lets
 * others add files but not replace those of the caller. */
static const char *untrusted_why(const struct stat *st, int is_dir, char *buf,
                                 size_t size) {
  if (st->st_uid != geteuid() && st->st_uid != 0) {
    snprintf(buf, size, "is owned by user %lu, neither you (user %lu) nor root",
             (unsigned long)st->st_uid, (unsigned long)geteuid());
    return buf;
  }
  if ((st->st_mode & S_IWOTH) && !(is_dir && (st->st_mode & S_ISVTX)))
    return is_dir ? "is world-writable without the sticky bit"
                  : "is world-writable";
  return NULL;
}

static int refuse_untrusted(const char *plugin, const char *what,
                            const char *where, const char *why,
                            nn_error *err) {
  return nn_error_set(err, NN_EPLUGIN,
                      "refusing to load plugin %s: %s %s %s, so another user "
                      "could put their own code in its place (fix its "
                      "permissions or owner, or set " NN_ALLOW_WRITABLE_ENV
                      "=1 to load it anyway)",
                      plugin, what, where, why);
}

/* dir (absolute, resolved; cut short in place) and every directory above
 * it, up to /. */
static int check_dirs(const char *plugin, char *dir, nn_error *err) {
  for (;;) {
    struct stat st;
    char buf[128];
    if (stat(dir, &st) != 0)
      return nn_error_set(err, NN_EPLUGIN, "cannot check plugin %s: %s: %s",
                          plugin, dir, strerror(errno));
    const char *why = untrusted_why(&st, 1, buf, sizeof buf);
    if (why) return refuse_untrusted(plugin, "the directory", dir, why, err);
    char *slash = strrchr(dir, '/');
    if (!slash || !strcmp(dir, "/")) return NN_OK;
    slash[slash == dir] = '\0'; /* "/a" -> "/" */
  }
}

/* The directory part of path ("." for none), resolved, into out
 * (PATH_MAX bytes). */
static int resolved_dir(const char *path, char *out, nn_error *err) {
  char dir[PATH_MAX];
  const char *slash = strrchr(path, '/');
  if (!slash) snprintf(dir, sizeof dir, ".");
  else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path + (slash == path)),
                path);
  if (!realpath(dir, out))
    return nn_error_set(err, NN_EPLUGIN, "cannot check plugin %s: %s: %s",
                        path, dir, strerror(errno));
  return NN_OK;
}

/* The plugin file, the file it resolves to and every directory above
 * either must be writable by the caller and root alone. */
static int check_trusted(const char *path, nn_error *err) {
  const char *allow = getenv(NN_ALLOW_WRITABLE_ENV);
  if (allow && !strcmp(allow, "1")) return NN_OK;
  char real[PATH_MAX], file_dir[PATH_MAX], link_dir[PATH_MAX], buf[128];
  struct stat st;
  if (!realpath(path, real) || stat(real, &st) != 0)
    return nn_error_set(err, NN_EPLUGIN, "cannot check plugin %s: %s", path,
                        strerror(errno));
  const char *why = untrusted_why(&st, 0, buf, sizeof buf);
  if (why) return refuse_untrusted(path, "the file", real, why, err);
  /* The directories above the file, and above the name it was reached
   * by when that is a link elsewhere (whoever may write there can point
   * the link at other code). */
  int rc = resolved_dir(real, file_dir, err);
  if (!rc) rc = resolved_dir(path, link_dir, err);
  if (!rc && strcmp(link_dir, file_dir)) rc = check_dirs(path, link_dir, err);
  if (!rc) rc = check_dirs(path, file_dir, err);
  return rc;
}

/* ------------------------------------------- why the loader refused it */

#ifdef __linux__
/* The ELF machine this code runs on, from the compiler's target macros;
 * EM_NONE where unknown (then only word size and byte order compare). */
#if defined(__x86_64__)
#define HOST_ELF_MACHINE EM_X86_64
#elif defined(__i386__)
#define HOST_ELF_MACHINE EM_386
#elif defined(__aarch64__)
#define HOST_ELF_MACHINE EM_AARCH64
#elif defined(__arm__)
#define HOST_ELF_MACHINE EM_ARM
#elif defined(__riscv)
#define HOST_ELF_MACHINE EM_RISCV
#elif defined(__powerpc64__)
#define HOST_ELF_MACHINE EM_PPC64
#elif defined(__s390x__)
#define HOST_ELF_MACHINE EM_S390
#else
#define HOST_ELF_MACHINE EM_NONE
#endif

static const char *elf_machine_name(unsigned machine, char *buf,
                                    size_t size) {
  switch (machine) {
    case EM_X86_64: return "x86-64";
    case EM_386: return "i386";
    case EM_AARCH64: return "AArch64";
    case EM_ARM: return "ARM";
    case EM_RISCV: return "RISC-V";
    case EM_PPC64: return "PowerPC 64";
    case EM_PPC: return "PowerPC";
    case EM_S390: return "s390";
    case EM_MIPS: return "MIPS";
  }
  snprintf(buf, size, "ELF machine %u", machine);
  return buf;
}

/* "ARM (32-bit, big-endian)" */
static void elf_describe(unsigned machine, unsigned cls, unsigned data,
                         char *buf, size_t size) {
  char m[32];
  snprintf(buf, size, "%s (%s, %s)",
           machine == EM_NONE ? "this machine"
                              : elf_machine_name(machine, m, sizeof m),
           cls == ELFCLASS64   ? "64-bit"
           : cls == ELFCLASS32 ? "32-bit"
                               : "unknown word size",
           data == ELFDATA2MSB ? "big-endian" : "little-endian");
}

/* After dlopen refused path: a reason read from its ELF header that says
 * more than the loader's ("wrong ELF class", "invalid ELF header"), into
 * buf; NULL when the header is fine, and then the loader's message (a
 * missing dependency, an undefined symbol) is the one to show. */
static const char *elf_mismatch(const char *path, char *buf, size_t size) {
  unsigned char h[20]; /* e_ident, e_type, e_machine */
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t got = fread(h, 1, sizeof h, f);
  fclose(f);
  if (got < SELFMAG || memcmp(h, ELFMAG, SELFMAG)) {
    snprintf(buf, size, "it is not a shared object (no ELF header); a "
             "plugin is built with cc -shared -fPIC");
    return buf;
  }
  if (got < sizeof h) return NULL;
  const int big = h[EI_DATA] == ELFDATA2MSB;
  const unsigned type = big ? (unsigned)h[16] << 8 | h[17]
                            : (unsigned)h[17] << 8 | h[16];
  const unsigned machine = big ? (unsigned)h[18] << 8 | h[19]
                               : (unsigned)h[19] << 8 | h[18];
  const uint16_t one = 1;
  const unsigned host_class = sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32;
  const unsigned host_data =
      *(const unsigned char *)&one ? ELFDATA2LSB : ELFDATA2MSB;
  if (h[EI_CLASS] != host_class || h[EI_DATA] != host_data ||
      (HOST_ELF_MACHINE != EM_NONE && machine != HOST_ELF_MACHINE)) {
    char theirs[80], ours[80];
    elf_describe(machine, h[EI_CLASS], h[EI_DATA], theirs, sizeof theirs);
    elf_describe(HOST_ELF_MACHINE, host_class, host_data, ours, sizeof ours);
    snprintf(buf, size, "it is not a plugin for this machine: it was built "
             "for %s, and nnrun runs on %s; rebuild it here", theirs, ours);
    return buf;
  }
  if (type != ET_DYN) {
    snprintf(buf, size, "it is an ELF %s, not a shared object; a plugin is "
             "built with cc -shared -fPIC",
             type == ET_REL ? "object file (.o)"
             : type == ET_EXEC ? "executable"
             : type == ET_CORE ? "core dump" : "file of another type");
    return buf;
  }
  return NULL;
}
#endif /* __linux__ */

/* dlopen + dlsym + validate one file.  name = expected plugin name or NULL. */
static int open_file(nn_loaded **out, const char *path, const char *name,
                     uint32_t want_kind, nn_error *err) {
  *out = NULL;
  /* dlopen runs the file's constructors: it must be one nobody else can
   * have written. */
  int trust = check_trusted(path, err);
  if (trust) return trust;
  dlerror();
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char *why = dlerror();
#ifdef __linux__
    char elf[300];
    if (elf_mismatch(path, elf, sizeof elf))
      return nn_error_set(err, NN_EPLUGIN, "cannot load plugin %s: %s", path,
                          elf);
#endif
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

/* ---------------------------------------------- names for a missing one
 * A name that matches no file is answered from the file names on the path
 * alone: loading the files to learn their kinds would run the code of
 * every library there, for a typo. */

/* Edit distance (Levenshtein) between a and b, each cut at 255 bytes. */
static size_t edit_distance(const char *a, const char *b) {
  const size_t la = strnlen(a, 255), lb = strnlen(b, 255);
  size_t row[256];
  for (size_t j = 0; j <= lb; j++) row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0]; /* row i-1, column j-1 */
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      const size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

typedef struct near_name {
  char name[256];
  size_t distance; /* to the name asked for */
} near_name;

typedef struct names_ctx {
  const char *want;
  near_name *items; /* owned (malloc) */
  size_t n, cap;
} names_ctx;

/* Collect the stems of dir's .so files, without opening them. */
static int names_in_dir(const char *dir, void *user) {
  names_ctx *c = user;
  DIR *d = opendir(dir);
  if (!d) return 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    const size_t len = strlen(de->d_name);
    if (len <= 3 || strcmp(de->d_name + len - 3, ".so")) continue;
    char path[4200], stem[256];
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    file_stem(de->d_name, stem, sizeof stem);
    int dup = !is_file(path);
    for (size_t i = 0; i < c->n && !dup; i++)
      dup = !strcmp(c->items[i].name, stem);
    if (dup) continue;
    if (c->n == c->cap) {
      const size_t cap = c->cap ? 2 * c->cap : 16;
      near_name *p = realloc(c->items, cap * sizeof *p);
      if (!p) break; /* the message lists what it has */
      c->items = p;
      c->cap = cap;
    }
    near_name *it = &c->items[c->n++];
    snprintf(it->name, sizeof it->name, "%s", stem);
    it->distance = edit_distance(c->want, stem);
  }
  closedir(d);
  return 0;
}

static int by_distance(const void *a, const void *b) {
  const near_name *x = a, *y = b;
  if (x->distance != y->distance) return x->distance < y->distance ? -1 : 1;
  return strcmp(x->name, y->name);
}

/* Names listed in the message; more are counted. */
#define NEAR_NAMES_SHOWN 12

/* "twolayer, tanh, ..." (closest to `want` first) into buf; the closest
 * name, when it is near enough to be a typo of `want`, into suggest
 * (empty otherwise). */
static void near_names(const char *search_path, const char *want, char *buf,
                       size_t size, char *suggest, size_t suggest_size) {
  names_ctx c = {.want = want};
  each_dir(search_path, names_in_dir, &c);
  if (c.n) qsort(c.items, c.n, sizeof *c.items, by_distance);
  buf[0] = suggest[0] = '\0';
  for (size_t i = 0; i < c.n && i < NEAR_NAMES_SHOWN; i++)
    nn__list_add(buf, size, "", c.items[i].name, "");
  if (c.n > NEAR_NAMES_SHOWN) {
    char more[64];
    snprintf(more, sizeof more, "and %zu more", c.n - NEAR_NAMES_SHOWN);
    nn__list_add(buf, size, "", more, "");
  }
  const size_t len = strlen(want);
  if (c.n && c.items[0].distance <= (len < 6 ? 1 : len / 3))
    snprintf(suggest, suggest_size, "%s", c.items[0].name);
  if (!buf[0]) snprintf(buf, size, "none");
  free(c.items);
}

int nn_plugin_open(nn_loaded **out, const char *name, uint32_t want_kind,
                   const char *search_path, nn_error *err) {
  *out = NULL;
  if (!name || !*name)
    return nn_error_set(err, NN_EINVAL, "empty plugin name");
  if (strchr(name, '/')) { /* an explicit path */
    struct stat st;
    if (stat(name, &st) == 0 && S_ISDIR(st.st_mode))
      return nn_error_set(err, NN_ENOTFOUND,
                          "plugin file %s is a directory: expected a "
                          "plugin's .so file", name);
    if (!is_file(name))
      return nn_error_set(err, NN_ENOTFOUND, "plugin file %s: %s", name,
                          strerror(ENOENT));
    return open_file(out, name, NULL, want_kind, err);
  }
  find_ctx f = {.name = name};
  if (!each_dir(search_path, find_in_dir, &f)) {
    char avail[1024], suggest[256], mean[300] = "";
    near_names(search_path, name, avail, sizeof avail, suggest,
               sizeof suggest);
    if (suggest[0])
      snprintf(mean, sizeof mean, " did you mean '%s'?", suggest);
    return nn_error_set(err, NN_ENOTFOUND,
                        "no %s%splugin named '%s' (searched %s);%s available: "
                        "%s (plugin files of any kind, closest name first)",
                        want_kind ? nn_kind_name(want_kind) : "",
                        want_kind ? " " : "", name,
                        search_path && *search_path ? search_path : "nothing",
                        mean, avail);
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
