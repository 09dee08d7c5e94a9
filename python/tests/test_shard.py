"""Tensor-parallel parts of quantized weights (QuantizedWeight.shard) and the parallel layers of
anybit.nn on the CPU: every part dequantizes to exactly the slice of the whole weight, its plain
parts are the slices of the whole's, and the splits that cannot be made are refused."""

import pytest
import torch
from torch import nn

import anybit
from anybit._weight import _pack_codes, _unpack_codes
from anybit.nn import ColumnParallelLinear, QuantizedLinear, RowParallelLinear
from conftest import unpack_codes


def _act_order(w, dtype, group_size, perm):
    """An act-order weight: stored column j is the weight's column perm[j]."""
    stored = anybit.quantize(w[:, perm], dtype, group_size)
    return anybit.QuantizedWeight(
        stored.codes, stored.scales, stored.zeros, dtype, group_size, w.shape, perm=perm
    )


def _check_parts(weight, dim, world_size):
    whole = weight.dequantize()
    n, k = weight.shape
    codes = unpack_codes(weight.codes, weight.bits, n * k).reshape(n, k)
    parts = [weight.shard(dim, rank, world_size) for rank in range(world_size)]
    for rank, part in enumerate(parts):
        expected = whole.chunk(world_size, dim)[rank]
        assert part.shape == tuple(expected.shape)
        assert (part.dtype, part.group_size, part.scale_dtype) == (weight.dtype, weight.group_size, weight.scale_dtype)
        # Bit-identical values: the part is the slice, not a re-quantization.
        assert torch.equal(part.dequantize(), expected)
        pn, pk = part.shape
        part_codes = unpack_codes(part.codes, part.bits, pn * pk).reshape(pn, pk)
        if weight.perm is None:
            assert torch.equal(part_codes, codes.chunk(world_size, dim)[rank])
        # The packed stream ends in zero bits, as the quantizer writes it.
        assert torch.equal(part.codes.reshape(-1), _pack_codes(part_codes.reshape(-1).to(torch.uint8), part.bits))
        # Per channel, a row-parallel part keeps every row's one scale.
        keeps_scales = dim == 1 and weight.group_size is None
        assert torch.equal(part.scales, weight.scales if keeps_scales else weight.scales.chunk(world_size, dim)[rank])
        if weight.zeros is None:
            assert part.zeros is None
        else:
            assert torch.equal(part.zeros, weight.zeros if keeps_scales else weight.zeros.chunk(world_size, dim)[rank])
    # Together the parts are the whole weight.
    assert torch.equal(torch.cat([part.dequantize() for part in parts], dim), whole)
    return parts


# (dtype, group size, scale dtype): unsigned types carry zero points, the others none.
FORMATS = [
    ("u4", 128, torch.float16),
    ("u4", 32, torch.bfloat16),
    ("u3", 128, torch.float16),
    ("u3", 32, torch.float32),
    ("i8", 128, torch.float16),
    ("i8", 32, torch.bfloat16),
    ("f6e3m2", 128, torch.float16),
    ("f6e3m2", 32, torch.float16),
    ("i3", None, torch.float16),
    ("u5", 64, torch.float16),
]


@pytest.mark.parametrize("dtype,group_size,scale_dtype", FORMATS)
def test_parts_are_slices_of_the_whole_weight(dtype, group_size, scale_dtype, generator):
    w = torch.randn(96, 512, generator=generator)
    weight = anybit.quantize(w, dtype, group_size, scale_dtype=scale_dtype)
    for dim, world_size in ((0, 2), (0, 3), (1, 2), (1, 4)):
        _check_parts(weight, dim, world_size)


@pytest.mark.parametrize("dtype", ["u3", "u5", "i7", "f6e3m2"])
def test_parts_whose_rows_are_not_whole_bytes_are_repacked(dtype, generator):
    """Per channel with an odd K: neither rows nor parts are whole bytes."""
    weight = anybit.quantize(torch.randn(30, 90, generator=generator), dtype, None)
    assert weight.codes.dim() == 1  # the stream is not [N, row bytes]
    _check_parts(weight, 0, 3)
    _check_parts(weight, 0, 5)
    _check_parts(weight, 1, 2)
    _check_parts(weight, 1, 3)


