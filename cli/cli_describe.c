/* SPDX-License-Identifier: GPL-3.0-or-later */
/* nnrun --describe -c FILE: the model a config builds, layer by layer
 * (shapes, parameter counts, plugin files), without data or training. */
#include <config.h>

#include <stdio.h>

#include <nn/nn.h>

#include "cli.h"
#include "cli_setup.h"

/* The trainer reads MNIST: 28 x 28 images, 10 classes. */
#define DESCRIBE_IMAGE_SIDE 28

static void shape_text(nn_shape s, char *buf, size_t size) {
  snprintf(buf, size, "%ux%ux%u", (unsigned)s.c, (unsigned)s.h,
           (unsigned)s.w);
}

static size_t count_values(const nn_param *p, size_t n) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += p[i].value->size1 * p[i].value->size2;
  return total;
}

static void describe_network(const cli_run *r, void *net) {
  printf("%-3s %-12s %-10s %-10s %-10s %10s  %s\n", "#", "LAYER", "TYPE",
         "INPUT", "OUTPUT", "PARAMS", "PLUGIN");
  for (size_t i = 0; i < nn_sequential_count(net); i++) {
    nn_layer_info li;
    if (nn_sequential_layer(net, i, &li)) break;
    char in[48], out[48];
    shape_text(li.in, in, sizeof in);
    shape_text(li.out, out, sizeof out);
    printf("%-3zu %-12s %-10s %-10s %-10s %10zu  %s%s\n", i, li.name, li.type,
           in, out, li.n_values, nn_loaded_path(r->layers[i].loaded),
           li.sparse_input ? " (takes the batch as sparse rows)" : "");
  }
}

static void describe_params(const nn_param *p, size_t n) {
  printf("%-16s %-12s %10s  %s\n", "PARAMETER", "SHAPE", "VALUES", "KIND");
  for (size_t i = 0; i < n; i++) {
    char shape[48];
    snprintf(shape, sizeof shape, "%zux%zu", p[i].value->size1,
             p[i].value->size2);
    printf("%-16s %-12s %10zu  %s\n", p[i].name, shape,
           p[i].value->size1 * p[i].value->size2,
           !p[i].grad ? "state"
           : (p[i].flags & NN_PARAM_WEIGHT) ? "weight (L2 applies)"
                                            : "bias");
  }
}

int cli_describe(const cli_options *opt) {
  nn_error err = {0};
  cli_run run = {0};
  int status = cli_run_setup(&run, opt, SETUP_CONFIG | SETUP_PLUGINS, &err);
  if (!status) {
    /* No data is read: the shape is MNIST's. */
    run.test.dim = DESCRIBE_IMAGE_SIDE * DESCRIBE_IMAGE_SIDE;
    status = cli_run_setup(&run, opt, SETUP_TRAINER, &err);
  }
  if (status) {
    fprintf(stderr, "nnrun: %s\n", err.msg);
    cli_run_free(&run);
    return status;
  }
  size_t n_params, n_weights;
  nn_param *params = nn_trainer_params(run.trainer, &n_params);
  nn_param *weights = nn_trainer_weights(run.trainer, &n_weights);
  char in[48];
  shape_text(nn_dataset_shape(&run.test), in, sizeof in);
  printf("%s: model %s (%s), input %s, 10 classes, batches of %zu\n",
         nn_config_path(run.cfg), cli_model_name(&run), cli_model_file(&run),
         in, run.topts.batch_size);
  if (run.n_layers)
    describe_network(&run, nn_trainer_model(run.trainer, NULL));
  describe_params(weights, n_weights);
  printf("trainable parameters: %zu\n", count_values(params, n_params));
  printf("optimizer: %s (%s)\n", nn_loaded_desc(run.optim.loaded)->name,
         nn_loaded_path(run.optim.loaded));
  if (run.schedule.loaded)
    printf("schedule: %s (%s)\n", nn_loaded_desc(run.schedule.loaded)->name,
           nn_loaded_path(run.schedule.loaded));
  cli_run_free(&run);
  return EXIT_OK;
}
