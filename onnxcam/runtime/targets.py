"""Which classes a run explains: the ``targets`` input an explain-graph takes, and ranks resolved
against logits. A negative target ``-r`` means the model's r-th ranked class; an explain-graph
resolves it inside the graph (the torch form is ``onnxcam_export.wrapper``'s, and a test holds
the two equal), plain files and the metrics resolve it here with :func:`resolve_ranks`."""
from __future__ import annotations

import functools
from typing import Sequence, Union

import numpy as np

from onnxcam.errors import OnnxcamError

Targets = Union[None, int, Sequence[int], np.ndarray]


def target_matrix(targets: Targets, top_k: int, n: int, num_classes: int) -> np.ndarray:
    """The int64 [n, K] ``targets`` graph input; negative -r means the r-th ranked class. For
    ``targets`` None: -1 .. -top_k in every row, read-only and shared between calls."""
    if targets is None:
        if not 1 <= top_k <= num_classes:
            raise OnnxcamError(f"top_k: must be between 1 and {num_classes}, got {top_k}")
        return _ranks(n, top_k)
    try:
        array = np.asarray(targets)
    except ValueError:  # ragged nested lists
        array = np.asarray([], dtype=object)
    if array.size == 0 or not np.issubdtype(array.dtype, np.integer) or array.ndim > 2:
        raise OnnxcamError("targets: expected a class index, a list of them, or an [N, K] "
                           f"integer array (got {array.dtype} values of shape {array.shape})")
    if array.ndim < 2:
        array = np.broadcast_to(array.reshape(1, -1), (n, array.size))
    elif array.shape[0] != n:
        raise OnnxcamError(f"targets: has {array.shape[0]} rows for {n} images")
    matrix = array.astype(np.int64)
    bad = matrix[(matrix >= num_classes) | (matrix < -num_classes)]
    if bad.size:
        raise OnnxcamError(f"targets: class {int(bad[0])} out of range for a model with "
                           f"{num_classes} classes")
    return np.ascontiguousarray(matrix)


@functools.lru_cache(maxsize=64)
def _ranks(n: int, top_k: int) -> np.ndarray:
    """The read-only [n, top_k] targets -1 .. -top_k (within range for any model): made once per
    shape, as every call of a small model's explain costs beside its run."""
    matrix = np.repeat(-np.arange(1, top_k + 1, dtype=np.int64)[None], n, axis=0)
    matrix.setflags(write=False)
    return matrix


def resolve_ranks(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Targets [N, K] with each negative -r replaced by the r-th ranked class of ``logits`` [N, C]
    (ties: the lower class first)."""
    targets = np.asarray(targets, np.int64)
    order = np.argsort(-np.asarray(logits, np.float64), axis=1, kind="stable")
    ranks = np.clip(-targets - 1, 0, logits.shape[1] - 1)
    return np.where(targets >= 0, targets, np.take_along_axis(order, ranks, axis=1)).astype(np.int64)
