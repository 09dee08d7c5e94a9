"""Tests of the parts of baselines.py that need no GPU: the argument parsing, the plan of
configurations, the rows, the table, and the way a failing kernel family becomes error rows.

Run: python3 -m unittest discover -s bench
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import baselines as bl  # noqa: E402


class ParseTest(unittest.TestCase):
    def test_types_in_anybit_spelling(self):
        self.assertEqual(bl.parse_type("u4"), bl.WeightType("u4", "uint", 4))
        self.assertEqual(bl.parse_type("I3"), bl.WeightType("i3", "int", 3))
        self.assertEqual(bl.parse_type("f6e3m2"), bl.WeightType("f6e3m2", "float", 6, 3, 2))
        self.assertEqual(bl.parse_type("bf16").kind, "half")
        for bad in ("u0", "u9", "i16", "f6e3m3", "f4e0m3", "f9e4m4", "int4", ""):
            with self.assertRaises(ValueError, msg=bad):
                bl.parse_type(bad)

    def test_all_expands_once_and_keeps_order(self):
        types = bl.parse_types("u4,all,u4")
        self.assertEqual(types[0].name, "u4")
        self.assertEqual(len(types), len(bl.ALL_TYPES))
        self.assertEqual({t.name for t in types}, set(bl.ALL_TYPES))

    def test_kernels(self):
        self.assertEqual(bl.parse_kernels(None), list(bl.DEFAULT_KERNELS))
        self.assertEqual(bl.parse_kernels("all"), list(bl.KERNELS))
        self.assertEqual(bl.parse_kernels("humming,cublas,humming"), ["humming", "cublas"])
        with self.assertRaises(ValueError):
            bl.parse_kernels("marlin")

    def test_shapes_and_ms(self):
        self.assertEqual(bl.parse_shapes("57344x8192, 8192X28672"), [(57344, 8192), (8192, 28672)])
        self.assertEqual(bl.parse_ms("64,1,16,16"), [1, 16, 64])
        for bad in ("57344", "0x8192", "ax8"):
            with self.assertRaises(ValueError):
                bl.parse_shapes(bad)
        with self.assertRaises(ValueError):
            bl.parse_ms("0,1")

    def test_arguments_enforce_the_timing_rules(self):
        with contextlib.redirect_stderr(io.StringIO()):
            for argv in (["--iters", "19"], ["--flush-mb", "64"], ["--group", "100"]):
                with self.assertRaises(SystemExit, msg=argv):
                    bl.parse_args(argv)
        args = bl.parse_args([])
        self.assertEqual(args.ms, [1, 16, 32, 64])
        self.assertEqual(args.shapes, [(8192, 8192), (57344, 8192), (8192, 28672)])
        self.assertEqual(args.kernels, list(bl.DEFAULT_KERNELS))


class PlanTest(unittest.TestCase):
    def plan(self, kernels, types, act="f16"):
        return bl.plan(kernels, bl.parse_types(types), [(57344, 8192)], [1, 16], act, 128)

    def test_default_plan(self):
        args = bl.parse_args([])
        rows = bl.plan(args.kernels, args.types, args.shapes, args.ms, args.act, args.group)
        count = {}
        for p in rows:
            count[p.kernel] = count.get(p.kernel, 0) + 1
        # 3 shapes x 4 M each: cuBLAS f16+bf16, int4pack u4, gemlite u2/u4/u8,
        # humming i1..i8 and the six default floats.
        self.assertEqual(count, {"cublas": 24, "torch-int4pack": 12, "gemlite": 36, "humming": 168})
        self.assertEqual(len({p.key() for p in rows}), len(rows))

    def test_each_kernel_takes_its_own_types(self):
        rows = self.plan(list(bl.KERNELS), "f16,bf16,u3,u4,i4,f6e3m2")
        got = {(p.kernel, p.wtype, p.act) for p in rows}
        self.assertEqual(
            got,
            {
                ("cublas", "f16", "f16"),
                ("cublas", "bf16", "bf16"),
                ("torch-int4pack", "u4", "bf16"),
                ("gemlite", "u4", "f16"),
                ("humming", "i4", "f16"),
                ("humming", "f6e3m2", "f16"),
                ("humming-zp", "u3", "f16"),
                ("humming-zp", "u4", "f16"),
            },
        )
        self.assertTrue(all(p.group is None for p in rows if p.kernel == "cublas"))
        self.assertTrue(all(p.group == 128 for p in rows if p.kernel != "cublas"))

    def test_humming_f16_takes_at_most_five_exponent_bits(self):
        self.assertEqual(self.plan(["humming"], "f8e6m1"), [])
        self.assertEqual(len(self.plan(["humming"], "f8e5m2")), 2)
        self.assertEqual(len(self.plan(["humming"], "f8e6m1", act="bf16")), 2)

    def test_loose_tolerance_grows_as_bits_shrink(self):
        ints = [bl.loose_tolerance(bl.parse_type(f"i{b}")) for b in range(8, 0, -1)]
        self.assertEqual(ints, sorted(ints))
        self.assertAlmostEqual(bl.loose_tolerance(bl.parse_type("i8")), 2.0**-5)
        self.assertEqual(bl.loose_tolerance(bl.parse_type("i1")), 1.5)
        self.assertAlmostEqual(bl.loose_tolerance(bl.parse_type("f8e4m3")), 0.25)


class RowsTest(unittest.TestCase):
    planned = bl.Planned("humming", "i4", "f16", 128, 1, 57344, 8192)

    def test_finish_row_adds_bandwidth_and_metadata(self):
        row = bl.base_row(self.planned)
        row.update(median_us=100.0, weight_bytes=250_000_000)
        out = bl.finish_row(row, {"device": "NVIDIA H100", "date": "d"}, copy_tbps=3.0)
        self.assertAlmostEqual(out["tbps"], 2.5)
        self.assertAlmostEqual(out["pct_copy"], 2.5 / 3.0 * 100)
        self.assertEqual(out["device"], "NVIDIA H100")
        self.assertIsNone(row.get("pct_copy"))  # the input row is not changed

    def test_error_rows_have_no_time(self):
        out = bl.finish_row(bl.error_row(self.planned, "boom"), {}, copy_tbps=3.0)
        self.assertEqual(out["error"], "boom")
        self.assertIsNone(out["median_us"])
        self.assertIsNone(out["tbps"])
        self.assertIsNone(out["pct_copy"])

    def test_fill_missing_and_dedupe(self):
        other = bl.Planned("humming", "i4", "f16", 128, 16, 57344, 8192)
        done = bl.base_row(self.planned)
        done["median_us"] = 90.0
        missing = bl.fill_missing([self.planned, other], [done], "worker died")
        self.assertEqual([(r["M"], r["error"]) for r in missing], [(16, "worker died")])
        later = bl.error_row(self.planned, "shape failed")
        self.assertEqual(bl.dedupe([done, later]), [done])

    def test_json_lines_round_trip_skips_a_cut_line(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "sub", "rows.jsonl")
            writer = bl.JsonLines(path)
            writer.write({"kernel": "cublas", "M": 1})
            writer.write({"kernel": "gemlite", "M": 16})
            with open(path, "a") as f:
                f.write('{"kernel": "humm')
            rows = bl.read_json_lines(path)
        self.assertEqual([r["kernel"] for r in rows], ["cublas", "gemlite"])

    def test_table_is_aligned_and_shows_errors(self):
        good = bl.finish_row(
            dict(bl.base_row(self.planned), median_us=86.0, weight_bytes=251_658_240, rel_err=2e-3),
            {},
            3.0,
        )
        bad = bl.finish_row(
            bl.error_row(bl.Planned("gemlite", "u2", "f16", 128, 1, 57344, 8192), "no triton"),
            {},
            3.0,
        )
        lines = bl.format_table([bad, good]).splitlines()
        self.assertEqual(len(lines), 4)
        self.assertTrue(lines[0].startswith("kernel"))
        # Sorted by shape, M, then kernel in the order they run: humming before gemlite.
        self.assertTrue(lines[2].startswith("humming"))
        self.assertTrue(lines[3].startswith("gemlite"))
        self.assertIn("ERROR: no triton", lines[3])
        self.assertIn("86.0", lines[2])
        self.assertIn("2.926", lines[2])  # 251.66 MB in 86 µs
        # The numbers are right-aligned under their header: the µs column ends at one place.
        end = lines[0].index(" us ") + 3
        for line in lines[1:]:
            self.assertNotEqual(line[end - 1], " ", line)
            self.assertEqual(line[end], " ", line)
        self.assertEqual(lines[3][end - 1], "-")
        self.assertTrue(lines[2][:end].endswith("86.0"))


class SummaryTest(unittest.TestCase):
    def row(self, kernel, wtype, m, n, k, **extra):
        act = "bf16" if kernel == "torch-int4pack" else "f16"
        row = bl.base_row(bl.Planned(kernel, wtype, act, 128, m, n, k))
        row.update(extra)
        return bl.finish_row(row, {}, 3.0)

    def test_one_line_per_kernel_and_type_one_column_per_shape_and_m(self):
        rows = [
            self.row("humming", "i4", 1, 57344, 8192, median_us=86.0, weight_bytes=258_000_000),
            self.row("humming", "i4", 16, 57344, 8192, median_us=90.0, weight_bytes=258_000_000),
            self.row("humming", "i4", 1, 8192, 8192, median_us=18.0, weight_bytes=36_000_000),
            self.row("humming", "i3", 1, 57344, 8192, median_us=82.0, weight_bytes=1, check="fail"),
            self.row("gemlite", "u4", 1, 57344, 8192, error="setup failed: no triton"),
            self.row("gemlite", "u2", 16, 8192, 8192, error="setup failed: no triton"),
        ]
        text = bl.format_summary(rows, 3.0)
        lines = text.splitlines()
        self.assertEqual(lines[0], "median µs:")
        # Shapes in the order they ran, M ascending, the shape named over its first column.
        self.assertEqual(lines[1].split(), ["kernel", "type", "act", "57344x8192", "8192x8192"])
        self.assertEqual(lines[2].split(), ["M=1", "M=16", "M=1", "M=16"])
        # Types in the order of --types all, a failed check marked "!".
        self.assertEqual(lines[3].split(), ["humming", "i3", "f16", "82.0!"])
        self.assertEqual(lines[4].split(), ["humming", "i4", "f16", "86.0", "90.0", "18.0"])
        self.assertEqual(lines[5].split(), ["gemlite", "u2", "f16", "err"])
        self.assertEqual(lines[6].split(), ["gemlite", "u4", "f16", "err"])
        # The same cells as % of the copy bandwidth: 258 MB in 86 µs is 3.0 TB/s, 100 %.
        pct = lines.index("% of copy bandwidth (copy 3.000 TB/s):")
        self.assertEqual(lines[pct + 4].split()[3], "100.0")
        self.assertIn("! the first-call check failed for 1 rows (rel_err > tol)", lines)
        self.assertEqual(lines[-1], "err gemlite u4,u2: setup failed: no triton")


class WorkerTest(unittest.TestCase):
    def test_a_worker_that_dies_keeps_its_rows_and_names_the_cause(self):
        args = bl.parse_args(
            ["--only", "humming", "--types", "i4", "--m", "1,16", "--shapes", "8192x8192"]
        )
        args.worker_timeout = 60
        row = bl.base_row(bl.Planned("humming", "i4", "f16", 128, 1, 8192, 8192))
        row["median_us"] = 18.0
        script = (
            "import json, sys\n"
            "path = sys.argv[1]\n"
            f"open(path, 'w').write(json.dumps({row!r}) + '\\n')\n"
            "sys.stderr.write('illegal memory access\\n')\n"
            "sys.exit(3)\n"
        )
        original = bl.worker_command
        bl.worker_command = lambda kernel, a, out: [sys.executable, "-c", script, out]
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                rows, failure = bl.run_worker("humming", args)
        finally:
            bl.worker_command = original
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0]["median_us"], 18.0)
        self.assertIn("exited with code 3", failure)
        self.assertIn("illegal memory access", failure)
        expected = bl.plan(args.kernels, args.types, args.shapes, args.ms, args.act, args.group)
        missing = bl.fill_missing(expected, rows, failure)
        self.assertEqual([r["M"] for r in missing], [16])

    def test_a_worker_past_its_time_is_killed(self):
        args = bl.parse_args(["--only", "cublas", "--types", "f16", "--m", "1"])
        args.worker_timeout = 1
        original = bl.worker_command
        bl.worker_command = lambda kernel, a, out: [
            sys.executable,
            "-c",
            "import time; time.sleep(60)",
        ]
        try:
            rows, failure = bl.run_worker("cublas", args)
        finally:
            bl.worker_command = original
        self.assertEqual(rows, [])
        self.assertIn("--worker-timeout 1 s", failure)


class BudgetTest(unittest.TestCase):
    def test_families_past_the_budget_are_skipped_with_a_reason(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "rows.jsonl")
            argv = ["--json", path, "--types", "f16,i4", "--m", "1", "--shapes", "8192x8192"]
            argv += ["--max-total-s", "1", "--device", "cpu"]
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                code = bl.main(argv)
            with open(path) as f:
                rows = [json.loads(line) for line in f][1:]  # after the copy row
        self.assertEqual(code, 1)
        self.assertEqual(
            [(r["kernel"], r["wtype"]) for r in rows], [("cublas", "f16"), ("humming", "i4")]
        )
        for r in rows:
            self.assertEqual(r["error"], "not run: the run's --max-total-s 1 s was spent")


@unittest.skipIf(importlib.util.find_spec("torch") is not None, "needs a machine without torch")
class NoTorchTest(unittest.TestCase):
    def test_every_planned_row_becomes_an_error_row(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "rows.jsonl")
            argv = ["--json", path, "--types", "f16,u4,i4", "--m", "1", "--shapes", "8192x8192"]
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                code = bl.main(argv)
            with open(path) as f:
                rows = [json.loads(line) for line in f]
        self.assertEqual(code, 1)
        self.assertEqual(
            [(r["kernel"], r.get("wtype")) for r in rows],
            [
                ("d2d-copy", None),
                ("cublas", "f16"),
                ("torch-int4pack", "u4"),
                ("humming", "i4"),
                ("gemlite", "u4"),
            ],
        )
        self.assertTrue(all("No module named 'torch'" in r["error"] for r in rows))
        self.assertTrue(all("date" in r and "device" in r for r in rows))
        self.assertIn("err cublas f16: setup failed: ModuleNotFoundError", out.getvalue())


@unittest.skipIf(importlib.util.find_spec("torch") is None, "needs torch (any build)")
class CpuSmokeTest(unittest.TestCase):
    """The whole flow on the CPU (hidden --device cpu): worker processes, the reference check,
    the round-robin timing with wall-clock events, the rows. Its times mean nothing."""

    def run_main(self, extra):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "rows.jsonl")
            argv = ["--device", "cpu", "--json", path, "--shapes", "256x512", "--m", "1,3"]
            argv += ["--iters", "20", "--warmup", "1", "--flush-mb", "100"] + extra
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                code = bl.main(argv)
            with open(path) as f:
                rows = [json.loads(line) for line in f]
            # The children's part files are merged into --json and removed.
            self.assertEqual(os.listdir(tmp), ["rows.jsonl"])
            return code, rows, out.getvalue()

    def test_cublas_rows_are_timed_and_checked_and_int4pack_fails_soft(self):
        import torch

        code, rows, out = self.run_main(
            ["--only", "cublas,torch-int4pack", "--types", "f16,bf16,u4"]
        )
        self.assertEqual(code, 0)
        by = {(r["kernel"], r["wtype"], r["M"]): r for r in rows}
        self.assertGreater(by[("d2d-copy", None, None)]["tbps"], 0)
        for wtype in ("f16", "bf16"):
            for m in (1, 3):
                r = by[("cublas", wtype, m)]
                self.assertIsNone(r["error"])
                self.assertEqual(r["check"], "pass")
                self.assertLess(r["rel_err"], 1e-2)
                self.assertGreater(r["rel_err"], 0)  # f16/bf16 rounding is there
                self.assertEqual(r["runs"], 20)
                self.assertEqual(r["weight_bytes"], 256 * 512 * 2)
                self.assertGreater(r["median_us"], 0)
                self.assertIsNotNone(r["pct_copy"])
                self.assertEqual(r["peer_version"], torch.__version__)
                self.assertEqual(r["torch"], torch.__version__)
        for m in (1, 3):
            r = by[("torch-int4pack", "u4", m)]
            self.assertIsNone(r["median_us"])
            self.assertIn("prepare failed", r["error"])  # the tinygemm packing is CUDA-only
        table = [line for line in out.splitlines() if line.startswith("cublas ")]
        self.assertEqual(len(table), 4)  # the table at the end has a line per cuBLAS row

    def test_warming_in_parallel_first_keeps_the_rows(self):
        bl.CublasPeer.warm_in_parallel = True
        try:
            code, rows, out = self.run_main(["--only", "cublas", "--types", "f16,bf16"])
        finally:
            bl.CublasPeer.warm_in_parallel = False
        self.assertEqual(code, 0)
        self.assertIn("[cublas] compiled for f16,bf16 in parallel, untimed", out)
        timed = [(r["wtype"], r["M"], r["check"]) for r in rows if r["kernel"] == "cublas"]
        self.assertEqual(
            sorted(timed),
            [("bf16", 1, "pass"), ("bf16", 3, "pass"), ("f16", 1, "pass"), ("f16", 3, "pass")],
        )

    def test_in_process_gives_the_same_rows(self):
        code, rows, _ = self.run_main(["--only", "cublas", "--types", "f16", "--in-process"])
        self.assertEqual(code, 0)
        timed = [r for r in rows if r["kernel"] == "cublas"]
        self.assertEqual([(r["M"], r["check"]) for r in timed], [(1, "pass"), (3, "pass")])


if __name__ == "__main__":
    unittest.main()
