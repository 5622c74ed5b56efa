/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Data-parallel training over several processes: the communicator the
 * trainer reduces through, and the reproducible sum it is built on.
 *
 * libnn knows no message-passing library: a program that runs on MPI (the
 * nnrun CLI) hands the trainer an nn_comm whose collectives it
 * implements.  Every rank builds the same trainer from the same config and
 * passes it in nn_train_opts.comm; with size > 1 each rank then takes its
 * slice of every global batch, and each step sums the ranks' gradients,
 * sample counts, losses, hits and stop flags in one reduction before every
 * rank applies the same optimizer step (see nn_trainer_run). */
#ifndef NN_DIST_H
#define NN_DIST_H

#include <stddef.h>
#include <stdint.h>

#include <nn/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ranks of one training run.  Each collective is called by every rank
 * in the same order and returns NN_OK or an error code (the trainer names
 * the step).  Buffers are lent for the call. */
typedef struct nn_comm {
  size_t rank, size; /* this process, of size (rank 0 leads) */
  void *ctx;         /* the implementation's, passed to every call */
  /* recv[r * bytes ...] receives rank r's `bytes` bytes from send. */
  int (*allgather)(void *ctx, const void *send, void *recv, size_t bytes);
  /* Rank r's send[k * bytes ...] goes to rank k, arriving in its
   * recv[r * bytes ...]. */
  int (*alltoall)(void *ctx, const void *send, void *recv, size_t bytes);
  /* buf on every rank receives rank 0's. */
  int (*bcast)(void *ctx, void *buf, size_t bytes);
  /* Optional (NULL: not offered): send goes to rank peer while recv
   * receives peer's `bytes` bytes; peer calls it with this rank as its
   * peer.  With it, a step on two ranks trades the gradients where they
   * lie instead of packing them for an all-gather. */
  int (*sendrecv)(void *ctx, size_t peer, const void *send, void *recv,
                  size_t bytes);
  /* Optional (NULL: not offered): memory that every rank maps, for ranks
   * on one machine.  Called by every rank at once, with the same bytes;
   * on NN_OK seg[r] (r < size) is where rank r's `bytes` bytes lie in
   * this process, each aligned to 64 bytes, zeroed, and they stay until
   * the next call or until the communicator ends.  Every rank gets NN_OK
   * or every rank an error (ranks on several machines: an error).  With
   * it, a step's gradients travel through this memory instead of
   * messages, synchronized by atomic counters in it, with the same bits. */
  int (*shared)(void *ctx, size_t bytes, void **seg);
} nn_comm;

/* Doubles of scratch nn_dist_sum needs for n values on c. */
size_t nn_dist_scratch(const nn_comm *c, size_t n);

/* buf[0..n) on every rank becomes the sum over ranks of buf, the same bits
 * on every rank and from run to run: element i is added in rank order
 * (0 + x0 + x1 + ...) by the rank that owns its chunk, whatever order the
 * messages arrive in.  Costs an all-to-all and an all-gather of n doubles
 * per rank in all (what a ring allreduce moves).  scratch holds
 * nn_dist_scratch(c, n) doubles. */
int nn_dist_sum(const nn_comm *c, double *buf, size_t n, double *scratch,
                nn_error *err);

/* 64-bit FNV-1a of the bytes of n values (a checksum that ranks compare). */
uint64_t nn_dist_fnv1a(const double *v, size_t n, uint64_t h);

#ifdef __cplusplus
}
#endif
#endif /* NN_DIST_H */
