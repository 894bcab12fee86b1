"""The backward pass of the ten operators on NumPy arrays: grad_output and the forward pass's inputs in,
the gradients out (None for those not asked for).

Each function pairs with a private forward in functional.py (`_conv2d`, `_max_pool2d`, ...) that fills
a dict `saved` with the normalised arguments and the routes it found (max positions, batch statistics);
nbops.autograd connects both to torch autograd. The loops are in the family's kernel module
(cpu/pooling.py `_max_pool2d_backward`, ...), each with its formula. Two are the forward kernels
themselves, as the formulas say: the input gradient of a convolution is a transposed convolution of
grad_output with the same weight, and that of a transposed convolution a convolution.

Nothing here imports torch.
"""

from __future__ import annotations

import math

import numpy as np

from ._arrays import contiguous
from .functional import (
    _class_rows,
    _conv2d_fast,
    _conv_transpose2d_fast,
    _conv_work,
    _divide,
    _kernels,
    _phase_layout,
)


def _batched(array: np.ndarray, ndim: int) -> np.ndarray:
    """An unbatched (C, H, W) array as (1, C, H, W), C-contiguous."""
    array = contiguous(array)
    return array[None] if array.ndim == ndim - 1 else array


# ----------------------------------------------------------------------------------------------- pooling


def _window_hits(out_size, size, kernel, stride, pad, dilation) -> np.ndarray:
    """For each output position along one axis: whether its window reaches an input position at all."""
    taps = np.arange(out_size)[:, None] * stride - pad + np.arange(kernel)[None, :] * dilation
    return ((taps >= 0) & (taps < size)).any(axis=1)


def max_pool2d_backward(grad_output: np.ndarray, saved: dict) -> np.ndarray:
    """grad_input: each output's gradient added at the input position its max came from."""
    shape = saved["input_shape"]
    planes = math.prod(shape[:-2])
    indices = saved["indices"]
    # (the kernel clears each plane before adding to it; an empty batch has nothing to route)
    grad_input = np.empty(shape, dtype=saved["dtype"]) if indices.size else np.zeros(shape, dtype=saved["dtype"])
    if indices.size:
        out_h, out_w = indices.shape[-2:]
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = saved["kernel"], saved["strides"], saved["pads"], saved["dilations"]
        _kernels("pooling")._max_pool2d_backward(
            contiguous(grad_output).reshape(planes, out_h, out_w),
            indices.reshape(planes, out_h, out_w),
            _window_hits(out_h, shape[-2], kh, sh, ph, dh),
            _window_hits(out_w, shape[-1], kw, sw, pw, dw),
            grad_input.reshape(planes, -1),
        )
    return grad_input


def avg_pool2d_backward(grad_output: np.ndarray, saved: dict) -> np.ndarray:
    """grad_input: each output's gradient divided by its window's divisor, added over its window."""
    shape = saved["input_shape"]
    planes = math.prod(shape[:-2])
    grad_input = np.empty(shape, dtype=saved["dtype"])
    if grad_input.size:
        out_h, out_w = grad_output.shape[-2:]
        _kernels("pooling")._avg_pool2d_backward(
            contiguous(grad_output).reshape(planes, out_h, out_w),
            grad_input.reshape(planes, shape[-2], shape[-1]),
            *saved["kernel"],
            *saved["strides"],
            *saved["pads"],
            saved["count_include_pad"],
            saved["divisor"],
        )
    return grad_input


# ------------------------------------------------------------------------------------------- convolution


def _weight_grad(source4, grad4, weight_shape, rows, strides, before, padded, dilations, groups):
    """grad_weight(j, k, m, l) = sum_n sum_h sum_w grad4(n, j, h, w) * padded source4(n, g*K + k,
    stride*h + dilation*m - before, ...) for h < rows, through the phase planes (_conv2d_weight_grad)."""
    out_channels = grad4.shape[1]
    grad = np.empty((out_channels, math.prod(weight_shape[1:])), dtype=grad4.dtype)
    if grad4.shape[0] == 0 or grad4.shape[2] == 0 or grad4.shape[3] == 0:
        grad[...] = 0
    else:
        xs, offsets, group_size, plane_w = _phase_layout(source4, weight_shape, rows, strides, before, padded, dilations, groups)
        # grad_output on the planes' flat index h * Wq + w (zeros in the columns past W_out): each
        # (sample, channel, tap) is then one long dot product
        batch, channels, out_h, out_w = grad4.shape
        grad_rows = np.zeros((batch, channels, rows, plane_w), dtype=grad4.dtype)
        grad_rows[:, :, :out_h, :out_w] = grad4[:, :, :rows]
        kernels = _kernels("conv")
        work = _conv_work(grad.size, batch * rows * plane_w)
        kernels._conv2d_weight_grad.pick(work)(xs, grad_rows.reshape(batch, channels, -1), offsets, group_size, groups, grad)
        if not np.isfinite(grad).all():  # an inf input may have met a thrown-away column's 0: sum exactly
            kernels._conv2d_weight_grad_rows(xs, contiguous(grad4[:, :, :rows]), offsets, group_size, groups, plane_w, grad)
    return grad.reshape(weight_shape)


