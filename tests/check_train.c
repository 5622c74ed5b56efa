/* The training loop on the shipped MNIST fixture: learning happens,
 * results reproduce bit for bit from the seed, the best epoch is kept, and
 * metrics.csv is written as documented. */
#include <config.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gsl/gsl_blas.h>
#include <gsl/gsl_errno.h>

#include <nn/nn.h>

#include "testutil.h"

typedef struct fixture {
  nn_loaded *model, *optim;
  nn_dataset all, test, train, val;
} fixture;

static void fixture_open(fixture *f, const char *model) {
  memset(f, 0, sizeof *f);
  nn_error err = {0};
  ck_assert_msg(nn_plugin_open(&f->model, model, NN_KIND_MODEL, test_plugin_path(),
                               &err) == NN_OK, "%s", err.msg);
  ck_assert_msg(nn_plugin_open(&f->optim, "sgd", NN_KIND_OPTIMIZER,
                               test_plugin_path(), &err) == NN_OK, "%s", err.msg);
  ck_assert_msg(nn_mnist_load(test_data_dir(), "idx", &f->all, &f->test, &err) ==
                NN_OK, "%s", err.msg);
  nn_dataset_split(&f->all, 0.8, &f->train, &f->val);
}

static void fixture_close(fixture *f) {
  nn_dataset_free(&f->all);
  nn_dataset_free(&f->test);
  nn_plugin_close(f->model);
  nn_plugin_close(f->optim);
}

/* Model options: hidden_size for twolayer; softmax has none. */
static const nn_value model_values[] = {{.i = 128}};

/* Create a trainer from these descriptors and options and run it to the
 * end; returns the trainer (caller frees). */
static nn_trainer *train_with(fixture *f, const nn_plugin *model,
                              const nn_value *model_opts,
                              const nn_plugin *optim, const nn_value *sgd,
                              const nn_train_opts *o, nn_epoch_metrics *m) {
  nn_trainer *t = NULL;
  nn_error err = {0};
  ck_assert_msg(nn_trainer_create(&t, model, model_opts, optim, sgd,
                                  f->all.dim, 10, o, &err) == NN_OK,
                "%s", err.msg);
  size_t n_run = 0;
  ck_assert_msg(nn_trainer_run(t, &f->train, &f->val, NULL, NULL, m, &n_run,
                               &err) == NN_OK, "%s", err.msg);
  ck_assert_uint_eq(n_run, o->epochs);
  return t;
}

/* Train `epochs` epochs with the fixture's plugins; returns the trainer
 * (caller frees). */
static nn_trainer *train_threads(fixture *f, size_t epochs, size_t batch,
                                 double lr, uint64_t seed, size_t threads,
                                 nn_epoch_metrics *m) {
  nn_value sgd[3] = {{.r = lr}, {.r = 0.001}, {.r = 0.0}};
  nn_train_opts o = {.epochs = epochs, .batch_size = batch, .seed = seed,
                     .shuffle = 1, .threads = threads};
  return train_with(f, nn_loaded_desc(f->model), model_values,
                    nn_loaded_desc(f->optim), sgd, &o, m);
}

static nn_trainer *train(fixture *f, size_t epochs, size_t batch, double lr,
                         uint64_t seed, nn_epoch_metrics *m) {
  return train_threads(f, epochs, batch, lr, seed, 1, m);
}

/* One epoch on the fixture's 2400 training examples.  softmax uses the
 * course's defaults (batch 64, learning rate 0.1: 38 steps).  twolayer's
 * sigmoid layer, started at 0.001 N(0,1), needs a few hundred steps before
 * its hidden units differ, so it gets batch 8 and rate 0.5 (300 steps).
 * Measured over seeds 1-10 these reach 0.49-0.75 (softmax) and 0.62-0.71
 * (twolayer) validation accuracy. */
