/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Learning-curve and comparison charts: the public API (nn/plot.h).  This
 * file checks the arguments, describes the figure and writes the files;
 * plot_render.c lays it out and draws it. */
#include <config.h>

#include <nn/plot.h>

#include "plot/plot_internal.h"

#ifdef HAVE_CAIRO
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cairo-svg.h>
#include <cairo.h>

#include "files/atomic_file.h"

/* Qualitative palette (matplotlib's "tab10"): ten colours that stay
 * distinct from each other and on white. */
static const double palette[10][3] = {
    {0x1f / 255.0, 0x77 / 255.0, 0xb4 / 255.0}, /* blue */
    {0xff / 255.0, 0x7f / 255.0, 0x0e / 255.0}, /* orange */
    {0x2c / 255.0, 0xa0 / 255.0, 0x2c / 255.0}, /* green */
    {0xd6 / 255.0, 0x27 / 255.0, 0x28 / 255.0}, /* red */
    {0x94 / 255.0, 0x67 / 255.0, 0xbd / 255.0}, /* purple */
    {0x8c / 255.0, 0x56 / 255.0, 0x4b / 255.0}, /* brown */
    {0xe3 / 255.0, 0x77 / 255.0, 0xc2 / 255.0}, /* pink */
    {0x7f / 255.0, 0x7f / 255.0, 0x7f / 255.0}, /* grey */
    {0xbc / 255.0, 0xbd / 255.0, 0x22 / 255.0}, /* olive */
    {0x17 / 255.0, 0xbe / 255.0, 0xcf / 255.0}, /* cyan */
};

int nn_plot_available(void) { return 1; }

int nn__plot_lr_varies(const nn_epoch_metrics *m, size_t n) {
  double first = NAN;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(m[i].lr)) continue;
    if (isnan(first))
      first = m[i].lr;
    else if (m[i].lr != first)
      return 1;
  }
  return 0;
}

/* cairo's stream writers call this with the encoded bytes. */
typedef struct sink {
  FILE *fp;
  int err; /* errno of the first failed write, 0 if none */
} sink;

static cairo_status_t sink_write(void *closure, const unsigned char *data,
                                 unsigned int len) {
  sink *k = closure;
  if (k->err) return CAIRO_STATUS_WRITE_ERROR;
  errno = 0;
  if (len > 0 && fwrite(data, 1, len, k->fp) != len) {
    k->err = errno ? errno : EIO;
    return CAIRO_STATUS_WRITE_ERROR;
  }
  return CAIRO_STATUS_SUCCESS;
}

static int cairo_fail(nn_error *err, const char *path, cairo_status_t st,
                      const sink *k) {
  if (k && k->err)
    return nn_error_set(err, NN_EIO, "cannot write %s: %s", path,
                        strerror(k->err));
  return nn_error_set(err, st == CAIRO_STATUS_NO_MEMORY ? NN_ENOMEM : NN_EIO,
                      "cannot draw %s: %s", path, cairo_status_to_string(st));
}

/* Draw in memory first and only then open the file, so that a drawing
 * failure leaves nothing behind. */
static int write_png(const nn__plot_figure *fig, const char *path,
                     nn_error *err) {
  cairo_surface_t *s =
      cairo_image_surface_create(CAIRO_FORMAT_RGB24, fig->width, fig->height);
  cairo_t *cr = cairo_create(s); /* an error object if s failed: harmless */
  nn__plot_draw(cr, fig);
  cairo_status_t st = cairo_status(cr);
  cairo_destroy(cr);
  if (st == CAIRO_STATUS_SUCCESS) st = cairo_surface_status(s);
  if (st != CAIRO_STATUS_SUCCESS) {
    cairo_surface_destroy(s);
    return cairo_fail(err, path, st, NULL);
  }
  nn__atomic_file f;
  int rc = nn__atomic_open(&f, path, err);
  if (rc) {
    cairo_surface_destroy(s);
    return rc;
  }
  sink k = {f.fp, 0};
  st = cairo_surface_write_to_png_stream(s, sink_write, &k);
  cairo_surface_destroy(s);
  if (st != CAIRO_STATUS_SUCCESS) {
    nn__atomic_abort(&f);
    return cairo_fail(err, path, st, &k);
  }
  return nn__atomic_commit(&f, err);
}

