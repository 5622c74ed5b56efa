/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The training loop.  See <nn/train.h>.
 *
 * Per batch: gather (bytes -> doubles), model forward -> scores, fused
 * softmax + cross-entropy + score gradient (in place), model backward,
 * optimizer step.  A model with the sparse-input extension gets the
 * batch as compressed sparse rows straight from the bytes (MNIST is 81 %
 * zeros: the dense batch would be five times the data, written and then
 * scanned again by the model); other models get a dense X.  Every buffer
 * is allocated once, in nn_trainer_create (batch-sized) or at the start of
 * nn_trainer_run (the shuffle order): nothing is allocated inside the
 * batch loop.
 *
 * With [train] threads >= 2 the next batch is gathered on a helper thread
 * while the model computes on the current one (a batch slot more, used in
 * turn).  The gather only reads the dataset and writes the idle slot, so
 * the results are those of one thread, bit for bit.  This is the one use
 * of a second core that paid off on the 2-vCPU machines this was measured
 * on: splitting the model's own work between two cores was measured twice
 * and never beat one thread there (README, Threads), while the gather is a
 * fifth of an epoch that hides behind the model's work entirely.
 *
 * A model whose fused-step extension has backward_step_forward gets the
 * next batch together with the current one's dscores, and runs its forward inside
 * the backward pass and step (the two-layer network does so band by band
 * of W1 once W1 outgrows L2).  The feed then holds two batches at a time,
 * and with a helper thread gathers a third. */
#include <config.h>

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <gsl/gsl_randist.h>

#include <nn/math.h>
#include <nn/registry.h>
#include <nn/schedule.h>
#include <nn/sequential.h>
#include <nn/train.h>

#include "dist/dist.h"
#include "train/guard.h"
#include "train/parallel.h"
#include "train/worker.h"

/* One batch as the model takes it.  The trainer has up to three, used in
 * turn (see n_slots). */
typedef struct batch_slot {
  gsl_matrix *X;    /* owned: batch_size x n_in (dense models) */
  nn_csr_buffer Xs; /* owned: the batch as CSR (sparse models) */
  nn_csr_buffer Xt; /* owned: its transpose (fused-step models) */
  uint32_t *labels; /* owned: batch_size labels */
  size_t *idx;      /* owned: batch_size example indices (evaluation) */
  size_t count;     /* examples in the slot */
  int rc;           /* the gather's result */
} batch_slot;

#define TRAINER_MAX_SLOTS 3

struct nn_trainer {
  char model_name[128];        /* for messages: the plugin's or "sequential" */
  const nn_model_ops *mops;    /* lent (the plugin's or libnn's); outlive */
  const nn_plugin *optim_desc; /* lent; outlives the trainer */
  void *model;                 /* owned: mops->destroy */
  void *optim;                 /* owned: optim_desc->optim->destroy */
  nn_param *params;            /* owned by the model */
  size_t n_params;
  nn_param *weights;           /* owned array: params, then the model's state
                                  (what a weights file holds); matrices are
                                  the model's */
  size_t n_weights;
  gsl_matrix **best;           /* owned: weights at the best epoch */
  long best_epoch;             /* -1 until an epoch ran */
  double best_val_accuracy;
  gsl_rng *rng;                /* owned: weights first, then shuffles */
  gsl_rng *epoch_rng;          /* owned: rng as the epoch in progress found
                                  it, before its shuffle (what a run resumed
                                  inside that epoch starts from) */
  int in_epoch;                /* inside an epoch's batches: see
                                  nn_trainer_rng_state */
  gsl_rng *batch_rng;          /* owned, stochastic models only: the
                                  context's stream, reseeded per batch */
  nn_train_opts opts;
  size_t n_in, n_out;
  const nn_model_sparse *sparse;  /* the model's extension, or NULL */
  const nn_model_fused_step *fst; /* used only with `fused` */
  const nn_optim_parts *parts;    /* the optimizer's, or NULL */
  const nn_optim_sgd_rule *sgd_rule; /* the optimizer's, or NULL */
  const nn_optim_lr *lr_ext;   /* the optimizer's, or NULL */
  nn_schedule *schedule;       /* owned; NULL: the configured rate */
  int transpose;               /* batches come with their transpose */
  int fused;                   /* step inside backward */
  int pipeline;                /* next forward inside it too */
  size_t *stepped;             /* owned: per parameter, elements stepped in
                                  the fused step (checked against its size) */
  nn_stepper stepper;          /* lent to backward_step; set once in create */
  batch_slot slot[TRAINER_MAX_SLOTS]; /* owned: n_slots of them */
  int n_slots;                 /* the current batch, + 1 for the next one
                                  with the pipeline, + 1 for the helper's */
  gsl_matrix *scores;          /* owned: batch_size x n_out (and dscores) */
  gsl_matrix *scores_next;     /* owned, pipeline only: the next batch's */
  nn_worker *worker;           /* owned; NULL with threads <= 1 */
  nn__pool *pool;              /* owned; NULL with threads <= 1 or a model
                                  that takes no threads (attached to it) */
  const nn_parallel_attach *par_ext; /* the model's, or NULL */
  size_t gather_backoff;       /* batches to gather inline after the next
                                  take-over (0: the helper keeps up) */
  size_t gather_skip;          /* batches left to gather inline */
  nn_param *best_params;       /* owned array naming t->best (grad NULL) */
  size_t start_epoch;          /* first epoch of the next run */
  nn_train_position start;     /* where inside start_epoch it begins */
  nn_train_position pos;       /* where training stands now */
  const volatile sig_atomic_t *watch_flag; /* lent; NULL: none */
  nn_watch_fn watch_fn;        /* called when *watch_flag is non-zero */
  void *watch_user;
  nn_stop_reason stopped;      /* how the last run ended */
  long stopped_after;          /* the last epoch finished then (-1: none) */
  nn_batch_fn on_batch;        /* optional progress callback */
  void *on_batch_user;
  const char *model_plugin;    /* model_name for the call record, or NULL
                                  for a network (it records its layers) */
  nn__guard guard;             /* the plugin call that failed, if one did */
  nn__guard_snap *snap;        /* owned: per weight, its matrices at create */
  int at_phase;                /* where the loop is, for messages: */
  size_t at_epoch, at_batch;   /* PHASE_* below, epoch and batch */
  nn__dist *dist;              /* owned: a data-parallel run's reduction
                                  (opts.comm of 2+ ranks), else NULL */
};

enum { PHASE_CREATE, PHASE_TRAIN, PHASE_VALIDATION, PHASE_EVALUATION,
       PHASE_AFTER_EPOCH };

/* The call record (opts.calls) around each plugin call: two stores before
 * it, one after; see nn_call_record.  plugin NULL: not a plugin. */
static inline void call_enter(const nn_trainer *t, const char *plugin,
                              const char *op) {
  nn_call_record *c = t->opts.calls;
  if (c && plugin) {
    c->plugin = plugin;
    c->op = op;
  }
}

static inline void call_leave(const nn_trainer *t) {
  if (t->opts.calls) t->opts.calls->op = NULL;
}

/* A call made from inside another (the optimizer's, from a model's
 * backward that steps as it goes): the record returns to the outer one. */
typedef struct call_saved {
  const char *plugin, *op;
} call_saved;

static inline call_saved call_push(const nn_trainer *t, const char *plugin,
                                   const char *op) {
  nn_call_record *c = t->opts.calls;
  call_saved s = {c ? c->plugin : NULL, c ? c->op : NULL};
  call_enter(t, plugin, op);
  return s;
}

static inline void call_pop(const nn_trainer *t, call_saved s) {
  nn_call_record *c = t->opts.calls;
  if (c) {
    c->plugin = s.plugin;
    c->op = s.op;
  }
}

void nn_trainer_free(nn_trainer *t) {
  if (!t) return;
  if (t->optim) {
    call_enter(t, t->optim_desc->name, "destroy");
    t->optim_desc->optim->destroy(t->optim);
  }
  if (t->model) {
    call_enter(t, t->model_plugin, "destroy");
    t->mops->destroy(t->model);
  }
  call_leave(t);
  nn_schedule_free(t->schedule);
  if (t->best) {
    for (size_t i = 0; i < t->n_weights; i++)
      if (t->best[i]) gsl_matrix_free(t->best[i]);
    free(t->best);
  }
  free(t->weights);
  if (t->rng) gsl_rng_free(t->rng);
  if (t->epoch_rng) gsl_rng_free(t->epoch_rng);
  if (t->batch_rng) gsl_rng_free(t->batch_rng);
  nn_worker_free(t->worker); /* first: it may be writing a slot */
  nn__pool_free(t->pool);     /* after the model, which used it */
  for (int k = 0; k < TRAINER_MAX_SLOTS; k++) {
    batch_slot *b = &t->slot[k];
    if (b->X) gsl_matrix_free(b->X);
    nn_csr_buffer_free(&b->Xs);
    nn_csr_buffer_free(&b->Xt);
    free(b->labels);
    free(b->idx);
  }
  if (t->scores) gsl_matrix_free(t->scores);
  if (t->scores_next) gsl_matrix_free(t->scores_next);
  free(t->best_params);
  free(t->stepped);
  free(t->snap);
  nn__dist_free(t->dist);
  free(t);
}

/* The fused step's stepper (below, with the batch loop). */
static int stepper_rows(void *ctx, size_t k, size_t r0, size_t r1,
                        nn_error *err);
