/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Tests of the shared numerics (<nn/math.h>) against the course's
 * published values, plus the properties the trainer relies on: stability,
 * aliasing, the fused softmax + cross-entropy and the L2 rule. */
#include <config.h>

#include <math.h>
#include <string.h>

#include <gsl/gsl_rng.h>

#include <nn/math.h>

#include "testutil.h"

/* The course's 4x2 activation input. */
static const double X42[] = {-1.48839468, -0.31530738, -0.28271176,
                             -1.00780433, 0.66435418,  1.2537461,
                             -1.64829182, 0.90223236};

/* A freshly allocated rows x cols matrix holding `v` row-major (or zeros
 * when v is NULL); owned by the test, which frees it. */
static gsl_matrix *mat(size_t rows, size_t cols, const double *v) {
  gsl_matrix *m = gsl_matrix_calloc(rows, cols);
  ck_assert_ptr_nonnull(m);
  if (v)
    for (size_t i = 0; i < rows; i++)
      for (size_t j = 0; j < cols; j++)
        gsl_matrix_set(m, i, j, v[i * cols + j]);
  return m;
}

/* Sum of absolute differences between m and the row-major array v. */
static double abs_diff(const gsl_matrix *m, const double *v) {
  double s = 0.0;
  for (size_t i = 0; i < m->size1; i++)
    for (size_t j = 0; j < m->size2; j++)
      s += fabs(gsl_matrix_get(m, i, j) - v[i * m->size2 + j]);
  return s;
}

typedef int (*unary_fn)(const gsl_matrix *, gsl_matrix *);

/* Apply f to the course input both out of place and in place and compare
 * with the published result. */
static void check_unary(unary_fn f, const double *expected) {
  gsl_matrix *x = mat(4, 2, X42), *out = mat(4, 2, NULL);
  ck_assert_int_eq(f(x, out), NN_OK);
  ck_assert_double_lt(abs_diff(out, expected), 1e-7);
  ck_assert_int_eq(f(x, x), NN_OK); /* out aliases x */
  ck_assert_double_lt(abs_diff(x, expected), 1e-7);
  gsl_matrix_free(x);
  gsl_matrix_free(out);
}

START_TEST(test_sigmoid) {
  static const double e[] = {0.1841628,  0.4218198,  0.42978908, 0.26740977,
                             0.66023782, 0.77794766, 0.16133995, 0.71140804};
  check_unary(nn_sigmoid, e);
}
END_TEST

START_TEST(test_sigmoid_deriv) {
  static const double e[] = {0.15024686, 0.24388786, 0.24507043, 0.19590178,
                             0.22432384, 0.1727451,  0.13530937, 0.20530664};
  check_unary(nn_sigmoid_deriv, e);
}
END_TEST

START_TEST(test_relu) {
  static const double e[] = {0, 0, 0, 0, 0.66435418, 1.2537461, 0, 0.90223236};
  check_unary(nn_relu, e);
}
END_TEST

START_TEST(test_relu_deriv) {
  static const double e[] = {0, 0, 0, 0, 1, 1, 0, 1};
  check_unary(nn_relu_deriv, e);
  /* The derivative at exactly 0 is 0. */
  gsl_matrix *z = mat(1, 1, NULL);
  ck_assert_int_eq(nn_relu_deriv(z, z), NN_OK);
  ck_assert(gsl_matrix_get(z, 0, 0) == 0.0);
  gsl_matrix_free(z);
}
END_TEST

START_TEST(test_softmax_rows) {
  static const double e[] = {0.23629739, 0.76370261, 0.67372745, 0.32627255,
                             0.35677439, 0.64322561, 0.07239128, 0.92760872};
  check_unary(nn_softmax_rows, e);
}
END_TEST

START_TEST(test_sigmoid_extremes) {
  static const double v[] = {-1000.0, 1000.0, -745.0, 40.0};
  gsl_matrix *x = mat(1, 4, v), *s = mat(1, 4, NULL), *d = mat(1, 4, NULL);
  ck_assert_int_eq(nn_sigmoid(x, s), NN_OK);
  ck_assert_int_eq(nn_sigmoid_deriv(x, d), NN_OK);
  for (size_t j = 0; j < 4; j++) {
    ck_assert(isfinite(gsl_matrix_get(s, 0, j)));
    ck_assert(isfinite(gsl_matrix_get(d, 0, j)));
  }
  ck_assert(gsl_matrix_get(s, 0, 0) == 0.0);
  ck_assert(gsl_matrix_get(s, 0, 1) == 1.0);
  ck_assert(gsl_matrix_get(d, 0, 0) == 0.0);
  ck_assert(gsl_matrix_get(d, 0, 1) == 0.0);
  gsl_matrix_free(x);
  gsl_matrix_free(s);
  gsl_matrix_free(d);
}
END_TEST

