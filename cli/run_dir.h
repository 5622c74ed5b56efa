/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to the CLI: choosing, creating and claiming a run's output
 * directory. */
#ifndef NN_RUN_DIR_H
#define NN_RUN_DIR_H

#include <stddef.h>

/* The lock file a training run keeps in its directory (see run_dir_claim). */
#define RUN_DIR_LOCK "run.lock"

/* Create the output directory.  With `explicit` (-o DIR) that directory
 * (and its parents) is created if missing and reused if present.  Without,
 * a fresh runs/<name>-<N> is made with the smallest N >= 1 not yet taken, so
 * an earlier run is never overwritten.  The chosen path goes to out.
 * Returns 0, or -1 with a message in msg. */
int run_dir_create(const char *explicit, const char *name, char *out,
                   size_t out_size, char *msg, size_t msg_size);

/* Claim DIR for the run of this process, before it writes anything there:
 * DIR/run.lock is created if missing, locked (flock, exclusive) and given
 * this process's id; then the temporary files of atomic writes whose
 * writer process no longer exists are removed.  The lock also marks DIR
 * as a run's from its first moment, so a run killed before its first
 * checkpoint can still be resumed (see run_dir_started).
 *
 * Returns the lock's file descriptor, owned by the caller: the claim lasts
 * until it is closed (at the latest when the process ends).  Returns -1
 * with a message in msg when another live process holds the lock (the
 * message names it) or the lock file cannot be made. */
int run_dir_claim(const char *dir, char *msg, size_t msg_size);

/* Whether a training run (or a sweep) has started in DIR: it holds
 * run.lock, metrics.csv or a checkpoint. */
int run_dir_started(const char *dir);

/* --force: remove the files of the run that was in DIR (those nnrun
 * writes there: metrics.csv, the checkpoints, summary.json, the curves,
 * and a sweep's sweep.csv, report.md and comparison charts), while
 * holding its lock; other files stay.  Returns 0, or -1 with a message
 * naming the file. */
int run_dir_clear(const char *dir, char *msg, size_t msg_size);

/* Whether DIR holds a sweep: a subdirectory with a sweep run's values
 * (sweep_proc.h). */
int run_dir_is_sweep(const char *dir);

/* Whether paths a and b name the same existing directory (by realpath). */
int run_dir_same(const char *a, const char *b);

/* Whether the run can write where its output goes, tried before the data
 * is loaded so that a place it cannot write fails at once.  target may
 * not exist yet (run_dir_create makes it with its parents): the probe
 * then goes in its nearest existing ancestor.  It creates and removes one
 * file, never a directory.  Returns 0, or -1 with a message. */
int run_dir_probe(const char *target, char *msg, size_t msg_size);

#endif
