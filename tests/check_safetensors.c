/* SPDX-License-Identifier: GPL-3.0-or-later */
/* safetensors checkpoints: round trips, the exact byte layout, name/shape
 * mismatches, files from other writers, and refusal of malformed files. */
#include <config.h>

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <gsl/gsl_errno.h>
#include <jansson.h>

#include <nn/safetensors.h>

#include "testutil.h"

static void setup(void) { test_tmpdir_make("safetensors"); }

static void teardown(void) { test_tmpdir_remove(); }

/* <test_tmpdir>/<name> in a static buffer (tests are single-threaded). */
static const char *tpath(const char *name) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", test_tmpdir, name);
  return path;
}

/* The whole file into a malloc'd buffer (caller frees). */
static unsigned char *slurp(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  ck_assert_ptr_nonnull(fp);
  fseek(fp, 0, SEEK_END);
  long sz = ftell(fp);
  ck_assert_int_ge(sz, 0);
  rewind(fp);
  unsigned char *b = malloc((size_t)sz + 1);
  ck_assert_ptr_nonnull(b);
  ck_assert_uint_eq(fread(b, 1, (size_t)sz, fp), (size_t)sz);
  fclose(fp);
  *len = (size_t)sz;
  return b;
}

static void write_bytes(const char *path, const void *b, size_t len) {
  FILE *fp = fopen(path, "wb");
  ck_assert_ptr_nonnull(fp);
  ck_assert_uint_eq(fwrite(b, 1, len, fp), len);
  fclose(fp);
}

