/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Charts: learning curves and comparisons come out as well-formed PNG and
 * SVG files of the documented size, survive NaN/inf values and odd labels,
 * reject empty input, report unwritable paths and replace files
 * atomically.  Built without cairo, every call says plotting is
 * unavailable. */
#include <config.h>

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gsl/gsl_errno.h>

#include <nn/plot.h>

#include "plot/plot_axes.h"
#include "testutil.h"

static void setup(void) { test_tmpdir_make("plot"); }

static void teardown(void) { test_tmpdir_remove(); }

/* "<test_tmpdir>/<name>" in one of a few static buffers (several live at once). */
static const char *tpath(const char *name) {
  static char buf[4][512];
  static unsigned next;
  char *p = buf[next++ % 4];
  snprintf(p, sizeof buf[0], "%s/%s", test_tmpdir, name);
  return p;
}

static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* A run that learns: loss falls, accuracy rises. */
static void fake_metrics(nn_epoch_metrics *m, size_t n) {
  for (size_t i = 0; i < n; i++) {
    memset(&m[i], 0, sizeof m[i]);
    m[i].epoch = i;
    m[i].train_loss = 2.0 * exp(-0.4 * (double)i) + 0.1;
    m[i].val_loss = 1.5 * exp(-0.3 * (double)i) + 0.25;
    m[i].train_accuracy = 0.95 - 0.6 * exp(-0.5 * (double)i);
    m[i].val_accuracy = 0.9 - 0.5 * exp(-0.4 * (double)i);
  }
}

#ifdef HAVE_CAIRO
/* The whole file, NUL-terminated; *len its size.  Caller frees. */
static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
  long n = ftell(f);
  ck_assert(n >= 0);
  rewind(f);
  char *buf = malloc((size_t)n + 1);
  ck_assert_ptr_nonnull(buf);
  ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
  buf[n] = '\0';
  fclose(f);
  *len = (size_t)n;
  return buf;
}

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

/* PNG signature, then the IHDR chunk with the expected size. */
static void assert_png(const char *path, uint32_t w, uint32_t h) {
  size_t len;
  unsigned char *b = (unsigned char *)slurp(path, &len);
  static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n',
                                       0x1a, '\n'};
  /* A blank image of this size compresses to about 3 kB; charts are
   * 10-200 kB. */
  ck_assert_msg(len > 5000, "%s: only %zu bytes", path, len);
  ck_assert_msg(memcmp(b, sig, 8) == 0, "%s: no PNG signature", path);
  ck_assert_uint_eq(be32(b + 8), 13);
  ck_assert_msg(memcmp(b + 12, "IHDR", 4) == 0, "%s: no IHDR first", path);
  ck_assert_uint_eq(be32(b + 16), w);
  ck_assert_uint_eq(be32(b + 20), h);
  free(b);
}

/* XML declaration, an <svg> root of the expected size in px, the closing
 * tag at the end, and real content in between. */
static void assert_svg(const char *path, int w, int h) {
  size_t len;
  char *b = slurp(path, &len);
  ck_assert_msg(len > 10000, "%s: only %zu bytes", path, len);
  ck_assert_msg(strncmp(b, "<?xml", 5) == 0, "%s: no XML declaration", path);
  char *root = strstr(b, "<svg");
  ck_assert_msg(root != NULL, "%s: no <svg> root", path);
  char *end = strchr(root, '>');
  ck_assert_ptr_nonnull(end);
  *end = '\0';
  char want[64];
  snprintf(want, sizeof want, " width=\"%dpx\"", w);
  ck_assert_msg(strstr(root, want) != NULL, "%s: root lacks%s", path, want);
  snprintf(want, sizeof want, " height=\"%dpx\"", h);
  ck_assert_msg(strstr(root, want) != NULL, "%s: root lacks%s", path, want);
  *end = '>';
  while (len > 0 && (b[len - 1] == '\n' || b[len - 1] == ' ')) len--;
  ck_assert_msg(len >= 6 && memcmp(b + len - 6, "</svg>", 6) == 0,
                "%s: does not end with </svg>", path);
  free(b);
}

