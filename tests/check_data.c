/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Datasets: IDX and CSV loading (real MNIST fixtures and malformed files),
 * CSV writing, views, the split and batch gathering, nn_mnist_load. */
#include <config.h>

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gsl/gsl_matrix.h>

#include <nn/data.h>

#include "testutil.h"

#define TRAIN_N 3000    /* IDX training fixture */
#define CSV_TRAIN_N 500 /* CSV training fixture: the first 500 of them */
#define TEST_N 200
#define MNIST_DIM 784

/* ------------------------------------------------------------- helpers */

/* Per-test scratch directory under /tmp: never write into the source tree. */
static char tmpdir[64];

static void tmp_setup(void) {
  strcpy(tmpdir, "/tmp/nn_check_data.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

/* The scratch directory is flat: remove its entries, then itself. */
static void tmp_teardown(void) {
  DIR *d = opendir(tmpdir);
  if (!d) return;
  struct dirent *e;
  char path[4096];
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(path, sizeof path, "%s/%s", tmpdir, e->d_name);
    unlink(path);
  }
  closedir(d);
  rmdir(tmpdir);
}

/* "<tmpdir>/<name>" in one of a few rotating static buffers, so that a test
 * can hold several paths at once. */
static const char *tmp_path(const char *name) {
  static char bufs[4][4096];
  static int next;
  char *b = bufs[next++ % 4];
  snprintf(b, 4096, "%s/%s", tmpdir, name);
  return b;
}

static void write_bytes(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(data, 1, len, f), len);
  ck_assert_int_eq(fclose(f), 0);
}

static void write_text(const char *path, const char *text) {
  write_bytes(path, text, strlen(text));
}

/* The whole of a file, malloc'd (caller frees); *len gets its size. */
static unsigned char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  size_t cap = 1 << 16, n = 0;
  unsigned char *buf = malloc(cap);
  ck_assert_ptr_nonnull(buf);
  size_t r;
  while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
    n += r;
    if (n == cap) {
      cap *= 2;
      buf = realloc(buf, cap);
      ck_assert_ptr_nonnull(buf);
    }
  }
  fclose(f);
  *len = n;
  return buf;
}

/* Copy at most max bytes of src to dst (to cut files short). */
static void copy_file(const char *src, const char *dst, size_t max) {
  size_t len;
  unsigned char *data = read_all(src, &len);
  write_bytes(dst, data, len < max ? len : max);
  free(data);
}

static void put_be32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

/* A tiny IDX pair: n images of 2x3 and n labels, with the given header
 * fields (so that tests can lie in them). */
static void write_idx_images(const char *path, uint32_t magic, uint32_t count,
                             size_t n_written) {
  unsigned char buf[16 + 6 * 16];
  ck_assert_uint_le(n_written, 16);
  put_be32(buf, magic);
  put_be32(buf + 4, count);
  put_be32(buf + 8, 2);
  put_be32(buf + 12, 3);
  for (size_t i = 0; i < 6 * n_written; i++) buf[16 + i] = (unsigned char)i;
  write_bytes(path, buf, 16 + 6 * n_written);
}

static void write_idx_labels(const char *path, uint32_t magic, uint32_t count,
                             size_t n_written) {
  unsigned char buf[8 + 16];
  ck_assert_uint_le(n_written, 16);
  put_be32(buf, magic);
  put_be32(buf + 4, count);
  for (size_t i = 0; i < n_written; i++) buf[8 + i] = (unsigned char)(i % 10);
  write_bytes(path, buf, 8 + n_written);
}

#define assert_msg_has(err, sub)                                             \
  ck_assert_msg(strstr((err).msg, (sub)) != NULL,                           \
                "message \"%s\" lacks \"%s\"", (err).msg, (sub))

static void assert_zeroed(const nn_dataset *ds) {
  ck_assert_uint_eq(ds->n, 0);
  ck_assert_uint_eq(ds->dim, 0);
  ck_assert_ptr_null(ds->pixels);
  ck_assert_ptr_null(ds->labels);
  ck_assert_int_eq(ds->owns_memory, 0);
}

static void load_fixture_idx(nn_dataset *ds, int train) {
  char images[4096], labels[4096];
  snprintf(images, sizeof images, "%s",
           test_data_path(train ? "train-images-idx3-ubyte.gz"
                                : "t10k-images-idx3-ubyte"));
  snprintf(labels, sizeof labels, "%s",
           test_data_path(train ? "train-labels-idx1-ubyte.gz"
                                : "t10k-labels-idx1-ubyte"));
  nn_error err = {0, ""};
  int rc = nn_dataset_load_idx(ds, images, labels, &err);
  ck_assert_msg(rc == NN_OK, "load_idx: %s", err.msg);
}

static void load_fixture_csv(nn_dataset *ds, int train) {
  nn_error err = {0, ""};
  int rc = nn_dataset_load_csv(
      ds, test_data_path(train ? "mnist_train.csv.gz" : "mnist_test.csv.gz"),
      &err);
  ck_assert_msg(rc == NN_OK, "load_csv: %s", err.msg);
}

