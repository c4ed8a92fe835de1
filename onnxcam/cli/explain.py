"""``onnxcam explain``: heatmap overlays and one JSON line per image, locally or on Ray."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from onnxcam.cli.options import (
    add_box_arguments,
    add_pass_arguments,
    add_preprocessing_arguments,
    add_session_arguments,
    add_target_arguments,
    box_rule_from,
    preprocessing_from,
    provider_list,
    require_at_least_one,
    session_arguments,
)
from onnxcam.errors import OnnxcamError

MAX_ALL_CLASSES = 20


def add_parser(commands, methods: str) -> None:
    """Register ``explain``; ``methods`` lists the method names for its help."""
    explain = commands.add_parser("explain", usage="%(prog)s [options] MODEL IMAGES...", help="write heatmap overlays for images",
                                  description="Explain images with an explain-graph; prints one "
                                              "JSON line per image and writes PNG overlays and "
                                              "one grid figure per image.")
    explain.add_argument("model", metavar="MODEL", help="explain-graph .onnx file, or a NAME exported to "
                                                       "models/NAME.onnx; or a plain classifier .onnx file "
                                                       "(gradient-free methods: rise, occlusion)")
    explain.add_argument("images", metavar="IMAGES", nargs="+",
                         help="image files, folders (searched recursively) or glob patterns")
    explain.add_argument("--method", metavar="METHODS", default="gradcam",
                         help=f"method, or several comma-separated: {methods}")
    which = add_target_arguments(explain, "explain")
    which.add_argument("--all-classes", action="store_true",
                       help=f"explain every class (models with at most {MAX_ALL_CLASSES} classes)")
    output = explain.add_argument_group("output")
    output.add_argument("-o", "--output-dir", metavar="DIR", default="onnxcam_out",
                        help="folder for the overlays (default ./onnxcam_out)")
    output.add_argument("--alpha", metavar="F", type=float, default=0.5, help="heatmap opacity (default 0.5)")
    output.add_argument("--boxes", action="store_true",
                        help="draw each map's weakly-supervised boxes (always listed in the JSON)")
    add_box_arguments(output)
    output.add_argument("--box-mode", default="largest", choices=("largest", "all"),
                        help="boxes: the largest connected segment, or all of them (default largest)")
    explain.add_argument("--batch-size", metavar="N", type=int, default=8, help="images per run (default 8)")
    add_pass_arguments(explain)
    add_session_arguments(explain, spinning=True)
    add_preprocessing_arguments(explain, size_and_labels=True)
    ray = explain.add_argument_group("ray")
    ray.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                     help="explain on Ray (pip install 'onnxcam[ray]'): the cluster at ADDRESS, "
                          "or a local Ray without one; also writes OUT/explain.parquet")
    ray.add_argument("--actors", metavar="N", type=int, help="with --ray: actors, each with one session "
                                                "(default one per two cores of the cluster)")
    explain.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Explain every image; exit 0, or 1 when some image could not be explained."""
    from onnxcam.api.plain_files import open_explainer
    from onnxcam.images.sources import expand_inputs, output_stems
    from onnxcam.methods.registry import parse_methods
    from onnxcam.progress import Progress
    from onnxcam.render.files import write_explained
    from onnxcam.runtime.targets import target_matrix

    methods = parse_methods(args.method, samples=args.samples, noise=args.noise)
    box_rule = box_rule_from(args)
    if not 0.0 <= args.alpha <= 1.0:
        raise OnnxcamError(f"--alpha: must be between 0 and 1, got {args.alpha}")
    if args.actors is not None and args.ray is None:
        raise OnnxcamError("--actors: only with --ray")
    if args.ray is not None and (box_rule is not None or args.box_mode != "largest"):
        raise OnnxcamError("--ray: the parquet rows hold each map's largest box by the model's own rule; "
                           "drop --box-rule, --box-threshold and --box-mode")
    require_at_least_one(args, "batch_size", "forward_batch_size")
    explainer = open_explainer(args.model, preprocessing_from(args), **session_arguments(args))
    methods = [explainer.method(method) for method in methods]
    if args.all_classes:
        if explainer.num_classes > MAX_ALL_CLASSES:
            raise OnnxcamError(f"--all-classes: the model has {explainer.num_classes} classes; "
                               f"at most {MAX_ALL_CLASSES} fit one figure (use --top-k)")
        args.target = list(range(explainer.num_classes))
    target_matrix(args.target, args.top_k, 1, explainer.num_classes)  # fail before any image
    paths, errors = expand_inputs(args.images)
    if args.ray is not None:
        from onnxcam.distributed.job import run_command

        return run_command(args, methods, paths, errors, provider_list(args.providers))
    names = output_stems(paths)
    as_image = [method.image_output for method in methods]
    ok = not errors
    with Progress(len(paths)) as progress:
        for line in errors:
            progress.message(f"onnxcam: {line}")
        for part in explainer.explain_iter(
                paths, methods, targets=args.target, top_k=args.top_k, batch_size=args.batch_size,
                samples=args.samples, noise=args.noise, forward_batch_size=args.forward_batch_size,
                progress=True):
            for _, _, error in part.failures:
                progress.message(f"onnxcam: {error}")
            ok = ok and not part.failures
            for i, (position, source) in enumerate(zip(part.positions, part.sources)):
                print(json.dumps(write_explained(part.results, i, source, names[position],
                                                 Path(args.output_dir), args.alpha, as_image, args.boxes,
                                                 box_rule, args.box_mode)), flush=True)
            progress.update(len(part.positions) + len(part.failures))
    return 0 if ok else 1
