"""The kernels from PyTorch on a GPU (skipped without one): anybit.matmul against the product
with the dequantized weight on fresh random inputs, outputs poisoned first, for several weight
types, M values and with bias; a short last group (a group size that does not divide K) against
the CPU path, and the refusal of a K that is not a multiple of 16; under torch.compile and
CUDA-graph capture; the op checked by torch.library.opcheck. scripts/gpu-python-check runs this
file on the GPU machine."""

import pytest
import torch

import anybit
from anybit import _native
from anybit.nn import QuantizedLinear

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# f16/bf16 outputs of an f32-accumulated product: relative Frobenius error bound.
TOLERANCE = 1e-2


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).norm() / expected.norm().clamp(min=1e-30))


def _launch_into_nan(x, weight, codes, scales, zeros, zero_mode, bias=None):
    """The native launch of a prepared layout into an output filled with NaN first."""
    n, k = weight.shape
    y = torch.full((*x.shape[:-1], n), float("nan"), dtype=x.dtype, device=x.device)
    _native.matmul(
        x.device.index,
        torch.cuda.current_stream().cuda_stream,
        weight.dtype,
        weight.group_size,
        zero_mode,
        n,
        k,
        weight.scale_name,
        codes.data_ptr(),
        scales.data_ptr(),
        None if zeros is None else zeros.data_ptr(),
        {torch.float16: "f16", torch.bfloat16: "bf16"}[x.dtype],
        x.numel() // k,
        x.data_ptr(),
        None if bias is None else bias.data_ptr(),
        y.data_ptr(),
    )
    return y


def _poisoned_product(x, weight, bias):
    """The op's launch into an output filled with NaN first (the native call, so the output
    buffer is ours to poison)."""
    codes, scales, zeros = weight.prepared
    return _launch_into_nan(x, weight, codes, scales, zeros, weight.zero_mode, bias)


@pytest.mark.parametrize("dtype", ["u4", "u3", "i8", "f6e3m2", "u2", "i5"])
@pytest.mark.parametrize("m", [1, 7, 16, 64, 200])
@pytest.mark.parametrize("activation", [torch.float16, torch.bfloat16])
def test_matmul_matches_the_dequantized_product(dtype, m, activation):
    n, k = 320, 768  # N not a multiple of 128
    w = torch.randn(n, k, device="cuda") * 0.02
    weight = anybit.quantize(w, dtype, 128)
    assert weight.device.type == "cuda" and weight.prepared is not None
    x = torch.randn(m, k, device="cuda", dtype=activation)
    bias = torch.randn(n, device="cuda", dtype=activation)
    dense = weight.dequantize(torch.float32)
    expected = x.float() @ dense.T + bias.float()
    poisoned = _poisoned_product(x, weight, bias)
    torch.cuda.synchronize()
    assert not poisoned.isnan().any()
    assert _relative_error(poisoned, expected) <= TOLERANCE
    # Through the op, with leading dimensions, with and without bias.
    y = anybit.matmul(x.reshape(1, m, k), weight, bias)
    assert y.shape == (1, m, n) and y.dtype == activation
    assert torch.equal(y.reshape(m, n), poisoned)
    plain = anybit.matmul(x, weight)
    assert _relative_error(plain, x.float() @ dense.T) <= TOLERANCE


@pytest.mark.parametrize("group_size", [32, None])
def test_groups_scale_types_and_zero_points(group_size):
    n, k = 128, 512
    for scale_dtype in (torch.float16, torch.bfloat16, torch.float32):
        weight = anybit.quantize(torch.randn(n, k, device="cuda"), "u4", group_size, scale_dtype=scale_dtype)
        x = torch.randn(5, k, device="cuda", dtype=torch.float16)
        expected = x.float() @ weight.dequantize(torch.float32).T
        assert _relative_error(anybit.matmul(x, weight), expected) <= TOLERANCE


