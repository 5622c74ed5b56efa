/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Chart layout and drawing with cairo: see plot_internal.h.
 *
 * Everything is laid out in device units (px) from the font sizes, so the
 * same drawing serves the PNG and the SVG.  Text goes through cairo's toy
 * API; when no font can be loaded at all, the text is left out and the
 * rest is still drawn (a probe decides, because a failed text call would
 * put the whole cairo context into an error state). */
#include <config.h>

#include "util/utf8.h"
#include "plot/plot_internal.h"

#ifdef HAVE_CAIRO
#include <math.h>
#include <stdio.h>
#include <string.h>

#define FONT_FAMILY "sans-serif"
#define PI 3.14159265358979323846

/* Font sizes in px; 13 px is the smallest that reads well at 100 %. */
#define TITLE_PX 20.0
#define PANEL_TITLE_PX 16.0
#define LABEL_PX 15.0
#define TICK_PX 13.0
#define LEGEND_PX 14.0

#define TICK_LEN 5.0
#define MAX_TICKS 32
#define TEXT_CAP 256 /* bytes of one label; longer ones are cut */

/* Legend geometry. */
#define LEG_PAD 8.0
#define LEG_SWATCH 32.0
#define LEG_GAP 6.0
#define LEG_MIN_COL 110.0

typedef struct ctx {
  cairo_t *cr;
  int text_ok; /* a font could be loaded: text calls are safe */
} ctx;

typedef struct axes {
  double left, top, right, bottom; /* plot rectangle, px */
  double xlo, xhi, ylo, yhi;       /* data range shown */
} axes;

typedef struct legend {
  size_t n;     /* entries */
  char keys[TEXT_CAP]; /* the labels' shared keys, shown once on top
                          ("learning_rate, reg"); "" when they share none */
  size_t shown; /* entries drawn; any rest becomes one "+k more" row */
  size_t cols, rows;
  double col_w, row_h, w, h, x, y;
} legend;

static void set_hex(cairo_t *cr, unsigned rgb) {
  cairo_set_source_rgb(cr, ((rgb >> 16) & 0xff) / 255.0,
                       ((rgb >> 8) & 0xff) / 255.0, (rgb & 0xff) / 255.0);
}

static double clampd(double v, double lo, double hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

/* ------------------------------------------------------------------ text */

/* Can cairo load a font here?  Tried on a scratch context so that a failure
 * cannot spoil the real one. */
static int fonts_work(void) {
  cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_A8, 1, 1);
  cairo_t *cr = cairo_create(s);
  cairo_select_font_face(cr, FONT_FAMILY, CAIRO_FONT_SLANT_NORMAL,
                         CAIRO_FONT_WEIGHT_BOLD);
  cairo_set_font_size(cr, TICK_PX);
  cairo_text_extents_t te;
  cairo_text_extents(cr, "0.5 Ag", &te);
  cairo_move_to(cr, 0, 0);
  cairo_show_text(cr, "0.5 Ag");
  int ok = cairo_status(cr) == CAIRO_STATUS_SUCCESS;
  cairo_destroy(cr);
  cairo_surface_destroy(s);
  return ok;
}

/* Copy src into dst (cap bytes) as valid, printable UTF-8: bad bytes become
 * '?', control characters ' ', and a character never gets cut in half. */
static void sanitize(char *dst, size_t cap, const char *src) {
  const unsigned char *s = (const unsigned char *)src;
  size_t o = 0;
  while (*s) {
    size_t n = nn__utf8_len(s);
    if (n == 0) {
      if (o + 1 >= cap) break;
      dst[o++] = '?';
      s++;
      continue;
    }
    if (o + n >= cap) break;
    if (n == 1 && (*s < 0x20 || *s == 0x7f))
      dst[o++] = ' ';
    else
      memcpy(dst + o, s, n), o += n;
    s += n;
  }
  dst[o] = '\0';
}

static void set_font(ctx *c, double px, int bold) {
  cairo_select_font_face(c->cr, FONT_FAMILY, CAIRO_FONT_SLANT_NORMAL,
                         bold ? CAIRO_FONT_WEIGHT_BOLD
                              : CAIRO_FONT_WEIGHT_NORMAL);
  cairo_set_font_size(c->cr, px);
}

