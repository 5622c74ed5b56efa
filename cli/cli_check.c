/* SPDX-License-Identifier: GPL-3.0-or-later */
/* nnrun check-plugin NAME|PATH: libnn's contract checks on one plugin, one
 * line per check, plus the one check only a program can make: "silent",
 * that the plugin wrote nothing to stdout or stderr.  For that, fds 1 and
 * 2 go to a temporary file while the checks run (so report lines are kept
 * in memory and printed afterwards); the library itself never prints. */
#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nn/contract.h>
#include <nn/nn.h>

#include "cli.h"

/* The checks' verdicts, in order, owned here. */
typedef struct check_line {
  char *check;
  char *detail;
  int passed;
} check_line;

typedef struct check_lines {
  check_line *v;
  size_t n, cap;
  int oom;
} check_lines;

/* The report callback: collects only (fd 1 may be the capture file). */
static void collect(void *user, const char *check, int passed,
                    const char *detail) {
  check_lines *l = user;
  if (l->n == l->cap) {
    const size_t cap = l->cap ? 2 * l->cap : 16;
    check_line *v = realloc(l->v, cap * sizeof *v);
    if (!v) {
      l->oom = 1;
      return;
    }
    l->v = v;
    l->cap = cap;
  }
  check_line *c = &l->v[l->n];
  c->check = strdup(check ? check : "?");
  c->detail = strdup(detail ? detail : "");
  c->passed = passed;
  if (!c->check || !c->detail) {
    free(c->check);
    free(c->detail);
    l->oom = 1;
    return;
  }
  l->n++;
}

static void lines_free(check_lines *l) {
  for (size_t i = 0; i < l->n; i++) {
    free(l->v[i].check);
    free(l->v[i].detail);
  }
  free(l->v);
}

/* fds 1 and 2 sent to an unlinked temporary file, and back. */
typedef struct capture {
  FILE *file;
  int saved_out, saved_err;
} capture;

static int capture_start(capture *c) {
  *c = (capture){NULL, -1, -1};
  fflush(NULL); /* what we printed so far goes where it was meant to */
  c->file = tmpfile();
  if (!c->file)
    return -1;
  const int fd = fileno(c->file);
  c->saved_out = dup(STDOUT_FILENO);
  c->saved_err = dup(STDERR_FILENO);
  if (c->saved_out < 0 || c->saved_err < 0 || dup2(fd, STDOUT_FILENO) < 0 ||
      dup2(fd, STDERR_FILENO) < 0) {
    if (c->saved_out >= 0) {
      dup2(c->saved_out, STDOUT_FILENO);
      close(c->saved_out);
    }
    if (c->saved_err >= 0) {
      dup2(c->saved_err, STDERR_FILENO);
      close(c->saved_err);
    }
    fclose(c->file);
    return -1;
  }
  return 0;
}

/* Restores fds 1 and 2; *size receives what was written to them, and buf
 * its first bytes. */
static void capture_stop(capture *c, char *buf, size_t cap, size_t *size) {
  fflush(NULL); /* a plugin's buffered printf lands in the file too */
  dup2(c->saved_out, STDOUT_FILENO);
  dup2(c->saved_err, STDERR_FILENO);
  close(c->saved_out);
  close(c->saved_err);
  const int fd = fileno(c->file);
  struct stat st;
  *size = fstat(fd, &st) == 0 ? (size_t)st.st_size : 0;
  ssize_t got = *size ? pread(fd, buf, cap, 0) : 0;
  if (got < 0)
    got = 0;
  buf[got < (ssize_t)cap ? (size_t)got : cap - 1] = '\0';
  fclose(c->file);
}

/* The first bytes of the plugin's output, on one line. */
static void escape(const char *in, char *out, size_t size) {
  size_t o = 0;
  for (const unsigned char *p = (const unsigned char *)in; *p && o + 5 < size;
       p++) {
    if (*p == '\n')
      o += (size_t)snprintf(out + o, size - o, "\\n");
    else if (*p < 32 || *p == 127)
      o += (size_t)snprintf(out + o, size - o, "\\x%02x", *p);
    else
      out[o++] = (char)*p;
  }
  out[o] = '\0';
}

static void print_line(const char *check, int passed, const char *detail) {
  printf("%-6s%-13s%s\n", passed ? "ok" : "FAIL", check, detail);
}

int cli_check_plugin(const char *name, int verbosity) {
  char search[8192];
  nn_plugin_default_path(search, sizeof search);
  nn_loaded *lp = NULL;
  nn_error err = {0};
  int rc = nn_plugin_open(&lp, name, 0, search, &err);
  if (rc != NN_OK) {
    fprintf(stderr, "nnrun: %s\n", err.msg);
    return rc == NN_ENOTFOUND ? EXIT_USAGE : EXIT_PLUGIN;
  }
  const nn_plugin *p = nn_loaded_desc(lp);
  printf("check-plugin: %s (%s, %s)\n", p->name, nn_kind_name(p->kind),
         nn_loaded_path(lp));

  check_lines lines = {0};
  size_t n_failed = 0, out_size = 0;
  char out_head[64] = "";
  capture cap;
  if (capture_start(&cap) != 0) {
    fprintf(stderr, "nnrun: cannot redirect output to a temporary file\n");
    nn_plugin_close(lp);
    return EXIT_RUNTIME;
  }
  err = (nn_error){0};
  rc = nn_contract_check(p, collect, &lines, &n_failed, &err);
  capture_stop(&cap, out_head, sizeof out_head, &out_size);

  int status = EXIT_OK;
  if (rc != NN_OK || lines.oom) {
    fprintf(stderr, "nnrun: %s\n", rc != NN_OK ? err.msg : "out of memory");
    status = EXIT_RUNTIME;
  }
  for (size_t i = 0; i < lines.n; i++)
    if (verbosity > 0 || !lines.v[i].passed)
      print_line(lines.v[i].check, lines.v[i].passed, lines.v[i].detail);

  char detail[384];
  if (out_size == 0) {
    snprintf(detail, sizeof detail, "nothing written to stdout or stderr");
  } else {
    char shown[sizeof out_head * 4 + 1];
    escape(out_head, shown, sizeof shown);
    snprintf(detail, sizeof detail, "%zu bytes written to stdout/stderr: "
             "\"%s\"%s", out_size, shown,
             out_size >= sizeof out_head ? "..." : "");
    n_failed++;
  }
  if (verbosity > 0 || out_size)
    print_line("silent", out_size == 0, detail);
  printf("%zu checks, %zu failed\n", lines.n + 1, n_failed);

  lines_free(&lines);
  nn_plugin_close(lp);
  if (status == EXIT_OK && n_failed)
    status = EXIT_PLUGIN;
  return status;
}
