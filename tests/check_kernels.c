/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The sparse kernels and the aligned allocator against plain definitions:
 * nn_csr_matmul against a dense triple loop (wide and narrow outputs, with
 * bias and sigmoid), row views (nn_csr_rows) against the whole product,
 * nn_csr_matmul_sgd against the product followed by nn_sgd_update,
 * nn_csr_transpose twice against the original, and
 * nn_matrix_calloc_aligned's promises. */
#include <config.h>

#include <math.h>
#include <stdint.h>

#include <gsl/gsl_rng.h>

#include <nn/math.h>

#include "testutil.h"

/* A rows x cols matrix, about `dense` of it non-zero, values in (-1, 1). */
static gsl_matrix *random_sparse(size_t rows, size_t cols, double dense,
                                 gsl_rng *r) {
  gsl_matrix *m = gsl_matrix_calloc(rows, cols);
  ck_assert_ptr_nonnull(m);
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < cols; j++)
      if (gsl_rng_uniform(r) < dense)
        gsl_matrix_set(m, i, j, 2.0 * gsl_rng_uniform(r) - 1.0);
  return m;
}

/* act(A B + bias) by the definition, in long double. */
static double reference(const gsl_matrix *A, const gsl_matrix *B,
                        const gsl_matrix *bias, int act, size_t i, size_t j) {
  long double s = 0;
  for (size_t k = 0; k < A->size2; k++)
    s += (long double)gsl_matrix_get(A, i, k) * gsl_matrix_get(B, k, j);
  if (bias) s += gsl_matrix_get(bias, 0, j);
  const double z = (double)s;
  return act == NN_ACT_SIGMOID ? 1.0 / (1.0 + exp(-z)) : z;
}

static void matmul_matches(size_t m, size_t k, size_t n, int act) {
  gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
  gsl_rng_set(r, 100 + n);
  gsl_matrix *A = random_sparse(m, k, 0.3, r);
  gsl_matrix *B = random_sparse(k, n, 1.0, r);
  gsl_matrix *bias = random_sparse(1, n, 1.0, r);
  gsl_matrix *C = gsl_matrix_alloc(m, n);
  nn_csr_buffer a;
  ck_assert_int_eq(nn_csr_buffer_init(&a, m, m * k), NN_OK);
  ck_assert_int_eq(nn_csr_from_dense(&a, A), NN_OK);
  ck_assert(nn_csr_valid(&a.csr));
  ck_assert_int_eq(nn_csr_matmul(&a.csr, B, bias, act, C), NN_OK);
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < n; j++) {
      const double want = reference(A, B, bias, act, i, j);
      const double got = gsl_matrix_get(C, i, j);
      ck_assert_msg(fabs(got - want) <= 1e-13 * (1.0 + fabs(want)),
                    "%zux%zux%zu [%zu,%zu]: %.17g vs %.17g", m, k, n, i, j,
                    got, want);
    }
  /* Rows [3, 7) as a view: the same numbers, bit for bit. */
  const nn_csr part = nn_csr_rows(&a.csr, 3, 7);
  gsl_matrix *P = gsl_matrix_alloc(4, n);
  ck_assert_int_eq(nn_csr_matmul(&part, B, bias, act, P), NN_OK);
  gsl_matrix_view want = gsl_matrix_submatrix(C, 3, 0, 4, n);
  ck_assert(gsl_matrix_equal(P, &want.matrix));
  nn_csr_buffer_free(&a);
  gsl_matrix_free(A);
  gsl_matrix_free(B);
  gsl_matrix_free(bias);
  gsl_matrix_free(C);
  gsl_matrix_free(P);
  gsl_rng_free(r);
}

/* 37 columns: wide tiles with a partial last vector; 10: the narrow path. */
START_TEST(test_matmul_wide) { matmul_matches(9, 50, 37, NN_ACT_NONE); }
END_TEST

START_TEST(test_matmul_wide_sigmoid) {
  matmul_matches(70, 40, 130, NN_ACT_SIGMOID);
}
END_TEST

START_TEST(test_matmul_narrow) { matmul_matches(9, 50, 10, NN_ACT_SIGMOID); }
END_TEST

/* nn_csr_matmul_sgd against its definition, nn_csr_matmul into G and
 * then nn_sgd_update, bit for bit: on W's view of a wider matrix (tda !=
 * n), with rows of A that are empty, and with reg 0 (no reg * w term). */
