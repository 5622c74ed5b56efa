/* SPDX-License-Identifier: GPL-3.0-or-later */
/* ------------------------------------------------------------------------
 * Sparse batches and the products of the first layer.
 *
 * Why here and not in dgemm: MNIST batches are ~81 % zeros, so X W1 and
 * X^T dZ1 through a sparse X do a fifth of dgemm's arithmetic.  The kernels
 * below are written for that case:
 *
 *   - A (m x k) is compressed rows, B (k x n) dense row-major; out = A B.
 *     Every output element is a plain sum over A's stored entries in
 *     ascending column order, one fused multiply-add per entry, so the
 *     AVX-512 and AVX2 paths give bit-identical results (the vector width
 *     only changes how many output columns run side by side).  The portable
 *     path uses fma() where the compiler says it is fast (FP_FAST_FMA) and
 *     a * b + c otherwise: the same sums in the same order, but each product
 *     rounded before the add, so the last bits can differ.
 *   - Wide outputs (n > NN_NARROW) keep a tile of the output row in
 *     registers and walk B in blocks of rows (NN_KBLOCK512 / NN_KBLOCK) that
 *     every row of a group of NN_RGROUP rows reuses while the block is in
 *     L1: without that, each stored entry pulled a row of B (1 KB for 128
 *     hidden units) from L2, and the product took 2.3 times as long.
 *   - Narrow outputs (the 10 classes) have too few columns to keep the FMA
 *     units busy with one dependency chain, so entries alternate between two
 *     accumulators that are added at the end.  Which path runs depends on n
 *     only, never on the instruction set.
 *   - Bias and sigmoid are applied while the finished tile is in registers
 *     (one pass over the output instead of three).
 * The instruction set is picked per call from the CPU's feature bits (no
 * cached state), so one build runs everywhere: under valgrind, which hides
 * AVX-512, the AVX2 path runs and gives the same numbers.
 * ---------------------------------------------------------------------- */

#include <config.h>

#include "math/simd.h"

static void mm_generic(const nn_csr *A, const double *B, size_t ldb,
                       size_t n, const double *bias, int act, double *C,
                       size_t ldc) {
  double odd[NN_NARROW]; /* the narrow path's second accumulator */
  for (size_t i = 0; i < A->rows; i++) {
    double *c = C + i * ldc;
    const size_t p0 = A->start[i], p1 = A->start[i + 1];
    for (size_t j = 0; j < n; j++)
      c[j] = 0.0;
    if (n > NN_NARROW) {
      /* Entry by entry along contiguous rows of B. */
      for (size_t p = p0; p < p1; p++) {
        const double a = A->value[p], *b = B + A->index[p] * ldb;
        for (size_t j = 0; j < n; j++)
          c[j] = fma_or_not(a, b[j], c[j]);
      }
    } else {
      /* Even entries into c, odd ones into `odd`, then added. */
      for (size_t j = 0; j < n; j++)
        odd[j] = 0.0;
      for (size_t p = p0; p < p1; p++) {
        const double a = A->value[p], *b = B + A->index[p] * ldb;
        double *acc = (p - p0) % 2 ? odd : c;
        for (size_t j = 0; j < n; j++)
          acc[j] = fma_or_not(a, b[j], acc[j]);
      }
      for (size_t j = 0; j < n; j++)
        c[j] += odd[j];
    }
    for (size_t j = 0; j < n; j++)
      c[j] = act1(bias ? c[j] + bias[j] : c[j], act);
  }
}


#ifdef NN_X86
/* --------------------------------------------------------- AVX-512 path
 * A tile is NV vectors of 8 columns; the last one is masked when the
 * tile's width is not a multiple of 8. */

NN_AVX512 static inline void fin_512(double *c, const double *bias, int act,
                                     __m512d acc, __mmask8 m) {
  if (bias)
    acc = _mm512_add_pd(acc, _mm512_maskz_loadu_pd(m, bias));
  if (act == NN_ACT_SIGMOID)
    acc = sigmoid_512(acc);
  _mm512_mask_storeu_pd(c, m, acc);
}

/* One tile of a group of rows, NV vectors wide (NV a constant after
 * inlining, so the accumulators live in registers).
 * The sparse product's AVX-512 tile: 128 columns in 16 accumulators (of
 * 32 registers), so the two-layer network's 128 hidden units take one pass
 * over the batch instead of two.  In the kernel alone this was 15-25 %
 * faster than 64-column tiles with 64-row blocks.
 * B's blocks are 48 rows (48 KB at 128 columns, a whole 48 KB L1, which
 * the output rows' tiles then share): every row of the batch starts and
 * ends a pass over each block it has entries in, reloading and storing
 * its 16 accumulators, so fewer blocks save more than the misses cost.
 * On real batches the forward ran 5-7 % faster than with 32-row blocks
 * (16 rows: 30 % slower; 96: 10 % slower), and the trainer's two-thread
 * epoch 3-5 % faster in six alternating pairs. */
