"""Perturbation CAMs: channel weights from extra forward passes of the same session."""
from __future__ import annotations

import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.methods.base import CAMMethod, weighted_sum
from onnxcam.methods.maps import normalize_maps
from onnxcam.runtime.artifact import LAYER_LOGITS, ArtifactInfo, activation_name
from onnxcam.runtime.runner import Batch, target_scores


def align_corners_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] linear interpolation with the end points aligned
    (torch's ``UpsamplingBilinear2d``, ``align_corners=True``)."""
    position = np.arange(size_out) * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
    low = np.clip(np.floor(position).astype(int), 0, size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = position - low
    matrix = np.zeros((size_out, size_in))
    np.add.at(matrix, (np.arange(size_out), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(size_out), high), frac)
    return matrix.astype(np.float32)


def _per_target(batch: Batch, scores: np.ndarray) -> np.ndarray:
    """Scores [N*C, classes] of the rows (image-major) -> each target's score [N, K, C]."""
    n, k = batch.classes.shape
    rows_classes = np.repeat(batch.classes, len(scores) // n, axis=0)
    per_row = target_scores(scores, rows_classes, batch.info.score)
    return per_row.reshape(n, -1, k).transpose(0, 2, 1)


class ScoreCAM(CAMMethod):
    """Score-CAM (Wang et al. 2020): each channel, upsampled (bilinear, corners aligned) and
    min-max normalized, masks the input; the weights are the softmax over channels of the
    target's score on the masked inputs. One extra forward pass per channel and image."""

    name = "scorecam"
    uses_gradients = False

    def batch_layer_map(self, batch: Batch, layer: str) -> np.ndarray:
        acts = batch.outputs[activation_name(layer)]
        n, c, h, w = acts.shape
        height, width = batch.info.input_size
        ry, rx = align_corners_matrix(h, height), align_corners_matrix(w, width)

        def rows(start: int, stop: int) -> np.ndarray:
            index = np.arange(start, stop)
            masks = np.einsum("yh,mhw,xw->myx", ry, acts[index // c, index % c], rx)
            masks = normalize_maps(masks)[0]
            return batch.inputs[index // c] * masks[:, None]

        scores = _per_target(batch, batch.logits_of_inputs(f"{self.name} {layer}", n * c, rows))
        scores = np.exp(scores - scores.max(axis=2, keepdims=True))
        return weighted_sum(scores / scores.sum(axis=2, keepdims=True), acts)


class AblationCAM(CAMMethod):
    """Ablation-CAM (Desai & Ramaswamy 2020): weight = relative drop of the target's score when
    the channel is ablated, (score - ablated) / score. The ablated activations run only through
    the layers after the first target layer (the graph's ``layer_input``), so this method
    explains that layer alone. A channel is ablated to 0 when the image's smallest activation
    there is 0 (as after a ReLU), else to that minimum - 1e7 (pytorch-grad-cam's rule)."""

    name = "ablationcam"
    uses_gradients = False

    def layers(self, info: ArtifactInfo) -> list[str]:
        return [info.layer_input] if info.layer_input else []

    def requires(self, info: ArtifactInfo) -> list[str]:
        return self.fetch(info) + [LAYER_LOGITS]

    def check(self, info: ArtifactInfo) -> None:
        if not info.layer_input:
            raise OnnxcamError("method: ablationcam needs a file with the 'layer_input' graph input; "
                               "re-export it with this version of onnxcam")

    def batch_layer_map(self, batch: Batch, layer: str) -> np.ndarray:
        acts = batch.outputs[activation_name(layer)]
        n, c = acts.shape[:2]
        low = acts.reshape(n, -1).min(axis=1)
        value = np.where(low == 0, 0.0, low - 1e7).astype(np.float32)

        def rows(start: int, stop: int) -> np.ndarray:
            index = np.arange(start, stop)
            ablated = acts[index // c].copy()
            ablated[np.arange(len(index)), index % c] = value[index // c, None, None]
            return ablated

        ablated = _per_target(batch, batch.logits_of_layer(f"{self.name} {layer}", n * c, rows))
        original = target_scores(batch.logits, batch.classes, batch.info.score)[..., None]
        return weighted_sum((original - ablated) / original, acts)
