"""Modules: :class:`QuantizedLinear`, and :func:`quantize_model` / :func:`load_quantized`,
which put it in place of a model's ``nn.Linear`` layers; :class:`ColumnParallelLinear` and
:class:`RowParallelLinear`, one rank's part of a quantized linear layer split for tensor
parallelism on ``torch.distributed``, and :func:`absorb_act_order`, which makes act-order
layers splittable."""

from __future__ import annotations

import fnmatch
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ._ops import _aligned, matmul
from ._weight import GROUP_SIZES, QuantizedWeight, _check_kernel_group, load, quantize


class QuantizedLinear(nn.Module):
    """``y = x @ W.T + bias`` with a quantized ``W``: the anybit kernels on CUDA, and on the CPU
    a product with the dequantized weight (for checks and CPU-only runs, not for speed).

    ``module.to(device)``/``.cuda()`` move the weight (preparing its kernel layout on the first
    move to a GPU); ``.half()``/``.to(torch.bfloat16)`` cast the bias only. The state dict holds
    ``weight.codes``, ``weight.scales``, ``weight.zeros`` (unsigned types) and ``bias``.
    """

    def __init__(self, qweight: QuantizedWeight, bias: Optional[torch.Tensor] = None):
        super().__init__()
        if not isinstance(qweight, QuantizedWeight):
            raise TypeError(
                f"qweight must be an anybit.QuantizedWeight, not {type(qweight).__name__}"
            )
        n, k = qweight.shape
        if bias is not None:
            if not isinstance(bias, torch.Tensor):
                raise TypeError(f"bias must be a torch.Tensor or None, not {type(bias).__name__}")
            if tuple(bias.shape) != (n,):
                raise ValueError(f"bias has shape {tuple(bias.shape)}, but [{n}] is needed")
            bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.qweight = qweight
        self.in_features = k
        self.out_features = n
        self.register_parameter("bias", bias)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        dtype: str = "u4",
        group_size: Optional[int] = 128,
        scale_dtype=None,
        search: Optional[str] = None,
    ) -> "QuantizedLinear":
        """Quantizes ``linear``'s weight (see :func:`anybit.quantize`) on its device."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, not {type(linear).__name__}")
        qweight = quantize(linear.weight, dtype, group_size, scale_dtype, search)
        return cls(qweight, linear.bias)

    @property
    def weight(self) -> QuantizedWeight:
        return self.qweight

    def extra_repr(self) -> str:
        group = "per-channel" if self.qweight.group_size is None else self.qweight.group_size
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, dtype={self.qweight.dtype}, group_size={group}"
        )

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        # The device `fn` moves tensors to (a uint8 probe is never cast).
        probe = fn(torch.empty(0, dtype=torch.uint8, device=self.qweight.device))
        if probe.device != self.qweight.device:
            self.qweight = self.qweight.to(probe.device)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._product(x, self.bias)

    def _product(self, x: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        """``x @ W.T (+ bias)``: the kernels on CUDA, the dequantized weight elsewhere."""
        if x.device.type != "cuda":
            weight = self.qweight.dequantize(dtype=x.dtype, device=x.device)
            return nn.functional.linear(x, weight, None if bias is None else bias.to(x.dtype))
        if x.dtype not in (torch.float16, torch.bfloat16):
            raise TypeError(
                f"x is {x.dtype}; the anybit kernels take float16 or bfloat16 activations: "
                "convert the model with .half() or .to(torch.bfloat16)"
            )
        if bias is not None and bias.dtype != x.dtype:
            bias = bias.to(x.dtype)
        x = x.contiguous()
        if not _aligned(x):
            # A view that starts inside an allocation: the kernels load 16 bytes at a time.
            x = x.clone()
        return matmul(x, self.qweight, bias)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight.codes"] = self.qweight.codes
        destination[prefix + "weight.scales"] = self.qweight.scales
        if self.qweight.zeros is not None:
            destination[prefix + "weight.zeros"] = self.qweight.zeros
        if self.qweight.perm is not None:
            destination[prefix + "weight.perm"] = self.qweight.perm

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        parts = {}
        for part in ("codes", "scales", "zeros", "perm"):
            key = prefix + "weight." + part
            if key in state_dict:
                parts[part] = state_dict.pop(key)
        if "codes" in parts and "scales" in parts:
            old = self.qweight
            self.qweight = QuantizedWeight(
                parts["codes"],
                parts["scales"],
                parts.get("zeros"),
                old.dtype,
                old.group_size,
                old.shape,
                perm=parts.get("perm"),
            ).to(old.device)
        elif strict:
            missing_keys.extend(
                prefix + "weight." + part for part in ("codes", "scales") if part not in parts
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def _distributed_place(group, rank: Optional[int], world_size: Optional[int]) -> Tuple[int, int]:
    """``(rank, world_size)``: as given, or this process's in ``group`` of ``torch.distributed``."""
    if rank is None or world_size is None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "torch.distributed is not initialized: call torch.distributed.init_process_group() "
                "first, or pass rank= and world_size="
            )
        rank = dist.get_rank(group) if rank is None else rank
        world_size = dist.get_world_size(group) if world_size is None else world_size
    return rank, world_size


