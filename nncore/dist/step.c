/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The trainer's reduction per step (see dist/dist.h).
 *
 * Gradients are summed over each rank's examples and divided by the
 * global count once: a short last batch, or a rank with fewer examples of
 * it, is weighted by its true size.
 *
 * Ranks on one machine (the communicator maps shared memory): the ranks
 * gather their tails (counts, loss sums, stop flags), then each rank
 * copies each parameter's gradient into its own segment and every rank
 * reads every rank's from where it lies (dist/shm.h): one copy, made by
 * the rank that owns the gradient, and no message library in between.
 *
 * Two ranks with sendrecv (other machines): nothing is packed.  The ranks
 * trade their tails (the counts first, so that each knows both before it
 * adds anything), then each parameter's gradient straight from its matrix
 * into the other rank's receive buffer (one message per parameter: a few
 * per step), and nn__dist_mean or nn__dist_mean_sgd add the two ranks'
 * values one parameter at a time, the latter stepping the weights in the
 * same pass.
 *
 * Otherwise through nn_dist_sum: one flat buffer per step, [gradients |
 * count | loss sum | hits | stop flags | stop requests (signals)], so a
 * step costs one reduction however many parameters the model has
 * (Horovod fuses tensors, DDP buckets them, for the same reason).  Each
 * rank packs its sums (mean * count), nn_dist_sum adds them and the grads
 * are divided out of the buffer.
 *
 * A step's passes over gradients the size of the model cost about as much
 * as its arithmetic (memory bandwidth): hence no packs and no copies
 * through a message library where they can be avoided.  Every path adds
 * with the operations and in the order of nn_dist_sum, so all give the
 * same bits (see mean_of). */
#include <config.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <nn/math.h>

#include "dist/dist.h"
#include "dist/shm.h"
#include "math/kernels_mean.h"

enum { TAIL_COUNT, TAIL_LOSS, TAIL_HITS, TAIL_STOP, TAIL_REQUEST, N_TAIL };

struct nn__dist {
  const nn_comm *comm; /* lent */
  size_t n_grad;       /* gradient values in all */
  double *buf;         /* owned: n_grad + N_TAIL */
  double *scratch;     /* owned: nn_dist_scratch of the buffer */
  nn_error *errs;      /* owned: one per rank, for a stop */
  size_t *off;         /* owned: where each parameter starts in buf, in
                          scratch and in the shared values */
  double *tails;       /* owned: N_TAIL per rank, gathered */
  double *counts;      /* owned: each rank's examples in this step */
  const double **src;  /* owned: one pointer per rank (scratch) */
  const double **at;   /* owned: one pointer per rank (scratch) */
  nn__shm *shm;        /* owned; NULL or unmapped: messages */
  /* After nn__dist_reduce on two ranks by messages or on shared memory:
   * the other ranks' gradients are in scratch (at off) or in their
   * segments, the step's counts in counts, and the grads not yet the
   * mean. */
  int pending;
  double total;
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
  d->tails = malloc(comm->size * N_TAIL * sizeof *d->tails);
  d->counts = malloc(comm->size * sizeof *d->counts);
  d->src = malloc(comm->size * sizeof *d->src);
  d->at = malloc(comm->size * sizeof *d->at);
  int rc = NN_OK;
  if (!d->buf || !d->scratch || !d->errs || !d->tails || !d->counts ||
      !d->src || !d->at)
    rc = nn_error_set(err, NN_ENOMEM,
                      "out of memory for the gradient reduction buffers");
  if (!rc) rc = nn__shm_create(&d->shm, comm, err);
  if (rc) {
    nn__dist_free(d);
    return rc;
  }
  *out = d;
  return NN_OK;
}

void nn__dist_begin(nn__dist *d) {
  if (d->shm) nn__shm_map(d->shm, d->n_grad);
}