/* Advance width of already sanitized text; an estimate without fonts, so
 * that the layout keeps its shape. */
static double width_of(ctx *c, const char *s, double px, int bold) {
  if (!c->text_ok) {
    size_t chars = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
      chars += (*p & 0xc0) != 0x80;
    return 0.6 * px * (double)chars;
  }
  set_font(c, px, bold);
  cairo_text_extents_t te;
  cairo_text_extents(c->cr, s, &te);
  return te.x_advance;
}

static double text_width(ctx *c, const char *s, double px, int bold) {
  char buf[TEXT_CAP];
  sanitize(buf, sizeof buf, s);
  return width_of(c, buf, px, bold);
}

/* Sanitize s into buf, cutting it to max_w with "..." if it is wider (in
 * the weight it will be drawn in). */
static void fit_text(ctx *c, char *buf, size_t cap, const char *s, double px,
                     int bold, double max_w) {
  char full[TEXT_CAP];
  sanitize(full, sizeof full, s);
  snprintf(buf, cap, "%s", full);
  if (width_of(c, buf, px, bold) <= max_w) return;
  size_t len = strlen(full);
  while (len > 0) {
    do len--; /* back to the start of a character */
    while (len > 0 && ((unsigned char)full[len] & 0xc0) == 0x80);
    snprintf(buf, cap, "%.*s...", (int)len, full);
    if (width_of(c, buf, px, bold) <= max_w) return;
  }
  snprintf(buf, cap, "...");
}

enum { VA_TOP, VA_MIDDLE, VA_BOTTOM };

/* Text anchored at (x, y): ha is 0 (left), 0.5 (centre) or 1 (right); va
 * picks the vertical anchor from the font's ascent and descent so that
 * labels line up whatever their letters.  `vertical` reads bottom-up. */
static void draw_text(ctx *c, double x, double y, const char *s, double px,
                      int bold, double ha, int va, int vertical) {
  if (!c->text_ok || !s || !*s) return;
  char buf[TEXT_CAP];
  sanitize(buf, sizeof buf, s);
  cairo_t *cr = c->cr;
  set_font(c, px, bold);
  cairo_text_extents_t te;
  cairo_text_extents(cr, buf, &te);
  cairo_font_extents_t fe;
  cairo_font_extents(cr, &fe);
  double dy = va == VA_TOP      ? fe.ascent
              : va == VA_MIDDLE ? (fe.ascent - fe.descent) / 2
                                : -fe.descent;
  cairo_save(cr);
  cairo_translate(cr, x, y);
  if (vertical) cairo_rotate(cr, -PI / 2);
  cairo_move_to(cr, -ha * te.x_advance, dy);
  set_hex(cr, 0x222222);
  cairo_show_text(cr, buf);
  cairo_restore(cr);
}

/* ------------------------------------------------------------ data access */

static double line_y(const nn__plot_line *l, size_t i) {
  double v;
  memcpy(&v, (const unsigned char *)l->y + i * l->y_stride, sizeof v);
  return v;
}

static double line_x(const nn__plot_line *l, size_t i) {
  if (!l->x) return (double)i;
  size_t v;
  memcpy(&v, (const unsigned char *)l->x + i * l->x_stride, sizeof v);
  return (double)v;
}

static const char *line_label(const nn__plot_line *l, size_t k, char *buf,
                              size_t cap) {
  if (l->label) return l->label;
  snprintf(buf, cap, "series %zu", k + 1);
  return buf;
}

/* Sweeps label their runs "learning_rate=0.1, reg=0.01", ...: when every
 * label is such a list of KEY=VALUE with the same keys in the same order,
 * the keys are shown once, as the legend's heading ("learning_rate, reg"),
 * and the entries keep just the values ("0.1, 0.01"), so that the legend
 * of a sweep over several keys stays narrow enough to read whole.  Writes
 * the heading into keys (cap bytes); "" when the labels do not qualify. */