static void one_epoch_learns(const char *model, size_t batch, double lr) {
  fixture f;
  fixture_open(&f, model);
  nn_epoch_metrics m[1];
  nn_trainer *t = train(&f, 1, batch, lr, 1024, m);
  ck_assert_msg(m[0].val_accuracy > 0.3, "%s: val accuracy %.4f", model,
                m[0].val_accuracy);
  ck_assert_msg(m[0].train_accuracy > 0.1, "%s: train accuracy %.4f", model,
                m[0].train_accuracy);
  ck_assert(isfinite(m[0].train_loss) && m[0].train_loss < log(10.0) + 1e-9);
  double loss, acc;
  nn_error err = {0};
  ck_assert_int_eq(nn_trainer_evaluate(t, &f.test, &loss, &acc, &err), NN_OK);
  ck_assert_msg(acc > 0.3, "%s: test accuracy %.4f", model, acc);
  nn_trainer_free(t);
  fixture_close(&f);
}

START_TEST(test_one_epoch_lifts_twolayer_above_0_3) {
  one_epoch_learns("twolayer", 8, 0.5);
}
END_TEST

START_TEST(test_one_epoch_lifts_softmax_above_0_3) {
  one_epoch_learns("softmax", 64, 0.1);
}
END_TEST

START_TEST(test_same_seed_bit_identical) {
  fixture f;
  fixture_open(&f, "twolayer");
  nn_epoch_metrics a[3], b[3], c[3];
  nn_trainer_free(train(&f, 3, 32, 0.1, 7, a));
  nn_trainer_free(train(&f, 3, 32, 0.1, 7, b));
  nn_trainer_free(train(&f, 3, 32, 0.1, 8, c));
  int differs = 0;
  for (size_t e = 0; e < 3; e++) {
    ck_assert_mem_eq(&a[e].train_loss, &b[e].train_loss, sizeof(double));
    ck_assert_mem_eq(&a[e].train_accuracy, &b[e].train_accuracy, sizeof(double));
    ck_assert_mem_eq(&a[e].val_loss, &b[e].val_loss, sizeof(double));
    ck_assert_mem_eq(&a[e].val_accuracy, &b[e].val_accuracy, sizeof(double));
    differs |= a[e].train_loss != c[e].train_loss;
  }
  ck_assert_msg(differs, "another seed gave the same losses");
  fixture_close(&f);
}
END_TEST

START_TEST(test_best_epoch_is_restored) {
  fixture f;
  fixture_open(&f, "twolayer");
  nn_epoch_metrics m[4];
  nn_trainer *t = train(&f, 4, 32, 0.5, 3, m);
  long best = 0;
  for (long e = 1; e < 4; e++)
    if (m[e].val_accuracy > m[best].val_accuracy) best = e; /* strictly greater */
  ck_assert_int_eq(nn_trainer_restore_best(t), best);
  double loss, acc;
  nn_error err = {0};
  ck_assert_int_eq(nn_trainer_evaluate(t, &f.val, &loss, &acc, &err), NN_OK);
  ck_assert(acc == m[best].val_accuracy);
  ck_assert(loss == m[best].val_loss);
  nn_trainer_free(t);
  fixture_close(&f);
}
END_TEST

