/* Shared numerics (see <nn/math.h>): activations, softmax, cross-entropy,
 * the fused softmax + cross-entropy used by the training loop, and the L2
 * rule.  Every function works on caller-owned matrices (views included,
 * so rows are addressed through tda), never allocates and never reports
 * errors through GSL's handler: shape problems come back as NN_EINVAL. */
#include <config.h>

#include <float.h>
#include <math.h>

#include <gsl/gsl_randist.h>

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

/* Defined with the vector kernels below. */
static int cpu_isa(void);
static int exp_row(const double *s, double mx, double *out, size_t cols,
                   int isa);

/* The two branches keep exp's argument <= 0, so neither overflows for
 * large |x| (exp(-x) with x = -1000 would be +inf). */
static inline double sigmoid1(double x) {
  if (x >= 0.0)
    return 1.0 / (1.0 + exp(-x));
  double e = exp(x);
  return e / (1.0 + e);
}

int nn_sigmoid(const gsl_matrix *x, gsl_matrix *out) {
  if (!same_shape(x, out))
    return NN_EINVAL;
  for (size_t i = 0; i < x->size1; i++) {
    const double *xr = row_cptr(x, i);
    double *o = row_ptr(out, i);
    for (size_t j = 0; j < x->size2; j++)
      o[j] = sigmoid1(xr[j]);
  }
  return NN_OK;
}

int nn_sigmoid_deriv(const gsl_matrix *x, gsl_matrix *out) {
  if (!same_shape(x, out))
    return NN_EINVAL;
  for (size_t i = 0; i < x->size1; i++) {
    const double *xr = row_cptr(x, i);
    double *o = row_ptr(out, i);
    for (size_t j = 0; j < x->size2; j++) {
      double s = sigmoid1(xr[j]);
      o[j] = s * (1.0 - s);
    }
  }
  return NN_OK;
}

int nn_relu(const gsl_matrix *x, gsl_matrix *out) {
  if (!same_shape(x, out))
    return NN_EINVAL;
  for (size_t i = 0; i < x->size1; i++) {
    const double *xr = row_cptr(x, i);
    double *o = row_ptr(out, i);
    /* Written as "x < 0 ? 0 : x" so a NaN passes through and the trainer's
     * finiteness check still sees it. */
    for (size_t j = 0; j < x->size2; j++)
      o[j] = xr[j] < 0.0 ? 0.0 : xr[j];
  }
  return NN_OK;
}

int nn_relu_deriv(const gsl_matrix *x, gsl_matrix *out) {
  if (!same_shape(x, out))
    return NN_EINVAL;
  for (size_t i = 0; i < x->size1; i++) {
    const double *xr = row_cptr(x, i);
    double *o = row_ptr(out, i);
    for (size_t j = 0; j < x->size2; j++)
      o[j] = xr[j] > 0.0 ? 1.0 : 0.0;
  }
  return NN_OK;
}

int nn_softmax_rows(const gsl_matrix *x, gsl_matrix *out) {
  if (!same_shape(x, out))
    return NN_EINVAL;
  const size_t cols = x->size2;
  if (cols == 0)
    return NN_OK; /* nothing to normalise (and no xr[0] to read) */
  for (size_t i = 0; i < x->size1; i++) {
    const double *xr = row_cptr(x, i);
    double *o = row_ptr(out, i);
    double mx = xr[0];
    for (size_t j = 1; j < cols; j++)
      if (xr[j] > mx)
        mx = xr[j];
    /* Shifting by the row maximum keeps every exponent <= 0, so exp never
     * overflows and at least one term of the sum is exactly 1. */
    double sum = 0.0;
    for (size_t j = 0; j < cols; j++) {
      o[j] = exp(xr[j] - mx);
      sum += o[j];
    }
    const double inv = 1.0 / sum;
    for (size_t j = 0; j < cols; j++)
      o[j] *= inv;
  }
  return NN_OK;
}

