/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The trainer's reduction per step (see dist/dist.h).
 *
 * Gradients are summed over each rank's examples and divided by the
 * global count once: a short last batch, or a rank with fewer examples of
 * it, is weighted by its true size.
 *
 * Through nn_dist_sum (more than two ranks, or a communicator without
 * sendrecv): one flat buffer per step, [gradients | count | loss sum |
 * hits | stop flags | stop requests (signals)], so a step costs one
 * reduction however many parameters the model has (Horovod fuses tensors,
 * DDP buckets them, for the same reason).  Each rank packs its sums (mean
 * * count), nn_dist_sum adds them and the grads are divided out of the
 * buffer.
 *
 * Two ranks with sendrecv: nothing is packed.  The ranks trade their
 * tails (the counts first, so that each knows both before it adds
 * anything), then each parameter's gradient straight from its matrix into
 * the other rank's receive buffer (one message per parameter: a few per
 * step), and nn__dist_mean or nn__dist_mean_sgd add the two ranks' values
 * one parameter at a time, the latter stepping the weights in the same
 * pass.  A step's passes over gradients the size of the model cost about
 * as much as its arithmetic (memory bandwidth), and a pack and the
 * library's copy of the local part into a gather buffer would be two more.
 * The operations and their order are those of the path through
 * nn_dist_sum, so are the bits (see mean_row). */
#include <config.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <nn/math.h>

#include "dist/dist.h"

enum { TAIL_COUNT, TAIL_LOSS, TAIL_HITS, TAIL_STOP, TAIL_REQUEST, N_TAIL };

struct nn__dist {
  const nn_comm *comm; /* lent */
  size_t n_grad;       /* gradient values in all */
  double *buf;         /* owned: n_grad + N_TAIL */
  double *scratch;     /* owned: nn_dist_scratch of the buffer */
  nn_error *errs;      /* owned: one per rank, for a stop */
  size_t *off;         /* owned: where each parameter starts in buf and
                          in scratch */
  /* Two ranks, after nn__dist_reduce: the other rank's gradients are in
   * scratch (at off), the step's counts here, and the grads not yet the
   * mean. */
  int pending;
  double c0, c1, total;
};

int nn__dist_create(nn__dist **out, const nn_comm *comm, const nn_param *p,
                    size_t n, nn_error *err) {
  *out = NULL;
  nn__dist *d = calloc(1, sizeof *d);
  if (!d) return nn_error_set(err, NN_ENOMEM, "out of memory");
  d->comm = comm;
  d->off = malloc((n ? n : 1) * sizeof *d->off);
  if (!d->off) {
    free(d);
    return nn_error_set(err, NN_ENOMEM, "out of memory");
  }
  for (size_t k = 0; k < n; k++) {
    d->off[k] = d->n_grad;
    d->n_grad += p[k].value->size1 * p[k].value->size2;
  }
  const size_t len = d->n_grad + N_TAIL;
  d->buf = malloc(len * sizeof *d->buf);
  d->scratch = malloc(nn_dist_scratch(comm, len) * sizeof *d->scratch);
  d->errs = malloc(comm->size * sizeof *d->errs);
  if (!d->buf || !d->scratch || !d->errs) {
    nn__dist_free(d);
    return nn_error_set(err, NN_ENOMEM,
                        "out of memory for the gradient reduction buffers");
  }
  *out = d;
  return NN_OK;
}

void nn__dist_free(nn__dist *d) {
  if (!d) return;
  free(d->buf);
  free(d->scratch);
  free(d->errs);
  free(d->off);
  free(d);
}

const nn_comm *nn__dist_comm(const nn__dist *d) { return d->comm; }

/* Every rank learns why the lowest stopped rank stopped. */
static int first_error(nn__dist *d, int stopped, nn_error *err) {
  nn_error mine = {0};
  if (stopped) {
    if (err) mine = *err;
    if (!mine.code) mine.code = NN_EPLUGIN;
  }
  int rc = d->comm->allgather(d->comm->ctx, &mine, d->errs, sizeof mine);
  if (rc)
    return nn_error_set(err, rc, "rank %zu: the all-gather of errors failed",
                        d->comm->rank);
  for (size_t r = 0; r < d->comm->size; r++)
    if (d->errs[r].code) {
      const nn_error e = d->errs[r];
      return nn_error_set(err, e.code, "rank %zu: %s", r, e.msg);
    }
  return nn_error_set(err, NN_EPLUGIN, "a rank stopped without saying why");
}

/* This rank's gradients into x, row by row (a padded matrix has gaps),
 * times `local` (a rank's share of the sum), zeros when the rank has
 * nothing to give.  An empty slice's grads may hold anything, even NaN,
 * which a count of 0 would not cancel (NaN * 0 is NaN): its zeros are what
 * it adds. */
