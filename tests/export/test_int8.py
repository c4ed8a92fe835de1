"""INT8 files (QDQ, QOperator, dynamic) made here from a small residual CNN by onnxruntime's own
quantizers: exported with gradients, still fused into integer kernels, and their gradients those
of torch's fake-quantize autograd on the same network."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from onnxcam import Explainer
from onnxcam.errors import OnnxcamError
from onnxcam.runtime import artifact
from onnxcam_export import onnx_ops
from onnxcam_export.checks import check_fusion, integer_kernels
from onnxcam_export.int8 import quantize_file
from onnxcam_export.onnx_file import classifier, export_onnx_file, read_source, tensor_candidates
from onnxcam_export.qoperator import to_qdq
from onnxcam_export.quantization import INTEGER_RANGES
from support.cli import one_error_line, run_cli
from support.int8_models import PHOTOS, inputs, photos, quantized_files, torch_fake_quantized_file
from support.torch_reference import cosine

SIZE = 224  # the size users run: a weight expanded per pixel shows only there


def _photos() -> list[np.ndarray]:
    return photos(SIZE)


def _inputs() -> list[np.ndarray]:
    return inputs(SIZE)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The float file and its quantized forms."""
    return quantized_files(tmp_path_factory.mktemp("int8"), SIZE)


@pytest.fixture(scope="module")
def exported(files, tmp_path_factory):
    """Factory: each quantized form exported once (default layer, Grad-CAM in the graph)."""
    cache = {}
    folder = tmp_path_factory.mktemp("int8-exports")

    def get(name: str, layer: str | None = None) -> tuple[Path, artifact.ArtifactInfo]:
        if (name, layer) not in cache:
            path = folder / f"{name}_{len(cache)}.onnx"
            info = export_onnx_file(files[name], path, [layer] if layer else None)
            cache[name, layer] = path, info
        return cache[name, layer]
    return get


