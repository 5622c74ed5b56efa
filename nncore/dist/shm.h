/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to libnn: ranks of one machine trading a step's gradients
 * through memory they all map (nn_comm.shared).
 *
 * Each rank owns a segment: a header (a counter, the tags of its last
 * parts, its process id) and room for n values.  A rank writes a part of
 * its step (one parameter's gradient) into its own values, then publishes
 * it; every rank waits until each rank has published that part and reads
 * it where it lies: one copy per part, by its owner, and no message
 * library in between.  A part's tag (which parameter) is compared across
 * ranks: ranks that trade in different orders stop with an error instead
 * of adding mismatched numbers.
 *
 * The values are reused step after step.  That is safe because every step
 * starts with a collective of the communicator (the step's counts), which
 * no rank enters before it has read everything of the step before.  A
 * rank whose process is gone is noticed by the ones waiting for it (its
 * pid, on this machine). */
#ifndef NN_DIST_SHM_H
#define NN_DIST_SHM_H

#include <stddef.h>
#include <stdint.h>

#include <nn/dist.h>

typedef struct nn__shm nn__shm;

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

/* Rank r's values (this rank's to write; others' to read after an
 * exchange). */
double *nn__shm_values(nn__shm *s, size_t r);

/* Publish this rank's next part (its values written), tagged; then wait
 * until every rank has published the same part.  An error (named by
 * rank) when a rank tagged its part otherwise or is gone. */
int nn__shm_exchange(nn__shm *s, uint64_t tag, nn_error *err);

#endif
