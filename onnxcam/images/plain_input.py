"""What a plain classifier file (no onnxcam metadata) takes, and the options that say what it
cannot tell.

The file tells its input's name, rank, batch (fixed or dynamic) and, when fixed, its size; a
guess of its layout (NHWC when the last axis has 3 entries, or 1, and the second does not); 1 or
3 channels (a grayscale file's channel is the luma of the RGB image, ITU-R BT.601). Mean, std,
pixel scale, channel order, a dynamic input size and class names come from the caller, as
:class:`Preprocessing` (on the command line: :func:`onnxcam.cli.options.add_preprocessing_arguments`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from onnxcam.errors import OnnxcamError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LUMA = (0.299, 0.587, 0.114)  # a grayscale file's channel from R, G, B (ITU-R BT.601, as OpenCV)


def luma(x, axis: int = 1):
    """The grayscale channel (kept as an axis of 1) of RGB rows, numpy or torch: with equal mean
    and std on every channel, the luma of the normalized channels is the normalized luma."""
    r, g, b = (x[(slice(None),) * axis + (slice(c, c + 1),)] for c in range(3))
    return LUMA[0] * r + LUMA[1] * g + LUMA[2] * b


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
    channels: int = 3  # 1: a grayscale file


def describe_input(shape: Sequence, name: str, path: Path, layout: Optional[str] = None,
                   input_size: Optional[Sequence[int]] = None) -> PlainInput:
    """The image input of shape ``shape`` (ints, or names/None for dynamic axes)."""
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if len(dims) != 4:
        raise OnnxcamError(f"{path}: input {name!r} has rank {len(dims)}; expected an image batch "
                           "[N, 3, H, W] or [N, H, W, 3]")
    if layout is None:
        layout = "NHWC" if dims[3] in (1, 3) and dims[1] not in (1, 3) else "NCHW"
    layout = layout.upper()
    if layout not in ("NCHW", "NHWC"):
        raise OnnxcamError(f"--layout: expected nchw or nhwc, got {layout.lower()!r}")
    channels, h, w = (dims[1], dims[2], dims[3]) if layout == "NCHW" else (dims[3], dims[1], dims[2])
    if channels not in (None, 1, 3):
        other = dims[3] if layout == "NCHW" else dims[1]
        hint = " (see --layout)" if other in (1, 3) else ""
        raise OnnxcamError(f"{path}: input {name!r} has {channels} channels in {layout} layout; expected 3 "
                           f"(colour) or 1 (grayscale){hint}")
    if input_size is not None:
        size = (int(input_size[0]), int(input_size[1]))
        if (h is not None and h != size[0]) or (w is not None and w != size[1]):
            raise OnnxcamError(f"--input-size: {path} takes {h}x{w} images, not {size[0]}x{size[1]}")
    elif h is None or w is None:
        raise OnnxcamError(f"{path}: the input size of {name!r} is not fixed; pass --input-size H W")
    else:
        size = (h, w)
    return PlainInput(name, layout, dims[0], size, channels or 3)


def read_labels(path: str) -> list[str]:
    """Class names from a text file, one per line (blank lines skipped)."""
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise OnnxcamError(f"--labels {path}: cannot read ({exc.strerror})") from exc
