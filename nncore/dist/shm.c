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
  _Alignas(64) atomic_uint_fast64_t done;      /* steps ended so far */
  atomic_int failed;                           /* raised for good */
  atomic_long pid; /* this rank's process, set once mapped (0 before) */
  nn__shm_tag tag[TAG_RING];                   /* part q at q % TAG_RING */
} seg_head;

/* A segment: its head, then the values, 64-byte aligned. */
#define VALUES_OFFSET ((sizeof(seg_head) + 63) / 64 * 64)

struct nn__shm {
  const nn_comm *comm; /* lent */
  void **seg;          /* owned array; the segments are the comm's */
  int mapped;          /* seg holds the segments */
  uint64_t parts;      /* this rank's parts published */
  uint64_t steps;      /* this rank's steps ended */
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

/* Whether rank r's process still exists (it is on this machine). */
static int alive(const nn__shm *s, size_t r) {
  const long pid = atomic_load_explicit(&head(s, r)->pid,
                                        memory_order_relaxed);
  return pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH;
}

/* Wait until *counter >= target, rank r's failed flag is raised (1) or
 * its process is gone (2). */
static int wait_on(const nn__shm *s, size_t r, atomic_uint_fast64_t *counter,
                   uint64_t target) {
  seg_head *h = head(s, r);
  for (unsigned long spins = 0;; spins++) {
    if (atomic_load_explicit(counter, memory_order_acquire) >= target)
      return 0;
    if (atomic_load_explicit(&h->failed, memory_order_acquire)) return 1;
    if (spins < SPINS_BEFORE_YIELD) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      continue;
    }
    sched_yield();
    if ((spins - SPINS_BEFORE_YIELD) % YIELDS_PER_LIVENESS_CHECK == 0 &&
        !alive(s, r))
      return 2;
  }
}

static int same_tag(const nn__shm_tag *a, const nn__shm_tag *b) {
  return a->k == b->k && a->r0 == b->r0 && a->r1 == b->r1 &&
         a->c0 == b->c0 && a->c1 == b->c1;
}

int nn__shm_exchange(nn__shm *s, const nn__shm_tag *tag, int *peer,
                     nn_error *err) {
  const size_t me = s->comm->rank;
  const uint64_t q = ++s->parts;
  seg_head *mine = head(s, me);
  mine->tag[q % TAG_RING] = *tag;
  atomic_store_explicit(&mine->published, q, memory_order_release);
  *peer = 0;
  for (size_t r = 0; r < s->comm->size; r++) {
    if (r == me) continue;
    seg_head *h = head(s, r);
    const int why = wait_on(s, r, &h->published, q);
    if (why) {
      *peer = 1;
      return nn_error_set(err, NN_EIO, "rank %zu %s during the step", r,
                          why == 1 ? "stopped" : "is gone");
    }
    const nn__shm_tag *t = &h->tag[q % TAG_RING];
    if (!same_tag(t, tag))
      return nn_error_set(
          err, NN_EPLUGIN,
          "ranks %zu and %zu stepped different parts at the same point "
          "(parameter %llu rows [%llu, %llu) columns [%llu, %llu) against "
          "parameter %llu rows [%llu, %llu) columns [%llu, %llu)): the "
          "model steps in an order that depends on the data",
          me, r, (unsigned long long)tag->k, (unsigned long long)tag->r0,
          (unsigned long long)tag->r1, (unsigned long long)tag->c0,
          (unsigned long long)tag->c1, (unsigned long long)t->k,
          (unsigned long long)t->r0, (unsigned long long)t->r1,
          (unsigned long long)t->c0, (unsigned long long)t->c1);
  }
  return NN_OK;
}

int nn__shm_end_step(nn__shm *s, int failed, int *any, nn_error *err) {
  const size_t me = s->comm->rank;
  seg_head *mine = head(s, me);
  if (failed) atomic_store_explicit(&mine->failed, 1, memory_order_release);
  atomic_store_explicit(&mine->done, ++s->steps, memory_order_release);
  *any = failed;
  for (size_t r = 0; r < s->comm->size; r++) {
    if (r == me) continue;
    seg_head *h = head(s, r);
    const int why = wait_on(s, r, &h->done, s->steps);
    if (why == 2)
      return nn_error_set(err, NN_EIO, "rank %zu is gone during the step",
                          r);
    if (why || atomic_load_explicit(&h->failed, memory_order_acquire))
      *any = 1;
  }
  return NN_OK;
}
