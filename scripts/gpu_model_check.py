#!/usr/bin/env python3
"""A whole Llama-architecture model on anybit: quantize every Linear layer of the decoder,
check its logits against the same model with the dequantized weights in f16, and time greedy
decoding at batch 1 against the f16 model.

The model is a ``transformers`` ``LlamaForCausalLM`` built from a ``LlamaConfig`` with random
weights (no download): 8 decoder layers of Llama-3-8B's size (hidden 4096, intermediate 14336,
32 heads, 8 KV heads, vocab 128256), f16, every matrix drawn from N(0, 0.02²) by a seeded
generator, the norms 1. For each format (u4 g128, u3 g128, f6e3m2 g128 by default):

1. ``anybit.quantize_model`` replaces the 56 Linear layers of the decoder (``lm_head`` stays
   f16, as the embeddings do);
2. the *reference* is the same model with each of those layers' weights replaced by its
   dequantized value rounded to f16 (what the kernels multiply by); the logits of both on a
   fixed 32-token prompt (the model's own forward) are compared: max abs and relative
   Frobenius error, top-1 agreement. For scale, the same numbers for the reference against
   itself in f32 (the f16 noise floor) and for anybit against the unquantized f16 model;
3. greedy decoding at batch 1 (128 new tokens after the prompt) is timed for the f16 model and
   the anybit model alike: a static KV cache and one decode step captured in a CUDA graph
   (``torch.cuda.CUDAGraph``) and replayed per token, so neither model pays Python's launch
   overhead per kernel; eager decoding (the same step without the graph) is timed too.

Decoding runs the model's own modules (embedding, norms, rotary embedding, the Linear layers,
MLP) in a loop written here, with the KV cache in preallocated tensors, so that one step can be
captured whatever the ``transformers`` version; its greedy tokens are checked against the
model's own forward on the whole generated sequence (teacher-forced top-1 agreement).

    python3 scripts/gpu_model_check.py [--out DIR]                on the GPU machine
    python3 scripts/gpu_model_check.py --smoke                    CI: a 2-layer tiny model on the CPU

``--smoke`` runs the same steps on the CPU (``QuantizedLinear`` multiplies by the dequantized
weight there; no CUDA graphs, timings meaningless). Writes ``model-check.json`` and
``model-check.md`` to ``--out`` (default ``$OUT`` or ``gpu-check-out``) and prints the summary
table last; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

import anybit
from anybit.nn import QuantizedLinear

# Logits of the anybit model against the reference (the same weights, dequantized to f16):
# both multiply f16 activations by the same weight values with f32 sums; they differ by the
# kernels' order of the sums, the reference's rounding of each weight to f16, and every f16
# rounding that follows, through 8 layers. Relative Frobenius error bound and the least
# top-1 agreement over the prompt's positions.
LOGITS_TOLERANCE = 1e-2
TOP1_AGREEMENT = 0.9
# Teacher-forced top-1 agreement of the decode loop's greedy tokens with the model's forward:
# a wrong cache, position or mask gives about none; rounding flips only near-ties.
DECODER_AGREEMENT = 0.9

LLAMA_3_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_attention_heads=32,
    num_key_value_heads=8,
)
TINY = dict(
    vocab_size=1000,
    hidden_size=256,
    intermediate_size=512,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="2 tiny layers on the CPU")
    parser.add_argument("--device", default=None, help="cuda (default) or cpu (--smoke)")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--formats", default="u4:128,u3:128,f6e3m2:128", help="TYPE:GROUP,... (GROUP 0: per channel)")
    parser.add_argument("--prompt", type=int, default=None, help="prompt tokens (default 32; smoke 8)")
    parser.add_argument("--new", type=int, default=None, help="new tokens (default 128; smoke 8)")
    parser.add_argument("--repeats", type=int, default=None, help="timed generations per model, the median reported (default 5; smoke 1)")
    parser.add_argument("--std", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="threads that quantize (default: every CPU)")
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu-check-out"))
    args = parser.parse_args()
    args.device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    args.layers = args.layers or (2 if args.smoke else 8)
    args.prompt = args.prompt or (8 if args.smoke else 32)
    args.new = args.new or (8 if args.smoke else 128)
    args.repeats = args.repeats or (1 if args.smoke else 5)
    if args.workers is None:
        args.workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    formats = []
    for spec in args.formats.split(","):
        dtype, _, group = spec.partition(":")
        formats.append((dtype, int(group or 128) or None))
    args.formats = formats
    return args


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- the model -------------------------------------------------------------------------------


def build_model(args):
    """The seeded random f16 Llama model on ``args.device``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    sizes = TINY if args.smoke else LLAMA_3_8B
    config = LlamaConfig(
        **sizes,
        num_hidden_layers=args.layers,
        max_position_embeddings=max(2048, args.prompt + args.new),
        tie_word_embeddings=False,
    )
    with torch.device(args.device):
        model = LlamaForCausalLM(config)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    with torch.no_grad():
        # Whatever the transformers version initialises: matrices N(0, std²), norms 1.
        for name, parameter in model.named_parameters():
            if parameter.dim() >= 2:
                parameter.normal_(0.0, args.std, generator=generator)
            elif name.endswith("bias"):
                parameter.zero_()
            else:
                parameter.fill_(1.0)
    model = model.half().eval()
    model.requires_grad_(False)
    return model


