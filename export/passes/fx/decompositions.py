"""Backward ops rewritten as forward ops that have an ONNX translation.

torch autograd records backward kernels (``convolution_backward``, pooling backwards, ...)
that ONNX has no operator for. Each one here is re-expressed with ordinary forward ops
(transposed convolutions, scatter-add, matrix products), given that parameters are frozen:
only input gradients are ever produced.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np
import torch
import torch._decomp
import torch._decomp.decompositions as core_decompositions
import torch.nn.functional as F

aten = torch.ops.aten

_guided = False
_pooling = False  # inside max_pool2d_with_indices, which records the op itself
# attribute of an eval-mode batch norm's input gradient: (its grad_output, its per-channel scale)
_BATCH_NORM_SCALE = "_onnxcam_batch_norm_scale"


@contextlib.contextmanager
def guided_relu() -> Iterator[None]:
    """Within this block, ReLU backward follows the guided-backpropagation rule."""
    global _guided
    _guided, previous = True, _guided
    try:
        yield
    finally:
        _guided = previous


def guiding() -> bool:
    """Whether the guided-backpropagation rule is on (within :func:`guided_relu`)."""
    return _guided


def _pair(value, count: int = 2) -> list:
    values = [value] if isinstance(value, int) else list(value)
    return values * count if len(values) == 1 else values


def _output_padding(size_in: int, size_out: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Extra rows a transposed convolution needs to restore the forward input's size."""
    return size_in - ((size_out - 1) * stride - 2 * pad + dilation * (kernel - 1) + 1)


def convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation,
                         transposed, output_padding, groups, output_mask):
    if output_mask[1] or output_mask[2]:
        raise NotImplementedError("convolution_backward: weight gradients requested (parameters must be frozen)")
    if not transposed and weight.dim() == 3:  # 1-D (ECA's attention across channels): 2-D of height 1
        grad_input = convolution_backward(
            grad_output.unsqueeze(2), input.unsqueeze(2), weight.unsqueeze(2), bias_sizes, [1, *_pair(stride, 1)],
            [0, *_pair(padding, 1)], [1, *_pair(dilation, 1)], False, [0, 0], groups, output_mask)[0]
        return None if grad_input is None else grad_input.squeeze(2), None, None
    if transposed or weight.dim() != 4:
        raise NotImplementedError("convolution_backward: only 1-D and 2-D forward convolutions are supported")
    if not output_mask[0]:
        return None, None, None
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    kernel = [int(k) for k in weight.shape[2:]]
    folded = getattr(grad_output, _BATCH_NORM_SCALE, None)
    if folded is not None:  # fold the batch norm's per-channel scale into the kernels
        grad_output, scale = folded
        weight = weight * scale.reshape(-1, 1, 1, 1).to(weight.dtype)
    if stride == [1, 1] and all(p <= d * (k - 1) for p, d, k in zip(padding, dilation, kernel)):
        return _flipped_convolution(grad_output, weight, padding, dilation, groups), None, None
    extra = [
        _output_padding(int(input.shape[2 + i]), int(grad_output.shape[2 + i]), kernel[i],
                        stride[i], padding[i], dilation[i])
        for i in range(2)
    ]
    if all(0 <= e < max(s, d) for e, s, d in zip(extra, stride, dilation)):
        grad_input = F.conv_transpose2d(grad_output, weight, None, stride, padding, extra, groups, dilation)
    else:  # rows the forward never read: transpose without padding, then cut out the input window
        full = F.conv_transpose2d(grad_output, weight, None, stride, 0, 0, groups, dilation)
        grad_input = _crop_or_pad(full, padding, input.shape[2:])
    return _blocked(grad_input), None, None