def _run(path: Path, x: np.ndarray, targets: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {artifact.INPUT: x, artifact.TARGETS: targets}
    for spec in session.get_inputs():
        if spec.name == artifact.LAYER_INPUT:
            feeds[spec.name] = np.zeros([0, *spec.shape[1:]], np.float32)
    return dict(zip(names, session.run(names, feeds)))


def _torch_fake_quantize(x, scale, zero_point, axis, floor=False):
    """The pair as torch's own fake-quantize ops compute it (and differentiate it)."""
    qmin, qmax = INTEGER_RANGES[zero_point.dtype]
    if scale.dim() == 0:
        return torch.fake_quantize_per_tensor_affine(x, float(scale), int(zero_point), qmin, qmax)
    return torch.fake_quantize_per_channel_affine(x, scale, zero_point.to(torch.int32), axis, qmin, qmax)


def torch_reference(path: Path, layer: str, x: np.ndarray, target: int, monkeypatch) -> np.ndarray:
    """d logit[target] / d layer by torch autograd of the file read with torch's fake-quantize ops."""
    monkeypatch.setattr(onnx_ops, "fake_quantize", _torch_fake_quantize)
    module = classifier(read_source(path))
    captured = {}

    def keep(_, __, output):  # the layer's values as a leaf the score is differentiated by
        captured["value"] = output.detach().requires_grad_(True)
        return captured["value"]

    module._modules[layer].register_forward_hook(keep)
    logits = module(torch.from_numpy(x))
    logits[0, target].backward()
    monkeypatch.undo()
    return captured["value"].grad[0].numpy()


@pytest.mark.parametrize("name", ["qdq_tensor_u8", "qdq_channel_u8", "qdq_channel_s8", "qoperator"])
def test_int8_files_export_fused_with_the_file_metadata(name, files, exported):
    path, info = exported(name)
    quantization = info.quantization
    assert quantization["form"] == ("qoperator" if name == "qoperator" else "qdq")
    assert quantization["weights"] == ["int8"]
    assert quantization["activations"] == ["int8" if name.endswith("s8") else "uint8"]
    assert quantization["per_channel"] == (name != "qdq_tensor_u8")
    kernels = quantization["integer_kernels"]
    assert kernels["explain"] >= max(kernels["before_layers"], 5), kernels  # 5 convolutions and the sum
    assert integer_kernels(path) == kernels["explain"]
    stored = json.loads(next(p.value for p in onnx.load(str(path)).metadata_props if p.key == artifact.METADATA_KEY))
    assert stored["quantization"] == quantization and stored["format_version"] == artifact.FORMAT_VERSION


def test_a_torch_fake_quantized_export_is_read_and_matches_torch(tmp_path, monkeypatch):
    """The QDQ file torch.onnx writes for a model with torch.ao FakeQuantize modules: its pairs
    read as the file's, and the gradient is torch autograd through those same fake-quantize ops."""
    source = torch_fake_quantized_file(tmp_path / "qat.onnx", SIZE)
    assert sum(n.op_type == "QuantizeLinear" for n in onnx.load(str(source)).graph.node) == 3
    info = export_onnx_file(source, tmp_path / "qat_explain.onnx")
    assert info.quantization["form"] == "qdq" and info.quantization["activations"] == ["uint8"]
    layer = info.layers[0]
    x = _inputs()[0]
    got = _run(tmp_path / "qat_explain.onnx", x, np.array([[-1]], np.int64),
               [artifact.TARGET_INDICES, artifact.gradient_name(layer)])
    expected = torch_reference(source, layer, x, int(got[artifact.TARGET_INDICES][0, 0]), monkeypatch)
    assert cosine(got[artifact.gradient_name(layer)][0, 0], expected) >= 0.999


def test_int8_activations_are_carried_as_uint8_and_fuse_where_the_int8_file_does_not(files, exported):
    """onnxruntime's x86 kernels fuse an int8-activation QDQ file only in part; the explain-graph
    carries the same numbers as uint8 and fuses every group before its target layer."""
    path, info = exported("qdq_channel_s8")
    kernels = info.quantization["integer_kernels"]
    assert kernels["explain"] > kernels["plain"], kernels
    graph = onnx.load(str(path)).graph
    zero_points = {n.input[2] for n in graph.node if n.op_type == "QuantizeLinear"}
    types = {t.data_type for t in graph.initializer if t.name in zero_points}
    assert types == {onnx.TensorProto.UINT8}


def test_qoperator_rewrite_computes_what_the_file_computes(files):
    x = np.concatenate(_inputs())
    original = ort.InferenceSession(str(files["qoperator"]), providers=["CPUExecutionProvider"])
    rewritten = ort.InferenceSession(to_qdq(onnx.load(str(files["qoperator"]))).SerializeToString(),
                                     providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(original.run(None, {"input": x})[0], rewritten.run(None, {"input": x})[0])
    assert integer_kernels(to_qdq(onnx.load(str(files["qoperator"])))) == integer_kernels(files["qoperator"])


@pytest.mark.parametrize("name", ["qdq_channel_u8", "qdq_tensor_u8", "qoperator"])
@pytest.mark.parametrize("where", ["last", "inner"])
def test_gradients_match_torch_fake_quantize_autograd(name, where, files, exported, monkeypatch):
    """The fused explain-graph's gradient against torch autograd through
    fake_quantize_per_tensor_affine / fake_quantize_per_channel_affine, at the default layer
    (gradient independent of the input: pooling and a linear head) and at an inner one."""
    layer = None
    if where == "inner":
        candidates = [n for n, _ in tensor_candidates(classifier(read_source(files[name])), (SIZE, SIZE))]
        pairs = [n for n in candidates if ("DequantizeLinear" in n or "dequantized" in n) and not n.startswith("input")]
        layer = pairs[len(pairs) // 2]  # the residual block's output, or about
    path, info = exported(name, layer)
    layer = info.layers[0]
    for i, x in enumerate(_inputs()):
        got = _run(path, x, np.array([[-1]], np.int64),
                   [artifact.TARGET_INDICES, artifact.gradient_name(layer)])
        target = int(got[artifact.TARGET_INDICES][0, 0])
        expected = torch_reference(files[name], layer, x, target, monkeypatch)
        assert np.linalg.norm(expected) > 0
        assert cosine(got[artifact.gradient_name(layer)][0, 0], expected) >= 0.999, (i, layer)


def test_methods_run_on_an_int8_graph(exported):
    path, info = exported("qdq_channel_u8")
    explainer = Explainer(path)
    photo = _photos()[0]
    for method in ("gradcam", "gradcam++", "layercam", "xgradcam", "scorecam"):
        result = explainer.explain(photo, method, top_k=2)
        assert result.heatmaps[0].shape == (2, SIZE, SIZE)
        assert np.isfinite(result.heatmaps[0]).all() and not result.zero_maps.all(), method


def test_guided_int8_graph_stays_fused_and_agrees_with_the_float_model(files, tmp_path):
    """Guided backpropagation through every pair keeps the forward fused (its masks read the
    pairs' outputs) and drops negative gradients where a ReLU was folded into a zero point: its
    input gradient points where the float file's guided gradient does."""
    info = export_onnx_file(files["qdq_channel_u8"], tmp_path / "guided.onnx", guided=True, maps=())
    kernels = info.quantization["integer_kernels"]
    assert info.guided and kernels["explain"] >= kernels["before_layers"] > 0, kernels
    export_onnx_file(files["float"], tmp_path / "guided_float.onnx", guided=True, maps=())
    for photo in _photos()[:2]:
        quantized = Explainer(tmp_path / "guided.onnx").explain(photo, "guided-backprop")
        reference = Explainer(tmp_path / "guided_float.onnx").explain(photo, "guided-backprop",
                                                                      targets=quantized.classes)
        assert np.isfinite(quantized.attributions).all()
        assert cosine(quantized.attributions, reference.attributions) > 0.8


def test_fusion_check_counts_and_refuses(files, exported):
    """The check fails a graph that runs the file's groups in float (the float file's graph)."""
    path, info = exported("qdq_channel_u8")
    plain = onnx.load(str(files["qdq_channel_u8"]))
    counts = check_fusion(plain, path, info.layers)
    assert counts["explain"] >= counts["before_layers"] > 0
    float_graph = export_onnx_file(files["float"], path.with_name("float_explain.onnx"))
    with pytest.raises(OnnxcamError, match="fuses .* integer kernels of the file before the target layers but 0"):
        check_fusion(plain, path.with_name("float_explain.onnx"), info.layers)
    assert float_graph.quantization is None


def _with_scale(source: Path, out: Path, value: float) -> Path:
    """The QDQ file with its first activation scale set to ``value``."""
    model = onnx.load(str(source))
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    tensor = next(t for t in model.graph.initializer if t.name == node.input[1])
    tensor.CopyFrom(numpy_helper.from_array(np.array(value, np.float32), tensor.name))
    onnx.save(model, str(out))
    return out


def test_bad_int8_files_are_refused_in_one_line(files, tmp_path):
    out = tmp_path / "x.onnx"
    dynamic = one_error_line(run_cli("export", files["dynamic"], "-o", out), "DynamicQuantizeLinear",
                             "node", "quantize statically", "--int8 --calibration")
    assert "onnxcam: error:" in dynamic
    for value in (0.0, float("nan"), float("inf")):
        bad = _with_scale(files["qdq_channel_u8"], tmp_path / "bad.onnx", value)
        one_error_line(run_cli("export", bad, "-o", out), "QuantizeLinear", "zero or non-finite")
    model = onnx.load(str(files["qoperator"]))  # an integer op onnxcam does not read
    node = next(n for n in model.graph.node if n.op_type == "QLinearAdd")
    node.op_type, node.name = "QLinearWhere", "the_where"
    onnx.save(model, str(tmp_path / "unknown.onnx"))
    one_error_line(run_cli("export", tmp_path / "unknown.onnx", "-o", out), "com.microsoft::QLinearWhere",
                   "'the_where'")
    assert not out.exists()


def test_export_int8_with_calibration_from_the_command_line(files, tmp_path):
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for name, photo in zip(PHOTOS, _photos()):
        cv2.imwrite(str(calibration / f"{name}.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    out = tmp_path / "int8.onnx"
    done = run_cli("export", files["float"], "--int8", "--calibration", calibration,
                   "--calibration-method", "percentile", "-o", out)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout.strip().splitlines()[-1])["quantization"]
    assert printed["calibration"]["images"] == len(PHOTOS) and printed["calibration_method"] == "percentile"
    assert 0.0 <= printed["calibration"]["top1_agreement"] <= 1.0
    assert -1.0 <= printed["calibration"]["gradcam_correlation"] <= 1.0
    assert Explainer(out).info.quantization == printed
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error_line(run_cli("export", files["float"], "--int8", "--calibration", empty, "-o", tmp_path / "e.onnx"),
                   "--calibration", "no images")
    one_error_line(run_cli("export", files["float"], "--int8", "-o", tmp_path / "e.onnx"), "--int8 needs --calibration")
    one_error_line(run_cli("export", files["qdq_channel_u8"], "--int8", "--calibration", calibration,
                           "-o", tmp_path / "e.onnx"), "already quantized")
    assert not (tmp_path / "e.onnx").exists()


def test_quantize_file_names_a_bad_calibration_method(files, tmp_path):
    with pytest.raises(OnnxcamError, match="--calibration-method: expected one of minmax, entropy, percentile"):
        quantize_file(files["float"], tmp_path / "q.onnx", _inputs(), "input", "median")


def test_evaluate_and_the_service_on_an_int8_graph(exported, tmp_path):
    """`evaluate` (faithfulness and boxes) and `serve` take an INT8 explain-graph as any other."""
    pytest.importorskip("uvicorn")
    from benchmarks.serving import Server
    from onnxcam.render.overlay import encode_png
    from support.paths import ROOT

    path, info = exported("qdq_channel_u8")
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, photo in zip(PHOTOS, _photos()):
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    (tmp_path / "boxes.json").write_text(json.dumps({"chelsea.png": [[20, 20, 200, 200]]}))
    done = run_cli("evaluate", path, folder, "--method", "gradcam,layercam", "--boxes", tmp_path / "boxes.json",
                   "--steps", "5", "-o", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["images"] == len(PHOTOS) and set(summary["methods"]) == {"gradcam", "layercam"}
    library = Explainer(path).explain(_photos()[0], "gradcam", top_k=2)
    with Server([path, "--threads", "1"], tmp_path / "server.log", env={"PYTHONPATH": str(ROOT)}) as server:
        answer = server.client().explain(encode_png(_photos()[0]), method="gradcam", top_k=2, raw="1")
    assert answer.status == 200, answer.body
    body = answer.json()
    assert [c["class"] for c in body["classes"]] == library.classes[0].tolist()
    np.testing.assert_allclose(np.array(body["explanations"][0]["map"]), library.raw_maps[0, 0], rtol=1e-5)


@pytest.mark.slow
def test_pretrained_lite0_int8_keeps_its_classes_maps_and_torch_gradients(tmp_path, monkeypatch):
    """EfficientNet-Lite0 (pretrained) quantized while exporting, on scikit-image's photos at
    224 px: the top class agrees where the float32 model is confident, each Grad-CAM map
    correlates >= 0.9 with the float32 one, and the gradient is torch's fake-quantize autograd."""
    import skimage.data

    from onnxcam_export.exporter import export_plain
    from onnxcam_export.models import recipe

    folder = tmp_path / "calibration"
    folder.mkdir()
    images = [getattr(skimage.data, name)() for name in PHOTOS]
    for name, image in zip(PHOTOS, images):
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    done = run_cli("export", "efficientnet_lite0", "--int8", "--calibration", folder, "-o", tmp_path / "int8.onnx")
    assert done.returncode == 0, done.stderr
    quantization = json.loads(done.stdout.strip().splitlines()[-1])["quantization"]
    assert quantization["calibration"]["gradcam_correlation"] >= 0.9
    kernels = quantization["integer_kernels"]
    assert kernels["explain"] >= kernels["before_layers"] >= 50, kernels
    assert run_cli("export", "efficientnet_lite0", "-o", tmp_path / "fp32.onnx").returncode == 0
    reference = Explainer(tmp_path / "fp32.onnx").explain(images, "gradcam")
    quantized = Explainer(tmp_path / "int8.onnx").explain(images, "gradcam", targets=reference.classes)
    for i in range(len(images)):
        if reference.probs[i, 0] >= 0.5:
            assert quantized.logits[i].argmax() == reference.classes[i, 0], PHOTOS[i]
        assert np.corrcoef(reference.heatmaps[i][0].ravel(), quantized.heatmaps[i][0].ravel())[0, 1] >= 0.9
    # the gradient: the INT8 file (quantized here again, as the command does) against torch
    plain = tmp_path / "lite0.onnx"
    export_plain(recipe("efficientnet_lite0").build("default").eval(), torch.randn(2, 3, 224, 224), plain)
    info = Explainer(tmp_path / "int8.onnx").info
    quantize_file(plain, tmp_path / "lite0_int8.onnx", [preprocess_one(image, info) for image in images], "input")
    path = tmp_path / "lite0_explain.onnx"
    layer = export_onnx_file(tmp_path / "lite0_int8.onnx", path, input_size=(224, 224)).layers[0]
    for image in images[:3]:
        x = preprocess_one(image, info)
        got = _run(path, x, np.array([[-1]], np.int64), [artifact.TARGET_INDICES, artifact.gradient_name(layer)])
        expected = torch_reference(tmp_path / "lite0_int8.onnx", layer, x, int(got[artifact.TARGET_INDICES][0, 0]),
                                   monkeypatch)
        assert cosine(got[artifact.gradient_name(layer)][0, 0], expected) >= 0.999


def preprocess_one(image: np.ndarray, info: artifact.ArtifactInfo) -> np.ndarray:
    from onnxcam.images.geometry import preprocess

    return preprocess([image], info)[0]
