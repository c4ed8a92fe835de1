"""Backward rewrites of onnxcam_export.passes.fx.decompositions, run by onnxruntime, against torch autograd."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from onnxcam.runtime.artifact import PLAIN_INPUT_GRADIENTS
from onnxcam_export import export
from onnxcam_export.passes.fx.decompositions import _blocked, _positive, max_pool2d_with_indices
from support.torch_reference import cosine, relative_error

# odd and unequal, so strided outputs overhang or fall short of the input
SIZE = (45, 55)


def _head(channels: int) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 5)]


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    """A batch norm with non-trivial statistics and some negative scales."""
    norm = nn.BatchNorm2d(channels)
    norm.running_mean.uniform_(-0.5, 0.5)
    norm.running_var.uniform_(0.5, 2.0)
    norm.weight.data.uniform_(-1.5, 1.5)
    norm.bias.data.uniform_(-0.5, 0.5)
    return norm


def _convolutions(*convs: nn.Conv2d) -> nn.Sequential:
    """The convolutions, each followed by a batch norm and a ReLU, and a classifier head."""
    layers: list[nn.Module] = []
    for conv in convs:
        layers += [conv, _batch_norm(conv.out_channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, *_head(convs[-1].out_channels))


def _strided() -> nn.Sequential:
    """Strided convolutions: padded, unpadded, 1x1, depthwise, asymmetric."""
    return _convolutions(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 16, 1, stride=2),
                         nn.Conv2d(16, 16, 3, stride=2, groups=16),
                         nn.Conv2d(16, 16, (3, 1), stride=(2, 1), padding=(0, 1)))


def _dilated() -> nn.Sequential:
    """Dilated and grouped convolutions, and padding wider than the kernel reaches."""
    return _convolutions(nn.Conv2d(3, 16, 5, stride=3, padding=3, dilation=2),
                         nn.Conv2d(16, 16, 3, padding=2, dilation=2, groups=4), nn.Conv2d(16, 16, 3, padding=3))


class _Residual(nn.Module):
    """A convolution whose output feeds a batch norm and, unnormalized, a second branch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.norm = _batch_norm(16)
        self.side = nn.Conv2d(16, 16, 1)
        self.head = nn.Sequential(*_head(16))

    def forward(self, x):
        y = self.conv(x)
        return self.head(torch.relu(self.norm(y)) + self.side(y))


def _pools() -> nn.Sequential:
    """Max pooling straight on the input (ties on quantized inputs) and after ReLUs."""
    return nn.Sequential(
        nn.MaxPool2d(3, stride=2, padding=1), nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2, stride=2, ceil_mode=True), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(3, stride=1, padding=1, dilation=2), nn.Conv2d(16, 16, 1), nn.ReLU(), *_head(16))


def _average_pools() -> nn.Sequential:
    """Average pooling whose windows divide by different counts: padding left out of the count
    (Inception's 3x3 pools), windows overhanging the input (ceil mode), padding counted."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.Conv2d(16, 16, 1), nn.ReLU(),
        nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False), nn.Conv2d(16, 16, 1), nn.ReLU(),
        *_head(16))


class _Eca(nn.Module):
    """ECA channel attention (timm's ECA-NFNet): 1-D convolutions across the channels, one strided."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.mix = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.strided = nn.Conv1d(1, 2, 3, stride=2, padding=1)
        self.last = nn.Conv2d(16, 16, 1)
        self.head = nn.Sequential(*_head(16))

    def forward(self, x):
        y = torch.relu(self.conv(x))
        attention = torch.sigmoid(self.mix(y.mean((2, 3)).unsqueeze(1)))  # [N, 1, C]
        side = self.strided(attention).flatten(1)  # [N, C]
        y = y * attention.transpose(1, 2).unsqueeze(-1) + side[:, :, None, None]
        return self.head(torch.relu(self.last(y)))


MODELS = {"strided": _strided, "dilated": _dilated, "residual": _Residual, "pools": _pools,
          "average_pools": _average_pools, "eca": _Eca}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("quantized", [False, True])
def test_input_gradient_matches_autograd(tmp_path, name, quantized):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    layer = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][-1]
    path = tmp_path / f"{name}.onnx"
    export(model, path, [layer], input_size=SIZE, plain_input_gradient=True)
    x = np.random.default_rng(1).standard_normal((3, 3) + SIZE).astype(np.float32)
    if quantized:  # equal values inside pooling windows: the first maximum takes the gradient
        x = np.round(x * 2) / 2
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"input": x, "targets": np.array([[0], [3], [4]])}
    for spec in session.get_inputs():
        if spec.name == "layer_input":
            feed[spec.name] = np.zeros([0] + list(spec.shape[1:]), np.float32)
    (got,) = session.run([PLAIN_INPUT_GRADIENTS], feed)

    xt = torch.from_numpy(x).requires_grad_(True)
    model(xt).gather(1, torch.tensor([[0], [3], [4]])).sum().backward()
    expected = xt.grad.numpy()[:, None]
    assert got.shape == expected.shape
    assert cosine(got, expected) >= 0.9999
    assert relative_error(got, expected) <= 1e-4


