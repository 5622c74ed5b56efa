/* SPDX-License-Identifier: GPL-3.0-or-later */
/* A sweep's child processes: see sweep_proc.h. */
#define _GNU_SOURCE /* prctl */
#include <config.h>

#include "sweep_proc.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "files/atomic_file.h"
#include "run_signals.h"

pid_t sweep_spawn(void (*child_fn)(void *), void *arg) {
  const pid_t parent = getpid();
  sigset_t old;
  /* No signal between fork and the parent's note of the child: it would
   * miss the child; nor in the child before it forgets its siblings. */
  run_signals_block(&old);
  const pid_t pid = fork();
  if (pid == 0) {
    run_signals_forget_children();
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
    /* The parent may have died before prctl: then no signal will come. */
    if (getppid() != parent) _exit(128 + SIGTERM);
    run_signals_unblock(&old);
    child_fn(arg);
    _exit(127); /* child_fn does not return */
  }
  const int e = errno;
  /* The list holds 64, the most -j allows: it cannot be full. */
  if (pid > 0) (void)run_signals_add(pid);
  run_signals_unblock(&old);
  errno = e;
  return pid;
}

void sweep_reaped(pid_t pid) { run_signals_remove(pid); }

int sweep_child_log(const char *dir, int append) {
  char log[4200];
  snprintf(log, sizeof log, "%s/log.txt", dir);
  if (!freopen(log, append ? "a" : "w", stderr) ||
      !freopen("/dev/null", "w", stdout))
    return -1;
  /* Reopened on a file, stderr would be fully buffered: the log would
   * show nothing until the run ended, and lose its end to a kill. */
  setvbuf(stderr, NULL, _IOLBF, 0);
  return 0;
}

int sweep_values_write(const char *dir, const char *const *sets, size_t n,
                       char *msg, size_t msg_size) {
  char path[4200];
  snprintf(path, sizeof path, "%s/" SWEEP_VALUES_FILE, dir);
  nn__atomic_file f;
  nn_error err;
  int rc = nn__atomic_open(&f, path, &err);
  if (!rc) {
    for (size_t i = 0; i < n; i++) fprintf(f.fp, "%s\n", sets[i]);
    rc = nn__atomic_commit(&f, &err);
  }
  if (rc) snprintf(msg, msg_size, "%s", err.msg);
  return rc ? -1 : 0;
}
