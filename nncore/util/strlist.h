/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Small string-list helpers shared inside libnn (not installed). */
#ifndef NN_STRLIST_H
#define NN_STRLIST_H

#include <stdio.h>
#include <string.h>

/* 1 if s equals one of the entries of the NULL-terminated list (NULL: none). */
static inline int nn__in_list(const char *s, const char *const *list) {
  for (; list && *list; list++)
    if (!strcmp(s, *list)) return 1;
  return 0;
}

/* Append pre + item + post to the "a, b, c" list in buf (", " between
 * items), cut short at size; for the "accepted: ..." parts of messages. */
static inline void nn__list_add(char *buf, size_t size, const char *pre,
                                const char *item, const char *post) {
  const size_t len = strlen(buf);
  if (len + 1 < size)
    snprintf(buf + len, size - len, "%s%s%s%s", len ? ", " : "", pre, item,
             post);
}

#endif /* NN_STRLIST_H */
