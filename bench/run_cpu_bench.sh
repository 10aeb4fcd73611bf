#!/usr/bin/env bash
# CPU training throughput, lyre vs PyTorch, in one run: builds lyre-bench-train if needed, runs
# it (once per backend in BACKENDS) and bench/peer_torch_llama.py one after the other on the same
# model, weights, threads, batch and steps, each in its own process, and prints a markdown table
# (docs/benchmarks.md records them).
#
# Environment overrides (defaults in brackets):
#   BACKENDS [cpu]: lyre backends to run, e.g. "cpu torch" (backend-torch runs LibTorch, so it
#     gets the PyTorch peer's BLAS too)
#   BUILD_DIR [build]  THREADS [2]  BATCH [8]  SEQ [256]  WARMUP [3]  STEPS [10]
#   REPEATS [1]: pairs of runs, alternating lyre and torch; the table shows each one's median
#   CONFIG [bench/llama_d512.json]  PYTHON [/usr/bin/python3, where Debian's python3-torch is]
#   LYRE_MODEL_OPTIONS ['']: extra backend model options, e.g. '{"logprob_chunk_rows": 512}'
#   RESULTS_DIR [$BUILD_DIR/bench-results]: each run's JSON is kept there
#   JOBS [2]: build parallelism
#   PEER_BLAS_DIR [auto]: a directory holding the libblas.so.3 the PyTorch peer should load (put
#     first on its LD_LIBRARY_PATH). auto: OpenBLAS's OpenMP build when libopenblas0-openmp is
#     installed, else the system's libblas.so.3; empty: the system's. The OpenMP build is the
#     one OpenBLAS recommends for OpenMP programs such as PyTorch: the default pthread build
#     fights PyTorch's OpenMP threads for the cores and costs the peer about 40% of its speed.
#   PEER_OPENBLAS_CORETYPE ['']: force OpenBLAS's kernel set for the PyTorch peer (SkylakeX,
#     Haswell, ...); empty lets OpenBLAS detect the CPU. An OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE
#     inherited from the environment is dropped: a sandbox that pins Haswell kernels on an
#     AVX-512 machine would halve the peer's matmul speed without anyone seeing it.
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
LYRE_MODEL_OPTIONS=${LYRE_MODEL_OPTIONS:-}
RESULTS_DIR=${RESULTS_DIR:-$BUILD_DIR/bench-results}
JOBS=${JOBS:-2}
read -r -a backends <<<"${BACKENDS:-cpu}"

say() { echo "run_cpu_bench: $*" >&2; }

build_log=$(mktemp)
trap 'rm -f "$build_log"' EXIT
{
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
  fi
  targets=(lyre-bench-train lyre-bench-fma-peak)
  for b in "${backends[@]}"; do targets+=("lyre-backend-${b#backend-}"); done
  cmake --build "$BUILD_DIR" -j "$JOBS" --target "${targets[@]}" lyre-objective-sft
} >"$build_log" 2>&1 || { cat "$build_log" >&2; say "build failed"; exit 1; }
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt")
[[ "$build_type" == Release ]] || say "warning: $BUILD_DIR is a '$build_type' build, not Release"

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  say "$PYTHON cannot import torch; install Debian's python3-torch (scripts/install-deps.sh --bench)"
  exit 1
fi
# Debian's torch does its fp32 matmuls in whatever libblas.so.3 the alternatives system points
# at. The reference BLAS (what --no-install-recommends leaves) is single-threaded and about 25x
# slower than OpenBLAS: a peer running on it would be meaningless.
blas=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || true)
if [[ "$blas" == */blas/libblas.so.3* ]]; then
  say "libblas.so.3 is the unoptimised reference BLAS ($blas); install libopenblas0" \
      "(which Debian's libtorch1.13 recommends) for a fair peer"
  exit 1
fi

PEER_BLAS_DIR=${PEER_BLAS_DIR-auto}
openmp_blas=/usr/lib/x86_64-linux-gnu/openblas-openmp
if [[ "$PEER_BLAS_DIR" == auto ]]; then
  PEER_BLAS_DIR=""
  if [[ -e "$openmp_blas/libblas.so.3" ]]; then
    PEER_BLAS_DIR=$openmp_blas
  else
    say "warning: libopenblas0-openmp is not installed; the PyTorch peer runs on $blas," \
        "whose pthreads compete with PyTorch's OpenMP threads (a slower peer)"
  fi
fi
peer_env=()
[[ -z "$PEER_BLAS_DIR" ]] || peer_env=(env "LD_LIBRARY_PATH=$PEER_BLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")

load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
  say "warning: load average is $load; other work will disturb the timings"
fi

# Both implementations get the same thread count through every knob they read.
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE
[[ -z "${PEER_OPENBLAS_CORETYPE:-}" ]] || export OPENBLAS_CORETYPE=$PEER_OPENBLAS_CORETYPE
mkdir -p "$RESULTS_DIR"
stamp=$(date +%Y%m%d-%H%M%S)
fma_json="$RESULTS_DIR/$stamp-fma-peak.json"
"$BUILD_DIR/bin/lyre-bench-fma-peak" --threads "$THREADS" >"$fma_json"

