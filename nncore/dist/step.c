/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The trainer's reduction per step (see dist/dist.h).
 *
 * One flat buffer per step, [gradients | count | loss sum | hits | stop
 * flags | stop requests (signals)], so a step costs one reduction however
 * many parameters the model has (Horovod fuses tensors, DDP buckets them,
 * for the same reason).  Gradients are summed over each rank's examples
 * and divided by the global count once: a short last batch, or a rank with
 * fewer examples of it, is weighted by its true size.
 *
 * With more than two ranks each rank packs its sums (mean * count),
 * nn_dist_sum adds them and the grads are divided out of the buffer.  With
 * two the step does not go through nn_dist_sum: the gradients travel as
 * they are (means) with each rank's count in the tail, and after the one
 * all-gather each rank scales, adds and divides every element in one pass,
 * reading its own gradients where they lie, instead of three passes over a
 * buffer of every gradient (scale, add, divide).  The operations and their
 * order are the same, so are the bits (see unpack_pair). */
#include <config.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"

enum { TAIL_COUNT, TAIL_LOSS, TAIL_HITS, TAIL_STOP, TAIL_REQUEST, N_TAIL };

struct nn__dist {
  const nn_comm *comm; /* lent */
  size_t n_grad;       /* gradient values in all */
  double *buf;         /* owned: n_grad + N_TAIL */
  double *scratch;     /* owned: nn_dist_scratch of the buffer */
  nn_error *errs;      /* owned: one per rank, for a stop */
};

int nn__dist_create(nn__dist **out, const nn_comm *comm, const nn_param *p,
                    size_t n, nn_error *err) {
  *out = NULL;
  nn__dist *d = calloc(1, sizeof *d);
  if (!d) return nn_error_set(err, NN_ENOMEM, "out of memory");
  d->comm = comm;
  for (size_t k = 0; k < n; k++)
    d->n_grad += p[k].value->size1 * p[k].value->size2;
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
  free(d);
}

const nn_comm *nn__dist_comm(const nn__dist *d) { return d->comm; }

/* Every rank learns why the lowest stopped rank stopped. */
static int first_error(nn__dist *d, int stopped, nn_error *err) {
  nn_error mine = {0};
  if (stopped) {
    mine = *err;
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

/* This rank's gradients into x, row by row (a padded matrix has gaps):
 * times `local` (a rank's share of the sum) when scale is set, as they are
 * when not, zeros when the rank has nothing to give.  An empty slice's
 * grads may hold anything, even NaN, which a count of 0 would not cancel
 * (NaN * 0 is NaN): its zeros are what it adds. */
static void pack(const nn_param *p, size_t n, double *x, int live, int scale,
                 double local) {
  for (size_t k = 0; k < n; k++) {
    const gsl_matrix *g = p[k].grad;
    const size_t rows = p[k].value->size1, cols = p[k].value->size2;
    for (size_t i = 0; i < rows; i++, x += cols) {
      const double *row = g->data + i * g->tda;
      if (!live)
        memset(x, 0, cols * sizeof *x);
      else if (scale)
        for (size_t j = 0; j < cols; j++) x[j] = row[j] * local;
      else
        memcpy(x, row, cols * sizeof *x);
    }
  }
}

/* More than two ranks: the buffer holds the sums over all ranks. */
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

/* Two ranks: scratch holds both ranks' buffers (rank 0's first), each its
 * gradients unscaled and its count in the tail.  Every element becomes
 * ((0 + x0) + x1) / total with x_r = rank r's gradient * its count: the
 * product the scaled pack makes, the sum in nn_dist_sum's order, the
 * division of unpack_sums, each rounded to double as there.  The products
 * are statements of their own so that a compiler allowed to contract only
 * within an expression (clang's default) cannot fuse one into the sum
 * (GCC in ISO C mode, -std=c11, contracts nothing); a fused multiply-add
 * would round once where the reference rounds twice.  Both ranks run this
 * same loop on the same operands, so they get the same bits.  This rank's
 * own values are read from its grads, which it then overwrites element by
 * element: one stream fewer than reading its copy in scratch.  A rank
 * without examples sent zeros and its count 0; its grads are not what it
 * sent, so its own values come from its packed buffer. */
static void unpack_pair(const nn__dist *d, nn_param *p, size_t n, int live,
                        double total) {
  const size_t len = d->n_grad + N_TAIL, me = d->comm->rank;
  const double c0 = d->scratch[d->n_grad + TAIL_COUNT];
  const double c1 = d->scratch[len + d->n_grad + TAIL_COUNT];
  const double *sent = d->buf, *theirs = d->scratch + (1 - me) * len;
  for (size_t k = 0; k < n; k++) {
    gsl_matrix *g = p[k].grad;
    const size_t rows = p[k].value->size1, cols = p[k].value->size2;
    for (size_t i = 0; i < rows; i++, sent += cols, theirs += cols) {
      double *row = g->data + i * g->tda;
      const double *mine = live ? row : sent;
      const double *s0 = me ? theirs : mine, *s1 = me ? mine : theirs;
      for (size_t j = 0; j < cols; j++) {
        const double x0 = s0[j] * c0;
        const double x1 = s1[j] * c1;
        row[j] = ((0.0 + x0) + x1) / total;
      }
    }
  }
}

int nn__dist_reduce(nn__dist *d, nn_param *p, size_t n, nn__dist_batch *b,
                    nn_error *err) {
  const nn_comm *c = d->comm;
  const int pair = c->size == 2, live = b->count && !b->stop;
  const size_t len = d->n_grad + N_TAIL;
  const double local = (double)b->count;
  pack(p, n, d->buf, live, !pair, local);
  double *x = d->buf + d->n_grad;
  x[TAIL_COUNT] = local;
  x[TAIL_LOSS] = b->stop ? 0 : b->loss_sum;
  x[TAIL_HITS] = (double)b->hits;
  x[TAIL_STOP] = b->stop ? 1 : 0;
  x[TAIL_REQUEST] = b->request ? 1 : 0;
  const int stopped = b->stop;
  if (pair) { /* scratch: nn_dist_scratch(c, len) >= 2 len doubles */
    int rc = c->allgather(c->ctx, d->buf, d->scratch, len * sizeof *d->buf);
    if (rc) return nn_error_set(err, rc, "rank %zu: the all-gather of the "
                                "gradient sum failed", c->rank);
    /* The tail summed as nn_dist_sum sums; the per-rank counts stay in
     * scratch for unpack_pair. */
    const double *t0 = d->scratch + d->n_grad, *t1 = t0 + len;
    for (size_t i = 0; i < N_TAIL; i++) x[i] = (0.0 + t0[i]) + t1[i];
  } else {
    int rc = nn_dist_sum(c, d->buf, len, d->scratch, err);
    if (rc) return rc;
  }
  if (x[TAIL_STOP] > 0) return first_error(d, stopped, err);
  /* Counts are sums of integers far below 2^53: exact. */
  b->count = (size_t)x[TAIL_COUNT];
  b->loss_sum = x[TAIL_LOSS];
  b->hits = (size_t)x[TAIL_HITS];
  b->request = x[TAIL_REQUEST] > 0;
  const double total = x[TAIL_COUNT];
  if (pair)
    unpack_pair(d, p, n, live, total);
  else
    unpack_sums(d, p, n, total);
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
