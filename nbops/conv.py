"""conv2d and conv_transpose2d: torch's signatures, the argument checks, then the backend's run_<op>
(nbops/cpu/conv.py, nbops/cuda/conv.py) or, for tensors that require grad, nbops.autograd."""

from __future__ import annotations

from ._args import check_ndim, non_negative_pair, positive_pair
from ._arrays import as_array, as_int, same_dtype, wrap
from ._dispatch import autograd, backend, grad_wanted

__all__ = ["conv2d", "conv_transpose2d"]


def _conv_arrays(op, input, weight, bias, groups, transposed):
    """Checked arrays for conv2d / conv_transpose2d: (x4, unbatched, w, b or None, groups, C_out)."""
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
    b = None
    if bias is not None:
        b = as_array(bias, "bias")
        same_dtype(b, "bias", x)
        if b.shape != (out_channels,):
            raise ValueError(
                f"{op}: bias must be 1-D with {out_channels} elements (out_channels), got shape {tuple(b.shape)}"
            )
    return x4, unbatched, w, b, groups, out_channels


def same_padding(kernel, dilation):
    """(before, after) of conv2d's padding='same' (stride 1): dilation * (k - 1) zeros in all along each
    dim, the odd one after (bottom, right), as torch pads."""
    total = tuple(d * (k - 1) for d, k in zip(dilation, kernel))
    return tuple(t // 2 for t in total), tuple(t - t // 2 for t in total)


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
    grad = grad_wanted(input, weight, bias)
    x4, unbatched, w, b, groups, _ = _conv_arrays("conv2d", input, weight, bias, groups, False)
    strides = positive_pair(stride, "stride")
    dilations = positive_pair(dilation, "dilation")
    kernel = (w.shape[2], w.shape[3])
    if isinstance(padding, str):
        if padding == "valid":
            before = after = (0, 0)
        elif padding == "same":
            if strides != (1, 1):
                raise ValueError(f"conv2d: padding='same' is not supported for strided convolutions, got stride={strides}")
            before, after = same_padding(kernel, dilations)
        else:
            raise ValueError(f"conv2d: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    else:
        before = after = non_negative_pair(padding, "padding")
    height, width = x4.shape[2], x4.shape[3]
    padded = (height + before[0] + after[0], width + before[1] + after[1])
    extent = tuple(d * (k - 1) + 1 for d, k in zip(dilations, kernel))
    if extent[0] > padded[0] or extent[1] > padded[1]:
        raise ValueError(
            f"conv2d: the dilated kernel ({extent[0]} x {extent[1]}) is larger than the padded input "
            f"({padded[0]} x {padded[1]})"
        )
    out_hw = ((padded[0] - extent[0]) // strides[0] + 1, (padded[1] - extent[1]) // strides[1] + 1)
    args = (strides, before, after, dilations, groups, out_hw)
    if grad:
        return autograd().Conv2d.apply(input, weight, bias, x4, w, b, args, unbatched)
    out = backend("conv").run_conv2d(x4, w, b, *args)
    return wrap(out[0] if unbatched else out, input)


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
    grad = grad_wanted(input, weight, bias)
    x4, unbatched, w, b, groups, _ = _conv_arrays(
        "conv_transpose2d", input, weight, bias, groups, True
    )
    if isinstance(padding, str):
        raise TypeError(f"conv_transpose2d: padding must be an int or a pair of ints, got {padding!r}")
    strides = positive_pair(stride, "stride")
    dilations = positive_pair(dilation, "dilation")
    pads = non_negative_pair(padding, "padding")
    extra = non_negative_pair(output_padding, "output_padding")
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
    args = (strides, pads, dilations, groups, (out_h, out_w))
    if grad:
        return autograd().ConvTranspose2d.apply(input, weight, bias, x4, w, b, args, unbatched)
    out = backend("conv").run_conv_transpose2d(x4, w, b, *args)
    return wrap(out[0] if unbatched else out, input)
