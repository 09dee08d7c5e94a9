"""``anybit.matmul`` and the custom op ``anybit::matmul`` behind it.

The op runs the anybit decode kernels on PyTorch's current CUDA stream, reading ``x``, the
prepared weight and ``bias`` where PyTorch keeps them and writing an output allocated by
PyTorch's caching allocator: no copies, no synchronisation. Its fake (meta) implementation
gives the output's shape and dtype, so ``torch.compile`` traces it and CUDA graphs capture it.

M (the tokens, all leading dimensions of ``x`` together) above what one decode kernel takes
(``MAX_TOKENS_PER_LAUNCH``, 64) is computed in launches of 64 rows at a time, each reading the
whole quantized weight: the weight stays quantized in memory (a dequantized f16 copy would cost
16/b times the quantized weight's memory for every layer) and each row's result is the same
whatever M is. The cost is one pass over the weight per 64 rows, so long prefills are slower
than a dense f16 product until prefill kernels exist (docs/python.md).
"""

from __future__ import annotations

from typing import Optional

import torch

from . import _native
from ._weight import QuantizedWeight, _check_kernel_group

#: The most tokens one kernel launch takes; larger M is split into launches of this many.
MAX_TOKENS_PER_LAUNCH = _native.MAX_TOKENS_PER_LAUNCH

_ACTIVATIONS = {torch.float16: "f16", torch.bfloat16: "bf16"}


@torch.library.custom_op("anybit::matmul", mutates_args=())
def _matmul(
    x: torch.Tensor,
    codes: torch.Tensor,
    scales: torch.Tensor,
    zeros: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    weight_type: str,
    group_size: int,
    zero_mode: str,
    n: int,
    k: int,
    scale_dtype: str,
) -> torch.Tensor:
    """``x @ dequant(W).T (+ bias)`` for the prepared weight ``(codes, scales, zeros)``;
    ``group_size`` 0 means per channel. Inputs are checked by :func:`matmul`."""
    y = torch.empty((*x.shape[:-1], n), dtype=x.dtype, device=x.device)
    m = x.numel() // k if k else 0
    if m == 0:
        return y
    device = x.device
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        _native.matmul(
            device.index,
            stream,
            weight_type,
            group_size or None,
            zero_mode,
            n,
            k,
            scale_dtype,
            codes.data_ptr(),
            scales.data_ptr(),
            None if zeros is None else zeros.data_ptr(),
            _ACTIVATIONS[x.dtype],
            m,
            x.data_ptr(),
            None if bias is None else bias.data_ptr(),
            y.data_ptr(),
        )
    return y


@_matmul.register_fake
def _matmul_fake(x, codes, scales, zeros, bias, weight_type, group_size, zero_mode, n, k, scale_dtype):
    return x.new_empty((*x.shape[:-1], n))


def _is_compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling and is_compiling())


def _aligned(tensor: torch.Tensor) -> bool:
    """Whether a tensor starts 16 bytes into its storage or a multiple of it (PyTorch's own
    allocations are aligned). While torch.compile traces, which can read neither data_ptr() nor
    storage_offset() without breaking the graph, this answers True: the native side checks
    every address before it launches anyway (a ValueError naming the pointer)."""
    if _is_compiling():
        return True
    return (tensor.storage_offset() * tensor.element_size()) % 16 == 0


