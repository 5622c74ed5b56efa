/* SPDX-License-Identifier: GPL-3.0-or-later */
/* nnbench pingpong: how far apart the first two CPUs are right now.
 *
 * Two threads, pinned to CPUs 0 and 1, hand a cache line back and forth;
 * the time per round trip is the cost of moving data between the cores.
 * On this project's 2-vCPU VM it changed every few minutes, between about
 * 120 ns and about 500 ns, as the hypervisor placed the vCPUs closer or
 * further apart, and the two-thread epoch time followed it.  bench/run
 * prints it with every round so that a slow round can be told apart.
 *
 * Output: one line, `pingpong round_trip_ns=N` (N = nan when the process
 * cannot pin threads to two CPUs). */
#define _GNU_SOURCE /* pthread_setaffinity_np */
#include <config.h>

#include "nnbench.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define PP_ROUNDS 100000

/* The line the two threads hand back and forth, and a failure flag in a
 * line of its own. */
typedef struct pp_shared {
  _Alignas(64) atomic_long turn; /* odd: CPU 1's move; even: CPU 0's */
  _Alignas(64) atomic_int failed; /* CPU 1 could not be had */
} pp_shared;

static int pp_pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *pp_other(void *arg) {
  pp_shared *s = arg;
  if (pp_pin(1) != 0) {
    atomic_store(&s->failed, 1); /* the main thread gives up */
    return NULL;
  }
  for (long i = 0; i < PP_ROUNDS; i++) {
    while (atomic_load(&s->turn) != 2 * i + 1) nnbench_relax();
    atomic_store(&s->turn, 2 * i + 2);
  }
  return NULL;
}

int nnbench_pingpong(void) {
  static pp_shared s; /* static: one line, aligned, outside any stack */
  atomic_store(&s.turn, 0);
  atomic_store(&s.failed, 0);
  pthread_t t;
  if (pp_pin(0) != 0 || pthread_create(&t, NULL, pp_other, &s) != 0) {
    printf("pingpong round_trip_ns=nan\n");
    return 0;
  }
  const double t0 = nn_now_seconds();
  long i = 0;
  for (; i < PP_ROUNDS; i++) {
    atomic_store(&s.turn, 2 * i + 1);
    while (atomic_load(&s.turn) != 2 * i + 2 && !atomic_load(&s.failed))
      nnbench_relax();
    if (atomic_load(&s.failed)) break;
  }
  const double t1 = nn_now_seconds();
  pthread_join(t, NULL);
  if (i < PP_ROUNDS)
    printf("pingpong round_trip_ns=nan\n");
  else
    printf("pingpong round_trip_ns=%.0f\n", (t1 - t0) / PP_ROUNDS * 1e9);
  return 0;
}
