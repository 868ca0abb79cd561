#!/usr/bin/env bash
# diffode's speed against its baselines, printed as one table of ratios (absolute times beside them):
#   1. `diffode sample` (the whole command: start-up, sampling, HDF5 written) against the
#      hand-written OpenMP loop of benchmarks/handwritten_mixture_loop.cpp at the same thread count:
#      DPM-Solver++(2M), 20 Karras steps, N samples, float64, shapes D2/K8, D16/K10, D64/K4
#      (diagonal; the loop's mixture is isotropic);
#   2. stochastic samplers (euler_ancestral, dpmpp_2m_sde) against dpm_solver_pp_2m (dpmpp_2m) at
#      equal NFE on D16/K10, with the default per-step noise and with noise = "brownian": the ratio
#      of CPU time (user + system, the least of --repeat runs), which a shared machine's load
#      disturbs far less than wall time;
#   2b. peak resident memory of a whole-batch run (block_rows = samples, one thread) of each of
#      those samplers, less a 256-sample run's (the program itself), over the state's size;
#   3. the mixture evaluation's arithmetic rate against the FP64 peak assumed in
#      benchmarks/mixture_bench.cpp, and its run-time kernel against the SSE2 baseline;
#   4. the torch-state path against the Eigen one (benchmarks/sampling_torch_bench.cpp), if built;
#   5. with --mpi: `diffode sweep experiments/quick.toml` on 1, 2 and 4 MPI ranks (one thread each);
#   6. with --networks: TorchScript versions of the project's MLP (2-D and 16-D, batch 4096) and
#      Fashion-MNIST U-Net (batch 256), float32, written by tools/network_bench_modules.py: the
#      same files' forward call timed from a Python loop (torch.jit.load) against C++
#      (benchmarks/network_torch_bench.cpp: the raw torch::jit::Module::forward, and diffode's
#      Predictor path with its float64 <-> float32 copies), at the same --threads on both sides,
#      as the ratio of CPU time per call (the process's, all threads); and the sampler's share of
#      a DPM-Solver++(2M) run of 20 Karras steps with each network (1 - the wall time summed over
#      the network calls of the run / the run's wall time).
# Each timing is the fastest of --repeat runs, the two sides of a ratio alternating, so that a
# shared machine's load falls on both; the Brownian runs, slow, are timed once.
#
# Usage: scripts/bench.sh [--build DIR] [--threads T] [--samples N] [--repeat R] [--mpi]
#                         [--networks | --networks-only] [--calls C]
#   --build DIR  an existing Release build folder (with experiments/diffode and mixture_bench, and
#                network_torch_bench for --networks); default: configure and build build-bench/
#                (LibTorch off) with only those targets, and build-bench-torch/ (LibTorch on) with
#                network_torch_bench alone for --networks
#   --threads T  threads of the sampling command and of the loop, and LibTorch's intra-op threads on
#                both sides of the network rows (default: all cores)
#   --samples N  samples per run (default 65536)
#   --repeat R   timings per measurement (default 3)
#   --mpi        also the MPI rows (about a minute per rank count on 2 cores)
#   --networks   also the network rows (6.); --networks-only: those rows alone
#   --calls C    forward calls timed per network and side, after 3 warm-up calls (default 5)
# Takes about 3 minutes on 2 cores without --mpi (most of it the Brownian runs); the network rows
# take 2.5 (one thread) to 5 minutes (two) per repeat on 2 loaded cores.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="" THREADS=$(nproc) SAMPLES=65536 REPEAT=3 MPI=0 NETWORKS=0 MIXTURE=1 CALLS=5
while [[ $# -gt 0 ]]; do
  case $1 in
    --build) BUILD=$(cd "$2" && pwd); shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --samples) SAMPLES=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --mpi) MPI=1; shift ;;
    --networks) NETWORKS=1; shift ;;
    --networks-only) NETWORKS=1 MIXTURE=0; shift ;;
    --calls) CALLS=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

# configure DIR ON|OFF: a Release build folder with benchmarks, LibTorch on or off, unless DIR has one.
configure() {
  [[ -f $1/build.ninja || -f $1/Makefile ]] && return
  local generator=() launcher=()
  command -v ninja > /dev/null && generator=(-G Ninja)
  command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S "$ROOT" -B "$1" "${generator[@]}" "${launcher[@]}" -DCMAKE_BUILD_TYPE=Release \
    -DDIFFODE_WITH_TORCH="$2" -DDIFFODE_BUILD_TESTS=OFF -DDIFFODE_BUILD_BENCHMARKS=ON > /dev/null
}
if [[ -z $BUILD ]]; then
  BUILD=$ROOT/build-bench
  NET_BUILD=$ROOT/build-bench-torch
  if ((MIXTURE)); then
    configure "$BUILD" OFF
    cmake --build "$BUILD" --target diffode mixture_bench -j "$(nproc)" > /dev/null
  fi
  if ((NETWORKS)); then
    configure "$NET_BUILD" ON
    cmake --build "$NET_BUILD" --target network_torch_bench -j "$(nproc)" > /dev/null
  fi
