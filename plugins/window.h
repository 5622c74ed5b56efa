/* SPDX-License-Identifier: GPL-3.0-or-later */
/* What the sliding-window layers (conv2d, maxpool2d) share: the geometry of
 * a square window moved over an image with a stride, on zero padding, and
 * the checks that refuse a geometry that does not fit the input.
 *
 * A geometry is refused, rather than rounded down as some frameworks do,
 * when the windows do not tile the padded input exactly: rounding down
 * silently ignores the last rows or columns of every image, which is
 * almost always a mistake in the config (a stride or padding off by one),
 * and the message says which sizes would tile it. */
#ifndef NN_PLUGINS_WINDOW_H
#define NN_PLUGINS_WINDOW_H

#include <stdint.h>
#include <stdio.h>

#include <nn/plugin.h>

/* Larger windows, strides or paddings than this are refused: they exceed
 * any image a 32-bit shape describes usefully and keep the products below
 * in range. */
#define WINDOW_MAX 4096

/* One layer's window: size k, stride s, padding p (zero rows and columns
 * on each side), and the output it gives on an input of h x w. */
typedef struct window_geom {
  uint32_t k, s, p;
  uint32_t h, w;   /* input height and width */
  uint32_t oh, ow; /* output height and width */
} window_geom;

/* The output length along one axis of length n, or 0 when the window
 * does not fit or does not tile it; *why says which (1: larger than the
 * padded input, 2: does not tile). */
static inline uint32_t window_out(uint32_t n, uint32_t k, uint32_t s,
                                  uint32_t p, int *why) {
  const uint64_t padded = (uint64_t)n + 2u * (uint64_t)p;
  *why = 0;
  if (k > padded) {
    *why = 1;
    return 0;
  }
  if ((padded - k) % s != 0) {
    *why = 2;
    return 0;
  }
  return (uint32_t)((padded - k) / s + 1);
}

/* Fill g for input shape `in` and window k, stride s, padding p (options
 * named size_key, "stride" and "padding" in messages; pad_key NULL: the
 * layer has no padding option).  Returns NN_OK, or NN_ECONFIG with a
 * message naming the option to change: the values come from the layer's
 * config section, so the run is refused as a configuration error. */
static inline int window_geom_make(const char *layer, const char *size_key,
                                   const char *pad_key, nn_shape in,
                                   int64_t k, int64_t s, int64_t p,
                                   window_geom *g, nn_error *err) {
  if (k < 1 || k > WINDOW_MAX)
    return nn_error_set(err, NN_ECONFIG, "%s: %s must be 1..%d, not %lld",
                        layer, size_key, WINDOW_MAX, (long long)k);
  if (s < 1 || s > WINDOW_MAX)
    return nn_error_set(err, NN_ECONFIG, "%s: stride must be 1..%d, not %lld",
                        layer, WINDOW_MAX, (long long)s);
  if (p < 0 || p > WINDOW_MAX || p >= k)
    return nn_error_set(err, NN_ECONFIG,
                        "%s: padding must be 0..%s - 1 (%lld), not %lld",
                        layer, size_key, (long long)k - 1, (long long)p);
  if (nn_shape_size(in) == 0)
    return nn_error_set(err, NN_EINVAL, "%s: empty input shape", layer);
  *g = (window_geom){(uint32_t)k, (uint32_t)s, (uint32_t)p, in.h, in.w, 0, 0};
  int why_h, why_w;
  g->oh = window_out(in.h, g->k, g->s, g->p, &why_h);
  g->ow = window_out(in.w, g->k, g->s, g->p, &why_w);
  const int why = why_h ? why_h : why_w;
  const uint32_t n = why_h ? in.h : in.w;
  const unsigned long long padded = (unsigned long long)n + 2ull * g->p;
  const char *axis = why_h ? "height" : "width";
  char pad_text[64] = "";
  if (pad_key && g->p)
    snprintf(pad_text, sizeof pad_text, ", %llu with %s = %u", padded,
             pad_key, g->p);
  if (why == 1)
    return nn_error_set(err, NN_ECONFIG,
                        "%s: %s = %u is larger than the input's %s (%u%s)",
                        layer, size_key, g->k, axis, n, pad_text);
  if (why == 2)
    return nn_error_set(err, NN_ECONFIG,
                        "%s: %s = %u and stride = %u do not tile the input's "
                        "%s (%u%s): the %s%s minus %s must be a multiple of "
                        "stride",
                        layer, size_key, g->k, g->s, axis, n, pad_text,
                        g->p ? "padded " : "", axis, size_key);
  return NN_OK;
}

#endif /* NN_PLUGINS_WINDOW_H */
