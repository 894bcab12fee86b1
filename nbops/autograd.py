"""torch autograd for the nbops operators: one torch.autograd.Function per operator.

The public functions (nbops.conv2d, ...) come here by themselves when grad mode is on and an argument
is a tensor that requires grad: the forward pass is nbops' (functional.py), it keeps what the backward
pass needs, and the backward pass is nbops' too (gradients.py, kernels in cpu/). Gradients are computed
once (`once_differentiable`): a gradient of a gradient raises a clear error.

flatten needs no Function: it returns a view made by the tensor's own reshape, which autograd already
follows (its backward reshapes the gradient back), and which keeps torch's view semantics (an in-place
change of the result reaches the input and is tracked).

Importing this module imports torch; `import nbops` does not import it.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import functional as F
from . import gradients as G
from ._arrays import as_array, contiguous


def _array(obj):
    """A C-contiguous NumPy view (or copy) of a tensor, an ndarray as it is, None as None."""
    if obj is None:
        return None
    return contiguous(as_array(obj, "grad_output", floating=False))


def _tensor(array):
    return None if array is None else torch.from_numpy(contiguous(array))


def _keep(ctx, **objs) -> None:
    """Keep the forward pass's arguments for backward: tensors through save_for_backward (so that an
    in-place change before backward is an error, as in torch), anything else (ndarrays, None) as is."""
    names = [name for name, obj in objs.items() if isinstance(obj, torch.Tensor)]
    ctx.save_for_backward(*(objs[name] for name in names))
    ctx.tensor_names = names
    ctx.others = {name: obj for name, obj in objs.items() if name not in names}


def _kept(ctx) -> dict:
    objs = dict(ctx.others)
    objs.update(zip(ctx.tensor_names, ctx.saved_tensors))
    return {name: _array(obj) for name, obj in objs.items()}


class MaxPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
        ctx.saved = {}
        result = F._max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, ctx.saved)
        if return_indices:
            ctx.mark_non_differentiable(result[1])
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output, grad_indices=None):
        return (_tensor(G.max_pool2d_backward(_array(grad_output), ctx.saved)),) + (None,) * 6


class AvgPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        ctx.saved = {}
        return F._avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, ctx.saved)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        return (_tensor(G.avg_pool2d_backward(_array(grad_output), ctx.saved)),) + (None,) * 6


def _convolution(name, forward_body, backward_pass):
    """The Function of a convolution (conv2d, conv_transpose2d): forward(input, weight, bias, *options)
    through `forward_body`, gradients of input, weight and bias (where asked for) through `backward_pass`."""

    def forward(ctx, input, weight, bias, *options):
        ctx.saved = {}
        out = forward_body(input, weight, bias, *options, ctx.saved)
        _keep(ctx, input=input, weight=weight)
        ctx.has_bias = bias is not None
        ctx.options = len(options)
        return out

    @once_differentiable
    def backward(ctx, grad_output):
        kept = _kept(ctx)
        needs = ctx.needs_input_grad[:2] + (ctx.needs_input_grad[2] and ctx.has_bias,)
        grads = backward_pass(_array(grad_output), kept["input"], kept["weight"], ctx.saved, needs)
        return tuple(_tensor(g) for g in grads) + (None,) * ctx.options

    return type(name, (torch.autograd.Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward)})


# options: (stride, padding, dilation, groups) and (stride, padding, output_padding, groups, dilation)
Conv2d = _convolution("Conv2d", F._conv2d, G.conv2d_backward)
ConvTranspose2d = _convolution("ConvTranspose2d", F._conv_transpose2d, G.conv_transpose2d_backward)


class Sigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input):
        out = F._sigmoid(input)
        _keep(ctx, output=out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        return _tensor(G.sigmoid_backward(_array(grad_output), _kept(ctx)["output"]))


class RoIPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, boxes, output_size, spatial_scale):
        ctx.saved = {}
        return F._roi_pool(input, boxes, output_size, spatial_scale, ctx.saved)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        return _tensor(G.roi_pool_backward(_array(grad_output), ctx.saved)), None, None, None


class BatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, running_mean, running_var, weight, bias, training, momentum, eps):
        ctx.saved = {}
        out = F._batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps, ctx.saved)
        _keep(ctx, input=input, weight=weight)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        kept = _kept(ctx)
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4])
        grad_input, grad_weight, grad_bias = G.batch_norm_backward(
            _array(grad_output), kept["input"], kept["weight"], ctx.saved, needs
        )
        return _tensor(grad_input), None, None, _tensor(grad_weight), _tensor(grad_bias), None, None, None


class CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing):
        if isinstance(weight, torch.Tensor) and weight.requires_grad:
            raise RuntimeError("cross_entropy: the gradient with respect to weight is not implemented (nor is it in torch)")
        ctx.saved = {}
        out = F._cross_entropy(input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing, ctx.saved)
        _keep(ctx, input=input, target=target, weight=weight)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        kept = _kept(ctx)
        grad_input, grad_target = G.cross_entropy_backward(
            _array(grad_output), kept["input"], kept["target"], kept["weight"], ctx.saved, ctx.needs_input_grad[:2]
        )
        return (_tensor(grad_input), _tensor(grad_target)) + (None,) * 6


class MSELoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, target, size_average, reduce, reduction, weight):
        ctx.saved = {}
        out = F._mse_loss(input, target, size_average, reduce, reduction, weight, ctx.saved)
        _keep(ctx, input=input, target=target, weight=weight)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        kept = _kept(ctx)
        needs = ctx.needs_input_grad[:2] + (ctx.needs_input_grad[5],)
        grad_input, grad_target, grad_weight = G.mse_loss_backward(
            _array(grad_output), kept["input"], kept["target"], kept["weight"], ctx.saved, needs
        )
        return _tensor(grad_input), _tensor(grad_target), None, None, None, _tensor(grad_weight)


__all__ = [
    "MaxPool2d", "AvgPool2d", "Conv2d", "ConvTranspose2d", "Sigmoid", "RoIPool", "BatchNorm", "CrossEntropy", "MSELoss",
]
