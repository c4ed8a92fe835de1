"""The explain-graph resolves negative targets in torch (``onnxcam_export.wrapper``) as the
runtime resolves them in numpy for plain files and the metrics
(``onnxcam.runtime.targets.resolve_ranks``): the two are the same function."""
from __future__ import annotations

import numpy as np
import torch

from onnxcam.runtime.targets import resolve_ranks
from onnxcam_export.wrapper import resolve_targets


def test_torch_and_numpy_rank_resolution_agree_without_ties():
    rng = np.random.default_rng(0)
    for n, classes, k in ((1, 2, 1), (4, 10, 3), (7, 1000, 5), (3, 5, 12)):
        # distinct values in a random order per row (float32 normals tie among 1000 classes)
        logits = (np.stack([rng.permutation(classes) for _ in range(n)]) * 0.37 - 50 + rng.normal(0, 0.1, (n, 1)))
        logits = logits.astype(np.float32)
        assert all(len(np.unique(row)) == classes for row in logits)  # ties excluded
        targets = rng.integers(-classes, classes, (n, k))
        targets[-1, -1] = -classes  # the last-ranked class
        targets[:, 0] = -1
        expected = resolve_ranks(logits, targets)
        got = resolve_targets(torch.from_numpy(logits), torch.from_numpy(targets)).numpy()
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(expected[:, 0], logits.argmax(axis=1))
        assert (expected[targets >= 0] == targets[targets >= 0]).all()