common=(--config "$CONFIG" --threads "$THREADS" --batch "$BATCH" --seq "$SEQ" --warmup "$WARMUP" --steps "$STEPS")
lyre_extra=()
[[ -z "$LYRE_MODEL_OPTIONS" ]] || lyre_extra=(--model-options "$LYRE_MODEL_OPTIONS")
run_files=()  # REPEATS x (backends..., pytorch), in that order
for ((i = 1; i <= REPEATS; ++i)); do
  peak=0 fpt=0
  for b in "${backends[@]}"; do
    lyre_json="$RESULTS_DIR/$stamp-lyre-$b-$i.json"
    say "[$i/$REPEATS] lyre backend $b"
    env_prefix=()
    [[ "${b#backend-}" != torch ]] || env_prefix=("${peer_env[@]}")
    "${env_prefix[@]}" "$BUILD_DIR/bin/lyre-bench-train" "${common[@]}" --backend "$b" "${lyre_extra[@]}" >"$lyre_json"
    run_files+=("$lyre_json")
    # The peer's MFU shares lyre's numerator (FLOPs per token) and denominator (stated peak):
    # the first backend that states a peak.
    if [[ "$peak" == 0 ]]; then
      read -r peak fpt < <("$PYTHON" -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["peak_flops"], r["train_flops_per_token"])' "$lyre_json")
    fi
  done
  torch_json="$RESULTS_DIR/$stamp-torch-$i.json"
  say "[$i/$REPEATS] pytorch"
  "${peer_env[@]}" "$PYTHON" bench/peer_torch_llama.py "${common[@]}" --peak-flops "$peak" --flops-per-token "$fpt" >"$torch_json"
  run_files+=("$torch_json")
done
say "results in $RESULTS_DIR/$stamp-*.json"

"$PYTHON" - "$fma_json" "$REPEATS" "${#backends[@]}" "${run_files[@]}" <<'EOF'
import json, os, sys

fma = json.load(open(sys.argv[1]))
n, nb = int(sys.argv[2]), int(sys.argv[3])
runs = [json.load(open(p)) for p in sys.argv[4:]]
per_repeat = nb + 1
lyres = [[runs[i * per_repeat + b] for i in range(n)] for b in range(nb)]
torch = [runs[i * per_repeat + nb] for i in range(n)]
measured_peak = fma["peak_flops"]

def mib(b):
    return f"{b / 2**20:,.0f} MiB" if b else "n/a"

def rates(runs):
    return ", ".join("%.0f" % r["tokens_per_s"] for r in runs)

def median_run(runs):
    # The run whose tokens/s is the median (the lower middle for an even count).
    return sorted(runs, key=lambda r: r["tokens_per_s"])[(len(runs) - 1) // 2]

ls = [median_run(runs_of_backend) for runs_of_backend in lyres]
l, t = ls[0], median_run(torch)
stated_peak = next((r["peak_flops"] for r in ls if r["peak_flops"] > 0), 0)
print(f"Model {l['config']}: {l['num_parameters'] / 1e6:.1f}M parameters, "
      f"{l['train_flops_per_token'] / 1e6:.1f} MFLOP/token (train); batch {l['batch']} x seq {l['seq']}, "
      f"{l['threads']} threads, {l['warmup_steps']} warmup + {l['timed_steps']} timed steps.")
print(f"Peak fp32 FLOP/s: {stated_peak / 1e9:.0f} G as the backend states it ({l['device']}); "
      f"{measured_peak / 1e9:.0f} G measured by lyre-bench-fma-peak ({fma['isa']}, {fma['threads']} threads).")
core = t.get("openblas_core") or "n/a"
forced = " (forced by OPENBLAS_CORETYPE)" if os.environ.get("OPENBLAS_CORETYPE") else " (detected)"
print(f"Settings: lyre model options {json.dumps(l['model_options'])}; PyTorch BLAS "
      f"{t.get('blas') or 'unknown'}, OpenBLAS kernels {core}{forced}.")
if n > 1:
    print(f"{n} runs each, the table shows the median run; tokens/s of every run: "
          + "; ".join(f"{r[0]['implementation']} {rates(r)}" for r in lyres) + f"; pytorch {rates(torch)}.")
print()
print("| implementation | tokens/s | s/step (min-max) | MFU (stated peak) | MFU (measured peak) "
      "| peak RSS | RSS before model | backend peak | loss first -> last | tokens/s vs pytorch |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in ls + [t]:
    mfu = r["achieved_flops"] / stated_peak if stated_peak else 0.0
    print(f"| {r['implementation']} | {r['tokens_per_s']:.0f} | {r['s_per_step']:.3f} "
          f"({r['s_per_step_min']:.3f}-{r['s_per_step_max']:.3f}) | {100 * mfu:.1f}% | "
          f"{100 * r['achieved_flops'] / measured_peak:.1f}% | "
          f"{mib(r['peak_rss_bytes'])} | {mib(r['rss_baseline_bytes'])} | {mib(r['backend_memory_peak_bytes'])} | "
          f"{r['loss_first']:.4f} -> {r['loss_last']:.4f} | {r['tokens_per_s'] / t['tokens_per_s']:.2f}x |")
print()
for r in ls:
    print(f"{r['implementation']} / pytorch: tokens/s {r['tokens_per_s'] / t['tokens_per_s']:.2f}x; "
          f"peak RSS {r['peak_rss_bytes'] / t['peak_rss_bytes']:.2f}x.")
EOF
