"""The GPU checks' own logic, on the CPU with tiny sizes: scripts/gpu_tp_check.py (two processes
on gloo, the products with the dequantized weights) and scripts/gpu_model_check.py (a 2-layer
Llama model of transformers, when transformers is installed). What they compute and compare is
the same as on the GPU machine; only the kernels are replaced by the dequantized reference."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _run(arguments, timeout=300):
    result = subprocess.run(
        [sys.executable, *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def test_tensor_parallel_check_on_two_cpu_processes(tmp_path):
    stdout = _run([SCRIPTS / "gpu_tp_check.py", "--device", "cpu", "--smoke", "--out", tmp_path])
    report = json.loads((tmp_path / "tp-check.json").read_text())
    assert report["environment"]["world_size"] == 2 and report["environment"]["backend"] == "gloo"
    cases = report["cases"]
    assert {case["case"] for case in cases} == {
        "u4 g128", "u3 g128", "i8 g128", "f6e3m2 g128", "u4 g32", "u3 g128 act-order",
    }
    assert sorted({case["m"] for case in cases}) == [1, 16, 64]
    for case in cases:
        assert case["pass"] and case["ranks_agree"], case
        # On the CPU both sides multiply by the same dequantized weights in f32: only the order
        # of the sums differs.
        assert case["tp_vs_single_rel_error"] < 1e-5, case
    # The table comes last.
    assert stdout.rstrip().endswith("18 of 18 cases pass")


def test_whole_model_check_on_a_tiny_model(tmp_path):
    pytest.importorskip("transformers")
    stdout = _run([SCRIPTS / "gpu_model_check.py", "--smoke", "--out", tmp_path])
    report = json.loads((tmp_path / "model-check.json").read_text())
    assert report["pass"], json.dumps(report, indent=1)
    assert report["config"]["num_hidden_layers"] == 2
    assert [result["format"] for result in report["formats"]] == ["u4 g128", "u3 g128", "f6e3m2 g128"]
    for result in report["formats"]:
        # 2 layers × (q, k, v, o, gate, up, down).
        assert result["layers_quantized"] == 14
        # On the CPU QuantizedLinear multiplies by the dequantized weight in f16: the same
        # numbers as the reference model's.
        assert result["logits_vs_reference"]["max_abs"] == 0.0
        assert result["decoding"]["decoder_agreement"] == 1.0
        assert result["greedy_tokens_equal_to_reference"] == report["settings"]["new"]
        assert 0 < result["decoder_weight_bytes"] < report["f16"]["decoder_weight_bytes"] / 2
    assert (tmp_path / "model-check.md").read_text().startswith("# anybit on a whole Llama-architecture model")
    assert stdout.rstrip().endswith("all checks pass")


def test_the_profile_table_reads_an_ncu_raw_csv(tmp_path):
    # The shape of `ncu --page raw --csv`: log lines, a header, a units row, one row a launch;
    # numbers with thousands separators.
    sys.path.insert(0, str(SCRIPTS))
    try:
        import gpu_profile
    finally:
        sys.path.pop(0)
    names = gpu_profile.METRICS
    values = {name: "0" for name in names}
    values.update({
        "gpu__time_duration.sum": "100,100",
        "dram__bytes_read.sum": "240,000,000",
        "dram__throughput.avg.pct_of_peak_sustained_elapsed": "81.5",
        "smsp__inst_executed.sum": "41,000,000",
        "smsp__issue_active.avg.pct_of_peak_sustained_active": "55.2",
        "sm__warps_active.avg.pct_of_peak_sustained_active": "23.1",
        "launch__registers_per_thread": "128",
        "launch__occupancy_limit_registers": "2",
        gpu_profile.STALL_METRIC.format("long_scoreboard"): "3.25",
        gpu_profile.STALL_METRIC.format("wait"): "1.5",
        gpu_profile.STALL_METRIC.format("barrier"): "0.75",
        gpu_profile.STALL_METRIC.format("selected"): "1",
    })
    header = ["ID", "Process ID", "Kernel Name", *names]
    rows = [
        header,
        ["", "", "", *["unit"] * len(names)],
        ["0", "77", "qmm_decode_i4_f16_g128_sf16_w2k4r1t1c2px", *[values[n] for n in names]],
    ]
    text = "==PROF== Connected to process 77\n" + "\n".join(
        ",".join(f'"{cell}"' for cell in row) for row in rows
    )
    (tmp_path / "raw.csv").write_text(text)
    kernels = gpu_profile.parse_raw_csv(text)
    assert [k["kernel"] for k in kernels] == ["qmm_decode_i4_f16_g128_sf16_w2k4r1t1c2px"]
    summary = gpu_profile.summarize(kernels[0], weight_bytes=241_000_000)
    assert summary["us"] == 100.1
    assert summary["dram_read_mb"] == 240.0
    assert round(summary["warp_instructions_per_weight_byte"], 4) == 0.1701
    assert summary["registers"] == 128 and summary["blocks_per_sm_by_registers"] == 2
    assert summary["top_stalls"] == [("long_scoreboard", 3.25), ("wait", 1.5), ("selected", 1.0)]
    stdout = _run([SCRIPTS / "gpu_profile.py", "--parse", tmp_path / "raw.csv",
                   "--weight-bytes", "241000000"])
    assert "| w2k4r1t1c2px | 100.1 | 81.5 | 0.170 | 55.2 | 23.1 | 128 (2) | long_scoreboard 3.25, wait 1.50, selected 1.00 |" in stdout


def test_the_benchmark_report_compares_each_peer_with_its_kind_of_weights(tmp_path):
    """scripts/bench-report: anybit's rows without zero points against Humming, those of a
    `--zeros` run against the zero-point peers, speedups as the peer's time over anybit's,
    failed peers listed with their error, and the chart titled with the run's device."""

    def ours(weight, m, us, zeros):
        tag = "_z_" if zeros else "_"
        return {"kernel": f"qmm_decode_{weight}_f16_g128_sf16{tag}w2k4r1t1c1px", "weight": weight,
                "group": "128", "activation": "f16", "m": m, "n": 8192, "k": 8192,
                "schedule": "w2k4r1t1c1px", "us": us, "copy_fraction": 0.5}

    def peer(kernel, wtype, m, us, error=None):
        return {"kernel": kernel, "wtype": wtype, "M": m, "N": 8192, "K": 8192,
                "median_us": None if error else us, "error": error}

    signed = {"device": "Test GPU", "copy_tbps": 3.0,
              "rows": [ours("i4", 1, 20.0, False), ours("i4", 16, 40.0, False)]}
    with_zeros = {"device": "Test GPU", "copy_tbps": 3.0,
                  "rows": [ours("u4", 1, 25.0, True), ours("u8", 1, 50.0, True)]}
    (tmp_path / "signed.json").write_text(json.dumps(signed))
    (tmp_path / "zeros.json").write_text(json.dumps(with_zeros))
    baselines = [
        {"kernel": "d2d-copy", "tbps": 3.0},
        peer("cublas", "f16", 1, 60.0), peer("cublas", "f16", 16, 60.0),
        peer("humming", "i4", 1, 30.0), peer("humming", "i4", 16, 20.0),
        peer("gemlite", "u4", 1, 50.0), peer("gemlite", "u8", 1, 25.0),
        peer("torch-int4pack", "u4", 1, None, error="RuntimeError: no kernel image"),
    ]
    (tmp_path / "peers.jsonl").write_text("\n".join(json.dumps(b) for b in baselines) + "\n")
    out, chart = tmp_path / "BENCH.md", tmp_path / "chart.svg"
    subprocess.run(
        [sys.executable, SCRIPTS / "bench-report", "--anybit", tmp_path / "signed.json",
         "--anybit", tmp_path / "zeros.json", "--baselines", tmp_path / "peers.jsonl",
         "--out", out, "--chart", chart],
        check=True, capture_output=True, text=True,
    )
    report = out.read_text()
    lines = report.splitlines()
    signed_head = lines.index("### 8192 x 8192 (N x K), without zero points")
    zeros_head = lines.index("### 8192 x 8192 (N x K), with zero points (`--zeros`)")
    signed_table = lines[signed_head:zeros_head]
    zeros_table = lines[zeros_head:]
    # Without zero points: Humming only (GemLite quantizes with zero points).
    assert "vs Humming" in signed_table[2] and "GemLite" not in signed_table[2]
    assert signed_table[4] == ("| i4 | 20.0 | 50.0 | 3.00× | 1.50× "
                               "| 40.0 | 50.0 | 1.50× | 0.50× |")
    # With zero points: GemLite, and not torch int4, whose only row failed.
    assert "vs GemLite" in zeros_table[2] and "torch" not in zeros_table[2]
    assert "| u4 | 25.0 | 50.0 | 2.40× | 2.00× |" in zeros_table
    assert "| u8 | 50.0 | 50.0 | 1.20× | 0.50× |" in zeros_table
    assert "- torch-int4pack (u4): RuntimeError: no kernel image" in lines
    assert "group 128 (Test GPU)" in chart.read_text()


