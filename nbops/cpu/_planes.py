"""The phase planes that conv.py's kernels read (see the top of conv.py): the input laid out once in
zero-padded planes split by stride phase (_phase_planes, _phase_layout), each tap's offset in them
(_tap_offsets), and weights read where they lie (_Taps, _turned: the input gradient's turned kernel).
"""

import functools

import numpy as np
from numba import prange

from .._arrays import contiguous

from ._bounds import _tap_columns
from ._parallel import parallel_kernel
from ._tile import TILE_COLUMNS


@parallel_kernel(cache=True)
def _phase_planes(x, ph, pw, sh, sw, plane_h, plane_w, slack):
    """xs(n, ((c * sh + r % sh) * sw + col % sw) * Hq * Wq + (r // sh) * Wq + col // sw)
    = input(n, c, r - ph, col - pw), zero where that is padding; `slack` zeros after the last plane
    (the thrown-away columns read a little past it). A task is one sample and channel: it zeroes its
    planes, then copies each input row to its place. Without a stride, a row is one plane row; with
    stride 2 in width, its even and odd columns go to two phase planes in one loop (the shape that
    LLVM vectorises); other strides phase by phase. Plane rows are walked phase by phase, so no
    division per row (two per row made the layouts of ResNet's 3x3 layers 1.1-2.2x slower)."""
    batch, channels, height, width = x.shape
    plane = plane_h * plane_w
    xs = np.empty((batch, channels * sh * sw * plane + slack), dtype=x.dtype)
    xs[:, channels * sh * sw * plane :] = 0
    lo, hi = _tap_columns(sw, 1, pw, sw, width, plane_w)  # (phase b's columns q with an input column)
    for task in prange(batch * channels):
        n = task // channels
        c = task - n * channels
        planes = xs[n, c * sh * sw * plane : (c + 1) * sh * sw * plane]
        for i in range(planes.size):
            planes[i] = 0
        src = x[n, c]
        if sh == 1 and sw == 1:
            for ih in range(height):
                row = src[ih]
                dst = planes[(ih + ph) * plane_w + pw : (ih + ph) * plane_w + pw + width]
                for iw in range(width):
                    dst[iw] = row[iw]
            continue
        for a in range(sh):  # phase row a: plane rows rr, padded rows r = rr * sh + a
            for rr in range(plane_h):
                ih = rr * sh + a - ph
                if ih < 0 or ih >= height:
                    continue
                row = src[ih]
                at = (a * sw * plane_h + rr) * plane_w  # (the row's start in phase (a, 0))
                if sw == 2:  # input column iw: phase (iw + pw) % 2, column (iw + pw) // 2
                    even = planes[at + (pw % 2) * plane + pw // 2 :]
                    odd = planes[at + ((pw + 1) % 2) * plane + (pw + 1) // 2 :]
                    for k in range(width // 2):
                        even[k] = row[2 * k]
                        odd[k] = row[2 * k + 1]
                    if width % 2:
                        even[width // 2] = row[width - 1]
                    continue
                for b in range(sw):  # padded columns col = q * sw + b, input column col - pw
                    q0, q1 = lo[b], hi[b]  # q * sw + b - pw in [0, width) for q0 <= q < q1
                    if q1 <= q0:
                        continue
                    dst = planes[at + b * plane + q0 : at + b * plane + q1]
                    picked = row[q0 * sw + b - pw :]  # (indexed from 0: no wraparound test per element)
                    for q in range(q1 - q0):
                        dst[q] = picked[q * sw]
    return xs


def _phase_layout(x4, w_shape, out_h, strides, before, padded, dilations, groups, over_read=TILE_COLUMNS, tail=False):
    """The phase planes of the (padded) input and each tap's offset in its group's planes (see the
    top of this file): (xs, offsets in (k, m, l) order, group_size, plane_w, last). `out_h` is the
    number of output rows that will be read, and a kernel reads up to `over_read` positions past the
    last one (the thrown-away columns of the last row read a little past the last plane: the layout
    ends with enough zeros for them). Without padding, stride or slack, the planes are the input itself
    (no copy). `last` is None, except with tail=True when the input would be its own planes but for the
    slack: then it holds the planes of the last sample alone, and xs is the input in place without that
    sample (each other sample's last tile reads a little into the next sample, and throws it away;
    only the tiles can read planes so split)."""
    (sh, sw), (dh, dw) = strides, dilations
    group_in, kh, kw = w_shape[1:]
    plane_h, plane_w = -(-padded[0] // sh), -(-padded[1] // sw)
    offsets = _tap_offsets(group_in, kh, kw, sh, sw, dh, dw, plane_h, plane_w)
    group_size = group_in * sh * sw * plane_h * plane_w
    need = (groups - 1) * group_size + out_h * plane_w + over_read + (int(offsets.max()) if offsets.size else 0)
    slack = max(0, need - groups * group_size)
    in_place = (sh, sw) == (1, 1) and tuple(before) == (0, 0) and tuple(padded) == x4.shape[2:]
    if in_place and not x4.flags.c_contiguous:  # (_pointwise's strided view: copied in parallel)
        xs, last = _phase_planes(x4, 0, 0, 1, 1, plane_h, plane_w, slack), None
    elif in_place and slack == 0:
        xs, last = contiguous(x4).reshape(x4.shape[0], -1), None
    elif in_place and tail and x4.shape[0] > 1 and slack <= groups * group_size:
        # (a 1x1 convolution: copying the input for the over-read cost 1 ms on 8x1024x14x14, 15% of the layer)
        xs = contiguous(x4).reshape(x4.shape[0], -1)[:-1]
        last = _phase_planes(contiguous(x4[-1:]), 0, 0, 1, 1, plane_h, plane_w, slack)
    else:
        xs, last = _phase_planes(contiguous(x4), before[0], before[1], sh, sw, plane_h, plane_w, slack), None
    return xs, offsets, group_size, plane_w, last


def _pointwise(x4, w_shape, strides, before, out_hw):
    """A 1x1 convolution without padding, as one with stride 1 over the input positions it reads:
    (x4[:, :, ::sh, ::sw] cropped to out_hw, (1, 1), (0, 0), out_hw); None for any other convolution.
    (Its phase planes would copy the whole input for the one plane that the taps read.)"""
    if w_shape[2:] != (1, 1) or tuple(before) != (0, 0) or tuple(strides) == (1, 1):
        return None
    (sh, sw), (oh, ow) = strides, out_hw
    if (oh - 1) * sh >= x4.shape[2] or (ow - 1) * sw >= x4.shape[3]:
        return None  # (an output reads padding after the input)
    return x4[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw], (1, 1), (0, 0), (oh, ow)


@functools.lru_cache(maxsize=256)
def _tap_offsets(group_in, kh, kw, sh, sw, dh, dw, plane_h, plane_w) -> np.ndarray:
    """offsets(k, m, l) of tap (k, m, l) in its group's phase planes, flattened in (k, m, l) order.
    Cached (a network calls each layer's shapes over and over, and building these costs more than a
    small layer's convolution): the kernels and callers only read it."""
    plane = plane_h * plane_w
    k, m, l = np.meshgrid(np.arange(group_in), np.arange(kh), np.arange(kw), indexing="ij")
    offsets = (((k * sh + (m * dh) % sh) * sw + (l * dw) % sw) * plane + (m * dh // sh) * plane_w + l * dw // sw).reshape(-1)
    return offsets.astype(np.int64)


class _Taps:
    """A convolution weight (C_out, C_in/groups, kH, kW) read from other weights where they lie, without
    a copy: taps(j, t) = flat(channel_base(j) + tap_index(t)), t = (k, m, l) flattened."""

    def __init__(self, flat, shape, channel_base, tap_index):
        self.flat, self.shape, self.channel_base, self.tap_index = flat, shape, channel_base, tap_index

    def dense(self):
        return self.flat[self.channel_base[:, None] + self.tap_index[None, :]].reshape(self.shape)


def _turned(w, groups):
    """The weight of conv2d's stride-1 input gradient, as _Taps of w (no copy): each kernel turned round,
    input and output channels swapped in each group, (C_in, C_out / groups, kH, kW)."""
    out_channels, group_in, kh, kw = w.shape
    channel_base, tap_index = _turned_index(w.shape, groups)
    return _Taps(w.reshape(-1), (groups * group_in, out_channels // groups, kh, kw), channel_base, tap_index)


@functools.lru_cache(maxsize=256)
def _turned_index(w_shape, groups):
    """_turned's channel_base and tap_index for a weight of w_shape (cached like _tap_offsets: 0.1 ms
    a call; callers only read them)."""
    out_channels, group_in, kh, kw = w_shape
    group_out = out_channels // groups
    i = np.arange(groups * group_in)
    channel_base = ((i // group_in) * group_out * group_in + i % group_in) * kh * kw
    j, m, l = np.meshgrid(np.arange(group_out), np.arange(kh), np.arange(kw), indexing="ij")
    tap_index = (j * group_in * kh * kw + (kh - 1 - m) * kw + (kw - 1 - l)).reshape(-1)
    return channel_base, tap_index.astype(np.int64)


@parallel_kernel(cache=True)
def _interleave_phases(y, bias, sh, sw, out):
    """out(n, j, sh * h + a, sw * w + c) = y(n, (a * sw + c) * C_out + j, h, w) + bias(j) for h < H,
    w < W of y (N, sh * sw * C_out, H, W), and bias(j) in the rows and columns of out past sh * H and
    sw * W: the phases of a transposed convolution whose kernel is its stride, computed as one 1x1
    convolution (conv.py's _conv_transpose2d_fast), put in their places. A task is one sample, channel
    and input row; stride 2 in width writes both phases of an output row in one loop (the shape that
    LLVM vectorises, with shuffles)."""
    batch, out_channels, out_h, out_w = out.shape
    height, width = y.shape[2], y.shape[3]
    rows = (out_h + sh - 1) // sh
    for task in prange(batch * out_channels * rows):
        n = task // (out_channels * rows)
        j = (task // rows) % out_channels
        h = task % rows
        b = bias[j]
        for a in range(min(sh, out_h - sh * h)):
            row = out[n, j, sh * h + a]
            if h >= height:
                row[:] = b
                continue
            if sw == 2:
                y0, y1 = y[n, (2 * a) * out_channels + j, h], y[n, (2 * a + 1) * out_channels + j, h]
                for w in range(width):
                    row[2 * w] = y0[w] + b
                    row[2 * w + 1] = y1[w] + b
            else:
                for w in range(width):
                    for c in range(sw):
                        row[sw * w + c] = y[n, (a * sw + c) * out_channels + j, h, w] + b
            row[sw * width :] = b


@parallel_kernel(cache=True)
def _strided_into(y, sh, sw, out):
    """out(n, c, sh * h, sw * w) = y(n, c, h, w) for h < H, w < W of y, and 0 at every other position
    of out: the input gradient of a 1x1 convolution with a stride (conv.py), written in one pass (zeros
    first and then the values every sh rows and sw columns, two passes over memory, took 1.6-2x as
    long). A task is one sample and channel; each row is zeroed, then gets its values while it is in
    L1 (as fast as one loop writing values and zeros at stride 2: 0.85-1.7x it)."""
    batch, channels, out_h = out.shape[:3]
    height, width = y.shape[2], y.shape[3]
    for task in prange(batch * channels):
        n = task // channels
        c = task - n * channels
        for r in range(out_h):
            row = out[n, c, r]
            row[:] = 0
            h = r // sh
            if r - h * sh == 0 and h < height:
                values = y[n, c, h]
                for w in range(width):
                    row[sw * w] = values[w]


def phase_taps(kernel, strides, pads, dilations):
    """(taps_h, taps_w): a transposed convolution's taps per output phase, in each dimension. Output
    row oh = s*i + a (phase a) takes tap m only where a + p - d*m is a multiple of s, from input row
    i + (a + p - d*m) // s: taps_h(a) lists those (m, (a + p - d*m) // s); columns likewise."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, strides, pads, dilations
    taps_h = [[(m, (a + ph - dh * m) // sh) for m in range(kh) if (a + ph - dh * m) % sh == 0] for a in range(sh)]
    taps_w = [[(l, (c + pw - dw * l) // sw) for l in range(kw) if (c + pw - dw * l) % sw == 0] for c in range(sw)]
    return taps_h, taps_w


@functools.lru_cache(maxsize=256)
def _transpose_plan(strides, pads, dilations, groups, w_shape, in_hw, out_hw):
    """conv.py's _conv_transpose2d_fast's planes and phases for these sizes: (top, left, plane_h, plane_w,
    group_size, channel_base, phases, slack). Each phase is (a, c, offsets, tap_index, sorted_offsets,
    sorted_index): its taps' offsets in the planes and their places in the flat weights,

        taps(j, (k, m, l)) = weight(g * C_in/groups + k, j', m, l) = flat(channel_base(j) + tap_index(k, m, l)),

    then both in the order of the offsets (the tiles'). Cached like _tap_offsets (a network calls
    each layer's shapes over and over; building these took 0.3 ms, 5% of a stride-2 input gradient):
    callers only read them."""
    sh, sw = strides
    in_channels, group_out, kh, kw = w_shape
    group_in = in_channels // groups
    out_channels = group_out * groups
    (height, width), (out_h, out_w) = in_hw, out_hw
    taps_h, taps_w = phase_taps((kh, kw), strides, pads, dilations)
    shifts_h = [d for phase in taps_h for _, d in phase] or [0]
    shifts_w = [d for phase in taps_w for _, d in phase] or [0]
    top, left = max(0, -min(shifts_h)), max(0, -min(shifts_w))
    phase_h, phase_w = -(-out_h // sh), -(-out_w // sw)  # the largest phase's size
    plane_h = top + height + max(0, phase_h + max(max(shifts_h), 0) - height)
    plane_w = left + width + max(0, phase_w + max(max(shifts_w), 0) - width)
    plane = plane_h * plane_w
    group_size = group_in * plane
    j = np.arange(out_channels)
    channel_base = ((j // group_out) * group_in * group_out + j % group_out) * kh * kw
    phases = []
    for a in range(sh):
        for c in range(sw):
            rows_m = [m for m, _ in taps_h[a]]
            cols_l = [l for l, _ in taps_w[c]]
            k, dm, dl = np.meshgrid(np.arange(group_in), [d for _, d in taps_h[a]], [d for _, d in taps_w[c]], indexing="ij")
            offsets = (k * plane + (dm + top) * plane_w + (dl + left)).reshape(-1).astype(np.int64)
            k, m, l = np.meshgrid(np.arange(group_in), rows_m, cols_l, indexing="ij")
            tap_index = ((k * group_out * kh + m) * kw + l).reshape(-1).astype(np.int64)
            order = np.argsort(offsets, kind="stable")
            phases.append((a, c, offsets, tap_index, offsets[order], tap_index[order]))
    # (+ TILE_COLUMNS: _conv2d_tiles reads its last tile whole)
    need = max((groups - 1) * group_size + phase_h * plane_w + TILE_COLUMNS + (int(o.max()) if o.size else 0) for _, _, o, _, _, _ in phases)
    slack = max(0, need - groups * group_size)
    return top, left, plane_h, plane_w, group_size, channel_base, tuple(phases), slack
