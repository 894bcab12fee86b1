"""nbops' operators as torch custom operators: torch.ops.nbops.<name> (issue 15, first step).

    import nbops.library  # registers the ops (importing this module imports torch)
    y = torch.ops.nbops.conv2d(x, w, b, 1, 1)

Registered so far: sigmoid, conv2d, conv_transpose2d, avg_pool2d, max_pool2d and
max_pool2d_with_indices (the indices are an int64 output, not differentiable), with their backward
passes as ops of their own (sigmoid_backward, conv2d_backward, conv_transpose2d_backward,
avg_pool2d_backward, max_pool2d_backward) so that a traced graph
(torch.compile, torch.export) holds nbops ops on the way back too. Each op has:
- a CPU kernel: the public function (its argument checks, then the CPU backend), run without autograd;
- a fake (meta) implementation that gives the output's shape, dtype and strides (contiguous, as the
  CPU kernel returns) without reading data: the shapes come from torch's own op run on the fake
  tensors, which nbops matches by design (the tests check the real outputs against torch);
- autograd through the backward op, which calls the CPU backend's run_<op>_backward.
Sizes accept an int or a pair (schema int[2]). conv2d's padding takes ints here; the public function
also takes 'same' and 'valid'.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from . import activation, conv, pooling
from ._arrays import contiguous
from .cpu import activation as cpu_activation
from .cpu import conv as cpu_conv
from .cpu import pooling as cpu_pooling


def _op(name, schema=None):
    """Decorator: the function as the custom op nbops::name (CPU, no argument mutated)."""
    return torch.library.custom_op(f"nbops::{name}", mutates_args=(), device_types="cpu", schema=schema)


def _array(tensor: Tensor) -> np.ndarray:
    return contiguous(tensor.detach().numpy())


def _tensor(array) -> Tensor:
    return torch.from_numpy(contiguous(np.asarray(array)))


def _pair(value) -> tuple:
    value = tuple(value)
    return value * 2 if len(value) == 1 else value


def _empty_like_result(result: Tensor) -> Tensor:
    """A fake output: the shape and dtype of torch's result, C-contiguous like nbops' (not torch's
    layout, which can follow a channels-last input)."""
    return result.new_empty(result.shape)


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


@_op(
    "conv2d_backward",
    "(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, int[2] padding, int[2] dilation, "
    "int groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)",
)
def conv2d_backward(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    """(grad_input, grad_weight, grad_bias), each an empty tensor where output_mask says it is not
    needed."""
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
    return tuple(input.new_empty(0) if g is None else _tensor(g) for g in grads)


@conv2d_backward.register_fake
def _(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    shapes = (input.shape, weight.shape, (weight.shape[0],))
    return tuple(input.new_empty(shape if needed else (0,)) for shape, needed in zip(shapes, output_mask))


def _conv2d_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(input, weight)
    ctx.args = (stride, padding, dilation, groups)
    ctx.has_bias = bias is not None


def _conv2d_grad(ctx, grad_output):
    input, weight = ctx.saved_tensors
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
    grads = torch.ops.nbops.conv2d_backward(grad_output, input, weight, *ctx.args, mask)
    grads = [g if needed else None for g, needed in zip(grads, mask)]
    return grads[0], grads[1], grads[2], None, None, None, None


conv2d.register_autograd(_conv2d_grad, setup_context=_conv2d_setup)


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


@_op(
    "conv_transpose2d_backward",
    "(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, int[2] padding, int[2] dilation, "
    "int groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)",
)
def conv_transpose2d_backward(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    """(grad_input, grad_weight, grad_bias), each an empty tensor where output_mask says it is not
    needed."""
    return _convolution_grads(cpu_conv.run_conv_transpose2d_backward, grad_output, input, weight, output_mask,
                              _pair(stride), _pair(padding), _pair(dilation), groups)


@conv_transpose2d_backward.register_fake
def _(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    shapes = (input.shape, weight.shape, (weight.shape[1] * groups,))
    return tuple(input.new_empty(shape if needed else (0,)) for shape, needed in zip(shapes, output_mask))


def _conv_transpose2d_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, _, groups, dilation = inputs
    ctx.save_for_backward(input, weight)
    ctx.args = (stride, padding, dilation, groups)
    ctx.has_bias = bias is not None


def _conv_transpose2d_grad(ctx, grad_output):
    input, weight = ctx.saved_tensors
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
    grads = torch.ops.nbops.conv_transpose2d_backward(grad_output, input, weight, *ctx.args, mask)
    grads = [g if needed else None for g, needed in zip(grads, mask)]
    return grads[0], grads[1], grads[2], None, None, None, None, None


conv_transpose2d.register_autograd(_conv_transpose2d_grad, setup_context=_conv_transpose2d_setup)


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
    result = torch.nn.functional.avg_pool2d(
        input, _pair(kernel_size), _pool_stride(stride), _pair(padding), ceil_mode, count_include_pad, divisor_override
    )
    return _empty_like_result(result)


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
