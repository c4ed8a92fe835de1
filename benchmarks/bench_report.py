"""``onnxcam bench``'s report: the ratios that matter against their targets (with the ceiling
onnxcam's least arithmetic allows), the float32 rates reached, and the markdown tables and
summary lines it prints."""
from __future__ import annotations

import statistics
from typing import Optional

from benchmarks.contenders import PLAIN
from benchmarks.side_by_side import MIN_REPEATS

BUSY = 0.1  # cores other processes keep busy on average above which a run is called shared

# (label, numerator contender, denominator contender, measure, target as (comparison, bound))
RATIOS = [
    ("onnxcam gradcam / plain", "onnxcam gradcam", PLAIN, "median_ms", ("<=", 1.10)),
    ("onnxcam gradcam++ / plain", "onnxcam gradcam++", PLAIN, "median_ms", None),
    ("onnxcam layercam / plain", "onnxcam layercam", PLAIN, "median_ms", None),
    ("onnxcam guided-gradcam / plain", "onnxcam guided-gradcam", PLAIN, "median_ms", ("<=", 2.5)),
    ("pytorch-grad-cam GradCAM / onnxcam gradcam", "pytorch-grad-cam GradCAM",
     "onnxcam gradcam", "median_ms", (">=", 8.0)),
    ("pytorch-grad-cam GradCAMPlusPlus / onnxcam gradcam++", "pytorch-grad-cam GradCAMPlusPlus",
     "onnxcam gradcam++", "median_ms", None),
    ("captum LayerGradCam / onnxcam gradcam", "captum LayerGradCam", "onnxcam gradcam",
     "median_ms", (">=", 2.0)),
    ("captum GuidedGradCam / onnxcam guided-gradcam", "captum GuidedGradCam",
     "onnxcam guided-gradcam", "median_ms", (">=", 3.0)),
    ("peak RSS onnxcam gradcam / plain", "onnxcam gradcam", PLAIN, "peak_rss_mb", ("<=", 1.3)),
]


# The least arithmetic each onnxcam contender must do, in forward passes: a map at the last
# layer needs the forward only; guided backpropagation also needs every convolution's input
# gradient, which costs what the convolution does.
FORWARD_PASSES = {"onnxcam gradcam": 1, "onnxcam gradcam++": 1, "onnxcam layercam": 1,
                  "onnxcam guided-gradcam": 2}


def ratios(results: dict[str, dict[str, dict]], batches: list[int],
           floor_ms_per_pass: Optional[float] = None) -> list[dict]:
    """Every ratio of RATIOS at every batch size; value None where a side is n/a. With
    ``floor_ms_per_pass`` (one image's forward pass at the fastest rate measured here),
    a peer-over-onnxcam ratio also gets its ceiling: the peer's time over the least time
    onnxcam's arithmetic could take."""
    rows = []
    for label, top, bottom, measure, target in RATIOS:
        for batch in map(str, batches):
            a, b = results[top][batch], results[bottom][batch]
            value = a[measure] / b[measure] if a["available"] and b["available"] else None
            ok = None if value is None or target is None else (
                value <= target[1] if target[0] == "<=" else value >= target[1])
            ceiling = None
            if value is not None and floor_ms_per_pass and measure == "median_ms" and bottom in FORWARD_PASSES:
                ceiling = a[measure] / (FORWARD_PASSES[bottom] * int(batch) * floor_ms_per_pass)
            rows.append({"ratio": label, "batch": int(batch), "value": value, "ceiling": ceiling,
                         "target": f"{target[0]} {target[1]}" if target else None, "ok": ok})
    return rows


def _cell(result: dict, measure: str, digits: int) -> str:
    return f"{result[measure]:.{digits}f}" if result["available"] else "n/a"


def results_table(report: dict) -> list[str]:
    """Markdown table: median ms, multiple of plain inference and peak RSS per batch size."""
    batches = [str(b) for b in report["config"]["batches"]]
    results = report["results"]
    header = (["contender"] + [f"ms, batch {b}" for b in batches] + [f"× plain, batch {b}" for b in batches]
              + [f"peak RSS MB, batch {b}" for b in batches])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in results.items():
        times = [_cell(row[b], "median_ms", 1) for b in batches]
        multiples = [f"{row[b]['median_ms'] / results[PLAIN][b]['median_ms']:.2f}"
                     if row[b]["available"] and results[PLAIN][b]["available"] else "n/a"
                     for b in batches]
        rss = [_cell(row[b], "peak_rss_mb", 0) for b in batches]
        lines.append("| " + " | ".join([name] + times + multiples + rss) + " |")
    return lines


def ratios_table(report: dict) -> list[str]:
    """Markdown table of the ratios that matter, each batch size against its target."""
    batches = report["config"]["batches"]
    lines = ["| ratio | " + " | ".join(f"batch {b}" for b in batches) + " | target |",
             "|" + "---|" * (len(batches) + 2)]
    by_label: dict[str, list[dict]] = {}
    for row in report["ratios"]:
        by_label.setdefault(row["ratio"], []).append(row)
    for label, rows in by_label.items():
        cells = ["n/a" if r["value"] is None else
                 f"{r['value']:.2f}" + ("" if r["ok"] is None else " ✓" if r["ok"] else " ✗")
                 + ("" if r.get("ceiling") is None else f" (ceiling {r['ceiling']:.1f})")
                 for r in rows]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {rows[0]['target'] or '—'} |")
    return lines


