"""Plain files of the shapes users bring: grayscale inputs, token grids with and without prefix
tokens, attention tensors that must never be taken for feature maps, `onnxcam export --check` and
`--layers`, and files that are not classifiers or not whole. Each exported file passes the
export's own check against its original (logits, finite differences); the default layer's
shape and meaning are asserted, and its gradient is compared with float64 torch autograd."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from onnxcam.api.explainer import Explainer
from onnxcam_export.onnx_file import classifier, export_onnx_file, layer_choices, read_source
from support.cli import one_error_line, run_cli
from support.graphs import all_outputs
from support.torch_reference import cosine, relative_error


def legacy_onnx(model: nn.Module, path, shape, opset: int = 13, **names) -> str:
    """``model`` saved by torch.onnx's TorchScript exporter (what most files out there are)."""
    torch.onnx.export(model.eval(), torch.randn(*shape), str(path), dynamo=False, opset_version=opset,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, **names)
    return str(path)


class Attention(nn.Module):
    """Multi-head self-attention over [N, T, C] tokens, written out (softmax(q k^T) v)."""

    def __init__(self, dim: int, heads: int = 2):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        n, t, c = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        weights = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(dim=-1)  # [N, heads, T, T]
        return self.proj((weights @ v).transpose(1, 2).reshape(n, t, c))


class EfficientFormerLike(nn.Module):
    """A convolutional stage, then the 4 x 4 map as 16 tokens without a class token, one
    attention block, a layer norm and the mean over tokens: EfficientFormer's last stage."""

    def __init__(self, dim: int = 32):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 4, 4), nn.BatchNorm2d(dim), nn.ReLU(),
                                  nn.Conv2d(dim, dim, 3, 4, 1), nn.GELU())
        self.attn, self.norm, self.head = Attention(dim), nn.LayerNorm(dim), nn.Linear(dim, 6)

    def forward(self, x):
        tokens = self.stem(x).flatten(2).transpose(1, 2)  # [N, 16, C]
        tokens = tokens + self.attn(tokens)
        return self.head(self.norm(tokens).mean(dim=1))


class ViTLike(nn.Module):
    """Patch tokens plus ``prefix`` class/distillation tokens, two attention blocks, the class
    token read after the norm: the patch grid reaches the logits only through attention."""

    def __init__(self, prefix: int = 1, dim: int = 32):
        super().__init__()
        torch.manual_seed(1)
        self.patch = nn.Conv2d(3, dim, 8, 8)
        self.prefix = nn.Parameter(torch.randn(1, prefix, dim))
        self.blocks = nn.ModuleList([Attention(dim) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 4)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.prefix.expand(x.shape[0], -1, -1), tokens], dim=1)
        for norm, block in zip(self.norms, self.blocks):
            tokens = tokens + block(norm(tokens))
        return self.head(self.norm(tokens)[:, 0])


def _tokens_gradient(model: nn.Module, module: nn.Module, x: np.ndarray) -> np.ndarray:
    """d top logit / d output of ``module`` (float64 autograd), as [N, T, C]."""
    model = model.double()
    captured = {}
    handle = module.register_forward_hook(lambda m, a, out: captured.setdefault("out", out))
    logits = model(torch.from_numpy(x).double())
    handle.remove()
    top = logits.argmax(dim=1)
    (grad,) = torch.autograd.grad(logits.gather(1, top[:, None]).sum(), captured["out"])
    model.float()
    return grad.numpy()


