/* SPDX-License-Identifier: GPL-3.0-or-later */
/* CSV datasets: nn_dataset_load_csv and nn_dataset_write_csv (<nn/data.h>).
 *
 * Format: one example per line, `label,p0,...,pD-1`, every value a decimal
 * integer 0..255, no header.  D comes from line 1 and is enforced on every
 * later line.  CRLF line ends, a missing final newline and blank lines at
 * the end of the file are accepted; a blank line followed by more data is
 * not (it usually means two files were pasted together).
 *
 * Speed (MNIST's training CSV is ~110 MB): the file is read in 1 MiB blocks
 * with gzread (plain and .gz alike) and parsed by a resumable byte-level
 * state machine, so a line may straddle two blocks without being copied.
 * Digits, the hot path, cost one subtract, compare and multiply-add; pixels
 * go straight into the final buffer, which grows geometrically and is
 * trimmed to its exact size at the end. */
#include <config.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include <nn/data.h>

#include "files/atomic_file.h"
#include "data/gzio.h"

#define CSV_BLOCK ((size_t)1 << 20)      /* bytes per gzread */
#define CSV_GZ_BUFFER (256u * 1024u)     /* zlib's input buffer */
#define CSV_FIRST_ROW_CAP ((size_t)1024) /* initial bytes for line 1 */
#define CSV_INITIAL_BYTES ((size_t)1 << 20)
/* Field values saturate here: big enough to print any 3-digit value in an
 * error message, small enough that value * 10 + 9 never overflows. */
#define CSV_SATURATED 1000u

/* Parser state between blocks.  pixels and labels are owned by the parser
 * until nn_dataset_load_csv hands them to the dataset. */
typedef struct csv_parser {
  const char *path;  /* borrowed, for messages */
  nn_error *err;
  size_t line;       /* 1-based number of the line being parsed */
  size_t field;      /* 0-based index of the field being parsed */
  unsigned value;    /* value of that field so far (saturated) */
  size_t ndigits;    /* digits seen in that field */
  unsigned label;    /* label of the line being parsed */
  size_t blank_line; /* first blank line since the last data line, or 0 */
  int pending_cr;    /* the previous block ended with '\r' */
  size_t dim;        /* pixels per line; 0 while line 1 is parsed */
  size_t n;          /* complete lines stored */
  size_t cap;        /* rows allocated (after line 1) or bytes (during it) */
  uint8_t *pixels;   /* cap rows of dim bytes (line 1: cap bytes) */
  uint8_t *labels;   /* cap labels (NULL during line 1) */
  uint8_t *row;      /* where the current line's pixels go */
} csv_parser;

static int csv_oom(csv_parser *p) {
  return nn_error_set(p->err, NN_ENOMEM,
                      "%s:%zu: out of memory while reading the file", p->path,
                      p->line);
}

/* Line 1 only: make room for pixel number `i` (its length is unknown). */
static int csv_grow_first_row(csv_parser *p, size_t i) {
  if (i < p->cap) return NN_OK;
  size_t cap = p->cap ? p->cap : CSV_FIRST_ROW_CAP;
  while (cap <= i) {
    if (cap > SIZE_MAX / 2) return csv_oom(p);
    cap *= 2;
  }
  uint8_t *px = realloc(p->pixels, cap);
  if (!px) return csv_oom(p);
  p->pixels = p->row = px;
  p->cap = cap;
  return NN_OK;
}

/* Make room for at least `rows` rows; doubling keeps the copying (if
 * realloc has to copy at all) linear in the file size. */
static int csv_reserve_rows(csv_parser *p, size_t rows) {
  if (rows <= p->cap) return NN_OK;
  size_t cap = p->cap ? p->cap : 1;
  while (cap < rows) {
    if (cap > SIZE_MAX / 2) return csv_oom(p);
    cap *= 2;
  }
  if (cap > SIZE_MAX / p->dim) return csv_oom(p);
  uint8_t *px = realloc(p->pixels, cap * p->dim);
  if (!px) return csv_oom(p);
  p->pixels = px;
  uint8_t *lb = realloc(p->labels, cap);
  if (!lb) return csv_oom(p);
  p->labels = lb;
  p->cap = cap;
  return NN_OK;
}