else
  NET_BUILD=$BUILD
fi
DIFFODE=$BUILD/experiments/diffode
if ((MIXTURE)); then
  [[ -x $DIFFODE ]] || { echo "bench.sh: no $DIFFODE" >&2; exit 2; }
fi
if ((NETWORKS)); then
  [[ -x $NET_BUILD/network_torch_bench ]] || { echo "bench.sh: no $NET_BUILD/network_torch_bench (a build with -DDIFFODE_WITH_TORCH=ON)" >&2; exit 2; }
  /usr/bin/python3 -c 'import torch' 2> /dev/null || { echo "bench.sh: --networks needs /usr/bin/python3 with torch (python3-torch)" >&2; exit 2; }
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# The baseline, compiled as a hand-tuned program would be (-ffast-math lets GCC vectorise its sums).
((MIXTURE)) && ${CXX:-c++} -O3 -march=native -ffast-math -fopenmp "$ROOT/benchmarks/handwritten_mixture_loop.cpp" -o "$TMP/handwritten"

# config NAME PRESET SAMPLER [NOISE [SAMPLES BLOCK_ROWS]]: a `diffode sample` config in $TMP/NAME.toml.
config() {
  local noise="" samples=${5:-$SAMPLES} block=""
  [[ ${4:-} ]] && noise="noise = \"$4\""
  [[ ${6:-} ]] && block="block_rows = $6"
  cat > "$TMP/$1.toml" << EOF
[process]
name = "edm"
[model]
preset = "$2"
[grid]
schedule = "karras"
steps = 20
final_step = "to_zero"
[sampler]
name = "$3"
$noise
[run]
samples = $samples
seed = 0
$block
output = "$TMP/$1.h5"
EOF
}

# timed VAR CMD...: runs CMD, adds "wall cpu" to the list VAR (user + system seconds).
timed() {
  local -n list=$1
  shift
  local TIMEFORMAT='%R %U %S' t
  if ! { time "$@" > "$TMP/out" 2>&1; } 2> "$TMP/time"; then
    echo "bench.sh: failed: $*" >&2
    cat "$TMP/out" >&2
    exit 1
  fi
  t=$(tail -n 1 "$TMP/time")
  list+=("$(awk '{ printf "%.4f %.4f", $1, $2 + $3 }' <<< "$t")")
}
# loop_timed VAR D K: the hand-written loop's own timing of its sampling loop.
loop_timed() {
  local -n list=$1
  list+=("$(OMP_NUM_THREADS=$THREADS "$TMP/handwritten" "$2" "$3" "$SAMPLES" | awk '{ printf "%.4f %.4f", $5, $6 }')")
}
# best LIST...: the fastest "wall cpu" pair; best_cpu: the one of least CPU time.
best() { printf '%s\n' "$@" | sort -g -k1,1 | head -n 1; }
best_cpu() { printf '%s\n' "$@" | sort -g -k2,2 | head -n 1; }
# peak_kib CONFIG: the command's maximum resident set size (KiB), one thread.
peak_kib() {
  /usr/bin/time -f '%M' -o "$TMP/rss" "$DIFFODE" sample "$1" --threads 1 > /dev/null 2>&1 || { echo "bench.sh: failed: $1" >&2; exit 1; }
  tail -n 1 "$TMP/rss"
}

rows=()  # "section|measurement|ratio|target|met|detail"
row() { rows+=("$1|$2|$3|$4|$5|$6"); }
# verdict RATIO OP LIMIT
verdict() { awk -v r="$1" -v l="$3" -v op="$2" 'BEGIN { m = op == ">=" ? r >= l : op == "<" ? r < l : r <= l; print m ? "met" : "not met" }'; }

