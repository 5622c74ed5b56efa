/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The two data movements of a convolution computed as a matrix product
 * (conv2d.c): im2col lays out every window of one image as a column, so
 * that the convolution is W (out_channels x K) times the columns
 * (K x P), K = channels * kernel^2 values per window and P = positions;
 * col2im adds such columns back onto the image, the adjoint that the
 * input's gradient needs.  Row r = (c * k + kh) * k + kw of the columns
 * holds, for every output position (oh, ow), the input value at
 * (c, oh * s - p + kh, ow * s - p + kw), or 0 where that falls on the
 * padding; this row order is the order of a filter's weights in W. */
#ifndef NN_PLUGINS_IM2COL_H
#define NN_PLUGINS_IM2COL_H

#include <stddef.h>
#include <string.h>

#include "window.h"

/* The input columns [ow_lo, ow_hi) of kernel column kw lie inside the
 * image (the others fall on the padding). */
static inline void im2col_span(const window_geom *g, uint32_t kw,
                               size_t *ow_lo, size_t *ow_hi) {
  /* iw = ow * s - p + kw must be in [0, w) */
  size_t lo = 0;
  if (g->p > kw)
    lo = (g->p - kw + g->s - 1) / g->s;
  const long long last = (long long)g->w - 1 + g->p - kw; /* ow * s <= */
  size_t hi = last < 0 ? 0 : (size_t)(last / g->s) + 1;
  if (hi > g->ow)
    hi = g->ow;
  if (lo > hi)
    lo = hi;
  *ow_lo = lo;
  *ow_hi = hi;
}

/* The fast case: stride 1 and an output as wide as the input (padding
 * (kernel - 1) / 2, "same" convolution).  A row of the columns is then the
 * image itself shifted by a constant offset, off = (kh - p) w + (kw - p),
 * except where the window hangs over the padding: whole output rows above
 * or below the image, and the first or last few columns of every row
 * (which the shift fills with the neighbouring row's pixels).  So a row is
 * one long copy (or, in col2im, one long sum) and a few zeros, instead of
 * a short copy per output row.  The range [j_lo, j_hi) of output
 * positions the long copy covers: within the rows inside the image, and
 * reading only inside the image. */
static inline int im2col_same(const window_geom *g) {
  return g->s == 1 && g->ow == g->w && g->oh == g->h;
}

typedef struct im2col_shift {
  long long off;     /* input index = output position + off */
  size_t j_lo, j_hi; /* the long copy */
  size_t r_lo, r_hi; /* output rows inside the image: [r_lo, r_hi) */
  size_t c_lo, c_hi; /* output columns inside the image */
} im2col_shift;

static inline im2col_shift im2col_shift_of(const window_geom *g, uint32_t kh,
                                           uint32_t kw) {
  im2col_shift t;
  const long long W = g->w, HW = (long long)g->h * g->w;
  t.off = ((long long)kh - g->p) * W + ((long long)kw - g->p);
  t.r_lo = g->p > kh ? g->p - kh : 0;
  t.r_hi = (size_t)g->h + g->p - kh < g->oh ? (size_t)g->h + g->p - kh : g->oh;
  if (t.r_lo > t.r_hi)
    t.r_lo = t.r_hi;
  im2col_span(g, kw, &t.c_lo, &t.c_hi);
  long long lo = (long long)(t.r_lo * g->ow), hi = (long long)(t.r_hi * g->ow);
  if (lo < -t.off)
    lo = -t.off;
  if (hi > HW - t.off)
    hi = HW - t.off;
  if (hi < lo)
    hi = lo;
  t.j_lo = (size_t)lo;
  t.j_hi = (size_t)hi;
  return t;
}

/* Zero the columns of rows [r_lo, r_hi) of o outside [c_lo, c_hi). */
static inline void im2col_zero_edges(const window_geom *g,
                                     const im2col_shift *t, double *o) {
  if (t->c_lo == 0 && t->c_hi == g->ow)
    return;
  for (size_t r = t->r_lo; r < t->r_hi; r++) {
    double *q = o + r * g->ow;
    for (size_t c = 0; c < t->c_lo; c++)
      q[c] = 0.0;
    for (size_t c = t->c_hi; c < g->ow; c++)
      q[c] = 0.0;
  }
}