def _whole_layer(linear) -> QuantizedLinear:
    if isinstance(linear, _ParallelPart):
        raise TypeError("linear is already one rank's part of a split layer: pass the whole QuantizedLinear")
    if not isinstance(linear, QuantizedLinear):
        raise TypeError(
            f"linear must be an anybit.nn.QuantizedLinear (quantize an nn.Linear with "
            f"QuantizedLinear.from_linear or anybit.quantize_model first), not {type(linear).__name__}"
        )
    return linear


def absorb_act_order(producers: Sequence[QuantizedLinear], consumer: QuantizedLinear) -> None:
    """Moves ``consumer``'s act-order permutation into the layers whose outputs it reads, in
    place, so that the consumer needs no gather and splits row-parallel over any world size.

    An act-order weight (GPTQ ``desc_act``) multiplies its input gathered as ``x[..., perm]``;
    its input features are scattered over its stored columns, so a row-parallel split of it
    would need inputs of other ranks (:meth:`QuantizedWeight.shard` refuses). If every layer
    that produces the consumer's input instead emits its outputs in that order (its rows and
    bias reordered by ``perm``: :meth:`QuantizedWeight.permute_rows`), the consumer takes them
    as they come and its permutation is dropped. Nothing is re-quantized: every dequantized
    value is unchanged, and ``consumer(f(producer(x)))`` is the same product, for any ``f`` that
    acts on each feature alone (SiLU(gate) · up in a Llama MLP: ``producers=[gate, up]``,
    ``consumer=down``). Not for a consumer whose input is mixed across features first
    (a norm, attention): its producers' order would change what the mixing sees.

    Raises ``ValueError`` when ``consumer`` has no permutation or a producer's output size is
    not the consumer's input size, ``TypeError`` for layers that are not whole
    :class:`QuantizedLinear` layers (absorb before splitting).
    """
    layers = list(producers)
    for layer in [consumer, *layers]:
        _whole_layer(layer)
    perm = consumer.qweight.perm
    if perm is None:
        raise ValueError("the consumer has no act-order permutation to absorb")
    if not layers:
        raise ValueError("absorbing a permutation needs the layers that produce the consumer's input")
    for layer in layers:
        if layer.out_features != consumer.in_features:
            raise ValueError(
                f"a producer has {layer.out_features} output features, but the consumer takes "
                f"{consumer.in_features} input features"
            )
    for layer in layers:
        layer.qweight = layer.qweight.permute_rows(perm)
        if layer.bias is not None:
            layer.bias.data = layer.bias.data[perm.to(layer.bias.device)]
    w = consumer.qweight
    stored = QuantizedWeight(w.codes, w.scales, w.zeros, w.dtype, w.group_size, w.shape)
    consumer.qweight = stored if w.device.type == "cpu" else stored.to(w.device)


class _ParallelPart(QuantizedLinear):
    """What the parallel layers share: a place among the ranks of ``group``, and being made
    from a whole layer, not from an nn.Linear."""

    def __init__(self, qweight: QuantizedWeight, bias: Optional[torch.Tensor], *, rank: int, world_size: int, group):
        super().__init__(qweight, bias)
        self.rank = rank
        self.world_size = world_size
        self.group = group

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, world_size={self.world_size}"

    @classmethod
    def from_linear(cls, linear, *args, **kwargs):
        raise TypeError(
            f"{cls.__name__} is made from a whole quantized layer: "
            f"{cls.__name__}.from_quantized(QuantizedLinear.from_linear(linear, ...))"
        )


