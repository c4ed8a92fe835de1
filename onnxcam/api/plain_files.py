"""Explaining plain classifier files (no onnxcam metadata) with the gradient-free methods of
:mod:`onnxcam.methods.gradient_free`, through onnxruntime forward passes alone. What the file cannot tell
about its input comes from :class:`onnxcam.images.plain_input.Preprocessing`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from onnxcam.api.explainer import Explainer
from onnxcam.errors import OnnxcamError, first_line
from onnxcam.images.decode import DEFAULT_MAX_PIXELS
from onnxcam.images.geometry import input_transform
from onnxcam.images.plain_input import PlainInput, Preprocessing, describe_input, luma
from onnxcam.methods.registry import get_method
from onnxcam.runtime.artifact import LOGITS, TARGET_INDICES, ArtifactInfo
from onnxcam.runtime.session import (
    NotExplainGraph,
    create_session,
    select_providers,
    session_options,
)
from onnxcam.runtime.targets import resolve_ranks


def is_probabilities(values: np.ndarray) -> bool:
    """Whether rows [N, C] look like softmax output: non-negative and summing to 1."""
    values = np.asarray(values, np.float64)
    return bool(values.size) and bool(np.all(values >= 0)) and bool(
        np.allclose(values.sum(axis=1), 1.0, atol=1e-4))


class PlainRunner:
    """A plain classifier session behind :class:`onnxcam.runtime.runner.GraphRunner`'s interface:
    ``run`` serves ``logits`` and ``target_indices`` only. A file with a fixed batch size is
    fed that many rows at a time (the last run padded). An output of probabilities (see
    ``is_probabilities``, judged on the first run) is served as their logarithms, whose softmax
    they are. A one-column output (a binary classifier) is served as the two classes
    ``[z, -z]`` of its logit ``z`` (``ArtifactInfo.head`` "binary"); values all inside (0, 1) on
    the first run are taken as the sigmoid probability and served as its logit."""

    def __init__(self, session, info: ArtifactInfo, path: Path, image: PlainInput, output: str):
        self.session, self.info, self.path, self.image, self.output = session, info, path, image, output
        self.outputs = {LOGITS, TARGET_INDICES}
        self.probabilities: Optional[bool] = None
        self.binary = False  # the file gives one column

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """Logits [N, C] of an input batch in the file's own layout."""
        if self.image.channels == 1:  # a grayscale file: the luma of the normalized RGB rows
            inputs = luma(inputs, 1 if self.image.layout == "NCHW" else 3)
        inputs = np.ascontiguousarray(inputs, np.float32)
        step = self.image.batch or max(len(inputs), 1)
        parts = []
        for start in range(0, len(inputs), step):
            chunk = inputs[start:start + step]
            if len(chunk) < step:
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk),) + chunk.shape[1:], np.float32)])
            try:
                out = self.session.run([self.output], {self.image.name: chunk})[0]
            except Exception as error:  # onnxruntime's own exception types
                raise OnnxcamError(f"{self.path}: inference failed: {first_line(error)}") from None
            parts.append(out.reshape(len(out), -1)[:min(step, len(inputs) - start)].astype(np.float32))
        values = np.concatenate(parts) if parts else np.zeros((0, max(self.info.num_classes, 1)), np.float32)
        binary = self.binary = values.shape[1] == 1
        if self.probabilities is None and len(values):
            self.probabilities = bool(np.all((values > 0) & (values < 1))) if binary else is_probabilities(values)
        if self.probabilities:
            tiny = np.finfo(np.float32).tiny
            values = np.log(np.maximum(values, tiny)) - (np.log(np.maximum(1 - values, tiny)) if binary else 0)
        return np.concatenate([values, -values], axis=1) if binary else values

    def run(self, fetch: Sequence[str], inputs: np.ndarray, targets: np.ndarray,
            layer_rows: Optional[np.ndarray] = None) -> list[np.ndarray]:
        if layer_rows is not None:
            raise OnnxcamError(f"{self.path}: a plain classifier has no 'layer_input'")
        unknown = [name for name in fetch if name not in self.outputs]
        if unknown:
            raise OnnxcamError(f"{self.path}: a plain classifier has no output {unknown[0]!r}")
        logits = self.logits(inputs)
        served = {LOGITS: logits, TARGET_INDICES: resolve_ranks(logits, targets)}
        return [served[name] for name in fetch]


