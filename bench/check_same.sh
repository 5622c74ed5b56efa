#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# Compare two nnrun metrics.csv files: the same epochs, the same hit counts
# (accuracy = hits / samples, so equal hits give the identical printed
# double), and losses equal to a relative tolerance (default 1e-9).
# Timing columns are ignored.  Exit 0 when they match, 1 otherwise.
#
#   bench/check_same.sh bench/reference/mlp.csv runs/mlp-3/metrics.csv [TOL]
#
# bench/reference/*.csv are float64 results of configs/mlp.ini and
# configs/softmax.ini (seed 1024, 10 epochs) from the dgemm-based code
# before the performance work: every later version must match them.
set -eu
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 REFERENCE.csv CANDIDATE.csv [REL_TOL]" >&2
  exit 2
fi
ref=$1 new=$2 tol=${3:-1e-9}
for f in "$ref" "$new"; do
  [ -r "$f" ] || { echo "$0: cannot read $f" >&2; exit 2; }
done
# Columns: epoch,train_loss,train_accuracy,val_loss,val_accuracy,... ;
# the first line is the header.
awk -F, -v tol="$tol" -v refname="$ref" -v newname="$new" '
  function rel(a, b,   d) { d = a - b; if (d < 0) d = -d;
                            return a == 0 ? d : d / (a < 0 ? -a : a) }
  NR == FNR { if (FNR > 1) { n_ref++; e[FNR] = $1; tl[FNR] = $2; ta[FNR] = $3;
                             vl[FNR] = $4; va[FNR] = $5 }
              next }
  FNR > 1 {
    n_new++
    if (!(FNR in e)) { printf "extra epoch %s in %s\n", $1, newname; bad = 1; next }
    if ($1 != e[FNR]) { printf "line %d: epoch %s vs %s\n", FNR, e[FNR], $1; bad = 1 }
    if ($3 != ta[FNR]) { printf "epoch %s: train accuracy %s vs %s\n", $1, ta[FNR], $3; bad = 1 }
    if ($5 != va[FNR]) { printf "epoch %s: val accuracy %s vs %s\n", $1, va[FNR], $5; bad = 1 }
    r = rel(tl[FNR], $2); if (r > worst) worst = r
    if (r > tol) { printf "epoch %s: train loss %s vs %s (rel %.3g)\n", $1, tl[FNR], $2, r; bad = 1 }
    r = rel(vl[FNR], $4); if (r > worst) worst = r
    if (r > tol) { printf "epoch %s: val loss %s vs %s (rel %.3g)\n", $1, vl[FNR], $4, r; bad = 1 }
  }
  END {
    if (n_new != n_ref) { printf "%d epochs in %s, %d in %s\n", n_ref, refname, n_new, newname; bad = 1 }
    printf "%s: %d epochs, hit counts %s, largest relative loss difference %.3g (tolerance %s)\n",
           bad ? "DIFFERENT" : "same", n_new, bad ? "checked" : "identical", worst, tol
    exit bad
  }' "$ref" "$new"