/* The end of field p->field (at ',' or end of line): check and store it. */
static int csv_end_field(csv_parser *p) {
  if (p->ndigits == 0)
    return nn_error_set(p->err, NN_EFORMAT,
                        "%s:%zu: field %zu is empty: expected an integer "
                        "0..255",
                        p->path, p->line, p->field + 1);
  if (p->value > 255) {
    if (p->value >= CSV_SATURATED)
      return nn_error_set(p->err, NN_EFORMAT,
                          "%s:%zu: field %zu: value out of range (>= 1000): "
                          "expected an integer 0..255",
                          p->path, p->line, p->field + 1);
    return nn_error_set(p->err, NN_EFORMAT,
                        "%s:%zu: field %zu: value %u out of range: expected "
                        "an integer 0..255",
                        p->path, p->line, p->field + 1, p->value);
  }
  if (p->field == 0) {
    p->label = p->value;
  } else if (p->field <= p->dim) {
    p->row[p->field - 1] = (uint8_t)p->value;
  } else if (p->dim == 0) { /* line 1: its length defines dim */
    int rc = csv_grow_first_row(p, p->field - 1);
    if (rc) return rc;
    p->row[p->field - 1] = (uint8_t)p->value;
  }
  /* else: too many fields; only counted, reported at the end of the line */
  p->field++;
  p->value = 0;
  p->ndigits = 0;
  return NN_OK;
}

/* Line 1 is complete: its field count fixes dim; switch to row storage. */
static int csv_fix_dim(csv_parser *p) {
  if (p->field < 2)
    return nn_error_set(p->err, NN_EFORMAT,
                        "%s:%zu: expected a label and at least one pixel, "
                        "found 1 field",
                        p->path, p->line);
  p->dim = p->field - 1;
  /* Start with ~1 MiB of rows: a handful of doublings reaches MNIST. */
  size_t rows = CSV_INITIAL_BYTES / p->dim;
  p->cap = 1; /* the first row is already in place */
  return csv_reserve_rows(p, rows > 2 ? rows : 2);
}

/* The end of a line ('\n' or end of file). */
static int csv_end_line(csv_parser *p) {
  int rc;
  if (p->field == 0 && p->ndigits == 0) { /* blank: fine if nothing follows */
    if (!p->blank_line) p->blank_line = p->line;
    p->line++;
    return NN_OK;
  }
  if ((rc = csv_end_field(p))) return rc;
  if (p->blank_line)
    return nn_error_set(p->err, NN_EFORMAT,
                        "%s:%zu: blank line in the middle of the data",
                        p->path, p->blank_line);
  if (p->dim == 0) {
    if ((rc = csv_fix_dim(p))) return rc;
  } else if (p->field != p->dim + 1) {
    return nn_error_set(p->err, NN_EFORMAT,
                        "%s:%zu: expected %zu fields (a label and %zu pixel%s, "
                        "as on line 1), found %zu",
                        p->path, p->line, p->dim + 1, p->dim,
                        p->dim == 1 ? "" : "s", p->field);
  }
  p->labels[p->n++] = (uint8_t)p->label;
  if ((rc = csv_reserve_rows(p, p->n + 1))) return rc;
  p->row = p->pixels + p->n * p->dim;
  p->field = 0;
  p->line++;
  return NN_OK;
}

static int csv_bad_char(csv_parser *p, unsigned char c) {
  char shown[8];
  if (c >= 0x20 && c < 0x7f)
    snprintf(shown, sizeof shown, "'%c'", c);
  else
    snprintf(shown, sizeof shown, "0x%02x", c);
  /* A letter in line 1, field 1 is almost always a header line. */
  int header = p->line == 1 && p->field == 0 &&
               ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
  return nn_error_set(p->err, NN_EFORMAT,
                      "%s:%zu: field %zu: unexpected character %s: expected "
                      "an integer 0..255%s",
                      p->path, p->line, p->field + 1, shown,
                      header ? " (the file must not have a header line)" : "");
}

