#!/usr/bin/env bash
# Installs what is missing, then builds and runs the whole test suite twice:
#   build/       Release (-O3) with LibTorch: every test, the *_torch_test ones included;
#   build-asan/  AddressSanitizer + UndefinedBehaviorSanitizer, without LibTorch (its prebuilt
#                libraries are not instrumented) and without benchmarks.
# Every step runs even when an earlier test run failed, so one CI log shows both suites; the exit
# status is non-zero if any step failed. Run from anywhere; paths are relative to the checkout.
#
# Environment: DIFFODE_JOBS (parallel compile and test jobs, default 2: CI has 2 cores),
#              DIFFODE_SKIP_ASAN=1 (run the Release suite only).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
jobs=${DIFFODE_JOBS:-2}
failed=()
start=$SECONDS

log() { printf '\n=== test.sh: %s\n' "$*"; }

# configure_build_test <dir> <cmake options...>: a failed configure or build skips that tree's tests.
configure_build_test() {
  local dir=$1
  shift
  local generator=()
  # A tree keeps the generator it was first configured with (CMake refuses to switch), so only a
  # fresh tree is told which one to use.
  if [[ ! -f $dir/CMakeCache.txt ]] && command -v ninja >/dev/null 2>&1; then
    generator=(-G Ninja)
  fi
  log "configure $dir ($*)"
  if ! cmake -S . -B "$dir" "${generator[@]}" "$@"; then
    failed+=("configure $dir")
    return
  fi
  log "build $dir"
  if ! cmake --build "$dir" -j "$jobs"; then
    failed+=("build $dir")
    return
  fi
  log "ctest $dir"
  # --no-tests=error: a suite that found no tests is a broken build, not a pass.
  if ! ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$jobs"; then
    failed+=("ctest $dir")
  fi
}

log "install dependencies"
if ! bash scripts/install-deps.sh; then
  echo "test.sh: scripts/install-deps.sh failed; nothing was built" >&2
  exit 1
fi

configure_build_test build -DCMAKE_BUILD_TYPE=Release -DDIFFODE_WITH_TORCH=ON

if [[ ${DIFFODE_SKIP_ASAN:-0} != 1 ]]; then
  # RelWithDebInfo, which DIFFODE_SANITIZE makes -O1 -g1 (CMakeLists.txt): optimized enough for the
  # convergence tests to stay fast, with line numbers in sanitizer reports and assertions left on.
  configure_build_test build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDIFFODE_SANITIZE=ON \
    -DDIFFODE_WITH_TORCH=OFF -DDIFFODE_BUILD_BENCHMARKS=OFF
fi

elapsed=$((SECONDS - start))
if ((${#failed[@]})); then
  log "FAILED after ${elapsed} s: ${failed[*]}"
  exit 1
fi
log "all steps passed in ${elapsed} s"