static void pack(const nn_param *p, size_t n, double *x, int live,
                 double local) {
  for (size_t k = 0; k < n; k++) {
    const gsl_matrix *g = p[k].grad;
    const size_t rows = p[k].value->size1, cols = p[k].value->size2;
    for (size_t i = 0; i < rows; i++, x += cols) {
      const double *row = g->data + i * g->tda;
      if (!live)
        memset(x, 0, cols * sizeof *x);
      else
        for (size_t j = 0; j < cols; j++) x[j] = row[j] * local;
    }
  }
}

/* After nn_dist_sum: the buffer holds the sums over all ranks. */
static void unpack_sums(const nn__dist *d, nn_param *p, size_t n,
                        double total) {
  const double *x = d->buf;
  for (size_t k = 0; k < n; k++) {
    gsl_matrix *g = p[k].grad;
    const size_t rows = p[k].value->size1, cols = p[k].value->size2;
    for (size_t i = 0; i < rows; i++, x += cols) {
      double *row = g->data + i * g->tda;
      for (size_t j = 0; j < cols; j++) row[j] = x[j] / total;
    }
  }
}

/* cols elements of a parameter's mean over two ranks: out[j] = ((0 + x0)
 * + x1) / total with x_r = rank r's gradient * its count.  These are the operations of the path through nn_dist_sum
 * (the scaled pack makes the products, the sum adds in rank order from 0,
 * unpack_sums divides), each rounded to double as there.  The products are
 * statements of their own so that a compiler allowed to contract only
 * within an expression (clang's default) cannot fuse one into the sum
 * (GCC in ISO C mode, -std=c11, contracts nothing); a fused multiply-add
 * would round once where that path rounds twice.  Both ranks run this loop
 * on the same operands, so they get the same bits.  out may be mine. */
static void mean_row(const nn__dist *d, const double *mine,
                     const double *theirs, double *out, size_t cols) {
  const double *s0 = d->comm->rank ? theirs : mine;
  const double *s1 = d->comm->rank ? mine : theirs;
  const double c0 = d->c0, c1 = d->c1, total = d->total;
  for (size_t j = 0; j < cols; j++) {
    const double x0 = s0[j] * c0;
    const double x1 = s1[j] * c1;
    out[j] = ((0.0 + x0) + x1) / total;
  }
}

/* Columns per piece of a row in nn__dist_mean_sgd: the piece's mean lives
 * on the stack, in L1 between its sum and its step. */
#define SGD_PIECE 256

void nn__dist_mean(nn__dist *d, nn_param *p, size_t k) {
  if (!d->pending) return; /* the sums were divided out in the reduction */
  gsl_matrix *g = p[k].grad;
  const size_t rows = p[k].value->size1, cols = p[k].value->size2;
  const double *theirs = d->scratch + d->off[k];
  for (size_t i = 0; i < rows; i++, theirs += cols) {
    double *row = g->data + i * g->tda;
    mean_row(d, row, theirs, row, cols);
  }
}

int nn__dist_mean_sgd(nn__dist *d, nn_param *p, size_t k, double lr,
                      double reg) {
  gsl_matrix *w = p[k].value;
  if (!d->pending) return nn_sgd_update(w, p[k].grad, NULL, lr, reg, 0.0);
  /* nn_sgd_update is elementwise: on a piece of a row with that piece's
   * mean it gives the bits it gives on the whole matrix with the whole
   * mean, which is thus never stored. */
  const gsl_matrix *g = p[k].grad;
  const size_t rows = w->size1, cols = w->size2;
  const double *theirs = d->scratch + d->off[k];
  double piece[SGD_PIECE];
  for (size_t i = 0; i < rows; i++, theirs += cols) {
    const double *mine = g->data + i * g->tda;
    for (size_t j0 = 0; j0 < cols; j0 += SGD_PIECE) {
      const size_t m = cols - j0 < SGD_PIECE ? cols - j0 : SGD_PIECE;
      mean_row(d, mine + j0, theirs + j0, piece, m);
      gsl_matrix_view gv = gsl_matrix_view_array(piece, 1, m);
      gsl_matrix_view wv = gsl_matrix_submatrix(w, i, j0, 1, m);
      int rc = nn_sgd_update(&wv.matrix, &gv.matrix, NULL, lr, reg, 0.0);
      if (rc) return rc;
    }
  }
  return NN_OK;
}

/* Two ranks through sendrecv: the tails, then the gradients as they lie.
 * A padded matrix (tda > size2) travels from its packed copy in buf. */
