/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to the CLI: the signals a training run or a sweep acts on.
 *
 *   SIGINT, SIGTERM  stop after the current batch with a checkpoint that
 *                    resumes bit for bit; the exit status is 128 + signal
 *   SIGHUP, SIGUSR1  write such a checkpoint at the next batch boundary
 *                    and go on
 *
 * The handlers only raise flags (and pass the signal on to a sweep's runs,
 * with kill(), which is async-signal-safe); the trainer watches
 * run_signal_raised after every batch. */
#ifndef NN_RUN_SIGNALS_H
#define NN_RUN_SIGNALS_H

#include <signal.h>
#include <sys/types.h>

/* Non-zero once any of the four arrived; the one who acts lowers it. */
extern volatile sig_atomic_t run_signal_raised;

/* Install the handlers (SA_RESTART: a checkpoint being written when a
 * signal comes is not cut short).  Flags raised before stay raised.
 * Returns 0 or -1 (errno set). */
int run_signals_install(void);
/* The stop signal received (SIGINT or SIGTERM), or 0. */
int run_signals_stop(void);
/* Whether a SIGHUP or SIGUSR1 came since the last call. */
int run_signals_take_save(void);
/* A sweep's runs: the handlers pass each signal on to the processes
 * added here.  Block signals around fork() and run_signals_add, so that
 * none comes between them (run_signals_block / run_signals_unblock);
 * the child calls run_signals_forget_children first.  Returns -1 when
 * the list is full. */
int run_signals_add(pid_t pid);
void run_signals_remove(pid_t pid);
void run_signals_forget_children(void);
void run_signals_block(sigset_t *old);
void run_signals_unblock(const sigset_t *old);

#endif
