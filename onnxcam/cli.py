"""The ``onnxcam`` command line: ``explain``, ``info``, ``serve`` and (with PyTorch) ``export``."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

from onnxcam import __version__
from onnxcam.boxes import THRESHOLD
from onnxcam.errors import OnnxcamError, first_line
from onnxcam.export import EXPORT_HINT
from onnxcam.imageops import DEFAULT_MAX_PIXELS
from onnxcam.serve import command as serve_command

_OPTIONS = {"targets": "--target", "top_k": "--top-k", "providers": "--providers",
            "threads": "--threads", "method": "--method", "samples": "--samples",
            "noise": "--noise", "batch_size": "--batch-size",
            "forward_batch_size": "--forward-batch-size", "metrics": "--metrics",
            "fraction": "--fraction", "steps": "--steps", "percentiles": "--percentiles",
            "tolerance": "--tolerance", "box threshold": "--box-threshold",
            "ray": "--ray", "actors": "--actors"}
MAX_ALL_CLASSES = 20


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors become one-line OnnxcamErrors."""

    def error(self, message: str):
        raise OnnxcamError(f"{message} (see `{self.prog} --help`)")


def _providers(text: Optional[str]) -> Optional[list[str]]:
    return [p for p in text.split(",") if p.strip()] if text else None


def _explain(args: argparse.Namespace) -> int:
    from onnxcam.explainer import target_matrix
    from onnxcam.inputs import expand_inputs, output_stems
    from onnxcam.plain import open_explainer
    from onnxcam.preprocessing import preprocessing_from
    from onnxcam.progress import Progress
    from onnxcam.boxes import check_box_options
    from onnxcam.registry import parse_methods
    from onnxcam.writer import write_explained

    methods = parse_methods(args.method, samples=args.samples, noise=args.noise)
    check_box_options(args.box_threshold, args.box_mode, 0.0)
    if not 0.0 <= args.alpha <= 1.0:
        raise OnnxcamError(f"--alpha: must be between 0 and 1, got {args.alpha}")
    if args.actors is not None and args.ray is None:
        raise OnnxcamError("--actors: only with --ray")
    for option in ("batch_size", "forward_batch_size"):
        if getattr(args, option) < 1:
            raise OnnxcamError(f"{_OPTIONS[option]}: must be at least 1, got {getattr(args, option)}")
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
        from onnxcam.distributed import run_command

        return run_command(args, methods, paths, errors, _providers(args.providers))
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
                                                 args.box_threshold, args.box_mode)), flush=True)
            progress.update(len(part.positions) + len(part.failures))
    return 0 if ok else 1


def _info(args: argparse.Namespace) -> int:
    from onnxcam.session import open_session

    session, info = open_session(args.model, _providers(args.providers))
    print(json.dumps({"model": str(args.model), "providers": session.get_providers(), **asdict(info)},
                     indent=2))
    return 0


def _export_problem(error: ImportError) -> str:
    """A one-line explanation of why the exporter could not be imported."""
    missing = (error.name or "").partition(".")[0]
    frames = traceback.extract_tb(error.__traceback__)
    torch_broken = bool(frames) and f"{os.sep}torch{os.sep}" in frames[-1].filename
    if missing == "torch" or importlib.util.find_spec("torch") is None:
        return f"export needs PyTorch: {EXPORT_HINT}"
    if torch_broken:
        return f"export needs a working PyTorch ({first_line(error)}): {EXPORT_HINT}"
    if missing == "onnxcam_export":
        return f"export needs the onnxcam_export package: {EXPORT_HINT}"
    if missing and missing != "onnxcam":
        return f"export needs {missing}: {EXPORT_HINT}"
    return f"cannot load the exporter: {first_line(error)}"


def _export_module():
    """onnxcam_export.cli, imported only for the export subcommand (it imports PyTorch)."""
    try:
        import onnxcam_export.exporter  # noqa: F401  (loads PyTorch: fail here, before parsing)
        from onnxcam_export import cli as export_cli
    except ImportError as error:
        raise OnnxcamError(_export_problem(error)) from None
    return export_cli


def _export(args: argparse.Namespace) -> int:
    try:
        return _export_module().run_export(args)
    except ImportError as error:
        raise OnnxcamError(_export_problem(error)) from None


def _bench(arguments: Sequence[str]) -> int:
    """Run the checkout's ``benchmarks/bench.py`` with ``arguments``."""
    import runpy

    here = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
    script = next((p for p in (Path("benchmarks/bench.py"), here) if p.is_file()), None)
    if script is None:
        raise OnnxcamError("bench: benchmarks/bench.py not found; run it from a source checkout of onnxcam")
    sys.argv = [str(script), *arguments]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