static int stepper_block(void *ctx, size_t k, size_t r0, size_t r1,
                         size_t c0, size_t c1, const gsl_matrix *g,
                         nn_error *err);
static int stepper_sgd(void *ctx, size_t k, double *lr, double *reg);

/* An extension of an instance of `plugin` (NULL: libnn's network), if
 * offered and large enough to hold the members this core reads (need:
 * NN_EXT_SIZE_TO its last one). */
static const void *find_ext(const nn_trainer *t, const char *plugin,
                            const void *(*extension)(void *, const char *),
                            void *self, const char *id, size_t need) {
  call_enter(t, plugin, "extension");
  const void *e = extension ? extension(self, id) : NULL;
  call_leave(t);
  return e && *(const uint32_t *)e >= need ? e : NULL;
}

/* The model: a plugin's, or a network of layers (libnn's sequential). */
static int create_model(nn_trainer *t, const nn_model_spec *spec, nn_shape in,
                        nn_error *err) {
  const size_t bs = t->opts.batch_size;
  if (spec->plugin) {
    if (spec->plugin->kind != NN_KIND_MODEL || !spec->plugin->model)
      return nn_error_set(err, NN_EINVAL, "'%s' is not a model plugin",
                          spec->plugin->name);
    snprintf(t->model_name, sizeof t->model_name, "%s", spec->plugin->name);
    t->model_plugin = t->model_name;
    t->mops = spec->plugin->model;
    call_enter(t, t->model_plugin, "create");
    int rc = t->mops->create(spec->opts, in, t->n_out, bs, t->rng, &t->model,
                             err);
    call_leave(t);
    if (rc) t->model = NULL;
    return nn__guard_call(&t->guard, t->model_plugin, "create", rc, err);
  }
  snprintf(t->model_name, sizeof t->model_name, "sequential");
  return nn__sequential_create_guarded(&t->model, &t->mops, spec->layers,
                                       spec->n_layers, in, t->n_out, bs,
                                       t->rng, t->opts.calls, &t->guard, err);
}

/* A model plugin's parameters and state against what its memory operation
 * declared for the same arguments: a parameter of another shape than the
 * plugin meant shows here (a network's layers are checked as they are
 * made). */
static int check_declared(nn_trainer *t, const nn_model_spec *spec,
                          nn_shape in, nn_error *err) {
  nn_memory_fn memory = spec->plugin ? nn_plugin_memory_op(spec->plugin)
                                     : NULL;
  nn_memory need = {0};
  if (!memory) return NN_OK;
  call_enter(t, t->model_plugin, "memory");
  const int rc = memory(spec->opts, in, t->n_out, t->opts.batch_size, &need);
  call_leave(t);
  const uint64_t have = nn__guard_bytes(t->weights, t->n_weights);
  if (rc || need.weights == have) return NN_OK;
  char shapes[300] = "";
  size_t len = 0;
  for (size_t i = 0; i < t->n_weights && len < sizeof shapes; i++)
    len += (size_t)snprintf(shapes + len, sizeof shapes - len, "%s%s %zux%zu",
                            i ? ", " : "", t->weights[i].name,
                            t->weights[i].value->size1,
                            t->weights[i].value->size2);
  nn_error_set(err, NN_EPLUGIN,
               "its parameters and state take %llu bytes (%s), but its "
               "memory operation declared %llu for the same options: a "
               "parameter has another shape than the plugin meant",
               (unsigned long long)have, shapes,
               (unsigned long long)need.weights);
  return nn__guard_call(&t->guard, t->model_plugin, "create", NN_EPLUGIN,
                        err);
}

/* The weights array (params, then the model's state) and the copies that
 * keep the best epoch's. */
static int setup_weights(nn_trainer *t, nn_error *err) {
  size_t n_state = 0;
  call_enter(t, t->model_plugin, "state");
  nn_param *state = t->mops->state ? t->mops->state(t->model, &n_state) : NULL;
  call_leave(t);
  if (!state) n_state = 0;
  int rc = nn_check_param_names(t->model_name, t->params, t->n_params, state,
                                n_state, err);
  if (rc) return rc;
  t->n_weights = t->n_params + n_state;
  const size_t n = t->n_weights ? t->n_weights : 1;
  t->weights = calloc(n, sizeof *t->weights);
  t->best = calloc(n, sizeof *t->best);
  t->best_params = calloc(n, sizeof *t->best_params);
  t->snap = calloc(n, sizeof *t->snap);
  if (!t->weights || !t->best || !t->best_params || !t->snap)
    return nn_error_set(err, NN_ENOMEM, "out of memory for the weights");
  for (size_t i = 0; i < t->n_weights; i++) {
    t->weights[i] = i < t->n_params ? t->params[i] : state[i - t->n_params];
    nn__guard_snap_take(&t->snap[i], &t->weights[i]);
    const gsl_matrix *v = t->weights[i].value;
    if (!(t->best[i] = nn_matrix_calloc_aligned(v->size1, v->size2)))
      return nn_error_set(err, NN_ENOMEM,
                          "out of memory for the best-model copy");
    gsl_matrix_memcpy(t->best[i], v);
    t->best_params[i] = (nn_param){t->weights[i].name, t->best[i], NULL,
                                   t->weights[i].flags};
  }
  return NN_OK;
}

/* Which fast paths the model and optimizer offer together. */
static void choose_paths(nn_trainer *t) {
  const nn_optim_ops *o = t->optim_desc->optim;
  const char *optim = t->optim_desc->name;
  t->sparse = find_ext(t, t->model_plugin, t->mops->extension, t->model,
                       NN_EXT_MODEL_SPARSE,
                       NN_EXT_SIZE_TO(nn_model_sparse, backward));
  if (t->sparse && (!t->sparse->forward || !t->sparse->backward))
    t->sparse = NULL;
  t->parts = find_ext(t, optim, o->extension, t->optim, NN_EXT_OPTIM_PARTS,
                      NN_EXT_SIZE_TO(nn_optim_parts, end));
  if (t->parts && !t->parts->rows) t->parts = NULL;
  t->sgd_rule = find_ext(t, optim, o->extension, t->optim,
                         NN_EXT_OPTIM_SGD_RULE,
                         NN_EXT_SIZE_TO(nn_optim_sgd_rule, rule));
  if (t->sgd_rule && !t->sgd_rule->rule) t->sgd_rule = NULL;
  t->lr_ext = find_ext(t, optim, o->extension, t->optim, NN_EXT_OPTIM_LR,
                       NN_EXT_SIZE_TO(nn_optim_lr, set));
  if (t->lr_ext && (!t->lr_ext->get || !t->lr_ext->set)) t->lr_ext = NULL;
  t->par_ext = find_ext(t, t->model_plugin, t->mops->extension, t->model,
                        NN_EXT_MODEL_PARALLEL,
                        NN_EXT_SIZE_TO(nn_parallel_attach, attach));
  if (t->par_ext && !t->par_ext->attach) t->par_ext = NULL;
  t->fst = t->sparse ? find_ext(t, t->model_plugin, t->mops->extension,
                                t->model, NN_EXT_MODEL_FUSED_STEP,
                                NN_EXT_SIZE_TO(nn_model_fused_step,
                                               backward_step_forward))
                     : NULL;
  t->fused = t->fst && t->fst->backward_step && t->parts;
  /* Data-parallel: a step needs the gradients of every rank, summed, so
   * no step inside backward (train_feed_dist below). */
  if (t->opts.comm && t->opts.comm->size > 1) t->fused = 0;
  /* A stochastic model's next batch would need its own random stream
   * while the current one's is in use: no pipeline for it. */
  t->pipeline = t->fused && t->fst->backward_step_forward &&
                !(t->mops->flags & NN_STOCHASTIC);
  t->transpose =
      t->fused || (t->sparse && (t->sparse->flags & NN_SPARSE_TRANSPOSE));
}

static int setup_batches(nn_trainer *t, nn_error *err) {
  const size_t bs = t->opts.batch_size, n_in = t->n_in, n_out = t->n_out;
  int batch_ok = 1;
  t->n_slots = 1 + t->pipeline + (t->opts.threads > 1);
  for (int k = 0; k < t->n_slots; k++) {
    batch_slot *b = &t->slot[k];
    if (!t->sparse) {
      batch_ok &= (b->X = nn_matrix_calloc_aligned(bs, n_in)) != NULL;
    } else {
      batch_ok &= n_in <= SIZE_MAX / bs &&
                  nn_csr_buffer_init(&b->Xs, bs, bs * n_in) == NN_OK;
      if (t->transpose && batch_ok) /* made with the gather */
        batch_ok &= nn_csr_buffer_init(&b->Xt, n_in, bs * n_in) == NN_OK;
    }
    b->labels = malloc(bs * sizeof *b->labels);
    b->idx = malloc(bs * sizeof *b->idx);
    batch_ok &= b->labels && b->idx;
  }
  t->scores = nn_matrix_calloc_aligned(bs, n_out);
  if (t->pipeline)
    batch_ok &= (t->scores_next = nn_matrix_calloc_aligned(bs, n_out)) != NULL;
  if ((t->mops->flags & NN_STOCHASTIC) &&
      !(t->batch_rng = gsl_rng_alloc(gsl_rng_mt19937)))
    batch_ok = 0;
  if (t->fused) {
    t->stepper = (nn_stepper){(uint32_t)sizeof(nn_stepper), t, stepper_rows,
                              t->parts->block ? stepper_block : NULL,
                              t->sgd_rule ? stepper_sgd : NULL};
    batch_ok &= (t->stepped = calloc(t->n_params ? t->n_params : 1,
                                     sizeof *t->stepped)) != NULL;
  }
  if (!batch_ok || !t->scores)
    return nn_error_set(err, NN_ENOMEM, "out of memory for batch buffers");
  if (t->opts.threads <= 1) return NN_OK;
  int rc = nn_worker_create(&t->worker, err); /* fills a slot ahead */
  if (rc || !t->par_ext) return rc;
  /* The model computes on `threads` threads (the caller's and helpers of
   * the pool's own: the gather's helper stays free for the gather). */
  if ((rc = nn__pool_create(&t->pool, t->opts.threads, err))) return rc;
  call_enter(t, t->model_plugin, "attach");
  rc = t->par_ext->attach(t->model, nn__pool_parallel(t->pool), err);
  call_leave(t);
  return nn__guard_call(&t->guard, t->model_plugin, "attach", rc, err);
}