def decoder_linear_names(model):
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith("model.layers.")
    ]


def forward_logits(model, ids):
    """The model's own forward (no cache): f32 logits ``[T, vocab]``."""
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits[0].float()


class StaticDecoder:
    """Greedy decoding of a ``LlamaForCausalLM`` at batch 1 with a static KV cache, as a loop
    over the model's own modules; the state (position, last token, tokens so far) lives in
    device tensors, so one :meth:`step` can be captured in a CUDA graph and replayed."""

    def __init__(self, model, max_length: int, new_tokens: int):
        config = model.config
        self.model = model
        self.layers = model.model.layers
        # One rotary embedding for the model (older transformers kept one per attention layer).
        self.rotary = getattr(model.model, "rotary_emb", None) or self.layers[0].self_attn.rotary_emb
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        weight = model.model.embed_tokens.weight
        device, dtype = weight.device, weight.dtype
        shape = (len(self.layers), 1, self.kv_heads, max_length, self.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.slots = torch.arange(max_length, device=device)
        self.position = torch.zeros(1, dtype=torch.int64, device=device)
        self.token = torch.zeros((1, 1), dtype=torch.int64, device=device)
        self.tokens = torch.zeros(new_tokens, dtype=torch.int64, device=device)
        self.count = torch.zeros(1, dtype=torch.int64, device=device)

    @staticmethod
    def _rotate(x, cos, sin):
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def forward(self, ids):
        """Logits of the last of ``ids`` ``[1, T]``, which take the positions from
        :attr:`position` on (advanced by T): ``[1, vocab]``."""
        length = ids.shape[1]
        positions = self.position + self.slots[:length]
        hidden = self.model.model.embed_tokens(ids)
        cos, sin = self.rotary(hidden, positions[None])
        cos, sin = cos[:, None], sin[:, None]
        # Query t sees the slots up to its own position.
        mask = self.slots[None, :] <= positions[:, None]
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attention.q_proj(x).view(1, length, self.heads, self.head_dim).transpose(1, 2)
            k = attention.k_proj(x).view(1, length, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attention.v_proj(x).view(1, length, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
            self.keys[index].index_copy_(2, positions, k)
            self.values[index].index_copy_(2, positions, v)
            out = F.scaled_dot_product_attention(
                q, self.keys[index], self.values[index], attn_mask=mask, enable_gqa=True
            )
            hidden = hidden + attention.o_proj(out.transpose(1, 2).reshape(1, length, self.heads * self.head_dim))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        self.position.add_(length)
        return self.model.lm_head(self.model.model.norm(hidden[:, -1:]))[:, -1]

    def _emit(self, logits):
        token = logits.argmax(-1)
        self.token.copy_(token.view(1, 1))
        self.tokens.index_copy_(0, self.count, token.view(1))
        self.count.add_(1)

    def step(self):
        """One decode step: the last token in, the next one out (all on the device)."""
        self._emit(self.forward(self.token))

    def generate(self, ids, new_tokens: int, graph=None, prefilled=None):
        """Greedy tokens after the prompt ``ids``: the prompt in one forward, then
        ``new_tokens - 1`` steps (replays of ``graph`` when given). ``prefilled`` (a CUDA
        event) is recorded after the prompt."""
        self.position.zero_()
        self.count.zero_()
        with torch.no_grad():
            self._emit(self.forward(ids))
            if prefilled is not None:
                prefilled.record()
            for _ in range(new_tokens - 1):
                if graph is None:
                    self.step()
                else:
                    graph.replay()
        return self.tokens[:new_tokens].clone()

    def capture(self, ids):
        """The decode step as a CUDA graph, after a warm-up generation on a side stream (which
        compiles and loads every kernel the step launches)."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.generate(ids, 3)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            self.step()
        return graph


def time_decoding(model, ids, args, graphs: bool):
    """Greedy decoding of ``args.new`` tokens: the tokens, and the median seconds of the whole
    generation and of its decode steps over ``args.repeats`` runs (after a warm-up)."""
    decoder = StaticDecoder(model, args.prompt + args.new, args.new)
    graph = decoder.capture(ids) if graphs else None
    tokens = decoder.generate(ids, args.new, graph)
    totals, decodes = [], []
    repeats_equal = True
    repeats = args.repeats if graphs or args.device.type == "cpu" else max(1, args.repeats // 2)
    for _ in range(repeats):
        if args.device.type == "cuda":
            start, prefilled, end = (torch.cuda.Event(enable_timing=True) for _ in range(3))
            start.record()
            again = decoder.generate(ids, args.new, graph, prefilled)
            end.record()
            end.synchronize()
            totals.append(start.elapsed_time(end) / 1e3)
            decodes.append(prefilled.elapsed_time(end) / 1e3)
        else:
            started = time.perf_counter()
            again = decoder.generate(ids, args.new)
            totals.append(time.perf_counter() - started)
            decodes.append(float("nan"))
        repeats_equal = repeats_equal and torch.equal(again, tokens)
    total, decode = statistics.median(totals), statistics.median(decodes)
    del graph, decoder
    return tokens, {
        "seconds": total,
        "tokens_per_s": args.new / total,
        "decode_tokens_per_s": (args.new - 1) / decode if decode == decode else None,
        "ms_per_token": 1e3 * decode / (args.new - 1) if decode == decode else None,
        "repeats_gave_the_same_tokens": repeats_equal,
    }


def decoding(model, ids, args):
    """Tokens and timings of greedy decoding with CUDA graphs (on CUDA) and eagerly."""
    result = {}
    tokens = None
    if args.device.type == "cuda":
        try:
            tokens, result["graph"] = time_decoding(model, ids, args, graphs=True)
        except RuntimeError as error:
            # Reported, and the eager timings still come: a failed capture is a finding.
            _log(f"CUDA graph capture failed: {error}")
            result["graph_error"] = str(error)
            torch.cuda.synchronize()
    eager_tokens, result["eager"] = time_decoding(model, ids, args, graphs=False)
    if tokens is None:
        tokens = eager_tokens
    result["graph_and_eager_tokens_equal"] = bool(torch.equal(tokens, eager_tokens))
    # The decode loop against the model's own forward over the whole sequence.
    sequence = torch.cat([ids[0], tokens[:-1]])[None]
    predicted = forward_logits(model, sequence)[args.prompt - 1 :].argmax(-1)
    result["decoder_agreement"] = float((predicted == tokens).float().mean())
    return tokens, result


# -- the comparison --------------------------------------------------------------------------


def compare_logits(actual, expected):
    difference = (actual.double() - expected.double())
    return {
        "max_abs": float(difference.abs().max()),
        "rel_frobenius": float(difference.norm() / expected.double().norm()),
        "top1_agreement": float((actual.argmax(-1) == expected.argmax(-1)).float().mean()),
    }


def dequantized_reference(model, quantized, names, workers):
    """A copy of ``model`` whose layers ``names`` hold the dequantized weights of
    ``quantized``'s, in ``model``'s dtype."""
    reference = copy.deepcopy(model)
    dtype = next(model.parameters()).dtype

    def dequantize(name):
        return quantized.get_submodule(name).qweight.dequantize(dtype)

    with ThreadPoolExecutor(max_workers=workers) as pool, torch.no_grad():
        for name, weight in zip(names, pool.map(dequantize, names)):
            reference.get_submodule(name).weight.copy_(weight)
    return reference


def weight_bytes(model, names):
    total = 0
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, QuantizedLinear):
            total += module.qweight.nbytes
        else:
            total += module.weight.numel() * module.weight.element_size()
    return total


def check_format(model, f16_logits, f16_tokens, ids, dtype, group, args):
    names = decoder_linear_names(model)
    label = f"{dtype} g{group or 'pc'}"
    _log(f"{label}: quantizing {len(names)} layers ({args.workers} threads)")
    started = time.perf_counter()
    quantized = copy.deepcopy(model)
    replaced = anybit.quantize_model(quantized, dtype, group, skip=["lm_head"], workers=args.workers)
    _synchronize(args.device)
    quantize_seconds = time.perf_counter() - started
    if sorted(replaced) != sorted(names):
        raise RuntimeError(f"quantize_model replaced {len(replaced)} layers, expected the decoder's {len(names)}")
    reference = dequantized_reference(model, quantized, names, args.workers)
    _log(f"{label}: quantized in {quantize_seconds:.1f} s; logits")
    logits = forward_logits(quantized, ids)
    reference_logits = forward_logits(reference, ids)
    wide = copy.deepcopy(reference).float()
    wide_logits = forward_logits(wide, ids)
    del wide
    gc.collect()
    result = {
        "format": label,
        "dtype": dtype,
        "group_size": group,
        "layers_quantized": len(replaced),
        "quantize_seconds": quantize_seconds,
        "decoder_weight_bytes": weight_bytes(quantized, names),
        "logits_vs_reference": compare_logits(logits, reference_logits),
        "reference_f16_vs_f32": compare_logits(reference_logits, wide_logits),
        "logits_vs_f16_model": compare_logits(logits, f16_logits),
        "finite": bool(torch.isfinite(logits).all()),
    }
    _log(f"{label}: decoding")
    tokens, result["decoding"] = decoding(quantized, ids, args)
    reference_tokens, _ = decoding_tokens_only(reference, ids, args)
    same = (tokens == reference_tokens).tolist()
    result["greedy_tokens_equal_to_reference"] = sum(same)
    result["greedy_first_difference_from_reference"] = same.index(False) if False in same else None
    result["greedy_tokens_equal_to_f16_model"] = int((tokens == f16_tokens).sum())
    metrics = result["logits_vs_reference"]
    result["pass"] = (
        result["finite"]
        and metrics["rel_frobenius"] <= LOGITS_TOLERANCE
        and metrics["top1_agreement"] >= TOP1_AGREEMENT
        and result["decoding"]["decoder_agreement"] >= DECODER_AGREEMENT
    )
    del quantized, reference
    gc.collect()
    if args.device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def decoding_tokens_only(model, ids, args):
    """Greedy tokens (one generation, with a CUDA graph on CUDA), untimed."""
    decoder = StaticDecoder(model, args.prompt + args.new, args.new)
    graph = decoder.capture(ids) if args.device.type == "cuda" else None
    tokens = decoder.generate(ids, args.new, graph)
    return tokens, None


# -- the report ------------------------------------------------------------------------------


def _size(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.2f} MiB"


def _number(value, form: str) -> str:
    return "–" if value is None else format(value, form)


def summary_table(report) -> str:
    f16 = report["f16"]["decoding"]
    mode = "graph" if "graph" in f16 and all("graph" in result["decoding"] for result in report["formats"]) else "eager"
    f16_rate = f16[mode]["tokens_per_s"]
    lines = [
        f"| model | decoder weights | logits vs dequantized f16: rel / max abs / top-1 | f16 noise floor (rel) | "
        f"logits vs f16 model: rel / top-1 | tokens/s ({mode}) | decode ms/token | speedup | tokens/s (eager) | "
        "greedy tokens = reference | result |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| f16 | {_size(report['f16']['decoder_weight_bytes'])} | – | – | – | {f16_rate:.1f} | "
        f"{_number(f16[mode]['ms_per_token'], '.2f')} | 1.00 | {f16['eager']['tokens_per_s']:.1f} | – | "
        f"{'pass' if report['f16']['pass'] else 'FAIL'} |",
    ]
    new = report["settings"]["new"]
    for result in report["formats"]:
        timing = result["decoding"][mode]
        metrics = result["logits_vs_reference"]
        quantization = result["logits_vs_f16_model"]
        lines.append(
            f"| anybit {result['format']} | {_size(result['decoder_weight_bytes'])} | "
            f"{metrics['rel_frobenius']:.2e} / {metrics['max_abs']:.3f} / {metrics['top1_agreement']:.2f} | "
            f"{result['reference_f16_vs_f32']['rel_frobenius']:.2e} | "
            f"{quantization['rel_frobenius']:.2e} / {quantization['top1_agreement']:.2f} | "
            f"{timing['tokens_per_s']:.1f} | {_number(timing['ms_per_token'], '.2f')} | "
            f"{timing['tokens_per_s'] / f16_rate:.2f} | {result['decoding']['eager']['tokens_per_s']:.1f} | "
            f"{result['greedy_tokens_equal_to_reference']}/{new} | {'pass' if result['pass'] else 'FAIL'} |"
        )
    return "\n".join(lines)


def markdown(report) -> str:
    environment = report["environment"]
    config = report["config"]
    lines = [
        "# anybit on a whole Llama-architecture model",
        "",
        f"- device: {environment['device']}; torch {environment['torch']}, transformers "
        f"{environment['transformers']}",
        f"- model: LlamaForCausalLM, {config['num_hidden_layers']} layers, hidden {config['hidden_size']}, "
        f"intermediate {config['intermediate_size']}, {config['num_attention_heads']} heads, "
        f"{config['num_key_value_heads']} KV heads, vocab {config['vocab_size']}; f16, random N(0, "
        f"{report['settings']['std']}²) weights, seed {report['settings']['seed']}",
        f"- quantized: every Linear of the decoder layers (`anybit.quantize_model`, skip lm_head); "
        f"embeddings and lm_head f16",
        f"- logits: the model's forward on a {report['settings']['prompt']}-token prompt against the "
        f"same model with the dequantized weights in f16; pass when relative Frobenius error ≤ "
        f"{LOGITS_TOLERANCE:g} and top-1 agreement ≥ {TOP1_AGREEMENT:g} (and the decode loop's "
        f"greedy tokens agree with the model's forward ≥ {DECODER_AGREEMENT:g})",
        f"- decoding: greedy, batch 1, {report['settings']['new']} new tokens after the prompt, static "
        f"KV cache; {report['settings']['timing']}; median of {report['settings']['repeats']} runs",
        "",
        summary_table(report),
        "",
    ]
    for name, decoding in [("f16", report["f16"]["decoding"])] + [
        (result["format"], result["decoding"]) for result in report["formats"]
    ]:
        if "graph_error" in decoding:
            lines.append(f"CUDA graph capture failed for {name} (eager timings only): {decoding['graph_error']}")
    return "\n".join(lines)


def main() -> int:
    args = _arguments()
    import transformers

    device = args.device
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run with --smoke (or --device cpu) on a machine without a GPU", file=sys.stderr)
        return 2
    environment = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpus": args.workers,
    }
    _log(json.dumps(environment))
    _log("building the model")
    model = build_model(args)
    generator = torch.Generator().manual_seed(args.seed + 1)
    ids = torch.randint(0, model.config.vocab_size, (1, args.prompt), generator=generator).to(device)
    names = decoder_linear_names(model)
    f16_logits = forward_logits(model, ids)
    _log("f16 model: decoding")
    f16_tokens, f16_decoding = decoding(model, ids, args)
    report = {
        "environment": environment,
        "config": {
            key: getattr(model.config, key)
            for key in (
                "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
                "num_key_value_heads", "vocab_size",
            )
        },
        "settings": {
            "prompt": args.prompt,
            "new": args.new,
            "repeats": args.repeats,
            "std": args.std,
            "seed": args.seed,
            "timing": (
                "one decode step captured as a CUDA graph and replayed per token (prompt eager); "
                "eager: the same loop without the graph"
                if device.type == "cuda"
                else "eager on the CPU (no CUDA graphs; the times mean nothing)"
            ),
            "logits_tolerance": LOGITS_TOLERANCE,
            "top1_agreement": TOP1_AGREEMENT,
            "decoder_agreement": DECODER_AGREEMENT,
        },
        "f16": {
            "decoder_weight_bytes": weight_bytes(model, names),
            "decoding": f16_decoding,
            "finite": bool(torch.isfinite(f16_logits).all()),
            "pass": bool(torch.isfinite(f16_logits).all())
            and f16_decoding["decoder_agreement"] >= DECODER_AGREEMENT,
        },
        "formats": [],
    }
    for dtype, group in args.formats:
        report["formats"].append(check_format(model, f16_logits, f16_tokens, ids, dtype, group, args))
    passed = report["f16"]["pass"] and all(result["pass"] for result in report["formats"])
    report["pass"] = passed
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "model-check.json"), "w") as file:
        json.dump(report, file, indent=2)
    with open(os.path.join(args.out, "model-check.md"), "w") as file:
        file.write(markdown(report))
    print()
    print(markdown(report))
    print("all checks pass" if passed else "SOME CHECKS FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
