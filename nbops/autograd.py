"""torch autograd for the nbops operators: one torch.autograd.Function per operator (glue only).

The public functions (nbops.conv2d, ...) come here by themselves when grad mode is on and an argument
is a tensor that requires grad, with their arguments already checked and normalised. Each Function's
forward runs the CPU backend's run_<op> (nbops/cpu/<family>.py) and keeps what the backward pass needs;
its backward runs run_<op>_backward from the same file. Gradients are computed once
(`once_differentiable`): a gradient of a gradient raises a clear error.

apply() takes the tensors autograd follows (input, weight, ...), then the front's checked NumPy views of
them and the normalised sizes: nothing here checks an argument or calls the front. The tensors go
through save_for_backward, so that changing one in place before backward is an error, as in torch; the
backward pass reads the views. flatten needs no Function: it returns a view made by the tensor's own
reshape, which autograd already follows.

Importing this module imports torch; `import nbops` does not import it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ._arrays import as_array, contiguous
from .cpu import activation, conv, loss, normalization, pooling, roi


def _array(grad_output, shape=None):
    """A gradient tensor as a C-contiguous NumPy array, reshaped to the backend's `shape` if given."""
    array = contiguous(as_array(grad_output, "grad_output", floating=False))
    return array if shape is None else array.reshape(shape)


def _tensor(array, shape=None):
    """A backend's array as a tensor of `shape` (the autograd input's; None stays None)."""
    if array is None:
        return None
    array = contiguous(np.asarray(array))
    return torch.from_numpy(array if shape is None else array.reshape(shape))


def _save(ctx, *tensors) -> None:
    """save_for_backward the tensors among `tensors` (torch's check that none changes in place)."""
    ctx.save_for_backward(*(t for t in tensors if isinstance(t, torch.Tensor)))


def _unchanged(ctx) -> None:
    """Raise torch's error if a saved tensor was changed in place since forward."""
    ctx.saved_tensors  # noqa: B018  (reading them runs torch's version check)


# ----------------------------------------------------------------------------------------------- pooling


class MaxPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, x4, args, unbatched, return_indices):
        out, indices = pooling.run_max_pool2d(x4, *args, True)  # (the indices route the gradient)
        ctx.indices, ctx.args, ctx.shape4, ctx.shape = indices, args, x4.shape, tuple(input.shape)
        out = torch.from_numpy(out[0] if unbatched else out)
        if not return_indices:
            return out
        indices = torch.from_numpy(indices[0] if unbatched else indices)
        ctx.mark_non_differentiable(indices)
        return out, indices

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output, grad_indices=None):
        kernel, strides, pads, dilations, _ = ctx.args
        grad = pooling.run_max_pool2d_backward(
            _array(grad_output, ctx.indices.shape), ctx.indices, ctx.shape4, kernel, strides, pads, dilations
        )
        return _tensor(grad, ctx.shape), None, None, None, None


class AvgPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, x4, args, unbatched):
        out = pooling.run_avg_pool2d(x4, *args)
        ctx.args, ctx.shape4, ctx.out_shape, ctx.shape = args, x4.shape, out.shape, tuple(input.shape)
        return torch.from_numpy(out[0] if unbatched else out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        kernel, strides, pads, _, count_include_pad, divisor = ctx.args
        grad = pooling.run_avg_pool2d_backward(
            _array(grad_output, ctx.out_shape), ctx.shape4, kernel, strides, pads, count_include_pad, divisor
        )
        return _tensor(grad, ctx.shape), None, None, None


# ------------------------------------------------------------------------------------------- convolution


def _convolution(name, run_forward, run_backward):
    """The Function of a convolution (conv2d, conv_transpose2d): apply(input, weight, bias, x4, w, b,
    args, unbatched), forward through `run_forward(x4, w, b, *args)`, the gradients of input, weight
    and bias (where asked for) through `run_backward(grad_output, x4, w, *args[:-1], needs)`."""

    def forward(ctx, input, weight, bias, x4, w, b, args, unbatched):
        out = run_forward(x4, w, b, *args)
        _save(ctx, input, weight)
        ctx.x4, ctx.w, ctx.args, ctx.out_shape = x4, w, args, out.shape
        ctx.shapes = (tuple(input.shape), tuple(weight.shape), None if bias is None else tuple(bias.shape))
        return torch.from_numpy(out[0] if unbatched else out)

    @once_differentiable
    def backward(ctx, grad_output):
        _unchanged(ctx)
        needs = ctx.needs_input_grad[:2] + (ctx.needs_input_grad[2] and ctx.shapes[2] is not None,)
        grads = run_backward(_array(grad_output, ctx.out_shape), ctx.x4, ctx.w, *ctx.args[:-1], needs)
        return tuple(_tensor(g, shape) for g, shape in zip(grads, ctx.shapes)) + (None,) * 5

    return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward)})


