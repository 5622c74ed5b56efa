/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Learning-rate schedules: each schedule plugin, behind libnn's warm-up,
 * against PyTorch's schedulers (tests/data/sched_ref.txt, made by
 * bench/torch_sched_ref.py; PyTorch is not needed here), the plateau's
 * state round trip, the optimizers' learning-rate extension, the lr
 * column of metrics.csv and the descriptor's size rule for ABI 2.2. */
#include <config.h>

#include <math.h>
#include <stddef.h>
#include <string.h>

#include <nn/nn.h>
#include <nn/plugin_ext.h>

#include "testutil.h"

#define MAX_CASES 32
#define MAX_LR 64

typedef struct ref_case {
  char name[64], plugin[64];
  double base;
  size_t epochs, batches;
  char spec[512]; /* " key=value key=value " */
  double lr[MAX_LR];
  size_t n_lr;
} ref_case;

typedef struct ref_file {
  ref_case c[MAX_CASES];
  size_t n;
} ref_file;

static void ref_load(ref_file *r) {
  FILE *f = fopen(test_data_path("sched_ref.txt"), "r");
  ck_assert_msg(f != NULL, "cannot open %s", test_data_path("sched_ref.txt"));
  memset(r, 0, sizeof *r);
  char line[8192];
  ref_case *c = NULL;
  while (fgets(line, sizeof line, f)) {
    int used = 0;
    if (line[0] == '#' || line[0] == '\n')
      continue;
    if (strncmp(line, "case ", 5) == 0) {
      ck_assert_uint_lt(r->n, MAX_CASES);
      c = &r->c[r->n++];
      ck_assert_int_eq(sscanf(line, "case %63s %63s %lf %zu %zu%n", c->name,
                              c->plugin, &c->base, &c->epochs, &c->batches,
                              &used),
                       5);
      snprintf(c->spec, sizeof c->spec, "%s ", line + used);
      for (char *p = c->spec; *p; p++)
        if (*p == '\n')
          *p = ' ';
    } else if (strncmp(line, "lr ", 3) == 0 && c) {
      char *s = line + 3, *end;
      for (double v = strtod(s, &end); end != s; v = strtod(s, &end)) {
        ck_assert_uint_lt(c->n_lr, MAX_LR);
        c->lr[c->n_lr++] = v;
        s = end;
      }
    } else {
      ck_abort_msg("sched_ref.txt: unexpected line: %s", line);
    }
  }
  fclose(f);
}

/* The value of key in spec (" k=v k=v "), in buf; 0 if absent. */
static int spec_get(const char *spec, const char *key, char *buf,
                    size_t size) {
  char pat[80];
  snprintf(pat, sizeof pat, " %s=", key);
  const char *at = strstr(spec, pat);
  if (!at)
    return 0;
  at += strlen(pat);
  const size_t len = strcspn(at, " ");
  ck_assert_uint_lt(len, size);
  memcpy(buf, at, len);
  buf[len] = '\0';
  return 1;
}

/* values[k] for table[k] from spec, else the default.  Strings are copied
 * into store (n entries of 64 bytes), which must outlive the values. */
static void values_from(const nn_option *table, const char *spec,
                        nn_value *values, char (*store)[64]) {
  for (size_t k = 0; table && table[k].key; k++) {
    char *text = store[k];
    if (!spec_get(spec, table[k].key, text, 64)) {
      ck_assert_msg(table[k].def != NULL, "%s is required", table[k].key);
      snprintf(text, 64, "%s", table[k].def);
    }
    nn_error e = {0};
    ck_assert_msg(nn_option_parse(&table[k], text, &values[k], &e) == NN_OK,
                  "%s = %s: %s", table[k].key, text, e.msg);
  }
}

/* The metrics bench/torch_sched_ref.py feeds the plateau cases. */
static double val_loss(size_t e) {
  const double m = e < 6 ? (double)e : 6.0;
  const double up = e > 10 ? (double)(e - 10) : 0.0;
  return 0.5 / (1 + 0.3 * m) + 0.004 * up + 0.01 * sin(2.1 * (double)e);
}

static double val_accuracy(size_t e) {
  const double m = e < 8 ? (double)e : 8.0;
  const double down = e > 12 ? (double)(e - 12) : 0.0;
  return 0.95 - 0.05 / (1 + m) - 0.001 * down + 0.002 * cos(1.7 * (double)e);
}

/* A schedule made the way nnrun makes one: registry-checked plugin,
 * option values from spec, warm-up from spec. */
typedef struct made {
  nn_loaded *loaded;
  nn_schedule *s;
  nn_value opts[16], warm[NN_WARMUP_N_OPTIONS];
  char store[16][64], wstore[NN_WARMUP_N_OPTIONS][64];
} made;