int nn_trainer_create(nn_trainer **out, const nn_model_spec *model,
                      const nn_plugin *optim, const nn_value *optim_opts,
                      nn_shape in, size_t n_out, const nn_train_opts *opts,
                      nn_error *err) {
  *out = NULL;
  if (!model || (!model->plugin && !model->n_layers) || !optim ||
      optim->kind != NN_KIND_OPTIMIZER || !optim->optim)
    return nn_error_set(err, NN_EINVAL, "trainer needs a model and an optimizer");
  const size_t n_in = nn_shape_size(in);
  if (!n_in || !n_out || !opts->batch_size || !opts->epochs)
    return nn_error_set(err, NN_EINVAL,
                        "inputs, classes, batch size and epochs must be > 0");
  nn_trainer *t = calloc(1, sizeof *t);
  if (!t) return nn_error_set(err, NN_ENOMEM, "out of memory");
  t->optim_desc = optim;
  t->opts = *opts;
  t->n_in = n_in;
  t->n_out = n_out;
  t->best_epoch = -1;
  t->stopped_after = -1;
  t->guard.trap = opts->gsl_trap;
  nn__guard_reset(&t->guard);
  if (err) err->msg[0] = '\0';
  int rc = NN_OK;
  /* The seed fixes everything random: weights now, shuffles later. */
  if (!(t->rng = gsl_rng_alloc(gsl_rng_mt19937)) ||
      !(t->epoch_rng = gsl_rng_alloc(gsl_rng_mt19937)))
    rc = nn_error_set(err, NN_ENOMEM, "out of memory");
  if (!rc) {
    gsl_rng_set(t->rng, (unsigned long)opts->seed);
    rc = create_model(t, model, in, err);
  }
  if (!rc) {
    call_enter(t, t->model_plugin, "params");
    t->params = t->mops->params(t->model, &t->n_params);
    call_leave(t);
    if (!t->params) t->n_params = 0;
    rc = setup_weights(t, err);
  }
  if (!rc) rc = check_declared(t, model, in, err);
  if (!rc) {
    if (err) err->msg[0] = '\0';
    call_enter(t, optim->name, "create");
    rc = optim->optim->create(optim_opts, t->params, t->n_params, &t->optim,
                              err);
    call_leave(t);
    if (rc) t->optim = NULL;
    rc = nn__guard_call(&t->guard, optim->name, "create", rc, err);
  }
  if (!rc) {
    choose_paths(t);
    rc = setup_batches(t, err);
  }
  if (!rc && opts->comm && opts->comm->size > 1)
    rc = nn__dist_create(&t->dist, opts->comm, t->params, t->n_params, err);
  if (rc) {
    rc = nn__guard_report(&t->guard, "", rc, err);
    nn_trainer_free(t);
    return rc;
  }
  *out = t;
  return NN_OK;
}

nn_param *nn_trainer_params(nn_trainer *t, size_t *n) {
  *n = t->n_params;
  return t->params;
}

/* ------------------------------------------------------------ batches
 * A feed hands out the batches of one pass over a dataset in order:
 * feed_next returns the next batch, feed_peek the one after the batch
 * feed_next returned last, without handing it out (the pipeline's next
 * batch; a pass that peeks says so in feed_begin).  Batch j lives in slot
 * j % n_slots.  With a worker, one batch beyond those the caller holds is
 * gathered meanwhile; without, each is gathered when asked for.  A pass
 * must call feed_end on every way out: it waits for a gather still
 * running. */
typedef struct batch_feed {
  nn_trainer *t;
  const nn_dataset *ds;
  const size_t *order; /* the examples in order; NULL: 0, 1, 2, ... */
  size_t n_batches;
  size_t next;         /* first example not yet handed to a gather */
  size_t handed;       /* batches feed_next has returned */
  size_t filled;       /* batches gathered or being gathered */
  int peeks;           /* 1 if the pass uses feed_peek */
  int slice;           /* data-parallel training: this rank's slice of each
                          batch */
  int pending;         /* the worker is gathering batch filled - 1 */
  /* The posted gather's arguments (read by the worker: they live here,
   * in the caller's frame, for the whole pass). */
  batch_slot *job_slot;
  const size_t *job_idx;
} batch_feed;

/* The batch, and its transpose for a model that asks for it (which the
 * model would otherwise make itself in backward: done here, it runs on
 * the helper thread). */
static void gather_slot(nn_trainer *t, const nn_dataset *ds, batch_slot *b,
                        const size_t *idx) {
  if (!b->count) { /* a data-parallel rank's empty slice */
    b->rc = NN_OK;
    return;
  }
  b->rc = t->sparse
              ? nn_dataset_gather_csr(ds, idx, b->count, &b->Xs, b->labels)
              : nn_dataset_gather(ds, idx, b->count, b->X, b->labels);
  if (b->rc == NN_OK && t->transpose)
    b->rc = nn_csr_transpose(&b->Xt, &b->Xs.csr);
}

static void feed_job(void *arg) {
  batch_feed *f = arg;
  gather_slot(f->t, f->ds, f->job_slot, f->job_idx);
}

static batch_slot *feed_slot(const batch_feed *f, size_t j) {
  return &f->t->slot[j % (size_t)f->t->n_slots];
}

/* Gather batch f->filled into its slot: on the worker (post) or here. */
static void feed_fill(batch_feed *f, int post) {
  nn_trainer *t = f->t;
  batch_slot *b = feed_slot(f, f->filled++);
  const size_t bs = t->opts.batch_size, left = f->ds->n - f->next;
  b->count = left < bs ? left : bs;
  size_t first = f->next; /* of the batch's examples, this slot's first */
  if (f->slice) {
    /* Rank r of N takes [g r / N, g (r + 1) / N) of the g examples: the
     * global batches, their examples and order are the one-process run's
     * whatever N is. */
    const nn_comm *c = t->opts.comm;
    const size_t g = b->count, lo = g * c->rank / c->size;
    b->count = g * (c->rank + 1) / c->size - lo;
    first += lo;
    f->next += g - b->count;
  }
  const size_t *idx = f->order ? f->order + first : b->idx;
  if (!f->order)
    for (size_t i = 0; i < b->count; i++) b->idx[i] = first + i;
  f->next += b->count;
  f->job_slot = b;
  f->job_idx = idx;
  if (post) {
    nn_worker_post(t->worker, feed_job, f);
    f->pending = 1;
  } else {
    feed_job(f);
  }
}

/* Most batches a helper that fell behind is left without work. */
#define GATHER_MAX_BACKOFF 64

/* Finish the posted gather: here, if the worker has not started it.  A
 * helper that had not started by the time its batch was needed is not
 * getting a CPU (the machine is busy): posting to it costs a wake-up per
 * batch and gains nothing, so the next batches are gathered here, twice as
 * many after each further miss, and it is tried again after them. */
static void feed_wait(batch_feed *f) {
  nn_trainer *t = f->t;
  if (f->pending) {
    if (nn_worker_finish(t->worker)) {
      t->gather_backoff = t->gather_backoff ? 2 * t->gather_backoff : 1;
      if (t->gather_backoff > GATHER_MAX_BACKOFF)
        t->gather_backoff = GATHER_MAX_BACKOFF;
      t->gather_skip = t->gather_backoff;
    } else {
      t->gather_backoff = 0;
    }
  }
  f->pending = 0;
}

/* Post the next gather if the worker is idle and its slot is free (the
 * caller holds batches handed - 1 and, when it peeks, handed; n_slots is
 * one more than that), unless the helper is backing off. */
static void feed_ahead(batch_feed *f) {
  nn_trainer *t = f->t;
  if (!t->worker || f->pending || f->filled >= f->n_batches ||
      f->filled > f->handed + (size_t)f->peeks)
    return;
  if (t->gather_skip) {
    t->gather_skip--;
    return;
  }
  feed_fill(f, 1);
}

/* A pass from batch `first` on (0: the whole pass). */
static void feed_begin(batch_feed *f, nn_trainer *t, const nn_dataset *ds,
                       const size_t *order, int peeks, size_t first) {
  const size_t bs = t->opts.batch_size;
  const size_t n_batches = (ds->n + bs - 1) / bs;
  if (first > n_batches) first = n_batches;
  /* Only training passes an order: evaluation runs whole on every rank. */
  *f = (batch_feed){.t = t, .ds = ds, .order = order,
                    .n_batches = n_batches, .next = first * bs,
                    .handed = first, .filled = first, .peeks = peeks,
                    .slice = t->dist && order};
  feed_ahead(f); /* the first batch, ahead */
}

