#!/usr/bin/env python3
"""Profiles the decode kernels the library chooses with Nsight Compute (ncu), on the GPU machine.

For each (weight type, M, shape) it runs `anybit bench matmul --heuristic` for that one
configuration under `ncu`, profiles one launch of the `qmm_decode_*` kernel (ncu replays it with
the caches flushed), and reports what explains its time: duration, DRAM bytes and throughput as
a share of the peak, instructions issued per byte of weights, issue-slot use, achieved occupancy,
registers per thread, and the largest warp stall reasons. Writes profile.json and profile.md
to --out and prints the table.

    python3 scripts/gpu_profile.py --anybit .gpu-bundle/anybit --out $OUT \
        --wtype i4,i3,i2,i1 --m 1,16 --shape 57344x8192,8192x8192

`--parse FILE` reads an ncu CSV (`--page raw --csv`) instead of running anything (tests).
"""

import argparse
import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

# Counters asked of ncu; the stall reasons are warps stalled per issued instruction.
STALLS = [
    "long_scoreboard",
    "short_scoreboard",
    "wait",
    "barrier",
    "math_pipe_throttle",
    "mio_throttle",
    "lg_throttle",
    "not_selected",
    "selected",
    "no_instruction",
    "branch_resolving",
    "dispatch_stall",
    "drain",
    "membar",
    "imc_miss",
    "tex_throttle",
    "sleeping",
]
STALL_METRIC = "smsp__average_warps_issue_stalled_{}_per_issue_active.ratio"
METRICS = [
    "gpu__time_duration.sum",
    "dram__bytes_read.sum",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "smsp__inst_executed.sum",
    "smsp__issue_active.avg.pct_of_peak_sustained_active",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "launch__registers_per_thread",
    "launch__occupancy_limit_registers",
    "launch__block_size",
    "launch__grid_size",
] + [STALL_METRIC.format(stall) for stall in STALLS]


def number(text):
    """An ncu value as a float (thousands separators removed), or None."""
    text = text.replace(",", "").strip()
    try:
        return float(text)
    except ValueError:
        return None


def parse_raw_csv(text):
    """The kernels of an ncu `--page raw --csv` report: one dict per profiled launch with the
    kernel name and every numeric metric. ncu prints log lines (`==PROF==`) before the table;
    the table starts at the header row that names "Kernel Name", and the row after the header
    holds the units."""
    lines = text.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if line.startswith('"ID"') and "Kernel Name" in line),
        None,
    )
    if start is None:
        return []
    rows = list(csv.reader(io.StringIO("\n".join(lines[start:]))))
    header, data = rows[0], rows[2:]
    kernels = []
    for row in data:
        if len(row) != len(header):
            continue
        record = dict(zip(header, row))
        metrics = {name: number(record[name]) for name in METRICS if name in record}
        kernels.append({"kernel": record["Kernel Name"], "metrics": metrics})
    return kernels


def summarize(kernel, weight_bytes):
    """What the table shows of one profiled launch."""
    m = kernel["metrics"]
    duration_ns = m.get("gpu__time_duration.sum")
    instructions = m.get("smsp__inst_executed.sum")
    stalls = sorted(
        ((stall, m.get(STALL_METRIC.format(stall))) for stall in STALLS),
        key=lambda item: -(item[1] or 0.0),
    )
    return {
        "kernel": kernel["kernel"],
        "us": duration_ns / 1000.0 if duration_ns is not None else None,
        "dram_read_mb": (m.get("dram__bytes_read.sum") or 0.0) / 1e6,
        "dram_pct_of_peak": m.get("dram__throughput.avg.pct_of_peak_sustained_elapsed"),
        "warp_instructions_per_weight_byte": (
            instructions / weight_bytes if instructions and weight_bytes else None
        ),
        "issue_active_pct": m.get("smsp__issue_active.avg.pct_of_peak_sustained_active"),
        "achieved_occupancy_pct": m.get("sm__warps_active.avg.pct_of_peak_sustained_active"),
        "registers": m.get("launch__registers_per_thread"),
        "blocks_per_sm_by_registers": m.get("launch__occupancy_limit_registers"),
        "top_stalls": [(stall, value) for stall, value in stalls[:3] if value],
    }