def pixel_count(text: str) -> int:
    """A ``--max-pixels`` value: an integer, in plain or exponent notation (4e7); 0 = no limit."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value == int(value)):
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels, got {text!r}")
    return int(value)


def add_session_arguments(parser: argparse.ArgumentParser) -> None:
    """How onnxruntime runs the model, and the largest image accepted (explain, evaluate)."""
    parser.add_argument("--providers", help="comma-separated onnxruntime providers, e.g. cuda,cpu")
    parser.add_argument("--threads", type=int, help="intra-op threads for onnxruntime")
    parser.add_argument("--no-spinning", action="store_true",
                        help="waiting onnxruntime threads sleep instead of busy-waiting")
    parser.add_argument("--cache", action="store_true",
                        help="keep onnxruntime's optimized graph beside MODEL: later runs start faster")
    parser.add_argument("--max-pixels", type=pixel_count, default=DEFAULT_MAX_PIXELS,
                        help="largest image accepted, width x height, read from the file's header "
                             f"before decoding (default {DEFAULT_MAX_PIXELS}; 0 = no limit)")


def session_arguments(args: argparse.Namespace) -> dict:
    """The options of ``add_session_arguments`` as Explainer keyword arguments."""
    return {"providers": _providers(args.providers), "threads": args.threads,
            "spinning": not args.no_spinning, "cache": args.cache, "max_pixels": args.max_pixels or None}


def build_parser(with_export: bool = False) -> argparse.ArgumentParser:
    """The argument parser; ``with_export`` adds the export options (imports PyTorch)."""
    from onnxcam.preprocessing import add_preprocessing_arguments
    from onnxcam.registry import METHODS

    parser = _Parser(prog="onnxcam", description="Grad-CAM heatmaps from ONNX explain-graphs.")
    parser.add_argument("--version", action="version", version=f"onnxcam {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    explain = commands.add_parser("explain", help="write heatmap overlays for images",
                                  description="Explain images with an explain-graph; prints one "
                                              "JSON line per image and writes PNG overlays and "
                                              "one grid figure per image.")
    explain.add_argument("model", metavar="MODEL", help="explain-graph .onnx file, or a NAME exported to "
                                                       "models/NAME.onnx; or a plain classifier .onnx file "
                                                       "(gradient-free methods: rise, occlusion)")
    explain.add_argument("images", metavar="IMAGES", nargs="+",
                         help="image files, folders (searched recursively) or glob patterns")
    explain.add_argument("--method", default="gradcam",
                         help=f"method, or several comma-separated: {', '.join(METHODS)}")
    which = explain.add_mutually_exclusive_group()
    which.add_argument("--top-k", type=int, default=1, help="explain the K top classes (default 1)")
    which.add_argument("--target", type=int, action="append", metavar="CLASS",
                       help="class index to explain (repeatable; -r = r-th ranked class)")
    which.add_argument("--all-classes", action="store_true",
                       help=f"explain every class (models with at most {MAX_ALL_CLASSES} classes)")
    explain.add_argument("--samples", type=int,
                         help="smoothgrad's noisy copies / integrated-gradients' path points (default 50); "
                              "rise's masks (default 5000)")
    explain.add_argument("--noise", type=float,
                         help="smoothgrad's noise std as a fraction of the input's range (default 0.15)")
    explain.add_argument("-o", "--output-dir", default="onnxcam_out",
                         help="folder for the overlays (default ./onnxcam_out)")
    explain.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity (default 0.5)")
    explain.add_argument("--boxes", action="store_true",
                         help="draw each map's weakly-supervised boxes (always listed in the JSON)")
    explain.add_argument("--box-threshold", type=float, default=THRESHOLD,
                         help=f"boxes: the map at or above this fraction of its peak (default {THRESHOLD})")
    explain.add_argument("--box-mode", default="largest", choices=("largest", "all"),
                         help="boxes: the largest connected segment, or all of them (default largest)")
    explain.add_argument("--batch-size", type=int, default=8, help="images per run (default 8)")
    explain.add_argument("--forward-batch-size", type=int, default=32,
                         help="rows per extra forward pass of scorecam, ablationcam, smoothgrad, "
                              "integrated-gradients, rise and occlusion (default 32)")
    add_session_arguments(explain)
    add_preprocessing_arguments(explain, size_and_labels=True)
    explain.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                         help="explain on Ray (pip install 'onnxcam[ray]'): the cluster at ADDRESS, "
                              "or a local Ray without one; also writes OUT/explain.parquet")
    explain.add_argument("--actors", type=int, help="with --ray: actors, each with one session "
                                                    "(default one per two cores of the cluster)")
    explain.set_defaults(run=_explain)

    from onnxcam.evaluate import add_evaluate_parser
    add_evaluate_parser(commands)

    info = commands.add_parser("info", help="print an explain-graph's metadata as JSON")
    info.add_argument("model", metavar="MODEL", help="explain-graph .onnx file, or a NAME under models/")
    info.add_argument("--providers", help="comma-separated onnxruntime providers")
    info.set_defaults(run=_info)

    export = commands.add_parser("export", help=f"export a PyTorch model (needs {EXPORT_HINT})")
    if with_export:
        _export_module().add_export_arguments(export)
    export.set_defaults(run=_export)

    serve = commands.add_parser("serve", help="explain images over HTTP, with a page for people "
                                              f"(needs {serve_command.INSTALL_HINT})")
    serve_command.add_arguments(serve, pixel_count)
    serve.set_defaults(run=serve_command.run)

    # listed for --help only: main() hands every argument after `bench` to benchmarks/bench.py
    commands.add_parser("bench", help="time onnxcam against plain inference and the torch libraries "
                                      "(benchmarks/bench.py of a source checkout; `bench --help` for its options)")
    return parser


def _option_wording(message: str) -> str:
    """Name the command-line option where the API's message names its argument."""
    argument, colon, rest = message.partition(": ")
    option = _OPTIONS.get(argument)
    return f"{option}: {rest}" if colon and option else message


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 some images failed, 2 error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["bench"]:
            return _bench(argv[1:])
        args = build_parser(with_export=argv[:1] == ["export"]).parse_args(argv)
        return args.run(args)
    except OnnxcamError as error:
        print(f"onnxcam: error: {_option_wording(str(error))}", file=sys.stderr)
    except KeyboardInterrupt:
        print("onnxcam: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as error:  # never show command-line users a traceback
        print(f"onnxcam: error: {type(error).__name__}: {first_line(error)}", file=sys.stderr)
    return 2