def _bias_grad(grad4: np.ndarray) -> np.ndarray:
    """grad_bias(j) = sum_n sum_h sum_w grad_output(n, j, h, w)."""
    batch, channels = grad4.shape[:2]
    sums = np.zeros(channels)
    if grad4.size:
        _kernels("conv")._channel_sums(grad4.reshape(batch, channels, -1), sums)
    return sums.astype(grad4.dtype)


def conv2d_backward(grad_output, input, weight, saved: dict, needs=(True, True, True)):
    """(grad_input, grad_weight, grad_bias) of conv2d, each only where `needs` says so.

    grad_input(n, i) = sum_j weight(j, i') (*T) grad_output(n, j): the transposed convolution with the
    same stride, dilation and groups, computed over the padded input and cropped to it; with stride 1,
    the same sum as a convolution of the padded grad_output with the kernel turned round.
    """
    x4 = _batched(input, 4)
    gy = _batched(grad_output, 4)
    w = contiguous(weight)
    strides, before, padded = saved["strides"], saved["before"], saved["padded"]
    dilations, groups = saved["dilations"], saved["groups"]
    batch, in_channels, height, width = x4.shape
    out_h, out_w = gy.shape[2], gy.shape[3]
    grad_input = grad_weight = grad_bias = None
    if needs[0]:
        kh, kw = w.shape[2], w.shape[3]
        extent = (dilations[0] * (kh - 1), dilations[1] * (kw - 1))
        after = (padded[0] - height - before[0], padded[1] - width - before[1])
        zeros = np.zeros(in_channels, dtype=x4.dtype)
        if not gy.size:
            grad_input = np.zeros(x4.shape, dtype=x4.dtype)
        elif strides == (1, 1) and max(before[0], after[0]) <= extent[0] and max(before[1], after[1]) <= extent[1]:
            # stride 1: a plain correlation of grad_output, padded by extent - padding, with the kernel
            # turned round and input and output channels swapped in each group
            grad_input = np.empty(x4.shape, dtype=x4.dtype)
            group_out, group_in = w.shape[0] // groups, w.shape[1]
            turned = w.reshape(groups, group_out, group_in, kh, kw)[..., ::-1, ::-1].transpose(0, 2, 1, 3, 4)
            turned = contiguous(turned).reshape(in_channels, group_out, kh, kw)
            pads = (extent[0] - before[0], extent[1] - before[1])
            around = (out_h + 2 * extent[0] - before[0] - after[0], out_w + 2 * extent[1] - before[1] - after[1])
            _conv2d_fast(gy, turned, zeros, grad_input, (1, 1), pads, around, dilations, groups)
        else:  # the transposed convolution over the padded input, cropped to the input
            reach = ((out_h - 1) * strides[0] + extent[0] + 1, (out_w - 1) * strides[1] + extent[1] + 1)
            full = np.zeros((batch, in_channels) + padded, dtype=x4.dtype)  # rows past the last window get 0
            spread = np.empty((batch, in_channels) + reach, dtype=x4.dtype)
            _conv_transpose2d_fast(gy, w, zeros, spread, strides, (0, 0), dilations, groups)
            full[:, :, : reach[0], : reach[1]] = spread
            grad_input = full[:, :, before[0] : before[0] + height, before[1] : before[1] + width]
        grad_input = contiguous(grad_input).reshape(input.shape)
    if needs[1]:
        grad_weight = _weight_grad(x4, gy, w.shape, out_h, strides, before, padded, dilations, groups)
    if len(needs) > 2 and needs[2]:
        grad_bias = _bias_grad(gy)
    return grad_input, grad_weight, grad_bias