static int labels_ok(const uint32_t *labels, size_t rows, size_t cols) {
  if (rows > 0 && !labels)
    return 0;
  for (size_t i = 0; i < rows; i++)
    if (labels[i] >= cols)
      return 0;
  return 1;
}

int nn_cross_entropy(const gsl_matrix *probs, const uint32_t *labels,
                     double *loss) {
  if (!probs || !loss || !labels_ok(labels, probs->size1, probs->size2))
    return NN_EINVAL;
  if (probs->size1 == 0) {
    *loss = 0.0;
    return NN_OK;
  }
  /* A probability of exactly 0 (or a denormal) is clamped to DBL_MIN, the
   * smallest normal double, so the loss of that row is at most
   * -log(DBL_MIN) ~= 708.4: large and finite instead of +inf. */
  double sum = 0.0;
  for (size_t i = 0; i < probs->size1; i++) {
    double p = row_cptr(probs, i)[labels[i]];
    sum -= log(p > DBL_MIN ? p : DBL_MIN);
  }
  *loss = sum / (double)probs->size1;
  return NN_OK;
}

/* Index of the first maximum of a row (ties go to the lower index, like
 * numpy's argmax). */
static inline size_t row_argmax(const double *r, size_t cols) {
  size_t best = 0;
  for (size_t j = 1; j < cols; j++)
    if (r[j] > r[best])
      best = j;
  return best;
}

size_t nn_count_hits(const gsl_matrix *scores, const uint32_t *labels) {
  if (!scores || !labels)
    return 0;
  size_t hits = 0;
  for (size_t i = 0; i < scores->size1; i++)
    if (row_argmax(row_cptr(scores, i), scores->size2) == labels[i])
      hits++;
  return hits;
}

double nn_accuracy(const gsl_matrix *scores, const uint32_t *labels) {
  if (!scores || scores->size1 == 0)
    return 0.0;
  return (double)nn_count_hits(scores, labels) / (double)scores->size1;
}

int nn_softmax_xent(const gsl_matrix *scores, const uint32_t *labels,
                    gsl_matrix *dscores, double *loss, size_t *hits) {
  if (!scores || !loss || !hits)
    return NN_EINVAL;
  if (dscores && !same_shape(scores, dscores))
    return NN_EINVAL;
  const size_t rows = scores->size1, cols = scores->size2;
  /* Labels are checked up front: with dscores aliasing scores, failing
   * half-way would leave the caller's batch half overwritten. */
  if (!labels_ok(labels, rows, cols))
    return NN_EINVAL;
  if (rows == 0) {
    *loss = 0.0;
    *hits = 0;
    return NN_OK;
  }
  const double inv_b = 1.0 / (double)rows;
  double total = 0.0;
  size_t nhits = 0;
  const int isa = cpu_isa();
  double tmp[64]; /* exp(s - max) of a row when there is no dscores */
  for (size_t i = 0; i < rows; i++) {
    const double *s = row_cptr(scores, i);
    double *d = dscores ? row_ptr(dscores, i) : NULL;
    const size_t y = labels[i];
    const size_t am = row_argmax(s, cols);
    const double mx = s[am];
    /* Read the label's score before d (possibly == s) is written. */
    const double s_y = s[y];
    nhits += am == y;
    double sum = 0.0;
    /* exp(s - max) goes into d (or tmp) so the normalisation below needs
     * no second exp, with the vector exp when there is one (the scalar
     * calls were most of this function's time); each s[j] is read before
     * d[j] is written, so aliasing is fine. */
    double *e = d ? d : cols <= 64 ? tmp : NULL;
    if (e && exp_row(s, mx, e, cols, isa)) {
      for (size_t j = 0; j < cols; j++)
        sum += e[j];
    } else if (d) {
      for (size_t j = 0; j < cols; j++) {
        d[j] = exp(s[j] - mx);
        sum += d[j];
      }
    } else {
      for (size_t j = 0; j < cols; j++)
        sum += exp(s[j] - mx);
    }
    /* -log softmax(s)[y] = logsumexp(s) - s[y]: exact even when the
     * probability itself would underflow to 0, so no clamp is needed. */
    total += (mx + log(sum)) - s_y;
    if (d) {
      const double scale = inv_b / sum;
      for (size_t j = 0; j < cols; j++)
        d[j] *= scale;
      d[y] -= inv_b;
    }
  }
  *loss = total * inv_b;
  *hits = nhits;
  return NN_OK;
}

