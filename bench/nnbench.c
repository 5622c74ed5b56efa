/* SPDX-License-Identifier: GPL-3.0-or-later */
/* nnbench: the measurements behind `make bench` that nnrun itself does not
 * print.
 *
 *   nnbench dgemm                     best dgemm GFLOP/s on this machine
 *                                     (square 1536, and the batch's own
 *                                     64x784x128 shape), at the thread
 *                                     count OPENBLAS_NUM_THREADS gives
 *   nnbench load DATA_DIR FORMAT [N]  best of N loads of MNIST (idx|csv)
 *   nnbench phases MODEL [HIDDEN] [EPOCHS] [DATA_DIR] [SAMPLES]
 *                                     the training loop of nnrun's trainer,
 *                                     timed per phase (gather, forward,
 *                                     softmax + cross-entropy, backward,
 *                                     optimizer step): the median epoch
 *   nnbench kernels [HIDDEN] [DATA_DIR]
 *                                     the first layer's sparse products on
 *                                     real batches against one core's FMA
 *                                     peak (kernels.c)
 *   nnbench split [DATA_DIR]          the first layer's work on 128 units
 *                                     split between two threads, with the
 *                                     halves apart or in shared matrices
 *                                     (split.c)
 *   nnbench pingpong                  the round trip of a cache line
 *                                     between CPUs 0 and 1 (pingpong.c)
 *
 * Output is one `key=value ...` line per measurement, for bench/run.  This
 * is a benchmark, not a test: it checks nothing about speed.  Plugins are
 * found like nnrun finds them ($NN_PLUGIN_PATH, bench/run sets it). */
#include <config.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <gsl/gsl_blas.h>
#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>

#include <nn/nn.h>

#include "nnbench.h"


