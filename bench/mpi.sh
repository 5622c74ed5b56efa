#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# bench/mpi.sh: one MPI rank against two on this machine, side by side (a
# benchmark, not a test: it prints numbers and fails only when something
# cannot run).  Every run has one thread per rank ([train] threads = 1,
# OPENBLAS_NUM_THREADS=1), and the two settings take turns, round after
# round, so that a machine whose load drifts slows both alike.
#
# Sections (BENCH_ONLY, names separated by spaces or commas; default all):
#   epochs    median training seconds of epochs 1-2 (of 3; epoch 0 warms
#             up) for configs/mlp.ini (784-128-10, batch 64) and for hidden
#             1024 with batch 512, 1 rank and 2, BENCH_ROUNDS rounds
#             (default 3): each setting's median over its rounds, and the
#             median of the rounds' ratios 2 ranks / 1 rank;
#   accuracy  configs/mlp.ini's full 10 epochs on 1 rank and 2: test
#             accuracy, and how far the per-epoch training losses and hit
#             counts of the 2-rank run are from the 1-rank run's;
#   sweep     configs/exp_tune.ini (16 runs of 20 epochs) on 1 rank and on
#             2 (runs spread over the ranks): wall seconds, once each.
#
# Environment: NNRUN_BUILDDIR (default: the directory above this script),
# NNRUN_DATA (default: $NNRUN_BUILDDIR/data), MPIRUN (default mpirun),
# MPIRUN_ARGS (default --bind-to none: on a machine other work shares, a
# rank pinned to a busy core waits there while another core is free),
# BENCH_ROUNDS, BENCH_ONLY.  As root, Open MPI needs
# OMPI_ALLOW_RUN_AS_ROOT=1 and OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
build=${NNRUN_BUILDDIR:-$(cd "$here/.." && pwd)}
src=$(cd "$here/.." && pwd)
data=${NNRUN_DATA:-$build/data}
[ -r "$data/train-images-idx3-ubyte" ] || data=$src/data
nnrun=$build/nnrun
mpirun=${MPIRUN:-mpirun}
mpirun_args=${MPIRUN_ARGS:---bind-to none}
rounds=${BENCH_ROUNDS:-3}
sections="epochs accuracy sweep"
only=$(printf '%s\n' "${BENCH_ONLY:-$sections}" | tr ',\t\n' '   ')
case $only in *[!\ ]*) ;; *) only=$sections ;; esac

die() { echo "bench/mpi.sh: $*" >&2; exit 1; }
[ -x "$nnrun" ] || die "no $nnrun: build first (make)"
command -v "$mpirun" >/dev/null 2>&1 || die "no $mpirun: install openmpi-bin"
"$mpirun" -np 1 "$build/cli/nnrun" --version >/dev/null 2>&1 ||
  die "$mpirun cannot start nnrun (as root: OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)"
for sec in $only; do
  case " $sections " in *" $sec "*) ;; *) die "BENCH_ONLY: no section '$sec' (sections: $sections)" ;; esac
done
want() { case " $only " in *" $1 "*) return 0 ;; esac; return 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/nnmpi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
NN_PLUGIN_PATH="$build/plugins/.libs${NN_PLUGIN_PATH:+:$NN_PLUGIN_PATH}"
OPENBLAS_NUM_THREADS=1
export NN_PLUGIN_PATH OPENBLAS_NUM_THREADS