/* Batch j (handed or handed + 1), gathered; its gather's error in *rc. */
static batch_slot *feed_get(batch_feed *f, size_t j, int *rc) {
  if (j >= f->n_batches) return NULL;
  if (f->pending && f->filled - 1 <= j) feed_wait(f);
  while (f->filled <= j) {
    feed_wait(f);
    feed_fill(f, 0);
  }
  batch_slot *b = feed_slot(f, j);
  *rc = b->rc;
  return b;
}

/* The next batch (NULL after the last), its gather's error in *rc. */
static batch_slot *feed_next(batch_feed *f, int *rc) {
  batch_slot *b = feed_get(f, f->handed, rc);
  if (b) f->handed++;
  feed_ahead(f);
  return b;
}

/* The batch after the one feed_next returned last (NULL if none). */
static batch_slot *feed_peek(batch_feed *f, int *rc) {
  batch_slot *b = feed_get(f, f->handed, rc);
  feed_ahead(f);
  return b;
}

static void feed_end(batch_feed *f) { feed_wait(f); }

/* The context of training batch `batch` of `epoch` (train = 1) or of an
 * evaluation batch (train = 0).  A stochastic model's stream is reseeded
 * from the seed, epoch and batch alone, so a resumed run draws what the
 * uninterrupted one drew. */
static nn_context batch_context(nn_trainer *t, int train, size_t epoch,
                                size_t batch) {
  nn_context c = {(uint32_t)sizeof(nn_context), (uint32_t)train, epoch, batch,
                  NULL};
  if (train && t->batch_rng) {
    /* splitmix64 over (seed, epoch, batch): nearby batches get unrelated
     * MT19937 seeds. */
    uint64_t z = t->opts.seed;
    const uint64_t parts[2] = {epoch, batch};
    for (int i = 0; i < 2; i++) {
      z += 0x9e3779b97f4a7c15ull + parts[i];
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      z ^= z >> 31;
    }
    gsl_rng_set(t->batch_rng, (unsigned long)z);
    c.rng = t->batch_rng;
  }
  return c;
}

/* After a call into the model: a plugin's failure is recorded (a
 * network records its layers' itself; what else it returns is its own
 * error, not a plugin's). */
static int model_failed(nn_trainer *t, int rc, const char *op,
                        nn_error *err) {
  if (!t->model_plugin) return rc;
  return nn__guard_call(&t->guard, t->model_plugin, op, rc, err);
}

/* After a call into the optimizer. */
static int optim_failed(nn_trainer *t, int rc, nn_error *err) {
  return nn__guard_call(&t->guard, t->optim_desc->name, "step", rc, err);
}

/* Run the model forward on slot b; scores land in t->scores (*Sv views
 * the batch's rows), the dense batch (if the model takes one) in *Xv. */
static int batch_forward(nn_trainer *t, const nn_context *ctx, batch_slot *b,
                         gsl_matrix_view *Xv, gsl_matrix_view *Sv,
                         nn_error *err) {
  *Sv = gsl_matrix_submatrix(t->scores, 0, 0, b->count, t->n_out);
  if (err) err->msg[0] = '\0';
  int rc;
  call_enter(t, t->model_plugin, "forward");
  if (t->sparse) {
    rc = t->sparse->forward(t->model, ctx, &b->Xs.csr, &Sv->matrix, err);
  } else {
    *Xv = gsl_matrix_submatrix(b->X, 0, 0, b->count, t->n_in);
    rc = t->mops->forward(t->model, ctx, &Xv->matrix, &Sv->matrix, err);
  }
  call_leave(t);
  return model_failed(t, rc, "forward", err);
}

/* The stepper lent to backward_step: checks the block asked for, counts
 * its elements, and hands it to the optimizer (rows for whole rows, block
 * for a block with its gradient). */
static int stepper_check(nn_trainer *t, size_t k, size_t r0, size_t r1,
                         size_t c0, size_t c1, nn_error *err) {
  if (k >= t->n_params || r0 >= r1 || r1 > t->params[k].value->size1 ||
      c0 >= c1 || c1 > t->params[k].value->size2)
    return model_failed(t,
                        nn_error_set(err, NN_EPLUGIN,
                                     "model %s asked to step rows [%zu, %zu) "
                                     "x columns [%zu, %zu) of parameter %zu, "
                                     "which is not within one of its %zu "
                                     "parameters",
                                     t->model_name, r0, r1, c0, c1, k,
                                     t->n_params),
                        "backward", err);
  t->stepped[k] += (r1 - r0) * (c1 - c0);
  return NN_OK;
}

static int stepper_rows(void *ctx, size_t k, size_t r0, size_t r1,
                        nn_error *err) {
  nn_trainer *t = ctx;
  const size_t cols = k < t->n_params ? t->params[k].value->size2 : 1;
  int rc = stepper_check(t, k, r0, r1, 0, cols, err);
  if (rc) return rc;
  if (err) err->msg[0] = '\0';
  const call_saved outer = call_push(t, t->optim_desc->name, "step");
  rc = t->parts->rows(t->optim, t->params, t->n_params, k, r0, r1, err);
  call_pop(t, outer);
  return optim_failed(t, rc, err);
}

static int stepper_block(void *ctx, size_t k, size_t r0, size_t r1,
                         size_t c0, size_t c1, const gsl_matrix *g,
                         nn_error *err) {
  nn_trainer *t = ctx;
  int rc = stepper_check(t, k, r0, r1, c0, c1, err);
  if (rc) return rc;
  if (!g || g->size1 != r1 - r0 || g->size2 != c1 - c0)
    return model_failed(t,
                        nn_error_set(err, NN_EPLUGIN,
                                     "model %s stepped a %zux%zu block of "
                                     "parameter %zu with a gradient of "
                                     "another shape",
                                     t->model_name, r1 - r0, c1 - c0, k),
                        "backward", err);
  if (err) err->msg[0] = '\0';
  const call_saved outer = call_push(t, t->optim_desc->name, "step");
  rc = t->parts->block(t->optim, t->params, t->n_params, k, r0, r1, c0, c1, g,
                       err);
  call_pop(t, outer);
  return optim_failed(t, rc, err);
}

/* The model takes parameter k's step itself when the optimizer says it
 * is plain SGD: all its elements count as stepped now. */
static int stepper_sgd(void *ctx, size_t k, double *lr, double *reg) {
  nn_trainer *t = ctx;
  if (k >= t->n_params || !lr || !reg) return 0;
  const call_saved outer = call_push(t, t->optim_desc->name, "step");
  const int plain = t->sgd_rule->rule(t->optim, t->params, t->n_params, k, lr,
                                      reg);
  call_pop(t, outer);
  if (!plain) return 0;
  t->stepped[k] += t->params[k].value->size1 * t->params[k].value->size2;
  return 1;
}

/* The fused step: begin, the model's backward that steps as it goes (with
 * the next batch's forward when next is given), end; then the count of
 * elements stepped, since a model that skipped or repeated a block would
 * train wrongly, silently. */
static int fused_backward_step(nn_trainer *t, batch_slot *b,
                               gsl_matrix_view *Sv, batch_slot *next,
                               const nn_context *next_ctx,
                               gsl_matrix_view *Snext, nn_error *err) {
  const nn_optim_parts *parts = t->parts;
  for (size_t k = 0; k < t->n_params; k++) t->stepped[k] = 0;
  if (err) err->msg[0] = '\0';
  call_enter(t, t->optim_desc->name, "step");
  int rc = parts->begin ? parts->begin(t->optim, t->params, t->n_params, err)
                        : NN_OK;
  call_leave(t);
  if ((rc = optim_failed(t, rc, err))) return rc;
  if (err) err->msg[0] = '\0';
  call_enter(t, t->model_plugin, "backward");
  if (next) {
    *Snext = gsl_matrix_submatrix(t->scores_next, 0, 0, next->count,
                                  t->n_out);
    rc = t->fst->backward_step_forward(t->model, &b->Xs.csr, &b->Xt.csr,
                                       &Sv->matrix, &t->stepper, next_ctx,
                                       &next->Xs.csr, &Snext->matrix, err);
  } else {
    rc = t->fst->backward_step(t->model, &b->Xs.csr, &b->Xt.csr, &Sv->matrix,
                               &t->stepper, err);
  }
  call_leave(t);
  if ((rc = model_failed(t, rc, "backward", err))) return rc;
  for (size_t k = 0; k < t->n_params; k++) {
    const gsl_matrix *v = t->params[k].value;
    if (t->stepped[k] != v->size1 * v->size2)
      return model_failed(
          t,
          nn_error_set(err, NN_EPLUGIN,
                       "model %s stepped %zu of the %zu elements of "
                       "parameter %s",
                       t->model_name, t->stepped[k], v->size1 * v->size2,
                       t->params[k].name ? t->params[k].name : "?"),
          "backward", err);
  }
  if (err) err->msg[0] = '\0';
  call_enter(t, t->optim_desc->name, "step");
  rc = parts->end ? parts->end(t->optim, t->params, t->n_params, err) : NN_OK;
  call_leave(t);
  return optim_failed(t, rc, err);
}