class ColumnParallelLinear(_ParallelPart):
    """Rank ``rank``'s part of a quantized linear layer whose N output features are split over
    ``world_size`` ranks (:meth:`QuantizedWeight.shard` with ``dim=0``): ``forward(x)`` takes
    the whole input ``[..., K]`` and returns this rank's outputs ``[..., N/P]`` (its slice of
    the bias added), or, with ``gather_output``, every rank's gathered into ``[..., N]`` (an
    all-gather on ``group``). The first layer of a tensor-parallel pair: its outputs feed a
    :class:`RowParallelLinear` without communication."""

    def __init__(
        self,
        qweight: QuantizedWeight,
        bias: Optional[torch.Tensor] = None,
        *,
        rank: int,
        world_size: int,
        group=None,
        gather_output: bool = False,
    ):
        super().__init__(qweight, bias, rank=rank, world_size=world_size, group=group)
        self.gather_output = gather_output

    @classmethod
    def from_quantized(
        cls,
        linear: QuantizedLinear,
        *,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        group=None,
        gather_output: bool = False,
    ) -> "ColumnParallelLinear":
        """This rank's part of the whole layer ``linear``, on ``linear``'s device; ``rank`` and
        ``world_size`` default to this process's in ``group`` (``torch.distributed``). A
        world size that does not divide N raises ``ValueError`` naming those that do."""
        linear = _whole_layer(linear)
        rank, world_size = _distributed_place(group, rank, world_size)
        qweight = linear.qweight.shard(0, rank, world_size)
        bias = None if linear.bias is None else linear.bias.detach().chunk(world_size)[rank]
        return cls(qweight, bias, rank=rank, world_size=world_size, group=group, gather_output=gather_output)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gather_output={self.gather_output}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._product(x, self.bias)
        if self.gather_output and self.world_size > 1:
            import torch.distributed as dist

            y = y.contiguous()
            parts = [torch.empty_like(y) for _ in range(self.world_size)]
            dist.all_gather(parts, y, group=self.group)
            y = torch.cat(parts, dim=-1)
        return y


class RowParallelLinear(_ParallelPart):
    """Rank ``rank``'s part of a quantized linear layer whose K input features are split over
    ``world_size`` ranks (:meth:`QuantizedWeight.shard` with ``dim=1``): ``forward(x)`` takes
    this rank's inputs ``[..., K/P]`` (or, with ``input_is_parallel=False``, the whole
    ``[..., K]``, of which it takes its slice), and returns the whole output ``[..., N]``: the
    partial products summed over the ranks by an all-reduce on ``group``, with the bias (kept
    whole) added once — by rank 0's product, before the sum. The second layer of a
    tensor-parallel pair, after a :class:`ColumnParallelLinear`."""

    def __init__(
        self,
        qweight: QuantizedWeight,
        bias: Optional[torch.Tensor] = None,
        *,
        rank: int,
        world_size: int,
        group=None,
        input_is_parallel: bool = True,
    ):
        super().__init__(qweight, bias, rank=rank, world_size=world_size, group=group)
        self.input_is_parallel = input_is_parallel

    @classmethod
    def from_quantized(
        cls,
        linear: QuantizedLinear,
        *,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        group=None,
        input_is_parallel: bool = True,
    ) -> "RowParallelLinear":
        """This rank's part of the whole layer ``linear``, on ``linear``'s device; ``rank`` and
        ``world_size`` default to this process's in ``group`` (``torch.distributed``). A
        world size that does not split K into whole groups raises ``ValueError`` naming those
        that do."""
        linear = _whole_layer(linear)
        rank, world_size = _distributed_place(group, rank, world_size)
        qweight = linear.qweight.shard(1, rank, world_size)
        return cls(qweight, linear.bias, rank=rank, world_size=world_size, group=group, input_is_parallel=input_is_parallel)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, input_is_parallel={self.input_is_parallel}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.in_features
        if not self.input_is_parallel:
            if x.shape[-1] != k * self.world_size:
                raise ValueError(
                    f"x has shape {tuple(x.shape)}, but the whole layer takes {k * self.world_size} input features"
                )
            x = x[..., self.rank * k : (self.rank + 1) * k]
        y = self._product(x, self.bias if self.rank == 0 else None)
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(y, group=self.group)
        return y


