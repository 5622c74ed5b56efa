/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The elementwise backward and update kernels: the sigmoid's backward pass
 * (dZ = dH * H(1-H) with the bias gradient in the same pass) and the SGD
 * update with L2 and momentum, each with AVX-512, AVX2 and portable paths
 * that round the same way. */
#include <config.h>

#include "math/simd.h"

/* ------------------------------------------------- sigmoid, backwards
 * d = d * (h * (1 - h)) and colsum = column sums of the new d, in one pass
 * (the two-layer network's dZ1 and db1).  Separate multiplies, as in the
 * scalar expression, so every path gives the same bits. */

static void sigb_row_generic(double *d, const double *h, double *cs,
                             size_t n) {
  for (size_t j = 0; j < n; j++) {
    d[j] *= h[j] * (1.0 - h[j]);
    cs[j] += d[j];
  }
}

#ifdef NN_X86
NN_AVX512 static void sigb_row_512(double *d, const double *h, double *cs,
                                   size_t n) {
  const __m512d one = _mm512_set1_pd(1.0);
  for (size_t j = 0; j < n; j += 8) {
    const __mmask8 m = mask8(n - j);
    const __m512d hv = _mm512_maskz_loadu_pd(m, h + j);
    const __m512d dv = _mm512_mul_pd(
        _mm512_maskz_loadu_pd(m, d + j),
        _mm512_mul_pd(hv, _mm512_sub_pd(one, hv)));
    _mm512_mask_storeu_pd(d + j, m, dv);
    _mm512_mask_storeu_pd(cs + j, m,
                          _mm512_add_pd(_mm512_maskz_loadu_pd(m, cs + j), dv));
  }
}

NN_AVX2 static void sigb_row_256(double *d, const double *h, double *cs,
                                 size_t n) {
  const __m256d one = _mm256_set1_pd(1.0);
  size_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m256d hv = _mm256_loadu_pd(h + j);
    const __m256d dv = _mm256_mul_pd(
        _mm256_loadu_pd(d + j), _mm256_mul_pd(hv, _mm256_sub_pd(one, hv)));
    _mm256_storeu_pd(d + j, dv);
    _mm256_storeu_pd(cs + j, _mm256_add_pd(_mm256_loadu_pd(cs + j), dv));
  }
  sigb_row_generic(d + j, h + j, cs + j, n - j);
}
#endif

int nn_sigmoid_backward(gsl_matrix *d, const gsl_matrix *h,
                        gsl_matrix *colsum) {
  if (!same_shape(d, h) || !colsum || colsum->size1 != 1 ||
      colsum->size2 != d->size2)
    return NN_EINVAL;
  double *cs = row_ptr(colsum, 0);
  memset(cs, 0, d->size2 * sizeof *cs);
  const int isa = cpu_isa();
  for (size_t i = 0; i < d->size1; i++) {
    double *dr = row_ptr(d, i);
    const double *hr = row_cptr(h, i);
    switch (isa) {
#ifdef NN_X86
      case ISA_AVX512:
        sigb_row_512(dr, hr, cs, d->size2);
        break;
      case ISA_AVX2:
        sigb_row_256(dr, hr, cs, d->size2);
        break;
#endif
      default:
        sigb_row_generic(dr, hr, cs, d->size2);
    }
  }
  return NN_OK;
}

/* ---------------------------------------------------------- SGD update
 * The sgd plugin's rule on one row of a parameter.  Multiplications and
 * additions stay separate (no fused multiply-add), exactly as the scalar
 * loop rounds them, so every path gives the same bits; the vector paths
 * only do 8 or 4 elements at a time.  This pass streams W1 and its
 * gradient (1.6 MB for 784 x 128, more than a core's L2), so its speed is
 * memory speed; the scalar loop (GCC does not vectorize it at -O2) was
 * twice as slow as that. */

