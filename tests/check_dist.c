/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Data-parallel training without MPI: ranks are threads of this process,
 * joined by a communicator made of a barrier and shared pointers.  The
 * reproducible sum adds in rank order on every rank, whatever the rank
 * count and buffer size; two ranks train the same model bit for bit alike,
 * and close to one process, also when a rank's slice of a batch is empty,
 * with the same bits whether they trade gradients by sendrecv or sum
 * them through nn_dist_sum. */
#include <config.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <nn/nn.h>

#include "testutil.h"

#define MAX_RANKS 4

/* What the ranks share: each posts its buffer, then all read. */
typedef struct shared {
  pthread_barrier_t bar;
  const void *post[MAX_RANKS];
} shared;

/* One rank's view (its nn_comm's ctx). */
typedef struct rank_ctx {
  shared *sh;
  size_t rank, size;
  int no_sendrecv;
} rank_ctx;

static int fake_allgather(void *ctx, const void *send, void *recv,
                          size_t bytes) {
  rank_ctx *c = ctx;
  c->sh->post[c->rank] = send;
  pthread_barrier_wait(&c->sh->bar);
  for (size_t r = 0; r < c->size; r++)
    memcpy((char *)recv + r * bytes, c->sh->post[r], bytes);
  pthread_barrier_wait(&c->sh->bar);
  return NN_OK;
}

static int fake_alltoall(void *ctx, const void *send, void *recv,
                         size_t bytes) {
  rank_ctx *c = ctx;
  c->sh->post[c->rank] = send;
  pthread_barrier_wait(&c->sh->bar);
  for (size_t r = 0; r < c->size; r++)
    memcpy((char *)recv + r * bytes,
           (const char *)c->sh->post[r] + c->rank * bytes, bytes);
  pthread_barrier_wait(&c->sh->bar);
  return NN_OK;
}

static int fake_bcast(void *ctx, void *buf, size_t bytes) {
  rank_ctx *c = ctx;
  if (c->rank == 0) c->sh->post[0] = buf;
  pthread_barrier_wait(&c->sh->bar);
  if (c->rank != 0) memcpy(buf, c->sh->post[0], bytes);
  pthread_barrier_wait(&c->sh->bar);
  return NN_OK;
}

static int fake_sendrecv(void *ctx, size_t peer, const void *send,
                         void *recv, size_t bytes) {
  rank_ctx *c = ctx;
  if (peer >= c->size || peer == c->rank) return NN_EINVAL;
  c->sh->post[c->rank] = send;
  pthread_barrier_wait(&c->sh->bar);
  memcpy(recv, c->sh->post[peer], bytes);
  pthread_barrier_wait(&c->sh->bar);
  return NN_OK;
}

/* With sendrecv unless c->no_sendrecv: two ranks then take the step's
 * other path (through nn_dist_sum), which must give the same bits. */
static nn_comm fake_comm(rank_ctx *c) {
  return (nn_comm){c->rank, c->size, c, fake_allgather, fake_alltoall,
                   fake_bcast, c->no_sendrecv ? NULL : fake_sendrecv};
}

/* Run fn(arg[r]) on `size` threads, one per rank. */
static void run_ranks(size_t size, void *(*fn)(void *), void *args,
                      size_t arg_size) {
  pthread_t th[MAX_RANKS];
  for (size_t r = 0; r < size; r++)
    ck_assert_int_eq(pthread_create(&th[r], NULL, fn,
                                    (char *)args + r * arg_size), 0);
  for (size_t r = 0; r < size; r++) pthread_join(th[r], NULL);
}

/* ---------------------------------------------------------------- sum */

typedef struct sum_job {
  rank_ctx ctx;
  double *buf; /* owned by the test */
  size_t n;
  int rc;
} sum_job;

static void *sum_rank(void *arg) {
  sum_job *j = arg;
  const nn_comm c = fake_comm(&j->ctx);
  double *scratch = malloc(nn_dist_scratch(&c, j->n) * sizeof *scratch);
  nn_error err = {0};
  j->rc = scratch ? nn_dist_sum(&c, j->buf, j->n, scratch, &err) : NN_ENOMEM;
  free(scratch);
  return NULL;
}