START_TEST(test_softmax_huge) {
  static const double v[] = {1000.0, 1001.0, -1000.0, -1001.0};
  gsl_matrix *x = mat(2, 2, v), *p = mat(2, 2, NULL);
  ck_assert_int_eq(nn_softmax_rows(x, p), NN_OK);
  const double a = 1.0 / (1.0 + exp(1.0)); /* softmax of (0, 1) */
  ck_assert_double_eq_tol(gsl_matrix_get(p, 0, 0), a, 1e-15);
  ck_assert_double_eq_tol(gsl_matrix_get(p, 0, 1), 1.0 - a, 1e-15);
  ck_assert_double_eq_tol(gsl_matrix_get(p, 1, 0), 1.0 - a, 1e-15);
  ck_assert_double_eq_tol(gsl_matrix_get(p, 1, 1), a, 1e-15);
  /* The fused loss stays finite and exact: -log(1 - a) for label 1. */
  static const uint32_t y[] = {1, 1};
  double loss;
  size_t hits;
  ck_assert_int_eq(nn_softmax_xent(x, y, NULL, &loss, &hits), NN_OK);
  ck_assert(isfinite(loss));
  ck_assert_double_eq_tol(loss, (-log(1.0 - a) - log(a)) / 2.0, 1e-13);
  ck_assert_uint_eq(hits, 1);
  gsl_matrix_free(x);
  gsl_matrix_free(p);
}
END_TEST

static const double P33[] = {0.2, 0.5, 0.3, 0.5, 0.1, 0.4, 0.3, 0.3, 0.4};
static const uint32_t Y3[] = {1, 2, 0};

START_TEST(test_cross_entropy_course) {
  gsl_matrix *p = mat(3, 3, P33);
  double loss = 0.0;
  ck_assert_int_eq(nn_cross_entropy(p, Y3, &loss), NN_OK);
  ck_assert_double_eq_tol(loss, 0.937803, 0.5e-5);
  ck_assert_double_eq_tol(nn_accuracy(p, Y3), 0.3333, 0.5e-4);
  ck_assert_uint_eq(nn_count_hits(p, Y3), 1);
  gsl_matrix_free(p);
}
END_TEST

START_TEST(test_cross_entropy_clamp) {
  static const double v[] = {1.0, 0.0};
  static const uint32_t y[] = {1};
  gsl_matrix *p = mat(1, 2, v);
  double loss = 0.0;
  ck_assert_int_eq(nn_cross_entropy(p, y, &loss), NN_OK);
  ck_assert(isfinite(loss));
  ck_assert_double_gt(loss, 700.0);
  gsl_matrix_free(p);
}
END_TEST

START_TEST(test_count_hits_first_max) {
  static const double v[] = {0.5, 0.5, 0.0, 0.1, 0.7, 0.7};
  static const uint32_t first[] = {0, 1}, second[] = {1, 2};
  gsl_matrix *s = mat(2, 3, v);
  ck_assert_uint_eq(nn_count_hits(s, first), 2);
  ck_assert_uint_eq(nn_count_hits(s, second), 0);
  gsl_matrix_free(s);
}
END_TEST

/* Scores of a 5x4 batch with a spread of magnitudes. */
static const double S54[] = {0.3,  -1.2, 2.5,  0.0,  1.0,  1.0,  1.0,
                             1.0,  -3.0, 4.0,  0.5,  -0.5, 10.0, -10.0,
                             2.0,  3.0,  0.01, 0.02, 0.03, 0.04};
static const uint32_t Y5[] = {2, 3, 0, 0, 3};

/* Reference: the unfused composition softmax -> cross-entropy -> hits, and
 * (p - onehot) / B. */
static void xent_reference(const gsl_matrix *s, const uint32_t *y,
                           gsl_matrix *dref, double *loss, size_t *hits) {
  ck_assert_int_eq(nn_softmax_rows(s, dref), NN_OK);
  ck_assert_int_eq(nn_cross_entropy(dref, y, loss), NN_OK);
  *hits = nn_count_hits(s, y);
  const double B = (double)s->size1;
  for (size_t i = 0; i < s->size1; i++)
    for (size_t j = 0; j < s->size2; j++)
      gsl_matrix_set(dref, i, j,
                     (gsl_matrix_get(dref, i, j) - (j == y[i] ? 1.0 : 0.0)) /
                         B);
}