static void shared_keys(const nn__plot_panel *p, char *keys, size_t cap) {
  keys[0] = '\0';
  if (p->n_lines < 2 || !p->lines[0].label) return;
  const char *first = p->lines[0].label;
  for (size_t k = 0; k < p->n_lines; k++) {
    const char *s = p->lines[k].label, *f = first;
    if (!s) return;
    for (;;) { /* one "KEY=VALUE" of s against the same part of first */
      const char *eq = strchr(s, '=');
      const char *end = strstr(s, ", ");
      if (!end) end = s + strlen(s);
      const size_t key_len = eq ? (size_t)(eq - s) : 0;
      if (!eq || eq > end || key_len == 0 || eq + 1 == end ||
          strncmp(s, f, key_len + 1))
        return;
      const char *f_end = strstr(f, ", ");
      if (!*end) {
        if (f_end) return; /* first has more keys */
        break;
      }
      if (!f_end) return;
      s = end + 2;
      f = f_end + 2;
    }
  }
  size_t len = 0;
  for (const char *f = first; f && len < cap;) {
    const char *eq = strchr(f, '=');
    len += (size_t)snprintf(keys + len, cap - len, "%s%.*s", len ? ", " : "",
                            (int)(eq - f), f);
    f = strstr(eq, ", ");
    if (f) f += 2;
  }
}

/* The text of legend entry k: the label, or its values alone under shared
 * keys. */
static const char *entry_label(const nn__plot_panel *p, const legend *lg,
                               size_t k, char *buf, size_t cap) {
  const char *s = line_label(&p->lines[k], k, buf, cap);
  if (!lg->keys[0]) return s;
  size_t len = 0;
  buf[0] = '\0';
  while (s && len < cap) {
    const char *v = strchr(s, '=') + 1, *end = strstr(v, ", ");
    const int n = end ? (int)(end - v) : (int)strlen(v);
    len += (size_t)snprintf(buf + len, cap - len, "%s%.*s", len ? ", " : "",
                            n, v);
    s = end ? end + 2 : NULL;
  }
  return buf;
}

/* Markers on every point while a panel stays readable; beyond that only
 * points without a finite neighbour get one, since they would otherwise be
 * invisible. */
static int all_markers(const nn__plot_panel *p, const nn__plot_line *l) {
  return l->n <= (p->n_lines <= 4 ? 60u : 20u);
}

/* Data range of a panel.  x covers every point (so the axis shows where a
 * run diverged); y only the finite values, kept within +-1e300 so that
 * spans and padding stay finite. */
static void data_range(const nn__plot_panel *p, axes *a) {
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  for (size_t k = 0; k < p->n_lines; k++) {
    const nn__plot_line *l = &p->lines[k];
    for (size_t i = 0; i < l->n; i++) {
      double x = line_x(l, i), y = line_y(l, i);
      xlo = fmin(xlo, x), xhi = fmax(xhi, x);
      if (!isfinite(y)) continue;
      y = clampd(y, -1e300, 1e300);
      ylo = fmin(ylo, y), yhi = fmax(yhi, y);
    }
  }
  if (!(xlo <= xhi)) xlo = 0, xhi = 0;
  if (xhi - xlo < 1) {
    xlo -= 0.5, xhi += 0.5;
  } else {
    double pad = fmax(0.3, (xhi - xlo) * 0.03);
    xlo -= pad, xhi += pad;
  }
  if (!(ylo <= yhi)) {
    ylo = 0, yhi = 1; /* nothing finite: empty axes */
  } else if (yhi - ylo <= 1e-12 * fmax(fabs(ylo), fabs(yhi))) {
    /* Flat line (or differences below double precision): centre it. */
    double pad = ylo != 0 ? fmax(fabs(ylo) * 0.05, 1e-9) : 0.5;
    ylo -= pad, yhi += pad;
  } else {
    double pad = (yhi - ylo) * 0.06; /* keeps markers off the frame */
    ylo -= pad, yhi += pad;
  }
  a->xlo = xlo, a->xhi = xhi, a->ylo = ylo, a->yhi = yhi;
}

