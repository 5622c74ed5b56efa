/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Private to the nnrun CLI: the commands main() dispatches to.  Only the CLI
 * prints and chooses exit codes; the library returns errors. */
#ifndef NN_CLI_H
#define NN_CLI_H

#include <stddef.h>

/* Exit statuses, documented in --help. */
enum {
  EXIT_OK = 0,
  EXIT_RUNTIME = 1, /* training, data or I/O failure */
  EXIT_USAGE = 2,   /* bad command line or configuration */
  EXIT_PLUGIN = 3   /* a plugin could not be loaded or is incompatible */
};
/* A run or sweep stopped by SIGINT or SIGTERM (run_signals.h) exits with
 * 128 + the signal, as the shell reports a process the signal ended:
 * 130 or 143. */

typedef struct cli_options {
  const char *config;     /* -c FILE */
  const char **sets;      /* --set SECTION.KEY=VALUE, in order (borrowed) */
  size_t n_sets;
  const char **sweeps;    /* --sweep SECTION.KEY=V1,V2,... (borrowed) */
  size_t n_sweeps;
  size_t jobs;            /* -j N: sweep runs at a time */
  const char *output_dir; /* -o DIR, or NULL for runs/<name>-<N> */
  const char *resume_dir; /* --resume DIR */
  int force;              /* --force: start the run in -o DIR over */
  const char *weights;    /* eval --weights FILE */
  int verbosity;          /* 0 quiet, 1 normal, 2 verbose */
  int single_run;         /* ignore [sweep]: one run of a sweep */
  size_t sweep_run;       /* --sweep-run I: run I (from 1) alone; 0: none */
} cli_options;

/* nnrun -c FILE: train, validate, test (or a sweep of such runs).  Returns
 * an exit status. */
int cli_train(const cli_options *opt);
/* nnrun eval -c FILE --weights W: test-set loss and accuracy of W. */
int cli_eval(const cli_options *opt);
/* Runs of a sweep ([sweep] section or --sweep); called by cli_train. */
int cli_sweep(const cli_options *opt);
/* nnrun -c FILE --sweep-run I -o DIR: run I of the sweep (from 1) in its
 * directory inside DIR, for a batch scheduler's job array; done already:
 * nothing; interrupted: resumed.  nnrun collect DIR: the sweep's report
 * from the runs finished there (cli_sweep.c). */
int cli_sweep_run(const cli_options *opt);
int cli_sweep_collect(const char *dir, int verbosity);
/* nnrun --describe -c FILE: the model the config builds (layers, shapes,
 * parameter counts, plugin files). */
int cli_describe(const cli_options *opt);
/* nnrun check-plugin NAME|PATH: the contract checks (libnn's
 * nn_contract_check) on one plugin, one line per check; EXIT_PLUGIN when
 * one fails. */
int cli_check_plugin(const char *name, int verbosity);
/* nnrun --list-plugins: name, kind, version, file (and options with -v). */
int cli_list_plugins(int verbosity);
/* nnrun export-csv DIR: write MNIST's IDX files in DIR as the course's CSVs. */
int cli_export_csv(const char *dir, int verbosity);

#endif
