"""Grad-CAM of a model exported by name against Grad-CAM of the same model exported from its
own plain file, both over plain inference of that file.

For each model a child process builds it (the zoo recipe, random weights, seed 0) at its
recipe's input size and writes: the plain file, as a user saves it
(``torch.onnx.export(dynamo=False, opset_version=17)``); the **name** path's explain-graph
(``export(model, ...)``, as ``onnxcam export NAME --weights none`` does); the **file** path's
(``export_onnx_file(plain)``, as ``onnxcam export model.onnx``), each at its default target
layer; and for ``--layer NAME=LAYER`` also the name path at that module (``name@LAYER``: the
file path's layer, where the two defaults differ). Then, as ``onnxcam bench --families`` times
its contenders (``families._time``'s machinery): plain inference of the plain file and
``Explainer.explain`` with Grad-CAM on each explain-graph, each in its own fresh process, taking
turns (``side_by_side.interleave``), the median of ``--rounds`` rounds' medians.

Results go under ``--label`` in the JSON file, so that a run of another checkout (the code
before a change: ``PYTHONPATH`` at it) sits beside this one's; each model's entry keeps the
command, settings and date of its own run (``--models`` re-runs some).

    python benchmarks/paths.py --label after --layer timm/ghostnet_100=blocks.9
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.contenders import GRADCAM, PLAIN, Job  # noqa: E402
from benchmarks.families import TIME_TARGETS, combine_rounds  # noqa: E402
from benchmarks.side_by_side import child_env, command_line, interleave, last_line, machine_info  # noqa: E402
from onnxcam.errors import OnnxcamError  # noqa: E402

MODELS = ["timm/ghostnet_100", "timm/mobilevit_xxs", "timm/resnet50"]
DEFAULTS = {"batches": [1, 8], "threads": 2, "repeats": 200, "warmup": 3, "budget": 5.0, "rounds": 2}


def export_paths(name: str, folder: Path, batch: int, layers: list[str]) -> dict:
    """The plain file, the name path's and the file path's explain-graphs of zoo model ``name``
    (and the name path at each of ``layers``), and an input batch; what each export took."""
    import numpy as np
    import torch

    from onnxcam_export import export, models
    from onnxcam_export.onnx_file import export_onnx_file

    recipe = models.recipe(name)
    torch.manual_seed(0)
    model = recipe.build("none").eval()
    size = tuple(recipe.input_size)
    files = {"plain": str(folder / "plain.onnx"), "input": str(folder / "input.npy")}
    np.save(files["input"], np.random.default_rng(0).standard_normal((batch, 3, *size), np.float32))
    chosen, seconds = {}, {}
    with warnings.catch_warnings(), redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, *size),), files["plain"], dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
        layouts = {layer: recipe.layout for layer in recipe.layers or []} if recipe.layout else None
        jobs = [("name", recipe.layers, layouts)] + [(f"name@{layer}", [layer], None) for layer in layers]
        for label, target, given in jobs:
            files[label] = str(folder / f"{label.replace('@', '_at_')}.onnx")
            start = time.perf_counter()
            info = export(model, files[label], target, input_size=size, mean=recipe.mean, std=recipe.std,
                          source=recipe.source, layouts=given)
            seconds[label], chosen[label] = time.perf_counter() - start, info.layers
        files["file"] = str(folder / "file.onnx")
        start = time.perf_counter()
        info = export_onnx_file(files["plain"], files["file"], input_size=size, mean=recipe.mean, std=recipe.std)
        seconds["file"], chosen["file"] = time.perf_counter() - start, info.layers
    return {"files": files, "size": list(size), "layers": chosen, "export_s": seconds}


def _run_export(name: str, folder: Path, batch: int, layers: list[str]) -> dict:
    """``export_paths`` in a fresh interpreter (its memory is returned when it exits)."""
    result = folder / "export.json"
    command = [sys.executable, "-m", "benchmarks.paths", "--export", name, str(folder), str(batch), str(result),
               *layers]
    done = subprocess.run(command, env=child_env(False), capture_output=True, text=True)
    if done.returncode != 0 or not result.is_file():
        raise OnnxcamError(f"{name}: export failed: {last_line(done.stderr, done.returncode)}")
    return json.loads(result.read_text())


def _time(config: dict, name: str, files: dict[str, str], folder: Path) -> dict[str, dict[str, dict]]:
    """results[contender][batch]: plain inference of the plain file, Grad-CAM of each explain-graph."""
    contenders = {PLAIN: (PLAIN, files)}
    contenders.update({label: (GRADCAM, {"explain": path, "input": files["input"]})
                       for label, path in files.items() if label.startswith(("name", "file"))})
    results: dict[str, dict[str, dict]] = {label: {} for label in contenders}
    for batch in config["batches"]:
        runs: dict[str, list[dict]] = {label: [] for label in contenders}
        for _ in range(config["rounds"]):
            jobs = {label: Job(contender=contender, batch=batch, model=name, layer="", files=job_files, spinning=False,
                               **{key: config[key] for key in ("threads", "repeats", "warmup", "budget")})
                    for label, (contender, job_files) in contenders.items()}
            for label, result in interleave(jobs, folder).items():
                runs[label].append(result)
        for label, rounds in runs.items():
            result = results[label][str(batch)] = combine_rounds(rounds)
            shown = f"{result['median_ms']:.2f} ms" if result["available"] else result["reason"]
            print(f"  {name:<22} {label:<26} batch {batch:<3} {shown}", file=sys.stderr, flush=True)
    return results


def _ratio(result: dict, plain: dict) -> float:
    """The median of each round's ratio of ``result`` to plain: the contenders of one round took
    turns, so a round's ratio holds where the machine's speed drifted between rounds."""
    return statistics.median(a / b for a, b in zip(result["rounds_ms"], plain["rounds_ms"]))


def table(report: dict) -> list[str]:
    """Markdown: per model and batch, plain ms and each contender's Grad-CAM ms (× plain, the
    median of the rounds' ratios) under each label."""
    lines = ["| model | input | batch | label | plain ms | name path | file path | name path at the file's layer |",
             "|---|---|---|---|---|---|---|---|"]
    for label, run in report["runs"].items():
        for name, entry in run["models"].items():
            if "results" not in entry:
                lines.append(f"| {name} | | | {label} | {entry.get('error', '')} | | | |")
                continue
            results = entry["results"]
            for batch, plain in results[PLAIN].items():
                def cell(key: str) -> str:
                    found = [k for k in results if k == key or (key == "name@" and k.startswith("name@"))]
                    if not found or not results[found[0]][batch]["available"] or not plain["available"]:
                        return "—"
                    ms = results[found[0]][batch]["median_ms"]
                    ratio = _ratio(results[found[0]][batch], plain)
                    ok = "✓" if ratio <= TIME_TARGETS.get(int(batch), TIME_TARGETS[8]) else "✗"
                    at = f" ({found[0][5:]})" if found[0].startswith("name@") else ""
                    return f"{ms:.1f} ({ratio:.2f} {ok}){at}"
                plain_ms = f"{plain['median_ms']:.1f}" if plain["available"] else plain["reason"]
                lines.append(f"| {name} | {entry['size'][0]} | {batch} | {label} | {plain_ms} | {cell('name')} | "
                             f"{cell('file')} | {cell('name@')} |")
    return lines


