/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private: axis arithmetic of the charts (plot_axes.c), apart from the
 * cairo-dependent parts so that tests can use it without cairo's headers. */
#ifndef NN_PLOT_AXES_H
#define NN_PLOT_AXES_H

#include <stddef.h>

/* Nice tick values ("1-2-5" steps) covering [lo, hi]: writes up to `cap`
 * ticks lying in [lo, hi] into `ticks`, aiming for about `target` of them,
 * and returns how many; *step gets the spacing.  With `integer` set the
 * step is at least 1 (epoch axes).  Needs lo < hi, both finite. */
size_t nn__plot_ticks(double lo, double hi, size_t target, int integer,
                      double *ticks, size_t cap, double *step);
/* Tick label for v on an axis with tick spacing `step` whose values reach
 * `max_abs` in magnitude: just enough decimals to tell ticks apart ("0.05"
 * style), or %g style for very large or very small values. */
void nn__plot_format_tick(char *buf, size_t cap, double v, double step,
                          double max_abs);

#endif
