#!/usr/bin/env bash
# Installs what is missing, builds the `diffode` program in the Release tree (build/, the same tree
# scripts/test.sh uses) and runs the main job, the quick error-vs-steps sweep, then its plots:
#   build/experiments/diffode sweep experiments/quick.toml        -> results/quick.h5
#   /usr/bin/python3 experiments/plot.py results/quick.h5 --markdown results/quick.md
#                                                                -> results/quick/*.png
# Run again, the sweep resumes (finished runs are kept); add --fresh to start over.
# Arguments, when given, replace `sweep experiments/quick.toml` (and skip the plots):
#   bash scripts/main.sh sweep experiments/error_vs_steps.toml; bash scripts/main.sh --help
#
# Environment: DIFFODE_JOBS (parallel compile jobs and threads per run, default 2).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
jobs=${DIFFODE_JOBS:-2}
dir=build

bash scripts/install-deps.sh

if [[ ! -f experiments/CMakeLists.txt ]]; then
  echo "main.sh: this checkout has no experiments/CMakeLists.txt, so there is no diffode program" \
       "to build yet; run 'bash scripts/test.sh' for the test suite" >&2
  exit 2
fi

generator=()
# A tree keeps the generator it was first configured with; only a fresh one is told.
if [[ ! -f $dir/CMakeCache.txt ]] && command -v ninja >/dev/null 2>&1; then
  generator=(-G Ninja)
fi
cmake -S . -B "$dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DDIFFODE_WITH_TORCH=ON
cmake --build "$dir" -j "$jobs" --target diffode

if (($# > 0)); then
  echo "main.sh: $dir/experiments/diffode $*" >&2
  exec "$dir/experiments/diffode" "$@"
fi
echo "main.sh: $dir/experiments/diffode sweep experiments/quick.toml --threads $jobs" >&2
status=0
"$dir/experiments/diffode" sweep experiments/quick.toml --threads "$jobs" || status=$?
# 1: some run failed (recorded in the file, the others ran): still worth plotting.
if ((status != 0 && status != 1)); then
  exit "$status"
fi
# Debian's python3 has h5py and matplotlib (python3-h5py, python3-matplotlib); another python3
# earlier on PATH may not.
echo "main.sh: /usr/bin/python3 experiments/plot.py results/quick.h5 --markdown results/quick.md" >&2
/usr/bin/python3 experiments/plot.py results/quick.h5 --markdown results/quick.md > /dev/null
echo "main.sh: wrote results/quick.h5, results/quick.md and results/quick/*.png" >&2
exit "$status"
