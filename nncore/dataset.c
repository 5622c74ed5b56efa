/* Dataset lifetime, views, the train/validation split, batch gathering and
 * the MNIST directory layout: see <nn/data.h>.  The file formats live in
 * data_idx.c and data_csv.c. */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <nn/data.h>

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

/* ------------------------------------------------------------ MNIST layout */

#define MNIST_PATH_MAX 4096

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
                      "MNIST file %s not found: tried %s and %s (run "
                      "data/get_data.sh to download MNIST)",
                      name, out, gz);
}

int nn_mnist_load(const char *dir, const char *format, nn_dataset *train,
                  nn_dataset *test, nn_error *err) {
  if (!train || !test)
    return nn_error_set(err, NN_EINVAL, "no datasets to load into");
  memset(train, 0, sizeof *train);
  memset(test, 0, sizeof *test);
  if (!dir || !format)
    return nn_error_set(err, NN_EINVAL, "missing data directory or format");
  if (!*dir) dir = ".";

  /* [0] train, [1] test; for CSV only the first name of each is used. */
  static const char *const idx_names[2][2] = {
      {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"},
      {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}};
  static const char *const csv_names[2] = {"mnist_train.csv",
                                           "mnist_test.csv"};
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
  for (int s = 0; s < 2; s++)
    for (int f = 0; f < (is_idx ? 2 : 1); f++)
      if ((rc = mnist_find(dir, is_idx ? idx_names[s][f] : csv_names[s],
                           paths[s][f], err)))
        return rc;

  nn_dataset *out[2] = {train, test};
  for (int s = 0; s < 2; s++) {
    rc = is_idx ? nn_dataset_load_idx(out[s], paths[s][0], paths[s][1], err)
                : nn_dataset_load_csv(out[s], paths[s][0], err);
    if (rc) {
      nn_dataset_free(train); /* test is still zeroed on failure */
      return rc;
    }
  }
  return NN_OK;
}