def _flipped_convolution(grad_output, weight, padding, dilation, groups):
    """Input gradient of a stride-1 convolution as a forward convolution with the kernels
    flipped and their in/out channels swapped per group: onnxruntime's Conv is markedly
    faster than its ConvTranspose. The flip runs on the weight inside the graph, so the
    file holds no second copy of the weights."""
    c_out, c_in_group, kh, kw = (int(v) for v in weight.shape)
    swapped = (weight.reshape(groups, c_out // groups, c_in_group, kh, kw).transpose(1, 2)
               .reshape(groups * c_in_group, c_out // groups, kh, kw).flip(2, 3))
    pad = [d * (k - 1) - p for p, d, k in zip(padding, dilation, (kh, kw))]
    return F.conv2d(grad_output, swapped, None, 1, pad, dilation, groups)


def _crop_or_pad(full: torch.Tensor, offset: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """``full[..., o : o + size]`` per spatial dim, zero-padding where ``full`` is too short."""
    h, w = int(size[0]), int(size[1])
    need_h = offset[0] + h - full.shape[2]
    need_w = offset[1] + w - full.shape[3]
    if need_h > 0 or need_w > 0:
        full = F.pad(full, (0, max(need_w, 0), 0, max(need_h, 0)))
    return full[:, :, offset[0]:offset[0] + h, offset[1]:offset[1] + w]


def _max_pool2d_indices(x: torch.Tensor, kernel: list[int], stride: list[int], padding: list[int],
                        dilation: list[int], ceil_mode: bool) -> torch.Tensor:
    return aten.max_pool2d_with_indices.default(x, kernel, stride, padding, dilation, ceil_mode)[1]


# torch's max-pool indices (each window's first maximum, flat over H*W) as an op of their own,
# with one ONNX translation (``max_pool2d_indices_onnx``); the same function serves eager and
# symbolic (fake) tensors
max_pool2d_indices = torch.library.custom_op("onnxcam::max_pool2d_indices", _max_pool2d_indices, mutates_args=())
max_pool2d_indices.register_fake(_max_pool2d_indices)


def max_pool2d_indices_onnx(x, kernel, stride, padding, dilation, ceil_mode):
    """ONNX MaxPool's second output, whose indices run flat over the whole N*C*H*W tensor,
    rebased per plane by subtracting ``(n * C + c) * H * W``. (torch.onnx rebases with a
    second MaxPool, which costs as much again.)"""
    from onnxscript import opset18 as op

    _, flat = op.MaxPool(x, kernel_shape=kernel, strides=stride, pads=padding + padding,
                         dilations=dilation, ceil_mode=int(ceil_mode))
    planes = op.ReduceProd(op.Shape(x, end=2), keepdims=0)
    plane_size = op.ReduceProd(op.Shape(x, start=2), keepdims=1)
    one = op.Constant(value_ints=[1])
    first = op.Mul(op.Range(op.Constant(value_int=0), planes, op.Constant(value_int=1)), plane_size)
    return op.Sub(flat, op.Reshape(first, op.Concat(op.Shape(x, end=2), one, one, axis=0)))


def max_pool2d_with_indices(self, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    """Max pooling whose values come from a plain pooling op (onnxruntime's fast blocked
    MaxPool; nothing else where the indices go unread) and whose indices come from
    ``max_pool2d_indices``."""
    global _pooling
    if _pooling:  # the op itself, as recorded by the call below
        return NotImplemented
    _pooling = True
    try:
        values = aten.max_pool2d_with_indices.default(self, kernel_size, stride, padding, dilation, ceil_mode)[0]
    finally:
        _pooling = False
    kernel, padding, dilation = _pair(kernel_size), _pair(padding), _pair(dilation)
    stride = _pair(stride) if stride else kernel
    return values, max_pool2d_indices(self, kernel, stride, padding, dilation, ceil_mode)


def native_batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd,
                               train, eps, output_mask):
    """Eval-mode batch norm backward as a per-channel product. The result remembers its
    factors, so that a convolution before the batch norm folds the scale into its kernels
    and the product drops out of the graph."""
    if train or output_mask[1] or output_mask[2]:
        return core_decompositions.native_batch_norm_backward(grad_out, input, weight, running_mean, running_var,
                                                              save_mean, save_invstd, train, eps, output_mask)
    scale = torch.rsqrt(running_var.float() + eps)
    if weight is not None:
        scale = scale * weight.float()
    shape = [1, -1] + [1] * (grad_out.dim() - 2)
    grad_input = grad_out * scale.reshape(shape).to(grad_out.dtype)
    setattr(grad_input, _BATCH_NORM_SCALE, (grad_out, scale))
    return grad_input, None, None


def max_pool2d_with_indices_backward(grad_output, input, kernel_size, stride, padding, dilation,
                                     ceil_mode, indices):
    n, c = grad_output.shape[0], grad_output.shape[1]
    h, w = int(input.shape[2]), int(input.shape[3])
    # scatter-add in float32: onnxruntime's CPU ScatterElements has no float16 'add'
    flat = torch.zeros(n, c, h * w, dtype=torch.float32, device=grad_output.device)
    flat = flat.scatter_add(2, indices.reshape(n, c, -1), grad_output.reshape(n, c, -1).float())
    return flat.reshape(n, c, h, w).to(grad_output.dtype)


def _window_counts(size: int, out: int, kernel: int, stride: int, pad: int, include_pad: bool) -> list[int]:
    """Along one axis, the elements each average-pooling window divides by (torch's rule: a
    window is clipped to the padded input, then to the input unless padding counts)."""
    counts = []
    for i in range(out):
        start = i * stride - pad
        end = min(start + kernel, size + pad)
        counts.append(end - start if include_pad else min(end, size) - max(start, 0))
    return counts


def avg_pool2d_backward(grad_output, input, kernel_size, stride, padding, ceil_mode,
                        count_include_pad, divisor_override):
    kernel = _pair(kernel_size)
    stride = _pair(stride) if stride else kernel
    padding = _pair(padding)
    channels = int(input.shape[1])
    if divisor_override:
        scaled = grad_output / divisor_override
    elif count_include_pad and not ceil_mode:
        scaled = grad_output / (kernel[0] * kernel[1])
    else:  # divisor = number of counted elements in each window, one constant
        size, out = tuple(int(d) for d in input.shape[2:]), tuple(int(d) for d in grad_output.shape[2:])
        counts = [_window_counts(size[a], out[a], kernel[a], stride[a], padding[a], count_include_pad)
                  for a in (0, 1)]
        scaled = grad_output / torch.tensor(np.outer(*counts), dtype=grad_output.dtype, device=grad_output.device)
    ones_kernel = torch.ones(channels, 1, kernel[0], kernel[1], dtype=grad_output.dtype, device=grad_output.device)
    full = F.conv_transpose2d(scaled, ones_kernel, None, stride, 0, 0, channels)
    return _crop_or_pad(full, padding, input.shape[2:])


def _adaptive_matrix(size_in: int, size_out: int, dtype: torch.dtype, device) -> torch.Tensor:
    """[size_out, size_in] averaging matrix of 1-D adaptive average pooling, as one constant."""
    rows = []
    for i in range(size_out):
        start, end = (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size_in)])
    return torch.tensor(rows, dtype=dtype, device=device)


def adaptive_avg_pool2d_backward(grad_output, input):
    h, w = int(input.shape[2]), int(input.shape[3])
    oh, ow = int(grad_output.shape[2]), int(grad_output.shape[3])
    if oh == 1 and ow == 1:
        return _blocked(grad_output.expand(-1, -1, h, w) / (h * w))
    rows = _adaptive_matrix(h, oh, grad_output.dtype, grad_output.device)
    cols = _adaptive_matrix(w, ow, grad_output.dtype, grad_output.device)
    return torch.matmul(torch.matmul(rows.t(), grad_output), cols)


class ContiguousAdaptivePool(torch.overrides.TorchFunctionMode):
    """Feeds adaptive average pooling a contiguous input.

    For a channels-last input the composite op restrides its result in place
    (``as_strided_``), and that op's backward has no ONNX translation.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.adaptive_avg_pool2d, torch._C._nn.adaptive_avg_pool2d) and args:
            x = args[0]
            size = _pair(args[1] if len(args) > 1 else kwargs["output_size"])
            size = [x.shape[-2 + i] if s is None else s for i, s in enumerate(size)]
            return aten._adaptive_avg_pool2d(x.contiguous(), size)
        return func(*args, **kwargs)


def _should_fold(tensor1: torch.Tensor, tensor2: torch.Tensor, is_out: bool) -> bool:
    """torch's rule for folding a matrix product's leading dimensions, widened: any product
    of a tensor with more than two dimensions and a matrix (or vector) folds into one
    matrix product, the input copied to contiguous rows where it must be."""
    big, small = (tensor1, tensor2) if tensor1.dim() >= tensor2.dim() else (tensor2, tensor1)
    if big.dim() >= 3 and small.dim() <= 2 and not is_out:
        return True
    return _TORCH_SHOULD_FOLD(tensor1, tensor2, is_out)


_TORCH_SHOULD_FOLD = core_decompositions.should_fold


@contextlib.contextmanager
def folded_matmul() -> Iterator[None]:
    """Within this block (a trace), linear layers and matrix products on tensors with more
    than two dimensions fold into one matrix product against the one weight.

    torch's ``matmul`` decomposition folds ``[..., C] @ [C, D]`` only when the leading
    dimensions are contiguous or the matrix requires grad. Otherwise (nn.MultiheadAttention's
    [T, N, C] view of batch-first input, with frozen weights) it expands the matrix once per
    leading row into a batched product: in ONNX an ``Expand`` of the weight to [T, C, D], in
    a ViT-B at 224 px 197 copies (1.39 GB) of each block's in-projection weight.
    """
    core_decompositions.should_fold = _should_fold
    try:
        yield
    finally:
        core_decompositions.should_fold = _TORCH_SHOULD_FOLD


def _channel_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x times ``factor``, as a depthwise 1x1 convolution: onnxruntime runs it in its blocked
    (NCHWc) layout, and the ops after it that have blocked kernels (products, sums, ReLUs)
    stay there instead of converting to NCHW and back."""
    channels = int(x.shape[1])
    return F.conv2d(x, torch.full((channels, 1, 1, 1), factor, dtype=x.dtype, device=x.device), groups=channels)


def _positive(x: torch.Tensor) -> torch.Tensor:
    """``(x > 0)`` as 0/1 in x's dtype. On a 4-D map, a scale by 1 / (smallest normal float)
    clamped to [0, 1], which onnxruntime fuses into one blocked convolution: exact for every
    normal float; a denormal x gets a partial mask."""
    if x.dim() != 4 or not x.is_floating_point():
        return (x > 0).to(x.dtype)
    return _channel_scale(x, 1.0 / torch.finfo(x.dtype).tiny).clamp(0, 1)


def _blocked(x: torch.Tensor) -> torch.Tensor:
    """x itself, handed to onnxruntime's blocked layout by an identity channel scale (exact),
    so that the residual sums and masks after an op without a blocked kernel stay blocked."""
    return _channel_scale(x, 1.0) if x.dim() == 4 and x.is_floating_point() else x


def threshold_backward(grad_output, self, threshold):
    """ReLU backward as a product with a 0/1 mask: onnxruntime's Mul is about ten times
    faster than its Where on large maps. The guided rule also drops negative gradients, with
    a ReLU that onnxruntime fuses into the convolution before it (a clamp it would not)."""
    if _guided:
        grad_output = torch.relu(grad_output)
    mask = _positive(self) if threshold == 0 else self > threshold
    return grad_output * mask.to(grad_output.dtype)


def hardtanh_backward(grad_output, self, min_val, max_val):
    """ReLU6 / hardtanh backward, as a mask product like ``threshold_backward``. A hardtanh
    with a zero floor (ReLU6) is a rectifier: the guided rule drops negative gradients there
    too (MobileNet's and EfficientNet-Lite's guided backprop was their plain gradient before)."""
    if _guided and min_val >= 0:
        grad_output = torch.relu(grad_output)
    return grad_output * ((self > min_val) & (self < max_val)).to(grad_output.dtype)


def copy(self, src, non_blocking=False):
    """Functional copy as an explicit broadcast of ``src`` to ``self``'s shape: torch.onnx
    otherwise passes a scalar ``src`` on unbroadcast into the slice_scatter of an in-place
    slice assignment (Swin's ``attn_mask[a:b, c:d] = count``), a graph onnxruntime rejects."""
    return src.to(dtype=self.dtype, device=self.device).expand(self.shape).clone()


# forward ops the core decompositions would split into elementwise arithmetic, although
# torch.onnx writes them as one ONNX op (as a plain export does) that onnxruntime runs in its
# blocked layout: decomposed, MobileNetV3's activations broke its convolutions' layout chains
_KEPT = (aten.hardswish.default, aten.hardswish_.default, aten.hardsigmoid.default, aten.hardsigmoid_.default)


def explain_decompositions() -> dict:
    """Core ATen decompositions (less the forward ops of ``_KEPT``) plus the backward rewrites above."""
    table = {op: fn for op, fn in torch._decomp.core_aten_decompositions().items() if op not in _KEPT}
    table.update({
        aten.convolution_backward.default: convolution_backward,
        aten.native_batch_norm_backward.default: native_batch_norm_backward,
        aten.max_pool2d_with_indices.default: max_pool2d_with_indices,
        aten.max_pool2d_with_indices_backward.default: max_pool2d_with_indices_backward,
        aten.avg_pool2d_backward.default: avg_pool2d_backward,
        aten._adaptive_avg_pool2d_backward.default: adaptive_avg_pool2d_backward,
        aten.threshold_backward.default: threshold_backward,
        aten.hardtanh_backward.default: hardtanh_backward,
        aten.copy.default: copy,
    })
    return table
