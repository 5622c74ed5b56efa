/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Dataset lifetime, views, the train/validation split, batch gathering and
 * the MNIST directory layout: see <nn/data.h>.  The file formats live in
 * data_idx.c and data_csv.c. */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <nn/data.h>

/* The vector row scans below, unless NN_NO_SIMD asks for the portable
 * code only (as in nncore/math.c). */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(NN_NO_SIMD)
#define NN_X86_GATHER 1
#include <immintrin.h>
#endif

void nn_dataset_free(nn_dataset *ds) {
  if (!ds) return;
  if (ds->owns_memory) {
    free(ds->pixels);
    free(ds->labels);
  }
  memset(ds, 0, sizeof *ds);
}

nn_dataset nn_dataset_view(const nn_dataset *ds, size_t begin, size_t end) {
  nn_dataset v;
  memset(&v, 0, sizeof v);
  if (!ds) return v;
  /* Clamp rather than fail: the result is always a valid (maybe empty)
   * view, so callers need no error path for a computed range. */
  if (end > ds->n) end = ds->n;
  if (begin > end) begin = end;
  v.n = end - begin;
  v.dim = ds->dim;
  /* No arithmetic on NULL (undefined even with offset 0 in the C standard's
   * eyes, and UBSan says so). */
  v.pixels = ds->pixels ? ds->pixels + begin * ds->dim : NULL;
  v.labels = ds->labels ? ds->labels + begin : NULL;
  v.owns_memory = 0;
  return v;
}

/* floor(n * frac), robust to the rounding of the product: 0.29 * 100 is
 * 28.999999999999996 in doubles, but the split the user means is 29.  A
 * product within a relative 1e-9 below an integer is taken as that integer;
 * genuine fractions of an example are far bigger than that for any
 * realistic n and a fraction written with a few decimals. */
static size_t split_count(size_t n, double frac) {
  if (!(frac > 0)) return 0; /* also NaN */
  if (frac >= 1) return n;
  double x = (double)n * frac;
  size_t k = (size_t)x; /* 0 <= x < n: the cast is floor */
  if ((double)(k + 1) - x <= 1e-9 * (double)(k + 1)) k++;
  return k < n ? k : n;
}

void nn_dataset_split(const nn_dataset *all, double frac, nn_dataset *first,
                      nn_dataset *rest) {
  size_t n = all ? all->n : 0;
  size_t k = split_count(n, frac);
  if (first) *first = nn_dataset_view(all, 0, k);
  if (rest) *rest = nn_dataset_view(all, k, n);
}

/* pixel / 255 for every byte value, folded by the compiler into a constant
 * table (division is correctly rounded at compile time and at run time, so
 * the entries equal v / 255.0 computed anywhere). */
#define NN_PX1(i) ((double)(i) / 255.0)
#define NN_PX4(i) NN_PX1(i), NN_PX1((i) + 1), NN_PX1((i) + 2), NN_PX1((i) + 3)
#define NN_PX16(i) \
  NN_PX4(i), NN_PX4((i) + 4), NN_PX4((i) + 8), NN_PX4((i) + 12)
#define NN_PX64(i) \
  NN_PX16(i), NN_PX16((i) + 16), NN_PX16((i) + 32), NN_PX16((i) + 48)
static const double pixel_scale[256] = {NN_PX64(0), NN_PX64(64),
                                        NN_PX64(128), NN_PX64(192)};

int nn_dataset_gather(const nn_dataset *ds, const size_t *idx, size_t count,
                      gsl_matrix *X, uint32_t *labels) {
  if (!ds || !X || (count && (!idx || !labels))) return NN_EINVAL;
  if (X->size2 != ds->dim || count > X->size1) return NN_EINVAL;
  /* Validate every index before writing anything, so that a bad call
   * leaves X and labels untouched. */
  for (size_t k = 0; k < count; k++)
    if (idx[k] >= ds->n) return NN_EINVAL;
  const size_t dim = ds->dim;
  for (size_t k = 0; k < count; k++) {
    const uint8_t *src = ds->pixels + idx[k] * dim;
    double *dst = X->data + k * X->tda; /* X may be a view: tda >= size2 */
    for (size_t j = 0; j < dim; j++) dst[j] = pixel_scale[src[j]];
    labels[k] = ds->labels[idx[k]];
  }
  return NN_OK;
}

/* The non-zero pixels of one row as (column, pixel / 255) entries; returns
 * how many.  Portable version: eight pixels per test, so the long zero runs
 * at the image borders cost one branch per word. */