@pytest.mark.parametrize("dtype,group_size", [("u4", 128), ("u3", 32), ("i8", 128), ("f6e3m2", 32)])
def test_a_part_is_what_quantizing_the_slice_gives(dtype, group_size, generator):
    """Rows and groups are quantized independently, so the part of the quantized weight and the
    quantized slice of the weight are the same bytes."""
    w = torch.randn(64, 256, generator=generator).half()
    weight = anybit.quantize(w, dtype, group_size)
    for dim in (0, 1):
        for rank in range(2):
            part = weight.shard(dim, rank, 2)
            direct = anybit.quantize(w.chunk(2, dim)[rank].contiguous(), dtype, group_size)
            assert torch.equal(part.codes.reshape(-1), direct.codes.reshape(-1))
            assert torch.equal(part.scales, direct.scales)
            if direct.zeros is not None:
                assert torch.equal(part.zeros, direct.zeros)


def test_act_order_parts_keep_their_permutation(generator):
    w = torch.randn(64, 256, generator=generator)
    # A permutation of all of K: column-parallel parts keep it whole.
    everywhere = _act_order(w, "u4", 32, torch.randperm(256, generator=generator))
    for part in _check_parts(everywhere, 0, 4):
        assert torch.equal(part.perm, everywhere.perm)
    # A permutation within each half of K: row-parallel parts keep their own half's.
    halves = torch.cat([torch.randperm(128, generator=generator), 128 + torch.randperm(128, generator=generator)])
    within = _act_order(w, "u3", 32, halves)
    parts = _check_parts(within, 1, 2)
    assert torch.equal(parts[0].perm, halves[:128]) and torch.equal(parts[1].perm, halves[128:] - 128)
    with pytest.raises(ValueError, match="act-order weight's K = 256 input features into 4 parts"):
        within.shard(1, 0, 4)
    with pytest.raises(ValueError, match=r"column-parallel \(dim=0\)"):
        everywhere.shard(1, 1, 2)


def test_split_errors_name_the_sizes_that_work():
    weight = anybit.quantize(torch.randn(96, 512), "u4", 128)
    with pytest.raises(ValueError, match=r"N = 96 .* into 5 equal parts.*world sizes that work: 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48"):
        weight.shard(0, 0, 5)
    with pytest.raises(ValueError, match=r"K = 512 .* into 8 parts: each part must be whole groups of 128.*world sizes that work: 1, 2, 4\)"):
        weight.shard(1, 0, 8)
    per_channel = anybit.quantize(torch.randn(8, 90), "u4", None)
    with pytest.raises(ValueError, match=r"K = 90 .* 4 parts: the world size must divide K .*1, 2, 3, 5, 6, 9, 10, 15, 18, 30, 45"):
        per_channel.shard(1, 0, 4)
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        weight.shard(0, 2, 2)
    with pytest.raises(ValueError, match="rank must be in 0..3"):
        weight.shard(0, -1, 4)
    with pytest.raises(ValueError, match="world_size must be at least 1"):
        weight.shard(0, 0, 0)
    with pytest.raises(ValueError, match="dim must be 0 .* or 1"):
        weight.shard(2, 0, 2)
    with pytest.raises(TypeError, match="rank must be an int"):
        weight.shard(0, 0.0, 2)
    with pytest.raises(TypeError, match="world_size must be an int"):
        weight.shard(0, 0, True)
    # Negative dims count from the end, as in torch; a world size of 1 is the whole weight.
    assert torch.equal(weight.shard(-1, 1, 2).dequantize(), weight.shard(1, 1, 2).dequantize())
    assert torch.equal(weight.shard(1, 0, 1).dequantize(), weight.dequantize())


@pytest.mark.parametrize("bits", range(1, 9))
def test_code_streams_unpack_and_pack(bits, generator):
    values = torch.randint(0, 1 << bits, (1001,), generator=generator).to(torch.uint8)
    packed = _pack_codes(values, bits)
    assert packed.numel() == (1001 * bits + 7) // 8
    assert torch.equal(unpack_codes(packed, bits, 1001).to(torch.uint8), values)
    for first in (0, 1, 7, 8, 500):
        assert torch.equal(_unpack_codes(packed, bits, first, 1001 - first), values[first:])


