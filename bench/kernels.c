/* SPDX-License-Identifier: GPL-3.0-or-later */
/* nnbench kernels: how close the first layer's sparse products come to
 * one core's arithmetic peak.
 *
 * The two-layer model's time goes mostly into two products through the
 * sparse batch (nn_csr_matmul): the forward X W1 with bias and sigmoid, and
 * the weight gradient X^T dZ1, taken 32 rows of W1 at a time as twolayer
 * takes it.  This times both on real shuffled MNIST batches (the same eight
 * in turn, so that the batches stay in cache as the trainer's freshly
 * gathered ones do) and counts 2 flops per stored pixel and hidden unit.
 * Beside them it times a loop of independent fused multiply-adds on
 * operands in L1: the most this core can do per second, the floor the
 * products would reach if nothing but arithmetic limited them.
 *
 * Output: one line, `kernels hidden=H forward=G dw=G peak=G isa=NAME`,
 * speeds in GFLOP/s (peak=0 where no vector path is built). */
#include <config.h>

#include "nnbench.h"

#include <stdint.h>
#include <stdlib.h>

#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define KB_X86 1
#endif

#ifdef KB_X86
/* 16 independent accumulators (enough to cover the FMA latency), each fed
 * from a 32 KB buffer that stays in L1. */
__attribute__((target("avx512f"))) static double fma_loop_512(
    long n, const double *b) {
  __m512d a[16];
  for (int v = 0; v < 16; v++) a[v] = _mm512_set1_pd((double)v);
  const __m512d x = _mm512_set1_pd(1.0000001);
  for (long i = 0; i < n; i++) {
    const double *r = b + (i & 31) * 128;
#pragma GCC unroll 16
    for (int v = 0; v < 16; v++)
      a[v] = _mm512_fmadd_pd(x, _mm512_loadu_pd(r + 8 * v), a[v]);
  }
  __m512d s = a[0];
  for (int v = 1; v < 16; v++) s = _mm512_add_pd(s, a[v]);
  return _mm512_reduce_add_pd(s);
}

__attribute__((target("avx2,fma"))) static double fma_loop_256(
    long n, const double *b) {
  __m256d a[16];
  for (int v = 0; v < 16; v++) a[v] = _mm256_set1_pd((double)v);
  const __m256d x = _mm256_set1_pd(1.0000001);
  for (long i = 0; i < n; i++) {
    const double *r = b + (i & 63) * 64;
#pragma GCC unroll 16
    for (int v = 0; v < 16; v++)
      a[v] = _mm256_fmadd_pd(x, _mm256_loadu_pd(r + 4 * v), a[v]);
  }
  __m256d s = a[0];
  for (int v = 1; v < 16; v++) s = _mm256_add_pd(s, a[v]);
  double t[4];
  _mm256_storeu_pd(t, s);
  return t[0] + t[1] + t[2] + t[3];
}
#endif

/* Best GFLOP/s of the FMA loop over a few trials; its name in *isa. */
static double fma_peak(const char **isa) {
  *isa = "none";
#ifdef KB_X86
  /* 32 KB, in L1, aligned: loads that straddled two lines halved the
   * speed here.  Read through a volatile pointer: with buf's address
   * known, GCC kept one register per row offset, 15 % slower. */
  static _Alignas(64) double buf[32 * 128];
  double *volatile bp = buf;
  const int w512 = __builtin_cpu_supports("avx512f");
  const int w256 = __builtin_cpu_supports("avx2") &&
                   __builtin_cpu_supports("fma");
  if (!w512 && !w256) return 0;
  *isa = w512 ? "avx512" : "avx2";
  const double flop_per_iter = 16.0 * (w512 ? 8 : 4) * 2;
  const long n = 20000000;
  double best = 0, sink = 0;
  for (int trial = 0; trial < 5; trial++) {
    double t0 = nn_now_seconds();
    sink += w512 ? fma_loop_512(n, bp) : fma_loop_256(n, bp);
    double g = flop_per_iter * (double)n / (nn_now_seconds() - t0) * 1e-9;
    if (g > best) best = g;
  }
  if (sink == 12345.0) printf("#"); /* keeps the loops from being elided */
  return best;
#else
  return 0;
#endif
}

void kb_free(kb_work *w) {
  for (size_t b = 0; b < KB_BATCHES; b++) {
    nn_csr_buffer_free(&w->X[b]);
    nn_csr_buffer_free(&w->Xt[b]);
  }
  gsl_matrix_free(w->W1);
  gsl_matrix_free(w->b1);
  gsl_matrix_free(w->H);
  gsl_matrix_free(w->dZ);
  gsl_matrix_free(w->g);
}