/* Backward on slot b (dscores in *Sv): every parameter's gradient. */
static int batch_backward(nn_trainer *t, batch_slot *b, gsl_matrix_view *Xv,
                          gsl_matrix_view *Sv, nn_error *err) {
  if (err) err->msg[0] = '\0';
  call_enter(t, t->model_plugin, "backward");
  int rc = t->sparse
               ? t->sparse->backward(t->model, &b->Xs.csr,
                                     t->transpose ? &b->Xt.csr : NULL,
                                     &Sv->matrix, err)
               : t->mops->backward(t->model, &Xv->matrix, &Sv->matrix, err);
  call_leave(t);
  return model_failed(t, rc, "backward", err);
}

/* The optimizer's step from the parameters' gradients. */
static int optim_step(nn_trainer *t, nn_error *err) {
  if (err) err->msg[0] = '\0';
  call_enter(t, t->optim_desc->name, "step");
  int rc = t->optim_desc->optim->step(t->optim, t->params, t->n_params, err);
  call_leave(t);
  return optim_failed(t, rc, err);
}

/* ------------------------------------------------------------ faults */

/* Where the loop is, as "epoch 2, batch 17" (empty while creating). */
static void where_text(const nn_trainer *t, char *buf, size_t size) {
  switch (t->at_phase) {
    case PHASE_TRAIN:
      snprintf(buf, size, "epoch %zu, batch %zu", t->at_epoch, t->at_batch);
      break;
    case PHASE_VALIDATION:
      snprintf(buf, size, "validation after epoch %zu, batch %zu",
               t->at_epoch, t->at_batch);
      break;
    case PHASE_EVALUATION:
      snprintf(buf, size, "evaluation, batch %zu", t->at_batch);
      break;
    case PHASE_AFTER_EPOCH:
      snprintf(buf, size, "after epoch %zu", t->at_epoch);
      break;
    default:
      buf[0] = '\0';
  }
}

/* A recorded plugin failure gets its message: "dense[fc1].forward (epoch
 * 0, batch 17): why". */
static int fail_at(nn_trainer *t, int rc, nn_error *err) {
  char at[96], when[100] = "";
  where_text(t, at, sizeof at);
  if (at[0]) snprintf(when, sizeof when, " (%s)", at);
  return nn__guard_report(&t->guard, when, rc, err);
}

/* The plugin a weight (index into t->weights) belongs to. */
static const char *weight_owner(const nn_trainer *t, size_t k) {
  const char *who = t->model_plugin
                        ? t->model_plugin
                        : nn__sequential_owner(t->model, t->weights[k].name);
  return who ? who : t->model_name;
}

static int matrix_finite(const gsl_matrix *m) {
  const nn_param p = {"", (gsl_matrix *)m, NULL, 0};
  return !m || nn_find_nonfinite(&p, 1, NULL, NULL, NULL) == 1;
}

/* Why a loss came out non-finite, and what to do: asked only once it
 * has, so the scans cost nothing in a healthy run. */
static void explain_loss(const nn_trainer *t, char *why, size_t size) {
  size_t r = 0, c = 0;
  double v = 0;
  const size_t k = nn_find_nonfinite(t->weights, t->n_weights, &r, &c, &v);
  if (k < t->n_weights) {
    const int grad_bad = k < t->n_params && !matrix_finite(t->params[k].grad);
    snprintf(why, size,
             "%s %s of %s is %s at row %zu, column %zu%s; likely cause: the "
             "updates diverged: try a smaller learning_rate",
             k < t->n_params ? "parameter" : "state buffer",
             t->weights[k].name, weight_owner(t, k), nn__guard_num(v).s, r, c,
             grad_bad ? ", and so is its gradient" : "");
    return;
  }
  size_t w = 0;
  const double big = nn__guard_largest(t->weights, t->n_weights, &w);
  /* Weights of a trained network stay within a few units; a million is
   * far past anything a converging run reaches. */
  if (big > 1e6) {
    snprintf(why, size,
             "the parameters are finite, but %s of %s reaches %.3g; likely "
             "cause: they grew without bound until the scores overflowed: "
             "try a smaller learning_rate",
             t->weights[w].name, weight_owner(t, w), big);
    return;
  }
  const char *layer = t->model_plugin ? NULL
                                      : nn__sequential_nonfinite_layer(t->model);
  snprintf(why, size,
           "the parameters are finite (largest |value| %.3g); likely cause: "
           "%s%s's forward computed values that are not finite from them, a "
           "fault of the plugin",
           big, layer ? "layer " : "",
           layer ? layer : t->model_name);
}

static int loss_failed(const nn_trainer *t, const char *what, double loss,
                       nn_error *err) {
  char at[96], why[400];
  where_text(t, at, sizeof at);
  explain_loss(t, why, sizeof why);
  return nn_error_set(err, NN_ENUMERIC, "the %s loss is %s at %s: %s", what,
                      nn__guard_num(loss).s, at, why);
}

/* The model's parameters and state, as its params and state operations
 * hand them out now, against those of create. */
static int check_stable(nn_trainer *t, nn_error *err) {
  int rc;
  if (!t->model_plugin) {
    if ((rc = nn__sequential_check_stable(t->model, err))) return rc;
    for (size_t i = 0; i < t->n_weights; i++)
      if ((rc = nn__guard_snap_check(&t->snap[i], &t->weights[i], err)))
        return nn__guard_call(&t->guard, weight_owner(t, i), "params", rc,
                              err);
    return NN_OK;
  }
  size_t n = 0, n_state = 0;
  call_enter(t, t->model_plugin, "params");
  nn_param *p = t->mops->params(t->model, &n);
  call_enter(t, t->model_plugin, "state");
  nn_param *st = t->mops->state ? t->mops->state(t->model, &n_state) : NULL;
  call_leave(t);
  if (!p) n = 0;
  if (!st) n_state = 0;
  rc = NN_OK;
  if (p != t->params || n != t->n_params)
    rc = nn_error_set(err, NN_EPLUGIN,
                      "returned %zu parameters in another array than the %zu "
                      "of create (the optimizer keeps that one): the array "
                      "must stay until destroy", n, t->n_params);
  for (size_t i = 0; i < n && !rc; i++)
    rc = nn__guard_snap_check(&t->snap[i], &p[i], err);
  if (rc) return nn__guard_call(&t->guard, t->model_plugin, "params", rc, err);
  if (n_state != t->n_weights - t->n_params)
    rc = nn_error_set(err, NN_EPLUGIN,
                      "returned %zu state buffers; create's were %zu",
                      n_state, t->n_weights - t->n_params);
  for (size_t i = 0; i < n_state && !rc; i++)
    rc = nn__guard_snap_check(&t->snap[t->n_params + i], &st[i], err);
  return rc ? nn__guard_call(&t->guard, t->model_plugin, "state", rc, err)
            : NN_OK;
}

/* After an epoch's last batch: the plugins still keep their contract and
 * every parameter and state value is finite. */
static int check_epoch(nn_trainer *t, size_t epoch, nn_error *err) {
  t->at_phase = PHASE_AFTER_EPOCH;
  t->at_epoch = epoch;
  int rc = check_stable(t, err);
  if (rc) return rc;
  size_t r = 0, c = 0;
  double v = 0;
  const size_t k = nn_find_nonfinite(t->weights, t->n_weights, &r, &c, &v);
  if (k == t->n_weights) return NN_OK;
  return nn_error_set(err, NN_ENUMERIC,
                      "%s %s of %s is %s at row %zu, column %zu after epoch "
                      "%zu; likely cause: the updates diverged: try a "
                      "smaller learning_rate",
                      k < t->n_params ? "parameter" : "state buffer",
                      t->weights[k].name, weight_owner(t, k),
                      nn__guard_num(v).s, r, c, epoch);
}

/* Backward on slot b (dscores in *Sv), then the optimizer step: inside
 * the backward pass when the model and optimizer can, after it otherwise.
 * With next (pipeline only): the forward on it too, into *Snext. */
static int batch_backward_step(nn_trainer *t, batch_slot *b,
                               gsl_matrix_view *Xv, gsl_matrix_view *Sv,
                               batch_slot *next, const nn_context *next_ctx,
                               gsl_matrix_view *Snext, nn_error *err) {
  if (t->fused)
    return fused_backward_step(t, b, Sv, next, next_ctx, Snext, err);
  int rc = batch_backward(t, b, Xv, Sv, err);
  if (rc) return rc;
  return optim_step(t, err);
}

static int check_dataset(const nn_trainer *t, const nn_dataset *ds,
                         const char *what, nn_error *err) {
  if (!ds || !ds->n)
    return nn_error_set(err, NN_EINVAL, "the %s set is empty", what);
  if (ds->dim != t->n_in)
    return nn_error_set(err, NN_EINVAL,
                        "the %s set has %zu features per example, the model %zu",
                        what, ds->dim, t->n_in);
  for (size_t i = 0; i < ds->n; i++)
    if (ds->labels[i] >= t->n_out)
      return nn_error_set(err, NN_EINVAL,
                          "the %s set has label %u at example %zu; the model "
                          "has %zu classes", what, (unsigned)ds->labels[i], i,
                          t->n_out);
  return NN_OK;
}