def fmt(value, digits=1):
    return "–" if value is None else f"{value:.{digits}f}"


def table(results):
    lines = [
        "| weight | M | N × K | kernel schedule | µs | DRAM % of peak | warp instr / weight byte | issue active % | occupancy % | registers (blocks/SM) | largest stalls (warps per issue) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.get("profile")
        if s is None:
            lines.append(f"| {r['weight']} | {r['m']} | {r['shape']} | – | failed: {r['error']} | | | | | | |")
            continue
        stalls = ", ".join(f"{name} {value:.2f}" for name, value in s["top_stalls"])
        lines.append(
            f"| {r['weight']} | {r['m']} | {r['shape']} | {s['kernel'].rsplit('_', 1)[-1]} | {fmt(s['us'])} "
            f"| {fmt(s['dram_pct_of_peak'])} | {fmt(s['warp_instructions_per_weight_byte'], 3)} "
            f"| {fmt(s['issue_active_pct'])} | {fmt(s['achieved_occupancy_pct'])} "
            f"| {fmt(s['registers'], 0)} ({fmt(s['blocks_per_sm_by_registers'], 0)}) | {stalls} |"
        )
    return "\n".join(lines)


def weight_bytes_of(bench_json):
    """The packed weight bytes `anybit bench --json` reports for its one configuration."""
    rows = json.loads(Path(bench_json).read_text())["rows"]
    return rows[0]["weight_bytes"] if rows else None


def profile_one(args, weight, m, shape, out):
    name = f"{weight}-m{m}-{shape}"
    bench_json = out / f"{name}.bench.json"
    command = [
        args.ncu,
        "--kernel-name", "regex:^qmm_decode",
        "--launch-skip", "1",
        "--launch-count", "1",
        "--metrics", ",".join(METRICS),
        "--page", "raw",
        "--csv",
        args.anybit, "bench", "matmul", "--heuristic",
        "--wtype", weight, "--m", str(m), "--shape", shape,
        "--warmup", "1", "--repeats", "1",
        "--json", str(bench_json),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    (out / f"{name}.ncu.csv").write_text(result.stdout)
    (out / f"{name}.log").write_text(result.stderr)
    kernels = parse_raw_csv(result.stdout)
    record = {"weight": weight, "m": m, "shape": shape}
    if result.returncode != 0 or not kernels:
        record["error"] = f"exit {result.returncode}, {len(kernels)} kernels profiled (see {name}.log)"
        return record
    record["profile"] = summarize(kernels[0], weight_bytes_of(bench_json))
    record["raw"] = kernels[0]
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--anybit", default=".gpu-bundle/anybit")
    parser.add_argument("--ncu", default=shutil.which("ncu") or "ncu")
    parser.add_argument("--wtype", default="i4,i3,i2,i1,i8")
    parser.add_argument("--m", default="1,16")
    parser.add_argument("--shape", default="57344x8192,8192x8192")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per configuration")
    parser.add_argument("--out", default="gpu-check-out")
    parser.add_argument("--parse", help="an ncu raw CSV to summarize instead of profiling")
    parser.add_argument("--weight-bytes", type=float, help="with --parse: the weight bytes")
    args = parser.parse_args()

    if args.parse:
        kernels = parse_raw_csv(Path(args.parse).read_text())
        results = [
            {"weight": "?", "m": "?", "shape": "?", "profile": summarize(k, args.weight_bytes)}
            for k in kernels
        ]
        print(table(results))
        return 0 if kernels else 1

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for weight in args.wtype.split(","):
        for m in [int(value) for value in args.m.split(",")]:
            for shape in args.shape.split(","):
                print(f"profiling {weight} M = {m} {shape}", file=sys.stderr, flush=True)
                results.append(profile_one(args, weight, m, shape, out))
    (out / "profile.json").write_text(json.dumps(results, indent=1))
    text = table(results)
    (out / "profile.md").write_text(text + "\n")
    print(text)
    return 0 if all("profile" in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