class PlainExplainer(Explainer):
    """A plain classifier file explained by gradient-free methods (``rise``, ``occlusion``):
    the same API and results as :class:`Explainer`, with the preprocessing given here."""

    def __init__(self, path: str | os.PathLike, preprocessing: Optional[Preprocessing] = None,
                 providers: Optional[Sequence[str]] = None, threads: Optional[int] = None,
                 spinning: bool = True, cache: bool = False,
                 max_pixels: Optional[int] = DEFAULT_MAX_PIXELS):
        self.path, self.max_pixels = Path(path), max_pixels
        prep = preprocessing or Preprocessing()
        self.session = _open(self.path, providers, threads, spinning, cache)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise OnnxcamError(f"{self.path}: has {len(inputs)} inputs "
                               f"({', '.join(i.name for i in inputs)}); expected one image input")
        image = describe_input(inputs[0].shape, inputs[0].name, self.path, prep.layout, prep.input_size)
        outputs = [o.name for o in self.session.get_outputs()]
        output = prep.output or outputs[0]
        if output not in outputs:
            raise OnnxcamError(f"--output-name: {self.path} has no output {output!r} "
                               f"(it has {', '.join(outputs)})")
        self.info = ArtifactInfo(
            layers=[], input_size=image.size, mean=[float(v) for v in prep.mean],
            std=[float(v) for v in prep.std], num_classes=0, labels=prep.labels, layout=image.layout,
            channels=prep.channels.upper(), scale=int(prep.scale), resize=prep.resize,
            source=f"plain:{self.path.name}", score="softmax")
        input_transform(self.info)  # one-line errors for bad preprocessing, before any image
        self._use(PlainRunner(self.session, self.info, self.path, image, output))
        probe_shape = (image.batch or 1,) + ((3,) + image.size if image.layout == "NCHW" else image.size + (3,))
        self.info.num_classes = self.runner.logits(np.zeros(probe_shape, np.float32)).shape[1]
        self.runner.probabilities = None  # judged on real inputs, not on the blank probe
        self.info.head = "binary" if self.runner.binary else "softmax"
        if prep.labels is not None and len(prep.labels) != self.info.num_classes:
            raise OnnxcamError(f"--labels: {len(prep.labels)} names for a model with "
                               f"{self.info.num_classes} classes")

    def method(self, method, **options):
        chosen = get_method(method, **options) if isinstance(method, str) else method
        if not getattr(chosen, "black_box", False):
            raise OnnxcamError(f"method: {chosen.name} needs an explain-graph, and {self.path} is a plain "
                               f"classifier: use rise or occlusion, or `onnxcam export {self.path}` first")
        return super().method(chosen)

    def _check_normalized(self, batch: np.ndarray) -> np.ndarray:
        h, w = self.info.input_size
        shape = (3, h, w) if self.info.layout == "NCHW" else (h, w, 3)
        if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1:] != shape or not len(batch):
            got = f"shape {batch.shape}" if isinstance(batch, np.ndarray) else type(batch).__name__
            raise OnnxcamError(f"images: with normalized=True expected a float32 [N, {', '.join(map(str, shape))}] "
                               f"array, got {got}")
        return np.ascontiguousarray(batch, np.float32)


def _open(path: Path, providers, threads, spinning, cache):
    """An onnxruntime session of ``path``; OnnxcamError for a missing or invalid file."""
    if not path.is_file():
        raise OnnxcamError(f"{path}: no such model file")
    try:
        return create_session(path, session_options(threads, spinning), select_providers(providers), cache)
    except Exception as error:  # onnxruntime's own exception types
        raise OnnxcamError(f"{path}: not a valid ONNX model: {first_line(error)}") from None


def open_explainer(path: str | os.PathLike, preprocessing: Optional[Preprocessing] = None,
                   providers: Optional[Sequence[str]] = None, threads: Optional[int] = None,
                   spinning: bool = True, cache: bool = False,
                   max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> Explainer:
    """An :class:`Explainer` for an explain-graph, a :class:`PlainExplainer` for a plain
    classifier file (``preprocessing`` is for plain files only: an explain-graph carries its
    own, and giving it one is an error)."""
    try:
        explainer = Explainer(path, providers, threads, spinning, cache, max_pixels)
    except NotExplainGraph as error:
        try:
            return PlainExplainer(error.path, preprocessing, providers, threads, spinning, cache, max_pixels)
        except OnnxcamError as plain_error:  # say what the file is not, then why
            prefix, text = f"{error.path}: ", str(plain_error)
            if not text.startswith(prefix):
                raise
            raise OnnxcamError(f"{prefix}not an onnxcam explain-graph, nor a plain image classifier "
                               f"({text[len(prefix):]})") from None
    if preprocessing is not None:
        raise OnnxcamError(f"{explainer.path} is an explain-graph and carries its own preprocessing: "
                           "--mean, --std, --scale, --channels, --layout, --input-size, --labels and "
                           "--output-name are for plain classifier files")
    return explainer
