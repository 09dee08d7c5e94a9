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
    stream = np.unpackbits(np.asarray(packed, dtype=np.uint8).reshape(-1), bitorder="little")
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
        if dtype.startswith("u"):
            values = codes.astype(np.float64)
            values -= np.repeat(tensors[name + ".zeros"].astype(np.float64), group, axis=1)
        elif dtype.startswith("i"):
            values = codes.astype(np.int64)
            values = np.where(values >= 1 << (bits - 1), values - (1 << bits), values)
            values = values.astype(np.float64)
        else:
            if dtype not in tables:
                tables[dtype] = code_values(binary, dtype)
            values = tables[dtype][codes]
        scales = np.repeat(tensors[name + ".scales"].astype(np.float64), group, axis=1)
        out[name] = (values * scales).astype(np.float32)
    return out
