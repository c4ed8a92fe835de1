"""Sessions and providers (`onnxcam.runtime.session`): provider choice, the one-line errors
of files that are no explain-graph, threads and spinning options, and the optimized-graph cache."""
from __future__ import annotations

import os

import numpy as np
import pytest

from onnxcam import Explainer, OnnxcamError
from onnxcam.runtime.artifact import FORMAT_VERSION
from onnxcam.runtime.session import ALLOW_SPINNING, cached_graph_path, open_session, select_providers
from support.graphs import make_explain_graph, make_plain_model

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def test_select_providers():
    assert select_providers(None, [CPU]) == [CPU]
    assert select_providers(None, ["AzureExecutionProvider", CUDA, CPU]) == [CUDA, CPU]
    assert select_providers(["cuda", "CPU"], [CUDA, CPU]) == [CUDA, CPU]
    with pytest.raises(OnnxcamError, match=f"providers: {CUDA} is not available"):
        select_providers([CUDA], [CPU])
    assert CPU in select_providers(None)


def test_open_session_errors(tmp_path):
    make_plain_model(tmp_path / "plain.onnx")
    (tmp_path / "junk.onnx").write_text("hello")
    make_explain_graph(tmp_path / "future.onnx", format_version=99)
    make_explain_graph(tmp_path / "corrupt.onnx", metadata="{not json")
    other = make_explain_graph(tmp_path / "other.onnx").info
    other.layers = ["layer4"]
    make_explain_graph(tmp_path / "other.onnx", metadata=other.to_json())
    cases = [("missing.onnx", "no such model file"), ("junk.onnx", "not a valid ONNX model: "),
             ("plain.onnx", "not an onnxcam explain-graph \\(no 'onnxcam' metadata\\); export one"),
             ("future.onnx", f"explain-graph format version 99 is newer than this onnxcam supports \\({FORMAT_VERSION}\\)"),
             ("corrupt.onnx", "corrupt 'onnxcam' metadata \\("),
             ("other.onnx", "broken explain-graph: it lacks 'activations/layer4', 'gradients/layer4'")]
    for name, message in cases:
        for cache in (False, True):
            with pytest.raises(OnnxcamError, match=f"{name}: {message}") as caught:
                open_session(tmp_path / name, cache=cache)
            assert "\n" not in str(caught.value)


def test_open_session_with_threads(synthetic):
    session, info = open_session(synthetic.path, threads=1)
    assert info.layers == ["feat"] and session.get_providers() == [CPU]
    assert session.get_session_options().intra_op_num_threads == 1
    assert open_session(synthetic.path, threads=3)[0].get_session_options().intra_op_num_threads == 3
    with pytest.raises(OnnxcamError, match="threads: must be at least 1, got 0"):
        open_session(synthetic.path, threads=0)


def test_open_session_spinning_option(synthetic):
    for spinning in (True, False):
        options = open_session(synthetic.path, spinning=spinning)[0].get_session_options()
        for key in ALLOW_SPINNING:
            try:
                value = options.get_session_config_entry(key)
            except RuntimeError:  # unset: onnxruntime's default, spinning
                value = "1"
            assert value == ("1" if spinning else "0")


def test_optimized_graph_cache(tmp_path):
    """The cache is written beside the file, gives the same outputs, is what later sessions
    load (a planted graph shows through), and is rebuilt once the model file is newer."""
    path = make_explain_graph(tmp_path / "m.onnx").path
    x = np.random.default_rng(0).standard_normal((2, 3, 24, 32)).astype(np.float32)
    plain = Explainer(path).explain(x, normalized=True)
    cached = cached_graph_path(path, [CPU])
    assert not cached.exists()
    first = Explainer(path, cache=True).explain(x, normalized=True)
    assert cached.is_file() and cached.parent == path.parent and not list(tmp_path.glob("*.partial"))
    again = Explainer(path, cache=True).explain(x, normalized=True)
    for result in (first, again):
        np.testing.assert_array_equal(result.logits, plain.logits)
        np.testing.assert_array_equal(result.raw_maps, plain.raw_maps)
    make_explain_graph(tmp_path / "planted.onnx", num_classes=7)
    os.replace(tmp_path / "planted.onnx", cached)
    os.utime(cached, (path.stat().st_mtime + 10,) * 2)
    assert open_session(path, cache=True)[1].num_classes == 7  # read from the cache
    os.utime(path, (path.stat().st_mtime + 20,) * 2)  # the model changed since
    assert open_session(path, cache=True)[1].num_classes == 5
    assert open_session(cached)[1].num_classes == 5  # the cache was rebuilt

