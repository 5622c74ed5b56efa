/* One helper thread that runs a job while its caller does something else
 * (libnn-internal: the trainer gathers the next batch on it).
 *
 * Owner: whoever calls nn_worker_create frees with nn_worker_free.  One job
 * at a time: nn_worker_post a job, nn_worker_wait for it, then post the
 * next.  The job must not touch what the caller touches meanwhile. */
#ifndef NN_WORKER_H
#define NN_WORKER_H

#include <nn/plugin.h>

typedef struct nn_worker nn_worker;

int nn_worker_create(nn_worker **out, nn_error *err);
/* Waits for a posted job, stops and joins the thread; NULL-safe. */
void nn_worker_free(nn_worker *w);
/* Start fn(arg) on the worker thread and return at once. */
void nn_worker_post(nn_worker *w, void (*fn)(void *), void *arg);
/* Return once the last posted job has finished (at once if none). */
void nn_worker_wait(nn_worker *w);

#endif /* NN_WORKER_H */
