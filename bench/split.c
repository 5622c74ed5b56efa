/* SPDX-License-Identifier: GPL-3.0-or-later */
/* nnbench split: can the two-layer model's first layer run on two cores?
 *
 * Each half of the 128 hidden units gets the work twolayer does on W1 in a
 * batch: the forward X W1 with bias and sigmoid, then dW1 = X^T dZ1 in
 * blocks of 32 rows, each block stepped by nn_sgd_update at once.  Three
 * timings on the same real batches (kernels.c's), in microseconds per
 * batch, best of three:
 *
 *   one     one thread, both halves in turn;
 *   apart   two threads, one half each, every half in allocations of its
 *           own (W1, b1, H, dZ1, the gradient block);
 *   views   two threads, one half each, the halves being column views of
 *           one 784 x 128 W1 and one 64 x 128 H and dZ1, as the model's
 *           parameters are laid out today.
 *
 * The threads meet after every batch, as a trainer's would.  Earlier
 * column splits kept one W1 and ran slower on two cores than on one; this
 * shows whether sharing the cache lines' neighbourhood, rather than the
 * machine, is to blame.  Output: one line,
 * `split hidden=128 one=US apart=US views=US`. */
#include <config.h>

#include "nnbench.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>

#define SP_HIDDEN 128
#define SP_HALF (SP_HIDDEN / 2)

/* One half's matrices.  In the views layout they point into the shared
 * matrices (the struct's *_view members); otherwise they are owned. */
typedef struct sp_half {
  gsl_matrix *W, *b, *H, *dZ, *g;
  gsl_matrix_view Wv, bv, Hv, dZv;
} sp_half;

typedef struct sp_run {
  const kb_work *kb;
  sp_half *half[2];
  atomic_size_t done[2]; /* batches each thread has finished */
} sp_run;

/* Half h's work on batch c: forward, then the blocks of dW1 and their
 * steps (the learning rate is tiny so that the weights stay put). */
static void sp_batch(const kb_work *kb, sp_half *h, size_t c) {
  const nn_csr *x = &kb->X[c % KB_BATCHES].csr;
  const nn_csr *xt = &kb->Xt[c % KB_BATCHES].csr;
  nn_csr_matmul(x, h->W, h->b, NN_ACT_SIGMOID, h->H);
  for (size_t r0 = 0; r0 < xt->rows; r0 += KB_ROWS) {
    const size_t r1 = xt->rows - r0 < KB_ROWS ? xt->rows : r0 + KB_ROWS;
    const nn_csr part = nn_csr_rows(xt, r0, r1);
    gsl_matrix_view g = gsl_matrix_submatrix(h->g, 0, 0, r1 - r0, SP_HALF);
    gsl_matrix_view w = gsl_matrix_submatrix(h->W, r0, 0, r1 - r0, SP_HALF);
    nn_csr_matmul(&part, h->dZ, NULL, NN_ACT_NONE, &g.matrix);
    nn_sgd_update(&w.matrix, &g.matrix, NULL, 1e-12, 1e-3, 0.0);
  }
}

/* Thread `me` of a two-thread run: its half, then a wait for the other
 * thread's half of the same batch. */
static void sp_thread_body(sp_run *r, int me) {
  for (size_t c = 0; c < KB_CALLS; c++) {
    sp_batch(r->kb, r->half[me], c);
    atomic_store(&r->done[me], c + 1);
    while (atomic_load(&r->done[1 - me]) < c + 1)
      nnbench_relax();
  }
}

static void *sp_thread(void *arg) {
  sp_thread_body(arg, 1);
  return NULL;
}

/* Microseconds per batch: best of three, one thread or two. */
static double sp_time(const kb_work *kb, sp_half *a, sp_half *b,
                      int threads) {
  double best = 0;
  for (int trial = 0; trial < 3; trial++) {
    sp_run r = {kb, {a, b}, {0, 0}};
    const double t0 = nn_now_seconds();
    if (threads == 1) {
      for (size_t c = 0; c < KB_CALLS; c++) {
        sp_batch(kb, a, c);
        sp_batch(kb, b, c);
      }
    } else {
      pthread_t t;
      if (pthread_create(&t, NULL, sp_thread, &r) != 0)
        return 0;
      sp_thread_body(&r, 0);
      pthread_join(t, NULL);
    }
    const double us = (nn_now_seconds() - t0) / KB_CALLS * 1e6;
    if (best == 0 || us < best)
      best = us;
  }
  return best;
}

