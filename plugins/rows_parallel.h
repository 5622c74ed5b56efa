/* SPDX-License-Identifier: GPL-3.0-or-later */
/* For layers that spread a batch over the threads the core lends them
 * (nn_parallel, NN_EXT_LAYER_PARALLEL in <nn/plugin_ext.h>): the batch's
 * rows are cut into at most `most` runs of consecutive rows, by the number
 * of rows alone, and each run is a task.  A layer whose work per row is
 * independent (each row of the output from the same row of the input)
 * gets the same bits whichever thread runs a run; a layer that sums over
 * rows keeps a sum per run and adds the runs in order (conv2d.c). */
#ifndef NN_PLUGINS_ROWS_PARALLEL_H
#define NN_PLUGINS_ROWS_PARALLEL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <nn/plugin_ext.h>

/* Below this many values a batch is not worth a thread's wake-up. */
#define ROWS_PARALLEL_MIN_VALUES 32768u

typedef void (*rows_task_fn)(void *arg, size_t t, uint32_t slot);

/* par if it can run tasks on two or more threads, else NULL. */
static inline const nn_parallel *rows_parallel_usable(const nn_parallel *par) {
  return par && par->size >= NN_EXT_SIZE_TO(nn_parallel, run) && par->run &&
                 par->slots >= 2
             ? par
             : NULL;
}

static inline size_t rows_tasks(size_t rows, size_t most) {
  return rows < most ? rows : most;
}

/* The rows [*i0, *i1) of task t of n over `rows` rows. */
static inline void rows_of_task(size_t rows, size_t n, size_t t, size_t *i0,
                                size_t *i1) {
  *i0 = t * rows / n;
  *i1 = (t + 1) * rows / n;
}

/* task(arg, t, slot) for t in [0, n): on par's threads when it is given
 * and the work (`values` in all) is large enough, else here, in order, on
 * slot 0. */
static inline void rows_run(const nn_parallel *par, size_t n, size_t values,
                            rows_task_fn task, void *arg) {
  if (par && n > 1 && values >= ROWS_PARALLEL_MIN_VALUES) {
    par->run(par->ctx, n, task, arg);
    return;
  }
  for (size_t t = 0; t < n; t++) task(arg, t, 0);
}

/* ROWS_PARALLEL_EXTENSION(name, attach) defines name_parallel (the threads
 * extension with that attach operation) and name_extension(self, id), the
 * ops table's extension operation, which offers it. */
#define ROWS_PARALLEL_EXTENSION(name_, attach_)                              \
  static const nn_parallel_attach name_##_parallel = {                       \
      (uint32_t)sizeof(nn_parallel_attach), attach_};                        \
  static inline const void *name_##_extension(void *self, const char *id) {  \
    (void)self;                                                              \
    return strcmp(id, NN_EXT_LAYER_PARALLEL) == 0 ? &name_##_parallel : NULL; \
  }

#endif /* NN_PLUGINS_ROWS_PARALLEL_H */