static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, size_t n) {
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Best GFLOP/s of C = A B for an m x k times k x n product, over enough
 * repetitions to fill ~0.3 s per trial. */
static double dgemm_gflops(size_t m, size_t k, size_t n) {
  gsl_matrix *a = gsl_matrix_alloc(m, k), *b = gsl_matrix_alloc(k, n),
             *c = gsl_matrix_alloc(m, n);
  if (!a || !b || !c) return 0;
  gsl_matrix_set_all(a, 0.5);
  gsl_matrix_set_all(b, 0.25);
  gsl_matrix_set_zero(c);
  const double flop = 2.0 * (double)m * (double)n * (double)k;
  size_t reps = 1;
  double best = 0;
  for (int trial = 0; trial < 6; trial++) {
    double t0 = nn_now_seconds();
    for (size_t r = 0; r < reps; r++)
      gsl_blas_dgemm(CblasNoTrans, CblasNoTrans, 1.0, a, b, 0.0, c);
    double dt = nn_now_seconds() - t0;
    if (dt < 0.1 && trial < 5) { /* warm-up and calibration */
      reps = reps * 2 + (size_t)(0.3 / (dt / (double)reps + 1e-9));
      continue;
    }
    double g = flop * (double)reps / dt * 1e-9;
    if (g > best) best = g;
  }
  gsl_matrix_free(a);
  gsl_matrix_free(b);
  gsl_matrix_free(c);
  return best;
}

static int cmd_dgemm(void) {
  printf("dgemm square=1536 gflops=%.2f\n", dgemm_gflops(1536, 1536, 1536));
  printf("dgemm shape=64x784x128 gflops=%.2f\n", dgemm_gflops(64, 784, 128));
  return 0;
}

static int cmd_load(const char *dir, const char *format, int n) {
  double best = 1e30;
  for (int i = 0; i < n; i++) {
    nn_dataset train, test;
    nn_error err = {0, ""};
    double t0 = nn_now_seconds();
    if (nn_mnist_load(dir, format, &train, &test, &err)) return fail("load", &err);
    double dt = nn_now_seconds() - t0;
    if (dt < best) best = dt;
    nn_dataset_free(&train);
    nn_dataset_free(&test);
  }
  printf("load format=%s seconds=%.4f\n", format, best);
  return 0;
}

enum { P_GATHER, P_FORWARD, P_XENT, P_BACKWARD, P_STEP, P_N };
static const char *const phase_name[P_N] = {"gather", "forward", "xent",
                                            "backward", "step"};

/* Extension `id` of a plugin instance, or NULL when it has none; as the
 * core, a member counts only when the struct's size covers it. */
static const void *bench_ext(const void *(*extension)(void *, const char *),
                             void *self, const char *id) {
  return extension ? extension(self, id) : NULL;
}
#define BENCH_HAS(ext, type, member)                                         \
  ((ext) && (ext)->size >= offsetof(type, member) + sizeof (ext)->member &&  \
   (ext)->member)

/* The stepper of the fused step: straight to the optimizer's step in
 * parts. */
typedef struct bench_step_ctx {
  const nn_optim_parts *parts;
  const nn_optim_sgd_rule *rule;
  void *opt;
  nn_param *params;
  size_t np;
} bench_step_ctx;

static int bench_step_rows(void *ctx, size_t k, size_t r0, size_t r1,
                           nn_error *err) {
  bench_step_ctx *c = ctx;
  return c->parts->rows(c->opt, c->params, c->np, k, r0, r1, err);
}

/* The optimizer's plain SGD rule, handed to the model as the trainer hands
 * it. */
static int bench_step_sgd(void *ctx, size_t k, double *lr, double *reg) {
  bench_step_ctx *c = ctx;
  return c->rule->rule(c->opt, c->params, c->np, k, lr, reg);
}

/* The trainer's batch loop (nncore/train/trainer.c) with a clock between the
 * phases.  Timers cost ~20 ns each, well under 1 % of a batch. */
static int cmd_phases(const char *model_name, long hidden, int epochs,
                      const char *dir, size_t samples) {
  nn_error err = {0, ""};
  nn_dataset all, test, train, val;
  if (nn_mnist_load(dir, "idx", &all, &test, &err)) return fail("load", &err);
  nn_dataset_split(&all, 0.8, &train, &val);
  if (samples && samples < train.n) train.n = samples;
  char path[8192];
  nn_plugin_default_path(path, sizeof path);
  nn_loaded *mp = NULL, *op = NULL;
  if (nn_plugin_open(&mp, model_name, NN_KIND_MODEL, path, &err) ||
      nn_plugin_open(&op, "sgd", NN_KIND_OPTIMIZER, path, &err))
    return fail("plugin", &err);
  const nn_model_ops *mo = nn_loaded_desc(mp)->model;
  const nn_optim_ops *oo = nn_loaded_desc(op)->optim;
  const size_t bs = 64, n_in = train.dim, n_out = 10;
  nn_value mopt[1] = {{.i = hidden}};
  nn_value oopt[4] = {{.r = 0.1}, {.r = 0.001}, {.r = 0.0}};
  gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
  gsl_rng_set(rng, 1024);
  void *model = NULL, *opt = NULL;
  if (mo->create(mopt, (nn_shape){1, 1, (uint32_t)n_in}, n_out, bs, rng,
                 &model, &err))
    return fail("model", &err);
  size_t np;
  nn_param *params = mo->params(model, &np);
  if (oo->create(oopt, params, np, &opt, &err)) return fail("optimizer", &err);
  /* The paths the trainer takes with these plugins: the sparse batch, with
   * its transpose when the model asks for it, and the step inside
   * backward when both plugins can. */
  const nn_model_sparse *sp =
      bench_ext(mo->extension, model, NN_EXT_MODEL_SPARSE);
  const nn_model_fused_step *fs =
      bench_ext(mo->extension, model, NN_EXT_MODEL_FUSED_STEP);
  const nn_optim_parts *parts =
      bench_ext(oo->extension, opt, NN_EXT_OPTIM_PARTS);
  const nn_optim_sgd_rule *rule =
      bench_ext(oo->extension, opt, NN_EXT_OPTIM_SGD_RULE);
  const int sparse = BENCH_HAS(sp, nn_model_sparse, forward) &&
                     BENCH_HAS(sp, nn_model_sparse, backward);
  const int fused = sparse &&
                    BENCH_HAS(fs, nn_model_fused_step, backward_step) &&
                    BENCH_HAS(parts, nn_optim_parts, rows);
  const int transpose =
      fused || (sparse && (sp->flags & NN_SPARSE_TRANSPOSE));
  bench_step_ctx sctx = {parts, rule, opt, params, np};
  const nn_stepper st = {
      (uint32_t)sizeof(nn_stepper), &sctx, bench_step_rows, NULL,
      BENCH_HAS(rule, nn_optim_sgd_rule, rule) ? bench_step_sgd : NULL};
  /* The random stream of a model that draws in forward: one for the whole
   * run (the trainer's are per batch, which timings need not copy). */
  nn_context ctx = {(uint32_t)sizeof(nn_context), 1, 0, 0,
                    (mo->flags & NN_STOCHASTIC) ? rng : NULL};
  nn_csr_buffer Xs, Xt; /* the batch, and its transpose (see transpose) */
  gsl_matrix *X = gsl_matrix_alloc(bs, n_in), *S = gsl_matrix_alloc(bs, n_out);
  uint32_t *labels = malloc(bs * sizeof *labels);
  size_t *order = malloc(train.n * sizeof *order);
  double(*t)[P_N] = calloc((size_t)epochs, sizeof *t);
  double *total = calloc((size_t)epochs, sizeof *total);
  if (nn_csr_buffer_init(&Xs, bs, bs * n_in) ||
      nn_csr_buffer_init(&Xt, n_in, bs * n_in) || !X || !S || !labels ||
      !order || !t || !total)
    return fail("out of memory", NULL);
  size_t hits = 0;
  for (int e = 0; e < epochs; e++) {
    for (size_t i = 0; i < train.n; i++) order[i] = i;
    gsl_ran_shuffle(rng, order, train.n, sizeof *order);
    hits = 0;
    ctx.epoch = (uint64_t)e;
    double e0 = nn_now_seconds();
    for (size_t start = 0; start < train.n; start += bs) {
      size_t count = train.n - start < bs ? train.n - start : bs;
      ctx.batch = start / bs;
      gsl_matrix_view Xv = gsl_matrix_submatrix(X, 0, 0, count, n_in);
      gsl_matrix_view Sv = gsl_matrix_submatrix(S, 0, 0, count, n_out);
      double c0 = nn_now_seconds();
      int rc = sparse ? nn_dataset_gather_csr(&train, order + start, count,
                                              &Xs, labels)
                      : nn_dataset_gather(&train, order + start, count, X,
                                          labels);
      /* The trainer transposes with the gather (on its helper thread). */
      if (!rc && transpose) rc = nn_csr_transpose(&Xt, &Xs.csr);
      double c1 = nn_now_seconds();
      if (!rc)
        rc = sparse ? sp->forward(model, &ctx, &Xs.csr, &Sv.matrix, &err)
                    : mo->forward(model, &ctx, &Xv.matrix, &Sv.matrix, &err);
      double c2 = nn_now_seconds(), loss;
      size_t h = 0;
      if (!rc) rc = nn_softmax_xent(&Sv.matrix, labels, &Sv.matrix, &loss, &h);
      double c3 = nn_now_seconds();
      if (!rc && fused && BENCH_HAS(parts, nn_optim_parts, begin))
        rc = parts->begin(opt, params, np, &err);
      if (!rc)
        rc = fused    ? fs->backward_step(model, &Xs.csr, &Xt.csr, &Sv.matrix,
                                          &st, &err)
             : sparse ? sp->backward(model, &Xs.csr,
                                     transpose ? &Xt.csr : NULL, &Sv.matrix,
                                     &err)
                      : mo->backward(model, &Xv.matrix, &Sv.matrix, &err);
      if (!rc && fused && BENCH_HAS(parts, nn_optim_parts, end))
        rc = parts->end(opt, params, np, &err);
      double c4 = nn_now_seconds();
      if (!rc && !fused) rc = oo->step(opt, params, np, &err);
      double c5 = nn_now_seconds();
      if (rc) return fail("training", &err);
      hits += h;
      t[e][P_GATHER] += c1 - c0;
      t[e][P_FORWARD] += c2 - c1;
      t[e][P_XENT] += c3 - c2;
      t[e][P_BACKWARD] += c4 - c3;
      t[e][P_STEP] += c5 - c4;
    }
    total[e] = nn_now_seconds() - e0;
  }
  /* Epoch 0 is the warm-up (page faults, caches); medians of the rest. */
  const int first = epochs > 1 ? 1 : 0;
  const size_t n = (size_t)(epochs - first);
  double *col = malloc(n * sizeof *col);
  if (!col) return fail("out of memory", NULL);
  printf("phases model=%s hidden=%ld samples=%zu epochs=%zu fused=%d",
         model_name, hidden, train.n, n, fused);
  for (int p = 0; p < P_N; p++) {
    for (size_t e = 0; e < n; e++) col[e] = t[first + e][p];
    printf(" %s=%.4f", phase_name[p], median(col, n));
  }
  for (size_t e = 0; e < n; e++) col[e] = total[first + e];
  printf(" epoch=%.4f", median(col, n));
  qsort(col, n, sizeof *col, cmp_double);
  printf(" min=%.4f acc=%.4f\n", col[0], (double)hits / (double)train.n);
  free(col);
  free(t);
  free(total);
  free(order);
  free(labels);
  gsl_matrix_free(X);
  gsl_matrix_free(S);
  nn_csr_buffer_free(&Xs);
  nn_csr_buffer_free(&Xt);
  oo->destroy(opt);
  mo->destroy(model);
  gsl_rng_free(rng);
  nn_plugin_close(op);
  nn_plugin_close(mp);
  nn_dataset_free(&all);
  nn_dataset_free(&test);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && !strcmp(argv[1], "dgemm")) return cmd_dgemm();
  if (argc >= 4 && !strcmp(argv[1], "load"))
    return cmd_load(argv[2], argv[3], argc > 4 ? atoi(argv[4]) : 5);
  if (argc >= 3 && !strcmp(argv[1], "phases"))
    return cmd_phases(argv[2], argc > 3 ? atol(argv[3]) : 128,
                      argc > 4 ? atoi(argv[4]) : 6, argc > 5 ? argv[5] : "data",
                      argc > 6 ? (size_t)atol(argv[6]) : 0);
  if (argc >= 2 && !strcmp(argv[1], "kernels"))
    return nnbench_kernels(argc > 3 ? argv[3] : "data",
                           argc > 2 ? atol(argv[2]) : 128);
  if (argc >= 2 && !strcmp(argv[1], "split"))
    return nnbench_split(argc > 2 ? argv[2] : "data");
  if (argc >= 2 && !strcmp(argv[1], "pingpong"))
    return nnbench_pingpong();
  fprintf(stderr,
          "usage: nnbench dgemm\n"
          "       nnbench load DATA_DIR idx|csv [N]\n"
          "       nnbench phases MODEL [HIDDEN [EPOCHS [DATA_DIR [SAMPLES]]]]\n"
          "       nnbench kernels [HIDDEN [DATA_DIR]]\n"
          "       nnbench split [DATA_DIR]\n"
          "       nnbench pingpong\n");
  return 2;
}
