/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private: the chart description shared by plot.c (public API, files) and
 * plot_render.c (layout and drawing).  A figure is a title over panels laid
 * out side by side; a panel is axes with lines and a legend.  Everything is
 * borrowed from the caller for the duration of one draw. */
#ifndef NN_PLOT_INTERNAL_H
#define NN_PLOT_INTERNAL_H

#include <stddef.h>

#include <nn/plot.h>

#include "plot/plot_axes.h"

#ifdef HAVE_CAIRO
#include <cairo.h>

enum nn__plot_marker {
  NN__MARK_CIRCLE,
  NN__MARK_SQUARE,
  NN__MARK_TRIANGLE,
  NN__MARK_DIAMOND
};

/* One polyline.  Values are read through byte strides so that a line can
 * walk a field of an array of structs (nn_epoch_metrics) without copying. */
typedef struct nn__plot_line {
  const char *label;       /* legend text; NULL: "series <index + 1>" */
  const void *y;           /* first double */
  size_t y_stride;         /* bytes between consecutive y values */
  const void *x;           /* first size_t x value; NULL: x = index */
  size_t x_stride;         /* bytes between consecutive x values */
  size_t n;
  double rgb[3];
  int dash;                /* 0 solid, 1 dashed, 2 dotted, 3 dash-dot */
  int marker;              /* enum nn__plot_marker */
} nn__plot_line;

enum nn__plot_legend {
  NN__LEGEND_INSIDE,  /* in the corner covering the least data */
  NN__LEGEND_OUTSIDE, /* in a column right of the axes */
  NN__LEGEND_AUTO     /* inside if a corner is free of data, else outside */
};

typedef struct nn__plot_panel {
  const char *title;   /* above the axes; NULL: none */
  const char *x_label; /* NULL: none */
  const char *y_label; /* NULL: none */
  const nn__plot_line *lines;
  size_t n_lines;
  int legend;         /* enum nn__plot_legend */
  /* A point to point out (the best epoch): a ring at (mark_x, mark_y) in
   * data units and mark_text next to it.  NULL mark_text: none. */
  const char *mark_text;
  double mark_x, mark_y;
} nn__plot_panel;

typedef struct nn__plot_figure {
  int width, height; /* device units: pixels (PNG), px (SVG) */
  const char *title; /* NULL: none */
  const nn__plot_panel *panels;
  size_t n_panels;
} nn__plot_figure;

/* Draw `fig` on cr (which covers fig->width x fig->height).  Failures
 * show up as cairo_status(cr); nothing else is reported. */
void nn__plot_draw(cairo_t *cr, const nn__plot_figure *fig);
#endif /* HAVE_CAIRO */

/* (plot.c) 1 when the finite learning rates of m[0..n) are not all the
 * same: a schedule changed them (curves then get a third panel). */
int nn__plot_lr_varies(const nn_epoch_metrics *m, size_t n);

#endif
