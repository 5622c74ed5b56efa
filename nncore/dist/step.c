/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The trainer's reduction per step (see dist/dist.h).
 *
 * One flat buffer per step, [gradient sums | count | loss sum | hits |
 * stop flags | stop requests (signals)], so a step costs one reduction
 * however many parameters the
 * model has (Horovod fuses tensors, DDP buckets them, for the same
 * reason).  Gradients travel as sums over each rank's examples and are
 * divided by the global count once: a short last batch, or a rank with
 * fewer examples of it, is weighted by its true size. */
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

int nn__dist_reduce(nn__dist *d, nn_param *p, size_t n, nn__dist_batch *b,
                    nn_error *err) {
  double *x = d->buf;
  const double local = (double)b->count;
  for (size_t k = 0; k < n; k++) {
    const gsl_matrix *g = p[k].grad;
    const size_t rows = p[k].value->size1, cols = p[k].value->size2;
    for (size_t i = 0; i < rows; i++, x += cols) {
      if (!b->count || b->stop) {
        memset(x, 0, cols * sizeof *x);
        continue;
      }
      const double *row = g->data + i * g->tda;
      for (size_t j = 0; j < cols; j++) x[j] = row[j] * local;
    }
  }
  x[TAIL_COUNT] = local;
  x[TAIL_LOSS] = b->stop ? 0 : b->loss_sum;
  x[TAIL_HITS] = (double)b->hits;
  x[TAIL_STOP] = b->stop ? 1 : 0;
  x[TAIL_REQUEST] = b->request ? 1 : 0;
  const int stopped = b->stop;
  int rc = nn_dist_sum(d->comm, d->buf, d->n_grad + N_TAIL, d->scratch, err);
  if (rc) return rc;
  if (x[TAIL_STOP] > 0) return first_error(d, stopped, err);
  /* Counts are sums of integers far below 2^53: exact. */
  b->count = (size_t)x[TAIL_COUNT];
  b->loss_sum = x[TAIL_LOSS];
  b->hits = (size_t)x[TAIL_HITS];
  b->request = x[TAIL_REQUEST] > 0;
  const double total = x[TAIL_COUNT];
  x = d->buf;
  for (size_t k = 0; k < n; k++) {
    gsl_matrix *g = p[k].grad;
    const size_t rows = p[k].value->size1, cols = p[k].value->size2;
    for (size_t i = 0; i < rows; i++, x += cols) {
      double *row = g->data + i * g->tda;
      for (size_t j = 0; j < cols; j++) row[j] = x[j] / total;
    }
  }
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