START_TEST(test_softmax_xent_matches_parts) {
  gsl_matrix *s = mat(5, 4, S54), *d = mat(5, 4, NULL), *ref = mat(5, 4, NULL);
  double loss, rloss;
  size_t hits, rhits;
  xent_reference(s, Y5, ref, &rloss, &rhits);
  ck_assert_int_eq(nn_softmax_xent(s, Y5, d, &loss, &hits), NN_OK);
  ck_assert_double_eq_tol(loss, rloss, 1e-13);
  ck_assert_uint_eq(hits, rhits);
  ck_assert_uint_eq(hits, 3);
  for (size_t i = 0; i < 5; i++)
    for (size_t j = 0; j < 4; j++)
      ck_assert_double_eq_tol(gsl_matrix_get(d, i, j),
                              gsl_matrix_get(ref, i, j), 1e-15);
  /* Without dscores: same loss and hits, scores untouched. */
  double loss2;
  size_t hits2;
  ck_assert_int_eq(nn_softmax_xent(s, Y5, NULL, &loss2, &hits2), NN_OK);
  ck_assert(loss2 == loss);
  ck_assert_uint_eq(hits2, hits);
  ck_assert_double_eq(abs_diff(s, S54), 0.0);
  gsl_matrix_free(s);
  gsl_matrix_free(d);
  gsl_matrix_free(ref);
}
END_TEST

START_TEST(test_softmax_xent_alias) {
  gsl_matrix *s = mat(5, 4, S54), *d = mat(5, 4, NULL), *ref = mat(5, 4, NULL);
  double loss, aloss, rloss;
  size_t hits, ahits, rhits;
  xent_reference(s, Y5, ref, &rloss, &rhits);
  ck_assert_int_eq(nn_softmax_xent(s, Y5, d, &loss, &hits), NN_OK);
  ck_assert_int_eq(nn_softmax_xent(s, Y5, s, &aloss, &ahits), NN_OK);
  ck_assert(aloss == loss);
  ck_assert_uint_eq(ahits, hits);
  for (size_t i = 0; i < 5; i++)
    for (size_t j = 0; j < 4; j++) {
      ck_assert(gsl_matrix_get(s, i, j) == gsl_matrix_get(d, i, j));
      ck_assert_double_eq_tol(gsl_matrix_get(s, i, j),
                              gsl_matrix_get(ref, i, j), 1e-15);
    }
  gsl_matrix_free(s);
  gsl_matrix_free(d);
  gsl_matrix_free(ref);
}
END_TEST

START_TEST(test_softmax_xent_view) {
  /* A 2x3 view into a 3x5 block: tda != size2 must be honoured. */
  static const double big[] = {9, 9, 9, 9, 9, 9, 1, 2, 3, 9, 9, 3, 2, 1, 9};
  static const double sub[] = {1, 2, 3, 3, 2, 1};
  static const uint32_t y[] = {2, 0};
  gsl_matrix *b = mat(3, 5, big), *s = mat(2, 3, sub), *d = mat(2, 3, NULL);
  gsl_matrix_view v = gsl_matrix_submatrix(b, 1, 1, 2, 3);
  double l1, l2;
  size_t h1, h2;
  ck_assert_int_eq(nn_softmax_xent(s, y, d, &l1, &h1), NN_OK);
  ck_assert_int_eq(nn_softmax_xent(&v.matrix, y, &v.matrix, &l2, &h2), NN_OK);
  ck_assert(l1 == l2);
  ck_assert_uint_eq(h1, 2);
  ck_assert_uint_eq(h2, 2);
  for (size_t i = 0; i < 2; i++)
    for (size_t j = 0; j < 3; j++)
      ck_assert(gsl_matrix_get(&v.matrix, i, j) == gsl_matrix_get(d, i, j));
  /* The columns outside the view are untouched. */
  ck_assert(gsl_matrix_get(b, 1, 0) == 9 && gsl_matrix_get(b, 1, 4) == 9);
  ck_assert(gsl_matrix_get(b, 2, 0) == 9 && gsl_matrix_get(b, 2, 4) == 9);
  gsl_matrix_free(b);
  gsl_matrix_free(s);
  gsl_matrix_free(d);
}
END_TEST

