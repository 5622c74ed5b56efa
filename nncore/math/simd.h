/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to libnn: what the numeric kernels share.  Row access for GSL
 * matrices (views included), the scalar sigmoid, the instruction-set
 * switch (NN_X86, NN_AVX2, NN_AVX512, picked per call from the CPU's
 * feature bits, no cached state) and the vector exp / sigmoid used by the
 * softmax, the fused bias + sigmoid and the sigmoid's backward pass.
 * Everything is static inline, so each file takes only what it uses. */
#ifndef NN_SIMD_H
#define NN_SIMD_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <nn/math.h>

/* Row i of m as a plain pointer: the loops below walk rows so that views
 * with tda != size2 work and the inner loops stay contiguous. */
static inline double *row_ptr(gsl_matrix *m, size_t i) {
  return m->data + i * m->tda;
}
static inline const double *row_cptr(const gsl_matrix *m, size_t i) {
  return m->data + i * m->tda;
}

static inline int same_shape(const gsl_matrix *a, const gsl_matrix *b) {
  return a && b && a->size1 == b->size1 && a->size2 == b->size2;
}


/* The two branches keep exp's argument <= 0, so neither overflows for
 * large |x| (exp(-x) with x = -1000 would be +inf). */
static inline double sigmoid1(double x) {
  if (x >= 0.0)
    return 1.0 / (1.0 + exp(-x));
  double e = exp(x);
  return e / (1.0 + e);
}


/* NN_NO_SIMD (e.g. CPPFLAGS=-DNN_NO_SIMD) builds the portable paths only:
 * for other compilers, and to test those paths on x86-64. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(NN_NO_SIMD)
#include <immintrin.h>
#define NN_X86 1
#define NN_AVX2 __attribute__((target("avx2,fma")))
#define NN_AVX512 __attribute__((target("avx512f")))
#endif

#define NN_NARROW NN_CSR_NARROW /* <nn/math.h>: outputs this narrow take the narrow path */
#define NN_KBLOCK 64  /* AVX2: rows of B per L1 block, 64 x 32 doubles = 16 KB */
#define NN_RGROUP 64  /* rows of A sharing one pass over the blocks of B */

enum { ISA_GENERIC, ISA_AVX2, ISA_AVX512 };

static inline int cpu_isa(void) {
#ifdef NN_X86
  __builtin_cpu_init(); /* idempotent; needed before main() in some loaders */
  if (__builtin_cpu_supports("avx512f"))
    return ISA_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return ISA_AVX2;
#endif
  return ISA_GENERIC;
}

/* ---------------------------------------------------------- portable path */

static inline double fma_or_not(double a, double b, double c) {
#ifdef FP_FAST_FMA
  return fma(a, b, c);
#else
  return a * b + c;
#endif
}

static inline double act1(double x, int act) {
  return act == NN_ACT_SIGMOID ? sigmoid1(x) : x;
}

/* The SGD rule's gradient with L2, as nn_sgd_update rounds it (the
 * multiply and the add apart): g + reg * w, and g itself when reg is 0
 * (a 0 * w term would turn an infinite w into NaN and a gradient of -0
 * into +0).  Shared by the update (kernels_update.c) and the fused step
 * (kernels_csr_step.c), whose bits must be the same. */
static inline double sgd_l2(double g, double w, double reg) {
  return reg != 0.0 ? g + reg * w : g;
}

#ifdef NN_X86
/* ------------------------------------------------------------ exp, sigmoid
 * exp(x) for x <= 0: x = n ln2 + r with |r| <= ln2 / 2, exp(r) from its
 * Taylor series to degree 13 (truncation below 1e-17 relative), times 2^n
 * built in the exponent bits.  2^n is applied as two halves so that results
 * down to the subnormal range (x > -745) come out right; below that the
 * input is clamped and the result is 0 (or the tiniest subnormal). Errors
 * stay within about 1 ulp of the correctly rounded value (glibc's exp,
 * used by the portable path, is within 0.5 ulp): differences no training
 * run can see. */
static const double exp_c[14] = {
    1.0, 1.0, 0.5, 0.16666666666666666, 0.041666666666666664,
    0.008333333333333333, 0.001388888888888889, 0.0001984126984126984,
    2.48015873015873e-05, 2.7557319223985893e-06, 2.755731922398589e-07,
    2.505210838544172e-08, 2.08767569878681e-09, 1.6059043836821613e-10};
#define EXP_LOG2E 1.4426950408889634
#define EXP_LN2_HI 6.93147180369123816490e-01 /* trailing zeros: n*hi exact */
#define EXP_LN2_LO 1.90821492927058770002e-10
#define EXP_MAGIC 6755399441055744.0 /* 1.5 * 2^52: rounds to an integer */
#define EXP_MIN (-746.0)

