"""Where images come from: folders, paths, arrays and globs turned into a stream of images, each
loaded as RGB uint8 within the pixel limit, and the output names of the files."""
from __future__ import annotations

import glob
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.images.decode import check_pixels, load_image, to_rgb_uint8

ImageLike = Union[str, os.PathLike, np.ndarray]
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def images_under(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def expand_inputs(args: list[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (searched recursively for images) and glob patterns to a list of files.

    Returns (files in argument order without duplicates, one error line per unusable argument).
    """
    files: list[Path] = []
    errors: list[str] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = images_under(path)
            if not found:
                errors.append(f"{arg}: no images found in this folder")
        elif path.exists():
            found = [path]
        elif glob.has_magic(arg):
            matches = [Path(m) for m in sorted(glob.glob(arg, recursive=True))]
            found = [f for m in matches for f in (images_under(m) if m.is_dir() else [m])]
            if not found:
                errors.append(f"{arg}: no files match this pattern")
        else:
            found = []
            errors.append(f"{arg}: cannot read image (no such file or directory)")
        files.extend(found)
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, errors


def output_stems(paths: list[Path]) -> list[str]:
    """A distinct name per input for its outputs: the file stem, or where stems clash
    (case-insensitively) the path relative to the clashing files' common folder, e.g.
    ``a/cat.jpg`` and ``b/cat.jpg`` -> ``a_cat_jpg`` and ``b_cat_jpg``."""
    names = [p.stem for p in paths]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(paths):
        groups[p.stem.casefold()].append(i)
    for members in groups.values():
        if len(members) > 1:
            resolved = [paths[i].resolve() for i in members]
            try:
                base = os.path.commonpath([str(r.parent) for r in resolved])
            except ValueError:  # different drives
                base = ""
            for i, r in zip(members, resolved):
                relative = os.path.relpath(r, base) if base else str(r)
                names[i] = re.sub(r"[\\/:.]+", "_", relative).strip("_")
    taken: set[str] = set()
    for i, name in enumerate(names):  # last resort for names that still collide
        unique, n = name, 2
        while unique.casefold() in taken:
            unique, n = f"{name}-{n}", n + 1
        taken.add(unique.casefold())
        names[i] = unique
    return names


def image_stream(images: Union[ImageLike, Iterable[ImageLike]]) -> Iterable[ImageLike]:
    """The images of a folder, one path or array, or an iterable of them, lazily."""
    if isinstance(images, (str, os.PathLike)):
        return images_under(Path(images)) if Path(images).is_dir() else [images]
    if isinstance(images, np.ndarray):
        if images.ndim >= 4:
            raise OnnxcamError("images: got a 4-D array; pass normalized=True for a preprocessed "
                               "[N, 3, H, W] batch, or a list of HxWx3 uint8 images")
        return [images]
    return images


def load_one(image: ImageLike, position: int, max_pixels: Optional[int]) -> np.ndarray:
    """A path or an array as an RGB uint8 array, of at most ``max_pixels`` pixels."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, max_pixels)
    array = to_rgb_uint8(image, f"images[{position}]")
    check_pixels(array.shape[1], array.shape[0], max_pixels, f"images[{position}]")
    return array


def load_images(images: Union[ImageLike, Sequence[ImageLike]], max_pixels: Optional[int]) -> list[np.ndarray]:
    """Paths and arrays (or a folder) to RGB uint8 arrays; refuses an empty set."""
    images = list(image_stream(images))
    if not images:
        raise OnnxcamError("images: nothing to explain")
    return [load_one(image, i, max_pixels) for i, image in enumerate(images)]
