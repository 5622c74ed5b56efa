/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Strict UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF),
 * shared inside libnn (not installed): jansson refuses invalid strings only
 * with a NULL that looks like out-of-memory, and cairo by erroring the
 * whole drawing context, so both are checked here first. */
#ifndef NN_UTF8_H
#define NN_UTF8_H

#include <stddef.h>

/* Length of the valid UTF-8 sequence at s, or 0 (a NUL ends any sequence
 * early, so no byte past it is read). */
static inline size_t nn__utf8_len(const unsigned char *s) {
  const unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t n;
  unsigned lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c == 0xe0) lo = 0xa0; /* overlong */
    if (c == 0xed) hi = 0x9f; /* surrogates */
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c == 0xf0) lo = 0x90; /* overlong */
    if (c == 0xf4) hi = 0x8f; /* past U+10FFFF */
  } else
    return 0;
  if (s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < n; i++)
    if (s[i] < 0x80 || s[i] > 0xbf) return 0;
  return n;
}

/* 1 if the NUL-terminated s is valid UTF-8. */
static inline int nn__utf8_valid(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  for (size_t n; *p; p += n)
    if (!(n = nn__utf8_len(p))) return 0;
  return 1;
}

#endif /* NN_UTF8_H */
