"""Eval-mode batch norms after a convolution cost nothing in an explain-graph exported by name:
the translation folds each into its convolution (and onnxruntime the rest), so the graph runs
the same ops as the model with the batch norms folded in beforehand (what a plain file saved by
``torch.onnx.export`` holds). The values are those of float64 autograd of the unfolded model, a
batch norm works as a target layer, and the export leaves the user's model as it was."""
from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.fx.experimental.optimization import fuse  # noqa: E402

from onnxcam_export import export  # noqa: E402
from support.graphs import op_counts  # noqa: E402
from support.torch_reference import check_against_float64  # noqa: E402


def _net() -> nn.Module:
    """Conv-BN-ReLU twice (one convolution without bias), pooling, a linear head; batch norms
    with statistics and affine parameters far from the identity."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
    return net.eval()




def _state(model: nn.Module) -> tuple:
    return ([type(m) for m in model.modules()], {k: v.clone() for k, v in model.state_dict().items()},
            [p.requires_grad for p in model.parameters()])


def _unchanged(model: nn.Module, before: tuple) -> bool:
    types, state, flags = _state(model)
    return (types == before[0] and flags == before[2] and state.keys() == before[1].keys()
            and all(torch.equal(state[k], before[1][k]) for k in state))


def test_batch_norms_fold_into_the_convolutions(tmp_path):
    net = _net()
    before = _state(net)
    export(net, tmp_path / "net.onnx", ["2"], input_size=(16, 16))
    assert _unchanged(net, before)
    assert op_counts(tmp_path / "net.onnx")["BatchNormalization"] == 0
    folded = fuse(copy.deepcopy(net))  # the batch norms folded into the convolutions' weights
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    export(folded, tmp_path / "folded.onnx", ["2"], input_size=(16, 16))
    # no per-channel Mul/Add or BatchNormalization left over: the same ops, once optimized, as the folded model's
    assert op_counts(tmp_path / "net.onnx", optimized=True) == op_counts(tmp_path / "folded.onnx", optimized=True)
    check_against_float64(net, tmp_path / "net.onnx", "2", (16, 16))


def test_batch_norm_as_target_layer(tmp_path):
    net = _net()
    before = _state(net)
    export(net, tmp_path / "bn.onnx", ["1"], input_size=(16, 16))  # the first batch norm's output
    assert _unchanged(net, before)
    check_against_float64(net, tmp_path / "bn.onnx", "1", (16, 16))


def test_timm_resnet_has_no_batch_norm_left(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=10).eval()
    before = _state(model)
    export(model, tmp_path / "r.onnx", ["layer4"], input_size=(64, 64))
    assert _unchanged(model, before)
    assert op_counts(tmp_path / "r.onnx")["BatchNormalization"] == 0
    optimized = op_counts(tmp_path / "r.onnx", optimized=True)
    # the model's 20 convolutions (some fused with their ReLU), the batch norms inside them
    assert optimized["BatchNormalization"] == 0 and optimized["Conv"] + optimized["FusedConv"] == 20
    check_against_float64(model, tmp_path / "r.onnx", "layer4", (64, 64))
