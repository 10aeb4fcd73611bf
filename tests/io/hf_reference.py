#!/usr/bin/env python3
"""An independent writer and checker of Hugging Face Llama directories, standard library only,
so that lyre's import and export are tested against code that shares nothing with them.

  hf_reference.py write OUT_DIR --config CONFIG.json --variant bf16-sharded|fp32-single|tied [--seed N]
      A Llama directory with seeded random weights and the tokenizer side files:
        bf16-sharded  BF16, tensors dealt round-robin into 3 shards with an index, plus an F32
                      rotary inv_freq buffer as older transformers saved one
        fp32-single   F32, one model.safetensors
        tied          F32, one file, tie_word_embeddings true and no lm_head.weight

  hf_reference.py check DIR [--source SRC_DIR]
      Exits 0 when DIR is what transformers loads: every shard's header (8-byte length, JSON,
      offsets contiguous and inside the file, dtype/shape/bytes agree, metadata format "pt"), the
      index (every tensor mapped to a shard that holds it, no other shard files, total_size the
      sum of the tensor bytes), config.json (model_type, torch_dtype equal to the shards' dtype).
      With --source, also: the config's keys unchanged apart from torch_dtype/dtype/architectures,
      the same tensors (rotary buffers aside; no lm_head.weight when tied), and each tensor's
      bytes equal to the source's converted to the exported dtype here (round to nearest even).
      Otherwise prints "FAIL: <reason>" on stderr and exits 1.
"""
import argparse
import json
import math
import os
import random
import re
import struct
import sys

DTYPE_SIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
TORCH_DTYPE = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
TOKENIZER_FILES = {
    "tokenizer_config.json": {"bos_token": "<s>", "eos_token": "</s>", "model_max_length": 64},
    "special_tokens_map.json": {"bos_token": "<s>", "eos_token": "</s>"},
    "generation_config.json": {"bos_token_id": 256, "eos_token_id": 257, "do_sample": False},
}


class CheckFailed(Exception):
    pass


# ---- element encodings ----

def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def bf16_bits_from_f32_bits(bits):
    """Round to nearest, ties to even, as torch's .to(torch.bfloat16); NaN stays a quiet NaN."""
    if (bits & 0x7F800000) == 0x7F800000 and (bits & 0x007FFFFF):
        return (bits >> 16) | 0x0040
    lsb = (bits >> 16) & 1
    return ((bits + 0x7FFF + lsb) >> 16) & 0xFFFF


