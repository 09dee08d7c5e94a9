"""Quantized weights: quantization, the prepared kernel layout, and checkpoints.

A :class:`QuantizedWeight` holds the plain form of a quantized ``[N, K]`` weight (the codes
packed as the dtype crate packs them, one scale per group and, for unsigned types, one
zero-point code per group) on the CPU, and, once moved to a CUDA device, the prepared layout
the kernels read, on that device. The plain form is what files hold; the prepared one is made
once, when the weight is moved to a GPU, and kept.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Tuple, Union

import torch

from . import _native

#: The weight types the kernels take: integers of 1 to 8 bits (``i1`` excepted: no symmetric
#: range fits it) and every small float ``f{bits}e{E}m{M}`` of at most 8 bits.
WEIGHT_TYPES = tuple(
    [f"u{bits}" for bits in range(1, 9)]
    + [f"i{bits}" for bits in range(2, 9)]
    + [
        f"f{1 + e + m}e{e}m{m}"
        for e in range(1, 8)
        for m in range(0, 7)
        if 2 <= 1 + e + m <= 8
    ]
)

#: Group sizes along K; ``None`` means one group per row (per channel). A size that does not
#: divide K leaves each row a short last group (``K mod group_size`` elements), as GPTQ's
#: ``g_idx = k // group_size`` does: the CPU path takes it, and so does the CUDA path where K
#: is a multiple of 16 (as the kernels need of any weight in groups).
GROUP_SIZES = (16, 32, 64, 128, 256, None)

#: K of a weight in groups (any size of :data:`GROUP_SIZES` but ``None``) is a multiple of
#: this on the CUDA path, whether the group size divides K or leaves a short last group: the
#: kernels' own rule (``Group::K_MULTIPLE`` of the Rust library, whose format check refuses
#: such a weight too, later, when it is prepared; a test keeps the two in step). Per channel,
#: any K.
_KERNEL_K_MULTIPLE = 16

_SCALE_DTYPES = {
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float32: "f32",
}
_SCALE_DTYPE_NAMES = {
    "f16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "f32": torch.float32,
    "float32": torch.float32,
}
_WEIGHT_SOURCE = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}


def _bits(dtype: str) -> int:
    return int(dtype[1:].split("e")[0])


def _is_weight_type(dtype: str) -> bool:
    try:
        _native.code_values(dtype)
    except ValueError:
        return False
    return dtype != "i1"


def _check_weight_type(dtype) -> str:
    if not isinstance(dtype, str):
        raise TypeError(
            f"dtype must be a weight type name such as 'u4', 'i3' or 'f6e3m2', not {type(dtype).__name__}"
        )
    if dtype not in WEIGHT_TYPES and not _is_weight_type(dtype):
        raise ValueError(
            f"weight type {dtype!r} is not supported: use u1..u8, i2..i8 or a small float "
            f"f{{bits}}e{{E}}m{{M}} of at most 8 bits (for example f4e2m1, f6e3m2, f8e4m3)"
        )
    return dtype


def _check_group(group_size, k: int) -> Optional[int]:
    if group_size is not None and (
        isinstance(group_size, bool) or not isinstance(group_size, int)
    ):
        raise TypeError(
            f"group_size must be an int or None (per channel), not {type(group_size).__name__}"
        )
    if group_size is not None and group_size not in GROUP_SIZES:
        raise ValueError(
            f"group size {group_size} is not supported: use 16, 32, 64, 128, 256 or None (per channel)"
        )
    return group_size


def _groups(group_size: Optional[int], k: int) -> int:
    """Groups per row: ⌈K / group_size⌉ (the last one short when the size does not divide K)."""
    return 1 if group_size is None else -(-k // group_size)


def _check_kernel_group(group_size: Optional[int], k: int) -> None:
    """The CUDA path takes a weight in groups where K is a multiple of
    :data:`_KERNEL_K_MULTIPLE` (a group size that does not divide K leaves a short last group,
    which the kernels take), and per channel any K. Checked here before anything is quantized,
    prepared or looked for on a GPU; the message names K and what works."""
    if group_size is not None and k % _KERNEL_K_MULTIPLE != 0:
        raise ValueError(f"{_kernel_k_problem(group_size, k)}: {_kernel_k_choices(k)}")


def _kernel_k_problem(group_size: int, k: int) -> str:
    return (
        f"K = {k} is not a multiple of {_KERNEL_K_MULTIPLE}, which the CUDA path needs of a "
        f"weight in groups (here of {group_size}; a group size that does not divide K leaves "
        f"a short last group, which it takes, but K itself must be a multiple of "
        f"{_KERNEL_K_MULTIPLE})"
    )


def _kernel_k_choices(k: int) -> str:
    return (
        f"for CUDA, quantize it per channel (group_size=None), the one choice for K = {k}; "
        "or keep it on the CPU, which takes it as it is"
    )


def _scale_dtype(scale_dtype, default: torch.dtype) -> torch.dtype:
    if scale_dtype is None:
        return default
    if isinstance(scale_dtype, str):
        if scale_dtype not in _SCALE_DTYPE_NAMES:
            raise ValueError(
                f"scale_dtype {scale_dtype!r} is not supported: use torch.float16, torch.bfloat16 or torch.float32"
            )
        return _SCALE_DTYPE_NAMES[scale_dtype]
    if scale_dtype not in _SCALE_DTYPES:
        raise TypeError(
            f"scale_dtype {scale_dtype} is not supported: use torch.float16, torch.bfloat16 or torch.float32"
        )
    return scale_dtype


def _codes_shape(n: int, k: int, bits: int):
    row_bits = k * bits
    if row_bits % 8 == 0:
        return (n, row_bits // 8)
    return ((n * k * bits + 7) // 8,)


# Blocks of 8 codes (8 codes of b bits are exactly b bytes) unpacked or packed at a time: bounds
# the int64 temporaries to 64 MB.
_BLOCKS_PER_CHUNK = 1 << 20


def _unpack_codes(codes: torch.Tensor, bits: int, first: int, count: int) -> torch.Tensor:
    """Codes ``first .. first + count`` of the packed little-endian stream ``codes`` (code
    ``i`` at bits ``[i·b, (i+1)·b)``), one ``uint8`` each."""
    data = codes.reshape(-1)
    if bits == 8:
        return data[first : first + count].clone()
    # Start at the 8-code block holding `first`: a block begins on a byte boundary.
    block = first // 8
    skip = first - block * 8
    blocks = (skip + count + 7) // 8
    data = data[block * bits : (block + blocks) * bits]
    if data.numel() < blocks * bits:
        # The stream's last block may be cut short; its missing codes are never returned.
        data = torch.cat([data, data.new_zeros(blocks * bits - data.numel())])
    byte_shifts = 8 * torch.arange(bits, dtype=torch.int64)
    code_shifts = bits * torch.arange(8, dtype=torch.int64)
    mask = (1 << bits) - 1
    out = torch.empty(blocks * 8, dtype=torch.uint8)
    for start in range(0, blocks, _BLOCKS_PER_CHUNK):
        end = min(blocks, start + _BLOCKS_PER_CHUNK)
        # b ≤ 7 bytes per block: the word fits 56 bits, no sign bit involved.
        words = (data[start * bits : end * bits].view(-1, bits).to(torch.int64) << byte_shifts).sum(-1)
        out[start * 8 : end * 8] = ((words[:, None] >> code_shifts) & mask).reshape(-1).to(torch.uint8)
    return out[skip : skip + count]


def _pack_codes(values: torch.Tensor, bits: int) -> torch.Tensor:
    """The packed stream of ``uint8`` codes ``values`` (the inverse of :func:`_unpack_codes`),
    ``⌈count·b/8⌉`` bytes, the bits after the last code zero."""
    values = values.reshape(-1)
    count = values.numel()
    if bits == 8:
        return values.clone()
    blocks = (count + 7) // 8
    if blocks * 8 != count:
        values = torch.cat([values, values.new_zeros(blocks * 8 - count)])
    byte_shifts = 8 * torch.arange(bits, dtype=torch.int64)
    code_shifts = bits * torch.arange(8, dtype=torch.int64)
    out = torch.empty(blocks * bits, dtype=torch.uint8)
    for start in range(0, blocks, _BLOCKS_PER_CHUNK):
        end = min(blocks, start + _BLOCKS_PER_CHUNK)
        words = (values[start * 8 : end * 8].view(-1, 8).to(torch.int64) << code_shifts).sum(-1)
        out[start * bits : end * bits] = ((words[:, None] >> byte_shifts) & 0xFF).reshape(-1).to(torch.uint8)
    return out[: (count * bits + 7) // 8]


def _working_world_sizes(parts: int, limit: int = 64) -> str:
    """The world sizes up to ``limit`` that divide ``parts`` (the whole units of a split)."""
    sizes = ", ".join(str(size) for size in range(1, min(parts, limit) + 1) if parts % size == 0)
    return sizes if parts <= limit else f"{sizes} (up to {limit})"


def _check_split(dim, rank, world_size) -> int:
    for name, value in (("dim", dim), ("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if dim not in (0, 1, -1, -2):
        raise ValueError(
            f"dim must be 0 (split the N output features: a column-parallel linear) or 1 (split "
            f"the K input features: a row-parallel linear), not {dim}"
        )
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, not {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1} for a world size of {world_size}, not {rank}")
    return dim % 2


def _address(tensor: Optional[torch.Tensor]) -> int:
    return 0 if tensor is None else tensor.data_ptr()


def _nbytes(tensor: Optional[torch.Tensor]) -> int:
    return 0 if tensor is None else tensor.numel() * tensor.element_size()


def _span(tensor: Optional[torch.Tensor]) -> Tuple[int, int]:
    """A tensor's address and size in bytes, the pair every native call takes (0, 0 for None)."""
    return _address(tensor), _nbytes(tensor)


