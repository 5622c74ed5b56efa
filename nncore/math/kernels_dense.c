/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Small dense products (nn_dense_matmul): the output layer's 64x128 by
 * 128x10 and the like, where a dgemm call costs more to start than to
 * compute. */
#include <config.h>

#include "math/simd.h"

/* ------------------------------------------------- small dense products
 * out = op(A) B (+ bias) for the output layer's small matrices (64 x 128
 * times 128 x 10 and the like), where dgemm spent more time getting
 * started than computing (~9 us a call).  Every element is a chain of
 * fused multiply-adds over k in ascending order, then + bias: the same on
 * every path.  A(i, k) is read through strides, so op(A) = A^T costs
 * nothing.  Narrow outputs (n <= 16) run four rows at a time, which gives
 * eight independent accumulator chains; wide ones a tile of up to 64
 * columns per row. */

typedef struct dense_a {
  const double *p;
  size_t rs, cs; /* A(i, k) = p[i * rs + k * cs] */
} dense_a;

static void dmm_generic(dense_a a, size_t m, size_t k, const double *B,
                        size_t ldb, size_t n, const double *bias, double *C,
                        size_t ldc) {
  for (size_t i = 0; i < m; i++)
    for (size_t j = 0; j < n; j++) {
      double acc = 0.0;
      for (size_t q = 0; q < k; q++)
        acc = fma_or_not(a.p[i * a.rs + q * a.cs], B[q * ldb + j], acc);
      C[i * ldc + j] = bias ? acc + bias[j] : acc;
    }
}

#ifdef NN_X86
/* R rows (a constant after inlining) of a narrow product, two vectors. */
NN_AVX512 static inline __attribute__((always_inline)) void
dmm_narrow_rows_512(dense_a a, size_t i, size_t k, const double *B,
                    size_t ldb, __mmask8 m0, __mmask8 m1, const double *bias,
                    double *C, size_t ldc, const int R) {
  __m512d acc0[4], acc1[4];
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
    acc0[r] = acc1[r] = _mm512_setzero_pd();
  for (size_t q = 0; q < k; q++) {
    const __m512d b0 = _mm512_maskz_loadu_pd(m0, B + q * ldb);
    const __m512d b1 = _mm512_maskz_loadu_pd(m1, B + q * ldb + 8);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
      const __m512d x = _mm512_set1_pd(a.p[(i + (size_t)r) * a.rs + q * a.cs]);
      acc0[r] = _mm512_fmadd_pd(x, b0, acc0[r]);
      acc1[r] = _mm512_fmadd_pd(x, b1, acc1[r]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; r++) {
    double *c = C + (i + (size_t)r) * ldc;
    if (bias) {
      acc0[r] = _mm512_add_pd(acc0[r], _mm512_maskz_loadu_pd(m0, bias));
      acc1[r] = _mm512_add_pd(acc1[r], _mm512_maskz_loadu_pd(m1, bias + 8));
    }
    _mm512_mask_storeu_pd(c, m0, acc0[r]);
    _mm512_mask_storeu_pd(c + 8, m1, acc1[r]);
  }
}

NN_AVX512 static void dmm_512(dense_a a, size_t m, size_t k, const double *B,
                              size_t ldb, size_t n, const double *bias,
                              double *C, size_t ldc) {
  if (n <= NN_NARROW) {
    const __mmask8 m0 = mask8(n), m1 = n > 8 ? mask8(n - 8) : 0;
    size_t i = 0;
    for (; i + 4 <= m; i += 4)
      dmm_narrow_rows_512(a, i, k, B, ldb, m0, m1, bias, C, ldc, 4);
    for (; i < m; i++)
      dmm_narrow_rows_512(a, i, k, B, ldb, m0, m1, bias, C, ldc, 1);
    return;
  }
  for (size_t i = 0; i < m; i++)
    for (size_t j0 = 0; j0 < n; j0 += 8 * V512_TILE) {
      const size_t w = n - j0 < 8 * V512_TILE ? n - j0 : 8 * V512_TILE;
      if (w == 8 * V512_TILE) { /* whole tile: no masks */
        __m512d acc[V512_TILE];
#pragma GCC unroll 8
        for (int v = 0; v < V512_TILE; v++)
          acc[v] = _mm512_setzero_pd();
        for (size_t q = 0; q < k; q++) {
          const __m512d x = _mm512_set1_pd(a.p[i * a.rs + q * a.cs]);
          const double *b = B + q * ldb + j0;
#pragma GCC unroll 8
          for (int v = 0; v < V512_TILE; v++)
            acc[v] = _mm512_fmadd_pd(x, _mm512_loadu_pd(b + 8 * v), acc[v]);
        }
        double *c = C + i * ldc + j0;
#pragma GCC unroll 8
        for (int v = 0; v < V512_TILE; v++) {
          if (bias)
            acc[v] = _mm512_add_pd(acc[v], _mm512_loadu_pd(bias + j0 + 8 * v));
          _mm512_storeu_pd(c + 8 * v, acc[v]);
        }
        continue;
      }
      const int nv = (int)((w + 7) / 8);
      __m512d acc[V512_TILE];
#pragma GCC unroll 8
      for (int v = 0; v < V512_TILE; v++)
        acc[v] = _mm512_setzero_pd();
      for (size_t q = 0; q < k; q++) {
        const __m512d x = _mm512_set1_pd(a.p[i * a.rs + q * a.cs]);
        const double *b = B + q * ldb + j0;
#pragma GCC unroll 8
        for (int v = 0; v < V512_TILE; v++)
          if (v < nv)
            acc[v] = _mm512_fmadd_pd(
                x, _mm512_maskz_loadu_pd(mask8(w - 8 * (size_t)v), b + 8 * v),
                acc[v]);
      }
      double *c = C + i * ldc + j0;
#pragma GCC unroll 8
      for (int v = 0; v < V512_TILE; v++)
        if (v < nv) {
          const __mmask8 mv = mask8(w - 8 * (size_t)v);
          if (bias)
            acc[v] = _mm512_add_pd(acc[v],
                                   _mm512_maskz_loadu_pd(mv, bias + j0 + 8 * v));
          _mm512_mask_storeu_pd(c + 8 * v, mv, acc[v]);
        }
    }
}

NN_AVX2 static inline __attribute__((always_inline)) void
dmm_narrow_rows_256(dense_a a, size_t i, size_t k, const double *B,
                    size_t ldb, size_t n, const double *bias, double *C,
                    size_t ldc, const int R) {
  /* Up to 16 columns: four 4-wide vectors, the last ones masked. */
  const int nv = (int)((n + 3) / 4);
  __m256i mk[4];
  for (int v = 0; v < 4; v++)
    mk[v] = mask4(n > 4 * (size_t)v ? n - 4 * (size_t)v : 0);
  __m256d acc[4][4];
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++)
      acc[r][v] = _mm256_setzero_pd();
  for (size_t q = 0; q < k; q++) {
    __m256d b[4];
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++)
      b[v] = v < nv ? _mm256_maskload_pd(B + q * ldb + 4 * v, mk[v])
                    : _mm256_setzero_pd();
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) {
      const __m256d x = _mm256_set1_pd(a.p[(i + (size_t)r) * a.rs + q * a.cs]);
#pragma GCC unroll 4
      for (int v = 0; v < 4; v++)
        if (v < nv)
          acc[r][v] = _mm256_fmadd_pd(x, b[v], acc[r][v]);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int v = 0; v < 4; v++)
      if (v < nv) {
        __m256d o = acc[r][v];
        if (bias)
          o = _mm256_add_pd(o, _mm256_maskload_pd(bias + 4 * v, mk[v]));
        _mm256_maskstore_pd(C + (i + (size_t)r) * ldc + 4 * v, mk[v], o);
      }
}