/* b equals the first b->n examples of a (all of a when the counts match). */
static void assert_prefix_data(const nn_dataset *a, const nn_dataset *b) {
  ck_assert_uint_le(b->n, a->n);
  ck_assert_uint_eq(a->dim, b->dim);
  ck_assert_int_eq(memcmp(a->pixels, b->pixels, b->n * a->dim), 0);
  ck_assert_int_eq(memcmp(a->labels, b->labels, b->n), 0);
}

static void assert_same_data(const nn_dataset *a, const nn_dataset *b) {
  ck_assert_uint_eq(a->n, b->n);
  ck_assert_uint_eq(a->dim, b->dim);
  ck_assert_int_eq(memcmp(a->pixels, b->pixels, a->n * a->dim), 0);
  ck_assert_int_eq(memcmp(a->labels, b->labels, a->n), 0);
}

/* --------------------------------------------------------- IDX fixtures */

START_TEST(test_idx_train_fixture) {
  nn_dataset ds;
  load_fixture_idx(&ds, 1);
  ck_assert_uint_eq(ds.n, TRAIN_N);
  ck_assert_uint_eq(ds.dim, MNIST_DIM);
  ck_assert_int_eq(ds.owns_memory, 1);
  /* MNIST's first training labels, and every digit present. */
  static const uint8_t first[10] = {5, 0, 4, 1, 9, 2, 1, 3, 1, 4};
  ck_assert_int_eq(memcmp(ds.labels, first, 10), 0);
  size_t seen[10] = {0};
  for (size_t i = 0; i < ds.n; i++) {
    ck_assert_uint_le(ds.labels[i], 9);
    seen[ds.labels[i]]++;
  }
  for (int d = 0; d < 10; d++) ck_assert_uint_gt(seen[d], 50);
  /* Real images: dark background corners, some full-ink pixels. */
  unsigned max = 0;
  for (size_t j = 0; j < MNIST_DIM; j++)
    if (ds.pixels[j] > max) max = ds.pixels[j];
  ck_assert_uint_eq(max, 255);
  ck_assert_uint_eq(ds.pixels[0], 0);
  ck_assert_uint_eq(ds.pixels[(ds.n - 1) * ds.dim + MNIST_DIM - 1], 0);
  nn_dataset_free(&ds);
  assert_zeroed(&ds);
}
END_TEST

START_TEST(test_idx_test_fixture_plain) {
  nn_dataset ds;
  load_fixture_idx(&ds, 0);
  ck_assert_uint_eq(ds.n, TEST_N);
  ck_assert_uint_eq(ds.dim, MNIST_DIM);
  static const uint8_t first[10] = {7, 2, 1, 0, 4, 1, 4, 9, 5, 9};
  ck_assert_int_eq(memcmp(ds.labels, first, 10), 0);
  for (size_t i = 0; i < ds.n; i++) ck_assert_uint_le(ds.labels[i], 9);
  nn_dataset_free(&ds);
}
END_TEST

/* --------------------------------------------------------- CSV fixtures */

START_TEST(test_csv_matches_idx) {
  for (int train = 0; train < 2; train++) {
    nn_dataset a, b;
    load_fixture_idx(&a, train);
    load_fixture_csv(&b, train);
    ck_assert_int_eq(b.owns_memory, 1);
    ck_assert_uint_eq(b.n, train ? CSV_TRAIN_N : TEST_N);
    assert_prefix_data(&a, &b);
    nn_dataset_free(&a);
    nn_dataset_free(&b);
  }
}
END_TEST

START_TEST(test_csv_tolerated_forms) {
  nn_dataset ds;
  nn_error err = {0, ""};
  /* CRLF, no final newline. */
  write_text(tmp_path("a.csv"), "1,2,3\r\n4,5,255\r\n6,0,7");
  ck_assert_int_eq(nn_dataset_load_csv(&ds, tmp_path("a.csv"), &err), NN_OK);
  ck_assert_uint_eq(ds.n, 3);
  ck_assert_uint_eq(ds.dim, 2);
  static const uint8_t px[6] = {2, 3, 5, 255, 0, 7}, lb[3] = {1, 4, 6};
  ck_assert_int_eq(memcmp(ds.pixels, px, 6), 0);
  ck_assert_int_eq(memcmp(ds.labels, lb, 3), 0);
  nn_dataset_free(&ds);
  /* Blank lines at the end, leading zeros. */
  write_text(tmp_path("b.csv"), "9,008\n0,1\n\n\r\n");
  ck_assert_int_eq(nn_dataset_load_csv(&ds, tmp_path("b.csv"), &err), NN_OK);
  ck_assert_uint_eq(ds.n, 2);
  ck_assert_uint_eq(ds.dim, 1);
  ck_assert_uint_eq(ds.pixels[0], 8);
  ck_assert_uint_eq(ds.labels[1], 0);
  nn_dataset_free(&ds);
}
END_TEST

/* ------------------------------------------------------ views and split */

