/* SPDX-License-Identifier: GPL-3.0-or-later */
/* One helper thread that runs a job while its caller does something else
 * (libnn-internal: the trainer gathers the next batch on it).
 *
 * Owner: whoever calls nn_worker_create frees with nn_worker_free.  One job
 * at a time: nn_worker_post a job, nn_worker_finish it, then post the
 * next.  The job must not touch what the caller touches meanwhile.
 *
 * A posted job is claimed atomically by exactly one side: the worker when
 * it gets a CPU in time, or the caller in nn_worker_finish when the worker
 * has not started it yet.  So the caller never waits for a thread that is
 * not running (on a busy machine the helper may get no CPU for
 * milliseconds); it only waits for a job that is already under way.  The
 * job must therefore give the same result on either thread. */
#ifndef NN_WORKER_H
#define NN_WORKER_H

#include <nn/plugin.h>

typedef struct nn_worker nn_worker;

int nn_worker_create(nn_worker **out, nn_error *err);
/* Finishes a posted job, stops and joins the thread; NULL-safe. */
void nn_worker_free(nn_worker *w);
/* Offer fn(arg) to the worker thread and return at once. */
void nn_worker_post(nn_worker *w, void (*fn)(void *), void *arg);
/* Return once the last posted job has finished (at once if none): run it
 * here if the worker has not claimed it, else wait for the worker.
 * Returns 1 if the job ran here, 0 otherwise. */
int nn_worker_finish(nn_worker *w);

#endif /* NN_WORKER_H */