median() { sort -g | awk '{v[NR] = $1} END {
  if (NR == 0) { print "nan"; exit }
  print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
fmt() { awk -v x="$1" -v d="${2:-3}" 'BEGIN { printf "%.*f", d, x }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
now() { date +%s.%N; }

# run RANKS OUT ARGS...: nnrun -q on RANKS ranks (1: no mpirun), output
# directory OUT, from the source tree (configs/ paths).
run() {
  np=$1 out=$2
  shift 2
  if [ "$np" = 1 ]; then
    (cd "$src" && "$nnrun" -q --set data.dir="$data" --set train.threads=1 \
       -o "$out" "$@") >"$out.out" 2>"$out.err"
  else
    # shellcheck disable=SC2086 # MPIRUN_ARGS: words
    (cd "$src" && "$mpirun" -np "$np" $mpirun_args "$build/cli/nnrun" -q \
       --set data.dir="$data" --set train.threads=1 -o "$out" "$@") \
      >"$out.out" 2>"$out.err"
  fi || die "nnrun on $np rank(s) failed: $(tail -n 3 "$out.err")"
}

echo "mpirun -np 2 $mpirun_args; [train] threads = 1, OPENBLAS_NUM_THREADS=1"
echo "nnrun on MPI: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //'); $("$mpirun" --version 2>&1 | head -n 1); load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo

if want epochs; then
  echo "Epoch time, 1 rank against 2 ($rounds rounds taken in turn; median training seconds of epochs 1-2 of 3)"
  echo
  echo "| model | batch | parameters | bytes reduced per step | 1 rank | 2 ranks | 2 ranks / 1 rank (median of rounds) | range |"
  echo "|---|---|---|---|---|---|---|---|"
  for case in "128 64 101770" "1024 512 814090"; do
    set -- $case
    h=$1 b=$2 p=$3
    for r in $(seq "$rounds"); do
      for np in 1 2; do
        out=$tmp/ep-$h-$np-$r
        run "$np" "$out" -c configs/mlp.ini --set train.epochs=3 \
          --set model.hidden_size="$h" --set train.batch_size="$b"
        tail -n +3 "$out/metrics.csv" | cut -d, -f6 | median >"$out.med"
      done
      div "$(cat "$tmp/ep-$h-2-$r.med")" "$(cat "$tmp/ep-$h-1-$r.med")" >>"$tmp/ratio-$h"
      echo >>"$tmp/ratio-$h"
    done
    one=$(cat "$tmp"/ep-"$h"-1-*.med | median)
    two=$(cat "$tmp"/ep-"$h"-2-*.med | median)
    echo "| 784-$h-10 | $b | $p | $(awk -v p="$p" 'BEGIN { printf "%.1f MB", p * 8 / 1e6 }') | $(fmt "$one") s | $(fmt "$two") s | $(grep . "$tmp/ratio-$h" | median) | $(grep . "$tmp/ratio-$h" | sort -g | head -n 1)-$(grep . "$tmp/ratio-$h" | sort -g | tail -n 1) |"
  done
  echo
fi

if want accuracy; then
  echo "configs/mlp.ini, 10 epochs, 1 rank against 2: what the order of the additions changes"
  echo
  run 1 "$tmp/acc1" -c configs/mlp.ini
  run 2 "$tmp/acc2" -c configs/mlp.ini
  a1=$(sed -n 's/.*accuracy=\([0-9.]*\).*/\1/p' "$tmp/acc1.out")
  a2=$(sed -n 's/.*accuracy=\([0-9.]*\).*/\1/p' "$tmp/acc2.out")
  echo "test accuracy: 1 rank $a1, 2 ranks $a2 (difference $(awk -v a="$a1" -v b="$a2" 'BEGIN { printf "%.4f", b - a }'))"
  echo
  echo "| epoch | train loss, 1 rank | 2 ranks - 1 rank | relative | training hits, 2 ranks - 1 rank | validation hits, 2 ranks - 1 rank |"
  echo "|---|---|---|---|---|---|"
  # hits from the accuracies: 48,000 training and 12,000 validation
  # examples; the two files' columns side by side (NF / 2 each)
  paste -d, "$tmp/acc1/metrics.csv" "$tmp/acc2/metrics.csv" | tail -n +2 |
    awk -F, '{ n = NF / 2; d = $(n + 2) - $2
               printf "| %d | %.15f | %.3g | %.3g | %d | %d |\n", $1, $2, d,
                 d / $2, ($(n + 3) - $3) * 48000 + ($(n + 3) > $3 ? 0.5 : -0.5),
                 ($(n + 5) - $5) * 12000 + ($(n + 5) > $5 ? 0.5 : -0.5) }'
  echo
fi

if want sweep; then
  echo "configs/exp_tune.ini (16 runs x 20 epochs), wall seconds of the whole sweep"
  echo
  t0=$(now)
  run 1 "$tmp/sw1" -c configs/exp_tune.ini
  t1=$(now)
  run 2 "$tmp/sw2" -c configs/exp_tune.ini
  t2=$(now)
  w1=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  w2=$(awk -v a="$t1" -v b="$t2" 'BEGIN { print b - a }')
  same=no
  cut -d, -f1-8,10- "$tmp/sw1/sweep.csv" >"$tmp/sw1.csv"
  cut -d, -f1-8,10- "$tmp/sw2/sweep.csv" >"$tmp/sw2.csv"
  cmp -s "$tmp/sw1.csv" "$tmp/sw2.csv" && same=yes
  echo "| ranks | wall | ratio to 1 rank | same sweep.csv (but seconds) |"
  echo "|---|---|---|---|"
  echo "| 1 | $(fmt "$w1" 1) s | 1 | |"
  echo "| 2 | $(fmt "$w2" 1) s | $(div "$w2" "$w1") | $same |"
  echo
fi