START_TEST(test_split_fixture) {
  nn_dataset all, first, rest;
  load_fixture_idx(&all, 1);
  nn_dataset_split(&all, 0.8, &first, &rest);
  ck_assert_uint_eq(first.n, 2400);
  ck_assert_uint_eq(rest.n, 600);
  ck_assert_uint_eq(first.dim, MNIST_DIM);
  ck_assert_uint_eq(rest.dim, MNIST_DIM);
  ck_assert_int_eq(first.owns_memory, 0);
  ck_assert_int_eq(rest.owns_memory, 0);
  ck_assert_ptr_eq(first.pixels, all.pixels);
  ck_assert_ptr_eq(first.labels, all.labels);
  ck_assert_ptr_eq(rest.pixels, all.pixels + 2400 * MNIST_DIM);
  ck_assert_ptr_eq(rest.labels, all.labels + 2400);
  /* Freeing a view only forgets it. */
  nn_dataset_free(&rest);
  assert_zeroed(&rest);
  ck_assert_uint_eq(all.n, TRAIN_N); /* the parent is untouched */
  nn_dataset_free(&all);
}
END_TEST

/* A header-only dataset of n examples with 1 pixel each. */
static nn_dataset fake_dataset(size_t n) {
  nn_dataset ds = {n, 1, malloc(n ? n : 1), malloc(n ? n : 1), 1};
  ck_assert_ptr_nonnull(ds.pixels);
  ck_assert_ptr_nonnull(ds.labels);
  return ds;
}

START_TEST(test_split_counts) {
  nn_dataset all = fake_dataset(60000), first, rest;
  nn_dataset_split(&all, 0.8, &first, &rest);
  ck_assert_uint_eq(first.n, 48000);
  ck_assert_uint_eq(rest.n, 12000);
  ck_assert_ptr_eq(rest.labels, all.labels + 48000);
  nn_dataset_free(&all);
  /* floor(n * p / 100) exactly, for every n and percentage: the doubles'
   * rounding (0.29 * 100 = 28.999...) must not cost an example. */
  nn_dataset big = fake_dataset(2000);
  for (size_t n = 0; n <= 2000; n += 7) {
    nn_dataset part = nn_dataset_view(&big, 0, n);
    for (unsigned p = 0; p <= 100; p++) {
      nn_dataset_split(&part, p / 100.0, &first, &rest);
      ck_assert_msg(first.n == n * p / 100, "n=%zu p=%u: got %zu", n, p,
                    first.n);
      ck_assert_uint_eq(first.n + rest.n, n);
    }
  }
  /* Out-of-range fractions clamp. */
  nn_dataset_split(&big, -0.5, &first, &rest);
  ck_assert_uint_eq(first.n, 0);
  ck_assert_uint_eq(rest.n, 2000);
  nn_dataset_split(&big, 1.5, &first, &rest);
  ck_assert_uint_eq(first.n, 2000);
  ck_assert_uint_eq(rest.n, 0);
  nn_dataset_free(&big);
}
END_TEST

START_TEST(test_view_bounds) {
  nn_dataset all = fake_dataset(100);
  nn_dataset v = nn_dataset_view(&all, 10, 30);
  ck_assert_uint_eq(v.n, 20);
  ck_assert_ptr_eq(v.pixels, all.pixels + 10);
  ck_assert_ptr_eq(v.labels, all.labels + 10);
  ck_assert_int_eq(v.owns_memory, 0);
  v = nn_dataset_view(&all, 90, 500); /* end clamps to n */
  ck_assert_uint_eq(v.n, 10);
  v = nn_dataset_view(&all, 500, 600); /* empty, never out of bounds */
  ck_assert_uint_eq(v.n, 0);
  nn_dataset_free(&all);
}
END_TEST

/* ------------------------------------------------------------- gather */

START_TEST(test_gather_values) {
  nn_dataset ds;
  load_fixture_idx(&ds, 0);
  gsl_matrix *X = gsl_matrix_alloc(5, MNIST_DIM);
  gsl_matrix_set_all(X, -1.0);
  uint32_t labels[5] = {99, 99, 99, 99, 99};
  const size_t idx[3] = {3, 0, 199};
  ck_assert_int_eq(nn_dataset_gather(&ds, idx, 3, X, labels), NN_OK);
  int saw_one = 0, saw_mid = 0;
  for (size_t k = 0; k < 3; k++) {
    ck_assert_uint_eq(labels[k], ds.labels[idx[k]]);
    for (size_t j = 0; j < MNIST_DIM; j++) {
      unsigned v = ds.pixels[idx[k] * MNIST_DIM + j];
      ck_assert_double_eq(gsl_matrix_get(X, k, j), v / 255.0);
      saw_one |= v == 255;
      saw_mid |= v > 0 && v < 255;
    }
  }
  ck_assert(saw_one && saw_mid);
  /* Rows past count are left alone. */
  for (size_t j = 0; j < MNIST_DIM; j++) {
    ck_assert_double_eq(gsl_matrix_get(X, 3, j), -1.0);
    ck_assert_double_eq(gsl_matrix_get(X, 4, j), -1.0);
  }
  ck_assert_uint_eq(labels[3], 99);
  gsl_matrix_free(X);
  nn_dataset_free(&ds);
}
END_TEST

