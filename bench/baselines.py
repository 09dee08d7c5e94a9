#!/usr/bin/env python3
"""Times the peers of anybit's quantized matmul on one GPU, the way anybit's own bench does.

The problem is Y[M, N] = X[M, K] · dequant(W)[N, K]ᵀ with 16-bit activations, group-wise scales
along K. The peers:

  cublas          torch F.linear with an f16 or bf16 weight (weight types `f16`, `bf16`)
  torch-int4pack  torch.ops.aten._weight_int4pack_mm, u4 with float zero points (bf16 only)
  gemlite         gemlite A16Wn (Triton), u2/u4/u8 with float zero points
  humming         humming-kernels HummingLayer: symmetric i1..i8 and small floats f{B}e{E}m{M}
  humming-zp      humming with integer zero points, u1..u8 (only when --only names it, or "all")

Every configuration is first run once and checked against an f32 reference built from the peer's
own dequantized weight; then, interleaved round-robin with the other weight types of the same
kernel, shape and M, it is timed with CUDA events around each call (warm-up first, median of at
least 20 runs). Before every timed call the L2 cache is flushed by *reading* a buffer of at least
twice the L2 size (a sum, outside the timed region), then a short GPU spin gives the CPU time to
enqueue the call, so the events measure the kernel and not Python. Inputs are random, never zero.

Each kernel family runs in its own child process, so a peer that fails to import, compile or run,
or that kills its CUDA context, only turns its own rows into error rows; the driver keeps going.

On the GPU machine (no network; the wheels come from scripts/fetch-baseline-wheels):

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site python3 bench/baselines.py --json $OUT/baselines.jsonl

Output: one JSON object per line in --json (see docs/baselines.md for the fields), progress lines
as it goes, and a short aligned table at the end. `--dry-run` prints the planned rows without a GPU.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# ------------------------------------------------------------------------------------------------
# Weight types and kernels (pure Python: usable without torch, for --dry-run and the tests)

DEFAULT_SHAPES = "8192x8192,57344x8192,8192x28672"
DEFAULT_MS = "1,16,32,64"
DEFAULT_FLOATS = ("f4e2m1", "f5e2m2", "f6e2m3", "f6e3m2", "f8e4m3", "f8e5m2")
# Where the tensors live: "cuda", or "cpu" for the CPU smoke test of the whole flow (hidden
# option --device; only the cuBLAS family makes sense there).
DEVICE = "cuda"
# What `--types all` (the default) means.
ALL_TYPES = (
    ("f16", "bf16")
    + tuple(f"u{b}" for b in range(1, 9))
    + tuple(f"i{b}" for b in range(1, 9))
    + DEFAULT_FLOATS
)
# In the order they run: the strongest peer before the slowest to tune.
KERNELS = ("cublas", "torch-int4pack", "humming", "gemlite", "humming-zp")
DEFAULT_KERNELS = ("cublas", "torch-int4pack", "humming", "gemlite")
# The L2 of an H100 is 50 MB; flush by reading at least twice that.
MIN_FLUSH_MB = 100
MIN_TIMED_RUNS = 20
# Relative error allowed against a reference built from the peer's own dequantized weight: the
# only differences are f16/bf16 rounding of products, partial sums and the output.
EXACT_TOL = 1e-2
# CPU time to enqueue a call above which the flush (about 85 µs for 256 MiB) and the default pad
# (300 000 cycles, at least 150 µs) may no longer hide it from the events.
SLOW_LAUNCH_US = 150.0
RUN_COMMAND = (
    "python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl"
    " && PYTHONPATH=/tmp/site python3 bench/baselines.py --json $OUT/baselines.jsonl"
)

_FLOAT_RE = re.compile(r"^f(\d)e(\d)m(\d)$")
_INT_RE = re.compile(r"^([ui])(\d)$")


@dataclass(frozen=True)
class WeightType:
    """A weight type in anybit's spelling: f16, bf16, u1..u8, i1..i8 or f{B}e{E}m{M}."""

    name: str
    kind: str  # "half", "uint", "int" or "float"
    bits: int
    exponent_bits: int = 0
    mantissa_bits: int = 0


def parse_type(name: str) -> WeightType:
    name = name.strip().lower()
    if name in ("f16", "bf16"):
        return WeightType(name, "half", 16)
    m = _INT_RE.match(name)
    if m and 1 <= int(m.group(2)) <= 8:
        return WeightType(name, "uint" if m.group(1) == "u" else "int", int(m.group(2)))
    m = _FLOAT_RE.match(name)
    if m:
        bits, e, mant = (int(g) for g in m.groups())
        if bits == 1 + e + mant and e >= 1 and 2 <= bits <= 8:
            return WeightType(name, "float", bits, e, mant)
    raise ValueError(
        f"unknown weight type {name!r}: expected f16, bf16, u1..u8, i1..i8 or f{{B}}e{{E}}m{{M}} "
        "with B = 1 + E + M ≤ 8 and E ≥ 1 (for example f6e3m2)"
    )


def parse_types(text: str) -> list[WeightType]:
    names = [t for t in (s.strip() for s in text.split(",")) if t]
    out: list[WeightType] = []
    for name in names:
        for expanded in ALL_TYPES if name.lower() == "all" else (name,):
            t = parse_type(expanded)
            if t not in out:
                out.append(t)
    if not out:
        raise ValueError("--types is empty")
    return out


def parse_kernels(text: str | None) -> list[str]:
    if text is None or not text.strip():
        return list(DEFAULT_KERNELS)
    out: list[str] = []
    for name in (s.strip().lower() for s in text.split(",")):
        if not name:
            continue
        if name == "all":
            chosen = list(KERNELS)
        elif name in KERNELS:
            chosen = [name]
        else:
            raise ValueError(f"unknown kernel {name!r}: choose from {', '.join(KERNELS)} or all")
        out += [k for k in chosen if k not in out]
    return out


def parse_shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for item in (s.strip().lower() for s in text.split(",")):
        if not item:
            continue
        parts = item.split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"bad shape {item!r}: expected NxK, for example 57344x8192")
        shapes.append((int(parts[0]), int(parts[1])))
    if not shapes:
        raise ValueError("--shapes is empty")
    return shapes


def parse_ms(text: str) -> list[int]:
    try:
        ms = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"bad --m {text!r}: expected a comma-separated list of integers") from None
    if not ms or any(m < 1 for m in ms):
        raise ValueError(f"bad --m {text!r}: every M must be at least 1")
    return sorted(set(ms))


def kernel_act(kernel: str, wtype: WeightType, act: str) -> str:
    """The activation dtype a kernel runs a weight type with."""
    if kernel == "cublas":
        return wtype.name
    if kernel == "torch-int4pack":
        return "bf16"  # the CUDA tinygemm kernel takes bf16 activations only
    return act


