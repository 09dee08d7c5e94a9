"""docs/QUALITY.md and its charts (SVG), written from the results document of `scripts/quality`
(standard library only, so `scripts/quality --report-only` needs no model)."""
import json
import math
import os

from .metrics import dtype_bits

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The run docs/BENCHMARKS.md was made from (keep the two in step).
BENCH_NAME = "2026-11-28-h200/anybit-4eb5676.json"
BENCH_RUN = os.path.join(ROOT, "docs", "bench-runs", BENCH_NAME)
CHOICE_NOTES = os.path.join(ROOT, "data", "quality", "choose.md")
COLORS = {"i": "#1f77b4", "u": "#2ca02c", "f": "#d62728"}
MODEL = "SmolLM2-135M-Instruct"
KIND_NAMES = {"i": "signed integer (iN)", "u": "unsigned with zero point (uN)",
              "f": "small float (fNeXmY)"}


def kind(dtype):
    return dtype[0]


def label(row):
    return f"{row['dtype']} g{row['group']}"


def q4_1_aligned(row):
    """4-bit, group 32: the groups are the reference's own Q4_1 blocks."""
    return dtype_bits(row["dtype"]) == 4 and row["group"] == 32


def pareto(rows):
    """The rows no other row beats on both bits per weight and KL divergence."""
    best = []
    for row in sorted(rows, key=lambda r: (r["bits_per_weight"], r["kl"])):
        if not best or row["kl"] < best[-1]["kl"]:
            best.append(row)
    return best


def sort_key(row):
    order = {"i": 0, "u": 1, "f": 2}
    return (dtype_bits(row["dtype"]), order[kind(row["dtype"])], row["dtype"], row["group"],
            row["search"] != "none")


def _log_axis(values, low_floor=1e-6):
    low = max(min(values), low_floor)
    high = max(values)
    return math.floor(math.log10(low)), math.ceil(math.log10(high))


def _svg_open(width, height, title):
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif" font-size="12">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<text x="60" y="18" font-size="14">{title}</text>']


# The marker of each group size in the KL chart.
GROUP_SHAPES = {32: "circle", 64: "rect", 128: "diamond"}


def _marker(shape, cx, cy, color, title=None):
    """An SVG marker (circle, square or diamond, about 7 px) at (cx, cy), with a tooltip."""
    tip = f"<title>{title}</title>" if title else ""
    if shape == "circle":
        return (f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" fill="{color}" '
                f'fill-opacity="0.8">{tip}</circle>')
    if shape == "diamond":
        points = f"{cx:.1f},{cy - 4.5:.1f} {cx + 4.5:.1f},{cy:.1f} {cx:.1f},{cy + 4.5:.1f} " \
                 f"{cx - 4.5:.1f},{cy:.1f}"
        return f'<polygon points="{points}" fill="{color}" fill-opacity="0.8">{tip}</polygon>'
    return (f'<rect x="{cx - 3.5:.1f}" y="{cy - 3.5:.1f}" width="7" height="7" fill="{color}" '
            f'fill-opacity="0.8">{tip}</rect>')