START_TEST(test_epoch_loss_is_mean_of_batch_losses) {
  /* Evaluating in batches of 64 over 600 examples: 10 batches (nine of 64,
   * one of 24); the loss is their plain mean, as in the course. */
  fixture f;
  fixture_open(&f, "softmax");
  nn_epoch_metrics m[1];
  nn_trainer *t = train(&f, 1, 64, 0.1, 1, m);
  double loss, acc;
  nn_error err = {0};
  ck_assert_int_eq(nn_trainer_evaluate(t, &f.val, &loss, &acc, &err), NN_OK);
  /* Recompute by hand with the model's forward and the core's loss. */
  size_t n_params;
  (void)nn_trainer_params(t, &n_params);
  ck_assert_uint_eq(n_params, 1);
  double sum = 0;
  size_t hits = 0, batches = 0;
  gsl_matrix *X = gsl_matrix_alloc(64, f.val.dim);
  gsl_matrix *S = gsl_matrix_alloc(64, 10);
  gsl_matrix *W = nn_trainer_params(t, &n_params)[0].value;
  size_t idx[64];
  uint32_t labels[64];
  for (size_t s = 0; s < f.val.n; s += 64, batches++) {
    size_t c = f.val.n - s < 64 ? f.val.n - s : 64;
    for (size_t k = 0; k < c; k++) idx[k] = s + k;
    ck_assert_int_eq(nn_dataset_gather(&f.val, idx, c, X, labels), NN_OK);
    gsl_matrix_view Xv = gsl_matrix_submatrix(X, 0, 0, c, f.val.dim);
    gsl_matrix_view Sv = gsl_matrix_submatrix(S, 0, 0, c, 10);
    gsl_blas_dgemm(CblasNoTrans, CblasNoTrans, 1.0, &Xv.matrix, W, 0.0, &Sv.matrix);
    nn_relu(&Sv.matrix, &Sv.matrix);
    double l;
    size_t h;
    ck_assert_int_eq(nn_softmax_xent(&Sv.matrix, labels, NULL, &l, &h), NN_OK);
    sum += l;
    hits += h;
  }
  ck_assert_uint_eq(batches, 10);
  ck_assert_double_eq_tol(loss, sum / 10.0, 1e-12);
  ck_assert(acc == (double)hits / 600.0);
  gsl_matrix_free(X);
  gsl_matrix_free(S);
  nn_trainer_free(t);
  fixture_close(&f);
}
END_TEST

START_TEST(test_metrics_csv) {
  char dir[] = "/tmp/nn_check_train_XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/metrics.csv", dir);
  nn_epoch_metrics m[2] = {{0, 2.5, 0.25, 2.0, 0.5, 1.5, 0.1},
                           {1, 1.0 / 3.0, 0.75, 0.125, 0.875, 2.0, 0.1}};
  nn_error err = {0};
  ck_assert_int_eq(nn_metrics_write_csv(path, m, 2, &err), NN_OK);
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  char line[512];
  ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
  ck_assert_str_eq(line, "epoch,train_loss,train_accuracy,val_loss,val_accuracy,"
                         "train_seconds\n");
  ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
  ck_assert_str_eq(line, "0,2.5,0.25,2,0.5,1.500000\n");
  ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
  double loss;
  ck_assert_int_eq(sscanf(line, "1,%lf,", &loss), 1);
  ck_assert(loss == 1.0 / 3.0); /* every bit survives the text round trip */
  ck_assert_ptr_null(fgets(line, sizeof line, f));
  fclose(f);
  /* An unwritable directory fails cleanly and leaves nothing behind. */
  ck_assert_int_eq(nn_metrics_write_csv("/nonexistent/dir/metrics.csv", m, 2, &err),
                   NN_EIO);
  ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/dir/metrics.csv"));
  unlink(path);
  ck_assert_int_eq(rmdir(dir), 0); /* no temporary file left */
}
END_TEST

START_TEST(test_bad_inputs_are_errors) {
  fixture f;
  fixture_open(&f, "softmax");
  nn_value sgd[3] = {{.r = 0.1}, {.r = 0.0}, {.r = 0.0}};
  nn_train_opts o = {.epochs = 1, .batch_size = 8, .seed = 1, .shuffle = 1};
  nn_trainer *t = NULL;
  nn_error err = {0};
  /* Wrong kinds in the wrong slots. */
  ck_assert_int_eq(nn_trainer_create(&t, nn_loaded_desc(f.optim), model_values,
                                     nn_loaded_desc(f.model), sgd, 784, 10, &o,
                                     &err), NN_EINVAL);
  ck_assert_ptr_null(t);
  ck_assert_int_eq(nn_trainer_create(&t, nn_loaded_desc(f.model), model_values,
                                     nn_loaded_desc(f.optim), sgd, 783, 10, &o,
                                     &err), NN_OK);
  /* A dataset with 784 features for a model built for 783. */
  ck_assert_int_eq(nn_trainer_run(t, &f.train, &f.val, NULL, NULL, NULL, NULL,
                                  &err), NN_EINVAL);
  ck_assert_ptr_nonnull(strstr(err.msg, "784"));
  nn_trainer_free(t);
  nn_trainer_free(NULL);
  fixture_close(&f);
}
END_TEST