/* Data to px, clamped so that cairo's fixed-point coordinates never
 * overflow on a wild value (it is clipped away anyway). */
static double map_x(const axes *a, double v) {
  double t = a->left + (v - a->xlo) / (a->xhi - a->xlo) * (a->right - a->left);
  return clampd(t, -1e5, 1e5);
}

static double map_y(const axes *a, double v) {
  double t =
      a->bottom - (v - a->ylo) / (a->yhi - a->ylo) * (a->bottom - a->top);
  return clampd(t, -1e5, 1e5);
}

/* ----------------------------------------------------------- lines/marks */

static void set_line_style(cairo_t *cr, const nn__plot_line *l, double w) {
  static const double dashed[] = {8, 5}, dotted[] = {2, 3},
                      dashdot[] = {9, 4, 2, 4};
  cairo_set_source_rgb(cr, l->rgb[0], l->rgb[1], l->rgb[2]);
  cairo_set_line_width(cr, w);
  cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
  cairo_set_line_cap(cr, CAIRO_LINE_CAP_BUTT);
  switch (l->dash % 4) {
  case 1: cairo_set_dash(cr, dashed, 2, 0); break;
  case 2: cairo_set_dash(cr, dotted, 2, 0); break;
  case 3: cairo_set_dash(cr, dashdot, 4, 0); break;
  default: cairo_set_dash(cr, NULL, 0, 0); break;
  }
}

/* A filled marker with a white rim, so that overlapping lines stay
 * readable. */
static void draw_marker(cairo_t *cr, const nn__plot_line *l, double x,
                        double y, double r) {
  switch (l->marker) {
  case NN__MARK_SQUARE:
    cairo_rectangle(cr, x - r * 0.9, y - r * 0.9, r * 1.8, r * 1.8);
    break;
  case NN__MARK_TRIANGLE:
    cairo_move_to(cr, x, y - r * 1.2);
    cairo_line_to(cr, x + r * 1.1, y + r * 0.8);
    cairo_line_to(cr, x - r * 1.1, y + r * 0.8);
    cairo_close_path(cr);
    break;
  case NN__MARK_DIAMOND:
    cairo_move_to(cr, x, y - r * 1.25);
    cairo_line_to(cr, x + r * 1.25, y);
    cairo_line_to(cr, x, y + r * 1.25);
    cairo_line_to(cr, x - r * 1.25, y);
    cairo_close_path(cr);
    break;
  default:
    cairo_new_sub_path(cr);
    cairo_arc(cr, x, y, r, 0, 2 * PI);
    break;
  }
  cairo_set_source_rgb(cr, l->rgb[0], l->rgb[1], l->rgb[2]);
  cairo_fill_preserve(cr);
  cairo_set_dash(cr, NULL, 0, 0);
  cairo_set_line_width(cr, 1);
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_stroke(cr);
}

static void draw_line(ctx *c, const axes *a, const nn__plot_panel *p,
                      const nn__plot_line *l, double width, double r) {
  cairo_t *cr = c->cr;
  cairo_new_path(cr);
  int pen = 0;
  for (size_t i = 0; i < l->n; i++) {
    double y = line_y(l, i);
    if (!isfinite(y)) { /* gap in the line, nothing else */
      pen = 0;
      continue;
    }
    double X = map_x(a, line_x(l, i)), Y = map_y(a, y);
    if (pen)
      cairo_line_to(cr, X, Y);
    else
      cairo_move_to(cr, X, Y);
    pen = 1;
  }
  set_line_style(cr, l, width);
  cairo_stroke(cr);
  int all = all_markers(p, l);
  for (size_t i = 0; i < l->n; i++) {
    double y = line_y(l, i);
    if (!isfinite(y)) continue;
    int lone = (i == 0 || !isfinite(line_y(l, i - 1))) &&
               (i + 1 == l->n || !isfinite(line_y(l, i + 1)));
    if (!all && !lone) continue;
    /* A lone point is all there is of its stretch: make it stand out. */
    draw_marker(cr, l, map_x(a, line_x(l, i)), map_y(a, y),
                lone ? r * 1.3 : r);
  }
}

