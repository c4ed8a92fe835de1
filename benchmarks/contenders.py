"""What one benchmark child process times: the job, and every contender's runner, built in that
child. Torch and the peer libraries are imported only by the contenders that need them."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from onnxcam.errors import OnnxcamError

PLAIN = "onnxruntime plain"
GRADCAM = "onnxcam gradcam"
CPU = ["CPUExecutionProvider"]


class Unavailable(Exception):
    """A contender that cannot run here (library missing, method not in this onnxcam)."""


@dataclass
class Job:
    """What one child process times: one contender at one batch size."""

    contender: str
    batch: int
    threads: int
    repeats: int
    warmup: int
    budget: float
    model: str
    layer: str
    spinning: bool
    files: dict[str, str]


Runner = Callable[[], object]


def _batch(job: Job) -> np.ndarray:
    return np.ascontiguousarray(np.load(job.files["input"])[:job.batch])


def _plain(job: Job) -> Runner:
    """onnxruntime inference of the model exported without explain outputs, with the session
    options onnxcam's own sessions use."""
    import onnxruntime as ort

    from onnxcam.runtime.session import session_options

    session = ort.InferenceSession(job.files["plain"], session_options(job.threads, job.spinning), providers=CPU)
    feed = {session.get_inputs()[0].name: _batch(job)}
    return lambda: session.run(None, feed)


def _onnxcam(method: str, graph: str, job: Job) -> Runner:
    """onnxcam end to end: normalized batch in, final maps at input resolution out. A first
    call (an extra warm-up) finds out whether this onnxcam has the method."""
    from onnxcam.api.explainer import Explainer

    explainer = Explainer(job.files[graph], providers=CPU, threads=job.threads, spinning=job.spinning)
    x = _batch(job)

    def run():
        return explainer.explain(x, method=method, normalized=True, batch_size=len(x))

    try:
        run()
    except OnnxcamError as error:
        if str(error).startswith("method:"):
            raise Unavailable(str(error)) from None
        raise
    return run


def _torch_model(job: Job):
    """The benchmark model with the parent's weights, and the input batch as a tensor."""
    import torch
    import torchvision

    torch.set_num_threads(job.threads)
    model = torchvision.models.get_model(job.model, weights=None)
    model.load_state_dict(torch.load(job.files["weights"], weights_only=True))
    return model.eval(), torch.from_numpy(_batch(job))


def _top_classes(model, x):
    """The predicted classes, computed once outside the timed region (favours Captum)."""
    import torch

    with torch.no_grad():
        return model(x).argmax(1)


def _explain_graph(job: Job) -> Runner:
    """The explain-graph ``files["explain"]`` run alone, every output fetched: the top class of
    each image as the target, an empty ``layer_input`` where the file has one."""
    import onnxruntime as ort

    from onnxcam.runtime.session import session_options

    session = ort.InferenceSession(job.files["explain"], session_options(job.threads, job.spinning), providers=CPU)
    x = _batch(job)
    values = {"input": x, "targets": np.full((len(x), 1), -1, np.int64)}
    feed = {spec.name: values[spec.name] if spec.name in values else np.zeros([0, *spec.shape[1:]], np.float32)
            for spec in session.get_inputs()}
    return lambda: session.run(None, feed)


def _pytorch_grad_cam(name: str, job: Job) -> Runner:
    """pytorch-grad-cam as its README uses it: targets=None explains the top class. The
    target module ``layer4`` gives the same activations as the README's ``layer4[-1]``."""
    try:
        import pytorch_grad_cam
    except ImportError:
        raise Unavailable("pytorch-grad-cam is not installed (pip install grad-cam)") from None
    model, x = _torch_model(job)
    cam = getattr(pytorch_grad_cam, name)(model=model, target_layers=[model.get_submodule(job.layer)])
    return lambda: cam(input_tensor=x, targets=None)


def _captum(job: Job):
    """Captum's ``attr`` module, the model, the input and its predicted classes."""
    try:
        from captum import attr
    except ImportError:
        raise Unavailable("captum is not installed (pip install captum)") from None
    model, x = _torch_model(job)
    return attr, model, x, _top_classes(model, x)


def _captum_layer_gradcam(job: Job) -> Runner:
    """Captum LayerGradCam with ReLU, bilinearly interpolated to the input size."""
    attr, model, x, target = _captum(job)
    cam = attr.LayerGradCam(model, model.get_submodule(job.layer))
    size = tuple(x.shape[-2:])
    return lambda: attr.LayerAttribution.interpolate(
        cam.attribute(x, target=target, relu_attributions=True), size, "bilinear")


def _captum_guided_gradcam(job: Job) -> Runner:
    """Captum GuidedGradCam: guided backprop times the upsampled layer Grad-CAM."""
    attr, model, x, target = _captum(job)
    cam = attr.GuidedGradCam(model, model.get_submodule(job.layer))
    return lambda: cam.attribute(x, target=target)


# the contenders ``onnxcam bench`` times
CONTENDERS: dict[str, Callable[[Job], Runner]] = {
    PLAIN: _plain,
    GRADCAM: partial(_onnxcam, "gradcam", "explain"),
    "onnxcam gradcam++": partial(_onnxcam, "gradcam++", "explain"),
    "onnxcam layercam": partial(_onnxcam, "layercam", "explain"),
    "onnxcam guided-gradcam": partial(_onnxcam, "guided-gradcam", "guided"),
    "pytorch-grad-cam GradCAM": partial(_pytorch_grad_cam, "GradCAM"),
    "pytorch-grad-cam GradCAMPlusPlus": partial(_pytorch_grad_cam, "GradCAMPlusPlus"),
    "captum LayerGradCam": _captum_layer_gradcam,
    "captum GuidedGradCam": _captum_guided_gradcam,
}
# contenders that only ``side_by_side.interleave``'s callers time, not ``onnxcam bench``
PROBES: dict[str, Callable[[Job], Runner]] = {"explain-graph": _explain_graph}


def runner(job: Job) -> Runner:
    """The runner of ``job``'s contender, set up; Unavailable where it cannot run here."""
    return {**CONTENDERS, **PROBES}[job.contender](job)
