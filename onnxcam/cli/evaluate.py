"""``onnxcam evaluate``: score several methods' maps on images with :mod:`onnxcam.metrics`;
prints a table (methods x metrics) and writes ``metrics.csv``, ``metrics.json`` and
``curves.png``."""
from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from onnxcam.cli.options import (
    add_box_arguments,
    add_pass_arguments,
    add_session_arguments,
    add_target_arguments,
    box_rule_from,
    require_at_least_one,
    session_arguments,
)
from onnxcam.errors import OnnxcamError

DEFAULT_METRICS = "confidence,removal,deletion,insertion,road"  # and localization with --boxes
CURVES = ("deletion", "insertion")


def add_parser(commands, methods: str) -> None:
    """Register ``evaluate``; ``methods`` lists the method names for its help."""
    from onnxcam.metrics import METRICS
    from onnxcam.metrics.localization import TOLERANCE

    parser = commands.add_parser(
        "evaluate", usage="%(prog)s [options] MODEL [IMAGES...]", help="score methods' maps with faithfulness and localization metrics",
        description="Explain images with each method and score the maps: prints a table "
                    "(methods x metrics) and writes OUT/metrics.csv (one row per image, method and "
                    "target), OUT/metrics.json (the means, overall and per class) and OUT/curves.png. "
                    "With --calibrate-boxes DIR: fit each method's box rule to the boxes in DIR and "
                    "store it in MODEL, for explain --boxes, the service and Ray.")
    parser.add_argument("model", metavar="MODEL", help="explain-graph .onnx file, or a NAME under models/")
    parser.add_argument("images", metavar="IMAGES", nargs="*",
                        help="image files, folders (searched recursively) or glob patterns (default with "
                             "--boxes DIR: the images of DIR)")
    parser.add_argument("--method", metavar="METHODS", default="gradcam",
                        help=f"methods, comma-separated (default gradcam): {methods}")
    parser.add_argument("-o", "--output-dir", metavar="DIR", default="onnxcam_eval",
                        help="folder for metrics.csv, metrics.json, curves.png (default ./onnxcam_eval)")
    add_target_arguments(parser, "score")
    scoring = parser.add_argument_group("metrics")
    scoring.add_argument("--metrics", metavar="LIST", help=f"comma-separated: {', '.join(METRICS)} (default: all; "
                                           "localization only with --boxes)")
    scoring.add_argument("--boxes", metavar="JSON|DIR",
                         help="a JSON of image file name -> list of [x0, y0, x1, y1] pixel boxes, or -> "
                              "{class: boxes} (those classes are then the image's targets); or a folder "
                              "of NAME.json beside NAME.png (the manual: Evaluation and boxes, Boxes folders)")
    scoring.add_argument("--calibrate-boxes", metavar="DIR",
                         help="fit each --method's box rule to the boxes in DIR (NAME.json beside "
                              "NAME.png), store it in MODEL's metadata and print the fit; no metrics")
    scoring.add_argument("--fraction", metavar="F", type=float, default=0.25,
                         help="removal: the share of pixels removed (default 0.25)")
    scoring.add_argument("--fill", default="mean", choices=("mean", "black", "blur"),
                         help="removal and deletion: what removed pixels become (default: the "
                              "normalization's mean, 0 after normalization)")
    scoring.add_argument("--steps", metavar="N", type=int, default=20, help="deletion and insertion steps (default 20)")
    scoring.add_argument("--percentiles", metavar="LIST", default="10,30,50,70,90",
                         help="ROAD: percentiles of pixels removed (default 10,30,50,70,90)")
    scoring.add_argument("--tolerance", metavar="PX", type=float, default=TOLERANCE,
                         help=f"pointing game: pixels a hit may miss a box by (default {TOLERANCE})")
    add_box_arguments(scoring)
    add_pass_arguments(parser)
    add_session_arguments(parser, spinning=True)
    parser.set_defaults(run=run)


def _percentiles(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise OnnxcamError(f"percentiles: expected comma-separated numbers, got {text!r}") from None


def _format(value: float, label: str) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.1f}" if label.endswith("%") else f"{value:.3f}"