def kl_chart(document, path):
    """Mean KL divergence (log scale) against bits per weight; one point per format and group
    (round to nearest), the best trade-off (over every row) joined and labelled."""
    rows = [r for r in document["rows"] if r["search"] == "none"]
    front = pareto(document["rows"])
    width, height, left, right, top, bottom = 900, 560, 70, 230, 30, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    bits = [r["bits_per_weight"] for r in document["rows"]]
    x_low, x_high = math.floor(min(bits)), math.ceil(max(bits))
    y_low, y_high = _log_axis([r["kl"] for r in document["rows"]])
    x = lambda b: left + (b - x_low) / (x_high - x_low) * plot_w
    y = lambda v: top + plot_h - (math.log10(max(v, 10 ** y_low)) - y_low) / (y_high - y_low) * plot_h
    out = _svg_open(width, height, f"KL divergence from the reference against bits per weight "
                                   f"({MODEL}, every decoder weight quantized)")
    for e in range(y_low, y_high + 1):
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(10 ** e):.1f}" '
                   f'y2="{y(10 ** e):.1f}" stroke="#ddd"/><text x="{left - 8}" '
                   f'y="{y(10 ** e) + 4:.1f}" text-anchor="end">1e{e}</text>')
    for b in range(x_low, x_high + 1):
        out.append(f'<line x1="{x(b):.1f}" x2="{x(b):.1f}" y1="{top}" y2="{top + plot_h}" '
                   f'stroke="#eee"/><text x="{x(b):.1f}" y="{top + plot_h + 18}" '
                   f'text-anchor="middle">{b}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">bits per '
               f'weight (codes + f16 scale + zero point per group)</text>')
    out.append(f'<text x="16" y="{top + plot_h / 2}" text-anchor="middle" transform="rotate(-90 '
               f'16 {top + plot_h / 2})">mean KL divergence (nats per token)</text>')
    path_d = " ".join(f"{'M' if i == 0 else 'L'}{x(r['bits_per_weight']):.1f},{y(r['kl']):.1f}"
                      for i, r in enumerate(front))
    out.append(f'<path d="{path_d}" fill="none" stroke="#555" stroke-width="1.5" '
               f'stroke-dasharray="5,3"/>')
    for r in rows:
        cx, cy, color = x(r["bits_per_weight"]), y(r["kl"]), COLORS[kind(r["dtype"])]
        out.append(_marker(GROUP_SHAPES.get(r["group"], "rect"), cx, cy, color,
                           f'{label(r)}: KL {r["kl"]:.4g}'))
    for i, r in enumerate(front):
        cx, cy = x(r["bits_per_weight"]), y(r["kl"])
        mse = " mse" if r["search"] == "mse" else ""
        # Neighbours on the front alternate above and below their point, so labels overlap less.
        ty = cy - 8 if i % 2 == 0 else cy + 16
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="7" fill="none" stroke="black" '
                   f'stroke-width="1.5"/><text x="{cx + 8:.1f}" y="{ty:.1f}" '
                   f'font-size="11">{label(r)}{mse}</text>')
    legend = [(COLORS[k], KIND_NAMES[k], "circle") for k in "iuf"]
    legend += [("#888", f"group {g}", GROUP_SHAPES.get(g, "rect"))
               for g in sorted({r["group"] for r in rows})]
    legend += [("black", "best trade-off", "ring")]
    for i, (color, text, shape) in enumerate(legend):
        lx, ly = width - right + 20, top + 20 + 20 * i
        if shape == "ring":
            out.append(f'<circle cx="{lx}" cy="{ly}" r="6" fill="none" stroke="{color}" '
                       f'stroke-width="1.5"/>')
        else:
            out.append(_marker(shape, lx, ly, color))
        out.append(f'<text x="{lx + 12}" y="{ly + 4}">{text}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def speed_points(document, group):
    """(dtype, µs at M = 1 on 57344 × 8192 with group 128, KL at `group`) for the formats both
    the benchmark run and the quality table have."""
    if not os.path.exists(BENCH_RUN):
        return [], None
    with open(BENCH_RUN) as f:
        bench = json.load(f)
    kl = {r["dtype"]: r["kl"] for r in document["rows"]
          if r["search"] == "none" and r["group"] == group}
    points = []
    for r in bench["rows"]:
        if r["m"] == 1 and (r["n"], r["k"]) == (57344, 8192) and r["weight"] in kl:
            points.append((r["weight"], r["us"], kl[r["weight"]]))
    return sorted(points, key=lambda p: p[1]), bench.get("device")


def speed_chart(points, device, group, path):
    width, height, left, right, top, bottom = 720, 440, 70, 40, 30, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    times = [p[1] for p in points]
    x_low, x_high = 0, math.ceil(max(times) / 50) * 50
    y_low, y_high = _log_axis([p[2] for p in points])
    x = lambda t: left + (t - x_low) / (x_high - x_low) * plot_w
    y = lambda v: top + plot_h - (math.log10(v) - y_low) / (y_high - y_low) * plot_h
    out = _svg_open(width, height, f"KL divergence (group {group}) against anybit's decode time "
                                   f"(M = 1, 57344 x 8192, group 128)")
    for e in range(y_low, y_high + 1):
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(10 ** e):.1f}" '
                   f'y2="{y(10 ** e):.1f}" stroke="#ddd"/><text x="{left - 8}" '
                   f'y="{y(10 ** e) + 4:.1f}" text-anchor="end">1e{e}</text>')
    for t in range(x_low, x_high + 1, 50):
        out.append(f'<text x="{x(t):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{t}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">'
               f'µs per product on {device} (weights not in L2)</text>')
    for name, t, kl in points:
        out.append(f'<circle cx="{x(t):.1f}" cy="{y(kl):.1f}" r="4" fill="{COLORS[name[0]]}"/>'
                   f'<text x="{x(t) + 7:.1f}" y="{y(kl) - 5:.1f}" font-size="11">{name}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def _fmt(value, digits):
    return f"{value:.{digits}f}"


def _kl(value):
    return f"{value:.2e}" if value < 1e-3 else f"{value:.4f}"


def table(document):
    reference_ppl = document["reference_scored_perplexity"]
    lines = ["| format | group | search | bits/weight | weight error | perplexity | Δ perplexity "
             "| KL divergence | top-1 agreement |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(document["rows"], key=sort_key):
        note = " †" if q4_1_aligned(r) else ""
        lines.append(
            f"| {r['dtype']}{note} | {r['group']} | {r['search']} | "
            f"{_fmt(r['bits_per_weight'], 3)} | {_fmt(r['weight_error'], 4)} | "
            f"{_fmt(r['perplexity'], 3)} | {r['perplexity'] - reference_ppl:+.3f} | "
            f"{_kl(r['kl'])} | {100 * r['top1']:.1f} % |")
    return lines


# KL divergences within this fraction of each other count as the same: the search can move a
# row's KL by a fraction of a percent without changing which format to pick.
SAME_KL = 0.01


def search_findings(document):
    """Each MSE row with its round-to-nearest row and a verdict: 'pays' (KL lower), 'hurts'
    (KL higher) or 'same' (within SAME_KL)."""
    plain = {(r["dtype"], r["group"]): r for r in document["rows"] if r["search"] == "none"}
    findings = []
    for r in document["rows"]:
        base = plain.get((r["dtype"], r["group"]))
        if r["search"] != "mse" or base is None:
            continue
        if r["kl"] < base["kl"] * (1 - SAME_KL):
            verdict = "pays"
        elif r["kl"] > base["kl"] * (1 + SAME_KL):
            verdict = "hurts"
        else:
            verdict = "same"
        findings.append((r, base, verdict))
    return sorted(findings, key=lambda finding: sort_key(finding[0]))


def _short_groups(document):
    """What the groups that do not divide K mean on this model: a short last group per row."""
    columns = {int(k): int(n) for k, n in document.get("weight_columns", {}).items()}
    if not columns:  # results written before the document listed them: the model's hidden size
        columns = {int(document["config"]["hidden"]): 0}
    notes = []
    for group in sorted(set(document["settings"]["groups"]) | set(document["settings"]["mse_groups"])):
        short = sorted(k for k in columns if k % group)
        if not short:
            continue
        parts = ", ".join(f"K = {k} = {k // group}·{group} + {k % group}" for k in short)
        whole = sorted(k for k in columns if not k % group)
        notes.append(
            f" A group of {group} does not divide every K of this model: the weights with {parts} "
            f"(Q, K, V, output, gate and up) have {k_groups(short[0], group)} groups per row, the "
            f"last of them short ({short[0] % group} elements), as GPTQ's `g_idx = k // {group}` "
            "makes them; `anybit quantize` gives the short group a scale and zero point of its "
            f"own, and *bits/weight* counts ⌈K / {group}⌉ = {k_groups(short[0], group)} of them "
            "per row" + (f" (the weights with K = {', '.join(map(str, whole))} have whole groups)"
                         if whole else "") + ".")
    return "".join(notes)


def k_groups(k, group):
    return -(-k // group)


def _planned(settings):
    return (len(settings["formats"]) * len(settings["groups"])
            + len(settings["mse_formats"]) * len(settings["mse_groups"]))


def write(document, markdown_path):
    docs = os.path.dirname(os.path.abspath(markdown_path))
    kl_svg = os.path.join(docs, "quality-kl.svg")
    speed_svg = os.path.join(docs, "quality-speed.svg")
    kl_chart(document, kl_svg)
    settings = document["settings"]
    ref = document["reference"]
    rows = document["rows"]
    minutes = document["seconds"] / 60
    front = pareto(rows)
    findings = search_findings(document)
    groups = ", ".join(str(g) for g in settings["groups"])
    mse_groups = ", ".join(str(g) for g in settings["mse_groups"])
    if settings["mse_formats"] == settings["formats"] and settings["mse_groups"] == settings["groups"]:
        mse_scope = "every format and group as well"
    else:
        mse_scope = f"{', '.join(settings['mse_formats'])} at group {mse_groups}"
    lines = [
        "# Quality of every weight format on a real model",
        "",
        f"Generated by `scripts/quality` on {document['date']} at commit {document['commit']} "
        f"(results: [quality.json](quality.json)); the run took {minutes:.1f} minutes "
        f"({document.get('cpu_seconds', 0) / 60:.0f} minutes of CPU time) on this project's "
        f"2-core machine (CPU, numpy).",
        "",
    ]
    if document.get("partial"):
        lines += [f"**This run was stopped after {len(rows)} of its "
                  f"{_planned(settings)} configurations**; the missing rows are measured by "
                  f"running `scripts/quality` again (it continues where it stopped).", ""]
    lines += [
        "Everything here is reproduced by one command, `scripts/quality`: it installs the model "
        "(scripts/fetch-quality-model, once), builds `anybit`, measures every row and rewrites this "
        "page, [quality-kl.svg](quality-kl.svg), [quality-speed.svg](quality-speed.svg) and "
        "quality.json (`--report-only` rewrites the page from the JSON alone).",
        "",
        "## What was measured",
        "",
        f"- **Model**: {MODEL} (GGUF name \"{document['model']}\"), the GGUF file "
        f"{document['model_file']}: a Llama model of {document['config']['layers']} layers, hidden "
        f"size {document['config']['hidden']}, {document['config']['heads']} query and "
        f"{document['config']['kv_heads']} key/value heads, tied embeddings. It runs in numpy "
        f"(float32, CPU; scripts/qualitylib/model.py).",
        "- **Reference**: the GGUF weights dequantized to float32. They are themselves 4-bit "
        "(Q4_1: blocks of 32 along K, each with a scale and a minimum; the embedding is Q8_0). "
        "A 4-bit format with group 32 has its groups on those blocks, each of which holds at "
        "most 16 distinct values already, so its error is the mismatch of two 4-bit grids, not "
        "the rounding noise of an unquantized weight: it can be smaller than rounding noise "
        "(where the grids agree) or larger. Not even u4 reproduces the blocks: its grid spans "
        "[min(w, 0), max(w, 0)] with an integer zero point, Q4_1's spans the block's [min, max] "
        "with any offset. Those rows are marked †.",
        f"- **Quantized**: every 2-D weight of the decoder layers (Q, K, V, output, gate, up, "
        f"down: {document['quantized_weights']:,} weights), through `anybit quantize --dtype D "
        f"--group G --search S` and `anybit dequantize`; the embedding and the norms stay as in "
        f"the reference." + (
            " In this run the quantized files were read back by the numpy reader of the format "
            "(`--dequantizer numpy`, scripts/qualitylib/checkpoint.py), as `anybit dequantize` "
            "was not yet in the binary when it started; `scripts/quality-test` checks that both "
            "give the same weights bit for bit." if document.get("dequantizer") == "numpy"
            else ""),
        f"- **Formats**: every integer of 2–8 bits, signed (iN, symmetric) and unsigned with a "
        f"zero point (uN), and every small float of 4–8 bits `anybit dtypes` lists, each with "
        f"groups of {groups} and f16 scales, scales by round to nearest (`--search none`). The MSE "
        f"scale search (`--search mse`) is measured for {mse_scope}." + _short_groups(document),
        f"- **Text**: [data/quality/text.txt](../data/quality/text.txt) (William Morris, *News "
        f"from Nowhere*, chapters I–II, public domain), {document['text_tokens']} tokens. The "
        f"reference perplexity is {ref['perplexity']:.2f} over every whole window of "
        f"{settings['window']} tokens ({ref['windows']} windows, {ref['scored_tokens']} scored "
        f"tokens), plausible for a 135M model on 1890s prose. Each row is scored on the first "
        f"{settings['eval_tokens']} tokens ({settings['eval_tokens'] // settings['window']} "
        f"windows; the reference scores {document['reference_scored_perplexity']:.2f} there): "
        f"the time limit of the run allows that many tokens for {_planned(settings)} "
        f"configurations.",
        "- **How the reference was checked**: no second runtime of GGUF files installs here "
        "without compiling (llama-cpp-python is a source package on PyPI), so the batched float32 "
        "forward pass is checked against an independent slow path: token by token with a key and "
        "value cache in float64, RoPE applied to GGUF's permuted Q/K rows as adjacent pairs, where "
        "the fast path undoes llama.cpp's permutation and rotates halves (largest logit "
        "difference 7e-5 over 24 tokens and all layers; `scripts/quality-test` repeats it in CI). "
        "Without undoing the permutation the perplexity of the first window is 312 instead of 46. "
        "The tokenizer (a byte-level BPE written for this, from the GGUF's vocabulary and merges) "
        "gives the same 5 171 tokens as the `tokenizers` package built from the same vocabulary, "
        "merges and SmolLM2's pre-tokenizer (checked once; the package is not used). On a modern "
        "English paragraph of 115 tokens the model's perplexity is 24.",
        "- **Columns**: *bits/weight* counts the codes, one f16 scale per group and, for uN, one "
        "zero point per group as a code of the weight type (as the kernels read it; the "
        "checkpoint file stores zero points as bytes, `file_bits_per_weight` in the JSON), with "
        "⌈K / group⌉ groups in a row of K (a short last group counts whole). "
        "*Weight error* is ‖W − Ŵ‖ / ‖W‖ over all quantized weights. *KL divergence* is the mean "
        "over scored tokens of KL(reference ‖ quantized) of the next-token distribution, in nats. "
        "*Top-1 agreement* is how often both models' most likely next token is the same.",
        "",
        f"![KL divergence against bits per weight](quality-kl.svg)",
        "",
        "The best trade-off (no other row has both fewer bits and a lower KL divergence): "
        + ", ".join(f"{label(r)}{' mse' if r['search'] == 'mse' else ''} "
                    f"({r['bits_per_weight']:.2f} bits, KL {_kl(r['kl'])})" for r in front) + ".",
        "",
        "## Which format to choose",
        "",
    ]
    if os.path.exists(CHOICE_NOTES):
        with open(CHOICE_NOTES) as f:
            lines += [f.read().strip(), ""]
    lines += ["## Where the MSE search pays", ""]
    if findings:
        lines.append(
            "The search picks, per group, the scale of least squared weight error, so the weight "
            "error never rises; the model's output need not follow. *Pays*: KL divergence lower "
            f"by more than {100 * SAME_KL:.0f} %; *hurts*: higher by more than that; *same*: "
            "within it.")
        lines.append("")
        lines.append("| format | group | weight error none → mse | KL none → mse | search |")
        lines.append("|---|---:|---|---|---|")
        for r, base, verdict in findings:
            shown = {"pays": "pays", "hurts": "**hurts**", "same": "same"}[verdict]
            lines.append(f"| {r['dtype']} | {r['group']} | {base['weight_error']:.4f} → "
                         f"{r['weight_error']:.4f} | {_kl(base['kl'])} → {_kl(r['kl'])} | "
                         f"{shown} |")
        lines.append("")
        for verdict, text in (("pays", "It pays for"), ("hurts", "It hurts"),
                              ("same", "It changes the KL divergence by less than "
                                       f"{100 * SAME_KL:.0f} % for")):
            rows = [label(r) for r, _, v in findings if v == verdict]
            lines.append(f"{text} {len(rows)} of {len(findings)} rows"
                         + (": " + ", ".join(rows) + "." if rows else "."))
            lines.append("")
    # The benchmark's layers are in groups of 128: compare at 128 where the table has it.
    speed_group = 128 if any(r["group"] == 128 for r in document["rows"]) else 64
    points, device = speed_points(document, speed_group)
    if points:
        speed_chart(points, device, speed_group, speed_svg)
        lines += [
            "## Speed against quality",
            "",
            "Decode time of anybit's kernel at M = 1 on a 57344 × 8192 layer (group 128, from "
            f"[docs/bench-runs/{BENCH_NAME}](bench-runs/{BENCH_NAME}), "
            "[BENCHMARKS.md](BENCHMARKS.md)) against the KL divergence of the same format at group "
            f"{speed_group} here, for the formats both have:",
            "",
            "![KL divergence against decode time](quality-speed.svg)",
            "",
            f"| format | µs (M = 1) | KL divergence (g{speed_group}) |",
            "|---|---:|---:|",
        ]
        lines += [f"| {n} | {t:.1f} | {_kl(kl)} |" for n, t, kl in points]
        lines.append("")
    lines += ["## All results", "",
              f"Reference perplexity on the scored tokens: "
              f"{document['reference_scored_perplexity']:.3f}; † marks 4-bit rows with group 32 "
              f"(on the reference's own Q4_1 blocks).", ""]
    lines += table(document)
    with open(markdown_path, "w") as f:
        f.write("\n".join(lines) + "\n")