/* Values whose sum depends on the order of the additions: large ones that
 * cancel and small ones that vanish next to them. */
static double value(size_t rank, size_t i) {
  static const double v[] = {1e16, 1.0, -1e16, 0.5, 3.0e-8, -1.25};
  return v[(rank + i) % 6] * (1.0 + (double)i * 1e-3);
}

START_TEST(test_sum_in_rank_order) {
  static const size_t sizes[] = {2, 3, 4};
  static const size_t lens[] = {1, 2, 5, 1001};
  for (size_t a = 0; a < 3; a++)
    for (size_t b = 0; b < 4; b++) {
      const size_t size = sizes[a], n = lens[b];
      shared sh;
      pthread_barrier_init(&sh.bar, NULL, (unsigned)size);
      sum_job jobs[MAX_RANKS];
      for (size_t r = 0; r < size; r++) {
        jobs[r] = (sum_job){{&sh, r, size, 0}, malloc(n * sizeof(double)), n,
                            -1};
        ck_assert_ptr_nonnull(jobs[r].buf);
        for (size_t i = 0; i < n; i++) jobs[r].buf[i] = value(r, i);
      }
      run_ranks(size, sum_rank, jobs, sizeof jobs[0]);
      for (size_t i = 0; i < n; i++) {
        double want = 0;
        for (size_t r = 0; r < size; r++) want += value(r, i);
        for (size_t r = 0; r < size; r++) {
          ck_assert_int_eq(jobs[r].rc, NN_OK);
          ck_assert_msg(memcmp(&jobs[r].buf[i], &want, sizeof want) == 0,
                        "%zu ranks, %zu values: element %zu on rank %zu is "
                        "%.17g, the rank-order sum %.17g", size, n, i, r,
                        jobs[r].buf[i], want);
        }
      }
      for (size_t r = 0; r < size; r++) free(jobs[r].buf);
      pthread_barrier_destroy(&sh.bar);
    }
}
END_TEST

/* ------------------------------------------------------------ training */

typedef struct data {
  nn_loaded *model, *optim;
  nn_dataset all, test, train, val;
} data;

static void data_open(data *d) {
  memset(d, 0, sizeof *d);
  nn_error err = {0};
  ck_assert_msg(nn_plugin_open(&d->model, "twolayer", NN_KIND_MODEL,
                               test_plugin_path(), &err) == NN_OK, "%s",
                err.msg);
  ck_assert_msg(nn_plugin_open(&d->optim, "sgd", NN_KIND_OPTIMIZER,
                               test_plugin_path(), &err) == NN_OK, "%s",
                err.msg);
  ck_assert_msg(nn_mnist_load(test_data_dir(), "idx", &d->all, &d->test,
                              &err) == NN_OK, "%s", err.msg);
  nn_dataset_split(&d->all, 0.8, &d->train, &d->val);
}

static void data_close(data *d) {
  nn_dataset_free(&d->all);
  nn_dataset_free(&d->test);
  nn_plugin_close(d->model);
  nn_plugin_close(d->optim);
}

#define EPOCHS 2

typedef struct train_job {
  rank_ctx ctx; /* size 0: one process, no communicator */
  const data *d;
  size_t batch;
  double momentum;
  nn_epoch_metrics m[EPOCHS];
  uint64_t checksum;
  int rc;
  nn_error err;
} train_job;

static void *train_rank(void *arg) {
  train_job *j = arg;
  const nn_comm c = fake_comm(&j->ctx);
  const nn_value hidden[] = {{.i = 32}};
  /* With momentum a smaller rate (the steps add up over batches). */
  const nn_value sgd[] = {{.r = j->momentum != 0.0 ? 0.1 : 0.5},
                          {.r = 0.001}, {.r = j->momentum}, {.b = 0}};
  const nn_model_spec spec = {nn_loaded_desc(j->d->model), hidden, NULL, 0};
  const nn_train_opts o = {.epochs = EPOCHS, .batch_size = j->batch,
                           .seed = 7, .shuffle = 1, .threads = 1,
                           .comm = j->ctx.size ? &c : NULL};
  nn_trainer *t = NULL;
  j->rc = nn_trainer_create(&t, &spec, nn_loaded_desc(j->d->optim), sgd,
                            nn_dataset_shape(&j->d->all), 10, &o, &j->err);
  if (!j->rc) j->rc = nn_trainer_broadcast(t, &j->err);
  if (!j->rc)
    j->rc = nn_trainer_run(t, &j->d->train, &j->d->val, NULL, NULL, j->m,
                           NULL, &j->err);
  if (!j->rc) j->checksum = nn_trainer_checksum(t);
  nn_trainer_free(t);
  return NULL;
}

