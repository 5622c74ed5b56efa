/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Learning-curve and comparison charts, written as PNG and/or SVG.
 *
 * Drawn with cairo when nnrun was built with it (nn_plot_available() says
 * so); otherwise every drawing function returns NN_ENOTFOUND.  Text uses
 * the system's "sans-serif" font through fontconfig; on a machine without
 * fonts the charts are still written, with cairo's built-in fallback font.
 *
 * Images have a fixed size (NN_PLOT_*_WIDTH x NN_PLOT_*_HEIGHT): pixels in
 * the PNG, "px" units in the SVG.  x is the epoch (counting from 0).
 * Non-finite values (a diverged run's NaN or inf loss) are left out of the
 * lines and the axis ranges; the other points are drawn as usual.
 *
 * Either output path may be NULL to skip that format, but not both.  Each
 * file is written atomically (temporary file next to it, then rename), so a
 * reader sees the old file or the whole new one.  PNG is written before
 * SVG; if the SVG fails, a finished PNG stays in place.
 */
#ifndef NN_PLOT_H
#define NN_PLOT_H

#include <stddef.h>

#include <nn/plugin.h>
#include <nn/train.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Size of nn_plot_curves images: two panels side by side (three, in the
 * wider image, with the learning rate). */
#define NN_PLOT_CURVES_WIDTH 1200
#define NN_PLOT_CURVES_LR_WIDTH 1700
#define NN_PLOT_CURVES_HEIGHT 500
/* Size of nn_plot_compare images: one panel, room for a legend. */
#define NN_PLOT_COMPARE_WIDTH 1000
#define NN_PLOT_COMPARE_HEIGHT 560

/* 1 when built with cairo, 0 otherwise. */
int nn_plot_available(void);

/* Learning curves of one run: a "Loss" panel (train and validation
 * cross-entropy loss) and an "Accuracy" panel (train and validation
 * accuracy, with the best epoch - the first with the highest validation
 * accuracy - ringed and labelled "best: epoch E, A"), x = m[i].epoch; when
 * the finite m[i].lr are not all equal (a schedule changed the rate), a
 * third panel, "Learning rate", and the image is NN_PLOT_CURVES_LR_WIDTH
 * wide.  `title` goes at the top (NULL: "learning
 * curves").  n == 0 or m == NULL gives NN_EINVAL. */
int nn_plot_curves(const char *png_path, const char *svg_path,
                   const char *title, const nn_epoch_metrics *m, size_t n,
                   nn_error *err);

/* One line of a comparison chart: y[i] is the value at epoch i.  The label
 * (e.g. "learning_rate=0.1") is shown in the legend; NULL shows
 * "series <k>", k counting from 1.  Strings and values are only read during the call. */
typedef struct nn_plot_series {
  const char *label;
  const double *y;
  size_t n;
} nn_plot_series;

/* Several runs in one panel, one line per series (10 colours, then the
 * colours repeat with dashes and other markers).  The legend sits in a
 * corner of the plot for up to 4 series when one is free of data, else in
 * a column on the right.  Labels that are all lists of the same keys
 * ("learning_rate=0.1, reg=0.001", "learning_rate=0.5, reg=0.01": a
 * sweep's) name the keys once, as the legend's heading ("learning_rate,
 * reg"), and list each series by its values ("0.1, 0.001").  `title` and `y_label` may be NULL.  NN_EINVAL when there is no series, a series has n > 0 but y ==
 * NULL, or every series is empty. */
int nn_plot_compare(const char *png_path, const char *svg_path,
                    const char *title, const char *y_label,
                    const nn_plot_series *series, size_t n_series,
                    nn_error *err);

#ifdef __cplusplus
}
#endif
#endif /* NN_PLOT_H */