static void make_schedule(made *m, const char *plugin, const char *spec,
                          double base) {
  memset(m, 0, sizeof *m);
  nn_error e = {0};
  ck_assert_msg(nn_plugin_open(&m->loaded, plugin, NN_KIND_SCHEDULE,
                               test_plugin_path(), &e) == NN_OK,
                "%s: %s", plugin, e.msg);
  const nn_plugin *d = nn_loaded_desc(m->loaded);
  ck_assert_uint_le(nn_option_count(d->options), 16);
  values_from(d->options, spec, m->opts, m->store);
  values_from(nn_warmup_options, spec, m->warm, m->wstore);
  const nn_warmup w = nn_warmup_from(m->warm);
  ck_assert_msg(nn_schedule_create(&m->s, d, m->opts, &w, base, &e) == NN_OK,
                "%s: %s", plugin, e.msg);
}

static void free_schedule(made *m) {
  nn_schedule_free(m->s);
  nn_plugin_close(m->loaded);
}

/* One epoch as the trainer runs it: every batch's rate, then observe. */
static void run_epoch(nn_schedule *s, size_t e, size_t batches, double *lr) {
  nn_error err = {0};
  for (size_t b = 0; b < batches; b++)
    ck_assert_msg(nn_schedule_lr(s, e, b, batches, &lr[b], &err) == NN_OK,
                  "epoch %zu batch %zu: %s", e, b, err.msg);
  ck_assert_msg(nn_schedule_observe(s, e, 0.0, 0.0, val_loss(e),
                                    val_accuracy(e), &err) == NN_OK,
                "observe %zu: %s", e, err.msg);
}

START_TEST(test_matches_pytorch) {
  static ref_file r;
  ref_load(&r);
  ck_assert_uint_ge(r.n, 15);
  const char *plugins[] = {"step", "multistep", "exponential", "cosine",
                           "plateau"};
  for (size_t p = 0; p < 5; p++) {
    int warm = 0, plain = 0;
    for (size_t i = 0; i < r.n; i++)
      if (!strcmp(r.c[i].plugin, plugins[p])) {
        if (strstr(r.c[i].spec, " warmup_epochs="))
          warm++;
        else
          plain++;
      }
    ck_assert_msg(plain && warm, "%s needs cases with and without warm-up",
                  plugins[p]);
  }
  for (size_t i = 0; i < r.n; i++) {
    const ref_case *c = &r.c[i];
    ck_assert_uint_eq(c->n_lr, c->epochs * c->batches);
    made m;
    make_schedule(&m, c->plugin, c->spec, c->base);
    for (size_t e = 0; e < c->epochs; e++) {
      double lr[MAX_LR];
      run_epoch(m.s, e, c->batches, lr);
      for (size_t b = 0; b < c->batches; b++) {
        const double want = c->lr[e * c->batches + b];
        ck_assert_msg(fabs(lr[b] - want) <= 1e-12 * fabs(want),
                      "%s: epoch %zu batch %zu: %.17g, PyTorch %.17g",
                      c->name, e, b, lr[b], want);
      }
    }
    free_schedule(&m);
  }
}
END_TEST

/* Asking twice gives the same bits: lr changes nothing. */
START_TEST(test_lr_is_pure) {
  made m;
  make_schedule(&m, "plateau", " patience=1 ", 0.1);
  nn_error err = {0};
  for (size_t e = 0; e < 20; e++) {
    double a, b;
    ck_assert_int_eq(nn_schedule_lr(m.s, e, 0, 1, &a, &err), NN_OK);
    ck_assert_int_eq(nn_schedule_lr(m.s, e, 0, 1, &b, &err), NN_OK);
    ck_assert_mem_eq(&a, &b, sizeof a);
    double lr;
    run_epoch(m.s, e, 1, &lr);
  }
  free_schedule(&m);
}
END_TEST

/* A plateau's state copied into a fresh instance after some epochs (as a
 * resumed run's checkpoint does) continues with the same bits. */
