"""Gradient-free (black-box) methods: maps from forward passes of masked copies of the input.

They read nothing but the logits, so they run on any classifier file: a plain one (see
:mod:`onnxcam.api.plain_files`) as well as an explain-graph. A mask is [H, W] at the network input, 1
where a pixel is kept and 0 where it is replaced by the baseline 0 of the normalized input (the
mean colour). Masked copies are scored in batches of ``Batch.rows_per_run`` rows, mask-major,
so each mask is made once for every image of the batch. The score is the target class's
probability (softmax, or sigmoid for a multi-label or one-logit head).
"""
from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.methods.base import Explanation, Method
from onnxcam.runtime.runner import LOGITS, Batch, target_scores


class MaskingMethod(Method):
    """A black-box method: ``count`` masks, made in order by ``make_masks``; each image's map
    is ``sum_i weight_i * footprint_i / normalizer`` (see ``accumulate``)."""

    black_box = True

    def count(self, size: tuple[int, int]) -> int:
        """How many masks an image of the input ``size`` gets."""
        raise NotImplementedError

    def make_masks(self, size: tuple[int, int], start: int, stop: int) -> np.ndarray:
        """Masks ``start`` .. ``stop - 1`` as float32 [stop - start, H, W]; called with
        consecutive ranges from 0 (a method may draw them from one random stream)."""
        raise NotImplementedError

    def accumulate(self, scores: np.ndarray, original: np.ndarray,
                   masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(weights [M, K], footprints [M, H, W]) of M masked copies of one image with target
        ``scores`` [M, K]; ``original`` [K] are the unmasked scores."""
        raise NotImplementedError

    def normalizer(self, size: tuple[int, int]) -> np.ndarray:
        """What the summed map [H, W] is divided by."""
        raise NotImplementedError

    def explain(self, batch: Batch) -> Explanation:
        n, k = batch.classes.shape
        size = tuple(batch.info.input_size)
        count = self.count(size)
        channels_last = batch.info.layout.upper() == "NHWC"
        original = target_scores(batch.logits, batch.classes, batch.info.probability)
        sums = np.zeros((n, k) + size)
        masks = _MaskStream(self, size)

        def rows(start: int, stop: int) -> np.ndarray:
            index = np.arange(start, stop)
            chosen = masks.get(start // n, (stop - 1) // n + 1)[index // n - start // n]
            return batch.inputs[index % n] * (chosen[..., None] if channels_last else chosen[:, None])

        for start, stop, logits in batch.passes(self.name, n * count, LOGITS, rows):
            index = np.arange(start, stop)
            scores = target_scores(logits, batch.classes[index % n], batch.info.probability)
            footprints_all = masks.get(start // n, (stop - 1) // n + 1)
            for image in range(n):
                mine = index % n == image
                if not mine.any():
                    continue
                weights, footprints = self.accumulate(scores[mine], original[image],
                                                      footprints_all[index[mine] // n - start // n])
                sums[image] += np.einsum("mk,mhw->khw", weights, footprints)
        return Explanation((sums / self.normalizer(size)).astype(np.float32))


class _MaskStream:
    """A method's masks in order, holding only the range last asked for."""

    def __init__(self, method: MaskingMethod, size: tuple[int, int]):
        self.method, self.size = method, size
        self.first, self.masks = 0, np.zeros((0,) + size, np.float32)

    def get(self, start: int, stop: int) -> np.ndarray:
        """Masks ``start`` .. ``stop - 1``; ``start`` never moves back."""
        end = self.first + len(self.masks)
        keep = self.masks[start - self.first:]
        fresh = self.method.make_masks(self.size, end, stop) if stop > end else keep[:0]
        self.first, self.masks = start, np.concatenate([keep, fresh])
        return self.masks[:stop - start]


class RISE(MaskingMethod):
    """RISE (Petsiuk et al. 2018): the expected score when a pixel is kept, over random masks.

    Each mask: a ``cells`` x ``cells`` grid of cells kept with probability ``probability``,
    upsampled bicubically to (cells + 1) times the cell size, shifted by a random offset
    within one cell, cut to the input size and clipped to [0, 1]. The draws come from
    ``numpy.random.default_rng(seed)`` in this order per mask: the grid, the row shift, the
    column shift (OpenVINO XAI's RISE draws the same, so its masks and maps are the same).
    Map = sum_i score_i * mask_i / (samples * probability).
    """

    name = "rise"

    def __init__(self, samples: int = 5000, cells: int = 8, probability: float = 0.5, seed: int = 0):
        if samples < 1 or cells < 1 or not 0.0 < probability < 1.0:
            raise OnnxcamError(f"method: rise needs samples >= 1, cells >= 1 and 0 < probability < 1 "
                               f"(got {samples}, {cells}, {probability})")
        self.samples, self.cells, self.probability, self.seed = samples, cells, probability, seed
        self._rng: Optional[np.random.Generator] = None

    def count(self, size):
        return self.samples

    def make_masks(self, size, start, stop):
        if start == 0 or self._rng is None:
            self._rng = np.random.default_rng(self.seed)
        return np.stack([rise_mask(self._rng, size, self.cells, self.probability)
                         for _ in range(start, stop)]) if stop > start else np.zeros((0,) + size, np.float32)

    def accumulate(self, scores, original, masks):
        return scores, masks

    def normalizer(self, size):
        return np.float64(self.samples * self.probability)


def rise_mask(rng: np.random.Generator, size: tuple[int, int], cells: int, probability: float) -> np.ndarray:
    """One RISE mask [H, W], float32 in [0, 1], drawn from ``rng``."""
    height, width = size
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    grid = (rng.random((cells, cells)) < probability).astype(np.float32)
    dy, dx = int(rng.integers(0, cell_h)), int(rng.integers(0, cell_w))
    upsampled = cv2.resize(grid, ((cells + 1) * cell_w, (cells + 1) * cell_h), interpolation=cv2.INTER_CUBIC)
    return np.clip(upsampled[dy:dy + height, dx:dx + width], 0.0, 1.0)


class Occlusion(MaskingMethod):
    """Occlusion (Zeiler & Fergus 2014): a ``window`` x ``window`` square of the baseline slides
    over the input by ``stride``; each pixel's map value is the mean drop of the target's score
    over the windows that cover it (Captum's ``Occlusion`` with a zero baseline). The last row
    and column of windows sit flush with the border, so every pixel is covered. Defaults:
    window = 1/7 of the shorter input side, stride = half the window."""

    name = "occlusion"

    def __init__(self, window: Optional[int] = None, stride: Optional[int] = None):
        if (window is not None and window < 1) or (stride is not None and stride < 1):
            raise OnnxcamError(f"method: occlusion needs window and stride >= 1 (got {window}, {stride})")
        self.window, self.stride = window, stride

    def _grid(self, size: tuple[int, int]) -> tuple[int, list[int], list[int]]:
        window = self.window or max(1, round(min(size) / 7))
        if window > min(size):
            raise OnnxcamError(f"method: occlusion window {window} is larger than the input {size}")
        stride = self.stride or max(1, window // 2)

        def starts(length: int) -> list[int]:
            points = list(range(0, length - window + 1, stride))
            return points + [length - window] if points[-1] != length - window else points
        return window, starts(size[0]), starts(size[1])

    def count(self, size):
        _, ys, xs = self._grid(size)
        return len(ys) * len(xs)

    def footprints(self, size: tuple[int, int], start: int, stop: int) -> np.ndarray:
        """The occluded squares of windows ``start`` .. ``stop - 1``: 1 inside, [M, H, W]."""
        window, ys, xs = self._grid(size)
        out = np.zeros((stop - start,) + size, np.float32)
        for row, i in enumerate(range(start, stop)):
            y, x = ys[i // len(xs)], xs[i % len(xs)]
            out[row, y:y + window, x:x + window] = 1.0
        return out

    def make_masks(self, size, start, stop):
        return 1.0 - self.footprints(size, start, stop)

    def accumulate(self, scores, original, masks):
        return original[None, :] - scores, 1.0 - masks

    def normalizer(self, size):
        return self.footprints(size, 0, self.count(size)).sum(axis=0, dtype=np.float64)