/* No "<name>.tmp..." left behind by the atomic writer. */
static void assert_no_temp_files(const char *dir) {
  DIR *d = opendir(dir);
  ck_assert_ptr_nonnull(d);
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    ck_assert_msg(strstr(e->d_name, ".tmp") == NULL, "temp file left: %s/%s",
                  dir, e->d_name);
  closedir(d);
}

START_TEST(test_available) { ck_assert_int_eq(nn_plot_available(), 1); }
END_TEST

START_TEST(test_curves_png_and_svg) {
  nn_epoch_metrics m[8];
  fake_metrics(m, 8);
  nn_error err = {0};
  const char *png = tpath("curves.png"), *svg = tpath("curves.svg");
  ck_assert_msg(nn_plot_curves(png, svg, "mlp: learning curves", m, 8, &err) ==
                    NN_OK,
                "%s", err.msg);
  assert_png(png, NN_PLOT_CURVES_WIDTH, NN_PLOT_CURVES_HEIGHT);
  assert_svg(svg, NN_PLOT_CURVES_WIDTH, NN_PLOT_CURVES_HEIGHT);
  assert_no_temp_files(test_tmpdir);
}
END_TEST

/* A rate that changes gets a third panel in a wider image; a constant
 * one (or none known) does not. */
START_TEST(test_curves_learning_rate_panel) {
  nn_epoch_metrics m[8];
  fake_metrics(m, 8);
  nn_error err = {0};
  const char *png = tpath("lr.png"), *svg = tpath("lr.svg");
  for (size_t i = 0; i < 8; i++) m[i].lr = 0.1;
  ck_assert_int_eq(nn_plot_curves(png, NULL, NULL, m, 8, &err), NN_OK);
  assert_png(png, NN_PLOT_CURVES_WIDTH, NN_PLOT_CURVES_HEIGHT);
  for (size_t i = 0; i < 8; i++) m[i].lr = 0.1 * pow(0.5, (double)(i / 3));
  m[5].lr = NAN; /* left out, as any non-finite value */
  ck_assert_msg(nn_plot_curves(png, svg, NULL, m, 8, &err) == NN_OK, "%s",
                err.msg);
  assert_png(png, NN_PLOT_CURVES_LR_WIDTH, NN_PLOT_CURVES_HEIGHT);
  assert_svg(svg, NN_PLOT_CURVES_LR_WIDTH, NN_PLOT_CURVES_HEIGHT);
}
END_TEST

START_TEST(test_curves_one_epoch_and_default_title) {
  nn_epoch_metrics m[1];
  fake_metrics(m, 1);
  nn_error err = {0};
  const char *png = tpath("one.png");
  ck_assert_msg(nn_plot_curves(png, NULL, NULL, m, 1, &err) == NN_OK, "%s",
                err.msg);
  assert_png(png, NN_PLOT_CURVES_WIDTH, NN_PLOT_CURVES_HEIGHT);
}
END_TEST

START_TEST(test_compare_png_and_svg) {
  /* 3 series (legend inside) and 23 (outside, colours repeat with dashes,
   * more than fit in one column). */
  static double y[23][12];
  nn_plot_series s[23];
  char labels[23][40];
  for (size_t k = 0; k < 23; k++) {
    snprintf(labels[k], sizeof labels[k], "learning_rate=%g",
             0.05 * (double)(k + 1));
    for (size_t e = 0; e < 12; e++)
      y[k][e] = 0.9 - 0.5 * exp(-0.1 * (double)((k + 1) * (e + 1)));
    s[k] = (nn_plot_series){labels[k], y[k], 12};
  }
  size_t counts[2] = {3, 23};
  for (size_t c = 0; c < 2; c++) {
    nn_error err = {0};
    char png[512], svg[512];
    snprintf(png, sizeof png, "%s/cmp%zu.png", test_tmpdir, counts[c]);
    snprintf(svg, sizeof svg, "%s/cmp%zu.svg", test_tmpdir, counts[c]);
    ck_assert_msg(nn_plot_compare(png, svg, "sweep", "validation accuracy", s,
                                  counts[c], &err) == NN_OK,
                  "%s", err.msg);
    assert_png(png, NN_PLOT_COMPARE_WIDTH, NN_PLOT_COMPARE_HEIGHT);
    assert_svg(svg, NN_PLOT_COMPARE_WIDTH, NN_PLOT_COMPARE_HEIGHT);
  }
  assert_no_temp_files(test_tmpdir);
}
END_TEST

