/* SPDX-License-Identifier: GPL-3.0-or-later */
/* safetensors checkpoints: see <nn/safetensors.h> for the format and API.
 *
 * Byte order: values are moved between doubles/floats and file bytes by
 * copying the float into a same-sized unsigned integer and assembling the
 * little-endian bytes with shifts, so no code path depends on the host's
 * byte order (only on floats sharing the integers' order, which holds on
 * every platform with IEEE-754 hardware in use today). */
#include <config.h>

#include "util/strlist.h"
#include "util/utf8.h"
#include <nn/safetensors.h>

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "files/atomic_file.h"

/* The bit copies below need IEEE binary64/binary32. */
_Static_assert(sizeof(double) == 8 && DBL_MANT_DIG == 53 && FLT_RADIX == 2,
               "safetensors F64 needs IEEE-754 binary64 doubles");
_Static_assert(sizeof(float) == 4 && FLT_MANT_DIG == 24,
               "safetensors F32 needs IEEE-754 binary32 floats");
/* Offsets and sizes travel through json_int_t. */
_Static_assert(sizeof(json_int_t) >= 8, "jansson integers must be 64-bit");

#define META_KEY "__metadata__"

/* ------------------------------------------------------------ shared */

static size_t dtype_size(uint32_t dtype) {
  return dtype == NN_DTYPE_F64 ? 8 : dtype == NN_DTYPE_F32 ? 4 : 0;
}

static const char *dtype_name(uint32_t dtype) {
  return dtype == NN_DTYPE_F64 ? "F64" : "F32";
}