def kernel_supports(kernel: str, wtype: WeightType, act: str, group: int) -> bool:
    if kernel == "cublas":
        return wtype.kind == "half"
    if kernel == "torch-int4pack":
        return wtype.name == "u4" and group in (32, 64, 128, 256)
    if kernel == "gemlite":
        return wtype.kind == "uint" and wtype.bits in (2, 4, 8) and group >= 16
    if kernel == "humming":
        if wtype.kind == "int":
            return True
        # Humming's f16 path takes signed floats with at most 5 exponent bits.
        return wtype.kind == "float" and (act == "bf16" or wtype.exponent_bits <= 5)
    if kernel == "humming-zp":
        return wtype.kind == "uint"
    return False


@dataclass(frozen=True)
class Planned:
    kernel: str
    wtype: str
    act: str
    group: int | None
    m: int
    n: int
    k: int

    def key(self) -> tuple:
        return (self.kernel, self.wtype, self.m, self.n, self.k)


def plan(
    kernels: list[str],
    types: list[WeightType],
    shapes: list[tuple[int, int]],
    ms: list[int],
    act: str,
    group: int,
) -> list[Planned]:
    rows = []
    for kernel in kernels:
        for n, k in shapes:
            for t in types:
                if not kernel_supports(kernel, t, act, group):
                    continue
                g = None if t.kind == "half" else group
                for m in ms:
                    rows.append(Planned(kernel, t.name, kernel_act(kernel, t, act), g, m, n, k))
    return rows


def loose_tolerance(wtype: WeightType) -> float:
    """Tolerance against the float weight a peer quantized (used only when its own dequantized
    weight cannot be had). It allows the quantization error, a few times over, so it catches
    garbage (wrong layout, NaN, a dropped group), not small errors."""
    if wtype.kind == "float":
        return min(1.5, 2.0 ** (1 - wtype.mantissa_bits))
    return min(1.5, 2.0 ** (3 - wtype.bits))


# ------------------------------------------------------------------------------------------------
# Rows, the JSON lines file and the table


def base_row(p: Planned) -> dict[str, Any]:
    return {
        "kernel": p.kernel,
        "wtype": p.wtype,
        "act": p.act,
        "group": p.group,
        "M": p.m,
        "N": p.n,
        "K": p.k,
        "median_us": None,
        "weight_bytes": None,
        "tbps": None,
        "rel_err": None,
        "error": None,
    }


def error_row(p: Planned, error: str) -> dict[str, Any]:
    row = base_row(p)
    row["error"] = error
    return row


def row_key(row: dict[str, Any]) -> tuple:
    return (row.get("kernel"), row.get("wtype"), row.get("M"), row.get("N"), row.get("K"))


def finish_row(row: dict[str, Any], meta: dict[str, Any], copy_tbps: float | None) -> dict:
    """Adds the run's metadata and the share of the copy bandwidth to a row from a worker."""
    out = dict(row)
    if out.get("median_us") and out.get("weight_bytes"):
        out["tbps"] = out["weight_bytes"] / (out["median_us"] * 1e-6) / 1e12
    if out.get("tbps") is not None and copy_tbps:
        out["pct_copy"] = 100.0 * out["tbps"] / copy_tbps
    else:
        out.setdefault("pct_copy", None)
    for key, value in meta.items():
        out.setdefault(key, value)
    return out


def fill_missing(
    expected: list[Planned], rows: list[dict[str, Any]], reason: str
) -> list[dict[str, Any]]:
    """Error rows for every planned configuration a worker did not report."""
    seen = {row_key(r) for r in rows}
    return [error_row(p, reason) for p in expected if p.key() not in seen]


class JsonLines:
    """Appends one JSON object per line, flushed at once, so a killed run keeps what it had."""

    def __init__(self, path: str | None, truncate: bool = True):
        self.path = path
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if truncate:
                open(path, "w").close()

    def write(self, row: dict[str, Any]) -> None:
        if not self.path:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(row, sort_keys=True, default=str) + "\n")


