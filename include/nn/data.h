/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Datasets: MNIST-style images as compact bytes, loaded from IDX or CSV.
 *
 * Images stay as uint8 (1 byte per pixel: 47 MB for MNIST's training file
 * instead of 376 MB of doubles) and are converted to doubles (pixel / 255)
 * one batch at a time by nn_dataset_gather into a caller-owned matrix. */
#ifndef NN_DATA_H
#define NN_DATA_H

#include <nn/math.h>
#include <nn/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nn_dataset {
  size_t n;         /* number of examples */
  size_t dim;       /* features per example (784 for MNIST) */
  uint8_t *pixels;  /* n * dim bytes, row-major */
  uint8_t *labels;  /* n labels */
  int owns_memory;  /* 1: pixels/labels are freed by nn_dataset_free;
                       0: a view borrowing another dataset's memory */
} nn_dataset;

/* Read an IDX image file (magic 0x00000803) and label file (0x00000801),
 * plain or gzip-compressed.  On success *ds owns its memory. */
int nn_dataset_load_idx(nn_dataset *ds, const char *images_path,
                        const char *labels_path, nn_error *err);
/* Read a CSV file with lines `label,p0,...,p783` (plain or gzip), no
 * header.  Errors name the file and line. */
int nn_dataset_load_csv(nn_dataset *ds, const char *path, nn_error *err);
/* Write ds as CSV (same format) atomically: temp file, fsync, rename. */
int nn_dataset_write_csv(const nn_dataset *ds, const char *path,
                         nn_error *err);
/* Release an owning dataset (no-op for views); leaves *ds zeroed. */
void nn_dataset_free(nn_dataset *ds);

/* The shape of one example: 1 x s x s for an image of dim = s * s pixels
 * (MNIST: 1 x 28 x 28), else a flat 1 x 1 x dim. */
nn_shape nn_dataset_shape(const nn_dataset *ds);

/* A view of examples [begin, end) of ds (borrows ds's memory). */
nn_dataset nn_dataset_view(const nn_dataset *ds, size_t begin, size_t end);
/* The course's split: the first floor(n * frac) examples and the rest,
 * both views of `all`. */
void nn_dataset_split(const nn_dataset *all, double frac, nn_dataset *first,
                      nn_dataset *rest);

/* Copy examples idx[0..count) into rows 0..count of X (pixel / 255) and
 * their labels into labels[0..count).  X must have >= count rows and
 * exactly ds->dim columns.  No allocation. */
int nn_dataset_gather(const nn_dataset *ds, const size_t *idx, size_t count,
                      gsl_matrix *X, uint32_t *labels);

/* The same batch as compressed sparse rows (models with the sparse-input extension take it
 * directly): rows 0..count of out get the non-zero pixels of examples
 * idx[0..count), as pixel / 255, and labels[0..count) their labels.  out
 * needs room for count rows and count * ds->dim entries (the worst case).
 * No allocation; a bad call (an index out of range, too small a buffer)
 * leaves out and labels untouched. */
int nn_dataset_gather_csr(const nn_dataset *ds, const size_t *idx,
                          size_t count, nn_csr_buffer *out, uint32_t *labels);

/* The MNIST file names inside a data directory.  format is "idx" or "csv".
 * For each file the plain name is tried first, then name + ".gz"; the error
 * lists the paths tried.  train may be NULL: then only the test set is
 * looked for and loaded (evaluation). */
int nn_mnist_load(const char *dir, const char *format, nn_dataset *train,
                  nn_dataset *test, nn_error *err);

/* What a run checks after nn_mnist_load and before it trains, so that bad
 * data is refused at once rather than after training (or halfway through
 * it): every part has examples, every label is below n_classes, and the
 * training and test images have the same size.  train and val are the two
 * parts of the training file, val following train in it (as
 * nn_dataset_split makes them), or both NULL when only the test set was
 * loaded.  dir and format are those given to nn_mnist_load: errors
 * (NN_EFORMAT) name the file found there, and for a bad label the
 * example's index in that file (and its line in a CSV file). */
int nn_mnist_check(const char *dir, const char *format,
                   const nn_dataset *train, const nn_dataset *val,
                   const nn_dataset *test, size_t n_classes, nn_error *err);

#ifdef __cplusplus
}
#endif
#endif /* NN_DATA_H */