START_TEST(test_non_finite_values_are_skipped) {
  nn_epoch_metrics m[10];
  fake_metrics(m, 10);
  m[4].train_loss = NAN;
  m[5].train_loss = INFINITY;
  m[5].val_loss = -INFINITY;
  m[9].val_accuracy = NAN;
  for (size_t i = 6; i < 10; i++) m[i].val_loss = NAN;
  nn_error err = {0};
  const char *png = tpath("nan.png"), *svg = tpath("nan.svg");
  ck_assert_msg(nn_plot_curves(png, svg, "diverged", m, 10, &err) == NN_OK,
                "%s", err.msg);
  assert_png(png, NN_PLOT_CURVES_WIDTH, NN_PLOT_CURVES_HEIGHT);
  assert_svg(svg, NN_PLOT_CURVES_WIDTH, NN_PLOT_CURVES_HEIGHT);

  /* Nothing finite in a whole panel, and huge finite values. */
  for (size_t i = 0; i < 10; i++) m[i].train_loss = m[i].val_loss = NAN;
  m[2].train_accuracy = 1e308;
  m[3].val_accuracy = -1e308;
  ck_assert_msg(nn_plot_curves(png, NULL, NULL, m, 10, &err) == NN_OK, "%s",
                err.msg);
  assert_png(png, NN_PLOT_CURVES_WIDTH, NN_PLOT_CURVES_HEIGHT);

  const double y1[4] = {NAN, 0.5, NAN, 0.7}, y2[3] = {NAN, NAN, NAN};
  const nn_plot_series s[2] = {{"a", y1, 4}, {"b", y2, 3}};
  ck_assert_msg(nn_plot_compare(png, svg, "t", "y", s, 2, &err) == NN_OK,
                "%s", err.msg);
  assert_png(png, NN_PLOT_COMPARE_WIDTH, NN_PLOT_COMPARE_HEIGHT);
  assert_svg(svg, NN_PLOT_COMPARE_WIDTH, NN_PLOT_COMPARE_HEIGHT);
}
END_TEST

START_TEST(test_odd_text_is_drawn_safely) {
  /* Invalid UTF-8, control characters, a very long label, a NULL label and
   * an empty series must neither fail nor break the drawing. */
  char longl[2000];
  memset(longl, 'x', sizeof longl - 1);
  longl[sizeof longl - 1] = '\0';
  longl[300] = (char)0xc3; /* a character cut off by the length limit */
  const double y[3] = {0.1, 0.2, 0.3};
  const nn_plot_series s[5] = {{"bad \xff\xfe utf8 \xc3", y, 3},
                               {"tab\there\nnewline", y, 3},
                               {longl, y, 3},
                               {NULL, y, 3},
                               {"empty", NULL, 0}};
  nn_error err = {0};
  const char *png = tpath("odd.png"), *svg = tpath("odd.svg");
  ck_assert_msg(nn_plot_compare(png, svg, "caf\xc3\xa9 \xe2\x80\x94 \xed\xa0\x80",
                                longl, s, 5, &err) == NN_OK,
                "%s", err.msg);
  assert_png(png, NN_PLOT_COMPARE_WIDTH, NN_PLOT_COMPARE_HEIGHT);
  assert_svg(svg, NN_PLOT_COMPARE_WIDTH, NN_PLOT_COMPARE_HEIGHT);
}
END_TEST

