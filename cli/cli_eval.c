/* nnrun eval -c FILE --weights W: the test-set loss and accuracy of saved
 * weights, computed exactly as at the end of training (same batches), so
 * the line agrees with the run that wrote them. */
#include <config.h>

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
    size_t n;
    nn_param *p = nn_trainer_weights(run.trainer, &n);
    status = checkpoint_status(checkpoint_load_weights(opt->weights, p, n, &err));
  }
  /* A run's best.safetensors must be the one its last.safetensors records. */
  if (!status)
    status = checkpoint_status(checkpoint_check_best(opt->weights, &err));
  double loss, acc;
  if (!status && nn_trainer_evaluate(run.trainer, &run.test, &loss, &acc, &err))
    status = EXIT_RUNTIME;
  if (status)
    fprintf(stderr, "nnrun: %s\n", err.msg);
  else
    printf("test loss=%.6f accuracy=%.4f\n", loss, acc);
  cli_run_free(&run);
  return status;
}
