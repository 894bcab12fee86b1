"""Max and average pooling over (P, H, W) planes (P = N * C), one task per output row."""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _max_pool2d(x, out, indices, want_indices, kh, kw, sh, sw, ph, pw, dh, dw):
    """out(N_i, C_j, h, w) = max_{m=0..kH-1} max_{n=0..kW-1}
                              input(N_i, C_j, stride[0] * h + dilation[0] * m - padding[0],
                                              stride[1] * w + dilation[1] * n - padding[1])

    Padding counts as -inf; NaN wins over any number (torch: `val > max || isnan(val)`), ties keep the
    first position. indices(N_i, C_j, h, w) is the flat position `ih * W + iw` of the max in its plane.
    """
    planes, height, width = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    for task in prange(planes * out_h):
        p = task // out_h
        oh = task % out_h
        ih0 = oh * sh - ph
        ih1 = min(ih0 + (kh - 1) * dh + 1, height)
        while ih0 < 0:
            ih0 += dh
        for ow in range(out_w):
            iw0 = ow * sw - pw
            iw1 = min(iw0 + (kw - 1) * dw + 1, width)
            while iw0 < 0:
                iw0 += dw
            best = -np.inf
            best_index = ih0 * width + iw0
            for ih in range(ih0, ih1, dh):
                for iw in range(iw0, iw1, dw):
                    value = x[p, ih, iw]
                    if value > best or np.isnan(value):
                        best = value
                        best_index = ih * width + iw
            out[p, oh, ow] = best
            if want_indices:
                indices[p, oh, ow] = best_index


@njit(parallel=True, cache=True)
def _avg_pool2d(x, out, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override):
    """out(N_i, C_j, h, w) = 1/divisor * sum_{m=0..kH-1} sum_{n=0..kW-1}
                              input(N_i, C_j, stride[0] * h + m - padding[0], stride[1] * w + n - padding[1])

    Padding adds zeros. divisor = divisor_override if it is non-zero; else the window's size clipped to
    the padded input (count_include_pad) or to the input itself; a window with no input element gives 0.
    """
    planes, height, width = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    for task in prange(planes * out_h):
        p = task // out_h
        oh = task % out_h
        h0 = oh * sh - ph
        h1 = min(h0 + kh, height + ph)
        for ow in range(out_w):
            w0 = ow * sw - pw
            w1 = min(w0 + kw, width + pw)
            padded_size = (h1 - h0) * (w1 - w0)
            ih0 = max(h0, 0)
            iw0 = max(w0, 0)
            ih1 = min(h1, height)
            iw1 = min(w1, width)
            if ih0 >= ih1 or iw0 >= iw1:
                out[p, oh, ow] = 0.0
                continue
            total = 0.0
            for ih in range(ih0, ih1):
                for iw in range(iw0, iw1):
                    total += x[p, ih, iw]
            if divisor_override != 0:
                divisor = divisor_override
            elif count_include_pad:
                divisor = padded_size
            else:
                divisor = (ih1 - ih0) * (iw1 - iw0)
            out[p, oh, ow] = total / divisor
