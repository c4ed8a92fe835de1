"""Shared fixtures: models exported once per test session, and the synthetic explain-graph
(tests/support/graphs.py) most runtime tests explain with."""
from __future__ import annotations

import pytest

pytest.register_assert_rewrite("support")  # the helpers' asserts report their values too

from support.graphs import SyntheticModel, make_explain_graph  # noqa: E402  (after the rewrite is registered)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> SyntheticModel:
    """The synthetic explain-graph at 24 x 32, five classes; class 2's Grad-CAM is all zero."""
    return make_explain_graph(tmp_path_factory.mktemp("synthetic") / "model.onnx", negative_class=2)


@pytest.fixture(scope="session")
def synthetic_explainer(synthetic):
    from onnxcam import Explainer

    return Explainer(synthetic.path, providers=["cpu"])


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
    from onnxcam_export import export, models

    recipe = models.recipe("efficientnet_lite0")
    model = recipe.build("default").eval()
    path = tmp_path_factory.mktemp("lite0") / "lite0.onnx"
    export(model, path, recipe.layers, mean=recipe.mean, std=recipe.std, labels=recipe.labels(),
           source=recipe.source)
    return model, path