START_TEST(test_bad_labels) {
  static const uint32_t bad[] = {1, 3, 0}; /* 3 >= cols */
  gsl_matrix *p = mat(3, 3, P33);
  double loss = -1.0;
  size_t hits = 99;
  ck_assert_int_eq(nn_cross_entropy(p, bad, &loss), NN_EINVAL);
  /* Rejected before anything is written, even with dscores == scores. */
  ck_assert_int_eq(nn_softmax_xent(p, bad, p, &loss, &hits), NN_EINVAL);
  ck_assert_double_eq(abs_diff(p, P33), 0.0);
  ck_assert_int_eq(nn_softmax_xent(p, NULL, NULL, &loss, &hits), NN_EINVAL);
  gsl_matrix_free(p);
}
END_TEST

START_TEST(test_shape_mismatch) {
  gsl_matrix *a = mat(4, 2, X42), *b = mat(4, 3, NULL), *c = mat(3, 2, NULL);
  double loss;
  size_t hits;
  unary_fn fns[] = {nn_sigmoid, nn_sigmoid_deriv, nn_relu, nn_relu_deriv,
                    nn_softmax_rows};
  for (size_t k = 0; k < sizeof fns / sizeof fns[0]; k++) {
    ck_assert_int_eq(fns[k](a, b), NN_EINVAL);
    ck_assert_int_eq(fns[k](a, c), NN_EINVAL);
    ck_assert_int_eq(fns[k](a, NULL), NN_EINVAL);
  }
  static const uint32_t y[] = {0, 1, 0, 1};
  ck_assert_int_eq(nn_softmax_xent(a, y, b, &loss, &hits), NN_EINVAL);
  ck_assert_int_eq(nn_softmax_xent(a, y, c, &loss, &hits), NN_EINVAL);
  gsl_matrix *row3 = mat(1, 3, NULL), *row2 = mat(1, 2, NULL);
  ck_assert_int_eq(nn_add_row_vector(a, row3), NN_EINVAL);
  ck_assert_int_eq(nn_add_row_vector(a, c), NN_EINVAL);
  ck_assert_int_eq(nn_column_sums(a, row3), NN_EINVAL);
  ck_assert_int_eq(nn_column_sums(a, c), NN_EINVAL);
  ck_assert_int_eq(nn_add_row_vector(a, row2), NN_OK);
  ck_assert_int_eq(nn_column_sums(a, row2), NN_OK);
  nn_param p = {"W", a, b, NN_PARAM_WEIGHT};
  ck_assert_int_eq(nn_apply_l2(&p, 1, 0.1), NN_EINVAL);
  ck_assert_double_eq(abs_diff(b, (const double[12]){0}), 0.0);
  gsl_matrix_free(a);
  gsl_matrix_free(b);
  gsl_matrix_free(c);
  gsl_matrix_free(row3);
  gsl_matrix_free(row2);
}
END_TEST

START_TEST(test_row_vector_and_column_sums) {
  static const double v[] = {1, 2, 3, 4, 5, 6};
  static const double bias[] = {10, 20, 30};
  gsl_matrix *m = mat(2, 3, v), *b = mat(1, 3, bias), *s = mat(1, 3, NULL);
  ck_assert_int_eq(nn_add_row_vector(m, b), NN_OK);
  ck_assert_double_eq(abs_diff(m, (const double[]){11, 22, 33, 14, 25, 36}),
                      0.0);
  ck_assert_int_eq(nn_column_sums(m, s), NN_OK);
  ck_assert_double_eq(abs_diff(s, (const double[]){25, 47, 69}), 0.0);
  /* A 1-row matrix summed onto itself is unchanged. */
  ck_assert_int_eq(nn_column_sums(b, b), NN_OK);
  ck_assert_double_eq(abs_diff(b, bias), 0.0);
  gsl_matrix_free(m);
  gsl_matrix_free(b);
  gsl_matrix_free(s);
}
END_TEST

/* The models' shared shape check: each rule with its own message. */
START_TEST(test_check_batch) {
  gsl_matrix *s = gsl_matrix_alloc(4, 10);
  nn_error err = {0, ""};
  ck_assert_int_eq(nn_check_batch("m", 4, 784, 784, 64, s, 10, "scores", &err),
                   NN_OK);
  ck_assert_int_eq(nn_check_batch("m", 4, 780, 784, 64, s, 10, "scores", &err),
                   NN_EINVAL);
  ck_assert_str_eq(err.msg, "m: X has 780 columns, model expects 784");
  ck_assert_int_eq(nn_check_batch("m", 65, 784, 784, 64, s, 10, "scores", &err),
                   NN_EINVAL);
  ck_assert_str_eq(err.msg, "m: batch of 65 rows, model accepts 1..64");
  ck_assert_int_eq(nn_check_batch("m", 0, 784, 784, 64, s, 10, "scores", &err),
                   NN_EINVAL);
  ck_assert_int_eq(nn_check_batch("m", 3, 784, 784, 64, s, 10, "dscores", &err),
                   NN_EINVAL);
  ck_assert_str_eq(err.msg, "m: dscores is 4x10, expected 3x10");
  ck_assert_int_eq(nn_check_batch("m", 4, 784, 784, 64, NULL, 10, "scores", &err),
                   NN_EINVAL);
  gsl_matrix_free(s);
}
END_TEST