NN_AVX2 static void dmm_256(dense_a a, size_t m, size_t k, const double *B,
                            size_t ldb, size_t n, const double *bias,
                            double *C, size_t ldc) {
  if (n <= NN_NARROW) {
    size_t i = 0;
    for (; i + 2 <= m; i += 2)
      dmm_narrow_rows_256(a, i, k, B, ldb, n, bias, C, ldc, 2);
    for (; i < m; i++)
      dmm_narrow_rows_256(a, i, k, B, ldb, n, bias, C, ldc, 1);
    return;
  }
  for (size_t i = 0; i < m; i++)
    for (size_t j0 = 0; j0 < n; j0 += 4 * V256_TILE) {
      const size_t w = n - j0 < 4 * V256_TILE ? n - j0 : 4 * V256_TILE;
      const int nv = (int)((w + 3) / 4);
      __m256d acc[V256_TILE];
#pragma GCC unroll 8
      for (int v = 0; v < V256_TILE; v++)
        acc[v] = _mm256_setzero_pd();
      for (size_t q = 0; q < k; q++) {
        const __m256d x = _mm256_set1_pd(a.p[i * a.rs + q * a.cs]);
        const double *b = B + q * ldb + j0;
#pragma GCC unroll 8
        for (int v = 0; v < V256_TILE; v++)
          if (v < nv)
            acc[v] = _mm256_fmadd_pd(
                x, _mm256_maskload_pd(b + 4 * v, mask4(w - 4 * (size_t)v)),
                acc[v]);
      }
      double *c = C + i * ldc + j0;
#pragma GCC unroll 8
      for (int v = 0; v < V256_TILE; v++)
        if (v < nv) {
          const __m256i mv = mask4(w - 4 * (size_t)v);
          if (bias)
            acc[v] = _mm256_add_pd(acc[v],
                                   _mm256_maskload_pd(bias + j0 + 4 * v, mv));
          _mm256_maskstore_pd(c + 4 * v, mv, acc[v]);
        }
    }
}
#endif

int nn_dense_matmul(const gsl_matrix *A, int trans_a, const gsl_matrix *B,
                    const gsl_matrix *bias, gsl_matrix *out) {
  if (!A || !B || !out)
    return NN_EINVAL;
  const size_t m = trans_a ? A->size2 : A->size1;
  const size_t k = trans_a ? A->size1 : A->size2;
  if (k != B->size1 || out->size1 != m || out->size2 != B->size2 ||
      (bias && (bias->size1 != 1 || bias->size2 != B->size2)))
    return NN_EINVAL;
  const size_t n = B->size2;
  if (m == 0 || n == 0)
    return NN_OK;
  const dense_a a = {A->data, trans_a ? 1 : A->tda, trans_a ? A->tda : 1};
  const double *bv = bias ? bias->data : NULL;
  switch (cpu_isa()) {
#ifdef NN_X86
    case ISA_AVX512:
      dmm_512(a, m, k, B->data, B->tda, n, bv, out->data, out->tda);
      return NN_OK;
    case ISA_AVX2:
      dmm_256(a, m, k, B->data, B->tda, n, bv, out->data, out->tda);
      return NN_OK;
#endif
    default:
      dmm_generic(a, m, k, B->data, B->tda, n, bv, out->data, out->tda);
      return NN_OK;
  }
}