NN_AVX512 static inline __m512d pow2_512(__m512d n) {
  /* n + 1.5*2^52 holds n in its low mantissa bits; minus the magic's bits
   * gives n as a 64-bit integer; (n + 1023) << 52 is 2^n. */
  const __m512d magic = _mm512_set1_pd(EXP_MAGIC);
  __m512i bits = _mm512_castpd_si512(_mm512_add_pd(n, magic));
  bits = _mm512_sub_epi64(bits, _mm512_castpd_si512(magic));
  bits = _mm512_slli_epi64(_mm512_add_epi64(bits, _mm512_set1_epi64(1023)),
                           52);
  return _mm512_castsi512_pd(bits);
}

NN_AVX512 static inline __m512d exp_neg_512(__m512d x) {
  /* max(lo, x) keeps a NaN (max returns its second operand then). */
  x = _mm512_max_pd(_mm512_set1_pd(EXP_MIN), x);
  const __m512d n = _mm512_roundscale_pd(
      _mm512_mul_pd(x, _mm512_set1_pd(EXP_LOG2E)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512d r = _mm512_fnmadd_pd(n, _mm512_set1_pd(EXP_LN2_HI), x);
  r = _mm512_fnmadd_pd(n, _mm512_set1_pd(EXP_LN2_LO), r);
  __m512d p = _mm512_set1_pd(exp_c[13]);
  for (int k = 12; k >= 0; k--)
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(exp_c[k]));
  const __m512d n1 = _mm512_roundscale_pd(
      _mm512_mul_pd(n, _mm512_set1_pd(0.5)),
      _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m512d n2 = _mm512_sub_pd(n, n1);
  return _mm512_mul_pd(_mm512_mul_pd(p, pow2_512(n1)), pow2_512(n2));
}

/* sigmoid(z) = 1 / (1 + e) for z >= 0, e / (1 + e) otherwise, with
 * e = exp(-|z|) <= 1: never overflows, like sigmoid1. */
NN_AVX512 static inline __m512d sigmoid_512(__m512d z) {
  const __m512d e = exp_neg_512(_mm512_castsi512_pd(_mm512_or_si512(
      _mm512_castpd_si512(z), _mm512_set1_epi64((long long)0x8000000000000000ULL))));
  const __mmask8 pos = _mm512_cmp_pd_mask(z, _mm512_setzero_pd(), _CMP_GE_OQ);
  const __m512d num = _mm512_mask_blend_pd(pos, e, _mm512_set1_pd(1.0));
  return _mm512_div_pd(num, _mm512_add_pd(_mm512_set1_pd(1.0), e));
}

NN_AVX2 static inline __m256d pow2_256(__m256d n) {
  const __m256d magic = _mm256_set1_pd(EXP_MAGIC);
  __m256i bits = _mm256_castpd_si256(_mm256_add_pd(n, magic));
  bits = _mm256_sub_epi64(bits, _mm256_castpd_si256(magic));
  bits = _mm256_slli_epi64(_mm256_add_epi64(bits, _mm256_set1_epi64x(1023)),
                           52);
  return _mm256_castsi256_pd(bits);
}

NN_AVX2 static inline __m256d exp_neg_256(__m256d x) {
  x = _mm256_max_pd(_mm256_set1_pd(EXP_MIN), x);
  const __m256d n = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(EXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT |
                                        _MM_FROUND_NO_EXC);
  __m256d r = _mm256_fnmadd_pd(n, _mm256_set1_pd(EXP_LN2_HI), x);
  r = _mm256_fnmadd_pd(n, _mm256_set1_pd(EXP_LN2_LO), r);
  __m256d p = _mm256_set1_pd(exp_c[13]);
  for (int k = 12; k >= 0; k--)
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(exp_c[k]));
  const __m256d n1 = _mm256_round_pd(_mm256_mul_pd(n, _mm256_set1_pd(0.5)),
                                     _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m256d n2 = _mm256_sub_pd(n, n1);
  return _mm256_mul_pd(_mm256_mul_pd(p, pow2_256(n1)), pow2_256(n2));
}

NN_AVX2 static inline __m256d sigmoid_256(__m256d z) {
  const __m256d e = exp_neg_256(_mm256_or_pd(z, _mm256_set1_pd(-0.0)));
  const __m256d pos = _mm256_cmp_pd(z, _mm256_setzero_pd(), _CMP_GE_OQ);
  const __m256d num = _mm256_blendv_pd(e, _mm256_set1_pd(1.0), pos);
  return _mm256_div_pd(num, _mm256_add_pd(_mm256_set1_pd(1.0), e));
}

/* exp(s[j] - mx) for a row whose maximum is mx (every argument <= 0). */
NN_AVX512 static inline void exp_row_512(const double *s, double mx, double *out,
                                  size_t cols) {
  const __m512d vmx = _mm512_set1_pd(mx);
  for (size_t j = 0; j < cols; j += 8) {
    const __mmask8 m = (__mmask8)(cols - j >= 8 ? 0xFF : (1u << (cols - j)) - 1u);
    const __m512d x = _mm512_sub_pd(_mm512_maskz_loadu_pd(m, s + j), vmx);
    _mm512_mask_storeu_pd(out + j, m, exp_neg_512(x));
  }
}

NN_AVX2 static inline void exp_row_256(const double *s, double mx, double *out,
                                size_t cols) {
  const __m256d vmx = _mm256_set1_pd(mx);
  for (size_t j = 0; j < cols; j += 4) {
    const long long k = (long long)(cols - j);
    const __m256i m = _mm256_set_epi64x(k > 3 ? -1 : 0, k > 2 ? -1 : 0,
                                        k > 1 ? -1 : 0, -1);
    const __m256d x = _mm256_sub_pd(_mm256_maskload_pd(s + j, m), vmx);
    _mm256_maskstore_pd(out + j, m, exp_neg_256(x));
  }
}
#endif /* NN_X86 */

/* out[j] = exp(s[j] - mx) with the vector exp; 0 when there is none (the
 * caller then uses libm's). */
static inline int exp_row(const double *s, double mx, double *out, size_t cols,
                   int isa) {
  switch (isa) {
#ifdef NN_X86
    case ISA_AVX512:
      exp_row_512(s, mx, out, cols);
      return 1;
    case ISA_AVX2:
      exp_row_256(s, mx, out, cols);
      return 1;
#endif
    default:
      (void)s, (void)mx, (void)out, (void)cols;
      return 0;
  }
}

#ifdef NN_X86
/* Tiles and masks shared by the AVX-512 and AVX2 product kernels. */
#define V512_TILE 8 /* vectors per wide tile: 64 columns, 8 accumulators */

static inline __mmask8 mask8(size_t w) {
  return (__mmask8)(w >= 8 ? 0xFF : (1u << w) - 1u);
}

#define V256_TILE 8 /* vectors per wide tile: 32 columns, 8 accumulators */

NN_AVX2 static inline __m256i mask4(size_t w) {
  const long long k = (long long)(w >= 4 ? 4 : w);
  return _mm256_set_epi64x(k > 3 ? -1 : 0, k > 2 ? -1 : 0, k > 1 ? -1 : 0,
                           k > 0 ? -1 : 0);
}

/* sgd_l2 on vectors (l2: reg != 0, vreg: reg in every lane). */
NN_AVX512 static inline __m512d sgd_l2_512(__m512d g, __m512d w,
                                           __m512d vreg, int l2) {
  return l2 ? _mm512_add_pd(g, _mm512_mul_pd(vreg, w)) : g;
}
NN_AVX2 static inline __m256d sgd_l2_256(__m256d g, __m256d w, __m256d vreg,
                                         int l2) {
  return l2 ? _mm256_add_pd(g, _mm256_mul_pd(vreg, w)) : g;
}

/* Four doubles at p: a plain load, or under lane mask m when !full. */
NN_AVX2 static inline __attribute__((always_inline)) __m256d
ld_256(const double *p, __m256i m, int full) {
  return full ? _mm256_loadu_pd(p) : _mm256_maskload_pd(p, m);
}

/* The inner loop of the sparse products (kernels_csr.c, and the fused
 * step of kernels_csr_step.c): for the stored entries p = p0, p0 + 1, ...
 * of a row of A while p < e and index[p] < k1,
 *   acc[v] += value[p] * B[index[p]][8v .. 8v + 7]     (v < NV),
 * one fused multiply-add per vector, in entry order, so that every path
 * that runs it sums the same way.  j0 is the tile's first column of B
 * (kept apart from B: folded into it, GCC addressed the AVX2 tile's rows
 * through spilled offsets); the last vector is masked by ml unless FULL.  NV and FULL are constants
 * after inlining (the accumulators then live in registers), and so is
 * k1 = SIZE_MAX, for a whole row, whose test the compiler drops.  Returns
 * the first entry not taken. */
NN_AVX512 static inline __attribute__((always_inline)) size_t
csr_fma_512(__m512d *acc, const uint32_t *index, const double *value,
            size_t p0, size_t e, size_t k1, const double *B, size_t ldb,
            size_t j0, const int NV, const int FULL, __mmask8 ml) {
  size_t p = p0;
  for (; p < e && index[p] < k1; p++) {
    const __m512d x = _mm512_set1_pd(value[p]);
    const double *b = B + index[p] * ldb + j0;
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++)
      acc[v] = _mm512_fmadd_pd(
          x,
          FULL ? _mm512_loadu_pd(b + 8 * v)
               : _mm512_maskz_loadu_pd(v == NV - 1 ? ml : 0xFF, b + 8 * v),
          acc[v]);
  }
  return p;
}

/* The same with vectors of 4 (the last masked by ml unless FULL). */
NN_AVX2 static inline __attribute__((always_inline)) size_t
csr_fma_256(__m256d *acc, const uint32_t *index, const double *value,
            size_t p0, size_t e, size_t k1, const double *B, size_t ldb,
            size_t j0, const int NV, const int FULL, __m256i ml) {
  size_t p = p0;
  for (; p < e && index[p] < k1; p++) {
    const __m256d x = _mm256_set1_pd(value[p]);
    const double *b = B + index[p] * ldb + j0;
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++)
      acc[v] = _mm256_fmadd_pd(x, ld_256(b + 4 * v, ml, FULL || v < NV - 1),
                               acc[v]);
  }
  return p;
}
#endif /* NN_X86 */

#endif /* NN_SIMD_H */