def test_quantized_linear_under_torch_compile_and_cuda_graphs():
    torch.manual_seed(torch.seed() % (1 << 31))
    linear = torch.nn.Linear(1024, 384, device="cuda", dtype=torch.float16)
    module = QuantizedLinear.from_linear(linear, "u3", 128)
    x = torch.randn(4, 1024, device="cuda", dtype=torch.float16)
    eager = module(x)
    compiled = torch.compile(module, fullgraph=True)
    assert torch.equal(compiled(x), eager)
    # CUDA graph: warm up (kernels compiled and loaded), capture, replay on new input.
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        module(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = module(static_x)
    fresh = torch.randn(4, 1024, device="cuda", dtype=torch.float16)
    static_x.copy_(fresh)
    static_y.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(static_y, module(fresh))
    # torch.compile with CUDA graphs of its own.
    reduced = torch.compile(module, mode="reduce-overhead")
    for _ in range(3):
        out = reduced(fresh)
    assert torch.equal(out, module(fresh))


def test_act_order_weight_gathers_x():
    w = torch.randn(256, 512)
    perm = torch.randperm(512)
    stored = anybit.quantize(w[:, perm], "u3", 128)
    weight = anybit.QuantizedWeight(stored.codes, stored.scales, stored.zeros, "u3", 128, (256, 512), perm=perm).cuda()
    x = torch.randn(9, 512, device="cuda", dtype=torch.float16)
    expected = x.float() @ weight.dequantize(torch.float32).T
    assert _relative_error(anybit.matmul(x, weight), expected) <= TOLERANCE


def test_opcheck():
    weight = anybit.quantize(torch.randn(256, 256, device="cuda"), "i4", 64)
    x = torch.randn(3, 256, device="cuda", dtype=torch.float16)
    from anybit._ops import _arguments

    torch.library.opcheck(torch.ops.anybit.matmul.default, _arguments(x, weight, None))


def test_cuda_input_errors():
    weight = anybit.quantize(torch.randn(64, 128), "u4", 128).cuda()
    x = torch.randn(2, 128, device="cuda", dtype=torch.float16)
    cases = [
        (lambda: anybit.matmul(x[:, :64], weight), ValueError, r"\[\.\.\., 128\]"),
        (lambda: anybit.matmul(torch.randn(128, 2, device="cuda", dtype=torch.float16).T, weight), ValueError, "contiguous"),
        (lambda: anybit.matmul(x, weight, torch.zeros(64, device="cuda")), TypeError, "bias is torch.float32"),
        (lambda: anybit.matmul(x, weight, torch.zeros(63, device="cuda", dtype=torch.float16)), ValueError, r"bias must be \[64\]"),
        (lambda: anybit.matmul(x, weight, torch.zeros(64, dtype=torch.float16)), ValueError, "bias is on cpu"),
        (lambda: anybit.matmul(x, weight.cpu()), ValueError, "move the weight"),
        (lambda: anybit.matmul(torch.randn(1, 129, device="cuda", dtype=torch.float16)[:, 1:], weight), ValueError, "not aligned to 16 bytes"),
        (lambda: QuantizedLinear(weight)(x.float()), TypeError, "float16 or bfloat16"),
    ]
    for call, kind, text in cases:
        with pytest.raises(kind, match=text):
            call()
    # QuantizedLinear copies a misaligned view instead of refusing it.
    offset = torch.randn(1, 129, device="cuda", dtype=torch.float16)[:, 1:]
    module = QuantizedLinear(weight)
    assert torch.equal(module(offset), anybit.matmul(offset.clone(), weight))


def test_load_and_move_between_devices(tmp_path):
    weight = anybit.quantize(torch.randn(64, 128), "f6e3m2", 32)
    on_gpu = weight.cuda()
    assert on_gpu.prepared[0].device.type == "cuda"
    back = on_gpu.cpu()
    assert back.prepared is None and torch.equal(back.dequantize(), weight.dequantize())
    model = torch.nn.Sequential(QuantizedLinear(weight)).cuda()
    x = torch.randn(3, 128, device="cuda", dtype=torch.bfloat16)
    expected = x.float() @ weight.dequantize().cuda().T
    assert _relative_error(model(x), expected) <= TOLERANCE


def _short_group_weight(n, k, dtype, group_size):
    """A CPU weight whose last group (the K mod group_size last columns) is eight times larger
    than the rest, so that a kernel reading its scale wrong, or the short group's columns
    wrongly, is far off."""
    w = torch.randn(n, k) * 0.02
    w[:, k - k % group_size :] *= 8
    weight = anybit.quantize(w, dtype, group_size)
    assert weight.scales.shape == (n, -(-k // group_size))
    return weight


@pytest.mark.parametrize("k", [576, 352])  # 4·128 + 64, 2·128 + 96
@pytest.mark.parametrize("dtype", ["u4", "u3", "i4", "i3"])  # u: zero points, i: none
@pytest.mark.parametrize("activation", [torch.float16, torch.bfloat16])
def test_a_short_last_group_matches_the_cpu_path(k, dtype, activation):
    """K = 576 and 352 in groups of 128 (a short last group of 64 and 96 elements) on the
    GPU: every output written (poisoned with NaN first), against the dequantized product and
    against the CPU path (QuantizedLinear on the CPU), with bias, M = 1, 5 and 64."""
    n = 200  # not a multiple of 128
    weight = _short_group_weight(n, k, dtype, 128)
    on_gpu = weight.to("cuda")
    assert on_gpu.device.type == "cuda" and on_gpu.prepared is not None
    dense = weight.dequantize(torch.float32).cuda()
    for m in (1, 5, 64):
        x = torch.randn(m, k, device="cuda", dtype=activation)
        bias = torch.randn(n, device="cuda", dtype=activation)
        expected = x.float() @ dense.T + bias.float()
        poisoned = _poisoned_product(x, on_gpu, bias)
        torch.cuda.synchronize()
        assert not poisoned.isnan().any()
        assert _relative_error(poisoned, expected) <= TOLERANCE, m
        y = anybit.matmul(x, on_gpu, bias)
        assert y.shape == (m, n) and y.dtype == activation
        assert torch.equal(y, poisoned)
        cpu = QuantizedLinear(weight, bias.cpu())(x.cpu())
        assert _relative_error(y.cpu(), cpu) <= TOLERANCE, m
        assert _relative_error(anybit.matmul(x, on_gpu), x.float() @ dense.T) <= TOLERANCE, m


@pytest.mark.parametrize("k", [576, 352])
@pytest.mark.parametrize("dtype", ["u4", "u3"])
@pytest.mark.parametrize("activation", [torch.float16, torch.bfloat16])
def test_a_short_last_group_of_an_unsigned_weight_without_zero_points(k, dtype, activation):
    """The kernels' unsigned weight without zero points (``decode(q) · s``, zero mode "none":
    the native API takes it; the package's unsigned weights always have zero points), K = 576
    and 352 in groups of 128, against the same codes and scales with zero points 0."""
    n = 72
    weight = _short_group_weight(n, k, dtype, 128)
    reference = anybit.QuantizedWeight(
        weight.codes, weight.scales, torch.zeros_like(weight.zeros), dtype, 128, (n, k)
    )
    codes_bytes, scales_bytes = _native.prepared_sizes(dtype, 128, n, k, weight.scale_name)
    codes = torch.empty(codes_bytes, dtype=torch.uint8)
    scales = torch.empty(scales_bytes, dtype=torch.uint8)
    plain_scales = weight.scales.float().contiguous()
    _native.prepare(
        dtype, 128, "none", n, k, weight.scale_name,
        weight.codes.data_ptr(), weight.codes.numel(),
        plain_scales.data_ptr(), plain_scales.numel() * 4,
        0, 0,
        codes.data_ptr(), codes.numel(),
        scales.data_ptr(), scales.numel(),
        0, 0,
    )
    codes, scales = codes.cuda(), scales.cuda()
    dense = reference.dequantize(torch.float32).cuda()
    for m in (1, 5):
        x = torch.randn(m, k, device="cuda", dtype=activation)
        bias = torch.randn(n, device="cuda", dtype=activation)
        y = _launch_into_nan(x, weight, codes, scales, None, "none", bias)
        torch.cuda.synchronize()
        assert not y.isnan().any()
        assert _relative_error(y, x.float() @ dense.T + bias.float()) <= TOLERANCE, m
        # The same codes with zero points 0, through the package: the same numbers.
        assert _relative_error(y, anybit.matmul(x, reference.cuda(), bias)) <= 1e-3, m


@pytest.mark.parametrize("k,group_size", [(80, 64), (48, 256)])
def test_other_short_groups(k, group_size):
    """K = 80 in groups of 64 (one whole group and a short one of 16) and K = 48 in groups of
    256 (one short group, smaller than a group): u4 and f6e3m2, f16, M = 1 and 5."""
    for dtype in ("u4", "f6e3m2"):
        weight = _short_group_weight(136, k, dtype, group_size).cuda()
        dense = weight.dequantize(torch.float32)
        for m in (1, 5):
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            poisoned = _poisoned_product(x, weight, None)
            torch.cuda.synchronize()
            assert not poisoned.isnan().any()
            assert _relative_error(poisoned, x.float() @ dense.T) <= TOLERANCE, (dtype, m)


def test_a_short_last_group_on_the_gpu_through_the_modules():
    """QuantizedLinear.to("cuda") and back, quantize on a CUDA weight, and quantize_model of a
    model on the GPU whose layers have K = 576 (groups of 128, a short last group of 64)."""
    linear = torch.nn.Linear(576, 96)
    module = QuantizedLinear.from_linear(linear, "u4", 128)
    assert module.qweight.scales.shape == (96, 5)
    x = torch.randn(5, 576)
    on_cpu = module(x)
    module = module.to("cuda").half()
    assert module.qweight.device.type == "cuda" and module.qweight.prepared is not None
    y = module(x.cuda().half())
    assert y.dtype == torch.float16 and _relative_error(y.float().cpu(), on_cpu) <= TOLERANCE
    assert module.cpu().qweight.prepared is None
    # quantize of a CUDA weight: prepared at once.
    w = torch.randn(64, 576, device="cuda")
    weight = anybit.quantize(w, "u3", 128)
    assert weight.device == w.device and weight.scales.shape == (64, 5)
    assert torch.equal(weight.dequantize(), anybit.quantize(w.cpu(), "u3", 128).dequantize().cuda())
    # quantize_model on a GPU takes the short groups.
    model = torch.nn.Sequential(torch.nn.Linear(576, 64), torch.nn.ReLU(), torch.nn.Linear(64, 576))
    model = model.cuda().half()
    dense = [model[0].weight.float().clone(), model[2].weight.float().clone()]
    assert anybit.nn.quantize_model(model, "u4", 128, skip=[]) == ["0", "2"]
    assert model[0].qweight.scales.shape == (64, 5) and model[0].qweight.device.type == "cuda"
    assert model[2].qweight.scales.shape == (576, 1)
    x = torch.randn(3, 576, device="cuda", dtype=torch.float16)
    hidden = torch.relu(x.float() @ model[0].qweight.dequantize().T + model[0].bias.float())
    expected = hidden @ model[2].qweight.dequantize().T + model[2].bias.float()
    assert _relative_error(model(x), expected) <= TOLERANCE
    assert _relative_error(model[0].qweight.dequantize(), dense[0].cuda()) <= 0.2  # u4 error


def test_a_k_that_is_not_a_multiple_of_16_is_refused_on_the_gpu():
    """K = 568 in groups of 128: the kernels need K of a weight in groups to be a multiple of
    16; every way onto a GPU says so and names what works (per channel, or the CPU)."""
    w = torch.randn(64, 568, device="cuda")
    with pytest.raises(ValueError, match=r"K = 568 is not a multiple of 16.*per channel \(group_size=None\)"):
        anybit.quantize(w, "u4", 128)
    assert anybit.quantize(w, "u4", None).device == w.device  # per channel: any K
    # (Layers that are never run, only quantized: the third takes 568 input features.)
    model = torch.nn.Sequential(torch.nn.Linear(576, 64), torch.nn.Linear(64, 64), torch.nn.Linear(568, 64))
    model = model.cuda()
    with pytest.raises(ValueError, match=r"layer '2' is on cuda:\d: K = 568 is not a multiple of 16.*; or add it to skip="):
        anybit.nn.quantize_model(model, "u4", 128, skip=[])
    assert all(isinstance(layer, torch.nn.Linear) for layer in model)  # nothing replaced
    assert anybit.nn.quantize_model(model, "u4", 128, skip=["2"]) == ["0", "1"]
    weight = anybit.quantize(w.cpu(), "u4", 128)
    with pytest.raises(ValueError, match="K = 568 is not a multiple of 16"):
        QuantizedLinear(weight).cuda()
    x = torch.randn(2, 568, device="cuda", dtype=torch.float16)
    with pytest.raises(ValueError, match="K = 568 is not a multiple of 16"):
        anybit.matmul(x, weight)