static void matmul_sgd_matches(size_t m, size_t k, size_t n, double reg) {
  gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
  gsl_rng_set(r, 300 + n);
  gsl_matrix *A = random_sparse(m, k, 0.3, r);
  for (size_t j = 0; j < k; j++) gsl_matrix_set(A, 2, j, 0.0); /* empty */
  gsl_matrix *B = random_sparse(k, n, 1.0, r);
  gsl_matrix *Wa = random_sparse(m, n + 3, 1.0, r);
  gsl_matrix *Wb = gsl_matrix_alloc(m, n + 3), *G = gsl_matrix_alloc(m, n);
  gsl_matrix_memcpy(Wb, Wa);
  gsl_matrix_view wa = gsl_matrix_submatrix(Wa, 0, 1, m, n);
  gsl_matrix_view wb = gsl_matrix_submatrix(Wb, 0, 1, m, n);
  nn_csr_buffer a;
  ck_assert_int_eq(nn_csr_buffer_init(&a, m, m * k), NN_OK);
  ck_assert_int_eq(nn_csr_from_dense(&a, A), NN_OK);
  ck_assert_int_eq(nn_csr_matmul(&a.csr, B, NULL, NN_ACT_NONE, G), NN_OK);
  ck_assert_int_eq(nn_sgd_update(&wa.matrix, G, NULL, 0.1, reg, 0.0), NN_OK);
  ck_assert_int_eq(nn_csr_matmul_sgd(&a.csr, B, &wb.matrix, 0.1, reg), NN_OK);
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < n + 3; j++)
      ck_assert_msg(gsl_matrix_get(Wa, i, j) == gsl_matrix_get(Wb, i, j) &&
                        signbit(gsl_matrix_get(Wa, i, j)) ==
                            signbit(gsl_matrix_get(Wb, i, j)),
                    "%zux%zux%zu reg %g [%zu,%zu]: %.17g vs %.17g", m, k, n,
                    reg, i, j, gsl_matrix_get(Wa, i, j),
                    gsl_matrix_get(Wb, i, j));
  /* Row views step only their rows. */
  const nn_csr part = nn_csr_rows(&a.csr, 3, 7);
  gsl_matrix_view w4 = gsl_matrix_submatrix(&wb.matrix, 3, 0, 4, n);
  gsl_matrix_view g4 = gsl_matrix_submatrix(G, 3, 0, 4, n);
  gsl_matrix_view a4 = gsl_matrix_submatrix(&wa.matrix, 3, 0, 4, n);
  ck_assert_int_eq(nn_csr_matmul(&part, B, NULL, NN_ACT_NONE, &g4.matrix),
                   NN_OK);
  ck_assert_int_eq(nn_sgd_update(&a4.matrix, &g4.matrix, NULL, 0.1, reg, 0.0),
                   NN_OK);
  ck_assert_int_eq(nn_csr_matmul_sgd(&part, B, &w4.matrix, 0.1, reg), NN_OK);
  ck_assert(gsl_matrix_equal(Wa, Wb));
  /* Shapes that do not fit are refused, and nothing moves. */
  gsl_matrix_view bad = gsl_matrix_submatrix(Wb, 0, 0, m - 1, n);
  ck_assert_int_eq(nn_csr_matmul_sgd(&a.csr, B, &bad.matrix, 0.1, reg),
                   NN_EINVAL);
  ck_assert_int_eq(nn_csr_matmul_sgd(NULL, B, &wb.matrix, 0.1, reg),
                   NN_EINVAL);
  ck_assert(gsl_matrix_equal(Wa, Wb));
  nn_csr_buffer_free(&a);
  gsl_matrix_free(A);
  gsl_matrix_free(B);
  gsl_matrix_free(Wa);
  gsl_matrix_free(Wb);
  gsl_matrix_free(G);
  gsl_rng_free(r);
}

/* 128: one whole AVX-512 tile; 131 and 37: partial last vectors; 300:
 * several tiles; 10 and 16: the narrow path; 17: the first wide width. */
START_TEST(test_matmul_sgd) {
  static const size_t widths[] = {1, 10, 16, 17, 37, 128, 131, 300};
  for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++) {
    matmul_sgd_matches(40, 70, widths[w], 0.01);
    matmul_sgd_matches(40, 70, widths[w], 0.0);
  }
}
END_TEST

START_TEST(test_transpose_twice) {
  gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
  gsl_rng_set(r, 7);
  gsl_matrix *A = random_sparse(13, 29, 0.2, r), *back = gsl_matrix_calloc(13, 29);
  nn_csr_buffer a, t, tt;
  ck_assert_int_eq(nn_csr_buffer_init(&a, 13, 13 * 29), NN_OK);
  ck_assert_int_eq(nn_csr_buffer_init(&t, 29, 13 * 29), NN_OK);
  ck_assert_int_eq(nn_csr_buffer_init(&tt, 13, 13 * 29), NN_OK);
  ck_assert_int_eq(nn_csr_from_dense(&a, A), NN_OK);
  ck_assert_int_eq(nn_csr_transpose(&t, &a.csr), NN_OK);
  ck_assert(nn_csr_valid(&t.csr));
  ck_assert_uint_eq(t.csr.rows, 29);
  ck_assert_int_eq(nn_csr_transpose(&tt, &t.csr), NN_OK);
  for (size_t i = 0; i < tt.csr.rows; i++)
    for (size_t p = tt.csr.start[i]; p < tt.csr.start[i + 1]; p++)
      gsl_matrix_set(back, i, tt.csr.index[p], tt.csr.value[p]);
  ck_assert(gsl_matrix_equal(A, back));
  nn_csr_buffer_free(&a);
  nn_csr_buffer_free(&t);
  nn_csr_buffer_free(&tt);
  gsl_matrix_free(A);
  gsl_matrix_free(back);
  gsl_rng_free(r);
}
END_TEST

