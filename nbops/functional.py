"""The ten public operators, with torch's names, signatures and defaults.

Each function follows one path: check and normalise the arguments (raising a clear error that names the
argument), get plain C-contiguous NumPy arrays, run the compiled kernel of the active backend, and
return the result as the caller's type (torch tensor in -> torch tensor out, ndarray in -> ndarray out).
"""

from __future__ import annotations

import functools
import math
import sys
import warnings

import numpy as np

from . import _config
from ._args import check_ndim, non_negative, pair, pool_output_size, positive, reduction_mode
from ._arrays import as_array, as_float, as_int, contiguous, host_values, is_tensor, on_gpu, same_dtype, wrap

__all__ = [
    "max_pool2d",
    "avg_pool2d",
    "conv2d",
    "conv_transpose2d",
    "flatten",
    "sigmoid",
    "roi_pool",
    "batch_norm",
    "cross_entropy",
    "mse_loss",
]


_KERNEL_MODULES: dict = {}


def _kernels(family: str):
    """The CPU kernel module of one operator family (cpu/conv.py, ...), imported on first use (importing
    one compiles nothing: kernels compile on their first call)."""
    module = _KERNEL_MODULES.get(family)
    if module is None:
        import importlib

        module = _KERNEL_MODULES[family] = importlib.import_module(f"nbops.cpu.{family}")
    return module


def _on_gpu() -> bool:
    """Whether the active backend is 'cuda' (checked after the arguments, before any kernel runs)."""
    backend = _config.backend()
    if backend == "cpu":
        return False
    if backend == "cuda":
        return True
    raise ValueError(f"NBOPS_BACKEND must be 'cpu' or 'cuda', got {backend!r}")


def _cuda(family: str):
    """The cuda backend's module of one operator family (cuda/conv.py, ...): needs numba.cuda and a GPU
    (or Numba's simulator), else a clear RuntimeError naming what is missing."""
    module = _KERNEL_MODULES.get("cuda." + family)
    if module is None:
        import importlib

        from .cuda import require

        require()
        module = _KERNEL_MODULES["cuda." + family] = importlib.import_module(f"nbops.cuda.{family}")
    return module