/* Training with the given descriptors (copies with their ops tables cut
 * short stand for plugins built for an older ABI). */
static nn_trainer *train_descs(fixture *f, const nn_plugin *model,
                               const nn_value *model_opts,
                               const nn_plugin *optim, size_t threads,
                               double momentum, nn_epoch_metrics *m) {
  nn_value sgd[3] = {{.r = 0.1}, {.r = 0.001}, {.r = momentum}};
  nn_train_opts o = {.epochs = 2, .batch_size = 64, .seed = 11,
                     .shuffle = 1, .threads = threads};
  return train_with(f, model, model_opts, optim, sgd, &o, m);
}

static void same_training(nn_trainer *t1, const nn_epoch_metrics *a,
                          nn_trainer *t2, const nn_epoch_metrics *b) {
  for (size_t e = 0; e < 2; e++) {
    ck_assert_mem_eq(&a[e].train_loss, &b[e].train_loss, sizeof(double));
    ck_assert_mem_eq(&a[e].train_accuracy, &b[e].train_accuracy, sizeof(double));
    ck_assert_mem_eq(&a[e].val_loss, &b[e].val_loss, sizeof(double));
    ck_assert_mem_eq(&a[e].val_accuracy, &b[e].val_accuracy, sizeof(double));
  }
  size_t n1, n2;
  nn_param *p1 = nn_trainer_params(t1, &n1), *p2 = nn_trainer_params(t2, &n2);
  ck_assert_uint_eq(n1, n2);
  for (size_t k = 0; k < n1; k++)
    ck_assert(gsl_matrix_equal(p1[k].value, p2[k].value));
}

/* threads = 2 gathers batches on a second thread: the same numbers, bit
 * for bit, for both models (a last batch of 2400 % 64 = 32 examples
 * included), in training, validation and a later evaluation. */
static void threads_same(const char *model) {
  fixture f;
  fixture_open(&f, model);
  nn_epoch_metrics a[2], b[2];
  nn_trainer *t1 = train_threads(&f, 2, 64, 0.1, 5, 1, a);
  nn_trainer *t2 = train_threads(&f, 2, 64, 0.1, 5, 2, b);
  same_training(t1, a, t2, b);
  double l1, l2, c1, c2;
  nn_error err = {0};
  ck_assert_int_eq(nn_trainer_evaluate(t1, &f.test, &l1, &c1, &err), NN_OK);
  ck_assert_int_eq(nn_trainer_evaluate(t2, &f.test, &l2, &c2, &err), NN_OK);
  ck_assert_mem_eq(&l1, &l2, sizeof(double));
  ck_assert_mem_eq(&c1, &c2, sizeof(double));
  nn_trainer_free(t1);
  nn_trainer_free(t2);
  fixture_close(&f);
}

/* desc's optimizer as if built for an older ABI minor: its ops table,
 * copied into *ops, ends at byte `size` (what lies beyond is not read). */
static nn_plugin optim_cut(const nn_plugin *desc, nn_optim_ops *ops,
                           size_t size) {
  *ops = *desc->optim;
  ops->size = (uint32_t)size;
  nn_plugin p = *desc;
  p.optim = ops;
  return p;
}

/* ABI 1.4: with 270 hidden units W1 (1.7 MB) is larger than L2, so
 * twolayer takes the banded step with the next batch's forward inside it
 * (bands of 128 and 142 columns: the last 14 join the second band), and
 * with sgd's rule (1.5) steps W1 inside each band's gradient product.  It
 * must give the bits of the 1.3 path (a model table without
 * backward_step_forward), of the pipeline without bands or rule (an
 * optimizer table without step_block), of the bands with their scratch
 * gradient blocks (a 1.4 optimizer table, without sgd_rule), and of itself
 * with the helper thread (three batch slots). */