int nn_add_row_vector(gsl_matrix *m, const gsl_matrix *b) {
  if (!m || !b || b->size1 != 1 || b->size2 != m->size2)
    return NN_EINVAL;
  const double *bv = row_cptr(b, 0);
  for (size_t i = 0; i < m->size1; i++) {
    double *r = row_ptr(m, i);
    for (size_t j = 0; j < m->size2; j++)
      r[j] += bv[j];
  }
  return NN_OK;
}

int nn_column_sums(const gsl_matrix *m, gsl_matrix *out) {
  if (!m || !out || out->size1 != 1 || out->size2 != m->size2)
    return NN_EINVAL;
  double *o = row_ptr(out, 0);
  if (m->size1 == 0) {
    for (size_t j = 0; j < m->size2; j++)
      o[j] = 0.0;
    return NN_OK;
  }
  /* Start from row 0 instead of zeroing, so out may alias a 1-row m. */
  const double *r0 = row_cptr(m, 0);
  for (size_t j = 0; j < m->size2; j++)
    o[j] = r0[j];
  for (size_t i = 1; i < m->size1; i++) {
    const double *r = row_cptr(m, i);
    for (size_t j = 0; j < m->size2; j++)
      o[j] += r[j];
  }
  return NN_OK;
}

void nn_fill_gaussian(gsl_matrix *m, gsl_rng *rng, double scale) {
  if (!m || !rng)
    return;
  /* Row-major draw order is part of the reproducibility contract: the same
   * seed gives the same weights whatever the matrix's tda. */
  for (size_t i = 0; i < m->size1; i++) {
    double *r = row_ptr(m, i);
    for (size_t j = 0; j < m->size2; j++)
      r[j] = scale * gsl_ran_gaussian(rng, 1.0);
  }
}

int nn_apply_l2(nn_param *params, size_t n, double reg) {
  if (n > 0 && !params)
    return NN_EINVAL;
  /* Validate everything first so an error leaves every grad untouched. */
  for (size_t k = 0; k < n; k++)
    if ((params[k].flags & NN_PARAM_WEIGHT) &&
        !same_shape(params[k].value, params[k].grad))
      return NN_EINVAL;
  if (reg == 0.0)
    return NN_OK; /* saves a pass, and 0 * inf would turn a grad into NaN */
  for (size_t k = 0; k < n; k++) {
    if (!(params[k].flags & NN_PARAM_WEIGHT))
      continue;
    const gsl_matrix *w = params[k].value;
    gsl_matrix *g = params[k].grad;
    for (size_t i = 0; i < w->size1; i++) {
      const double *wr = row_cptr(w, i);
      double *gr = row_ptr(g, i);
      for (size_t j = 0; j < w->size2; j++)
        gr[j] += reg * wr[j];
    }
  }
  return NN_OK;
}

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

#include <stdlib.h>
#include <string.h>

/* NN_NO_SIMD (e.g. CPPFLAGS=-DNN_NO_SIMD) builds the portable paths only:
 * for other compilers, and to test those paths on x86-64. */
#if defined(__GNUC__) && defined(__x86_64__) && !defined(NN_NO_SIMD)
#include <immintrin.h>
#define NN_X86 1
#define NN_AVX2 __attribute__((target("avx2,fma")))
#define NN_AVX512 __attribute__((target("avx512f")))
#endif

#define NN_NARROW 16  /* outputs up to this many columns take the narrow path */
#define NN_KBLOCK 64  /* AVX2: rows of B per L1 block, 64 x 32 doubles = 16 KB */
#define NN_RGROUP 64  /* rows of A sharing one pass over the blocks of B */

