/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Axis arithmetic for the charts: nice tick values and their labels.  Pure
 * math with no cairo, so it builds (and is testable) either way. */
#include <config.h>

#include <float.h>
#include <math.h>
#include <stdio.h>

#include "plot/plot_axes.h"

size_t nn__plot_ticks(double lo, double hi, size_t target, int integer,
                      double *ticks, size_t cap, double *step) {
  *step = 1;
  if (!(lo < hi) || !isfinite(lo) || !isfinite(hi) || cap == 0) return 0;
  if (target < 2) target = 2;
  double span = hi - lo;
  if (!isfinite(span)) span = DBL_MAX;
  /* Round the raw spacing to 1, 2 or 5 times a power of ten (rounding
   * rather than ceiling keeps the count near the target). */
  double raw = span / (double)target;
  double mag = pow(10, floor(log10(raw)));
  double norm = raw / mag;
  double s = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  if (integer && s < 1) s = 1;
  *step = s;
  /* Ticks are k * s rather than a running sum so that errors do not pile
   * up; the guards stop at `cap` and skip repeats, which happen when lo/s
   * is beyond double precision. */
  size_t n = 0;
  double k = ceil(lo / s - 1e-9);
  for (size_t guard = 0; n < cap && guard < 4 * cap; guard++, k += 1) {
    double v = k * s;
    if (v > hi + s * 1e-9) break;
    if (fabs(v) < s * 1e-9) v = 0; /* no "-0" or "1e-17" at zero */
    if (n > 0 && v <= ticks[n - 1]) continue;
    ticks[n++] = v;
  }
  return n;
}

void nn__plot_format_tick(char *buf, size_t cap, double v, double step,
                          double max_abs) {
  if (fabs(v) < step * 1e-9) v = 0;
  if (!(max_abs > 0)) max_abs = fabs(v) > 0 ? fabs(v) : 1;
  if (max_abs < 1e6 && step >= 1e-4) {
    /* Steps are 1, 2 or 5 x 10^k, so -k decimals show every tick exactly. */
    int dec = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    snprintf(buf, cap, "%.*f", dec, v);
  } else {
    /* Significant digits from the largest value down to the step. */
    int p = (int)floor(log10(max_abs)) - (int)floor(log10(step)) + 1;
    if (p < 1) p = 1;
    if (p > 15) p = 15;
    snprintf(buf, cap, "%.*g", p, v);
  }
}
