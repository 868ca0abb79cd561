#!/usr/bin/env bash
# The table of results/likelihood_cost.md: diffode likelihood on 256 draws of each mixture's
# p_{t_min} (data seed 0) under EDM, exact p_T. Prints one line per run: name, ll_error (mean
# |log p - exact| per dimension, nats), mean and max NFE per point.
#   experiments/likelihood_cost/run.sh build/experiments/diffode
set -euo pipefail
diffode=${1:-build/experiments/diffode}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() {  # name preset "likelihood keys"
  cat > "$work/$1.toml" <<EOT
[process]
name = "edm"
[model]
kind = "mixture"
preset = "$2"
[data]
source = "mixture"
points = 256
seed = 0
[likelihood]
$3
[output]
file = "$work/$1.h5"
EOT
  "$diffode" likelihood "$work/$1.toml" --threads 2 |
    sed -E "s/.*error ([0-9.e+-]+) nats\/dim mean.*NFE per point mean ([0-9.]+), max ([0-9]+).*/$1 \1 \2 \3/"
}
for preset in iso16 diag64; do
  for tol in 1e-3 2e-3 3e-3 5e-3; do run "$preset dopri5 $tol" $preset "solver = \"dopri5\"
rtol = $tol
atol = $tol"; done
  for tol in 1e-3 1e-2 3e-2; do run "$preset verner65 $tol" $preset "solver = \"verner65\"
rtol = $tol
atol = $tol"; done
  run "$preset dopri5 1e-2" $preset "rtol = 1e-2
atol = 1e-2"
  # Dopri5 in EDM's warped noise level u = sigma~^(1/rho) (time = "sigma_rho").
  for rho in 7 3; do
    for tol in 3e-4 1e-3 5e-3; do run "$preset dopri5 sigma_rho$rho $tol" $preset "time = \"sigma_rho\"
rho = $rho
rtol = $tol
atol = $tol"; done
  done
done
# Trace estimators at 8 JVPs per point per evaluation, Dopri5 at 1e-6 (solver error ~1e-5 nats).
for seed in 0 1; do
  for law in rademacher gaussian orthogonal; do run "iso16 $law seed $seed" iso16 "rtol = 1e-6
atol = 1e-6
divergence = \"hutchinson\"
probes = 8
probe = \"$law\"
probe_seed = $seed"; done
  run "iso16 hutchpp seed $seed" iso16 "rtol = 1e-6
atol = 1e-6
divergence = \"hutchpp\"
probes = 8
probe_seed = $seed"
done
