/* SPDX-License-Identifier: GPL-3.0-or-later */
/* nnrun eval -c FILE --weights W: the test-set loss and accuracy of saved
 * weights, computed exactly as at the end of training (same batches), so
 * the line agrees with the run that wrote them. */
#include <config.h>

#include <math.h>
#include <stdio.h>

#include <nn/nn.h>

#include "checkpoint.h"
#include "cli.h"
#include "cli_setup.h"

int cli_eval(const cli_options *opt) {
  nn_error err = {0};
  cli_run run = {0};
  /* The training file is not needed: its examples are never read here. */
  int status = cli_run_setup(&run, opt, SETUP_ALL | SETUP_TEST_ONLY, &err);
  if (!status) {
    size_t n, row, col;
    double v;
    nn_param *p = nn_trainer_weights(run.trainer, &n);
    status = checkpoint_status(checkpoint_load_weights(opt->weights, p, n, &err));
    /* A loss and accuracy from such weights would be printed as if they
     * meant something. */
    size_t k = status ? n : nn_find_nonfinite(p, n, &row, &col, &v);
    if (k < n) {
      nn_error_set(&err, NN_ENUMERIC,
                   "%s: tensor %s holds %s at row %zu, column %zu: weights "
                   "that are not finite cannot be evaluated",
                   opt->weights, p[k].name, isnan(v) ? "NaN" : v > 0 ? "inf" : "-inf",
                   row, col);
      status = EXIT_RUNTIME;
    }
  }
  /* A run's best.safetensors must be the one its last.safetensors records. */
  if (!status)
    status = checkpoint_status(checkpoint_check_best(opt->weights, &err));
  double loss, acc;
  int rc;
  if (!status &&
      (rc = nn_trainer_evaluate(run.trainer, &run.test, &loss, &acc, &err)))
    status = rc == NN_EPLUGIN ? EXIT_PLUGIN : EXIT_RUNTIME;
  if (status)
    fprintf(stderr, "nnrun: %s\n", err.msg);
  else
    printf("test loss=%.6f accuracy=%.4f\n", loss, acc);
  cli_run_free(&run);
  return status;
}
