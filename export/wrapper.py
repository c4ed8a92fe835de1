"""The explain wrapper: one forward that returns logits, activations and their gradients."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from onnxcam_export.in_graph_maps import in_graph_map
from onnxcam_export.layer_layouts import from_spatial, to_spatial
from onnxcam_export.passes.fx.decompositions import ContiguousAdaptivePool, guided_relu


class ExplainWrapper(nn.Module):
    """Runs ``model`` and differentiates the chosen class scores inside the same forward.

    The backbone up to the first target layer runs once per image. There the activations are
    repeated K times along the batch as a fresh leaf, so only the layers after it run N*K times,
    and a single ``autograd.grad`` gives the gradient for all K targets. With ``repeat_input``
    (implied by input gradients) the input itself is repeated and the whole network runs N*K times.

    ``head`` names the classifier layer (linear, or a 1x1 convolution) after which only
    per-channel ops reach the logits (see ``onnxcam_export.layers.channelwise_head``). The
    gradient of a logit score there is zero outside the class's channel, so its input gradient
    is that channel times the class's row of weights: no pass over every class's weights (in
    SqueezeNet a transposed convolution costing a quarter of the forward; in MobileNetV3-Small
    a read of two thirds of the model's weights).
    """

    def __init__(self, model: nn.Module, layers: list[str], score: str = "logit",
                 guided: bool = False, plain_input_gradient: bool = False,
                 calls: Optional[dict[str, int]] = None, repeat_input: bool = False,
                 layouts: Optional[dict[str, str]] = None, maps: Sequence[str] = (),
                 head: Optional[str] = None, head_kind: str = "softmax"):
        super().__init__()
        if score not in ("logit", "softmax"):
            raise ValueError(f"score: expected 'logit' or 'softmax', got {score!r}")
        # ArtifactInfo.head: "binary" serves a one-logit model's z as the two classes [z, -z]
        self.head_kind = head_kind
        self.maps = list(maps)  # methods of onnxcam_export.in_graph_maps computed in the graph
        self.model = model
        self.layers = list(layers)
        self.score = score
        self.guided = guided
        self.plain_input_gradient = plain_input_gradient
        # repeat the input rather than the first target layer's output: needed for input
        # gradients, and for models whose head reshapes by the input's batch size
        self.repeat_input = repeat_input or guided or plain_input_gradient
        modules = dict(model.named_modules())
        self._modules_by_layer = {name: modules[name] for name in self.layers}
        # a module called several times (a shared activation, say) is explained at its last call
        self.calls = {name: (calls or {}).get(name, 1) for name in self.layers}
        self.first_layer: Optional[str] = None  # set while tracing
        # layers whose output is not [N, C, h, w] (token grids, channels-last maps)
        self.layouts = {name: (layouts or {}).get(name, "nchw") for name in self.layers}
        # the shortcut holds for logit scores and gradients at the target layers only
        usable = head is not None and score == "logit" and not (guided or plain_input_gradient) \
            and head_kind != "binary"
        self._head = {head: modules[head]} if usable else {}  # a dict: not a submodule of the wrapper

    def forward(self, x: torch.Tensor, targets: torch.Tensor,
                layer_input: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, ...]:
        """Outputs: logits, resolved targets, their softmax probabilities, (activations,
        gradients) per layer, then the plain and guided input gradients when asked for, then
        the raw map per in-graph method (see ``in_graph_map``), then ``layer_logits`` when
        ``layer_input`` is given: its M rows are fed through the layers after the first
        target layer, appended to the batch there (so M = 0 costs nothing)."""
        n, k = targets.shape
        rows = n * k
        captured: dict[str, torch.Tensor] = {}
        activations: dict[str, torch.Tensor] = {}
        seen = dict.fromkeys(self.layers, 0)

        def per_image(t: torch.Tensor) -> torch.Tensor:
            return t[:rows].reshape((n, k) + tuple(t.shape[1:]))[:, 0]

        def capture(name: str):
            def hook(module: nn.Module, args, output: torch.Tensor) -> Optional[torch.Tensor]:
                seen[name] += 1
                if seen[name] != self.calls[name]:
                    return None
                layout = self.layouts[name]
                spatial = to_spatial(output, layout)
                if not captured:  # the first target layer to run
                    self.first_layer = name
                    if self.repeat_input:
                        activations[name] = per_image(spatial)
                        like = output
                    else:  # repeat K times as a fresh leaf: only later layers run N*K times
                        activations[name] = spatial
                        spatial = spatial.detach().repeat_interleave(k, dim=0).requires_grad_(True)
                        like = output.detach().repeat_interleave(k, dim=0)
                    captured[name] = spatial
                    rebuilt = from_spatial(spatial, like, layout)
                    if layer_input is not None:
                        rebuilt = torch.cat([rebuilt, from_spatial(layer_input, layer_input, layout)], dim=0)
                    return rebuilt
                if not output.requires_grad or output.shape[0] < rows:
                    raise RuntimeError(f"layer {name!r} does not lie downstream of the first target layer")
                captured[name] = spatial
                activations[name] = per_image(spatial)
                return None if layout == "nchw" else from_spatial(spatial, output, layout)
            return hook

        handles = [module.register_forward_hook(capture(name)) for name, module in self._modules_by_layer.items()]
        head_io: list[torch.Tensor] = []

        def keep_head(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
            kept = output.clone()  # an in-place op after the head (SqueezeNet's ReLU) must not rebase it
            head_io.extend([args[0], output, kept])
            return kept

        handles += [module.register_forward_hook(keep_head) for module in self._head.values()]
        try:
            with torch.enable_grad():
                if self.repeat_input:
                    x = x.detach().repeat_interleave(k, dim=0).requires_grad_(True)
                # attention through its math kernel, whose backward is plain matrix products
                with ContiguousAdaptivePool(), sdpa_kernel([SDPBackend.MATH]):
                    logits_all = self.model(x)
                if self.head_kind == "binary":
                    logits_all = torch.cat([logits_all, -logits_all], dim=1)
                missing = [name for name in self.layers if name not in captured]
                if missing:
                    raise RuntimeError(f"target layer(s) {missing} did not run in the forward pass")
                logits_rep = logits_all[:rows]
                logits = per_image(logits_rep)
                resolved = resolve_targets(logits, targets)
                # the score in float32 whatever the model's dtype (fp16 has no scatter-add on CPU)
                scores = logits_rep.float()
                scores = scores if self.score == "logit" else torch.softmax(scores, dim=1)
                selected = scores.gather(1, resolved.reshape(-1, 1)).sum()
                needs_input_gradient = self.guided or self.plain_input_gradient
                targets_at = [captured[name] for name in self.layers]
                if head_io:
                    grads = self._through_head(selected, resolved, head_io, targets_at,
                                               head_is_logits=head_io[2] is logits_all)
                else:
                    grads = torch.autograd.grad(selected, targets_at, retain_graph=needs_input_gradient)
                chance = torch.softmax(logits.float(), dim=1) if self.head_kind == "softmax" else \
                    torch.sigmoid(logits.float())
                probs = chance.gather(1, resolved).to(logits.dtype)
                outputs = [logits, resolved, probs]
                pairs = [(activations[name], grad[:rows].reshape((n, k) + tuple(grad.shape[1:])))
                         for name, grad in zip(self.layers, grads)]
                for pair in pairs:
                    outputs.extend(pair)
                if self.plain_input_gradient:
                    (plain,) = torch.autograd.grad(selected, [x], retain_graph=self.guided)
                    outputs.append(plain.reshape((n, k) + tuple(x.shape[1:])))
                if self.guided:
                    with guided_relu():
                        (guided,) = torch.autograd.grad(selected, [x])
                    outputs.append(guided.reshape((n, k) + tuple(x.shape[1:])))
                size = (x.shape[-2], x.shape[-1])
                outputs += [in_graph_map(method, pairs, size) for method in self.maps]
                if layer_input is not None:
                    outputs.append(logits_all[rows:])
        finally:
            for handle in handles:
                handle.remove()
        return tuple(outputs)

    def _through_head(self, selected: torch.Tensor, resolved: torch.Tensor, head_io: list[torch.Tensor],
                      targets_at: list[torch.Tensor], head_is_logits: bool) -> tuple[torch.Tensor, ...]:
        """Gradients at the target layers, with the head convolution's backward as the product
        of each row's class channel and that class's weights. When the head's output is the
        logits themselves, that channel's gradient is 1: the weights alone, with no one-hot
        scatter over every class."""
        head_input, head_output, _ = head_io
        rows = resolved.reshape(-1)
        # rows fed through layer_input have no score: class 0, and their gradients are dropped
        rows = torch.cat([rows, rows.new_zeros(head_output.shape[0] - rows.shape[0])])
        spatial = (1,) * (head_output.dim() - 2)
        (head,) = self._head.values()
        weights = head.weight.reshape(head.weight.shape[0], -1).to(head_output.dtype)[rows]  # [rows, C_in]
        weights = weights.reshape(*weights.shape, *spatial)
        if head_is_logits:
            grad_input = weights
        else:
            (grad_output,) = torch.autograd.grad(selected, [head_output], retain_graph=True)
            index = rows.reshape(-1, 1, *spatial).expand(-1, 1, *grad_output.shape[2:])
            grad_input = grad_output.gather(1, index) * weights  # the class channel [rows, 1, (h, w)]
        return torch.autograd.grad(head_input, targets_at, grad_outputs=grad_input)


def resolve_targets(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Replace each negative target -r by the index of the r-th highest logit."""
    classes = logits.shape[1]
    order = torch.topk(logits, classes, dim=1).indices
    rank = (-targets - 1).clamp(min=0, max=classes - 1)
    return torch.where(targets >= 0, targets, order.gather(1, rank))
