# SPDX-License-Identifier: GPL-3.0-or-later
# shellcheck shell=sh
# Shared by the shell tests that edit checkpoints (sourced after tap.sh,
# whose $tmp they use): reading and rewriting the JSON header of a
# safetensors file.
# header_len FILE: the length of a safetensors file's JSON header (the
# first eight bytes, little-endian).
header_len() {
  od -An -tu1 -N8 "$1" | awk '{ n = 0; for (i = NF; i >= 1; i--) n = n * 256 + $i; print n }'
}
# header FILE: that header, its padding stripped (writers pad it to a
# multiple of 8 bytes, and so does rewrite_header).
header() { dd if="$1" bs=8 skip=1 count="$(($(header_len "$1") / 8))" 2>/dev/null | sed 's/ *$//'; }
# get_meta FILE KEY: a metadata value.
get_meta() { header "$1" | sed -n "s/.*\"$2\":\"\([^\"]*\)\".*/\1/p"; }
# rewrite_header FILE SED_SCRIPT: edit the header with sed; its length
# follows, and the tensors' offsets count from the data section, so they
# stay.
rewrite_header() {
  old_len=$(header_len "$1")
  header "$1" | sed "$2" >"$tmp/hdr"
  len=$(wc -c <"$tmp/hdr")
  while [ $((len % 8)) -ne 0 ]; do printf ' ' >>"$tmp/hdr"; len=$((len + 1)); done
  # shellcheck disable=SC2059 # the format is the length's eight octal escapes
  printf "$(awk -v n="$len" 'BEGIN { for (i = 0; i < 8; i++) { printf "\\%03o", n % 256; n = int(n / 256) } }')" >"$tmp/new"
  cat "$tmp/hdr" >>"$tmp/new"
  tail -c +$((9 + old_len)) "$1" >>"$tmp/new"
  mv "$tmp/new" "$1"
}
# set_meta FILE KEY VALUE: rewrite a metadata value.
set_meta() { rewrite_header "$1" "s/\"$2\":\"[^\"]*\"/\"$2\":\"$3\"/"; }
