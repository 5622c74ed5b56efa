/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The trainer's threads for layers (see parallel.h).
 *
 * A run hands out its tasks through one atomic counter: the caller and
 * every helper take the next task until none is left.  Each helper is an
 * nn_worker whose job is that loop, so a helper that has not got a CPU
 * by the time the caller has taken the last task never runs at all (the
 * caller claims its job and finds nothing to do): on a busy machine the
 * caller waits only for tasks already under way, never for a thread that
 * is not running. */
#include <config.h>

#include "train/parallel.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "train/worker.h"

typedef struct pool_helper {
  nn__pool *pool;
  nn_worker *worker; /* owned */
  uint32_t slot;
} pool_helper;

struct nn__pool {
  nn_parallel par;       /* par.ctx is the pool */
  size_t n_helpers;
  pool_helper *helpers;  /* owned, n_helpers of them */
  /* The current run: written before the helpers' jobs are posted, which
   * publishes them. */
  size_t n_tasks;
  void (*task)(void *arg, size_t i, uint32_t slot);
  void *arg;
  atomic_size_t next;    /* the next task to hand out */
};

static void drain(nn__pool *p, uint32_t slot) {
  for (;;) {
    const size_t i = atomic_fetch_add(&p->next, 1);
    if (i >= p->n_tasks) return;
    p->task(p->arg, i, slot);
  }
}

static void helper_job(void *arg) {
  pool_helper *h = arg;
  drain(h->pool, h->slot);
}

static void pool_run(void *ctx, size_t n,
                     void (*task)(void *arg, size_t i, uint32_t slot),
                     void *arg) {
  nn__pool *p = ctx;
  if (n == 0) return;
  p->n_tasks = n;
  p->task = task;
  p->arg = arg;
  atomic_store(&p->next, 0);
  /* A single task gains nothing from a helper's wake-up. */
  const size_t helpers = n > 1 ? p->n_helpers : 0;
  for (size_t k = 0; k < helpers; k++)
    nn_worker_post(p->helpers[k].worker, helper_job, &p->helpers[k]);
  drain(p, 0);
  for (size_t k = 0; k < helpers; k++) nn_worker_finish(p->helpers[k].worker);
}

void nn__pool_free(nn__pool *p) {
  if (!p) return;
  for (size_t k = 0; k < p->n_helpers; k++)
    nn_worker_free(p->helpers[k].worker);
  free(p->helpers);
  free(p);
}

int nn__pool_create(nn__pool **out, size_t slots, nn_error *err) {
  *out = NULL;
  if (slots < 2 || slots > UINT32_MAX)
    return nn_error_set(err, NN_EINVAL, "a pool needs 2 or more threads");
  nn__pool *p = calloc(1, sizeof *p);
  if (p) p->helpers = calloc(slots - 1, sizeof *p->helpers);
  if (!p || !p->helpers) {
    free(p);
    return nn_error_set(err, NN_ENOMEM, "out of memory for threads");
  }
  atomic_init(&p->next, 0);
  p->par = (nn_parallel){(uint32_t)sizeof(nn_parallel), (uint32_t)slots, p,
                         pool_run};
  for (size_t k = 0; k + 1 < slots; k++) {
    p->helpers[k] = (pool_helper){p, NULL, (uint32_t)(k + 1)};
    int rc = nn_worker_create(&p->helpers[k].worker, err);
    if (rc) {
      nn__pool_free(p);
      return rc;
    }
    p->n_helpers++;
  }
  *out = p;
  return NN_OK;
}

const nn_parallel *nn__pool_parallel(const nn__pool *p) { return &p->par; }
