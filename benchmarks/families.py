"""``onnxcam bench --families``: every model family of the zoo at its default input size,
onnxcam Grad-CAM end to end against plain onnxruntime inference of the same model.

For each model a child process exports, with random weights (seed 0), the explain-graph
(timed, as ``onnxcam export NAME --weights none`` does it) and the model alone through
``torch.onnx.export`` (the plain baseline), and saves one normalized input batch. Then, as
``onnxcam bench`` does and with its machinery, each contender at each batch size runs in a
fresh process: plain inference, and ``Explainer.explain(x, normalized=True)`` with Grad-CAM
(heatmaps at the input size from the normalized tensor). The table gives medians, the Grad-CAM
multiple of plain time and of plain peak RSS, and the export time, each against its target.

VGG and AlexNet carry a fully-connected head whose backward reads the head's weights again
(402 MB in VGG-16), so Grad-CAM cannot come near one forward pass at a small batch. For them the
head alone (pooling, flatten, classifier) is also timed: the least Grad-CAM could take is plain
inference plus one pass over the head, and their target is to sit within 10 % of that.

Results accumulate in the JSON file (``--models a,b`` re-runs a few); the table shows every
model the file holds.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from benchmarks.contenders import GRADCAM, PLAIN, Job
from benchmarks.side_by_side import child_env, command_line, interleave, last_line, machine_info
from onnxcam.errors import OnnxcamError

HEAD = "head"  # PLAIN's runner on the classifier head's own file
# One model of every torchvision family of the zoo (both MobileNet and EfficientNet
# generations, the edge models), then timm's ViT and Swin.
MODELS = [
    "resnet50", "resnext50_32x4d", "wide_resnet50_2", "regnet_y_400mf", "densenet121", "vgg16",
    "alexnet", "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3_small", "mnasnet0_5",
    "squeezenet1_1", "shufflenet_v2_x1_0", "efficientnet_b0", "efficientnet_v2_s",
    "convnext_tiny", "vit_b_16", "swin_t", "timm/vit_base_patch16_224",
    "timm/swin_tiny_patch4_window7_224",
]
TIME_TARGETS = {1: 1.25, 8: 1.15}  # Grad-CAM over plain, by batch size (others: the batch-8 bound)
LEAST_TARGET = 1.10  # Grad-CAM over the least arithmetic, head families
RSS_TARGET = 1.5
EXPORT_TARGET_S = 120.0
# 200 runs: a small model's median spans about a second rather than a tenth, so that a short noisy
# spell of the shared VM does not make it (the budget still stops large models after 8 s)
DEFAULTS = {"batches": [1, 8], "threads": 2, "repeats": 200, "warmup": 3, "budget": 8.0, "rounds": 3}


# ---------------------------------------------------------------- running

def _run_export(name: str, folder: Path, batch: int, spinning: bool) -> dict:
    """``exports.export_model`` in a fresh interpreter (its memory is returned when it exits)."""
    result = folder / "export.json"
    command = [sys.executable, "-m", "benchmarks.exports", name, str(folder), str(batch), str(result)]
    done = subprocess.run(command, env=child_env(spinning), capture_output=True, text=True)
    if done.returncode != 0 or not result.is_file():
        raise OnnxcamError(f"{name}: export failed: {last_line(done.stderr, done.returncode)}")
    return json.loads(result.read_text())


def combine_rounds(runs: list[dict]) -> dict:
    """One contender's rounds as one result: the median of the rounds' medians (and of their
    peak RSS), each round's median kept; unavailable when any round was."""
    failed = next((run for run in runs if not run["available"]), None)
    if failed:
        return failed
    medians = [run["median_ms"] for run in runs]
    return {"available": True, "median_ms": statistics.median(medians), "rounds_ms": medians,
            "min_ms": min(run["min_ms"] for run in runs), "repeats": sum(run["repeats"] for run in runs),
            "peak_rss_mb": statistics.median(run["peak_rss_mb"] for run in runs)}


