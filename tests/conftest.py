"""Shared fixtures: models exported once per test session."""
from __future__ import annotations

import pytest


def digits_cnn():
    """A small GAP CNN trained for a few seconds on sklearn's 8x8 digits."""
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

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


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """Factory: export (name, layer, size) once per session; returns (model, path)."""
    import torch
    import torchvision

    from onnxcam_export import export

    cache: dict = {}
    folder = tmp_path_factory.mktemp("exports")

    def get(name: str, layer: str | None, size: int, **options):
        key = (name, layer, size, tuple(sorted(options.items())))
        if key not in cache:
            torch.manual_seed(0)
            model = torchvision.models.get_model(name).eval()
            path = folder / f"{name}_{layer}_{size}_{len(cache)}.onnx"
            export(model, path, [layer] if layer else None, input_size=(size, size), **options)
            cache[key] = (model, path)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def lite0(tmp_path_factory):
    """The pretrained EfficientNet-Lite0 from PyPI, exported through the Python API."""
    from onnxcam_export import models
    from onnxcam_export import export

    recipe = models.recipe("efficientnet_lite0")
    model = recipe.build("default").eval()
    path = tmp_path_factory.mktemp("lite0") / "lite0.onnx"
    export(model, path, recipe.layers, mean=recipe.mean, std=recipe.std, labels=recipe.labels(),
           source=recipe.source)
    return model, path
