#!/usr/bin/env python3
"""The GPU PyTorch peer of lyre-bench-train: the same Llama trained the way a PyTorch user
trains it on one GPU, printing the same fields as one line of JSON.

Model: transformers' LlamaForCausalLM built from the same config.json (random weights), its
attention through torch's scaled_dot_product_attention (attn_implementation "sdpa"). Weights
are float32 (the master copy); forward and backward run under torch.autocast(bfloat16), the
mixed precision lyre's backend-cuda uses too. PyTorch eager: no torch.compile.

Step: zero_grad, forward, cross-entropy of every position's next token, backward,
clip_grad_norm_(1.0), torch.optim.AdamW(fused=True, lr 1e-4, betas 0.9/0.999, eps 1e-8, weight
decay 0.01 on matrices and embeddings, none on norm scales), as lyre's Trainer does. Weights
start normal(0, 0.02) and norm scales at 1 (lyre's init_weights). Batches are uniform random
tokens, made and moved to the GPU before the clock starts. Every step ends with a synchronize
(the loss goes to the host), as lyre's does; tokens/s is timed tokens over timed wall time, and
each step's CUDA-event time is reported beside it.

MFU uses lyre's FLOPs per token (6 x matmul parameters, lm_head included once even when tied,
the embedding lookup not, + 12 x layers x seq x heads x head_dim for attention), computed here
by the same formula; --flops-per-token takes lyre's own figure so both share the numerator.
"""
import argparse
import json
import math
import sys
import time


def fail(message):
    sys.exit(f"peer_torch_llama_gpu: {message}")