static size_t row_to_csr(const uint8_t *src, size_t dim, uint32_t *index,
                         double *value) {
  size_t n = 0, j = 0;
  for (; j + 8 <= dim; j += 8) {
    uint64_t word;
    memcpy(&word, src + j, sizeof word); /* aliasing-safe unaligned load */
    if (!word) continue;
    for (size_t b = j; b < j + 8; b++) {
      index[n] = (uint32_t)b;
      value[n] = pixel_scale[src[b]];
      n += src[b] != 0; /* written always, kept if non-zero: no branch */
    }
  }
  for (; j < dim; j++)
    if (src[j]) {
      index[n] = (uint32_t)j;
      value[n++] = pixel_scale[src[j]];
    }
  return n;
}

#ifdef NN_X86_GATHER
/* AVX2 version: 32 pixels per compare, then one step per non-zero pixel
 * from the bit mask, instead of the portable loop's branch at every switch
 * between zero and non-zero words of a digit's strokes (mispredicted more
 * often than not). */
__attribute__((target("avx2,bmi"))) static size_t row_to_csr_avx2(
    const uint8_t *src, size_t dim, uint32_t *index, double *value) {
  size_t n = 0, j = 0;
  const __m256i zero = _mm256_setzero_si256();
  for (; j + 32 <= dim; j += 32) {
    const __m256i v = _mm256_loadu_si256((const __m256i *)(src + j));
    uint32_t nz = ~(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v, zero));
    for (; nz; nz &= nz - 1) {
      const size_t c = j + (size_t)__builtin_ctz(nz);
      index[n] = (uint32_t)c;
      value[n++] = pixel_scale[src[c]];
    }
  }
  /* The last dim % 32 pixels; their columns are offset by j. */
  const size_t m = row_to_csr(src + j, dim - j, index + n, value + n);
  for (size_t q = n; q < n + m; q++) index[q] += (uint32_t)j;
  return n + m;
}

/* AVX-512 version: 16 pixels per step, without a branch per pixel.  The
 * non-zero pixels' columns and values are packed with a compress
 * (vpcompressd) into the first lanes and stored whole: the lanes past the
 * kept ones are overwritten by the next step (room for that is in the
 * count * dim bound the caller checked).  value = pixel / 255.0 by a
 * correctly rounded division: the same doubles as pixel_scale. */
__attribute__((target("avx512f"))) static size_t row_to_csr_512(
    const uint8_t *src, size_t dim, uint32_t *index, double *value) {
  size_t n = 0, j = 0;
  const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6,
                                        5, 4, 3, 2, 1, 0);
  const __m512d d255 = _mm512_set1_pd(255.0);
  for (; j + 16 <= dim; j += 16) {
    const __m128i b = _mm_loadu_si128((const __m128i *)(src + j));
    if (_mm_testz_si128(b, b)) continue; /* the image's empty borders */
    const __m512i v = _mm512_cvtepu8_epi32(b);
    const __mmask16 m = _mm512_test_epi32_mask(v, v);
    const __m512i col = _mm512_add_epi32(iota, _mm512_set1_epi32((int)j));
    _mm512_storeu_si512((void *)(index + n), _mm512_maskz_compress_epi32(m, col));
    const __m512i pv = _mm512_maskz_compress_epi32(m, v);
    const unsigned k = (unsigned)__builtin_popcount((unsigned)m);
    _mm512_storeu_pd(value + n, _mm512_div_pd(_mm512_cvtepi32_pd(
                                     _mm512_castsi512_si256(pv)), d255));
    if (k > 8)
      _mm512_storeu_pd(value + n + 8,
                       _mm512_div_pd(_mm512_cvtepi32_pd(
                                         _mm512_extracti64x4_epi64(pv, 1)),
                                     d255));
    n += k;
  }
  const size_t t = row_to_csr(src + j, dim - j, index + n, value + n);
  for (size_t q = n; q < n + t; q++) index[q] += (uint32_t)j;
  return n + t;
}
#endif /* NN_X86_GATHER */

/* Rows ahead whose pixels the gather asks the CPU to start loading: a
 * shuffled batch reads scattered rows of a training set (38 MB for MNIST)
 * that does not fit in the caches, and once the scan is vectorized the
 * wait for each row's 13 cache lines is most of the gather's time. */
#define GATHER_AHEAD 6
static inline void prefetch_row(const uint8_t *p, size_t dim) {
#if defined(__GNUC__)
  for (size_t off = 0; off < dim; off += 64) __builtin_prefetch(p + off);
  if (dim) __builtin_prefetch(p + dim - 1); /* the row's last line */
#else
  (void)p, (void)dim;
#endif
}