START_TEST(test_gather_view_tda) {
  nn_dataset ds;
  load_fixture_idx(&ds, 0);
  /* A 3 x 784 window inside a 6 x 800 matrix: tda (800) != size2 (784). */
  gsl_matrix *M = gsl_matrix_alloc(6, 800);
  gsl_matrix_set_all(M, -7.0);
  gsl_matrix_view V = gsl_matrix_submatrix(M, 1, 8, 3, MNIST_DIM);
  ck_assert_uint_eq(V.matrix.tda, 800);
  uint32_t labels[3];
  const size_t idx[3] = {5, 6, 7};
  ck_assert_int_eq(nn_dataset_gather(&ds, idx, 3, &V.matrix, labels), NN_OK);
  for (size_t i = 0; i < 6; i++)
    for (size_t j = 0; j < 800; j++) {
      double got = gsl_matrix_get(M, i, j);
      if (i >= 1 && i < 4 && j >= 8 && j < 8 + MNIST_DIM)
        ck_assert_double_eq(
            got, ds.pixels[idx[i - 1] * MNIST_DIM + (j - 8)] / 255.0);
      else
        ck_assert_double_eq(got, -7.0);
    }
  gsl_matrix_free(M);
  nn_dataset_free(&ds);
}
END_TEST

START_TEST(test_gather_rejects) {
  nn_dataset ds;
  load_fixture_idx(&ds, 0);
  gsl_matrix *X = gsl_matrix_alloc(4, MNIST_DIM);
  gsl_matrix *narrow = gsl_matrix_alloc(4, MNIST_DIM - 1);
  gsl_matrix_set_all(X, -1.0);
  uint32_t labels[8] = {0};
  const size_t ok[5] = {0, 1, 2, 3, 4}, bad[3] = {0, 1, TEST_N};
  ck_assert_int_eq(nn_dataset_gather(&ds, ok, 2, narrow, labels), NN_EINVAL);
  ck_assert_int_eq(nn_dataset_gather(&ds, ok, 5, X, labels), NN_EINVAL);
  ck_assert_int_eq(nn_dataset_gather(&ds, bad, 3, X, labels), NN_EINVAL);
  ck_assert_int_eq(nn_dataset_gather(&ds, NULL, 2, X, labels), NN_EINVAL);
  /* A rejected call wrote nothing, even for the valid leading indices. */
  for (size_t j = 0; j < MNIST_DIM; j++)
    ck_assert_double_eq(gsl_matrix_get(X, 0, j), -1.0);
  ck_assert_int_eq(nn_dataset_gather(&ds, ok, 0, X, labels), NN_OK);
  gsl_matrix_free(X);
  gsl_matrix_free(narrow);
  nn_dataset_free(&ds);
}
END_TEST

/* ---------------------------------------------------------- CSV writing */

START_TEST(test_write_csv_roundtrip) {
  nn_dataset ds, back;
  nn_error err = {0, ""};
  load_fixture_idx(&ds, 0);
  const char *path = tmp_path("out.csv");
  write_text(path, "old contents\n");
  ck_assert_msg(nn_dataset_write_csv(&ds, path, &err) == NN_OK, "%s",
                err.msg);
  ck_assert_msg(nn_dataset_load_csv(&back, path, &err) == NN_OK, "%s",
                err.msg);
  assert_same_data(&ds, &back);
  nn_dataset_free(&back);
  /* The text itself: label first, plain decimals, one line per example. */
  size_t len;
  unsigned char *text = read_all(path, &len);
  ck_assert_int_eq(memcmp(text, "7,0,0,0,", 8), 0);
  size_t lines = 0;
  for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
  ck_assert_uint_eq(lines, TEST_N);
  ck_assert_int_eq(text[len - 1], '\n');
  free(text);
  /* Nothing but the target is left in the directory (no temp files). */
  DIR *d = opendir(tmpdir);
  ck_assert_ptr_nonnull(d);
  struct dirent *e;
  size_t entries = 0;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      ck_assert_str_eq(e->d_name, "out.csv");
      entries++;
    }
  closedir(d);
  ck_assert_uint_eq(entries, 1);
  /* A directory that does not exist: NN_EIO naming the file. */
  ck_assert_int_eq(nn_dataset_write_csv(&ds, tmp_path("no/such.csv"), &err),
                   NN_EIO);
  assert_msg_has(err, "such.csv");
  nn_dataset_free(&ds);
}
END_TEST

START_TEST(test_write_csv_small) {
  uint8_t px[6] = {0, 9, 10, 99, 100, 255}, lb[2] = {3, 255};
  nn_dataset ds = {2, 3, px, lb, 0};
  nn_error err = {0, ""};
  ck_assert_int_eq(nn_dataset_write_csv(&ds, tmp_path("s.csv"), &err), NN_OK);
  size_t len;
  unsigned char *text = read_all(tmp_path("s.csv"), &len);
  const char *want = "3,0,9,10\n255,99,100,255\n";
  ck_assert_uint_eq(len, strlen(want));
  ck_assert_int_eq(memcmp(text, want, len), 0);
  free(text);
  nn_dataset empty = {0, 0, NULL, NULL, 0};
  ck_assert_int_eq(nn_dataset_write_csv(&empty, tmp_path("e.csv"), &err),
                   NN_EINVAL);
}
END_TEST

/* ---------------------------------------------------- malformed IDX files */

