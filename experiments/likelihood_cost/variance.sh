#!/usr/bin/env bash
# The variance-per-JVP table of results/likelihood_cost.md: diffode likelihood with the estimated
# divergence on 256 draws of each mixture's p_{t_min} (data seed 0) under EDM, exact p_T, Dopri5 at
# rtol = atol = 1e-6 (the solver's own error, ~1e-5 nats/dim, sits well under the estimators'), 8 JVPs
# per point per evaluation, three probe seeds. Per run it prints, in nats^2 per point:
#   mse x JVPs   the mean over points of (log p - exact)^2 times the JVPs per evaluation: the
#                empirical variance per JVP (the bias is nil: the estimators are unbiased);
#   se^2 x JVPs  the same from each point's own reported standard error (what the run believes);
# each with its standard error over the 256 points, and the MAE per dimension.
#   experiments/likelihood_cost/variance.sh build/experiments/diffode
set -euo pipefail
diffode=${1:-build/experiments/diffode}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run() {  # name preset "likelihood keys"
  cat > "$work/run.toml" <<EOT
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
rtol = 1e-6
atol = 1e-6
$3
[output]
file = "$work/$1.h5"
EOT
  "$diffode" likelihood "$work/run.toml" --threads 1 > /dev/null
}
for preset in iso16 diag64; do
  for seed in 0 1 2; do
    for law in rademacher gaussian orthogonal; do
      run "$preset,$law,$seed" $preset "divergence = \"hutchinson\"
probes = 8
probe = \"$law\"
probe_seed = $seed"
    done
    for law in rademacher gaussian; do
      run "$preset,$law+cv,$seed" $preset "divergence = \"hutchinson\"
probes = 8
probe = \"$law\"
probe_seed = $seed
control_variate = \"gaussian\""
    done
    run "$preset,hutch++,$seed" $preset "divergence = \"hutchpp\"
probes = 8
probe_seed = $seed"
  done
done
/usr/bin/python3 - "$work" <<'EOF'
import glob, os, sys
from collections import defaultdict
import h5py
import numpy as np
jvps = 8
rows = defaultdict(list)
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.h5"))):
    preset, estimator, seed = os.path.basename(path)[:-3].split(",")
    with h5py.File(path, "r") as f:
        error = f["error"][()].ravel()
        se = f["std_error"][()].ravel()
    rows[(preset, estimator)].append((error, se))
print("| mixture | estimator (8 JVPs) | mse x JVPs (nats^2) | se^2 x JVPs (nats^2) | vs Rademacher | MAE/dim |")
print("|---|---|---:|---:|---:|---:|")
order = ["rademacher", "gaussian", "orthogonal", "rademacher+cv", "gaussian+cv", "hutch++"]
for preset in ["iso16", "diag64"]:
    base = None
    for estimator in order:
        runs = rows.get((preset, estimator))
        if not runs:
            continue
        error = np.concatenate([r[0] for r in runs])
        se = np.concatenate([r[1] for r in runs])
        d = 16 if preset == "iso16" else 64
        mse, mse_se = (error**2).mean() * jvps, (error**2).std(ddof=1) / np.sqrt(error.size) * jvps
        var, var_se = (se**2).mean() * jvps, (se**2).std(ddof=1) / np.sqrt(se.size) * jvps
        if base is None:
            base = mse
        print(f"| {preset} | {estimator} | {mse:.3g} +- {mse_se:.2g} | {var:.3g} +- {var_se:.2g} | {mse / base:.2f}x "
              f"| {np.abs(error).mean() / d:.2e} |")
EOF