/* ---------------------------------------------------------------- legend */

/* Fit the panel's legend into max_w x max_h: one column if it fits, more
 * columns (entries run down each column) if not, and a "+k more" row when
 * even that is too little. */
static void legend_layout(ctx *c, const nn__plot_panel *p, double max_w,
                          double max_h, legend *lg) {
  memset(lg, 0, sizeof *lg);
  lg->n = p->n_lines;
  if (lg->n == 0) return;
  lg->row_h = LEGEND_PX * 1.5;
  shared_keys(p, lg->keys, sizeof lg->keys);
  double widest = 0;
  for (size_t k = 0; k < lg->n; k++) {
    char tmp[TEXT_CAP];
    widest = fmax(widest, text_width(c, entry_label(p, lg, k, tmp, sizeof tmp),
                                     LEGEND_PX, 0));
  }
  double full_col = LEG_SWATCH + LEG_GAP + widest + LEG_PAD;
  double head = 0; /* heading row */
  if (lg->keys[0]) {
    full_col = fmax(full_col, text_width(c, lg->keys, LEGEND_PX, 1) + LEG_PAD);
    head = lg->row_h;
  }
  size_t rows_fit = 1;
  if (max_h > 2 * LEG_PAD + head + lg->row_h)
    rows_fit = (size_t)((max_h - 2 * LEG_PAD - head) / lg->row_h);
  size_t cols = (lg->n + rows_fit - 1) / rows_fit;
  double avail = fmax(max_w - LEG_PAD, LEG_MIN_COL);
  if (cols > 1 && avail / (double)cols < LEG_MIN_COL)
    cols = (size_t)(avail / LEG_MIN_COL);
  if (cols < 1) cols = 1;
  size_t capacity = cols * rows_fit;
  lg->shown = lg->n <= capacity ? lg->n : capacity - 1;
  size_t entries = lg->shown + (lg->shown < lg->n);
  lg->cols = cols;
  lg->rows = (entries + cols - 1) / cols;
  lg->col_w = fmin(full_col, avail / (double)cols);
  lg->w = LEG_PAD + (double)cols * lg->col_w;
  lg->h = 2 * LEG_PAD + head + (double)lg->rows * lg->row_h;
}

static void legend_draw(ctx *c, const nn__plot_panel *p, const legend *lg) {
  if (lg->n == 0) return;
  cairo_t *cr = c->cr;
  cairo_rectangle(cr, floor(lg->x) + 0.5, floor(lg->y) + 0.5, floor(lg->w),
                  floor(lg->h));
  cairo_set_source_rgba(cr, 1, 1, 1, 0.9);
  cairo_fill_preserve(cr);
  cairo_set_dash(cr, NULL, 0, 0);
  cairo_set_line_width(cr, 1);
  set_hex(cr, 0xcccccc);
  cairo_stroke(cr);
  double label_w = lg->col_w - LEG_SWATCH - LEG_GAP - LEG_PAD;
  size_t entries = lg->shown + (lg->shown < lg->n);
  double y0 = lg->y + LEG_PAD;
  char text[TEXT_CAP];
  if (lg->keys[0]) {
    fit_text(c, text, sizeof text, lg->keys, LEGEND_PX, 1,
             lg->w - 2 * LEG_PAD);
    draw_text(c, lg->x + LEG_PAD, y0 + lg->row_h / 2, text, LEGEND_PX, 1, 0,
              VA_MIDDLE, 0);
    y0 += lg->row_h;
  }
  for (size_t k = 0; k < entries; k++) {
    double x = lg->x + LEG_PAD + (double)(k / lg->rows) * lg->col_w;
    double y = y0 + ((double)(k % lg->rows) + 0.5) * lg->row_h;
    if (k == lg->shown) {
      char more[64];
      snprintf(more, sizeof more, "+%zu more", lg->n - lg->shown);
      fit_text(c, text, sizeof text, more, LEGEND_PX, 0,
               label_w + LEG_SWATCH);
      draw_text(c, x, y, text, LEGEND_PX, 0, 0, VA_MIDDLE, 0);
      break;
    }
    const nn__plot_line *l = &p->lines[k];
    cairo_new_path(cr);
    cairo_move_to(cr, x, y);
    cairo_line_to(cr, x + LEG_SWATCH, y);
    set_line_style(cr, l, 2.5);
    cairo_stroke(cr);
    if (all_markers(p, l)) draw_marker(cr, l, x + LEG_SWATCH / 2, y, 4);
    char tmp[TEXT_CAP];
    fit_text(c, text, sizeof text, entry_label(p, lg, k, tmp, sizeof tmp),
             LEGEND_PX, 0, label_w);
    draw_text(c, x + LEG_SWATCH + LEG_GAP, y, text, LEGEND_PX, 0, 0,
              VA_MIDDLE, 0);
  }
}

