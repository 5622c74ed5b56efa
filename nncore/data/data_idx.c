/* SPDX-License-Identifier: GPL-3.0-or-later */
/* IDX reader (MNIST's native format): see nn_dataset_load_idx in <nn/data.h>.
 *
 * An IDX file is a big-endian header -- magic 0x00000800 | ndims, then ndims
 * 32-bit sizes -- followed by the unsigned bytes in row-major order.  Files
 * are read through zlib's gzread, which passes plain files through unchanged,
 * so "x-ubyte" and "x-ubyte.gz" need no separate code path.
 *
 * Speed: after the header, each body is read with a few huge gzread calls
 * straight into the dataset's final buffer (zlib inflates, or read()s a plain
 * file, directly into it), so there is no per-byte work and no extra copy.
 *
 * Trailing bytes after the data the header announces are rejected: they mean
 * the header's count is wrong (e.g. a hand-cut subset whose count was not
 * updated), and silently dropping examples would hide that. */
#include <config.h>

/* For madvise and MADV_HUGEPAGE (see idx_alloc), which strict POSIX mode
 * hides; everything else here is POSIX. */
#define _DEFAULT_SOURCE 1

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <zlib.h>

#include <nn/data.h>

#include "data/gzio.h"

#define IDX_TYPE_UBYTE 0x08u
/* Magic number and one 32-bit size per dimension. */
#define IDX_HEADER_LEN(ndims) (4 + 4 * (size_t)(ndims))
/* zlib reads 8 KiB per read() by default; a bigger buffer means fewer system
 * calls for plain files and bigger inflate steps for compressed ones. */
#define IDX_GZ_BUFFER (256u * 1024u)
/* gzread takes an unsigned length and returns an int: stay below INT_MAX. */
#define IDX_MAX_CHUNK ((size_t)1 << 30)

/* One open IDX file; `f` is owned by whoever holds the struct. */
typedef struct idx_file {
  gzFile f;
  const char *path;   /* borrowed from the caller, for messages */
  uint64_t disk_size; /* bytes on disk (compressed, for a .gz) */
} idx_file;

static int idx_open(idx_file *x, const char *path, nn_error *err) {
  x->path = path;
  return nn__gz_open(&x->f, path, IDX_GZ_BUFFER, &x->disk_size, err);
}

static void idx_close(idx_file *x) {
  if (x->f) gzclose(x->f);
  x->f = NULL;
}

/* Read up to len bytes into buf; *got is how many arrived before end of
 * file.  A short count is not an error here (the caller knows what was
 * expected and says so); I/O errors and corrupt gzip data are. */
static int idx_read(idx_file *x, void *buf, size_t len, size_t *got,
                    nn_error *err) {
  unsigned char *p = buf;
  size_t done = 0;
  while (done < len) {
    size_t want = len - done < IDX_MAX_CHUNK ? len - done : IDX_MAX_CHUNK;
    int r = gzread(x->f, p + done, (unsigned)want);
    if (r < 0) return nn__gz_read_error(x->f, x->path, x->path, err);
    if (r == 0) break;
    done += (size_t)r;
  }
  *got = done;
  return NN_OK;
}

/* " (the compressed stream is cut short)" when zlib saw a truncated gzip
 * member, so that the message says why the data ended early. */
static const char *idx_cut_note(idx_file *x) {
  return nn__gz_cut_short(x->f) ? " (the gzip stream is cut short)" : "";
}

static uint32_t be32(const unsigned char *b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 |
         (uint32_t)b[3];
}

/* Open `path` and read an IDX header of unsigned bytes with `ndims`
 * dimensions (1 or 3) into dims[].  `what` names the expected content. */
