"""Weights whose group size does not divide K (each row's last group short, as GPTQ's
``g_idx = k // group_size`` makes it; SmolLM2-135M's K = 576 in groups of 128): quantization
against the zero-padded weight and the torch reference, dequantization, QuantizedLinear on the
CPU, files (written here and by `anybit quantize`), tensor-parallel parts, the GPU path up to
the GPU (the kernel layout, the launch plan), and its refusal of a K that is not a multiple of
16, which names K and what works. test_cuda.py runs the kernels on such weights."""

import os
import re
import shutil
import subprocess

import pytest
import torch

import anybit
from anybit._weight import _check_kernel_group
from anybit.nn import QuantizedLinear, load_quantized, quantize_model
from conftest import dequantize_reference, reference_quantize, unpack_codes, write_quantized_checkpoint, write_safetensors

K = 576  # 4·128 + 64


def _codes(weight):
    n, k = weight.shape
    return unpack_codes(weight.codes, weight.bits, n * k).reshape(n, k)


@pytest.mark.parametrize("dtype", ["u4", "u3", "i4", "i8", "f6e3m2", "f4e2m1"])
@pytest.mark.parametrize("search", [None, "mse"])
@pytest.mark.parametrize("group_size,k", [(128, 576), (32, 40), (256, 576), (64, 40)])
def test_a_short_last_group_is_the_zero_padded_group(dtype, search, group_size, k, generator):
    """Quantizing [N, K] equals quantizing it padded with zeros to whole groups, the padding
    dropped: the same codes, scales and zero points, bit for bit."""
    n = 24
    w = torch.randn(n, k, generator=generator) * 0.05
    groups = -(-k // group_size)
    padded = torch.zeros(n, groups * group_size)
    padded[:, :k] = w
    weight = anybit.quantize(w, dtype, group_size, search=search)
    whole = anybit.quantize(padded, dtype, group_size, search=search)
    assert weight.group_size == group_size and weight.scales.shape == (n, groups)
    assert torch.equal(weight.scales, whole.scales)
    if weight.zeros is None:
        assert whole.zeros is None
    else:
        assert weight.zeros.shape == (n, groups) and torch.equal(weight.zeros, whole.zeros)
    assert torch.equal(_codes(weight), _codes(whole)[:, :k])
    assert torch.equal(weight.dequantize(), whole.dequantize()[:, :k])
    assert torch.allclose(weight.dequantize(torch.float64), dequantize_reference(weight), atol=0, rtol=2**-23)


@pytest.mark.parametrize("dtype", ["u4", "u2", "i3", "i8"])
def test_integer_codes_of_a_short_last_group_match_the_reference(dtype, generator):
    w = torch.randn(16, K, generator=generator) * 0.05
    weight = anybit.quantize(w, dtype, 128)
    codes, scales, zeros = reference_quantize(w, dtype, 128, torch.float16)
    assert scales.shape == (16, 5)
    assert torch.equal(weight.scales.to(torch.float64), scales)
    assert (_codes(weight) != codes).sum() <= 2  # exact ties are rare on random data
    if zeros is not None:
        assert torch.equal(weight.zeros.to(torch.float64), zeros)
    # Every element within half a step of its group's scale: the last 64 columns use scale 4.
    step = weight.scales.to(torch.float64).repeat_interleave(128, 1)[:, :K]
    assert torch.equal(step[:, 512:], weight.scales[:, 4:5].to(torch.float64).expand(16, 64))
    assert ((weight.dequantize(torch.float64) - w.to(torch.float64)).abs() <= step * 0.5 + 1e-12).all()


def test_known_values_of_a_short_group():
    # K = 40 in groups of 32: the second group of each row is the 8 values -2 .. 5.
    row = [i * 0.5 - 1.5 for i in range(32)] + [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    weight = anybit.quantize(torch.tensor([row]), "u4", 32, scale_dtype=torch.float32)
    assert weight.scales.shape == (1, 2)
    # [-2, 5] over 15 levels: scale 7/15 (rounded up to f32), zero point round(2 / (7/15)) = 4.
    scale = weight.scales[0, 1].item()
    assert scale >= 7 / 15 and torch.nextafter(torch.tensor(scale), torch.tensor(0.0)).item() < 7 / 15
    assert weight.zeros.tolist() == [[1, 4]]
    assert _codes(weight)[0, 32:].tolist() == [0, 2, 4, 6, 8, 10, 13, 15]
    expected = [(code - 4) * scale for code in (0, 2, 4, 6, 8, 10, 13, 15)]
    assert torch.equal(weight.dequantize(torch.float64)[0, 32:], torch.tensor(expected, dtype=torch.float64).float().double())


def test_weight_object_and_constructor_checks():
    weight = anybit.quantize(torch.randn(8, K), "u3", 128)
    assert weight.codes.shape == (8, K * 3 // 8) and weight.scales.shape == (8, 5)
    again = anybit.QuantizedWeight(weight.codes, weight.scales, weight.zeros, "u3", 128, (8, K))
    assert torch.equal(again.dequantize(), weight.dequantize())
    with pytest.raises(ValueError, match=r"needs \(8, 5\)"):
        anybit.QuantizedWeight(weight.codes, weight.scales[:, :4], weight.zeros, "u3", 128, (8, K))
    with pytest.raises(ValueError, match=r"\(8, 5\) are needed"):
        anybit.QuantizedWeight(weight.codes, weight.scales, weight.zeros[:, :4], "u3", 128, (8, K))


def test_quantized_linear_on_the_cpu(generator):
    linear = torch.nn.Linear(K, 48)
    module = QuantizedLinear.from_linear(linear, "u4", 128)
    x = torch.randn(3, K, generator=generator)
    expected = x @ module.qweight.dequantize().T + linear.bias
    assert torch.allclose(module(x), expected, atol=1e-5)
    assert torch.equal(module.qweight.dequantize(), anybit.quantize(linear.weight, "u4", 128).dequantize())
    # The state dict round trip keeps the five groups.
    other = QuantizedLinear.from_linear(torch.nn.Linear(K, 48), "u4", 128)
    other.load_state_dict(module.state_dict())
    assert torch.equal(other(x), module(x))
    # quantize_model takes the short group on the CPU.
    model = torch.nn.Sequential(torch.nn.Linear(K, 64), torch.nn.ReLU(), torch.nn.Linear(64, K))
    assert quantize_model(model, "i4", 128, skip=[]) == ["0", "2"]
    assert model[0].qweight.scales.shape == (64, 5) and model[2].qweight.scales.shape == (K, 1)
    assert model(x).shape == (3, K)


def test_load_a_file_with_a_short_last_group(tmp_path, generator):
    up = anybit.quantize(torch.randn(64, K, generator=generator), "u3", 128)
    gate = anybit.quantize(torch.randn(64, K, generator=generator), "f6e3m2", 256, search="mse")
    path = tmp_path / "short.safetensors"
    write_quantized_checkpoint(path, {"up.weight": up, "gate.weight": gate}, {})
    tensors = anybit.load(path)
    for name, original in (("up.weight", up), ("gate.weight", gate)):
        loaded = tensors[name]
        assert (loaded.group_size, loaded.scales.shape) == (original.group_size, original.scales.shape)
        assert torch.equal(loaded.dequantize(), original.dequantize())
    model = torch.nn.Module()
    with torch.device("meta"):
        model.up = torch.nn.Linear(K, 64, bias=False)
        model.gate = torch.nn.Linear(K, 64, bias=False)
    assert load_quantized(model, path) == ["gate", "up"]
    x = torch.randn(2, K, generator=generator)
    assert torch.allclose(model.up(x), x @ up.dequantize().T, atol=1e-5)


def test_load_a_file_the_quantize_command_wrote(tmp_path, generator):
    binary = os.environ.get("ANYBIT_BIN") or shutil.which("anybit")
    if not binary or subprocess.run([binary, "quantize", "--help"], capture_output=True).returncode:
        pytest.skip("no `anybit quantize` command here (set ANYBIT_BIN)")
    q = torch.randn(64, K, generator=generator).half()
    source = tmp_path / "model.safetensors"
    write_safetensors(source, {"layers.0.q.weight": q}, {})
    output = tmp_path / "model-u4.safetensors"
    result = subprocess.run(
        [binary, "quantize", str(source), "-o", str(output), "--dtype", "u4", "--group", "128",
         "--search", "mse"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    loaded = anybit.load(output)["layers.0.q.weight"]
    direct = anybit.quantize(q, "u4", 128, search="mse")
    assert (loaded.group_size, loaded.scales.shape) == (128, (64, 5))
    assert torch.equal(loaded.codes, direct.codes) and torch.equal(loaded.scales, direct.scales)
    assert torch.equal(loaded.zeros, direct.zeros)
    assert torch.equal(loaded.dequantize(), direct.dequantize())


def test_shards(generator):
    weight = anybit.quantize(torch.randn(96, K, generator=generator), "u4", 128)
    whole = weight.dequantize()
    # Column-parallel parts (rows) keep their five groups each.
    for rank, part in enumerate(weight.shard(0, rank, 3) for rank in range(3)):
        assert part.scales.shape == (32, 5)
        assert torch.equal(part.dequantize(), whole.chunk(3, 0)[rank])
    # One row-parallel part is the whole weight.
    alone = weight.shard(1, 0, 1)
    assert torch.equal(alone.scales, weight.scales) and torch.equal(alone.dequantize(), whole)
    # Equal parts of K cannot all be whole groups: refused, naming what works.
    with pytest.raises(
        ValueError,
        match=r"K = 576 input features of this weight into 2 parts: its groups of 128 end in a short "
        r"group of 64 .*world sizes that work: 1\)\. Group sizes that split K = 576 into 2 parts: "
        r"16, 32, None \(per channel\); or split it column-parallel",
    ):
        weight.shard(1, 0, 2)
    with pytest.raises(ValueError, match=r"into 3 parts: .*into 3 parts: 16, 32, 64, None \(per channel\)"):
        weight.shard(1, 1, 3)


@pytest.mark.parametrize("dtype", ["u4", "u3", "i4", "f6e3m2"])
@pytest.mark.parametrize("group_size,k", [(128, 576), (128, 352), (64, 80), (256, 48)])
def test_the_gpu_path_takes_a_short_last_group_where_k_is_a_multiple_of_16(dtype, group_size, k):
    """Everything the CUDA path does before a GPU: the kernel layout made on the host (what
    .to("cuda") copies to the device) at the sizes the kernels' format check gives, and the
    launch plan, whose kernels do not split K over warps (those need whole groups per slice).
    The kernels' results are checked in test_cuda.py."""
    n = 72
    weight = anybit.quantize(torch.randn(n, k), dtype, group_size)
    assert weight.scales.shape == (n, -(-k // group_size))
    codes_bytes, scales_bytes = anybit._native.prepared_sizes(dtype, group_size, n, k, weight.scale_name)
    codes, scales, zeros = weight._prepare_on_host()
    assert codes.numel() == codes_bytes and scales.numel() == scales_bytes
    assert (zeros is None) == (weight.zeros is None) and (zeros is None or zeros.numel() == scales_bytes)
    for m in (1, 5, 64, 200):
        for activation in ("f16", "bf16"):
            launches = anybit._native.plan(
                dtype, group_size, weight.zero_mode, n, k, weight.scale_name, 0x10000, 0x20000,
                None if zeros is None else 0x30000, activation, m, 0x40000, None, 0x50000,
            )
            assert sum(tokens for _, _, tokens in launches) == m
            for name, _, _ in launches:
                assert re.search(r"_w\d+k1r", name), name
    # No refusal on the way to a GPU: the next question is whether there is one.
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            weight.to("cuda")
        with pytest.raises(ValueError, match="x is on cpu; anybit.matmul runs on CUDA tensors"):
            anybit.matmul(torch.randn(2, k, dtype=torch.float16), weight)


def test_the_gpu_path_refuses_a_k_that_is_not_a_multiple_of_16():
    """K = 568 in groups of 128 (four of 128 and one of 56): the CPU path takes it; the
    kernels need K of a weight in groups to be a multiple of 16, so every way onto a GPU
    refuses it, naming K and what works, before any GPU is looked for."""
    k = 568
    weight = anybit.quantize(torch.randn(8, k), "u4", 128)
    x = torch.randn(2, k)
    assert torch.allclose(QuantizedLinear(weight)(x), x @ weight.dequantize().T, atol=1e-5)
    message = (
        r"K = 568 is not a multiple of 16, which the CUDA path needs of a weight in groups \(here "
        r"of 128; a group size that does not divide K leaves a short last group, which it takes, "
        r"but K itself must be a multiple of 16\): for CUDA, quantize it per channel "
        r"\(group_size=None\), the one choice for K = 568; or keep it on the CPU, which takes it "
        r"as it is"
    )
    with pytest.raises(ValueError, match=message):
        weight.to("cuda")
    with pytest.raises(ValueError, match=message):
        weight.cuda()
    with pytest.raises(ValueError, match=message):
        anybit.matmul(x.half(), weight)
    # Whatever the group size (none divides such a K).
    for group_size in (16, 32, 256):
        with pytest.raises(ValueError, match=f"K = 568 is not a multiple of 16.*here of {group_size};"):
            anybit.quantize(torch.randn(8, k), "i4", group_size).to("cuda")
    # Per channel, any K goes on (here: to the check for a GPU), and so does the kernels' side.
    per_channel = anybit.quantize(torch.randn(8, k), "u4", None)
    assert anybit._native.prepared_sizes("u4", None, 8, k, "f16")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            per_channel.to("cuda")
    # The kernels' own format check refuses it too (later, when a weight is prepared).
    with pytest.raises(ValueError, match="K = 568 is not a multiple of 16, which groups of 128"):
        anybit._native.prepared_sizes("u4", 128, 8, k, "f16")


def test_the_package_and_the_kernels_take_the_same_k():
    """The package's check before a GPU and the kernels' format check agree on every K up to
    1100 and every group size: K a multiple of 16 in groups (the group dividing K or not), any
    K per channel."""
    for k in range(1, 1100):
        for group_size in anybit.GROUP_SIZES:
            try:
                anybit._native.prepared_sizes("u4", group_size, 4, k, "f16")
                kernels = True
            except ValueError as error:
                assert "is not a multiple of 16" in str(error)
                kernels = False
            try:
                _check_kernel_group(group_size, k)
                package = True
            except ValueError:
                package = False
            assert package == kernels, (k, group_size)
            assert kernels == (group_size is None or k % 16 == 0), (k, group_size)


def test_a_file_with_group_size_zero_is_a_clear_error(tmp_path):
    import json

    weight = anybit.quantize(torch.randn(4, K), "i4", 128)
    path = tmp_path / "zero.safetensors"
    info = {"dtype": "i4", "group_size": 0, "shape": [4, K], "scale_dtype": "f16",
            "zero_points": False, "source_dtype": "F16", "search": "none"}
    write_safetensors(path, {"w.codes": weight.codes, "w.scales": weight.scales},
                      {"anybit.format_version": "1", "anybit.w": json.dumps(info)})
    with pytest.raises(ValueError, match="zero.safetensors: tensor `w`: group size 0"):
        anybit.load(path)
