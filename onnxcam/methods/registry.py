"""Every explanation method by name."""
from __future__ import annotations

import functools
import inspect

from onnxcam.errors import OnnxcamError
from onnxcam.methods.base import Method
from onnxcam.methods.gradient import (
    CAM,
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from onnxcam.methods.gradient_free import RISE, Occlusion
from onnxcam.methods.input_gradients import (
    GuidedBackprop,
    GuidedGradCAM,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
)
from onnxcam.methods.perturbation import AblationCAM, ScoreCAM

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (
    GradCAM, CAM, GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, EigenCAM, EigenGradCAM,
    ScoreCAM, AblationCAM, GuidedBackprop, GuidedGradCAM, Saliency, SmoothGrad,
    IntegratedGradients, RISE, Occlusion)}


def get_method(name: str, **options) -> Method:
    """An instance of the method registered as ``name`` (case-insensitive). Options a method
    takes (``samples``, ``noise``, ``seed``) are passed on; others, and None, are ignored."""
    cls = METHODS.get(name.strip().lower())
    if cls is None:
        raise OnnxcamError(f"method: unknown CAM method {name!r} (choose from: {', '.join(METHODS)})")
    accepted = _parameters(cls)
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})


@functools.cache
def _parameters(cls: type[Method]) -> frozenset[str]:
    """Names a method's constructor takes (inspect.signature costs half a millisecond)."""
    return frozenset(inspect.signature(cls).parameters)


def parse_methods(text: str, **options) -> list[Method]:
    """Methods from a comma-separated list of names, e.g. ``gradcam,scorecam``."""
    names = [part for part in text.split(",") if part.strip()]
    if not names:
        raise OnnxcamError(f"method: no method named in {text!r}")
    return [get_method(name, **options) for name in dict.fromkeys(n.strip().lower() for n in names)]
