#!/usr/bin/env bash
# CPU training throughput, lyre vs PyTorch, in one run: builds lyre-bench-train if needed, runs
# it and bench/peer_torch_llama.py one after the other on the same model, threads, batch and
# steps, and prints a markdown table (docs/benchmarks.md records one).
#
# Environment overrides (defaults in brackets):
#   BUILD_DIR [build]  THREADS [2]  BATCH [8]  SEQ [256]  WARMUP [3]  STEPS [10]
#   REPEATS [1]: pairs of runs, alternating lyre and torch; the summary takes each one's median
#   CONFIG [bench/llama_d512.json]  PYTHON [/usr/bin/python3, where Debian's python3-torch is]
#   RESULTS_DIR [$BUILD_DIR/bench-results]: each run's JSON is kept there
#   JOBS [2]: build parallelism
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
BUILD_DIR=${BUILD_DIR:-build}
THREADS=${THREADS:-2}
BATCH=${BATCH:-8}
SEQ=${SEQ:-256}
WARMUP=${WARMUP:-3}
STEPS=${STEPS:-10}
REPEATS=${REPEATS:-1}
CONFIG=${CONFIG:-bench/llama_d512.json}
PYTHON=${PYTHON:-/usr/bin/python3}
RESULTS_DIR=${RESULTS_DIR:-$BUILD_DIR/bench-results}
JOBS=${JOBS:-2}

build_log=$(mktemp)
trap 'rm -f "$build_log"' EXIT
{
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
  fi
  cmake --build "$BUILD_DIR" -j "$JOBS" --target lyre-bench-train
} >"$build_log" 2>&1 || { cat "$build_log" >&2; echo "run_cpu_bench: build failed" >&2; exit 1; }
bench="$BUILD_DIR/bin/lyre-bench-train"
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt")
if [[ "$build_type" != Release ]]; then
  echo "run_cpu_bench: warning: $BUILD_DIR is a '$build_type' build, not Release" >&2
fi

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  echo "run_cpu_bench: $PYTHON cannot import torch; install Debian's python3-torch (scripts/install-deps.sh --bench)" >&2
  exit 1
fi
# Debian's torch does its fp32 matmuls in whatever libblas.so.3 the alternatives system points
# at; the reference BLAS is about 25x slower than OpenBLAS and would make the peer meaningless.
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
if [[ "$blas" == */blas/libblas.so.3* ]]; then
  echo "run_cpu_bench: libblas.so.3 is the unoptimised reference BLAS ($blas);" \
       "install libopenblas0 (what Debian's libtorch1.13 recommends) for a fair peer" >&2
  exit 1
fi

load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
  echo "run_cpu_bench: warning: load average is $load; other work will disturb the timings" >&2
fi

# Both implementations get the same thread count through every knob they read.
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
mkdir -p "$RESULTS_DIR"
stamp=$(date +%Y%m%d-%H%M%S)
common=(--config "$CONFIG" --threads "$THREADS" --batch "$BATCH" --seq "$SEQ" --warmup "$WARMUP" --steps "$STEPS")
lyre_runs=() torch_runs=()
for ((i = 1; i <= REPEATS; ++i)); do
  lyre_json="$RESULTS_DIR/$stamp-lyre-$i.json"
  torch_json="$RESULTS_DIR/$stamp-torch-$i.json"
  echo "run_cpu_bench: [$i/$REPEATS] lyre ($bench)" >&2
  "$bench" "${common[@]}" >"$lyre_json"
  read -r peak fpt < <("$PYTHON" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["peak_flops"], r["train_flops_per_token"])' "$lyre_json")
  echo "run_cpu_bench: [$i/$REPEATS] pytorch ($PYTHON bench/peer_torch_llama.py)" >&2
  "$PYTHON" bench/peer_torch_llama.py "${common[@]}" --peak-flops "$peak" --flops-per-token "$fpt" >"$torch_json"
  lyre_runs+=("$lyre_json") torch_runs+=("$torch_json")
done

"$PYTHON" - "${#lyre_runs[@]}" "${lyre_runs[@]}" "${torch_runs[@]}" <<'EOF'
import json, statistics, sys

n = int(sys.argv[1])
lyre = [json.load(open(p)) for p in sys.argv[2:2 + n]]
torch = [json.load(open(p)) for p in sys.argv[2 + n:]]

def mib(b):
    return f"{b / 2**20:,.0f} MiB" if b else "n/a"

def rates(runs):
    return ", ".join("%.0f" % r["tokens_per_s"] for r in runs)

def median_run(runs):
    # The run whose tokens/s is the median (the lower middle for an even count).
    return sorted(runs, key=lambda r: r["tokens_per_s"])[(len(runs) - 1) // 2]

l, t = median_run(lyre), median_run(torch)
first = lyre[0]
print(f"Llama {first['config']}: {first['num_parameters'] / 1e6:.1f}M parameters, "
      f"batch {first['batch']} x seq {first['seq']}, {first['threads']} threads, "
      f"{first['warmup_steps']} warmup + {first['timed_steps']} timed steps, "
      f"{first['train_flops_per_token'] / 1e6:.1f} MFLOP/token, "
      f"peak {first['peak_flops'] / 1e9:.1f} GFLOP/s ({first['device']})")
if n > 1:
    print(f"{n} runs each; the table shows the median run by tokens/s; all runs' tokens/s: "
          f"lyre {rates(lyre)}; pytorch {rates(torch)}")
print()
print("| implementation | tokens/s | s/step (min-max) | MFU | peak RSS | RSS before model | backend peak | loss first -> last | tokens/s vs pytorch |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in (l, t):
    print(f"| {r['implementation']} | {r['tokens_per_s']:.0f} | {r['s_per_step']:.3f} "
          f"({r['s_per_step_min']:.3f}-{r['s_per_step_max']:.3f}) | {100 * r['mfu']:.1f}% | "
          f"{mib(r['peak_rss_bytes'])} | {mib(r['rss_baseline_bytes'])} | {mib(r['backend_memory_peak_bytes'])} | "
          f"{r['loss_first']:.4f} -> {r['loss_last']:.4f} | {r['tokens_per_s'] / t['tokens_per_s']:.2f}x |")
print()
print(f"lyre/pytorch: tokens/s {l['tokens_per_s'] / t['tokens_per_s']:.2f}x (target >= 1.5x), "
      f"peak RSS {l['peak_rss_bytes'] / t['peak_rss_bytes']:.2f}x (target < 1)")
print(f"pytorch BLAS: {t.get('blas') or 'unknown'}")
EOF
