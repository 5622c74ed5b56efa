/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The task farm of a distributed sweep (see cli_mpi.h).
 *
 * Rank 0 both runs tasks and hands them out: a worker rank sends one
 * message per free slot (the task it finished, or none at first) and gets
 * the next task back, or "none left", which closes that slot.  Rank 0
 * polls its own children and the workers' messages in turn, sleeping a
 * little when neither had news: its tasks run in child processes, so the
 * loop itself needs next to no CPU.  Tasks are whole runs in processes of
 * their own (a fork that never touches MPI), so a run that crashes costs
 * its own result only. */
#define _XOPEN_SOURCE 700 /* nanosleep */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

#ifdef HAVE_MPI
#include <mpi.h>
#endif

#include "cli.h"
#include "cli_mpi.h"

#ifdef HAVE_MPI

enum { TAG_ASK = 1, TAG_TASK = 2 };

/* A worker's message: the task it finished (-1: none), how, how long. */
typedef struct farm_report {
  long task;
  int status;
  double seconds;
} farm_report;

/* The children this rank runs: task and start time per slot (-j is at
 * most 64, see nnrun.c). */
#define FARM_MAX_JOBS 64
typedef struct farm_slots {
  pid_t pid[FARM_MAX_JOBS]; /* 0: free */
  long task[FARM_MAX_JOBS];
  double t0[FARM_MAX_JOBS];
  size_t jobs, running;
} farm_slots;

/* Start task i in a free slot; a task that cannot start ends at once. */
static int slots_start(farm_slots *s, const cli_farm *f, size_t i,
                       farm_report *failed) {
  size_t k = 0;
  while (k < s->jobs && s->pid[k]) k++;
  const pid_t pid = f->start(f->ctx, i);
  if (pid <= 0) {
    *failed = (farm_report){(long)i, EXIT_RUNTIME, 0};
    return -1;
  }
  s->pid[k] = pid;
  s->task[k] = (long)i;
  s->t0[k] = nn_now_seconds();
  s->running++;
  return 0;
}

/* A child that ended (blocking: wait for one), as a report; 0 if none
 * (non-blocking) or none left. */
static int slots_reap(farm_slots *s, const cli_farm *f, int block,
                      farm_report *r) {
  if (!s->running) return 0;
  int ws;
  pid_t pid;
  do
    pid = waitpid(-1, &ws, block ? 0 : WNOHANG);
  while (pid < 0 && errno == EINTR);
  if (pid <= 0) return 0;
  if (f->reaped) f->reaped(f->ctx, pid);
  for (size_t k = 0; k < s->jobs; k++) {
    if (s->pid[k] != pid) continue;
    *r = (farm_report){s->task[k],
                       WIFEXITED(ws) ? WEXITSTATUS(ws) : EXIT_RUNTIME,
                       nn_now_seconds() - s->t0[k]};
    s->pid[k] = 0;
    s->running--;
    return 1;
  }
  return 0; /* a child not of the farm's */
}

static void lead(const cli_farm *f, farm_slots *s) {
  const size_t n_slots = (cli_mpi_size() - 1) * f->jobs;
  size_t next = 0, done = 0, closed = 0;
  farm_report r;
  while (done < f->n_tasks || closed < n_slots) {
    int news = 0;
    while (s->running < s->jobs && next < f->n_tasks)
      if (slots_start(s, f, next++, &r)) {
        f->finished(f->ctx, (size_t)r.task, r.status, r.seconds, 0);
        done++;
      }
    if (slots_reap(s, f, 0, &r)) {
      f->finished(f->ctx, (size_t)r.task, r.status, r.seconds, 0);
      done++;
      news = 1;
    }
    int flag;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, TAG_ASK, MPI_COMM_WORLD, &flag, &st);
    if (flag) {
      MPI_Recv(&r, sizeof r, MPI_BYTE, st.MPI_SOURCE, TAG_ASK, MPI_COMM_WORLD,
               MPI_STATUS_IGNORE);
      if (r.task >= 0) {
        f->finished(f->ctx, (size_t)r.task, r.status, r.seconds,
                    (size_t)st.MPI_SOURCE);
        done++;
      }
      long task = next < f->n_tasks ? (long)next++ : -1;
      closed += task < 0;
      MPI_Send(&task, 1, MPI_LONG, st.MPI_SOURCE, TAG_TASK, MPI_COMM_WORLD);
      news = 1;
    }
    if (!news) nanosleep(&(struct timespec){0, 2000000}, NULL);
  }
}

/* Ask rank 0 for a task, reporting r; start it (or close the slot). */
static void ask(const cli_farm *f, farm_slots *s, farm_report *r,
                size_t *open) {
  for (;;) {
    long task;
    MPI_Send(r, sizeof *r, MPI_BYTE, 0, TAG_ASK, MPI_COMM_WORLD);
    MPI_Recv(&task, 1, MPI_LONG, 0, TAG_TASK, MPI_COMM_WORLD,
             MPI_STATUS_IGNORE);
    if (task < 0) {
      (*open)--;
      return;
    }
    if (!slots_start(s, f, (size_t)task, r)) return;
    /* could not start: report that and ask again */
  }
}

static void work(const cli_farm *f, farm_slots *s) {
  size_t open = f->jobs;
  farm_report r = {-1, 0, 0};
  for (size_t k = 0; k < f->jobs; k++) {
    r = (farm_report){-1, 0, 0};
    ask(f, s, &r, &open);
  }
  while (s->running) {
    if (!slots_reap(s, f, 1, &r)) continue;
    ask(f, s, &r, &open);
  }
}

void cli_farm_run(const cli_farm *f) {
  farm_slots s = {.jobs = f->jobs < 1              ? 1
                          : f->jobs > FARM_MAX_JOBS ? FARM_MAX_JOBS
                                                    : f->jobs};
  cli_farm g = *f;
  g.jobs = s.jobs; /* every rank clamps alike: rank 0 counts their slots */
  if (cli_mpi_lead())
    lead(&g, &s);
  else
    work(&g, &s);
}

#else

void cli_farm_run(const cli_farm *f) { (void)f; }

#endif