static int reduce_pair(nn__dist *d, nn_param *p, size_t n, nn__dist_batch *b,
                       nn_error *err) {
  const nn_comm *c = d->comm;
  const size_t peer = 1 - c->rank;
  const int live = b->count && !b->stop;
  double *x = d->buf + d->n_grad, *y = d->scratch + d->n_grad;
  x[TAIL_COUNT] = (double)b->count;
  x[TAIL_LOSS] = b->stop ? 0 : b->loss_sum;
  x[TAIL_HITS] = (double)b->hits;
  x[TAIL_STOP] = b->stop ? 1 : 0;
  x[TAIL_REQUEST] = b->request ? 1 : 0;
  int rc = c->sendrecv(c->ctx, peer, x, y, N_TAIL * sizeof *x);
  if (rc) return nn_error_set(err, rc, "rank %zu: the exchange of the "
                              "step's counts failed", c->rank);
  const double *t0 = c->rank ? y : x, *t1 = c->rank ? x : y;
  double sum[N_TAIL]; /* added as nn_dist_sum adds */
  for (size_t i = 0; i < N_TAIL; i++) sum[i] = (0.0 + t0[i]) + t1[i];
  /* Both ranks see the same sums: on a stop neither sends its
   * gradients. */
  if (sum[TAIL_STOP] > 0) return first_error(d, b->stop, err);
  d->c0 = t0[TAIL_COUNT];
  d->c1 = t1[TAIL_COUNT];
  for (size_t k = 0; k < n; k++) {
    gsl_matrix *g = p[k].grad;
    const size_t rows = p[k].value->size1, cols = p[k].value->size2;
    /* An empty slice's grads may hold anything, even NaN, which a count
     * of 0 would not cancel (NaN * 0 is NaN): zeros are what it adds,
     * and what it reads back as its own. */
    if (!live)
      for (size_t i = 0; i < rows; i++)
        memset(g->data + i * g->tda, 0, cols * sizeof *g->data);
    const double *send = g->data;
    if (g->tda != cols && rows > 1) {
      double *to = d->buf + d->off[k];
      for (size_t i = 0; i < rows; i++)
        memcpy(to + i * cols, g->data + i * g->tda, cols * sizeof *to);
      send = to;
    }
    rc = c->sendrecv(c->ctx, peer, send, d->scratch + d->off[k],
                     rows * cols * sizeof *send);
    if (rc) return nn_error_set(err, rc, "rank %zu: the exchange of the "
                                "gradients of %s failed", c->rank,
                                p[k].name ? p[k].name : "a parameter");
  }
  /* Counts are sums of integers far below 2^53: exact. */
  b->count = (size_t)sum[TAIL_COUNT];
  b->loss_sum = sum[TAIL_LOSS];
  b->hits = (size_t)sum[TAIL_HITS];
  b->request = sum[TAIL_REQUEST] > 0;
  d->total = sum[TAIL_COUNT];
  d->pending = 1;
  return NN_OK;
}

int nn__dist_reduce(nn__dist *d, nn_param *p, size_t n, nn__dist_batch *b,
                    nn_error *err) {
  const nn_comm *c = d->comm;
  d->pending = 0;
  if (c->size == 2 && c->sendrecv) return reduce_pair(d, p, n, b, err);
  const int live = b->count && !b->stop;
  const size_t len = d->n_grad + N_TAIL;
  const double local = (double)b->count;
  pack(p, n, d->buf, live, local);
  double *x = d->buf + d->n_grad;
  x[TAIL_COUNT] = local;
  x[TAIL_LOSS] = b->stop ? 0 : b->loss_sum;
  x[TAIL_HITS] = (double)b->hits;
  x[TAIL_STOP] = b->stop ? 1 : 0;
  x[TAIL_REQUEST] = b->request ? 1 : 0;
  const int stopped = b->stop;
  int rc = nn_dist_sum(c, d->buf, len, d->scratch, err);
  if (rc) return rc;
  if (x[TAIL_STOP] > 0) return first_error(d, stopped, err);
  /* Counts are sums of integers far below 2^53: exact. */
  b->count = (size_t)x[TAIL_COUNT];
  b->loss_sum = x[TAIL_LOSS];
  b->hits = (size_t)x[TAIL_HITS];
  b->request = x[TAIL_REQUEST] > 0;
  unpack_sums(d, p, n, x[TAIL_COUNT]);
  return NN_OK;
}

int nn__dist_bcast(nn__dist *d, gsl_matrix *const *m, size_t n,
                   nn_error *err) {
  for (size_t k = 0; k < n; k++) {
    gsl_matrix *a = m[k];
    /* Row by row: a padded matrix (tda > size2) has gaps. */
    for (size_t i = 0; i < a->size1; i++) {
      int rc = nn__dist_bcast_bytes(d, a->data + i * a->tda,
                                    a->size2 * sizeof *a->data, err);
      if (rc) return rc;
    }
  }
  return NN_OK;
}

int nn__dist_bcast_bytes(nn__dist *d, void *buf, size_t bytes, nn_error *err) {
  int rc = d->comm->bcast(d->comm->ctx, buf, bytes);
  if (rc)
    return nn_error_set(err, rc, "rank %zu: the broadcast from rank 0 failed",
                        d->comm->rank);
  return NN_OK;
}

int nn__dist_any(nn__dist *d, int mine, int *any, nn_error *err) {
  /* The step's buffer is free between steps; its scratch is large enough
   * for one value. */
  d->buf[0] = mine ? 1 : 0;
  int rc = nn_dist_sum(d->comm, d->buf, 1, d->scratch, err);
  if (rc) return rc;
  *any = d->buf[0] > 0;
  return NN_OK;
}