static int idx_open_header(idx_file *x, const char *path, unsigned ndims,
                           const char *what, uint32_t dims[3], nn_error *err) {
  int rc = idx_open(x, path, err);
  if (rc) return rc;
  const uint32_t want_magic = IDX_TYPE_UBYTE << 8 | ndims;
  const size_t hdr_len = IDX_HEADER_LEN(ndims);
  unsigned char hdr[16];
  size_t got;
  if ((rc = idx_read(x, hdr, hdr_len, &got, err))) return rc;
  if (got < 4)
    return nn_error_set(err, NN_EFORMAT,
                        "%s: too short for an IDX %s file (%zu bytes)%s",
                        path, what, got, idx_cut_note(x));
  uint32_t magic = be32(hdr);
  if (magic != want_magic) {
    /* The usual mistake is swapping the images and labels arguments. */
    const char *hint = "";
    if (magic == (IDX_TYPE_UBYTE << 8 | 1u))
      hint = " (this is an IDX label file)";
    else if (magic == (IDX_TYPE_UBYTE << 8 | 3u))
      hint = " (this is an IDX image file)";
    return nn_error_set(err, NN_EFORMAT,
                        "%s: bad magic number 0x%08x: expected 0x%08x "
                        "(IDX %s: unsigned bytes, %u dimension%s)%s",
                        path, (unsigned)magic, (unsigned)want_magic, what,
                        ndims, ndims == 1 ? "" : "s", hint);
  }
  if (got < hdr_len)
    return nn_error_set(err, NN_EFORMAT,
                        "%s: truncated IDX header: expected %zu bytes, "
                        "found %zu%s",
                        path, hdr_len, got, idx_cut_note(x));
  for (unsigned i = 0; i < ndims; i++) dims[i] = be32(hdr + 4 + 4 * i);
  return NN_OK;
}

/* Before allocating the len body bytes the header announces: can the
 * file hold them at all?  The header is 32-bit counts that anyone can
 * write, and without this a 16-byte file could make the reader allocate
 * terabytes.  A plain file must have them after its header; a .gz file
 * must be big enough to inflate to them (nn__gz_max_output).  Checked
 * again, exactly, as the body is read. */
static int idx_check_room(idx_file *x, size_t hdr_len, size_t len,
                          const char *what, nn_error *err) {
  const int direct = gzdirect(x->f);
  const uint64_t after = x->disk_size > hdr_len ? x->disk_size - hdr_len : 0;
  if ((uint64_t)len <= nn__gz_max_output(direct ? after : x->disk_size,
                                         direct))
    return NN_OK;
  if (direct)
    return nn_error_set(err, NN_EFORMAT,
                        "%s: truncated: the header announces %zu bytes of %s, "
                        "found only %llu",
                        x->path, len, what, (unsigned long long)after);
  return nn_error_set(err, NN_EFORMAT,
                      "%s: the header announces %zu bytes of %s, more than a "
                      "gzip file of %llu bytes can hold (cut short, or a "
                      "wrong count in the header)",
                      x->path, len, what, (unsigned long long)x->disk_size);
}

/* Read exactly len body bytes into buf and make sure nothing follows. */
static int idx_read_body(idx_file *x, void *buf, size_t len,
                         const char *what, nn_error *err) {
  size_t got;
  int rc = idx_read(x, buf, len, &got, err);
  if (rc) return rc;
  if (got < len)
    return nn_error_set(err, NN_EFORMAT,
                        "%s: truncated: the header announces %zu bytes of %s, "
                        "found only %zu%s",
                        x->path, len, what, got, idx_cut_note(x));
  unsigned char extra;
  if ((rc = idx_read(x, &extra, 1, &got, err))) return rc;
  if (got)
    return nn_error_set(err, NN_EFORMAT,
                        "%s: unexpected data after the %zu bytes of %s the "
                        "header announces (wrong count in the header?)",
                        x->path, len, what);
  return NN_OK;
}

/* Allocate the pixel buffer: plain malloc memory as far as the owner is
 * concerned (released with free), but big buffers are 2 MiB-aligned and
 * marked for transparent huge pages where the kernel offers them.  Filling
 * 47 MB of fresh 4 KiB pages costs ~11,500 page faults and TLB misses; on
 * some virtual machines that alone took 0.2 s against 0.02 s with huge
 * pages.  The advice is only a hint: if it fails the memory works as is. */
