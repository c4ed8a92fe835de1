"""The options several commands share, spelled and parsed the same way under each: the session
(``--providers``, ``--threads``, ``--spinning/--no-spinning``, ``--cache``, ``--max-pixels``),
the classes (``--top-k``/``--target``) and the extra passes (``--samples``, ``--noise``,
``--forward-batch-size``). Also the parser whose usage errors are one line."""
from __future__ import annotations

import argparse
from typing import Optional

from onnxcam.errors import OnnxcamError, check_count
from onnxcam.images.decode import DEFAULT_MAX_PIXELS
from onnxcam.images.plain_input import Preprocessing, read_labels
from onnxcam.runtime.session import provider_list

# an API argument's name -> the option that sets it, so an API message names the option
OPTION_NAMES = {"targets": "--target", "top_k": "--top-k", "providers": "--providers",
                "threads": "--threads", "method": "--method", "samples": "--samples",
                "noise": "--noise", "batch_size": "--batch-size",
                "forward_batch_size": "--forward-batch-size", "metrics": "--metrics",
                "fraction": "--fraction", "steps": "--steps", "percentiles": "--percentiles",
                "tolerance": "--tolerance", "box rule": "--box-rule",
                "ray": "--ray", "actors": "--actors"}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors become one-line OnnxcamErrors."""

    def error(self, message: str):
        raise OnnxcamError(f"{message} (see `{self.prog} --help`)")


def option_wording(message: str) -> str:
    """Name the command-line option where the API's message names its argument."""
    argument, colon, rest = message.partition(": ")
    option = OPTION_NAMES.get(argument)
    return f"{option}: {rest}" if colon and option else message


def pixel_count(text: str) -> int:
    """A ``--max-pixels`` value: an integer, in plain or exponent notation (4e7); 0 = no limit."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value == int(value)):
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels, got {text!r}")
    return int(value)


def add_session_arguments(parser: argparse.ArgumentParser, spinning: bool = True, cache: bool = True) -> None:
    """How onnxruntime runs the model, and the largest image accepted. ``spinning``: this
    command's default for ``--spinning/--no-spinning``; ``cache`` adds ``--cache``."""
    group = parser.add_argument_group("session")
    group.add_argument("--providers", metavar="LIST", help="comma-separated onnxruntime providers, e.g. cuda,cpu")
    group.add_argument("--threads", metavar="N", type=int, help="intra-op threads for onnxruntime")
    group.add_argument("--spinning", action=argparse.BooleanOptionalAction, default=spinning,
                       help="waiting onnxruntime threads busy-wait (--no-spinning: they sleep; "
                            f"default {'on' if spinning else 'off'})")
    if cache:
        group.add_argument("--cache", action="store_true",
                           help="keep onnxruntime's optimized graph beside MODEL: later runs start faster")
    group.add_argument("--max-pixels", metavar="N", type=pixel_count, default=DEFAULT_MAX_PIXELS,
                       help="largest image accepted, width x height, read from the file's header "
                            f"before decoding (default {DEFAULT_MAX_PIXELS}; 0 = no limit)")


def session_arguments(args: argparse.Namespace) -> dict:
    """The options of ``add_session_arguments`` as Explainer keyword arguments."""
    return {"providers": provider_list(args.providers), "threads": args.threads,
            "spinning": args.spinning, "cache": getattr(args, "cache", False),
            "max_pixels": args.max_pixels or None}


def add_target_arguments(parser: argparse.ArgumentParser, verb: str) -> argparse._MutuallyExclusiveGroup:
    """``--top-k K`` or ``--target CLASS`` (repeatable); returns the group for more choices."""
    which = parser.add_argument_group("classes").add_mutually_exclusive_group()
    which.add_argument("--top-k", metavar="K", type=int, default=1, help=f"{verb} the K top classes (default 1)")
    which.add_argument("--target", type=int, action="append", metavar="CLASS",
                       help=f"class index to {verb} (repeatable; -r = r-th ranked class)")
    return which


