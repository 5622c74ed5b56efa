/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The ranks of an MPI job (see cli_mpi.h).  Without HAVE_MPI: one rank.
 *
 * MPI is initialised only when a launcher started this process as a rank
 * (it sets OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_RANK): a plain `nnrun`
 * would otherwise become a singleton MPI job, which costs a start-up
 * delay and, as root, a refusal, for nothing. */
#include <config.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_MPI
#include <mpi.h>
#endif

#include "cli.h"
#include "cli_mpi.h"

/* The process's place in the job: set once by cli_mpi_start (and by
 * cli_mpi_detach in a forked child), read everywhere. */
static struct {
  int active; /* MPI_Init ran and MPI_Finalize has not */
  int detached;
  size_t rank, size;
  size_t local; /* ranks of the job on this machine, this one included */
  nn_comm comm;
#ifdef HAVE_MPI
  int has_win;      /* win holds the ranks' shared memory (comm_shared) */
  MPI_Win win;      /* freed by cli_mpi_end */
  size_t win_bytes; /* of each rank's segment */
#endif
} job = {.size = 1, .local = 1};

size_t cli_mpi_rank(void) { return job.detached ? 0 : job.rank; }
size_t cli_mpi_size(void) { return job.detached ? 1 : job.size; }
size_t cli_mpi_local_size(void) { return job.detached ? 1 : job.local; }

void cli_mpi_detach(void) { job.detached = 1; }

const nn_comm *cli_mpi_comm(void) {
  return cli_mpi_size() > 1 ? &job.comm : NULL;
}

#ifdef HAVE_MPI

static int launched_as_rank(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                                     "PMI_RANK", NULL};
  for (const char *const *v = vars; *v; v++)
    if (getenv(*v)) return 1;
  return 0;
}

/* MPI counts in int: blocks above 2 GiB are refused (not met: a step
 * moves one parameter's gradient, or a chunk of the model's parameters
 * per rank, at a time). */
static int mpi_count(size_t bytes, int *count) {
  if (bytes > INT32_MAX) return NN_EINVAL;
  *count = (int)bytes;
  return NN_OK;
}

static int comm_allgather(void *ctx, const void *send, void *recv,
                          size_t bytes) {
  (void)ctx;
  int n;
  if (mpi_count(bytes, &n)) return NN_EINVAL;
  return MPI_Allgather(send, n, MPI_BYTE, recv, n, MPI_BYTE, MPI_COMM_WORLD)
             == MPI_SUCCESS ? NN_OK : NN_EIO;
}

static int comm_alltoall(void *ctx, const void *send, void *recv,
                         size_t bytes) {
  (void)ctx;
  int n;
  if (mpi_count(bytes, &n)) return NN_EINVAL;
  return MPI_Alltoall(send, n, MPI_BYTE, recv, n, MPI_BYTE, MPI_COMM_WORLD)
             == MPI_SUCCESS ? NN_OK : NN_EIO;
}

static int comm_bcast(void *ctx, void *buf, size_t bytes) {
  (void)ctx;
  int n;
  if (mpi_count(bytes, &n)) return NN_EINVAL;
  return MPI_Bcast(buf, n, MPI_BYTE, 0, MPI_COMM_WORLD) == MPI_SUCCESS
             ? NN_OK : NN_EIO;
}

static int comm_sendrecv(void *ctx, size_t peer, const void *send,
                         void *recv, size_t bytes) {
  (void)ctx;
  int n;
  if (mpi_count(bytes, &n)) return NN_EINVAL;
  return MPI_Sendrecv(send, n, MPI_BYTE, (int)peer, 0, recv, n, MPI_BYTE,
                      (int)peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE)
             == MPI_SUCCESS ? NN_OK : NN_EIO;
}

/* Whether every rank says yes (a collective). */
static int all_ranks(int mine) {
  int all = 0;
  return MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD) ==
             MPI_SUCCESS &&
         all;
}

/* nn_comm.shared: one window of shared memory (MPI-3) for the job, grown
 * when a larger one is asked for and otherwise handed out again, zeroed;
 * only when every rank is on this machine. */
