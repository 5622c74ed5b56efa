/* A helper thread (see worker.h).
 *
 * Both sides wait by spinning for a short while, then sleeping on a
 * condition variable.  A sleeper announces itself in an atomic flag before
 * its last look at the condition, and the other side looks at the flag
 * after changing the condition (both sequentially consistent), so a
 * wake-up is never lost: either the sleeper sees the change or the changer
 * sees the sleeper and signals under the mutex. */
#include <config.h>

#include "worker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <nn/train.h>

/* Spin budgets.  The worker spins a little after a job (the trainer posts
 * the next one a batch later, 50-200 us; waking a sleeping thread costs a
 * system call on the posting side); the caller spins longer, since its
 * core has nothing else to do while it waits. */
#define WORKER_IDLE_SPIN_S 0.5e-3
#define CALLER_SPIN_S 2e-3

struct nn_worker {
  pthread_t thread;
  int started;
  pthread_mutex_t mu;
  pthread_cond_t wake;      /* the worker sleeps here between jobs */
  pthread_cond_t done;      /* the caller sleeps here in nn_worker_wait */
  atomic_ulong posted;      /* jobs posted so far */
  atomic_ulong finished;    /* jobs finished so far */
  atomic_int worker_asleep; /* the worker sleeps (or is about to) on wake */
  atomic_int caller_asleep; /* the caller sleeps (or is about to) on done */
  atomic_int stop;
  double idle_spin_s;       /* WORKER_IDLE_SPIN_S, or 0 on a single CPU */
  double caller_spin_s;     /* CALLER_SPIN_S, or 0 on a single CPU */
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

static void *worker_main(void *arg) {
  nn_worker *w = arg;
  unsigned long seen = 0;
  for (;;) {
    const double t0 = nn_now_seconds();
    for (unsigned i = 1; !has_job(w, seen); i++) {
      cpu_relax();
      if (i % 64 == 0 && nn_now_seconds() - t0 >= w->idle_spin_s) {
        pthread_mutex_lock(&w->mu);
        atomic_store(&w->worker_asleep, 1);
        while (!has_job(w, seen)) pthread_cond_wait(&w->wake, &w->mu);
        atomic_store(&w->worker_asleep, 0);
        pthread_mutex_unlock(&w->mu);
      }
    }
    if (atomic_load(&w->posted) == seen) return NULL; /* stop, no job left */
    seen = atomic_load(&w->posted);
    w->fn(w->arg);
    atomic_store(&w->finished, seen);
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

void nn_worker_wait(nn_worker *w) {
  const double t0 = nn_now_seconds();
  for (unsigned i = 1; !all_done(w); i++) {
    cpu_relax();
    if (i % 64 == 0 && nn_now_seconds() - t0 >= w->caller_spin_s) {
      pthread_mutex_lock(&w->mu);
      atomic_store(&w->caller_asleep, 1);
      while (!all_done(w)) pthread_cond_wait(&w->done, &w->mu);
      atomic_store(&w->caller_asleep, 0);
      pthread_mutex_unlock(&w->mu);
    }
  }
}

void nn_worker_free(nn_worker *w) {
  if (!w) return;
  if (w->started) {
    nn_worker_wait(w);
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
  atomic_init(&w->finished, 0);
  atomic_init(&w->worker_asleep, 0);
  atomic_init(&w->caller_asleep, 0);
  atomic_init(&w->stop, 0);
  /* With one CPU, a spinning thread would only take time from the one it
   * waits for. */
  const int one_cpu = nn_cpus_available() < 2;
  w->idle_spin_s = one_cpu ? 0.0 : WORKER_IDLE_SPIN_S;
  w->caller_spin_s = one_cpu ? 0.0 : CALLER_SPIN_S;
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
