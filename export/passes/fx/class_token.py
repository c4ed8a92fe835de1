"""A class-token ViT's last block computed for the class token alone.

A ViT classifier with a class-token head reads one row of its last block's output. After
that block's attention every op acts per token, so there the other rows feed nothing: in
a ViT-B they cost about one block of the forward, and their backward (the MLP's and the
projections' transposed products over rows whose gradient is zero) as much again. While
the explain-graph is traced, the last block runs its attention with the class token as the
only query (keys and values from every token, so a target layer before the attention still
gets a gradient at every patch) and its MLP on that one row. The export check compares the
graph with the unchanged model.

Known blocks: torchvision's ``EncoderBlock`` and timm's ``Block`` with its standard
``Attention``. Other models, and target layers the rewrite would change (inside the last
block past its first norm, or after it), are traced as they are.
"""
from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn


@contextlib.contextmanager
def class_token_tail(model: nn.Module, layers: Sequence[str]) -> Iterator[bool]:
    """Within this block the model's last block computes the class token only, when the
    model is a known class-token ViT and no target layer's output changes by it; yields
    whether it does."""
    found = _last_block(model)
    if found is None or not all(_kept(name, found.kept) for name in layers):
        yield False
        return
    found.block.forward = types.MethodType(found.forward, found.block)
    try:
        yield True
    finally:
        del found.block.forward  # the class's own forward again


@dataclass
class _Tail:
    block: nn.Module
    forward: Callable[..., torch.Tensor]  # the class-token forward, unbound
    kept: list[str]  # modules whose outputs the rewrite leaves as they are (with their submodules)


def _kept(layer: str, kept: list[str]) -> bool:
    return any(layer == name or layer.startswith(name + ".") for name in kept)


def _last_block(model: nn.Module) -> Optional[_Tail]:
    """The rewrite of a known ViT's last block, else None."""
    for finder in (_torchvision_block, _timm_block):
        found = finder(model)
        if found is not None:
            return found
    return None


def _rows_like(residual: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The block input's class-token row, repeated per target when the first target layer
    (inside this block) was repeated K times along the batch."""
    return residual[:, :1].repeat_interleave(like.shape[0] // residual.shape[0], dim=0)


def _torchvision_block(model: nn.Module) -> Optional[_Tail]:
    try:
        from torchvision.models.vision_transformer import (
            EncoderBlock,
            VisionTransformer,
        )
    except ImportError:
        return None
    if type(model) is not VisionTransformer:
        return None
    names = [name for name, _ in model.encoder.layers.named_children()]
    block = getattr(model.encoder.layers, names[-1])
    if type(block) is not EncoderBlock:
        return None

    def forward(self: nn.Module, input: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(input)
        x, _ = self.self_attention(x[:, :1], x, x, need_weights=False)
        x = self.dropout(x) + _rows_like(input, x)
        return x + self.mlp(self.ln_2(x))

    earlier = [f"encoder.layers.{name}" for name in names[:-1]]
    return _Tail(block, forward, ["conv_proj", "encoder.dropout", *earlier, f"encoder.layers.{names[-1]}.ln_1"])


def _timm_block(model: nn.Module) -> Optional[_Tail]:
    try:
        from timm.layers import Attention
        from timm.models.vision_transformer import Block, VisionTransformer
    except ImportError:
        return None
    if (type(model) is not VisionTransformer or model.global_pool != "token"
            or getattr(model, "attn_pool", None) is not None or not len(model.blocks)):
        return None
    index = len(model.blocks) - 1
    block = model.blocks[index]
    if (type(block) is not Block or type(block.attn) is not Attention or getattr(block.attn, "gate", None)
            or not all(hasattr(block.attn, name) for name in _TIMM_ATTENTION)):
        return None

    def forward(self: nn.Module, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            return type(self).forward(self, x, attn_mask=attn_mask, is_causal=is_causal)
        y = self.norm1(x)
        x = _rows_like(x, y) + self.drop_path1(self.ls1(_class_query_attention(self.attn, y)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    earlier = [f"blocks.{i}" for i in range(index)]
    return _Tail(block, forward, ["patch_embed", "pos_drop", "patch_drop", "norm_pre", *earlier, f"blocks.{index}.norm1"])


_TIMM_ATTENTION = ("qkv", "q_norm", "k_norm", "norm", "proj", "proj_drop", "num_heads", "head_dim", "attn_dim")


def _class_query_attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm ``Attention`` with the class token as the only query: [N, 1, C]."""
    n, t, _ = x.shape
    dim = attn.attn_dim
    weight, bias = attn.qkv.weight, attn.qkv.bias
    q = F.linear(x[:, :1], weight[:dim], None if bias is None else bias[:dim])
    kv = F.linear(x, weight[dim:], None if bias is None else bias[dim:])
    q = attn.q_norm(q.reshape(n, 1, attn.num_heads, attn.head_dim).transpose(1, 2))
    k, v = kv.reshape(n, t, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, attn.k_norm(k), v)
    out = attn.norm(out.transpose(1, 2).reshape(n, 1, dim))
    return attn.proj_drop(attn.proj(out))
