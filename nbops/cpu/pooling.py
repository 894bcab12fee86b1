"""Max and average pooling on the CPU: the drivers the front calls (run_max_pool2d,
run_max_pool2d_backward, run_avg_pool2d, run_avg_pool2d_backward, at the end) and their kernels over
(P, H, W) planes (P = N * C), one task per output row (per plane for average pooling's narrow outputs).

The drivers take checked 4-D (N, C, H, W) NumPy arrays and normalised sizes (pairs of ints) and return
new 4-D arrays.
"""

import numpy as np
from numba import njit, prange

from .._arrays import contiguous
from ._bounds import _tap_columns
from ._parallel import parallel_kernel


@njit(cache=True, inline="always")
def _max_into(dst, src, at, first, step, want_indices):
    """dst(w) = src(w) where src(w) > dst(w) or src(w) is NaN (torch's rule), recording the flat input
    position first + w * step in at(w) when indices are wanted."""
    if want_indices:
        for w in range(dst.size):
            v = src[w]
            if v > dst[w] or np.isnan(v):
                dst[w] = v
                at[w] = first + w * step
    else:
        for w in range(dst.size):
            v = src[w]
            dst[w] = v if (v > dst[w] or np.isnan(v)) else dst[w]


@njit(cache=True, inline="always")
def _max_into_stride2(dst, line, start, at, first, want_indices):
    """_max_into with src(w) = line(start + 2 * w): a constant stride, which the compiler vectorises
    (indexing a slice that starts at `start` keeps every index provably non-negative: no wraparound
    test per element)."""
    src = line[start:]
    if want_indices:
        for w in range(dst.size):
            v = src[2 * w]
            if v > dst[w] or np.isnan(v):
                dst[w] = v
                at[w] = first + w * 2
    else:
        for w in range(dst.size):
            v = src[2 * w]
            dst[w] = v if (v > dst[w] or np.isnan(v)) else dst[w]


@parallel_kernel(cache=True)
def _max_pool2d(x, out, indices, want_indices, kh, kw, sh, sw, ph, pw, dh, dw):
    """out(N_i, C_j, h, w) = max_{m=0..kH-1} max_{n=0..kW-1}
                              input(N_i, C_j, stride[0] * h + dilation[0] * m - padding[0],
                                              stride[1] * w + dilation[1] * n - padding[1])

    Padding counts as -inf; NaN wins over any number (torch: `val > max || isnan(val)`), ties keep the
    first position. indices(N_i, C_j, h, w) is the flat position `ih * W + iw` of the max in its plane
    (for a window of -inf only, its first in-bounds position, as torch).

    One task per output row. The taps (m, n) are visited in torch's order, but each tap updates the
    whole row at once (every column whose input is inside the image): the same comparisons per output,
    in a loop over columns that the compiler vectorises.
    """
    planes, height, width = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    col_lo, col_hi = _tap_columns(kw, dw, pw, sw, width, out_w)
    for task in prange(planes * out_h):
        p = task // out_h
        oh = task - p * out_h  # (one integer division per task, not two)
        best = out[p, oh]
        where = indices[p, oh] if want_indices else indices[0, 0]
        ih0 = oh * sh - ph
        while ih0 < 0:
            ih0 += dh
        for ow in range(out_w):
            best[ow] = -np.inf
            if want_indices:
                iw0 = ow * sw - pw
                while iw0 < 0:
                    iw0 += dw
                where[ow] = ih0 * width + iw0
        for m in range(kh):
            ih = oh * sh - ph + m * dh
            if ih < 0 or ih >= height:
                continue
            line = x[p, ih]
            for n in range(kw):
                offset = n * dw - pw
                w_lo = col_lo[n]
                w_hi = col_hi[n]
                if w_hi <= w_lo:
                    continue
                base = ih * width + offset
                dst = best[w_lo:w_hi]
                at = where[w_lo:w_hi] if want_indices else where
                first = base + w_lo * sw
                if sw == 1:  # contiguous source: typed apart so that the loop vectorises
                    _max_into(dst, line[w_lo + offset : w_hi + offset], at, first, 1, want_indices)
                elif sw == 2:  # the common strided case, with the stride a constant the compiler sees
                    _max_into_stride2(dst, line, w_lo * 2 + offset, at, first, want_indices)
                else:
                    src = line[w_lo * sw + offset : (w_hi - 1) * sw + offset + 1 : sw]
                    _max_into(dst, src, at, first, sw, want_indices)


