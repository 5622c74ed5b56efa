/* SPDX-License-Identifier: GPL-3.0-or-later */
/* nnrun: command-line entry point.  Parses arguments and dispatches; the
 * commands live in the other cli_*.c files.  It also installs the
 * fatal-signal handler that names a plugin that crashes. */
/* For sigaltstack, SA_ONSTACK and SA_RESETHAND, which are XSI. */
#define _XOPEN_SOURCE 700
#include <config.h>

#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gsl/gsl_errno.h>
#include <gsl/gsl_version.h>

#include <nn/nn.h>

#include "cli.h"
#include "cli_mpi.h"
#include "cli_paths.h"
#include "cli_setup.h"
#include "gsl_trap.h"

static void usage(FILE *out) {
  char fetch[1024];
  fprintf(out,
          "Usage: nnrun -c FILE [--set SECTION.KEY=VALUE]... [-o DIR [--force]] [-q|-v]\n"
          "       nnrun -c FILE --resume DIR\n"
          "       nnrun -c FILE --sweep SECTION.KEY=V1,V2,... [-j N] [-o DIR]\n"
          "       nnrun eval -c FILE --weights FILE.safetensors\n"
          "       nnrun -c FILE --sweep-run I -o SWEEP_DIR\n"
          "       nnrun collect SWEEP_DIR\n"
          "       mpirun -np N nnrun -c FILE ...\n"
          "       nnrun --describe -c FILE\n"
          "       nnrun check-plugin NAME|PATH.so\n"
          "       nnrun --list-plugins [-v]\n"
          "       nnrun export-csv DATA_DIR\n"
          "\n"
          "Train a model (a model plugin, or layer plugins stacked by\n"
          "[model] type = sequential) with an optimizer plugin on MNIST as an INI file\n"
          "describes, keep the epoch with the best validation accuracy and\n"
          "evaluate it on the test set.\n"
          "\n"
          "  -c, --config FILE        configuration; a bare NAME or NAME.ini not\n"
          "                           in the current directory is one of the\n"
          "                           shipped configs (below)\n"
          "  -s, --set SEC.KEY=VALUE  override a config key (repeatable), checked\n"
          "                           like the file, e.g. --set optimizer.reg=0.01\n"
          "  -o, --output DIR         output directory (default: a new\n"
          "                           runs/<config name>-<N> per run); one that\n"
          "                           holds a run is refused without --resume\n"
          "                           or --force\n"
          "      --force              start over in -o DIR: remove the files of\n"
          "                           the run there, then train\n"
          "      --resume DIR         continue the interrupted run (or sweep) in\n"
          "                           DIR from its last checkpoint, with the\n"
          "                           configuration it recorded (bit-identical\n"
          "                           results)\n"
          "      --sweep SEC.KEY=V1,V2,...  train once per value (repeatable: the\n"
          "                           Cartesian product); adds to [sweep]\n"
          "  -j, --jobs N             sweep runs at a time (default 1; under\n"
          "                           mpirun: per rank)\n"
          "      --sweep-run I        run I (1, 2, ...) of the sweep alone, in\n"
          "                           SWEEP_DIR/<its name> (-o SWEEP_DIR): for a\n"
          "                           job array; a finished run is not run again,\n"
          "                           an interrupted one resumes\n"
          "      --weights FILE       eval: the safetensors weights to test\n"
          "  -q, --quiet              no progress lines on stderr\n"
          "  -v, --verbose            more detail (plugin files, CBLAS, options)\n"
          "      --list-plugins       list plugins: name, kind, version, file;\n"
          "                           this loads every plugin on the path (their\n"
          "                           code runs): otherwise only the plugins a\n"
          "                           config names are loaded\n"
          "      --describe           print the model -c FILE builds: layers,\n"
          "                           shapes, parameters, plugin files\n"
          "  -h, --help               this help\n"
          "  -V, --version            version, plugin ABI, GSL and CBLAS in use\n"
          "\n"
          "Subcommands:\n"
          "  eval                     test-set loss and accuracy of --weights\n"
          "  collect SWEEP_DIR        sweep.csv, charts and report.md of the\n"
          "                           finished --sweep-run runs in SWEEP_DIR\n"
          "  check-plugin NAME|PATH   run the checks every plugin must pass\n"
          "                           (gradients, shapes, determinism, state,\n"
          "                           errors) and print one line per check\n"
          "  export-csv DATA_DIR      write DATA_DIR/mnist_train.csv and\n"
          "                           mnist_test.csv from the IDX files there\n"
          "\n"
          "Config sections: [data] dir, format; [train] epochs, batch_size, seed,\n"
          "shuffle, threads, patience; [model] type (a model plugin, or\n"
          "sequential) and its plugin's keys; [layer NAME] type and its keys,\n"
          "one per layer of a sequential model; [optimizer] type and its keys;\n"
          "[sweep] SECTION.KEY = V1, V2, ...  `nnrun --list-plugins -v` lists\n"
          "each plugin's keys.\n"
          "\n"
          "Shipped configs: %s\n"
          "Plugins:         %s\n"
          "MNIST: [data] dir is relative to the current directory (default\n"
          "data); `%s DIR` fetches the files into DIR.\n"
          "\n"
          "Outputs: one line per epoch on stderr (a live progress bar on a\n"
          "terminal); in DIR: metrics.csv (epoch,train_loss,train_accuracy,\n"
          "val_loss,val_accuracy,train_seconds), best.safetensors,\n"
          "last.safetensors, summary.json (with the run's status), curves.png,\n"
          "curves.svg, all rewritten after every epoch; a sweep adds sweep.csv,\n"
          "report.md and comparison charts.  Last line on stdout:\n"
          "test loss=<L> accuracy=<A> best_epoch=<E>.\n"
          "\n"
          "SIGINT and SIGTERM stop after the current batch with a checkpoint that\n"
          "--resume continues bit for bit; SIGHUP and SIGUSR1 write one and go on.\n"
          "\n"
          "Plugins are looked up as <dir>/<name>.so in $NN_PLUGIN_PATH\n"
          "(colon-separated), then in %s.  A plugin file that\n"
          "another user could replace (it, or a directory above it, is\n"
          "world-writable, or owned by someone other than you or root) is\n"
          "refused unless NN_PLUGIN_ALLOW_WRITABLE=1.  A plugin that crashes\n"
          "is named, with the operation it was in.\n"
          "\n"
          "Under mpirun (built with MPI) the ranks train one run data-parallel\n"
          "(batch_size stays the global batch), or share a sweep's runs; rank 0\n"
          "writes the files and prints.\n"
          "\n"
          "Exit status: 0 success, 1 runtime failure (data missing or wrong,\n"
          "training, I/O, a directory another nnrun holds), 2 usage or\n"
          "configuration error, 3 plugin error,\n"
          "130 / 143 stopped by SIGINT / SIGTERM (resumable).\n",
          cli_config_dir(), nn_plugin_dir(),
          cli_fetch_command(fetch, sizeof fetch), nn_plugin_dir());
}

