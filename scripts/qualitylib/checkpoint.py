"""A numpy reader of anybit's quantized checkpoint format (docs/quantize.md, version 1): packed
codes, scales and zero points back to float32 weights. `scripts/quality-test` compares it with
`anybit dequantize`, so the measured weights are checked against the format's description."""
import json
import subprocess

import numpy as np

from . import safetensors
from .metrics import dtype_bits


def code_values(binary, dtype):
    """The value of every code of a small float (from `anybit dtype show`)."""
    listing = subprocess.run([binary, "dtype", "show", dtype], stdout=subprocess.PIPE, text=True,
                             check=True).stdout
    pairs = [line.split() for line in listing.splitlines() if line.strip()]
    values = np.zeros(1 << dtype_bits(dtype), dtype=np.float64)
    for code, value in pairs:
        values[int(code)] = float(value)
    return values


def unpack(packed, count, bits):
    """Codes of a little-endian bit stream, `bits` each."""
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if count % 8 == 0:
        # Every 8 codes fill `bits` whole bytes: read them as one little-endian integer.
        chunks = packed[:count // 8 * bits].reshape(-1, bits).astype(np.uint64)
        word = np.zeros(len(chunks), dtype=np.uint64)
        for byte in range(bits):
            word |= chunks[:, byte] << np.uint64(8 * byte)
        shifts = np.arange(8, dtype=np.uint64) * np.uint64(bits)
        mask = np.uint64((1 << bits) - 1)
        return ((word[:, None] >> shifts[None, :]) & mask).astype(np.uint32).reshape(-1)
    stream = np.unpackbits(packed, bitorder="little")
    stream = stream[:count * bits].reshape(count, bits).astype(np.uint32)
    return (stream << np.arange(bits, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)


def dequantize(path, binary):
    """Every quantized weight of the file at `path` (name → float32 [N, K])."""
    tensors, metadata = safetensors.read(path)
    if metadata.get("anybit.format_version") != "1":
        raise ValueError(f"{path}: not an anybit checkpoint of format version 1")
    tables = {}
    out = {}
    for key, text in metadata.items():
        if not key.startswith("anybit.") or key == "anybit.format_version":
            continue
        name = key[len("anybit."):]
        info = json.loads(text)
        rows, cols = info["shape"]
        dtype, bits, group = info["dtype"], dtype_bits(info["dtype"]), info["group_size"]
        codes = unpack(tensors[name + ".codes"], rows * cols, bits).reshape(rows, cols)

        def per_column(per_group):
            """[rows, ⌈cols / group⌉] → [rows, cols]: a short last group (the group size does
            not divide K) covers only the columns there are."""
            return np.repeat(per_group, group, axis=1)[:, :cols]

        if dtype[0] in "ui":
            # Integer codes times an f16/bf16 scale need at most 9 + 11 significant bits:
            # float32 holds the exact product the format defines (computed in f64).
            if dtype.startswith("u"):
                zeros = tensors[name + ".zeros"].astype(np.float32)
                values = codes.astype(np.float32) - per_column(zeros)
            else:
                half = 1 << (bits - 1)
                values = (((codes + half) & ((1 << bits) - 1)).astype(np.int32) - half)
                values = values.astype(np.float32)
            scales = tensors[name + ".scales"]
            if info["scale_dtype"] == "f32":
                values = values.astype(np.float64)
            out[name] = (values * per_column(scales)).astype(np.float32)
        else:
            if dtype not in tables:
                tables[dtype] = code_values(binary, dtype)
            scales = per_column(tensors[name + ".scales"].astype(np.float64))
            out[name] = (tables[dtype][codes] * scales).astype(np.float32)
        if info.get("permuted"):
            # Stored column j is column perm[j] of the original weight (GPTQ act-order imports).
            restored = np.empty_like(out[name])
            restored[:, tensors[name + ".perm"]] = out[name]
            out[name] = restored
    return out
