/* SPDX-License-Identifier: GPL-3.0-or-later */
/* ------------------------------------------------------------------------
 * A sparse weight gradient and the plain SGD step in one pass:
 *
 *   W -= lr * (A B + reg * W)        (nn_csr_matmul_sgd, <nn/math.h>)
 *
 * Why: the two-layer network's step computed dW1 = X^T dZ1 block by block
 * into a gradient matrix, then read it back with W1 in a second pass
 * (nn_sgd_update).  W1 (800 KB at 128 hidden units) does not stay in a
 * 1 MB L2 next to the batch and its activations, so that second pass
 * waited on memory for every row.  Here each row of the gradient is summed
 * in registers and the row of W is updated straight away: the gradient is
 * never stored, and the loads of W overlap the next row's arithmetic.  In
 * a stand-alone timing of the first layer's forward, gradient and step on
 * real batches, this took 14-16 % less time per batch.
 *
 * The bits are those of nn_csr_matmul into a scratch G followed by
 * nn_sgd_update(W, G, NULL, lr, reg, 0):
 *   - every element of A B is the same chain of fused multiply-adds over
 *     A's stored entries in ascending column order, from zero (the product
 *     kernels only cut that chain into blocks, with a store and a reload
 *     in between, which round nothing);
 *   - the rule is nn_sgd_update's, a multiply and an add or subtract each
 *     rounded on its own (g + reg * w only when reg != 0, then w - lr * g).
 * Outputs narrow enough for nn_csr_matmul's two-accumulator path (at most
 * NN_CSR_NARROW columns) sum in another order, so they go through the two
 * library functions on a small block at a time instead.
 * ---------------------------------------------------------------------- */

#include <config.h>

#include "math/simd.h"

/* Rows per block on the narrow path: the block's gradient lives on the
 * stack (32 x 16 doubles, 4 KB). */
#define STEP_NARROW_ROWS 32

/* The portable path, a block of up to STEP_GENERIC_COLS columns at a time:
 * entry by entry along contiguous rows of B into a gradient block on the
 * stack (summing each element down B's column instead, entry inside
 * column, made the two-layer epoch 45 % slower). */
#define STEP_GENERIC_COLS 64
static void step_generic(const nn_csr *A, const double *B, size_t ldb,
                         size_t n, double *W, size_t ldw, double lr,
                         double reg) {
  double g[STEP_GENERIC_COLS];
  for (size_t i = 0; i < A->rows; i++) {
    const size_t p0 = A->start[i], p1 = A->start[i + 1];
    for (size_t j0 = 0; j0 < n; j0 += STEP_GENERIC_COLS) {
      const size_t nj =
          n - j0 < STEP_GENERIC_COLS ? n - j0 : STEP_GENERIC_COLS;
      double *w = W + i * ldw + j0;
      for (size_t j = 0; j < nj; j++)
        g[j] = 0.0;
      for (size_t p = p0; p < p1; p++) {
        const double a = A->value[p], *b = B + A->index[p] * ldb + j0;
        for (size_t j = 0; j < nj; j++)
          g[j] = fma_or_not(a, b[j], g[j]);
      }
      for (size_t j = 0; j < nj; j++)
        w[j] -= lr * sgd_l2(g[j], w[j], reg);
    }
  }
}

#ifdef NN_X86
/* One tile of NV vectors of 8 columns (the last masked unless FULL) for
 * every row of A: the row's gradient in NV accumulators, then the step on
 * the same columns of W.  NV and FULL are constants after inlining. */
#define STEP_TILE512 16
NN_AVX512 static inline __attribute__((always_inline)) void
step_tile_512(const nn_csr *A, const double *B, size_t ldb, double *W,
              size_t ldw, size_t j0, size_t w, double lr, double reg,
              const int NV, const int FULL) {
  const size_t *const start = A->start;
  const __mmask8 ml = FULL ? 0xFF : mask8(w - 8 * (size_t)(NV - 1));
  const __m512d vlr = _mm512_set1_pd(lr), vreg = _mm512_set1_pd(reg);
  const int l2 = reg != 0.0;
  for (size_t i = 0; i < A->rows; i++) {
    __m512d acc[STEP_TILE512];
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++)
      acc[v] = _mm512_setzero_pd();
    csr_fma_512(acc, A->index, A->value, start[i], start[i + 1], SIZE_MAX,
                B, ldb, j0, NV, FULL, ml);
    double *wr = W + i * ldw + j0;
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) {
      const __mmask8 m = FULL || v < NV - 1 ? 0xFF : ml;
      const __m512d wv = _mm512_maskz_loadu_pd(m, wr + 8 * v);
      const __m512d g = sgd_l2_512(acc[v], wv, vreg, l2);
      _mm512_mask_storeu_pd(wr + 8 * v, m,
                            _mm512_sub_pd(wv, _mm512_mul_pd(vlr, g)));
    }
  }
}

