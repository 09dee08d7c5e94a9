"""anybit.load on files of the anybit checkpoint format, QuantizedLinear and quantize_model on
the CPU (the dequantized fallback), and their errors."""

import hashlib
import os
import shutil
import subprocess

import pytest
import torch
from torch import nn

import anybit
from anybit.nn import QuantizedLinear, load_quantized, quantize_model
from conftest import write_quantized_checkpoint, write_safetensors


def _digest(path):
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).hexdigest()


def test_load_reads_quantized_and_plain_tensors(tmp_path, generator):
    up = anybit.quantize(torch.randn(64, 128, generator=generator), "u3", 32)
    down = anybit.quantize(torch.randn(128, 100, generator=generator), "f6e3m2", None, scale_dtype=torch.bfloat16)
    norm = torch.randn(128, generator=generator).half()
    path = tmp_path / "model.safetensors"
    write_quantized_checkpoint(path, {"mlp.up.weight": up, "mlp.down.weight": down}, {"norm.weight": norm})
    before = _digest(path)
    tensors = anybit.load(path)
    assert _digest(path) == before
    assert sorted(tensors) == ["mlp.down.weight", "mlp.up.weight", "norm.weight"]
    for name, original in (("mlp.up.weight", up), ("mlp.down.weight", down)):
        loaded = tensors[name]
        assert isinstance(loaded, anybit.QuantizedWeight)
        assert (loaded.dtype, loaded.group_size, loaded.shape) == (original.dtype, original.group_size, original.shape)
        assert loaded.scale_dtype == original.scale_dtype
        assert torch.equal(loaded.dequantize(), original.dequantize())
    assert torch.equal(tensors["norm.weight"], norm)


def test_act_order_weights_carry_their_permutation(tmp_path, generator):
    """A weight imported with GPTQ's act-order: stored column j is the weight's column perm[j];
    dequantize() gives the weight in its own order and the product gathers x."""
    w = torch.randn(32, 128, generator=generator)
    perm = torch.randperm(128, generator=generator)
    stored = anybit.quantize(w[:, perm], "u4", 32)
    weight = anybit.QuantizedWeight(stored.codes, stored.scales, stored.zeros, "u4", 32, (32, 128), perm=perm)
    dense = weight.dequantize()
    assert torch.equal(dense[:, perm], stored.dequantize())
    assert (dense - w).abs().max() <= stored.scales.float().max()
    path = tmp_path / "act_order.safetensors"
    write_quantized_checkpoint(path, {"layer.weight": weight}, {})
    loaded = anybit.load(path)["layer.weight"]
    assert torch.equal(loaded.perm, perm) and torch.equal(loaded.dequantize(), dense)
    module = QuantizedLinear(loaded)
    x = torch.randn(3, 128, generator=generator)
    assert torch.allclose(module(x), x @ dense.T, atol=1e-5)
    again = QuantizedLinear(anybit.quantize(w, "u4", 32))
    again.load_state_dict(module.state_dict())
    assert torch.equal(again.qweight.perm, perm)
    with pytest.raises(ValueError, match="permutation of 0..127"):
        anybit.QuantizedWeight(stored.codes, stored.scales, stored.zeros, "u4", 32, (32, 128), perm=perm.clamp(max=126))


def test_load_errors(tmp_path):
    with pytest.raises(OSError):
        anybit.load(tmp_path / "missing.safetensors")
    with pytest.raises(TypeError, match="path must be"):
        anybit.load(3)
    plain = tmp_path / "plain.safetensors"
    write_safetensors(plain, {"a": torch.zeros(2)}, {})
    with pytest.raises(ValueError, match="not an anybit quantized checkpoint"):
        anybit.load(plain)
    weight = anybit.quantize(torch.randn(16, 32), "u4", 16)
    broken = tmp_path / "broken.safetensors"
    write_quantized_checkpoint(broken, {"w": weight}, {})
    data = broken.read_bytes()
    broken.write_bytes(data[:-10])
    with pytest.raises(ValueError, match="broken.safetensors"):
        anybit.load(broken)


def test_load_a_file_written_by_the_quantize_command(tmp_path, generator):
    """The checkpoint `anybit quantize` writes, where the command is at hand (ANYBIT_BIN)."""
    binary = os.environ.get("ANYBIT_BIN") or shutil.which("anybit")
    if not binary or subprocess.run([binary, "quantize", "--help"], capture_output=True).returncode:
        pytest.skip("no `anybit quantize` command here (set ANYBIT_BIN)")
    import json

    up = torch.randn(64, 256, generator=generator).half()
    down = torch.randn(256, 64, generator=generator).half()
    bias = torch.randn(64, generator=generator).half()
    source = tmp_path / "in"
    source.mkdir()
    # A sharded checkpoint: one shard larger than the other.
    write_safetensors(source / "model-00001-of-00002.safetensors", {"layers.0.up.weight": up, "layers.0.up.bias": bias}, {})
    write_safetensors(source / "model-00002-of-00002.safetensors", {"layers.0.down.weight": down}, {})
    index = source / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {
        "layers.0.up.weight": "model-00001-of-00002.safetensors",
        "layers.0.up.bias": "model-00001-of-00002.safetensors",
        "layers.0.down.weight": "model-00002-of-00002.safetensors",
    }}))
    before = {path.name: _digest(path) for path in source.iterdir()}
    output = tmp_path / "out"
    subprocess.run(
        [binary, "quantize", str(index), "-o", str(output), "--dtype", "u3", "--group", "64"],
        check=True,
        capture_output=True,
    )
    assert {path.name: _digest(path) for path in source.iterdir()} == before
    tensors = anybit.load(output)
    assert sorted(tensors) == ["layers.0.down.weight", "layers.0.up.bias", "layers.0.up.weight"]
    assert torch.equal(tensors["layers.0.up.bias"], bias)
    for name, weight in (("layers.0.up.weight", up), ("layers.0.down.weight", down)):
        loaded = tensors[name]
        assert (loaded.dtype, loaded.group_size, loaded.shape) == ("u3", 64, tuple(weight.shape))
        assert torch.equal(loaded.dequantize(), anybit.quantize(weight, "u3", 64).dequantize())