def read_json_lines(path: str) -> list[dict[str, Any]]:
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut short by a killed worker
    except FileNotFoundError:
        pass
    return rows


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def format_table(rows: list[dict[str, Any]], order: Iterable[str] = ALL_TYPES) -> str:
    """An aligned text table of the rows, grouped by shape and M."""
    type_rank = {name: i for i, name in enumerate(order)}
    kernel_rank = {name: i for i, name in enumerate(KERNELS)}

    def sort_key(r):
        return (
            r.get("N") or 0,
            r.get("K") or 0,
            r.get("M") or 0,
            kernel_rank.get(r.get("kernel"), 99),
            type_rank.get(r.get("wtype"), 99),
            str(r.get("wtype")),
        )

    header = ["kernel", "type", "act", "N x K", "M", "us", "MB", "TB/s", "%copy", "rel_err", "note"]
    lines = []
    for r in sorted(rows, key=sort_key):
        note = ""
        if r.get("error"):
            note = "ERROR: " + " ".join(str(r["error"]).split())[:70]
        elif r.get("check") == "fail":
            note = f"CHECK FAILED (tol {r.get('tol')})"
        shape = f"{r.get('N')}x{r.get('K')}" if r.get("N") else "-"
        mb = r.get("weight_bytes") / 1e6 if r.get("weight_bytes") else None
        lines.append(
            [
                str(r.get("kernel")),
                str(r.get("wtype") or "-"),
                str(r.get("act") or "-"),
                shape,
                _fmt(r.get("M"), "d"),
                _fmt(r.get("median_us"), ".1f"),
                _fmt(mb, ".1f"),
                _fmt(r.get("tbps"), ".3f"),
                _fmt(r.get("pct_copy"), ".1f"),
                _fmt(r.get("rel_err"), ".1e"),
                note,
            ]
        )
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
        for i, h in enumerate(header)
    ]
    numeric = {4, 5, 6, 7, 8, 9}

    def render(cells):
        out = []
        for i, cell in enumerate(cells):
            if i == len(cells) - 1:
                out.append(cell)
            elif i in numeric:
                out.append(cell.rjust(widths[i]))
            else:
                out.append(cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    return "\n".join(
        [render(header), render(["-" * w for w in widths])] + [render(x) for x in lines]
    )


def format_summary(rows: list[dict[str, Any]], copy_tbps: float | None) -> str:
    """The short table: one line per kernel and weight type, one column per shape and M, the
    median µs and, below, the same as % of the copy bandwidth; then the errors, once each."""
    type_rank = {name: i for i, name in enumerate(ALL_TYPES)}
    kernel_rank = {name: i for i, name in enumerate(KERNELS)}
    rows = [r for r in rows if r.get("kernel") != "d2d-copy" and r.get("N")]
    shape_rank: dict[tuple, int] = {}
    for r in rows:  # shapes in the order they ran
        shape_rank.setdefault((r["N"], r["K"]), len(shape_rank))
    cols = sorted({(r["N"], r["K"], r["M"]) for r in rows}, key=lambda c: (shape_rank[c[:2]], c[2]))
    lines_of = sorted(
        {(r["kernel"], r["wtype"], r.get("act")) for r in rows},
        key=lambda x: (kernel_rank.get(x[0], 99), type_rank.get(x[1], 99), str(x[1])),
    )
    cell = {(r["kernel"], r["wtype"], r["N"], r["K"], r["M"]): r for r in rows}

    def value(r: dict[str, Any] | None, what: str) -> str:
        if r is None:
            return ""
        if r.get("error"):
            return "err"
        v = r.get(what)
        if v is None:
            return "-"
        text = f"{v:.1f}"
        return text + ("!" if r.get("check") == "fail" else "")

    # The shape over the first of its columns only.
    head = ["kernel", "type", "act"] + [
        f"{n}x{k}" if i == 0 or cols[i - 1][:2] != (n, k) else ""
        for i, (n, k, _) in enumerate(cols)
    ]
    sub = ["", "", ""] + [f"M={m}" for _, _, m in cols]
    out = []
    for what, title in (("median_us", "median µs"), ("pct_copy", "% of copy bandwidth")):
        if what == "pct_copy" and not copy_tbps:
            continue
        body = [
            [kernel, str(wtype), str(act)]
            + [value(cell.get((kernel, wtype, n, k, m)), what) for n, k, m in cols]
            for kernel, wtype, act in lines_of
        ]
        table = [head, sub] + body
        widths = [max(len(line[i]) for line in table) for i in range(len(head))]
        out.append(title + (f" (copy {copy_tbps:.3f} TB/s)" if what == "pct_copy" else "") + ":")
        for line in table:
            cells = [
                c.ljust(widths[i]) if i < 3 else c.rjust(widths[i]) for i, c in enumerate(line)
            ]
            out.append("  ".join(cells).rstrip())
        out.append("")
    failed = [r for r in rows if r.get("check") == "fail" and not r.get("error")]
    if failed:
        out.append(f"! the first-call check failed for {len(failed)} rows (rel_err > tol)")
    errors: dict[tuple, list[str]] = {}
    for r in rows:
        if r.get("error"):
            types = errors.setdefault((r["kernel"], r["error"]), [])
            if r["wtype"] not in types:
                types.append(r["wtype"])
    for (kernel, error), types in errors.items():
        text = " ".join(str(error).split())
        out.append(f"err {kernel} {','.join(map(str, types))}: {text[:160]}")
    return "\n".join(out).rstrip()


def log(msg: str) -> None:
    print(msg, flush=True)


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:2000] + " …"


# ------------------------------------------------------------------------------------------------
# GPU side (torch imported lazily)


def _torch():
    import torch

    return torch


class _WallEvent:
    """Stands in for a CUDA event on the CPU (the CPU smoke test); its times mean nothing."""

    def record(self):
        self.t = time.perf_counter()

    def elapsed_time(self, end: _WallEvent) -> float:
        return (end.t - self.t) * 1e3


def new_event():
    torch = _torch()
    return torch.cuda.Event(enable_timing=True) if DEVICE == "cuda" else _WallEvent()


def synchronize():
    if DEVICE == "cuda":
        _torch().cuda.synchronize()


def empty_cache():
    if DEVICE == "cuda":
        _torch().cuda.empty_cache()


def torch_dtype(name: str):
    torch = _torch()
    return {"f16": torch.float16, "bf16": torch.bfloat16}[name]