START_TEST(test_idx_truncated) {
  nn_dataset ds;
  nn_error err = {0, ""};
  const char *img = tmp_path("cut-images");
  copy_file(test_data_path("t10k-images-idx3-ubyte"), img,
            16 + TEST_N * MNIST_DIM - 100);
  int rc = nn_dataset_load_idx(
      &ds, img, test_data_path("t10k-labels-idx1-ubyte"), &err);
  ck_assert_int_eq(rc, NN_EFORMAT);
  assert_msg_has(err, "cut-images");
  assert_msg_has(err, "truncated");
  assert_msg_has(err, "156800"); /* expected bytes */
  assert_msg_has(err, "156700"); /* found */
  assert_zeroed(&ds);
  /* A cut header. */
  copy_file(test_data_path("t10k-images-idx3-ubyte"), img, 10);
  rc = nn_dataset_load_idx(&ds, img,
                           test_data_path("t10k-labels-idx1-ubyte"), &err);
  ck_assert_int_eq(rc, NN_EFORMAT);
  assert_msg_has(err, "cut-images");
  assert_zeroed(&ds);
}
END_TEST

START_TEST(test_idx_truncated_gz) {
  nn_dataset ds;
  nn_error err = {0, ""};
  const char *img = tmp_path("cut-images.gz");
  copy_file(test_data_path("train-images-idx3-ubyte.gz"), img, 40000);
  int rc = nn_dataset_load_idx(
      &ds, img, test_data_path("train-labels-idx1-ubyte.gz"), &err);
  ck_assert_int_eq(rc, NN_EFORMAT);
  assert_msg_has(err, "cut-images.gz");
  assert_msg_has(err, "2352000"); /* expected bytes of pixels */
  assert_zeroed(&ds);
}
END_TEST

START_TEST(test_idx_bad_magic) {
  nn_dataset ds;
  nn_error err = {0, ""};
  write_idx_images(tmp_path("img"), 0x00000803, 4, 4);
  write_idx_labels(tmp_path("lab"), 0x00000801, 4, 4);
  ck_assert_int_eq(
      nn_dataset_load_idx(&ds, tmp_path("img"), tmp_path("lab"), &err), NN_OK);
  ck_assert_uint_eq(ds.n, 4);
  ck_assert_uint_eq(ds.dim, 6);
  ck_assert_uint_eq(ds.pixels[23], 23);
  nn_dataset_free(&ds);
  /* Arguments swapped. */
  ck_assert_int_eq(
      nn_dataset_load_idx(&ds, tmp_path("lab"), tmp_path("img"), &err),
      NN_EFORMAT);
  assert_msg_has(err, "lab");
  assert_msg_has(err, "magic");
  assert_msg_has(err, "label file");
  assert_zeroed(&ds);
  /* Not IDX at all. */
  write_text(tmp_path("junk"), "this is not an IDX file at all");
  ck_assert_int_eq(
      nn_dataset_load_idx(&ds, tmp_path("junk"), tmp_path("lab"), &err),
      NN_EFORMAT);
  assert_msg_has(err, "junk");
  assert_msg_has(err, "0x00000803");
  ck_assert_int_eq(
      nn_dataset_load_idx(&ds, tmp_path("img"), tmp_path("junk"), &err),
      NN_EFORMAT);
  assert_msg_has(err, "junk");
  assert_msg_has(err, "0x00000801");
  assert_zeroed(&ds);
}
END_TEST

START_TEST(test_idx_count_mismatch) {
  nn_dataset ds;
  nn_error err = {0, ""};
  write_idx_images(tmp_path("img"), 0x00000803, 5, 5);
  write_idx_labels(tmp_path("lab"), 0x00000801, 4, 4);
  ck_assert_int_eq(
      nn_dataset_load_idx(&ds, tmp_path("img"), tmp_path("lab"), &err),
      NN_EFORMAT);
  assert_msg_has(err, "mismatch");
  assert_msg_has(err, "img has 5 images");
  assert_msg_has(err, "lab has 4 labels");
  assert_zeroed(&ds);
}
END_TEST

START_TEST(test_idx_trailing_and_short_labels) {
  nn_dataset ds;
  nn_error err = {0, ""};
  /* More data than the header announces. */
  write_idx_images(tmp_path("img"), 0x00000803, 3, 4);
  write_idx_labels(tmp_path("lab"), 0x00000801, 3, 3);
  ck_assert_int_eq(
      nn_dataset_load_idx(&ds, tmp_path("img"), tmp_path("lab"), &err),
      NN_EFORMAT);
  assert_msg_has(err, "img");
  assert_msg_has(err, "after the 18 bytes");
  assert_zeroed(&ds);
  /* Labels cut short. */
  write_idx_images(tmp_path("img"), 0x00000803, 4, 4);
  write_idx_labels(tmp_path("lab"), 0x00000801, 4, 3);
  ck_assert_int_eq(
      nn_dataset_load_idx(&ds, tmp_path("img"), tmp_path("lab"), &err),
      NN_EFORMAT);
  assert_msg_has(err, "lab: truncated");
  assert_msg_has(err, "4 bytes of labels, found only 3");
  assert_zeroed(&ds);
}
END_TEST

/* A header's counts are held against what the file can deliver before
 * anything is allocated: 2^32 - 1 images of 28x28 (3.4 TB) in a 16-byte
 * file, or in a gzip file of a few dozen bytes, are refused as such, not
 * attempted (found by `make fuzz`: the reader asked for the whole amount,
 * which fails, or aborts under ASan). */
