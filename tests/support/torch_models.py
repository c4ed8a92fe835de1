"""Small torch classifiers the export tests share (random init unless trained here)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

CLASSES = 10


def digits_cnn():
    """A small GAP CNN trained for a few seconds on sklearn's 8x8 digits: (model, the first 16
    inputs [16, 3, 8, 8] normalized with mean and std 0.5, training accuracy)."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = load_digits()
    images = digits.images / 16.0
    x = torch.tensor((images[:, None].repeat(3, axis=1) - 0.5) / 0.5, dtype=torch.float32)
    y = torch.tensor(digits.target)
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(3, 16, 3, padding=1))
    model.add_module("relu1", nn.ReLU())
    model.add_module("pool", nn.MaxPool2d(2))
    model.add_module("conv2", nn.Conv2d(16, 32, 3, padding=1))
    model.add_module("relu2", nn.ReLU())
    model.add_module("gap", nn.AdaptiveAvgPool2d(1))
    model.add_module("flatten", nn.Flatten())
    model.add_module("fc", nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(120):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    model.eval()
    accuracy = float((model(x).argmax(1) == y).float().mean())
    return model, x[:16].numpy(), accuracy


def pooled_cnn() -> nn.Module:
    """conv (stride 2) -> ReLU -> conv -> ReLU ("3") -> adaptive average pool -> linear, for
    32 x 32 inputs: the pooling backward the ONNX passes rewrite."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(32, CLASSES)).eval()


class ConvHead(nn.Module):
    """SqueezeNet's head: a 1x1 convolution to the classes, an in-place ReLU, average pooling;
    ``mixing`` ends in a softmax, which mixes the classes."""

    def __init__(self, mixing: bool = False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(inplace=True),
                                      nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Conv2d(24, CLASSES, 1), nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d(1))
        self.mixing = mixing

    def forward(self, x):
        logits = torch.flatten(self.classifier(self.features(x)), 1)
        return logits.softmax(dim=1) if self.mixing else logits


def calibrate_batch_norm(model: nn.Module, size: int) -> nn.Module:
    """Give random-init BatchNorm layers the statistics of real activations, so deep
    random models keep O(1) activations instead of collapsing to float noise."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, size, size, generator=torch.Generator().manual_seed(1)))
    return model.eval()


def plain_onnx(model, path: Path, size: int) -> Path:
    """The model as a plain ONNX file, as a user writes it: torch.onnx.export, opset 18, dynamo."""
    torch.onnx.export(model, (torch.randn(1, 3, size, size),), str(path), dynamo=True, opset_version=18,
                      input_names=["image"], output_names=["scores"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    return path
