#!/usr/bin/env python3
"""Writes the small valid GGUF files that seed fuzz_gguf (tests/fuzz/corpus/fuzz_gguf/).
Plain struct packing, no dependencies: python3 tests/fuzz/make_gguf_seeds.py"""
import os
import struct

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f",
          BOOL: "<?", U64: "<Q", I64: "<q", F64: "<d"}
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q4_1, GGML_Q8_0, GGML_BF16 = 0, 1, 2, 3, 8, 30
BLOCK = {GGML_F32: (1, 4), GGML_F16: (1, 2), GGML_BF16: (1, 2), GGML_Q8_0: (32, 34),
         GGML_Q4_0: (32, 18), GGML_Q4_1: (32, 20)}


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def value(t, v):
    if t == STR:
        return gstr(v)
    if t == ARR:
        elem_type, items = v
        return struct.pack("<IQ", elem_type, len(items)) + b"".join(value(elem_type, x) for x in items)
    return struct.pack(SCALAR[t], v)


def gguf(kvs, tensors, version=3, alignment=32):
    """kvs: [(key, type, value)]; tensors: [(name, ne, ggml_type)], data filled with a pattern."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, t, v in kvs:
        out += gstr(key) + struct.pack("<I", t) + value(t, v)
    offset, blobs = 0, []
    for name, ne, t in tensors:
        n = 1
        for d in ne:
            n *= d
        per, size = BLOCK[t]
        nbytes = n // per * size
        out += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", t, offset)
        # Scales stay small finite halves (0x3c00 = 1.0) so conversions give ordinary numbers.
        blob = bytes((i * 37 + 11) % 251 for i in range(nbytes))
        if t in (GGML_Q8_0, GGML_Q4_0, GGML_Q4_1):
            blob = bytearray(blob)
            for b in range(0, nbytes, size):
                blob[b:b + 2] = b"\x00\x3c"
                if t == GGML_Q4_1:
                    blob[b + 2:b + 4] = b"\x00\xbc"
            blob = bytes(blob)
        blobs.append((offset, blob))
        offset += (nbytes + alignment - 1) // alignment * alignment
    out += b"\0" * (-len(out) % alignment)
    start = len(out)
    for off, blob in blobs:
        out += b"\0" * (start + off - len(out)) + blob
    return out


def main():
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_gguf")
    os.makedirs(here, exist_ok=True)
    every_type = [
        ("general.architecture", STR, "llama"), ("k.u8", U8, 7), ("k.i8", I8, -7),
        ("k.u16", U16, 700), ("k.i16", I16, -700), ("k.u32", U32, 30), ("k.i32", I32, -30),
        ("k.f32", F32, 0.5), ("k.bool", BOOL, True), ("k.u64", U64, 1 << 40),
        ("k.i64", I64, -(1 << 40)), ("k.f64", F64, 1e-5),
        ("tokenizer.ggml.tokens", ARR, (STR, ["<s>", "</s>", "a", "b", ""])),
        ("tokenizer.ggml.token_type", ARR, (I32, [3, 3, 1, 1, 1])),
        ("a.f32", ARR, (F32, [0.25, -1.0])), ("a.bool", ARR, (BOOL, [True, False])),
    ]
    six = [("t.f32", [4, 2], GGML_F32), ("t.f16", [8], GGML_F16), ("t.bf16", [2, 2], GGML_BF16),
           ("t.q8_0", [32, 2], GGML_Q8_0), ("t.q4_0", [32], GGML_Q4_0),
           ("t.q4_1", [32, 1, 2], GGML_Q4_1)]
    seeds = {
        "every_type.gguf": gguf(every_type, six),
        "v2_align8.gguf": gguf([("general.alignment", U32, 8), ("llama.block_count", U32, 2)],
                               six[:3], version=2, alignment=8),
        "empty.gguf": gguf([], []),
        "metadata_only.gguf": gguf(every_type, []),
        "four_dims_and_empty.gguf": gguf([("general.alignment", U32, 16)],
                                         [("w4", [32, 2, 1, 2], GGML_Q8_0), ("none", [0], GGML_F32),
                                          ("scalar", [], GGML_F32)], alignment=16),
    }
    for name, data in seeds.items():
        assert len(data) < 4096, name
        with open(os.path.join(here, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
