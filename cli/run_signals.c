/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Signals of a run or a sweep: see run_signals.h. */
#define _POSIX_C_SOURCE 200809L /* sigaction, kill */
#include <config.h>

#include "run_signals.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* The CLI's process-wide signal state: written by the handlers, read by
 * the training loop and the sweep's scheduler. */
volatile sig_atomic_t run_signal_raised;
static volatile sig_atomic_t stop_signal; /* SIGINT or SIGTERM, first wins */
static volatile sig_atomic_t save_asked;

/* A sweep runs at most 64 runs at a time (-j). */
#define MAX_CHILDREN 64
static volatile pid_t children[MAX_CHILDREN];

static void on_signal(int sig) {
  const int saved = errno;
  if (sig == SIGINT || sig == SIGTERM) {
    if (!stop_signal) stop_signal = sig;
  } else {
    save_asked = 1;
  }
  run_signal_raised = 1;
  for (size_t i = 0; i < MAX_CHILDREN; i++)
    if (children[i] > 0) kill(children[i], sig);
  errno = saved;
}

int run_signals_install(void) {
  static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1};
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    sigaddset(&sa.sa_mask, sigs[i]); /* one handler at a time */
  sa.sa_flags = SA_RESTART;
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    if (sigaction(sigs[i], &sa, NULL) != 0) return -1;
  return 0;
}

int run_signals_stop(void) { return stop_signal; }

int run_signals_take_save(void) {
  const int asked = save_asked;
  save_asked = 0;
  return asked;
}

int run_signals_add(pid_t pid) {
  for (size_t i = 0; i < MAX_CHILDREN; i++)
    if (children[i] <= 0) {
      children[i] = pid;
      return 0;
    }
  return -1;
}

void run_signals_remove(pid_t pid) {
  for (size_t i = 0; i < MAX_CHILDREN; i++)
    if (children[i] == pid) children[i] = 0;
}

void run_signals_forget_children(void) {
  for (size_t i = 0; i < MAX_CHILDREN; i++) children[i] = 0;
}

void run_signals_block(sigset_t *old) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR1);
  sigprocmask(SIG_BLOCK, &set, old);
}

void run_signals_unblock(const sigset_t *old) {
  sigprocmask(SIG_SETMASK, old, NULL);
}
