/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to libnn: the trainer's side of data-parallel training.  One
 * nn__dist per trainer (owned by it), made when nn_train_opts.comm has more
 * than one rank. */
#ifndef NN_DIST_DIST_H
#define NN_DIST_DIST_H

#include <nn/dist.h>

typedef struct nn__dist nn__dist;

/* What one rank contributes to a step, and after nn__dist_reduce what the
 * ranks contributed together. */
typedef struct nn__dist_batch {
  size_t count;    /* examples */
  double loss_sum; /* their losses added (not the mean) */
  size_t hits;
  int stop;        /* this rank failed (local: err holds why) */
  int request;     /* this rank's watch flag is raised (after: any rank's) */
} nn__dist_batch;

/* For the n parameters' gradients; comm is lent and must outlive it. */
int nn__dist_create(nn__dist **out, const nn_comm *comm, const nn_param *p,
                    size_t n, nn_error *err);
void nn__dist_free(nn__dist *d); /* NULL-safe */
const nn_comm *nn__dist_comm(const nn__dist *d);

/* Collective, once every rank's trainer exists (nn_trainer_broadcast):
 * maps the shared memory the communicator offers, if it can (every rank
 * alike); steps then trade through it instead of messages. */
void nn__dist_begin(nn__dist *d);

/* The step's one reduction.  On entry each parameter's grad is the mean
 * over this rank's b->count examples (anything when b->count is 0) and
 * *b this rank's numbers; on return *b holds the totals.  When any rank
 * stopped, every rank returns the error of the lowest one that did (err
 * holds this rank's own on entry), named by rank.  After it, once per
 * parameter k: nn__dist_mean or nn__dist_mean_sgd. */
int nn__dist_reduce(nn__dist *d, nn_param *p, size_t n, nn__dist_batch *b,
                    nn_error *err);

/* Parameter k's grad becomes the mean over all the ranks' examples, the
 * same bits on every rank. */
void nn__dist_mean(nn__dist *d, nn_param *p, size_t k);

/* Parameter k's value takes the step nn_sgd_update(value, mean, NULL, lr,
 * reg, 0) with that mean, the same bits; its grad is left undefined. */
int nn__dist_mean_sgd(nn__dist *d, nn_param *p, size_t k, double lr,
                      double reg);

/* *any = whether `mine` is non-zero on any rank. */
int nn__dist_any(nn__dist *d, int mine, int *any, nn_error *err);

/* The n matrices on every rank become rank 0's. */
int nn__dist_bcast(nn__dist *d, gsl_matrix *const *m, size_t n,
                   nn_error *err);
/* As bytes (counts, an RNG state). */
int nn__dist_bcast_bytes(nn__dist *d, void *buf, size_t bytes, nn_error *err);

#endif