def table(means: Mapping[str, Mapping[str, float]], columns, counts: Mapping[str, str]) -> str:
    """A markdown table: one row per method, one column per value (arrow: which way is
    better), the best of each column in bold."""
    head = ["method", "maps"] + [f"{v.label} {'↑' if v.better == 'higher' else '↓'}" for v in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = {}
    for v in columns:
        scores = [_format(m[v.name], v.label) for m in means.values()]
        numbers = [float(s) for s in scores if s != "—"]
        if len(numbers) > 1:
            best[v.name] = _format((max if v.better == "higher" else min)(numbers), v.label)
    for method, m in means.items():
        cells = [_format(m[v.name], v.label) for v in columns]
        cells = [f"**{c}**" if best.get(v.name) == c else c for c, v in zip(cells, columns)]
        lines.append("| " + " | ".join([method, counts[method]] + cells) + " |")
    return "\n".join(lines)


def _json_number(value: float) -> Optional[float]:
    return None if math.isnan(value) else round(float(value), 6)


def run(args: argparse.Namespace) -> int:
    from onnxcam.api.explainer import Explainer
    from onnxcam.images.decode import load_image
    from onnxcam.images.sources import expand_inputs
    from onnxcam.methods.registry import parse_methods
    from onnxcam.metrics import MetricResult, parse_metrics
    from onnxcam.progress import Progress
    from onnxcam.render.curves import plot_curves
    from onnxcam.render.overlay import save_png
    from onnxcam.runtime.targets import target_matrix

    if args.calibrate_boxes is not None:
        from onnxcam.cli.calibrate import calibrate_command

        return calibrate_command(args)
    box_rule = box_rule_from(args)
    metrics = parse_metrics(args.metrics or DEFAULT_METRICS + (",localization" if args.boxes else ""),
                            fraction=args.fraction, fill=args.fill, steps=args.steps,
                            percentiles=_percentiles(args.percentiles), tolerance=args.tolerance,
                            rule=box_rule)
    if any(metric.needs_boxes for metric in metrics) and not args.boxes:
        raise OnnxcamError("metrics: localization needs --boxes")
    require_at_least_one(args, "forward_batch_size")
    methods = parse_methods(args.method, samples=args.samples, noise=args.noise)
    explainer = Explainer(args.model, **session_arguments(args))
    methods = [explainer.method(method) for method in methods]
    boxes, folder = _given_boxes(args, explainer)
    if not args.images and not folder:
        raise OnnxcamError("evaluate: give IMAGES, or --boxes DIR to score the images of DIR")
    target_matrix(args.target, args.top_k, 1, explainer.num_classes)  # fail before any image
    paths, errors = expand_inputs(args.images) if args.images else (list(folder), [])
    given = {str(p): folder.get(p, boxes.get(p.name, boxes.get(str(p)))) for p in paths}
    unused = sorted(set(boxes) - {p.name for p in paths} - {str(p) for p in paths})
    parts: dict[str, dict[str, list[MetricResult]]] = {m.name: {x.name: [] for x in metrics} for m in methods}
    rows, ok = [], not errors
    with Progress(len(paths)) as progress:
        for line in errors:
            progress.message(f"onnxcam: {line}")
        if unused:
            progress.message(f"onnxcam: warning: {args.boxes} names images not given: {', '.join(unused)}")
        for path in paths:
            try:
                rows += _evaluate_image(explainer, methods, metrics, path, load_image(path, explainer.max_pixels),
                                        given[str(path)], args, parts)
            except OnnxcamError as error:
                progress.message(f"onnxcam: {error}")
                ok = False
            progress.update()
    if not rows:
        return 1
    out = Path(args.output_dir)
    columns = [v for metric in metrics for v in metric.values]
    merged = {method: {name: MetricResult.concatenate(results) for name, results in by_metric.items()}
              for method, by_metric in parts.items()}
    means = {method: {k: v for r in results.values() for k, v in r.mean.items()}
             for method, results in merged.items()}
    counts = {method: {k: v for r in results.values() for k, v in r.counts.items()}
              for method, results in merged.items()}
    zero = {method: int(next(iter(results.values())).zero_maps.sum()) for method, results in merged.items()}
    total = {method: len(next(iter(results.values())).zero_maps) for method, results in merged.items()}
    curves = {name: {method: merged[method][name].mean_curve(name) for method in merged}
              for name in CURVES if name in merged[methods[0].name]}
    per_pair = [v for metric in metrics for v in metric.values if v.name not in metric.maxima]
    _write_csv(out / "metrics.csv", rows, per_pair)
    summary = {
        "model": str(args.model), "images": len({row["image"] for row in rows}),
        "metrics": [metric.name for metric in metrics],
        "options": {"fraction": args.fraction, "fill": args.fill, "steps": args.steps,
                    "percentiles": _percentiles(args.percentiles), "tolerance": args.tolerance,
                    "box_rule": None if box_rule is None else str(box_rule)},
        "methods": {method: {"maps": total[method], "zero_maps": zero[method],
                             "means": {k: _json_number(v) for k, v in means[method].items()},
                             "counts": counts[method],
                             "curves": {name: [_json_number(y) for y in curves[name][method]]
                                        for name in curves},
                             "classes": _class_means(merged[method], [r for r in rows if r["method"] == method])}
                    for method in merged}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    if curves:
        areas = {name: {method: means[method][f"{name}_auc"] for method in merged} for name in curves}
        save_png(out / "curves.png", plot_curves(curves, areas))
    shown = [v for v in columns if v.summary]
    labels = {m: f"{total[m] - zero[m]}/{total[m]}" for m in merged}
    print(table(means, shown, labels), flush=True)
    return 0 if ok else 1


def _given_boxes(args: argparse.Namespace, explainer) -> tuple[dict, dict]:
    """``--boxes``: (image name -> boxes, from a JSON file; image path -> AnnotatedImage, from a
    folder); both empty without it."""
    from onnxcam.metrics.box_files import load_box_map, read_box_folder

    if not args.boxes:
        return {}, {}
    if Path(args.boxes).is_dir():
        items = read_box_folder(args.boxes, explainer.labels, explainer.num_classes)
        return {}, {item.path: item for item in items}
    return load_box_map(args.boxes, explainer.labels, explainer.num_classes), {}


def _class_means(results: Mapping, rows: Sequence[dict]) -> dict:
    """Per explained class (its label, or index): the means of every value over its maps."""
    classes = np.array([row["label"] or str(row["class"]) for row in rows])
    out = {}
    for name in dict.fromkeys(classes.tolist()):
        chosen = classes == name
        out[name] = {k: _json_number(v) for r in results.values() for k, v in r.subset(chosen).mean.items()}
    return out


def _evaluate_image(explainer, methods, metrics, path: Path, image: np.ndarray, boxes,
                    args: argparse.Namespace, parts: dict) -> list[dict]:
    """Explain one image with every method and score every metric; adds the scores to
    ``parts`` (method -> metric -> results) and returns the image's CSV rows."""
    from onnxcam.metrics import Scene
    from onnxcam.metrics.box_calibration import image_targets
    from onnxcam.metrics.box_files import AnnotatedImage

    if isinstance(boxes, AnnotatedImage):
        boxes = {c: [list(b) for b in found] for c, found in
                 image_targets(explainer, boxes, image, args.forward_batch_size).items()}

    targets = list(boxes) if isinstance(boxes, Mapping) else args.target
    explained = explainer.explain_methods([image], methods, targets=targets, top_k=args.top_k,
                                          forward_batch_size=args.forward_batch_size, progress=True)
    scene = Scene.build(explainer, [image], explained[0].classes,
                             forward_batch_size=args.forward_batch_size, progress=True, names=[str(path)])
    box_rows = [boxes] if boxes is not None else [None]
    scored = {}
    for method, result in zip(methods, explained):
        maps = scene.maps(result.heatmaps, result.zero_maps, result.box_rule)
        scored[method.name] = [metric.evaluate(scene, maps, box_rows) for metric in metrics]
    rows = []
    for method, result in zip(methods, explained):  # only once every method scored (all or none)
        for metric, part in zip(metrics, scored[method.name]):
            parts[method.name][metric.name].append(part)
        for k, cls in enumerate(result.classes[0]):
            row = {"image": str(path), "method": method.name, "target": k, "class": int(cls),
                   "label": result.label(0, k) or "", "prob": round(float(scene.probs[0, k]), 6),
                   "zero_map": int(result.zero_maps[0, k])}
            for part in scored[method.name]:
                row.update({name: values[0, k] for name, values in part.values.items()})
            rows.append(row)
    return rows


def _write_csv(path: Path, rows: Sequence[dict], columns) -> None:
    names = ["image", "method", "target", "class", "label", "prob", "zero_map"]
    names += [v.name for v in columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, names)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else
                                 round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