ROW_WIDTH = 8  # output rows at least this wide are summed tap by tap, a vector at a time


@njit(cache=True, inline="always")
def _run_sum(values, p, start, stop):
    """sum of values[p, start:stop] (stop > start), in the values' dtype, as torch's float32 sums are.
    The caller's `reassoc` lets the compiler keep several partial sums in vector lanes: the same terms
    in another order (NaN and inf propagate alike)."""
    run = values[p, start:stop]  # indices from 0 up: provably non-negative, so no wraparound test per
    total = run[0]                # element (which would stop the loop from vectorising)
    for i in range(1, run.size):
        total += run[i]
    return total


@njit(cache=True, inline="always")
def _add_into(dst, src):
    for w in range(dst.size):
        dst[w] += src[w]


@njit(cache=True, inline="always")
def _add_into_stride2(dst, line, first):
    """dst(w) += line(first + 2 * w): a constant stride, which the compiler vectorises (a runtime one it
    does not), indexing a slice from `first` so that no index can be negative (no wraparound test)."""
    src = line[first:]
    for w in range(dst.size):
        dst[w] += src[2 * w]


@njit(cache=True, inline="always")
def _window(o, kernel, stride, pad, size):
    """Output o's window along one axis: [lo, hi) clipped to the padded input (torch's divisor with
    count_include_pad), and [ilo, ihi) clipped to the input itself (the elements it holds)."""
    lo = o * stride - pad
    hi = min(lo + kernel, size + pad)
    return lo, hi, max(lo, 0), min(hi, size)


@njit(cache=True, inline="always")
def _divisor(h0, h1, ih0, ih1, w0, w1, iw0, iw1, count_include_pad, divisor_override):
    """torch's divisor: the override, else the window clipped to the padded input, or to the input."""
    if divisor_override != 0:
        return divisor_override
    if count_include_pad:
        return (h1 - h0) * (w1 - w0)
    return (ih1 - ih0) * (iw1 - iw0)


@parallel_kernel(cache=True, error_model="numpy", fastmath={"reassoc"})  # no zero-division checks: divisors are never 0
def _avg_pool2d(x, out, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override):
    """out(N_i, C_j, h, w) = 1/divisor * sum_{m=0..kH-1} sum_{n=0..kW-1}
                              input(N_i, C_j, stride[0] * h + m - padding[0], stride[1] * w + n - padding[1])

    Padding adds zeros. divisor = divisor_override if it is non-zero; else the window's size clipped to
    the padded input (count_include_pad) or to the input itself; a window with no input element gives 0.

    Wide rows: one task per output row; each tap adds its input columns to the whole row at once (in
    torch's order of terms, in the input's dtype as torch does), a loop the compiler vectorises; then each
    column is divided by its own divisor. Short rows: one task per plane; each window summed directly, a
    row of the window at a time (the whole window at once when it spans whole input rows), in vector
    lanes (`reassoc`). (A global pool has a kernel of its own, _avg_pool2d_global.)
    """
    planes, height, width = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    flat = x.reshape((planes, height * width))
    if out_w < ROW_WIDTH:
        for p in prange(planes):
            for oh in range(out_h):
                h0, h1, ih0, ih1 = _window(oh, kh, sh, ph, height)
                for ow in range(out_w):
                    w0, w1, iw0, iw1 = _window(ow, kw, sw, pw, width)
                    if ih0 >= ih1 or iw0 >= iw1:
                        out[p, oh, ow] = 0.0
                        continue
                    if iw0 == 0 and iw1 == width:  # whole input rows: one contiguous run
                        total = _run_sum(flat, p, ih0 * width, ih1 * width)
                    else:
                        total = _run_sum(flat, p, ih0 * width + iw0, ih0 * width + iw1)
                        for ih in range(ih0 + 1, ih1):
                            total += _run_sum(flat, p, ih * width + iw0, ih * width + iw1)
                    divisor = _divisor(h0, h1, ih0, ih1, w0, w1, iw0, iw1, count_include_pad, divisor_override)
                    out[p, oh, ow] = total / divisor
        return
    col_lo, col_hi = _tap_columns(kw, 1, pw, sw, width, out_w)
    # each column's share of the divisor, as a float in the input's dtype: (int64 -> float conversions
    # do not vectorise on AVX2, so the divisor pass reads these instead of recomputing them per row)
    col_count = np.empty(out_w, dtype=x.dtype)
    for ow in range(out_w):
        w0, w1, iw0, iw1 = _window(ow, kw, sw, pw, width)
        col_count[ow] = (w1 - w0) if count_include_pad else max(iw1 - iw0, 0)
    for task in prange(planes * out_h):
        p = task // out_h
        oh = task - p * out_h  # (one integer division per task, not two)
        h0, h1, ih0, ih1 = _window(oh, kh, sh, ph, height)
        row = out[p, oh]
        for ow in range(out_w):
            row[ow] = 0.0
        for ih in range(ih0, ih1):
            line = x[p, ih]
            for n in range(kw):
                offset = n - pw
                w_lo = col_lo[n]
                w_hi = col_hi[n]
                if w_hi <= w_lo:
                    continue
                if sw == 1:
                    _add_into(row[w_lo:w_hi], line[w_lo + offset : w_hi + offset])
                elif sw == 2:  # the common strided case, with the stride a constant the compiler sees
                    _add_into_stride2(row[w_lo:w_hi], line, w_lo * 2 + offset)
                else:
                    _add_into(row[w_lo:w_hi], line[w_lo * sw + offset : (w_hi - 1) * sw + offset + 1 : sw])
        # divide: by the override, or by the window's height share times its column's share. A window
        # with no input element has a sum of 0 (nothing was added) and gives 0 whatever its divisor.
        if divisor_override != 0:
            for ow in range(out_w):
                row[ow] = row[ow] / divisor_override
        else:
            rows = (h1 - h0) if count_include_pad else max(ih1 - ih0, 0)
            row_count = x.dtype.type(rows)
            for ow in range(out_w):  # branch-free, so that it vectorises
                divisor = row_count * col_count[ow]
                row[ow] = row[ow] / (divisor if divisor != 0 else 1)