@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil_mode", [
    (3, 2, 1, 1, False), (2, 2, 0, 1, True), (3, 1, 1, 2, False), (3, 3, 1, 1, True), (1, 2, 0, 1, False)])
def test_max_pool_indices_are_torchs(kernel, stride, padding, dilation, ceil_mode):
    """The same values and indices as torch, ties included (the first maximum of a window)."""
    torch.manual_seed(0)
    for x in (torch.randn(2, 3, 9, 12), torch.randint(0, 3, (2, 3, 9, 12)).float(), torch.randn(3, 8, 7).relu()):
        args = ([kernel] * 2, [stride] * 2, [padding] * 2, [dilation] * 2, ceil_mode)
        for got, expected in zip(max_pool2d_with_indices(x, *args), torch.ops.aten.max_pool2d_with_indices(x, *args)):
            assert torch.equal(got, expected)


def _special_values(dtype: torch.dtype) -> torch.Tensor:
    """[2, 16, 4, 4]: zeros of both signs, the smallest normals, infinities, random values."""
    tiny, big = torch.finfo(dtype).tiny, torch.finfo(dtype).max
    special = torch.tensor([0.0, -0.0, tiny, -tiny, 2 * tiny, big, -big, float("inf"), float("-inf"), 1.0])
    x = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    x.view(-1)[:special.numel()] = special
    x.view(-1)[50:80] = 0.0
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_positive_mask_is_exact_on_normal_floats(dtype):
    x = _special_values(dtype)
    assert torch.equal(_positive(x), (x > 0).to(dtype))
    denormal = torch.tensor([torch.finfo(dtype).tiny / 4], dtype=dtype).reshape(1, 1, 1, 1)
    assert 0 < float(_positive(denormal)) < 1  # documented: a partial mask
    assert torch.equal(_blocked(x), x)


def test_positive_mask_and_identity_convolution_run_exactly_in_onnxruntime(tmp_path):
    """onnxruntime fuses the mask's clamp into its blocked convolution; the mask must still be
    exactly (x > 0) and the identity convolution exactly x."""
    class Masks(nn.Module):
        def forward(self, x):
            return _positive(x), _blocked(x)

    x = _special_values(torch.float32)
    path = tmp_path / "masks.onnx"
    torch.onnx.export(Masks(), (x,), str(path), dynamo=True, opset_version=18, verbose=False)
    mask, same = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    assert np.array_equal(mask, (x > 0).float().numpy())
    assert np.array_equal(same, x.numpy())


def test_gradient_broadcasts_become_exact_products():
    """Average pooling's backward (expand, then divide by h*w) comes out of the broadcast pass
    as a division of the small tensor and a product with ones, bit for bit the same; an
    expand of a weight (no symbolic dimension) is left for the expanded-constant check."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from onnxcam_export.exporter import _batch_symbolic
    from onnxcam_export.passes.fx.broadcasts import broadcast_expands

    weight = torch.randn(4, 1, 1)

    def pool_gradient(x):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad((x.mean(dim=(2, 3)) ** 2).sum(), x)
        rows = grad[:x.shape[0] - 1]  # a slice and a view after the broadcast, as the wrapper's
        return rows.reshape(rows.shape[0], 1, 4, 7, 7), weight.expand(4, 7, 7) * 2.0

    x = torch.randn(3, 4, 7, 7)
    module = make_fx(pool_gradient, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*_batch_symbolic([x]))
    before = [t.clone() for t in module(x)]

    def expands():
        return sum(node.target is torch.ops.aten.expand.default for node in module.graph.nodes)

    count = expands()
    assert broadcast_expands(module) == 1
    assert expands() == count - 1  # the gradient's expand went, the weight's stayed, still of the weight
    assert [node.args[0].op for node in module.graph.nodes
            if node.target is torch.ops.aten.expand.default][-1] == "get_attr"
    after = module(x)
    for old, new in zip(before, after):
        assert torch.equal(old, new)
    expected = (2 * x.mean(dim=(2, 3)) / 49)[..., None, None].expand_as(x)[:2].reshape(2, 1, 4, 7, 7)
    assert torch.equal(after[0], expected)
    output = next(node for node in module.graph.nodes if node.op == "output")
    assert output.args[0][0].target is torch.ops.aten.mul.Tensor  # the product writes the output