NN_AVX512 static void step_512(const nn_csr *A, const double *B, size_t ldb,
                               size_t n, double *W, size_t ldw, double lr,
                               double reg) {
  for (size_t j0 = 0; j0 < n; j0 += 8 * STEP_TILE512) {
    const size_t w = n - j0 < 8 * STEP_TILE512 ? n - j0 : 8 * STEP_TILE512;
    if (w == 8 * STEP_TILE512) {
      step_tile_512(A, B, ldb, W, ldw, j0, w, lr, reg, STEP_TILE512, 1);
      continue;
    }
    switch ((w + 7) / 8) {
#define NN_CASE(k)                                                   \
  case k:                                                            \
    step_tile_512(A, B, ldb, W, ldw, j0, w, lr, reg, k, 0);          \
    break;
      NN_CASE(1) NN_CASE(2) NN_CASE(3) NN_CASE(4)
      NN_CASE(5) NN_CASE(6) NN_CASE(7) NN_CASE(8)
      NN_CASE(9) NN_CASE(10) NN_CASE(11) NN_CASE(12)
      NN_CASE(13) NN_CASE(14) NN_CASE(15) NN_CASE(16)
#undef NN_CASE
    }
  }
}

/* The AVX2 version: tiles of up to V256_TILE vectors of 4 columns. */
NN_AVX2 static inline __attribute__((always_inline)) void
step_tile_256(const nn_csr *A, const double *B, size_t ldb, double *W,
              size_t ldw, size_t j0, size_t w, double lr, double reg,
              const int NV, const int FULL) {
  const size_t *const start = A->start;
  const __m256i ml = mask4(w - 4 * (size_t)(NV - 1));
  const __m256d vlr = _mm256_set1_pd(lr), vreg = _mm256_set1_pd(reg);
  const int l2 = reg != 0.0;
  for (size_t i = 0; i < A->rows; i++) {
    __m256d acc[V256_TILE];
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++)
      acc[v] = _mm256_setzero_pd();
    csr_fma_256(acc, A->index, A->value, start[i], start[i + 1], SIZE_MAX,
                B, ldb, j0, NV, FULL, ml);
    double *wr = W + i * ldw + j0;
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) {
      const int full = FULL || v < NV - 1;
      const __m256d wv = ld_256(wr + 4 * v, ml, full);
      const __m256d g = sgd_l2_256(acc[v], wv, vreg, l2);
      const __m256d r = _mm256_sub_pd(wv, _mm256_mul_pd(vlr, g));
      if (full)
        _mm256_storeu_pd(wr + 4 * v, r);
      else
        _mm256_maskstore_pd(wr + 4 * v, ml, r);
    }
  }
}

NN_AVX2 static void step_256(const nn_csr *A, const double *B, size_t ldb,
                             size_t n, double *W, size_t ldw, double lr,
                             double reg) {
  for (size_t j0 = 0; j0 < n; j0 += 4 * V256_TILE) {
    const size_t w = n - j0 < 4 * V256_TILE ? n - j0 : 4 * V256_TILE;
    if (w == 4 * V256_TILE) {
      step_tile_256(A, B, ldb, W, ldw, j0, w, lr, reg, V256_TILE, 1);
      continue;
    }
    switch ((w + 3) / 4) {
#define NN_CASE(k)                                                   \
  case k:                                                            \
    step_tile_256(A, B, ldb, W, ldw, j0, w, lr, reg, k, 0);          \
    break;
      NN_CASE(1) NN_CASE(2) NN_CASE(3) NN_CASE(4)
      NN_CASE(5) NN_CASE(6) NN_CASE(7) NN_CASE(8)
#undef NN_CASE
    }
  }
}
#endif /* NN_X86 */

/* Narrow outputs: the product into a stack block, then the step, a block
 * of rows at a time, through the library's own two functions. */
static int step_narrow(const nn_csr *A, const gsl_matrix *B, gsl_matrix *W,
                       double lr, double reg) {
  double buf[STEP_NARROW_ROWS * NN_NARROW];
  const size_t n = B->size2;
  for (size_t r0 = 0; r0 < A->rows; r0 += STEP_NARROW_ROWS) {
    const size_t r1 =
        A->rows - r0 < STEP_NARROW_ROWS ? A->rows : r0 + STEP_NARROW_ROWS;
    gsl_matrix_view g = gsl_matrix_view_array(buf, r1 - r0, n);
    gsl_matrix_view w = gsl_matrix_submatrix(W, r0, 0, r1 - r0, n);
    const nn_csr part = nn_csr_rows(A, r0, r1);
    int rc = nn_csr_matmul(&part, B, NULL, NN_ACT_NONE, &g.matrix);
    if (rc == NN_OK)
      rc = nn_sgd_update(&w.matrix, &g.matrix, NULL, lr, reg, 0.0);
    if (rc != NN_OK)
      return rc;
  }
  return NN_OK;
}

int nn_csr_matmul_sgd(const nn_csr *A, const gsl_matrix *B, gsl_matrix *W,
                      double lr, double reg) {
  if (!A || !B || !W || !A->start || A->cols != B->size1 ||
      W->size1 != A->rows || W->size2 != B->size2)
    return NN_EINVAL;
  const size_t n = B->size2;
  if (A->rows == 0 || n == 0)
    return NN_OK;
  if (n <= NN_NARROW)
    return step_narrow(A, B, W, lr, reg);
  switch (cpu_isa()) {
#ifdef NN_X86
    case ISA_AVX512:
      step_512(A, B->data, B->tda, n, W->data, W->tda, lr, reg);
      return NN_OK;
    case ISA_AVX2:
      step_256(A, B->data, B->tda, n, W->data, W->tda, lr, reg);
      return NN_OK;
#endif
    default:
      step_generic(A, B->data, B->tda, n, W->data, W->tda, lr, reg);
      return NN_OK;
  }
}
