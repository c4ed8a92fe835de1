"""A localization set built offline from scikit-image's photos: images and their class boxes.

Four photos hold objects that ImageNet classifiers recognize (the cat of ``chelsea``, the
espresso of ``coffee``, the tripod of ``camera``, the motorcycle of ``stereo_motorcycle``); their
crops, jittered, make

- mosaics of 1x2, 2x2 (four different classes) and 3x3 tiles (classes repeat: several boxes of
  one class), each tile the ground-truth box of its class, and
- single objects pasted at random positions and scales on other photos' backgrounds (brick,
  grass, gravel, coins, moon, the Hubble deep field, a stained tissue), the pasted rectangle its box,

with fixed seeds, split half for calibration and half for test. The test split also holds the
448 x 224 composite of the whole cat photo (left) and the whole espresso photo (right).

    python benchmarks/localization_set.py [--out DIR]     # default benchmarks/.localization

Each image ``NAME.png`` has ``NAME.json`` beside it, in the format ``onnxcam evaluate --boxes
DIR`` and ``--calibrate-boxes DIR`` read: ``{"boxes": [{"class": [ImageNet indices naming the
object], "box": [x0, y0, x1, y1]}, ...], "kind": ...}``.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / ".localization"
SPLITS = ("calibration", "test")
TILE = 224  # pixels: a mosaic's tile side
CANVAS = 448  # pixels: the side of a pasted object's background
COUNTS = {"mosaic1x2": 40, "mosaic2x2": 80, "mosaic3x3": 30, "pasted": 80}  # cases per kind, both splits
SEED = 20261207


@dataclass(frozen=True)
class Photo:
    """An object in a scikit-image photo: the ImageNet classes that name it and its box there."""

    name: str  # the object, as the set calls it
    photo: str  # skimage.data function
    classes: tuple[int, ...]
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the photo


OBJECTS = (
    Photo("cat", "chelsea", (281, 282, 285), (0, 0, 390, 300)),  # tabby, tiger cat, Egyptian cat
    Photo("espresso", "coffee", (967, 968, 504), (60, 0, 480, 370)),  # espresso, cup, coffee mug
    Photo("tripod", "camera", (872,), (0, 40, 300, 512)),  # the cameraman at his tripod
    Photo("motorcycle", "stereo_motorcycle", (665, 670), (75, 80, 560, 370)),  # moped, motor scooter
)
BACKGROUNDS = ("brick", "grass", "gravel", "coins", "moon", "hubble_deep_field", "immunohistochemistry")


@functools.cache
def photo(name: str) -> np.ndarray:
    """A scikit-image photo as RGB uint8 (gray ones repeated to three channels); read once."""
    import skimage.data

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def object_crop(item: Photo, rng: np.random.Generator, jitter: float = 0.08) -> np.ndarray:
    """The object's box in its photo, each edge moved by up to ``jitter`` of the box's size."""
    image = photo(item.photo)
    height, width = image.shape[:2]
    x0, y0, x1, y1 = item.box
    w, h = x1 - x0, y1 - y0
    dx, dy = rng.uniform(-jitter, jitter, 2) * w, rng.uniform(-jitter, jitter, 2) * h
    x0, x1 = int(np.clip(x0 + dx[0], 0, width - 1)), int(np.clip(x1 + dx[1], 1, width))
    y0, y1 = int(np.clip(y0 + dy[0], 0, height - 1)), int(np.clip(y1 + dy[1], 1, height))
    return image[y0:y1, x0:x1]


def resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def entry(items: list[tuple[Photo, list[int]]]) -> list[dict]:
    """The boxes of an image: one entry per box, named by its object's classes."""
    return [{"class": list(item.classes), "object": item.name, "box": box} for item, box in items]


def mosaic(rows: int, cols: int, rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """rows x cols tiles of object crops; different objects unless there are more tiles than objects."""
    count = rows * cols
    picks = rng.choice(len(OBJECTS), count, replace=count > len(OBJECTS))
    image = np.zeros((rows * TILE, cols * TILE, 3), np.uint8)
    boxes = []
    for t, pick in enumerate(picks):
        r, c = divmod(t, cols)
        image[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE] = resized(object_crop(OBJECTS[pick], rng), TILE, TILE)
        boxes.append((OBJECTS[pick], [c * TILE, r * TILE, (c + 1) * TILE, (r + 1) * TILE]))
    return image, entry(boxes)


def pasted(rng: np.random.Generator) -> tuple[np.ndarray, list[dict]]:
    """One object crop, its longer side 35-70 % of the canvas, at a random place on a background."""
    background = photo(BACKGROUNDS[rng.integers(len(BACKGROUNDS))])
    height, width = background.shape[:2]
    side = int(rng.uniform(0.6, 1.0) * min(height, width))
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    canvas = resized(background[top:top + side, left:left + side], CANVAS, CANVAS).copy()
    item = OBJECTS[rng.integers(len(OBJECTS))]
    crop = object_crop(item, rng)
    longer = rng.uniform(0.35, 0.7) * CANVAS
    scale = longer / max(crop.shape[:2])
    w, h = max(8, round(crop.shape[1] * scale)), max(8, round(crop.shape[0] * scale))
    x, y = int(rng.integers(0, CANVAS - w + 1)), int(rng.integers(0, CANVAS - h + 1))
    canvas[y:y + h, x:x + w] = resized(crop, w, h)
    return canvas, entry([(item, [x, y, x + w, y + h])])


def cat_espresso() -> tuple[np.ndarray, list[dict]]:
    """The whole cat photo and the whole espresso photo, each 224 x 224, side by side."""
    cat, espresso = OBJECTS[0], OBJECTS[1]
    image = np.concatenate([resized(photo(cat.photo), TILE, TILE), resized(photo(espresso.photo), TILE, TILE)], 1)
    return image, entry([(cat, [0, 0, TILE, TILE]), (espresso, [TILE, 0, 2 * TILE, TILE])])


def cases() -> list[tuple[str, str, np.ndarray, list[dict]]]:
    """(split, name, RGB image, boxes) of every case, the same on every run."""
    rng = np.random.default_rng(SEED)
    made = []
    for kind, count in COUNTS.items():
        for index in range(count):
            if kind == "pasted":
                image, boxes = pasted(rng)
            else:
                rows, cols = (int(n) for n in kind.removeprefix("mosaic").split("x"))
                image, boxes = mosaic(rows, cols, rng)
            made.append((SPLITS[index % 2], f"{kind}_{index:03d}", image, boxes))
    image, boxes = cat_espresso()
    made.append(("test", "cat_espresso", image, boxes))
    return made


def build(out: Path) -> dict[str, int]:
    """Write every case under ``out/SPLIT/``; returns the count per split."""
    counts = dict.fromkeys(SPLITS, 0)
    for split, name, image, boxes in cases():
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        kind = name.rsplit("_", 1)[0]
        (folder / f"{name}.json").write_text(json.dumps({"kind": kind, "boxes": boxes}) + "\n")
        counts[split] += 1
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    counts = build(args.out)
    print(json.dumps({"out": str(args.out), **counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