def _check(x, qweight, bias) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, not {type(x).__name__}")
    if not isinstance(qweight, QuantizedWeight):
        raise TypeError(
            f"qweight must be an anybit.QuantizedWeight (from anybit.quantize or anybit.load), not {type(qweight).__name__}"
        )
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise TypeError(
            f"x is {x.dtype}; the anybit kernels take float16 or bfloat16 activations"
        )
    # A weight in groups whose K is not a multiple of 16 can go to no GPU: say so first, rather
    # than "move the weight" (a weight on a GPU has passed this check when it was moved).
    if qweight.device.type != "cuda":
        _check_kernel_group(qweight.group_size, qweight.shape[1])
    if x.device.type != "cuda":
        raise ValueError(
            f"x is on {x.device}; anybit.matmul runs on CUDA tensors (move x and the weight with .cuda())"
        )
    if qweight.device != x.device:
        raise ValueError(
            f"x is on {x.device} but the weight is on {qweight.device}: move the weight with qweight.to(x.device)"
        )
    n, k = qweight.shape
    if x.dim() < 1 or x.shape[-1] != k:
        raise ValueError(
            f"x has shape {tuple(x.shape)}, but the weight takes {k} input features: x must be [..., {k}]"
        )
    if not x.is_contiguous():
        raise ValueError("x must be contiguous: call x.contiguous() first")
    if not _aligned(x):
        raise ValueError(
            "x starts inside its storage at a byte offset that is not aligned to 16 bytes "
            "(a view such as x[:, 1:]): the kernels load 16 bytes at a time; pass x.clone()"
        )
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias must be a torch.Tensor or None, not {type(bias).__name__}")
        if bias.dtype != x.dtype:
            raise TypeError(f"bias is {bias.dtype}, but x is {x.dtype}: they must match")
        if tuple(bias.shape) != (n,):
            raise ValueError(
                f"bias has shape {tuple(bias.shape)}, but the weight has {n} output features: bias must be [{n}]"
            )
        if bias.device != x.device:
            raise ValueError(f"bias is on {bias.device}, but x is on {x.device}")
        if not bias.is_contiguous():
            raise ValueError("bias must be contiguous: call bias.contiguous() first")
        if not _aligned(bias):
            raise ValueError("bias is a view not aligned to 16 bytes: pass bias.clone()")


def _arguments(x, qweight: QuantizedWeight, bias):
    codes, scales, zeros = qweight.prepared
    n, k = qweight.shape
    return (
        x,
        codes,
        scales,
        zeros,
        bias,
        qweight.dtype,
        qweight.group_size or 0,
        qweight.zero_mode,
        n,
        k,
        qweight.scale_name,
    )


def matmul(
    x: torch.Tensor, qweight: QuantizedWeight, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``x @ qweight.dequantize().T (+ bias)`` with the anybit kernels.

    ``x`` is ``[..., K]``, float16 or bfloat16, contiguous, on the CUDA device the weight was
    moved to; ``bias`` is ``[N]`` of ``x``'s dtype. Returns ``[..., N]`` of ``x``'s dtype,
    computed on PyTorch's current stream with f32 accumulation. Bad inputs raise
    ``TypeError``/``ValueError`` naming the problem; the first call for a kernel compiles it
    (NVRTC, once per process, cached on disk), so warm up before capturing a CUDA graph.
    """
    _check(x, qweight, bias)
    if qweight.device_perm is not None:
        # An act-order weight: its stored columns are the weight's permuted (a gather of x).
        x = x.index_select(-1, qweight.device_perm)
    return torch.ops.anybit.matmul(*_arguments(x, qweight, bias))


def warm_up(x: torch.Tensor, qweight: QuantizedWeight, bias: Optional[torch.Tensor] = None) -> None:
    """Compiles and loads the kernels a product of ``x``'s shape uses, without running it."""
    _check(x, qweight, bias)
    args = _arguments(x, qweight, bias)
    codes, scales, zeros = args[1], args[2], args[3]
    n, k = qweight.shape
    _native.matmul(
        x.device.index,
        0,
        qweight.dtype,
        qweight.group_size,
        qweight.zero_mode,
        n,
        k,
        args[10],
        codes.data_ptr(),
        scales.data_ptr(),
        None if zeros is None else zeros.data_ptr(),
        _ACTIVATIONS[x.dtype],
        max(1, x.numel() // k),
        x.data_ptr(),
        None if bias is None else bias.data_ptr(),
        # Never written: nothing is launched.
        x.data_ptr(),
        launch=False,
    )
