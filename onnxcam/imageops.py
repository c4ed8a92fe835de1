"""Image loading, validation and the preprocessing an explain-graph expects."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from onnxcam.artifact import ArtifactInfo
from onnxcam.errors import OnnxcamError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"  # IEND chunk type and its CRC


def _jpeg_truncated(data: bytes) -> bool:
    """True when the JPEG ends before its main image's end-of-image marker (FFD9).

    Walks the marker segments up to the first start-of-scan, so an EXIF thumbnail's own
    FFD9 (inside APP1) is skipped; a malformed structure is left to the decoder to judge.
    """
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0xDA:  # start of scan: entropy-coded data (FF is byte-stuffed) then EOI
            return data.find(b"\xff\xd9", pos) == -1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length field
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
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


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array; OnnxcamError if it cannot be read."""
    def fail(reason: str) -> OnnxcamError:
        return OnnxcamError(f"{path}: cannot read image ({reason})")

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise fail("no such file") from None
    except OSError as error:
        raise fail(error.strerror or type(error).__name__) from None
    if not data:
        raise fail("empty file")
    if _truncated(data):
        raise fail("truncated file")
    # JPEGs go through IMREAD_COLOR so EXIF orientation is applied; others keep alpha and depth.
    flags = cv2.IMREAD_COLOR if data.startswith(b"\xff\xd8") else cv2.IMREAD_UNCHANGED
    with _quiet_opencv():
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.size == 0:
        raise fail("not a supported image format, or corrupt")
    try:
        return _bgr_to_rgb(image)
    except ValueError as error:
        raise fail(str(error)) from None


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


@dataclass(frozen=True)
class Geometry:
    """How one image became the network input: resized to ``resized``, then cropped at ``offset``.

    All sizes are (height, width); ``offset`` is the crop's (top, left) in the resized image
    and may be negative when the crop is larger than the resized image (zero padding).
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    offset: tuple[int, int]
    input_size: tuple[int, int]

    @property
    def identity(self) -> bool:
        """Whether the network input is the original image itself (maps need no mapping back)."""
        return self.original == self.resized == tuple(self.input_size) and self.offset == (0, 0)

    def to_original(self, map_hw: np.ndarray) -> np.ndarray:
        """Map an input-resolution map onto the original image; zero outside the crop's footprint."""
        h0, w0 = self.original
        map_hw = np.asarray(map_hw, np.float32)
        if map_hw.shape != tuple(self.input_size):
            raise ValueError(f"expected a map of shape {self.input_size}, got {map_hw.shape}")
        if self.offset == (0, 0) and self.resized == self.input_size:
            return cv2.resize(map_hw, (w0, h0), interpolation=cv2.INTER_LINEAR)
        sy, sx = self.resized[0] / h0, self.resized[1] / w0
        top, left = self.offset
        # input pixel centre x maps to original (x + left + 0.5) / sx - 0.5 (cv2.resize convention)
        matrix = np.array([[1 / sx, 0, (left + 0.5) / sx - 0.5],
                           [0, 1 / sy, (top + 0.5) / sy - 0.5]], np.float64)
        out = cv2.warpAffine(map_hw, matrix, (w0, h0), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        ys, xs = np.arange(h0) + 0.5, np.arange(w0) + 0.5
        inside_y = (ys >= top / sy) & (ys < (top + self.input_size[0]) / sy)
        inside_x = (xs >= left / sx) & (xs < (left + self.input_size[1]) / sx)
        out[~(inside_y[:, None] & inside_x[None, :])] = 0.0
        return out


def _crop(image: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """A height x width window at (top, left), zero-filled where it leaves the image."""
    out = np.zeros((height, width) + image.shape[2:], image.dtype)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, image.shape[0]), min(left + width, image.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
    return out


def _center_offset(size: int, crop: int) -> int:
    """torchvision's center_crop offset (Python rounding, symmetric padding when too small)."""
    return int(round((size - crop) / 2.0)) if size >= crop else -((crop - size) // 2)


def fit(image: np.ndarray, info: ArtifactInfo) -> tuple[np.ndarray, Geometry]:
    """Resize an RGB image to the input size; for ``resize="crop"`` (torchvision's
    Resize(resize_size) + CenterCrop) scale the shorter side to ``resize_size`` (default: the
    larger input side), then center-crop."""
    h, w = info.input_size
    h0, w0 = image.shape[:2]
    if info.resize == "stretch":
        resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        return resized, Geometry((h0, w0), (h, w), (0, 0), (h, w))
    if info.resize != "crop":
        raise OnnxcamError(f"resize: unknown resize mode {info.resize!r} in the model metadata")
    short = info.resize_size or max(h, w)
    if h0 <= w0:  # torchvision Resize(int): shorter side to `short`, longer side truncated
        rh, rw = short, int(short * w0 / h0)
    else:
        rh, rw = int(short * h0 / w0), short
    resized = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_LINEAR)
    top, left = _center_offset(rh, h), _center_offset(rw, w)
    return _crop(resized, top, left, h, w), Geometry((h0, w0), (rh, rw), (top, left), (h, w))


def preprocess(images: Sequence[np.ndarray], info: ArtifactInfo) -> tuple[np.ndarray, list[Geometry]]:
    """RGB uint8 images to the normalized float32 [N, 3, H, W] input, plus each image's Geometry.
    ``(x / 255 - mean) / std`` is one scale and one offset per channel, applied to the whole
    batch at once."""
    fitted, geometries = zip(*(fit(image, info) for image in images))
    std = np.asarray(info.std, np.float64)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    offset = (np.asarray(info.mean, np.float64) / std).astype(np.float32)
    pixels = np.stack(fitted).astype(np.float32)  # [N, H, W, 3]
    pixels *= scale
    pixels -= offset
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)), list(geometries)


def identity_geometry(info: ArtifactInfo) -> Geometry:
    """Geometry of an already-preprocessed input: maps stay at the input resolution."""
    size = tuple(info.input_size)
    return Geometry(size, size, (0, 0), size)
