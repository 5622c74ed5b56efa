/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to the CLI: the ranks of an MPI job.  nnrun started by mpirun (or
 * srun) is one rank of N; started on its own, or built without MPI, it is
 * rank 0 of 1 and every function here is a no-op.
 *
 * Rank 0 leads: it alone creates directories, writes files and prints.
 * Steps that can fail on some ranks and not others end in cli_mpi_agree,
 * so that every rank goes on or stops together and rank 0 says why. */
#ifndef NN_CLI_MPI_H
#define NN_CLI_MPI_H

#include <stddef.h>
#include <sys/types.h>

#include <nn/nn.h>

/* Join the job when launched as one of its ranks (MPI_Init); call first in
 * main.  Returns an exit status, err saying why on failure. */
int cli_mpi_start(int *argc, char ***argv, nn_error *err);
/* Leave it (MPI_Finalize); call on every way out of main. */
void cli_mpi_end(void);

size_t cli_mpi_rank(void);
size_t cli_mpi_size(void); /* 1 without MPI or after cli_mpi_detach */
/* Ranks of the job on this machine (1 without MPI or after detach). */
size_t cli_mpi_local_size(void);
static inline int cli_mpi_lead(void) { return cli_mpi_rank() == 0; }

/* For a process forked by a rank (a sweep's run): it is one process of
 * its own from now on and must not touch MPI. */
void cli_mpi_detach(void);

/* The ranks as libnn's communicator for a data-parallel trainer, or NULL
 * with one rank.  Owned here; lives until cli_mpi_end. */
const nn_comm *cli_mpi_comm(void);

/* Collective: every rank passes its exit status (err: why, if non-zero);
 * all return the status of the lowest failing rank with its message in
 * err (named by rank when not rank 0's), or EXIT_OK. */
int cli_mpi_agree(int status, nn_error *err);
/* Collective: buf (bytes) on every rank becomes rank 0's. */
void cli_mpi_bcast(void *buf, size_t bytes);
/* Collective: whether every rank's trainer holds the weights rank 0's
 * does after `epoch` (nn_trainer_checksum); NN_OK or an error naming the
 * first rank that differs. */
int cli_mpi_check_weights(nn_trainer *t, size_t epoch, nn_error *err);
/* Collective: whether every rank trains the same run as rank 0 (options
 * o, n_train examples, parameters of the same shapes); NN_ECONFIG naming
 * the first rank that does not. */
int cli_mpi_check_plan(nn_trainer *t, const nn_train_opts *o, size_t n_train,
                       nn_error *err);

/* A task farm over the ranks (collective).  Rank 0 hands tasks 0..n-1 out
 * in order, one at a time, to the rank that asks (itself included), each
 * rank running up to `jobs` at once as child processes; rank 0 learns
 * every task's end through `finished`.  Returns when every task has
 * finished. */
typedef struct cli_farm {
  size_t n_tasks, jobs;
  void *ctx;
  /* A child process running task i (-1: could not start it). */
  pid_t (*start)(void *ctx, size_t i);
  /* Rank 0 only: task i ended with exit status `status` (EXIT_RUNTIME when
   * killed or not started) after `seconds`, on `rank`. */
  void (*finished)(void *ctx, size_t i, int status, double seconds,
                   size_t rank);
  /* Every rank: a child started by `start` was reaped (NULL: nothing). */
  void (*reaped)(void *ctx, pid_t pid);
} cli_farm;
void cli_farm_run(const cli_farm *farm);

#endif