START_TEST(test_apply_l2) {
  static const double w[] = {0.5, -1.25, 3.0, 1e-3, -7.0, 2.0};
  static const double g[] = {0.1, 0.2, -0.3, 0.4, 0.05, -0.6};
  const double reg = 0.001;
  gsl_matrix *W = mat(2, 3, w), *gW = mat(2, 3, g);
  gsl_matrix *b = mat(1, 3, w), *gb = mat(1, 3, g);
  nn_param p[2] = {{"W1", W, gW, NN_PARAM_WEIGHT},
                   {"b1", b, gb, NN_PARAM_BIAS}};
  ck_assert_int_eq(nn_apply_l2(p, 2, reg), NN_OK);
  for (size_t i = 0; i < 2; i++)
    for (size_t j = 0; j < 3; j++) {
      /* Same operation order as the rule, so equality is exact. */
      const double expected = g[i * 3 + j] + reg * w[i * 3 + j];
      ck_assert(gsl_matrix_get(gW, i, j) == expected);
    }
  ck_assert_double_eq(abs_diff(gb, g), 0.0); /* bias untouched */
  ck_assert_double_eq(abs_diff(W, w), 0.0);  /* values untouched */
  gsl_matrix_free(W);
  gsl_matrix_free(gW);
  gsl_matrix_free(b);
  gsl_matrix_free(gb);
}
END_TEST

START_TEST(test_fill_gaussian) {
  gsl_rng *r1 = gsl_rng_alloc(gsl_rng_mt19937);
  gsl_rng *r2 = gsl_rng_alloc(gsl_rng_mt19937);
  ck_assert_ptr_nonnull(r1);
  ck_assert_ptr_nonnull(r2);
  gsl_rng_set(r1, 42);
  gsl_rng_set(r2, 42);
  gsl_matrix *a = mat(200, 100, NULL), *b = mat(200, 100, NULL);
  nn_fill_gaussian(a, r1, 0.001);
  nn_fill_gaussian(b, r2, 0.001);
  ck_assert(gsl_matrix_equal(a, b));
  double sum = 0.0, sq = 0.0;
  for (size_t i = 0; i < 200; i++)
    for (size_t j = 0; j < 100; j++) {
      const double x = gsl_matrix_get(a, i, j);
      sum += x;
      sq += x * x;
    }
  const double n = 20000.0, mean = sum / n;
  ck_assert_double_lt(fabs(mean), 5e-5);
  ck_assert_double_eq_tol(sqrt(sq / n - mean * mean), 0.001, 5e-5);
  gsl_matrix_free(a);
  gsl_matrix_free(b);
  gsl_rng_free(r1);
  gsl_rng_free(r2);
}
END_TEST

static Suite *math_suite(void) {
  Suite *s = suite_create("math");
  TCase *tc = tcase_create("course");
  tcase_add_test(tc, test_sigmoid);
  tcase_add_test(tc, test_sigmoid_deriv);
  tcase_add_test(tc, test_relu);
  tcase_add_test(tc, test_relu_deriv);
  tcase_add_test(tc, test_softmax_rows);
  tcase_add_test(tc, test_cross_entropy_course);
  suite_add_tcase(s, tc);
  tc = tcase_create("properties");
  tcase_add_test(tc, test_sigmoid_extremes);
  tcase_add_test(tc, test_softmax_huge);
  tcase_add_test(tc, test_cross_entropy_clamp);
  tcase_add_test(tc, test_count_hits_first_max);
  tcase_add_test(tc, test_softmax_xent_matches_parts);
  tcase_add_test(tc, test_softmax_xent_alias);
  tcase_add_test(tc, test_softmax_xent_view);
  tcase_add_test(tc, test_bad_labels);
  tcase_add_test(tc, test_shape_mismatch);
  tcase_add_test(tc, test_row_vector_and_column_sums);
  tcase_add_test(tc, test_apply_l2);
  tcase_add_test(tc, test_check_batch);
  tcase_add_test(tc, test_fill_gaussian);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return test_run_suite(math_suite()); }
