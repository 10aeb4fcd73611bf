#!/usr/bin/env bash
# GPU training throughput, lyre backend-cuda vs PyTorch eager, on two Llama shapes: runs
# lyre-bench-train (--backend cuda) and bench/peer_torch_llama_gpu.py (transformers'
# LlamaForCausalLM, bf16 autocast over fp32 master weights, SDPA attention, fused AdamW) one after
# the other, each in its own process, on the same config, batch shape and step counts, and prints
# a markdown table. scripts/gpu-check.sh calls it after building; it builds nothing itself.
#
# Models (MODELS, default "1b 124m"):
#   1b    bench/llama_1b_shape.json  Llama-3.2-1B's shape, 1.24B parameters (tied), seq 2048
#   124m  bench/llama_124m.json      a GPT-2-sized Llama, 123.6M parameters (tied), seq 1024
#
# Each run prints one line `BENCH_RESULT {json}` (the summary in gpu-check.sh parses these) and
# keeps its JSON in RESULTS_DIR. MFU uses one denominator for both sides (PEAK_FLOPS) and lyre's
# FLOPs per token (6 x matmul parameters, lm_head included, + 12 x layers x seq x heads x
# head_dim); the peer recomputes the same formula and reports both. Peak memory is given twice:
# by each side's own allocator (lyre: device_info's memory_peak_bytes; PyTorch:
# max_memory_allocated, and max_memory_reserved beside it) and, the same way for both, as the
# largest nvidia-smi memory.used seen during the run minus the idle figure before it (CUDA
# context and library workspaces included).
#
# Environment overrides (defaults in brackets):
#   BUILD_DIR [build-gpu]  MODELS [1b 124m]  SIDES [lyre torch]  WARMUP [5]  STEPS [20]  SEED [0]
#   BATCH_1B [4]  SEQ_1B [2048]  BATCH_124M [16]  SEQ_124M [1024]
#   PEAK_FLOPS [auto: 989e12 for H100 SXM / H200 (dense bf16), 835e12 H100 NVL, 756e12 H100 PCIe,
#     else lyre's stated peak]
#   LYRE_MODEL_OPTIONS ['']: backend-cuda model options, e.g. '{"logprob_chunk_rows": 4096}'
#   LYRE_LD_LIBRARY_PATH [$LD_LIBRARY_PATH]: library path of lyre's process only (gpu-check.sh
#     points it at its private prefix; the PyTorch peer keeps the caller's environment)
#   PYTHON [python3]  RESULTS_DIR [$BUILD_DIR/bench-results]  MEM_SAMPLE_MS [100]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
BUILD_DIR=${BUILD_DIR:-build-gpu}
read -r -a models <<<"${MODELS:-1b 124m}"
read -r -a sides <<<"${SIDES:-lyre torch}"
WARMUP=${WARMUP:-5}
STEPS=${STEPS:-20}
SEED=${SEED:-0}
PYTHON=${PYTHON:-python3}
PEAK_FLOPS=${PEAK_FLOPS:-auto}
LYRE_MODEL_OPTIONS=${LYRE_MODEL_OPTIONS:-}
LYRE_LD_LIBRARY_PATH=${LYRE_LD_LIBRARY_PATH-${LD_LIBRARY_PATH:-}}
RESULTS_DIR=${RESULTS_DIR:-$BUILD_DIR/bench-results}
MEM_SAMPLE_MS=${MEM_SAMPLE_MS:-100}

say() { echo "run_gpu_bench: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

# ---- the device ----
if command -v nvidia-smi >/dev/null; then
  nvidia-smi -L 2>/dev/null | grep -q '^GPU ' ||
    die "no CUDA device (nvidia-smi -L lists none: $(nvidia-smi -L 2>&1 | head -1))"
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0)
else
  "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null ||
    die "no CUDA device (no nvidia-smi, and torch.cuda.is_available() is False)"
  gpu_name=$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0))')
fi
if [[ "$PEAK_FLOPS" == auto ]]; then
  # NVIDIA's dense BF16 tensor-core figures (the sparse ones are twice these).
  case "$gpu_name" in
    *H100*PCIe*) PEAK_FLOPS=756e12 ;;
    *H100*NVL*) PEAK_FLOPS=835e12 ;;
    *H100* | *H200*) PEAK_FLOPS=989e12 ;;  # GH200 included
    *) PEAK_FLOPS=0 ;;  # lyre's stated peak, below
  esac