/* Store the low `size` bytes of v at p, least significant first. */
static void put_le(unsigned char *p, uint64_t v, size_t size) {
  for (size_t i = 0; i < size; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, size_t size) {
  uint64_t v = 0;
  for (size_t i = 0; i < size; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* Join names into buf as "a, b, c", ending in "..." when it does not fit,
 * so that error messages can say what was there without overflowing. */
static void join_names(char *buf, size_t cap, const char *const *names,
                       size_t n) {
  size_t len = 0;
  buf[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    const char *sep = i ? ", " : "";
    size_t need = strlen(sep) + strlen(names[i]);
    if (len + need + 4 >= cap) { /* keep room for "..." and the NUL */
      snprintf(buf + len, cap - len, "%s...", sep);
      return;
    }
    len += (size_t)snprintf(buf + len, cap - len, "%s%s", sep, names[i]);
  }
  if (n == 0) snprintf(buf, cap, "nothing");
}

/* ------------------------------------------------------------ writing */

/* Add "__metadata__" to root from the alternating key/value array. */
static int add_metadata(json_t *root, const char *path,
                        const char *const *metadata, nn_error *err) {
  if (!metadata || !metadata[0]) return NN_OK;
  json_t *md = json_object();
  if (!md || json_object_set_new(root, META_KEY, md) != 0)
    return nn_error_set(err, NN_ENOMEM, "%s: out of memory", path);
  for (const char *const *kv = metadata; kv[0]; kv += 2) {
    if (!kv[1])
      return nn_error_set(err, NN_EINVAL, "%s: metadata key '%s' has no value",
                          path, kv[0]);
    if (!nn__utf8_valid(kv[0]) || !nn__utf8_valid(kv[1]))
      return nn_error_set(err, NN_EINVAL,
                          "%s: metadata entry '%s' is not valid UTF-8", path,
                          kv[0]);
    if (json_object_get(md, kv[0]))
      return nn_error_set(err, NN_EINVAL, "%s: metadata key '%s' given twice",
                          path, kv[0]);
    if (json_object_set_new(md, kv[0], json_string(kv[1])) != 0)
      return nn_error_set(err, NN_ENOMEM, "%s: out of memory", path);
  }
  return NN_OK;
}

/* Build the compact JSON header.  On success *text is owned by the caller
 * (free()); *data_len is the size of the data section. */
static int build_header(const char *path, const nn_param *params, size_t n,
                        uint32_t dtype, const char *const *metadata,
                        char **text, uint64_t *data_len, nn_error *err) {
  const size_t esize = dtype_size(dtype);
  json_t *root = json_object(); /* owned here, released before return */
  if (!root) return nn_error_set(err, NN_ENOMEM, "%s: out of memory", path);
  int rc = add_metadata(root, path, metadata, err);
  uint64_t offset = 0;
  for (size_t i = 0; i < n && rc == NN_OK; i++) {
    const nn_param *p = &params[i];
    if (!p->name || !p->value) {
      rc = nn_error_set(err, NN_EINVAL, "%s: parameter %zu has no %s", path, i,
                        p->name ? "value" : "name");
      break;
    }
    /* A duplicate would silently replace the earlier entry in the JSON
     * object, and "__metadata__" is not a tensor: refuse both. */
    const char *why = !nn__utf8_valid(p->name)        ? "not valid UTF-8"
                      : strcmp(p->name, META_KEY) == 0 ? "reserved"
                      : json_object_get(root, p->name) ? "used twice"
                                                        : NULL;
    if (why) {
      rc = nn_error_set(err, NN_EINVAL, "%s: parameter name '%s' is %s", path,
                        p->name, why);
      break;
    }
    const size_t r = p->value->size1, c = p->value->size2;
    /* Every size must fit a JSON integer; INT64_MAX also bounds the sum. */
    const uint64_t lim = INT64_MAX;
    if ((c && r > lim / c) || (c && r * c > lim / esize) ||
        offset > lim - (uint64_t)r * c * esize) {
      rc = nn_error_set(err, NN_EINVAL, "%s: parameter '%s' is too large",
                        path, p->name);
      break;
    }
    const uint64_t end = offset + (uint64_t)r * c * esize;
    json_t *e = json_pack("{s:s, s:[I,I], s:[I,I]}", "dtype", dtype_name(dtype),
                          "shape", (json_int_t)r, (json_int_t)c,
                          "data_offsets", (json_int_t)offset, (json_int_t)end);
    if (!e || json_object_set_new(root, p->name, e) != 0)
      rc = nn_error_set(err, NN_ENOMEM, "%s: out of memory", path);
    offset = end;
  }
  if (rc == NN_OK) {
    *text = json_dumps(root, JSON_COMPACT);
    if (!*text) rc = nn_error_set(err, NN_ENOMEM, "%s: out of memory", path);
    *data_len = offset;
  }
  json_decref(root);
  return rc;
}

/* Write one matrix's elements in row-major order, little-endian, in chunks
 * (the matrix may be a view, so rows are not contiguous with each other). */
static int write_matrix(FILE *fp, const gsl_matrix *m, uint32_t dtype) {
  unsigned char chunk[4096];
  const size_t esize = dtype_size(dtype);
  size_t used = 0;
  for (size_t i = 0; i < m->size1; i++) {
    const double *row = m->data + i * m->tda;
    for (size_t j = 0; j < m->size2; j++) {
      uint64_t bits;
      if (dtype == NN_DTYPE_F64) {
        memcpy(&bits, &row[j], 8);
      } else {
        /* The cast the API promises: round to nearest, +-inf past FLT_MAX
         * (IEEE-754 / C Annex F). */
        float x = (float)row[j];
        uint32_t b32;
        memcpy(&b32, &x, 4);
        bits = b32;
      }
      put_le(chunk + used, bits, esize);
      used += esize;
      if (used == sizeof chunk) {
        if (fwrite(chunk, 1, used, fp) != used) return -1;
        used = 0;
      }
    }
  }
  return used && fwrite(chunk, 1, used, fp) != used ? -1 : 0;
}

int nn_safetensors_save(const char *path, const nn_param *params, size_t n,
                        uint32_t dtype, const char *const *metadata,
                        nn_error *err) {
  if (!path) return nn_error_set(err, NN_EINVAL, "safetensors: no path given");
  if (!dtype_size(dtype))
    return nn_error_set(err, NN_EINVAL, "%s: unknown dtype code %u", path,
                        (unsigned)dtype);
  if (n && !params)
    return nn_error_set(err, NN_EINVAL, "%s: no parameters given", path);

  /* Everything that can be refused is refused before the temp file exists. */
  char *text = NULL; /* owned here (jansson's malloc, released with free) */
  uint64_t data_len = 0;
  int rc = build_header(path, params, n, dtype, metadata, &text, &data_len,
                        err);
  if (rc) return rc;
  /* Pad with spaces so the data section starts 8-aligned, as other writers
   * do; readers skip trailing JSON whitespace. */
  const size_t hlen = strlen(text), padded = (hlen + 7) / 8 * 8;
  unsigned char lenbytes[8];
  put_le(lenbytes, padded, 8);

  nn__atomic_file af;
  rc = nn__atomic_open(&af, path, err);
  if (rc) {
    free(text);
    return rc;
  }
  int bad = fwrite(lenbytes, 1, 8, af.fp) != 8 ||
            fwrite(text, 1, hlen, af.fp) != hlen;
  for (size_t i = hlen; i < padded && !bad; i++) bad = fputc(' ', af.fp) == EOF;
  for (size_t i = 0; i < n && !bad; i++)
    bad = write_matrix(af.fp, params[i].value, dtype) != 0;
  free(text);
  if (bad) {
    int e = errno;
    nn__atomic_abort(&af);
    return nn_error_set(err, NN_EIO, "cannot write %s: %s", path, strerror(e));
  }
  return nn__atomic_commit(&af, err);
}

/* ------------------------------------------------------------ reading */

typedef struct st_tensor {
  const char *name;     /* key in the owning file's JSON root */
  const json_t *shape;  /* the validated "shape" array, for messages */
  uint32_t dtype;       /* NN_DTYPE_* */
  size_t ndim;
  size_t rows, cols;    /* as a matrix; meaningful when ndim is 1 or 2 */
  size_t begin, end;    /* byte range within the data section */
} st_tensor;

struct nn_safetensors {
  char *path;                /* owned copy, for messages */
  unsigned char *buf;        /* owned: the whole file */
  size_t size;               /* bytes in buf */
  const unsigned char *data; /* start of the data section, inside buf */
  size_t data_len;
  json_t *root;              /* owned: the parsed header */
  const json_t *meta;        /* "__metadata__" object inside root, or NULL */
  st_tensor *t;              /* owned array of n entries, header order */
  size_t n;
};

/* Read the whole file.  On success *buf (malloc'd, caller-owned) holds
 * *size bytes.  Grows a buffer instead of trusting a stat size so that
 * pipes and files that change size work too. */
static int slurp(const char *path, unsigned char **buf, size_t *size,
                 nn_error *err) {
  FILE *fp = fopen(path, "rb");
  if (!fp) /* no such file: NN_ENOTFOUND, as for the data files */
    return nn_error_set(err, errno == ENOENT ? NN_ENOTFOUND : NN_EIO,
                        "cannot open %s: %s", path, strerror(errno));
  size_t cap = 1 << 16, len = 0;
  unsigned char *b = malloc(cap);
  int rc = b ? NN_OK : nn_error_set(err, NN_ENOMEM, "%s: out of memory", path);
  while (rc == NN_OK) {
    if (len == cap) {
      unsigned char *nb = cap <= SIZE_MAX / 2 ? realloc(b, cap * 2) : NULL;
      if (!nb) {
        rc = nn_error_set(err, NN_ENOMEM, "%s: out of memory", path);
        break;
      }
      b = nb;
      cap *= 2;
    }
    size_t got = fread(b + len, 1, cap - len, fp);
    len += got;
    if (got == 0) {
      if (ferror(fp))
        rc = nn_error_set(err, NN_EIO, "cannot read %s: %s", path,
                          strerror(errno));
      break;
    }
  }
  fclose(fp);
  if (rc) {
    free(b);
    return rc;
  }
  *buf = b;
  *size = len;
  return NN_OK;
}

/* "[2, 3]" for a validated shape array. */
static const char *fmt_shape(const json_t *shape, char *buf, size_t cap) {
  size_t len = (size_t)snprintf(buf, cap, "[");
  for (size_t i = 0; i < json_array_size(shape) && len < cap; i++)
    len += (size_t)snprintf(buf + len, cap - len, "%s%" JSON_INTEGER_FORMAT,
                            i ? ", " : "",
                            json_integer_value(json_array_get(shape, i)));
  if (len < cap) snprintf(buf + len, cap - len, "]");
  return buf;
}

/* A non-negative JSON integer that fits size_t, into *v. */
static int get_size(const json_t *j, size_t *v) {
  if (!json_is_integer(j) || json_integer_value(j) < 0 ||
      (uintmax_t)json_integer_value(j) > SIZE_MAX)
    return -1;
  *v = (size_t)json_integer_value(j);
  return 0;
}

/* Validate one tensor entry and fill *t (offsets checked against the data
 * section; overlaps are checked later across all entries). */
static int parse_entry(const nn_safetensors *f, const char *name,
                       const json_t *v, st_tensor *t, nn_error *err) {
  const char *p = f->path;
  if (!json_is_object(v))
    return nn_error_set(err, NN_EFORMAT, "%s: tensor '%s': entry is not an "
                        "object", p, name);
  const json_t *dt = json_object_get(v, "dtype");
  const json_t *sh = json_object_get(v, "shape");
  const json_t *off = json_object_get(v, "data_offsets");
  const char *missing = !dt ? "dtype" : !sh ? "shape" : !off ? "data_offsets"
                                                          : NULL;
  if (missing)
    return nn_error_set(err, NN_EFORMAT, "%s: tensor '%s' has no \"%s\"", p,
                        name, missing);
  if (!json_is_string(dt))
    return nn_error_set(err, NN_EFORMAT, "%s: tensor '%s': dtype is not a "
                        "string", p, name);
  const char *ds = json_string_value(dt);
  t->dtype = strcmp(ds, "F64") == 0   ? NN_DTYPE_F64
             : strcmp(ds, "F32") == 0 ? NN_DTYPE_F32
                                      : 0;
  if (!t->dtype)
    return nn_error_set(err, NN_EFORMAT, "%s: tensor '%s' has unsupported "
                        "dtype \"%.40s\" (only F64 and F32 can be read)", p,
                        name, ds);
  if (!json_is_array(sh))
    return nn_error_set(err, NN_EFORMAT, "%s: tensor '%s': shape is not an "
                        "array", p, name);
  /* Element count with overflow checks: a header can claim any shape. */
  const size_t esize = dtype_size(t->dtype);
  size_t count = 1, d;
  t->ndim = json_array_size(sh);
  for (size_t i = 0; i < t->ndim; i++) {
    if (get_size(json_array_get(sh, i), &d) != 0)
      return nn_error_set(err, NN_EFORMAT, "%s: tensor '%s': shape entry %zu "
                          "is not a non-negative integer", p, name, i);
    if (d && count > SIZE_MAX / d)
      return nn_error_set(err, NN_EFORMAT, "%s: tensor '%s': shape is too "
                          "large", p, name);
    count *= d;
  }
  if (count > SIZE_MAX / esize)
    return nn_error_set(err, NN_EFORMAT, "%s: tensor '%s': shape is too large",
                        p, name);
  if (!json_is_array(off) || json_array_size(off) != 2 ||
      get_size(json_array_get(off, 0), &t->begin) != 0 ||
      get_size(json_array_get(off, 1), &t->end) != 0)
    return nn_error_set(err, NN_EFORMAT, "%s: tensor '%s': data_offsets is "
                        "not two non-negative integers", p, name);
  if (t->begin > t->end)
    return nn_error_set(err, NN_EFORMAT, "%s: tensor '%s': data_offsets "
                        "[%zu, %zu] begin after end", p, name, t->begin,
                        t->end);
  if (t->end > f->data_len)
    return nn_error_set(err, NN_EFORMAT, "%s: tensor '%s': data_offsets "
                        "[%zu, %zu] reach past the end of the data section "
                        "(%zu bytes)", p, name, t->begin, t->end, f->data_len);
  char sbuf[96];
  if (t->end - t->begin != count * esize)
    return nn_error_set(err, NN_EFORMAT, "%s: tensor '%s' has %zu bytes but "
                        "shape %s of %s needs %zu", p, name,
                        t->end - t->begin, fmt_shape(sh, sbuf, sizeof sbuf),
                        ds, count * esize);
  t->name = name;
  t->shape = sh;
  t->rows = t->ndim == 2 ? (size_t)json_integer_value(json_array_get(sh, 0))
                         : 1;
  t->cols = t->ndim >= 1
                ? (size_t)json_integer_value(json_array_get(sh, t->ndim - 1))
                : 1;
  return NN_OK;
}

static int cmp_range(const void *a, const void *b) {
  const st_tensor *x = *(const st_tensor *const *)a;
  const st_tensor *y = *(const st_tensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

/* The tensors must cover the data section exactly, in some order: like
 * the reference implementation we refuse overlaps, gaps and trailing bytes
 * (a file that fails this was not written by a correct writer). */
static int check_tiling(const nn_safetensors *f, nn_error *err) {
  const st_tensor **by = malloc((f->n ? f->n : 1) * sizeof *by); /* local */
  if (!by) return nn_error_set(err, NN_ENOMEM, "%s: out of memory", f->path);
  for (size_t i = 0; i < f->n; i++) by[i] = &f->t[i];
  qsort(by, f->n, sizeof *by, cmp_range);
  int rc = NN_OK;
  size_t covered = 0;
  const st_tensor *prev = NULL;
  for (size_t i = 0; i < f->n && rc == NN_OK; i++) {
    if (by[i]->begin < covered)
      rc = nn_error_set(err, NN_EFORMAT, "%s: tensors '%s' and '%s' overlap "
                        "in the data section", f->path, prev->name,
                        by[i]->name);
    else if (by[i]->begin > covered)
      rc = nn_error_set(err, NN_EFORMAT, "%s: bytes [%zu, %zu) of the data "
                        "section belong to no tensor", f->path, covered,
                        by[i]->begin);
    covered = by[i]->end;
    prev = by[i];
  }
  if (rc == NN_OK && covered != f->data_len)
    rc = nn_error_set(err, NN_EFORMAT, "%s: data section has %zu bytes but "
                      "the tensors cover %zu", f->path, f->data_len, covered);
  free(by);
  return rc;
}

/* Validate the header of f->buf and fill the rest of f. */
static int parse(nn_safetensors *f, nn_error *err) {
  const char *p = f->path;
  if (f->size < 8)
    return nn_error_set(err, NN_EFORMAT, "%s: only %zu bytes, too short for "
                        "a safetensors file", p, f->size);
  const uint64_t hlen = get_le(f->buf, 8);
  if (hlen == 0)
    return nn_error_set(err, NN_EFORMAT, "%s: header length is 0", p);
  if (hlen > f->size - 8)
    return nn_error_set(err, NN_EFORMAT, "%s: header length %llu is past the "
                        "end of the file (%zu bytes)", p,
                        (unsigned long long)hlen, f->size);
  f->data = f->buf + 8 + hlen;
  f->data_len = f->size - 8 - (size_t)hlen;

  /* Duplicate names would make lookups ambiguous: refuse them. */
  json_error_t je;
  f->root = json_loadb((const char *)f->buf + 8, (size_t)hlen,
                       JSON_REJECT_DUPLICATES, &je);
  if (!f->root)
    return nn_error_set(err, NN_EFORMAT, "%s: header is not valid JSON: %s "
                        "(header line %d, column %d)", p, je.text, je.line,
                        je.column);
  if (!json_is_object(f->root))
    return nn_error_set(err, NN_EFORMAT, "%s: header is not a JSON object",
                        p);

  const size_t total = json_object_size(f->root);
  f->t = calloc(total ? total : 1, sizeof *f->t);
  if (!f->t) return nn_error_set(err, NN_ENOMEM, "%s: out of memory", p);
  const char *key;
  json_t *v;
  json_object_foreach(f->root, key, v) {
    if (strcmp(key, META_KEY) == 0) {
      if (!json_is_object(v))
        return nn_error_set(err, NN_EFORMAT, "%s: __metadata__ is not an "
                            "object", p);
      const char *mk;
      json_t *mv;
      json_object_foreach(v, mk, mv) {
        if (!json_is_string(mv))
          return nn_error_set(err, NN_EFORMAT, "%s: __metadata__ value of "
                              "'%s' is not a string", p, mk);
      }
      f->meta = v;
      continue;
    }
    int rc = parse_entry(f, key, v, &f->t[f->n], err);
    if (rc) return rc;
    f->n++;
  }
  return check_tiling(f, err);
}

int nn_safetensors_open(nn_safetensors **out, const char *path,
                        nn_error *err) {
  if (!out || !path)
    return nn_error_set(err, NN_EINVAL, "safetensors: no %s given",
                        out ? "path" : "output handle");
  *out = NULL;
  nn_safetensors *f = calloc(1, sizeof *f);
  if (!f || !(f->path = strdup(path))) {
    free(f);
    return nn_error_set(err, NN_ENOMEM, "%s: out of memory", path);
  }
  int rc = slurp(path, &f->buf, &f->size, err);
  if (rc == NN_OK) rc = parse(f, err);
  if (rc) {
    nn_safetensors_close(f);
    return rc;
  }
  *out = f;
  return NN_OK;
}

void nn_safetensors_close(nn_safetensors *f) {
  if (!f) return;
  json_decref(f->root);
  free(f->t);
  free(f->buf);
  free(f->path);
  free(f);
}

size_t nn_safetensors_count(const nn_safetensors *f) { return f ? f->n : 0; }

const char *nn_safetensors_name(const nn_safetensors *f, size_t i) {
  return f && i < f->n ? f->t[i].name : NULL;
}

static const st_tensor *find(const nn_safetensors *f, const char *name) {
  for (size_t i = 0; f && name && i < f->n; i++)
    if (strcmp(f->t[i].name, name) == 0) return &f->t[i];
  return NULL;
}

int nn_safetensors_shape(const nn_safetensors *f, const char *name,
                         size_t *rows, size_t *cols) {
  const st_tensor *t = find(f, name);
  if (!t || t->ndim < 1 || t->ndim > 2) return NN_EINVAL;
  if (rows) *rows = t->rows;
  if (cols) *cols = t->cols;
  return NN_OK;
}

uint32_t nn_safetensors_dtype(const nn_safetensors *f, const char *name) {
  const st_tensor *t = find(f, name);
  return t ? t->dtype : 0;
}

const char *nn_safetensors_meta(const nn_safetensors *f, const char *key) {
  if (!f || !f->meta || !key) return NULL;
  return json_string_value(json_object_get(f->meta, key));
}

/* Check that tensor `name` exists, is a matrix and is rows x cols. */
static int check_tensor(const nn_safetensors *f, const char *name, size_t rows,
                        size_t cols, const char *what, const st_tensor **out,
                        nn_error *err) {
  const st_tensor *t = find(f, name);
  if (!t)
    return nn_error_set(err, NN_EINVAL, "%s: no tensor named '%s'", f->path,
                        name);
  char sbuf[96];
  if (t->ndim < 1 || t->ndim > 2)
    return nn_error_set(err, NN_EINVAL, "%s: tensor '%s' has shape %s; only "
                        "1-D and 2-D tensors load into a matrix", f->path,
                        name, fmt_shape(t->shape, sbuf, sizeof sbuf));
  if (t->rows != rows || t->cols != cols)
    return nn_error_set(err, NN_EINVAL, "%s: tensor '%s' is %zux%zu (shape "
                        "%s) but the %s is %zux%zu", f->path, name, t->rows,
                        t->cols, fmt_shape(t->shape, sbuf, sizeof sbuf), what,
                        rows, cols);
  *out = t;
  return NN_OK;
}

/* Decode t into dst (shape already checked). */
static void copy_out(const nn_safetensors *f, const st_tensor *t,
                     gsl_matrix *dst) {
  const size_t esize = dtype_size(t->dtype);
  const unsigned char *src = f->data + t->begin;
  for (size_t i = 0; i < t->rows; i++) {
    double *row = dst->data + i * dst->tda;
    for (size_t j = 0; j < t->cols; j++, src += esize) {
      if (t->dtype == NN_DTYPE_F64) {
        uint64_t b = get_le(src, 8);
        memcpy(&row[j], &b, 8);
      } else {
        uint32_t b = (uint32_t)get_le(src, 4);
        float x;
        memcpy(&x, &b, 4);
        row[j] = x;
      }
    }
  }
}

int nn_safetensors_read(const nn_safetensors *f, const char *name,
                        gsl_matrix *dst, nn_error *err) {
  if (!f || !name || !dst)
    return nn_error_set(err, NN_EINVAL, "safetensors read: NULL argument");
  const st_tensor *t;
  int rc = check_tensor(f, name, dst->size1, dst->size2, "destination", &t,
                        err);
  if (rc) return rc;
  copy_out(f, t, dst);
  return NN_OK;
}

int nn_safetensors_read_params(const nn_safetensors *f, nn_param *params,
                               size_t n, const char *const *ignore,
                               nn_error *err) {
  if (!f) return nn_error_set(err, NN_EINVAL, "safetensors: no file given");
  const char *path = f->path;
  if (n && !params)
    return nn_error_set(err, NN_EINVAL, "%s: no parameters given", path);
  for (size_t i = 0; i < n; i++) {
    if (!params[i].name || !params[i].value)
      return nn_error_set(err, NN_EINVAL, "%s: parameter %zu has no %s", path,
                          i, params[i].name ? "value" : "name");
    for (size_t k = 0; k < i; k++)
      if (strcmp(params[k].name, params[i].name) == 0)
        return nn_error_set(err, NN_EINVAL, "%s: parameter name '%s' is used "
                            "twice", path, params[i].name);
  }
  /* Validate everything first so that an error leaves params untouched:
   * missing names, then stray tensors (a file of another model), then
   * shapes. */
  const st_tensor *t;
  char list[320];
  int rc = NN_OK;
  for (size_t i = 0; i < n; i++) {
    if (find(f, params[i].name)) continue;
    const char **names = malloc((f->n ? f->n : 1) * sizeof *names);
    if (!names) return nn_error_set(err, NN_ENOMEM, "%s: out of memory", path);
    for (size_t k = 0; k < f->n; k++) names[k] = f->t[k].name;
    join_names(list, sizeof list, names, f->n);
    free(names);
    return nn_error_set(err, NN_EINVAL, "%s: no tensor '%s' (the file has: %s)",
                        path, params[i].name, list);
  }
  for (size_t k = 0; k < f->n; k++) {
    size_t i = 0;
    while (i < n && strcmp(params[i].name, f->t[k].name) != 0) i++;
    if (i == n && !nn__in_list(f->t[k].name, ignore))
      return nn_error_set(err, NN_EINVAL, "%s: tensor '%s' is not a parameter "
                          "of the model (%zu tensors in the file, %zu "
                          "parameters)", path, f->t[k].name, f->n, n);
  }
  for (size_t i = 0; i < n && rc == NN_OK; i++)
    rc = check_tensor(f, params[i].name, params[i].value->size1,
                      params[i].value->size2, "parameter", &t, err);
  for (size_t i = 0; i < n && rc == NN_OK; i++) {
    t = find(f, params[i].name);
    copy_out(f, t, params[i].value);
  }
  return rc;
}

int nn_safetensors_load_params(const char *path, nn_param *params, size_t n,
                               nn_error *err) {
  if (!path) return nn_error_set(err, NN_EINVAL, "safetensors: no path given");
  nn_safetensors *f = NULL; /* owned here until the end */
  int rc = nn_safetensors_open(&f, path, err);
  if (rc) return rc;
  rc = nn_safetensors_read_params(f, params, n, NULL, err);
  nn_safetensors_close(f);
  return rc;
}
