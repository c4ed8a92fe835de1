"""`Explainer.explain_iter`: images read a batch at a time, failures reported in their batch,
results equal to one `explain` call."""
from __future__ import annotations

import numpy as np
import pytest

from onnxcam import Explainer, OnnxcamError
from onnxcam.api.explainer import ExplainResult
from support.graphs import make_explain_graph
from support.images import random_rgb, write_image


@pytest.fixture(scope="module")
def explainer(tmp_path_factory) -> Explainer:
    return Explainer(make_explain_graph(tmp_path_factory.mktemp("s") / "m.onnx").path, providers=["cpu"])


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list:
    """Seven photos of different sizes and, at positions 2 and 5, a corrupt and an empty file."""
    folder = tmp_path_factory.mktemp("images")
    paths = [write_image(folder / f"{i}.png", random_rgb(20 + 3 * i, 30 + 2 * i, seed=i)) for i in range(7)]
    (folder / "bad.png").write_bytes(b"not a png")
    (folder / "empty.jpg").write_bytes(b"")
    return paths[:2] + [folder / "bad.png"] + paths[2:4] + [folder / "empty.jpg"] + paths[4:]


def test_stream_equals_one_call_and_reports_failures(explainer, files):
    parts = list(explainer.explain_iter(files, ["gradcam", "gradcam++"], top_k=2, batch_size=3))
    assert [len(p.positions) + len(p.failures) for p in parts] == [3, 3, 3]
    assert [(pos, src) for p in parts for pos, src, _ in p.failures] == [(2, str(files[2])), (5, str(files[5]))]
    assert "cannot read image" in parts[0].failures[0][2] and "empty file" in parts[1].failures[0][2]
    good = [f for i, f in enumerate(files) if i not in (2, 5)]
    assert [pos for p in parts for pos in p.positions] == [0, 1, 3, 4, 6, 7, 8]
    assert [src for p in parts for src in p.sources] == [str(f) for f in good]
    expected = explainer.explain_methods(good, ["gradcam", "gradcam++"], top_k=2, batch_size=7)
    for m, whole in enumerate(expected):
        streamed = ExplainResult.concatenate([p.results[m] for p in parts])
        np.testing.assert_array_equal(streamed.classes, whole.classes)
        np.testing.assert_allclose(streamed.raw_maps, whole.raw_maps, rtol=1e-5, atol=1e-6)
        for a, b in zip(streamed.heatmaps, whole.heatmaps):
            assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5


def test_stream_reads_one_batch_ahead_at_most(explainer, files):
    """The generator takes images from the input only as batches run."""
    taken = []

    def source():
        for path in files:
            taken.append(path)
            yield path

    stream = explainer.explain_iter(source(), batch_size=2)
    next(stream)
    assert len(taken) == 2
    next(stream)
    assert len(taken) == 4


def test_stream_takes_per_image_target_rows_and_folders(explainer, files):
    folder = files[0].parent
    rows = np.array([[i % 5, (i + 1) % 5] for i in range(9)])
    parts = list(explainer.explain_iter(folder, "gradcam", targets=rows, batch_size=4))
    sources = [src for p in parts for src in p.sources]
    assert len(sources) == 7 and all(s.endswith(".png") for s in sources)
    classes = np.concatenate([p.results[0].classes for p in parts if p.results])
    positions = [pos for p in parts for pos in p.positions]
    np.testing.assert_array_equal(classes, rows[positions])
    with pytest.raises(OnnxcamError, match="targets: has 3 rows"):
        list(explainer.explain_iter(files, targets=rows[:3], batch_size=4))


def test_stream_checks_arguments_before_reading(explainer, files):
    with pytest.raises(OnnxcamError, match="batch_size"):
        next(explainer.explain_iter(files, batch_size=0))
    with pytest.raises(OnnxcamError, match="out of range"):
        next(explainer.explain_iter(files, targets=99))
    with pytest.raises(OnnxcamError, match="unknown CAM method"):
        next(explainer.explain_iter(files, "nope"))
