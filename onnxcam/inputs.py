"""Turning command-line image arguments into files, and naming the outputs."""
from __future__ import annotations

import glob
import os
import re
from collections import defaultdict
from pathlib import Path

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