def test_quantized_linear_on_the_cpu(generator):
    linear = nn.Linear(128, 48, dtype=torch.float32)
    module = QuantizedLinear.from_linear(linear, "i4", 64)
    assert (module.in_features, module.out_features) == (128, 48)
    x = torch.randn(3, 5, 128, generator=generator)
    expected = x @ module.qweight.dequantize().T + linear.bias
    assert torch.allclose(module(x), expected, atol=1e-5)
    assert "dtype=i4" in repr(module)
    # The state dict round trip.
    state = module.state_dict()
    assert set(state) == {"bias", "weight.codes", "weight.scales"}
    other = QuantizedLinear.from_linear(nn.Linear(128, 48), "i4", 64)
    other.load_state_dict(state)
    assert torch.equal(other.qweight.dequantize(), module.qweight.dequantize())
    with pytest.raises(TypeError, match="torch.nn.Linear"):
        QuantizedLinear.from_linear(module)
    with pytest.raises(TypeError, match="QuantizedWeight"):
        QuantizedLinear(linear.weight)
    with pytest.raises(ValueError, match=r"\[48\] is needed"):
        QuantizedLinear(module.qweight, torch.zeros(47))


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(64, 128)
        self.down = nn.Linear(128, 64, bias=False)
        self.lm_head = nn.Linear(64, 10)
        self.norm = nn.LayerNorm(64)

    def forward(self, x):
        return self.lm_head(self.norm(self.down(torch.relu(self.up(x)))))


def test_quantize_model_replaces_linear_layers(generator):
    model = _Block()
    reference = {name: module.weight.detach().clone() for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    replaced = quantize_model(model, "u4", 64)
    assert replaced == ["up", "down"]
    assert isinstance(model.up, QuantizedLinear) and isinstance(model.lm_head, nn.Linear)
    assert model.down.bias is None
    assert (model.up.qweight.dequantize() - reference["up"]).abs().max() < 0.02
    x = torch.randn(2, 64, generator=generator)
    assert model(x).shape == (2, 10)
    everything = _Block()
    assert quantize_model(everything, "i8", None, skip=[]) == ["up", "down", "lm_head"]
    assert quantize_model(_Block(), "u4", 64, skip=["d*"]) == ["up", "lm_head"]
    # Group 128 on 64 input features: one short group per row, on the CPU.
    assert quantize_model(short := _Block(), "u4", 128, skip=["up"]) == ["down", "lm_head"]
    assert short.lm_head.qweight.scales.shape == (10, 1)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        quantize_model(object())


def test_quantize_model_gives_the_same_layers_with_any_number_of_workers():
    serial, parallel = _Block(), _Block()
    parallel.load_state_dict(serial.state_dict())
    assert quantize_model(serial, "u3", 32, skip=[], workers=1) == quantize_model(parallel, "u3", 32, skip=[], workers=3)
    for name in ("up", "down", "lm_head"):
        one, other = serial.get_submodule(name).qweight, parallel.get_submodule(name).qweight
        assert torch.equal(one.codes, other.codes) and torch.equal(one.scales, other.scales)
        assert torch.equal(one.zeros, other.zeros)
    # The first failing layer in the model's order is the one named.
    with pytest.raises(ValueError, match="layer 'up': weight at row 3, column 5 is NaN"):
        broken = _Block()
        with torch.no_grad():
            broken.up.weight[3, 5] = float("nan")
            broken.down.weight[0, 0] = float("nan")
        quantize_model(broken, "u4", 32, workers=2)
    for workers in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers must be a positive int or None"):
            quantize_model(_Block(), "u4", 32, workers=workers)


def test_load_quantized_into_a_model(tmp_path, generator):
    source = _Block()
    quantized = {
        "up.weight": anybit.quantize(source.up.weight, "u3", 32),
        "down.weight": anybit.quantize(source.down.weight, "i4", 64),
    }
    plain = {
        name: tensor.detach()
        for name, tensor in source.state_dict().items()
        if name not in quantized
    }
    path = tmp_path / "block.safetensors"
    write_quantized_checkpoint(path, quantized, plain)
    with torch.device("meta"):
        model = _Block()
    assert load_quantized(model, path) == ["down", "up"]
    assert isinstance(model.up, QuantizedLinear)
    assert torch.equal(model.lm_head.weight, source.lm_head.weight)
    assert torch.equal(model.up.bias, source.up.bias)
    x = torch.randn(2, 64, generator=generator)
    hidden = torch.relu(x @ quantized["up.weight"].dequantize().T + source.up.bias)
    expected = source.lm_head(source.norm(hidden @ quantized["down.weight"].dequantize().T))
    assert torch.allclose(model(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="does not match the model"):
        load_quantized(_Block(), {"up.weight": quantized["up.weight"], "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="not the weight of an nn.Linear"):
        load_quantized(_Block(), {"norm.weight": quantized["up.weight"]})
