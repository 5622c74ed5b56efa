/* SPDX-License-Identifier: GPL-3.0-or-later */
/* The option values the contract checks make every instance with: the
 * plugin's defaults, and a stand-in for each required option (one
 * without a default), so that any loadable plugin can be checked.  The
 * values used are shown in the create check's detail. */
#include <config.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <nn/config.h>

#include "plugin/contract_internal.h"

/* A stand-in for a required option, as text: int 4, real the middle of
 * its bounds (else 0.5), each moved into the bounds; bool false. */
static void stand_in(const nn_option *o, char *buf, size_t size) {
  const int lo = (o->bounds & NN_OPT_HAS_MIN) != 0;
  const int hi = (o->bounds & NN_OPT_HAS_MAX) != 0;
  const int lo_x = (o->bounds & NN_OPT_MIN_EXCLUSIVE) != 0;
  const int hi_x = (o->bounds & NN_OPT_MAX_EXCLUSIVE) != 0;
  if (o->type == NN_OPT_INT) {
    double v = 4.0;
    if (lo) {
      const double m = lo_x ? floor(o->min) + 1.0 : ceil(o->min);
      if (v < m)
        v = m;
    }
    if (hi) {
      const double m = hi_x ? ceil(o->max) - 1.0 : floor(o->max);
      if (v > m)
        v = m;
    }
    snprintf(buf, size, "%.0f", v);
  } else if (o->type == NN_OPT_REAL) {
    double v = 0.5;
    if (lo && hi)
      v = 0.5 * (o->min + o->max);
    else if (lo && (v < o->min || (lo_x && v <= o->min)))
      v = o->min + 0.5;
    else if (hi && (v > o->max || (hi_x && v >= o->max)))
      v = o->max - 0.5;
    snprintf(buf, size, "%.17g", v);
  } else if (o->type == NN_OPT_BOOL) {
    snprintf(buf, size, "false");
  } else {
    buf[0] = '\0';
  }
}

int nn__cc_build_options(nn__cc_checker *c, char *d, size_t size) {
  const nn_option *t = c->p->options;
  const size_t n = nn_option_count(t);
  c->opts_text[0] = '\0';
  if (n == 0) {
    snprintf(c->opts_text, sizeof c->opts_text, "none");
    return 0;
  }
  c->opts = calloc(n, sizeof *c->opts);
  if (!c->opts) {
    nn__cc_oom_verdict(c, d, size);
    return -1;
  }
  for (size_t k = 0; k < n; k++) {
    char text[64];
    const char *src = t[k].def;
    if (!src) {
      stand_in(&t[k], text, sizeof text);
      src = text;
    }
    nn__cc_append(c->opts_text, sizeof c->opts_text, "%s%s=%s%s",
                  k ? ", " : "", t[k].key, src,
                  t[k].def ? "" : " (required: stand-in)");
    if (t[k].type == NN_OPT_STRING && !*src) {
      c->opts[k].s = ""; /* nn_option_parse refuses an empty string */
      continue;
    }
    /* (Only a string's value points into its text, and a string's
     * stand-in is "", handled above: nothing points into `text`.) */
    nn_error e;
    nn__cc_err_clear(&e);
    if (nn_option_parse(&t[k], src, &c->opts[k], &e) != NN_OK) {
      nn__cc_verdict(d, size, 0, "option %s = '%s' is not usable: %s",
                     t[k].key, src, e.msg);
      return -1;
    }
  }
  return 0;
}