# Sections 1 to 4 (left unindented: their here-documents must end at the start of a line).
if ((MIXTURE)); then
# 1. The sampling command against the hand-written loop.
declare -A det_best det_cpu
for shape in "ring2d 2 8 1.0" "iso16 16 10 1.0" "diag64 64 4 0.8"; do
  read -r preset d k target <<< "$shape"
  config "det_$preset" "$preset" dpmpp_2m
  ours=() loop=()
  for ((r = 0; r < REPEAT; ++r)); do
    timed ours "$DIFFODE" sample "$TMP/det_$preset.toml" --threads "$THREADS"
    loop_timed loop "$d" "$k"
  done
  read -r ow oc <<< "$(best "${ours[@]}")"
  read -r lw lc <<< "$(best "${loop[@]}")"
  det_best[$preset]="$ow $oc"
  det_cpu[$preset]="$(best_cpu "${ours[@]}")"
  ratio=$(awk -v a="$lw" -v b="$ow" 'BEGIN { printf "%.2f", a / b }')
  detail=$(awk -v n="$SAMPLES" -v ow="$ow" -v oc="$oc" -v lw="$lw" -v lc="$lc" \
    'BEGIN { printf "%.0fk vs %.0fk samples/s; %.2f s vs %.2f s wall, cpu-time ratio %.2f", n / ow / 1e3, n / lw / 1e3, ow, lw, lc / oc }')
  row "sample command / hand-written loop ($THREADS threads)" "D$d K$k" "$ratio" ">= $target" "$(verdict "$ratio" ">=" "$target")" "$detail"
done

# 2. Stochastic against deterministic at equal NFE (20 steps, one evaluation each), D16/K10.
for spec in "euler_ancestral per_step 1.5" "dpmpp_2m_sde per_step 1.5" "euler_ancestral brownian 3" "dpmpp_2m_sde brownian 3" \
    "euler_ancestral brownian_grid 3" "dpmpp_2m_sde brownian_grid 3"; do
  read -r sampler noise target <<< "$spec"
  config "sto_${sampler}_$noise" iso16 "$sampler" "$noise"
  runs=$REPEAT
  [[ $noise == brownian ]] && runs=1
  sto=()
  for ((r = 0; r < runs; ++r)); do timed sto "$DIFFODE" sample "$TMP/sto_${sampler}_$noise.toml" --threads "$THREADS"; done
  read -r sw sc <<< "$(best_cpu "${sto[@]}")"
  read -r dw dc <<< "${det_cpu[iso16]}"
  ratio=$(awk -v a="$sc" -v b="$dc" 'BEGIN { printf "%.2f", a / b }')
  detail=$(awk -v sw="$sw" -v dw="$dw" -v sc="$sc" -v dc="$dc" -v r="$runs" \
    'BEGIN { printf "%.2f s vs %.2f s CPU (least of %d), wall %.2f s vs %.2f s", sc, dc, r, sw, dw }')
  row "stochastic / dpmpp_2m CPU time, D16 K10" "$sampler, noise = $noise" "$ratio" "<= $target" "$(verdict "$ratio" "<=" "$target")" "$detail"
done

# 2b. Peak memory of whole-batch runs (one block of all the samples), D16/K10.
config mem_base iso16 euler_ancestral per_step 256 256
base_kib=$(peak_kib "$TMP/mem_base.toml")
for sampler in dpmpp_2m euler_ancestral dpmpp_2m_sde; do
  noise=per_step
  [[ $sampler == dpmpp_2m ]] && noise=""
  config "mem_$sampler" iso16 "$sampler" "$noise" "$SAMPLES" "$SAMPLES"
  kib=$(peak_kib "$TMP/mem_$sampler.toml")
  ratio=$(awk -v k="$kib" -v b="$base_kib" -v n="$SAMPLES" 'BEGIN { printf "%.2f", (k - b) * 1024 / (8 * 16 * n) }')
  row "whole-batch peak RSS / state size, D16 K10, 1 thread" "$sampler" "$ratio" "<= 3" "$(verdict "$ratio" "<=" 3)" \
    "$kib KiB peak, less $base_kib KiB for a 256-sample run; state $((8 * 16 * SAMPLES / 1024)) KiB"
done

# 3. The mixture evaluation alone (one thread, calls of 256 rows: the default [run] block_rows).
if [[ -x $BUILD/mixture_bench ]]; then
  "$BUILD/mixture_bench" --benchmark_filter='rows:256/kernel:[01]$' --benchmark_min_time=0.3 \
    --benchmark_format=json > "$TMP/mixture.json" 2> /dev/null
  while IFS='|' read -r shape pct speedup kernel gflops; do
    row "mixture evaluation, % of FP64 peak (1 core)" "$shape" "$pct" ">= 40" "$(verdict "$pct" ">=" 40)" \
      "$gflops GFLOP/s, kernel $kernel, $speedup x the SSE2 baseline kernel"
  done < <(python3 - "$TMP/mixture.json" << 'EOF'
import json, sys
runs = {}
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    problem, kernel = b["name"].split("/")[1].split(":")[1], b["name"].split("/")[3].split(":")[1]
    runs[(problem, kernel)] = b
for problem, shape in (("0", "D2 K8"), ("1", "D16 K10"), ("2", "D64 K4")):
    auto, base = runs[(problem, "0")], runs[(problem, "1")]
    print(f"{shape}|{auto['pct_peak']:.1f}|{auto['GFLOPs'] / base['GFLOPs']:.2f}|{auto.get('label', '?')}|{auto['GFLOPs']:.1f}")
EOF
  )