static void put_u64le(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64le(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* Write a file by hand: declared header length `hlen`, the header text,
 * then `dlen` data bytes.  Returns the path. */
static const char *write_raw(const char *name, uint64_t hlen,
                             const char *header, const void *data,
                             size_t dlen) {
  size_t h = strlen(header);
  unsigned char *b = malloc(8 + h + dlen + 1);
  ck_assert_ptr_nonnull(b);
  put_u64le(b, hlen);
  memcpy(b + 8, header, h);
  if (dlen) memcpy(b + 8 + h, data, dlen);
  const char *p = tpath(name);
  write_bytes(p, b, 8 + h + dlen);
  free(b);
  return p;
}

/* A well-formed file with this header and dlen zero bytes of data. */
static const char *write_header(const char *header, size_t dlen) {
  static const unsigned char zeros[256];
  ck_assert_uint_le(dlen, sizeof zeros);
  return write_raw("raw.safetensors", strlen(header), header, zeros, dlen);
}

/* open must refuse the file with NN_EFORMAT, naming it and saying `what`. */
static void expect_format(const char *path, const char *what) {
  nn_safetensors *f = (nn_safetensors *)&f; /* must be reset to NULL */
  nn_error err = {0};
  ck_assert_int_eq(nn_safetensors_open(&f, path, &err), NN_EFORMAT);
  ck_assert_ptr_null(f);
  ck_assert_msg(strstr(err.msg, path) != NULL, "no path in: %s", err.msg);
  ck_assert_msg(strstr(err.msg, what) != NULL, "expected '%s' in: %s", what,
                err.msg);
}

static void expect_header_refused(const char *header, size_t dlen,
                                  const char *what) {
  expect_format(write_header(header, dlen), what);
}

static int same_bits(double a, double b) { return memcmp(&a, &b, 8) == 0; }

/* A matrix filled with values that stress the encoding. */
static gsl_matrix *tricky_matrix(size_t r, size_t c, double seed) {
  gsl_matrix *m = gsl_matrix_alloc(r, c);
  const double special[] = {-0.0, INFINITY, -INFINITY, NAN, 4.9e-324,
                            1.7976931348623157e308, 0.1, -1e-310};
  for (size_t i = 0; i < r; i++)
    for (size_t j = 0; j < c; j++) {
      size_t k = i * c + j;
      gsl_matrix_set(m, i, j,
                     k < 8 && seed == 0 ? special[k]
                                        : seed + (double)k / 7.0 - 3.0);
    }
  return m;
}

static size_t count_dir_entries(void) {
  DIR *d = opendir(test_tmpdir);
  ck_assert_ptr_nonnull(d);
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

START_TEST(test_roundtrip_f64_bit_exact) {
  gsl_matrix *W1 = tricky_matrix(3, 4, 0);
  gsl_matrix *b1 = tricky_matrix(1, 4, 0.5);
  gsl_matrix *big = tricky_matrix(5, 6, 2.25);
  gsl_matrix_view W2 = gsl_matrix_submatrix(big, 1, 2, 3, 2); /* tda 6 */
  nn_param params[] = {{"W1", W1, NULL, NN_PARAM_WEIGHT},
                       {"b1", b1, NULL, NN_PARAM_BIAS},
                       {"W2", &W2.matrix, NULL, NN_PARAM_WEIGHT}};
  nn_error err = {0};
  const char *p = tpath("m.safetensors");
  ck_assert_msg(nn_safetensors_save(p, params, 3, NN_DTYPE_F64, NULL, &err) ==
                    NN_OK, "%s", err.msg);

  nn_safetensors *f = NULL;
  ck_assert_msg(nn_safetensors_open(&f, p, &err) == NN_OK, "%s", err.msg);
  ck_assert_uint_eq(nn_safetensors_count(f), 3);
  ck_assert_str_eq(nn_safetensors_name(f, 0), "W1");
  ck_assert_str_eq(nn_safetensors_name(f, 1), "b1");
  ck_assert_str_eq(nn_safetensors_name(f, 2), "W2");
  ck_assert_ptr_null(nn_safetensors_name(f, 3));
  ck_assert_uint_eq(nn_safetensors_dtype(f, "b1"), NN_DTYPE_F64);
  ck_assert_uint_eq(nn_safetensors_dtype(f, "nope"), 0);
  size_t r = 0, c = 0;
  ck_assert_int_eq(nn_safetensors_shape(f, "W2", &r, &c), NN_OK);
  ck_assert_uint_eq(r, 3);
  ck_assert_uint_eq(c, 2);
  ck_assert_int_eq(nn_safetensors_shape(f, "nope", &r, &c), NN_EINVAL);
  ck_assert_ptr_null(nn_safetensors_meta(f, "anything"));
  nn_safetensors_close(f);

  /* Load into fresh matrices, one of them also a view. */
  gsl_matrix *V1 = gsl_matrix_calloc(3, 4), *v1 = gsl_matrix_calloc(1, 4);
  gsl_matrix *big2 = gsl_matrix_calloc(4, 7);
  gsl_matrix_view V2 = gsl_matrix_submatrix(big2, 1, 1, 3, 2);
  nn_param back[] = {{"W2", &V2.matrix, NULL, 0},
                     {"W1", V1, NULL, 0},
                     {"b1", v1, NULL, 0}};
  ck_assert_msg(nn_safetensors_load_params(p, back, 3, &err) == NN_OK, "%s",
                err.msg);
  for (size_t i = 0; i < 3; i++)
    for (size_t j = 0; j < 4; j++)
      ck_assert(same_bits(gsl_matrix_get(V1, i, j), gsl_matrix_get(W1, i, j)));
  for (size_t j = 0; j < 4; j++)
    ck_assert(same_bits(gsl_matrix_get(v1, 0, j), gsl_matrix_get(b1, 0, j)));
  for (size_t i = 0; i < 4; i++)
    for (size_t j = 0; j < 7; j++) {
      int inside = i >= 1 && j >= 1 && j <= 2;
      double want = inside ? gsl_matrix_get(&W2.matrix, i - 1, j - 1) : 0.0;
      ck_assert(same_bits(gsl_matrix_get(big2, i, j), want));
    }
  gsl_matrix_free(W1);
  gsl_matrix_free(b1);
  gsl_matrix_free(big);
  gsl_matrix_free(V1);
  gsl_matrix_free(v1);
  gsl_matrix_free(big2);
}
END_TEST

START_TEST(test_roundtrip_f32_equals_casts) {
  gsl_matrix *W = tricky_matrix(4, 5, 0);
  gsl_matrix_set(W, 3, 4, 1e39);   /* beyond FLT_MAX: the cast gives inf */
  gsl_matrix_set(W, 3, 3, 1e-50);  /* below the smallest float: 0 */
  gsl_matrix *b = tricky_matrix(1, 5, 0.3);
  nn_param params[] = {{"W", W, NULL, 0}, {"b", b, NULL, 0}};
  nn_error err = {0};
  const char *p = tpath("f32.safetensors");
  ck_assert_msg(nn_safetensors_save(p, params, 2, NN_DTYPE_F32, NULL, &err) ==
                    NN_OK, "%s", err.msg);
  size_t len;
  unsigned char *raw = slurp(p, &len);
  ck_assert_uint_eq(len, 8 + get_u64le(raw) + 25 * 4);
  free(raw);

  nn_safetensors *f = NULL;
  ck_assert_int_eq(nn_safetensors_open(&f, p, &err), NN_OK);
  ck_assert_uint_eq(nn_safetensors_dtype(f, "W"), NN_DTYPE_F32);
  gsl_matrix *V = gsl_matrix_alloc(4, 5);
  ck_assert_int_eq(nn_safetensors_read(f, "W", V, &err), NN_OK);
  for (size_t i = 0; i < 4; i++)
    for (size_t j = 0; j < 5; j++) {
      double want = (double)(float)gsl_matrix_get(W, i, j);
      double got = gsl_matrix_get(V, i, j);
      ck_assert(isnan(want) ? isnan(got) : same_bits(got, want));
    }
  ck_assert(isinf(gsl_matrix_get(V, 3, 4)));
  nn_safetensors_close(f);

  gsl_matrix *v = gsl_matrix_alloc(1, 5);
  nn_param back[] = {{"b", v, NULL, 0}, {"W", V, NULL, 0}};
  ck_assert_int_eq(nn_safetensors_load_params(p, back, 2, &err), NN_OK);
  for (size_t j = 0; j < 5; j++)
    ck_assert(gsl_matrix_get(v, 0, j) == (double)(float)gsl_matrix_get(b, 0, j));
  gsl_matrix_free(W);
  gsl_matrix_free(b);
  gsl_matrix_free(V);
  gsl_matrix_free(v);
}
END_TEST

START_TEST(test_metadata_round_trip) {
  gsl_matrix *W = tricky_matrix(2, 2, 1);
  nn_param params[] = {{"W", W, NULL, 0}};
  const char *const md[] = {"format", "nnrun", "epoch", "7",
                            "note", "h\xc3\xa9llo \"quoted\"\n", "empty", "",
                            NULL};
  nn_error err = {0};
  const char *p = tpath("md.safetensors");
  ck_assert_msg(nn_safetensors_save(p, params, 1, NN_DTYPE_F64, md, &err) ==
                    NN_OK, "%s", err.msg);
  nn_safetensors *f = NULL;
  ck_assert_int_eq(nn_safetensors_open(&f, p, &err), NN_OK);
  ck_assert_uint_eq(nn_safetensors_count(f), 1); /* metadata is no tensor */
  ck_assert_str_eq(nn_safetensors_meta(f, "format"), "nnrun");
  ck_assert_str_eq(nn_safetensors_meta(f, "epoch"), "7");
  ck_assert_str_eq(nn_safetensors_meta(f, "note"), "h\xc3\xa9llo \"quoted\"\n");
  ck_assert_str_eq(nn_safetensors_meta(f, "empty"), "");
  ck_assert_ptr_null(nn_safetensors_meta(f, "missing"));
  ck_assert_ptr_null(nn_safetensors_meta(f, "W"));
  nn_safetensors_close(f);

  /* A key without a value is refused before any file is created. */
  const char *const odd[] = {"k", NULL};
  ck_assert_int_eq(nn_safetensors_save(tpath("odd.safetensors"), params, 1,
                                       NN_DTYPE_F64, odd, &err), NN_EINVAL);
  ck_assert_msg(strstr(err.msg, "'k'") != NULL, "%s", err.msg);
  const char *const dup[] = {"k", "1", "k", "2", NULL};
  ck_assert_int_eq(nn_safetensors_save(tpath("odd.safetensors"), params, 1,
                                       NN_DTYPE_F64, dup, &err), NN_EINVAL);
  const char *const bad[] = {"k", "\xff", NULL};
  ck_assert_int_eq(nn_safetensors_save(tpath("odd.safetensors"), params, 1,
                                       NN_DTYPE_F64, bad, &err), NN_EINVAL);
  ck_assert_uint_eq(count_dir_entries(), 1);
  gsl_matrix_free(W);
}
END_TEST

START_TEST(test_data_section_is_8_aligned) {
  /* Names of every length mod 8 shift the header length around. */
  const char *names[] = {"a", "bb", "ccc", "dddd", "eeeee", "ffffff",
                         "ggggggg", "hhhhhhhh"};
  gsl_matrix *m = tricky_matrix(2, 3, 1);
  for (size_t k = 1; k <= 8; k++) {
    nn_param params[8];
    for (size_t i = 0; i < k; i++)
      params[i] = (nn_param){names[i], m, NULL, 0};
    nn_error err = {0};
    const char *p = tpath("align.safetensors");
    ck_assert_int_eq(nn_safetensors_save(p, params, k,
                                         k % 2 ? NN_DTYPE_F64 : NN_DTYPE_F32,
                                         NULL, &err), NN_OK);
    size_t len;
    unsigned char *raw = slurp(p, &len);
    uint64_t hlen = get_u64le(raw);
    ck_assert_uint_eq((8 + hlen) % 8, 0);
    ck_assert_uint_eq(len, 8 + hlen + k * 6 * (k % 2 ? 8 : 4));
    /* The padding is spaces after a complete JSON object. */
    json_error_t je;
    json_t *j = json_loadb((const char *)raw + 8, hlen, 0, &je);
    ck_assert_msg(j != NULL, "%s", je.text);
    ck_assert_uint_eq(json_object_size(j), k);
    json_decref(j);
    size_t end = 8 + hlen;
    while (raw[end - 1] == ' ') end--;
    ck_assert_int_eq(raw[end - 1], '}');
    ck_assert_uint_lt(8 + hlen - end, 8);
    free(raw);
  }
  gsl_matrix_free(m);
}
END_TEST

START_TEST(test_exact_bytes_of_a_tiny_file) {
  gsl_matrix *x = gsl_matrix_alloc(1, 2);
  gsl_matrix_set(x, 0, 0, 1.0);
  gsl_matrix_set(x, 0, 1, 2.0);
  nn_param params[] = {{"x", x, NULL, 0}};
  nn_error err = {0};
  const char *p = tpath("tiny.safetensors");
  ck_assert_int_eq(nn_safetensors_save(p, params, 1, NN_DTYPE_F64, NULL, &err),
                   NN_OK);
  size_t len;
  unsigned char *raw = slurp(p, &len);
  ck_assert_uint_ge(len, 8);
  uint64_t hlen = get_u64le(raw);
  ck_assert_uint_eq(hlen % 8, 0);
  ck_assert_uint_eq(len, 8 + hlen + 16);

  json_error_t je;
  json_t *got = json_loadb((const char *)raw + 8, hlen, 0, &je);
  ck_assert_msg(got != NULL, "%s", je.text);
  json_t *want = json_pack("{s:{s:s, s:[i,i], s:[i,i]}}", "x", "dtype", "F64",
                           "shape", 1, 2, "data_offsets", 0, 16);
  ck_assert(json_equal(got, want));
  json_decref(got);
  json_decref(want);

  /* 1.0 = 0x3FF0000000000000, 2.0 = 0x4000000000000000, little-endian. */
  static const unsigned char data[16] = {0, 0, 0, 0, 0, 0, 0xF0, 0x3F,
                                         0, 0, 0, 0, 0, 0, 0,    0x40};
  ck_assert_int_eq(memcmp(raw + 8 + hlen, data, 16), 0);
  free(raw);
  gsl_matrix_free(x);
}
END_TEST

/* Save {W 3x4, b 1x4}; fill `into` with sentinels; expect load_params to
 * fail with NN_EINVAL mentioning each of `needles` and touch nothing. */
static void expect_load_refused(nn_param *into, size_t n,
                                const char *const *needles) {
  gsl_matrix *W = tricky_matrix(3, 4, 1), *b = tricky_matrix(1, 4, 2);
  nn_param params[] = {{"W", W, NULL, 0}, {"b", b, NULL, 0}};
  nn_error err = {0};
  const char *p = tpath("ref.safetensors");
  ck_assert_int_eq(nn_safetensors_save(p, params, 2, NN_DTYPE_F64, NULL, &err),
                   NN_OK);
  for (size_t i = 0; i < n; i++) gsl_matrix_set_all(into[i].value, 42.0);
  ck_assert_int_eq(nn_safetensors_load_params(p, into, n, &err), NN_EINVAL);
  for (const char *const *s = needles; *s; s++)
    ck_assert_msg(strstr(err.msg, *s) != NULL, "expected '%s' in: %s", *s,
                  err.msg);
  ck_assert_msg(strstr(err.msg, p) != NULL, "%s", err.msg);
  for (size_t i = 0; i < n; i++)
    for (size_t r = 0; r < into[i].value->size1; r++)
      for (size_t c = 0; c < into[i].value->size2; c++)
        ck_assert(gsl_matrix_get(into[i].value, r, c) == 42.0);
  gsl_matrix_free(W);
  gsl_matrix_free(b);
}

/* read_params skips exactly the tensors it is told to ignore. */
START_TEST(test_read_params_ignore_list) {
  gsl_matrix *W = gsl_matrix_alloc(2, 3), *v = gsl_matrix_alloc(2, 3);
  gsl_matrix_set_all(W, 1.5);
  gsl_matrix_set_all(v, -2.0);
  nn_param saved[] = {{"W", W, NULL, 0}, {"momentum.W", v, NULL, 0}};
  nn_error err = {0, ""};
  ck_assert_int_eq(nn_safetensors_save(tpath("s.safetensors"), saved, 2,
                                       NN_DTYPE_F64, NULL, &err), NN_OK);
  gsl_matrix *into = gsl_matrix_calloc(2, 3);
  nn_param p[] = {{"W", into, NULL, 0}};
  nn_safetensors *f = NULL;
  ck_assert_int_eq(nn_safetensors_open(&f, tpath("s.safetensors"), &err), NN_OK);
  ck_assert_int_eq(nn_safetensors_read_params(f, p, 1, NULL, &err), NN_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "'momentum.W'"));
  ck_assert(gsl_matrix_get(into, 0, 0) == 0.0); /* untouched on error */
  const char *const skip[] = {"momentum.W", NULL};
  ck_assert_int_eq(nn_safetensors_read_params(f, p, 1, skip, &err), NN_OK);
  ck_assert(gsl_matrix_get(into, 1, 2) == 1.5);
  nn_safetensors_close(f);
  gsl_matrix_free(W);
  gsl_matrix_free(v);
  gsl_matrix_free(into);
}
END_TEST

START_TEST(test_load_params_mismatches_leave_params_unchanged) {
  gsl_matrix *W = gsl_matrix_alloc(3, 4), *Wt = gsl_matrix_alloc(4, 3);
  gsl_matrix *b = gsl_matrix_alloc(1, 4), *c = gsl_matrix_alloc(1, 4);
  gsl_matrix *b5 = gsl_matrix_alloc(1, 5);

  /* Missing name: the message lists what the file has. */
  nn_param wrong_name[] = {{"W", W, NULL, 0}, {"c", c, NULL, 0}};
  expect_load_refused(wrong_name, 2,
                      (const char *const[]){"'c'", "W, b", NULL});
  /* Extra tensor in the file. */
  nn_param too_few[] = {{"W", W, NULL, 0}};
  expect_load_refused(too_few, 1, (const char *const[]){"'b'", NULL});
  /* Extra param not in the file. */
  nn_param too_many[] = {{"W", W, NULL, 0}, {"b", b, NULL, 0},
                         {"c", c, NULL, 0}};
  expect_load_refused(too_many, 3, (const char *const[]){"'c'", NULL});
  /* Transposed weight: both shapes named; b (fine) is not copied either. */
  nn_param transposed[] = {{"b", b, NULL, 0}, {"W", Wt, NULL, 0}};
  expect_load_refused(transposed, 2,
                      (const char *const[]){"'W'", "3x4", "4x3", NULL});
  /* Wrong bias width, after a matching weight. */
  nn_param wide[] = {{"W", W, NULL, 0}, {"b", b5, NULL, 0}};
  expect_load_refused(wide, 2,
                      (const char *const[]){"'b'", "1x4", "1x5", NULL});
  /* Duplicate names among the params. */
  nn_param twice[] = {{"W", W, NULL, 0}, {"W", W, NULL, 0}};
  expect_load_refused(twice, 2, (const char *const[]){"'W'", NULL});

  gsl_matrix_free(W);
  gsl_matrix_free(Wt);
  gsl_matrix_free(b);
  gsl_matrix_free(c);
  gsl_matrix_free(b5);
}
END_TEST

START_TEST(test_read_checks_shape_and_name) {
  gsl_matrix *W = tricky_matrix(3, 4, 1);
  nn_param params[] = {{"W", W, NULL, 0}};
  nn_error err = {0};
  const char *p = tpath("r.safetensors");
  ck_assert_int_eq(nn_safetensors_save(p, params, 1, NN_DTYPE_F64, NULL, &err),
                   NN_OK);
  nn_safetensors *f = NULL;
  ck_assert_int_eq(nn_safetensors_open(&f, p, &err), NN_OK);
  gsl_matrix *d = gsl_matrix_alloc(4, 3);
  gsl_matrix_set_all(d, 42.0);
  ck_assert_int_eq(nn_safetensors_read(f, "W", d, &err), NN_EINVAL);
  ck_assert_msg(strstr(err.msg, "'W'") && strstr(err.msg, "3x4") &&
                    strstr(err.msg, "4x3") && strstr(err.msg, p),
                "%s", err.msg);
  ck_assert(gsl_matrix_get(d, 0, 0) == 42.0);
  ck_assert_int_eq(nn_safetensors_read(f, "V", d, &err), NN_EINVAL);
  ck_assert_msg(strstr(err.msg, "'V'") != NULL, "%s", err.msg);
  nn_safetensors_close(f);
  gsl_matrix_free(d);
  gsl_matrix_free(W);
}
END_TEST

START_TEST(test_save_refuses_bad_arguments_and_keeps_old_file) {
  gsl_matrix *W = tricky_matrix(2, 2, 1);
  nn_error err = {0};
  const char *p = tpath("keep.safetensors");
  nn_param good[] = {{"W", W, NULL, 0}};
  ck_assert_int_eq(nn_safetensors_save(p, good, 1, NN_DTYPE_F64, NULL, &err),
                   NN_OK);
  nn_param dup[] = {{"W", W, NULL, 0}, {"W", W, NULL, 0}};
  ck_assert_int_eq(nn_safetensors_save(p, dup, 2, NN_DTYPE_F64, NULL, &err),
                   NN_EINVAL);
  ck_assert_msg(strstr(err.msg, "'W'") && strstr(err.msg, "twice"), "%s",
                err.msg);
  nn_param reserved[] = {{"__metadata__", W, NULL, 0}};
  ck_assert_int_eq(nn_safetensors_save(p, reserved, 1, NN_DTYPE_F64, NULL,
                                       &err), NN_EINVAL);
  nn_param unnamed[] = {{NULL, W, NULL, 0}};
  ck_assert_int_eq(nn_safetensors_save(p, unnamed, 1, NN_DTYPE_F64, NULL,
                                       &err), NN_EINVAL);
  /* Overlong, surrogate, past U+10FFFF, cut short: each refused; a valid
   * 4-byte name passes. */
  const char *const bad_utf8[] = {"W\xc0\x80", "W\xed\xa0\x80",
                                  "W\xf4\x90\x80\x80", "W\xe2\x82"};
  for (size_t i = 0; i < 4; i++) {
    nn_param badutf[] = {{bad_utf8[i], W, NULL, 0}};
    ck_assert_int_eq(nn_safetensors_save(p, badutf, 1, NN_DTYPE_F64, NULL,
                                         &err), NN_EINVAL);
    ck_assert_msg(strstr(err.msg, "not valid UTF-8") != NULL, "%s", err.msg);
  }
  nn_param emoji[] = {{"W\xf0\x9f\x99\x82", W, NULL, 0}};
  char u[600]; /* tpath's buffer is p's */
  snprintf(u, sizeof u, "%s/u.safetensors", test_tmpdir);
  ck_assert_int_eq(nn_safetensors_save(u, emoji, 1, NN_DTYPE_F64, NULL, &err),
                   NN_OK);
  ck_assert_int_eq(remove(u), 0);
  ck_assert_int_eq(nn_safetensors_save(p, good, 1, 99, NULL, &err), NN_EINVAL);
  /* The earlier file is intact and no temporary file is left behind. */
  nn_safetensors *f = NULL;
  ck_assert_int_eq(nn_safetensors_open(&f, p, &err), NN_OK);
  ck_assert_uint_eq(nn_safetensors_count(f), 1);
  nn_safetensors_close(f);
  ck_assert_uint_eq(count_dir_entries(), 1);
  /* An unwritable location is an I/O error naming the path. */
  ck_assert_int_eq(nn_safetensors_save(tpath("no/such/dir.safetensors"), good,
                                       1, NN_DTYPE_F64, NULL, &err), NN_EIO);
  ck_assert_msg(strstr(err.msg, "no/such/dir.safetensors"), "%s", err.msg);
  /* No params at all is a valid (empty) checkpoint. */
  ck_assert_int_eq(nn_safetensors_save(tpath("empty.safetensors"), NULL, 0,
                                       NN_DTYPE_F32, NULL, &err), NN_OK);
  ck_assert_int_eq(nn_safetensors_open(&f, tpath("empty.safetensors"), &err),
                   NN_OK);
  ck_assert_uint_eq(nn_safetensors_count(f), 0);
  nn_safetensors_close(f);
  gsl_matrix_free(W);
}
END_TEST

START_TEST(test_open_errors_io) {
  nn_safetensors *f = NULL;
  nn_error err = {0};
  const char *p = tpath("missing.safetensors");
  ck_assert_int_eq(nn_safetensors_open(&f, p, &err), NN_ENOTFOUND);
  ck_assert_ptr_null(f);
  ck_assert_msg(strstr(err.msg, p) != NULL, "%s", err.msg);
  ck_assert_int_eq(nn_safetensors_open(&f, test_tmpdir, &err), NN_EIO);
  nn_safetensors_close(NULL);
}
END_TEST

START_TEST(test_malformed_length_field) {
  write_bytes(tpath("empty"), "", 0);
  expect_format(tpath("empty"), "too short");
  write_bytes(tpath("short"), "\x08\0\0\0\0", 5);
  expect_format(tpath("short"), "too short");
  const char *h = "{}      ";
  expect_format(write_raw("past", 100, h, NULL, 0), "past the end");
  expect_format(write_raw("past1", 9, h, NULL, 0), "past the end");
  expect_format(write_raw("zero", 0, h, NULL, 0), "header length is 0");
  expect_format(write_raw("huge", UINT64_C(1) << 63, h, NULL, 0),
                "past the end");
  expect_format(write_raw("max", UINT64_MAX, h, NULL, 0), "past the end");
  /* Only the length field, claiming one header byte. */
  expect_format(write_raw("lenonly", 1, "", NULL, 0), "past the end");
}
END_TEST

START_TEST(test_malformed_json) {
  expect_header_refused("{\"a\": ", 0, "not valid JSON");
  expect_header_refused("{\"a\":\n  }", 0, "line 2");
  expect_header_refused("{} {}", 0, "not valid JSON");
  expect_header_refused("[1, 2]", 0, "not a JSON object");
  expect_header_refused("[]", 0, "not a JSON object");
  expect_header_refused("\"str\"", 0, "JSON");
  expect_header_refused("{\"a\\u0000b\": {}}", 0, "JSON");
  expect_header_refused("\xff\xfe{}", 0, "JSON");
  /* Same name twice would make lookups ambiguous. */
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]},"
      "\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[8,16]}}",
      16, "duplicate");
}
END_TEST

