/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The two-rank mean and its SGD step (see kernels_mean.h).  The division
 * by the total is what the step's reduction defines (nn_dist_sum divides
 * the sums).  The pass touches every gradient value of every step: a
 * scalar loop of divisions would be bound by the divider, not by memory,
 * hence the vectors. */
#include <config.h>

#include "math/kernels_mean.h"
#include "math/simd.h"

/* The products are statements of their own: no compiler may fuse one
 * into the sum (the vector paths use no fused multiply-add either). */
static inline double mean2(double a, double b, double c0, double c1,
                           double total) {
  const double x0 = a * c0;
  const double x1 = b * c1;
  return ((0.0 + x0) + x1) / total;
}

static void mean2_generic(const double *s0, const double *s1, double c0,
                          double c1, double total, double *out, size_t n) {
  for (size_t j = 0; j < n; j++) out[j] = mean2(s0[j], s1[j], c0, c1, total);
}

static void mean2_sgd_generic(double *w, const double *s0, const double *s1,
                              double c0, double c1, double total, size_t n,
                              double lr, double reg) {
  for (size_t j = 0; j < n; j++) {
    const double g = sgd_l2(mean2(s0[j], s1[j], c0, c1, total), w[j], reg);
    w[j] -= lr * g;
  }
}

#ifdef NN_X86
NN_AVX512 static inline __m512d mean2_512(__m512d a, __m512d b, __m512d c0,
                                          __m512d c1, __m512d total) {
  const __m512d x0 = _mm512_mul_pd(a, c0), x1 = _mm512_mul_pd(b, c1);
  return _mm512_div_pd(
      _mm512_add_pd(_mm512_add_pd(_mm512_setzero_pd(), x0), x1), total);
}

NN_AVX512 static void mean2_512_rows(const double *s0, const double *s1,
                                     double c0, double c1, double total,
                                     double *out, double *w, size_t n,
                                     double lr, double reg) {
  const __m512d v0 = _mm512_set1_pd(c0), v1 = _mm512_set1_pd(c1),
                vt = _mm512_set1_pd(total), vlr = _mm512_set1_pd(lr),
                vreg = _mm512_set1_pd(reg);
  for (size_t j = 0; j < n; j += 8) {
    const __mmask8 m = mask8(n - j);
    const __m512d g = mean2_512(_mm512_maskz_loadu_pd(m, s0 + j),
                                _mm512_maskz_loadu_pd(m, s1 + j), v0, v1, vt);
    if (!w) {
      _mm512_mask_storeu_pd(out + j, m, g);
      continue;
    }
    const __m512d wj = _mm512_maskz_loadu_pd(m, w + j);
    const __m512d gj = sgd_l2_512(g, wj, vreg, reg != 0.0);
    _mm512_mask_storeu_pd(w + j, m, _mm512_sub_pd(wj, _mm512_mul_pd(vlr, gj)));
  }
}

NN_AVX2 static inline __m256d mean2_256(__m256d a, __m256d b, __m256d c0,
                                        __m256d c1, __m256d total) {
  const __m256d x0 = _mm256_mul_pd(a, c0), x1 = _mm256_mul_pd(b, c1);
  return _mm256_div_pd(
      _mm256_add_pd(_mm256_add_pd(_mm256_setzero_pd(), x0), x1), total);
}

NN_AVX2 static void mean2_256_rows(const double *s0, const double *s1,
                                   double c0, double c1, double total,
                                   double *out, double *w, size_t n,
                                   double lr, double reg) {
  const __m256d v0 = _mm256_set1_pd(c0), v1 = _mm256_set1_pd(c1),
                vt = _mm256_set1_pd(total), vlr = _mm256_set1_pd(lr),
                vreg = _mm256_set1_pd(reg);
  size_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m256d g = mean2_256(_mm256_loadu_pd(s0 + j),
                                _mm256_loadu_pd(s1 + j), v0, v1, vt);
    if (!w) {
      _mm256_storeu_pd(out + j, g);
      continue;
    }
    const __m256d wj = _mm256_loadu_pd(w + j);
    const __m256d gj = sgd_l2_256(g, wj, vreg, reg != 0.0);
    _mm256_storeu_pd(w + j, _mm256_sub_pd(wj, _mm256_mul_pd(vlr, gj)));
  }
  if (w)
    mean2_sgd_generic(w + j, s0 + j, s1 + j, c0, c1, total, n - j, lr, reg);
  else
    mean2_generic(s0 + j, s1 + j, c0, c1, total, out + j, n - j);
}
#endif

/* w == NULL: the mean into out; otherwise the step on w. */
static void mean2_dispatch(const double *s0, const double *s1, double c0,
                           double c1, double total, double *out, double *w,
                           size_t n, double lr, double reg) {
  switch (cpu_isa()) {
#ifdef NN_X86
    case ISA_AVX512:
      mean2_512_rows(s0, s1, c0, c1, total, out, w, n, lr, reg);
      return;
    case ISA_AVX2:
      mean2_256_rows(s0, s1, c0, c1, total, out, w, n, lr, reg);
      return;
#endif
    default:
      if (w)
        mean2_sgd_generic(w, s0, s1, c0, c1, total, n, lr, reg);
      else
        mean2_generic(s0, s1, c0, c1, total, out, n);
  }
}

void nn__mean2_row(const double *s0, const double *s1, double c0, double c1,
                   double total, double *out, size_t n) {
  mean2_dispatch(s0, s1, c0, c1, total, out, NULL, n, 0.0, 0.0);
}

void nn__mean2_sgd_row(double *w, const double *s0, const double *s1,
                       double c0, double c1, double total, size_t n,
                       double lr, double reg) {
  mean2_dispatch(s0, s1, c0, c1, total, NULL, w, n, lr, reg);
}