START_TEST(test_plateau_state_resumes) {
  made a, b;
  const char *spec = " mode=min factor=0.5 patience=1 cooldown=2 ";
  make_schedule(&a, "plateau", spec, 0.1);
  make_schedule(&b, "plateau", spec, 0.1);
  double lr_a, lr_b;
  for (size_t e = 0; e < 12; e++)
    run_epoch(a.s, e, 1, &lr_a);
  size_t na, nb;
  nn_param *sa = nn_schedule_state(a.s, &na);
  nn_param *sb = nn_schedule_state(b.s, &nb);
  ck_assert_uint_eq(na, 4);
  ck_assert_uint_eq(nb, na);
  for (size_t k = 0; k < na; k++) {
    ck_assert_str_eq(sa[k].name, sb[k].name);
    ck_assert_ptr_null(sa[k].grad);
    gsl_matrix_memcpy(sb[k].value, sa[k].value);
  }
  int reduced = 0;
  for (size_t e = 12; e < 30; e++) {
    run_epoch(a.s, e, 1, &lr_a);
    run_epoch(b.s, e, 1, &lr_b);
    ck_assert_mem_eq(&lr_a, &lr_b, sizeof lr_a);
    reduced |= lr_a < 0.1;
  }
  ck_assert_msg(reduced, "the metrics never made the plateau reduce");
  /* A damaged state is refused, not used. */
  gsl_matrix_set(sb[2].value, 0, 0, 0.5); /* bad_epochs */
  nn_error err = {0};
  ck_assert_int_ne(nn_schedule_lr(b.s, 30, 0, 1, &lr_b, &err), NN_OK);
  ck_assert_str_ne(err.msg, "");
  free_schedule(&a);
  free_schedule(&b);
}
END_TEST

START_TEST(test_multistep_refuses) {
  const char *bad[] = {"5,3", "a", "3,", ",3", "3;5", "-1"};
  nn_loaded *l;
  nn_error e = {0};
  ck_assert_int_eq(nn_plugin_open(&l, "multistep", NN_KIND_SCHEDULE,
                                  test_plugin_path(), &e), NN_OK);
  const nn_schedule_ops *ops = nn_plugin_schedule_ops(nn_loaded_desc(l));
  ck_assert_ptr_nonnull(ops);
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    nn_value v[2] = {{.s = bad[i]}, {.r = 0.1}};
    void *self = (void *)1;
    e = (nn_error){0};
    ck_assert_msg(ops->create(v, 0.1, &self, &e) != NN_OK,
                  "milestones '%s' accepted", bad[i]);
    ck_assert_ptr_null(self);
    ck_assert_str_ne(e.msg, "");
  }
  nn_plugin_close(l);
}
END_TEST

/* An optimizer told the rate it already has steps with the same bits;
 * negative and non-finite rates are refused. */
START_TEST(test_optimizer_lr_extension) {
  const char *names[] = {"sgd", "adam", "adamw", "rmsprop"};
  for (size_t i = 0; i < 4; i++) {
    test_plugin p = test_plugin_load(names[i]);
    const nn_optim_ops *ops = p.desc->optim;
    gsl_matrix *w[2], *g[2];
    nn_param prm[2][1];
    void *o[2];
    nn_error e = {0};
    for (int k = 0; k < 2; k++) {
      w[k] = gsl_matrix_alloc(2, 3);
      g[k] = gsl_matrix_alloc(2, 3);
      for (size_t j = 0; j < 6; j++) {
        w[k]->data[j] = 0.1 * (double)j - 0.2;
        g[k]->data[j] = sin((double)j);
      }
      prm[k][0] = (nn_param){"W", w[k], g[k], NN_PARAM_WEIGHT};
      ck_assert_int_eq(ops->create(NULL, prm[k], 1, &o[k], &e), NN_OK);
    }
    const nn_optim_lr *x = ops->extension(o[1], NN_EXT_OPTIM_LR);
    ck_assert_msg(x != NULL, "%s has no learning-rate extension", names[i]);
    ck_assert_uint_ge(x->size, NN_EXT_SIZE_TO(nn_optim_lr, set));
    const double lr = x->get(o[1]);
    ck_assert(lr > 0.0);
    for (int s = 0; s < 5; s++) {
      ck_assert_int_eq(x->set(o[1], lr, &e), NN_OK);
      for (int k = 0; k < 2; k++)
        ck_assert_int_eq(ops->step(o[k], prm[k], 1, &e), NN_OK);
    }
    ck_assert_mem_eq(w[0]->data, w[1]->data, 6 * sizeof(double));
    ck_assert_int_ne(x->set(o[1], -1.0, &e), NN_OK);
    ck_assert_int_ne(x->set(o[1], NAN, &e), NN_OK);
    ck_assert_double_eq(x->get(o[1]), lr);
    ck_assert_int_eq(x->set(o[1], 0.5 * lr, &e), NN_OK);
    ck_assert_double_eq(x->get(o[1]), 0.5 * lr);
    for (int k = 0; k < 2; k++) {
      ops->destroy(o[k]);
      gsl_matrix_free(w[k]);
      gsl_matrix_free(g[k]);
    }
    test_plugin_unload(&p);
  }
}
END_TEST