/* The apart layout: every matrix its own, cache-line aligned. */
static int sp_apart(sp_half *h, gsl_rng *rng, size_t n_in) {
  h->W = nn_matrix_calloc_aligned(n_in, SP_HALF);
  h->b = nn_matrix_calloc_aligned(1, SP_HALF);
  h->H = nn_matrix_calloc_aligned(KB_BATCH, SP_HALF);
  h->dZ = nn_matrix_calloc_aligned(KB_BATCH, SP_HALF);
  h->g = nn_matrix_calloc_aligned(KB_ROWS, SP_HALF);
  if (!h->W || !h->b || !h->H || !h->dZ || !h->g)
    return 1;
  nn_fill_gaussian(h->W, rng, 0.001);
  nn_fill_gaussian(h->dZ, rng, 0.001);
  return 0;
}

/* The views layout: columns [c0, c0 + SP_HALF) of kb's shared matrices,
 * and a gradient block of its own. */
static int sp_views(sp_half *h, kb_work *kb, size_t c0) {
  h->Wv = gsl_matrix_submatrix(kb->W1, 0, c0, kb->W1->size1, SP_HALF);
  h->bv = gsl_matrix_submatrix(kb->b1, 0, c0, 1, SP_HALF);
  h->Hv = gsl_matrix_submatrix(kb->H, 0, c0, KB_BATCH, SP_HALF);
  h->dZv = gsl_matrix_submatrix(kb->dZ, 0, c0, KB_BATCH, SP_HALF);
  h->W = &h->Wv.matrix;
  h->b = &h->bv.matrix;
  h->H = &h->Hv.matrix;
  h->dZ = &h->dZv.matrix;
  h->g = nn_matrix_calloc_aligned(KB_ROWS, SP_HALF);
  return h->g ? 0 : 1;
}

static void sp_free(sp_half *h, int views) {
  if (!views) {
    gsl_matrix_free(h->W);
    gsl_matrix_free(h->b);
    gsl_matrix_free(h->H);
    gsl_matrix_free(h->dZ);
  }
  gsl_matrix_free(h->g);
}

int nnbench_split(const char *dir) {
  nn_error err = {0, ""};
  nn_dataset all, test, train, val;
  if (nn_mnist_load(dir, "idx", &all, &test, &err))
    return fail("load", &err);
  nn_dataset_split(&all, 0.8, &train, &val);
  kb_work kb = {0};
  sp_half apart[2] = {{0}}, views[2] = {{0}};
  gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
  int rc = !rng || kb_make(&kb, &train, SP_HIDDEN);
  for (int h = 0; h < 2 && !rc; h++)
    rc = sp_apart(&apart[h], rng, train.dim) ||
         sp_views(&views[h], &kb, (size_t)h * SP_HALF);
  if (!rc) {
    const double one = sp_time(&kb, &apart[0], &apart[1], 1);
    const double two_apart = sp_time(&kb, &apart[0], &apart[1], 2);
    const double two_views = sp_time(&kb, &views[0], &views[1], 2);
    rc = one == 0 || two_apart == 0 || two_views == 0;
    if (!rc)
      printf("split hidden=%d one=%.1f apart=%.1f views=%.1f\n", SP_HIDDEN,
             one, two_apart, two_views);
  }
  for (int h = 0; h < 2; h++) {
    sp_free(&apart[h], 0);
    sp_free(&views[h], 1);
  }
  kb_free(&kb);
  gsl_rng_free(rng);
  nn_dataset_free(&all);
  nn_dataset_free(&test);
  return rc ? fail("split: out of memory or no second thread", NULL) : 0;
}
