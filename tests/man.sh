#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# The manual pages render without a warning (man --warnings: groff's
# complaints about macros, escapes and line breaks) and each has the
# sections a reader looks for.
. "$(dirname "$0")/tap.sh"
for page in man/nnrun.1 man/nnrun.ini.5 man/nnrun-plugins.7; do
  if ! command -v man >/dev/null 2>&1; then
    ok "$page # SKIP man is not installed"
    ok "$page sections # SKIP man is not installed"
    continue
  fi
  warnings=$(MANWIDTH=80 LC_ALL=C.UTF-8 man --warnings -l "$page" 2>&1 >/dev/null)
  check "$page renders without warnings" test -z "$warnings"
  [ -z "$warnings" ] || printf '# %s\n' "$warnings"
  text=$(MANWIDTH=80 LC_ALL=C.UTF-8 man -l "$page" 2>/dev/null)
  check "$page has NAME, DESCRIPTION and SEE ALSO" sh -c '
    printf "%s\n" "$1" | grep -q "^NAME" &&
    printf "%s\n" "$1" | grep -q "^DESCRIPTION" &&
    printf "%s\n" "$1" | grep -q "^SEE ALSO"' sh "$text"
done
tap_end