fi
if [[ "$PEAK_FLOPS" == 0 ]]; then
  say "device: $gpu_name (no known peak: MFU against the one backend-cuda states)"
else
  say "device: $gpu_name; MFU denominator $PEAK_FLOPS FLOP/s"
fi

lyre_bin=$BUILD_DIR/bin/lyre-bench-train
plugin_dir=$BUILD_DIR/lib/lyre/plugins
mkdir -p "$RESULTS_DIR"
stamp=$(date +%Y%m%d-%H%M%S)

# ---- nvidia-smi memory sampler: the same measure for both sides ----
smi_used_mib() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 2>/dev/null | head -1; }
sampler=""
sample_start() {  # $1: file
  sampler=""
  command -v nvidia-smi >/dev/null || return 0
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms "$MEM_SAMPLE_MS" >"$1" 2>/dev/null &
  sampler=$!
}
sample_stop() {
  [[ -n "$sampler" ]] || return 0
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  sampler=""
}
trap sample_stop EXIT

# Adds the fields both sides share and prints one BENCH_RESULT line; the JSON goes to $out.
# args: model side out raw_json_file|"" error_text baseline_mib samples_file peak_flops
emit() {
  "$PYTHON" - "$@" "$gpu_name" <<'EOF'
import json, sys
model, side, out, raw, error, baseline, samples, peak, gpu = sys.argv[1:10]
r = {}
if raw:
    try:
        with open(raw) as f:
            text = f.read()
        r = json.loads(text)
    except (OSError, ValueError) as e:
        error = error or f"unreadable result ({e})"
try:
    used = [int(x) for x in open(samples).read().split() if x.strip().isdigit()]
except OSError:
    used = []
base = int(baseline) if baseline.strip().isdigit() else None
smi_peak = (max(used) - base) if used and base is not None else None
res = {"model": model, "side": side, "gpu": gpu}
res.update(r)
if error:
    res["error"] = error
# The run's own figure (lyre: the backend's stated peak) stays as stated_peak_flops; MFU is
# recomputed against the denominator both sides share.
res["stated_peak_flops"] = r.get("peak_flops", 0.0) if side == "lyre" else None
res["peak_flops"] = float(peak)
res["mfu"] = None
if "tokens_per_s" in r and "train_flops_per_token" in r and res["peak_flops"] > 0:
    res["mfu"] = r["train_flops_per_token"] * r["tokens_per_s"] / res["peak_flops"]
if side == "lyre" and "backend_memory_peak_bytes" in r:
    res["memory_peak_bytes"] = r["backend_memory_peak_bytes"]
res["smi_peak_mib"] = smi_peak
res.pop("step_seconds", None)
res.pop("losses", None)
with open(out, "w") as f:
    json.dump(dict(res, step_seconds=r.get("step_seconds"), losses=r.get("losses")), f, indent=2)
print("BENCH_RESULT " + json.dumps(res, separators=(",", ":")), flush=True)
EOF
}

