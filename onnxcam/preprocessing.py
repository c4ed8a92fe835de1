"""What a plain classifier file (no onnxcam metadata) takes, and the options that say what it
cannot tell.

The file tells its input's name, rank, batch (fixed or dynamic) and, when fixed, its size; a
guess of its layout (NHWC when the last axis has 3 entries and the second does not). Mean, std,
pixel scale, channel order, a dynamic input size and class names come from the caller, as
:class:`Preprocessing` (on the command line: ``add_preprocessing_arguments``). Light to import:
the command line builds its parser from it.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from onnxcam.errors import OnnxcamError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocessing:
    """How images become a plain file's input: ``mean`` and ``std`` in ``channels`` order, on
    pixels scaled to [0, ``scale``]; ``layout`` None: guessed from the input's shape;
    ``input_size`` (H, W) for a file whose input size is dynamic."""

    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    scale: int = 1
    channels: str = "RGB"
    layout: Optional[str] = None
    input_size: Optional[tuple[int, int]] = None
    labels: Optional[list[str]] = None
    resize: str = "stretch"
    output: Optional[str] = None  # the file output holding the class scores; default: the first


@dataclass(frozen=True)
class PlainInput:
    """A plain file's image input."""

    name: str
    layout: str  # "NCHW" or "NHWC"
    batch: Optional[int]  # None: dynamic
    size: tuple[int, int]


def describe_input(shape: Sequence, name: str, path: Path, layout: Optional[str] = None,
                   input_size: Optional[Sequence[int]] = None) -> PlainInput:
    """The image input of shape ``shape`` (ints, or names/None for dynamic axes)."""
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if len(dims) != 4:
        raise OnnxcamError(f"{path}: input {name!r} has rank {len(dims)}; expected an image batch "
                           "[N, 3, H, W] or [N, H, W, 3]")
    if layout is None:
        layout = "NHWC" if dims[3] == 3 and dims[1] != 3 else "NCHW"
    layout = layout.upper()
    if layout not in ("NCHW", "NHWC"):
        raise OnnxcamError(f"--layout: expected nchw or nhwc, got {layout.lower()!r}")
    channels, h, w = (dims[1], dims[2], dims[3]) if layout == "NCHW" else (dims[3], dims[1], dims[2])
    if channels not in (None, 3):
        raise OnnxcamError(f"{path}: input {name!r} has {channels} channels in {layout} layout; "
                           "expected 3 (see --layout)")
    if input_size is not None:
        size = (int(input_size[0]), int(input_size[1]))
        if (h is not None and h != size[0]) or (w is not None and w != size[1]):
            raise OnnxcamError(f"--input-size: {path} takes {h}x{w} images, not {size[0]}x{size[1]}")
    elif h is None or w is None:
        raise OnnxcamError(f"{path}: the input size of {name!r} is not fixed; pass --input-size H W")
    else:
        size = (h, w)
    return PlainInput(name, layout, dims[0], size)


def add_preprocessing_arguments(parser: argparse.ArgumentParser, size_and_labels: bool = False) -> None:
    """The command-line options for what a plain .onnx file cannot tell about its input
    (``onnxcam export`` and ``onnxcam explain``); ``size_and_labels`` adds ``--input-size`` and
    ``--labels`` (export has its own)."""
    group = parser.add_argument_group("plain .onnx files")
    group.add_argument("--mean", nargs=3, type=float, metavar=("M1", "M2", "M3"),
                       help="per-channel mean, in --channels order, on pixels in [0, --scale] "
                            "(default: ImageNet's 0.485 0.456 0.406)")
    group.add_argument("--std", nargs=3, type=float, metavar=("S1", "S2", "S3"),
                       help="per-channel std, likewise (default: ImageNet's 0.229 0.224 0.225)")
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
    return {"mean": args.mean, "std": args.std, "scale": args.scale, "channels": args.channels,
            "layout": args.layout, "output": args.output_name}


def preprocessing_from(args: argparse.Namespace) -> Optional[Preprocessing]:
    """``onnxcam explain``'s plain-file options as a Preprocessing; None when none was given."""
    given = {k: v for k, v in preprocessing_options(args).items() if v is not None}
    if args.input_size is not None:
        given["input_size"] = tuple(args.input_size)
    if args.labels is not None:
        given["labels"] = read_labels(args.labels)
    return Preprocessing(**given) if given else None


def read_labels(path: str) -> list[str]:
    """Class names from a text file, one per line (blank lines skipped)."""
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise OnnxcamError(f"--labels {path}: cannot read ({exc.strerror})") from exc
