"""Running an explain-graph: the main pass, and the extra batched passes some methods make."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from onnxcam.errors import OnnxcamError, first_line
from onnxcam.progress import Progress
from onnxcam.runtime.artifact import (
    INPUT,
    LAYER_INPUT,
    LAYER_LOGITS,
    LOGITS,
    TARGETS,
    ArtifactInfo,
)

if TYPE_CHECKING:
    import onnxruntime as ort

Rows = Callable[[int, int], np.ndarray]  # (start, stop) -> the rows start..stop-1 of a pass


class GraphRunner:
    """An explain-graph session with its inputs filled in: ``layer_input`` is always fed
    (empty unless used) when the file has it, so files with and without it both run. Float
    inputs are fed in the file's precision and float outputs come back as float32.

    On CUDA (``io_binding`` None: when CUDA is the session's first provider) runs go through
    onnxruntime's IO binding: the inputs are copied to the device once and the outputs are
    written there, and only the fetched ones are copied back.
    """

    def __init__(self, session: ort.InferenceSession, info: ArtifactInfo, path: Path,
                 io_binding: bool | None = None):
        self.session, self.info, self.path = session, info, path
        first = session.get_providers()[0]
        self.device = "cuda" if first == "CUDAExecutionProvider" else "cpu"
        self.io_binding = self.device == "cuda" if io_binding is None else io_binding
        self.outputs = {o.name for o in session.get_outputs()}
        self.dtype = np.float16 if info.precision == "float16" else np.float32
        shape = {i.name: i.shape for i in session.get_inputs()}.get(LAYER_INPUT)
        self._empty_layer = None if shape is None else np.zeros(
            [0] + [d if isinstance(d, int) else 1 for d in shape[1:]], self.dtype)

    def run(self, fetch: Sequence[str], inputs: np.ndarray, targets: np.ndarray,
            layer_rows: np.ndarray | None = None) -> list[np.ndarray]:
        """One session run; ``layer_rows`` go to ``layer_input`` (the file must have it)."""
        feeds = {INPUT: np.ascontiguousarray(inputs, self.dtype),
                 TARGETS: np.ascontiguousarray(targets, np.int64)}
        if self._empty_layer is not None:
            feeds[LAYER_INPUT] = (self._empty_layer if layer_rows is None
                                  else np.ascontiguousarray(layer_rows, self.dtype))
        try:
            run = self._bound_run if self.io_binding else self.session.run
            outputs = run(list(fetch), feeds)
        except Exception as error:  # onnxruntime's own exception types
            raise OnnxcamError(f"{self.path}: inference failed: {first_line(error)}") from None
        if self.dtype == np.float32:
            return outputs
        return [out.astype(np.float32) if out.dtype == np.float16 else out for out in outputs]

    def _bound_run(self, fetch: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One run through IO binding on ``self.device``; returns the fetched outputs on the host."""
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in fetch:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


@dataclass
class Batch:
    """What a method sees of one batch: the inputs, the main pass's outputs, the graph."""

    inputs: np.ndarray  # float32 [N, 3, H, W], normalized
    classes: np.ndarray  # int64 [N, K], ranks resolved
    logits: np.ndarray  # float32 [N, C]
    outputs: dict[str, np.ndarray]  # the main pass's outputs by graph name
    runner: GraphRunner
    rows_per_run: int = 32  # rows per extra pass
    progress: bool = False  # draw a bar for extra passes (on a terminal)

    @property
    def info(self) -> ArtifactInfo:
        return self.runner.info

    def passes(self, label: str, count: int, fetch: str, rows: Rows, targets: Rows | None = None,
               layer: bool = False) -> Iterator[tuple[int, int, np.ndarray]]:
        """Feed ``count`` rows ``rows_per_run`` at a time; yields (start, stop, fetched).

        Rows go to ``input`` (with ``targets(start, stop)``, default [-1]), or with ``layer``
        to ``layer_input`` with an empty ``input``.
        """
        h, w = self.info.input_size
        # a bar for any count when asked (on a terminal), never otherwise
        with Progress(count, label=label, min_items=0 if self.progress else count) as bar:
            for start in range(0, count, self.rows_per_run):
                stop = min(start + self.rows_per_run, count)
                if layer:
                    out = self.runner.run([fetch], np.zeros((0, 3, h, w), np.float32),
                                          np.zeros((0, 1), np.int64), rows(start, stop))
                else:
                    chosen = targets(start, stop) if targets else np.full((stop - start, 1), -1)
                    out = self.runner.run([fetch], rows(start, stop), chosen)
                bar.update(stop - start)
                yield start, stop, out[0]

    def logits_of_inputs(self, label: str, count: int, rows: Rows) -> np.ndarray:
        """Logits [count, C] of ``count`` input rows."""
        return np.concatenate([out for _, _, out in self.passes(label, count, LOGITS, rows)])

    def logits_of_layer(self, label: str, count: int, rows: Rows) -> np.ndarray:
        """Logits [count, C] of ``count`` rows fed after the first target layer."""
        return np.concatenate([out for _, _, out in self.passes(label, count, LAYER_LOGITS, rows,
                                                                layer=True)])


def target_scores(logits: np.ndarray, classes: np.ndarray, score: str) -> np.ndarray:
    """The score of ``classes`` [M, K]: the ``logit``, its ``sigmoid`` or its ``softmax``
    probability over the row."""
    values = logits.astype(np.float64)
    picked = values[np.arange(len(values))[:, None], classes]
    if score == "sigmoid":
        return 1.0 / (1.0 + np.exp(-picked))
    if score != "softmax":
        return picked
    top = values.max(axis=1, keepdims=True)
    return np.exp(picked - top) / np.exp(values - top).sum(axis=1, keepdims=True)