def conv_transpose2d_backward(grad_output, input, weight, saved: dict, needs=(True, True, True)):
    """(grad_input, grad_weight, grad_bias) of conv_transpose2d, each only where `needs` says so.

    grad_input = conv2d(grad_output, weight, stride, padding, dilation, groups), its first H x W;
    grad_weight(i, j', m, l) = sum_n sum_h sum_w input(n, i, h, w)
                               * grad_output(n, g*C_out/groups + j', stride*h - padding + dilation*m, ...).
    """
    x4 = _batched(input, 4)
    gy = _batched(grad_output, 4)
    w = contiguous(weight)
    strides, pads, dilations, groups = saved["strides"], saved["pads"], saved["dilations"], saved["groups"]
    batch, in_channels, height, width = x4.shape
    padded = (gy.shape[2] + 2 * pads[0], gy.shape[3] + 2 * pads[1])
    grad_input = grad_weight = grad_bias = None
    if needs[0]:
        grad_input = np.zeros(x4.shape, dtype=x4.dtype)
        if grad_input.size:
            _conv2d_fast(gy, w, np.zeros(in_channels, dtype=x4.dtype), grad_input, strides, pads, padded, dilations, groups)
        grad_input = grad_input.reshape(input.shape)
    if needs[1]:
        grad_weight = _weight_grad(gy, x4, w.shape, height, strides, pads, padded, dilations, groups)
    if len(needs) > 2 and needs[2]:
        grad_bias = _bias_grad(gy)
    return grad_input, grad_weight, grad_bias


# ----------------------------------------------------------------------------------- activation, RoI


def sigmoid_backward(grad_output: np.ndarray, output: np.ndarray) -> np.ndarray:
    """grad_input = grad_output * (1 - output) * output, from the forward pass's output."""
    out = contiguous(output)
    grad_input = np.empty(out.shape, dtype=out.dtype)
    if out.size:
        _kernels("activation")._sigmoid_backward(
            contiguous(grad_output).reshape(-1), out.reshape(-1), grad_input.reshape(-1), out.dtype.type(1)
        )
    return grad_input


def roi_pool_backward(grad_output: np.ndarray, saved: dict) -> np.ndarray:
    """grad_input: each bin's gradient added at the position of the value that won it."""
    batch, channels, height, width = saved["input_shape"]
    argmax = saved["argmax"]
    make = np.empty if argmax.size else np.zeros  # (the kernel clears every plane before adding to it)
    grad_input = make(saved["input_shape"], dtype=saved["dtype"])
    if grad_input.size and argmax.size:
        boxes = argmax.shape[0]
        _kernels("roi")._roi_pool_backward(
            contiguous(grad_output).reshape(boxes, channels, -1),
            argmax.reshape(boxes, channels, -1),
            saved["batch_index"],
            grad_input.reshape(batch, channels, height * width),
        )
    return grad_input


# -------------------------------------------------------------------------------------------- batch norm


def batch_norm_backward(grad_output, input, weight, saved: dict, needs=(True, True, True)):
    """(grad_input, grad_weight, grad_bias) of batch_norm, with the batch statistics in training (they
    depend on the input) and the running ones in evaluation (constants)."""
    x = contiguous(input)
    dtype = saved["dtype"]
    batch, channels = x.shape[0], x.shape[1]
    grad_input = np.empty(x.shape, dtype=dtype)  # (the kernel writes every element)
    grad_weight = np.zeros(channels)
    grad_bias = np.zeros(channels)
    if x.size:
        gamma = np.empty(0, dtype=dtype) if weight is None else contiguous(weight)
        _kernels("normalization")._batch_norm_backward(
            x.reshape(batch, channels, -1),
            contiguous(grad_output).reshape(batch, channels, -1),
            saved["mean"],
            saved["invstd"],
            gamma,
            saved["training"],
            grad_input.reshape(batch, channels, -1),
            grad_weight,
            grad_bias,
        )
    return (
        grad_input if needs[0] else None,
        grad_weight.astype(dtype) if needs[1] else None,
        grad_bias.astype(dtype) if needs[2] else None,
    )


# ------------------------------------------------------------------------------------------------ losses


def _loss_scale(grad_output: np.ndarray, reduction: str, denominator: float) -> tuple[np.ndarray, bool]:
    """What each position's loss gradient is multiplied by: grad_output per position ('none'), or one
    value for all, grad_output ('sum') or grad_output / denominator ('mean'); and whether it is per
    position."""
    if reduction == "none":
        return contiguous(grad_output).reshape(-1).astype(np.float64), True
    value = float(grad_output.reshape(()))
    if reduction == "mean":
        value = _divide(value, denominator)
    return np.full(1, value), False


def _from_class_rows(rows: np.ndarray, shape: tuple) -> np.ndarray:
    """The inverse of functional._class_rows: (N * L, C) rows -> an array of the input's shape."""
    if len(shape) <= 2:
        return rows.reshape(shape)
    batch, classes = shape[0], shape[1]
    return contiguous(np.swapaxes(rows.reshape(batch, -1, classes), 1, 2)).reshape(shape)


