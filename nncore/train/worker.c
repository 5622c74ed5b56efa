/* SPDX-License-Identifier: GPL-3.0-or-later */
/* A helper thread (see worker.h).
 *
 * Jobs are counted: job n is posted when `posted` reaches n, claimed by
 * whichever side moves `claimed` from n - 1 to n (compare-and-swap, so
 * exactly one side runs it), finished when `finished` reaches n.
 *
 * The worker sleeps on a condition variable between jobs; the caller, when
 * it waits, spins for a short while before it sleeps on another.  A sleeper announces itself in an atomic flag before
 * its last look at the condition, and the other side looks at the flag
 * after changing the condition (both sequentially consistent), so a
 * wake-up is never lost: either the sleeper sees the change or the changer
 * sees the sleeper and signals under the mutex. */
#include <config.h>

#include "train/worker.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <nn/train.h>

/* The worker never spins between jobs: it sleeps until one is posted.  On
 * a busy machine a spinning helper takes the CPU from someone who needs
 * it, often its own caller, and the wake-up it saves (a system call on the
 * posting side) is small beside a batch's work.  The caller spins only
 * while the worker runs a job it has claimed: a batch's gather is tens of
 * microseconds. */
#define WORKER_IDLE_SPIN_S 0.5e-3
#define CALLER_SPIN_S 0.2e-3

struct nn_worker {
  pthread_t thread;
  int started;
  pthread_mutex_t mu;
  pthread_cond_t wake;      /* the worker sleeps here between jobs */
  pthread_cond_t done;      /* the caller sleeps here in nn_worker_finish */
  atomic_ulong posted;      /* jobs posted so far */
  atomic_ulong claimed;     /* jobs claimed (by either side) so far */
  atomic_ulong finished;    /* jobs finished so far */
  atomic_int worker_asleep; /* the worker sleeps (or is about to) on wake */
  atomic_int caller_asleep; /* the caller sleeps (or is about to) on done */
  atomic_int stop;
  int multi_cpu;            /* spinning can help: another CPU may run us */
  void (*fn)(void *);       /* the posted job; written before posted bumps */
  void *arg;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static int has_job(nn_worker *w, unsigned long seen) {
  return atomic_load(&w->posted) != seen || atomic_load(&w->stop);
}

static int all_done(nn_worker *w) {
  return atomic_load(&w->finished) == atomic_load(&w->posted);
}

/* Claim job n for the calling side; 0 if the other side has it. */
static int claim(nn_worker *w, unsigned long n) {
  unsigned long expected = n - 1;
  return atomic_compare_exchange_strong(&w->claimed, &expected, n);
}

static void *worker_main(void *arg) {
  nn_worker *w = arg;
  unsigned long seen = 0;
  double spin_s = 0;
  for (;;) {
    const double t0 = nn_now_seconds();
    while (!has_job(w, seen) && spin_s > 0 &&
           nn_now_seconds() - t0 < spin_s)
      sched_yield();
    if (!has_job(w, seen)) {
      pthread_mutex_lock(&w->mu);
      atomic_store(&w->worker_asleep, 1);
      while (!has_job(w, seen)) pthread_cond_wait(&w->wake, &w->mu);
      atomic_store(&w->worker_asleep, 0);
      pthread_mutex_unlock(&w->mu);
    }
    if (atomic_load(&w->posted) == seen) return NULL; /* stop, no job left */
    seen = atomic_load(&w->posted);
    if (!claim(w, seen)) { /* the caller took it over */
      spin_s = 0;
      continue;
    }
    w->fn(w->arg);
    atomic_store(&w->finished, seen);
    spin_s = w->multi_cpu ? WORKER_IDLE_SPIN_S : 0;
    if (atomic_load(&w->caller_asleep)) {
      pthread_mutex_lock(&w->mu);
      pthread_cond_signal(&w->done);
      pthread_mutex_unlock(&w->mu);
    }
  }
}

void nn_worker_post(nn_worker *w, void (*fn)(void *), void *arg) {
  w->fn = fn;
  w->arg = arg;
  atomic_fetch_add(&w->posted, 1); /* publishes fn and arg */
  if (atomic_load(&w->worker_asleep)) {
    pthread_mutex_lock(&w->mu);
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->mu);
  }
}

int nn_worker_finish(nn_worker *w) {
  const unsigned long n = atomic_load(&w->posted);
  if (atomic_load(&w->finished) == n) return 0;
  if (claim(w, n)) {
    w->fn(w->arg);
    atomic_store(&w->finished, n);
    return 1;
  }
  const double t0 = nn_now_seconds();
  const double spin_s = w->multi_cpu ? CALLER_SPIN_S : 0.0;
  for (unsigned i = 1; !all_done(w); i++) {
    cpu_relax();
    if (i % 64 == 0 && nn_now_seconds() - t0 >= spin_s) {
      pthread_mutex_lock(&w->mu);
      atomic_store(&w->caller_asleep, 1);
      while (!all_done(w)) pthread_cond_wait(&w->done, &w->mu);
      atomic_store(&w->caller_asleep, 0);
      pthread_mutex_unlock(&w->mu);
    }
  }
  return 0;
}

void nn_worker_free(nn_worker *w) {
  if (!w) return;
  if (w->started) {
    nn_worker_finish(w);
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->stop, 1);
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
  }
  pthread_cond_destroy(&w->done);
  pthread_cond_destroy(&w->wake);
  pthread_mutex_destroy(&w->mu);
  free(w);
}

int nn_worker_create(nn_worker **out, nn_error *err) {
  *out = NULL;
  nn_worker *w = calloc(1, sizeof *w);
  if (!w) return nn_error_set(err, NN_ENOMEM, "out of memory for a thread");
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->wake, NULL);
  pthread_cond_init(&w->done, NULL);
  atomic_init(&w->posted, 0);
  atomic_init(&w->claimed, 0);
  atomic_init(&w->finished, 0);
  atomic_init(&w->worker_asleep, 0);
  atomic_init(&w->caller_asleep, 0);
  atomic_init(&w->stop, 0);
  /* With one CPU, a spinning thread would only take time from the one it
   * waits for. */
  w->multi_cpu = nn_cpus_available() >= 2;
  int rc = pthread_create(&w->thread, NULL, worker_main, w);
  if (rc) {
    nn_worker_free(w);
    return nn_error_set(err, NN_ENOMEM, "cannot start a thread: %s",
                        strerror(rc));
  }
  w->started = 1;
  *out = w;
  return NN_OK;
}