START_TEST(test_malformed_entries) {
  /* Entry / dtype. */
  expect_header_refused("{\"a\": 5}", 0, "not an object");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
      "unsupported dtype \"BF16\"");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"X99\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
      "unsupported dtype \"X99\"");
  expect_header_refused(
      "{\"a\":{\"dtype\":8,\"shape\":[2],\"data_offsets\":[0,16]}}", 16,
      "dtype is not a string");
  /* Missing fields. */
  expect_header_refused("{\"a\":{\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                        "no \"dtype\"");
  expect_header_refused("{\"a\":{\"dtype\":\"F64\",\"data_offsets\":[0,8]}}",
                        8, "no \"shape\"");
  expect_header_refused("{\"a\":{\"dtype\":\"F64\",\"shape\":[1]}}", 8,
                        "no \"data_offsets\"");
  /* Shape. */
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":1,\"data_offsets\":[0,8]}}", 8,
      "shape is not an array");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[-1,2],\"data_offsets\":[0,8]}}", 8,
      "shape entry 0");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[1,1.5],\"data_offsets\":[0,8]}}",
      8, "shape entry 1");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[\"1\"],\"data_offsets\":[0,8]}}",
      8, "shape entry 0");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904,"
      "4611686018427387904],\"data_offsets\":[0,8]}}", 8, "too large");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],"
      "\"data_offsets\":[0,8]}}", 8, "too large");
  /* data_offsets. */
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[4],\"data_offsets\":[0,32]}}", 16,
      "past the end of the data section");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[0],\"data_offsets\":[16,0]}}", 16,
      "begin after end");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0]}}", 8,
      "data_offsets");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8,16]}}", 16,
      "data_offsets");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[-8,0]}}", 8,
      "data_offsets");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8.0]}}", 8,
      "data_offsets");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":\"0-8\"}}", 8,
      "data_offsets");
  /* Byte count vs shape. */
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[1,2],\"data_offsets\":[0,8]}}", 8,
      "has 8 bytes but shape [1, 2] of F64 needs 16");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,24]}}", 24,
      "needs 12");
}
END_TEST