static int csv_stray_cr(csv_parser *p) {
  return nn_error_set(p->err, NN_EFORMAT,
                      "%s:%zu: carriage return not followed by a newline",
                      p->path, p->line);
}

/* Parse one block.  The state used per byte lives in locals: stores through
 * the uint8_t row pointer may alias any object, so fields of *p would be
 * reloaded from memory after every pixel.  The common case -- a valid pixel
 * ending at ',' -- is handled inline; everything else (labels, line ends,
 * errors, line 1) goes through the csv_end_* functions on *p.  (A branch-free
 * SWAR parser taking 4 bytes per step measured no faster, so the simple
 * loop stays.) */
static int csv_parse_block(csv_parser *p, const unsigned char *s,
                           const unsigned char *end) {
  int rc;
  if (p->pending_cr && s < end) {
    if (*s != '\n') return csv_stray_cr(p);
    p->pending_cr = 0;
  }
  unsigned value = p->value;
  size_t ndigits = p->ndigits, field = p->field, dim = p->dim;
  uint8_t *row = p->row;
  while (s < end) {
    unsigned d = (unsigned)*s - '0';
    if (d < 10) {
      value = value * 10 + d;
      if (value > CSV_SATURATED) value = CSV_SATURATED;
      ndigits++;
      s++;
      continue;
    }
    /* field - 1 < dim: a pixel field (the label, field 0, wraps around)
     * within the line length fixed by line 1 (dim is 0 during line 1). */
    if (*s == ',' && ndigits && value <= 255 && field - 1 < dim) {
      row[field - 1] = (uint8_t)value;
      field++;
      value = 0;
      ndigits = 0;
      s++;
      continue;
    }
    p->value = value;
    p->ndigits = ndigits;
    p->field = field;
    switch (*s) {
    case ',': rc = csv_end_field(p); break;
    case '\n': rc = csv_end_line(p); break;
    case '\r': /* CRLF: the '\n' ends the line; a lone CR is an error */
      if (s + 1 < end) {
        rc = s[1] == '\n' ? NN_OK : csv_stray_cr(p);
      } else {
        p->pending_cr = 1; /* checked at the start of the next block */
        rc = NN_OK;
      }
      break;
    default: rc = csv_bad_char(p, *s); break;
    }
    if (rc) return rc;
    value = p->value;
    ndigits = p->ndigits;
    field = p->field;
    dim = p->dim;
    row = p->row;
    s++;
  }
  p->value = value;
  p->ndigits = ndigits;
  p->field = field;
  return NN_OK;
}

/* Read the whole of f (opened on p->path) through the parser. */
static int csv_parse_file(csv_parser *p, gzFile f, unsigned char *block) {
  int rc;
  for (;;) {
    int r = gzread(f, block, (unsigned)CSV_BLOCK);
    if (r < 0) {
      char where[4200];
      snprintf(where, sizeof where, "%s:%zu", p->path, p->line);
      return nn__gz_read_error(f, p->path, where, p->err);
    }
    if (r == 0) break;
    if ((rc = csv_parse_block(p, block, block + r))) return rc;
  }
  if (nn__gz_cut_short(f)) /* zlib reports a cut gzip stream as plain EOF */
    return nn_error_set(p->err, NN_EFORMAT,
                        "%s:%zu: truncated gzip stream (the file ends in the "
                        "middle of compressed data)",
                        p->path, p->line);
  /* A last line without '\n' still counts; a trailing lone '\r' is fine. */
  if (p->field > 0 || p->ndigits > 0) {
    if ((rc = csv_end_line(p))) return rc;
  }
  if (p->n == 0)
    return nn_error_set(p->err, NN_EFORMAT,
                        "%s: no data: expected lines of label,p0,...,pD-1",
                        p->path);
  return NN_OK;
}