#define IDX_HUGE_PAGE ((size_t)2 << 20)
static void *idx_alloc(size_t len) {
#ifdef MADV_HUGEPAGE
  if (len >= IDX_HUGE_PAGE) {
    void *p = NULL;
    if (posix_memalign(&p, IDX_HUGE_PAGE, len) != 0) return NULL;
    /* Only whole huge pages inside the block: the tail may share its last
     * 2 MiB with memory that is not ours. */
    (void)madvise(p, len & ~(IDX_HUGE_PAGE - 1), MADV_HUGEPAGE);
    return p;
  }
#endif
  return malloc(len);
}

int nn_dataset_load_idx(nn_dataset *ds, const char *images_path,
                        const char *labels_path, nn_error *err) {
  if (!ds) return nn_error_set(err, NN_EINVAL, "no dataset to load into");
  memset(ds, 0, sizeof *ds);
  if (!images_path || !labels_path)
    return nn_error_set(err, NN_EINVAL, "missing IDX file name");

  idx_file img = {NULL, images_path, 0}, lab = {NULL, labels_path, 0};
  uint8_t *pixels = NULL, *labels = NULL; /* owned here until the end */
  uint32_t idims[3], ldims[3];
  size_t n, rows, cols, dim;
  int rc;

  /* Both headers first: a count mismatch is reported before 47 MB are read. */
  if ((rc = idx_open_header(&img, images_path, 3, "images", idims, err)))
    goto done;
  if ((rc = idx_open_header(&lab, labels_path, 1, "labels", ldims, err)))
    goto done;

  n = idims[0];
  rows = idims[1];
  cols = idims[2];
  if (ldims[0] != idims[0]) {
    rc = nn_error_set(err, NN_EFORMAT,
                      "count mismatch: %s has %zu images but %s has %zu "
                      "labels",
                      images_path, n, labels_path, (size_t)ldims[0]);
    goto done;
  }
  if (n == 0) {
    rc = nn_error_set(err, NN_EFORMAT, "%s: the header announces no images",
                      images_path);
    goto done;
  }
  if (rows == 0 || cols == 0) {
    rc = nn_error_set(err, NN_EFORMAT, "%s: images of size %zux%zu are empty",
                      images_path, rows, cols);
    goto done;
  }
  /* 32-bit sizes can overflow size_t products on 32-bit hosts. */
  if (rows > SIZE_MAX / cols || n > SIZE_MAX / (rows * cols)) {
    rc = nn_error_set(err, NN_EFORMAT,
                      "%s: %zu images of %zux%zu do not fit in memory",
                      images_path, n, rows, cols);
    goto done;
  }
  dim = rows * cols;
  if ((rc = idx_check_room(&img, IDX_HEADER_LEN(3), n * dim, "pixel data",
                           err)) ||
      (rc = idx_check_room(&lab, IDX_HEADER_LEN(1), n, "labels", err)))
    goto done;

  pixels = idx_alloc(n * dim);
  labels = malloc(n);
  if (!pixels || !labels) {
    rc = nn_error_set(err, NN_ENOMEM,
                      "cannot allocate %zu bytes for the %zu images of %s",
                      n * dim + n, n, images_path);
    goto done;
  }
  if ((rc = idx_read_body(&img, pixels, n * dim, "pixel data", err)) ||
      (rc = idx_read_body(&lab, labels, n, "labels", err)))
    goto done;

  ds->n = n;
  ds->dim = dim;
  ds->pixels = pixels;
  ds->labels = labels;
  ds->owns_memory = 1;
  pixels = labels = NULL; /* ownership moved to *ds */
  rc = NN_OK;

done:
  idx_close(&img);
  idx_close(&lab);
  free(pixels);
  free(labels);
  return rc;
}
