/* SPDX-License-Identifier: GPL-3.0-or-later */
/* `sequential`: a model made of layer plugins applied in order, the first
 * to the batch, each to the output of the one before; the last layer gives
 * the class scores.  Part of libnn (it loads nothing itself: the caller
 * hands it loaded layer plugins), so `[model] type = sequential` needs no
 * model plugin. */
#ifndef NN_SEQUENTIAL_H
#define NN_SEQUENTIAL_H

#include <nn/plugin.h>
#include <nn/train.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A network of layers[0..n) for examples of shape `in`, n_out classes and
 * batches of at most max_batch.  The layers draw their weights from rng in
 * order.  Parameters and state are named "<layer name>.<name>".  Errors
 * name the layer (a shape that does not fit, a last layer that does not
 * give n_out values).  *ops receives the network's model operations
 * (static; NN_STOCHASTIC when a layer is); *out is released with
 * (*ops)->destroy.  The layer plugins must outlive the network. */
int nn_sequential_create(void **out, const nn_model_ops **ops,
                         const nn_layer_spec *layers, size_t n, nn_shape in,
                         size_t n_out, size_t max_batch, gsl_rng *rng,
                         nn_error *err);
/* The same, recording every call into a layer plugin in *calls (lent,
 * may be NULL; must outlive the network) under the name "<layer name>
 * (<plugin name>)": see nn_call_record. */
int nn_sequential_create_recorded(void **out, const nn_model_ops **ops,
                                  const nn_layer_spec *layers, size_t n,
                                  nn_shape in, size_t n_out, size_t max_batch,
                                  gsl_rng *rng, nn_call_record *calls,
                                  nn_error *err);

/* What nn_sequential_create would allocate for these layers, without
 * creating them: each layer's memory answer for the shape the layer
 * before gives, and the network's own buffers (each layer's output and its
 * gradient, max_batch rows).  Fills est's model, weights, complete,
 * largest and largest_bytes (total is the trainer's: nn_trainer_memory).
 * The sum stops at the first layer without the memory operation or whose
 * options its create would refuse (complete = 0).  The layers' memory
 * operations are recorded in *calls (may be NULL) under their plugins'
 * names. */
void nn_sequential_memory(const nn_layer_spec *layers, size_t n, nn_shape in,
                          size_t max_batch, nn_call_record *calls,
                          nn_memory_estimate *est);

/* One layer as the network built it. */
typedef struct nn_layer_info {
  const char *name;  /* the layer's name (its section) */
  const char *type;  /* its plugin's name */
  nn_shape in, out;  /* per example */
  size_t n_values;   /* trainable numbers in its parameters */
  int sparse_input;  /* takes the batch as compressed sparse rows */
} nn_layer_info;

size_t nn_sequential_count(void *net);
/* Layer i (< nn_sequential_count); strings owned by the network. */
int nn_sequential_layer(void *net, size_t i, nn_layer_info *info);

#ifdef __cplusplus
}
#endif
#endif /* NN_SEQUENTIAL_H */