def collect_meta() -> dict[str, Any]:
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": None,
        "driver": None,
        "torch": None,
        "cuda": None,
        "triton": None,
    }
    try:
        torch = _torch()
        meta["torch"] = torch.__version__
        meta["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            meta["device"] = torch.cuda.get_device_name(0)
    except Exception as exc:  # noqa: BLE001 - reported in the rows
        meta["device_error"] = short_error(exc)
    try:
        import triton

        meta["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        pass
    meta["driver"] = driver_version()
    return meta


def driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # noqa: BLE001
        return None


class Timer:
    """CUDA-event timing with the L2 flushed by a read before every timed call."""

    def __init__(self, flush_mb: int, pad_cycles: int):
        torch = _torch()
        cuda = DEVICE == "cuda"
        l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) if cuda else 0
        flush_bytes = max(flush_mb << 20, 2 * (l2 or 0))
        self.flush_bytes = flush_bytes
        # Random, and only ever read: a write would leave dirty lines whose write-back lands in
        # the next timed kernel.
        self.flush = torch.empty(flush_bytes // 4, dtype=torch.float32, device=DEVICE).uniform_()
        self.pad_cycles = pad_cycles
        self._sleep = getattr(torch.cuda, "_sleep", None) if cuda else None

    def _before_timed_call(self):
        self.flush.sum()
        if self._sleep is not None and self.pad_cycles > 0:
            self._sleep(self.pad_cycles)

    def round_robin(
        self, fns: dict[Any, Callable[[], Any]], warmup: int, iters: int
    ) -> tuple[dict[Any, list[float]], dict[Any, list[float]], dict[Any, str]]:
        """Times every function `iters` times, interleaved; returns µs per call, CPU launch µs
        per call, and the error of each function that failed on the way."""
        errors: dict[Any, str] = {}
        live = dict(fns)
        for key, fn in list(live.items()):
            try:
                for _ in range(warmup):
                    fn()
                synchronize()
            except Exception as exc:  # noqa: BLE001
                errors[key] = "warm-up failed: " + short_error(exc)
                del live[key]
        events = {key: [] for key in live}
        launch = {key: [] for key in live}
        for _ in range(iters):
            for key, fn in list(live.items()):
                start, end = new_event(), new_event()
                self._before_timed_call()
                try:
                    start.record()
                    t0 = time.perf_counter()
                    fn()
                    launch[key].append((time.perf_counter() - t0) * 1e6)
                    end.record()
                except Exception as exc:  # noqa: BLE001
                    errors[key] = "timed run failed: " + short_error(exc)
                    del live[key]
                    continue
                events[key].append((start, end))
            # Keeps the queue short, so each call's flush and pad run just before it.
            synchronize()
        times = {
            key: [s.elapsed_time(e) * 1e3 for s, e in pairs]
            for key, pairs in events.items()
            if key in live
        }
        return times, {k: v for k, v in launch.items() if k in live}, errors


def measure_copy(iters: int = 20) -> dict[str, Any]:
    """Device-to-device copy of 1 GiB (64 MiB on the CPU), counting bytes read plus written."""
    torch = _torch()
    nbytes = 1 << 30 if DEVICE == "cuda" else 1 << 26
    src = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=DEVICE)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    synchronize()
    times = []
    for _ in range(iters):
        start, end = new_event(), new_event()
        start.record()
        dst.copy_(src)
        end.record()
        synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    del src, dst
    empty_cache()
    median = statistics.median(times)
    moved = 2 * nbytes
    return {
        "kernel": "d2d-copy",
        "wtype": None,
        "act": None,
        "group": None,
        "M": None,
        "N": None,
        "K": None,
        "median_us": median,
        "min_us": min(times),
        "runs": len(times),
        "weight_bytes": moved,
        "tbps": moved / (median * 1e-6) / 1e12,
        "rel_err": None,
        "error": None,
    }


@dataclass
class Prepared:
    """One weight of one peer, ready to run: `call(m)` gives the function for M rows."""

    wtype: WeightType
    act: str
    weight_bytes: int
    call: Callable[[int], Callable[[Any], Any]]
    ref_weight: Any = None  # f32 [N, K]; dropped once the reference outputs exist
    ref_kind: str = "own-dequant"
    tol: float = EXACT_TOL
    float_ref: bool = False  # also report the error against the float weight it quantized
    detail: Callable[[int], Any] | None = None
    refs: dict[int, Any] = field(default_factory=dict)
    float_refs: dict[int, Any] = field(default_factory=dict)
    keep: list[Any] = field(default_factory=list)  # objects the call needs alive


class Context:
    """What the peers share for one shape: the float weight and the inputs."""

    def __init__(self, n: int, k: int, ms: list[int], group: int, seed: int):
        torch = _torch()
        self.n, self.k, self.ms, self.group = n, k, ms, group
        self.gen = torch.Generator(device=DEVICE)
        self.gen.manual_seed(seed * 1_000_003 + n * 7 + k)
        self._weight = None
        self._float_refs: dict[str, dict[int, Any]] = {}
        self.x32 = {m: torch.randn(m, k, device=DEVICE, generator=self.gen) for m in ms}

    def float_weight(self):
        """The random f16 weight [N, K] that the float and quantizing peers start from."""
        if self._weight is None:
            torch = _torch()
            w = torch.randn(self.n, self.k, device=DEVICE, generator=self.gen)
            self._weight = (w * 0.05).to(torch.float16)
        return self._weight

    def x(self, m: int, act: str):
        return self.x32[m].to(torch_dtype(act))

    def float_refs(self, act: str) -> dict[int, Any]:
        """X · Wᵀ in f32 for every M, from the float weight as the peers receive it."""
        if act not in self._float_refs:
            w32 = self.float_weight().to(torch_dtype(act)).float()
            self._float_refs[act] = {m: self.x(m, act).float() @ w32.t() for m in self.ms}
            del w32
        return self._float_refs[act]


def _rel_err(y, ref) -> float:
    y = y.float()
    return float((y - ref).norm() / ref.norm().clamp_min(1e-30))


class Peer:
    name = ""
    # Whether the driver first runs one child per weight type at once, untimed, to fill the
    # peer's on-disk compile cache in parallel (its first calls compile one kernel at a time).
    warm_in_parallel = False

    def setup(self, args) -> str | None:
        """Imports the peer; returns its version."""
        return None

    def prepare(self, ctx: Context, wtype: WeightType, act: str) -> Prepared:
        raise NotImplementedError

    def precompile(self, prepared: dict[str, Prepared], ms: list[int]) -> None:
        """Compiles what the first calls would, in parallel where the peer allows it."""


class CublasPeer(Peer):
    name = "cublas"

    def setup(self, args):
        return _torch().__version__

    def prepare(self, ctx, wtype, act):
        torch = _torch()
        w = ctx.float_weight().to(torch_dtype(wtype.name)).contiguous()

        def call(m):
            return lambda x: torch.nn.functional.linear(x, w)

        return Prepared(
            wtype,
            act,
            w.numel() * w.element_size(),
            call,
            ref_weight=w.float(),
            ref_kind="weight",
            keep=[w],
        )


class Int4PackPeer(Peer):
    """torch's tinygemm kernel: w = (q - 8) · scale + zero, scales and zeros per group of K."""

    name = "torch-int4pack"
    inner_k_tiles = 8

    def setup(self, args):
        torch = _torch()
        if not hasattr(torch.ops.aten, "_weight_int4pack_mm"):
            raise RuntimeError("this torch has no aten._weight_int4pack_mm")
        return torch.__version__

    def prepare(self, ctx, wtype, act):
        torch = _torch()
        n, k, g = ctx.n, ctx.k, ctx.group
        if k % (self.inner_k_tiles * 16) != 0 or n % 8 != 0:
            raise ValueError(
                f"_weight_int4pack_mm needs K % {self.inner_k_tiles * 16} == 0 and N % 8 == 0"
            )
        q = torch.randint(0, 16, (n, k), dtype=torch.int32, device=DEVICE, generator=ctx.gen)
        scales = (torch.rand(n, k // g, device=DEVICE, generator=ctx.gen) + 0.5) * 0.01
        zeros = torch.randn(n, k // g, device=DEVICE, generator=ctx.gen) * 0.01
        scales, zeros = scales.to(torch.bfloat16), zeros.to(torch.bfloat16)
        # Two codes a byte along K, the even one in the high nibble (the CUDA packing's input).
        packed_u8 = ((q[:, ::2] << 4) | q[:, 1::2]).to(torch.uint8).contiguous()
        try:
            packed = torch.ops.aten._convert_weight_to_int4pack(packed_u8, self.inner_k_tiles)
        except Exception:  # noqa: BLE001 - torch before 2.5 took int32 codes
            packed = torch.ops.aten._convert_weight_to_int4pack(q.contiguous(), self.inner_k_tiles)
        scales_and_zeros = torch.stack([scales.t(), zeros.t()], dim=-1).contiguous()  # [K/g, N, 2]
        ref = (q.float() - 8.0) * scales.float().repeat_interleave(
            g, 1
        ) + zeros.float().repeat_interleave(g, 1)
        del q, packed_u8

        def call(m):
            return lambda x: torch.ops.aten._weight_int4pack_mm(x, packed, g, scales_and_zeros)

        nbytes = packed.numel() * packed.element_size() + scales_and_zeros.numel() * 2
        return Prepared(
            wtype,
            act,
            nbytes,
            call,
            ref_weight=ref,
            keep=[packed, scales_and_zeros],
            detail=lambda m: {"inner_k_tiles": self.inner_k_tiles},
        )


class GemlitePeer(Peer):
    """gemlite's A16Wn: w = (q - zero) · scale, codes u2/u4/u8, scales and zeros per group."""

    name = "gemlite"
    warm_in_parallel = True  # Triton compiles every autotune candidate, one after another

    def setup(self, args):
        import gemlite

        self.gemlite = gemlite
        from gemlite.helper import A16Wn

        self.A16Wn = A16Wn
        self._shorten_autotune()
        return getattr(gemlite, "__version__", None)

    @staticmethod
    def _shorten_autotune():
        """gemlite autotunes each new (M bucket, N, K, group) on its first call, timing 17 to 25
        candidates with Triton's benchmark (25 ms warm-up + 100 ms of runs each): minutes for
        all shapes. Its candidates and choice stay its own; each is timed for 5 + 25 ms."""
        try:
            import functools

            import triton.testing
            from gemlite.core import GEMLITE_TRITON_KERNELS

            bench = functools.partial(triton.testing.do_bench, warmup=5, rep=25)
            count = 0
            for family in GEMLITE_TRITON_KERNELS:
                for tuner in getattr(family, "kernel", []):
                    if hasattr(tuner, "_do_bench") and tuner._do_bench is None:
                        tuner._do_bench = bench
                        count += 1
            log(f"[gemlite] autotune timing shortened for {count} kernels")
        except Exception as exc:  # noqa: BLE001 - then it autotunes the usual, slower way
            log(f"[gemlite] autotune left as it is ({short_error(exc)})")

    def prepare(self, ctx, wtype, act):
        torch = _torch()
        n, k, g, b = ctx.n, ctx.k, ctx.group, wtype.bits
        dtype = torch_dtype(act)
        q = torch.randint(0, 1 << b, (n, k), dtype=torch.uint8, device=DEVICE, generator=ctx.gen)
        # |w| around 0.05 whatever the width: the step is 0.05 / (2^b - 1).
        step = 0.05 / max(1, (1 << b) - 1)
        scales = ((torch.rand(n, k // g, device=DEVICE, generator=ctx.gen) + 0.5) * step).to(dtype)
        zeros = torch.randint(0, 1 << b, (n, k // g), device=DEVICE, generator=ctx.gen).to(dtype)
        layer = self.A16Wn(device="cuda:0", dtype=dtype).from_weights(
            q, scales, zeros, W_nbits=b, group_size=g
        )
        ref = (
            q.float() - zeros.float().repeat_interleave(g, 1)
        ) * scales.float().repeat_interleave(g, 1)
        del q
        nbytes = 0
        for name in ("W_q", "scales", "zeros"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                nbytes += t.numel() * t.element_size()

        def call(m):
            return lambda x: layer(x)

        def detail(m):
            try:
                from gemlite.core import get_matmul_type

                return {"matmul_type": get_matmul_type(m, b)}
            except Exception:  # noqa: BLE001
                return None

        return Prepared(wtype, act, nbytes, call, ref_weight=ref, keep=[layer], detail=detail)


class HummingPeer(Peer):
    """humming-kernels' HummingLayer with f16 (or bf16) activations and group-wise scales."""

    name = "humming"
    zero_point = False

    def setup(self, args):
        import humming
        from humming.layer import HummingLayer
        from humming.tune import get_heuristics_config

        self.HummingLayer = HummingLayer
        self.get_heuristics_config = get_heuristics_config
        self._warm_quant_kernels(args)
        return getattr(humming, "__version__", None)

    def weight_config(self, wtype: WeightType, group: int) -> dict[str, Any]:
        if wtype.kind == "float":
            dtype = f"float{wtype.bits}e{wtype.exponent_bits}m{wtype.mantissa_bits}"
        elif wtype.kind == "int":
            dtype = f"int{wtype.bits}"  # symmetric: humming stores it as offset-binary uint
        else:
            dtype = f"uint{wtype.bits}"
        config: dict[str, Any] = {"dtype": dtype, "group_size": group}
        if self.zero_point:
            config["has_zero_point"] = True
        return config

    def _new_layer(self, n, k, wtype, act, group):
        return self.HummingLayer(
            shape_n=n,
            shape_k=k,
            weight_config=self.weight_config(wtype, group),
            torch_dtype=torch_dtype(act),
        ).cuda()

    def _warm_quant_kernels(self, args):
        """Its quantize, pack, dequantize and repack kernels are JIT-compiled once per weight
        type, whatever the shape: compile them for all types at once on a small layer."""
        types = [t for t in args.types if kernel_supports(self.name, t, args.act, args.group)]
        if len(types) < 2:
            return  # nothing to overlap
        torch = _torch()
        from concurrent.futures import ThreadPoolExecutor

        k = max(256, 2 * args.group)

        def warm(t):
            layer = self._new_layer(256, k, t, args.act, args.group)
            w = torch.randn(256, k, device="cuda") * 0.05
            layer.load_from_unquantized(w.to(torch_dtype(args.act)))
            self._own_dequant(layer)
            layer.transform()
            synchronize()

        t0 = time.time()
        # The first type alone: one-time set-up (the launcher library, the compiler helper)
        # then happens in one thread.
        results = [_capture(warm, types[0])]
        with ThreadPoolExecutor(max_workers=min(len(types) - 1, os.cpu_count() or 4)) as pool:
            results += list(pool.map(lambda t: _capture(warm, t), types[1:]))
        failed = [f"{t.name}: {err}" for t, err in zip(types, results, strict=True) if err]
        log(
            f"[{self.name}] compiled the quantization kernels of {len(types)} types in "
            f"{time.time() - t0:.1f} s"
        )
        for line in failed:  # each is tried again, and reported, on the real layer
            log(f"[{self.name}] warm-up of {line}")

    @staticmethod
    def _own_dequant(layer):
        tensors = {}
        for name in ("weight", "weight_scale", "zero_point", "weight_scale_2"):
            t = getattr(layer, name, None)
            if t is not None:
                tensors[name] = t.data
        return layer.weight_schema.dequant_tensors(tensors).float()

    def prepare(self, ctx, wtype, act):
        torch = _torch()
        layer = self._new_layer(ctx.n, ctx.k, wtype, act, ctx.group)
        w = ctx.float_weight().to(torch_dtype(act))
        layer.load_from_unquantized(w)
        ref_kind, tol = "own-dequant", EXACT_TOL
        try:
            # The codes and scales before the kernel layout transform, dequantized by humming.
            ref = self._own_dequant(layer)
        except Exception as exc:  # noqa: BLE001
            log(
                f"[{self.name}] {wtype.name}: own dequantization failed ({short_error(exc)}); "
                "checking against the float weight instead"
            )
            ref, ref_kind, tol = w.float(), "float-weight", loose_tolerance(wtype)
        layer.transform()
        config = layer.humming_config
        layer_config_str = config.to_str()
        tunings: dict[int, str] = {}
        configs: dict[int, Any] = {}
        for m in ctx.ms:
            cfg = self.get_heuristics_config(config, shape_m=m, device=0)
            configs[m] = cfg
            tunings[m] = json.dumps(cfg)  # a string: forward then parses nothing per call
        nbytes = 0
        for name in ("weight", "weight_scale", "zero_point", "weight_scale_2"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                nbytes += t.numel() * t.element_size()

        def call(m):
            tuning = tunings[m]
            return lambda x: layer(x, tuning_config=tuning)

        prepared = Prepared(
            wtype,
            act,
            nbytes,
            call,
            ref_weight=ref,
            ref_kind=ref_kind,
            tol=tol,
            float_ref=ref_kind != "float-weight",
            keep=[layer],
            detail=lambda m: configs.get(m),
        )
        prepared.layer_config_str = layer_config_str  # type: ignore[attr-defined]
        prepared.tunings = tunings  # type: ignore[attr-defined]
        return prepared

    def precompile(self, prepared, ms):
        """JIT-compiles every (layer, M) kernel in parallel (each takes seconds, one at a time in
        a plain forward). A failure here is not reported: the first call retries and reports."""
        try:
            from concurrent.futures import ThreadPoolExecutor

            from humming.kernel.humming import HummingKernel
        except Exception as exc:  # noqa: BLE001
            log(f"[{self.name}] no parallel precompile ({short_error(exc)})")
            return
        jobs = []
        for p in prepared.values():
            lc = getattr(p, "layer_config_str", None)
            for m in ms:
                tc = getattr(p, "tunings", {}).get(m)
                if lc is not None and tc is not None and (lc, tc) not in jobs:
                    jobs.append((lc, tc))
        if not jobs:
            return
        t0 = time.time()
        with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 4)) as pool:
            results = list(
                pool.map(
                    lambda job: _capture(HummingKernel.prepare_kernels, job[0], None, job[1], 0),
                    jobs,
                )
            )
        failed = sum(1 for r in results if r)
        log(
            f"[{self.name}] compiled {len(jobs)} kernels in {time.time() - t0:.1f} s"
            + (f" ({failed} failed, retried at the first call)" if failed else "")
        )


class HummingZeroPointPeer(HummingPeer):
    name = "humming-zp"
    zero_point = True


PEERS: dict[str, type[Peer]] = {
    "cublas": CublasPeer,
    "torch-int4pack": Int4PackPeer,
    "gemlite": GemlitePeer,
    "humming": HummingPeer,
    "humming-zp": HummingZeroPointPeer,
}


def _capture(fn, *args) -> str | None:
    try:
        fn(*args)
        return None
    except Exception as exc:  # noqa: BLE001
        return short_error(exc)


def _with_version(emit: Callable[[dict[str, Any]], None], version: str | None):
    def emit_with_version(row: dict[str, Any]) -> None:
        row.setdefault("peer_version", version)
        emit(row)

    return emit_with_version


def run_kernel(kernel: str, args, emit: Callable[[dict[str, Any]], None]) -> None:
    """Runs every planned configuration of one kernel family; every outcome becomes a row."""
    expected = plan([kernel], args.types, args.shapes, args.ms, args.act, args.group)
    if not expected:
        return
    by_shape = collections.defaultdict(list)
    for p in expected:
        by_shape[(p.n, p.k)].append(p)
    peer = PEERS[kernel]()
    try:
        torch = _torch()
        if DEVICE == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = False  # the f32 references are full f32
        log(f"[{kernel}] importing")
        version = peer.setup(args)
        timer = None if args.warm_only else Timer(args.flush_mb, args.pad_cycles)
    except Exception as exc:  # noqa: BLE001
        err = "setup failed: " + short_error(exc)
        log(f"[{kernel}] {err}")
        traceback.print_exc()
        for p in expected:
            emit(error_row(p, err))
        return
    log(f"[{kernel}] version {version}")
    emit = _with_version(emit, version)

    for (n, k), planned in by_shape.items():
        types = []
        for p in planned:
            if p.wtype not in types:
                types.append(p.wtype)
        rows_of = {(p.wtype, p.m): p for p in planned}
        ctx = prepared = None
        try:
            ctx = Context(n, k, args.ms, args.group, args.seed)
            prepared = {}
            for name in types:
                wtype = parse_type(name)
                act = kernel_act(kernel, wtype, args.act)
                t0 = time.time()
                try:
                    p = peer.prepare(ctx, wtype, act)
                    for m in [] if args.warm_only else args.ms:
                        x = ctx.x(m, act).float()
                        p.refs[m] = x @ p.ref_weight.t()
                        if p.float_ref:
                            p.float_refs[m] = ctx.float_refs(act)[m]
                    p.ref_weight = None
                    prepared[name] = p
                    log(
                        f"[{kernel}] {name} {n}x{k}: prepared in {time.time() - t0:.1f} s "
                        f"({p.weight_bytes / 1e6:.1f} MB)"
                    )
                except Exception as exc:  # noqa: BLE001
                    err = "prepare failed: " + short_error(exc)
                    log(f"[{kernel}] {name} {n}x{k}: {err}")
                    for m in args.ms:
                        emit(error_row(rows_of[(name, m)], err))
                empty_cache()
            peer.precompile(prepared, args.ms)
            for m in args.ms:
                if args.warm_only:
                    for p in prepared.values():
                        _capture(p.call(m), ctx.x(m, p.act))
                    synchronize()
                    continue
                run_m(kernel, ctx, prepared, m, rows_of, timer, args, emit)
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory for the shape itself
            err = "failed: " + short_error(exc)
            log(f"[{kernel}] {n}x{k}: {err}")
            for p in planned:
                emit(error_row(p, err))  # rows already emitted are kept; duplicates dropped later
        finally:
            del ctx, prepared
            empty_cache()


def run_m(kernel, ctx, prepared, m, rows_of, timer, args, emit):
    fns, checks = {}, {}
    for name, p in prepared.items():
        planned = rows_of[(name, m)]
        try:
            x = ctx.x(m, p.act)
            fn = p.call(m)
            y = fn(x)
            synchronize()
            if tuple(y.shape) != (m, ctx.n):
                raise RuntimeError(f"output shape {tuple(y.shape)}, expected {(m, ctx.n)}")
            rel = _rel_err(y, p.refs[m])
            check = {
                "rel_err": rel,
                "ref": p.ref_kind,
                "tol": p.tol,
                "check": "pass" if math.isfinite(rel) and rel <= p.tol else "fail",
            }
            if m in p.float_refs:
                check["rel_err_float"] = _rel_err(y, p.float_refs[m])
            checks[name] = check
            fns[name] = lambda fn=fn, x=x: fn(x)
        except Exception as exc:  # noqa: BLE001
            err = "first run failed: " + short_error(exc)
            log(f"[{kernel}] {name} {ctx.n}x{ctx.k} M={m}: {err}")
            emit(error_row(planned, err))
    if not fns:
        return
    times, launch, errors = timer.round_robin(fns, args.warmup, args.iters)
    for name in fns:
        p, planned = prepared[name], rows_of[(name, m)]
        if name in errors:
            log(f"[{kernel}] {name} {ctx.n}x{ctx.k} M={m}: {errors[name]}")
            row = error_row(planned, errors[name])
            row.update(checks[name])
            emit(row)
            continue
        ts = times[name]
        row = base_row(planned)
        row.update(checks[name])
        median = statistics.median(ts)
        row.update(
            {
                "median_us": median,
                "min_us": min(ts),
                "max_us": max(ts),
                "runs": len(ts),
                "launch_us": statistics.median(launch[name]) if launch.get(name) else None,
                "weight_bytes": p.weight_bytes,
                "tbps": p.weight_bytes / (median * 1e-6) / 1e12,
                "flush_bytes": timer.flush_bytes,
            }
        )
        if p.detail is not None:
            try:
                row["config"] = p.detail(m)
            except Exception:  # noqa: BLE001
                pass
        flag = "" if row["check"] == "pass" else f"  CHECK FAILED (tol {row['tol']})"
        if row["launch_us"] and row["launch_us"] > SLOW_LAUNCH_US:
            # The flush and the pad may not cover the enqueue: the time may include idle GPU.
            row["slow_launch"] = True
            flag += f"  slow launch ({row['launch_us']:.0f} us on the CPU)"
        log(
            f"[{kernel}] {name:7s} {ctx.n}x{ctx.k} M={m:<3d} {median:9.1f} us "
            f"{row['tbps']:6.3f} TB/s  rel_err {row['rel_err']:.1e}{flag}"
        )
        emit(row)


# ------------------------------------------------------------------------------------------------
# Driver: one child process per kernel family


def worker_command(kernel: str, args, out_path: str) -> list[str]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        kernel,
        "--json",
        out_path,
        "--types",
        ",".join(t.name for t in args.types),
        "--shapes",
        ",".join(f"{n}x{k}" for n, k in args.shapes),
        "--m",
        ",".join(str(m) for m in args.ms),
        "--act",
        args.act,
        "--group",
        str(args.group),
        "--iters",
        str(args.iters),
        "--warmup",
        str(args.warmup),
        "--flush-mb",
        str(args.flush_mb),
        "--pad-cycles",
        str(args.pad_cycles),
        "--seed",
        str(args.seed),
        "--device",
        args.device,
    ]
    return cmd


def run_worker(
    kernel: str, args, timeout: float | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Runs one kernel family in a child; returns its rows and, if it did not end cleanly, why.

    The child writes each row as it has it to `<--json>.<kernel>.part` (removed once read), so
    if this run is itself killed, the rows measured so far are still there."""
    with tempfile.TemporaryDirectory(prefix="baselines-") as tmp:
        out_path = f"{args.json}.{kernel}.part" if args.json else os.path.join(tmp, "rows.jsonl")
        tail: collections.deque[str] = collections.deque(maxlen=30)
        proc = subprocess.Popen(
            worker_command(kernel, args, out_path),
            stdout=None,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )

        def pump():
            assert proc.stderr is not None
            for line in proc.stderr:
                sys.stderr.write(line)
                sys.stderr.flush()
                if line.strip():
                    tail.append(line.rstrip())

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        failure = None
        try:
            timeout = args.worker_timeout if timeout is None else timeout
            code = proc.wait(timeout=timeout)
            if code != 0:
                failure = f"the {kernel} worker exited with code {code}"
        except subprocess.TimeoutExpired:
            failure = (
                f"the {kernel} worker was stopped after {timeout:.0f} s (--worker-timeout "
                f"{args.worker_timeout} s, --max-total-s {args.max_total_s} s)"
            )
            try:
                os.killpg(proc.pid, 9)
            except OSError:
                proc.kill()
            proc.wait()
        reader.join(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
        if failure and tail:
            failure += ": " + " | ".join(list(tail)[-6:])
        rows = read_json_lines(out_path)
        if args.json:
            with contextlib.suppress(OSError):
                os.remove(out_path)
        return rows, failure


def warm_in_parallel(kernel: str, args, expected: list[Planned], timeout: float) -> float:
    """Runs the first calls of every weight type of `kernel` at once, one child per type, so
    the compiles the timed run would do one by one come from the compile cache instead.
    Nothing of these runs is kept but the cache. Returns the seconds it took."""
    types = []
    for p in expected:
        if p.wtype not in types:
            types.append(p.wtype)
    if len(types) < 2:
        return 0.0
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="baselines-warm-") as tmp:
        procs = []
        for name in types:
            warm_args = argparse.Namespace(**vars(args))
            warm_args.types = [parse_type(name)]
            cmd = worker_command(kernel, warm_args, os.path.join(tmp, f"{name}.jsonl"))
            procs.append(
                subprocess.Popen(
                    cmd + ["--warm-only"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        for proc in procs:
            try:
                proc.wait(timeout=max(1.0, timeout - (time.time() - t0)))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, 9)
                proc.wait()
    took = time.time() - t0
    log(f"[{kernel}] compiled for {','.join(types)} in parallel, untimed, in {took:.0f} s")
    return took


def dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keeps the first row of each configuration (a shape-wide failure repeats earlier ones)."""
    seen, out = set(), []
    for r in rows:
        key = row_key(r)
        if key in seen:
            continue
        seen.add(key)
        out.append(r)
    return out


def drive(args) -> int:
    t_start = time.time()
    writer = JsonLines(args.json)
    meta = collect_meta()
    log(
        f"device: {meta.get('device')}  driver: {meta.get('driver')}  torch: {meta.get('torch')}  "
        f"cuda: {meta.get('cuda')}  triton: {meta.get('triton')}"
    )
    all_rows: list[dict[str, Any]] = []

    copy_tbps = None
    try:
        copy = measure_copy()
        copy_tbps = copy["tbps"]
        log(
            f"device-to-device copy ({copy['weight_bytes'] // 2 >> 20} MiB, read + write): "
            f"{copy_tbps:.3f} TB/s ({copy['median_us']:.1f} us)"
        )
    except Exception as exc:  # noqa: BLE001
        copy = {"kernel": "d2d-copy", "error": "copy measurement failed: " + short_error(exc)}
        log(copy["error"])
    copy = finish_row(copy, meta, None)
    writer.write(copy)
    all_rows.append(copy)

    for kernel in args.kernels:
        expected = plan([kernel], args.types, args.shapes, args.ms, args.act, args.group)
        if not expected:
            log(f"[{kernel}] nothing to run for --types {','.join(t.name for t in args.types)}")
            continue
        t0 = time.time()
        # Leaves time for the merge and the table before --max-total-s.
        left = args.max_total_s - (t0 - t_start) - 10
        if not args.in_process and left < 30:
            failure = f"not run: the run's --max-total-s {args.max_total_s} s was spent"
            rows = []
        elif args.in_process:
            rows: list[dict[str, Any]] = []
            failure = None
            try:
                run_kernel(kernel, args, rows.append)
            except Exception as exc:  # noqa: BLE001
                failure = f"the {kernel} run raised " + short_error(exc)
        else:
            if PEERS[kernel].warm_in_parallel:
                left -= warm_in_parallel(kernel, args, expected, timeout=left / 2)
            rows, failure = run_worker(kernel, args, timeout=min(args.worker_timeout, left))
        rows = dedupe(rows)
        wanted = {p.key() for p in expected}
        rows = [r for r in rows if row_key(r) in wanted]
        missing = fill_missing(expected, rows, failure or f"the {kernel} worker reported no row")
        for r in rows + missing:
            r = finish_row(r, meta, copy_tbps)
            writer.write(r)
            all_rows.append(r)
        ok = sum(1 for r in rows if r.get("median_us"))
        log(
            f"[{kernel}] {ok} of {len(expected)} configurations timed in {time.time() - t0:.0f} s"
            + (f"; {failure}" if failure else "")
        )

    log("")
    log(format_table(all_rows) if args.table == "rows" else format_summary(all_rows, copy_tbps))
    if copy_tbps:
        log(f"\ndevice-to-device copy: {copy_tbps:.3f} TB/s (bytes read + written)")
    log(f"total {time.time() - t_start:.0f} s" + (f"; rows in {args.json}" if args.json else ""))
    timed = sum(1 for r in all_rows if r.get("median_us") and r.get("kernel") != "d2d-copy")
    return 0 if timed else 1


def worker_main(args) -> int:
    writer = JsonLines(args.json)
    run_kernel(args.worker, args, writer.write)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Times cuBLAS, torch int4, gemlite and humming on anybit's matmul shapes.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="On the GPU machine, with the wheels of scripts/fetch-baseline-wheels in .whl/:\n\n"
        + RUN_COMMAND,
    )
    p.add_argument("--json", metavar="PATH", help="write one JSON object per row to PATH")
    p.add_argument(
        "--m",
        default=DEFAULT_MS,
        metavar="LIST",
        help=f"token counts M, comma-separated (default {DEFAULT_MS})",
    )
    p.add_argument(
        "--types",
        default="all",
        metavar="LIST",
        help="weight types, comma-separated: f16, bf16, u1..u8, i1..i8, f{B}e{E}m{M}; "
        f"all = {','.join(ALL_TYPES)} (default all)",
    )
    p.add_argument(
        "--only",
        default=None,
        metavar="LIST",
        help=f"kernels to run: {', '.join(KERNELS)}, or all (default {','.join(DEFAULT_KERNELS)})",
    )
    p.add_argument(
        "--shapes",
        default=DEFAULT_SHAPES,
        metavar="LIST",
        help=f"layer shapes NxK (default {DEFAULT_SHAPES})",
    )
    p.add_argument(
        "--act",
        default="f16",
        choices=("f16", "bf16"),
        help="activation dtype of gemlite and humming (default f16; "
        "cuBLAS runs each weight's own dtype, torch-int4pack always bf16)",
    )
    p.add_argument("--group", type=int, default=128, help="group size along K (default 128)")
    p.add_argument(
        "--iters",
        type=int,
        default=30,
        help=f"timed runs per configuration, at least {MIN_TIMED_RUNS} (default 30)",
    )
    p.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    p.add_argument(
        "--flush-mb",
        type=int,
        default=256,
        help=f"MiB read between timed runs to flush L2, at least {MIN_FLUSH_MB} "
        "(and at least twice the L2; default 256)",
    )
    p.add_argument(
        "--pad-cycles",
        type=int,
        default=300_000,
        help="GPU clock cycles of spin after the flush, so the CPU has enqueued the "
        "timed call before its start event runs (default 300000)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--worker-timeout",
        type=int,
        default=480,
        help="seconds a kernel family may take before it is killed (default 480)",
    )
    p.add_argument(
        "--max-total-s",
        type=int,
        default=560,
        help="seconds for the whole run: a family still running then is stopped, one not yet "
        "started is skipped, and their rows say so (default 560, under a 10-minute limit)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run every kernel family in this process (no isolation; for debugging)",
    )
    p.add_argument(
        "--table",
        default="summary",
        choices=("summary", "rows"),
        help="the table at the end: one line per kernel and type (summary, default) "
        "or one per configuration (rows)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the planned configurations and exit (needs no GPU)",
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--warm-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help=argparse.SUPPRESS)
    return p


def parse_args(argv: list[str] | None = None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.ms = parse_ms(args.m)
        args.types = parse_types(args.types)
        args.kernels = parse_kernels(args.only)
        args.shapes = parse_shapes(args.shapes)
    except ValueError as exc:
        parser.error(str(exc))
    if args.worker is not None and args.worker not in KERNELS:
        parser.error(f"unknown worker kernel {args.worker!r}")
    if args.iters < MIN_TIMED_RUNS:
        parser.error(
            f"--iters must be at least {MIN_TIMED_RUNS} (the median of at least "
            f"{MIN_TIMED_RUNS} timed runs)"
        )
    if args.warmup < 1:
        parser.error("--warmup must be at least 1")
    if args.flush_mb < MIN_FLUSH_MB:
        parser.error(f"--flush-mb must be at least {MIN_FLUSH_MB} (twice the 50 MB L2 of an H100)")
    if args.group < 1:
        parser.error("--group must be positive")
    for _, k in args.shapes:
        if k % args.group:
            parser.error(f"K = {k} is not a multiple of the group size {args.group}")
    return args


def main(argv: list[str] | None = None) -> int:
    global DEVICE
    args = parse_args(argv)
    DEVICE = args.device
    if args.worker is not None:
        return worker_main(args)
    if args.dry_run:
        planned = plan(args.kernels, args.types, args.shapes, args.ms, args.act, args.group)
        for p in planned:
            log(json.dumps(base_row(p)))
        log(f"{len(planned)} configurations")
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
