#!/usr/bin/env python3
"""The PyTorch peer of lyre-bench-train: the same Llama, trained the way a PyTorch 1.13 user
would write it, printing the same JSON fields.

Model: token embedding, per layer RMSNorm -> q/k/v projections -> RoPE (rotate_half) ->
causal attention with grouped KV heads (matmul + mask + softmax: torch 1.13 has no
scaled_dot_product_attention) -> o projection -> residual, RMSNorm -> SwiGLU MLP -> residual;
final RMSNorm, untied lm_head, cross-entropy over the vocabulary. fp32 throughout.

Step: zero_grad, forward, loss, backward, clip_grad_norm_(1.0), AdamW(lr 1e-4, weight decay
0.01 on matrices and embeddings, none on norms), as lyre's Trainer does. Batches are random
tokens made before the clock starts, every position a loss token.

MFU uses the FLOPs-per-token lyre's model reports (6 per matmul parameter, lm_head included,
embedding lookup not, plus 12*L*T*Hq*D for attention scores and values), computed here by the
same formula; --flops-per-token and --peak-flops take lyre's own figures so both rows share
numerator and denominator.

Run with Debian's interpreter (/usr/bin/python3), where python3-torch lives.
"""
import argparse
import ctypes
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Rotary(nn.Module):
    """cos and sin tables for positions [0, max_positions), Hugging Face's rotate_half layout."""

    def __init__(self, head_dim, max_positions, theta):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float64), inv_freq)
        emb = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", emb.cos().float(), persistent=False)
        self.register_buffer("sin", emb.sin().float(), persistent=False)

    def forward(self, q, k, positions):
        # q, k: (B, H, T, D); positions: (B, T)
        cos = self.cos[positions].unsqueeze(1)
        sin = self.sin[positions].unsqueeze(1)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["hidden_size"]
        self.hq = cfg["num_attention_heads"]
        self.hkv = cfg.get("num_key_value_heads") or self.hq
        self.head_dim = cfg.get("head_dim") or d // self.hq
        self.q_proj = nn.Linear(d, self.hq * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.hkv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.hkv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.hq * self.head_dim, d, bias=False)

    def forward(self, x, rotary, positions, mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.hq, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.hkv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.hkv, self.head_dim).transpose(1, 2)
        q, k = rotary(q, k, positions)
        if self.hkv != self.hq:
            k = k.repeat_interleave(self.hq // self.hkv, dim=1)
            v = v.repeat_interleave(self.hq // self.hkv, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim) + mask
        probs = F.softmax(scores, dim=-1)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, self.hq * self.head_dim)
        return self.o_proj(out)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, f = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        eps = cfg.get("rms_norm_eps", 1e-6)
        self.input_layernorm = RMSNorm(cfg["hidden_size"], eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], eps)
        self.mlp = MLP(cfg)

    def forward(self, x, rotary, positions, mask):
        x = x + self.self_attn(self.input_layernorm(x), rotary, positions, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        if cfg.get("tie_word_embeddings", False):
            raise ValueError("this peer builds untied lm_head only (tie_word_embeddings: false)")
        if cfg.get("rope_scaling"):
            raise ValueError("this peer has no rope_scaling")
        d = cfg["hidden_size"]
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], d)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(d, cfg.get("rms_norm_eps", 1e-6))
        self.lm_head = nn.Linear(d, cfg["vocab_size"], bias=False)
        head_dim = cfg.get("head_dim") or d // cfg["num_attention_heads"]
        self.rotary = Rotary(head_dim, cfg["max_position_embeddings"], cfg.get("rope_theta", 10000.0))

    def forward(self, tokens, positions):
        t = tokens.shape[1]
        mask = torch.full((t, t), float("-inf")).triu(1)
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, self.rotary, positions, mask)
        return self.lm_head(self.norm(x))


