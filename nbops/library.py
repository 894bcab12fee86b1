"""nbops' operators as torch custom operators: torch.ops.nbops.<name> (issue 15).

    import nbops.library  # registers the ops (importing this module imports torch)
    y = torch.ops.nbops.conv2d(x, w, b, 1, 1)

Registered so far: sigmoid, conv2d, conv_transpose2d, avg_pool2d, max_pool2d, max_pool2d_with_indices
(the indices are an int64 output, not differentiable), batch_norm (as batch_norm_functional and the
in-place update), cross_entropy, mse_loss and roi_pool (output and argmax, as torchvision's op): every
operator but flatten, a view. Their backward passes are ops of their own (sigmoid_backward,
conv2d_backward, conv_transpose2d_backward, avg_pool2d_backward, max_pool2d_backward,
batch_norm_backward, cross_entropy_backward, mse_loss_backward, roi_pool_backward) so that a traced graph
(torch.compile, torch.export) holds nbops ops on the way back too. Each op has:
- a CPU kernel: the public function (its argument checks, then the active backend), run without
  autograd; and a CUDA kernel, for CUDA tensors: the same on the cuda backend (the backward ops: a
  NotImplementedError, as the cuda backend has no backward passes yet);
- a fake (meta) implementation that gives the output's shape, dtype and strides (contiguous, as the
  CPU kernel returns) without reading data: the shapes come from torch's own op run on the fake
  tensors, which nbops matches by design (the tests check the real outputs against torch);
- autograd through the backward op, which calls the CPU backend's run_<op>_backward.
Sizes accept an int or a pair (schema int[2]). conv2d's padding takes ints here; the public function
also takes 'same' and 'valid'.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from . import activation, conv, loss, normalization, pooling, roi, use_backend
from ._arrays import wrap
from ._dispatch import backend
from .autograd import _array, _tensor  # (tensor <-> C-contiguous array, as autograd's Functions do)
from .cpu import activation as cpu_activation
from .cpu import conv as cpu_conv
from .cpu import loss as cpu_loss
from .cpu import normalization as cpu_normalization
from .cpu import pooling as cpu_pooling
from .cpu import roi as cpu_roi


CUDA_KERNELS: dict = {}  # op name -> its CUDA kernel (the tests call them under Numba's simulator too)


def _op(name, schema=None):
    """Decorator: the function as the custom op nbops::name (no argument mutated), with a CPU kernel
    and a CUDA kernel (_cuda_kernel)."""

    def decorate(fn):
        op = torch.library.custom_op(f"nbops::{name}", fn, mutates_args=(), device_types="cpu", schema=schema)
        kernel = CUDA_KERNELS[name] = _cuda_kernel(name, fn)
        op.register_kernel("cuda", kernel)
        return op

    return decorate


def _cuda_kernel(name, fn):
    """The CUDA kernel of op `name` whose CPU kernel is fn. A forward op: fn on the cuda backend (the
    public function takes the CUDA tensors in place, runs the numba.cuda kernels on torch's current
    stream and returns CUDA tensors). A backward op: a NotImplementedError, as the cuda backend has no
    backward passes yet (eager nbops raises the same when a CUDA tensor requires grad)."""
    if name.endswith("_backward"):

        def refuse(*args, **kwargs):
            raise NotImplementedError(
                f"nbops::{name}: gradients are not implemented on the cuda backend yet: train on the CPU, "
                "or run CUDA tensors under torch.no_grad()"
            )

        return refuse

    def on_cuda(*args, **kwargs):
        with use_backend("cuda"):
            return fn(*args, **kwargs)

    return on_cuda


def _pair(value) -> tuple:
    value = tuple(value)
    return value * 2 if len(value) == 1 else value


def _empty_like_result(result: Tensor) -> Tensor:
    """A fake output: the shape and dtype of torch's result, C-contiguous like nbops' (not torch's
    layout, which can follow a channels-last input)."""
    return result.new_empty(result.shape)


def _like_torch(fn, *args, **kwargs) -> Tensor:
    """The fake output of an op whose twin is torch's fn (run here on the fake tensors)."""
    return _empty_like_result(fn(*args, **kwargs))


# ------------------------------------------------------------------------------------------- sigmoid


@_op("sigmoid")
def sigmoid(input: Tensor) -> Tensor:
    with torch.no_grad():
        return activation.sigmoid(input)


@sigmoid.register_fake
def _(input):
    return input.new_empty(input.shape)