def test_bench_compare_matches_configurations_and_reports_speedups(tmp_path):
    """scripts/bench-compare: rows matched on weight, zero points, M and shape; the speedup is
    the first run's time over the second's; rows of one run only are counted."""

    def row(weight, m, us, schedule, zeros=False):
        tag = "_z_" if zeros else "_"
        return {"kernel": f"qmm_decode_{weight}_f16_g128_sf16{tag}{schedule}", "weight": weight,
                "group": "128", "activation": "f16", "m": m, "n": 8192, "k": 8192,
                "schedule": schedule, "us": us, "copy_fraction": 0.25}

    old = {"rows": [row("i4", 1, 30.0, "w2k4r1t1c2px"), row("u4", 1, 40.0, "w2k4r1t1c2px", True),
                    row("i8", 1, 50.0, "w2k4r1t1c4px")]}
    new = {"rows": [row("i4", 1, 20.0, "w2k4r1t1c2px"), row("u4", 1, 50.0, "w4k4r1t1c2px", True),
                    row("u4", 1, 10.0, "w2k4r1t1c2px")]}
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    out = _run([SCRIPTS / "bench-compare", tmp_path / "old.json", tmp_path / "new.json",
                "--markdown"])
    assert "| i4 | 1 | 8192x8192 | 30.0 | 20.0 | 1.50× | 25.0 | w2k4r1t1c2px |" in out
    assert "| u4 z | 1 | 8192x8192 | 40.0 | 50.0 | 0.80× | 25.0 | w2k4r1t1c2px -> w4k4r1t1c2px |" in out
    assert "2 configurations: speedup 0.80–1.50×, median 1.15×; 2 in one run only" in out