def test_parallel_layers_of_one_rank_are_the_whole_layer(generator):
    """With a world size of 1 nothing is communicated; the layers then equal the whole one."""
    linear = nn.Linear(128, 64)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(64, 128, generator=generator))
        linear.bias.copy_(torch.randn(64, generator=generator))
    whole = QuantizedLinear.from_linear(linear, "u4", 32)
    x = torch.randn(5, 128, generator=generator)
    expected = whole(x)
    column = ColumnParallelLinear.from_quantized(whole, rank=0, world_size=1, gather_output=True)
    row = RowParallelLinear.from_quantized(whole, rank=0, world_size=1)
    assert torch.equal(column(x), expected) and torch.equal(row(x), expected)
    assert "rank=0, world_size=1" in repr(row)


def test_parallel_layers_split_weight_and_bias(generator):
    whole = QuantizedLinear(anybit.quantize(torch.randn(64, 128, generator=generator), "i8", 32), torch.randn(64, generator=generator))
    x = torch.randn(3, 128, generator=generator)
    dense = whole.qweight.dequantize()
    outputs = []
    partials = []
    for rank in range(2):
        column = ColumnParallelLinear.from_quantized(whole, rank=rank, world_size=2)
        assert (column.in_features, column.out_features) == (128, 32)
        assert torch.equal(column.bias, whole.bias.chunk(2)[rank])
        outputs.append(column(x))
        row = RowParallelLinear.from_quantized(whole, rank=rank, world_size=2, input_is_parallel=False)
        assert (row.in_features, row.out_features) == (64, 64)
        assert torch.equal(row.bias, whole.bias)
        # One rank's partial product, before the all-reduce: the bias only on rank 0.
        part = x.chunk(2, -1)[rank]
        partials.append(row._product(part, row.bias if rank == 0 else None))
    assert torch.allclose(torch.cat(outputs, -1), x @ dense.T + whole.bias, atol=1e-5)
    assert torch.allclose(partials[0] + partials[1], x @ dense.T + whole.bias, atol=1e-5)
    with pytest.raises(TypeError, match="QuantizedLinear.from_linear or anybit.quantize_model first"):
        ColumnParallelLinear.from_quantized(nn.Linear(128, 64), rank=0, world_size=2)
    with pytest.raises(TypeError, match="already one rank's part"):
        RowParallelLinear.from_quantized(ColumnParallelLinear.from_quantized(whole, rank=0, world_size=2), rank=0, world_size=2)
    with pytest.raises(TypeError, match=r"ColumnParallelLinear.from_quantized\(QuantizedLinear.from_linear"):
        ColumnParallelLinear.from_linear(nn.Linear(128, 64), "u4", 32)
    with pytest.raises(RuntimeError, match="torch.distributed is not initialized"):
        RowParallelLinear.from_quantized(whole)
    with pytest.raises(ValueError, match="world sizes that work"):
        RowParallelLinear.from_quantized(whole, rank=0, world_size=8)


