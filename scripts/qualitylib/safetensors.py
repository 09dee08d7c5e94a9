"""Reading and writing safetensors files with numpy (the format: an 8-byte little-endian header
length, a JSON header naming each tensor's dtype, shape and byte range, then the data).

Only what the quality measurement needs: F32 tensors are written; F32, F16 and BF16 are read as
float32, U8 and I32 as they are (F32, U8 and I32 without a copy, from the file mapped).
"""
import json
import os
import struct

import numpy as np

_READ = {"F32": np.float32, "F16": np.float16}


def write(path, tensors, metadata=None):
    """Writes `tensors` (name → float32 array) to `path` atomically."""
    header = {}
    offset = 0
    arrays = []
    for name, value in tensors.items():
        array = np.ascontiguousarray(value, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        arrays.append(array)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # data starts 8-byte aligned
    temporary = path + ".tmp"
    with open(temporary, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for array in arrays:
            f.write(array.tobytes())
    os.replace(temporary, path)


def read(path):
    """Reads every tensor of `path` (name → array) and the metadata. The file is mapped, not
    copied: F32, U8 and I32 tensors are read-only views of the mapping (which stays valid after
    the file is removed); F16 and BF16 become float32 arrays."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (too short)")
    (length,) = struct.unpack("<Q", data[:8].tobytes())
    if 8 + length > len(data):
        raise ValueError(f"{path}: header length {length} beyond the file")
    header = json.loads(data[8:8 + length].tobytes())
    metadata = header.pop("__metadata__", {})
    base = 8 + length
    tensors = {}
    for name, entry in header.items():
        start, end = entry["data_offsets"]
        dtype = entry["dtype"]
        raw = data[base + start:base + end]
        if dtype in ("U8", "I32"):
            kind = np.uint8 if dtype == "U8" else np.dtype("<i4")
            tensors[name] = _view(raw, kind).reshape(entry["shape"])
            continue
        if dtype == "BF16":
            bits = _view(raw, "<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif dtype in _READ:
            array = _view(raw, np.dtype(_READ[dtype]).newbyteorder("<"))
        else:
            raise ValueError(f"{path}: tensor {name} has dtype {dtype}; expected F32, F16 or BF16")
        tensors[name] = array.astype(np.float32, copy=False).reshape(entry["shape"])
    return tensors, metadata


def _view(raw, dtype):
    """`raw` bytes as an array of `dtype`: a view where they are aligned for it, else a copy."""
    dtype = np.dtype(dtype)
    if raw.ctypes.data % dtype.alignment == 0:
        return np.asarray(raw).view(dtype)
    return np.frombuffer(raw.tobytes(), dtype=dtype)
