/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Data-parallel training without MPI: ranks are threads of this process,
 * joined by a communicator made of a barrier and shared pointers.  The
 * reproducible sum adds in rank order on every rank, whatever the rank
 * count and buffer size; two ranks train the same model bit for bit alike,
 * and close to one process, also when a rank's slice of a batch is empty,
 * with the same bits whether they trade gradients by sendrecv, sum them
 * through nn_dist_sum or read them from each other's shared memory; and
 * the shared memory's exchange stops ranks that trade different
 * parameters. */
#include <config.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <nn/nn.h>

#include "dist/shm.h"
#include "testutil.h"

#define MAX_RANKS 4

/* What the ranks share: each posts its buffer, then all read. */
typedef struct shared {
  pthread_barrier_t bar;
  const void *post[MAX_RANKS];
  void *seg[MAX_RANKS]; /* fake_shared's segments, owned by the test */
} shared;

/* How a step trades gradients: by sendrecv (two ranks), through
 * nn_dist_sum, or through shared memory. */
enum { PATH_SENDRECV, PATH_SUM, PATH_SHARED };

/* One rank's view (its nn_comm's ctx). */
typedef struct rank_ctx {
  shared *sh;
  size_t rank, size;
  int path;
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

/* Threads share all their memory: each rank's segment is its own
 * allocation, posted to the others (freed by the test after the run). */
static int fake_shared(void *ctx, size_t bytes, void **seg) {
  rank_ctx *c = ctx;
  const size_t size = (bytes + 63) / 64 * 64;
  void *mine = aligned_alloc(64, size);
  if (mine) memset(mine, 0, size);
  free(c->sh->seg[c->rank]);
  c->sh->seg[c->rank] = mine;
  pthread_barrier_wait(&c->sh->bar);
  int ok = 1;
  for (size_t r = 0; r < c->size; r++) {
    seg[r] = c->sh->seg[r];
    ok &= seg[r] != NULL;
  }
  pthread_barrier_wait(&c->sh->bar);
  return ok ? NN_OK : NN_ENOMEM;
}

/* The path's communicator: each must give the same bits. */
static nn_comm fake_comm(rank_ctx *c) {
  return (nn_comm){c->rank,
                   c->size,
                   c,
                   fake_allgather,
                   fake_alltoall,
                   fake_bcast,
                   c->path == PATH_SENDRECV ? fake_sendrecv : NULL,
                   c->path == PATH_SHARED ? fake_shared : NULL};
}

static void shared_free(shared *sh) {
  for (size_t r = 0; r < MAX_RANKS; r++) {
    free(sh->seg[r]);
    sh->seg[r] = NULL;
  }
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
      shared sh = {0};
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

/* `size` ranks on the fake communicator, trading by `path`. */
static void train_ranks(const data *d, size_t batch, double momentum,
                        int path, size_t size, train_job *ranks) {
  shared sh = {0};
  pthread_barrier_init(&sh.bar, NULL, (unsigned)size);
  for (size_t r = 0; r < size; r++)
    ranks[r] = (train_job){.ctx = {&sh, r, size, path}, .d = d,
                           .batch = batch, .momentum = momentum};
  run_ranks(size, train_rank, ranks, sizeof ranks[0]);
  pthread_barrier_destroy(&sh.bar);
  shared_free(&sh);
  for (size_t r = 0; r < size; r++)
    ck_assert_msg(ranks[r].rc == NN_OK, "rank %zu: %s", r, ranks[r].err.msg);
}

/* Bit for bit the same runs: weights and every epoch's numbers. */
static void assert_same_run(const train_job *a, const train_job *b,
                            const char *what) {
  ck_assert_msg(a->checksum == b->checksum, "%s: other weights", what);
  for (size_t e = 0; e < EPOCHS; e++) {
    const nn_epoch_metrics *x = &a->m[e], *y = &b->m[e];
    ck_assert_msg(memcmp(&x->train_loss, &y->train_loss,
                         sizeof x->train_loss) == 0 &&
                      memcmp(&x->val_loss, &y->val_loss,
                             sizeof x->val_loss) == 0 &&
                      x->train_accuracy == y->train_accuracy &&
                      x->val_accuracy == y->val_accuracy,
                  "%s: epoch %zu differs", what, e);
  }
}

/* batch 50: 48 steps; batch 7: a last batch of 6 split 3 + 3 and steps
 * of 3 + 4; batch 1: rank 0's slice of every step is empty.  Without
 * momentum the step is plain SGD, which the two-rank paths take in the
 * pass that adds the ranks' gradients; with it, after.  The paths through
 * sendrecv, nn_dist_sum and shared memory give the same bits. */
START_TEST(test_two_ranks_train_alike) {
  static const size_t batches[] = {50, 7, 1};
  data d;
  data_open(&d);
  const size_t batch = batches[_i % 3];
  const double momentum = (_i / 3) % 2 ? 0.9 : 0.0;
  char what[64];
  snprintf(what, sizeof what, "batch %zu momentum %g", batch, momentum);
  train_job one = {.ctx = {NULL, 0, 0, 0}, .d = &d, .batch = batch,
                   .momentum = momentum};
  train_rank(&one);
  ck_assert_msg(one.rc == NN_OK, "%s", one.err.msg);
  train_job ranks[2], summed[2], shm[2];
  train_ranks(&d, batch, momentum, PATH_SENDRECV, 2, ranks);
  train_ranks(&d, batch, momentum, PATH_SUM, 2, summed);
  train_ranks(&d, batch, momentum, PATH_SHARED, 2, shm);
  assert_same_run(&ranks[0], &ranks[1], what);
  assert_same_run(&ranks[0], &summed[0], what);
  assert_same_run(&summed[0], &summed[1], what);
  assert_same_run(&ranks[0], &shm[0], what);
  assert_same_run(&shm[0], &shm[1], what);
  for (size_t e = 0; e < EPOCHS; e++) {
    const nn_epoch_metrics *a = &ranks[0].m[e], *s = &one.m[e];
    /* Only the order of the additions differs from one process. */
    ck_assert_msg(fabs(a->train_loss - s->train_loss) < 1e-9 &&
                  fabs(a->val_loss - s->val_loss) < 1e-9,
                  "%s epoch %zu: loss %.17g (2 ranks) vs %.17g", what, e,
                  a->train_loss, s->train_loss);
    ck_assert(fabs(a->val_accuracy - s->val_accuracy) <= 2.0 / 600);
  }
  ck_assert(ranks[0].m[EPOCHS - 1].val_accuracy > 0.2); /* chance: 0.1 */
  data_close(&d);
}
END_TEST

/* Three ranks: shared memory (the general mean, rank by rank) against
 * nn_dist_sum; batch 7: slices of 2, 2 and 3; batch 2: rank 0's slice is
 * always empty. */
START_TEST(test_three_ranks_shared) {
  static const size_t batches[] = {7, 2};
  data d;
  data_open(&d);
  for (size_t b = 0; b < 2; b++) {
    train_job summed[3], shm[3];
    train_ranks(&d, batches[b], 0.0, PATH_SUM, 3, summed);
    train_ranks(&d, batches[b], 0.0, PATH_SHARED, 3, shm);
    for (size_t r = 0; r < 3; r++) {
      assert_same_run(&summed[0], &summed[r], "three ranks, nn_dist_sum");
      assert_same_run(&summed[0], &shm[r], "three ranks, shared memory");
    }
  }
  data_close(&d);
}
END_TEST

/* ------------------------------------------------------- shared memory */

typedef struct shm_job {
  rank_ctx ctx;
  uint64_t tag; /* of its second part */
  int rc[2];    /* of its two parts */
  double got;   /* the other rank's first value of the first part */
  nn_error err;
} shm_job;

/* Two parts: the first tagged 0, the second `tag`. */
static void *shm_rank(void *arg) {
  shm_job *j = arg;
  const nn_comm c = fake_comm(&j->ctx);
  nn__shm *s = NULL;
  j->rc[0] = j->rc[1] = nn__shm_create(&s, &c, &j->err);
  if (!j->rc[0] && !nn__shm_map(s, 8)) j->rc[0] = j->rc[1] = NN_EINVAL;
  if (!j->rc[0]) {
    nn__shm_values(s, j->ctx.rank)[0] = 10.0 + (double)j->ctx.rank;
    j->rc[0] = nn__shm_exchange(s, 0, &j->err);
    j->got = nn__shm_values(s, 1 - j->ctx.rank)[0];
    j->rc[1] = nn__shm_exchange(s, j->tag, &j->err);
  }
  nn__shm_free(s);
  return NULL;
}

static void shm_pair(shm_job jobs[2]) {
  shared sh = {0};
  pthread_barrier_init(&sh.bar, NULL, 2);
  for (size_t r = 0; r < 2; r++)
    jobs[r].ctx = (rank_ctx){&sh, r, 2, PATH_SHARED};
  run_ranks(2, shm_rank, jobs, sizeof jobs[0]);
  pthread_barrier_destroy(&sh.bar);
  shared_free(&sh);
}

/* After an exchange each rank reads the other's values; ranks that trade
 * different parameters at the same point stop, each naming the
 * mismatch. */
START_TEST(test_shared_exchange) {
  shm_job same[2] = {{.tag = 1}, {.tag = 1}};
  shm_pair(same);
  for (size_t r = 0; r < 2; r++) {
    ck_assert_msg(same[r].rc[0] == NN_OK && same[r].rc[1] == NN_OK, "%s",
                  same[r].err.msg);
    ck_assert(same[r].got == 10.0 + (double)(1 - r));
  }
  shm_job mixed[2] = {{.tag = 1}, {.tag = 2}};
  shm_pair(mixed);
  for (size_t r = 0; r < 2; r++) {
    ck_assert_int_eq(mixed[r].rc[0], NN_OK);
    ck_assert_int_eq(mixed[r].rc[1], NN_EPLUGIN);
    ck_assert_msg(strstr(mixed[r].err.msg, "different parameters"), "%s",
                  mixed[r].err.msg);
  }
}
END_TEST

static Suite *dist_suite(void) {
  Suite *s = suite_create("dist");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 300);
  tcase_add_test(tc, test_sum_in_rank_order);
  tcase_add_loop_test(tc, test_two_ranks_train_alike, 0, 6);
  tcase_add_test(tc, test_three_ranks_shared);
  tcase_add_test(tc, test_shared_exchange);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return test_run_suite(dist_suite()); }