/* One evaluation pass (feed begun by the caller, ended by it too). */
static int evaluate_feed(nn_trainer *t, batch_feed *f, double *loss,
                         double *accuracy, nn_error *err) {
  double loss_sum = 0;
  size_t hits = 0, batches = 0;
  int rc = NN_OK;
  for (batch_slot *b; (b = feed_next(f, &rc)); batches++) {
    if (rc) return nn_error_set(err, rc, "cannot gather a batch");
    gsl_matrix_view Xv, Sv;
    const nn_context ctx = batch_context(t, 0, 0, batches);
    t->at_batch = batches;
    if ((rc = batch_forward(t, &ctx, b, &Xv, &Sv, err))) return rc;
    double batch_loss;
    size_t batch_hits;
    rc = nn_softmax_xent(&Sv.matrix, b->labels, NULL, &batch_loss, &batch_hits);
    if (rc) return nn_error_set(err, rc, "softmax cross-entropy failed");
    if (!isfinite(batch_loss))
      return loss_failed(t, t->at_phase == PHASE_VALIDATION ? "validation"
                                                            : "evaluation",
                         batch_loss, err);
    loss_sum += batch_loss;
    hits += batch_hits;
  }
  /* The course's convention: loss = mean of batch losses. */
  *loss = loss_sum / (double)batches;
  *accuracy = (double)hits / (double)f->ds->n;
  return NN_OK;
}

/* An evaluation pass on ds; phase: validation (of epoch) or evaluation. */
static int evaluate_as(nn_trainer *t, int phase, size_t epoch,
                       const nn_dataset *ds, double *loss, double *accuracy,
                       nn_error *err) {
  int rc = check_dataset(t, ds, "evaluation", err);
  if (rc) return rc;
  t->at_phase = phase;
  t->at_epoch = epoch;
  nn__guard_reset(&t->guard);
  batch_feed f;
  feed_begin(&f, t, ds, NULL, 0, 0);
  rc = evaluate_feed(t, &f, loss, accuracy, err);
  feed_end(&f);
  return fail_at(t, rc, err);
}

int nn_trainer_evaluate(nn_trainer *t, const nn_dataset *ds, double *loss,
                        double *accuracy, nn_error *err) {
  return evaluate_as(t, PHASE_EVALUATION, 0, ds, loss, accuracy, err);
}

/* Whether the watch asks to stop where training stands (t->pos): asked
 * only when its flag is raised, so a run without one pays a load per
 * batch. */
static int watch_stops(nn_trainer *t) {
  if (!t->watch_flag || !*t->watch_flag || !t->watch_fn) return 0;
  return t->watch_fn(t->watch_user, &t->pos) != 0;
}

/* The schedule's rate for this batch, handed to the optimizer (and to
 * *lr when non-NULL).  The schedule is asked before each epoch and, when
 * its rate changes within one, before each batch's step. */
static int apply_lr(nn_trainer *t, size_t epoch, size_t batch,
                    size_t n_batches, double *lr, nn_error *err) {
  double r;
  call_enter(t, nn_schedule_name(t->schedule), "lr");
  int rc = nn_schedule_lr(t->schedule, epoch, batch, n_batches, &r, err);
  call_leave(t);
  if (rc) return rc;
  call_enter(t, t->optim_desc->name, "set learning rate");
  if (err) err->msg[0] = '\0';
  rc = t->lr_ext->set(t->optim, r, err);
  call_leave(t);
  if (rc && err && !err->msg[0])
    nn_error_set(err, rc, "optimizer %s refused the learning rate %g",
                 t->optim_desc->name, r);
  if (!rc && lr) *lr = r;
  return rc;
}

/* The rate the optimizer steps with now (NaN: it does not say). */
static double current_lr(const nn_trainer *t) {
  if (!t->lr_ext) return NAN;
  call_enter(t, t->optim_desc->name, "get learning rate");
  const double r = t->lr_ext->get(t->optim);
  call_leave(t);
  return r;
}

/* A batch is done: its loss, hits and examples go into the epoch's
 * position, with the training seconds so far, and on_batch is told. */
static void batch_done(nn_trainer *t, size_t epoch, size_t n_batches,
                       double batch_loss, size_t hits, size_t count,
                       double train_seconds) {
  nn_train_position *p = &t->pos;
  p->loss_sum += batch_loss;
  p->hits += hits;
  p->seen += count;
  p->batch++;
  p->train_seconds = train_seconds;
  if (t->on_batch)
    t->on_batch(t->on_batch_user, epoch, p->batch, n_batches,
                p->loss_sum / (double)p->batch,
                (double)p->hits / (double)p->seen);
}

/* One training epoch (feed begun and ended by the caller) from t->pos on,
 * which it keeps up to date batch by batch.  *stopped: the watch stopped
 * it after a batch. */
static int train_feed(nn_trainer *t, size_t epoch, batch_feed *f,
                      double *loss, double *accuracy, double *seconds,
                      int *stopped, nn_error *err) {
  nn_train_position *p = &t->pos;
  const size_t n = f->ds->n;
  const double t0 = nn_now_seconds(), seconds_before = p->train_seconds;
  int rc = NN_OK;
  gsl_matrix_view Xv, Sv, Snext;
  *stopped = 0;
  /* With the pipeline, a batch's scores come from the previous batch's
   * backward_step_forward (scored = 1), except for the first batch. */
  int scored = 0;
  t->at_phase = PHASE_TRAIN;
  t->at_epoch = epoch;
  for (batch_slot *b = feed_next(f, &rc); b;) {
    if (rc) return nn_error_set(err, rc, "cannot gather a batch");
    t->at_batch = p->batch;
    if (!scored) {
      const nn_context ctx = batch_context(t, 1, epoch, p->batch);
      if ((rc = batch_forward(t, &ctx, b, &Xv, &Sv, err))) return rc;
    }
    double batch_loss;
    size_t batch_hits;
    /* scores become dscores in place: no second buffer, one pass. */
    rc = nn_softmax_xent(&Sv.matrix, b->labels, &Sv.matrix, &batch_loss,
                         &batch_hits);
    if (rc) return nn_error_set(err, rc, "softmax cross-entropy failed");
    /* Before backward and the step: the parameters stay those that gave
     * this loss, and an epoch that fails leaves no checkpoint. */
    if (!isfinite(batch_loss))
      return loss_failed(t, "training", batch_loss, err);
    if (p->batch > 0 && t->schedule &&
        nn_schedule_per_batch(t->schedule, epoch) &&
        (rc = apply_lr(t, epoch, p->batch, f->n_batches, NULL, err)))
      return rc;
    batch_slot *next = NULL;
    if (t->pipeline && (next = feed_peek(f, &rc)) && rc)
      return nn_error_set(err, rc, "cannot gather a batch");
    const nn_context next_ctx = batch_context(t, 1, epoch, p->batch + 1);
    if ((rc = batch_backward_step(t, b, &Xv, &Sv, next, &next_ctx, &Snext,
                                  err)))
      return rc;
    if ((scored = next != NULL)) {
      /* The next batch's scores are in scores_next: the buffers trade
       * places (Snext views the same numbers under its new name). */
      gsl_matrix *tmp = t->scores;
      t->scores = t->scores_next;
      t->scores_next = tmp;
      Sv = Snext;
    }
    batch_done(t, epoch, f->n_batches, batch_loss, batch_hits, b->count,
               seconds_before + (nn_now_seconds() - t0));
    /* Between batches the parameters and the optimizer's state are whole:
     * a checkpoint taken here resumes with the next batch. */
    if (watch_stops(t)) {
      *stopped = 1;
      return NN_OK;
    }
    b = feed_next(f, &rc);
  }
  *loss = p->loss_sum / (double)p->batch;
  *accuracy = (double)p->hits / (double)n;
  *seconds = p->train_seconds;
  return NN_OK;
}

/* This rank's part of a data-parallel step on its slice b: forward, loss
 * and backward, its numbers into *db.  A non-finite loss stops before
 * backward, as in train_feed. */
static int dist_local(nn_trainer *t, size_t epoch, size_t batch,
                      batch_slot *b, nn__dist_batch *db, nn_error *err) {
  gsl_matrix_view Xv, Sv;
  const nn_context ctx = batch_context(t, 1, epoch, batch);
  int rc = batch_forward(t, &ctx, b, &Xv, &Sv, err);
  if (rc) return rc;
  double batch_loss;
  rc = nn_softmax_xent(&Sv.matrix, b->labels, &Sv.matrix, &batch_loss,
                       &db->hits);
  if (rc) return nn_error_set(err, rc, "softmax cross-entropy failed");
  if (!isfinite(batch_loss))
    return loss_failed(t, "training", batch_loss, err);
  db->loss_sum = batch_loss * (double)b->count;
  return batch_backward(t, b, &Xv, &Sv, err);
}

/* Under data-parallel training the ranks decide a stop together: when a
 * rank's watch flag was raised (any_raised, from the step's reduction),
 * every rank asks its watch, and all stop if one says so. */
static int watch_dist(nn_trainer *t, int any_raised, int *stop,
                      nn_error *err) {
  *stop = 0;
  if (!any_raised) return NN_OK;
  const int mine =
      t->watch_fn ? t->watch_fn(t->watch_user, &t->pos) != 0 : 0;
  return nn__dist_any(t->dist, mine, stop, err);
}

/* The step of a data-parallel run after its reduction.  With an optimizer
 * that steps in parts and names the parameters whose step is plain SGD,
 * those are stepped in the pass that makes their mean gradient (which is
 * then never stored) and the others through rows; otherwise the means,
 * then the optimizer's step.  The trainer steps every row of every
 * parameter once itself here, so no count of stepped elements is needed.
 * Either way the numbers are those of the step on the means. */
