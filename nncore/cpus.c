/* How many CPUs this process may run on: the affinity mask when the system
 * has one (taskset, cgroup cpusets and container limits shrink it), else
 * the CPUs online.  Used to pick the default thread count and to decide
 * whether waiting threads may spin. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <config.h>

#include <sched.h>
#include <unistd.h>

#include <nn/train.h>

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
