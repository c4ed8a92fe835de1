"""Attention without a mask traces a plain softmax (onnxcam_export.passes.fx.attention_softmax):
no safe-softmax ops in the graph, the same logits and gradients as float64 autograd, and
attention with a mask keeps torch's safe softmax."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.fx.experimental.proxy_tensor import make_fx  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

from onnxcam_export import export  # noqa: E402
from onnxcam_export.passes.fx import attention_softmax  # noqa: E402
from onnxcam_export.passes.fx.decompositions import explain_decompositions  # noqa: E402
from support.graphs import op_counts  # noqa: E402
from support.torch_reference import check_against_float64  # noqa: E402

# what torch's safe softmax adds per attention: eq(-inf), all over the row, where against zeros
SAFE_SOFTMAX_OPS = ("Equal", "Not", "Cast")


class Attention(nn.Module):
    """Patches, one attention over them (``F.scaled_dot_product_attention``, with a causal
    boolean mask when ``masked``, or ``nn.MultiheadAttention``), a 1x1 convolution, a head."""

    def __init__(self, kind: str = "sdpa"):
        super().__init__()
        self.kind = kind
        self.patches = nn.Conv2d(3, 16, 4, stride=4)
        self.qkv = nn.Linear(16, 48)
        self.mha = nn.MultiheadAttention(16, 2, batch_first=True)
        self.post = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        f = self.patches(x)
        n, c, h, w = f.shape
        t = f.flatten(2).transpose(1, 2)
        if self.kind == "mha":
            a = self.mha(t, t, t, need_weights=False)[0]
        else:
            q, k, v = self.qkv(t).reshape(n, h * w, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
            mask = torch.ones(h * w, h * w, dtype=torch.bool).tril() if self.kind == "masked" else None
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(n, h * w, c)
        f = self.post((t + a).transpose(1, 2).reshape(n, c, h, w))
        return self.fc(f.mean((2, 3)))


def _traced_ops(mask: bool) -> set[str]:
    """The ATen ops of one traced attention forward and backward, with or without a mask."""
    def attend(q):
        q = q.detach().requires_grad_(True)
        given = torch.ones(5, 5, dtype=torch.bool) if mask else None
        with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):
            out = F.scaled_dot_product_attention(q, q, q, attn_mask=given)
            return out, torch.autograd.grad(out.sum(), q)[0]

    table = {**explain_decompositions(), **attention_softmax.DECOMPOSITIONS}
    with attention_softmax.unmasked_attention():
        graph = make_fx(attend, decomposition_table=table)(torch.randn(2, 3, 5, 4))
    return {str(node.target) for node in graph.graph.nodes if node.op == "call_function"}


def test_only_unmasked_attention_drops_the_safe_softmax():
    assert "aten.where.self" not in _traced_ops(mask=False)
    assert "aten.where.self" in _traced_ops(mask=True)


@pytest.mark.parametrize("kind", ["sdpa", "mha"])
def test_unmasked_attention_exports_a_plain_softmax(tmp_path, kind):
    torch.manual_seed(0)
    model = Attention(kind).eval()
    export(model, tmp_path / "a.onnx", ["patches"], input_size=(32, 32))
    ops = op_counts(tmp_path / "a.onnx")
    assert ops["Softmax"] == 2 and not any(ops[op] for op in SAFE_SOFTMAX_OPS)
    check_against_float64(model, tmp_path / "a.onnx", "patches", (32, 32))


def test_masked_attention_keeps_the_safe_softmax(tmp_path):
    torch.manual_seed(0)
    model = Attention("masked").eval()
    export(model, tmp_path / "m.onnx", ["patches"], input_size=(32, 32))  # its own check against torch
    assert all(op_counts(tmp_path / "m.onnx")[op] for op in SAFE_SOFTMAX_OPS)


@pytest.mark.slow  # 45 s: nine attention layers
def test_timm_mobilevit_exports_a_plain_softmax(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("mobilevit_xxs", num_classes=10).eval()
    export(model, tmp_path / "v.onnx", ["final_conv"], input_size=(64, 64))
    ops = op_counts(tmp_path / "v.onnx")
    assert ops["Softmax"] >= 9 and not any(ops[op] for op in SAFE_SOFTMAX_OPS)  # 9 attention layers
    check_against_float64(model, tmp_path / "v.onnx", "final_conv", (64, 64))