/* How much of the panel's data lies under a legend box at (x, y): points
 * plus samples along each segment, so a line crossing the box counts. */
static size_t legend_overlap(const nn__plot_panel *p, const axes *a,
                             double x, double y, double w, double h) {
  size_t hits = 0;
  x -= 4, y -= 4, w += 8, h += 8;
  for (size_t k = 0; k < p->n_lines; k++) {
    const nn__plot_line *l = &p->lines[k];
    double px = 0, py = 0;
    int prev = 0;
    for (size_t i = 0; i < l->n; i++) {
      double v = line_y(l, i);
      if (!isfinite(v)) {
        prev = 0;
        continue;
      }
      double X = map_x(a, line_x(l, i)), Y = map_y(a, v);
      int steps = prev ? 8 : 1;
      for (int s = 1; s <= steps; s++) {
        double t = (double)s / steps;
        double sx = prev ? px + (X - px) * t : X;
        double sy = prev ? py + (Y - py) * t : Y;
        hits += sx >= x && sx <= x + w && sy >= y && sy <= y + h;
      }
      px = X, py = Y, prev = 1;
    }
  }
  return hits;
}

/* Inside legend: the corner covering the least data, preferring upper
 * right, then lower right, upper left, lower left.  Returns how much data
 * the chosen corner still covers. */
static size_t legend_place_inside(const nn__plot_panel *p, const axes *a,
                                  legend *lg) {
  const double m = 10;
  double xs[4] = {a->right - m - lg->w, a->right - m - lg->w, a->left + m,
                  a->left + m};
  double ys[4] = {a->top + m, a->bottom - m - lg->h, a->top + m,
                  a->bottom - m - lg->h};
  size_t best = 0, best_hits = (size_t)-1;
  for (size_t i = 0; i < 4; i++) {
    size_t hits = legend_overlap(p, a, xs[i], ys[i], lg->w, lg->h);
    if (hits < best_hits) best = i, best_hits = hits;
  }
  lg->x = xs[best], lg->y = ys[best];
  return best_hits;
}

/* The plot's right edge and the legend's size, inside the axes or in a
 * column right of them (then also its position). */
static void legend_fit(ctx *c, const nn__plot_panel *p, axes *a, legend *lg,
                       double right, double fig_w, int outside) {
  a->right = right;
  if (outside) {
    legend_layout(c, p, fig_w * 0.35, a->bottom - a->top, lg);
    /* A heading of several keys may take a little more, to be read whole. */
    const double head_w = lg->keys[0]
        ? text_width(c, lg->keys, LEGEND_PX, 1) + 3 * LEG_PAD : 0;
    if (head_w > lg->w)
      legend_layout(c, p, fmin(head_w, fig_w * 0.42), a->bottom - a->top, lg);
    a->right -= lg->w + 6;
    lg->x = a->right + 16, lg->y = a->top;
  } else {
    legend_layout(c, p, (a->right - a->left) * 0.5,
                  (a->bottom - a->top) * 0.6, lg);
  }
  if (a->right < a->left + 40) a->right = a->left + 40; /* absurd labels */
}

/* ------------------------------------------------------------------ mark */

/* The panel's marked point: a dark ring around it and its text on a white
 * box beside it, below the point when there is room (a best accuracy is
 * near the top), towards the middle of the plot. */