@parallel_kernel(cache=True, error_model="numpy", fastmath={"reassoc"})
def _avg_pool2d_global(x, out, divisor):
    """out(P_i, 0, 0) = 1/divisor * sum_{h, w} input(P_i, h, w): _avg_pool2d when the window is the whole
    plane and there is no padding (a network's head), one sum per plane in vector lanes (`reassoc`).
    (A kernel of its own: a branch for it inside _avg_pool2d measured that kernel's wide rows 1.5x
    slower.)"""
    planes, height, width = x.shape
    flat = x.reshape((planes, height * width))
    for p in prange(planes):
        out[p, 0, 0] = _run_sum(flat, p, 0, height * width) / divisor


@parallel_kernel(cache=True)
def _max_pool2d_backward(grad_out, indices, rows_hit, cols_hit, grad_in):
    """grad_input(N_i, C_j, h, w) = sum over the outputs (oh, ow) of plane (N_i, C_j) whose max was input(N_i, C_j, h, w)
                                      (indices(N_i, C_j, oh, ow) = h * W + w) of grad_output(N_i, C_j, oh, ow)

    over planes: grad_out and indices (P, H_out, W_out), grad_in (P, H * W). A window with no input
    element at all (only padding: its output is -inf whatever the input) passes no gradient on:
    rows_hit(oh) and cols_hit(ow) say whether its rows and columns reach into the input. (Its index,
    torch's "first position", lies outside the window; torch's own backward writes there.)
    A task is one plane: overlapping windows that share their max add into the same element.
    """
    out_h, out_w = grad_out.shape[1], grad_out.shape[2]
    for p in prange(grad_in.shape[0]):
        dst = grad_in[p]
        for e in range(dst.size):
            dst[e] = 0.0
        for oh in range(out_h):
            if not rows_hit[oh]:
                continue
            src = grad_out[p, oh]
            at = indices[p, oh]
            for ow in range(out_w):
                if cols_hit[ow]:
                    dst[at[ow]] += src[ow]