def expected_inv_freq(cfg):
    """RoPE inverse frequencies as lyre computes them (rope_inv_freq: default, linear, llama3)."""
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    theta = cfg.get("rope_theta", 10000.0)
    inv = [1.0 / theta ** (2 * i / head_dim) for i in range(head_dim // 2)]
    rs = cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "linear":
        inv = [f / rs["factor"] for f in inv]
    elif kind == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        orig = rs["original_max_position_embeddings"]
        out = []
        for f in inv:
            wavelen = 2 * math.pi / f
            if wavelen < orig / hi:
                out.append(f)
            elif wavelen > orig / lo:
                out.append(f / factor)
            else:
                smooth = (orig / wavelen - lo) / (hi - lo)
                out.append((1 - smooth) * f / factor + smooth * f)
        inv = out
    elif kind != "default":
        fail(f"rope_scaling type {kind!r} is not handled by this peer")
    return inv


def flops_per_token(cfg, seq_len):
    """lyre's formula (plugins/backend-cpu/model/llama_model.cpp, train_flops_per_token)."""
    d, f, n_layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    hq = cfg["num_attention_heads"]
    hkv = cfg.get("num_key_value_heads") or hq
    head_dim = cfg.get("head_dim") or d // hq
    q_dim, kv_dim = hq * head_dim, hkv * head_dim
    matmul_params = n_layers * (d * (q_dim + 2 * kv_dim) + q_dim * d + 3 * d * f) + cfg["vocab_size"] * d
    attention = n_layers * 3 * 4 * seq_len * q_dim
    return 6.0 * matmul_params + attention


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="Hugging Face config.json of a Llama model")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peak-flops", type=float, default=989e12,
                    help="MFU denominator, FLOP/s (default: H100 SXM dense bf16); 0 = no MFU")
    ap.add_argument("--flops-per-token", type=float, default=0.0,
                    help="MFU numerator (pass lyre's model figure); 0 = computed here")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    if not torch.cuda.is_available():
        fail("no CUDA device (torch.cuda.is_available() is False)")
    try:
        import transformers
        from transformers import AutoModelForCausalLM, LlamaConfig
    except ImportError as e:
        fail(f"cannot import transformers ({e})")

    with open(args.config) as f:
        cfg = json.load(f)
    if args.seq > cfg["max_position_embeddings"]:
        fail(f"--seq {args.seq} exceeds max_position_embeddings {cfg['max_position_embeddings']}")
    device = torch.device("cuda")
    torch.manual_seed(args.seed)

    config = LlamaConfig.from_dict(cfg)
    with device:
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model.to(device=device, dtype=torch.float32)
    model.train()
    attn = getattr(model.config, "_attn_implementation", None)
    if attn != "sdpa":
        fail(f"attention implementation is {attn!r}, not 'sdpa'")
    if cfg.get("tie_word_embeddings", False) != (
            model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()):
        fail("lm_head and embed_tokens are not tied the way tie_word_embeddings says")

    # The same RoPE as lyre's, or the two models differ: check transformers' frequencies.
    rotary = getattr(model.model, "rotary_emb", None)
    if rotary is None or not hasattr(rotary, "inv_freq"):
        fail("cannot find model.model.rotary_emb.inv_freq to check the RoPE frequencies")
    want = torch.tensor(expected_inv_freq(cfg), dtype=torch.float64)
    got = rotary.inv_freq.detach().double().cpu()
    if got.shape != want.shape:
        fail(f"transformers has {got.numel()} RoPE frequencies, lyre {want.numel()}")
    # Elementwise: a wrong llama3 blend shows in the small frequencies. transformers computes in
    # float32 (pow of 500000 to ~1e-6 relative), lyre in double.
    rope_error = float(((got - want).abs() / want.abs()).max())
    if rope_error > 1e-5:
        fail(f"transformers' RoPE frequencies differ from lyre's (relative error {rope_error:.2e})")
    if abs(float(getattr(rotary, "attention_scaling", 1.0)) - 1.0) > 1e-12:
        fail(f"RoPE attention_scaling is {rotary.attention_scaling}, lyre assumes 1")

    # lyre's init_weights: norm scales 1, every matrix and the embedding normal(0, std).
    std = cfg.get("initializer_range", 0.02)
    decay, no_decay = [], []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
                no_decay.append(p)
            else:
                p.normal_(0.0, std)
                decay.append(p)
    if any(p.dtype != torch.float32 for p in model.parameters()):
        fail("parameters are not all float32 (the master weights must be)")
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-4, betas=(0.9, 0.999), eps=1e-8, fused=True)

    vocab = cfg["vocab_size"]
    gen = torch.Generator().manual_seed(args.seed + 1)
    batches = []
    for _ in range(args.warmup + args.steps):
        row = torch.randint(0, vocab, (args.batch, args.seq + 1), generator=gen)
        batches.append((row[:, :-1].contiguous().to(device), row[:, 1:].contiguous().to(device)))
    torch.cuda.synchronize()

    step_seconds, event_ms, losses, grad_norms = [], [], [], []
    for tokens, targets in batches:
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start = time.perf_counter()
        begin.record()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            logits = model(input_ids=tokens).logits
            loss = F.cross_entropy(logits.view(-1, vocab), targets.view(-1))
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        end.record()
        loss_value = loss.item()
        torch.cuda.synchronize()
        step_seconds.append(time.perf_counter() - start)
        event_ms.append(begin.elapsed_time(end))
        if not math.isfinite(loss_value):
            fail(f"loss is {loss_value}")
        losses.append(loss_value)
        grad_norms.append(float(grad_norm))
        del logits, loss

    timed = step_seconds[args.warmup:]
    seconds = sum(timed)
    tokens_per_s = args.steps * args.batch * args.seq / seconds
    fpt_here = flops_per_token(cfg, args.seq)
    fpt = args.flops_per_token or fpt_here
    timed_sorted = sorted(timed)
    props = torch.cuda.get_device_properties(0)
    out = {
        "implementation": f"pytorch {torch.__version__} eager (transformers {transformers.__version__}, sdpa, "
                          "bf16 autocast, fused AdamW)",
        "device": f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}",
        "config": args.config,
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
        "event_s_per_step": sum(event_ms[args.warmup:]) / 1000 / args.steps,
        "train_flops_per_token": fpt,
        "train_flops_per_token_computed_here": fpt_here,
        "peak_flops": args.peak_flops,
        "mfu": fpt * tokens_per_s / args.peak_flops if args.peak_flops > 0 else None,
        "achieved_flops": fpt * tokens_per_s,
        "memory_peak_bytes": torch.cuda.max_memory_allocated(),
        "memory_reserved_peak_bytes": torch.cuda.max_memory_reserved(),
        "rope_relative_error": rope_error,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "grad_norm_first": grad_norms[0],
        "step_seconds": step_seconds,
        "losses": losses,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
