/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The `sequential` model: layer plugins in order.  See <nn/sequential.h>.
 *
 * Every layer writes its output into a buffer of its own (Y) and the
 * gradient of that output lives in another (dY), both allocated once for
 * max_batch rows, so backward hands each layer the X and Y of its forward
 * and nothing is allocated per batch.  The last layer's output is copied
 * into the scores, because the core turns scores into dscores in place and
 * layers such as sigmoid need their own output in backward.
 *
 * Fast paths: when the first layer takes the batch as compressed sparse
 * rows (its sparse-input extension), so does the network; when that layer
 * can also take its step inside backward, the network offers the fused
 * step: each later layer's parameters are stepped as soon as its backward
 * is done, and the first layer steps its own (its parameters come first in
 * the network's array, so their indices are the same in both). */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include <nn/math.h>
#include <nn/plugin_ext.h>
#include <nn/registry.h>
#include <nn/sequential.h>

#include "train/guard.h"

typedef struct seq_layer {
  char *name;                 /* owned copy of the section name */
  char *label;                /* owned: "name (plugin)", for the record */
  char *who;                  /* owned: "plugin[name]", for messages */
  const nn_plugin *plugin;    /* lent; outlives the network */
  void *self;                 /* owned: plugin->layer->destroy */
  nn_shape in, out;
  nn_param *params;           /* the layer's own (owned by it) */
  size_t n_params, p0;        /* p0: index of params[0] in the network's */
  size_t n_state, s0;         /* its state buffers, and where in the
                                 network's they start */
  gsl_matrix *Y, *dY;         /* owned: max_batch x size(out) */
  const nn_layer_sparse *sparse; /* first layer only, or NULL */
  const nn_parallel_attach *par; /* its threads extension, or NULL */
} seq_layer;

typedef struct sequential {
  seq_layer *layers; /* owned, n of them */
  size_t n, n_in, n_out, max_batch;
  size_t last_rows;  /* rows of the last successful forward; 0 = none */
  nn_param *params;  /* owned array over the layers' matrices */
  size_t n_params;
  nn_param *state;   /* owned array over the layers' state matrices */
  size_t n_state;
  char *names;       /* owned: the "layer.name" strings of both arrays */
  nn_model_sparse sparse_ext;    /* offered when the first layer takes CSR */
  nn_model_fused_step fused_ext; /* offered when it also steps itself */
  nn_parallel_attach par_ext;    /* offered when a layer takes threads */
  nn_call_record *calls;         /* lent, may be NULL: see nn_call_record */
  nn__guard *guard;              /* lent by the trainer, or own_guard */
  nn__guard own_guard;           /* for a network made on its own */
} sequential;

/* Around every call into a layer plugin: who runs and what (two stores
 * before the call, one after), for a crash report. */
static inline void call_enter(const sequential *m, const seq_layer *l,
                              const char *op) {
  if (m->calls) {
    m->calls->plugin = l->label;
    m->calls->op = op;
  }
}

static inline void call_leave(const sequential *m) {
  if (m->calls) m->calls->op = NULL;
}

static void seq_destroy(void *self) {
  sequential *m = self;
  if (!m) return;
  for (size_t i = 0; i < m->n; i++) {
    seq_layer *l = &m->layers[i];
    if (l->self) {
      call_enter(m, l, "destroy");
      l->plugin->layer->destroy(l->self);
      call_leave(m);
    }
    if (l->Y) gsl_matrix_free(l->Y);
    if (l->dY) gsl_matrix_free(l->dY);
    free(l->name);
    free(l->label);
    free(l->who);
  }
  free(m->layers);
  free(m->params);
  free(m->state);
  free(m->names);
  free(m);
}

/* After a call into a layer (rc its result): a failure, or a GSL error
 * during the call, is recorded for the trainer to report; a network made
 * on its own names the layer in its message at once. */
static int layer_failed(sequential *m, const seq_layer *l, int rc,
                        const char *op, nn_error *err) {
  rc = nn__guard_call(m->guard, l->who, op, rc, err);
  if (rc && m->guard == &m->own_guard)
    rc = nn__guard_report(&m->own_guard, "", rc, err);
  return rc;
}

static int shape_ok(nn_shape s) {
  return s.c && s.h && s.w && nn_shape_size(s) / s.c / s.h == s.w;
}

/* A layer as made against what its memory operation declared for the
 * same arguments: its output shape and the size of its parameters and
 * state (a parameter of another shape than the plugin meant shows here). */
static int check_declared(sequential *m, const seq_layer *l,
                          const nn_layer_spec *spec, const nn_param *state,
                          size_t n_state, nn_error *err) {
  nn_memory_fn memory = nn_plugin_memory_op(spec->plugin);
  nn_memory need = {0};
  if (!memory) return NN_OK;
  call_enter(m, l, "memory");
  const int rc = memory(spec->opts, l->in, 0, m->max_batch, &need);
  call_leave(m);
  if (rc) return NN_OK; /* create accepted what memory refuses: not ours */
  const uint64_t have = nn_mem_add(nn__guard_bytes(l->params, l->n_params),
                                   nn__guard_bytes(state, n_state));
  if (need.out.c != l->out.c || need.out.h != l->out.h ||
      need.out.w != l->out.w)
    return layer_failed(
        m, l,
        nn_error_set(err, NN_EPLUGIN,
                     "set the output shape %ux%ux%u, but its memory "
                     "operation declared %ux%ux%u for the same options",
                     (unsigned)l->out.c, (unsigned)l->out.h,
                     (unsigned)l->out.w, (unsigned)need.out.c,
                     (unsigned)need.out.h, (unsigned)need.out.w),
        "create", err);
  if (need.weights == have) return NN_OK;
  char shapes[300] = "";
  size_t len = 0;
  for (size_t k = 0; k < l->n_params + n_state && len < sizeof shapes; k++) {
    const nn_param *p = k < l->n_params ? &l->params[k]
                                        : &state[k - l->n_params];
    len += (size_t)snprintf(shapes + len, sizeof shapes - len, "%s%s %zux%zu",
                            k ? ", " : "", p->name, p->value->size1,
                            p->value->size2);
  }
  return layer_failed(
      m, l,
      nn_error_set(err, NN_EPLUGIN,
                   "its parameters and state take %llu bytes (%s), but its "
                   "memory operation declared %llu for the same options: a "
                   "parameter has another shape than the plugin meant",
                   (unsigned long long)have, shapes,
                   (unsigned long long)need.weights),
      "create", err);
}

/* Create layer i of the network on input shape `in`. */
static int layer_create(sequential *m, size_t i, const nn_layer_spec *spec,
                        nn_shape in, gsl_rng *rng, nn_error *err) {
  seq_layer *l = &m->layers[i];
  l->plugin = spec->plugin;
  l->in = in;
  if (!(l->name = strdup(spec->name ? spec->name : "?")))
    return nn_error_set(err, NN_ENOMEM, "out of memory");
  if (!spec->plugin || spec->plugin->kind != NN_KIND_LAYER ||
      !spec->plugin->layer)
    return nn_error_set(err, NN_EINVAL, "layer %s: not a layer plugin",
                        l->name);
  const size_t label_size = strlen(l->name) + strlen(spec->plugin->name) + 4;
  if (!(l->label = malloc(label_size)))
    return nn_error_set(err, NN_ENOMEM, "out of memory");
  snprintf(l->label, label_size, "%s (%s)", l->name, spec->plugin->name);
  if (!(l->who = malloc(label_size)))
    return nn_error_set(err, NN_ENOMEM, "out of memory");
  snprintf(l->who, label_size, "%s[%s]", spec->plugin->name, l->name);
  const nn_layer_ops *ops = spec->plugin->layer;
  if (err) err->msg[0] = '\0';
  call_enter(m, l, "create");
  int rc = ops->create(spec->opts, in, m->max_batch, rng, &l->out, &l->self,
                       err);
  call_leave(m);
  if (rc) {
    l->self = NULL;
    return layer_failed(m, l, rc, "create", err);
  }
  if ((rc = layer_failed(m, l, rc, "create", err))) return rc;
  if (!shape_ok(l->out))
    return layer_failed(m, l,
                        nn_error_set(err, NN_EPLUGIN,
                                     "output shape %ux%ux%u is empty or too "
                                     "large", (unsigned)l->out.c,
                                     (unsigned)l->out.h, (unsigned)l->out.w),
                        "create", err);
  call_enter(m, l, "params");
  l->params = ops->params ? ops->params(l->self, &l->n_params) : NULL;
  call_enter(m, l, "state");
  size_t n_state = 0;
  nn_param *state = ops->state ? ops->state(l->self, &n_state) : NULL;
  call_leave(m);
  if (!l->params) l->n_params = 0;
  if (!state) n_state = 0;
  char owner[160];
  snprintf(owner, sizeof owner, "layer %s (%s)", l->name, l->plugin->name);
  if ((rc = nn_check_param_names(owner, l->params, l->n_params, state,
                                 n_state, err)))
    return rc;
  if ((rc = check_declared(m, l, spec, state, n_state, err))) return rc;
  const size_t width = nn_shape_size(l->out);
  l->Y = nn_matrix_calloc_aligned(m->max_batch, width);
  l->dY = nn_matrix_calloc_aligned(m->max_batch, width);
  if (!l->Y || !l->dY)
    return nn_error_set(err, NN_ENOMEM, "layer %s: out of memory", l->name);
  if (i == 0 && ops->extension) {
    call_enter(m, l, "extension");
    const nn_layer_sparse *s = ops->extension(l->self, NN_EXT_LAYER_SPARSE);
    call_leave(m);
    if (s && s->size >= NN_EXT_SIZE_TO(nn_layer_sparse, backward_step) &&
        s->forward && s->backward)
      l->sparse = s;
  }
  if (ops->extension) {
    call_enter(m, l, "extension");
    const nn_parallel_attach *a =
        ops->extension(l->self, NN_EXT_LAYER_PARALLEL);
    call_leave(m);
    if (a && a->size >= NN_EXT_SIZE_TO(nn_parallel_attach, attach) &&
        a->attach)
      l->par = a;
  }
  return NN_OK;
}

/* The network's arrays of parameters and state, named "layer.name". */
static int gather_names(sequential *m, nn_error *err) {
  size_t n_state = 0, bytes = 0;
  for (size_t i = 0; i < m->n; i++) {
    seq_layer *l = &m->layers[i];
    const nn_layer_ops *ops = l->plugin->layer;
    size_t ns = 0;
    call_enter(m, l, "state");
    nn_param *st = ops->state ? ops->state(l->self, &ns) : NULL;
    call_leave(m);
    if (!st) ns = 0;
    l->p0 = m->n_params;
    l->s0 = n_state;
    l->n_state = ns;
    m->n_params += l->n_params;
    n_state += ns;
    for (size_t k = 0; k < l->n_params; k++)
      bytes += strlen(l->name) + strlen(l->params[k].name) + 2;
    for (size_t k = 0; k < ns; k++)
      bytes += strlen(l->name) + strlen(st[k].name) + 2;
  }
  m->params = calloc(m->n_params ? m->n_params : 1, sizeof *m->params);
  m->state = calloc(n_state ? n_state : 1, sizeof *m->state);
  m->names = malloc(bytes ? bytes : 1);
  if (!m->params || !m->state || !m->names)
    return nn_error_set(err, NN_ENOMEM, "out of memory");
  char *p = m->names;
  for (size_t i = 0; i < m->n; i++) {
    seq_layer *l = &m->layers[i];
    const nn_layer_ops *ops = l->plugin->layer;
    size_t ns = 0;
    call_enter(m, l, "state");
    nn_param *st = ops->state ? ops->state(l->self, &ns) : NULL;
    call_leave(m);
    if (!st) ns = 0;
    for (size_t k = 0; k < l->n_params + ns; k++) {
      const nn_param *src = k < l->n_params ? &l->params[k]
                                            : &st[k - l->n_params];
      nn_param *dst = k < l->n_params ? &m->params[l->p0 + k]
                                      : &m->state[m->n_state++];
      *dst = *src;
      dst->name = p;
      p += sprintf(p, "%s.%s", l->name, src->name) + 1;
    }
  }
  return NN_OK;
}

/* Lend par to every layer that takes threads (NULL: take them back).  A
 * layer that cannot take them leaves the network as it was: none keeps
 * them. */
static int seq_attach(void *self, const nn_parallel *par, nn_error *err) {
  sequential *m = self;
  for (size_t i = 0; i < m->n; i++) {
    seq_layer *l = &m->layers[i];
    if (!l->par) continue;
    call_enter(m, l, "attach");
    int rc = l->par->attach(l->self, par, err);
    call_leave(m);
    rc = layer_failed(m, l, rc, "attach", err);
    if (rc && par) {
      for (size_t j = 0; j <= i; j++)
        if (m->layers[j].par) {
          call_enter(m, &m->layers[j], "attach");
          m->layers[j].par->attach(m->layers[j].self, NULL, NULL);
          call_leave(m);
        }
      return rc;
    }
  }
  return NN_OK;
}

static const void *seq_extension(void *self, const char *id) {
  sequential *m = self;
  if (m->par_ext.size && !strcmp(id, NN_EXT_MODEL_PARALLEL))
    return &m->par_ext;
  if (m->sparse_ext.size && !strcmp(id, NN_EXT_MODEL_SPARSE))
    return &m->sparse_ext;
  if (m->fused_ext.size && !strcmp(id, NN_EXT_MODEL_FUSED_STEP))
    return &m->fused_ext;
  return NULL;
}

static int seq_forward_sparse(void *self, const nn_context *ctx,
                              const nn_csr *X, gsl_matrix *scores,
                              nn_error *err);
static int seq_backward_sparse(void *self, const nn_csr *X, const nn_csr *Xt,
                               gsl_matrix *dscores, nn_error *err);
static int seq_backward_step(void *self, const nn_csr *X, const nn_csr *Xt,
                             gsl_matrix *dscores, const nn_stepper *st,
                             nn_error *err);

static const nn_model_ops seq_ops, seq_ops_stochastic;

int nn_sequential_create(void **out, const nn_model_ops **ops,
                         const nn_layer_spec *layers, size_t n, nn_shape in,
                         size_t n_out, size_t max_batch, gsl_rng *rng,
                         nn_error *err) {
  return nn_sequential_create_recorded(out, ops, layers, n, in, n_out,
                                       max_batch, rng, NULL, err);
}

int nn_sequential_create_recorded(void **out, const nn_model_ops **ops,
                                  const nn_layer_spec *layers, size_t n,
                                  nn_shape in, size_t n_out, size_t max_batch,
                                  gsl_rng *rng, nn_call_record *calls,
                                  nn_error *err) {
  return nn__sequential_create_guarded(out, ops, layers, n, in, n_out,
                                       max_batch, rng, calls, NULL, err);
}

int nn__sequential_create_guarded(void **out, const nn_model_ops **ops,
                                  const nn_layer_spec *layers, size_t n,
                                  nn_shape in, size_t n_out, size_t max_batch,
                                  gsl_rng *rng, nn_call_record *calls,
                                  nn__guard *guard, nn_error *err) {
  *out = NULL;
  *ops = &seq_ops;
  if (!layers || !n)
    return nn_error_set(err, NN_ECONFIG,
                        "a sequential model needs at least one [layer NAME] "
                        "section");
  if (!shape_ok(in) || !n_out || !max_batch)
    return nn_error_set(err, NN_EINVAL, "sequential: empty input, classes "
                        "or batch");
  sequential *m = calloc(1, sizeof *m);
  if (!m || !(m->layers = calloc(n, sizeof *m->layers))) {
    free(m);
    return nn_error_set(err, NN_ENOMEM, "out of memory");
  }
  m->n = n;
  m->calls = calls;
  m->guard = guard ? guard : &m->own_guard;
  m->n_in = nn_shape_size(in);
  m->n_out = n_out;
  m->max_batch = max_batch;
  int rc = NN_OK;
  for (size_t i = 0; i < n && !rc; i++) {
    rc = layer_create(m, i, &layers[i], in, rng, err);
    in = m->layers[i].out;
  }
  if (!rc && nn_shape_size(in) != n_out)
    rc = nn_error_set(err, NN_ECONFIG,
                      "layer %s (%s), the last, gives %zu values per example; "
                      "the data has %zu classes",
                      m->layers[n - 1].name, m->layers[n - 1].plugin->name,
                      nn_shape_size(in), n_out);
  if (!rc) rc = gather_names(m, err);
  if (rc) {
    seq_destroy(m);
    return rc;
  }
  const nn_layer_sparse *s = m->layers[0].sparse;
  if (s) {
    m->sparse_ext = (nn_model_sparse){(uint32_t)sizeof(nn_model_sparse),
                                      s->flags, seq_forward_sparse,
                                      seq_backward_sparse};
    if (s->backward_step)
      m->fused_ext = (nn_model_fused_step){
          (uint32_t)sizeof(nn_model_fused_step), seq_backward_step, NULL};
  }
  for (size_t i = 0; i < n; i++) {
    if (m->layers[i].plugin->layer->flags & NN_STOCHASTIC)
      *ops = &seq_ops_stochastic;
    if (m->layers[i].par)
      m->par_ext = (nn_parallel_attach){(uint32_t)sizeof(nn_parallel_attach),
                                        seq_attach};
  }
  *out = m;
  return NN_OK;
}

static int seq_create(const nn_value *opts, nn_shape in, size_t n_out,
                      size_t max_batch, gsl_rng *rng, void **out,
                      nn_error *err) {
  (void)opts, (void)in, (void)n_out, (void)max_batch, (void)rng;
  *out = NULL;
  return nn_error_set(err, NN_EINVAL,
                      "sequential: a network is made from its layers "
                      "(nn_sequential_create)");
}

static nn_param *seq_params(void *self, size_t *n) {
  sequential *m = self;
  *n = m->n_params;
  return m->params;
}

static nn_param *seq_state(void *self, size_t *n) {
  sequential *m = self;
  *n = m->n_state;
  return m->state;
}

/* A batch of `rows` examples of `cols` values, and scores to match. */
static int seq_check(const sequential *m, size_t rows, size_t cols,
                     const gsl_matrix *s, const char *what, nn_error *err) {
  return nn_check_batch("sequential", rows, cols, m->n_in, m->max_batch, s,
                        m->n_out, what, err);
}

/* Rows [0, B) of a layer's buffer. */
static gsl_matrix_view rows_of(gsl_matrix *M, size_t B) {
  return gsl_matrix_submatrix(M, 0, 0, B, M->size2);
}

/* Layers from..n-1 forward on B rows (layer from's input is X when from
 * is 0, the previous layer's Y otherwise), then the scores. */
static int forward_from(sequential *m, size_t from, const nn_context *ctx,
                        const gsl_matrix *X, size_t B, gsl_matrix *scores,
                        nn_error *err) {
  for (size_t i = from; i < m->n; i++) {
    seq_layer *l = &m->layers[i];
    gsl_matrix_view in = i ? rows_of(m->layers[i - 1].Y, B)
                           : gsl_matrix_submatrix((gsl_matrix *)X, 0, 0, B,
                                                  X->size2);
    gsl_matrix_view y = rows_of(l->Y, B);
    if (err) err->msg[0] = '\0';
    call_enter(m, l, "forward");
    int rc = l->plugin->layer->forward(l->self, ctx, &in.matrix, &y.matrix,
                                       err);
    call_leave(m);
    if ((rc = layer_failed(m, l, rc, "forward", err))) return rc;
  }
  gsl_matrix_view last = rows_of(m->layers[m->n - 1].Y, B);
  gsl_matrix_memcpy(scores, &last.matrix);
  m->last_rows = B;
  return NN_OK;
}

static int seq_forward(void *self, const nn_context *ctx, const gsl_matrix *X,
                       gsl_matrix *scores, nn_error *err) {
  sequential *m = self;
  int rc = seq_check(m, X->size1, X->size2, scores, "scores", err);
  if (rc) return rc;
  m->last_rows = 0;
  return forward_from(m, 0, ctx, X, X->size1, scores, err);
}

static int seq_forward_sparse(void *self, const nn_context *ctx,
                              const nn_csr *X, gsl_matrix *scores,
                              nn_error *err) {
  sequential *m = self;
  int rc = seq_check(m, X->rows, X->cols, scores, "scores", err);
  if (rc) return rc;
  m->last_rows = 0;
  seq_layer *l = &m->layers[0];
  gsl_matrix_view y = rows_of(l->Y, X->rows);
  if (err) err->msg[0] = '\0';
  call_enter(m, l, "forward");
  rc = l->sparse->forward(l->self, ctx, X, &y.matrix, err);
  call_leave(m);
  if ((rc = layer_failed(m, l, rc, "forward", err))) return rc;
  return forward_from(m, 1, ctx, NULL, X->rows, scores, err);
}

/* Layers n-1 down to 1 backward on B rows (dscores as the last one's dY),
 * each stepped through st right after it when st is given.  Leaves the
 * first layer's dY ready (in its buffer, or dscores if it is the last). */
static int backward_to_first(sequential *m, size_t B, gsl_matrix *dscores,
                             const nn_stepper *st, gsl_matrix **dY0,
                             nn_error *err) {
  if (m->last_rows != B)
    return nn_error_set(err, NN_EINVAL,
                        "sequential: backward on %zu rows needs a forward on "
                        "the same batch first", B);
  gsl_matrix *dY = dscores;
  for (size_t i = m->n - 1; i >= 1; i--) {
    seq_layer *l = &m->layers[i];
    gsl_matrix_view in = rows_of(m->layers[i - 1].Y, B);
    gsl_matrix_view y = rows_of(l->Y, B);
    gsl_matrix_view d = rows_of(dY, B);
    gsl_matrix_view dX = rows_of(m->layers[i - 1].dY, B);
    if (err) err->msg[0] = '\0';
    call_enter(m, l, "backward");
    int rc = l->plugin->layer->backward(l->self, &in.matrix, &y.matrix,
                                        &d.matrix, &dX.matrix, err);
    call_leave(m);
    if ((rc = layer_failed(m, l, rc, "backward", err))) return rc;
    for (size_t k = 0; st && k < l->n_params; k++)
      if ((rc = st->rows(st->ctx, l->p0 + k, 0,
                         l->params[k].value->size1, err)))
        return rc;
    dY = m->layers[i - 1].dY; /* the next layer down reads its rows */
  }
  *dY0 = dY;
  return NN_OK;
}

static int seq_backward(void *self, const gsl_matrix *X, gsl_matrix *dscores,
                        nn_error *err) {
  sequential *m = self;
  const size_t B = X->size1;
  int rc = seq_check(m, B, X->size2, dscores, "dscores", err);
  gsl_matrix *dY = NULL;
  if (!rc) rc = backward_to_first(m, B, dscores, NULL, &dY, err);
  if (rc) return rc;
  seq_layer *l = &m->layers[0];
  gsl_matrix_view in = gsl_matrix_submatrix((gsl_matrix *)X, 0, 0, B,
                                            X->size2);
  gsl_matrix_view y = rows_of(l->Y, B), d = rows_of(dY, B);
  if (err) err->msg[0] = '\0';
  call_enter(m, l, "backward");
  rc = l->plugin->layer->backward(l->self, &in.matrix, &y.matrix, &d.matrix,
                                  NULL, err);
  call_leave(m);
  return layer_failed(m, l, rc, "backward", err);
}

/* Backward on the sparse batch; with st, every layer's step inside it
 * (the first layer's parameters are the network's first: same indices). */
static int backward_sparse(sequential *m, const nn_csr *X, const nn_csr *Xt,
                           gsl_matrix *dscores, const nn_stepper *st,
                           nn_error *err) {
  const size_t B = X->rows;
  int rc = seq_check(m, B, X->cols, dscores, "dscores", err);
  gsl_matrix *dY = NULL;
  if (!rc) rc = backward_to_first(m, B, dscores, st, &dY, err);
  if (rc) return rc;
  seq_layer *l = &m->layers[0];
  gsl_matrix_view y = rows_of(l->Y, B), d = rows_of(dY, B);
  if (err) err->msg[0] = '\0';
  call_enter(m, l, "backward");
  rc = st ? l->sparse->backward_step(l->self, X, Xt, &y.matrix, &d.matrix, st,
                                     err)
          : l->sparse->backward(l->self, X, Xt, &y.matrix, &d.matrix, err);
  call_leave(m);
  return layer_failed(m, l, rc, "backward", err);
}

static int seq_backward_sparse(void *self, const nn_csr *X, const nn_csr *Xt,
                               gsl_matrix *dscores, nn_error *err) {
  return backward_sparse(self, X, Xt, dscores, NULL, err);
}

static int seq_backward_step(void *self, const nn_csr *X, const nn_csr *Xt,
                             gsl_matrix *dscores, const nn_stepper *st,
                             nn_error *err) {
  if (!st)
    return nn_error_set(err, NN_EINVAL, "sequential: NULL stepper");
  return backward_sparse(self, X, Xt, dscores, st, err);
}

size_t nn_sequential_count(void *net) { return ((sequential *)net)->n; }

void nn_sequential_memory(const nn_layer_spec *layers, size_t n, nn_shape in,
                          size_t max_batch, nn_call_record *calls,
                          nn_memory_estimate *est) {
  *est = (nn_memory_estimate){.complete = 1};
  for (size_t i = 0; i < n; i++) {
    const nn_plugin *p = layers[i].plugin;
    nn_memory_fn memory = p && p->kind == NN_KIND_LAYER
                              ? nn_plugin_memory_op(p) : NULL;
    nn_memory need = {0};
    int rc = NN_EINVAL;
    if (memory) {
      if (calls) {
        calls->plugin = p->name;
        calls->op = "memory";
      }
      rc = memory(layers[i].opts, in, 0, max_batch, &need);
      if (calls) calls->op = NULL;
    }
    /* Without an answer (or with a shape create would refuse) the next
     * layer's input shape is unknown: the sum stops here. */
    if (rc != NN_OK || !shape_ok(need.out)) {
      est->complete = 0;
      return;
    }
    /* The layer's output and its gradient are the network's buffers. */
    const uint64_t bytes = nn_mem_add(
        need.bytes, nn_mem_mul(2 * sizeof(double),
                               nn_mem_mul(max_batch, nn_shape_size(need.out))));
    est->model = nn_mem_add(est->model, bytes);
    est->weights = nn_mem_add(est->weights, need.weights);
    if (bytes > est->largest_bytes) {
      est->largest = i;
      est->largest_bytes = bytes;
    }
    in = need.out;
  }
}

int nn_sequential_layer(void *net, size_t i, nn_layer_info *info) {
  sequential *m = net;
  if (i >= m->n) return NN_EINVAL;
  const seq_layer *l = &m->layers[i];
  size_t values = 0;
  for (size_t k = 0; k < l->n_params; k++)
    values += l->params[k].value->size1 * l->params[k].value->size2;
  *info = (nn_layer_info){l->name, l->plugin->name, l->in, l->out, values,
                          l->sparse != NULL};
  return NN_OK;
}

int nn__sequential_check_stable(void *net, nn_error *err) {
  sequential *m = net;
  for (size_t i = 0; i < m->n; i++) {
    const seq_layer *l = &m->layers[i];
    const nn_layer_ops *ops = l->plugin->layer;
    size_t n = 0, ns = 0;
    call_enter(m, l, "params");
    const nn_param *p = ops->params ? ops->params(l->self, &n) : NULL;
    call_enter(m, l, "state");
    const nn_param *st = ops->state ? ops->state(l->self, &ns) : NULL;
    call_leave(m);
    if (!p) n = 0;
    if (!st) ns = 0;
    int rc = NN_OK;
    const char *op = "params";
    if (p != l->params || n != l->n_params)
      rc = nn_error_set(err, NN_EPLUGIN,
                        "returned %zu parameters in another array than the "
                        "%zu of create (the optimizer keeps that one): the "
                        "array must stay until destroy", n, l->n_params);
    for (size_t k = 0; k < n && !rc; k++)
      if (p[k].value != m->params[l->p0 + k].value ||
          p[k].grad != m->params[l->p0 + k].grad)
        rc = nn_error_set(err, NN_EPLUGIN,
                          "parameter %s is now another matrix than the one "
                          "create made: matrices must stay until destroy",
                          p[k].name ? p[k].name : "?");
    if (!rc && ns != l->n_state) {
      op = "state";
      rc = nn_error_set(err, NN_EPLUGIN,
                        "returned %zu state buffers; create's were %zu", ns,
                        l->n_state);
    }
    for (size_t k = 0; k < ns && !rc; k++)
      if (st[k].value != m->state[l->s0 + k].value) {
        op = "state";
        rc = nn_error_set(err, NN_EPLUGIN,
                          "state buffer %s is now another matrix than the "
                          "one create made: matrices must stay until "
                          "destroy", st[k].name ? st[k].name : "?");
      }
    if (rc) return layer_failed(m, l, rc, op, err);
  }
  return NN_OK;
}

const char *nn__sequential_nonfinite_layer(void *net) {
  sequential *m = net;
  for (size_t i = 0; i < m->n && m->last_rows; i++) {
    gsl_matrix_view y = rows_of(m->layers[i].Y, m->last_rows);
    const nn_param p = {"", &y.matrix, NULL, 0};
    if (nn_find_nonfinite(&p, 1, NULL, NULL, NULL) == 0)
      return m->layers[i].who;
  }
  return NULL;
}

const char *nn__sequential_owner(void *net, const char *param_name) {
  sequential *m = net;
  for (size_t i = 0; param_name && i < m->n; i++) {
    const size_t len = strlen(m->layers[i].name);
    if (!strncmp(param_name, m->layers[i].name, len) &&
        param_name[len] == '.')
      return m->layers[i].who;
  }
  return NULL;
}

/* Two tables, alike but for the flags: a network is stochastic when one
 * of its layers is (it then gets a random stream per batch). */
#define SEQ_OPS(flags_)                                                     \
  {.size = sizeof(nn_model_ops), .flags = (flags_), .create = seq_create,  \
   .destroy = seq_destroy, .params = seq_params, .forward = seq_forward,   \
   .backward = seq_backward, .state = seq_state,                           \
   .extension = seq_extension}
static const nn_model_ops seq_ops = SEQ_OPS(0);
static const nn_model_ops seq_ops_stochastic = SEQ_OPS(NN_STOCHASTIC);
