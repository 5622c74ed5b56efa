/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private: holding plugins to their contract while they run, and the
 * numbers they produce to being finite.  Shared by the trainer and the
 * sequential network.
 *
 * A plugin call that fails is recorded in an nn__guard (which plugin,
 * which operation) and err keeps the plugin's own message, or a stand-in
 * when it gave none; the trainer, which knows the epoch and batch, then
 * writes the message the user sees: "dense[fc1].backward (epoch 0, batch
 * 17): ...".  The innermost failure is the one recorded: an optimizer
 * step that fails inside a model's fused backward is the optimizer's.
 *
 * Functions are nn__guard_*: libnn exports every non-static symbol, and
 * the prefix keeps these out of a plugin's way. */
#ifndef NN_TRAIN_GUARD_H
#define NN_TRAIN_GUARD_H

#include <stddef.h>

#include <nn/train.h>

typedef struct nn__guard {
  nn_gsl_trap_fn trap; /* lent (the program's), or NULL: not asked */
  char who[160];       /* the plugin that failed: "twolayer", "dense[fc1]" */
  const char *op;      /* its operation (static text); NULL: none failed */
} nn__guard;

/* Forget a recorded failure and any GSL error reported before now. */
void nn__guard_reset(nn__guard *g);

/* After a call into operation `op` of plugin `who` that returned rc.  A
 * GSL error reported during the call (g->trap) fails it even when rc is
 * NN_OK: GSL's functions return an error code that a plugin may have
 * ignored, leaving its output unwritten.  A failure is recorded in g
 * (unless one already is) and returns NN_EPLUGIN, except that create
 * keeps NN_ECONFIG (options the plugin refuses are the config's fault).
 * err (may be NULL) holds the plugin's message or a stand-in. */
int nn__guard_call(nn__guard *g, const char *who, const char *op, int rc,
                   nn_error *err);

/* If g recorded a failure: err's message becomes "who.op<when>: msg"
 * (when: "" or " (epoch 2, batch 17)") and the record is cleared.
 * Returns rc. */
int nn__guard_report(nn__guard *g, const char *when, int rc, nn_error *err);

/* A parameter's matrices as create left them: later calls must show the
 * same ones (the optimizer and the best-epoch copy were made for them). */
typedef struct nn__guard_snap {
  const gsl_matrix *value, *grad;
  const double *value_data, *grad_data;
  size_t size1, size2, tda, grad_size1, grad_size2;
} nn__guard_snap;

void nn__guard_snap_take(nn__guard_snap *s, const nn_param *p);
/* NN_EPLUGIN saying what changed when p is not the parameter s took. */
int nn__guard_snap_check(const nn__guard_snap *s, const nn_param *p,
                         nn_error *err);

/* Bytes of doubles in the matrices of p[0..n), rows tda apart. */
uint64_t nn__guard_bytes(const nn_param *p, size_t n);

/* v as text, NaN without the sign printf may give it ("-nan"). */
typedef struct nn__guard_num_text {
  char s[32];
} nn__guard_num_text;
nn__guard_num_text nn__guard_num(double v);

/* The largest |value| of p[0..n) (all finite) and where it is. */
double nn__guard_largest(const nn_param *p, size_t n, size_t *which);

/* ---- the sequential network's side (train/sequential.c) */

/* nn_sequential_create_recorded whose layer failures are recorded in
 * guard (lent, outlives the network) for the trainer to report. */
int nn__sequential_create_guarded(void **out, const nn_model_ops **ops,
                                  const nn_layer_spec *layers, size_t n,
                                  nn_shape in, size_t n_out, size_t max_batch,
                                  gsl_rng *rng, nn_call_record *calls,
                                  nn__guard *guard, nn_error *err);
/* Whether every layer's params and state operations still hand out the
 * arrays (params) and matrices (both) of create; a failure is recorded. */
int nn__sequential_check_stable(void *net, nn_error *err);
/* The first layer whose output of the last forward holds a value that is
 * not finite: its "type[name]" (owned by the network), or NULL. */
const char *nn__sequential_nonfinite_layer(void *net);
/* Which layer ("type[name]") a network's parameter or state name
 * ("name.W") belongs to, or NULL. */
const char *nn__sequential_owner(void *net, const char *param_name);

#endif