/* metrics.csv keeps every bit of lr, and a file from before the column
 * reads with lr NaN. */
START_TEST(test_metrics_lr_column) {
  test_tmpdir_make("sched");
  char path[512];
  snprintf(path, sizeof path, "%s/metrics.csv", test_tmpdir);
  nn_epoch_metrics m[2] = {{0, 1.5, 0.25, 1.25, 0.5, 1.0, 0.1, 0.1 / 3.0},
                           {1, 1.0, 0.5, 1.0, 0.75, 1.0, 0.1, NAN}};
  nn_epoch_metrics back[2];
  size_t n;
  nn_error e = {0};
  ck_assert_int_eq(nn_metrics_write_csv(path, m, 2, &e), NN_OK);
  ck_assert_int_eq(nn_metrics_read_csv(path, back, 2, &n, &e), NN_OK);
  ck_assert_uint_eq(n, 2);
  ck_assert_mem_eq(&back[0].lr, &m[0].lr, sizeof m[0].lr);
  ck_assert(isnan(back[1].lr));
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs("epoch,train_loss,train_accuracy,val_loss,val_accuracy,"
        "train_seconds\n0,1.5,0.25,1.25,0.5,1.000000\n", f);
  fclose(f);
  ck_assert_int_eq(nn_metrics_read_csv(path, back, 2, &n, &e), NN_OK);
  ck_assert_uint_eq(n, 1);
  ck_assert_double_eq(back[0].val_accuracy, 0.5);
  ck_assert(isnan(back[0].lr));
  test_tmpdir_remove();
}
END_TEST

/* A descriptor built before ABI 2.2 ends before `schedule`: it is never
 * read, whatever follows the descriptor in memory. */
START_TEST(test_descriptor_size_rule) {
  nn_plugin d = {0};
  d.kind = NN_KIND_SCHEDULE;
  d.schedule = (const nn_schedule_ops *)&d; /* would be garbage */
  d.size = (uint32_t)offsetof(nn_plugin, schedule);
  ck_assert_ptr_null(nn_plugin_schedule_ops(&d));
  d.size = (uint32_t)sizeof d;
  ck_assert_ptr_nonnull(nn_plugin_schedule_ops(&d));
  d.kind = NN_KIND_OPTIMIZER;
  ck_assert_ptr_null(nn_plugin_schedule_ops(&d));
}
END_TEST

/* The warm-up's bounds, and a plugin that is not a schedule. */
START_TEST(test_create_refuses) {
  nn_loaded *l;
  nn_error e = {0};
  ck_assert_int_eq(nn_plugin_open(&l, "cosine", NN_KIND_SCHEDULE,
                                  test_plugin_path(), &e), NN_OK);
  nn_value v[2] = {{.i = 10}, {.r = 0.0}};
  nn_schedule *s = NULL;
  const nn_warmup bad = {2, 0.0, 0};
  ck_assert_int_ne(nn_schedule_create(&s, nn_loaded_desc(l), v, &bad, 0.1, &e),
                   NN_OK);
  ck_assert_ptr_null(s);
  ck_assert_int_ne(nn_schedule_create(&s, nn_loaded_desc(l), v, NULL, 0.0, &e),
                   NN_OK);
  /* eta_min at or above the base rate. */
  v[1].r = 0.2;
  ck_assert_int_ne(nn_schedule_create(&s, nn_loaded_desc(l), v, NULL, 0.1, &e),
                   NN_OK);
  ck_assert_str_ne(e.msg, "");
  nn_plugin_close(l);
  ck_assert_int_eq(nn_plugin_open(&l, "sgd", 0, test_plugin_path(), &e), NN_OK);
  ck_assert_int_ne(nn_schedule_create(&s, nn_loaded_desc(l), NULL, NULL, 0.1,
                                      &e), NN_OK);
  nn_plugin_close(l);
}
END_TEST

static Suite *sched_suite(void) {
  Suite *s = suite_create("sched");
  TCase *tc = tcase_create("pytorch");
  tcase_add_test(tc, test_matches_pytorch);
  suite_add_tcase(s, tc);
  tc = tcase_create("plugins");
  tcase_add_test(tc, test_lr_is_pure);
  tcase_add_test(tc, test_plateau_state_resumes);
  tcase_add_test(tc, test_multistep_refuses);
  tcase_add_test(tc, test_optimizer_lr_extension);
  tcase_add_test(tc, test_metrics_lr_column);
  tcase_add_test(tc, test_descriptor_size_rule);
  tcase_add_test(tc, test_create_refuses);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return test_run_suite(sched_suite()); }