def _skipped(name: str, patterns: Iterable[str]) -> bool:
    return any(
        name == pattern
        or fnmatch.fnmatchcase(name, pattern)
        or name.endswith("." + pattern)
        for pattern in patterns
    )


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def quantize_model(
    model: nn.Module,
    dtype: str = "u4",
    group_size: Optional[int] = 128,
    skip: Iterable[str] = ("lm_head",),
    scale_dtype=None,
    search: Optional[str] = None,
    workers: Optional[int] = None,
) -> List[str]:
    """Replaces every ``nn.Linear`` of ``model`` (in place, on its device) by a
    :class:`QuantizedLinear` of its weight quantized to ``dtype``, except those whose qualified
    name matches a pattern of ``skip`` (the name itself, a glob such as ``"*.gate"``, or its
    last components such as ``"lm_head"``). Returns the names of the replaced layers. A group
    size that does not divide a layer's input features leaves each row of its weight a short
    last group, which the CPU path takes, and the CUDA path too where the input features are a
    multiple of 16 (as the kernels need of any weight in groups); for a layer on a GPU whose
    input features are not, it raises ``ValueError`` naming the layer and what works (skip it,
    or quantize per channel), before any layer is replaced.

    Layers are quantized by ``workers`` threads at a time (default: the CPUs this process may
    use, at most 8): the work runs on the CPU without the GIL, and each layer's result does
    not depend on it."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    if workers is None:
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        workers = max(1, min(8, available or 1))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int or None, not {workers!r}")
    if isinstance(skip, str):
        skip = (skip,)
    skip = tuple(skip)
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name and not _skipped(name, skip)
    ]
    for name, linear in targets:
        # (A group size that is not one is refused by quantize, naming the layer.)
        if linear.weight.device.type == "cuda" and group_size in GROUP_SIZES:
            try:
                _check_kernel_group(group_size, linear.in_features)
            except ValueError as error:
                raise ValueError(
                    f"layer {name!r} is on {linear.weight.device}: {error}; or add it to skip="
                ) from None

    def quantized(target):
        name, linear = target
        try:
            return QuantizedLinear.from_linear(linear, dtype, group_size, scale_dtype, search)
        except ValueError as error:
            raise ValueError(f"layer {name!r}: {error}") from None

    replaced = []
    with ThreadPoolExecutor(max_workers=min(workers, max(1, len(targets)))) as pool:
        # In the model's order; the first layer that fails raises.
        for (name, _), module in zip(targets, pool.map(quantized, targets)):
            _replace(model, name, module)
            replaced.append(name)
    return replaced


def load_quantized(
    model: nn.Module,
    checkpoint: Union[str, os.PathLike, Dict[str, object]],
    strict: bool = True,
) -> List[str]:
    """Loads a checkpoint written by ``anybit quantize`` (a path, or what :func:`anybit.load`
    returned) into ``model``: each ``nn.Linear`` whose ``NAME.weight`` is quantized there
    becomes a :class:`QuantizedLinear` (keeping its bias from the checkpoint or the model), and
    every other tensor is loaded into the model's parameters and buffers (``strict``: all of
    them must match). Returns the names of the replaced layers."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    tensors = load(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else dict(checkpoint)
    modules = dict(model.named_modules())
    replaced = []
    for key, value in list(tensors.items()):
        if not isinstance(value, QuantizedWeight):
            continue
        if not key.endswith(".weight") or not isinstance(modules.get(key[: -len(".weight")]), nn.Linear):
            if strict:
                raise ValueError(
                    f"the checkpoint quantizes {key!r}, which is not the weight of an nn.Linear of the model"
                )
            continue
        name = key[: -len(".weight")]
        linear = modules[name]
        if (linear.out_features, linear.in_features) != value.shape:
            raise ValueError(
                f"{key!r} is {value.shape[0]}×{value.shape[1]} in the checkpoint, but the model's "
                f"layer is {linear.out_features}×{linear.in_features}"
            )
        bias = tensors.pop(name + ".bias", None)
        if bias is None and linear.bias is not None and linear.bias.device.type != "meta":
            bias = linear.bias
        device = linear.weight.device
        module = QuantizedLinear(value, bias)
        if device.type == "cuda":
            try:
                module = module.to(device)
            except ValueError as error:
                raise ValueError(f"{key!r}: {error}") from None
        _replace(model, name, module)
        del tensors[key]
        replaced.append(name)
    plain = {key: value for key, value in tensors.items() if isinstance(value, torch.Tensor)}
    result = model.load_state_dict(plain, strict=False, assign=True)
    if strict:
        missing = [
            key
            for key in result.missing_keys
            if not any(key.startswith(name + ".") for name in replaced)
        ]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"the checkpoint does not match the model: missing {missing[:8]}, "
                f"unexpected {list(result.unexpected_keys)[:8]}"
            )
    return replaced