enum { ISA_GENERIC, ISA_AVX2, ISA_AVX512 };

static int cpu_isa(void) {
#ifdef NN_X86
  __builtin_cpu_init(); /* idempotent; needed before main() in some loaders */
  if (__builtin_cpu_supports("avx512f"))
    return ISA_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return ISA_AVX2;
#endif
  return ISA_GENERIC;
}

void nn_csr_buffer_free(nn_csr_buffer *b) {
  if (!b)
    return;
  free(b->start);
  free(b->index);
  free(b->value);
  memset(b, 0, sizeof *b);
}

int nn_csr_buffer_init(nn_csr_buffer *b, size_t max_rows, size_t max_nnz) {
  if (!b)
    return NN_EINVAL;
  memset(b, 0, sizeof *b);
  if (max_rows >= SIZE_MAX / sizeof(size_t) ||
      max_nnz > SIZE_MAX / sizeof(double) || max_nnz > UINT32_MAX)
    return NN_EINVAL;
  b->start = malloc((max_rows + 1) * sizeof *b->start);
  /* At least one element, so that an empty buffer still has valid
   * pointers to hand out. */
  b->index = malloc((max_nnz ? max_nnz : 1) * sizeof *b->index);
  b->value = malloc((max_nnz ? max_nnz : 1) * sizeof *b->value);
  if (!b->start || !b->index || !b->value) {
    nn_csr_buffer_free(b);
    return NN_ENOMEM;
  }
  b->max_rows = max_rows;
  b->max_nnz = max_nnz;
  b->start[0] = 0;
  b->csr = (nn_csr){0, 0, b->start, b->index, b->value};
  return NN_OK;
}

int nn_csr_from_dense(nn_csr_buffer *b, const gsl_matrix *X) {
  if (!b || !X || X->size1 > b->max_rows || X->size2 > UINT32_MAX)
    return NN_EINVAL;
  size_t nnz = 0;
  for (size_t i = 0; i < X->size1; i++) {
    const double *r = row_cptr(X, i);
    for (size_t j = 0; j < X->size2; j++) {
      if (r[j] == 0.0)
        continue;
      if (nnz == b->max_nnz)
        return NN_EINVAL;
      b->index[nnz] = (uint32_t)j;
      b->value[nnz++] = r[j];
    }
    b->start[i + 1] = nnz;
  }
  b->csr = (nn_csr){X->size1, X->size2, b->start, b->index, b->value};
  return NN_OK;
}

int nn_csr_transpose(nn_csr_buffer *b, const nn_csr *A) {
  if (!b || !A || !A->start || A->cols > b->max_rows ||
      A->rows > UINT32_MAX || A->start[A->rows] > b->max_nnz)
    return NN_EINVAL;
  const size_t rows = A->rows, cols = A->cols;
  size_t *start = b->start;
  /* Counting sort by column: count, prefix-sum into start[c + 1], then
   * place.  Walking A's rows in order leaves every row of the transpose in
   * ascending order. */
  memset(start, 0, (cols + 1) * sizeof *start);
  const size_t nnz = A->start[rows];
  for (size_t p = 0; p < nnz; p++)
    start[A->index[p] + 1]++;
  for (size_t c = 0; c < cols; c++)
    start[c + 1] += start[c];
  /* start[c] is now the next free slot of column c; placing shifts it to
   * the column's end, which is start[c + 1] before placing: shift back. */
  for (size_t i = 0; i < rows; i++)
    for (size_t p = A->start[i]; p < A->start[i + 1]; p++) {
      const size_t q = start[A->index[p]]++;
      b->index[q] = (uint32_t)i;
      b->value[q] = A->value[p];
    }
  memmove(start + 1, start, cols * sizeof *start);
  start[0] = 0;
  b->csr = (nn_csr){cols, rows, b->start, b->index, b->value};
  return NN_OK;
}