START_TEST(test_idx_count_beyond_file) {
  nn_dataset ds;
  nn_error err = {0, ""};
  unsigned char hdr[16];
  put_be32(hdr, 0x00000803);
  put_be32(hdr + 4, 0xffffffffu);
  put_be32(hdr + 8, 28);
  put_be32(hdr + 12, 28);
  write_bytes(tmp_path("img"), hdr, sizeof hdr);
  write_idx_labels(tmp_path("lab"), 0x00000801, 0xffffffffu, 0);
  ck_assert_int_eq(
      nn_dataset_load_idx(&ds, tmp_path("img"), tmp_path("lab"), &err),
      NN_EFORMAT);
  assert_msg_has(err, "img: truncated");
  assert_msg_has(err, "3367254359280 bytes of pixel data, found only 0");
  assert_zeroed(&ds);
  /* The same header gzip-compressed (tests/data). */
  ck_assert_int_eq(
      nn_dataset_load_idx(&ds,
                          test_data_path("huge-count-images-idx3-ubyte.gz"),
                          tmp_path("lab"), &err),
      NN_EFORMAT);
  assert_msg_has(err, "huge-count-images-idx3-ubyte.gz: the header announces "
                      "3367254359280 bytes of pixel data, more than a gzip "
                      "file of");
  assert_zeroed(&ds);
  /* Labels alone: a plain image file that holds its 2 images, a label
   * file that holds none of its 2 labels. */
  write_idx_images(tmp_path("img"), 0x00000803, 2, 2);
  write_idx_labels(tmp_path("lab"), 0x00000801, 2, 0);
  ck_assert_int_eq(
      nn_dataset_load_idx(&ds, tmp_path("img"), tmp_path("lab"), &err),
      NN_EFORMAT);
  assert_msg_has(err, "lab: truncated: the header announces 2 bytes of "
                      "labels, found only 0");
  assert_zeroed(&ds);
}
END_TEST

START_TEST(test_missing_files) {
  nn_dataset ds;
  nn_error err = {0, ""};
  write_idx_labels(tmp_path("lab"), 0x00000801, 4, 4);
  ck_assert_int_eq(
      nn_dataset_load_idx(&ds, tmp_path("nope-images"), tmp_path("lab"), &err),
      NN_ENOTFOUND);
  assert_msg_has(err, "nope-images");
  assert_zeroed(&ds);
  ck_assert_int_eq(nn_dataset_load_csv(&ds, tmp_path("nope.csv"), &err),
                   NN_ENOTFOUND);
  assert_msg_has(err, "nope.csv");
  assert_zeroed(&ds);
}
END_TEST

/* ---------------------------------------------------- malformed CSV files */

/* Load `text` as CSV; expect NN_EFORMAT and a message with both substrings. */
static void expect_csv_error(const char *text, const char *where,
                             const char *what) {
  nn_dataset ds;
  nn_error err = {0, ""};
  const char *path = tmp_path("bad.csv");
  write_text(path, text);
  ck_assert_int_eq(nn_dataset_load_csv(&ds, path, &err), NN_EFORMAT);
  assert_msg_has(err, where);
  assert_msg_has(err, what);
  assert_zeroed(&ds);
}

START_TEST(test_csv_field_count) {
  expect_csv_error("1,2,3\n4,5,6\n7,8\n", "bad.csv:3:",
                   "expected 3 fields (a label and 2 pixels, as on line 1), "
                   "found 2");
  expect_csv_error("1,2,3\n4,5,6\n7,8,9\n1,2,3,4,5\n", "bad.csv:4:",
                   "expected 3 fields");
  expect_csv_error("1,2,3\n4,5,6\n7,8,9\n1,2,3,4,5\n", "bad.csv:4:",
                   "found 5");
  expect_csv_error("7\n", "bad.csv:1:", "at least one pixel");
}
END_TEST

START_TEST(test_csv_bad_values) {
  expect_csv_error("1,2,3\n4,256,6\n", "bad.csv:2:", "value 256 out of range");
  expect_csv_error("256,2,3\n", "bad.csv:1:", "field 1: value 256");
  expect_csv_error("1,2,3\n4,5,123456\n", "bad.csv:2:", "field 3");
  expect_csv_error("1,2,3\n4,x,6\n", "bad.csv:2:", "unexpected character 'x'");
  expect_csv_error("1,2,3\n4,-5,6\n", "bad.csv:2:", "unexpected character '-'");
  expect_csv_error("1,2,3\n4,5.5,6\n", "bad.csv:2:", "'.'");
  expect_csv_error("1,2,3\n4,,6\n", "bad.csv:2:", "field 2 is empty");
  expect_csv_error("1,2,3\n4,5,\n", "bad.csv:2:", "field 3 is empty");
  expect_csv_error("label,p0\n1,2\n", "bad.csv:1:", "header");
  expect_csv_error("1,2\r3,4\n", "bad.csv:1:", "carriage return");
  expect_csv_error("1,2\n\n3,4\n", "bad.csv:2:", "blank line");
  expect_csv_error("", "bad.csv", "no data");
  expect_csv_error("\n\n", "bad.csv", "no data");
}
END_TEST

START_TEST(test_csv_truncated_gz) {
  nn_dataset ds;
  nn_error err = {0, ""};
  const char *path = tmp_path("cut.csv.gz");
  copy_file(test_data_path("mnist_test.csv.gz"), path, 20000);
  ck_assert_int_eq(nn_dataset_load_csv(&ds, path, &err), NN_EFORMAT);
  assert_msg_has(err, "cut.csv.gz:");
  assert_zeroed(&ds);
}
END_TEST