def _grad_wanted(input, *others) -> bool:
    """Whether this call must go through torch autograd: grad mode is on and an argument is a tensor
    that requires grad. Cheap, and torch-free for NumPy callers (torch is only looked up if imported)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.is_grad_enabled():
        return False
    for a in (input,) + others:  # (a loop: cheaper than any() over a generator, and this runs on every call)
        if isinstance(a, torch.Tensor) and a.requires_grad:
            break
    else:
        return False
    if _on_gpu():
        raise NotImplementedError(
            "gradients are not implemented on the cuda backend yet: train on the cpu backend, or call under torch.no_grad()"
        )
    if not isinstance(input, torch.Tensor):  # the result would be an ndarray, which autograd cannot follow
        raise TypeError(
            f"input must be a torch.Tensor when another argument requires grad, got {type(input).__name__}"
        )
    return True


def _autograd():
    """nbops.autograd (imports torch, which a caller with tensors that require grad already has)."""
    from . import autograd

    return autograd


# ----------------------------------------------------------------------------------------------- pooling


def _pool_input(x: np.ndarray, op: str) -> tuple[np.ndarray, bool]:
    """(N, C, H, W) or unbatched (C, H, W) -> a 4-D array and whether a batch dim was added."""
    if x.ndim not in (3, 4) or 0 in x.shape[-3:]:
        raise ValueError(
            f"{op}: input must be a 3-D (C, H, W) or 4-D (N, C, H, W) array with non-zero C, H and W "
            f"(N may be 0), got shape {tuple(x.shape)}"
        )
    return (x[None], True) if x.ndim == 3 else (x, False)


def _pool_sizes(op, kernel_size, stride, padding, dilation):
    kernel = pair(kernel_size, "kernel_size")
    positive(kernel, "kernel_size")
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        strides = kernel
    else:
        strides = pair(stride, "stride")
        positive(strides, "stride")
    pads = pair(padding, "padding")
    non_negative(pads, "padding")
    dilations = pair(dilation, "dilation")
    positive(dilations, "dilation")
    if pads[0] > kernel[0] // 2 or pads[1] > kernel[1] // 2:
        raise ValueError(
            f"{op}: padding should be at most half of kernel_size, got padding={pads} and kernel_size={kernel}"
        )
    return kernel, strides, pads, dilations


def _pool_output_shape(op, x4, kernel, strides, pads, dilations, ceil_mode):
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
    if _grad_wanted(input):
        return _autograd().MaxPool2d.apply(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
    return _max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def _max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, saved=None):
    """max_pool2d itself; when `saved` is a dict, it receives what the backward pass needs."""
    x = as_array(input, "input")
    x4, unbatched = _pool_input(x, "max_pool2d")
    kernel, strides, pads, dilations = _pool_sizes("max_pool2d", kernel_size, stride, padding, dilation)
    out_h, out_w = _pool_output_shape("max_pool2d", x4, kernel, strides, pads, dilations, ceil_mode)
    batch, channels, height, width = x4.shape
    shape = (channels, out_h, out_w) if unbatched else (batch, channels, out_h, out_w)
    if _on_gpu():
        return _cuda("pooling").run_max_pool2d(
            input, x4.shape, kernel, strides, pads, dilations, (out_h, out_w), shape, return_indices
        )
    out = np.empty((batch * channels, out_h, out_w), dtype=x.dtype)
    want_indices = bool(return_indices) or saved is not None  # the backward pass routes through them
    indices = np.empty(out.shape if want_indices else (1, 1, 1), dtype=np.int64)
    if out.size:
        _kernels("pooling")._max_pool2d(
            contiguous(x4).reshape(batch * channels, height, width),
            out,
            indices,
            want_indices,
            *kernel,
            *strides,
            *pads,
            *dilations,
        )
    if saved is not None:
        saved.update(
            indices=indices, input_shape=x.shape, dtype=x.dtype, kernel=kernel, strides=strides, pads=pads,
            dilations=dilations,
        )
    if return_indices:
        return wrap(out.reshape(shape), input), wrap(indices.reshape(shape), input)
    return wrap(out.reshape(shape), input)


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
    if _grad_wanted(input):
        return _autograd().AvgPool2d.apply(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    return _avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def _avg_pool2d(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, saved=None):
    """avg_pool2d itself; when `saved` is a dict, it receives what the backward pass needs."""
    x = as_array(input, "input")
    x4, unbatched = _pool_input(x, "avg_pool2d")
    kernel, strides, pads, dilations = _pool_sizes("avg_pool2d", kernel_size, stride, padding, 1)
    if divisor_override is None:
        divisor = 0
    else:
        divisor = as_int(divisor_override, "divisor_override")
        if divisor == 0:
            raise ValueError("avg_pool2d: divisor_override must be non-zero, got 0")
    out_h, out_w = _pool_output_shape("avg_pool2d", x4, kernel, strides, pads, dilations, ceil_mode)
    batch, channels, height, width = x4.shape
    shape = (channels, out_h, out_w) if unbatched else (batch, channels, out_h, out_w)
    if _on_gpu():
        return _cuda("pooling").run_avg_pool2d(
            input, x4.shape, kernel, strides, pads, (out_h, out_w), shape, count_include_pad, divisor
        )
    out = np.empty((batch * channels, out_h, out_w), dtype=x.dtype)
    if out.size and kernel == (height, width) and pads == (0, 0):  # a global pool: the window is the plane
        planes = contiguous(x4).reshape(batch * channels, height, width)
        _kernels("pooling")._avg_pool2d_global(planes, out, divisor if divisor else height * width)
    elif out.size:
        _kernels("pooling")._avg_pool2d(
            contiguous(x4).reshape(batch * channels, height, width),
            out,
            *kernel,
            *strides,
            *pads,
            bool(count_include_pad),
            divisor,
        )
    if saved is not None:
        saved.update(
            input_shape=x.shape, dtype=x.dtype, kernel=kernel, strides=strides, pads=pads,
            count_include_pad=bool(count_include_pad), divisor=divisor,
        )
    return wrap(out.reshape(shape), input)


# ------------------------------------------------------------------------------------------- convolution


def _conv_arrays(op, input, weight, bias, groups, transposed):
    """Checked arrays for conv2d / conv_transpose2d: (x4, unbatched, w, bias_or_zeros, groups, C_out)."""
    x = as_array(input, "input")
    w = as_array(weight, "weight")
    same_dtype(w, "weight", x)
    if x.ndim not in (3, 4):
        raise ValueError(f"{op}: input must be 3-D (unbatched) or 4-D (batched), got shape {tuple(x.shape)}")
    check_ndim(w.shape, (4,), "weight", "4-D (out_channels, in_channels / groups, kH, kW)"
               if not transposed else "4-D (in_channels, out_channels / groups, kH, kW)")
    x4, unbatched = (x[None], True) if x.ndim == 3 else (x, False)
    if x4.shape[2] == 0 or x4.shape[3] == 0:
        raise ValueError(f"{op}: input height and width must be non-zero, got shape {tuple(x.shape)}")
    groups = as_int(groups, "groups")
    if groups <= 0:
        raise ValueError(f"{op}: groups must be positive, got {groups}")
    in_channels = x4.shape[1]
    if not transposed:
        if w.shape[0] == 0 or w.shape[0] % groups:
            raise ValueError(
                f"{op}: weight of shape {tuple(w.shape)} needs out_channels (dim 0) positive and divisible "
                f"by groups={groups}"
            )
        if w.shape[1] * groups != in_channels:
            raise ValueError(
                f"{op}: groups={groups} and weight of shape {tuple(w.shape)} expect input with "
                f"{w.shape[1] * groups} channels, but got {in_channels} channels"
            )
        out_channels = w.shape[0]
    else:
        if w.shape[0] != in_channels:
            raise ValueError(
                f"{op}: weight of shape {tuple(w.shape)} expects input with {w.shape[0]} channels, "
                f"but got {in_channels} channels"
            )
        if in_channels == 0 or in_channels % groups:
            raise ValueError(
                f"{op}: in_channels (weight dim 0) must be positive and divisible by groups={groups}, "
                f"got weight of shape {tuple(w.shape)}"
            )
        out_channels = w.shape[1] * groups
    if bias is None:
        b = np.zeros(out_channels, dtype=x.dtype)
    else:
        b = as_array(bias, "bias")
        same_dtype(b, "bias", x)
        if b.shape != (out_channels,):
            raise ValueError(
                f"{op}: bias must be 1-D with {out_channels} elements (out_channels), got shape {tuple(b.shape)}"
            )
    return x4, unbatched, w, b, groups, out_channels


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation), like torch.nn.functional.conv2d.

    Args:
        input (Tensor or ndarray [N, C_in, H, W] or [C_in, H, W]): float32 or float64.
        weight ([C_out, C_in / groups, kH, kW]): same dtype as input.
        bias ([C_out], optional).
        stride, dilation: an int or a pair, positive.
        padding: an int or a pair (zeros on both sides), or 'valid' (none) or 'same' (output size = input
            size, stride 1 only; an odd total goes one more to the bottom/right, as in torch).
        groups: split input and output channels into this many independent groups.

    Returns:
        [N, C_out, H_out, W_out] (or [C_out, H_out, W_out]),
        H_out = floor((H + pad_top + pad_bottom - dilation[0] * (kH - 1) - 1) / stride[0]) + 1.
    """
    if _grad_wanted(input, weight, bias):
        return _autograd().Conv2d.apply(input, weight, bias, stride, padding, dilation, groups)
    return _conv2d(input, weight, bias, stride, padding, dilation, groups)


