#!/usr/bin/env python3
"""Tensor parallelism with anybit on torch.distributed: a Llama-sized MLP split over the ranks
gives the result of the whole quantized MLP on one device.

The MLP is ``down(silu(gate(x)) * up(x))`` (hidden 4096, intermediate 14336, as Llama-3-8B's,
with a bias on each layer): ``gate`` and ``up`` are column-parallel (each rank computes its
slice of the intermediate features, no communication), ``down`` is row-parallel (each rank
multiplies its slice and an all-reduce sums the parts; the bias is added once). For every case
(weight type, group size, act-order) and M in {1, 16, 64}, rank 0 compares the split result
with the whole MLP on its own device (the same anybit kernels, unsplit weights) and with an f32
product of the dequantized weights, and checks that every rank holds the same result. On CUDA,
the cases named by ``--compiled-cases`` also run the split MLP under
``torch.compile(fullgraph=True)`` (within the TP tolerance of the eager result: inductor fuses
the f16 activation in f32) and captured as a CUDA graph (kernels and NCCL all-reduce; bit for
bit the eager result).

    python3 scripts/gpu_tp_check.py [--out DIR]                  on a machine with 2 GPUs
    python3 scripts/gpu_tp_check.py --device cpu --smoke         CI: gloo, 2 CPU processes

Started without torchrun's environment (``WORLD_SIZE`` unset), it starts ``--nproc`` copies of
itself (default 2) with that environment, as ``torchrun --standalone`` would. On CUDA each rank uses its own GPU and NCCL; on the CPU the
products use the dequantized weights (QuantizedLinear's CPU path) and gloo. Prints a table last
and writes ``tp-check.json`` to ``--out`` (default ``$OUT`` or ``gpu-check-out``); exits 1 when a
case fails.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

if "WORLD_SIZE" in os.environ:
    # Only the ranks import torch: the process that starts them waits.
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    import anybit
    from anybit.nn import ColumnParallelLinear, QuantizedLinear, RowParallelLinear

# Relative Frobenius error of the split MLP against the whole one on one device. Both run the
# same kernels on the same weights; they differ by the order of the f32 sums (the kernels'
# schedule depends on N) and by rounding each rank's part of `down` to f16 before the sum.
TP_TOLERANCE = 5e-3
# Against the f32 product of the dequantized weights: the kernels' own bound
# (python/tests/test_cuda.py), f16 outputs of f32 sums.
REFERENCE_TOLERANCE = 1e-2

# (name, weight type, group size, act-order)
CASES = [
    ("u4 g128", "u4", 128, False),
    ("u3 g128", "u3", 128, False),
    ("i8 g128", "i8", 128, False),
    ("f6e3m2 g128", "f6e3m2", 128, False),
    ("u4 g32", "u4", 32, False),
    ("u3 g128 act-order", "u3", 128, True),
]


def _arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (hidden 256, intermediate 512)")
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--intermediate", type=int, default=None)
    parser.add_argument("--tokens", default="1,16,64", help="the values of M")
    parser.add_argument("--cases", default=None, help="names of the cases to run, comma-separated")
    parser.add_argument("--nproc", type=int, default=2, help="processes to start when not under torchrun")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--compiled-cases",
        default="u4 g128,u3 g128 act-order",
        help="cases whose split MLP also runs under torch.compile(fullgraph=True) and as a "
        "captured CUDA graph, on CUDA only ('' for none)",
    )
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu-check-out"))
    args = parser.parse_args()
    if args.hidden is None:
        args.hidden = 256 if args.smoke else 4096
    if args.intermediate is None:
        args.intermediate = 512 if args.smoke else 14336
    return args


def _start_ranks(args) -> int:
    """Runs ``args.nproc`` copies of this script with torchrun's environment variables on a free
    local port; the exit status is the first nonzero one of theirs (the others are stopped)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    processes = []
    for rank in range(args.nproc):
        environment = dict(
            os.environ,
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            WORLD_SIZE=str(args.nproc),
            LOCAL_WORLD_SIZE=str(args.nproc),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )
        processes.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), *sys.argv[1:]], env=environment))
    # A rank that fails leaves the others waiting in a collective: stop them.
    while True:
        statuses = [process.poll() for process in processes]
        failed = [status for status in statuses if status not in (None, 0)]
        if failed:
            for process in processes:
                if process.poll() is None:
                    process.kill()
            return failed[0]
        if all(status == 0 for status in statuses):
            return 0
        time.sleep(0.2)


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    return float((actual - expected).norm() / expected.norm().clamp(min=1e-30))


