/* SPDX-License-Identifier: GPL-3.0-or-later */
/* GSL's error handler for nnrun: see gsl_trap.h. */
#include <config.h>

#include <stdio.h>

#include <gsl/gsl_errno.h>

#include "gsl_trap.h"

/* The first GSL error since the slot was last taken, on this thread: the
 * thread that called GSL is the one that must answer for it, and a sweep
 * or a helper thread must not see another thread's error.  Only the
 * first is kept: later ones are usually its consequences. */
typedef struct gsl_slot {
  int set;
  char msg[256];
} gsl_slot;

static _Thread_local gsl_slot slot;

static void on_gsl_error(const char *reason, const char *file, int line,
                         int gsl_errno) {
  if (slot.set) return;
  slot.set = 1;
  snprintf(slot.msg, sizeof slot.msg, "%s (%s, at %s:%d)",
           reason ? reason : "?", gsl_strerror(gsl_errno),
           file ? file : "?", line);
}

void cli_gsl_trap_install(void) { gsl_set_error_handler(on_gsl_error); }

int cli_gsl_trap_take(char *msg, size_t size) {
  if (!slot.set) return 0;
  slot.set = 0;
  if (size) snprintf(msg, size, "%s", slot.msg);
  return 1;
}