def _conv2d(input, weight, bias, stride, padding, dilation, groups, saved=None):
    """conv2d itself; when `saved` is a dict, it receives what the backward pass needs."""
    x4, unbatched, w, b, groups, out_channels = _conv_arrays("conv2d", input, weight, bias, groups, False)
    strides = pair(stride, "stride")
    positive(strides, "stride")
    dilations = pair(dilation, "dilation")
    positive(dilations, "dilation")
    kernel = (w.shape[2], w.shape[3])
    if isinstance(padding, str):
        if padding == "valid":
            before = after = (0, 0)
        elif padding == "same":
            if strides != (1, 1):
                raise ValueError(f"conv2d: padding='same' is not supported for strided convolutions, got stride={strides}")
            total = tuple(d * (k - 1) for d, k in zip(dilations, kernel))
            before = tuple(t // 2 for t in total)
            after = tuple(t - t // 2 for t in total)
        else:
            raise ValueError(f"conv2d: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    else:
        before = after = pair(padding, "padding")
        non_negative(before, "padding")
    height, width = x4.shape[2], x4.shape[3]
    padded = (height + before[0] + after[0], width + before[1] + after[1])
    extent = tuple(d * (k - 1) + 1 for d, k in zip(dilations, kernel))
    if extent[0] > padded[0] or extent[1] > padded[1]:
        raise ValueError(
            f"conv2d: the dilated kernel ({extent[0]} x {extent[1]}) is larger than the padded input "
            f"({padded[0]} x {padded[1]})"
        )
    out_h = (padded[0] - extent[0]) // strides[0] + 1
    out_w = (padded[1] - extent[1]) // strides[1] + 1
    batch = x4.shape[0]
    if _on_gpu():
        shape = (out_channels, out_h, out_w) if unbatched else (batch, out_channels, out_h, out_w)
        return _cuda("conv").run_conv2d(input, weight, bias, x4.shape, strides, before, dilations, groups, shape)
    out = np.empty((batch, out_channels, out_h, out_w), dtype=x4.dtype)
    if out.size:
        _conv2d_fast(x4, w, b, out, strides, before, padded, dilations, groups)
    if saved is not None:
        saved.update(strides=strides, before=before, padded=padded, dilations=dilations, groups=groups)
    return wrap(out[0] if unbatched else out, input)


def _phase_layout(x4, w_shape, out_h, strides, before, padded, dilations, groups):
    """The phase planes of the (padded) input and each tap's offset in its group's planes (see
    nbops/cpu/conv.py): (xs, offsets in (k, m, l) order, group_size, plane_w). `out_h` is the number of
    output rows that will be read (the thrown-away columns of the last one read a little past the last
    plane: the layout ends with enough zeros for them)."""
    (sh, sw), (dh, dw) = strides, dilations
    group_in, kh, kw = w_shape[1:]
    plane_h, plane_w = -(-padded[0] // sh), -(-padded[1] // sw)
    offsets = _tap_offsets(group_in, kh, kw, sh, sw, dh, dw, plane_h, plane_w)
    group_size = group_in * sh * sw * plane_h * plane_w
    need = (groups - 1) * group_size + out_h * plane_w + (int(offsets.max()) if offsets.size else 0)
    slack = max(0, need - groups * group_size)
    xs = _kernels("conv")._phase_planes(contiguous(x4), before[0], before[1], sh, sw, plane_h, plane_w, slack)
    return xs, offsets, group_size, plane_w


def _conv_work(outputs: int, taps: int) -> int:
    """A convolution's work in the units of the kernels' serial/parallel choice (elements of an
    element-wise op, see nbops/cpu/_parallel.py): outputs x taps multiply-adds, of which one core does
    about 32 in the time it takes to stream one element through memory."""
    return outputs * taps // 32


@functools.lru_cache(maxsize=256)
def _tap_offsets(group_in, kh, kw, sh, sw, dh, dw, plane_h, plane_w) -> np.ndarray:
    """offsets(k, m, l) of tap (k, m, l) in its group's phase planes, flattened in (k, m, l) order.
    Cached (a network calls each layer's shapes over and over, and building these costs more than a
    small layer's convolution): the kernels and callers only read it."""
    plane = plane_h * plane_w
    k, m, l = np.meshgrid(np.arange(group_in), np.arange(kh), np.arange(kw), indexing="ij")
    offsets = (((k * sh + (m * dh) % sh) * sw + (l * dw) % sw) * plane + (m * dh // sh) * plane_w + l * dw // sw).reshape(-1)
    return offsets.astype(np.int64)


def _conv2d_fast(x4, w, b, out, strides, before, padded, dilations, groups):
    """Run conv2d through the phase planes (see nbops/cpu/conv.py): lay out the input, list each tap's
    offset in its group's planes, and pick the kernel by the size of an output plane."""
    kernels = _kernels("conv")
    out_channels = w.shape[0]
    out_h = out.shape[2]
    xs, offsets, group_size, plane_w = _phase_layout(x4, w.shape, out_h, strides, before, padded, dilations, groups)
    rows = max(1, -(-1024 // plane_w))  # about 1024 outputs per inner loop
    # taps in the order of their offsets: with a stride, the taps reading one phase plane come together,
    # so the four taps of an inner loop read neighbouring memory (the same sum, in another order)
    order = np.argsort(offsets, kind="stable")
    taps = contiguous(w.reshape(out_channels, -1)[:, order])
    offsets = offsets[order]
    work = _conv_work(out.size, taps.shape[1])
    if out_h * plane_w <= _SMALL_PLANE:  # short loops for _conv2d_planes: gather and dot products instead
        kernels._conv2d_pixels.pick(work)(xs, taps, offsets, group_size, groups, contiguous(b), out, plane_w)
    else:
        kernels._conv2d_planes.pick(work)(xs, taps, offsets, group_size, groups, contiguous(b), out, plane_w, rows)


# Output planes of at most this many values (H_out x padded width) go through _conv2d_pixels: measured on
# 16x256x14x14 3x3 (224 values), 48 ms against 55-73 ms through _conv2d_planes; at 28x28 (840 values)
# and above _conv2d_planes is as fast or faster.
_SMALL_PLANE = 512


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """2-D transposed convolution, like torch.nn.functional.conv_transpose2d.

    Args:
        input (Tensor or ndarray [N, C_in, H, W] or [C_in, H, W]): float32 or float64.
        weight ([C_in, C_out / groups, kH, kW]): same dtype as input.
        bias ([C_out], optional).
        stride, dilation: an int or a pair, positive.
        padding: an int or a pair: dilation * (k - 1) - padding zeros are added on each side of the input.
        output_padding: extra rows/columns on the bottom/right, smaller than stride or dilation.
        groups: split input and output channels into this many independent groups.

    Returns:
        [N, C_out, H_out, W_out] (or unbatched),
        H_out = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kH - 1) + output_padding[0] + 1.
    """
    if _grad_wanted(input, weight, bias):
        return _autograd().ConvTranspose2d.apply(input, weight, bias, stride, padding, output_padding, groups, dilation)
    return _conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation)


def _conv_transpose2d(input, weight, bias, stride, padding, output_padding, groups, dilation, saved=None):
    """conv_transpose2d itself; when `saved` is a dict, it receives what the backward pass needs."""
    x4, unbatched, w, b, groups, out_channels = _conv_arrays(
        "conv_transpose2d", input, weight, bias, groups, True
    )
    if isinstance(padding, str):
        raise TypeError(f"conv_transpose2d: padding must be an int or a pair of ints, got {padding!r}")
    strides = pair(stride, "stride")
    positive(strides, "stride")
    dilations = pair(dilation, "dilation")
    positive(dilations, "dilation")
    pads = pair(padding, "padding")
    non_negative(pads, "padding")
    extra = pair(output_padding, "output_padding")
    non_negative(extra, "output_padding")
    for e, s, d in zip(extra, strides, dilations):
        if e >= s and e >= d:
            raise ValueError(
                f"conv_transpose2d: output_padding must be smaller than either stride or dilation, got "
                f"output_padding={extra}, stride={strides}, dilation={dilations}"
            )
    height, width = x4.shape[2], x4.shape[3]
    out_h = (height - 1) * strides[0] - 2 * pads[0] + dilations[0] * (w.shape[2] - 1) + extra[0] + 1
    out_w = (width - 1) * strides[1] - 2 * pads[1] + dilations[1] * (w.shape[3] - 1) + extra[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"conv_transpose2d: the output size {out_h}x{out_w} is not positive (input {height}x{width}, "
            f"padding={pads}, too large for this kernel and stride)"
        )
    batch = x4.shape[0]
    if _on_gpu():
        shape = (out_channels, out_h, out_w) if unbatched else (batch, out_channels, out_h, out_w)
        return _cuda("conv").run_conv_transpose2d(input, weight, bias, x4.shape, strides, pads, dilations, groups, shape)
    out = np.empty((batch, out_channels, out_h, out_w), dtype=x4.dtype)
    if out.size:
        _conv_transpose2d_fast(x4, w, b, out, strides, pads, dilations, groups)
    if saved is not None:
        saved.update(strides=strides, pads=pads, dilations=dilations, groups=groups)
    return wrap(out[0] if unbatched else out, input)


def _conv_transpose2d_fast(x4, w, b, out, strides, pads, dilations, groups):
    """conv_transpose2d as stride**2 small convolutions, one per output phase, through conv2d's phase
    planes (nbops/cpu/conv.py).

    out(n, j, s*h - p + d*m, ...) += input(n, i, h, ...) * weight(i, j', m, ...): the output rows
    oh = s*h' + a of phase a receive tap m only when (a + p - d*m) is a multiple of s, and then from
    input row h' + (a + p - d*m) // s. So each phase (a, b) is a stride-1 correlation of the zero-padded
    input with its own taps at their own offsets, written to out[..., a::s, b::s].
    """
    kernels = _kernels("conv")
    (sh, sw), (ph, pw), (dh, dw) = strides, pads, dilations
    in_channels, group_out, kh, kw = w.shape
    group_in = in_channels // groups
    out_channels = group_out * groups
    batch, _, height, width = x4.shape
    out_h, out_w = out.shape[2], out.shape[3]
    # per phase: the taps that reach it and their input offsets
    taps_h = [[(m, (a + ph - dh * m) // sh) for m in range(kh) if (a + ph - dh * m) % sh == 0] for a in range(sh)]
    taps_w = [[(l, (c + pw - dw * l) // sw) for l in range(kw) if (c + pw - dw * l) % sw == 0] for c in range(sw)]
    shifts_h = [d for phase in taps_h for _, d in phase] or [0]
    shifts_w = [d for phase in taps_w for _, d in phase] or [0]
    top, left = max(0, -min(shifts_h)), max(0, -min(shifts_w))
    phase_h, phase_w = -(-out_h // sh), -(-out_w // sw)  # the largest phase's size
    plane_h = top + height + max(0, phase_h + max(max(shifts_h), 0) - height)
    plane_w = left + width + max(0, phase_w + max(max(shifts_w), 0) - width)
    plane = plane_h * plane_w
    group_size = group_in * plane
    # weight(g * C_in/groups + k, j', m, l) as taps(g * C_out/groups + j', k, m, l)
    by_output = contiguous(w).reshape(groups, group_in, group_out, kh, kw).transpose(0, 2, 1, 3, 4)
    by_output = by_output.reshape(out_channels, group_in, kh, kw)
    phases = []
    for a in range(sh):
        for c in range(sw):
            rows_m = [m for m, _ in taps_h[a]]
            cols_l = [l for l, _ in taps_w[c]]
            k, dm, dl = np.meshgrid(np.arange(group_in), [d for _, d in taps_h[a]], [d for _, d in taps_w[c]], indexing="ij")
            offsets = (k * plane + (dm + top) * plane_w + (dl + left)).reshape(-1).astype(np.int64)
            taps = contiguous(by_output[:, :, rows_m][:, :, :, cols_l].reshape(out_channels, -1))
            phases.append((a, c, offsets, taps))
    need = max((groups - 1) * group_size + phase_h * plane_w + (int(o.max()) if o.size else 0) for _, _, o, _ in phases)
    slack = max(0, need - groups * group_size)
    xs = kernels._phase_planes(contiguous(x4), top, left, 1, 1, plane_h, plane_w, slack)
    rows = max(1, -(-1024 // plane_w))
    bias = contiguous(b)
    for a, c, offsets, taps in phases:
        part = out[:, :, a::sh, c::sw]
        if part.size == 0:
            continue
        result = np.empty(part.shape, dtype=out.dtype)
        kernels._conv2d_planes.pick(_conv_work(result.size, taps.shape[1]))(
            xs, taps, offsets, group_size, groups, bias, result, plane_w, rows
        )
        part[...] = result


# ----------------------------------------------------------------------------------- reshape, activation


def _wrap_dim(dim, ndim: int, name: str) -> int:
    dim = as_int(dim, name)
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise IndexError(f"{name} out of range (expected to be in range of [{-rank}, {rank - 1}], but got {dim})")
    return dim + rank if dim < 0 else dim


def flatten(input, start_dim=0, end_dim=-1):
    """Flatten dims start_dim..end_dim into one, like torch.flatten.

    Any dtype. Returns a view of input when its strides allow one (a copy otherwise), input itself when
    start_dim == end_dim, and a 1-element 1-D result for a 0-d input.
    """
    if not (isinstance(input, np.ndarray) or is_tensor(input) or (on_gpu(input) and _on_gpu())):
        raise TypeError(f"input must be a numpy.ndarray or a torch.Tensor, got {type(input).__name__}")
    shape = tuple(input.shape)
    start = _wrap_dim(start_dim, len(shape), "start_dim")
    end = _wrap_dim(end_dim, len(shape), "end_dim")
    if start > end:
        raise ValueError(f"flatten: start_dim ({start_dim}) cannot come after end_dim ({end_dim})")
    if not shape:
        return input.reshape(1)
    if start == end:
        return input
    merged = math.prod(shape[start : end + 1])
    return input.reshape(shape[:start] + (merged,) + shape[end + 1 :])


def sigmoid(input):
    """out_i = 1 / (1 + exp(-input_i)), like torch.sigmoid: any shape, float32 or float64."""
    if _grad_wanted(input):
        return _autograd().Sigmoid.apply(input)
    return _sigmoid(input)


def _sigmoid(input, saved=None):
    """sigmoid itself; when `saved` is a dict, it receives what the backward pass needs."""
    x = as_array(input, "input")
    if _on_gpu():
        return _cuda("activation").run_sigmoid(input, x.shape)
    out = np.empty(x.shape, dtype=x.dtype)
    if out.size:
        _kernels("activation")._sigmoid(contiguous(x).reshape(-1), out.reshape(-1), x.dtype.type(1))
    return wrap(out, input)


# -------------------------------------------------------------------------------------------------- RoI


def _round_half_away(values: np.ndarray) -> np.ndarray:
    """C's round(): halves go away from zero (NumPy's round goes to even)."""
    whole = np.trunc(values)
    return whole + np.where(np.abs(values - whole) >= 0.5, np.sign(values), 0)


def _rois(boxes, dtype) -> np.ndarray:
    """Boxes as Tensor[K, 5] (batch index, x1, y1, x2, y2) or a list of Tensor[L, 4] -> an array [K, 5]."""
    if isinstance(boxes, (list, tuple)):
        parts = []
        for index, per_image in enumerate(boxes):
            b = host_values(per_image, f"boxes[{index}]")
            if b.ndim != 2 or b.shape[1] != 4:
                raise ValueError(f"boxes[{index}] must have shape [L, 4], got {tuple(b.shape)}")
            if b.dtype != dtype:
                raise TypeError(f"boxes[{index}] has dtype {b.dtype} but input has dtype {dtype}: they must match")
            parts.append(np.concatenate([np.full((b.shape[0], 1), index, dtype=dtype), b], axis=1))
        return np.concatenate(parts) if parts else np.zeros((0, 5), dtype=dtype)
    rois = host_values(boxes, "boxes")
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(
            f"boxes must be a Tensor[K, 5] (batch index, x1, y1, x2, y2) or a list of Tensor[L, 4], "
            f"got shape {tuple(rois.shape)}"
        )
    if rois.dtype != dtype:
        raise TypeError(f"boxes has dtype {rois.dtype} but input has dtype {dtype}: they must match")
    return rois


def _bin_edges(start, length, pooled, limit, dtype):
    """torchvision's bins: [floor(p * size), ceil((p + 1) * size)) + start, size = length / pooled, clipped."""
    bin_size = length.astype(dtype) / dtype.type(pooled)
    steps = np.arange(pooled + 1, dtype=dtype)[None, :] * bin_size[:, None]
    low = np.floor(steps[:, :-1]).astype(np.int64) + start[:, None]
    high = np.ceil(steps[:, 1:]).astype(np.int64) + start[:, None]
    return np.clip(low, 0, limit), np.clip(high, 0, limit)


def roi_pool(input, boxes, output_size, spatial_scale=1.0):
    """RoI max pooling, like torchvision.ops.roi_pool.

    Args:
        input (Tensor or ndarray [N, C, H, W]): float32 or float64.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): (batch index, x1, y1, x2, y2) in input-image
            coordinates, or one [L, 4] tensor of (x1, y1, x2, y2) per batch element; same dtype as input.
        output_size (int or (h, w)): the pooled size.
        spatial_scale (float): maps box coordinates to the feature map (e.g. 1/16).

    Returns:
        Tensor[K, C, output_size[0], output_size[1]]. Each box's corners are rounded (half away from
        zero) after scaling, a degenerate box counts as 1x1, empty bins give 0. A batch index outside
        [0, N - 1] is an IndexError (torchvision reads out of bounds there).
    """
    if _grad_wanted(input):
        return _autograd().RoIPool.apply(input, boxes, output_size, spatial_scale)
    return _roi_pool(input, boxes, output_size, spatial_scale)


def _roi_pool(input, boxes, output_size, spatial_scale, saved=None):
    """roi_pool itself; when `saved` is a dict, it receives what the backward pass needs."""
    x = as_array(input, "input")
    if x.ndim != 4:
        raise ValueError(f"roi_pool: input must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    rois = _rois(boxes, x.dtype)
    pooled_h, pooled_w = pair(output_size, "output_size")
    non_negative((pooled_h, pooled_w), "output_size")
    scale = as_float(spatial_scale, "spatial_scale")
    if not math.isfinite(scale):
        raise ValueError(f"roi_pool: spatial_scale must be finite, got {scale}")
    if not np.isfinite(rois).all():
        raise ValueError("roi_pool: boxes contain NaN or infinity")
    batch, channels, height, width = x.shape
    count = rois.shape[0]
    out = np.zeros((count, channels, pooled_h, pooled_w), dtype=x.dtype)
    batch_index = np.trunc(rois[:, 0]).astype(np.int64)  # torchvision casts the float index to int
    bad = np.flatnonzero((batch_index < 0) | (batch_index >= batch))
    if bad.size:
        k = int(bad[0])
        raise IndexError(
            f"roi_pool: boxes[{k}] has batch index {rois[k, 0]}, outside [0, {batch - 1}] for input with "
            f"batch size {batch}"
        )
    argmax = np.empty(out.shape, dtype=np.int64)  # where each max came from: the backward pass's route
    if saved is not None:
        saved.update(argmax=argmax, batch_index=batch_index, input_shape=x.shape, dtype=x.dtype)
    if out.size == 0:
        return _cuda("roi").run_roi_pool(input, x.dtype, out.shape, None) if _on_gpu() else wrap(out, input)
    # Corners in the input's dtype, as torchvision computes them; far-away corners are clipped so that the
    # int conversion cannot overflow (they are outside the feature map either way).
    corners = rois[:, 1:] * x.dtype.type(scale)
    corners = np.clip(_round_half_away(corners), -(2**40), 2**40).astype(np.int64)
    x1, y1, x2, y2 = corners.T
    roi_w = np.maximum(x2 - x1 + 1, 1)
    roi_h = np.maximum(y2 - y1 + 1, 1)
    h_start, h_end = _bin_edges(y1, roi_h, pooled_h, height, x.dtype)
    w_start, w_end = _bin_edges(x1, roi_w, pooled_w, width, x.dtype)
    if _on_gpu():  # (the bins are computed here, on the host: a few numbers per box)
        return _cuda("roi").run_roi_pool(input, x.dtype, out.shape, (batch_index, h_start, h_end, w_start, w_end))
    _kernels("roi")._roi_pool(contiguous(x), batch_index, h_start, h_end, w_start, w_end, out, argmax)
    return wrap(out, input)


# -------------------------------------------------------------------------------------------- batch norm


def _channel_vector(value, name, x, channels):
    array = as_array(value, name)
    same_dtype(array, name, x)
    if array.ndim != 1 or array.shape[0] != channels:
        raise ValueError(f"batch_norm: {name} must be 1-D with {channels} elements, got shape {tuple(array.shape)}")
    return array


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-05):
    """Batch normalisation, like torch.nn.functional.batch_norm.

    Args:
        input (Tensor or ndarray [N, C] or [N, C, *]): float32 or float64.
        running_mean, running_var ([C] or None): used in evaluation; in training they are updated in
            place, x_new = (1 - momentum) * x + momentum * batch value, with the unbiased batch variance.
        weight, bias ([C], optional): gamma and beta (1 and 0 when absent).
        training: normalise with the batch statistics (biased variance) instead of the running ones.
        momentum, eps: floats; eps >= 0 is added to the variance.

    Returns:
        an array of input's shape: (x - mean) / sqrt(var + eps) * gamma + beta per channel.
    """
    if _grad_wanted(input, weight, bias):
        return _autograd().BatchNorm.apply(input, running_mean, running_var, weight, bias, training, momentum, eps)
    return _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def _batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps, saved=None):
    """batch_norm itself; when `saved` is a dict, it receives what the backward pass needs."""
    x = as_array(input, "input")
    if x.ndim < 2:
        raise ValueError(f"batch_norm: input must have at least 2 dims (N, C, *), got shape {tuple(x.shape)}")
    channels = x.shape[1]
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: running_mean and running_var must either both be None or neither be None")
    if not training and running_mean is None:
        raise ValueError("batch_norm: running_mean and running_var must be given in evaluation mode")
    vectors = {}
    for name, value in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        vectors[name] = None if value is None else _channel_vector(value, name, x, channels)
    momentum = as_float(momentum, "momentum")
    eps = as_float(eps, "eps")
    if not eps >= 0:
        raise ValueError(f"batch_norm: eps must be non-negative, got {eps}")
    if training and eps == 0:  # torch refuses it too (a constant channel would give 0/0)
        raise ValueError("batch_norm: eps must be positive during training, got 0.0")
    batch = x.shape[0]
    length = math.prod(x.shape[2:])
    if training and batch * length == 1:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input shape {tuple(x.shape)}")
    if training:
        for name in ("running_mean", "running_var"):
            if vectors[name] is not None and not vectors[name].flags.writeable:
                raise ValueError(f"batch_norm: {name} is read-only, but training updates it in place")
    if _on_gpu():
        return _cuda("normalization").run_batch_norm(
            input, running_mean, running_var, weight, bias, bool(training), momentum, eps, (batch, channels, length)
        )
    out = np.empty(x.shape, dtype=x.dtype)
    if saved is not None:
        saved.update(training=bool(training), eps=eps, dtype=x.dtype)
    if out.size == 0:
        return wrap(out, input)
    kernels = _kernels("normalization")
    x3 = contiguous(x).reshape(batch, channels, length)
    out3 = out.reshape(batch, channels, length)
    none = np.empty(0, dtype=x.dtype)  # the kernels read an empty vector as "not given"
    gamma = none if weight is None else contiguous(vectors["weight"])
    beta = none if bias is None else contiguous(vectors["bias"])
    if training:
        rm, rv = vectors["running_mean"], vectors["running_var"]
        # the kernel updates contiguous running statistics in place; strided views go through a copy
        rm_c = none if rm is None else contiguous(rm)
        rv_c = none if rv is None else contiguous(rv)
        mean, var = np.empty(channels), np.empty(channels)  # the batch statistics (float64)
        if length < kernels.ROW:  # (two paths: each kernel compiles only if used)
            kernels._train_by_channel_block(x3, rm_c, rv_c, gamma, beta, momentum, eps, out3, mean, var)
        else:
            kernels._train_long_rows(x3, rm_c, rv_c, momentum, mean, var)
            kernels._batch_norm_apply(x3, mean, var, gamma, beta, eps, out3)
        for given, updated in ((rm, rm_c), (rv, rv_c)):
            if given is not None and updated is not given:
                given[...] = updated
    else:
        mean = contiguous(vectors["running_mean"])
        var = contiguous(vectors["running_var"])
        kernels._batch_norm_apply(x3, mean, var, gamma, beta, eps, out3)
    if saved is not None:  # copies: the running statistics may change before the backward pass
        saved.update(mean=mean.astype(np.float64), invstd=1.0 / np.sqrt(var.astype(np.float64) + eps))
    return wrap(out, input)


# ------------------------------------------------------------------------------------------------ losses


def _scalar(value: float, dtype) -> np.ndarray:
    return np.asarray(value, dtype=dtype)


def _class_rows(array: np.ndarray, batch: int, classes: int, length: int) -> np.ndarray:
    """(N, C, d1, ..., dk) -> (N * L, C), C-contiguous: one row of class scores per position.

    Free for (N, C) and (C,) inputs; spatial inputs get one transposing copy, so that the kernels always
    read contiguous rows.
    """
    if length == 1:
        return contiguous(array).reshape(batch, classes)
    rows = contiguous(array).reshape(batch, classes, length)
    return contiguous(np.swapaxes(rows, 1, 2)).reshape(batch * length, classes)


def cross_entropy(
    input,
    target,
    weight=None,
    size_average=None,
    ignore_index=-100,
    reduce=None,
    reduction="mean",
    label_smoothing=0.0,
):
    """Cross entropy between logits and targets, like torch.nn.functional.cross_entropy.

    Args:
        input (Tensor or ndarray [C], [N, C] or [N, C, d1, ..., dk]): unnormalised logits, float32/float64.
        target: class indices (int64 or uint8) of shape [], [N] or [N, d1, ..., dk], each in [0, C) or
            equal to ignore_index; or class probabilities of input's shape (floating).
        weight ([C], optional): a rescaling weight per class.
        ignore_index (int): a class-index target that contributes nothing (not for probability targets).
        reduction: 'none' | 'mean' | 'sum'. The mean of class-index targets divides by the sum of the
            targets' weights; of probability targets, by the number of positions.
        label_smoothing (float in [0, 1]): mixes the target with the uniform distribution.
        size_average, reduce: deprecated, as in torch.

    Returns:
        a 0-d array, or for 'none' the per-position losses (target's shape without the class dim).
    """
    if _grad_wanted(input, target, weight):
        return _autograd().CrossEntropy.apply(input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing)
    return _cross_entropy(input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing)


def _cross_entropy(input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing, saved=None):
    """cross_entropy itself; when `saved` is a dict, it receives what the backward pass needs."""
    reduction = reduction_mode(reduction, size_average, reduce)
    x = as_array(input, "input")
    t = as_array(target, "target", floating=False)
    if x.ndim == 0:
        raise ValueError("cross_entropy: input must have at least 1 dim (C), (N, C) or (N, C, d1, ...), got a 0-d input")
    smoothing = as_float(label_smoothing, "label_smoothing")
    if not smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {smoothing}")
    smoothing = max(smoothing, 0.0)  # torch treats a negative value as no smoothing
    ignore_index = as_int(ignore_index, "ignore_index")
    classes = x.shape[0] if x.ndim == 1 else x.shape[1]
    w = None
    if weight is not None:
        w = as_array(weight, "weight")
        same_dtype(w, "weight", x)
        if w.shape != (classes,):
            raise ValueError(f"cross_entropy: weight must be 1-D with {classes} elements (C), got shape {tuple(w.shape)}")
    # (C,) is one sample; (N, C, d1, ..., dk) is N samples at L = d1 * ... * dk positions.
    batch = 1 if x.ndim == 1 else x.shape[0]
    spatial = tuple(x.shape[2:])
    length = math.prod(spatial)
    out_shape = () if x.ndim == 1 else (batch,) + spatial

    if t.shape == x.shape:  # class probabilities
        if t.dtype.kind != "f":
            raise TypeError(f"cross_entropy: a target of input's shape holds class probabilities and must be floating, got {t.dtype}")
        if ignore_index >= 0:
            raise ValueError("cross_entropy: ignore_index is not supported for class-probability targets")
        dtype = np.result_type(x.dtype, t.dtype)  # float32 or float64: x is one of them
        if _on_gpu():
            return _cuda("loss").run_cross_entropy(
                input, target, weight, (batch, classes, length), out_shape, reduction, smoothing, None, dtype
            )
        kernels = _kernels("loss")
        losses = np.empty((batch, length))
        if saved is not None:
            saved.update(probabilities=True, reduction=reduction, smoothing=smoothing, denominator=float(losses.size))
        if losses.size:
            kernels._cross_entropy_prob(
                _class_rows(x.astype(dtype, copy=False), batch, classes, length),
                _class_rows(t.astype(dtype, copy=False), batch, classes, length),
                np.ones(classes) if w is None else w.astype(np.float64),
                smoothing,
                losses.reshape(-1),
            )
        if reduction == "none":
            return wrap(losses.astype(dtype).reshape(out_shape), input)
        total = kernels._sum(losses.reshape(-1)) if losses.size else 0.0
        if reduction == "sum":
            return wrap(_scalar(total, dtype), input)
        return wrap(_scalar(total / losses.size if losses.size else math.nan, dtype), input)

    # class indices
    if t.dtype not in (np.dtype(np.int64), np.dtype(np.uint8)):
        raise TypeError(f"cross_entropy: class-index target must be int64 or uint8, got {t.dtype}")
    if t.shape != out_shape:
        if x.ndim >= 2 and (t.ndim == 0 or t.shape[0] != batch):
            raise ValueError(
                f"cross_entropy: expected input batch_size ({batch}) to match target batch_size "
                f"({t.shape[0] if t.ndim else 'none: 0-d target'})"
            )
        raise ValueError(f"cross_entropy: target must have shape {out_shape} for input of shape {tuple(x.shape)}, got {tuple(t.shape)}")
    if _on_gpu():
        return _cuda("loss").run_cross_entropy(
            input, target, weight, (batch, classes, length), out_shape, reduction, smoothing, ignore_index, x.dtype
        )
    kernels = _kernels("loss")
    t2 = t.astype(np.int64, copy=False).reshape(-1)
    losses = np.empty((batch, length))
    target_weight = np.empty(losses.size)
    first_bad, total, denominator = batch * length, 0.0, 0.0
    if losses.size:
        first_bad, total, denominator = kernels._cross_entropy_class(
            _class_rows(x, batch, classes, length),
            t2,
            _NO_WEIGHT if w is None else w.astype(np.float64),
            ignore_index,
            smoothing,
            losses.reshape(-1),
            target_weight,
        )
    if first_bad < losses.size:
        raise IndexError(f"cross_entropy: target {int(t2[first_bad])} is out of bounds for {classes} classes")
    if saved is not None:
        saved.update(
            probabilities=False, reduction=reduction, smoothing=smoothing, ignore_index=ignore_index,
            denominator=denominator,
        )
    if reduction == "none":
        return wrap(losses.astype(x.dtype).reshape(out_shape), input)
    if reduction == "mean":
        total = _divide(total, denominator)  # every target ignored: 0/0 = nan, as in torch
    return wrap(_scalar(total, x.dtype), input)


_NO_WEIGHT = np.empty(0)  # the kernels read an empty weight as "no weight" (every w(c) = 1)


def _divide(numerator: float, denominator: float) -> float:
    """numerator / denominator with IEEE rules (x/0 = +-inf, 0/0 = nan) rather than ZeroDivisionError."""
    if denominator != 0:
        return numerator / denominator
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(numerator) / np.float64(denominator))


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Mean squared error, like torch.nn.functional.mse_loss.

    Args:
        input, target (Tensor or ndarray, any shapes that broadcast): float32 or float64 (the result has
            the promoted dtype). Differing shapes warn, as in torch.
        reduction: 'none' | 'mean' | 'sum'; size_average, reduce: deprecated, as in torch.
        weight (optional, input's shape): l_n = weight_n * (x_n - y_n)^2; the weighted mean divides by
            sum(weight).

    Returns:
        a 0-d array, or for 'none' the element-wise losses in the broadcast shape.
    """
    if _grad_wanted(input, target, weight):
        return _autograd().MSELoss.apply(input, target, size_average, reduce, reduction, weight)
    return _mse_loss(input, target, size_average, reduce, reduction, weight)


def _mse_loss(input, target, size_average, reduce, reduction, weight, saved=None):
    """mse_loss itself; when `saved` is a dict, it receives what the backward pass needs."""
    reduction = reduction_mode(reduction, size_average, reduce)
    x = as_array(input, "input")
    y = as_array(target, "target")
    if saved is not None:
        saved.update(reduction=reduction)
    if x.shape == y.shape:
        shape = x.shape
    else:
        try:
            shape = np.broadcast_shapes(x.shape, y.shape)
        except ValueError:
            raise ValueError(
                f"mse_loss: target of shape {tuple(y.shape)} does not broadcast with input of shape {tuple(x.shape)}"
            ) from None
        warnings.warn(
            f"Using a target size ({tuple(y.shape)}) that is different to the input size ({tuple(x.shape)}). "
            "This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            UserWarning,
            stacklevel=3,  # the user's call -> the public function -> its body
        )
    dtypes = [x.dtype, y.dtype]
    w = None
    if weight is not None:
        w = as_array(weight, "weight")
        if w.shape != x.shape:
            raise ValueError(f"mse_loss: weight must have input's shape {tuple(x.shape)}, got {tuple(w.shape)}")
        dtypes.append(w.dtype)
    dtype = dtypes[0] if all(d == dtypes[0] for d in dtypes) else np.result_type(*dtypes)
    if _on_gpu():
        return _cuda("loss").run_mse_loss(input, target, weight, shape, dtype, reduction)

    def flat(array):  # (the tests for the usual case, same dtype and shape, save np.broadcast_to's cost)
        if array.dtype != dtype:
            array = array.astype(dtype)
        if array.shape != shape:
            array = np.broadcast_to(array, shape)
        return contiguous(array).reshape(-1)

    xf, yf = flat(x), flat(y)
    wf = flat(w) if w is not None else np.empty(0, dtype=dtype)
    kernels = _kernels("loss")
    if reduction == "none":
        out = np.empty(shape, dtype=dtype)
        if out.size:
            kernels._squared_error(xf, yf, wf, w is not None, out.reshape(-1))
        return wrap(out, input)
    total = kernels._squared_error_sum(xf, yf, wf, w is not None) if xf.size else 0.0
    if reduction == "sum":
        return wrap(_scalar(total, dtype), input)
    if w is None:
        denominator = float(xf.size)
    else:  # torch divides by sum(weight), over weight's own (input's) shape
        denominator = kernels._sum(contiguous(w).reshape(-1)) if w.size else 0.0
    if saved is not None:
        saved.update(denominator=denominator, mean=_divide(total, denominator))
    return wrap(_scalar(_divide(total, denominator), dtype), input)  # an empty input gives nan, as in torch
