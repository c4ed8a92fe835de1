"""The graph passes of an export, in the order they run.

An export traces the wrapper (:class:`onnxcam_export.wrapper.ExplainWrapper`) into one FX graph
of forward ATen ops and translates it to ONNX; the passes change the graph on either side:

1. Before tracing, :func:`~onnxcam_export.passes.fx.class_token.class_token_tail` swaps a
   class-token ViT's last block for one computed for the class token alone (when the target
   layer is that block's input).
2. While tracing, the backward ops are decomposed into forward ops
   (:mod:`~onnxcam_export.passes.fx.decompositions`), and attention without a mask takes a
   plain softmax (:mod:`~onnxcam_export.passes.fx.attention_softmax`).
3. :data:`FX_PASSES`, on the traced FX graph.
4. The ONNX translation, checked by :func:`onnxcam_export.checks.expanded_constants`.
5. :data:`ONNX_PASSES`, on the translated graph, in this order; each says when it applies.

Each pass's module docstring says which pattern it changes, why, and how it is checked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx
from torch import fx

from onnxcam.runtime.artifact import ArtifactInfo
from onnxcam_export.passes.fx.broadcasts import broadcast_expands
from onnxcam_export.passes.onnx.activation_outputs import fuse_activation_outputs
from onnxcam_export.passes.onnx.append_heatmaps import add_heatmaps
from onnxcam_export.passes.onnx.class_channel import gather_class_channel_first
from onnxcam_export.passes.onnx.dequantized_weights import float_backward_weights
from onnxcam_export.passes.onnx.global_pools import globalize_pools
from onnxcam_export.passes.onnx.idle_channel_scales import drop_idle_layout_hints
from onnxcam_export.passes.onnx.ones_products import sink_ones_products
from onnxcam_export.passes.onnx.pooled_repeats import pool_before_repeats
from onnxcam_export.passes.onnx.scalar_constants import rank_scalars
from onnxcam_export.passes.onnx.target_ranks import bound_target_ranks
from onnxcam_export.passes.onnx.weight_views import read_weights_in_place


@dataclass(frozen=True)
class OnnxPass:
    """One rewrite of the translated graph: ``run(model, info)``, applied when ``applies(info)``;
    ``when`` says that condition in words (the manual lists it)."""

    name: str
    run: Callable[[onnx.ModelProto, ArtifactInfo], object]
    when: str = "always (it finds its own pattern)"
    applies: Callable[[ArtifactInfo], bool] = lambda info: True


FX_PASSES: tuple[Callable[[fx.GraphModule], object], ...] = (broadcast_expands,)

ONNX_PASSES: tuple[OnnxPass, ...] = (
    OnnxPass("dequantized_weights", lambda model, info: float_backward_weights(model),
             when="the file is INT8 (quantized)", applies=lambda info: info.quantization is not None),
    OnnxPass("weight_views", lambda model, info: read_weights_in_place(model)),
    OnnxPass("class_channel", lambda model, info: gather_class_channel_first(model)),
    OnnxPass("idle_channel_scales", lambda model, info: drop_idle_layout_hints(model)),
    OnnxPass("ones_products", lambda model, info: sink_ones_products(model)),
    OnnxPass("global_pools", lambda model, info: globalize_pools(model)),
    OnnxPass("pooled_repeats", lambda model, info: pool_before_repeats(model)),
    OnnxPass("scalar_constants", lambda model, info: rank_scalars(model)),
    OnnxPass("activation_outputs", lambda model, info: fuse_activation_outputs(model, info.layers)),
    OnnxPass("target_ranks", lambda model, info: bound_target_ranks(model)),
    OnnxPass("append_heatmaps", add_heatmaps, when="the file computes maps in the graph (--maps)",
             applies=lambda info: bool(info.maps)),
)


def run_fx_passes(graph: fx.GraphModule) -> None:
    """Every FX pass on the traced graph, in order."""
    for rewrite in FX_PASSES:
        rewrite(graph)


def run_onnx_passes(model: onnx.ModelProto, info: ArtifactInfo) -> None:
    """Every ONNX pass that applies to ``info``'s file, in order."""
    for step in ONNX_PASSES:
        if step.applies(info):
            step.run(model, info)
