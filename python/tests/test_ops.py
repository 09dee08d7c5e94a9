"""anybit.matmul without a GPU: the custom op's fake (meta) implementation, the checks of its
inputs, and the launch plan (kernel choice by M, the split of large M, pointer checks)."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import anybit
from anybit import _native


def _op_args(x, n=256, k=512, zeros=True, bias=None):
    codes = torch.empty(n * k // 2, dtype=torch.uint8, device=x.device)
    scales = torch.empty(n * k // 128 * 2, dtype=torch.uint8, device=x.device)
    zero = torch.empty_like(scales) if zeros else None
    return (x, codes, scales, zero, bias, "u4", 128, "codes" if zeros else "none", n, k, "f16")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fake_implementation_on_meta_tensors(dtype):
    x = torch.empty(3, 5, 512, dtype=dtype, device="meta")
    y = torch.ops.anybit.matmul(*_op_args(x))
    assert y.shape == (3, 5, 256) and y.dtype == dtype and y.device.type == "meta"
    bias = torch.empty(256, dtype=dtype, device="meta")
    assert torch.ops.anybit.matmul(*_op_args(x[0], bias=bias)).shape == (5, 256)


def test_fake_implementation_under_fake_tensor_mode():
    with FakeTensorMode():
        x = torch.empty(7, 512, dtype=torch.float16)
        y = torch.ops.anybit.matmul(*_op_args(x, zeros=False))
        assert y.shape == (7, 256) and y.dtype == torch.float16


def test_traced_graph_holds_the_op():
    from torch.fx.experimental.proxy_tensor import make_fx

    def product(x, codes, scales, zeros):
        return torch.ops.anybit.matmul(x, codes, scales, zeros, None, "u4", 128, "codes", 256, 512, "f16") * 2

    x = torch.empty(4, 512, dtype=torch.float16)
    args = _op_args(x)
    graph = make_fx(product, tracing_mode="fake")(*args[:4])
    text = str(graph.graph)
    assert "anybit.matmul" in text
    products = [node for node in graph.graph.nodes if "anybit.matmul" in str(node.target)]
    assert len(products) == 1
    value = products[0].meta["val"]
    assert value.shape == (4, 256) and value.dtype == torch.float16


def test_matmul_input_errors():
    weight = anybit.quantize(torch.randn(256, 512), "u4", 128)
    x = torch.randn(2, 512, dtype=torch.float16)
    cases = [
        (lambda: anybit.matmul([1.0], weight), TypeError, "x must be a torch.Tensor"),
        (lambda: anybit.matmul(x, torch.randn(256, 512)), TypeError, "anybit.QuantizedWeight"),
        (lambda: anybit.matmul(x.float(), weight), TypeError, "float16 or bfloat16"),
        (lambda: anybit.matmul(x, weight), ValueError, "x is on cpu"),
    ]
    for call, kind, text in cases:
        with pytest.raises(kind, match=text):
            call()


def _plan(m=1, x=0x1000, y=0x2000, codes=0x3000, scales=0x4000, zeros=0x5000, bias=None,
          dtype="u4", group=128, zero_mode="codes", n=256, k=512, scale="f16", activation="f16"):
    return _native.plan(dtype, group, zero_mode, n, k, scale, codes, scales, zeros,
                        activation, m, x, bias, y)


def test_plan_chooses_kernels_by_m_and_splits_large_m():
    one = _plan(m=1)
    assert len(one) == 1 and one[0][1:] == (0, 1)
    assert one[0][0].startswith("qmm_decode_u4_f16_g128_sf16_z_")
    assert "t1" in one[0][0].split("_")[-1]
    assert "t8" in _plan(m=64)[0][0].split("_")[-1]
    spans = [(first, tokens) for _, first, tokens in _plan(m=150)]
    assert spans == [(0, 64), (64, 64), (128, 22)]
    assert "_b_" in _plan(bias=0x6000)[0][0]
    assert "_bf16_" in _plan(activation="bf16")[0][0]


def test_plan_errors_name_the_problem():
    cases = [
        (dict(m=0), "M = 0"),
        (dict(x=0x1008), r"`x` \(0x1008\) is not aligned to 16 bytes"),
        (dict(y=0), "the pointer `y` is null"),
        (dict(bias=0x6004), "`bias`"),
        (dict(zeros=None), "has zero points"),
        (dict(dtype="i4", zero_mode="none"), "has no zero points"),
        (dict(k=500), "K = 500 is not a multiple of 16, which groups of 128 elements need"),
        (dict(group=48), "group size 48"),
        (dict(n=0), "at least 1"),
        (dict(scale="u8"), "not u8"),
        (dict(activation="f32"), "f16 or bf16"),
        (dict(zero_mode="sometimes"), "zero point mode"),
        (dict(dtype="u12"), "u12"),
    ]
    for arguments, text in cases:
        with pytest.raises(ValueError, match=text):
            _plan(**arguments)


def test_warm_up_and_matmul_need_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    weight = anybit.quantize(torch.randn(64, 128), "u4", 128)
    for device in ("cuda", "cuda:0"):
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            weight.to(device)
    with pytest.raises(RuntimeError):
        anybit.nn.QuantizedLinear(weight).cuda()


def test_the_cuda_path_under_fake_tensor_mode():
    """anybit.matmul and QuantizedLinear on fake CUDA tensors: the checks, the arguments of the
    op and its fake implementation, with no GPU."""
    weight = anybit.quantize(torch.randn(256, 512), "u4", 128)
    host = weight._prepare_on_host()
    with FakeTensorMode(allow_non_fake_inputs=True):
        weight._prepared = tuple(torch.empty(t.shape, dtype=t.dtype, device="cuda") for t in host)
        weight.device = torch.device("cuda:0")
        x = torch.empty(3, 5, 512, dtype=torch.bfloat16, device="cuda")
        bias = torch.empty(256, dtype=torch.bfloat16, device="cuda")
        y = anybit.matmul(x, weight, bias)
        assert (y.shape, y.dtype, y.device) == ((3, 5, 256), torch.bfloat16, torch.device("cuda:0"))
        module = anybit.nn.QuantizedLinear(weight, torch.zeros(256, device="cuda"))
        assert module(x).shape == (3, 5, 256)
        # A view that starts off a 16-byte boundary: refused by matmul, copied by the module.
        view = torch.empty(2, 513, dtype=torch.float16, device="cuda")[:, 1:]
        with pytest.raises(ValueError, match="contiguous"):
            anybit.matmul(view, weight)
        offset = torch.empty(1, 513, dtype=torch.float16, device="cuda")[:, 1:]
        with pytest.raises(ValueError, match="not aligned to 16 bytes"):
            anybit.matmul(offset, weight)
        assert module(offset).shape == (1, 256)
        cases = [
            (lambda: anybit.matmul(x[..., :256], weight), ValueError, r"\[\.\.\., 512\]"),
            (lambda: anybit.matmul(x, weight, bias.half()), TypeError, "bias is torch.float16"),
            (lambda: anybit.matmul(x, weight, bias[:255]), ValueError, r"bias must be \[256\]"),
            (lambda: anybit.matmul(x, weight, torch.empty(256, dtype=torch.bfloat16)), ValueError, "bias is on cpu"),
            (lambda: anybit.matmul(x.float(), weight), TypeError, "float16 or bfloat16"),
            (lambda: module(x.float()), TypeError, "convert the model"),
        ]
        for call, kind, text in cases:
            with pytest.raises(kind, match=text):
                call()


def test_alignment_check_traces_without_a_graph_break():
    """torch.compile(fullgraph=True) cannot read storage_offset(): while it traces, the check
    answers True (the native side checks the address)."""
    from anybit._ops import _aligned

    def scaled(x):
        return x * 2 if _aligned(x) else x * 3

    compiled = torch.compile(scaled, fullgraph=True, backend="eager")
    x = torch.randn(8)
    assert torch.equal(compiled(x), x * 2)
    assert not _aligned(torch.randn(9, dtype=torch.float16)[1:])


def test_dequantize_op_passes_opcheck_and_matches_the_weight():
    """anybit::dequantize (the CPU path's op): its fake implementation agrees with the real one
    (torch.library.opcheck), and the op gives the weight's own dequantization."""
    weight = anybit.quantize(torch.randn(48, 96), "u3", 32)
    arguments = (weight.codes, weight.scales.float().contiguous(), weight.zeros, weight.dtype,
                 weight.group_size, 48, 96, weight.scale_name)
    torch.library.opcheck(torch.ops.anybit.dequantize.default, arguments)
    assert torch.equal(torch.ops.anybit.dequantize(*arguments), weight.dequantize())
