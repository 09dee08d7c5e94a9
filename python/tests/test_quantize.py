"""anybit.quantize and QuantizedWeight on the CPU: values against a torch reference on fresh
random data, and every refused input."""

import pytest
import torch

import anybit
from conftest import (
    code_table,
    dequantize_reference,
    reference_quantize,
    unpack_codes,
)


def test_import_and_op_registration():
    assert "u3" in anybit.WEIGHT_TYPES and "f6e3m2" in anybit.WEIGHT_TYPES
    assert "i1" not in anybit.WEIGHT_TYPES
    assert anybit.MAX_TOKENS_PER_LAUNCH == 64
    assert hasattr(torch.ops.anybit, "matmul")
    assert isinstance(anybit.nn.QuantizedLinear, type)


@pytest.mark.parametrize("dtype", ["u1", "u2", "u3", "u4", "u5", "u8", "i2", "i3", "i4", "i6", "i8"])
@pytest.mark.parametrize("group_size", [32, 128, None])
@pytest.mark.parametrize("source", [torch.float32, torch.float16, torch.bfloat16])
def test_integer_codes_scales_and_zeros_match_the_reference(dtype, group_size, source, generator):
    n, k = 24, 256
    w = (torch.randn(n, k, generator=generator) * 0.05).to(source)
    weight = anybit.quantize(w, dtype, group_size)
    scale_dtype = source if source != torch.float32 else torch.float16
    assert weight.scale_dtype == scale_dtype
    codes, scales, zeros = reference_quantize(w, dtype, group_size, scale_dtype)
    assert torch.equal(weight.scales.to(torch.float64), scales)
    got = unpack_codes(weight.codes, weight.bits, n * k).reshape(n, k)
    # Ties (exact halves) are rare on random data; allow at most a handful of them.
    assert (got != codes).sum() <= 2
    if zeros is None:
        assert weight.zeros is None
    else:
        assert torch.equal(weight.zeros.to(torch.float64), zeros)
    # The dequantized weight is within half a step of the original (plus scale rounding).
    deq = weight.dequantize(torch.float64)
    step = weight.scales.to(torch.float64).repeat_interleave(k if group_size is None else group_size, 1)
    assert ((deq - w.to(torch.float64)).abs() <= step * 0.5 + 1e-12).all()
    assert torch.allclose(deq, dequantize_reference(weight), atol=0, rtol=2**-23)


@pytest.mark.parametrize("dtype", ["f3e1m1", "f4e2m1", "f5e2m2", "f6e2m3", "f6e3m2", "f8e4m3", "f8e5m2"])
def test_small_float_codes_are_the_nearest_level(dtype, generator):
    n, k = 16, 128
    w = torch.randn(n, k, generator=generator, dtype=torch.float32)
    weight = anybit.quantize(w, dtype, 64, scale_dtype=torch.float32)
    _, scales, _ = reference_quantize(w, dtype, 64, torch.float32)
    assert torch.equal(weight.scales.to(torch.float64), scales)
    table = code_table(dtype)
    levels = table[torch.isfinite(table)]
    scaled = w.to(torch.float64) / scales.repeat_interleave(64, 1)
    codes = unpack_codes(weight.codes, weight.bits, n * k).reshape(n, k)
    chosen = table[codes]
    nearest = (scaled[..., None] - levels).abs().min(-1).values
    assert ((chosen - scaled).abs() <= nearest + 1e-12).all()
    # dequantize() rounds the f64 values to f32.
    assert torch.allclose(weight.dequantize(torch.float64), dequantize_reference(weight), atol=0, rtol=2**-23)


def test_mse_search_is_never_worse(generator):
    w = torch.randn(32, 256, generator=generator) ** 3
    for dtype in ("u2", "u3", "i3"):
        plain = anybit.quantize(w, dtype, 128)
        searched = anybit.quantize(w, dtype, 128, search="mse")
        error = lambda q: ((q.dequantize() - w) ** 2).reshape(32, 2, 128).sum(-1)
        assert (error(searched) <= error(plain) + 1e-6).all()
        assert error(searched).sum() < error(plain).sum()


def test_weight_object():
    w = torch.randn(40, 96)
    weight = anybit.quantize(w, "u3", 32, scale_dtype="bf16")
    assert weight.shape == (40, 96) and weight.bits == 3
    assert weight.codes.shape == (40, 36) and weight.codes.dtype == torch.uint8
    assert weight.scales.shape == (40, 3) and weight.scales.dtype == torch.bfloat16
    assert weight.zeros.shape == (40, 3)
    assert weight.device == torch.device("cpu") and weight.prepared is None
    assert weight.nbytes == 40 * 36 + 40 * 3 * 2 + 40 * 3
    assert weight.to("cpu") is weight
    assert "u3" in repr(weight)
    # Odd rows: codes are one packed stream.
    odd = anybit.quantize(torch.randn(3, 5), "u3", None)
    assert odd.codes.shape == (6,)
    # Rebuilt from its parts it is the same weight.
    again = anybit.QuantizedWeight(weight.codes, weight.scales, weight.zeros, "u3", 32, (40, 96))
    assert torch.equal(again.dequantize(), weight.dequantize())