START_TEST(test_empty_input_is_einval) {
  nn_epoch_metrics m[2];
  fake_metrics(m, 2);
  nn_error err = {0};
  const char *png = tpath("e.png"), *svg = tpath("e.svg");
  ck_assert_int_eq(nn_plot_curves(png, svg, "t", m, 0, &err), NN_EINVAL);
  ck_assert_int_eq(err.code, NN_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, png));
  ck_assert_int_eq(nn_plot_curves(png, svg, "t", NULL, 2, &err), NN_EINVAL);
  ck_assert_int_eq(nn_plot_curves(NULL, NULL, "t", m, 2, &err), NN_EINVAL);

  const double y[2] = {1, 2};
  const nn_plot_series ok[1] = {{"a", y, 2}};
  const nn_plot_series no_y[1] = {{"a", NULL, 2}};
  const nn_plot_series empty[2] = {{"a", y, 0}, {"b", NULL, 0}};
  ck_assert_int_eq(nn_plot_compare(png, svg, "t", "y", ok, 0, &err), NN_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, png));
  ck_assert_int_eq(nn_plot_compare(png, svg, "t", "y", NULL, 1, &err),
                   NN_EINVAL);
  ck_assert_int_eq(nn_plot_compare(NULL, svg, "t", "y", no_y, 1, &err),
                   NN_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, svg));
  ck_assert_int_eq(nn_plot_compare(png, svg, "t", "y", empty, 2, &err),
                   NN_EINVAL);
  ck_assert_int_eq(nn_plot_compare(NULL, NULL, "t", "y", ok, 1, &err),
                   NN_EINVAL);
  ck_assert(!exists(png));
  ck_assert(!exists(svg));
}
END_TEST

START_TEST(test_unwritable_path_is_eio) {
  nn_epoch_metrics m[3];
  fake_metrics(m, 3);
  const double y[3] = {1, 2, 3};
  const nn_plot_series s[1] = {{"a", y, 3}};
  nn_error err = {0};

  /* Missing directory: the temporary file cannot even be created. */
  const char *missing = tpath("no/such/dir/c.png");
  ck_assert_int_eq(nn_plot_curves(missing, NULL, "t", m, 3, &err), NN_EIO);
  ck_assert_int_eq(err.code, NN_EIO);
  ck_assert_msg(strstr(err.msg, missing) != NULL, "%s", err.msg);
  const char *missing_svg = tpath("no/such/dir/c.svg");
  ck_assert_int_eq(nn_plot_compare(NULL, missing_svg, "t", "y", s, 1, &err),
                   NN_EIO);
  ck_assert_msg(strstr(err.msg, missing_svg) != NULL, "%s", err.msg);

  /* The target is a directory: everything is written, the final rename
   * fails, and the temporary file must go (root ignores permissions, so
   * this is the portable way to fail late). */
  const char *dir_png = tpath("a_dir.png"), *dir_svg = tpath("a_dir.svg");
  ck_assert_int_eq(mkdir(dir_png, 0755), 0);
  ck_assert_int_eq(mkdir(dir_svg, 0755), 0);
  ck_assert_int_eq(nn_plot_curves(dir_png, NULL, "t", m, 3, &err), NN_EIO);
  ck_assert_msg(strstr(err.msg, dir_png) != NULL, "%s", err.msg);
  ck_assert_int_eq(nn_plot_curves(NULL, dir_svg, "t", m, 3, &err), NN_EIO);
  ck_assert_msg(strstr(err.msg, dir_svg) != NULL, "%s", err.msg);
  ck_assert_int_eq(nn_plot_compare(dir_png, NULL, "t", "y", s, 1, &err),
                   NN_EIO);
  ck_assert_int_eq(nn_plot_compare(NULL, dir_svg, "t", "y", s, 1, &err),
                   NN_EIO);
  assert_no_temp_files(test_tmpdir);

  /* A good PNG then a bad SVG: the PNG is kept, the error names the SVG. */
  const char *png = tpath("kept.png");
  ck_assert_int_eq(nn_plot_curves(png, dir_svg, "t", m, 3, &err), NN_EIO);
  ck_assert_msg(strstr(err.msg, dir_svg) != NULL, "%s", err.msg);
  assert_png(png, NN_PLOT_CURVES_WIDTH, NN_PLOT_CURVES_HEIGHT);
  assert_no_temp_files(test_tmpdir);
}
END_TEST

