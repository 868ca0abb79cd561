#!/usr/bin/env bash
# The figure of results/likelihood_cost.md: likelihood error against NFE (exact divergence) and
# against JVPs per point per evaluation (estimated divergence) on the 2-D ring, the 16-D and the
# 64-D mixtures under EDM (experiments/likelihood_cost/sweep.toml), then the PNG, CSV and tables:
#   experiments/likelihood_cost/figure.sh build/experiments/diffode
# writes results/likelihood_cost.h5 (not committed; the sweep resumes from it), and
# results/likelihood_cost.png, results/likelihood_cost.csv and results/likelihood_cost_sweep.md.
# About 9 minutes for the 316 runs with --threads 1 on a loaded machine (the exact-divergence runs
# take under a minute of it, the Hutch++ and 16-probe runs most).
set -euo pipefail
diffode=${1:-build/experiments/diffode}
here=$(dirname "$0")
"$diffode" sweep "$here/sweep.toml" --threads 2
/usr/bin/python3 "$here/figure.py" results/likelihood_cost.h5 --png results/likelihood_cost.png \
  --csv results/likelihood_cost.csv --markdown results/likelihood_cost_sweep.md