#define V512_STILE 16
#define NN_KBLOCK512 48
NN_AVX512 static inline __attribute__((always_inline)) void
wide_tile_512(const nn_csr *A, size_t i0, size_t i1, const double *B,
              size_t ldb, const double *bias, int act, double *C, size_t ldc,
              size_t j0, size_t w, const int NV, const int FULL) {
  /* Local copies: the compiler then knows no store below changes them
   * (it reloaded A->value on every entry otherwise). */
  const size_t *const start = A->start, kcols = A->cols;
  const uint32_t *const index = A->index;
  const double *const value = A->value;
  /* FULL (a constant after inlining): every vector is whole, so loads and
   * stores need no mask at all. */
  const __mmask8 ml = FULL ? 0xFF : mask8(w - 8 * (size_t)(NV - 1));
  size_t cur[NN_RGROUP];
  for (size_t i = i0; i < i1; i++)
    cur[i - i0] = start[i];
  for (size_t k0 = 0; k0 < kcols; k0 += NN_KBLOCK512) {
    const size_t k1 = k0 + NN_KBLOCK512;
    for (size_t i = i0; i < i1; i++) {
      size_t p = cur[i - i0];
      const size_t e = start[i + 1];
      if (p == e || index[p] >= k1)
        continue;
      double *c = C + i * ldc + j0;
      __m512d acc[V512_STILE];
      const int first = p == start[i];
#pragma GCC unroll 16
      for (int v = 0; v < NV; v++)
        acc[v] = first ? _mm512_setzero_pd()
                       : FULL ? _mm512_loadu_pd(c + 8 * v)
                              : _mm512_maskz_loadu_pd(v == NV - 1 ? ml : 0xFF,
                                                      c + 8 * v);
      p = csr_fma_512(acc, index, value, p, e, k1, B, ldb, j0, NV, FULL, ml);
#pragma GCC unroll 16
      for (int v = 0; v < NV; v++) {
        if (FULL)
          _mm512_storeu_pd(c + 8 * v, acc[v]);
        else
          _mm512_mask_storeu_pd(c + 8 * v, v == NV - 1 ? ml : 0xFF, acc[v]);
      }
      cur[i - i0] = p;
    }
  }
  /* Bias and activation on the finished tile (and zeros for empty rows). */
  for (size_t i = i0; i < i1; i++) {
    const int empty = start[i] == start[i + 1];
    if (!bias && act == NN_ACT_NONE && !empty)
      continue;
    double *c = C + i * ldc + j0;
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) {
      const __mmask8 m = v == NV - 1 ? ml : 0xFF;
      const __m512d a = empty ? _mm512_setzero_pd()
                              : _mm512_maskz_loadu_pd(m, c + 8 * v);
      fin_512(c + 8 * v, bias ? bias + j0 + 8 * v : NULL, act, a, m);
    }
  }
}

NN_AVX512 static void mm_wide_512(const nn_csr *A, const double *B,
                                  size_t ldb, size_t n, const double *bias,
                                  int act, double *C, size_t ldc) {
  for (size_t i0 = 0; i0 < A->rows; i0 += NN_RGROUP) {
    const size_t i1 = A->rows - i0 < NN_RGROUP ? A->rows : i0 + NN_RGROUP;
    for (size_t j0 = 0; j0 < n; j0 += 8 * V512_STILE) {
      const size_t w = n - j0 < 8 * V512_STILE ? n - j0 : 8 * V512_STILE;
      if (w == 8 * V512_STILE) {
        wide_tile_512(A, i0, i1, B, ldb, bias, act, C, ldc, j0, w, V512_STILE, 1);
        continue;
      }
      switch ((w + 7) / 8) {
#define NN_CASE(k) \
  case k: wide_tile_512(A, i0, i1, B, ldb, bias, act, C, ldc, j0, w, k, 0); break;
        NN_CASE(1) NN_CASE(2) NN_CASE(3) NN_CASE(4)
        NN_CASE(5) NN_CASE(6) NN_CASE(7) NN_CASE(8)
        NN_CASE(9) NN_CASE(10) NN_CASE(11) NN_CASE(12)
        NN_CASE(13) NN_CASE(14) NN_CASE(15) NN_CASE(16)
#undef NN_CASE
      }
    }
  }
}

