/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The contract checks every plugin must pass (`nnrun check-plugin`).
 *
 * nn_contract_check makes instances of a loaded plugin with its option
 * defaults, on small shapes (a layer's examples are 2 x 4 x 6 images, a
 * model's 6 values with 4 classes; batches of up to 5; a schedule gets
 * the base rate 0.1), and runs each check on them.  Each check is
 * reported once, by name, through the caller's callback:
 *   create       an instance can be made with the defaults (a required
 *                option without one gets a stand-in, named in the detail);
 *                when this fails nothing else runs
 *   names        parameter and state names are present and unique
 *   gradient     backward's gradients (every parameter's and, for a layer,
 *                the input's) match central differences of a fixed loss
 *   shapes       params() is stable; every batch size from 1 to max_batch
 *                runs forward and backward, writing every output and
 *                gradient and leaving the caller's matrices as they were;
 *                matrices that are views work
 *   determinism  the same input, weights seed and random stream give
 *                bit-identical outputs and gradients
 *   state        model/layer state: unique names, grad NULL; optimizer:
 *                a step after restoring the saved state and parameters
 *                repeats bit for bit (and a step in parts, when offered,
 *                gives the bits of step()); schedule: a fresh instance
 *                given the state of one that ran 12 epochs gives its
 *                rates from there on, bit for bit
 *   rates        (schedules) every rate asked for, 30 epochs of 3 batches
 *                with fixed metrics told after each, is >= 0 and finite,
 *                and the same when asked twice
 *   errors       bad input is refused with a code and a message
 * The library never prints: what to show, and whether the plugin printed
 * anything, is the caller's business (nnrun check-plugin adds "silent"). */
#ifndef NN_CONTRACT_H
#define NN_CONTRACT_H

#include <stddef.h>

#include <nn/plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Called once per check, in order: its name (above), whether it passed
 * and a one-line detail (the worst value, the failing call, the plugin's
 * message).  The strings are lent for the call. */
typedef void (*nn_contract_report)(void *user, const char *check, int passed,
                                   const char *detail);

/* Run the checks on plugin p (a validated descriptor: nn_loaded_desc).
 * *n_failed (may be NULL) receives the number of checks that failed.
 * Returns NN_OK when the checks ran, whatever their outcome; an error
 * (NN_EINVAL, NN_ENOMEM) only when the checker itself could not run.
 * Everything it makes is freed before it returns. */
int nn_contract_check(const nn_plugin *p, nn_contract_report report,
                      void *user, size_t *n_failed, nn_error *err);

#ifdef __cplusplus
}
#endif
#endif /* NN_CONTRACT_H */
