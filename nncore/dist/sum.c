/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The reproducible sum over ranks (see <nn/dist.h>).
 *
 * MPI_Allreduce may add the ranks' values in any order (Open MPI picks its
 * algorithm by rank count and message size), so the same inputs need not
 * give the same bits.  Here the order is fixed: the buffer is cut into one
 * chunk per rank, an all-to-all brings every rank's piece of chunk k to
 * rank k, which adds them in rank order, and an all-gather hands the summed
 * chunks to everybody.  That is a reduce-scatter then an all-gather, what a
 * ring allreduce does, so it moves no more bytes than one.
 *
 * With two ranks one all-gather of the whole buffer moves the same bytes
 * in one collective instead of two, and each rank adds both copies itself:
 * a step then waits for the other rank once, which counts on a machine
 * whose CPUs are shared (measured: docs/distributed.md).  Either way every
 * element is 0 + x0 + x1 + ..., so the two give the same bits. */
#include <config.h>

#include <string.h>

#include <nn/dist.h>

static size_t chunk_of(const nn_comm *c, size_t n) {
  return n ? (n + c->size - 1) / c->size : 1;
}

size_t nn_dist_scratch(const nn_comm *c, size_t n) {
  return 2 * c->size * chunk_of(c, n);
}

int nn_dist_sum(const nn_comm *c, double *buf, size_t n, double *scratch,
                nn_error *err) {
  if (c->size <= 1) return NN_OK;
  if (c->size == 2) { /* scratch holds 2 * chunk_of(n) * 2 >= 2n doubles */
    int rc = c->allgather(c->ctx, buf, scratch, n * sizeof *buf);
    if (rc) return nn_error_set(err, rc, "rank %zu: the all-gather of the "
                                "gradient sum failed", c->rank);
    for (size_t i = 0; i < n; i++) buf[i] = (0.0 + scratch[i]) + scratch[n + i];
    return NN_OK;
  }
  const size_t chunk = chunk_of(c, n), padded = c->size * chunk;
  double *send = scratch, *recv = scratch + padded;
  memcpy(send, buf, n * sizeof *buf);
  memset(send + n, 0, (padded - n) * sizeof *send); /* the last chunk's tail */
  int rc = c->alltoall(c->ctx, send, recv, chunk * sizeof *send);
  if (rc) return nn_error_set(err, rc, "rank %zu: the all-to-all of the "
                              "gradient sum failed", c->rank);
  /* recv holds chunk `rank` from every rank, rank 0's first. */
  for (size_t i = 0; i < chunk; i++) {
    double s = 0;
    for (size_t r = 0; r < c->size; r++) s += recv[r * chunk + i];
    send[i] = s;
  }
  rc = c->allgather(c->ctx, send, recv, chunk * sizeof *send);
  if (rc) return nn_error_set(err, rc, "rank %zu: the all-gather of the "
                              "gradient sum failed", c->rank);
  memcpy(buf, recv, n * sizeof *buf);
  return NN_OK;
}

uint64_t nn_dist_fnv1a(const double *v, size_t n, uint64_t h) {
  const unsigned char *p = (const unsigned char *)v;
  for (size_t i = 0; i < n * sizeof *v; i++) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}
