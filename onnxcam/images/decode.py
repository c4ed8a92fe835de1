"""Reading images: decoding files and uploads with truncation checks, the pixel limit read
from the header first, and arrays checked as RGB uint8."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.images.header_size import image_size, jpeg_markers

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"  # IEND chunk type and its CRC


def _jpeg_truncated(data: bytes) -> bool:
    """True when the JPEG ends before its main image's end-of-image marker (FFD9).

    Walks the marker segments up to the first start-of-scan, so an EXIF thumbnail's own
    FFD9 (inside APP1) is skipped; a malformed structure is left to the decoder to judge.
    """
    for marker, pos in jpeg_markers(data):
        if marker is None:
            return False
        if marker == 0xDA:  # start of scan: entropy-coded data (FF is byte-stuffed) then EOI
            return data.find(b"\xff\xd9", pos) == -1
    return True


def _truncated(data: bytes) -> bool:
    """Whether a PNG or JPEG file is cut short (OpenCV may decode such files partially)."""
    if data.startswith(_PNG_SIGNATURE):
        return data.rfind(_PNG_END) == -1
    if data.startswith(b"\xff\xd8\xff"):
        return _jpeg_truncated(data)
    return False


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log lines while decoding; failures are reported as OnnxcamError."""
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(level)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Scale a decoded image of any common depth to uint8."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return np.round(image / 257.0).astype(np.uint8)
    if image.dtype in (np.float16, np.float32, np.float64):
        return np.round(np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"unsupported pixel type {image.dtype}")


def _bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """Gray, BGR or BGRA (alpha composited over white) from OpenCV to RGB uint8."""
    image = _to_uint8(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        alpha = image[:, :, 3:].astype(np.float32) / 255.0
        blended = image[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        image = np.round(blended).astype(np.uint8)
    if image.shape[2] != 3:
        raise ValueError(f"unsupported channel count {image.shape[2]}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


DEFAULT_MAX_PIXELS = 40_000_000  # about 40 megapixels: 7300 x 5500, or a 8K frame five times over
SUPPORTED_FORMATS = "PNG, JPEG, GIF, BMP, WebP, TIFF, PBM/PGM/PPM"


class UnsupportedImage(OnnxcamError):
    """The data is not an image in a format whose size can be read from its header."""


class ImageTooLarge(OnnxcamError):
    """The image has more pixels than the limit allows."""


def check_pixels(width: int, height: int, max_pixels: Optional[int], name: str) -> None:
    """ImageTooLarge when ``width`` x ``height`` exceeds ``max_pixels`` (None or 0: no limit)."""
    if max_pixels and width * height > max_pixels:
        raise ImageTooLarge(
            f"{name}: image is {width} x {height} pixels ({width * height / 1e6:.1f} megapixels), "
            f"over the limit of {max_pixels / 1e6:g} megapixels (--max-pixels or max_pixels= raises it)")


def decode_image(data: bytes, name: str = "image",
                 max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file's bytes as an HxWx3 uint8 RGB array. The size is read from the
    header and checked against ``max_pixels`` before any pixel is decoded; OnnxcamError
    (UnsupportedImage, ImageTooLarge) names ``name`` and the reason when it cannot be read."""
    def fail(reason: str, kind: type[OnnxcamError] = OnnxcamError) -> OnnxcamError:
        return kind(f"{name}: cannot read image ({reason})")

    if not data:
        raise fail("empty file")
    if _truncated(data):
        raise fail("truncated file")
    size = image_size(data)
    if size is None:
        raise fail(f"not a supported image format ({SUPPORTED_FORMATS}), or corrupt", UnsupportedImage)
    check_pixels(*size, max_pixels, name)
    # JPEGs go through IMREAD_COLOR so EXIF orientation is applied; others keep alpha and depth.
    flags = cv2.IMREAD_COLOR if data.startswith(b"\xff\xd8") else cv2.IMREAD_UNCHANGED
    with _quiet_opencv():
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.size == 0:
        raise fail("corrupt, or a variant of its format that cannot be decoded")
    check_pixels(image.shape[1], image.shape[0], max_pixels, name)
    try:
        return _bgr_to_rgb(image)
    except ValueError as error:
        raise fail(str(error)) from None


def load_image(path: str | os.PathLike, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array (see :func:`decode_image`)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise OnnxcamError(f"{path}: cannot read image (no such file)") from None
    except OSError as error:
        raise OnnxcamError(f"{path}: cannot read image ({error.strerror or type(error).__name__})") from None
    return decode_image(data, str(path), max_pixels)


def to_rgb_uint8(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Validate a user-supplied HxWx3 RGB or HxW gray uint8 array and return it as HxWx3."""
    ok = (isinstance(array, np.ndarray) and array.dtype == np.uint8 and array.size > 0
          and (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)))
    if not ok:
        got = (f"{array.dtype} array of shape {array.shape}" if isinstance(array, np.ndarray)
               else type(array).__name__)
        raise OnnxcamError(f"{name}: expected an HxWx3 RGB (or HxW gray) uint8 array, got {got}")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(array)
