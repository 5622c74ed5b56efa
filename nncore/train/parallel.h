/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The threads the trainer lends to layers (libnn-internal), as an
 * nn_parallel (<nn/plugin_ext.h>).
 *
 * Owner: whoever calls nn__pool_create frees with nn__pool_free, after
 * every layer it was attached to has been detached or destroyed.  The
 * caller of run is slot 0; each helper thread has a slot of its own. */
#ifndef NN_TRAIN_PARALLEL_H
#define NN_TRAIN_PARALLEL_H

#include <nn/plugin_ext.h>

typedef struct nn__pool nn__pool;

/* A pool of `slots` slots (>= 2): slots - 1 helper threads. */
int nn__pool_create(nn__pool **out, size_t slots, nn_error *err);
void nn__pool_free(nn__pool *p); /* NULL-safe */
/* What layers are handed; lives as long as the pool. */
const nn_parallel *nn__pool_parallel(const nn__pool *p);

#endif /* NN_TRAIN_PARALLEL_H */