START_TEST(test_banded_step_same) {
  fixture f;
  fixture_open(&f, "twolayer");
  const nn_value hidden[1] = {{.i = 270}};
  const nn_plugin *model = nn_loaded_desc(f.model), *optim = nn_loaded_desc(f.optim);
  ck_assert(nn_plugins_pipeline(model, optim));
  ck_assert(nn_plugin_steps_blocks(optim));
  nn_model_ops mo13 = *model->model;
  mo13.size = (uint32_t)offsetof(nn_model_ops, backward_step_forward);
  nn_plugin model13 = *model;
  model13.model = &mo13;
  nn_optim_ops oo13, oo14;
  nn_plugin optim13 =
      optim_cut(optim, &oo13, offsetof(nn_optim_ops, step_block));
  nn_plugin optim14 =
      optim_cut(optim, &oo14, offsetof(nn_optim_ops, sgd_rule));
  ck_assert(!nn_plugins_pipeline(&model13, optim));
  ck_assert(nn_plugins_fuse_step(&model13, optim));
  ck_assert(nn_plugins_pipeline(model, &optim13));
  ck_assert(!nn_plugin_steps_blocks(&optim13));
  ck_assert(nn_plugin_tells_sgd(optim));
  ck_assert(!nn_plugin_tells_sgd(&optim14));
  ck_assert(nn_plugin_steps_blocks(&optim14));

  nn_epoch_metrics a[2], b[2], c[2], d[2], h[2];
  nn_trainer *banded = train_descs(&f, model, hidden, optim, 1, 0.0, a);
  nn_trainer *rows = train_descs(&f, &model13, hidden, optim, 1, 0.0, b);
  nn_trainer *unbanded = train_descs(&f, model, hidden, &optim13, 1, 0.0, c);
  nn_trainer *helper = train_descs(&f, model, hidden, optim, 2, 0.0, d);
  same_training(banded, a, rows, b);
  same_training(banded, a, unbanded, c);
  same_training(banded, a, helper, d);
  nn_trainer *scratch = train_descs(&f, model, hidden, &optim14, 1, 0.0, h);
  same_training(banded, a, scratch, h);
  nn_trainer_free(scratch);
  /* With momentum, whose velocities take the padded rows too. */
  nn_epoch_metrics e[2], g[2];
  nn_trainer *mb = train_descs(&f, model, hidden, optim, 1, 0.9, e);
  nn_trainer *mr = train_descs(&f, &model13, hidden, optim, 1, 0.9, g);
  same_training(mb, e, mr, g);
  nn_trainer_free(mb);
  nn_trainer_free(mr);
  /* And the steps did change the weights (same seed, no training). */
  nn_value sgd[3] = {{.r = 0.1}, {.r = 0.001}, {.r = 0.0}};
  nn_train_opts o = {.epochs = 2, .batch_size = 64, .seed = 11, .shuffle = 1};
  nn_trainer *fresh = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_trainer_create(&fresh, model, hidden, optim, sgd,
                                     f.all.dim, 10, &o, &err), NN_OK);
  size_t n0, n1;
  nn_param *p0 = nn_trainer_params(fresh, &n0);
  nn_param *p1 = nn_trainer_params(banded, &n1);
  for (size_t k = 0; k < n0; k++)
    ck_assert(!gsl_matrix_equal(p0[k].value, p1[k].value));
  /* W1's rows are padded at this size (twolayer_row_stride); weights
   * saved from it load back exactly into another model. */
  ck_assert_uint_gt(p1[0].value->tda, p1[0].value->size2);
  char path[] = "/tmp/nn_check_banded_XXXXXX";
  const int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  close(fd);
  ck_assert_msg(nn_safetensors_save(path, p1, n1, NN_DTYPE_F64, NULL, &err) ==
                    NN_OK, "%s", err.msg);
  ck_assert_msg(nn_safetensors_load_params(path, p0, n0, &err) == NN_OK, "%s",
                err.msg);
  unlink(path);
  for (size_t k = 0; k < n0; k++)
    ck_assert(gsl_matrix_equal(p0[k].value, p1[k].value));
  nn_trainer_free(fresh);
  nn_trainer_free(banded);
  nn_trainer_free(rows);
  nn_trainer_free(unbanded);
  nn_trainer_free(helper);
  fixture_close(&f);
}
END_TEST