def _time(config: dict, name: str, files: dict[str, str], folder: Path) -> dict[str, dict[str, dict]]:
    """results[contender][batch]: plain, Grad-CAM and (head families) the head. Batch-major;
    each round starts a fresh process per contender and the contenders take turns at short
    bursts of runs (``side_by_side.interleave``), so that a noisy spell on a shared machine falls on
    every contender."""
    contenders = {PLAIN: (PLAIN, files), GRADCAM: (GRADCAM, files)}
    if "head" in files:
        contenders[HEAD] = (PLAIN, {"plain": files["head"], "input": files["head_input"]})
    results: dict[str, dict[str, dict]] = {label: {} for label in contenders}
    for batch in config["batches"]:
        runs: dict[str, list[dict]] = {label: [] for label in contenders}
        for _ in range(config["rounds"]):
            jobs = {label: Job(contender=contender, batch=batch, model=name, layer="", files=contender_files,
                               **{key: config[key] for key in ("threads", "repeats", "warmup", "budget", "spinning")})
                    for label, (contender, contender_files) in contenders.items()}
            for label, result in interleave(jobs, folder).items():
                runs[label].append(result)
        for label, rounds in runs.items():
            result = results[label][str(batch)] = combine_rounds(rounds)
            shown = (f"{result['median_ms']:.2f} ms (rounds {', '.join(f'{m:.2f}' for m in result['rounds_ms'])}), "
                     f"peak RSS {result['peak_rss_mb']:.0f} MB" if result["available"] else result["reason"])
            print(f"  {name:<34} {label:<16} batch {batch:<3} {shown}", file=sys.stderr, flush=True)
    return results