def test_per_channel_and_f32_scales():
    w = torch.randn(8, 100)  # K that no group size divides: per channel works
    weight = anybit.quantize(w, "i4", None, scale_dtype=torch.float32)
    assert weight.group_size is None and weight.scales.shape == (8, 1)
    assert ((weight.dequantize() - w).abs() <= weight.scales / 2 + 1e-6).all()


def test_quantize_errors():
    w = torch.randn(8, 128)
    cases = [
        (lambda: anybit.quantize([[1.0]]), TypeError, "w must be a torch.Tensor"),
        (lambda: anybit.quantize(torch.randn(128)), ValueError, "2-D weight"),
        (lambda: anybit.quantize(w.to(torch.float64)), TypeError, "float64"),
        (lambda: anybit.quantize(w.to(torch.int32)), TypeError, "float32, float16 or bfloat16"),
        (lambda: anybit.quantize(torch.randn(0, 128)), ValueError, "at least 1"),
        (lambda: anybit.quantize(w, "u9"), ValueError, "weight type 'u9'"),
        (lambda: anybit.quantize(w, "i1"), ValueError, "weight type 'i1'"),
        (lambda: anybit.quantize(w, "f16"), ValueError, "weight type 'f16'"),
        (lambda: anybit.quantize(w, 4), TypeError, "weight type name"),
        (lambda: anybit.quantize(w, "u4", 48), ValueError, "group size 48"),
        (lambda: anybit.quantize(w, "u4", 128.0), TypeError, "group_size must be an int"),
        (lambda: anybit.quantize(w, "u4", 128, scale_dtype=torch.int8), TypeError, "scale_dtype"),
        (lambda: anybit.quantize(w, "u4", 128, scale_dtype="f8"), ValueError, "scale_dtype 'f8'"),
        (lambda: anybit.quantize(w, "u4", 128, search="grid"), ValueError, "search 'grid'"),
        (lambda: anybit.quantize(w.to("meta")), ValueError, "meta"),
    ]
    for call, kind, text in cases:
        with pytest.raises(kind, match=text.replace("(", r"\(")):
            call()
    bad = w.clone()
    bad[3, 7] = float("nan")
    with pytest.raises(ValueError, match="row 3, column 7"):
        anybit.quantize(bad)
    with pytest.raises(ValueError, match="beyond the largest f16"):
        anybit.quantize(torch.full((1, 16), 1e30), "i2", 16)


def test_weight_constructor_errors():
    w = anybit.quantize(torch.randn(8, 64), "u4", 32)
    cases = [
        (lambda: anybit.QuantizedWeight(w.codes.float(), w.scales, w.zeros, "u4", 32, (8, 64)), TypeError, "codes must be torch.uint8"),
        (lambda: anybit.QuantizedWeight(w.codes[:-1], w.scales, w.zeros, "u4", 32, (8, 64)), ValueError, "packs into 256"),
        (lambda: anybit.QuantizedWeight(w.codes, w.scales[:, :1], w.zeros, "u4", 32, (8, 64)), ValueError, r"needs \(8, 2\)"),
        (lambda: anybit.QuantizedWeight(w.codes, w.scales.to(torch.int32), w.zeros, "u4", 32, (8, 64)), TypeError, "scales must be"),
        (lambda: anybit.QuantizedWeight(w.codes, w.scales, None, "u4", 32, (8, 64)), ValueError, "need zero points"),
        (lambda: anybit.QuantizedWeight(w.codes, w.scales, w.zeros, "i4", 32, (8, 64)), ValueError, "take no zero points"),
        (lambda: anybit.QuantizedWeight(w.codes, w.scales, w.zeros.float(), "u4", 32, (8, 64)), TypeError, "zeros must be torch.uint8"),
        (lambda: anybit.QuantizedWeight(w.codes, w.scales, w.zeros + 20, "u4", 32, (8, 64)), ValueError, "beyond the largest u4 code 15"),
    ]
    for call, kind, text in cases:
        with pytest.raises(kind, match=text):
            call()
    with pytest.raises(ValueError, match="CPU or a CUDA device"):
        w.to("meta")