static void draw_mark(ctx *c, const nn__plot_panel *p, const axes *a) {
  if (!p->mark_text || !isfinite(p->mark_x) || !isfinite(p->mark_y)) return;
  const double X = map_x(a, p->mark_x), Y = map_y(a, p->mark_y);
  if (X < a->left || X > a->right || Y < a->top || Y > a->bottom) return;
  cairo_t *cr = c->cr;
  cairo_new_path(cr);
  cairo_set_dash(cr, NULL, 0, 0);
  cairo_arc(cr, X, Y, 9, 0, 2 * PI);
  cairo_set_line_width(cr, 2);
  set_hex(cr, 0x222222);
  cairo_stroke(cr);
  if (!c->text_ok) return;
  char text[TEXT_CAP];
  fit_text(c, text, sizeof text, p->mark_text, LEGEND_PX, 1,
           (a->right - a->left) * 0.9);
  const double w = text_width(c, text, LEGEND_PX, 1), h = LEGEND_PX * 1.4;
  const int left_of = X > (a->left + a->right) / 2;
  double tx = left_of ? X - 12 - w : X + 12;
  tx = fmin(fmax(tx, a->left + 4), a->right - 4 - w);
  double ty = Y + 14 + h < a->bottom ? Y + 14 : Y - 14 - h;
  cairo_rectangle(cr, tx - 3, ty, w + 6, h);
  cairo_set_source_rgba(cr, 1, 1, 1, 0.85);
  cairo_fill(cr);
  draw_text(c, tx, ty + h / 2, text, LEGEND_PX, 1, 0, VA_MIDDLE, 0);
}

/* ----------------------------------------------------------------- panel */

