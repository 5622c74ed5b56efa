/* What the parts of nnbench share (see nnbench.c for the commands). */
#ifndef NNBENCH_H
#define NNBENCH_H

#include <stdio.h>

#include <nn/nn.h>

/* Say what failed on stderr; returns nnbench's exit status for it. */
static inline int fail(const char *what, const nn_error *err) {
  fprintf(stderr, "nnbench: %s: %s\n", what, err ? err->msg : "failed");
  return 1;
}

/* nnbench kernels (kernels.c). */
int nnbench_kernels(const char *dir, long hidden);

#endif /* NNBENCH_H */
