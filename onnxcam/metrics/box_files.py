"""Annotated boxes as users give them, read and checked before any image is explained.

Two forms (pixel edges ``[x0, y0, x1, y1]`` of the original image, x1 and y1 exclusive):

- a JSON file mapping image file names to a list of boxes (for every target) or to ``{class:
  boxes}`` (``onnxcam evaluate --boxes FILE``);
- a folder with one JSON per image (``--boxes DIR``, ``--calibrate-boxes DIR``): ``NAME.json``
  beside ``NAME.png`` (or .jpg, ...), or naming its image with ``"image"``, holding ``{"boxes":
  [{"class": C, "box": [x0, y0, x1, y1]}, ...]}``, where C is a class index, a label, or a list
  of them (any of these names the object: the target is whichever scores highest on the image).
  Several boxes of one class are several instances.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.images.header_size import image_size
from onnxcam.images.sources import IMAGE_EXTENSIONS
from onnxcam.metrics.localization import as_box
from onnxcam.render.boxes import Box


def _read_json(path: Path, where: str):
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise OnnxcamError(f"{where}: cannot read ({error.strerror or type(error).__name__})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OnnxcamError(f"{where}: not valid JSON ({error})") from None


class ClassNames:
    """Class indices from what a boxes file writes: an index or a label (case-insensitive)."""

    def __init__(self, labels: Optional[list[str]], num_classes: int):
        self.names = {label.lower(): c for c, label in enumerate(labels or [])}
        self.num_classes = num_classes

    def index(self, key, where: str) -> int:
        if isinstance(key, str):
            text = key.strip()
            index = int(text) if text.lstrip("-").isdigit() else self.names.get(text.lower())
        else:
            index = key if isinstance(key, int) and not isinstance(key, bool) else None
        if index is None or not 0 <= index < self.num_classes:
            raise OnnxcamError(f"{where}: {key!r} is not a class of this model")
        return index


def box_list(value, where: str) -> list[list[int]]:
    """A JSON list of boxes, each checked by :func:`as_box`."""
    if not isinstance(value, list):
        raise OnnxcamError(f"{where}: expected a list of [x0, y0, x1, y1] boxes")
    return [list(as_box(b, where)) for b in value]


def load_box_map(path: str, labels: Optional[list[str]], num_classes: int) -> dict[str, object]:
    """A JSON file of image file name -> list of boxes, or -> {class index or label: list of
    boxes}; checked here (a box leaving its image is found when the image is read)."""
    where = f"--boxes {path}"
    data = _read_json(Path(path), where)
    if not isinstance(data, dict):
        raise OnnxcamError(f"{where}: expected an object of image file name -> boxes")
    classes = ClassNames(labels, num_classes)
    return {name: ({classes.index(key, f"{where}: {name}"): box_list(v, f"{where}: {name} {key}")
                    for key, v in value.items()}
                   if isinstance(value, dict) else box_list(value, f"{where}: {name}"))
            for name, value in data.items()}


@dataclass
class AnnotatedImage:
    """An image of a boxes folder and its objects: the classes that may name each, and its box."""

    path: Path
    objects: list[tuple[tuple[int, ...], Box]]

    def targets(self, logits: Optional[np.ndarray]) -> dict[int, list[Box]]:
        """Class -> boxes, each object named by its class of highest logit (``logits`` [C] of
        this image; None where every object names one class); objects named alike are
        instances of one target."""
        out: dict[int, list[Box]] = {}
        for classes, box in self.objects:
            best = classes[0] if len(classes) == 1 else max(classes, key=lambda c: logits[c])
            out.setdefault(int(best), []).append(box)
        return out


def _image_of(json_path: Path, data: dict, where: str) -> Path:
    named = data.get("image")
    if named is not None:
        if not isinstance(named, str):
            raise OnnxcamError(f"{where}: \"image\" must be a file name, got {named!r}")
        image = json_path.parent / named
        if not image.is_file():
            raise OnnxcamError(f"{where}: names image {named!r}, which is not in {json_path.parent}")
        return image
    for suffix in sorted(IMAGE_EXTENSIONS):
        for candidate in (json_path.with_suffix(suffix), json_path.with_suffix(suffix.upper())):
            if candidate.is_file():
                return candidate
    raise OnnxcamError(f"{where}: no image beside it ({json_path.stem}.png, .jpg, ...), and no \"image\" naming one")


def _size(image: Path) -> Optional[tuple[int, int]]:
    """(width, height) from the file's header; None where it names none."""
    with image.open("rb") as handle:
        return image_size(handle.read(1 << 16))


def read_box_folder(folder: str | Path, labels: Optional[list[str]], num_classes: int,
                    option: str = "--boxes") -> list[AnnotatedImage]:
    """Every ``*.json`` under ``folder`` (sorted) with its image; every box checked against the
    image's size (read from its header). OnnxcamError, naming the file, at the first problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OnnxcamError(f"{option} {folder}: no such folder")
    files = sorted(folder.rglob("*.json"))
    if not files:
        raise OnnxcamError(f"{option} {folder}: no boxes files in it (NAME.json beside NAME.png, see the docs)")
    classes = ClassNames(labels, num_classes)
    images = []
    for json_path in files:
        where = f"{option} {json_path}"
        data = _read_json(json_path, where)
        if not isinstance(data, dict) or not isinstance(data.get("boxes"), list) or not data["boxes"]:
            raise OnnxcamError(f"{where}: expected {{\"boxes\": [{{\"class\": ..., \"box\": [x0, y0, x1, y1]}}, ...]}}")
        image = _image_of(json_path, data, where)
        size = _size(image)
        objects = []
        for n, item in enumerate(data["boxes"]):
            if not isinstance(item, dict) or "class" not in item or "box" not in item:
                raise OnnxcamError(f"{where}: boxes[{n}]: expected {{\"class\": ..., \"box\": [x0, y0, x1, y1]}}")
            names = item["class"] if isinstance(item["class"], list) and item["class"] else [item["class"]]
            box = as_box(item["box"], f"{where}: boxes[{n}]")
            if size is not None and (box.x1 > size[0] or box.y1 > size[1]):
                raise OnnxcamError(f"{where}: boxes[{n}]: box {list(box)} lies outside the image "
                                   f"({size[0]} x {size[1]} pixels)")
            objects.append((tuple(classes.index(c, f"{where}: boxes[{n}]") for c in names), box))
        images.append(AnnotatedImage(image, objects))
    return images