def test_attention_model_defaults_to_its_token_grid(tmp_path):
    """EfficientFormer-like at 64 px (legacy exporter, opset 13): the [N, 2, 16, 16] attention
    weights are never candidates though their shape is a map's; the default layer is the normed
    16-token grid (``patches``: no class token), read as a 4 x 4 map, whose gradient equals
    autograd's; the map explains a photo."""
    model = EfficientFormerLike().eval()
    path = legacy_onnx(model, tmp_path / "ef.onnx", (1, 3, 64, 64))
    choices = layer_choices(classifier(read_source(path)), (64, 64))
    attention = [c for c in choices if c.excluded and c.excluded.startswith("attention")]
    assert any(c.shape[1:] == (2, 16, 16) for c in attention)
    info = export_onnx_file(path, tmp_path / "graph.onnx")
    (layer,) = info.layers
    assert info.layouts[layer] == "patches" and [c.shape for c in choices if c.name == layer] == [(1, 16, 32)]
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    out = all_outputs(tmp_path / "graph.onnx", x, np.array([[-1], [-1]]))
    assert out[f"activations/{layer}"].shape == (2, 32, 4, 4)
    reference = _tokens_gradient(model, model.norm, x)  # [N, 16, C]
    got = out[f"gradients/{layer}"][:, 0]  # [N, C, 4, 4]
    assert cosine(got.reshape(2, 32, 16).transpose(0, 2, 1), reference) >= 0.9999
    result = Explainer(tmp_path / "graph.onnx").explain((np.random.default_rng(3).random((64, 64, 3)) * 255)
                                                       .astype(np.uint8), method="gradcam")
    assert not result.zero_maps[0, 0] and np.isfinite(result.raw_maps).all()