int kb_make(kb_work *w, const nn_dataset *train, size_t nh) {
  *w = (kb_work){0};
  const size_t n_in = train->dim;
  size_t *order = malloc(train->n * sizeof *order);
  gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
  uint32_t labels[KB_BATCH];
  w->W1 = nn_matrix_calloc_aligned(n_in, nh);
  w->b1 = nn_matrix_calloc_aligned(1, nh);
  w->H = nn_matrix_calloc_aligned(KB_BATCH, nh);
  w->dZ = nn_matrix_calloc_aligned(KB_BATCH, nh);
  w->g = nn_matrix_calloc_aligned(KB_ROWS, nh);
  int rc = order && rng && w->W1 && w->b1 && w->H && w->dZ && w->g ? 0 : 1;
  if (!rc) {
    for (size_t i = 0; i < train->n; i++) order[i] = i;
    gsl_rng_set(rng, 1024);
    gsl_ran_shuffle(rng, order, train->n, sizeof *order);
    nn_fill_gaussian(w->W1, rng, 0.001);
    nn_fill_gaussian(w->dZ, rng, 0.001);
  }
  for (size_t b = 0; !rc && b < KB_BATCHES; b++) {
    rc = nn_csr_buffer_init(&w->X[b], KB_BATCH, KB_BATCH * n_in) ||
         nn_csr_buffer_init(&w->Xt[b], n_in, KB_BATCH * n_in) ||
         nn_dataset_gather_csr(train, order + b * KB_BATCH, KB_BATCH,
                               &w->X[b], labels) ||
         nn_csr_transpose(&w->Xt[b], &w->X[b].csr);
    if (!rc) w->nnz += w->X[b].csr.start[KB_BATCH];
  }
  gsl_rng_free(rng);
  free(order);
  return rc;
}

/* Best of 3 timings of KB_CALLS forward products / weight-gradient passes,
 * as GFLOP/s (2 flops per stored pixel and hidden unit). */
static void time_products(kb_work *w, double *fwd, double *dw) {
  const size_t nh = w->W1->size2;
  /* nnz counts KB_BATCHES batches; each timing makes KB_CALLS calls. */
  const double flop =
      2.0 * (double)w->nnz / KB_BATCHES * (double)nh * (double)KB_CALLS;
  *fwd = *dw = 0;
  for (int trial = 0; trial < 3; trial++) {
    double t0 = nn_now_seconds();
    for (size_t c = 0; c < KB_CALLS; c++)
      nn_csr_matmul(&w->X[c % KB_BATCHES].csr, w->W1, w->b1, NN_ACT_SIGMOID,
                    w->H);
    double t1 = nn_now_seconds();
    for (size_t c = 0; c < KB_CALLS; c++) {
      const nn_csr *xt = &w->Xt[c % KB_BATCHES].csr;
      for (size_t r0 = 0; r0 < xt->rows; r0 += KB_ROWS) {
        const size_t r1 = xt->rows - r0 < KB_ROWS ? xt->rows : r0 + KB_ROWS;
        const nn_csr part = nn_csr_rows(xt, r0, r1);
        gsl_matrix_view gv = gsl_matrix_submatrix(w->g, 0, 0, r1 - r0, nh);
        nn_csr_matmul(&part, w->dZ, NULL, NN_ACT_NONE, &gv.matrix);
      }
    }
    double t2 = nn_now_seconds();
    if (flop / (t1 - t0) * 1e-9 > *fwd) *fwd = flop / (t1 - t0) * 1e-9;
    if (flop / (t2 - t1) * 1e-9 > *dw) *dw = flop / (t2 - t1) * 1e-9;
  }
}

int nnbench_kernels(const char *dir, long hidden) {
  nn_error err = {0, ""};
  if (hidden < 1) {
    nn_error_set(&err, NN_EINVAL, "HIDDEN must be at least 1, not %ld", hidden);
    return fail("kernels", &err);
  }
  nn_dataset all, test, train, val;
  if (nn_mnist_load(dir, "idx", &all, &test, &err)) return fail("load", &err);
  nn_dataset_split(&all, 0.8, &train, &val);
  kb_work w;
  const int rc = kb_make(&w, &train, (size_t)hidden);
  if (!rc) {
    double fwd, dw;
    const char *isa;
    const double peak = fma_peak(&isa);
    time_products(&w, &fwd, &dw);
    printf("kernels hidden=%ld nnz_per_row=%.1f forward=%.2f dw=%.2f "
           "peak=%.2f isa=%s\n",
           hidden, (double)w.nnz / (KB_BATCHES * KB_BATCH), fwd, dw, peak,
           isa);
  }
  kb_free(&w);
  nn_dataset_free(&all);
  nn_dataset_free(&test);
  return rc ? fail("kernels: out of memory or bad batch", NULL) : 0;
}