int nn_dataset_gather_csr(const nn_dataset *ds, const size_t *idx,
                          size_t count, nn_csr_buffer *out, uint32_t *labels) {
  if (!ds || !out || (count && (!idx || !labels))) return NN_EINVAL;
  if (count > out->max_rows || ds->dim > UINT32_MAX ||
      (ds->dim && count > out->max_nnz / ds->dim))
    return NN_EINVAL;
  for (size_t k = 0; k < count; k++)
    if (idx[k] >= ds->n) return NN_EINVAL;
  const size_t dim = ds->dim;
#ifdef NN_X86_GATHER
  const int avx512 = __builtin_cpu_supports("avx512f");
  const int avx2 = __builtin_cpu_supports("avx2");
#endif
  size_t nnz = 0;
  for (size_t k = 0; k < count && k < GATHER_AHEAD; k++)
    prefetch_row(ds->pixels + idx[k] * dim, dim);
  for (size_t k = 0; k < count; k++) {
    const uint8_t *src = ds->pixels + idx[k] * dim;
    if (k + GATHER_AHEAD < count)
      prefetch_row(ds->pixels + idx[k + GATHER_AHEAD] * dim, dim);
#ifdef NN_X86_GATHER
    if (avx512)
      nnz += row_to_csr_512(src, dim, out->index + nnz, out->value + nnz);
    else if (avx2)
      nnz += row_to_csr_avx2(src, dim, out->index + nnz, out->value + nnz);
    else
#endif
      nnz += row_to_csr(src, dim, out->index + nnz, out->value + nnz);
    out->start[k + 1] = nnz;
    labels[k] = ds->labels[idx[k]];
  }
  out->start[0] = 0;
  out->csr = (nn_csr){(uint32_t)sizeof(nn_csr), count, dim, out->start, out->index, out->value};
  return NN_OK;
}

/* ------------------------------------------------------------ MNIST layout */

#define MNIST_PATH_MAX 4096