@pytest.mark.parametrize("prefix, layout", [(1, "tokens"), (2, "distilled")])
def test_vit_default_layer_is_the_last_grid_the_gradient_reaches(tmp_path, prefix, layout):
    """A ViT (class token) or DeiT (class + distillation tokens): after the last block only the
    class token reaches the logits, so the default layer is the last block's normed input (where
    pytorch-grad-cam users point their ``reshape_transform``); its patch gradient equals autograd's."""
    model = ViTLike(prefix).eval()
    path = legacy_onnx(model, tmp_path / "vit.onnx", (1, 3, 32, 32))
    info = export_onnx_file(path, tmp_path / "graph.onnx")
    (layer,) = info.layers
    assert info.layouts[layer] == layout
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    out = all_outputs(tmp_path / "graph.onnx", x, np.array([[-1], [-1]]))
    reference = _tokens_gradient(model, model.norms[1], x)[:, prefix:]  # the grid of the last block's norm
    got = out[f"gradients/{layer}"][:, 0]
    assert cosine(got.reshape(2, 32, 16).transpose(0, 2, 1), reference) >= 0.9999


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_grayscale_file(tmp_path, layout):
    """A 1-channel file takes the luma of the RGB image: the graph's logits on a gray photo equal
    the file's on its one channel; the default statistics are ImageNet's averaged; a colour photo
    is converted."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    model = net if layout == "NCHW" else nn.Sequential(Permute(), net)
    shape = (1, 1, 28, 28) if layout == "NCHW" else (1, 28, 28, 1)
    path = legacy_onnx(model, tmp_path / "gray.onnx", shape)
    info = export_onnx_file(path, tmp_path / "graph.onnx")
    assert info.mean == [0.449] * 3 and info.std == [0.226] * 3
    gray = np.random.default_rng(0).random((2, 28, 28)).astype(np.float32)
    x = np.repeat(((gray - 0.449) / 0.226)[:, None], 3, axis=1)
    out = all_outputs(tmp_path / "graph.onnx", x, np.array([[-1], [-1]]))
    feed = x[:, :1] if layout == "NCHW" else x[:, :1].transpose(0, 2, 3, 1)
    expected = ort.InferenceSession(path).run(None, {"x": np.ascontiguousarray(feed)})[0]
    assert relative_error(out["logits"], expected) <= 1e-5
    rgb = (np.random.default_rng(1).random((28, 28, 3)) * 255).astype(np.uint8)
    result = Explainer(tmp_path / "graph.onnx").explain(rgb, method="gradcam")
    assert result.heatmaps[0].shape == (1, 28, 28)
    bad = run_cli("export", path, "-o", tmp_path / "bad.onnx", "--mean", "0.1", "0.2", "0.3", "--std", "0.2")
    one_error_line(bad, "grayscale file has one channel")


class Permute(nn.Module):
    def forward(self, x):
        return x.permute(0, 3, 1, 2)


def test_check_lists_ops_head_and_layers(tmp_path):
    """`--check` names the ops, says which are unsupported (exit 1) and proposes the layer and
    the head (exit 0), writing nothing."""
    path = legacy_onnx(EfficientFormerLike(), tmp_path / "ef.onnx", (1, 3, 64, 64))
    done = run_cli("export", "--check", path)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "Softmax" in text and "unsupported ops: none" in text and "head: softmax, 6 classes" in text
    assert "attention weights" in text and "(patches)" in text.split("proposed target layer:")[0]
    model = onnx.load(path)
    model.graph.node[3].op_type = "NoSuchOp"
    onnx.save(model, tmp_path / "bad.onnx")
    bad = run_cli("export", "--check", tmp_path / "bad.onnx")
    assert bad.returncode == 1 and "unsupported ops: NoSuchOp" in bad.stdout and "not exportable" in bad.stdout
    layers = run_cli("export", path, "--layers")
    assert layers.returncode == 0 and "not a candidate: attention weights" in layers.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx", "ef.onnx"]


def test_files_that_are_not_classifiers_are_refused(tmp_path):
    """A detector's several outputs, a segmentation map, a truncated file, missing external
    weights: one line each, naming what is wrong, and no file written; a failed export keeps the
    older graph at the output path."""
    torch.manual_seed(0)

    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.boxes, self.scores = nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 4, 1), nn.Conv2d(8, 3, 1)

        def forward(self, x):
            f = self.body(x)
            return self.boxes(f).flatten(2), self.scores(f).flatten(2)

    detector = str(tmp_path / "det.onnx")
    torch.onnx.export(Detector().eval(), torch.randn(1, 3, 32, 32), detector, dynamo=False, opset_version=13,
                      input_names=["x"], output_names=["boxes", "scores"])
    one_error_line(run_cli("export", detector, "-o", tmp_path / "g.onnx"), "has 2 outputs", "--output-name")
    one_error_line(run_cli("export", detector, "-o", tmp_path / "g.onnx", "--output-name", "boxes"),
                   "map per position", "not [N, classes]")
    segmenter = legacy_onnx(nn.Conv2d(3, 21, 3, padding=1), tmp_path / "seg.onnx", (1, 3, 32, 32))
    one_error_line(run_cli("export", segmenter, "-o", tmp_path / "g.onnx"), "segmentation")
    data = open(segmenter, "rb").read()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    one_error_line(run_cli("export", tmp_path / "cut.onnx", "-o", tmp_path / "g.onnx"), "truncated")
    classifier_path = legacy_onnx(EfficientFormerLike(), tmp_path / "ef.onnx", (1, 3, 64, 64))
    model = onnx.load(classifier_path)
    onnx.save(model, tmp_path / "external.onnx", save_as_external_data=True, location="external.bin",
              size_threshold=0)
    (tmp_path / "external.bin").unlink()
    one_error_line(run_cli("export", tmp_path / "external.onnx", "-o", tmp_path / "g.onnx"), "external.bin")
    assert not (tmp_path / "g.onnx").exists()
    old = tmp_path / "kept.onnx"
    old.write_bytes(b"an older graph")
    one_error_line(run_cli("export", segmenter, "-o", old), "segmentation")
    assert old.read_bytes() == b"an older graph"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


class ReluThenBatchNorm(nn.Module):
    """A 32 x 32 classifier ordered as many Keras-made face-attribute nets are: ReLU, then batch
    norm, then Flatten -> Gemm -> Softmax. The norm's running mean (5) exceeds what the ReLU
    gives, so its output is negative everywhere; the class's weights are positive."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.relu, self.norm = nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 16 * 16, 2)
        with torch.no_grad():
            self.norm.running_mean.fill_(5.0)
            self.fc.weight[0].uniform_(0.0, 0.1)
            self.fc.weight[1].uniform_(-0.1, 0.0)

    def forward(self, x):
        return self.fc(self.norm(self.relu(self.conv(x))).flatten(1)).softmax(dim=1)


