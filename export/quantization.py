"""Quantize-dequantize pairs as torch ops that trace to real ONNX ``QuantizeLinear`` /
``DequantizeLinear`` nodes, so onnxruntime fuses the explain-graph's forward into its integer
kernels exactly as it fuses the INT8 file's.

- :data:`fake_quantize` is one ``QuantizeLinear -> DequantizeLinear`` pair on a computed tensor.
  Its gradient is the straight-through estimator with the clipping mask, as torch's
  ``fake_quantize_per_tensor_affine`` / ``fake_quantize_per_channel_affine`` define it: the
  incoming gradient where ``round(x / scale) + zero_point`` lies in ``[qmin, qmax]``, zero where
  the pair clipped. This mask reads the pair's float input ``x``, so onnxruntime computes the op
  that produces ``x`` in float (not fused with the pair into an integer kernel) wherever the
  backward crosses the pair: the layers after the target layer.
  Under the guided-backpropagation rule (input gradients through every pair) the mask reads the
  pair's output ``y = (q - zero_point) * scale`` instead and passes where ``q`` lies strictly
  inside ``(qmin, qmax)``, so the whole forward stays fused; it differs from torch's only for the
  values that round onto ``qmin`` or ``qmax`` from within half a step. A pair whose zero point is
  ``qmin`` holds no negative values (a quantizer folded a ReLU into it): the guided rule also
  drops its negative gradients, as that ReLU would.
- :data:`dequantize` is a ``DequantizeLinear`` of a constant integer tensor (weights, biases):
  the forward's fused kernels read the integers, the backward the dequantized floats.

Scales and zero points are tensors (0-D per tensor, 1-D along ``axis`` per channel); the zero
point's dtype (``uint8``, ``int8``; ``int32`` for biases) is the integer type.
"""
from __future__ import annotations

import torch

from onnxcam_export.passes.fx.decompositions import guiding

INTEGER_RANGES = {torch.uint8: (0, 255), torch.int8: (-128, 127), torch.int32: (-2 ** 31, 2 ** 31 - 1)}


def _along(value: torch.Tensor, axis: int, ndim: int) -> torch.Tensor:
    """A per-channel parameter shaped to broadcast along ``axis`` of a rank-``ndim`` tensor."""
    if value.dim() == 0:
        return value
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return value.reshape(shape)


def _unclamped(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int) -> torch.Tensor:
    """``round(x / scale) + zero_point`` (along ``axis``), in x's float type, before the clamp."""
    return torch.round(x / _along(scale, axis, x.dim()).to(x.dtype)) + _along(zero_point, axis, x.dim()).to(x.dtype)


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int) -> torch.Tensor:
    """``QuantizeLinear`` of ``x``: integers of the zero point's type."""
    qmin, qmax = INTEGER_RANGES[zero_point.dtype]
    return _unclamped(x, scale, zero_point, axis).clamp(qmin, qmax).to(zero_point.dtype)


def _fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int,
                   floor: bool = False) -> torch.Tensor:
    """``floor``: the zero point is ``qmin`` (the pair holds no negative values)."""
    qmin, qmax = INTEGER_RANGES[zero_point.dtype]
    z = _along(zero_point, axis, x.dim()).to(x.dtype)
    return (_unclamped(x, scale, zero_point, axis).clamp(qmin, qmax) - z) * _along(scale, axis, x.dim()).to(x.dtype)


def _dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int) -> torch.Tensor:
    s = _along(scale, axis, q.dim())
    return (q.to(torch.float32) - _along(zero_point, axis, q.dim()).to(torch.float32)) * s


fake_quantize = torch.library.custom_op("onnxcam::fake_quantize", _fake_quantize, mutates_args=())
fake_quantize.register_fake(lambda x, scale, zero_point, axis, floor=False: torch.empty_like(x))
dequantize = torch.library.custom_op("onnxcam::dequantize", _dequantize, mutates_args=())
dequantize.register_fake(lambda q, scale, zero_point, axis: torch.empty(q.shape, dtype=torch.float32))


def _save_values(ctx, inputs, output) -> None:
    x, scale, zero_point, axis, floor = inputs
    ctx.axis, ctx.floor = axis, floor
    ctx.save_for_backward(x, output, scale, zero_point)


def _clipping_mask_gradient(ctx, grad: torch.Tensor):
    """The straight-through gradient, zero where the pair clipped (see the module docstring)."""
    x, y, scale, zero_point = ctx.saved_tensors
    qmin, qmax = INTEGER_RANGES[zero_point.dtype]
    s = _along(scale, ctx.axis, x.dim()).to(x.dtype)
    z = _along(zero_point, ctx.axis, x.dim()).to(x.dtype)
    if guiding():
        inside = (y > (qmin - z) * s) & (y < (qmax - z) * s)
        grad = torch.relu(grad) if ctx.floor else grad
    else:
        q = _unclamped(x, scale, zero_point, ctx.axis)
        inside = (q >= qmin) & (q <= qmax)
    return grad * inside.to(grad.dtype), None, None, None, None


fake_quantize.register_autograd(_clipping_mask_gradient, setup_context=_save_values)


def _fake_quantize_onnx(x, scale, zero_point, axis: int, floor: bool = False):
    from onnxscript import opset18 as op

    return op.DequantizeLinear(op.QuantizeLinear(x, scale, zero_point, axis=axis), scale, zero_point, axis=axis)


def _dequantize_onnx(q, scale, zero_point, axis: int):
    from onnxscript import opset18 as op

    return op.DequantizeLinear(q, scale, zero_point, axis=axis)


TRANSLATIONS = {fake_quantize._opoverload: _fake_quantize_onnx, dequantize._opoverload: _dequantize_onnx}
