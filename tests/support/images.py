"""Random photos, writing them as image files, and a PNG that only claims its size."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """An h x w RGB uint8 image of uniform noise."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_image(path: Path, rgb: np.ndarray) -> Path:
    """``rgb`` encoded in the format of ``path``'s suffix (folders made as needed)."""
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A structurally complete PNG (IHDR, a little IDAT, IEND) claiming ``width`` x ``height``:
    what a 420 KB 20000 x 20000 PNG looks like until it is decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(bytes(4096))) + _chunk(b"IEND", b""))
