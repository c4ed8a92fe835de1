"""Independent torch references: plain autograd per target, Grad-CAM from torch tensors, and
pytorch-grad-cam's maps."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def resolve(logits: torch.Tensor, targets: np.ndarray) -> torch.Tensor:
    """Negative -r -> r-th ranked class, using torch's own sort."""
    order = torch.argsort(logits, dim=1, descending=True)
    t = torch.as_tensor(targets)
    ranked = order.gather(1, (-t - 1).clamp(min=0))
    return torch.where(t >= 0, t, ranked)


def autograd_reference(model: nn.Module, layer: str, x: np.ndarray, targets: np.ndarray):
    """logits [N,C], classes [N,K], activations [N,C,h,w], gradients [N,K,C,h,w] by one
    backward pass per target column."""
    module = dict(model.named_modules())[layer]
    store: dict[str, torch.Tensor] = {}

    def hook(mod, args, out):
        out.retain_grad()
        store["act"] = out

    handle = module.register_forward_hook(hook)
    try:
        xt = torch.from_numpy(x).requires_grad_(True)
        grads = []
        for k in range(targets.shape[1]):
            logits = model(xt)
            classes = resolve(logits.detach(), targets)
            logits.gather(1, classes[:, k:k + 1]).sum().backward()
            grads.append(store["act"].grad.detach().clone())
    finally:
        handle.remove()
    return (logits.detach().numpy(), classes.numpy(), store["act"].detach().numpy(),
            torch.stack(grads, dim=1).numpy())


def gradcam_reference(activations: np.ndarray, gradients: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Grad-CAM maps [N, K, H, W] computed with torch ops: ReLU(sum_c mean(g_c) A_c),
    bilinear upsampling, min-max normalization."""
    a = torch.from_numpy(activations).double()
    g = torch.from_numpy(gradients).double()
    weights = g.mean(dim=(3, 4))
    cam = torch.relu(torch.einsum("nkc,nchw->nkhw", weights, a))
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    low = cam.amin(dim=(2, 3), keepdim=True)
    high = cam.amax(dim=(2, 3), keepdim=True)
    return ((cam - low) / (high - low).clamp(min=1e-12)).numpy()


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b.astype(np.float64)), 1e-30))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def reference_cam(name: str, model, layer, x: np.ndarray, cls: int) -> np.ndarray:
    """pytorch-grad-cam's normalized map [H, W] for class ``cls``."""
    import pytorch_grad_cam as pgc
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    classes = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "xgradcam": pgc.XGradCAM,
               "hirescam": pgc.HiResCAM, "layercam": pgc.LayerCAM, "eigencam": pgc.EigenCAM,
               "eigengradcam": pgc.EigenGradCAM, "scorecam": pgc.ScoreCAM,
               "ablationcam": pgc.AblationCAM}
    layers = layer if isinstance(layer, list) else [layer]
    with classes[name](model=model, target_layers=layers) as cam:
        cam.batch_size = 32
        return cam(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(cls)])[0]


def check_against_float64(model: nn.Module, path, layer: str, size: tuple[int, int]) -> None:
    """The explain-graph's logits (relative L2 <= 1e-4), activations and gradients (cosine >=
    0.9999) at ``layer`` against float64 autograd of a copy of ``model``."""
    import copy

    from onnxcam.runtime import artifact
    from support.graphs import all_outputs

    x = np.random.default_rng(0).standard_normal((2, 3, *size)).astype(np.float32)
    targets = np.array([[0, 3], [1, 2]], np.int64)
    got = all_outputs(path, x, targets)
    logits, classes, acts, grads = autograd_reference(copy.deepcopy(model).double(), layer, x.astype(np.float64),
                                                      targets)
    assert relative_error(got[artifact.LOGITS], logits) <= 1e-4
    assert np.array_equal(got[artifact.TARGET_INDICES], classes)
    assert cosine(got[artifact.activation_name(layer)], acts) >= 0.9999
    assert cosine(got[artifact.gradient_name(layer)], grads) >= 0.9999