static int dist_step(nn_trainer *t, nn_error *err) {
  const nn_optim_parts *parts = t->parts;
  if (!parts || !t->sgd_rule) {
    for (size_t k = 0; k < t->n_params; k++)
      nn__dist_mean(t->dist, t->params, k);
    return optim_step(t, err);
  }
  if (err) err->msg[0] = '\0';
  call_enter(t, t->optim_desc->name, "step");
  int rc = parts->begin ? parts->begin(t->optim, t->params, t->n_params, err)
                        : NN_OK;
  /* The rule reads the rate in force: a schedule set it before the
   * reduction. */
  for (size_t k = 0; !rc && k < t->n_params; k++) {
    double lr, reg;
    if (t->sgd_rule->rule(t->optim, t->params, t->n_params, k, &lr, &reg)) {
      if ((rc = nn__dist_mean_sgd(t->dist, t->params, k, lr, reg)))
        nn_error_set(err, rc, "the step of parameter %zu failed", k);
      continue;
    }
    nn__dist_mean(t->dist, t->params, k);
    if (err) err->msg[0] = '\0';
    const size_t rows = t->params[k].value->size1;
    if (rows)
      rc = parts->rows(t->optim, t->params, t->n_params, k, 0, rows, err);
  }
  if (!rc && parts->end) {
    if (err) err->msg[0] = '\0';
    rc = parts->end(t->optim, t->params, t->n_params, err);
  }
  call_leave(t);
  return optim_failed(t, rc, err);
}

/* One training epoch of a data-parallel run (feed begun with slices by the
 * caller) from t->pos on, as train_feed: the same checks, the schedule's
 * rate before each step, a stop between batches.  A rank whose slice
 * failed still joins the step's reduction, its stop flag set and its
 * message complete (fail_at), so that every rank stops at the same step
 * with the same error; the step comes after the reduction, so the
 * parameters stay those that gave a failed batch's loss. */
static int train_feed_dist(nn_trainer *t, size_t epoch, batch_feed *f,
                           double *loss, double *accuracy, double *seconds,
                           int *stopped, nn_error *err) {
  nn_train_position *p = &t->pos;
  const double t0 = nn_now_seconds(), seconds_before = p->train_seconds;
  int rc = NN_OK;
  *stopped = 0;
  t->at_phase = PHASE_TRAIN;
  t->at_epoch = epoch;
  for (batch_slot *b = feed_next(f, &rc); b; b = feed_next(f, &rc)) {
    t->at_batch = p->batch;
    nn__dist_batch db = {.count = b->count,
                         .request = t->watch_flag && *t->watch_flag};
    if (rc)
      rc = nn_error_set(err, rc, "cannot gather a batch");
    else if (b->count)
      rc = dist_local(t, epoch, p->batch, b, &db, err);
    /* Every rank steps with the rate the one-process run would, empty
     * slices included. */
    if (!rc && p->batch > 0 && t->schedule &&
        nn_schedule_per_batch(t->schedule, epoch))
      rc = apply_lr(t, epoch, p->batch, f->n_batches, NULL, err);
    if (rc) db.stop = fail_at(t, rc, err) != NN_OK;
    if ((rc = nn__dist_reduce(t->dist, t->params, t->n_params, &db, err)))
      return rc;
    const double batch_loss = db.loss_sum / (double)db.count;
    /* Finite on every rank yet not in sum: the totals overflowed. */
    if (!isfinite(batch_loss))
      return loss_failed(t, "training", batch_loss, err);
    if ((rc = dist_step(t, err))) return rc;
    batch_done(t, epoch, f->n_batches, batch_loss, db.hits, db.count,
               seconds_before + (nn_now_seconds() - t0));
    /* Between batches the parameters and the optimizer's state are whole
     * on every rank: a checkpoint taken here resumes with the next batch. */
    if ((rc = watch_dist(t, db.request, stopped, err))) return rc;
    if (*stopped) return NN_OK;
  }
  if (rc) return nn_error_set(err, rc, "cannot gather a batch");
  *loss = p->loss_sum / (double)p->batch;
  *accuracy = (double)p->hits / (double)f->ds->n;
  *seconds = p->train_seconds;
  return NN_OK;
}

/* One training epoch over ds in the order given, from t->pos on. */
static int train_epoch(nn_trainer *t, size_t epoch, const nn_dataset *ds,
                       const size_t *order, double *loss, double *accuracy,
                       double *seconds, int *stopped, nn_error *err) {
  batch_feed f;
  nn__guard_reset(&t->guard);
  feed_begin(&f, t, ds, order, t->pipeline, t->pos.batch);
  int rc = t->dist ? train_feed_dist(t, epoch, &f, loss, accuracy, seconds,
                                     stopped, err)
                   : train_feed(t, epoch, &f, loss, accuracy, seconds,
                                stopped, err);
  feed_end(&f);
  if (!rc) rc = check_epoch(t, epoch, err);
  return fail_at(t, rc, err);
}

int nn_trainer_run(nn_trainer *t, const nn_dataset *train,
                   const nn_dataset *val, nn_epoch_fn on_epoch, void *user,
                   nn_epoch_metrics *metrics, size_t *n_run, nn_error *err) {
  if (n_run) *n_run = 0;
  t->stopped = NN_STOP_NONE;
  t->stopped_after = (long)t->start_epoch - 1;
  t->in_epoch = 0;
  int rc;
  if ((rc = check_dataset(t, train, "training", err)) ||
      (rc = check_dataset(t, val, "validation", err)))
    return rc;
  size_t *order = malloc(train->n * sizeof *order);
  if (!order) return nn_error_set(err, NN_ENOMEM, "out of memory");
  nn_stop_reason why = NN_STOP_EPOCHS;
  for (size_t e = t->start_epoch; e < t->opts.epochs; e++) {
    /* Asked before the epoch rather than after the one before, so that a
     * resumed run which had already stopped trains nothing, and a run
     * whose patience runs out with its last epoch ran all its epochs. */
    if (e > 0 && nn_early_stop(t->opts.patience, e - 1, t->best_epoch)) {
      why = NN_STOP_PATIENCE;
      break;
    }
    /* The first epoch of a run resumed inside it goes on from there. */
    const int inside = e == t->start_epoch && t->start.epoch == e &&
                       t->start.batch > 0;
    t->pos = inside ? t->start : (nn_train_position){.epoch = e};
    /* A stop asked for since the last batch (while validating). */
    if (!inside && !t->dist && watch_stops(t)) {
      why = NN_STOP_REQUEST;
      break;
    }
    if (!inside && t->dist) { /* the ranks decide together */
      int raised = t->watch_flag && *t->watch_flag, stop = 0;
      if (!(rc = nn__dist_any(t->dist, raised, &raised, err)))
        rc = watch_dist(t, raised, &stop, err);
      if (rc) break;
      if (stop) {
        why = NN_STOP_REQUEST;
        break;
      }
    }
    nn_epoch_metrics m = {.epoch = e};
    /* A fresh permutation of the identity each epoch, so an epoch's order
     * depends only on the RNG state at its start. */
    gsl_rng_memcpy(t->epoch_rng, t->rng);
    for (size_t i = 0; i < train->n; i++) order[i] = i;
    if (t->opts.shuffle)
      gsl_ran_shuffle(t->rng, order, train->n, sizeof *order);
    m.lr = current_lr(t);
    if (t->schedule &&
        (rc = apply_lr(t, e, 0, (train->n + t->opts.batch_size - 1) /
                                    t->opts.batch_size, &m.lr, err)))
      break;
    t->in_epoch = 1;
    int stopped;
    rc = train_epoch(t, e, train, order, &m.train_loss, &m.train_accuracy,
                     &m.train_seconds, &stopped, err);
    if (rc) break;
    if (stopped) {
      why = NN_STOP_REQUEST;
      break;
    }
    t->in_epoch = 0;
    double t0 = nn_now_seconds();
    rc = evaluate_as(t, PHASE_VALIDATION, e, val, &m.val_loss,
                     &m.val_accuracy, err);
    m.val_seconds = nn_now_seconds() - t0;
    if (rc) break;
    if (t->schedule) {
      call_enter(t, nn_schedule_name(t->schedule), "observe");
      rc = nn_schedule_observe(t->schedule, e, m.train_loss, m.train_accuracy,
                               m.val_loss, m.val_accuracy, err);
      call_leave(t);
      if (rc) break;
    }
    if (t->best_epoch < 0 || m.val_accuracy > t->best_val_accuracy) {
      t->best_epoch = (long)e;
      t->best_val_accuracy = m.val_accuracy;
      for (size_t i = 0; i < t->n_weights; i++)
        gsl_matrix_memcpy(t->best[i], t->weights[i].value);
    }
    if (metrics) metrics[e] = m;
    if (n_run) *n_run = e + 1 - t->start_epoch;
    t->stopped_after = (long)e;
    t->pos = (nn_train_position){.epoch = e + 1};
    if (on_epoch && on_epoch(user, &m)) {
      why = NN_STOP_CALLBACK;
      break;
    }
  }
  free(order);
  t->start = (nn_train_position){0};
  if (!rc) t->stopped = why;
  return rc;
}

int nn_early_stop(size_t patience, size_t epoch, long best_epoch) {
  return patience > 0 && best_epoch >= 0 && (size_t)best_epoch <= epoch &&
         epoch - (size_t)best_epoch >= patience;
}

