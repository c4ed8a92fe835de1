"""How an image becomes the network input (resize, crop, normalize) and how a map goes back
onto the image: :class:`Geometry`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.runtime.artifact import ArtifactInfo


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

    def to_input(self, map_original: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`to_original`: a map over the original image, resized as the
        image was (area averaging when shrinking, bilinear otherwise) and cropped as it was
        (zero where the crop pads), at the network input resolution."""
        map_hw = np.asarray(map_original, np.float32)
        if map_hw.shape != tuple(self.original):
            raise ValueError(f"expected a map of shape {self.original}, got {map_hw.shape}")
        height, width = self.resized
        if (height, width) != map_hw.shape:
            shrink = height <= map_hw.shape[0] and width <= map_hw.shape[1]
            map_hw = cv2.resize(map_hw, (width, height),
                                interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return _crop(map_hw, *self.offset, *self.input_size)


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


def fit_pixels(images: Sequence[np.ndarray], info: ArtifactInfo) -> tuple[np.ndarray, list[Geometry]]:
    """RGB uint8 images fitted to the input (see :func:`fit`) as float32 RGB [N, 3, H, W] pixels
    in [0, 1], before normalization, plus each image's Geometry."""
    fitted, geometries = zip(*(fit(image, info) for image in images))
    pixels = np.stack(fitted).astype(np.float32)
    pixels *= np.float32(1.0 / 255.0)
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)), list(geometries)


def normalize(pixels: np.ndarray, info: ArtifactInfo) -> np.ndarray:
    """RGB pixels [..., 3, H, W] in [0, 1] to the input the model takes (see
    :func:`input_transform`)."""
    order, scale, offset, channels_last = input_transform(info)
    normalized = pixels[..., order, :, :] * scale[:, None, None] - offset[:, None, None]
    return np.ascontiguousarray(np.moveaxis(normalized, -3, -1) if channels_last else normalized, np.float32)


def preprocess(images: Sequence[np.ndarray], info: ArtifactInfo) -> tuple[np.ndarray, list[Geometry]]:
    """RGB uint8 images to the float32 input the model takes (see :func:`input_transform`), plus
    each image's Geometry; the whole batch at once, in the fitted images' channels-last order."""
    order, scale, offset, channels_last = input_transform(info)
    fitted, geometries = zip(*(fit(image, info) for image in images))
    batch = np.stack(fitted)
    batch = (batch if order == [0, 1, 2] else batch[..., order]).astype(np.float32)
    batch *= scale / np.float32(255.0)
    batch -= offset
    return batch if channels_last else np.ascontiguousarray(batch.transpose(0, 3, 1, 2)), list(geometries)


def input_transform(info: ArtifactInfo) -> tuple[list[int], np.ndarray, np.ndarray, bool]:
    """How RGB pixels p in [0, 1] become the model's input: ``p[order] * scale - offset`` per
    channel (channels in ``info.channels`` order, scaled to [0, ``info.scale``], then
    ``(x - mean) / std``), channels last for ``layout`` NHWC. Returns (order, scale, offset,
    channels last?); OnnxcamError for a channel order, layout or scale the runtime does not know."""
    channels, layout = info.channels.upper(), info.layout.upper()
    if channels not in ("RGB", "BGR"):
        raise OnnxcamError(f"channels: expected RGB or BGR, got {info.channels!r}")
    if layout not in ("NCHW", "NHWC"):
        raise OnnxcamError(f"layout: expected NCHW or NHWC, got {info.layout!r}")
    if info.scale not in (1, 255):
        raise OnnxcamError(f"scale: expected 1 or 255 (pixels in [0, 1] or [0, 255]), got {info.scale!r}")
    mean, std = np.asarray(info.mean, np.float64), np.asarray(info.std, np.float64)
    if mean.shape != (3,) or std.shape != (3,) or not np.all(std != 0):
        raise OnnxcamError(f"mean, std: expected three values each, std nonzero (got {info.mean}, {info.std})")
    return ([0, 1, 2] if channels == "RGB" else [2, 1, 0], (info.scale / std).astype(np.float32),
            (mean / std).astype(np.float32), layout == "NHWC")


def identity_geometry(info: ArtifactInfo) -> Geometry:
    """Geometry of an already-preprocessed input: maps stay at the input resolution."""
    size = tuple(info.input_size)
    return Geometry(size, size, (0, 0), size)