Conv2d = _convolution("Conv2d", conv.run_conv2d, conv.run_conv2d_backward)
ConvTranspose2d = _convolution("ConvTranspose2d", conv.run_conv_transpose2d, conv.run_conv_transpose2d_backward)


# ----------------------------------------------------------------------------------- activation, RoI


class Sigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, x):
        out = torch.from_numpy(activation.run_sigmoid(x))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (out,) = ctx.saved_tensors
        return _tensor(activation.run_sigmoid_backward(_array(grad_output), out.numpy())), None


class RoIPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, x, bins):
        out, argmax = roi.run_roi_pool(x, *bins)
        ctx.argmax, ctx.batch_index, ctx.shape = argmax, bins[0], x.shape
        return torch.from_numpy(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        grad = roi.run_roi_pool_backward(_array(grad_output), ctx.argmax, ctx.batch_index, ctx.shape)
        return _tensor(grad), None, None


# -------------------------------------------------------------------------------------------- batch norm


class BatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias, x3, args):
        running_mean, running_var, w, _, training, _, eps = args
        out, mean, var = normalization.run_batch_norm(x3, *args)
        _save(ctx, input, weight)
        # copies of the statistics: the running ones may change before the backward pass
        ctx.x3, ctx.w, ctx.mean, ctx.var = x3, w, np.array(mean, dtype=np.float64), np.array(var, dtype=np.float64)
        ctx.eps, ctx.training = eps, training
        ctx.shapes = tuple(None if t is None else tuple(t.shape) for t in (input, weight, bias))
        return torch.from_numpy(out.reshape(input.shape))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        _unchanged(ctx)
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        if ctx.x3.size == 0:  # an empty input (any shape torch accepts): zero gradients of every shape
            grads = [np.zeros(shape, dtype=ctx.x3.dtype) if need else None for need, shape in zip(needs, ctx.shapes)]
        else:
            grads = normalization.run_batch_norm_backward(
                _array(grad_output, ctx.x3.shape), ctx.x3, ctx.w, ctx.mean, ctx.var, ctx.eps, ctx.training, needs
            )
        return tuple(_tensor(g, shape) for g, shape in zip(grads, ctx.shapes)) + (None, None)


# ------------------------------------------------------------------------------------------------ losses


def _loss(name, run_forward, run_backward, weight_grad: bool):
    """The Function of a loss (cross_entropy, mse_loss): apply(input, target, weight, x, t, w, args),
    forward through `run_forward(x, t, w, *args)`, the gradients of input, target and (where
    `weight_grad`) weight, each where asked for, through `run_backward(grad_output, x, t, w, *args,
    needs)`."""

    def forward(ctx, input, target, weight, x, t, w, args):
        if not weight_grad and isinstance(weight, torch.Tensor) and weight.requires_grad:
            op = run_forward.__name__.removeprefix("run_")
            raise RuntimeError(f"{op}: the gradient with respect to weight is not implemented (nor is it in torch)")
        out = run_forward(x, t, w, *args)
        _save(ctx, input, target, weight)
        ctx.arrays, ctx.args = (x, t, w), args
        return torch.from_numpy(out)

    @once_differentiable
    def backward(ctx, grad_output):
        _unchanged(ctx)
        grads = tuple(run_backward(_array(grad_output), *ctx.arrays, *ctx.args, ctx.needs_input_grad[:3]))
        return tuple(_tensor(g) for g in grads) + (None,) * (7 - len(grads))

    return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward)})


CrossEntropy = _loss("CrossEntropy", loss.run_cross_entropy, loss.run_cross_entropy_backward, weight_grad=False)
MSELoss = _loss("MSELoss", loss.run_mse_loss, loss.run_mse_loss_backward, weight_grad=True)


__all__ = [
    "MaxPool2d", "AvgPool2d", "Conv2d", "ConvTranspose2d", "Sigmoid", "RoIPool", "BatchNorm", "CrossEntropy", "MSELoss",
]