@_op("sigmoid_backward")
def sigmoid_backward(grad_output: Tensor, output: Tensor) -> Tensor:
    return _tensor(cpu_activation.run_sigmoid_backward(_array(grad_output), _array(output)))


@sigmoid_backward.register_fake
def _(grad_output, output):
    return output.new_empty(output.shape)


def _sigmoid_setup(ctx, inputs, output):
    ctx.save_for_backward(output)


def _sigmoid_grad(ctx, grad_output):
    (output,) = ctx.saved_tensors
    return torch.ops.nbops.sigmoid_backward(grad_output, output)


sigmoid.register_autograd(_sigmoid_grad, setup_context=_sigmoid_setup)


# ------------------------------------------------------------------------------------------- conv2d


@_op(
    "conv2d",
    "(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, int[2] padding=0, "
    "int[2] dilation=1, int groups=1) -> Tensor",
)
def conv2d(input, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    with torch.no_grad():
        return conv.conv2d(input, weight, bias, _pair(stride), _pair(padding), _pair(dilation), groups)


@conv2d.register_fake
def _(input, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    args = (_pair(stride), _pair(padding), _pair(dilation), groups)
    return _empty_like_result(torch.nn.functional.conv2d(input, weight, bias, *args))


# both convolutions' backward ops: (grad_input, grad_weight, grad_bias), each an empty tensor where
# output_mask says it is not needed
_CONVOLUTION_BACKWARD = (
    "(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, int[2] padding, int[2] dilation, "
    "int groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)"
)


@_op("conv2d_backward", _CONVOLUTION_BACKWARD)
def conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    pads = _pair(padding)
    return _convolution_grads(cpu_conv.run_conv2d_backward, grad_output, input, weight, output_mask,
                              _pair(stride), pads, pads, _pair(dilation), groups)


def _convolution_grads(run_backward, grad_output, input, weight, output_mask, *args):
    """run_backward(grad_output, x4, w, *args, needs) on 4-D arrays (an unbatched input gets a batch of
    one), the three gradients as tensors, empty where output_mask says not needed."""
    unbatched = input.dim() == 3
    x4, gy = _array(input), _array(grad_output)
    if unbatched:
        x4, gy = x4[None], gy[None]
    grads = run_backward(gy, x4, _array(weight), *args, tuple(output_mask))
    if grads[0] is not None and unbatched:
        grads = (grads[0][0],) + tuple(grads[1:])
    return _gradient_tensors(input, grads)


@conv2d_backward.register_fake
def _(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    return _gradient_fakes(input, (input.shape, weight.shape, (weight.shape[0],)), output_mask)


def _convolution_autograd(op, backward, arguments):
    """Autograd for a convolution op through its backward op: backward(grad_output, input, weight,
    *arguments(inputs), output_mask) -> the three gradients."""

    def setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1])
        ctx.args, ctx.has_bias, ctx.count = arguments(inputs), inputs[2] is not None, len(inputs)

    def grad(ctx, grad_output):
        input, weight = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        grads = backward(grad_output, input, weight, *ctx.args, mask)
        return tuple(g if needed else None for g, needed in zip(grads, mask)) + (None,) * (ctx.count - 3)

    op.register_autograd(grad, setup_context=setup)


def _gradient_tensors(input, grads):
    """A backward op's results: each gradient array as a tensor, and an empty tensor for each None
    (not needed: the op's schema returns a Tensor in every place)."""
    return tuple(input.new_empty(0) if g is None else _tensor(g) for g in grads)


def _gradient_fakes(input, shapes, output_mask):
    """Fake gradients of these shapes, empty where output_mask says not needed."""
    return tuple(input.new_empty(shape if needed else (0,)) for shape, needed in zip(shapes, output_mask))


# inputs: (input, weight, bias, stride, padding, dilation, groups)
_convolution_autograd(conv2d, torch.ops.nbops.conv2d_backward, lambda inputs: inputs[3:7])


@_op(
    "conv_transpose2d",
    "(Tensor input, Tensor weight, Tensor? bias=None, int[2] stride=1, int[2] padding=0, "
    "int[2] output_padding=0, int groups=1, int[2] dilation=1) -> Tensor",
)
def conv_transpose2d(input, weight, bias=None, stride=(1, 1), padding=(0, 0), output_padding=(0, 0), groups=1, dilation=(1, 1)):
    with torch.no_grad():
        return conv.conv_transpose2d(
            input, weight, bias, _pair(stride), _pair(padding), _pair(output_padding), groups, _pair(dilation)
        )


@conv_transpose2d.register_fake
def _(input, weight, bias=None, stride=(1, 1), padding=(0, 0), output_padding=(0, 0), groups=1, dilation=(1, 1)):
    args = (_pair(stride), _pair(padding), _pair(output_padding), groups, _pair(dilation))
    return _empty_like_result(torch.nn.functional.conv_transpose2d(input, weight, bias, *args))


@_op("conv_transpose2d_backward", _CONVOLUTION_BACKWARD)
def conv_transpose2d_backward(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    return _convolution_grads(cpu_conv.run_conv_transpose2d_backward, grad_output, input, weight, output_mask,
                              _pair(stride), _pair(padding), _pair(dilation), groups)


@conv_transpose2d_backward.register_fake
def _(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    return _gradient_fakes(input, (input.shape, weight.shape, (weight.shape[1] * groups,)), output_mask)


# inputs: (input, weight, bias, stride, padding, output_padding, groups, dilation)
_convolution_autograd(
    conv_transpose2d, torch.ops.nbops.conv_transpose2d_backward, lambda inputs: (inputs[3], inputs[4], inputs[7], inputs[6])
)


# ------------------------------------------------------------------------------------------- pooling


def _pool_stride(stride):
    return None if len(stride) == 0 else _pair(stride)


@_op(
    "avg_pool2d",
    "(Tensor input, int[2] kernel_size, int[2] stride=[], int[2] padding=0, bool ceil_mode=False, "
    "bool count_include_pad=True, int? divisor_override=None) -> Tensor",
)
def avg_pool2d(input, kernel_size, stride=(), padding=(0, 0), ceil_mode=False, count_include_pad=True, divisor_override=None):
    with torch.no_grad():
        return pooling.avg_pool2d(
            input, _pair(kernel_size), _pool_stride(stride), _pair(padding), ceil_mode, count_include_pad, divisor_override
        )


@avg_pool2d.register_fake
def _(input, kernel_size, stride=(), padding=(0, 0), ceil_mode=False, count_include_pad=True, divisor_override=None):
    return _like_torch(
        torch.nn.functional.avg_pool2d,
        input, _pair(kernel_size), _pool_stride(stride), _pair(padding), ceil_mode, count_include_pad, divisor_override,
    )


@_op(
    "avg_pool2d_backward",
    "(Tensor grad_output, Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, bool ceil_mode, "
    "bool count_include_pad, int? divisor_override) -> Tensor",
)
def avg_pool2d_backward(grad_output, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    kernel = _pair(kernel_size)
    strides = _pool_stride(stride) or kernel
    shape4 = tuple(input.shape) if input.dim() == 4 else (1,) + tuple(input.shape)
    gy = _array(grad_output).reshape(shape4[:2] + tuple(grad_output.shape[-2:]))
    grad = cpu_pooling.run_avg_pool2d_backward(
        gy, shape4, kernel, strides, _pair(padding), bool(count_include_pad), divisor_override or 0
    )
    return _tensor(grad).reshape(input.shape)


@avg_pool2d_backward.register_fake
def _(grad_output, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return input.new_empty(input.shape)


def _avg_pool2d_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])
    ctx.args = inputs[1:]


def _avg_pool2d_grad(ctx, grad_output):
    (input,) = ctx.saved_tensors
    return (torch.ops.nbops.avg_pool2d_backward(grad_output, input, *ctx.args),) + (None,) * 6


avg_pool2d.register_autograd(_avg_pool2d_grad, setup_context=_avg_pool2d_setup)


@_op(
    "max_pool2d_with_indices",
    "(Tensor input, int[2] kernel_size, int[2] stride=[], int[2] padding=0, int[2] dilation=1, "
    "bool ceil_mode=False) -> (Tensor, Tensor)",
)
def max_pool2d_with_indices(input, kernel_size, stride=(), padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    with torch.no_grad():
        return pooling.max_pool2d(
            input, _pair(kernel_size), _pool_stride(stride), _pair(padding), _pair(dilation), ceil_mode, True
        )


@max_pool2d_with_indices.register_fake
def _(input, kernel_size, stride=(), padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    result = torch.nn.functional.max_pool2d(
        input, _pair(kernel_size), _pool_stride(stride), _pair(padding), _pair(dilation), ceil_mode
    )
    return _empty_like_result(result), result.new_empty(result.shape, dtype=torch.int64)


@_op(
    "max_pool2d_backward",
    "(Tensor grad_output, Tensor input, Tensor indices, int[2] kernel_size, int[2] stride, int[2] padding, "
    "int[2] dilation) -> Tensor",
)
def max_pool2d_backward(grad_output, input, indices, kernel_size, stride, padding, dilation):
    kernel = _pair(kernel_size)
    shape4 = tuple(input.shape) if input.dim() == 4 else (1,) + tuple(input.shape)
    out4 = shape4[:2] + tuple(indices.shape[-2:])
    grad = cpu_pooling.run_max_pool2d_backward(
        _array(grad_output).reshape(out4), _array(indices).reshape(out4), shape4, kernel,
        _pool_stride(stride) or kernel, _pair(padding), _pair(dilation),
    )
    return _tensor(grad).reshape(input.shape)


@max_pool2d_backward.register_fake
def _(grad_output, input, indices, kernel_size, stride, padding, dilation):
    return input.new_empty(input.shape)


def _max_pool2d_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output[1])
    ctx.args = inputs[1:5]
    ctx.mark_non_differentiable(output[1])


def _max_pool2d_grad(ctx, grad_output, grad_indices):
    input, indices = ctx.saved_tensors
    return (torch.ops.nbops.max_pool2d_backward(grad_output, input, indices, *ctx.args),) + (None,) * 5


max_pool2d_with_indices.register_autograd(_max_pool2d_grad, setup_context=_max_pool2d_setup)

# max_pool2d: the output alone, through max_pool2d_with_indices (its indices route the gradient)
_LIBRARY = torch.library.Library("nbops", "FRAGMENT")
_LIBRARY.define(
    "max_pool2d(Tensor input, int[2] kernel_size, int[2] stride=[], int[2] padding=0, int[2] dilation=1, "
    "bool ceil_mode=False) -> Tensor"
)


def _max_pool2d(input, kernel_size, stride=(), padding=(0, 0), dilation=(1, 1), ceil_mode=False):
    return torch.ops.nbops.max_pool2d_with_indices(input, kernel_size, stride, padding, dilation, ceil_mode)[0]


_LIBRARY.impl("max_pool2d", _max_pool2d, "CompositeImplicitAutograd")


# ----------------------------------------------------------------------------------------- batch_norm
# A custom op that mutates an argument cannot have autograd, so batch_norm is two parts: the functional
# op batch_norm_functional returns the output and the running statistics as updated (new tensors), and
# batch_norm (a composite of torch ops, which tracing sees through) copies those into the buffers.


@_op(
    "batch_norm_functional",
    "(Tensor input, Tensor? running_mean, Tensor? running_var, Tensor? weight=None, Tensor? bias=None, "
    "bool training=False, float momentum=0.1, float eps=1e-05) -> (Tensor, Tensor, Tensor)",
)
def batch_norm_functional(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-05):
    """(output, running_mean as updated, running_var as updated): the public function on copies of the
    running statistics (empty tensors where they are None)."""
    running = [None if r is None else r.clone() for r in (running_mean, running_var)]
    with torch.no_grad():
        out = normalization.batch_norm(input, *running, weight, bias, training, momentum, eps)
    return (out,) + tuple(input.new_empty(0) if r is None else r for r in running)


@batch_norm_functional.register_fake
def _(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-05):
    return (input.new_empty(input.shape),) + tuple(
        input.new_empty(0) if r is None else r.new_empty(r.shape) for r in (running_mean, running_var)
    )


@_op(
    "batch_norm_backward",
    "(Tensor grad_output, Tensor input, Tensor? weight, Tensor? running_mean, Tensor? running_var, "
    "bool training, float eps, bool[3] output_mask) -> (Tensor, Tensor, Tensor)",
)
def batch_norm_backward(grad_output, input, weight, running_mean, running_var, training, eps, output_mask):
    """(grad_input, grad_weight, grad_bias), empty where output_mask says not needed. In training the
    batch statistics are computed again from the input (the functional op returns none)."""
    channels = input.shape[1] if input.dim() >= 2 else 0
    shapes = (input.shape, (channels,), (channels,))
    if input.numel() == 0:
        grads = [np.zeros(shape, dtype=_array(input).dtype) if need else None for need, shape in zip(output_mask, shapes)]
    else:
        x3 = _array(input).reshape(input.shape[0], channels, -1)
        w = None if weight is None else _array(weight)
        if training:
            _, mean, var = cpu_normalization.run_batch_norm(x3, None, None, None, None, True, 0.0, eps)
        else:
            mean, var = _array(running_mean), _array(running_var)
        grads = cpu_normalization.run_batch_norm_backward(
            _array(grad_output).reshape(x3.shape), x3, w, mean, var, eps, training, tuple(output_mask)
        )
    return tuple(
        input.new_empty(0) if g is None else _tensor(g).reshape(shape) for g, shape in zip(grads, shapes)
    )


@batch_norm_backward.register_fake
def _(grad_output, input, weight, running_mean, running_var, training, eps, output_mask):
    channels = input.shape[1] if input.dim() >= 2 else 0
    return _gradient_fakes(input, (input.shape, (channels,), (channels,)), output_mask)


def _batch_norm_setup(ctx, inputs, output):
    input, running_mean, running_var, weight, bias, training, _, eps = inputs
    # evaluation normalises with the running statistics (training updates them after this, and does
    # not need them back)
    running = (None, None) if training else (running_mean, running_var)
    ctx.save_for_backward(input, weight, *running)
    ctx.training, ctx.eps, ctx.has = training, eps, (weight is not None, bias is not None)


def _batch_norm_grad(ctx, grad_output, grad_mean, grad_var):
    input, weight, running_mean, running_var = ctx.saved_tensors
    mask = [ctx.needs_input_grad[0], ctx.has[0] and ctx.needs_input_grad[3], ctx.has[1] and ctx.needs_input_grad[4]]
    grads = torch.ops.nbops.batch_norm_backward(
        grad_output, input, weight, running_mean, running_var, ctx.training, ctx.eps, mask
    )
    grads = [g if need else None for g, need in zip(grads, mask)]
    return grads[0], None, None, grads[1], grads[2], None, None, None


batch_norm_functional.register_autograd(_batch_norm_grad, setup_context=_batch_norm_setup)

_LIBRARY.define(
    "batch_norm(Tensor input, Tensor(a!)? running_mean, Tensor(b!)? running_var, Tensor? weight=None, "
    "Tensor? bias=None, bool training=False, float momentum=0.1, float eps=1e-05) -> Tensor"
)


def _batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-05):
    out, mean, var = torch.ops.nbops.batch_norm_functional(
        input, running_mean, running_var, weight, bias, training, momentum, eps
    )
    if training and running_mean is not None:
        with torch.no_grad():
            running_mean.copy_(mean)
            running_var.copy_(var)
    return out


_LIBRARY.impl("batch_norm", _batch_norm, "CompositeImplicitAutograd")


# ---------------------------------------------------------------------------------------------- losses
# The forward op is the public function; the backward op takes the same arguments after grad_output and
# gets the backend's arrays from the front's own argument handling (loss.*_arrays).


@_op(
    "cross_entropy",
    "(Tensor input, Tensor target, Tensor? weight=None, int ignore_index=-100, str reduction='mean', "
    "float label_smoothing=0.0) -> Tensor",
)
def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    with torch.no_grad():
        return loss.cross_entropy(input, target, weight, None, ignore_index, None, reduction, label_smoothing)


@cross_entropy.register_fake
def _(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    return _like_torch(
        torch.nn.functional.cross_entropy,
        input, target, weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
    )


@_op(
    "cross_entropy_backward",
    "(Tensor grad_output, Tensor input, Tensor target, Tensor? weight, int ignore_index, str reduction, "
    "float label_smoothing, bool[2] output_mask) -> (Tensor, Tensor)",
)
def cross_entropy_backward(grad_output, input, target, weight, ignore_index, reduction, label_smoothing, output_mask):
    """(grad_input, grad_target), empty where output_mask says not needed (grad_target: class
    probabilities only)."""
    x, t, w, args = loss.cross_entropy_arrays(input, target, weight, None, ignore_index, None, reduction, label_smoothing)
    grads = cpu_loss.run_cross_entropy_backward(_array(grad_output), x, t, w, *args, tuple(output_mask))
    return _gradient_tensors(input, grads)


@cross_entropy_backward.register_fake
def _(grad_output, input, target, weight, ignore_index, reduction, label_smoothing, output_mask):
    return _gradient_fakes(input, (input.shape, target.shape), [output_mask[0], output_mask[1] and target.is_floating_point()])


def _cross_entropy_setup(ctx, inputs, output):
    input, target, weight = inputs[:3]
    ctx.save_for_backward(input, target, weight)
    ctx.args = inputs[3:]


def _cross_entropy_grad(ctx, grad_output):
    input, target, weight = ctx.saved_tensors
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1] and target.is_floating_point()]
    grads = torch.ops.nbops.cross_entropy_backward(grad_output, input, target, weight, *ctx.args, mask)
    return (grads[0] if mask[0] else None, grads[1] if mask[1] else None) + (None,) * 4


cross_entropy.register_autograd(_cross_entropy_grad, setup_context=_cross_entropy_setup)


@_op("mse_loss", "(Tensor input, Tensor target, str reduction='mean', Tensor? weight=None) -> Tensor")
def mse_loss(input, target, reduction="mean", weight=None):
    with torch.no_grad():
        return loss.mse_loss(input, target, None, None, reduction, weight)


@mse_loss.register_fake
def _(input, target, reduction="mean", weight=None):
    return _empty_like_result(torch.nn.functional.mse_loss(input, target, reduction=reduction, weight=weight))


@_op(
    "mse_loss_backward",
    "(Tensor grad_output, Tensor input, Tensor target, str reduction, Tensor? weight, bool[3] output_mask) "
    "-> (Tensor, Tensor, Tensor)",
)
def mse_loss_backward(grad_output, input, target, reduction, weight, output_mask):
    """(grad_input, grad_target, grad_weight), each in its argument's shape, empty where output_mask says
    not needed."""
    with warnings.catch_warnings():  # (the forward pass has warned about differing shapes already)
        warnings.simplefilter("ignore", UserWarning)
        x, y, w, args = loss.mse_loss_arrays(input, target, None, None, reduction, weight)
    grads = cpu_loss.run_mse_loss_backward(_array(grad_output), x, y, w, *args, tuple(output_mask))
    return _gradient_tensors(input, grads)


@mse_loss_backward.register_fake
def _(grad_output, input, target, reduction, weight, output_mask):
    shapes = (input.shape, target.shape, input.shape)
    return tuple(
        (t if t is not None else input).new_empty(shape if need else (0,))
        for t, shape, need in zip((input, target, weight), shapes, output_mask)
    )


def _mse_loss_setup(ctx, inputs, output):
    input, target, reduction, weight = inputs
    ctx.save_for_backward(input, target, weight)
    ctx.reduction = reduction


def _mse_loss_grad(ctx, grad_output):
    input, target, weight = ctx.saved_tensors
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], weight is not None and ctx.needs_input_grad[3]]
    grads = torch.ops.nbops.mse_loss_backward(grad_output, input, target, ctx.reduction, weight, mask)
    grads = [g if need else None for g, need in zip(grads, mask)]
    return grads[0], grads[1], None, grads[2]