def test_a_batch_norm_after_the_last_relu_is_not_the_default_layer(tmp_path):
    """The 32 x 32 face-attribute case: at the batch norm's output (the last spatial tensor) the
    Grad-CAM and LayerCAM maps of the class are zero (its activations are all negative, its
    weights positive); the default layer is the ReLU's output before it, where Grad-CAM,
    Grad-CAM++ and LayerCAM give the same class a real map."""
    path = legacy_onnx(ReluThenBatchNorm().eval(), tmp_path / "face.onnx", (1, 3, 32, 32), opset=18)
    module = classifier(read_source(path))
    candidates = [c.name for c in layer_choices(module, (32, 32)) if c.excluded is None]
    info = export_onnx_file(path, tmp_path / "graph.onnx", maps=())
    assert info.layers[0] != candidates[-1] and module.rectified_source(candidates[-1]) == info.layers[0]
    checked = run_cli("export", "--check", path)
    assert f"proposed target layer: {info.layers[0]} (the rectifier's output" in checked.stdout
    export_onnx_file(path, tmp_path / "last.onnx", [candidates[-1]], maps=())
    image = (np.random.default_rng(4).random((32, 32, 3)) * 255).astype(np.uint8)
    for graph, methods, zero in (("last.onnx", ("gradcam", "layercam"), True),
                                 ("graph.onnx", ("gradcam", "gradcam++", "layercam"), False)):
        explainer = Explainer(tmp_path / graph)
        for method in methods:
            result = explainer.explain(image, method=method, targets=[0])
            assert bool(result.zero_maps[0, 0]) == zero, (graph, method)


class SelfNormalizing(nn.Module):
    """A classifier that normalizes its own input: uint8 pixels cast and divided by 255, or float
    pixels in [0, 255] shifted and divided by 127.5."""

    def __init__(self, uint8: bool):
        super().__init__()
        torch.manual_seed(0)
        self.uint8 = uint8
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(8, 3))

    def forward(self, x):
        x = (x.float() / 255 - 0.5) / 0.25 if self.uint8 else (x - 127.5) / 127.5
        return self.net(x)


@pytest.mark.parametrize("uint8", [True, False], ids=["uint8 input", "float pixels normalized in the graph"])
def test_inputs_the_file_normalizes_itself(tmp_path, uint8):
    """A uint8 input, or a graph that normalizes its own input: the graph is fed raw pixels
    (scale 255, mean 0, std 1: nothing applied twice), its logits on a photo equal the file's, and
    the export's finite-difference check passes on the continuous pixels."""
    path = str(tmp_path / "raw.onnx")
    dummy = torch.zeros(1, 3, 32, 32, dtype=torch.uint8 if uint8 else torch.float32)
    torch.onnx.export(SelfNormalizing(uint8).eval(), dummy, path, dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    info = export_onnx_file(path, tmp_path / "graph.onnx")
    assert (info.scale, info.mean, info.std) == (255, [0.0] * 3, [1.0] * 3)
    assert info.extra["onnx_uint8"] == uint8 and info.extra["onnx_normalizes"] == (not uint8)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32)).astype(np.uint8)
    out = all_outputs(tmp_path / "graph.onnx", pixels.astype(np.float32), np.array([[-1], [-1]]))
    expected = ort.InferenceSession(path).run(None, {"x": pixels if uint8 else pixels.astype(np.float32)})[0]
    assert relative_error(out["logits"], expected) <= 1e-5


@pytest.mark.parametrize("keep_io_types", [False, True], ids=["float16 io", "float32 io"])
def test_float16_file_is_read_in_float32(tmp_path, keep_io_types):
    """onnxconverter-common's float16 files (with float16 or float32 inputs and outputs) are read as
    the same graph in float32, their weights upcast exactly: the explain-graph's logits are the
    float16 file's to float16 rounding, and the export's checks run on the float32 reading."""
    from onnxconverter_common import float16

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 4))
    path = legacy_onnx(net, tmp_path / "fp32.onnx", (1, 3, 32, 32), opset=17)
    half = float16.convert_float_to_float16(onnx.load(path), keep_io_types=keep_io_types)
    onnx.save(half, tmp_path / "fp16.onnx")
    info = export_onnx_file(tmp_path / "fp16.onnx", tmp_path / "graph.onnx")
    assert info.extra["onnx_float16"] and info.precision == "float32"
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    out = all_outputs(tmp_path / "graph.onnx", x, np.array([[-1], [-1]]))
    feed = x if keep_io_types else x.astype(np.float16)
    expected = ort.InferenceSession(str(tmp_path / "fp16.onnx")).run(None, {"x": feed})[0].astype(np.float32)
    assert relative_error(out["logits"], expected) <= 1e-2