@parallel_kernel(cache=True, error_model="numpy")
def _avg_pool2d_backward(grad_out, grad_in, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override):
    """grad_input(N_i, C_j, h, w) = sum over the windows (oh, ow) that hold input(N_i, C_j, h, w) of
                                      grad_output(N_i, C_j, oh, ow) / divisor(oh, ow)

    with the forward pass's windows and divisors (_divisor); (P, H_out, W_out) -> (P, H, W), a task per
    plane, each window's share added to its in-bounds elements (padding receives nothing).
    """
    planes, height, width = grad_in.shape
    out_h, out_w = grad_out.shape[1], grad_out.shape[2]
    for p in prange(planes):
        dst = grad_in[p]
        for ih in range(height):
            for iw in range(width):
                dst[ih, iw] = 0.0
        for oh in range(out_h):
            h0, h1, ih0, ih1 = _window(oh, kh, sh, ph, height)
            for ow in range(out_w):
                w0, w1, iw0, iw1 = _window(ow, kw, sw, pw, width)
                if ih0 >= ih1 or iw0 >= iw1:
                    continue
                divisor = _divisor(h0, h1, ih0, ih1, w0, w1, iw0, iw1, count_include_pad, divisor_override)
                share = grad_out[p, oh, ow] / grad_out.dtype.type(divisor)  # in the data's dtype, as torch
                for ih in range(ih0, ih1):
                    row = dst[ih]
                    for iw in range(iw0, iw1):
                        row[iw] += share


# ------------------------------------------------------------------------------------------- drivers


def run_max_pool2d(x4, kernel, strides, pads, dilations, out_hw, return_indices):
    """out (N, C, H_out, W_out), and with return_indices the int64 flat index h * W + w of each max in
    its plane (the backward pass's route): (out, indices)."""
    batch, channels, height, width = x4.shape
    out = np.empty((batch * channels,) + tuple(out_hw), dtype=x4.dtype)
    indices = np.empty(out.shape if return_indices else (1, 1, 1), dtype=np.int64)
    if out.size:
        _max_pool2d(
            contiguous(x4).reshape(batch * channels, height, width), out, indices, return_indices,
            *kernel, *strides, *pads, *dilations,
        )
    out = out.reshape((batch, channels) + tuple(out_hw))
    if return_indices:
        return out, indices.reshape(out.shape)
    return out


def _window_hits(out_size, size, kernel, stride, pad, dilation) -> np.ndarray:
    """For each output position along one axis: whether its window reaches an input position at all."""
    taps = np.arange(out_size)[:, None] * stride - pad + np.arange(kernel)[None, :] * dilation
    return ((taps >= 0) & (taps < size)).any(axis=1)


def run_max_pool2d_backward(grad_output, indices, input_shape, kernel, strides, pads, dilations):
    """grad_input (input_shape, 4-D): each output's gradient added at the input position its max came
    from (indices: run_max_pool2d's)."""
    batch, channels, height, width = input_shape
    planes = batch * channels
    if not indices.size:  # an empty batch has nothing to route (the kernel clears each plane it adds to)
        return np.zeros(input_shape, dtype=grad_output.dtype)
    grad_input = np.empty(input_shape, dtype=grad_output.dtype)
    out_h, out_w = indices.shape[-2:]
    _max_pool2d_backward(
        contiguous(grad_output).reshape(planes, out_h, out_w),
        contiguous(indices).reshape(planes, out_h, out_w),
        _window_hits(out_h, height, kernel[0], strides[0], pads[0], dilations[0]),
        _window_hits(out_w, width, kernel[1], strides[1], pads[1], dilations[1]),
        grad_input.reshape(planes, -1),
    )
    return grad_input


def run_avg_pool2d(x4, kernel, strides, pads, out_hw, count_include_pad, divisor):
    """out (N, C, H_out, W_out); divisor: divisor_override, 0 when not given."""
    batch, channels, height, width = x4.shape
    out = np.empty((batch * channels,) + tuple(out_hw), dtype=x4.dtype)
    planes = contiguous(x4).reshape(batch * channels, height, width)
    if out.size and tuple(kernel) == (height, width) and tuple(pads) == (0, 0):  # a global pool: the window is the plane
        _avg_pool2d_global(planes, out, divisor if divisor else height * width)
    elif out.size:
        _avg_pool2d(planes, out, *kernel, *strides, *pads, count_include_pad, divisor)
    return out.reshape((batch, channels) + tuple(out_hw))


def run_avg_pool2d_backward(grad_output, input_shape, kernel, strides, pads, count_include_pad, divisor):
    """grad_input (input_shape, 4-D): each output's gradient divided by its window's divisor, added over
    its window."""
    batch, channels, height, width = input_shape
    grad_input = np.empty(input_shape, dtype=grad_output.dtype)
    if grad_input.size:
        out_h, out_w = grad_output.shape[-2:]
        _avg_pool2d_backward(
            contiguous(grad_output).reshape(batch * channels, out_h, out_w),
            grad_input.reshape(batch * channels, height, width),
            *kernel, *strides, *pads, count_include_pad, divisor,
        )
    return grad_input