def add_pass_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the methods that make extra forward passes."""
    group = parser.add_argument_group("extra passes")
    group.add_argument("--samples", metavar="N", type=int,
                       help="smoothgrad's noisy copies / integrated-gradients' path points (default 50); "
                            "rise's masks (default 5000)")
    group.add_argument("--noise", metavar="F", type=float,
                       help="smoothgrad's noise std as a fraction of the input's range (default 0.15)")
    group.add_argument("--forward-batch-size", metavar="N", type=int, default=32,
                       help="rows per extra forward pass of scorecam, ablationcam, smoothgrad, "
                            "integrated-gradients, rise, occlusion and the metrics (default 32)")


def require_at_least_one(args: argparse.Namespace, *options: str) -> None:
    """Each named count option at least 1, checked before any image (the message names the
    API argument; :func:`option_wording` turns it into the option)."""
    for option in options:
        check_count(option, getattr(args, option))


def add_preprocessing_arguments(parser: argparse.ArgumentParser, size_and_labels: bool = False) -> None:
    """The command-line options for what a plain .onnx file cannot tell about its input
    (``onnxcam export`` and ``onnxcam explain``); ``size_and_labels`` adds ``--input-size`` and
    ``--labels`` (export has its own)."""
    group = parser.add_argument_group("plain .onnx files")
    group.add_argument("--mean", nargs="+", type=float, metavar="M",
                       help="per-channel mean (3 values in --channels order, or 1 for all), on pixels in "
                            "[0, --scale] (default: ImageNet's 0.485 0.456 0.406; 0.449 for a grayscale file)")
    group.add_argument("--std", nargs="+", type=float, metavar="S",
                       help="per-channel std, likewise (default: ImageNet's 0.229 0.224 0.225; 0.226 for "
                            "a grayscale file)")
    group.add_argument("--scale", type=int, choices=(1, 255),
                       help="pixels scaled to [0, 1] (default) or [0, 255] before mean and std")
    group.add_argument("--channels", type=str.lower, choices=("rgb", "bgr"),
                       help="colour order the file takes (default rgb)")
    group.add_argument("--layout", type=str.lower, choices=("nchw", "nhwc"),
                       help="input layout (default: from the input's shape)")
    group.add_argument("--output-name", metavar="NAME",
                       help="the file output holding the class scores (default: its first output)")
    if size_and_labels:
        group.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"),
                           help="for a file whose input size is not fixed")
        group.add_argument("--labels", metavar="FILE", help="class names, one per line")


def preprocessing_options(args: argparse.Namespace) -> dict:
    """The plain-file options given on the command line, by Preprocessing field (None: not given)."""
    for option in ("mean", "std"):
        values = getattr(args, option)
        if values is not None and len(values) not in (1, 3):
            raise OnnxcamError(f"--{option}: expected 3 values (one per channel) or 1, got {len(values)}")
    three = {option: None if values is None else list(values) * (3 // len(values))
             for option, values in (("mean", args.mean), ("std", args.std))}
    return {**three, "scale": args.scale, "channels": args.channels, "layout": args.layout,
            "output": args.output_name}


def preprocessing_from(args: argparse.Namespace) -> Optional[Preprocessing]:
    """``onnxcam explain``'s plain-file options as a Preprocessing; None when none was given."""
    given = {k: v for k, v in preprocessing_options(args).items() if v is not None}
    if args.input_size is not None:
        given["input_size"] = tuple(args.input_size)
    if args.labels is not None:
        given["labels"] = read_labels(args.labels)
    return Preprocessing(**given) if given else None


def add_box_arguments(group) -> None:
    """``--box-rule`` and its shorthand ``--box-threshold``."""
    group.add_argument("--box-rule", metavar="RULE",
                       help="boxes: which pixels of a map make its box: peak:F (at or above F of the peak), "
                            "mass:F (the most relevant pixels holding F of its sum) or otsu (default: the "
                            "model's rule for the method, fitted by `onnxcam evaluate --calibrate-boxes`, "
                            "else the measured default)")
    group.add_argument("--box-threshold", metavar="F", type=float,
                       help="boxes: the same as --box-rule peak:F")


def box_rule_from(args: argparse.Namespace):
    """The BoxRule ``--box-rule``/``--box-threshold`` name, or None for each method's own."""
    from onnxcam.render.boxes import PeakFraction, parse_rule

    if args.box_rule is not None and args.box_threshold is not None:
        raise OnnxcamError("--box-threshold: give it or --box-rule, not both")
    if args.box_threshold is not None:
        if not 0.0 < args.box_threshold <= 1.0:
            raise OnnxcamError(f"--box-threshold: must be in (0, 1], got {args.box_threshold}")
        return PeakFraction(args.box_threshold)
    return None if args.box_rule is None else parse_rule(args.box_rule)
