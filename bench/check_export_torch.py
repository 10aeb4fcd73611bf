#!/usr/bin/env python3
"""By-hand check that a directory `lyre` exports is the model lyre computes: PyTorch loads the
exported safetensors (read with the standard library + torch.frombuffer, as transformers is not on
this machine) into the Llama of peer_torch_llama.py and computes the per-token log-probs of a
token sequence; lyre's CPU backend computes them for the same directory (lyre-export-logp).

Steps:
  1. tests/io/hf_reference.py writes a seeded random Llama (--variant, --config) as the source.
  2. lyre-export-logp imports it into the CPU backend and exports it (--dtype) to OUT, printing
     lyre's log-probs on the imported weights; run again on OUT, lyre's log-probs on its export.
  3. PyTorch loads OUT and computes the log-probs in float32 and in float64.
Prints the largest differences; exits 1 when lyre and PyTorch float32 differ by more than --tol.

Not part of CI: needs python3-torch (`scripts/install-deps.sh --bench`); run with Debian's
/usr/bin/python3 from the repository root after building lyre-export-logp and the CPU backend:
  /usr/bin/python3 bench/check_export_torch.py --build build
"""
import argparse
import json
import math
import os
import random
import struct
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_torch_llama import Llama  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# GQA, several layers, a vocabulary large enough for a real log-softmax: about 5M parameters.
DEFAULT_CONFIG = {
    "model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
    "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 4096,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
}

TORCH_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def read_safetensors(path):
    with open(path, "rb") as fh:
        data = fh.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    body = bytearray(data[8 + n:])
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        t = torch.frombuffer(body[begin:end], dtype=TORCH_DTYPES[entry["dtype"]]) if end > begin else \
            torch.empty(0, dtype=TORCH_DTYPES[entry["dtype"]])
        tensors[name] = t.reshape(entry["shape"]).clone()
    return tensors


def read_directory(directory):
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as fh:
            files = sorted(set(json.load(fh)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for f in files:
        tensors.update(read_safetensors(os.path.join(directory, f)))
    return tensors


def torch_logp(directory, ids, dtype):
    with open(os.path.join(directory, "config.json")) as fh:
        cfg = json.load(fh)
    tied = cfg.get("tie_word_embeddings", False)
    model = Llama(dict(cfg, tie_word_embeddings=False))  # the peer builds an untied head; tied copies it
    weights = read_directory(directory)
    state = {}
    for name, t in weights.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        state[name[len("model."):] if name.startswith("model.") else name] = t.to(torch.float32)
    if tied:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model.load_state_dict(state, strict=True)
    model = model.to(dtype).eval()
    tokens = torch.tensor([ids[:-1]])
    targets = torch.tensor(ids[1:])
    positions = torch.arange(len(ids) - 1).unsqueeze(0)
    with torch.no_grad():
        logits = model(tokens, positions)[0]
        logp = torch.log_softmax(logits, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)
    return [float(x) for x in logp]


def lyre_logp(tool, plugin_dir, directory, ids, threads, export_to=None, dtype=None, max_shard=None):
    cmd = [tool, directory, "--tokens", ",".join(map(str, ids)), "--plugin-dir", plugin_dir, "--threads", str(threads)]
    if export_to:
        cmd += ["--export-to", export_to, "--dtype", dtype, "--max-shard-size", max_shard]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    if result["unused"]:
        sys.exit("lyre-export-logp: tensors not used: %r" % result["unused"])
    return result["logp"]


def max_diff(a, b):
    return max(abs(x - y) for x, y in zip(a, b))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build", help="the build directory (bin/lyre-export-logp, lib/lyre/plugins)")
    ap.add_argument("--config", help="a Llama config.json (default: a 5M-parameter GQA Llama)")
    ap.add_argument("--variant", default="bf16-sharded", choices=["bf16-sharded", "fp32-single", "tied"])
    ap.add_argument("--dtype", default="auto", help="the export's dtype (auto keeps the source's)")
    ap.add_argument("--max-shard-size", default="4MB", help="the export's largest shard")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--keep", help="write the directories here instead of a temporary folder")
    args = ap.parse_args()

    build = os.path.abspath(args.build)
    tool = os.path.join(build, "bin", "lyre-export-logp")
    plugin_dir = os.path.join(build, "lib", "lyre", "plugins")
    work = args.keep or tempfile.mkdtemp(prefix="lyre-export-check-")
    os.makedirs(work, exist_ok=True)
    config_path = args.config
    if not config_path:
        config_path = os.path.join(work, "config.in.json")
        with open(config_path, "w") as fh:
            json.dump(DEFAULT_CONFIG, fh)
    with open(config_path) as fh:
        vocab = json.load(fh)["vocab_size"]
    source, exported = os.path.join(work, "source"), os.path.join(work, "exported")
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "io", "hf_reference.py"), "write", source,
                    "--config", config_path, "--variant", args.variant], check=True)

    rng = random.Random(args.seed)
    ids = [rng.randrange(vocab) for _ in range(args.seq + 1)]
    lyre_source = lyre_logp(tool, plugin_dir, source, ids, args.threads, exported, args.dtype,
                            args.max_shard_size)
    lyre_export = lyre_logp(tool, plugin_dir, exported, ids, args.threads)
    check = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "io", "hf_reference.py"), "check", exported],
                           capture_output=True, text=True)
    torch.set_num_threads(args.threads)
    torch32 = torch_logp(exported, ids, torch.float32)
    torch64 = torch_logp(exported, ids, torch.float64)

    report = {
        "source": source, "exported": exported, "variant": args.variant, "export_dtype": args.dtype,
        "max_shard_size": args.max_shard_size,
        "tokens": len(ids) - 1,
        "reference_check": (check.stdout or check.stderr).strip(),
        "mean_logp_lyre": sum(lyre_export) / len(lyre_export),
        "max_abs_diff_lyre_source_vs_lyre_export": max_diff(lyre_source, lyre_export),
        "max_abs_diff_lyre_vs_torch_fp32": max_diff(lyre_export, torch32),
        "max_abs_diff_lyre_vs_torch_fp64": max_diff(lyre_export, torch64),
        "max_abs_diff_torch_fp32_vs_torch_fp64": max_diff(torch32, torch64),
    }
    print(json.dumps(report, indent=2))
    ok = check.returncode == 0 and report["max_abs_diff_lyre_vs_torch_fp32"] <= args.tol and \
        all(math.isfinite(x) for x in lyre_export)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