/* ------------------------------------------------ naming a crashed plugin */

static const char *signal_name(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGABRT: return "SIGABRT";
  }
  return "a fatal signal";
}

/* s on stderr with write(2) alone: async-signal-safe. */
static void say(const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  while (n > 0) {
    const ssize_t w = write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

/* Runs on the crashing thread, maybe on a broken heap: async-signal-safe
 * calls only.  SA_RESETHAND has restored the default action, so raising
 * the signal again ends the process by it (with a core dump where
 * enabled): the shell and a parent still see the real cause. */
static void on_fatal_signal(int sig) {
  const char *op = cli_plugin_call.op, *plugin = cli_plugin_call.plugin;
  if (op && plugin) {
    say("nnrun: plugin '");
    say(plugin);
    say("' crashed in ");
    say(op);
    say(" (");
  } else {
    say("nnrun: crashed (");
  }
  say(signal_name(sig));
  say(")\n");
  raise(sig);
}

static void install_crash_handler(void) {
  /* A stack of its own, so that a plugin that overflowed the stack is
   * named too. */
  static char alt_stack[1 << 16];
  stack_t ss = {.ss_sp = alt_stack, .ss_size = sizeof alt_stack};
  const int on_alt = sigaltstack(&ss, NULL) == 0;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_fatal_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND | (on_alt ? SA_ONSTACK : 0);
  static const int fatal[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
  for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
    sigaction(fatal[i], &sa, NULL);
}

/* Release what main allocated for the options. */
static void free_options(cli_options *opt) {
  free(opt->sets);
  free(opt->sweeps);
  opt->sets = NULL;
  opt->sweeps = NULL;
}

int main(int argc, char **argv) {
  /* GSL's default handler aborts the process; nnrun's turns the error
   * into a failure of the plugin call it happened in (gsl_trap.h). */
  cli_gsl_trap_install();
  install_crash_handler();

  enum { OPT_LIST = 1000, OPT_RESUME, OPT_SWEEP, OPT_WEIGHTS, OPT_DESCRIBE,
         OPT_FORCE, OPT_SWEEP_RUN };
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},
      {"set", required_argument, NULL, 's'},
      {"output", required_argument, NULL, 'o'},
      {"quiet", no_argument, NULL, 'q'},
      {"verbose", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {"list-plugins", no_argument, NULL, OPT_LIST},
      {"describe", no_argument, NULL, OPT_DESCRIBE},
      {"resume", required_argument, NULL, OPT_RESUME},
      {"force", no_argument, NULL, OPT_FORCE},
      {"sweep", required_argument, NULL, OPT_SWEEP},
      {"jobs", required_argument, NULL, 'j'},
      {"weights", required_argument, NULL, OPT_WEIGHTS},
      {"sweep-run", required_argument, NULL, OPT_SWEEP_RUN},
      {NULL, 0, NULL, 0}};
  cli_options opt = {.verbosity = 1, .jobs = 1};
  int list = 0, describe = 0, c;
  char *end;
  /* argv outlives opt, so the override strings are borrowed from it. */
  opt.sets = calloc((size_t)argc, sizeof *opt.sets);
  opt.sweeps = calloc((size_t)argc, sizeof *opt.sweeps);
  if (!opt.sets || !opt.sweeps) {
    fprintf(stderr, "nnrun: out of memory\n");
    return EXIT_RUNTIME;
  }
  /* A leading "eval" selects the evaluation command; options follow. */
  int eval = argc > 1 && !strcmp(argv[1], "eval");
  if (eval) optind = 2;
  while ((c = getopt_long(argc, argv, "c:s:o:j:qvhV", longopts, NULL)) != -1) {
    switch (c) {
      case 'c': opt.config = optarg; break;
      case 's': opt.sets[opt.n_sets++] = optarg; break;
      case OPT_SWEEP: opt.sweeps[opt.n_sweeps++] = optarg; break;
      case OPT_RESUME: opt.resume_dir = optarg; break;
      case OPT_FORCE: opt.force = 1; break;
      case OPT_WEIGHTS: opt.weights = optarg; break;
      case 'j':
        opt.jobs = strtoul(optarg, &end, 10);
        if (*end || opt.jobs < 1 || opt.jobs > 64) {
          fprintf(stderr, "nnrun: -j %s: expected a number of jobs, 1 to 64\n",
                  optarg);
          free_options(&opt);
          return EXIT_USAGE;
        }
        break;
      case OPT_SWEEP_RUN:
        opt.sweep_run = strtoul(optarg, &end, 10);
        if (*end || opt.sweep_run < 1 || *optarg == '-') {
          fprintf(stderr, "nnrun: --sweep-run %s: expected a run number "
                          "(1 for the sweep's first run)\n", optarg);
          free_options(&opt);
          return EXIT_USAGE;
        }
        break;
      case 'o': opt.output_dir = optarg; break;
      case 'q': opt.verbosity = 0; break;
      case 'v': opt.verbosity = 2; break;
      case OPT_LIST: list = 1; break;
      case OPT_DESCRIBE: describe = 1; break;
      case 'h':
        usage(stdout);
        free_options(&opt);
        return EXIT_OK;
      case 'V':
        printf("nnrun %s (plugin ABI %u.%u, GSL %s, CBLAS %s)\n",
               nn_version_string(), NN_ABI_MAJOR, NN_ABI_MINOR, GSL_VERSION,
               nn_cblas_name());
        free_options(&opt);
        return EXIT_OK;
      default:
        fprintf(stderr, "Try 'nnrun --help'.\n");
        free_options(&opt);
        return EXIT_USAGE;
    }
  }
  /* -c NAME: the file, or else the shipped config of that name. */
  char config_path[PATH_MAX];
  if (opt.config) {
    nn_error err;
    if (cli_config_find(opt.config, config_path, sizeof config_path, &err)) {
      fprintf(stderr, "nnrun: %s\n", err.msg);
      free_options(&opt);
      return EXIT_USAGE;
    }
    opt.config = config_path;
  }
  /* One rank of an MPI job, when mpirun started this process as one: rank 0
   * alone talks. */
  nn_error mpi_err = {0};
  int status = cli_mpi_start(&argc, &argv, &mpi_err);
  if (status) {
    fprintf(stderr, "nnrun: %s\n", mpi_err.msg);
    free_options(&opt);
    return status;
  }
  if (!cli_mpi_lead()) opt.verbosity = 0;
  if (eval) {
    if (optind < argc) {
      fprintf(stderr, "nnrun: unexpected argument '%s'\n", argv[optind]);
      status = EXIT_USAGE;
    } else if (!opt.config || !opt.weights) {
      fprintf(stderr, "nnrun: usage: nnrun eval -c FILE --weights FILE.safetensors\n");
      status = EXIT_USAGE;
    } else {
      status = cli_eval(&opt);
    }
  } else if (list) {
    status = cli_list_plugins(opt.verbosity);
  } else if (describe) {
    if (!opt.config) {
      fprintf(stderr, "nnrun: usage: nnrun --describe -c FILE\n");
      status = EXIT_USAGE;
    } else {
      status = cli_describe(&opt);
    }
  } else if (optind < argc && !strcmp(argv[optind], "check-plugin")) {
    if (argc - optind != 2) {
      fprintf(stderr, "nnrun: usage: nnrun check-plugin NAME|PATH.so\n");
      status = EXIT_USAGE;
    } else {
      status = cli_check_plugin(argv[optind + 1], opt.verbosity);
    }
  } else if (optind < argc && !strcmp(argv[optind], "export-csv")) {
    if (argc - optind != 2) {
      fprintf(stderr, "nnrun: usage: nnrun export-csv DATA_DIR\n");
      status = EXIT_USAGE;
    } else {
      status = cli_export_csv(argv[optind + 1], opt.verbosity);
    }
  } else if (optind < argc && !strcmp(argv[optind], "collect")) {
    if (argc - optind != 2) {
      fprintf(stderr, "nnrun: usage: nnrun collect SWEEP_DIR\n");
      status = EXIT_USAGE;
    } else {
      status = cli_sweep_collect(argv[optind + 1], opt.verbosity);
    }
  } else if (optind < argc) {
    fprintf(stderr, "nnrun: unexpected argument '%s'\nTry 'nnrun --help'.\n",
            argv[optind]);
    status = EXIT_USAGE;
  } else if (!opt.config) {
    fprintf(stderr, "nnrun: no configuration given (-c FILE)\n"
                    "Try 'nnrun --help'.\n");
    status = EXIT_USAGE;
  } else if (opt.sweep_run) {
    status = cli_sweep_run(&opt);
  } else {
    status = cli_wants_sweep(&opt) ? cli_sweep(&opt) : cli_train(&opt);
  }
  cli_mpi_end();
  free_options(&opt);
  return status;
}