static int comm_shared(void *ctx, size_t bytes, void **seg) {
  (void)ctx;
  if (job.local != job.size || bytes > (size_t)PTRDIFF_MAX - 128)
    return NN_EINVAL; /* the same answer on every rank */
  /* Room to align each segment's start to 64 bytes: Open MPI starts
   * them a few words into a page.  The offset within the page is the
   * same in every process that maps it, so is the aligned start. */
  const size_t need = (bytes + 63) / 64 * 64 + 64;
  int ok = 1;
  if (!job.has_win || job.win_bytes < need) {
    if (job.has_win) MPI_Win_free(&job.win);
    job.has_win = 0;
    MPI_Info info;
    MPI_Info_create(&info);
    /* Each rank's segment on its own pages (the rank's NUMA node). */
    MPI_Info_set(info, "alloc_shared_noncontig", "true");
    void *base;
    ok = MPI_Win_allocate_shared((MPI_Aint)need, 1, info, MPI_COMM_WORLD,
                                 &base, &job.win) == MPI_SUCCESS;
    MPI_Info_free(&info);
    job.has_win = ok;
    job.win_bytes = ok ? need : 0;
  }
  if (!all_ranks(ok)) return NN_EIO;
  for (size_t r = 0; r < job.size && ok; r++) {
    MPI_Aint size;
    int unit;
    void *p;
    ok = MPI_Win_shared_query(job.win, (int)r, &size, &unit, &p) ==
             MPI_SUCCESS &&
         (size_t)size >= need;
    seg[r] = (char *)p + (64 - (uintptr_t)p % 64) % 64;
  }
  if (ok) memset(seg[job.rank], 0, need - 64);
  /* Also the barrier after which every segment is zeroed. */
  return all_ranks(ok) ? NN_OK : NN_EIO;
}

int cli_mpi_start(int *argc, char ***argv, nn_error *err) {
  if (!launched_as_rank()) return EXIT_OK;
  /* A rank waiting in a collective yields its CPU rather than spin, unless
   * the environment says otherwise: on a machine whose CPUs other work
   * shares, spinning ranks took the CPU the late rank needed, and an epoch
   * of configs/mlp.ini on two ranks took 3-4x as long (docs/distributed.md). */
  setenv("OMPI_MCA_mpi_yield_when_idle", "1", 0);
  if (MPI_Init(argc, argv) != MPI_SUCCESS) {
    nn_error_set(err, NN_EIO, "MPI_Init failed");
    return EXIT_RUNTIME;
  }
  job.active = 1;
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  job.rank = (size_t)rank;
  job.size = (size_t)size;
  /* The ranks that share this machine's CPUs (MPI-3's shared-memory
   * split): a rank's default thread count is its share of them. */
  MPI_Comm node;
  int local = 1;
  if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank,
                          MPI_INFO_NULL, &node) == MPI_SUCCESS) {
    MPI_Comm_size(node, &local);
    MPI_Comm_free(&node);
  }
  job.local = local > 0 ? (size_t)local : 1;
  /* NN_MPI_SHARED_MEMORY=0: steps trade by messages even on one machine
   * (a comparison, or an MPI whose shared windows misbehave). */
  const char *shm = getenv("NN_MPI_SHARED_MEMORY");
  const int no_shm = shm && strcmp(shm, "0") == 0;
  job.comm = (nn_comm){job.rank,      job.size,       NULL,
                       comm_allgather, comm_alltoall, comm_bcast,
                       comm_sendrecv, no_shm ? NULL : comm_shared};
  return EXIT_OK;
}

void cli_mpi_end(void) {
  if (job.active && !job.detached) {
    if (job.has_win) MPI_Win_free(&job.win);
    job.has_win = 0;
    MPI_Finalize();
  }
  job.active = 0;
}

