"""A Llama-architecture language model in numpy, loaded from a GGUF file (SmolLM2-135M-Instruct).

- `load_model` dequantizes every tensor of the GGUF file to float32 with the `gguf` package and
  keeps the result in `.cache/quality/` (the GGUF reader takes seconds; the cache a fraction).
  Weights keep GGUF's names and layout: a 2-D weight `blk.L.attn_q.weight` is `[N, K]` (output
  rows, input columns), the layout `anybit quantize` takes.
- `forward` is the fast path: the tokens of several windows at once, float32, batched matmuls
  (one BLAS thread: the quality run quantizes the next configuration on the other core).
  llama.cpp's converter permutes the rows of Q and K within each head so that RoPE rotates
  adjacent pairs (x[2i], x[2i+1]); `forward` undoes the permutation and rotates the two halves
  of each head (x[i], x[i + d/2]), the convention of the original checkpoint.
- `forward_step` is the slow path used to check the fast one: one token at a time with a key and
  value cache, float64, RoPE on the GGUF layout as is (adjacent pairs, as complex numbers).
  The two agree only if the permutation is understood; a wrong one also shows as a perplexity far
  off.
"""
import hashlib
import json
import os

import numpy as np

from .tokenizer import Tokenizer

LINEAR_WEIGHTS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


class Config:
    def __init__(self, fields):
        self.layers = int(fields["llama.block_count"])
        self.hidden = int(fields["llama.embedding_length"])
        self.heads = int(fields["llama.attention.head_count"])
        self.kv_heads = int(fields["llama.attention.head_count_kv"])
        self.head_dim = self.hidden // self.heads
        self.rope_dim = int(fields.get("llama.rope.dimension_count", self.head_dim))
        self.rope_theta = float(fields["llama.rope.freq_base"])
        self.rms_eps = float(fields["llama.attention.layer_norm_rms_epsilon"])
        self.vocab = int(fields["llama.vocab_size"])
        if self.rope_dim != self.head_dim:
            raise ValueError("partial RoPE is not implemented")

    def to_json(self):
        return self.__dict__


class Model:
    """Weights (GGUF names, float32), the configuration and the tokenizer."""

    def __init__(self, config, weights, tokenizer, source):
        self.config = config
        self.weights = weights
        self.tokenizer = tokenizer
        self.source = source

    def linear_names(self, layers=None):
        """The names of the decoder layers' 2-D weights (of the first `layers` layers)."""
        count = self.config.layers if layers is None else layers
        return [f"blk.{layer}.{name}.weight" for layer in range(count) for name in LINEAR_WEIGHTS]

    def with_weights(self, replaced):
        weights = dict(self.weights)
        for name, value in replaced.items():
            if weights[name].shape != value.shape:
                raise ValueError(f"{name}: shape {value.shape}, expected {weights[name].shape}")
            weights[name] = np.ascontiguousarray(value, dtype=np.float32)
        return Model(self.config, weights, self.tokenizer, self.source)


def _field(reader, key):
    field = reader.fields[key]
    return field.contents()