failures=0
result_files=()
for model in "${models[@]}"; do
  case "$model" in
    1b) config=bench/llama_1b_shape.json batch=${BATCH_1B:-4} seq=${SEQ_1B:-2048} ;;
    124m) config=bench/llama_124m.json batch=${BATCH_124M:-16} seq=${SEQ_124M:-1024} ;;
    *) die "unknown model '$model' in MODELS (known: 1b 124m)" ;;
  esac
  common=(--config "$config" --batch "$batch" --seq "$seq" --warmup "$WARMUP" --steps "$STEPS" --seed "$SEED")
  lyre_fpt=0
  model_peak=$PEAK_FLOPS
  for side in "${sides[@]}"; do
    base="$RESULTS_DIR/$stamp-$model-$side"
    raw="$base.raw.json" err="$base.stderr" samples="$base.smi"
    error=""
    baseline=$(smi_used_mib || true)
    say "$model ($config, batch $batch x seq $seq, $WARMUP warmup + $STEPS timed steps): $side"
    start=$SECONDS
    case "$side" in
      lyre)
        if [[ ! -x "$lyre_bin" ]]; then
          error="$lyre_bin is not built"
        elif [[ ! -e "$plugin_dir/liblyre-backend-cuda.so" ]]; then
          error="$plugin_dir/liblyre-backend-cuda.so is not built"
        else
          extra=()
          [[ -z "$LYRE_MODEL_OPTIONS" ]] || extra=(--model-options "$LYRE_MODEL_OPTIONS")
          sample_start "$samples"
          env LD_LIBRARY_PATH="$LYRE_LD_LIBRARY_PATH" "$lyre_bin" "${common[@]}" --backend cuda --threads 0 \
            --plugin-dir "$plugin_dir" "${extra[@]}" >"$raw" 2>"$err" ||
            error="lyre-bench-train exited with $?: $(head -1 "$err")"
          sample_stop
          if [[ -z "$error" ]]; then
            read -r lyre_fpt lyre_peak < <("$PYTHON" -c 'import json, sys; r = json.load(open(sys.argv[1]))
print(r["train_flops_per_token"], r["peak_flops"])' "$raw") || error="lyre-bench-train printed no JSON result"
            # An unknown GPU: both sides' MFU against the peak backend-cuda states.
            [[ -n "$error" || "$model_peak" != 0 ]] || model_peak=$lyre_peak
          fi
        fi
        ;;
      torch)
        sample_start "$samples"
        "$PYTHON" bench/peer_torch_llama_gpu.py "${common[@]}" --flops-per-token "$lyre_fpt" \
          --peak-flops "$model_peak" >"$raw" 2>"$err" ||
          error="peer_torch_llama_gpu.py exited with $?: $(tail -1 "$err")"
        sample_stop
        ;;
      *) die "unknown side '$side' in SIDES (known: lyre torch)" ;;
    esac
    say "  $side done in $((SECONDS - start)) s${error:+: $error}"
    [[ -z "$error" ]] || failures=$((failures + 1))
    raw_arg=""
    [[ -n "$error" ]] || raw_arg=$raw
    emit "$model" "$side" "$base.json" "$raw_arg" "$error" "$baseline" "$samples" "$model_peak"
    result_files+=("$base.json")
  done
done
say "results in $RESULTS_DIR/$stamp-*.json"

"$PYTHON" - "${result_files[@]}" <<'EOF'
import json, sys

runs = [json.load(open(p)) for p in sys.argv[1:]]

def gib(b):
    return f"{b / 2**30:.2f} GiB" if b else "n/a"

def smi(m):
    return f"{m / 1024:.2f} GiB" if m is not None else "n/a"

print()
print("| model | implementation | batch x seq | params | tokens/s | s/step (min-max) | MFU | peak memory (own allocator) "
      "| peak memory (nvidia-smi) | loss first -> last | tokens/s vs pytorch |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
by_model = {}
for r in runs:
    by_model.setdefault(r["model"], {})[r["side"]] = r
for model, sides in by_model.items():
    torch_rate = sides.get("torch", {}).get("tokens_per_s")
    for side, r in sides.items():
        if "error" in r:
            print(f"| {model} | {side} | | | FAILED: {r['error'][:120]} | | | | | | |")
            continue
        mem = r.get("memory_peak_bytes")
        if side == "torch":
            mem_text = f"{gib(mem)} (reserved {gib(r.get('memory_reserved_peak_bytes'))})"
        else:
            mem_text = gib(mem)
        ratio = f"{r['tokens_per_s'] / torch_rate:.2f}x" if torch_rate else "n/a"
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "n/a"
        print(f"| {model} | {r['implementation']} | {r['batch']} x {r['seq']} | {r['num_parameters'] / 1e6:.1f}M "
              f"| {r['tokens_per_s']:.0f} | {r['s_per_step']:.3f} ({r['s_per_step_min']:.3f}-{r['s_per_step_max']:.3f}) "
              f"| {mfu} | {mem_text} | {smi(r.get('smi_peak_mib'))} "
              f"| {r['loss_first']:.4f} -> {r['loss_last']:.4f} | {ratio} |")
EOF
((failures == 0)) || die "$failures run(s) failed (see the FAILED rows and $RESULTS_DIR/$stamp-*.stderr)"
