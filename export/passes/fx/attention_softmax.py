"""Attention without a mask normalizes its scores with a plain softmax.

Pattern: the explain wrapper traces attention through torch's math kernel (whose backward is
plain matrix products), and that kernel normalizes the scores with ``aten._safe_softmax``: a
softmax that gives zeros rather than NaN in a row whose scores are all -inf (a query whose
every key is masked). torch decomposes it into the softmax and three more passes over the
scores (``eq(-inf)``, ``all`` over the row, ``where`` against zeros of the full size); in ONNX
Equal, Not, Cast, ReduceMax, Cast, Not, Shape, Expand and Where per attention, which
onnxruntime runs one by one.

Why: an explain-graph traced from timm's mobilevit_xxs at 256 px spent 12 ms of its 55 ms of
kernel time in them at batch 1 (2 threads) and ran 1.48× plain inference, where the same model
read from its own plain file (whose attention is a MatMul and a Softmax) ran 1.12×.

What: within :func:`unmasked_attention` (the trace), a ``scaled_dot_product_attention`` or
``multi_head_attention_forward`` call with no attention mask, no key padding mask and no causal
mask records its ``_safe_softmax`` as a plain ``softmax`` (:func:`safe_softmax`, in the
decomposition table). Without a mask a score is -inf only where the inputs are not finite, and
then the model's output is not finite either; a call with a mask keeps torch's safe softmax.
The backward is unchanged (``_safe_softmax``'s is the softmax's, of the same output).

How checked: the export's check compares the graph with the unchanged model in eager torch;
``tests/export/passes/test_attention_softmax.py`` checks the gradients against float64
autograd, that the graph holds no such ops for unmasked attention, and that masked attention
keeps them.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch._decomp.decompositions as core_decompositions
import torch.nn.functional as F

aten = torch.ops.aten

_unmasked = False  # within an attention call that has no mask (set by UnmaskedAttention)


def _argument(args: tuple, kwargs: dict, index: int, name: str, default=None):
    return args[index] if len(args) > index else kwargs.get(name, default)


def _no_mask(func, args: tuple, kwargs: dict) -> bool:
    """Whether the attention call ``func(*args, **kwargs)`` masks no score."""
    if func is F.scaled_dot_product_attention:
        return _argument(args, kwargs, 3, "attn_mask") is None and not _argument(args, kwargs, 5, "is_causal", False)
    return (_argument(args, kwargs, 14, "key_padding_mask") is None and _argument(args, kwargs, 16, "attn_mask") is None
            and not _argument(args, kwargs, 24, "is_causal", False))


class UnmaskedAttention(torch.overrides.TorchFunctionMode):
    """Marks the attention calls that have no mask while they run (see :func:`safe_softmax`)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        global _unmasked
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention and func is not F.multi_head_attention_forward:
            return func(*args, **kwargs)
        previous, _unmasked = _unmasked, _no_mask(func, args, kwargs)
        try:
            return func(*args, **kwargs)
        finally:
            _unmasked = previous


def safe_softmax(x: torch.Tensor, dim: int, dtype=None) -> torch.Tensor:
    """``aten._safe_softmax``: a plain softmax inside an attention call without a mask, else
    torch's own decomposition."""
    if not _unmasked:
        return core_decompositions.safe_softmax(x, dim, dtype)
    return torch.softmax(x, dim, dtype=dtype)


DECOMPOSITIONS = {aten._safe_softmax.default: safe_softmax}


@contextlib.contextmanager
def unmasked_attention() -> Iterator[None]:
    """Within this block (a trace with :data:`DECOMPOSITIONS`), attention without a mask takes
    a plain softmax."""
    with UnmaskedAttention():
        yield