NN_AVX512 static void mm_narrow_512(const nn_csr *A, const double *B,
                                    size_t ldb, size_t n, const double *bias,
                                    int act, double *C, size_t ldc) {
  const __mmask8 m0 = mask8(n), m1 = n > 8 ? mask8(n - 8) : 0;
  for (size_t i = 0; i < A->rows; i++) {
    __m512d a0 = _mm512_setzero_pd(), a1 = a0, b0 = a0, b1 = a0;
    size_t p = A->start[i];
    const size_t e = A->start[i + 1];
    for (; p + 1 < e; p += 2) {
      const double *r = B + A->index[p] * ldb, *s = B + A->index[p + 1] * ldb;
      const __m512d x = _mm512_set1_pd(A->value[p]);
      const __m512d y = _mm512_set1_pd(A->value[p + 1]);
      a0 = _mm512_fmadd_pd(x, _mm512_maskz_loadu_pd(m0, r), a0);
      b0 = _mm512_fmadd_pd(y, _mm512_maskz_loadu_pd(m0, s), b0);
      a1 = _mm512_fmadd_pd(x, _mm512_maskz_loadu_pd(m1, r + 8), a1);
      b1 = _mm512_fmadd_pd(y, _mm512_maskz_loadu_pd(m1, s + 8), b1);
    }
    if (p < e) {
      const double *r = B + A->index[p] * ldb;
      const __m512d x = _mm512_set1_pd(A->value[p]);
      a0 = _mm512_fmadd_pd(x, _mm512_maskz_loadu_pd(m0, r), a0);
      a1 = _mm512_fmadd_pd(x, _mm512_maskz_loadu_pd(m1, r + 8), a1);
    }
    double *c = C + i * ldc;
    fin_512(c, bias, act, _mm512_add_pd(a0, b0), m0);
    if (m1)
      fin_512(c + 8, bias ? bias + 8 : NULL, act, _mm512_add_pd(a1, b1), m1);
  }
}

/* ------------------------------------------------------------ AVX2 path
 * The same kernels with 4-column vectors; partial vectors use maskload /
 * maskstore with a lane mask. */


NN_AVX2 static inline void fin_256(double *c, const double *bias, int act,
                                   __m256d acc, __m256i m, int full) {
  if (bias)
    acc = _mm256_add_pd(acc, full ? _mm256_loadu_pd(bias)
                                  : _mm256_maskload_pd(bias, m));
  if (act == NN_ACT_SIGMOID)
    acc = sigmoid_256(acc);
  if (full)
    _mm256_storeu_pd(c, acc);
  else
    _mm256_maskstore_pd(c, m, acc);
}

NN_AVX2 static inline __attribute__((always_inline)) void
wide_tile_256(const nn_csr *A, size_t i0, size_t i1, const double *B,
              size_t ldb, const double *bias, int act, double *C, size_t ldc,
              size_t j0, size_t w, const int NV, const int FULL) {
  /* Local copies: the compiler then knows no store below changes them
   * (it reloaded A->value on every entry otherwise). */
  const size_t *const start = A->start, kcols = A->cols;
  const uint32_t *const index = A->index;
  const double *const value = A->value;
  const size_t wl = w - 4 * (size_t)(NV - 1);
  const __m256i ml = mask4(wl);
  const int fl = FULL; /* is the last vector full?  (a constant) */
  size_t cur[NN_RGROUP];
  for (size_t i = i0; i < i1; i++)
    cur[i - i0] = start[i];
  for (size_t k0 = 0; k0 < kcols; k0 += NN_KBLOCK) {
    const size_t k1 = k0 + NN_KBLOCK;
    for (size_t i = i0; i < i1; i++) {
      size_t p = cur[i - i0];
      const size_t e = start[i + 1];
      if (p == e || index[p] >= k1)
        continue;
      double *c = C + i * ldc + j0;
      __m256d acc[V256_TILE];
      const int first = p == start[i];
#pragma GCC unroll 8
      for (int v = 0; v < NV; v++)
        acc[v] = first ? _mm256_setzero_pd()
                       : ld_256(c + 4 * v, ml, v < NV - 1 || fl);
      p = csr_fma_256(acc, index, value, p, e, k1, B, ldb, j0, NV, fl, ml);
#pragma GCC unroll 8
      for (int v = 0; v < NV; v++) {
        if (v < NV - 1 || fl)
          _mm256_storeu_pd(c + 4 * v, acc[v]);
        else
          _mm256_maskstore_pd(c + 4 * v, ml, acc[v]);
      }
      cur[i - i0] = p;
    }
  }
  for (size_t i = i0; i < i1; i++) {
    const int empty = start[i] == start[i + 1];
    if (!bias && act == NN_ACT_NONE && !empty)
      continue;
    double *c = C + i * ldc + j0;
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) {
      const int full = v < NV - 1 || fl;
      const __m256d a = empty ? _mm256_setzero_pd() : ld_256(c + 4 * v, ml, full);
      fin_256(c + 4 * v, bias ? bias + j0 + 4 * v : NULL, act, a, ml, full);
    }
  }
}