START_TEST(test_csv_block_boundaries) {
  /* The reader parses 1 MiB blocks: put a CRLF's '\r' on the last byte of
   * the first block (7 + 5 * 209713 + 3 = 2^20 - 1). */
  const size_t fill = 209713, lines = fill + 10;
  char *text = malloc(7 + 5 * lines + 1);
  ck_assert_ptr_nonnull(text);
  char *q = text;
  memcpy(q, "10,20\r\n", 7);
  q += 7;
  for (size_t i = 0; i < lines; i++, q += 5) memcpy(q, "1,2\r\n", 5);
  *q = '\0';
  ck_assert_int_eq(text[((size_t)1 << 20) - 1], '\r');
  write_text(tmp_path("crlf.csv"), text);
  nn_dataset ds;
  nn_error err = {0, ""};
  ck_assert_msg(nn_dataset_load_csv(&ds, tmp_path("crlf.csv"), &err) == NN_OK,
                "%s", err.msg);
  ck_assert_uint_eq(ds.n, lines + 1);
  ck_assert_uint_eq(ds.pixels[0], 20);
  ck_assert_uint_eq(ds.pixels[fill + 1], 2);
  nn_dataset_free(&ds);
  /* The same '\r' followed by a digit instead of '\n': line fill + 2. */
  text[(size_t)1 << 20] = '3';
  write_text(tmp_path("cr.csv"), text);
  ck_assert_int_eq(nn_dataset_load_csv(&ds, tmp_path("cr.csv"), &err),
                   NN_EFORMAT);
  assert_msg_has(err, "cr.csv:209715:");
  assert_msg_has(err, "carriage return");
  assert_zeroed(&ds);
  free(text);
}
END_TEST

START_TEST(test_csv_random_roundtrip) {
  /* Every byte value, lines of varying text length, several blocks. */
  const size_t n = 60000, dim = 7;
  uint8_t *px = malloc(n * dim), *lb = malloc(n);
  ck_assert(px && lb);
  uint32_t r = 12345;
  for (size_t i = 0; i < n * dim; i++) {
    r = r * 1103515245u + 12345u;
    px[i] = (uint8_t)(r >> 16);
  }
  for (size_t i = 0; i < n; i++) lb[i] = (uint8_t)(i % 256);
  nn_dataset ds = {n, dim, px, lb, 1}, back;
  nn_error err = {0, ""};
  ck_assert_int_eq(nn_dataset_write_csv(&ds, tmp_path("r.csv"), &err), NN_OK);
  ck_assert_msg(nn_dataset_load_csv(&back, tmp_path("r.csv"), &err) == NN_OK,
                "%s", err.msg);
  assert_same_data(&ds, &back);
  nn_dataset_free(&back);
  nn_dataset_free(&ds);
}
END_TEST

START_TEST(test_corrupt_gzip) {
  /* A valid gzip header followed by a bad deflate block. */
  static const char bad[] = "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
                            "\xff\xff\xff\xff garbage garbage";
  nn_dataset ds;
  nn_error err = {0, ""};
  write_bytes(tmp_path("bad.csv.gz"), bad, sizeof bad - 1);
  ck_assert_int_eq(nn_dataset_load_csv(&ds, tmp_path("bad.csv.gz"), &err),
                   NN_EFORMAT);
  assert_msg_has(err, "bad.csv.gz");
  assert_msg_has(err, "corrupt gzip data");
  assert_zeroed(&ds);
  write_bytes(tmp_path("bad-images.gz"), bad, sizeof bad - 1);
  ck_assert_int_eq(
      nn_dataset_load_idx(&ds, tmp_path("bad-images.gz"),
                          test_data_path("t10k-labels-idx1-ubyte"), &err),
      NN_EFORMAT);
  assert_msg_has(err, "bad-images.gz");
  assert_zeroed(&ds);
}
END_TEST

/* ------------------------------------------------------- nn_mnist_load */

START_TEST(test_mnist_load_fixtures) {
  static const char *formats[2] = {"idx", "csv"};
  nn_dataset ref_train, ref_test;
  load_fixture_idx(&ref_train, 1);
  load_fixture_idx(&ref_test, 0);
  for (int f = 0; f < 2; f++) {
    nn_dataset train, test;
    nn_error err = {0, ""};
    int rc = nn_mnist_load(test_data_dir(), formats[f], &train, &test, &err);
    ck_assert_msg(rc == NN_OK, "%s: %s", formats[f], err.msg);
    ck_assert_uint_eq(train.n, f == 0 ? TRAIN_N : CSV_TRAIN_N);
    ck_assert_uint_eq(test.n, TEST_N);
    assert_prefix_data(&ref_train, &train);
    assert_same_data(&test, &ref_test);
    nn_dataset_free(&train);
    nn_dataset_free(&test);
  }
  nn_dataset_free(&ref_train);
  nn_dataset_free(&ref_test);
}
END_TEST

/* train == NULL: the test set only, and no training file is looked for
 * (a directory holding just the test files will do). */