/* The lowest rank for which `mine` holds (job.size: none). */
static size_t first_rank(int mine) {
  int r = mine ? (int)job.rank : (int)job.size, first;
  MPI_Allreduce(&r, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  return (size_t)first;
}

int cli_mpi_agree(int status, nn_error *err) {
  if (cli_mpi_size() <= 1) return status;
  const size_t f = first_rank(status != 0);
  if (f == job.size) return EXIT_OK;
  struct {
    int32_t status;
    nn_error err;
  } verdict = {status, {0}};
  if (status) verdict.err = *err;
  MPI_Bcast(&verdict, sizeof verdict, MPI_BYTE, (int)f, MPI_COMM_WORLD);
  if (f == 0)
    *err = verdict.err;
  else
    nn_error_set(err, verdict.err.code, "rank %zu: %s", f, verdict.err.msg);
  return verdict.status;
}

void cli_mpi_bcast(void *buf, size_t bytes) {
  if (cli_mpi_size() > 1)
    MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD);
}

/* The lowest rank whose `mine` differs from rank 0's (job.size: none), and
 * the two values. */
static size_t first_other(uint64_t mine, uint64_t *lead, uint64_t *theirs) {
  *lead = mine;
  MPI_Bcast(lead, sizeof *lead, MPI_BYTE, 0, MPI_COMM_WORLD);
  const size_t f = first_rank(mine != *lead);
  *theirs = mine;
  if (f < job.size)
    MPI_Bcast(theirs, sizeof *theirs, MPI_BYTE, (int)f, MPI_COMM_WORLD);
  return f;
}

int cli_mpi_check_weights(nn_trainer *t, size_t epoch, nn_error *err) {
  if (cli_mpi_size() <= 1) return NN_OK;
  uint64_t lead, theirs;
  const size_t f = first_other(nn_trainer_checksum(t), &lead, &theirs);
  if (f == job.size) return NN_OK;
  return nn_error_set(err, NN_ENUMERIC,
                      "after epoch %zu rank %zu holds other weights than "
                      "rank 0 (checksum %016llx, rank 0's %016llx): the "
                      "ranks diverged", epoch, f,
                      (unsigned long long)theirs, (unsigned long long)lead);
}

int cli_mpi_check_plan(nn_trainer *t, const nn_train_opts *o, size_t n_train,
                       nn_error *err) {
  if (cli_mpi_size() <= 1) return NN_OK;
  /* What must agree for the reductions to line up: the batches, the
   * parameters' shapes, the optimizer's state. */
  size_t n, n_state;
  const nn_param *w = nn_trainer_weights(t, &n);
  nn_trainer_optim_state(t, &n_state);
  uint64_t h = 0xcbf29ce484222325ULL;
  const uint64_t head[] = {o->epochs, o->batch_size, o->seed,
                           (uint64_t)o->shuffle, n_train, n, n_state};
  for (size_t i = 0; i < sizeof head / sizeof head[0] + 2 * n; i++) {
    const size_t k = (i - sizeof head / sizeof head[0]) / 2;
    uint64_t v = i < sizeof head / sizeof head[0] ? head[i]
                 : i % 2 ? w[k].value->size2 : w[k].value->size1;
    for (int b = 0; b < 8; b++, v >>= 8) h = (h ^ (v & 0xff)) * 0x100000001b3ULL;
  }
  uint64_t lead, theirs;
  const size_t f = first_other(h, &lead, &theirs);
  if (f == job.size) return NN_OK;
  return nn_error_set(err, NN_ECONFIG,
                      "rank %zu trains another run than rank 0 (epochs, "
                      "batch size, seed, shuffling, training examples or "
                      "the parameters' shapes differ): every rank must "
                      "have the same config and data", f);
}

#else /* one process */

int cli_mpi_start(int *argc, char ***argv, nn_error *err) {
  (void)argc;
  (void)argv;
  (void)err;
  return EXIT_OK;
}

void cli_mpi_end(void) {}

int cli_mpi_agree(int status, nn_error *err) {
  (void)err;
  return status;
}

void cli_mpi_bcast(void *buf, size_t bytes) {
  (void)buf;
  (void)bytes;
}

int cli_mpi_check_weights(nn_trainer *t, size_t epoch, nn_error *err) {
  (void)t;
  (void)epoch;
  (void)err;
  return NN_OK;
}

int cli_mpi_check_plan(nn_trainer *t, const nn_train_opts *o, size_t n_train,
                       nn_error *err) {
  (void)t;
  (void)o;
  (void)n_train;
  (void)err;
  return NN_OK;
}

#endif