NN_AVX2 static void mm_wide_256(const nn_csr *A, const double *B, size_t ldb,
                                size_t n, const double *bias, int act,
                                double *C, size_t ldc) {
  for (size_t i0 = 0; i0 < A->rows; i0 += NN_RGROUP) {
    const size_t i1 = A->rows - i0 < NN_RGROUP ? A->rows : i0 + NN_RGROUP;
    for (size_t j0 = 0; j0 < n; j0 += 4 * V256_TILE) {
      const size_t w = n - j0 < 4 * V256_TILE ? n - j0 : 4 * V256_TILE;
      if (w == 4 * V256_TILE) {
        wide_tile_256(A, i0, i1, B, ldb, bias, act, C, ldc, j0, w, V256_TILE, 1);
        continue;
      }
      /* Partial last vectors go through maskload/maskstore. */
      switch ((w + 3) / 4) {
#define NN_CASE(k) \
  case k: wide_tile_256(A, i0, i1, B, ldb, bias, act, C, ldc, j0, w, k, 0); break;
        NN_CASE(1) NN_CASE(2) NN_CASE(3) NN_CASE(4)
        NN_CASE(5) NN_CASE(6) NN_CASE(7) NN_CASE(8)
#undef NN_CASE
      }
    }
  }
}

/* Narrow outputs: up to 4 vectors (16 columns), two accumulator sets. */
NN_AVX2 static void mm_narrow_256(const nn_csr *A, const double *B,
                                  size_t ldb, size_t n, const double *bias,
                                  int act, double *C, size_t ldc) {
  const int nv = (int)((n + 3) / 4);
  const size_t wl = n - 4 * (size_t)(nv - 1);
  const __m256i ml = mask4(wl);
  const int fl = wl >= 4;
  for (size_t i = 0; i < A->rows; i++) {
    __m256d a[4], b[4];
    for (int v = 0; v < 4; v++)
      a[v] = b[v] = _mm256_setzero_pd();
    size_t p = A->start[i];
    const size_t e = A->start[i + 1];
    for (; p + 1 < e; p += 2) {
      const double *r = B + A->index[p] * ldb, *s = B + A->index[p + 1] * ldb;
      const __m256d x = _mm256_set1_pd(A->value[p]);
      const __m256d y = _mm256_set1_pd(A->value[p + 1]);
      for (int v = 0; v < nv; v++) {
        const int full = v < nv - 1 || fl;
        a[v] = _mm256_fmadd_pd(x, ld_256(r + 4 * v, ml, full), a[v]);
        b[v] = _mm256_fmadd_pd(y, ld_256(s + 4 * v, ml, full), b[v]);
      }
    }
    if (p < e) {
      const double *r = B + A->index[p] * ldb;
      const __m256d x = _mm256_set1_pd(A->value[p]);
      for (int v = 0; v < nv; v++)
        a[v] = _mm256_fmadd_pd(x, ld_256(r + 4 * v, ml, v < nv - 1 || fl),
                               a[v]);
    }
    double *c = C + i * ldc;
    for (int v = 0; v < nv; v++)
      fin_256(c + 4 * v, bias ? bias + 4 * v : NULL, act,
              _mm256_add_pd(a[v], b[v]), ml, v < nv - 1 || fl);
  }
}
#endif /* NN_X86 */

int nn_csr_matmul(const nn_csr *A, const gsl_matrix *B, const gsl_matrix *bias,
                  int act, gsl_matrix *out) {
  if (!A || !B || !out || !A->start || A->cols != B->size1 ||
      out->size1 != A->rows || out->size2 != B->size2 ||
      (bias && (bias->size1 != 1 || bias->size2 != B->size2)) ||
      (act != NN_ACT_NONE && act != NN_ACT_SIGMOID))
    return NN_EINVAL;
  const size_t n = B->size2;
  if (A->rows == 0 || n == 0)
    return NN_OK;
  const double *bv = bias ? bias->data : NULL;
  switch (cpu_isa()) {
#ifdef NN_X86
    case ISA_AVX512:
      (n > NN_NARROW ? mm_wide_512 : mm_narrow_512)(A, B->data, B->tda, n, bv,
                                                     act, out->data, out->tda);
      return NN_OK;
    case ISA_AVX2:
      (n > NN_NARROW ? mm_wide_256 : mm_narrow_256)(A, B->data, B->tda, n, bv,
                                                     act, out->data, out->tda);
      return NN_OK;
#endif
    default:
      mm_generic(A, B->data, B->tda, n, bv, act, out->data, out->tda);
      return NN_OK;
  }
}