/* The SVG surface streams as it goes, so the temporary file comes first. */
static int write_svg(const nn__plot_figure *fig, const char *path,
                     nn_error *err) {
  nn__atomic_file f;
  int rc = nn__atomic_open(&f, path, err);
  if (rc) return rc;
  sink k = {f.fp, 0};
  cairo_surface_t *s = cairo_svg_surface_create_for_stream(
      sink_write, &k, fig->width, fig->height);
#if CAIRO_VERSION >= CAIRO_VERSION_ENCODE(1, 15, 10)
  /* width="1200px" rather than cairo's default points, so that the SVG
   * has the same size as the PNG. */
  cairo_svg_surface_set_document_unit(s, CAIRO_SVG_UNIT_PX);
#endif
  cairo_t *cr = cairo_create(s);
  nn__plot_draw(cr, fig);
  cairo_status_t st = cairo_status(cr);
  cairo_destroy(cr);
  cairo_surface_finish(s); /* writes the rest of the document */
  if (st == CAIRO_STATUS_SUCCESS) st = cairo_surface_status(s);
  cairo_surface_destroy(s);
  if (st != CAIRO_STATUS_SUCCESS) {
    nn__atomic_abort(&f);
    return cairo_fail(err, path, st, &k);
  }
  return nn__atomic_commit(&f, err);
}

static int write_figure(const nn__plot_figure *fig, const char *png_path,
                        const char *svg_path, nn_error *err) {
  int rc = NN_OK;
  if (png_path) rc = write_png(fig, png_path, err);
  if (rc == NN_OK && svg_path) rc = write_svg(fig, svg_path, err);
  return rc;
}

int nn_plot_curves(const char *png_path, const char *svg_path,
                   const char *title, const nn_epoch_metrics *m, size_t n,
                   nn_error *err) {
  if (!png_path && !svg_path)
    return nn_error_set(err, NN_EINVAL,
                        "learning curves: no output file (PNG and SVG paths "
                        "are both NULL)");
  const char *what = png_path ? png_path : svg_path;
  if (!m || n == 0)
    return nn_error_set(err, NN_EINVAL, "%s: no epochs to plot", what);

  /* Train solid blue circles, validation orange squares: told apart by
   * colour, and by shape for readers who cannot see the colours. */
  const double blue[3] = {0x1f / 255.0, 0x77 / 255.0, 0xb4 / 255.0};
  const double orange[3] = {0xff / 255.0, 0x7f / 255.0, 0x0e / 255.0};
  nn__plot_line loss[2], acc[2];
  memset(loss, 0, sizeof loss);
  memset(acc, 0, sizeof acc);
  const double *ys[4] = {&m[0].train_loss, &m[0].val_loss,
                         &m[0].train_accuracy, &m[0].val_accuracy};
  nn__plot_line *ls[4] = {&loss[0], &loss[1], &acc[0], &acc[1]};
  for (size_t i = 0; i < 4; i++) {
    nn__plot_line *l = ls[i];
    int val = i % 2;
    l->label = val ? "validation" : "train";
    l->y = ys[i];
    l->y_stride = sizeof *m;
    l->x = &m[0].epoch;
    l->x_stride = sizeof *m;
    l->n = n;
    memcpy(l->rgb, val ? orange : blue, sizeof l->rgb);
    l->marker = val ? NN__MARK_SQUARE : NN__MARK_CIRCLE;
  }
  /* The epoch a run keeps: the first with the highest validation
   * accuracy, the trainer's rule; marked on the validation curve. */
  size_t best = n;
  for (size_t i = 0; i < n; i++)
    if (isfinite(m[i].val_accuracy) &&
        (best == n || m[i].val_accuracy > m[best].val_accuracy))
      best = i;
  char best_text[80];
  if (best < n)
    snprintf(best_text, sizeof best_text, "best: epoch %zu, %.4f",
             m[best].epoch, m[best].val_accuracy);
  /* A third panel for the learning rate when a schedule changed it: a
   * constant rate is in the config already. */
  const double green[3] = {0x2c / 255.0, 0xa0 / 255.0, 0x2c / 255.0};
  const int lr_varies = nn__plot_lr_varies(m, n);
  nn__plot_line lr = {0};
  lr.label = "learning rate";
  lr.y = &m[0].lr;
  lr.y_stride = sizeof *m;
  lr.x = &m[0].epoch;
  lr.x_stride = sizeof *m;
  lr.n = n;
  memcpy(lr.rgb, green, sizeof lr.rgb);
  lr.marker = NN__MARK_TRIANGLE;
  const nn__plot_panel panels[3] = {
      {"Loss", "epoch", "cross-entropy loss", loss, 2, NN__LEGEND_INSIDE, NULL,
       0, 0},
      {"Accuracy", "epoch", "accuracy", acc, 2, NN__LEGEND_INSIDE,
       best < n ? best_text : NULL, best < n ? (double)m[best].epoch : 0,
       best < n ? m[best].val_accuracy : 0},
      {"Learning rate", "epoch", "learning rate", &lr, 1, NN__LEGEND_AUTO,
       NULL, 0, 0}};
  const nn__plot_figure fig = {
      lr_varies ? NN_PLOT_CURVES_LR_WIDTH : NN_PLOT_CURVES_WIDTH,
      NN_PLOT_CURVES_HEIGHT, title ? title : "learning curves", panels,
      lr_varies ? 3 : 2};
  return write_figure(&fig, png_path, svg_path, err);
}

