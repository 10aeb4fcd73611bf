#!/usr/bin/env python3
"""An independent safetensors writer and checker (standard library only) for lyre's tests.

  safetensors_reference.py write OUT   writes OUT with several dtypes, shapes and metadata, laid
                                       out unlike lyre's writer (data in a different order from
                                       the header's), and prints what it wrote as JSON
  safetensors_reference.py read IN     checks IN's layout the way the format defines it and prints
                                       its tensors and metadata as JSON

Printed floats are float.hex() strings (exact, and "inf"/"nan" survive); other values are JSON
numbers or booleans. Errors go to stderr with exit status 1.
"""
import json
import struct
import sys

# dtype -> (bytes per element, struct code); BF16 is packed by hand.
DTYPES = {
    "F64": (8, "d"), "F32": (4, "f"), "F16": (2, "e"), "BF16": (2, None),
    "I64": (8, "q"), "I32": (4, "i"), "I16": (2, "h"), "I8": (1, "b"), "U8": (1, "B"),
    "BOOL": (1, "?"),
}


def numel(shape):
    count = 1
    for dim in shape:
        count *= dim
    return count


def pack(dtype, values):
    if dtype == "BF16":
        # Only values exact in bf16 are written, so truncating the float32 bits is exact.
        out = b""
        for v in values:
            bits = struct.unpack("<I", struct.pack("<f", v))[0]
            assert bits & 0xFFFF == 0, f"{v} is not exact in bf16"
            out += struct.pack("<H", bits >> 16)
        return out
    return struct.pack("<%d%s" % (len(values), DTYPES[dtype][1]), *values)


def unpack(dtype, raw):
    count = len(raw) // DTYPES[dtype][0]
    if dtype == "BF16":
        halves = struct.unpack("<%dH" % count, raw)
        return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in halves]
    return list(struct.unpack("<%d%s" % (count, DTYPES[dtype][1]), raw))


def printable(dtype, values):
    return [v.hex() if dtype in ("F64", "F32", "F16", "BF16") else v for v in values]


# name -> (dtype, shape, values)
TENSORS = {
    "embed.weight": ("BF16", [2, 3], [1.0, -2.5, 0.0078125, -0.0, 3.3895313892515355e38, 65280.0]),
    "norm.weight": ("F32", [4], [1.0, -1.5, 3.4028234663852886e38, 1.401298464324817e-45]),
    "half": ("F16", [3], [65504.0, -5.960464477539063e-08, 0.333251953125]),
    "double": ("F64", [1, 2], [0.1, -1.0e300]),
    "scalar": ("I64", [], [-9007199254740993]),
    "empty": ("F32", [0, 3], []),
    "ids": ("I32", [2, 2], [-2147483648, 2147483647, 0, 7]),
    "short": ("I16", [2], [-32768, 32767]),
    "bytes": ("I8", [3], [-128, 127, -1]),
    "ubytes": ("U8", [3], [0, 255, 17]),
    "mask": ("BOOL", [2, 2], [True, False, False, True]),
}
METADATA = {"format": "pt", "writer": "safetensors_reference.py"}


def write(path):
    # Data goes in reverse name order while the header lists names in insertion order, so a
    # reader that assumes header order equals data order fails.
    data_order = sorted(TENSORS, reverse=True)
    offsets, blob = {}, b""
    for name in data_order:
        dtype, shape, values = TENSORS[name]
        assert len(values) == numel(shape)
        raw = pack(dtype, values)
        offsets[name] = [len(blob), len(blob) + len(raw)]
        blob += raw
    header = {"__metadata__": METADATA}
    for name, (dtype, shape, _) in TENSORS.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": offsets[name]}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + blob)
    print(json.dumps(listing(METADATA, {n: (d, s, pack(d, v)) for n, (d, s, v) in TENSORS.items()})))


def listing(metadata, tensors):
    return {
        "metadata": metadata,
        "tensors": {n: {"dtype": d, "shape": s, "values": printable(d, unpack(d, raw))}
                    for n, (d, s, raw) in tensors.items()},
    }


def fail(message):
    print(message, file=sys.stderr)
    sys.exit(1)


def read(path):
    with open(path, "rb") as f:
        content = f.read()
    if len(content) < 8:
        fail("shorter than 8 bytes")
    (n,) = struct.unpack("<Q", content[:8])
    if n % 8 != 0:
        fail(f"header length {n} is not a multiple of 8")
    if 8 + n > len(content):
        fail(f"header length {n} runs past the end")

    def no_duplicates(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            fail(f"duplicate keys in {keys}")
        return dict(pairs)

    header = json.loads(content[8:8 + n].decode("utf-8"), object_pairs_hook=no_duplicates)
    data = content[8 + n:]
    metadata = header.pop("__metadata__", {})
    if not all(isinstance(v, str) for v in metadata.values()):
        fail("metadata values must be strings")
    # The writer promises offsets contiguous in the header's order, starting at 0.
    position, tensors = 0, {}
    for name, entry in header.items():
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        if begin != position:
            fail(f"{name}: begins at {begin}, expected {position}")
        if end - begin != numel(shape) * DTYPES[dtype][0]:
            fail(f"{name}: {end - begin} bytes for shape {shape} of {dtype}")
        tensors[name] = (dtype, shape, data[begin:end])
        position = end
    if position != len(data):
        fail(f"tensors end at {position}, data section is {len(data)} bytes")
    print(json.dumps({"order": list(header), **listing(metadata, tensors)}))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "read"):
        fail(__doc__)
    (write if sys.argv[1] == "write" else read)(sys.argv[2])