/* Two ranks on the fake communicator, with or without its sendrecv. */
static void train_pair(const data *d, size_t batch, double momentum,
                       int no_sendrecv, train_job ranks[2]) {
  shared sh;
  pthread_barrier_init(&sh.bar, NULL, 2);
  for (size_t r = 0; r < 2; r++)
    ranks[r] = (train_job){.ctx = {&sh, r, 2, no_sendrecv}, .d = d,
                           .batch = batch, .momentum = momentum};
  run_ranks(2, train_rank, ranks, sizeof ranks[0]);
  pthread_barrier_destroy(&sh.bar);
  for (size_t r = 0; r < 2; r++)
    ck_assert_msg(ranks[r].rc == NN_OK, "rank %zu: %s", r, ranks[r].err.msg);
}

/* batch 50: 48 steps; batch 7: a last batch of 6 split 3 + 3 and steps
 * of 3 + 4; batch 1: rank 0's slice of every step is empty.  Without
 * momentum the step is plain SGD, which the two-rank path takes in the
 * pass that adds the ranks' gradients; with it, after.  The path through
 * sendrecv and the one through nn_dist_sum give the same bits. */
START_TEST(test_two_ranks_train_alike) {
  static const size_t batches[] = {50, 7, 1};
  data d;
  data_open(&d);
  const size_t batch = batches[_i % 3];
  const double momentum = _i < 3 ? 0.0 : 0.9;
  train_job one = {.ctx = {NULL, 0, 0, 0}, .d = &d, .batch = batch,
                   .momentum = momentum};
  train_rank(&one);
  ck_assert_msg(one.rc == NN_OK, "%s", one.err.msg);
  train_job ranks[2], summed[2];
  train_pair(&d, batch, momentum, 0, ranks);
  train_pair(&d, batch, momentum, 1, summed);
  ck_assert_msg(ranks[0].checksum == ranks[1].checksum,
                "batch %zu: the ranks' weights differ", batch);
  ck_assert_msg(ranks[0].checksum == summed[0].checksum &&
                summed[0].checksum == summed[1].checksum,
                "batch %zu momentum %g: sendrecv and nn_dist_sum give other "
                "weights", batch, momentum);
  for (size_t e = 0; e < EPOCHS; e++) {
    const nn_epoch_metrics *a = &ranks[0].m[e], *b = &ranks[1].m[e],
                           *c = &summed[0].m[e], *s = &one.m[e];
    ck_assert(a->train_loss == b->train_loss && a->val_loss == b->val_loss &&
              a->train_accuracy == b->train_accuracy);
    ck_assert(memcmp(&a->train_loss, &c->train_loss, sizeof a->train_loss)
                  == 0 &&
              memcmp(&a->val_loss, &c->val_loss, sizeof a->val_loss) == 0 &&
              a->train_accuracy == c->train_accuracy);
    /* Only the order of the additions differs from one process. */
    ck_assert_msg(fabs(a->train_loss - s->train_loss) < 1e-9 &&
                  fabs(a->val_loss - s->val_loss) < 1e-9,
                  "batch %zu epoch %zu: loss %.17g (2 ranks) vs %.17g", batch,
                  e, a->train_loss, s->train_loss);
    ck_assert(fabs(a->val_accuracy - s->val_accuracy) <= 2.0 / 600);
  }
  ck_assert(ranks[0].m[EPOCHS - 1].val_accuracy > 0.2); /* chance: 0.1 */
  data_close(&d);
}
END_TEST

static Suite *dist_suite(void) {
  Suite *s = suite_create("dist");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_sum_in_rank_order);
  tcase_add_loop_test(tc, test_two_ranks_train_alike, 0, 6);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return test_run_suite(dist_suite()); }