def main(argv: list[str]) -> int:
    if argv[:1] == ["--export"]:  # the child of _run_export
        name, folder, batch, result, *layers = argv[1:]
        Path(result).write_text(json.dumps(export_paths(name, Path(folder), int(batch), layers)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated zoo names (default: " + ", ".join(MODELS) + ")")
    parser.add_argument("--label", default="after", help="the results' key in the JSON file (default: after)")
    parser.add_argument("--layer", action="append", default=[], metavar="NAME=LAYER",
                        help="also time the name path of NAME at module LAYER")
    for key in ("threads", "repeats", "warmup", "rounds"):
        parser.add_argument(f"--{key}", type=int, default=DEFAULTS[key])
    parser.add_argument("--budget", type=float, default=DEFAULTS["budget"])
    parser.add_argument("--batches", type=int, nargs="+", default=DEFAULTS["batches"])
    parser.add_argument("--json", default="benchmarks/results/paths.json")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",")] if args.models else MODELS
    extra: dict[str, list[str]] = {}
    for spec in args.layer:
        model, _, layer = spec.partition("=")
        extra.setdefault(model, []).append(layer)
    config = {key: getattr(args, key) for key in ("batches", "threads", "repeats", "warmup", "budget", "rounds")}
    path = Path(args.json)
    report = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    run = report["runs"].setdefault(args.label, {"models": {}})
    run.update(command=command_line(), config=config, machine=machine_info(),
               date=time.strftime("%Y-%m-%d"))
    for name in names:
        print(f"benchmarks/paths.py: {name}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="onnxcam-paths-") as folder:
            try:
                exported = _run_export(name, Path(folder), max(args.batches), extra.get(name, []))
                files = exported.pop("files")
                run["models"][name] = {**exported, "results": _time(config, name, files, Path(folder)),
                                       "config": config, "command": run["command"], "date": run["date"]}
            except OnnxcamError as error:
                run["models"][name] = {"error": str(error)}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(table(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
