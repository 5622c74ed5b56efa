/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to libnn: the mean of two ranks' gradients in a data-parallel
 * step, and the plain SGD step taken with it (dist/step.c), vectorized.
 * Each element rounds as the scalar definition does, operation by
 * operation, so every instruction set gives the same bits:
 *   mean = ((0 + s0 * c0) + s1 * c1) / total
 * and the step is nn_sgd_update's with that mean as the gradient. */
#ifndef NN_MATH_KERNELS_MEAN_H
#define NN_MATH_KERNELS_MEAN_H

#include <stddef.h>

/* out[j] = mean of s0[j] and s1[j] (out may be s0 or s1). */
void nn__mean2_row(const double *s0, const double *s1, double c0, double c1,
                   double total, double *out, size_t n);

/* w[j] takes the SGD step (rate lr, L2 reg) with the mean as gradient;
 * the mean is never stored. */
void nn__mean2_sgd_row(double *w, const double *s0, const double *s1,
                       double c0, double c1, double total, size_t n,
                       double lr, double reg);

#endif