def decode(dtype, data):
    """The tensor's values as Python floats (exact: every dtype here fits a double)."""
    if dtype == "F32":
        return list(struct.unpack("<%df" % (len(data) // 4), data))
    if dtype == "F64":
        return list(struct.unpack("<%dd" % (len(data) // 8), data))
    if dtype == "F16":
        return list(struct.unpack("<%de" % (len(data) // 2), data))
    if dtype == "BF16":
        halves = struct.unpack("<%dH" % (len(data) // 2), data)
        return list(struct.unpack("<%df" % len(halves), struct.pack("<%dI" % len(halves), *[h << 16 for h in halves])))
    raise CheckFailed("cannot decode dtype %s" % dtype)


def encode(dtype, values):
    if dtype == "F32":
        return struct.pack("<%df" % len(values), *values)
    if dtype == "F64":
        return struct.pack("<%dd" % len(values), *values)
    if dtype == "F16":
        # struct's 'e' rounds to nearest even and raises OverflowError past 65504.
        return struct.pack("<%de" % len(values), *values)
    if dtype == "BF16":
        # Every value given here is a float32 already (decoded from F32/BF16/F16), so one rounding.
        return struct.pack("<%dH" % len(values), *[bf16_bits_from_f32_bits(f32_bits(v)) for v in values])
    raise CheckFailed("cannot encode dtype %s" % dtype)


# ---- writing ----

def safetensors_bytes(tensors):
    """tensors: list of (name, dtype, shape, raw bytes), written in this order."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, dtype, shape, raw in tensors:
        assert len(raw) == math.prod(shape) * DTYPE_SIZE[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(raw for _, _, _, raw in tensors)


def llama_tensors(cfg, tied):
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hq = cfg["num_attention_heads"]
    hkv = cfg.get("num_key_value_heads") or hq
    hd = cfg.get("head_dim") or d // hq
    shapes = [("model.embed_tokens.weight", [v, d])]
    for i in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % i
        shapes += [
            (p + "input_layernorm.weight", [d]),
            (p + "self_attn.q_proj.weight", [hq * hd, d]),
            (p + "self_attn.k_proj.weight", [hkv * hd, d]),
            (p + "self_attn.v_proj.weight", [hkv * hd, d]),
            (p + "self_attn.o_proj.weight", [d, hq * hd]),
            (p + "post_attention_layernorm.weight", [d]),
            (p + "mlp.gate_proj.weight", [f, d]),
            (p + "mlp.up_proj.weight", [f, d]),
            (p + "mlp.down_proj.weight", [d, f]),
        ]
    shapes.append(("model.norm.weight", [d]))
    if not tied:
        shapes.append(("lm_head.weight", [v, d]))
    return shapes


def write(args):
    with open(args.config) as fh:
        cfg = json.load(fh)
    tied = args.variant == "tied"
    dtype = "BF16" if args.variant == "bf16-sharded" else "F32"
    cfg["tie_word_embeddings"] = tied
    cfg["torch_dtype"] = {"BF16": "bfloat16", "F32": "float32"}[dtype]
    cfg.setdefault("architectures", ["LlamaForCausalLM"])
    rng = random.Random(args.seed)
    tensors = []
    for name, shape in llama_tensors(cfg, tied):
        n = math.prod(shape)
        if name.endswith("norm.weight"):
            values = [1.0 + rng.gauss(0.0, 0.1) for _ in range(n)]
        else:
            values = [rng.gauss(0.0, 0.05) for _ in range(n)]
        # Through float32 first, so BF16 is one rounding of a float32, as torch would store it.
        values = list(struct.unpack("<%df" % n, struct.pack("<%df" % n, *values)))
        tensors.append((name, dtype, shape, encode(dtype, values)))

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
    for name, content in TOKENIZER_FILES.items():
        with open(os.path.join(args.out, name), "w") as fh:
            json.dump(content, fh)
    if args.variant != "bf16-sharded":
        with open(os.path.join(args.out, "model.safetensors"), "wb") as fh:
            fh.write(safetensors_bytes(tensors))
        return
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    inv_freq = [1.0 / (cfg.get("rope_theta", 10000.0) ** (2 * i / hd)) for i in range(hd // 2)]
    tensors.append(("model.layers.0.self_attn.rotary_emb.inv_freq", "F32", [hd // 2], encode("F32", inv_freq)))
    # Dealt round-robin, so no shard holds a run of the model's order: a reader must follow the index.
    count = 3
    shards = [tensors[i::count] for i in range(count)]
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = "model-%05d-of-%05d.safetensors" % (i + 1, count)
        with open(os.path.join(args.out, fname), "wb") as fh:
            fh.write(safetensors_bytes(shard))
        for name, _, _, _ in shard:
            weight_map[name] = fname
    total = sum(len(raw) for _, _, _, raw in tensors)
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, fh, indent=2)


# ---- checking ----

def read_safetensors(path):
    """{name: (dtype, shape, raw bytes)}, after checking every header rule."""
    with open(path, "rb") as fh:
        data = fh.read()
    where = os.path.basename(path)
    if len(data) < 8:
        raise CheckFailed("%s: %d bytes, too short for the header length" % (where, len(data)))
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise CheckFailed("%s: header length %d runs past the end of the file" % (where, n))
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckFailed("%s: header is not JSON: %s" % (where, e))
    if not isinstance(header, dict):
        raise CheckFailed("%s: header is not a JSON object" % where)
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or meta.get("format") != "pt":
        raise CheckFailed("%s: __metadata__ is %r; transformers needs {\"format\": \"pt\"}" % (where, meta))
    body = data[8 + n:]
    spans, out = [], {}
    for name, entry in header.items():
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in DTYPE_SIZE:
            raise CheckFailed("%s: %s: unknown dtype %r" % (where, name, dtype))
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise CheckFailed("%s: %s: bad shape %r" % (where, name, shape))
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets):
            raise CheckFailed("%s: %s: bad data_offsets %r" % (where, name, offsets))
        begin, end = offsets
        if not 0 <= begin <= end <= len(body):
            raise CheckFailed("%s: %s: data_offsets %r outside the %d data bytes" % (where, name, offsets, len(body)))
        if end - begin != math.prod(shape) * DTYPE_SIZE[dtype]:
            raise CheckFailed("%s: %s: %d bytes for shape %r of %s" % (where, name, end - begin, shape, dtype))
        spans.append((begin, end, name))
        out[name] = (dtype, shape, body[begin:end])
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise CheckFailed("%s: %s starts at %d, expected %d (offsets must be contiguous)" % (where, name, begin, position))
        position = end
    if position != len(body):
        raise CheckFailed("%s: tensors end at %d but the data section has %d bytes" % (where, position, len(body)))
    return out


def read_weights(directory):
    """{name: (dtype, shape, raw)} and the list of shard files, after checking the index."""
    index_path = os.path.join(directory, "model.safetensors.index.json")
    shard_pattern = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors$")
    present = sorted(f for f in os.listdir(directory) if f.endswith(".safetensors"))
    if not os.path.exists(index_path):
        if present != ["model.safetensors"]:
            raise CheckFailed("no index, so exactly model.safetensors expected; found %r" % present)
        return read_safetensors(os.path.join(directory, "model.safetensors")), present
    with open(index_path) as fh:
        index = json.load(fh)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckFailed("index: weight_map is not an object of strings")
    named = sorted(set(weight_map.values()))
    if named != present:
        raise CheckFailed("index names shards %r, the directory holds %r" % (named, present))
    for f in named:
        m = shard_pattern.match(f)
        if not m or int(m.group(2)) != len(named) or not 1 <= int(m.group(1)) <= len(named):
            raise CheckFailed("shard %s is not named model-0000i-of-%05d.safetensors" % (f, len(named)))
    tensors = {}
    for f in named:
        for name, value in read_safetensors(os.path.join(directory, f)).items():
            if name in tensors:
                raise CheckFailed("tensor %s is in two shards" % name)
            if weight_map.get(name) != f:
                raise CheckFailed("tensor %s is in %s but the index says %r" % (name, f, weight_map.get(name)))
            tensors[name] = value
    for name, f in weight_map.items():
        if name not in tensors:
            raise CheckFailed("index maps %s to %s, which does not hold it" % (name, f))
    total = sum(len(raw) for _, _, raw in tensors.values())
    meta = index.get("metadata")
    if not isinstance(meta, dict) or meta.get("total_size") != total:
        raise CheckFailed("index metadata.total_size is %r, the tensors hold %d bytes" %
                          (meta.get("total_size") if isinstance(meta, dict) else meta, total))
    return tensors, named


def check(args):
    with open(os.path.join(args.dir, "config.json")) as fh:
        try:
            cfg = json.load(fh)
        except json.JSONDecodeError as e:
            raise CheckFailed("config.json is not JSON: %s" % e)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_type"), str):
        raise CheckFailed("config.json has no model_type")
    dtype = TORCH_DTYPE.get(cfg.get("torch_dtype"))
    if dtype is None:
        raise CheckFailed("config.json torch_dtype is %r" % cfg.get("torch_dtype"))
    tensors, shards = read_weights(args.dir)
    for name, (tdtype, _, _) in tensors.items():
        if tdtype != dtype:
            raise CheckFailed("tensor %s is %s, config.json torch_dtype says %s" % (name, tdtype, cfg["torch_dtype"]))

    if args.source:
        with open(os.path.join(args.source, "config.json")) as fh:
            source_cfg = json.load(fh)
        for key, value in source_cfg.items():
            if key in ("torch_dtype", "dtype", "architectures"):
                continue
            if cfg.get(key, "<missing>") != value:
                raise CheckFailed("config.json %s is %r, the source has %r" % (key, cfg.get(key, "<missing>"), value))
        source, _ = read_weights(args.source)
        expected = {n for n in source if not n.endswith("rotary_emb.inv_freq")}
        if cfg.get("tie_word_embeddings"):
            expected.discard("lm_head.weight")
        if set(tensors) != expected:
            raise CheckFailed("tensors differ from the source: missing %r, extra %r" %
                              (sorted(expected - set(tensors)), sorted(set(tensors) - expected)))
        for name in sorted(expected):
            sdtype, sshape, sraw = source[name]
            _, shape, raw = tensors[name]
            if shape != sshape:
                raise CheckFailed("tensor %s has shape %r, the source %r" % (name, shape, sshape))
            want = sraw if sdtype == dtype else encode(dtype, decode(sdtype, sraw))
            if raw != want:
                first = next(i for i in range(len(raw)) if raw[i] != want[i])
                raise CheckFailed("tensor %s differs from the source converted to %s at byte %d" % (name, dtype, first))
    print("ok: %d tensors in %d shard(s), %s" % (len(tensors), len(shards), cfg["torch_dtype"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write")
    w.add_argument("out")
    w.add_argument("--config", required=True)
    w.add_argument("--variant", required=True, choices=["bf16-sharded", "fp32-single", "tied"])
    w.add_argument("--seed", type=int, default=1234)
    c = sub.add_parser("check")
    c.add_argument("dir")
    c.add_argument("--source")
    args = ap.parse_args()
    if args.command == "write":
        write(args)
        return
    try:
        check(args)
    except (CheckFailed, OSError, ValueError) as e:
        print("FAIL: %s" % e, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