def _act_order(w: torch.Tensor, dtype: str, group: int, perm: torch.Tensor) -> anybit.QuantizedWeight:
    """``w`` quantized with its columns in the order ``perm`` (stored column j is column
    perm[j]), as an act-order checkpoint holds it."""
    stored = anybit.quantize(w[:, perm].contiguous(), dtype, group)
    return anybit.QuantizedWeight(stored.codes, stored.scales, stored.zeros, dtype, group, w.shape, perm=perm)


def _whole_mlp(args, case, world_size, device):
    """The three whole layers of a case, the same on every rank (seeded on the CPU)."""
    _, dtype, group, act_order = case
    hidden, intermediate = args.hidden, args.intermediate
    generator = torch.Generator().manual_seed(args.seed + CASES.index(case))

    def weight(n, k):
        return (torch.randn(n, k, generator=generator) * 0.02).half()

    raw = {
        "gate": weight(intermediate, hidden),
        "up": weight(intermediate, hidden),
        "down": weight(hidden, intermediate),
    }
    biases = {name: (torch.randn(w.shape[0], generator=generator) * 0.02).half() for name, w in raw.items()}
    perms = {}
    if act_order:
        # gate and up: one permutation of all of K (column-parallel parts keep it whole); down:
        # a permutation within each rank's slice of K, which a row-parallel split can keep.
        perms["gate"] = torch.randperm(hidden, generator=generator)
        perms["up"] = torch.randperm(hidden, generator=generator)
        part = intermediate // world_size
        perms["down"] = torch.cat([rank * part + torch.randperm(part, generator=generator) for rank in range(world_size)])

    def quantized(name):
        w = raw[name]
        if name in perms:
            return _act_order(w, dtype, group, perms[name])
        return anybit.quantize(w, dtype, group)

    # The quantizer runs without the GIL: the three layers at once.
    with ThreadPoolExecutor(max_workers=3) as pool:
        weights = dict(zip(raw, pool.map(quantized, raw)))
    return {name: QuantizedLinear(weights[name], biases[name]).to(device) for name in raw}


def _mlp(gate, up, down, x):
    return down(F.silu(gate(x)) * up(x))


def _dequantized(layers, device):
    """Each layer's dequantized weight and bias, in f32 (f64 on the CPU), on ``device``."""
    wide = torch.float32 if device.type == "cuda" else torch.float64

    def dense(name):
        layer = layers[name]
        return layer.qweight.dequantize(wide, device), layer.bias.to(wide)

    with ThreadPoolExecutor(max_workers=len(layers)) as pool:
        return dict(zip(layers, pool.map(dense, layers)))


def _reference(dense, x):
    """The MLP with the dequantized weights, in their precision."""

    def product(name, h):
        weight, bias = dense[name]
        return h @ weight.T + bias

    h = x.to(dense["gate"][0].dtype)
    return product("down", F.silu(product("gate", h)) * product("up", h))