else
  row "mixture evaluation" "-" "-" ">= 40" "not measured" "mixture_bench not built"
fi

# 4. The torch-state path, if this build has it.
if [[ -x $BUILD/sampling_torch_bench ]]; then
  "$BUILD/sampling_torch_bench" --benchmark_filter='BM_Sample(Eigen|Torch|Flat)Threads' --benchmark_min_time=0.5 \
    --benchmark_format=json > "$TMP/torch.json" 2> /dev/null
  while IFS='|' read -r shape torch flat detail; do
    row "library paths, 2 threads (sampling_torch_bench)" "$shape torch / Eigen" "$torch" "-" "-" "$detail"
    row "library paths, 2 threads (sampling_torch_bench)" "$shape Eigen / flat loop" "$flat" "-" "-" "$detail"
  done < <(python3 - "$TMP/torch.json" << 'EOF'
import json, sys
rate = {}
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    path, problem = b["name"].split("/")[0], b["name"].split("/")[1].split(":")[1]
    rate[(path, problem)] = b["samples_per_s"]
for problem, shape in (("0", "D2 K8"), ("1", "D16 K10"), ("2", "D64 K4")):
    e, t, f = (rate[(f"BM_Sample{p}Threads", problem)] for p in ("Eigen", "Torch", "Flat"))
    print(f"{shape}|{t / e:.2f}|{e / f:.2f}|samples/s: Eigen {e / 1e3:.0f}k, torch {t / 1e3:.0f}k, flat {f / 1e3:.0f}k")
EOF
  )
else
  row "torch-state path" "-" "-" "-" "-" "sampling_torch_bench not built (configure with -DDIFFODE_WITH_TORCH=ON)"
fi

fi

# 5. MPI: the quick sweep on 1, 2 and 4 ranks of one thread each.
if ((MPI && MIXTURE)); then
  as_root=()
  ((EUID == 0)) && as_root=(--allow-run-as-root)
  mpi=()
  (cd "$ROOT" && timed mpi "$DIFFODE" sweep experiments/quick.toml --threads 1 --output "$TMP/q1.h5"
   timed mpi mpirun "${as_root[@]}" -np 2 "$DIFFODE" sweep experiments/quick.toml --threads 1 --output "$TMP/q2.h5"
   timed mpi mpirun "${as_root[@]}" --oversubscribe -np 4 "$DIFFODE" sweep experiments/quick.toml --threads 1 --output "$TMP/q4.h5"
   printf '%s\n' "${mpi[@]}" > "$TMP/mpi")
  mapfile -t mpi < "$TMP/mpi"
  read -r w1 _ <<< "${mpi[0]}"
  read -r w2 _ <<< "${mpi[1]}"
  read -r w4 _ <<< "${mpi[2]}"
  r2=$(awk -v a="$w1" -v b="$w2" 'BEGIN { printf "%.2f", a / b }')
  r4=$(awk -v a="$w2" -v b="$w4" 'BEGIN { printf "%.2f", a / b }')
  row "MPI sweep experiments/quick.toml" "2 ranks speed-up over 1" "$r2" ">= 1.8" "$(verdict "$r2" ">=" 1.8)" "$w1 s vs $w2 s wall"
  row "MPI sweep experiments/quick.toml" "4 ranks (oversubscribed) / 2 ranks" "$r4" ">= 1.0" "$(verdict "$r4" ">=" 1.0)" "$w4 s vs $w2 s wall"
fi