def init_weights(model, std):
    """lyre's init_weights: norm scales 1, every matrix and embedding normal(0, std)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "norm.weight":
                p.fill_(1.0)
            else:
                p.normal_(0.0, std)


def flops_per_token(model, cfg, seq_len):
    """lyre's formula: 6 x matmul parameters (every Linear, lm_head included) + attention."""
    matmul_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    hq = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // hq
    attention = 3 * 4 * seq_len * hq * head_dim * cfg["num_hidden_layers"]
    return 6.0 * matmul_params + attention


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def loaded_blas():
    """The BLAS library torch's matmuls go to (Debian's torch links the generic libblas.so.3)."""
    with open("/proc/self/maps") as f:
        paths = {line.split()[-1] for line in f if "blas" in line.split()[-1]}
    resolved = sorted({os.path.realpath(p) for p in paths if p.startswith("/")})
    return ", ".join(resolved)


def openblas_core():
    """The kernel set OpenBLAS chose for this CPU (OPENBLAS_CORETYPE overrides it), or None."""
    with open("/proc/self/maps") as f:
        libs = {line.split()[-1] for line in f if "libopenblas" in line.split()[-1]}
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            return lib.openblas_get_corename().decode()
        except (OSError, AttributeError):
            continue
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="Hugging Face config.json of a Llama model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peak-flops", type=float, default=0.0,
                    help="MFU denominator, FLOP/s (pass lyre's backend figure); 0 = no MFU")
    ap.add_argument("--flops-per-token", type=float, default=0.0,
                    help="MFU numerator (pass lyre's model figure); 0 = computed here")
    args = ap.parse_args()

    with open(args.config) as f:
        cfg = json.load(f)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rss_baseline = resident_bytes()

    model = Llama(cfg)
    init_weights(model, cfg.get("initializer_range", 0.02))
    model.train()
    decay = [p for n, p in model.named_parameters() if not n.endswith("norm.weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("norm.weight")]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-4, betas=(0.9, 0.999), eps=1e-8)

    gen = torch.Generator().manual_seed(args.seed + 1)
    vocab = cfg["vocab_size"]
    positions = torch.arange(args.seq).expand(args.batch, args.seq)
    batches = []
    for _ in range(args.warmup + args.steps):
        row = torch.randint(0, vocab, (args.batch, args.seq + 1), generator=gen)
        batches.append((row[:, :-1].contiguous(), row[:, 1:].contiguous()))

    step_seconds, losses, grad_norms = [], [], []
    for tokens, targets in batches:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        logits = model(tokens, positions)
        loss = F.cross_entropy(logits.view(-1, vocab), targets.view(-1))
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        loss_value = loss.item()
        step_seconds.append(time.perf_counter() - start)
        if not math.isfinite(loss_value):
            sys.exit(f"peer_torch_llama: loss is {loss_value}")
        losses.append(loss_value)
        grad_norms.append(float(grad_norm))
        del logits, loss

    timed = step_seconds[args.warmup:]
    seconds = sum(timed)
    tokens_per_s = args.steps * args.batch * args.seq / seconds
    fpt_here = flops_per_token(model, cfg, args.seq)
    fpt = args.flops_per_token or fpt_here
    timed_sorted = sorted(timed)
    out = {
        "implementation": f"pytorch {torch.__version__} eager",
        "device": f"cpu: {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"
                  if hasattr(torch.backends, "cpu") and hasattr(torch.backends.cpu, "get_cpu_capability")
                  else f"cpu: {torch.get_num_threads()} threads",
        "blas": loaded_blas(),
        "openblas_core": openblas_core(),
        "config": args.config,
        "threads": args.threads,
        "batch": args.batch,
        "seq": args.seq,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": tokens_per_s,
        "s_per_step": seconds / args.steps,
        "s_per_step_min": timed_sorted[0],
        "s_per_step_median": timed_sorted[len(timed_sorted) // 2],
        "s_per_step_max": timed_sorted[-1],
        "train_flops_per_token": fpt,
        "train_flops_per_token_computed_here": fpt_here,
        "peak_flops": args.peak_flops,
        "mfu": fpt * tokens_per_s / args.peak_flops if args.peak_flops > 0 else 0.0,
        "achieved_flops": fpt * tokens_per_s,
        # ru_maxrss is KiB on Linux.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_baseline_bytes": rss_baseline,  # after importing torch, before the model
        "backend_memory_peak_bytes": None,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "grad_norm_first": grad_norms[0],
        "step_seconds": step_seconds,
        "losses": losses,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