static void draw_panel(ctx *c, const nn__plot_panel *p, double px, double py,
                       double pw, double ph, double fig_w) {
  cairo_t *cr = c->cr;
  axes a;
  data_range(p, &a);

  /* Vertical layout first: the y ticks depend on the height only, and
   * their label widths then decide the left margin. */
  a.top = py + 10 + (p->title ? PANEL_TITLE_PX * 1.6 : 0);
  a.bottom = py + ph - 12 - TICK_PX * 1.3 - TICK_LEN - 4 -
             (p->x_label ? LABEL_PX * 1.6 : 0);
  double yt[MAX_TICKS], ystep;
  size_t target = (size_t)clampd((a.bottom - a.top) / 60, 3, 10);
  size_t nyt = nn__plot_ticks(a.ylo, a.yhi, target, 0, yt, MAX_TICKS, &ystep);
  double ymax_abs = fmax(fabs(a.ylo), fabs(a.yhi));
  char ylab[MAX_TICKS][40];
  double ylab_w = 0;
  for (size_t i = 0; i < nyt; i++) {
    nn__plot_format_tick(ylab[i], sizeof ylab[i], yt[i], ystep, ymax_abs);
    ylab_w = fmax(ylab_w, text_width(c, ylab[i], TICK_PX, 0));
  }
  a.left = px + 14 + (p->y_label ? LABEL_PX * 1.7 : 0) + ylab_w + TICK_LEN + 4;

  /* A legend that would hide data moves out, where the panel allows. */
  legend lg;
  int outside = p->legend == NN__LEGEND_OUTSIDE;
  legend_fit(c, p, &a, &lg, px + pw - 22, fig_w, outside);
  if (!outside && legend_place_inside(p, &a, &lg) > 0 &&
      p->legend == NN__LEGEND_AUTO) {
    outside = 1;
    legend_fit(c, p, &a, &lg, px + pw - 22, fig_w, outside);
  }

  double xt[MAX_TICKS], xstep;
  target = (size_t)clampd((a.right - a.left) / 80, 2, 12);
  size_t nxt = nn__plot_ticks(a.xlo, a.xhi, target, 1, xt, MAX_TICKS, &xstep);

  /* Grid, then frame and ticks, crisp on the pixel grid (+0.5). */
  cairo_set_dash(cr, NULL, 0, 0);
  cairo_set_line_width(cr, 1);
  set_hex(cr, 0xe6e6e6);
  for (size_t i = 0; i < nyt; i++) {
    double Y = floor(map_y(&a, yt[i])) + 0.5;
    cairo_move_to(cr, a.left, Y);
    cairo_line_to(cr, a.right, Y);
  }
  for (size_t i = 0; i < nxt; i++) {
    double X = floor(map_x(&a, xt[i])) + 0.5;
    cairo_move_to(cr, X, a.top);
    cairo_line_to(cr, X, a.bottom);
  }
  cairo_stroke(cr);
  set_hex(cr, 0x666666);
  cairo_rectangle(cr, floor(a.left) + 0.5, floor(a.top) + 0.5,
                  floor(a.right) - floor(a.left),
                  floor(a.bottom) - floor(a.top));
  for (size_t i = 0; i < nyt; i++) {
    double Y = floor(map_y(&a, yt[i])) + 0.5;
    cairo_move_to(cr, floor(a.left) + 0.5 - TICK_LEN, Y);
    cairo_line_to(cr, floor(a.left) + 0.5, Y);
  }
  for (size_t i = 0; i < nxt; i++) {
    double X = floor(map_x(&a, xt[i])) + 0.5;
    cairo_move_to(cr, X, floor(a.bottom) + 0.5);
    cairo_line_to(cr, X, floor(a.bottom) + 0.5 + TICK_LEN);
  }
  cairo_stroke(cr);

  for (size_t i = 0; i < nyt; i++)
    draw_text(c, a.left - TICK_LEN - 4, map_y(&a, yt[i]), ylab[i], TICK_PX, 0,
              1, VA_MIDDLE, 0);
  double xmax_abs = fmax(fabs(a.xlo), fabs(a.xhi));
  for (size_t i = 0; i < nxt; i++) {
    char buf[40];
    nn__plot_format_tick(buf, sizeof buf, xt[i], xstep, xmax_abs);
    draw_text(c, map_x(&a, xt[i]), a.bottom + TICK_LEN + 4, buf, TICK_PX, 0,
              0.5, VA_TOP, 0);
  }
  double xmid = (a.left + a.right) / 2, ymid = (a.top + a.bottom) / 2;
  if (p->x_label)
    draw_text(c, xmid, a.bottom + TICK_LEN + 4 + TICK_PX * 1.3 + 6,
              p->x_label, LABEL_PX, 0, 0.5, VA_TOP, 0);
  if (p->y_label)
    draw_text(c, px + 12, ymid, p->y_label, LABEL_PX, 0, 0.5, VA_TOP, 1);
  if (p->title)
    draw_text(c, xmid, py + 8, p->title, PANEL_TITLE_PX, 1, 0.5, VA_TOP, 0);

  /* Data, clipped to the plot area (the 6 % padding keeps markers in). */
  cairo_save(cr);
  cairo_rectangle(cr, a.left, a.top, a.right - a.left, a.bottom - a.top);
  cairo_clip(cr);
  int many = p->n_lines > 4;
  for (size_t k = 0; k < p->n_lines; k++)
    draw_line(c, &a, p, &p->lines[k], many ? 2.0 : 2.5, many ? 3.2 : 4.2);
  cairo_restore(cr);

  draw_mark(c, p, &a);
  legend_draw(c, p, &lg);
}

void nn__plot_draw(cairo_t *cr, const nn__plot_figure *fig) {
  ctx c = {cr, fonts_work()};
  cairo_set_source_rgb(cr, 1, 1, 1);
  cairo_paint(cr);
  double y0 = 4;
  if (fig->title) {
    draw_text(&c, fig->width / 2.0, 12, fig->title, TITLE_PX, 1, 0.5, VA_TOP,
              0);
    y0 = 12 + TITLE_PX * 1.5;
  }
  if (fig->n_panels == 0) return;
  double pw = (double)fig->width / (double)fig->n_panels;
  for (size_t i = 0; i < fig->n_panels; i++)
    draw_panel(&c, &fig->panels[i], (double)i * pw, y0, pw,
               fig->height - y0, fig->width);
}
#endif /* HAVE_CAIRO */