START_TEST(test_null_path_skips_that_format) {
  nn_epoch_metrics m[4];
  fake_metrics(m, 4);
  const double y[4] = {1, 2, 3, 4};
  const nn_plot_series s[1] = {{"a", y, 4}};
  nn_error err = {0};
  const char *png = tpath("only.png"), *svg = tpath("only.svg");
  ck_assert_int_eq(nn_plot_curves(png, NULL, "t", m, 4, &err), NN_OK);
  ck_assert(exists(png) && !exists(svg));
  ck_assert_int_eq(unlink(png), 0);
  ck_assert_int_eq(nn_plot_curves(NULL, svg, "t", m, 4, &err), NN_OK);
  ck_assert(!exists(png) && exists(svg));
  ck_assert_int_eq(unlink(svg), 0);
  ck_assert_int_eq(nn_plot_compare(png, NULL, "t", "y", s, 1, &err), NN_OK);
  ck_assert(exists(png) && !exists(svg));
  ck_assert_int_eq(unlink(png), 0);
  ck_assert_int_eq(nn_plot_compare(NULL, svg, "t", "y", s, 1, &err), NN_OK);
  ck_assert(!exists(png) && exists(svg));
  assert_svg(svg, NN_PLOT_COMPARE_WIDTH, NN_PLOT_COMPARE_HEIGHT);
}
END_TEST

START_TEST(test_existing_file_is_replaced) {
  const char *png = tpath("old.png");
  FILE *f = fopen(png, "w");
  ck_assert_ptr_nonnull(f);
  fputs("old contents", f);
  fclose(f);
  nn_epoch_metrics m[5];
  fake_metrics(m, 5);
  nn_error err = {0};
  ck_assert_int_eq(nn_plot_curves(png, NULL, "t", m, 5, &err), NN_OK);
  assert_png(png, NN_PLOT_CURVES_WIDTH, NN_PLOT_CURVES_HEIGHT);
  assert_no_temp_files(test_tmpdir);
}
END_TEST

#else /* !HAVE_CAIRO */

START_TEST(test_unavailable) {
  ck_assert_int_eq(nn_plot_available(), 0);
  nn_epoch_metrics m[2];
  fake_metrics(m, 2);
  const double y[2] = {1, 2};
  const nn_plot_series s[1] = {{"a", y, 2}};
  nn_error err = {0};
  const char *png = tpath("x.png");
  ck_assert_int_eq(nn_plot_curves(png, NULL, "t", m, 2, &err), NN_ENOTFOUND);
  ck_assert_str_eq(err.msg,
                   "plotting unavailable: nnrun was built without cairo");
  err.msg[0] = '\0';
  ck_assert_int_eq(nn_plot_compare(png, NULL, "t", "y", s, 1, &err),
                   NN_ENOTFOUND);
  ck_assert_str_eq(err.msg,
                   "plotting unavailable: nnrun was built without cairo");
  ck_assert(!exists(png));
}
END_TEST
#endif /* HAVE_CAIRO */