START_TEST(test_aligned_alloc) {
  const size_t shapes[][2] = {{784, 128}, {1, 10}, {3, 5}};
  for (size_t s = 0; s < 3; s++) {
    gsl_matrix *m = nn_matrix_calloc_aligned(shapes[s][0], shapes[s][1]);
    ck_assert_ptr_nonnull(m);
    ck_assert_uint_eq((uintptr_t)m->data % 64, 0);
    ck_assert_uint_eq(m->size1, shapes[s][0]);
    ck_assert_uint_eq(m->size2, shapes[s][1]);
    ck_assert_uint_eq(m->tda, shapes[s][1]);
    ck_assert(gsl_matrix_isnull(m));
    gsl_matrix_set(m, m->size1 - 1, m->size2 - 1, 1.0); /* all of it usable */
    gsl_matrix_free(m); /* frees the data and the block (ASan/valgrind) */
  }
  ck_assert_ptr_null(nn_matrix_calloc_aligned(0, 5));
  ck_assert_ptr_null(nn_matrix_calloc_aligned(SIZE_MAX / 4, 8));
}
END_TEST

/* Rows tda doubles apart: each row starts tda after the last, the padding
 * is never read as data, and the products see the same numbers as in a
 * packed copy. */
START_TEST(test_strided_alloc) {
  gsl_matrix *m = nn_matrix_calloc_strided(5, 12, 24);
  ck_assert_ptr_nonnull(m);
  ck_assert_uint_eq((uintptr_t)m->data % 64, 0);
  ck_assert_uint_eq(m->size1, 5);
  ck_assert_uint_eq(m->size2, 12);
  ck_assert_uint_eq(m->tda, 24);
  ck_assert(gsl_matrix_isnull(m));
  for (size_t i = 0; i < 5; i++)
    for (size_t j = 0; j < 12; j++) gsl_matrix_set(m, i, j, (double)(i * 12 + j));
  ck_assert(gsl_matrix_ptr(m, 1, 0) - gsl_matrix_ptr(m, 0, 0) == 24);
  gsl_matrix *packed = nn_matrix_calloc_aligned(5, 12);
  gsl_matrix_memcpy(packed, m);
  ck_assert(gsl_matrix_equal(packed, m));
  /* A sparse product through either: bit for bit the same. */
  gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
  gsl_matrix *A = random_sparse(3, 5, 0.5, r);
  nn_csr_buffer a;
  ck_assert_int_eq(nn_csr_buffer_init(&a, 3, 15), NN_OK);
  ck_assert_int_eq(nn_csr_from_dense(&a, A), NN_OK);
  gsl_matrix *c1 = nn_matrix_calloc_aligned(3, 12);
  gsl_matrix *c2 = nn_matrix_calloc_strided(3, 12, 20);
  ck_assert_int_eq(nn_csr_matmul(&a.csr, m, NULL, NN_ACT_SIGMOID, c1), NN_OK);
  ck_assert_int_eq(nn_csr_matmul(&a.csr, packed, NULL, NN_ACT_SIGMOID, c2),
                   NN_OK);
  ck_assert(gsl_matrix_equal(c1, c2));
  gsl_matrix_free(c1);
  gsl_matrix_free(c2);
  gsl_matrix_free(A);
  nn_csr_buffer_free(&a);
  gsl_rng_free(r);
  gsl_matrix_free(packed);
  gsl_matrix_free(m);
  ck_assert_ptr_null(nn_matrix_calloc_strided(5, 12, 11)); /* tda < cols */
  ck_assert_ptr_null(nn_matrix_calloc_strided(0, 12, 12));
  ck_assert_ptr_null(nn_matrix_calloc_strided(SIZE_MAX / 64, 4, 16));
}
END_TEST

static Suite *kernels_suite(void) {
  Suite *s = suite_create("kernels");
  TCase *tc = tcase_create("sparse");
  tcase_add_test(tc, test_matmul_wide);
  tcase_add_test(tc, test_strided_alloc);
  tcase_add_test(tc, test_matmul_wide_sigmoid);
  tcase_add_test(tc, test_matmul_narrow);
  tcase_add_test(tc, test_matmul_sgd);
  tcase_add_test(tc, test_transpose_twice);
  tcase_add_test(tc, test_aligned_alloc);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return test_run_suite(kernels_suite()); }