static inline void im2col_same_row(const window_geom *g, uint32_t kh,
                                   uint32_t kw, const double *xc, double *o) {
  const size_t P = (size_t)g->oh * g->ow;
  const im2col_shift t = im2col_shift_of(g, kh, kw);
  memset(o, 0, t.j_lo * sizeof *o);
  if (t.j_hi > t.j_lo)
    memcpy(o + t.j_lo, xc + ((long long)t.j_lo + t.off),
           (t.j_hi - t.j_lo) * sizeof *o);
  memset(o + t.j_hi, 0, (P - t.j_hi) * sizeof *o);
  im2col_zero_edges(g, &t, o);
}

/* cols (K x P, row-major, P = oh * ow) from one image x (c x h x w). */
static inline void im2col(const window_geom *g, uint32_t channels,
                          const double *x, double *cols) {
  const size_t P = (size_t)g->oh * g->ow;
  double *row = cols;
  if (im2col_same(g)) {
    for (uint32_t c = 0; c < channels; c++)
      for (uint32_t kh = 0; kh < g->k; kh++)
        for (uint32_t kw = 0; kw < g->k; kw++, row += P)
          im2col_same_row(g, kh, kw, x + (size_t)c * g->h * g->w, row);
    return;
  }
  for (uint32_t c = 0; c < channels; c++) {
    const double *xc = x + (size_t)c * g->h * g->w;
    for (uint32_t kh = 0; kh < g->k; kh++)
      for (uint32_t kw = 0; kw < g->k; kw++, row += P) {
        size_t lo, hi;
        im2col_span(g, kw, &lo, &hi);
        for (size_t oh = 0; oh < g->oh; oh++) {
          double *o = row + oh * g->ow;
          const long long ih = (long long)(oh * g->s) - g->p + kh;
          if (ih < 0 || ih >= g->h || lo == hi) {
            memset(o, 0, g->ow * sizeof *o);
            continue;
          }
          /* the first covered column, iw = lo * s + kw - p >= 0 */
          const double *xr =
              xc + (size_t)ih * g->w + (lo * g->s + kw - g->p);
          for (size_t ow = 0; ow < lo; ow++)
            o[ow] = 0.0;
          if (g->s == 1)
            memcpy(o + lo, xr, (hi - lo) * sizeof *o);
          else
            for (size_t ow = lo; ow < hi; ow++)
              o[ow] = xr[(ow - lo) * g->s];
          for (size_t ow = hi; ow < g->ow; ow++)
            o[ow] = 0.0;
        }
      }
  }
}

/* x (c x h x w) = the sum of cols (K x P) over the windows: x is
 * overwritten, so every element is written, those no window covers (a
 * stride larger than the kernel) with 0.  cols is scratch: the fast case
 * zeroes the values that fall on the padding, so that its long sums add
 * 0 where the shift meets a neighbouring row. */
static inline void col2im(const window_geom *g, uint32_t channels,
                          double *cols, double *x) {
  const size_t P = (size_t)g->oh * g->ow;
  memset(x, 0, (size_t)channels * g->h * g->w * sizeof *x);
  double *row = cols;
  if (im2col_same(g)) {
    for (uint32_t c = 0; c < channels; c++) {
      double *xc = x + (size_t)c * g->h * g->w;
      for (uint32_t kh = 0; kh < g->k; kh++)
        for (uint32_t kw = 0; kw < g->k; kw++, row += P) {
          const im2col_shift t = im2col_shift_of(g, kh, kw);
          im2col_zero_edges(g, &t, row);
          if (t.j_hi == t.j_lo)
            continue;
          double *xs = xc + ((long long)t.j_lo + t.off);
          const double *o = row + t.j_lo;
          for (size_t j = 0; j < t.j_hi - t.j_lo; j++)
            xs[j] += o[j];
        }
    }
    return;
  }
  for (uint32_t c = 0; c < channels; c++) {
    double *xc = x + (size_t)c * g->h * g->w;
    for (uint32_t kh = 0; kh < g->k; kh++)
      for (uint32_t kw = 0; kw < g->k; kw++, row += P) {
        size_t lo, hi;
        im2col_span(g, kw, &lo, &hi);
        for (size_t oh = 0; oh < g->oh; oh++) {
          const long long ih = (long long)(oh * g->s) - g->p + kh;
          if (ih < 0 || ih >= g->h || lo == hi)
            continue;
          const double *o = row + oh * g->ow;
          double *xr = xc + (size_t)ih * g->w + (lo * g->s + kw - g->p);
          for (size_t ow = lo; ow < hi; ow++)
            xr[(ow - lo) * g->s] += o[ow];
        }
      }
  }
}

#endif /* NN_PLUGINS_IM2COL_H */