def _graph_of(function, x):
    """``function(x)`` captured as a CUDA graph (the all-reduce of NCCL included) and replayed
    once on a fresh copy of ``x``: what a serving stack's decode step does."""
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up outside the graph (NCCL and the kernels set themselves up)
            function(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = function(static_x)
    static_x.copy_(x)
    graph.replay()
    torch.cuda.synchronize()
    return static_y.clone()


def _run_case(args, case, rank, world_size, device, activation):
    started = time.perf_counter()
    whole = _whole_mlp(args, case, world_size, device)
    gate = ColumnParallelLinear.from_quantized(whole["gate"])
    up = ColumnParallelLinear.from_quantized(whole["up"])
    down = RowParallelLinear.from_quantized(whole["down"])
    dense = _dequantized(whole, device)
    prepared = time.perf_counter() - started
    compiled_cases = [name.strip() for name in args.compiled_cases.split(",") if name.strip()]
    also_compiled = device.type == "cuda" and case[0] in compiled_cases
    if also_compiled:
        split_mlp = lambda x: _mlp(gate, up, down, x)  # noqa: E731
        compiled_mlp = torch.compile(split_mlp, fullgraph=True, dynamic=False)
    rows = []
    for m in args.tokens:
        generator = torch.Generator().manual_seed(args.seed * 7919 + m)
        x = torch.randn(m, args.hidden, generator=generator).to(device, activation)
        with torch.no_grad():
            split = _mlp(gate, up, down, x)
            single = _mlp(whole["gate"], whole["up"], whole["down"], x)
            reference = _reference(dense, x)
        gathered = [torch.empty_like(split) for _ in range(world_size)]
        dist.all_gather(gathered, split.contiguous())
        ranks_agree = all(torch.equal(part, gathered[0]) for part in gathered)
        finite = bool(torch.isfinite(split).all())
        tp_error = _relative_error(split, single)
        reference_error = _relative_error(split, reference)
        # Graph-replayed, the split MLP launches the same kernels and the same all-reduce as
        # eagerly: the same bits are expected. Compiled, inductor fuses silu(gate) · up in f32
        # and rounds once (eagerly each op rounds to f16): close, not equal.
        compiled_error = graph_equal = None
        if also_compiled:
            # A failure is a failed case, not a stopped rank (the other rank would wait in the
            # next collective).
            with torch.no_grad():
                try:
                    compiled_error = _relative_error(compiled_mlp(x), split)
                except Exception as error:  # noqa: BLE001
                    print(f"rank {rank}: {case[0]} M = {m} under torch.compile: {error!r}", flush=True)
                    compiled_error = float("inf")
                try:
                    graph_equal = torch.equal(_graph_of(split_mlp, x), split)
                except Exception as error:  # noqa: BLE001
                    print(f"rank {rank}: {case[0]} M = {m} as a CUDA graph: {error!r}", flush=True)
                    graph_equal = False
        rows.append(
            {
                "case": case[0],
                "m": m,
                "tp_vs_single_rel_error": tp_error,
                "tp_vs_single_max_abs": float((split.double() - single.double()).abs().max()),
                "tp_vs_reference_rel_error": reference_error,
                "single_vs_reference_rel_error": _relative_error(single, reference),
                "ranks_agree": ranks_agree,
                "finite": finite,
                "compiled_vs_eager_rel_error": compiled_error,
                "graph_equal": graph_equal,
                "pass": finite
                and ranks_agree
                and (compiled_error is None or compiled_error <= TP_TOLERANCE)
                and graph_equal is not False
                and tp_error <= TP_TOLERANCE
                and reference_error <= REFERENCE_TOLERANCE,
            }
        )
    if rank == 0:
        print(f"{case[0]}: quantized, split and prepared in {prepared:.1f} s", flush=True)
    return rows


def _table(rows) -> str:
    lines = [
        "| case | M | TP vs 1 device (rel) | max abs | TP vs f32 ref (rel) | 1 device vs f32 ref (rel) | ranks agree | compiled vs eager (rel) | CUDA graph = eager | result |",
        "|------|---|---|---|---|---|---|---|---|---|",
    ]

    def same(value):
        return "–" if value is None else ("yes" if value else "NO")

    def compiled(value):
        return "–" if value is None else f"{value:.2e}"

    for row in rows:
        lines.append(
            f"| {row['case']} | {row['m']} | {row['tp_vs_single_rel_error']:.2e} | "
            f"{row['tp_vs_single_max_abs']:.2e} | {row['tp_vs_reference_rel_error']:.2e} | "
            f"{row['single_vs_reference_rel_error']:.2e} | {'yes' if row['ranks_agree'] else 'NO'} | "
            f"{compiled(row['compiled_vs_eager_rel_error'])} | {same(row['graph_equal'])} | "
            f"{'pass' if row['pass'] else 'FAIL'} |"
        )
    return "\n".join(lines)


def main() -> int:
    args = _arguments()
    if "WORLD_SIZE" not in os.environ:
        return _start_ranks(args)
    args.tokens = [int(value) for value in args.tokens.split(",")]
    cases = CASES
    if args.cases:
        wanted = [name.strip() for name in args.cases.split(",")]
        cases = [case for case in CASES if case[0] in wanted]
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    if args.device == "cuda":
        if torch.cuda.device_count() < world_size:
            print(f"rank {rank}: {world_size} ranks need {world_size} GPUs, this machine has {torch.cuda.device_count()}", file=sys.stderr)
            return 2
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        dist.init_process_group("nccl", device_id=device)
        activation = torch.float16
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
        activation = torch.float32
    rows = []
    for case in cases:
        rows.extend(_run_case(args, case, rank, world_size, device, activation))
    failed = sum(not row["pass"] for row in rows)
    if rank == 0:
        environment = {
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "backend": dist.get_backend(),
            "world_size": world_size,
            "hidden": args.hidden,
            "intermediate": args.intermediate,
            "activation": str(activation).replace("torch.", ""),
            "seed": args.seed,
            "tp_tolerance": TP_TOLERANCE,
            "reference_tolerance": REFERENCE_TOLERANCE,
        }
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "tp-check.json"), "w") as file:
            json.dump({"environment": environment, "cases": rows}, file, indent=2)
        print(json.dumps(environment))
        print(
            f"\nTensor-parallel MLP ({world_size} ranks, {environment['backend']}, hidden {args.hidden}, "
            f"intermediate {args.intermediate}): pass when TP vs 1 device ≤ {TP_TOLERANCE:g} and TP vs "
            f"f32 reference ≤ {REFERENCE_TOLERANCE:g} (relative Frobenius), finite, same on every rank"
        )
        print(_table(rows))
        print(f"{len(rows) - failed} of {len(rows)} cases pass")
    dist.barrier()
    dist.destroy_process_group()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
