#!/usr/bin/env bash
# Installs what is missing, builds the `diffode` program in the Release tree (build/, the same tree
# scripts/test.sh uses) and runs the main job:
#   build/experiments/diffode orders --out results
# Arguments, when given, replace `orders --out results`: bash scripts/main.sh --help
#
# Environment: DIFFODE_JOBS (parallel compile jobs, default 2).
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

args=("$@")
if ((${#args[@]} == 0)); then
  args=(orders --out results)
fi
echo "main.sh: $dir/experiments/diffode ${args[*]}" >&2
exec "$dir/experiments/diffode" "${args[@]}"