def _compiled_mlp_on_rank(rank, world_size, port, out_dir):
    """One rank of a tensor-parallel MLP (column-parallel up, row-parallel down) on gloo: the
    eager output, the output under torch.compile(fullgraph=True) and the whole MLP's, saved."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        generator = torch.Generator().manual_seed(0)
        up = QuantizedLinear(anybit.quantize(torch.randn(64, 128, generator=generator), "u4", 32), torch.randn(64, generator=generator))
        down = QuantizedLinear(anybit.quantize(torch.randn(128, 64, generator=generator), "i3", 32), torch.randn(128, generator=generator))
        x = torch.randn(3, 128, generator=generator)
        column = ColumnParallelLinear.from_quantized(up, rank=rank, world_size=world_size)
        row = RowParallelLinear.from_quantized(down, rank=rank, world_size=world_size)

        def mlp(x):
            return row(torch.relu(column(x)))

        compiled = torch.compile(mlp, fullgraph=True, backend="eager")
        torch.save((mlp(x), compiled(x), down(torch.relu(up(x)))), f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_parallel_layers_trace_whole_under_torch_compile(tmp_path):
    """Two ranks on the CPU (gloo): the parallel layers, their all-reduce and the CPU product
    (through the op anybit::dequantize) trace into one graph, and the compiled MLP gives the
    eager one's output exactly, which is the whole MLP's up to the order of the sum."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_compiled_mlp_on_rank, args=(2, port, str(tmp_path)), nprocs=2)
    for rank in range(2):
        eager, compiled, whole = torch.load(tmp_path / f"{rank}.pt")
        assert torch.equal(compiled, eager)
        assert torch.allclose(eager, whole, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype, k, group_size", [("u3", 64, 32), ("u3", 5, None), ("i4", 96, 32), ("f6e3m2", 64, None)])
def test_permuted_rows_are_the_rows_of_the_whole(dtype, k, group_size, generator):
    weight = anybit.quantize(torch.randn(12, k, generator=generator), dtype, group_size)
    order = torch.randperm(12, generator=generator)
    assert torch.equal(weight.permute_rows(order).dequantize(), weight.dequantize()[order])
    with pytest.raises(ValueError, match="permutation of 0..11"):
        weight.permute_rows(torch.zeros(12, dtype=torch.int64))


def test_absorbed_act_order_computes_the_same_and_splits_row_parallel(generator):
    """A Llama MLP whose down projection is act-order: after absorb_act_order the gate and up
    projections emit their features in down's stored order, down has no permutation, the MLP
    computes the same, and down splits row-parallel where it was refused."""
    hidden, inner = 64, 128
    perm = torch.randperm(inner, generator=generator)
    down = QuantizedLinear(_act_order(torch.randn(hidden, inner, generator=generator), "u4", 32, perm), torch.randn(hidden, generator=generator))
    gate = QuantizedLinear(anybit.quantize(torch.randn(inner, hidden, generator=generator), "i3", 32), torch.randn(inner, generator=generator))
    up = QuantizedLinear(anybit.quantize(torch.randn(inner, hidden, generator=generator), "f6e3m2", 32))
    x = torch.randn(5, hidden, generator=generator)

    def mlp(x):
        return down(nn.functional.silu(gate(x)) * up(x))

    before = mlp(x)
    with pytest.raises(ValueError, match="permutation puts input features of other parts"):
        down.qweight.shard(1, 0, 2)
    down_values, gate_values = down.qweight.dequantize(), gate.qweight.dequantize()
    anybit.nn.absorb_act_order([gate, up], down)
    assert down.qweight.perm is None
    # Nothing re-quantized: the same values, in the stored order.
    assert torch.equal(down.qweight.dequantize(), down_values[:, perm])
    assert torch.equal(gate.qweight.dequantize(), gate_values[perm])
    # The same sums in another order: equal up to float32 rounding of values in the hundreds.
    scale = before.abs().max()
    assert torch.allclose(mlp(x), before, rtol=0, atol=1e-5 * scale)
    inner_features = nn.functional.silu(gate(x)) * up(x)
    partials = []
    for rank in range(2):
        row = RowParallelLinear.from_quantized(down, rank=rank, world_size=2, input_is_parallel=False)
        partials.append(row._product(inner_features.chunk(2, -1)[rank], row.bias if rank == 0 else None))
    assert torch.allclose(partials[0] + partials[1], before, rtol=0, atol=1e-5 * scale)
    with pytest.raises(ValueError, match="no act-order permutation"):
        anybit.nn.absorb_act_order([gate, up], down)
    other = QuantizedLinear(_act_order(torch.randn(hidden, inner, generator=generator), "u4", 32, perm))
    with pytest.raises(ValueError, match="64 output features, but the consumer takes 128"):
        anybit.nn.absorb_act_order([down], other)
    with pytest.raises(TypeError, match="already one rank's part"):
        anybit.nn.absorb_act_order([ColumnParallelLinear.from_quantized(gate, rank=0, world_size=2)], other)