def load_model(gguf_path, cache_dir):
    """Reads the GGUF file (or its cached float32 copy)."""
    stat = os.stat(gguf_path)
    key = hashlib.sha256(f"{os.path.abspath(gguf_path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    stem = os.path.join(cache_dir, "model-" + key.hexdigest()[:16])
    if os.path.exists(stem + ".json") and os.path.exists(stem + ".npz"):
        with open(stem + ".json") as f:
            meta = json.load(f)
        with np.load(stem + ".npz") as data:
            weights = {name: data[name] for name in data.files}
    else:
        import gguf  # only needed once

        reader = gguf.GGUFReader(gguf_path)
        keys = ["llama.block_count", "llama.embedding_length", "llama.attention.head_count",
                "llama.attention.head_count_kv", "llama.rope.dimension_count",
                "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon",
                "llama.vocab_size", "general.name", "general.architecture"]
        fields = {k: _field(reader, k) for k in keys if k in reader.fields}
        if fields.get("general.architecture") != "llama":
            raise ValueError(f"{gguf_path}: not a Llama-architecture model")
        if _field(reader, "tokenizer.ggml.model") != "gpt2":
            raise ValueError(f"{gguf_path}: not a byte-level BPE tokenizer")
        tensor_types = {}
        weights = {}
        for tensor in reader.tensors:
            values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            weights[tensor.name] = np.ascontiguousarray(values, dtype=np.float32)
            tensor_types[tensor.name] = tensor.tensor_type.name
        meta = {
            "fields": {k: v for k, v in fields.items()},
            "tokens": list(_field(reader, "tokenizer.ggml.tokens")),
            "merges": list(_field(reader, "tokenizer.ggml.merges")),
            "pre_tokenizer": _field(reader, "tokenizer.ggml.pre"),
            "tensor_types": tensor_types,
        }
        os.makedirs(cache_dir, exist_ok=True)
        np.savez(stem + ".tmp.npz", **weights)
        with open(stem + ".tmp.json", "w") as f:
            json.dump(meta, f)
        os.replace(stem + ".tmp.npz", stem + ".npz")
        os.replace(stem + ".tmp.json", stem + ".json")
    if meta["pre_tokenizer"] != "smollm":
        raise ValueError(f"pre-tokenizer {meta['pre_tokenizer']!r}: only 'smollm' is implemented")
    config = Config(meta["fields"])
    source = {"name": meta["fields"].get("general.name"), "tensor_types": meta["tensor_types"]}
    return Model(config, weights, Tokenizer(meta["tokens"], meta["merges"]), source)


def _unpermute(weight, heads):
    """Undoes llama.cpp's permutation of Q/K rows: GGUF rows (head, i, pair) → (head, pair, i)."""
    rows, cols = weight.shape
    d = rows // heads
    return weight.reshape(heads, d // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _rms_norm(x, weight, eps):
    variance = np.mean(np.square(x), axis=-1, keepdims=True)
    return x / np.sqrt(variance + eps) * weight


def _rope_tables(config, length, dtype):
    half = config.head_dim // 2
    inverse = config.rope_theta ** (-np.arange(half, dtype=np.float64) * 2 / config.head_dim)
    angles = np.arange(length, dtype=np.float64)[:, None] * inverse[None, :]
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def _rope_halves(x, cos, sin):
    """x: [..., tokens, head_dim]; rotates (x[i], x[i + d/2]) by the token's angle i."""
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


def _silu_times(gate, up):
    """silu(gate) · up, as gate / (1 + exp(−gate)) · up, in one temporary (gate is kept)."""
    out = np.negative(gate)
    np.exp(out, out=out)
    out += 1.0
    np.divide(gate, out, out=out)
    out *= up
    return out


def _is_power_of_two(value):
    mantissa, _ = np.frexp(value)
    return mantissa == 0.5


def _causal_attention(q, k, v, group, scale, block=128):
    """Softmax attention with a causal mask; q [count, heads, len, d], k and v [count, kv, len, d].
    Queries go in blocks that see only the keys up to their last position (little more than
    half the work of a full square); the keys before a block are all visible, so the mask is
    added to the block's diagonal square only. The `group` query heads of a key/value head share
    it (grouped-query). A scale that is a power of two (1/8 for heads of 64) multiplies the
    queries instead of the scores (exactly the same products, one pass over the smaller array),
    and the softmax's division by its sum is applied to the mixed values [.., d] rather than to
    the weights [.., keys] (the same up to float32 rounding)."""
    count, heads, length, d = q.shape
    kv = k.shape[1]
    scale_queries = _is_power_of_two(scale)
    if scale_queries:
        q = q * scale
    q = q.reshape(count, kv, group, length, d)
    k_t = k.transpose(0, 1, 3, 2)
    out = np.empty((count, kv, group, length, d), dtype=np.float32)
    for start in range(0, length, block):
        end = min(length, start + block)
        size = end - start
        rows_q = q[:, :, :, start:end, :].reshape(count, kv, group * size, d)
        scores = rows_q @ k_t[:, :, :, :end]
        scores = scores.reshape(count, kv, group, size, end)
        if not scale_queries:
            scores *= scale
        # The diagonal square: query i sees keys up to i (added as -inf: one pass).
        scores[..., start:end] += _causal_mask(size)
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        total = scores.sum(axis=-1, keepdims=True)
        mixed = scores.reshape(count, kv, group * size, end) @ v[:, :, :end, :]
        np.divide(mixed.reshape(count, kv, group, size, d), total,
                  out=out[:, :, :, start:end, :])
    return out.reshape(count, heads, length, d)


_MASKS = {}


def _causal_mask(size):
    """[size, size] float32: 0 on and below the diagonal, -inf above."""
    if size not in _MASKS:
        _MASKS[size] = np.where(np.arange(size)[None, :] > np.arange(size)[:, None], -np.inf,
                                0).astype(np.float32)
    return _MASKS[size]


def forward(model, windows, layers=None):
    """Logits [windows, tokens, vocab] (float32) of token windows [windows, tokens], causal
    within each window; `layers` runs only the first that many decoder layers."""
    c = model.config
    w = model.weights
    windows = np.asarray(windows)
    count, length = windows.shape
    x = w["token_embd.weight"][windows.reshape(-1)]  # [count*length, hidden]
    cos, sin = _rope_tables(c, length, np.float32)
    group = c.heads // c.kv_heads
    scale = np.float32(1.0 / np.sqrt(c.head_dim))
    for layer in range(c.layers if layers is None else layers):
        p = f"blk.{layer}."
        h = _rms_norm(x, w[p + "attn_norm.weight"], c.rms_eps)
        q = h @ _unpermute(w[p + "attn_q.weight"], c.heads).T
        k = h @ _unpermute(w[p + "attn_k.weight"], c.kv_heads).T
        v = h @ w[p + "attn_v.weight"].T
        q = q.reshape(count, length, c.heads, c.head_dim).transpose(0, 2, 1, 3)
        k = k.reshape(count, length, c.kv_heads, c.head_dim).transpose(0, 2, 1, 3)
        v = v.reshape(count, length, c.kv_heads, c.head_dim).transpose(0, 2, 1, 3)
        q = _rope_halves(q, cos, sin)
        k = _rope_halves(k, cos, sin)
        attended = _causal_attention(q, k, v, group, scale).transpose(0, 2, 1, 3)
        attended = attended.reshape(count * length, c.hidden)
        x = x + attended @ w[p + "attn_output.weight"].T
        h = _rms_norm(x, w[p + "ffn_norm.weight"], c.rms_eps)
        gate = h @ w[p + "ffn_gate.weight"].T
        up = h @ w[p + "ffn_up.weight"].T
        x = x + _silu_times(gate, up) @ w[p + "ffn_down.weight"].T
    x = _rms_norm(x, w["output_norm.weight"], c.rms_eps)
    head = w.get("output.weight", w["token_embd.weight"])  # tied embeddings when absent
    return (x @ head.T).reshape(count, length, -1)


def forward_step(model, tokens, layers=None):
    """Logits [tokens, vocab] (float64) of one sequence, computed token by token with a key and
    value cache and RoPE on the GGUF layout (adjacent pairs)."""
    c = model.config
    w = {name: value.astype(np.float64) for name, value in model.weights.items()}
    count = c.layers if layers is None else layers
    cache_k = [[] for _ in range(count)]
    cache_v = [[] for _ in range(count)]
    inverse = c.rope_theta ** (-np.arange(c.head_dim // 2, dtype=np.float64) * 2 / c.head_dim)
    head = w.get("output.weight", w["token_embd.weight"])
    out = []
    for position, token in enumerate(tokens):
        rotation = np.exp(1j * position * inverse)
        x = w["token_embd.weight"][token]
        for layer in range(count):
            p = f"blk.{layer}."
            h = x / np.sqrt(np.mean(x * x) + c.rms_eps) * w[p + "attn_norm.weight"]
            q = (w[p + "attn_q.weight"] @ h).reshape(c.heads, c.head_dim // 2, 2)
            k = (w[p + "attn_k.weight"] @ h).reshape(c.kv_heads, c.head_dim // 2, 2)
            q = (q[..., 0] + 1j * q[..., 1]) * rotation
            k = (k[..., 0] + 1j * k[..., 1]) * rotation
            cache_k[layer].append(k)
            cache_v[layer].append((w[p + "attn_v.weight"] @ h).reshape(c.kv_heads, c.head_dim))
            keys = np.stack(cache_k[layer])  # [position+1, kv, d/2] complex
            values = np.stack(cache_v[layer])
            attended = np.empty((c.heads, c.head_dim))
            for qh in range(c.heads):
                kv = qh // (c.heads // c.kv_heads)
                # Re(q · conj(k)) summed over pairs is the real dot product of the rotated pairs.
                scores = np.real(keys[:, kv, :].conj() @ q[qh]) / np.sqrt(c.head_dim)
                weights = np.exp(scores - scores.max())
                weights /= weights.sum()
                attended[qh] = weights @ values[:, kv, :]
            x = x + w[p + "attn_output.weight"] @ attended.reshape(-1)
            h = x / np.sqrt(np.mean(x * x) + c.rms_eps) * w[p + "ffn_norm.weight"]
            gate = w[p + "ffn_gate.weight"] @ h
            up = w[p + "ffn_up.weight"] @ h
            x = x + w[p + "ffn_down.weight"] @ (gate / (1 + np.exp(-gate)) * up)
        x_out = x / np.sqrt(np.mean(x * x) + c.rms_eps) * w["output_norm.weight"]
        out.append(head @ x_out)
    return np.stack(out)
