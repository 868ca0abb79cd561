#!/usr/bin/env bash
# The network rows of results/likelihood_cost.md: diffode likelihood of a network trained on the
# 2-D ring (experiments/train_ring2d.toml) beside the exact mixture's, on the same 512 exact draws of
# the ring's p_{t_min} under EDM (data seed 1, apart from training's draws), with Dopri5 at
# rtol = atol = 1e-5 and the Gaussian prior N(0, prior_std^2 I) for both. The network's divergence
# is by autograd: exact (D = 2 vector-Jacobian products per evaluation) or Hutchinson (one per
# probe). Prints diffode's summary line per run.
#   experiments/likelihood_network/run.sh build/experiments/diffode results/networks/ring2d_mlp.pt
set -euo pipefail
diffode=${1:-build/experiments/diffode}
network=${2:-results/networks/ring2d_mlp.pt}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() {  # name "model table" "likelihood keys"
  cat > "$work/$1.toml" <<EOT
[process]
name = "edm"
[model]
$2
[data]
source = "mixture"
points = 512
seed = 1
[likelihood]
rtol = 1e-5
atol = 1e-5
prior = "gaussian"
$3
[output]
file = "$work/$1.h5"
EOT
  echo "== $1"
  "$diffode" likelihood "$work/$1.toml" --threads 2
}
net="kind = \"network\"
file = \"$network\"
[model.ground_truth]
preset = \"ring2d\""
run mixture-exact 'kind = "mixture"
preset = "ring2d"' 'divergence = "exact"'
run network-exact "$net" 'divergence = "exact"'
run network-hutchinson-1 "$net" 'divergence = "hutchinson"
probes = 1'
run network-hutchinson-8 "$net" 'divergence = "hutchinson"
probes = 8'
