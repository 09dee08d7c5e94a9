"""The kernels from PyTorch on a GPU (skipped without one): anybit.matmul against the product
with the dequantized weight on fresh random inputs, outputs poisoned first, for several weight
types, M values and with bias; under torch.compile and CUDA-graph capture; the op checked by
torch.library.opcheck. scripts/gpu-python-check runs this file on the GPU machine."""

import pytest
import torch

import anybit
from anybit import _native
from anybit.nn import QuantizedLinear

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# f16/bf16 outputs of an f32-accumulated product: relative Frobenius error bound.
TOLERANCE = 1e-2


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    return float((actual - expected).norm() / expected.norm().clamp(min=1e-30))


def _poisoned_product(x, weight, bias):
    """The op's launch into an output filled with NaN first (the native call, so the output
    buffer is ours to poison)."""
    n, k = weight.shape
    y = torch.full((*x.shape[:-1], n), float("nan"), dtype=x.dtype, device=x.device)
    codes, scales, zeros = weight.prepared
    _native.matmul(
        x.device.index,
        torch.cuda.current_stream().cuda_stream,
        weight.dtype,
        weight.group_size,
        weight.zero_mode,
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


def test_a_short_last_group_is_refused_on_the_gpu():
    """K = 576 in groups of 128 (a short last group of 64): the CPU path takes it, the kernels
    do not; every way onto a GPU says so and names the group sizes that work."""
    w = torch.randn(64, 576, device="cuda")
    with pytest.raises(ValueError, match=r"group size 128 does not divide K = 576.*16, 32, 64, None \(per channel\)"):
        anybit.quantize(w, "u4", 128)
    model = torch.nn.Sequential(torch.nn.Linear(576, 64)).cuda()
    with pytest.raises(ValueError, match=r"layer '0' is on cuda:\d and has 576 input features.*16, 32, 64, None"):
        anybit.nn.quantize_model(model, "u4", 128)
    assert isinstance(model[0], torch.nn.Linear)  # nothing replaced
    weight = anybit.quantize(w.cpu(), "u4", 128)
    with pytest.raises(ValueError, match="short group of 64 elements"):
        QuantizedLinear(weight).cuda()
