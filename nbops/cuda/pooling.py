"""Max and average pooling on the GPU: one thread per output element (grid-stride loop)."""

import math

from numba import cuda

from ._device import Place, launch, unravel3


@cuda.jit(cache=True)
def _max_pool2d(x, out, indices, want_indices, kh, kw, sh, sw, ph, pw, dh, dw):
    """out(N_i, C_j, h, w) = max_{m=0..kH-1} max_{n=0..kW-1}
                              input(N_i, C_j, stride[0] * h + dilation[0] * m - padding[0],
                                              stride[1] * w + dilation[1] * n - padding[1])

    over planes (P, H, W); padding is -inf, NaN wins (torch's `val > max || isnan(val)`), and
    indices(...) = ih * W + iw of the max (for a window of -inf only, its first in-bounds position).
    """
    planes, height, width = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    for e in range(cuda.grid(1), planes * out_h * out_w, cuda.gridsize(1)):
        p, oh, ow = unravel3(e, out_h, out_w)
        ih0 = oh * sh - ph
        while ih0 < 0:
            ih0 += dh
        iw0 = ow * sw - pw
        while iw0 < 0:
            iw0 += dw
        best = -math.inf
        where = ih0 * width + iw0
        for m in range(kh):
            ih = oh * sh - ph + m * dh
            if ih < 0 or ih >= height:
                continue
            for n in range(kw):
                iw = ow * sw - pw + n * dw
                if iw < 0 or iw >= width:
                    continue
                v = x[p, ih, iw]
                if v > best or math.isnan(v):
                    best = v
                    where = ih * width + iw
        out[p, oh, ow] = best
        if want_indices:
            indices[p, oh, ow] = where


@cuda.jit(cache=True)
def _avg_pool2d(x, out, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override):
    """out(N_i, C_j, h, w) = 1/divisor * sum_{m=0..kH-1} sum_{n=0..kW-1}
                              input(N_i, C_j, stride[0] * h + m - padding[0], stride[1] * w + n - padding[1])

    padding adds zeros; divisor = divisor_override if non-zero, else the window clipped to the padded
    input (count_include_pad) or to the input; a window with no input element gives 0.
    """
    planes, height, width = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    for e in range(cuda.grid(1), planes * out_h * out_w, cuda.gridsize(1)):
        p, oh, ow = unravel3(e, out_h, out_w)
        h0 = oh * sh - ph
        h1 = min(h0 + kh, height + ph)
        w0 = ow * sw - pw
        w1 = min(w0 + kw, width + pw)
        ih0, ih1 = max(h0, 0), min(h1, height)
        iw0, iw1 = max(w0, 0), min(w1, width)
        if ih0 >= ih1 or iw0 >= iw1:
            out[p, oh, ow] = 0.0
            continue
        total = x[p, ih0, iw0] - x[p, ih0, iw0]  # zero in the input's dtype
        for ih in range(ih0, ih1):
            for iw in range(iw0, iw1):
                total += x[p, ih, iw]
        if divisor_override != 0:
            divisor = divisor_override
        elif count_include_pad:
            divisor = (h1 - h0) * (w1 - w0)
        else:
            divisor = (ih1 - ih0) * (iw1 - iw0)
        out[p, oh, ow] = total / divisor


def run_max_pool2d(x4, kernel, strides, pads, dilations, out_hw, return_indices):
    """max_pool2d on the GPU: nbops/cpu/pooling.py's run_max_pool2d, same arguments and results."""
    place = Place(x4)
    batch, channels, height, width = x4.shape
    x = place.array(x4).reshape((batch * channels, height, width))
    out_shape = (batch, channels) + tuple(out_hw)
    out, out_handle = place.empty(out_shape, x.dtype)
    indices, indices_handle = place.empty(out_shape if return_indices else (1,), "int64")
    planes_out = out.reshape((batch * channels,) + tuple(out_hw))
    planes_indices = indices.reshape(planes_out.shape) if return_indices else indices.reshape((1, 1, 1))
    launch(
        _max_pool2d, planes_out.size, place, x, planes_out, planes_indices, bool(return_indices),
        *kernel, *strides, *pads, *dilations,
    )
    if return_indices:
        return place.give(out_handle), place.give(indices_handle)
    return place.give(out_handle)


def run_avg_pool2d(x4, kernel, strides, pads, out_hw, count_include_pad, divisor):
    """avg_pool2d on the GPU: nbops/cpu/pooling.py's run_avg_pool2d, same arguments and results."""
    place = Place(x4)
    batch, channels, height, width = x4.shape
    x = place.array(x4).reshape((batch * channels, height, width))
    out, out_handle = place.empty((batch, channels) + tuple(out_hw), x.dtype)
    planes_out = out.reshape((batch * channels,) + tuple(out_hw))
    launch(_avg_pool2d, planes_out.size, place, x, planes_out, *kernel, *strides, *pads, bool(count_include_pad), divisor)
    return place.give(out_handle)
