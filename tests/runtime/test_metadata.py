"""Rewriting an explain-graph's metadata in place (onnxcam.runtime.metadata), checked with the
``onnx`` package: one ``onnxcam`` entry, the other entries and the graph untouched."""
from __future__ import annotations

import json

import onnx
import pytest

from onnxcam import OnnxcamError
from onnxcam.runtime.metadata import write_info
from onnxcam.runtime.session import open_session
from support.graphs import make_explain_graph


def test_rewrite_keeps_the_graph_and_other_entries(tmp_path):
    path = make_explain_graph(tmp_path / "m.onnx").path
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, "owner": "team a"})
    onnx.save(model, str(path))
    graph = model.graph.SerializeToString()
    _, info = open_session(path, providers=["cpu"])
    for rules in ({"gradcam": "peak:0.4"}, {"gradcam": "otsu", "layercam": "mass:0.5"}):
        info.box_rules = rules
        write_info(path, info)
        again = onnx.load(str(path))
        onnx.checker.check_model(again)
        props = [(p.key, p.value) for p in again.metadata_props]
        assert sorted(key for key, _ in props) == ["onnxcam", "owner"]
        assert dict(props)["owner"] == "team a"
        assert json.loads(dict(props)["onnxcam"])["box_rules"] == rules
        assert again.graph.SerializeToString() == graph
        assert open_session(path, providers=["cpu"])[1].box_rules == rules
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no partial file left


def test_a_truncated_file_is_refused_and_left_alone(tmp_path):
    path = make_explain_graph(tmp_path / "m.onnx").path
    _, info = open_session(path, providers=["cpu"])
    data = path.read_bytes()[:-7]
    path.write_bytes(data)
    with pytest.raises(OnnxcamError, match="cannot rewrite its metadata: not a readable ONNX file"):
        write_info(path, info)
    assert path.read_bytes() == data
