/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to the CLI: a sweep's runs as child processes that never
 * outlive the sweep, and the values each run keeps in its directory. */
#ifndef NN_SWEEP_PROC_H
#define NN_SWEEP_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* The file in a sweep run's directory holding its own values, one
 * SECTION.KEY=VALUE per line, as --set takes them: --resume of that
 * directory applies them (cli_setup.c), so the run goes on with its
 * values rather than the base config's. */
#define SWEEP_VALUES_FILE "sweep.set"

/* Fork a run: the child, which must not return from child_fn, ends when
 * the sweep process does (even by SIGKILL: the kernel sends it SIGTERM,
 * which stops it with a checkpoint), and gets no signal meant for its
 * siblings; the parent passes each SIGINT, SIGTERM, SIGHUP and SIGUSR1 it
 * gets on to it (run_signals.h).  Returns the child's id to the parent, or
 * -1 (errno set). */
pid_t sweep_spawn(void (*child_fn)(void *), void *arg);
/* The parent, once the child ended. */
void sweep_reaped(pid_t pid);

/* In the child: stderr to DIR/log.txt (appended to when resuming), line
 * by line so the log is current while the run goes; stdout to /dev/null.
 * Returns 0 or -1. */
int sweep_child_log(const char *dir, int append);

/* Write DIR/sweep.set: the n assignments.  Returns 0, or -1 with a
 * message. */
int sweep_values_write(const char *dir, const char *const *sets, size_t n,
                       char *msg, size_t msg_size);

#endif