def _contention_line(results: dict[str, dict[str, dict]]) -> str:
    """How busy other processes kept the machine while the contenders ran."""
    measured = [(r["other_cores"], f"{name}, batch {batch}") for name, row in results.items()
                for batch, r in row.items() if r.get("other_cores") is not None]
    if not measured:
        return "- other processes' CPU use during the timings: unknown"
    worst = max(measured)
    mean = statistics.mean(cores for cores, _ in measured)
    verdict = ("shared: the timings include contention" if mean > BUSY else "otherwise idle")
    return (f"- other processes kept {mean:.2f} cores busy on average while the contenders ran "
            f"(most {worst[0]:.2f}, during {worst[1]}): the machine was {verdict}")


def arithmetic(forward_gflop: float, matmul_gflops: float, results: dict[str, dict[str, dict]]) -> dict:
    """The rates float32 work reached here (GFLOP/s): onnxruntime's matrix product, plain
    inference and each onnxcam contender's least arithmetic per batch size. The fastest of
    them sets each ratio's ceiling, so that no measured ratio can pass its ceiling."""
    passes = {PLAIN: 1, **FORWARD_PASSES}
    reached = {name: {batch: passes[name] * forward_gflop * int(batch) / (r["median_ms"] / 1e3)
                      for batch, r in results[name].items() if r["available"]}
               for name in passes}
    fastest = max([matmul_gflops, *(rate for rates in reached.values() for rate in rates.values())])
    return {"forward_gflop": forward_gflop, "matmul_gflops": matmul_gflops, "gflops": reached,
            "fastest_gflops": fastest, "ms_per_forward_pass": 1e3 * forward_gflop / fastest}


def _arithmetic_line(report: dict) -> str:
    """The forward pass's arithmetic, the rates reached, and how the ceilings follow."""
    numbers = report["arithmetic"]
    reached = ", ".join(f"{rate:.0f} at batch {b}" for b, rate in numbers["gflops"][PLAIN].items())
    passes = ", ".join(f"{name.split()[-1]} {n}" for name, n in FORWARD_PASSES.items())
    return (f"- arithmetic: the forward pass is {numbers['forward_gflop']:.2f} GFLOP per image; plain "
            f"inference ran at {reached} GFLOP/s, onnxruntime's float32 matrix product (2048², same "
            f"threads) at {numbers['matmul_gflops']:.0f}, the fastest float32 work in this run at "
            f"{numbers['fastest_gflops']:.0f}. A ratio's ceiling is the peer's time over onnxcam's least "
            f"arithmetic (forward passes: {passes}) at that fastest rate")


def summary(report: dict) -> list[str]:
    """Export, file size, import time, machine and method lines."""
    config, export, imports, machine = (report[k] for k in ("config", "export", "import", "machine"))
    seconds, size, ratio = export["seconds"], export["size_mb"], export["size_ratio"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    repeats = f"median of {config['repeats']} timed runs after {config['warmup']} warm-up run(s)"
    if config["repeats"] > MIN_REPEATS:
        repeats += f" (at least {MIN_REPEATS} where {config['repeats']} would take over {config['budget']:g} s)"
    return [
        f"- export of {config['model']} at {config['size']}×{config['size']} (checked against torch): "
        f"explain-graph {seconds['explain']:.1f} s, guided {seconds['guided']:.1f} s; "
        f"plain torch.onnx export {seconds['plain']:.1f} s",
        _arithmetic_line(report),
        f"- file size: plain {size['plain']:.1f} MB, explain-graph {size['explain']:.1f} MB "
        f"({ratio['explain']:.3f}×), guided {size['guided']:.1f} MB ({ratio['guided']:.3f}×)",
        "- session start (median of 3), optimized at load → from the `cache=True` graph: "
        + "; ".join(f"{name} {1e3 * t['fresh_s']:.0f} → {1e3 * t['cached_s']:.0f} ms"
                    for name, t in report["session_start"].items()),
        f"- `import onnxcam`: {1e3 * imports['onnxcam_s']:.0f} ms; with `onnxcam.api.explainer` "
        f"(onnxruntime, OpenCV) {1e3 * imports['explainer_s']:.0f} ms (median of {imports['runs']} "
        f"fresh interpreters); torch in sys.modules: {'yes' if imports['torch_after_import'] else 'no'}",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, {machine['os']}, Python "
        f"{machine['python']}; {versions}",
        _contention_line(report["results"]),
        f"- {config['threads']} intra-op threads everywhere; waiting threads "
        + (f"spin (library defaults, OMP_WAIT_POLICY {config['omp_wait_policy']})" if config["spinning"]
           else f"sleep (OMP_WAIT_POLICY={config['omp_wait_policy']}, onnxruntime allow_spinning=0)")
        + f"; each contender and batch size in a fresh process, {repeats}",
        f"- command: `{report['command']}`",
    ]