START_TEST(test_cpus_available) {
  const size_t n = nn_cpus_available();
  ck_assert_uint_ge(n, 1);
  ck_assert_uint_le(n, (size_t)sysconf(_SC_NPROCESSORS_CONF));
}
END_TEST

START_TEST(test_threads_same_twolayer) { threads_same("twolayer"); }
END_TEST

START_TEST(test_threads_same_softmax) { threads_same("softmax"); }
END_TEST

/* A model that breaks the fused-step contract (tests/fixtures/bad_stepper)
 * stops the run with NN_EPLUGIN and a message naming it. */
static void bad_stepper_caught(int64_t mode, const char *want) {
  fixture f;
  fixture_open(&f, "softmax");
  char path[4096];
  const char *d = getenv("NN_FIXTURE_DIR");
  snprintf(path, sizeof path, "%s/bad_stepper.so",
           d && *d ? d : "tests/fixtures/.libs");
  nn_loaded *bad = NULL;
  nn_error err = {0};
  ck_assert_msg(nn_plugin_open(&bad, path, NN_KIND_MODEL, NULL, &err) == NN_OK,
                "%s", err.msg);
  const nn_value opts[1] = {{.i = mode}};
  nn_value sgd[3] = {{.r = 0.1}, {.r = 0.0}, {.r = 0.0}};
  nn_train_opts o = {.epochs = 1, .batch_size = 64, .seed = 1, .shuffle = 1};
  nn_trainer *t = NULL;
  ck_assert_int_eq(nn_trainer_create(&t, nn_loaded_desc(bad), opts,
                                     nn_loaded_desc(f.optim), sgd, 784, 10, &o,
                                     &err), NN_OK);
  ck_assert_int_eq(nn_trainer_run(t, &f.train, &f.val, NULL, NULL, NULL, NULL,
                                  &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, want) && strstr(err.msg, "bad_stepper"), "%s",
                err.msg);
  nn_trainer_free(t);
  nn_plugin_close(bad);
  fixture_close(&f);
}

START_TEST(test_fused_step_skipped_rows) {
  bad_stepper_caught(0, "stepped 3920 of the 7840 elements of parameter W");
}
END_TEST

START_TEST(test_fused_step_rows_out_of_range) {
  bad_stepper_caught(1, "rows [0, 785) x columns [0, 10) of parameter 0");
}
END_TEST

int main(void) {
  gsl_set_error_handler_off();
  Suite *s = suite_create("train");
  TCase *tc = tcase_create("train");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_one_epoch_lifts_twolayer_above_0_3);
  tcase_add_test(tc, test_one_epoch_lifts_softmax_above_0_3);
  tcase_add_test(tc, test_same_seed_bit_identical);
  tcase_add_test(tc, test_best_epoch_is_restored);
  tcase_add_test(tc, test_epoch_loss_is_mean_of_batch_losses);
  tcase_add_test(tc, test_metrics_csv);
  tcase_add_test(tc, test_bad_inputs_are_errors);
  tcase_add_test(tc, test_cpus_available);
  tcase_add_test(tc, test_threads_same_twolayer);
  tcase_add_test(tc, test_threads_same_softmax);
  tcase_add_test(tc, test_banded_step_same);
  tcase_add_test(tc, test_fused_step_skipped_rows);
  tcase_add_test(tc, test_fused_step_rows_out_of_range);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
