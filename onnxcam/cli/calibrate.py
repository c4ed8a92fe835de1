"""``onnxcam evaluate MODEL --calibrate-boxes DIR``: fit each method's box rule to a user's
annotated boxes and store it in the explain-graph's metadata (``ArtifactInfo.box_rules``), where
``explain --boxes``, the service and Ray find it. Prints the fit and writes OUT/calibration.json."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from onnxcam.cli.options import box_rule_from, require_at_least_one, session_arguments
from onnxcam.errors import OnnxcamError


def calibrate_command(args: argparse.Namespace) -> int:
    """Fit, print, store; nothing is written unless every method was fitted."""
    from onnxcam.api.explainer import Explainer
    from onnxcam.methods.registry import parse_methods
    from onnxcam.metrics.box_calibration import annotated_maps, calibrate
    from onnxcam.metrics.box_files import read_box_folder
    from onnxcam.render.boxes import rule_for
    from onnxcam.runtime.metadata import write_info
    from onnxcam.runtime.model_files import resolve_model

    for given, option in ((args.images, "IMAGES"), (args.boxes, "--boxes"), (args.metrics, "--metrics")):
        if given:
            raise OnnxcamError(f"--calibrate-boxes: fits box rules to the images of DIR; drop {option}")
    if box_rule_from(args) is not None:
        raise OnnxcamError("--calibrate-boxes: chooses the box rule itself; drop --box-rule/--box-threshold")
    require_at_least_one(args, "forward_batch_size")
    methods = parse_methods(args.method, samples=args.samples, noise=args.noise)
    explainer = Explainer(args.model, **session_arguments(args))
    methods = [explainer.method(method) for method in methods]
    items = read_box_folder(args.calibrate_boxes, explainer.labels, explainer.num_classes, "--calibrate-boxes")
    pairs = annotated_maps(explainer, items, methods, args.forward_batch_size)
    info = explainer.info
    fits = {}
    for method in methods:
        if not pairs[method.name]:
            raise OnnxcamError(f"--calibrate-boxes: every {method.name} map of {args.calibrate_boxes} is constant; "
                               "no rule to fit (is the target layer right?)")
        fits[method.name] = calibrate(pairs[method.name])
    before = {name: rule_for(name, info.box_rules) for name in fits}
    report = {"model": str(args.model), "folder": str(args.calibrate_boxes), "images": len(items),
              "methods": {name: {"maps": fit.pairs, "before": str(before[name]),
                                 "before_score": round(fit.scores.get(str(before[name]), float("nan")), 3),
                                 "rule": str(fit.rule), "score": round(fit.score(fit.rule), 3),
                                 "scores": {rule: round(score, 3) for rule, score in fit.scores.items()}}
                          for name, fit in fits.items()}}
    info.box_rules = {**info.box_rules, **{name: str(fit.rule) for name, fit in fits.items()}}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_info(resolve_model(args.model), info)
    (out / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
    print("| method | maps | rule before | box accuracy % | fitted rule | box accuracy % |")
    print("|---|---|---|---|---|---|")
    for name, entry in report["methods"].items():
        print(f"| {name} | {entry['maps']} | {entry['before']} | {entry['before_score']:.1f} | "
              f"{entry['rule']} | {entry['score']:.1f} |")
    return 0
