#!/usr/bin/env python3
"""A second reader of TensorBoard event files, sharing no code with lyre's, to check its writer.

Standard library only: it walks the TFRecord framing, checks both masked CRC-32C values with its
own bitwise CRC, and decodes the protobuf wire format by hand using TensorBoard's field numbers
(Event: wall_time 1, step 2, file_version 3, summary 5; Summary: value 1; Value: tag 1,
simple_value 2). Prints one JSON object per scalar:
  {"tag": ..., "step": ..., "value_bits": <float32 bits>, "wall_time": ...}
and, as the first line, the file_version record: {"file_version": ..., "wall_time": ...}.
Bits rather than floats, so that NaN and infinities compare exactly and JSON stays standard.
On a bad file it prints "<path>: record at byte <offset>: <what>" to stderr and exits 1.

usage: tfevents_reference.py EVENT_FILE
"""
import json
import struct
import sys


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(data):
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


class BadProto(Exception):
    pass


def varint(buf, pos):
    result, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise BadProto("bad varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def fields(buf):
    """Yields (field number, wire type, value): int for varint, bytes for the others."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise BadProto("field number 0")
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1 or wire == 5:
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise BadProto("truncated fixed field")
            value, pos = buf[pos:pos + width], pos + width
        elif wire == 2:
            length, pos = varint(buf, pos)
            if pos + length > len(buf):
                raise BadProto("truncated length-delimited field")
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise BadProto("unsupported wire type %d" % wire)
        yield number, wire, value


def decode_event(payload):
    event = {"wall_time": 0.0, "step": 0, "values": [], "file_version": None}
    for number, wire, value in fields(payload):
        if number == 1 and wire == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif number == 2 and wire == 0:
            event["step"] = value - (1 << 64) if value >= (1 << 63) else value
        elif number == 3 and wire == 2:
            event["file_version"] = value.decode("utf-8")
        elif number == 5 and wire == 2:
            for vnumber, vwire, entry in fields(value):
                if vnumber != 1 or vwire != 2:
                    continue
                tag, bits = "", None
                for enumber, ewire, evalue in fields(entry):
                    if enumber == 1 and ewire == 2:
                        tag = evalue.decode("utf-8")
                    elif enumber == 2 and ewire == 5:
                        bits = struct.unpack("<I", evalue)[0]
                if bits is not None:
                    event["values"].append((tag, bits))
    return event


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    out = []
    offset = 0
    while offset < len(data):
        def fail(what):
            raise SystemExit("%s: record at byte %d: %s" % (path, offset, what))

        if len(data) - offset < 12:
            fail("truncated record")
        header = data[offset:offset + 8]
        length = struct.unpack("<Q", header)[0]
        if struct.unpack("<I", data[offset + 8:offset + 12])[0] != masked(header):
            fail("length CRC mismatch")
        start = offset + 12
        if start + length + 4 > len(data):
            fail("truncated record")
        payload = data[start:start + length]
        if struct.unpack("<I", data[start + length:start + length + 4])[0] != masked(payload):
            fail("data CRC mismatch")
        try:
            event = decode_event(payload)
        except (BadProto, UnicodeDecodeError):
            fail("not an Event protobuf")
        if event["file_version"] is not None:
            out.append({"file_version": event["file_version"], "wall_time": event["wall_time"]})
        for tag, bits in event["values"]:
            out.append({"tag": tag, "step": event["step"], "value_bits": bits, "wall_time": event["wall_time"]})
        offset = start + length + 4
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    for line in read(sys.argv[1]):
        print(json.dumps(line))
