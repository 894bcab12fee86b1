"""max_pool2d and avg_pool2d: torch's signatures, the argument checks, then the backend's run_<op>
(nbops/cpu/pooling.py, nbops/cuda/pooling.py) or, for tensors that require grad, nbops.autograd."""

from __future__ import annotations

from ._args import non_negative_pair, pool_output_size, positive_pair
from ._arrays import as_array, as_int, wrap
from ._dispatch import autograd, backend, grad_wanted

__all__ = ["max_pool2d", "avg_pool2d"]


def _pool_input(x, op: str):
    """(N, C, H, W) or unbatched (C, H, W) -> a 4-D array and whether a batch dim was added."""
    if x.ndim not in (3, 4) or 0 in x.shape[-3:]:
        raise ValueError(
            f"{op}: input must be a 3-D (C, H, W) or 4-D (N, C, H, W) array with non-zero C, H and W "
            f"(N may be 0), got shape {tuple(x.shape)}"
        )
    return (x[None], True) if x.ndim == 3 else (x, False)


def _pool_sizes(op, kernel_size, stride, padding, dilation):
    kernel = positive_pair(kernel_size, "kernel_size")
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        strides = kernel
    else:
        strides = positive_pair(stride, "stride")
    pads = non_negative_pair(padding, "padding")
    dilations = positive_pair(dilation, "dilation")
    if pads[0] > kernel[0] // 2 or pads[1] > kernel[1] // 2:
        raise ValueError(
            f"{op}: padding should be at most half of kernel_size, got padding={pads} and kernel_size={kernel}"
        )
    return kernel, strides, pads, dilations


def _pool_output_size(op, x4, kernel, strides, pads, dilations, ceil_mode):
    height, width = x4.shape[2], x4.shape[3]
    out_h = pool_output_size(height, kernel[0], pads[0], strides[0], dilations[0], bool(ceil_mode))
    out_w = pool_output_size(width, kernel[1], pads[1], strides[1], dilations[1], bool(ceil_mode))
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"{op}: given input size {height}x{width}, kernel_size={kernel}, stride={strides}, "
            f"padding={pads} and dilation={dilations}, the output size {out_h}x{out_w} is too small"
        )
    return out_h, out_w


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """2-D max pooling, like torch.nn.functional.max_pool2d.

    Args:
        input (Tensor or ndarray [N, C, H, W] or [C, H, W]): float32 or float64.
        kernel_size, stride (default: kernel_size), padding, dilation: an int or a pair (h, w).
            Padding counts as -inf and is at most half the kernel size.
        ceil_mode: round the output size up (a window must still start inside the input or left padding).
        return_indices: also return the int64 flat index `h * W + w` of each max within its plane.

    Returns:
        [N, C, H_out, W_out] (or [C, H_out, W_out]), and the indices of the same shape if asked for.
    """
    grad = grad_wanted(input)
    x = as_array(input, "input")
    x4, unbatched = _pool_input(x, "max_pool2d")
    kernel, strides, pads, dilations = _pool_sizes("max_pool2d", kernel_size, stride, padding, dilation)
    out_hw = _pool_output_size("max_pool2d", x4, kernel, strides, pads, dilations, ceil_mode)
    args = (kernel, strides, pads, dilations, out_hw)
    if grad:
        return autograd().MaxPool2d.apply(input, x4, args, unbatched, bool(return_indices))
    result = backend("pooling").run_max_pool2d(x4, *args, bool(return_indices))
    if return_indices:
        out, indices = result
        return wrap(out[0] if unbatched else out, input), wrap(indices[0] if unbatched else indices, input)
    return wrap(result[0] if unbatched else result, input)


def avg_pool2d(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None
):
    """2-D average pooling, like torch.nn.functional.avg_pool2d.

    Args:
        input (Tensor or ndarray [N, C, H, W] or [C, H, W]): float32 or float64.
        kernel_size, stride (default: kernel_size), padding: an int or a pair (h, w); padding adds zeros
            and is at most half the kernel size.
        ceil_mode: round the output size up.
        count_include_pad: divide by the window size including padding (but not past the padded input).
        divisor_override: a non-zero int to divide every sum by instead.

    Returns:
        [N, C, H_out, W_out] (or [C, H_out, W_out]).
    """
    grad = grad_wanted(input)
    x = as_array(input, "input")
    x4, unbatched = _pool_input(x, "avg_pool2d")
    kernel, strides, pads, dilations = _pool_sizes("avg_pool2d", kernel_size, stride, padding, 1)
    if divisor_override is None:
        divisor = 0
    else:
        divisor = as_int(divisor_override, "divisor_override")
        if divisor == 0:
            raise ValueError("avg_pool2d: divisor_override must be non-zero, got 0")
    out_hw = _pool_output_size("avg_pool2d", x4, kernel, strides, pads, dilations, ceil_mode)
    args = (kernel, strides, pads, out_hw, bool(count_include_pad), divisor)
    if grad:
        return autograd().AvgPool2d.apply(input, x4, args, unbatched)
    out = backend("pooling").run_avg_pool2d(x4, *args)
    return wrap(out[0] if unbatched else out, input)