START_TEST(test_malformed_layout_and_metadata) {
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
      "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[8,24]}}",
      24, "overlap");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
      "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}",
      16, "overlap");
  /* A gap and trailing bytes: the tensors must tile the data section. */
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[8,16]}}", 16,
      "belong to no tensor");
  expect_header_refused(
      "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 16,
      "cover 8");
  expect_header_refused("{}", 8, "cover 0");
  /* Metadata. */
  expect_header_refused("{\"__metadata__\":{\"k\":1}}", 0,
                        "value of 'k' is not a string");
  expect_header_refused("{\"__metadata__\":{\"k\":null}}", 0, "'k'");
  expect_header_refused("{\"__metadata__\":[\"k\",\"v\"]}", 0,
                        "__metadata__ is not an object");
}
END_TEST

START_TEST(test_reads_file_from_another_writer) {
  /* Layout as the reference writer makes it: metadata first, a 1-D F32
   * tensor, a 2-D F64 one, header padded with spaces to 8-alignment. */
  char header[512];
  snprintf(header, sizeof header, "%s",
           "{\"__metadata__\":{\"format\":\"pt\"},"
           "\"v\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
           "\"m\":{\"data_offsets\":[12,28],\"shape\":[2,1],\"dtype\":\"F64\"},"
           "\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[28,36]},"
           "\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1],\"data_offsets\":[36,40]}"
           "}");
  const size_t json_len = strlen(header);
  size_t h = json_len; /* at least 3 spaces, then up to 8-alignment */
  while ((8 + h) % 8 || h < json_len + 3) header[h++] = ' ';
  header[h] = '\0';
  static const unsigned char data[40] = {
      0x00, 0x00, 0xC0, 0x3F,                         /* 1.5f */
      0x00, 0x00, 0x00, 0xC0,                         /* -2.0f */
      0x00, 0x00, 0x80, 0x3E,                         /* 0.25f */
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x24, 0x40, /* 10.0 */
      0x9A, 0x99, 0x99, 0x99, 0x99, 0x99, 0xB9, 0xBF, /* -0.1 */
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x40, /* 3.0 (0-D) */
      0x00, 0x00, 0x80, 0x3F};                        /* 1.0f (3-D) */
  const char *p = write_raw("foreign.safetensors", h, header, data, 40);

  nn_safetensors *f = NULL;
  nn_error err = {0};
  ck_assert_msg(nn_safetensors_open(&f, p, &err) == NN_OK, "%s", err.msg);
  ck_assert_uint_eq(nn_safetensors_count(f), 4);
  ck_assert_str_eq(nn_safetensors_meta(f, "format"), "pt");
  size_t r = 0, c = 0;
  ck_assert_int_eq(nn_safetensors_shape(f, "v", &r, &c), NN_OK);
  ck_assert_uint_eq(r, 1);
  ck_assert_uint_eq(c, 3);
  ck_assert_uint_eq(nn_safetensors_dtype(f, "v"), NN_DTYPE_F32);
  gsl_matrix *v = gsl_matrix_alloc(1, 3);
  ck_assert_int_eq(nn_safetensors_read(f, "v", v, &err), NN_OK);
  ck_assert(gsl_matrix_get(v, 0, 0) == 1.5);
  ck_assert(gsl_matrix_get(v, 0, 1) == -2.0);
  ck_assert(gsl_matrix_get(v, 0, 2) == 0.25);
  gsl_matrix *m = gsl_matrix_alloc(2, 1);
  ck_assert_int_eq(nn_safetensors_read(f, "m", m, &err), NN_OK);
  ck_assert(gsl_matrix_get(m, 0, 0) == 10.0);
  ck_assert(gsl_matrix_get(m, 1, 0) == -0.1);
  /* 0-D and 3-D tensors are valid in the file but are not matrices. */
  ck_assert_int_eq(nn_safetensors_shape(f, "s", &r, &c), NN_EINVAL);
  ck_assert_int_eq(nn_safetensors_shape(f, "t", &r, &c), NN_EINVAL);
  gsl_matrix *one = gsl_matrix_alloc(1, 1);
  ck_assert_int_eq(nn_safetensors_read(f, "t", one, &err), NN_EINVAL);
  ck_assert_msg(strstr(err.msg, "[1, 1, 1]") != NULL, "%s", err.msg);
  nn_safetensors_close(f);

  /* load_params takes the 1-D tensor as a 1xH bias. */
  const char *bias =
      "{\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}"
      "         "; /* 55 + 9 spaces: data at byte 72 */
  const char *p2 = write_raw("bias.safetensors", strlen(bias), bias, data, 12);
  nn_param params[] = {{"b", v, NULL, NN_PARAM_BIAS}};
  gsl_matrix_set_all(v, 0);
  ck_assert_msg(nn_safetensors_load_params(p2, params, 1, &err) == NN_OK, "%s",
                err.msg);
  ck_assert(gsl_matrix_get(v, 0, 2) == 0.25);
  gsl_matrix_free(v);
  gsl_matrix_free(m);
  gsl_matrix_free(one);
}
END_TEST

int main(void) {
  gsl_set_error_handler_off();
  Suite *s = suite_create("safetensors");
  TCase *tc = tcase_create("safetensors");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_roundtrip_f64_bit_exact);
  tcase_add_test(tc, test_roundtrip_f32_equals_casts);
  tcase_add_test(tc, test_metadata_round_trip);
  tcase_add_test(tc, test_data_section_is_8_aligned);
  tcase_add_test(tc, test_exact_bytes_of_a_tiny_file);
  tcase_add_test(tc, test_load_params_mismatches_leave_params_unchanged);
  tcase_add_test(tc, test_read_params_ignore_list);
  tcase_add_test(tc, test_read_checks_shape_and_name);
  tcase_add_test(tc, test_save_refuses_bad_arguments_and_keeps_old_file);
  tcase_add_test(tc, test_open_errors_io);
  tcase_add_test(tc, test_malformed_length_field);
  tcase_add_test(tc, test_malformed_json);
  tcase_add_test(tc, test_malformed_entries);
  tcase_add_test(tc, test_malformed_layout_and_metadata);
  tcase_add_test(tc, test_reads_file_from_another_writer);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
