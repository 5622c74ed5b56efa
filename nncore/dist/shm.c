/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The step's exchange through shared memory (see dist/shm.h). */
#define _POSIX_C_SOURCE 200809L /* kill, sched_yield */
#include <config.h>

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/shm.h"

/* Parts a rank can be ahead of the slowest reader of its tags: one (it
 * waits for everyone's part q before it publishes q + 2), kept with room
 * to spare. */
#define TAG_RING 4

/* Spins before a waiting rank starts yielding its CPU: a part usually
 * comes within microseconds, but on a machine with fewer free CPUs than
 * ranks the rank it waits for may need this one. */
#define SPINS_BEFORE_YIELD 4096

/* Yields between checks that the awaited rank's process still exists. */
#define YIELDS_PER_LIVENESS_CHECK 4096

typedef struct seg_head {
  _Alignas(64) atomic_uint_fast64_t published; /* parts so far */
  atomic_long pid;          /* this rank's process, set once mapped */
  uint64_t tag[TAG_RING];   /* part q's at q % TAG_RING */
} seg_head;

/* A segment: its head, then the values, 64-byte aligned. */
#define VALUES_OFFSET ((sizeof(seg_head) + 63) / 64 * 64)

struct nn__shm {
  const nn_comm *comm; /* lent */
  void **seg;          /* owned array; the segments are the comm's */
  int mapped;          /* seg holds the segments */
  uint64_t parts;      /* this rank's parts published */
};

static seg_head *head(const nn__shm *s, size_t r) { return s->seg[r]; }

double *nn__shm_values(nn__shm *s, size_t r) {
  return (double *)((char *)s->seg[r] + VALUES_OFFSET);
}

void nn__shm_free(nn__shm *s) {
  if (!s) return;
  free(s->seg);
  free(s);
}

int nn__shm_create(nn__shm **out, const nn_comm *c, nn_error *err) {
  *out = NULL;
  if (!c->shared) return NN_OK;
  nn__shm *s = calloc(1, sizeof *s);
  if (!s || !(s->seg = calloc(c->size, sizeof *s->seg))) {
    nn__shm_free(s);
    return nn_error_set(err, NN_ENOMEM, "out of memory");
  }
  s->comm = c;
  *out = s;
  return NN_OK;
}

int nn__shm_map(nn__shm *s, size_t n_values) {
  if (s->mapped) return 1;
  if (n_values > (SIZE_MAX - VALUES_OFFSET) / sizeof(double)) return 0;
  const nn_comm *c = s->comm;
  if (c->shared(c->ctx, VALUES_OFFSET + n_values * sizeof(double), s->seg))
    return 0; /* not on one machine, or no shared memory */
  atomic_store_explicit(&head(s, c->rank)->pid, (long)getpid(),
                        memory_order_relaxed);
  s->mapped = 1;
  return 1;
}

int nn__shm_mapped(const nn__shm *s) { return s && s->mapped; }

/* Whether rank r's process still exists (it is on this machine; 0: not
 * known yet). */
static int alive(const nn__shm *s, size_t r) {
  const long pid = atomic_load_explicit(&head(s, r)->pid,
                                        memory_order_relaxed);
  return pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH;
}

/* Wait until rank r has published part q: 0, or 1 when its process is
 * gone. */
static int wait_for(const nn__shm *s, size_t r, uint64_t q) {
  seg_head *h = head(s, r);
  for (unsigned long spins = 0;; spins++) {
    if (atomic_load_explicit(&h->published, memory_order_acquire) >= q)
      return 0;
    if (spins < SPINS_BEFORE_YIELD) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      continue;
    }
    sched_yield();
    if ((spins - SPINS_BEFORE_YIELD) % YIELDS_PER_LIVENESS_CHECK == 0 &&
        !alive(s, r))
      return 1;
  }
}

int nn__shm_exchange(nn__shm *s, uint64_t tag, nn_error *err) {
  const size_t me = s->comm->rank;
  const uint64_t q = ++s->parts;
  seg_head *mine = head(s, me);
  mine->tag[q % TAG_RING] = tag;
  atomic_store_explicit(&mine->published, q, memory_order_release);
  for (size_t r = 0; r < s->comm->size; r++) {
    if (r == me) continue;
    if (wait_for(s, r, q))
      return nn_error_set(err, NN_EIO, "rank %zu is gone during the step",
                          r);
    const uint64_t theirs = head(s, r)->tag[q % TAG_RING];
    if (theirs != tag)
      return nn_error_set(err, NN_EPLUGIN,
                          "ranks %zu and %zu traded different parameters "
                          "at the same point (%llu against %llu)",
                          me, r, (unsigned long long)tag,
                          (unsigned long long)theirs);
  }
  return NN_OK;
}