def run_model(config: dict, name: str, workdir: Optional[str]) -> dict:
    """Export and time one model; its report entry (``error`` set when something failed)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="onnxcam-families-", dir=workdir) as folder:
        try:
            exported = _run_export(name, Path(folder), max(config["batches"]), config["spinning"])
        except OnnxcamError as error:
            return {"error": str(error)}
        results = _time(config, name, exported.pop("files"), Path(folder))
    failed = [f"{label} batch {b}: {r['reason']}" for label, row in results.items()
              for b, r in row.items() if not r["available"]]
    return {**exported, "results": results, "wall_s": time.perf_counter() - started,
            **({"error": "; ".join(failed)} if failed else {})}


# ---------------------------------------------------------------- report

def _time_target(batch: int) -> float:
    return TIME_TARGETS.get(batch, TIME_TARGETS[max(TIME_TARGETS)])


def rows(entry: dict, name: str) -> list[dict]:
    """One row per batch size: times, memory, their ratios and whether each meets its target."""
    out = []
    for batch, plain in entry["results"][PLAIN].items():
        cam = entry["results"][GRADCAM][batch]
        head = entry["results"].get(HEAD, {}).get(batch)
        row = {"model": name, "size": entry["size"][0], "batch": int(batch), "export_s": entry["export_s"]}
        if plain["available"] and cam["available"]:
            row.update(plain_ms=plain["median_ms"], gradcam_ms=cam["median_ms"],
                       time_ratio=cam["median_ms"] / plain["median_ms"],
                       plain_mb=plain["peak_rss_mb"], gradcam_mb=cam["peak_rss_mb"],
                       rss_ratio=cam["peak_rss_mb"] / plain["peak_rss_mb"])
            if head and head["available"]:
                row["least_ms"] = plain["median_ms"] + head["median_ms"]
                row["least_ratio"] = cam["median_ms"] / row["least_ms"]
                row["time_ok"] = row["least_ratio"] <= LEAST_TARGET
            else:
                row["time_ok"] = row["time_ratio"] <= _time_target(int(batch))
            row["rss_ok"] = row["rss_ratio"] <= RSS_TARGET
        out.append(row)
    return out


def _mark(ok: Optional[bool]) -> str:
    return "" if ok is None else " ✓" if ok else " ✗"


def table(report: dict) -> list[str]:
    """Markdown table of every model in the report, then its failures."""
    header = ["model", "input", "batch", "plain ms", "Grad-CAM ms", "× plain", "least ms (× least)",
              "plain MB", "Grad-CAM MB", "× RSS", "export s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    failures = []
    for name, entry in report["models"].items():
        if "results" not in entry:
            failures.append(f"- {name}: {entry['error']}")
            continue
        if entry.get("error"):
            failures.append(f"- {name}: {entry['error']}")
        for row in rows(entry, name):
            if "plain_ms" not in row:
                continue
            least = (f"{row['least_ms']:.1f} ({row['least_ratio']:.2f}{_mark(row['time_ok'])})"
                     if "least_ms" in row else "—")
            time_mark = "" if "least_ms" in row else _mark(row["time_ok"])
            lines.append("| " + " | ".join([
                name, str(row["size"]), str(row["batch"]), f"{row['plain_ms']:.1f}",
                f"{row['gradcam_ms']:.1f}", f"{row['time_ratio']:.2f}{time_mark}", least,
                f"{row['plain_mb']:.0f}", f"{row['gradcam_mb']:.0f}",
                f"{row['rss_ratio']:.2f}{_mark(row['rss_ok'])}",
                f"{row['export_s']:.0f}{_mark(row['export_s'] <= EXPORT_TARGET_S)}"]) + " |")
    return lines + ([""] + failures if failures else [])


def summary(report: dict) -> list[str]:
    """The targets, the slowest export, the machine and the command."""
    entries = {name: e for name, e in report["models"].items() if "export_s" in e}
    machine, config = report["machine"], report["config"]
    lines = [f"- targets: Grad-CAM ≤ {TIME_TARGETS[1]}× plain at batch 1, ≤ {TIME_TARGETS[8]}× at batch 8 "
             f"(VGG, AlexNet: ≤ {LEAST_TARGET}× the least, plain inference plus one pass over the "
             f"head); peak RSS ≤ {RSS_TARGET}× plain; export ≤ {EXPORT_TARGET_S:.0f} s"]
    if entries:
        slowest = max(entries, key=lambda n: entries[n]["export_s"])
        lines.append(f"- slowest export: {slowest}, {entries[slowest]['export_s']:.0f} s (explain-graph "
                     "with its check against torch, random weights)")
    lines += [f"- {config['threads']} intra-op threads, waiting threads "
              + ("spin" if config["spinning"] else "sleep") + f"; each contender and batch size in "
              f"{config['rounds']} fresh process(es), the contenders' processes taking turns at "
              f"bursts of about 0.25 s; the median of their medians of up to {config['repeats']} "
              f"runs after {config['warmup']} warm-up runs (at least 3 where they would take over "
              f"{config['budget']:g} s)",
              f"- machine: {machine['cpu']}, {machine['cores']} cores; "
              + ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v),
              f"- command: `{report['command']}`"]
    return lines


# ---------------------------------------------------------------- entry points

def parser() -> argparse.ArgumentParser:
    """``onnxcam bench --families``'s options."""
    parser = argparse.ArgumentParser(
        prog="onnxcam bench --families",
        description="Grad-CAM end to end against plain onnxruntime inference, for every model family "
                    "at its default input size.")
    parser.add_argument("--models", help="comma-separated subset (default: all of " + ", ".join(MODELS) + ")")
    parser.add_argument("--batches", type=int, nargs="+", metavar="N", default=DEFAULTS["batches"])
    parser.add_argument("--threads", type=int, default=DEFAULTS["threads"])
    parser.add_argument("--repeats", type=int, default=DEFAULTS["repeats"])
    parser.add_argument("--warmup", type=int, default=DEFAULTS["warmup"])
    parser.add_argument("--rounds", type=int, default=DEFAULTS["rounds"],
                        help="fresh processes per contender and batch, alternating contenders; "
                             "the median of their medians is reported")
    parser.add_argument("--budget", type=float, default=DEFAULTS["budget"],
                        help="seconds of timed runs per contender and batch before repeats are cut")
    parser.add_argument("--spinning", action="store_true", help="let waiting threads busy-wait")
    parser.add_argument("--json", default="benchmarks/results/families.json", metavar="PATH",
                        help="results file, updated model by model (default benchmarks/results/families.json)")
    parser.add_argument("--fresh", action="store_true", help="start a new results file")
    parser.add_argument("--workdir", metavar="DIR", help="folder for the exported files (default: temporary)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Export and time every model asked for, updating the JSON file after each; print the table.
    1 if a model failed."""
    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else MODELS
    if not names or min(args.batches) < 1 or min(args.threads, args.repeats, args.rounds) < 1:
        raise OnnxcamError("--models must name a model; --batches, --threads, --repeats and --rounds "
                           "must be at least 1")
    config = {key: getattr(args, key) for key in ("batches", "threads", "repeats", "warmup", "budget",
                                                  "spinning", "rounds")}
    path = Path(args.json)
    report = json.loads(path.read_text()) if path.is_file() and not args.fresh else {"models": {}}
    report.update(command=command_line(), config=config, machine=machine_info())
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for name in names:
        print(f"onnxcam bench --families: {name}", file=sys.stderr, flush=True)
        report["models"][name] = run_model(config, name, args.workdir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")  # after each model: a crash keeps the rest
    print(f"onnxcam bench --families: {len(names)} model(s) in {time.perf_counter() - started:.0f} s",
          file=sys.stderr)
    print("\n".join(table(report) + [""] + summary(report)))
    return 1 if any(report["models"][name].get("error") for name in names) else 0