START_TEST(test_nice_ticks) {
  double t[32], step;
  size_t n = nn__plot_ticks(0, 1, 5, 0, t, 32, &step);
  ck_assert_uint_eq(n, 6);
  ck_assert_double_eq_tol(step, 0.2, 1e-12);
  ck_assert(t[0] == 0);
  ck_assert_double_eq_tol(t[5], 1.0, 1e-12);

  n = nn__plot_ticks(0.27, 0.96, 6, 0, t, 32, &step);
  ck_assert_double_eq_tol(step, 0.1, 1e-12);
  ck_assert_double_eq_tol(t[0], 0.3, 1e-12);
  ck_assert_double_eq_tol(t[n - 1], 0.9, 1e-12);

  /* Epoch axes: whole numbers only, even for a one-epoch run. */
  n = nn__plot_ticks(-0.5, 0.5, 5, 1, t, 32, &step);
  ck_assert_uint_eq(n, 1);
  ck_assert(t[0] == 0 && step == 1);
  n = nn__plot_ticks(-3, 103, 10, 1, t, 32, &step);
  ck_assert(step == 10);
  ck_assert(t[0] == 0 && t[n - 1] == 100);

  /* Every step is 1, 2 or 5 times a power of ten; ticks stay in range. */
  const double spans[][2] = {{-7.3, 12.1}, {1e-7, 3e-7}, {1e5, 1.7e9},
                             {-1e300, 1e300}, {1e16, 1e16 + 64}};
  for (size_t i = 0; i < sizeof spans / sizeof spans[0]; i++) {
    n = nn__plot_ticks(spans[i][0], spans[i][1], 6, 0, t, 32, &step);
    ck_assert_uint_gt(n, 0);
    double mant = step / pow(10, floor(log10(step)));
    ck_assert_msg(fabs(mant - 1) < 1e-9 || fabs(mant - 2) < 1e-9 ||
                      fabs(mant - 5) < 1e-9,
                  "step %g", step);
    for (size_t k = 0; k < n; k++)
      ck_assert(t[k] >= spans[i][0] - step * 1e-6 &&
                t[k] <= spans[i][1] + step * 1e-6);
  }
  ck_assert_uint_eq(nn__plot_ticks(1, 1, 5, 0, t, 32, &step), 0);
  ck_assert_uint_eq(nn__plot_ticks(NAN, 1, 5, 0, t, 32, &step), 0);

  char buf[64];
  nn__plot_format_tick(buf, sizeof buf, 0.1 + 0.2, 0.1, 1);
  ck_assert_str_eq(buf, "0.3");
  nn__plot_format_tick(buf, sizeof buf, -1e-17, 0.05, 1);
  ck_assert_str_eq(buf, "0.00");
  nn__plot_format_tick(buf, sizeof buf, 4, 2, 10);
  ck_assert_str_eq(buf, "4");
  nn__plot_format_tick(buf, sizeof buf, 2e29, 1e29, 5e29);
  ck_assert_str_eq(buf, "2e+29");
}
END_TEST

int main(void) {
  gsl_set_error_handler_off();
  Suite *s = suite_create("plot");
  TCase *tc = tcase_create("plot");
  tcase_add_checked_fixture(tc, setup, teardown);
#ifdef HAVE_CAIRO
  tcase_add_test(tc, test_available);
  tcase_add_test(tc, test_curves_png_and_svg);
  tcase_add_test(tc, test_curves_one_epoch_and_default_title);
  tcase_add_test(tc, test_curves_learning_rate_panel);
  tcase_add_test(tc, test_compare_png_and_svg);
  tcase_add_test(tc, test_non_finite_values_are_skipped);
  tcase_add_test(tc, test_odd_text_is_drawn_safely);
  tcase_add_test(tc, test_empty_input_is_einval);
  tcase_add_test(tc, test_unwritable_path_is_eio);
  tcase_add_test(tc, test_null_path_skips_that_format);
  tcase_add_test(tc, test_existing_file_is_replaced);
#else
  tcase_add_test(tc, test_unavailable);
#endif
  tcase_add_test(tc, test_nice_ticks);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
