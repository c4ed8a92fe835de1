"""A class-token ViT's last block computed for the class token alone (onnxcam_export.passes.fx.class_token):
the same logits and the same gradient at the target layer as the whole block, in float64."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from onnxcam_export.passes.fx.class_token import class_token_tail


def _torchvision_vit() -> tuple[nn.Module, str]:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=4,
                              hidden_dim=64, mlp_dim=128, num_classes=10)
    nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision starts it at zero
    return model.eval().double(), "encoder.layers.encoder_layer_1"


def _timm_vit() -> tuple[nn.Module, str]:
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=64, depth=2).eval().double(), "blocks.1"


def _run(model: nn.Module, block: str, norm: str, x: torch.Tensor, rewrite: bool):
    """Logits, the gradient of the top logits' sum at ``block.norm`` and the last block's output shape."""
    modules = dict(model.named_modules())
    kept: dict[str, torch.Tensor] = {}

    def keep(module, args, output):
        output.retain_grad()
        kept["norm"] = output

    shapes = []
    handles = [modules[f"{block}.{norm}"].register_forward_hook(keep),
               modules[block].register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape)))]
    try:
        with class_token_tail(model, [f"{block}.{norm}"] if rewrite else [block]) as applied:
            logits = model(x)
        logits.max(dim=1).values.sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    return logits.detach(), kept["norm"].grad, shapes[0], applied


@pytest.mark.parametrize("build,norm", [(_torchvision_vit, "ln_1"), (_timm_vit, "norm1")])
def test_class_token_block_keeps_logits_and_gradients(build, norm):
    model, block = build()
    x = torch.randn(3, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    logits, grad, shape, applied = _run(model, block, norm, x, rewrite=False)
    assert not applied and shape[:2] == (3, 17)  # 16 patches and the class token
    got_logits, got_grad, got_shape, applied = _run(model, block, norm, x, rewrite=True)
    assert applied and got_shape == (3, 1, shape[2])  # the last block's output: the class token only
    assert torch.allclose(got_logits, logits, rtol=1e-10, atol=1e-12)
    assert grad.abs().amax(dim=2)[:, 1:].min() > 0  # the gradient reaches every patch
    assert torch.allclose(got_grad, grad, rtol=1e-9, atol=1e-14)
    assert "forward" not in vars(dict(model.named_modules())[block])  # the class's own forward again


@pytest.mark.parametrize("layer,applied", [
    ("encoder.layers.encoder_layer_1.ln_1", True), ("encoder.layers.encoder_layer_0", True),
    ("encoder.layers.encoder_layer_0.mlp", True), ("conv_proj", True),
    ("encoder.layers.encoder_layer_1", False), ("encoder.layers.encoder_layer_1.ln_2", False),
    ("encoder.layers.encoder_layer_1.mlp", False), ("encoder.layers.encoder_layer_1.self_attention", False),
    ("encoder.ln", False), ("encoder.layers", False), ("encoder", False), ("heads", False),
])
def test_target_layers_the_rewrite_would_change_keep_the_whole_block(layer, applied):
    model, _ = _torchvision_vit()
    with class_token_tail(model, [layer]) as got:
        assert got is applied


def test_other_models_are_left_alone():
    import timm
    import torchvision

    pooled = timm.create_model("vit_tiny_patch16_224", img_size=64, depth=2, global_pool="avg")
    for model in (torchvision.models.resnet18(), pooled):
        with class_token_tail(model, ["layer4" if isinstance(model, torchvision.models.ResNet) else "blocks.1.norm1"]) as got:
            assert not got