static void sgd_row_generic(double *w, const double *g, double *v, size_t n,
                            double lr, double reg, double mom) {
  for (size_t j = 0; j < n; j++) {
    const double gj = sgd_l2(g[j], w[j], reg);
    if (v) {
      v[j] = mom * v[j] + gj;
      w[j] -= lr * v[j];
    } else {
      w[j] -= lr * gj;
    }
  }
}

#ifdef NN_X86
NN_AVX512 static void sgd_row_512(double *w, const double *g, double *v,
                                  size_t n, double lr, double reg,
                                  double mom) {
  const __m512d vlr = _mm512_set1_pd(lr), vreg = _mm512_set1_pd(reg),
                vmom = _mm512_set1_pd(mom);
  for (size_t j = 0; j < n; j += 8) {
    const __mmask8 m = mask8(n - j);
    const __m512d wj = _mm512_maskz_loadu_pd(m, w + j);
    __m512d gj = sgd_l2_512(_mm512_maskz_loadu_pd(m, g + j), wj, vreg,
                            reg != 0.0);
    if (v) {
      gj = _mm512_add_pd(_mm512_mul_pd(vmom, _mm512_maskz_loadu_pd(m, v + j)),
                         gj);
      _mm512_mask_storeu_pd(v + j, m, gj);
    }
    _mm512_mask_storeu_pd(w + j, m, _mm512_sub_pd(wj, _mm512_mul_pd(vlr, gj)));
  }
}

NN_AVX2 static void sgd_row_256(double *w, const double *g, double *v,
                                size_t n, double lr, double reg, double mom) {
  const __m256d vlr = _mm256_set1_pd(lr), vreg = _mm256_set1_pd(reg),
                vmom = _mm256_set1_pd(mom);
  size_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m256d wj = _mm256_loadu_pd(w + j);
    __m256d gj = sgd_l2_256(_mm256_loadu_pd(g + j), wj, vreg, reg != 0.0);
    if (v) {
      gj = _mm256_add_pd(_mm256_mul_pd(vmom, _mm256_loadu_pd(v + j)), gj);
      _mm256_storeu_pd(v + j, gj);
    }
    _mm256_storeu_pd(w + j, _mm256_sub_pd(wj, _mm256_mul_pd(vlr, gj)));
  }
  sgd_row_generic(w + j, g + j, v ? v + j : NULL, n - j, lr, reg, mom);
}
#endif

int nn_sgd_update(gsl_matrix *w, const gsl_matrix *g, gsl_matrix *v,
                  double lr, double reg, double momentum) {
  if (!same_shape(w, g) || (v && !same_shape(w, v)))
    return NN_EINVAL;
  const int isa = cpu_isa();
  /* Contiguous matrices are one long row: per-row overhead dominated the
   * step of the softmax model's 784 x 10 W1. */
  size_t rows = w->size1, cols = w->size2;
  if (w->tda == cols && g->tda == cols && (!v || v->tda == cols)) {
    cols *= rows;
    rows = 1;
  }
  /* Last row first: a model's backward writes its gradients first row to
   * last (X^T dZ1 for W1), so the rows it wrote last are the ones still in
   * cache; and the next forward reads W1 from its first rows on, which are
   * then the ones this pass touched last.  Rows are independent, so the
   * order changes no result. */
  for (size_t i = rows; i-- > 0;) {
    double *wr = row_ptr(w, i), *vr = v ? row_ptr(v, i) : NULL;
    const double *gr = row_cptr(g, i);
    switch (isa) {
#ifdef NN_X86
      case ISA_AVX512:
        sgd_row_512(wr, gr, vr, cols, lr, reg, momentum);
        break;
      case ISA_AVX2:
        sgd_row_256(wr, gr, vr, cols, lr, reg, momentum);
        break;
#endif
      default:
        sgd_row_generic(wr, gr, vr, cols, lr, reg, momentum);
    }
  }
  return NN_OK;
}