mse_loss.register_autograd(_mse_loss_grad, setup_context=_mse_loss_setup)


# -------------------------------------------------------------------------------------------- roi_pool


@_op("roi_pool", "(Tensor input, Tensor boxes, int[2] output_size, float spatial_scale=1.0) -> (Tensor, Tensor)")
def roi_pool(input, boxes, output_size, spatial_scale=1.0):
    """(output, argmax), as torchvision's op: boxes a Tensor[K, 5]; argmax (int64, not differentiable)
    the flat index h * W + w of each bin's max in its plane, -1 where the bin is empty."""
    x, bins = roi.roi_pool_arrays(input, boxes, _pair(output_size), spatial_scale)
    out, argmax = backend("roi").run_roi_pool(x, *bins)
    return wrap(out, input), wrap(argmax, input)


@roi_pool.register_fake
def _(input, boxes, output_size, spatial_scale=1.0):
    shape = (boxes.shape[0], input.shape[1]) + _pair(output_size)
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.int64)


@_op("roi_pool_backward", "(Tensor grad_output, Tensor argmax, Tensor boxes, int[] input_shape) -> Tensor")
def roi_pool_backward(grad_output, argmax, boxes, input_shape):
    batch_index = np.trunc(_array(boxes)[:, 0]).astype(np.int64)
    return _tensor(cpu_roi.run_roi_pool_backward(_array(grad_output), _array(argmax), batch_index, tuple(input_shape)))


@roi_pool_backward.register_fake
def _(grad_output, argmax, boxes, input_shape):
    return grad_output.new_empty(input_shape)


def _roi_pool_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1], inputs[1])
    ctx.input_shape = list(inputs[0].shape)
    ctx.mark_non_differentiable(output[1])


def _roi_pool_grad(ctx, grad_output, grad_argmax):
    argmax, boxes = ctx.saved_tensors
    return torch.ops.nbops.roi_pool_backward(grad_output, argmax, boxes, ctx.input_shape), None, None, None


roi_pool.register_autograd(_roi_pool_grad, setup_context=_roi_pool_setup)