START_TEST(test_mnist_load_test_only) {
  nn_dataset ref_test, test;
  load_fixture_idx(&ref_test, 0);
  nn_error err = {0, ""};
  copy_file(test_data_path("mnist_test.csv.gz"), tmp_path("mnist_test.csv.gz"),
            SIZE_MAX);
  ck_assert_msg(nn_mnist_load(tmpdir, "csv", NULL, &test, &err) == NN_OK, "%s",
                err.msg);
  assert_same_data(&test, &ref_test);
  nn_dataset_free(&test);
  ck_assert_int_eq(nn_mnist_load(tmpdir, "csv", NULL, NULL, &err), NN_EINVAL);
  ck_assert_int_eq(nn_mnist_load(tmpdir, "idx", NULL, &test, &err),
                   NN_ENOTFOUND);
  assert_msg_has(err, tmp_path("t10k-images-idx3-ubyte"));
  assert_zeroed(&test);
  nn_dataset_free(&ref_test);
}
END_TEST

START_TEST(test_mnist_load_not_found) {
  nn_dataset train, test;
  nn_error err = {0, ""};
  ck_assert_int_eq(nn_mnist_load(tmpdir, "idx", &train, &test, &err),
                   NN_ENOTFOUND);
  assert_msg_has(err, tmp_path("train-images-idx3-ubyte"));
  assert_msg_has(err, tmp_path("train-images-idx3-ubyte.gz"));
  assert_zeroed(&train);
  assert_zeroed(&test);
  ck_assert_int_eq(nn_mnist_load(tmpdir, "csv", &train, &test, &err),
                   NN_ENOTFOUND);
  assert_msg_has(err, tmp_path("mnist_train.csv"));
  assert_msg_has(err, tmp_path("mnist_train.csv.gz"));
  /* Training files present, test files missing: nothing is loaded. */
  copy_file(test_data_path("mnist_train.csv.gz"), tmp_path("mnist_train.csv"),
            SIZE_MAX);
  ck_assert_int_eq(nn_mnist_load(tmpdir, "csv", &train, &test, &err),
                   NN_ENOTFOUND);
  assert_msg_has(err, tmp_path("mnist_test.csv.gz"));
  assert_zeroed(&train);
  assert_zeroed(&test);
}
END_TEST

START_TEST(test_mnist_load_partial_failure) {
  /* Training set fine, test set corrupt: the loaded training set is freed
   * (valgrind/ASan check that nothing leaks) and both are left zeroed. */
  nn_dataset train, test;
  nn_error err = {0, ""};
  copy_file(test_data_path("mnist_train.csv.gz"),
            tmp_path("mnist_train.csv.gz"), SIZE_MAX);
  write_text(tmp_path("mnist_test.csv"), "1,2,3\n4,5\n");
  ck_assert_int_eq(nn_mnist_load(tmpdir, "csv", &train, &test, &err),
                   NN_EFORMAT);
  assert_msg_has(err, "mnist_test.csv:2:");
  assert_zeroed(&train);
  assert_zeroed(&test);
}
END_TEST

START_TEST(test_mnist_load_bad_format) {
  nn_dataset train, test;
  nn_error err = {0, ""};
  ck_assert_int_eq(nn_mnist_load(test_data_dir(), "png", &train, &test, &err),
                   NN_EINVAL);
  assert_msg_has(err, "png");
  assert_zeroed(&train);
  assert_zeroed(&test);
}
END_TEST

static Suite *data_suite(void) {
  Suite *s = suite_create("data");
  TCase *tc = tcase_create("data");
  tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
  tcase_add_test(tc, test_idx_train_fixture);
  tcase_add_test(tc, test_idx_test_fixture_plain);
  tcase_add_test(tc, test_csv_matches_idx);
  tcase_add_test(tc, test_csv_tolerated_forms);
  tcase_add_test(tc, test_split_fixture);
  tcase_add_test(tc, test_split_counts);
  tcase_add_test(tc, test_view_bounds);
  tcase_add_test(tc, test_gather_values);
  tcase_add_test(tc, test_gather_view_tda);
  tcase_add_test(tc, test_gather_rejects);
  tcase_add_test(tc, test_write_csv_roundtrip);
  tcase_add_test(tc, test_write_csv_small);
  tcase_add_test(tc, test_idx_truncated);
  tcase_add_test(tc, test_idx_truncated_gz);
  tcase_add_test(tc, test_idx_bad_magic);
  tcase_add_test(tc, test_idx_count_mismatch);
  tcase_add_test(tc, test_idx_trailing_and_short_labels);
  tcase_add_test(tc, test_idx_count_beyond_file);
  tcase_add_test(tc, test_missing_files);
  tcase_add_test(tc, test_csv_field_count);
  tcase_add_test(tc, test_csv_bad_values);
  tcase_add_test(tc, test_csv_truncated_gz);
  tcase_add_test(tc, test_csv_block_boundaries);
  tcase_add_test(tc, test_csv_random_roundtrip);
  tcase_add_test(tc, test_corrupt_gzip);
  tcase_add_test(tc, test_mnist_load_fixtures);
  tcase_add_test(tc, test_mnist_load_test_only);
  tcase_add_test(tc, test_mnist_load_not_found);
  tcase_add_test(tc, test_mnist_load_partial_failure);
  tcase_add_test(tc, test_mnist_load_bad_format);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return test_run_suite(data_suite()); }
