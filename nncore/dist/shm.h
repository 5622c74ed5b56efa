/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to libnn: ranks of one machine trading a step's gradients
 * through memory they all map (nn_comm.shared).
 *
 * Each rank owns a segment: a header (counters, the tags of its last
 * parts) and room for n values.  A rank writes part q of its step into
 * its own values, then publishes q; a rank that needs part q of every
 * rank waits until each has published it, so parts are read while still
 * warm and no message library copies them.  A part's tag (which
 * parameter, which rows and columns) is compared across ranks: ranks that
 * step in different orders stop with an error instead of adding
 * mismatched numbers.
 *
 * Reuse of the values is safe because every step starts with a
 * collective of the communicator (the step's counts), which no rank
 * enters before it has read everything of the step before.  A rank that
 * fails inside a step raises its failed flag when it ends the step: the
 * others stop waiting for it.  A rank whose process is gone is noticed
 * too (its pid, on this machine). */
#ifndef NN_DIST_SHM_H
#define NN_DIST_SHM_H

#include <stddef.h>
#include <stdint.h>

#include <nn/dist.h>

typedef struct nn__shm nn__shm;

/* What a part is: the same on every rank for the same q. */
typedef struct nn__shm_tag {
  uint64_t k, r0, r1, c0, c1;
} nn__shm_tag;

/* *out = NULL (and NN_OK) when c offers no shared memory: the caller
 * trades by messages. */
int nn__shm_create(nn__shm **out, const nn_comm *c, nn_error *err);
void nn__shm_free(nn__shm *s); /* NULL-safe; the memory is the comm's */

/* Collective (every rank, once the ranks agree that all were created):
 * maps segments of n_values values.  1 when they are mapped (then the
 * exchange below works), 0 when the ranks trade by messages instead
 * (the same answer on every rank).  Again after 1: 1. */
int nn__shm_map(nn__shm *s, size_t n_values);
int nn__shm_mapped(const nn__shm *s); /* NULL-safe */

/* Rank r's values (this rank's to write; others' to read after a wait). */
double *nn__shm_values(nn__shm *s, size_t r);

/* Publish this rank's next part (its values written), tagged; then wait
 * until every rank has published the same part.  An error (named by
 * rank) when a rank tagged its part otherwise, or failed, or is gone:
 * then *peer = 1 (the cause is another rank's). */
int nn__shm_exchange(nn__shm *s, const nn__shm_tag *tag, int *peer,
                     nn_error *err);

/* The end of a step: this rank raises its failed flag if `failed`, says
 * it is done, and waits until every rank has done so or failed.  *any:
 * some rank failed in this step. */
int nn__shm_end_step(nn__shm *s, int failed, int *any, nn_error *err);

#endif