int nn_dataset_load_csv(nn_dataset *ds, const char *path, nn_error *err) {
  if (!ds) return nn_error_set(err, NN_EINVAL, "no dataset to load into");
  memset(ds, 0, sizeof *ds);
  if (!path) return nn_error_set(err, NN_EINVAL, "missing CSV file name");

  gzFile f;
  int rc = nn__gz_open(&f, path, CSV_GZ_BUFFER, NULL, err);
  if (rc) return rc;

  csv_parser p;
  memset(&p, 0, sizeof p);
  p.path = path;
  p.err = err;
  p.line = 1;
  unsigned char *block = malloc(CSV_BLOCK);
  if (!block)
    rc = csv_oom(&p);
  else
    rc = csv_parse_file(&p, f, block);
  free(block);
  gzclose(f);
  if (rc) {
    free(p.pixels);
    free(p.labels);
    return rc;
  }

  /* Trim to the exact size; if the allocator cannot, the bigger block is
   * just as valid. */
  uint8_t *px = realloc(p.pixels, p.n * p.dim);
  uint8_t *lb = realloc(p.labels, p.n);
  ds->n = p.n;
  ds->dim = p.dim;
  ds->pixels = px ? px : p.pixels;
  ds->labels = lb ? lb : p.labels;
  ds->owns_memory = 1;
  return NN_OK;
}

/* ---------------------------------------------------------------- writing */

#define CSV_OUT_BUF ((size_t)1 << 20)

/* Decimal text of v (0..255) at q; returns the end.  By hand because one
 * fprintf per value would dominate the write time. */
static char *put_u8(char *q, unsigned v) {
  if (v >= 100) {
    *q++ = (char)('0' + v / 100);
    v %= 100;
    *q++ = (char)('0' + v / 10);
    *q++ = (char)('0' + v % 10);
  } else if (v >= 10) {
    *q++ = (char)('0' + v / 10);
    *q++ = (char)('0' + v % 10);
  } else {
    *q++ = (char)('0' + v);
  }
  return q;
}

int nn_dataset_write_csv(const nn_dataset *ds, const char *path,
                         nn_error *err) {
  if (!ds || !path)
    return nn_error_set(err, NN_EINVAL, "no dataset or file name to write");
  if (ds->dim == 0)
    return nn_error_set(err, NN_EINVAL,
                        "cannot write %s: the dataset has no pixels per "
                        "example",
                        path);
  if (ds->n > 0 && (!ds->pixels || !ds->labels))
    return nn_error_set(err, NN_EINVAL,
                        "cannot write %s: the dataset has no data", path);
  /* A row is at most "255," per value, the last ',' becoming '\n'. */
  if (ds->dim > SIZE_MAX / 4 - 1)
    return nn_error_set(err, NN_EINVAL, "cannot write %s: rows too long",
                        path);
  const size_t row_max = 4 * (ds->dim + 1);
  const size_t buf_len = row_max > CSV_OUT_BUF ? row_max : CSV_OUT_BUF;
  char *buf = malloc(buf_len); /* owned here; freed on every path */
  if (!buf)
    return nn_error_set(err, NN_ENOMEM, "cannot write %s: out of memory",
                        path);

  nn__atomic_file f;
  int rc = nn__atomic_open(&f, path, err);
  if (rc) {
    free(buf);
    return rc;
  }
  size_t used = 0;
  for (size_t i = 0; i <= ds->n; i++) {
    /* Flush when the next row might not fit, and once at the end. */
    if (i == ds->n || buf_len - used < row_max) {
      if (used && fwrite(buf, 1, used, f.fp) != used) {
        int e = errno;
        nn__atomic_abort(&f);
        free(buf);
        return nn_error_set(err, NN_EIO, "cannot write %s: %s", path,
                            strerror(e));
      }
      used = 0;
    }
    if (i == ds->n) break;
    char *q = buf + used;
    const uint8_t *px = ds->pixels + i * ds->dim;
    q = put_u8(q, ds->labels[i]);
    for (size_t j = 0; j < ds->dim; j++) {
      *q++ = ',';
      q = put_u8(q, px[j]);
    }
    *q++ = '\n';
    used = (size_t)(q - buf);
  }
  free(buf);
  return nn__atomic_commit(&f, err);
}