/* [0] train, [1] test: images then labels; a CSV file holds both. */
static const char *const idx_names[2][2] = {
    {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"},
    {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}};
static const char *const csv_names[2] = {"mnist_train.csv", "mnist_test.csv"};

/* Resolve dir/name, else dir/name.gz, into out (MNIST_PATH_MAX bytes). */
static int mnist_find(const char *dir, const char *name, char *out,
                      nn_error *err) {
  char gz[MNIST_PATH_MAX];
  int a = snprintf(out, MNIST_PATH_MAX, "%s/%s", dir, name);
  int b = snprintf(gz, sizeof gz, "%s/%s.gz", dir, name);
  if (a < 0 || b < 0 || a >= MNIST_PATH_MAX || b >= MNIST_PATH_MAX)
    return nn_error_set(err, NN_EINVAL, "data directory path too long: %s",
                        dir);
  const char *tries[2] = {out, gz};
  for (int i = 0; i < 2; i++) {
    struct stat st;
    if (stat(tries[i], &st) == 0) {
      if (i == 1) memcpy(out, gz, (size_t)b + 1);
      return NN_OK;
    }
    /* Anything but "does not exist" (e.g. permissions) is worth reporting
     * as such rather than as a missing download. */
    if (errno != ENOENT && errno != ENOTDIR)
      return nn_error_set(err, NN_EIO, "cannot access %s: %s", tries[i],
                          strerror(errno));
  }
  return nn_error_set(err, NN_ENOTFOUND,
                      "MNIST file %s not found: tried %s and %s",
                      name, out, gz);
}

int nn_mnist_load(const char *dir, const char *format, nn_dataset *train,
                  nn_dataset *test, nn_error *err) {
  if (!test)
    return nn_error_set(err, NN_EINVAL, "no dataset to load into");
  if (train) memset(train, 0, sizeof *train);
  memset(test, 0, sizeof *test);
  if (!dir || !format)
    return nn_error_set(err, NN_EINVAL, "missing data directory or format");
  if (!*dir) dir = ".";

  int is_idx = strcmp(format, "idx") == 0;
  if (!is_idx && strcmp(format, "csv") != 0)
    return nn_error_set(err, NN_EINVAL,
                        "unknown data format \"%s\": expected \"idx\" or "
                        "\"csv\"",
                        format);

  /* Find every file before loading any, so that a missing test file is
   * reported at once rather than after the training set was read. */
  char paths[2][2][MNIST_PATH_MAX];
  int rc;
  const int first = train ? 0 : 1; /* no train: the test set only */
  for (int s = first; s < 2; s++)
    for (int f = 0; f < (is_idx ? 2 : 1); f++)
      if ((rc = mnist_find(dir, is_idx ? idx_names[s][f] : csv_names[s],
                           paths[s][f], err)))
        return rc;

  nn_dataset *out[2] = {train, test};
  for (int s = first; s < 2; s++) {
    rc = is_idx ? nn_dataset_load_idx(out[s], paths[s][0], paths[s][1], err)
                : nn_dataset_load_csv(out[s], paths[s][0], err);
    if (rc) {
      nn_dataset_free(train); /* NULL-safe; test is still zeroed on failure */
      return rc;
    }
  }
  return NN_OK;
}

/* ---------------------------------------------------- checks before training */

/* The path nn_mnist_load read dir/name from, for messages: the file that is
 * there (plain or .gz), or dir/name if it has gone since. */
static void mnist_path(const char *dir, const char *name, char *out) {
  nn_error ignored;
  if (mnist_find(dir, name, out, &ignored))
    snprintf(out, MNIST_PATH_MAX, "%s/%s", dir, name);
}

/* "784 (28x28)", or "785" for images that are not square. */
static void describe_size(size_t dim, char *buf, size_t size) {
  nn_dataset probe = {.dim = dim};
  nn_shape s = nn_dataset_shape(&probe);
  if (s.h > 1)
    snprintf(buf, size, "%zu (%ux%u)", dim, (unsigned)s.h, (unsigned)s.w);
  else
    snprintf(buf, size, "%zu", dim);
}

/* Every label of ds below n_classes.  first is the index in its file of
 * ds's first example (the validation part starts after the training part),
 * so the message points at the example in the file; in a CSV file (one
 * example per line, no header) that is also a line. */
static int check_labels(const nn_dataset *ds, size_t first, size_t n_classes,
                        const char *file, int csv, nn_error *err) {
  for (size_t k = 0; k < ds->n; k++) {
    if (ds->labels[k] < n_classes) continue;
    size_t at = first + k;
    char line[32] = "";
    if (csv) snprintf(line, sizeof line, ":%zu", at + 1);
    return nn_error_set(err, NN_EFORMAT,
                        "%s%s: example %zu (counting from 0) has label %u; "
                        "expected 0 to %zu (the model has %zu classes)",
                        file, line, at, (unsigned)ds->labels[k],
                        n_classes - 1, n_classes);
  }
  return NN_OK;
}

int nn_mnist_check(const char *dir, const char *format,
                   const nn_dataset *train, const nn_dataset *val,
                   const nn_dataset *test, size_t n_classes, nn_error *err) {
  if (!dir || !format || !test || !n_classes || !train != !val)
    return nn_error_set(err, NN_EINVAL,
                        "nn_mnist_check: needs a data directory, a format, "
                        "a test set, both or neither training parts and at "
                        "least one class");
  if (!*dir) dir = ".";
  const int csv = strcmp(format, "csv") == 0;
  /* [0] train, [1] test; [0] images, [1] labels (one CSV file holds both). */
  char files[2][2][MNIST_PATH_MAX];
  for (int s = 0; s < 2; s++)
    for (int f = 0; f < 2; f++)
      mnist_path(dir, csv ? csv_names[s] : idx_names[s][f], files[s][f]);

  if (train && (train->n == 0 || val->n == 0)) {
    size_t total = train->n + val->n;
    return nn_error_set(err, NN_EFORMAT,
                        "%s: %zu example%s too few: the file splits into %zu "
                        "for training and %zu for validation, and each part "
                        "needs at least one",
                        files[0][0], total, total == 1 ? " is" : "s are",
                        train->n, val->n);
  }
  if (test->n == 0)
    return nn_error_set(err, NN_EFORMAT, "%s: no examples: the test set is "
                        "empty", files[1][0]);
  if (train && test->dim != train->dim) {
    char want[64], got[64];
    describe_size(train->dim, want, sizeof want);
    describe_size(test->dim, got, sizeof got);
    return nn_error_set(err, NN_EFORMAT,
                        "%s: images of %s pixels, but %s has images of %s: "
                        "the training and test images must be the same size",
                        files[1][0], got, files[0][0], want);
  }
  int rc;
  if (train && ((rc = check_labels(train, 0, n_classes, files[0][1], csv,
                                   err)) ||
                (rc = check_labels(val, train->n, n_classes, files[0][1], csv,
                                   err))))
    return rc;
  return check_labels(test, 0, n_classes, files[1][1], csv, err);
}

nn_shape nn_dataset_shape(const nn_dataset *ds) {
  size_t s = 1;
  while ((s + 1) * (s + 1) <= ds->dim) s++;
  if (s * s == ds->dim && s > 1 && s <= UINT32_MAX)
    return (nn_shape){1, (uint32_t)s, (uint32_t)s};
  return (nn_shape){1, 1, (uint32_t)ds->dim};
}