# 6. Networks: the same TorchScript files from Python and from C++, and the sampler's share.
if ((NETWORKS)); then
  /usr/bin/python3 "$ROOT/tools/network_bench_modules.py" export "$TMP/modules" > /dev/null
  python_side() {
    /usr/bin/python3 "$ROOT/tools/network_bench_modules.py" time "$TMP/modules" --threads "$THREADS" \
      --calls "$CALLS" --warmup 3 > "$TMP/python_$1.txt"
  }
  cpp_side() {
    "$NET_BUILD/network_torch_bench" --modules="$TMP/modules" --threads="$THREADS" --calls="$CALLS" --runs=1 \
      --benchmark_format=json > "$TMP/cpp_$1.json" 2> "$TMP/cpp_$1.err" || { cat "$TMP/cpp_$1.err" >&2; exit 1; }
  }
  # The two sides alternate which goes first, so that a change of the machine's load falls on both.
  for ((r = 0; r < REPEAT; ++r)); do
    if ((r % 2 == 0)); then python_side "$r"; cpp_side "$r"; else cpp_side "$r"; python_side "$r"; fi
  done
  while IFS='|' read -r s m ratio target op limit detail; do
    met="-"
    [[ $op != "-" ]] && met=$(verdict "$ratio" "$op" "$limit")
    row "$s" "$m" "$ratio" "$target" "$met" "$detail"
  done < <(python3 - "$TMP" "$REPEAT" "$THREADS" << 'EOF'
import json, sys
tmp, repeat, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cases = (("mlp2", "MLP D2, batch 4096"), ("mlp16", "MLP D16, batch 4096"), ("unet", "U-Net 1x28x28, batch 256"))
py, raw, pred, sample = {}, {}, {}, {}
for r in range(repeat):
    for line in open(f"{tmp}/python_{r}.txt"):
        name, _, ms, cpu = line.split()
        py.setdefault(name, []).append((float(ms), float(cpu)))
    for b in json.load(open(f"{tmp}/cpp_{r}.json"))["benchmarks"]:
        kind, name = b["name"].split("/")[:2]
        if kind == "BM_ForwardRaw":
            raw.setdefault(name, []).append((b["ms_per_call"], b["cpu_ms_per_call"]))
        elif kind == "BM_ForwardPredictor":
            pred.setdefault(name, []).append((b["ms_per_call"], b["cpu_ms_per_call"]))
        elif kind == "BM_Sample":
            sample.setdefault(name, []).append(b)
# The ratios are of CPU time (the process's, all threads; the least of each side's runs), which the
# machine's load disturbs far less than wall time; the fastest wall times are given beside them.
section = f"TorchScript forward, Python loop / C++ CPU time per call, threads = {threads}, float32 (least of {repeat})"
for name, label in cases:
    p, c, w, e = (min(t[0] for t in x) for x in (py[name], raw[name], pred[name], py[name + "-eager"]))
    pc, cc, wc = (min(t[1] for t in x) for x in (py[name], raw[name], pred[name]))
    print(f"{section}|{label}, Python / C++ raw forward|{pc / cc:.2f}|-|-|-|"
          f"CPU {pc:.0f} ms vs {cc:.0f} ms; wall {p:.0f} ms vs {c:.0f} ms (Python eager module {e:.0f} ms)")
    print(f"{section}|{label}, Python / C++ Predictor path|{pc / wc:.2f}|-|-|-|"
          f"CPU {pc:.0f} ms vs {wc:.0f} ms; wall {p:.0f} ms vs {w:.0f} ms (raw forward {cc:.0f} ms CPU: "
          f"the path's levels and float64 copies {wc - cc:+.0f} ms)")
section = f"sampler's share of sampling time, DPM-Solver++(2M) 20 steps, threads = {threads} (fastest of {repeat} runs)"
for name, label in cases:
    runs = sample[name]
    best = min(runs, key=lambda b: b["real_time"])
    pcts = [b["solver_pct"] for b in runs]
    target, op, limit = ("< 2 %", "<", "2") if name == "unet" else ("-", "-", "-")
    print(f"{section}|{label} (%)|{best['solver_pct']:.3g}|{target}|{op}|{limit}|"
          f"solver {best['solver_ms']:.1f} ms of {best['real_time'] / 1e3:.1f} s; {best['nfe']:.0f} network calls of "
          f"{best['network_ms_per_call']:.0f} ms; all runs {min(pcts):.3g} to {max(pcts):.3g} %")
EOF
  )
fi

cpu=$(awk -F: '/model name/ { sub(/^ +/, "", $2); print $2; exit }' /proc/cpuinfo)
sizes="N = $SAMPLES, "
((MIXTURE)) || sizes=""
echo "diffode benchmarks: $cpu, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); ${sizes}$THREADS threads, best of $REPEAT"
echo
echo "| measurement | case | ratio | target | | detail |"
echo "|---|---|---|---|---|---|"
section=""
for r in "${rows[@]}"; do
  IFS='|' read -r s m ratio target met detail <<< "$r"
  if [[ $s != "$section" ]]; then
    echo "| **$s** | | | | | |"
    section=$s
  fi
  echo "| | $m | $ratio | $target | $met | $detail |"
done
