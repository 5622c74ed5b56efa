/* SPDX-License-Identifier: GPL-3.0-or-later */
/* What the parts of nnbench share (see nnbench.c for the commands). */
#ifndef NNBENCH_H
#define NNBENCH_H

#include <stdio.h>

#include <nn/nn.h>
#include <nn/math.h>

/* Say what failed on stderr; returns nnbench's exit status for it. */
static inline int fail(const char *what, const nn_error *err) {
  fprintf(stderr, "nnbench: %s: %s\n", what, err ? err->msg : "failed");
  return 1;
}

/* The body of a spin-wait between two benchmark threads: tells the CPU
 * the loop is waiting (x86 pause), which frees the core's resources. */
static inline void nnbench_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

#define KB_BATCHES 8 /* distinct batches cycled through */
#define KB_BATCH 64
#define KB_CALLS 750 /* batches per timing: one epoch's */
#define KB_ROWS 32   /* rows of W1 per weight-gradient block, as twolayer */

/* Real batches and the first layer's matrices, for the timings of
 * kernels.c and split.c; every member owned (kb_free releases). */
typedef struct kb_work {
  nn_csr_buffer X[KB_BATCHES];  /* real batches as the trainer gathers them */
  nn_csr_buffer Xt[KB_BATCHES]; /* and their transposes */
  size_t nnz;                   /* stored pixels in all KB_BATCHES */
  gsl_matrix *W1, *b1, *H, *dZ; /* n_in x nh, 1 x nh, batch x nh (twice) */
  gsl_matrix *g;                /* one KB_ROWS x nh block of dW1 */
} kb_work;

/* The first KB_BATCHES batches of a seeded shuffle of train, and random
 * W1 and dZ1 for nh hidden units.  Nonzero when out of memory. */
int kb_make(kb_work *w, const nn_dataset *train, size_t nh);
void kb_free(kb_work *w); /* also after a failed kb_make */

/* nnbench kernels (kernels.c), split (split.c), pingpong (pingpong.c). */
int nnbench_kernels(const char *dir, long hidden);
int nnbench_split(const char *dir);
int nnbench_pingpong(void);

#endif /* NNBENCH_H */
