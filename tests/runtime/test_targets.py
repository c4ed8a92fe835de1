"""Which classes a run explains (`onnxcam.runtime.targets`): the targets matrix and its errors,
and ranks resolved against logits."""
from __future__ import annotations

import numpy as np
import pytest

from onnxcam import OnnxcamError
from onnxcam.runtime.targets import resolve_ranks, target_matrix


@pytest.mark.parametrize(("targets", "message"), [
    (1234, "targets: class 1234 out of range for a model with 5 classes"),
    ([0, -6], "targets: class -6 out of range for a model with 5 classes"),
    ("cat", "targets: expected"),
    (np.zeros((2, 1), int), "targets: has 2 rows for 3 images"),
])
def test_bad_targets(targets, message):
    with pytest.raises(OnnxcamError, match=message.replace("[", r"\[")):
        target_matrix(targets, 1, 3, 5)



def test_target_matrix_forms():
    """None: the ranks -1 .. -top_k, shared read-only; one class or a list: the same row for
    every image; an [N, K] array: per image."""
    ranks = target_matrix(None, 3, 2, 5)
    np.testing.assert_array_equal(ranks, [[-1, -2, -3]] * 2)
    assert not ranks.flags.writeable and target_matrix(None, 3, 2, 5) is ranks
    np.testing.assert_array_equal(target_matrix(4, 1, 3, 5), [[4]] * 3)
    np.testing.assert_array_equal(target_matrix([1, -5], 1, 2, 5), [[1, -5]] * 2)
    rows = np.array([[0, 1], [-1, 2]], np.int32)
    matrix = target_matrix(rows, 1, 2, 5)
    assert matrix.dtype == np.int64 and matrix.flags.c_contiguous
    np.testing.assert_array_equal(matrix, rows)
    with pytest.raises(OnnxcamError, match="top_k: must be between 1 and 5, got 6"):
        target_matrix(None, 6, 2, 5)


def test_resolve_ranks_against_a_sort():
    """-r is the r-th highest logit (ties: the lower class first); classes stay as they are."""
    logits = np.array([[0.1, 3.0, -2.0, 3.0], [5.0, 4.0, 3.0, 2.0]], np.float32)
    targets = np.array([[-1, -2, -3, -4, 2], [-1, -4, 0, 3, -2]])
    np.testing.assert_array_equal(resolve_ranks(logits, targets), [[1, 3, 0, 2, 2], [0, 3, 0, 3, 1]])
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 9))
    order = np.argsort(-logits, axis=1)
    ranks = -np.arange(1, 10)[None].repeat(6, axis=0)
    np.testing.assert_array_equal(resolve_ranks(logits, ranks), order)
