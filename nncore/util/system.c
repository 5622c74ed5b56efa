/* SPDX-License-Identifier: GPL-3.0-or-later */
/* What libnn asks of the system, in one place: a monotonic clock for
 * timings, and how many CPUs this process may run on. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <config.h>

#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <nn/train.h>

double nn_now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The affinity mask when the system has one (taskset, cgroup cpusets and
 * container limits shrink it), else the CPUs online.  It picks the default
 * thread count and decides whether waiting threads may spin. */
size_t nn_cpus_available(void) {
#if defined(__linux__) && defined(CPU_COUNT)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return (size_t)n;
  }
#endif
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (size_t)n : 1;
}
