"""Shared helpers: a torch reference of quantization, code unpacking, and a writer of the
anybit checkpoint format (docs/quantize.md) for the load tests."""

import json
import struct

import pytest
import torch

import anybit
from anybit import _native


def unpack_codes(codes: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The codes of a little-endian bit stream: element i at bits [i·b, (i+1)·b)."""
    data = codes.reshape(-1).to(torch.int64)
    stream = ((data[:, None] >> torch.arange(8)) & 1).reshape(-1)[: count * bits]
    return (stream.reshape(count, bits) << torch.arange(bits)).sum(-1)


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """The inverse of unpack_codes."""
    values = codes.reshape(-1).to(torch.int64)
    stream = ((values[:, None] >> torch.arange(bits)) & 1).reshape(-1)
    padded = torch.zeros((stream.numel() + 7) // 8 * 8, dtype=torch.int64)
    padded[: stream.numel()] = stream
    return (padded.reshape(-1, 8) << torch.arange(8)).sum(-1).to(torch.uint8)


def code_table(dtype: str) -> torch.Tensor:
    """The value of every code of `dtype`, in f64."""
    return torch.tensor(_native.code_values(dtype), dtype=torch.float64)


def round_up_to(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The smallest value of `dtype` at or above each f64 value (positive values)."""
    rounded = values.to(dtype).to(torch.float64)
    below = rounded < values
    if below.any():
        bumped = torch.nextafter(
            values.to(dtype)[below], torch.tensor(float("inf"), dtype=dtype)
        ).to(torch.float64)
        rounded[below] = bumped
    return rounded


def reference_quantize(w: torch.Tensor, dtype: str, group_size, scale_dtype):
    """Round-to-nearest group quantization in f64, as docs/dtypes.md describes it: returns
    (codes [n, k] int64, scales [n, groups] f64, zeros [n, groups] f64 or None). A short last
    group (a group size that does not divide K) is its elements with zeros after them: zeros
    change neither its range nor its codes, and their codes are dropped."""
    n, k = w.shape
    group = k if group_size is None else group_size
    count = -(-k // group)
    padded = torch.zeros(n, count * group, dtype=torch.float64)
    padded[:, :k] = w.to(torch.float64)
    groups = padded.reshape(n, count, group)
    highest = groups.clamp(min=0).amax(-1)
    lowest = groups.clamp(max=0).amin(-1)
    bits = int(dtype[1:].split("e")[0])
    if dtype.startswith("u"):
        top = float((1 << bits) - 1)
        scale = (highest - lowest) / top
    elif dtype.startswith("i"):
        scale = torch.maximum(highest / ((1 << (bits - 1)) - 1), lowest / -(1 << (bits - 1)))
    else:
        table = code_table(dtype)
        scale = torch.maximum(highest, -lowest) / table[torch.isfinite(table)].max()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    scale = round_up_to(scale, scale_dtype)
    if dtype.startswith("u"):
        zero = torch.round(-lowest / scale).clamp(0, top)
        codes = (torch.round(groups / scale[..., None]) + zero[..., None]).clamp(0, top)
        return codes.reshape(n, -1)[:, :k].to(torch.int64), scale, zero
    if dtype.startswith("i"):
        half = 1 << (bits - 1)
        codes = torch.round(groups / scale[..., None]).clamp(-half, half - 1)
        return (codes.to(torch.int64) % (1 << bits)).reshape(n, -1)[:, :k], scale, None
    return None, scale, None


def dequantize_reference(weight: anybit.QuantizedWeight) -> torch.Tensor:
    """(decode(q) − z) · s in f64 from the plain parts, with the code table."""
    n, k = weight.shape
    codes = unpack_codes(weight.codes, weight.bits, n * k).reshape(n, k)
    values = code_table(weight.dtype)[codes]
    group = k if weight.group_size is None else weight.group_size
    # [:, :k]: a short last group's scale covers only the columns that are there.
    scales = weight.scales.to(torch.float64).repeat_interleave(group, dim=1)[:, :k]
    if weight.zeros is not None:
        values = values - weight.zeros.to(torch.float64).repeat_interleave(group, dim=1)[:, :k]
    return values * scales


_SAFETENSORS_DTYPES = {
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.uint8: "U8",
    torch.int64: "I64",
    torch.int32: "I32",
}


def write_safetensors(path, tensors, metadata):
    """A safetensors file: 8-byte header length, JSON header, then the tensors' bytes."""
    header = {"__metadata__": metadata}
    offset = 0
    blobs = []
    for name, tensor in tensors.items():
        tensor = tensor.contiguous()
        data = tensor.view(torch.uint8).reshape(-1).numpy().tobytes() if tensor.numel() else b""
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def write_quantized_checkpoint(path, quantized, plain):
    """An anybit quantized checkpoint (format version 1) of `quantized` (name → QuantizedWeight)
    and `plain` (name → tensor)."""
    tensors = dict(plain)
    metadata = {"anybit.format_version": "1"}
    names = {torch.float16: "f16", torch.bfloat16: "bf16", torch.float32: "f32"}
    for name, weight in quantized.items():
        n, k = weight.shape
        tensors[name + ".codes"] = weight.codes
        tensors[name + ".scales"] = weight.scales
        if weight.zeros is not None:
            tensors[name + ".zeros"] = weight.zeros
        extra = {}
        if weight.perm is not None:
            tensors[name + ".perm"] = weight.perm.to(torch.int32)
            extra["permuted"] = True
        metadata["anybit." + name] = json.dumps(
            {
                **extra,
                "dtype": weight.dtype,
                "group_size": weight.group_size or k,
                "shape": [n, k],
                "scale_dtype": names[weight.scale_dtype],
                "zero_points": weight.zeros is not None,
                "source_dtype": "F16",
                "search": "none",
            }
        )
    write_safetensors(path, tensors, metadata)


@pytest.fixture
def generator():
    """Fresh random data every run (the seed is printed on failure)."""
    seed = torch.seed() % (1 << 31)
    print(f"seed {seed}")
    return torch.Generator().manual_seed(seed)