void nn__dist_free(nn__dist *d) {
  if (!d) return;
  free(d->buf);
  free(d->scratch);
  free(d->errs);
  free(d->off);
  free(d->tails);
  free(d->counts);
  free(d->src);
  free(d->at);
  nn__shm_free(d->shm);
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

/* Rank r's gradient values of row i of parameter k, after a reduction
 * that left them pending: in its shared segment, or (two ranks by
 * messages) this rank's in its grad and the other's in scratch. */
static const double *row_of(const nn__dist *d, const nn_param *p, size_t k,
                            size_t r, size_t i) {
  const size_t cols = p[k].value->size2;
  if (nn__shm_mapped(d->shm))
    return nn__shm_values(d->shm, r) + d->off[k] + i * cols;
  if (r == d->comm->rank) return p[k].grad->data + i * p[k].grad->tda;
  return d->scratch + d->off[k] + i * cols;
}

/* cols elements of a mean over the ranks: out[j] = (((0 + x0) + x1) +
 * ...) / total with x_r = src[r][j] * rank r's count.  These are the
 * operations of the path through nn_dist_sum (the scaled pack makes the
 * products, the sum adds in rank order from 0, unpack_sums divides), each
 * rounded to double as there.  The products are statements of their own
 * so that a compiler allowed to contract only within an expression
 * (clang's default) cannot fuse one into the sum (GCC in ISO C mode,
 * -std=c11, contracts nothing); a fused multiply-add would round once
 * where that path rounds twice.  Every rank runs this loop on the same
 * operands, so they get the same bits.  out may be one of the sources. */
static void mean_of(const nn__dist *d, const double *const *src, double *out,
                    size_t cols) {
  const double *c = d->counts, total = d->total;
  if (d->comm->size == 2) { /* the same operations, vectorized */
    nn__mean2_row(src[0], src[1], c[0], c[1], total, out, cols);
    return;
  }
  for (size_t j = 0; j < cols; j++) {
    double sum = 0.0;
    for (size_t r = 0; r < d->comm->size; r++) {
      const double x = src[r][j] * c[r];
      sum = sum + x;
    }
    out[j] = sum / total;
  }
}

/* Columns per piece of a row in the mean and step on three or more
 * ranks: the piece's mean lives on the stack, in L1 between its sum and
 * its step. */
#define SGD_PIECE 256

/* Row i of w takes nn_sgd_update's step with the mean over the ranks of
 * their rows at src, which is never stored.  nn_sgd_update is
 * elementwise: on a piece of a row with that piece's mean it gives the
 * bits it gives on the whole matrix with the whole mean. */
static int mean_sgd_row(nn__dist *d, const double *const *src, gsl_matrix *w,
                        size_t i, double lr, double reg) {
  const size_t n = d->comm->size, cols = w->size2;
  if (n == 2) { /* mean and step in one vectorized pass */
    nn__mean2_sgd_row(w->data + i * w->tda, src[0], src[1], d->counts[0],
                      d->counts[1], d->total, cols, lr, reg);
    return NN_OK;
  }
  double piece[SGD_PIECE];
  for (size_t j0 = 0; j0 < cols; j0 += SGD_PIECE) {
    const size_t m = cols - j0 < SGD_PIECE ? cols - j0 : SGD_PIECE;
    for (size_t r = 0; r < n; r++) d->at[r] = src[r] + j0;
    mean_of(d, d->at, piece, m);
    gsl_matrix_view gv = gsl_matrix_view_array(piece, 1, m);
    gsl_matrix_view wv = gsl_matrix_submatrix(w, i, j0, 1, m);
    int rc = nn_sgd_update(&wv.matrix, &gv.matrix, NULL, lr, reg, 0.0);
    if (rc) return rc;
  }
  return NN_OK;
}

void nn__dist_mean(nn__dist *d, nn_param *p, size_t k) {
  if (!d->pending) return; /* the sums were divided out in the reduction */
  gsl_matrix *g = p[k].grad;
  const size_t rows = p[k].value->size1, cols = p[k].value->size2;
  for (size_t i = 0; i < rows; i++) {
    for (size_t r = 0; r < d->comm->size; r++)
      d->src[r] = row_of(d, p, k, r, i);
    mean_of(d, d->src, g->data + i * g->tda, cols);
  }
}

int nn__dist_mean_sgd(nn__dist *d, nn_param *p, size_t k, double lr,
                      double reg) {
  gsl_matrix *w = p[k].value;
  if (!d->pending) return nn_sgd_update(w, p[k].grad, NULL, lr, reg, 0.0);
  const size_t rows = w->size1;
  for (size_t i = 0; i < rows; i++) {
    for (size_t r = 0; r < d->comm->size; r++)
      d->src[r] = row_of(d, p, k, r, i);
    int rc = mean_sgd_row(d, d->src, w, i, lr, reg);
    if (rc) return rc;
  }
  return NN_OK;
}

/* The tails' sums over the ranks, added as nn_dist_sum adds: in rank
 * order from 0, on every rank alike. */
static void add_tails(const nn__dist *d, const double *const *t,
                      double *sum) {
  for (size_t i = 0; i < N_TAIL; i++) {
    sum[i] = 0.0;
    for (size_t r = 0; r < d->comm->size; r++) sum[i] = sum[i] + t[r][i];
  }
}

/* The step's totals into *b (counts are sums of integers far below 2^53:
 * exact). */
static void take_sums(nn__dist *d, const double *sum, nn__dist_batch *b) {
  b->count = (size_t)sum[TAIL_COUNT];
  b->loss_sum = sum[TAIL_LOSS];
  b->hits = (size_t)sum[TAIL_HITS];
  b->request = sum[TAIL_REQUEST] > 0;
  d->total = sum[TAIL_COUNT];
}

static void fill_tail(double *x, const nn__dist_batch *b) {
  x[TAIL_COUNT] = (double)b->count;
  x[TAIL_LOSS] = b->stop ? 0 : b->loss_sum;
  x[TAIL_HITS] = (double)b->hits;
  x[TAIL_STOP] = b->stop ? 1 : 0;
  x[TAIL_REQUEST] = b->request ? 1 : 0;
}

/* Every rank's tail in hand (t[r], rank r's): each rank's count into
 * d->counts and the sums into *b.  Every rank sees the same sums, so on a
 * stop none trades gradients: each returns the first error. */
static int take_tails(nn__dist *d, const double *const *t, nn__dist_batch *b,
                      nn_error *err) {
  for (size_t r = 0; r < d->comm->size; r++) d->counts[r] = t[r][TAIL_COUNT];
  double sum[N_TAIL];
  add_tails(d, t, sum);
  if (sum[TAIL_STOP] > 0) return first_error(d, b->stop, err);
  take_sums(d, sum, b);
  return NN_OK;
}

/* The tails of every rank by an all-gather. */
static int gather_tails(nn__dist *d, nn__dist_batch *b, nn_error *err) {
  const nn_comm *c = d->comm;
  double mine[N_TAIL];
  fill_tail(mine, b);
  int rc = c->allgather(c->ctx, mine, d->tails, sizeof mine);
  if (rc) return nn_error_set(err, rc, "rank %zu: the exchange of the "
                              "step's counts failed", c->rank);
  for (size_t r = 0; r < c->size; r++) d->src[r] = d->tails + r * N_TAIL;
  return take_tails(d, d->src, b, err);
}

/* Parameter k's gradient (rows x cols at g, row stride ldg; NULL: zeros)
 * into this rank's segment, then every rank's is there to read. */
static int share_grad(nn__dist *d, size_t k, size_t rows, size_t cols,
                      const double *g, size_t ldg, nn_error *err) {
  double *to = nn__shm_values(d->shm, d->comm->rank) + d->off[k];
  if (g && ldg == cols)
    memcpy(to, g, rows * cols * sizeof *to);
  else
    for (size_t i = 0; i < rows; i++) {
      if (g)
        memcpy(to + i * cols, g + i * ldg, cols * sizeof *to);
      else
        memset(to + i * cols, 0, cols * sizeof *to);
    }
  return nn__shm_exchange(d->shm, k, err);
}

/* Two ranks through sendrecv: the tails, then the gradients as they lie.
 * A padded matrix (tda > size2) travels from its packed copy in buf. */
static int reduce_pair(nn__dist *d, nn_param *p, size_t n, nn__dist_batch *b,
                       nn_error *err) {
  const nn_comm *c = d->comm;
  const size_t peer = 1 - c->rank;
  const int live = b->count && !b->stop;
  double *x = d->buf + d->n_grad, *y = d->scratch + d->n_grad;
  fill_tail(x, b);
  int rc = c->sendrecv(c->ctx, peer, x, y, N_TAIL * sizeof *x);
  if (rc) return nn_error_set(err, rc, "rank %zu: the exchange of the "
                              "step's counts failed", c->rank);
  const double *t[2] = {c->rank ? y : x, c->rank ? x : y};
  if ((rc = take_tails(d, t, b, err))) return rc;
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
  d->pending = 1;
  return NN_OK;
}

/* Ranks sharing memory: the tails by an all-gather, then each parameter's
 * gradient whole through the segments (zeros from an empty slice, whose
 * grads may hold anything, even NaN, which a count of 0 would not
 * cancel). */
static int reduce_shared(nn__dist *d, nn_param *p, size_t n,
                         nn__dist_batch *b, nn_error *err) {
  const int live = b->count > 0;
  int rc = gather_tails(d, b, err);
  for (size_t k = 0; !rc && k < n; k++) {
    const gsl_matrix *g = p[k].grad;
    const size_t rows = p[k].value->size1, cols = p[k].value->size2;
    if (rows && cols)
      rc = share_grad(d, k, rows, cols, live ? g->data : NULL, g->tda, err);
  }
  if (!rc) d->pending = 1;
  return rc;
}

int nn__dist_reduce(nn__dist *d, nn_param *p, size_t n, nn__dist_batch *b,
                    nn_error *err) {
  const nn_comm *c = d->comm;
  d->pending = 0;
  if (nn__shm_mapped(d->shm)) return reduce_shared(d, p, n, b, err);
  if (c->size == 2 && c->sendrecv) return reduce_pair(d, p, n, b, err);
  const int live = b->count && !b->stop;
  const size_t len = d->n_grad + N_TAIL;
  const double local = (double)b->count;
  pack(p, n, d->buf, live, local);
  double *x = d->buf + d->n_grad;
  fill_tail(x, b);
  int rc = nn_dist_sum(c, d->buf, len, d->scratch, err);
  if (rc) return rc;
  if (x[TAIL_STOP] > 0) return first_error(d, b->stop, err);
  take_sums(d, x, b);
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