int nn_csr_valid(const nn_csr *A) {
  if (!A || !A->start || (A->rows && (!A->index || !A->value)) ||
      A->start[0] != 0)
    return 0;
  for (size_t i = 0; i < A->rows; i++) {
    if (A->start[i + 1] < A->start[i])
      return 0;
    for (size_t p = A->start[i]; p < A->start[i + 1]; p++)
      if (A->index[p] >= A->cols ||
          (p > A->start[i] && A->index[p] <= A->index[p - 1]))
        return 0;
  }
  return 1;
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
NN_AVX512 static void exp_row_512(const double *s, double mx, double *out,
                                  size_t cols) {
  const __m512d vmx = _mm512_set1_pd(mx);
  for (size_t j = 0; j < cols; j += 8) {
    const __mmask8 m = (__mmask8)(cols - j >= 8 ? 0xFF : (1u << (cols - j)) - 1u);
    const __m512d x = _mm512_sub_pd(_mm512_maskz_loadu_pd(m, s + j), vmx);
    _mm512_mask_storeu_pd(out + j, m, exp_neg_512(x));
  }
}

NN_AVX2 static void exp_row_256(const double *s, double mx, double *out,
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
static int exp_row(const double *s, double mx, double *out, size_t cols,
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
/* --------------------------------------------------------- AVX-512 path
 * A tile is NV vectors of 8 columns; the last one is masked when the
 * tile's width is not a multiple of 8. */

#define V512_TILE 8 /* vectors per wide tile: 64 columns, 8 accumulators */

static inline __mmask8 mask8(size_t w) {
  return (__mmask8)(w >= 8 ? 0xFF : (1u << w) - 1u);
}

NN_AVX512 static inline void fin_512(double *c, const double *bias, int act,
                                     __m512d acc, __mmask8 m) {
  if (bias)
    acc = _mm512_add_pd(acc, _mm512_maskz_loadu_pd(m, bias));
  if (act == NN_ACT_SIGMOID)
    acc = sigmoid_512(acc);
  _mm512_mask_storeu_pd(c, m, acc);
}

/* One tile of a group of rows, NV vectors wide (NV a constant after
 * inlining, so the accumulators live in registers). */
/* The sparse product's AVX-512 tile: 128 columns in 16 accumulators (of
 * 32 registers), so the two-layer network's 128 hidden units take one pass
 * over the batch instead of two; B's blocks are then 32 rows x 1 KB =
 * 32 KB, which fit in L1 next to the rest.  In the kernel alone this was
 * 15-25 % faster than 64-column tiles with 64-row blocks. */
#define V512_STILE 16
#define NN_KBLOCK512 32
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

#define V256_TILE 8 /* vectors per wide tile: 32 columns, 8 accumulators */

NN_AVX2 static inline __m256i mask4(size_t w) {
  const long long k = (long long)(w >= 4 ? 4 : w);
  return _mm256_set_epi64x(k > 3 ? -1 : 0, k > 2 ? -1 : 0, k > 1 ? -1 : 0,
                           k > 0 ? -1 : 0);
}

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

NN_AVX2 static inline __attribute__((always_inline)) __m256d
ld_256(const double *p, __m256i m, int full) {
  return full ? _mm256_loadu_pd(p) : _mm256_maskload_pd(p, m);
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
      for (; p < e && index[p] < k1; p++) {
        const __m256d x = _mm256_set1_pd(value[p]);
        const double *b = B + index[p] * ldb + j0;
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++)
          acc[v] = _mm256_fmadd_pd(x, ld_256(b + 4 * v, ml, v < NV - 1 || fl),
                                   acc[v]);
      }
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
    const double gj = reg != 0.0 ? g[j] + reg * w[j] : g[j];
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
    __m512d gj = _mm512_maskz_loadu_pd(m, g + j);
    if (reg != 0.0)
      gj = _mm512_add_pd(gj, _mm512_mul_pd(vreg, wj));
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
    __m256d gj = _mm256_loadu_pd(g + j);
    if (reg != 0.0)
      gj = _mm256_add_pd(gj, _mm256_mul_pd(vreg, wj));
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