@torch.library.custom_op("anybit::dequantize", mutates_args=())
def _dequantize(
    codes: torch.Tensor,
    scales: torch.Tensor,
    zeros: Optional[torch.Tensor],
    weight_type: str,
    group_size: Optional[int],
    n: int,
    k: int,
    scale_dtype: str,
) -> torch.Tensor:
    """The stored ``[N, K]`` weight in float32 from host ``codes``, float32 ``scales`` and
    ``zeros``: an op of its own, with a fake implementation, so that ``torch.compile`` traces
    the CPU path of the layers (which multiplies by the dequantized weight) without a break."""
    out = torch.empty((n, k), dtype=torch.float32)
    _native.dequantize(
        weight_type,
        group_size,
        n,
        k,
        scale_dtype,
        *_span(codes),
        *_span(scales),
        *_span(zeros),
        *_span(out),
    )
    return out


@_dequantize.register_fake
def _dequantize_fake(codes, scales, zeros, weight_type, group_size, n, k, scale_dtype):
    return codes.new_empty((n, k), dtype=torch.float32)


class QuantizedWeight:
    """A quantized ``[N, K]`` weight (``N`` output features, ``K`` input features).

    Attributes:
        dtype: the weight type name (``"u4"``, ``"f6e3m2"``, …).
        group_size: elements per group along K, or ``None`` for one group per row.
        shape: ``(N, K)``.
        codes: ``uint8`` packed codes (element ``i`` of the row-major matrix at bits
            ``[i·b, (i+1)·b)`` of a little-endian bit stream), ``[N, K·b/8]`` when a row is a
            whole number of bytes, else ``[⌈N·K·b/8⌉]``; always on the CPU.
        scales: ``[N, groups]`` in :attr:`scale_dtype`, ``groups = ⌈K / group_size⌉`` (when the
            group size does not divide K, each row's last group is short); on the CPU.
        zeros: ``[N, groups]`` ``uint8`` zero-point codes for unsigned types (the weight is
            ``(q − z) · s``), else ``None``; on the CPU.
        perm: for weights imported with GPTQ's act-order, the column permutation (``int64``
            ``[K]``: column ``j`` of the stored codes is column ``perm[j]`` of the weight; the
            activations are gathered as ``x[..., perm]`` before the product), else ``None``.
        device: where the prepared layout is (``cpu`` when there is none).
    """

    def __init__(
        self,
        codes: torch.Tensor,
        scales: torch.Tensor,
        zeros: Optional[torch.Tensor],
        dtype: str,
        group_size: Optional[int],
        shape,
        prepared=None,
        device=None,
        perm: Optional[torch.Tensor] = None,
    ):
        n, k = (int(size) for size in shape)
        self.dtype = _check_weight_type(dtype)
        self.group_size = _check_group(group_size, k)
        self.shape = (n, k)
        for name, tensor in (("codes", codes), ("scales", scales)):
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, not {type(tensor).__name__}")
        groups = _groups(group_size, k)
        bits = _bits(dtype)
        if codes.dtype != torch.uint8:
            raise TypeError(f"codes must be torch.uint8, not {codes.dtype}")
        expected = (n * k * bits + 7) // 8
        if codes.numel() != expected:
            raise ValueError(
                f"codes hold {codes.numel()} bytes, but a {n}×{k} {dtype} weight packs into {expected}"
            )
        if scales.dtype not in _SCALE_DTYPES:
            raise TypeError(
                f"scales must be float16, bfloat16 or float32, not {scales.dtype}"
            )
        if tuple(scales.shape) != (n, groups):
            raise ValueError(
                f"scales have shape {tuple(scales.shape)}, but a {n}×{k} weight with group size "
                f"{group_size} needs ({n}, {groups})"
            )
        unsigned = dtype.startswith("u")
        if unsigned and zeros is None:
            raise ValueError(f"{dtype} weights need zero points (zeros of shape ({n}, {groups}))")
        if not unsigned and zeros is not None:
            raise ValueError(f"{dtype} weights are symmetric and take no zero points; pass zeros=None")
        if zeros is not None:
            if not isinstance(zeros, torch.Tensor):
                raise TypeError(f"zeros must be a torch.Tensor, not {type(zeros).__name__}")
            if zeros.dtype != torch.uint8:
                raise TypeError(f"zeros must be torch.uint8 zero-point codes, not {zeros.dtype}")
            if tuple(zeros.shape) != (n, groups):
                raise ValueError(
                    f"zeros have shape {tuple(zeros.shape)}, but ({n}, {groups}) are needed"
                )
            if int(zeros.max()) > (1 << bits) - 1:
                raise ValueError(
                    f"zero point {int(zeros.max())} is beyond the largest {dtype} code {(1 << bits) - 1}"
                )
        if perm is not None:
            if not isinstance(perm, torch.Tensor) or perm.dtype not in (torch.int32, torch.int64):
                raise TypeError("perm must be an int32 or int64 tensor of column indices")
            perm = perm.detach().to("cpu", torch.int64).reshape(-1)
            if perm.numel() != k or not torch.equal(perm.sort().values, torch.arange(k)):
                raise ValueError(f"perm must be a permutation of 0..{k - 1} (one entry per input feature)")
        self.perm = perm
        self.codes = codes.detach().to("cpu").contiguous().reshape(_codes_shape(n, k, bits))
        self.scales = scales.detach().to("cpu").contiguous()
        self.zeros = None if zeros is None else zeros.detach().to("cpu").contiguous()
        self.scale_dtype = self.scales.dtype
        # The scale type's name as the native side spells it (a plain str: cheap to trace).
        self.scale_name = _SCALE_DTYPES[self.scale_dtype]
        # (codes, scales, zeros) in the kernel layout, on `device`.
        self._prepared = prepared
        self.device = torch.device("cpu") if device is None else torch.device(device)
        # The permutation on `device`, for the gather of the activations.
        self.device_perm = None if perm is None else perm.to(self.device)

    # -- what it is ----------------------------------------------------------------------

    @property
    def bits(self) -> int:
        return _bits(self.dtype)

    @property
    def zero_mode(self) -> str:
        return "codes" if self.zeros is not None else "none"

    @property
    def in_features(self) -> int:
        return self.shape[1]

    @property
    def out_features(self) -> int:
        return self.shape[0]

    @property
    def prepared(self):
        """``(codes, scales, zeros)`` in the kernel layout on :attr:`device`, or ``None``."""
        return self._prepared

    @property
    def nbytes(self) -> int:
        """Bytes of the plain form: codes, scales and zero points."""
        return _nbytes(self.codes) + _nbytes(self.scales) + _nbytes(self.zeros)

    def __repr__(self) -> str:
        group = "per-channel" if self.group_size is None else self.group_size
        return (
            f"QuantizedWeight({self.dtype}, shape={self.shape}, group_size={group}, "
            f"scale_dtype={self.scale_dtype}, device={self.device})"
        )

    # -- devices -------------------------------------------------------------------------

    def _prepare_on_host(self):
        n, k = self.shape
        codes_bytes, scales_bytes = _native.prepared_sizes(
            self.dtype, self.group_size, n, k, self.scale_name
        )
        codes = torch.empty(codes_bytes, dtype=torch.uint8)
        scales = torch.empty(scales_bytes, dtype=torch.uint8)
        zeros = None if self.zeros is None else torch.empty(scales_bytes, dtype=torch.uint8)
        plain_scales = self.scales.float().contiguous()
        plain_zeros = None if self.zeros is None else self.zeros.float().contiguous()
        _native.prepare(
            self.dtype,
            self.group_size,
            self.zero_mode,
            n,
            k,
            self.scale_name,
            *_span(self.codes),
            *_span(plain_scales),
            *_span(plain_zeros),
            *_span(codes),
            *_span(scales),
            *_span(zeros),
        )
        return codes, scales, zeros

    def to(self, device) -> "QuantizedWeight":
        """This weight with its kernel layout on ``device`` (prepared once, on the first move
        to a GPU; moves between GPUs copy it). ``cpu`` drops the kernel layout. A weight whose
        group size does not divide K (a short last group) moves like any other where K is a
        multiple of 16; a weight in groups whose K is not stays on the CPU: moving it to a GPU
        raises ``ValueError`` naming K and what works (per channel)."""
        device = torch.device(device)
        if device.type == "cuda":
            # Before anything else: a weight in groups whose K is not a multiple of 16 can go
            # to no GPU, whatever this machine has.
            _check_kernel_group(self.group_size, self.shape[1])
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"cannot move the weight to {device}: CUDA is not available here (no GPU, no "
                "driver, or a PyTorch without CUDA)"
            )
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device.type not in ("cpu", "cuda"):
            raise ValueError(
                f"anybit weights live on the CPU or a CUDA device, not {device}"
            )
        if device == self.device:
            return self
        prepared = None
        if device.type == "cuda":
            source = self._prepared if self._prepared is not None else self._prepare_on_host()
            prepared = tuple(
                None if part is None else part.to(device) for part in source
            )
        return QuantizedWeight(
            self.codes,
            self.scales,
            self.zeros,
            self.dtype,
            self.group_size,
            self.shape,
            prepared=prepared,
            device=device,
            perm=self.perm,
        )

    def cuda(self, device=None) -> "QuantizedWeight":
        if device is None:
            device = torch.device("cuda")
        elif isinstance(device, int):
            device = torch.device("cuda", device)
        return self.to(device)

    def cpu(self) -> "QuantizedWeight":
        return self.to("cpu")

    # -- tensor-parallel parts ---------------------------------------------------------

    def permute_rows(self, order) -> "QuantizedWeight":
        """This weight with its output features reordered: row ``i`` of the result is row
        ``order[i]`` of this weight (codes, scales and zero points move with their row), so
        its :meth:`dequantize` is exactly ``self.dequantize()[order]``; the act-order column
        permutation, if any, is kept. On this weight's device. ``order`` must be a permutation
        of ``0..N-1`` (``ValueError``)."""
        n, k = self.shape
        if not isinstance(order, torch.Tensor):
            order = torch.as_tensor(order)
        order = order.detach().to("cpu", torch.int64).reshape(-1)
        if order.numel() != n or not torch.equal(order.sort().values, torch.arange(n)):
            raise ValueError(f"order must be a permutation of 0..{n - 1} (one entry per output feature)")
        bits = self.bits
        if (k * bits) % 8 == 0:
            codes = self.codes.reshape(n, k * bits // 8)[order]
        else:
            codes = _pack_codes(_unpack_codes(self.codes, bits, 0, n * k).reshape(n, k)[order], bits)
        zeros = None if self.zeros is None else self.zeros[order]
        part = QuantizedWeight(codes, self.scales[order], zeros, self.dtype, self.group_size, (n, k), perm=self.perm)
        return part if self.device.type == "cpu" else part.to(self.device)

    def shard(self, dim: int, rank: int, world_size: int) -> "QuantizedWeight":
        """Part ``rank`` of this weight split into ``world_size`` equal parts along ``dim``, for
        tensor parallelism, on this weight's device; its :meth:`dequantize` is exactly the same
        slice of this weight's.

        - ``dim=0`` splits the N output features (a **column-parallel** linear: each rank
          computes its slice of the outputs): rows ``[rank·N/P, (rank+1)·N/P)`` with their
          scales and zero points; an act-order permutation (of the K columns) is kept whole.
          N must be a multiple of ``world_size``.
        - ``dim=1`` splits the K input features (a **row-parallel** linear: each rank takes its
          slice of the inputs and the partial products are summed, e.g. by an all-reduce):
          columns ``[rank·K/P, (rank+1)·K/P)`` with the scales and zero points of their
          groups. Each part must be whole groups (``K/world_size`` a multiple of the group
          size; any split of K for per-channel weights), so a weight whose group size does not
          divide K (a short last group) does not split along K (``world_size`` 1 only). An
          act-order weight splits only where each part's stored columns are a permutation of
          its own input features; its part keeps that permutation.

        A split these conditions forbid raises ``ValueError`` naming the sizes and the world
        sizes that work. Codes are sliced as bytes where rows and parts are whole bytes (every
        grouped ``dim=1`` split) and repacked otherwise.
        """
        dim = _check_split(dim, rank, world_size)
        n, k = self.shape
        bits = self.bits
        group = self.group_size
        if dim == 0:
            if n % world_size != 0:
                raise ValueError(
                    f"cannot split the N = {n} output features of this weight into {world_size} "
                    f"equal parts: the world size must divide N (world sizes that work: "
                    f"{_working_world_sizes(n)})"
                )
            size = n // world_size
            start = rank * size
            rows = slice(start, start + size)
            if (k * bits) % 8 == 0:
                codes = self.codes.reshape(n, -1)[rows]
            else:
                codes = _pack_codes(_unpack_codes(self.codes, bits, start * k, size * k), bits)
            scales = self.scales[rows]
            zeros = None if self.zeros is None else self.zeros[rows]
            part = QuantizedWeight(codes, scales, zeros, self.dtype, group, (size, k), perm=self.perm)
        else:
            unit = 1 if group is None else group
            if group is not None and k % group != 0 and world_size > 1:
                # Equal parts of whole groups would make K a multiple of the group size.
                working = [
                    str(size) for size in GROUP_SIZES if size is not None and k % (world_size * size) == 0
                ]
                if k % world_size == 0:
                    working.append("None (per channel)")
                raise ValueError(
                    f"cannot split the K = {k} input features of this weight into {world_size} "
                    f"parts: its groups of {group} end in a short group of {k % group} (K is not "
                    f"a multiple of {group}), so no split into equal parts is whole groups (world "
                    f"sizes that work: 1). Group sizes that split K = {k} into {world_size} parts: "
                    f"{', '.join(working) or 'none'}; or split it column-parallel (dim=0)"
                )
            if world_size > 1 and k % (world_size * unit) != 0:
                if group is None:
                    reason = "the world size must divide K"
                else:
                    reason = (
                        f"each part must be whole groups of {group} (K / world size a multiple "
                        f"of {group})"
                    )
                raise ValueError(
                    f"cannot split the K = {k} input features of this weight into {world_size} "
                    f"parts: {reason} (world sizes that work: {_working_world_sizes(k // unit)})"
                )
            size = k // world_size
            start = rank * size
            columns = slice(start, start + size)
            perm = None
            if self.perm is not None:
                stored = self.perm[columns]
                if int(stored.min()) < start or int(stored.max()) >= start + size:
                    raise ValueError(
                        f"cannot split this act-order weight's K = {k} input features into "
                        f"{world_size} parts: its permutation puts input features of other parts "
                        f"into stored columns {start}..{start + size - 1} (part {rank}), whose "
                        "groups would then need inputs from other ranks. Split it column-parallel "
                        "(dim=0), use a world size whose parts each permute only their own "
                        "features, or move the permutation into the layers that produce this "
                        "layer's input (anybit.nn.absorb_act_order)"
                    )
                perm = stored - start
            if (k * bits) % 8 == 0 and (start * bits) % 8 == 0 and (size * bits) % 8 == 0:
                row_bytes = k * bits // 8
                codes = self.codes.reshape(n, row_bytes)[:, start * bits // 8 : (start + size) * bits // 8]
            else:
                codes = _pack_codes(_unpack_codes(self.codes, bits, 0, n * k).reshape(n, k)[:, columns], bits)
            if group is None:
                scales, zeros = self.scales, self.zeros
            else:
                # The last part ends at K, with the short last group if there is one.
                groups = slice(start // group, -(-(start + size) // group))
                scales = self.scales[:, groups]
                zeros = None if self.zeros is None else self.zeros[:, groups]
            part = QuantizedWeight(codes, scales, zeros, self.dtype, group, (n, size), perm=perm)
        return part if self.device.type == "cpu" else part.to(self.device)

    # -- values --------------------------------------------------------------------------

    def dequantize(self, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """The ``[N, K]`` weight the kernels multiply by, ``(decode(q) − z) · s``, computed in
        f64 and rounded to ``dtype``, on ``device`` (default: :attr:`device`)."""
        n, k = self.shape
        scales = self.scales.float().contiguous()
        out = _dequantize(self.codes, scales, self.zeros, self.dtype, self.group_size, n, k, self.scale_name)
        if self.perm is not None:
            # Stored column j is the weight's column perm[j].
            stored, out = out, torch.empty_like(out)
            out[:, self.perm] = stored
        return out.to(device=self.device if device is None else device, dtype=dtype)


def quantize(
    w: torch.Tensor,
    dtype: str = "u3",
    group_size: Optional[int] = 128,
    scale_dtype=None,
    search: Optional[str] = None,
) -> QuantizedWeight:
    """Quantizes the ``[N, K]`` weight ``w`` (float32, float16 or bfloat16; CPU or CUDA) to
    ``dtype`` with one scale per ``group_size`` elements along K (``None``: per channel).

    Integers are rounded to nearest with a scale that just covers each group (symmetric for
    ``i2``–``i8`` and small floats; unsigned types get a zero point over ``[min(w, 0),
    max(w, 0)]``); ``search="mse"`` also tries each group's range shrunk by 0.95 … 0.5 and
    keeps the least squared error. Scales are stored as ``scale_dtype`` (default: ``w``'s
    dtype for 16-bit weights, float16 for float32 ones), rounded up. A ``group_size`` that does
    not divide K leaves each row a short last group (``K mod group_size`` elements, with a
    scale of its own, as GPTQ does); such a weight works on the CPU, and on the CUDA path where
    K is a multiple of 16, which the kernels need of any weight in groups. The result is on
    ``w``'s device (a CUDA weight is prepared for the kernels at once; a CUDA ``w`` in groups
    whose K is not a multiple of 16 raises ``ValueError``, before quantizing).
    """
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w must be a torch.Tensor, not {type(w).__name__}")
    if w.dim() != 2:
        raise ValueError(
            f"w must be a 2-D weight [out_features, in_features], but it has shape {tuple(w.shape)}"
        )
    if w.dtype not in _WEIGHT_SOURCE:
        raise TypeError(
            f"w is {w.dtype}; quantize takes float32, float16 or bfloat16 weights"
        )
    if w.device.type not in ("cpu", "cuda"):
        raise ValueError(f"w is on {w.device}; quantize takes CPU or CUDA tensors")
    n, k = w.shape
    if n == 0 or k == 0:
        raise ValueError(f"w has shape {tuple(w.shape)}; both sizes must be at least 1")
    dtype = _check_weight_type(dtype)
    group_size = _check_group(group_size, k)
    default_scale = w.dtype if w.dtype in (torch.float16, torch.bfloat16) else torch.float16
    scale_dtype = _scale_dtype(scale_dtype, default_scale)
    if search not in (None, "mse"):
        raise ValueError(f"search {search!r} is not supported: use None (round to nearest) or 'mse'")
    if w.device.type == "cuda":
        _check_kernel_group(group_size, k)
    source = w.detach().to("cpu").contiguous()
    groups = _groups(group_size, k)
    codes = torch.empty((n * k * _bits(dtype) + 7) // 8, dtype=torch.uint8)
    scales = torch.empty((n, groups), dtype=torch.float32)
    zeros = torch.empty((n, groups), dtype=torch.uint8) if dtype.startswith("u") else None
    _native.quantize(
        *_span(source),
        _WEIGHT_SOURCE[source.dtype],
        n,
        k,
        dtype,
        group_size,
        _SCALE_DTYPES[scale_dtype],
        search or "none",
        *_span(codes),
        *_span(scales),
        *_span(zeros),
    )
    weight = QuantizedWeight(
        codes, scales.to(scale_dtype), zeros, dtype, group_size, (n, k)
    )
    return weight.to(w.device) if w.device.type == "cuda" else weight


class Checkpoint(dict):
    """The tensors of a checkpoint by name: :class:`QuantizedWeight` values for the quantized
    weights (under the weight's own name, e.g. ``model.layers.0.mlp.up_proj.weight``) and
    ``torch.Tensor`` values for every other tensor. ``path`` is where it was read from."""

    path: str = ""


def load(path: Union[str, os.PathLike], device=None) -> Dict[str, Union[QuantizedWeight, torch.Tensor]]:
    """Reads a checkpoint written by ``anybit quantize`` (a ``.safetensors`` file, a
    ``*.safetensors.index.json`` of shards, or a folder holding one): every quantized weight as
    a :class:`QuantizedWeight` (checked against its metadata) and every other tensor as a
    ``torch.Tensor``, on ``device`` (default: the CPU). Files that cannot be read raise
    ``OSError``; malformed ones ``ValueError`` naming the file and tensor."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    native = _native.Checkpoint(os.fspath(path))
    tensors = Checkpoint()
    tensors.path = os.fspath(path)
    for name in native.quantized_names():
        dtype, group_size, n, k, scale_dtype, zero_points, _search, permuted = native.quantized_info(name)
        # The format writes K for one group per row; a K that is itself a group size reads as
        # that group size (the same weight). A group size that does not divide K leaves each
        # row a short last group: ⌈K / group⌉ scales per row.
        group = group_size if group_size in GROUP_SIZES else None
        # (A group size of 0 is refused by read_quantized, with the file and tensor named.)
        groups = -(-k // group_size) if group_size else 0
        codes = torch.empty((n * k * _bits(dtype) + 7) // 8, dtype=torch.uint8)
        scales = torch.empty((n, groups), dtype=torch.float32)
        zeros = torch.empty((n, groups), dtype=torch.uint8) if zero_points else None
        native.read_quantized(
            name,
            *_span(codes),
            *_span(scales),
            *_span(zeros),
        )
        perm = None
        if permuted:
            perm = torch.empty(k, dtype=torch.int64)
            native.read_permutation(name, *_span(perm))
        weight = QuantizedWeight(
            codes, scales.to(_SCALE_DTYPE_NAMES[scale_dtype]), zeros, dtype, group, (n, k), perm=perm
        )
        tensors[name] = weight if device is None else weight.to(device)
    for name in native.plain_names():
        dtype, shape = native.plain_info(name)
        tensor = torch.empty(shape, dtype=getattr(torch, dtype))
        native.read_plain(name, *_span(tensor))
        tensors[name] = tensor if device is None else tensor.to(device)
    return tensors