int nn_plot_compare(const char *png_path, const char *svg_path,
                    const char *title, const char *y_label,
                    const nn_plot_series *series, size_t n_series,
                    nn_error *err) {
  if (!png_path && !svg_path)
    return nn_error_set(err, NN_EINVAL,
                        "comparison chart: no output file (PNG and SVG paths "
                        "are both NULL)");
  const char *what = png_path ? png_path : svg_path;
  if (!series || n_series == 0)
    return nn_error_set(err, NN_EINVAL, "%s: no series to plot", what);
  size_t points = 0;
  for (size_t i = 0; i < n_series; i++) {
    if (series[i].n > 0 && !series[i].y)
      return nn_error_set(err, NN_EINVAL, "%s: series %zu (%s) has no values",
                          what, i + 1,
                          series[i].label ? series[i].label : "unnamed");
    points += series[i].n;
  }
  if (points == 0)
    return nn_error_set(err, NN_EINVAL, "%s: every series is empty", what);

  nn__plot_line *lines = calloc(n_series, sizeof *lines);
  if (!lines)
    return nn_error_set(err, NN_ENOMEM, "%s: out of memory for %zu series",
                        what, n_series);
  for (size_t i = 0; i < n_series; i++) {
    nn__plot_line *l = &lines[i];
    l->label = series[i].label;
    l->y = series[i].y;
    l->y_stride = sizeof(double);
    l->n = series[i].n;
    memcpy(l->rgb, palette[i % 10], sizeof l->rgb);
    /* Past ten series the colours repeat, told apart by dash and marker. */
    l->dash = (int)((i / 10) % 4);
    l->marker = (int)((i / 10) % 4);
  }
  /* A few series may share the axes with their legend; many get a
   * column of their own. */
  const nn__plot_panel panel = {
      NULL,     "epoch",
      y_label,  lines,
      n_series, n_series > 4 ? NN__LEGEND_OUTSIDE : NN__LEGEND_AUTO,
      NULL,     0,
      0};
  const nn__plot_figure fig = {NN_PLOT_COMPARE_WIDTH, NN_PLOT_COMPARE_HEIGHT,
                               title, &panel, 1};
  int rc = write_figure(&fig, png_path, svg_path, err);
  free(lines);
  return rc;
}

#else /* !HAVE_CAIRO */

#define UNAVAILABLE "plotting unavailable: nnrun was built without cairo"

int nn_plot_available(void) { return 0; }

int nn_plot_curves(const char *png_path, const char *svg_path,
                   const char *title, const nn_epoch_metrics *m, size_t n,
                   nn_error *err) {
  (void)png_path, (void)svg_path, (void)title, (void)m, (void)n;
  return nn_error_set(err, NN_ENOTFOUND, UNAVAILABLE);
}

int nn_plot_compare(const char *png_path, const char *svg_path,
                    const char *title, const char *y_label,
                    const nn_plot_series *series, size_t n_series,
                    nn_error *err) {
  (void)png_path, (void)svg_path, (void)title, (void)y_label, (void)series,
      (void)n_series;
  return nn_error_set(err, NN_ENOTFOUND, UNAVAILABLE);
}
#endif /* HAVE_CAIRO */