nn_stop_reason nn_trainer_stopped(const nn_trainer *t, long *after_epoch) {
  if (after_epoch) *after_epoch = t->stopped_after;
  return t->stopped;
}

long nn_trainer_restore_best(nn_trainer *t) {
  if (t->best_epoch < 0) return -1;
  for (size_t i = 0; i < t->n_weights; i++)
    gsl_matrix_memcpy(t->weights[i].value, t->best[i]);
  return t->best_epoch;
}

void nn_trainer_on_batch(nn_trainer *t, nn_batch_fn fn, void *user) {
  t->on_batch = fn;
  t->on_batch_user = user;
}

int nn_trainer_resumable(const nn_trainer *t, nn_error *err) {
  if (t->optim_desc->optim->state) return NN_OK;
  return nn_error_set(err, NN_EPLUGIN,
                      "optimizer %s has no state operation, so a checkpoint "
                      "cannot hold what it keeps between steps (moments, "
                      "step counts): resuming would restart it silently.  "
                      "Start the run again, or give the optimizer a state "
                      "operation (one that hands out no buffers if it keeps "
                      "nothing)",
                      t->optim_desc->name);
}

nn_param *nn_trainer_optim_state(nn_trainer *t, size_t *n) {
  const nn_optim_ops *o = t->optim_desc->optim;
  *n = 0;
  call_enter(t, t->optim_desc->name, "state");
  nn_param *s = o->state ? o->state(t->optim, n) : NULL;
  call_leave(t);
  if (!s) *n = 0;
  return s;
}

int nn_trainer_set_schedule(nn_trainer *t, const nn_plugin *plugin,
                            const nn_value *opts, const nn_warmup *warmup,
                            nn_error *err) {
  if (!t->lr_ext)
    return nn_error_set(err, NN_ECONFIG,
                        "optimizer %s cannot follow a schedule: it does not "
                        "offer the learning-rate extension (" NN_EXT_OPTIM_LR
                        ")", t->optim_desc->name);
  nn_schedule *s;
  call_enter(t, plugin ? plugin->name : NULL, "create");
  int rc = nn_schedule_create(&s, plugin, opts, warmup, current_lr(t), err);
  call_leave(t);
  if (rc) return rc;
  nn_schedule_free(t->schedule);
  t->schedule = s;
  return NN_OK;
}

nn_param *nn_trainer_schedule_state(nn_trainer *t, size_t *n) {
  *n = 0;
  if (!t->schedule) return NULL;
  call_enter(t, nn_schedule_name(t->schedule), "state");
  nn_param *p = nn_schedule_state(t->schedule, n);
  call_leave(t);
  return p;
}

nn_param *nn_trainer_weights(nn_trainer *t, size_t *n) {
  *n = t->n_weights;
  return t->weights;
}

const char *nn_trainer_model_name(const nn_trainer *t) {
  return t->model_name;
}

void *nn_trainer_model(nn_trainer *t, const nn_model_ops **ops) {
  if (ops) *ops = t->mops;
  return t->model;
}

nn_param *nn_trainer_best(nn_trainer *t, size_t *n, long *epoch,
                          double *val_accuracy) {
  *n = t->n_weights;
  if (epoch) *epoch = t->best_epoch;
  if (val_accuracy) *val_accuracy = t->best_val_accuracy;
  return t->best_params;
}

void nn_trainer_set_best(nn_trainer *t, long epoch, double val_accuracy) {
  t->best_epoch = epoch;
  t->best_val_accuracy = val_accuracy;
}

void nn_trainer_rng_state(const nn_trainer *t, void *buf, size_t *size) {
  const gsl_rng *r = t->in_epoch ? t->epoch_rng : t->rng;
  *size = gsl_rng_size(r);
  if (buf) memcpy(buf, gsl_rng_state(r), *size);
}

int nn_trainer_set_rng_state(nn_trainer *t, const void *buf, size_t size,
                             nn_error *err) {
  if (size != gsl_rng_size(t->rng))
    return nn_error_set(err, NN_EINVAL, "RNG state has %zu bytes, expected %zu",
                        size, gsl_rng_size(t->rng));
  memcpy(gsl_rng_state(t->rng), buf, size);
  t->in_epoch = 0;
  return NN_OK;
}

void nn_trainer_start_at(nn_trainer *t, size_t epoch) {
  t->start_epoch = epoch;
  t->start = (nn_train_position){.epoch = epoch};
}

void nn_trainer_resume_at(nn_trainer *t, const nn_train_position *pos) {
  t->start_epoch = pos->epoch;
  t->start = *pos;
}

void nn_trainer_position(const nn_trainer *t, nn_train_position *pos) {
  *pos = t->pos;
}

void nn_trainer_watch(nn_trainer *t, const volatile sig_atomic_t *flag,
                      nn_watch_fn fn, void *user) {
  t->watch_flag = flag;
  t->watch_fn = fn;
  t->watch_user = user;
}

/* ------------------------------------------------------------ memory */

void nn_trainer_memory(const nn_model_spec *model, nn_shape in, size_t n_out,
                       const nn_train_opts *opts, nn_memory_estimate *est) {
  *est = (nn_memory_estimate){0};
  const uint64_t bs = opts->batch_size, n_in = nn_shape_size(in);
  nn_call_record *calls = opts->calls;
  if (model->plugin) {
    nn_memory_fn memory = nn_plugin_memory_op(model->plugin);
    nn_memory need = {0};
    if (memory) {
      if (calls) {
        calls->plugin = model->plugin->name;
        calls->op = "memory";
      }
      est->complete = memory(model->opts, in, n_out, opts->batch_size,
                             &need) == NN_OK;
      if (calls) calls->op = NULL;
    }
    if (est->complete) {
      est->model = need.bytes;
      est->weights = need.weights;
    }
  } else {
    nn_sequential_memory(model->layers, model->n_layers, in,
                         opts->batch_size, calls, est);
  }
  /* A batch slot holds the dense batch or the sparse one with its
   * transpose (which one depends on the model's extensions, known once it
   * exists: the larger is counted), its labels and indices.  Slots: the
   * current batch, the pipeline's next one, the helper thread's. */
  const uint64_t cells = nn_mem_mul(bs, n_in);
  const uint64_t dense = nn_mem_mul(cells, sizeof(double));
  const uint64_t sparse = nn_mem_add(nn_mem_csr(bs, cells),
                                     nn_mem_csr(n_in, cells));
  const uint64_t slot = nn_mem_add(dense > sparse ? dense : sparse,
                                   nn_mem_mul(bs, sizeof(uint32_t) +
                                                      sizeof(size_t)));
  const uint64_t batches = nn_mem_add(
      nn_mem_mul(slot, 2 + (opts->threads > 1)),
      nn_mem_mul(nn_mem_mul(bs, n_out), 2 * sizeof(double))); /* scores */
  est->total = nn_mem_add(nn_mem_add(est->model, est->weights),
                          nn_mem_add(nn_mem_mul(est->weights, 2), batches));
}

/* ------------------------------------------------------- data-parallel */

int nn_trainer_broadcast(nn_trainer *t, nn_error *err) {
  if (!t->dist) return NN_OK;
  nn__dist_begin(t->dist); /* shared memory, when the ranks can have it */
  size_t n_state;
  nn_param *state = nn_trainer_optim_state(t, &n_state);
  int rc = NN_OK;
  for (size_t k = 0; !rc && k < t->n_weights; k++)
    rc = nn__dist_bcast(t->dist, &t->weights[k].value, 1, err);
  for (size_t k = 0; !rc && k < n_state; k++)
    rc = nn__dist_bcast(t->dist, &state[k].value, 1, err);
  /* A resumed schedule's state (a plateau's count, say) is rank 0's too. */
  size_t n_sched;
  nn_param *sched = nn_trainer_schedule_state(t, &n_sched);
  for (size_t k = 0; !rc && k < n_sched; k++)
    rc = nn__dist_bcast(t->dist, &sched[k].value, 1, err);
  if (!rc) rc = nn__dist_bcast(t->dist, t->best, t->n_weights, err);
  struct {
    long best_epoch;
    double best_val_accuracy;
    size_t start_epoch;
    nn_train_position start; /* a run resumed inside an epoch */
  } marks = {t->best_epoch, t->best_val_accuracy, t->start_epoch, t->start};
  if (!rc) rc = nn__dist_bcast_bytes(t->dist, &marks, sizeof marks, err);
  if (!rc)
    rc = nn__dist_bcast_bytes(t->dist, gsl_rng_state(t->rng),
                              gsl_rng_size(t->rng), err);
  if (rc) return rc;
  t->best_epoch = marks.best_epoch;
  t->best_val_accuracy = marks.best_val_accuracy;
  t->start_epoch = marks.start_epoch;
  t->start = marks.start;
  return NN_OK;
}

uint64_t nn_trainer_checksum(nn_trainer *t) {
  uint64_t h = 0xcbf29ce484222325ULL;
  size_t n[3] = {t->n_weights};
  const nn_param *p[3] = {t->weights, nn_trainer_optim_state(t, &n[1]),
                          nn_trainer_schedule_state(t, &n[2])};
  for (size_t pass = 0; pass < 3; pass++)
    for (size_t k = 0; p[pass] && k < n[pass]; k++) {
      const gsl_matrix *m = p[pass][k].value;
      for (size_t i = 0; i < m->size1; i++)
        h = nn_dist_fnv1a(m->data + i * m->tda, m->size2, h);
    }
  return h;
}