def cross_entropy_backward(grad_output, input, target, weight, saved: dict, needs=(True, False)):
    """(grad_input, grad_target) of cross_entropy: grad_target only for class-probability targets."""
    x = np.asarray(input)
    classes = x.shape[0] if x.ndim == 1 else x.shape[1]
    batch = 1 if x.ndim == 1 else x.shape[0]
    length = math.prod(x.shape[2:])
    positions = batch * length
    scale, per_position = _loss_scale(np.asarray(grad_output), saved["reduction"], saved["denominator"])
    if not per_position:  # (the kernels read one value per position: rows, not elements)
        scale = np.full(positions, scale[0])
    kernels = _kernels("loss")
    if saved["probabilities"]:
        t = np.asarray(target)
        dtype = np.result_type(x.dtype, t.dtype)
        grad_x = np.zeros((positions, classes), dtype=dtype)
        grad_t = np.zeros((positions, classes) if needs[1] else (1, 1), dtype=dtype)
        if grad_x.size:
            kernels._cross_entropy_prob_backward(
                _class_rows(x.astype(dtype, copy=False), batch, classes, length),
                _class_rows(t.astype(dtype, copy=False), batch, classes, length),
                np.ones(classes) if weight is None else np.asarray(weight, dtype=np.float64),
                saved["smoothing"],
                scale,
                grad_x,
                bool(needs[1]),
                grad_t,
            )
        grad_input = _from_class_rows(grad_x, x.shape).astype(x.dtype, copy=False) if needs[0] else None
        grad_target = _from_class_rows(grad_t, t.shape).astype(t.dtype, copy=False) if needs[1] else None
        return grad_input, grad_target
    grad_x = np.zeros((positions, classes), dtype=x.dtype)
    if grad_x.size:
        kernels._cross_entropy_class_backward(
            _class_rows(x, batch, classes, length),
            contiguous(np.asarray(target).astype(np.int64, copy=False)).reshape(-1),
            np.ones(classes, dtype=x.dtype) if weight is None else contiguous(np.asarray(weight, dtype=x.dtype)),
            saved["ignore_index"],
            saved["smoothing"],
            scale,
            grad_x,
        )
    return _from_class_rows(grad_x, x.shape), None


def _sum_to(array: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a broadcast result back to one argument's shape (the gradient of broadcasting)."""
    lead = array.ndim - len(shape)
    if lead:
        array = array.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, size in enumerate(shape) if size == 1 and array.shape[i] != 1)
    if axes:
        array = array.sum(axis=axes, keepdims=True)
    return array.reshape(shape)


def mse_loss_backward(grad_output, input, target, weight, saved: dict, needs=(True, True, True)):
    """(grad_input, grad_target, grad_weight) of mse_loss, each only where `needs` says so; broadcast
    arguments get their gradients summed back to their own shapes."""
    x, y = np.asarray(input), np.asarray(target)
    w = None if weight is None else np.asarray(weight)
    dtype = np.result_type(*[a.dtype for a in (x, y, w) if a is not None])
    shape = np.broadcast_shapes(x.shape, y.shape)

    def flat(array):
        return contiguous(np.broadcast_to(array.astype(dtype, copy=False), shape)).reshape(-1)

    size = math.prod(shape)
    reduction = saved["reduction"]
    scale, per_element = _loss_scale(np.asarray(grad_output), reduction, saved.get("denominator", 1.0))
    grad = np.empty(size, dtype=dtype)  # (the kernel writes every element)
    want_weight = w is not None and len(needs) > 2 and bool(needs[2])
    grad_w = np.empty(size if want_weight else 1, dtype=dtype)
    if size:
        _kernels("loss")._squared_error_backward(
            flat(x), flat(y), flat(w) if w is not None else np.empty(0, dtype=dtype), w is not None,
            scale, per_element, grad, want_weight, grad_w,
        )
    grad = grad.reshape(shape)
    grad_input = _sum_to(grad, x.shape).astype(x.dtype, copy=False) if needs[0] else None
    grad_target = (-_sum_to(grad, y.shape)).astype(y.dtype, copy=False) if needs[1] else None
    grad_weight = None
    if want_weight:
        grad_weight = _sum_to(grad_w.reshape(shape), w.shape)
        if reduction == "mean":  # d/dw_n of sum(l) / sum(w): the denominator's term, once per weight
            grad_weight = grad_weight - saved["mean"] * scale[0]
        grad_weight = grad_weight.astype(w.dtype, copy=False)
    return grad_input, grad_target, grad_weight
