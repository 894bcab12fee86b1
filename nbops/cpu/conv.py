"""2-D convolution on the CPU over stride-phase planes: the kernels, then the drivers the front calls
(run_conv2d, run_conv_transpose2d and their backward passes). conv_transpose2d runs through the same
kernel, as one small convolution per output phase.

The drivers take checked 4-D NumPy arrays and normalised sizes (pairs of ints) and return new arrays.
"""

import math

import numpy as np
from numba import njit, prange

from .._arrays import contiguous

from ._depthwise import depthwise_fits, run_depthwise, run_depthwise_transposed, run_depthwise_weight_grad
from ._lanes import _reused
from ._parallel import parallel_kernel, unravel3
from ._planes import _interleave_phases, _phase_layout, _phase_planes, _pointwise, _strided_into, _Taps, _transpose_plan, _turned
from ._tile import TILE_COLUMNS, _run_tiles, row_tiles_fit, tiles_over_read
from ._weight_tiles import _run_weight_tiles
from ._winograd import run_winograd, strided_winograd_fits, winograd_fits
from ._winograd_grad import run_winograd_weight_grad, winograd_weight_fits


# ---------------------------------------------------------------------------------------------------
# conv2d's fast path: the same sum, reorganised so that the inner loop is long and reads memory little.
#
# 1. _phase_planes (nbops/cpu/_planes.py) copies the input once into zero-padded planes, split by
#    stride phase: padded position (r, col) goes to plane (c, r % sh, col % sw) at (r // sh, col // sw),
#    every plane Hq x Wq. Then the input that tap (k, m, l) of output (h, w) reads,
#        padded (h*sh + m*dh, w*sw + l*dw),
#    sits in one plane at flat index (h*Wq + w) + offset(k, m, l): one offset per tap, any stride or
#    dilation, and no bounds tests (padding is real zeros).
# 2. _conv2d_planes computes each output plane on the flat index q = h*Wq + w, w running over the whole
#    plane width Wq (columns w >= W_out are computed and thrown away), so a tap is one long
#    `dst[q] += weight * src[q + offset]` over several output rows at once, and four taps and four
#    output channels go through one loop (_taps4x4): each input value loaded feeds four channels and
#    each partial sum is loaded and stored once per four taps.
# 3. _conv2d_pixels, for small output planes (where the loops of 2. would be short), gathers each
#    pixel's inputs from the same planes once and takes dot products with the taps, four pixels and two
#    output channels at a time, the sums held in registers.
# 4. _conv2d_tiles computes the sum of 2. tile by tile: 12 output channels x 32 consecutive q (16 in float64)
#    held in registers over every tap (the tile12x32 intrinsic, nbops/cpu/_tile.py) and stored once;
#    output rows 7 or 14 wide (no thrown-away columns there) in row tiles of 7 positions x 64 channels,
#    28 wide too for kernels with padding; a stride-2 convolution whose output fits the row tiles reads
#    planes laid out without a stride, each position from twice its coordinates (no phase planes).
#    2. and 3. stay as the reference the tiles are tested against (with torch), in both dtypes.
#    The weight gradient likewise: _conv2d_weight_grad in plain loops, _conv2d_weight_tiles (both dtypes,
#    nbops/cpu/_weight_tiles.py) with 12 taps x 2L output channels in registers over the output positions.
# 5. 3x3 kernels at stride 1 with enough channels and output (winograd_fits) go through Winograd's
#    F(2x2, 3x3) instead (nbops/cpu/_winograd.py): 16 multiplications for each 2x2 block of outputs and
#    pair of channels, not 36, the sums over the input channels through the same register tiles; their
#    input gradients (a correlation with the kernel turned round) and conv_transpose2d at stride 1 too,
#    and their weight gradients from 64 channels (nbops/cpu/_winograd_grad.py, winograd_weight_fits);
#    with few channels each in one pass per panel of blocks, its transforms in L2. At stride 2 on outputs
#    of 14x14 and more (strided_winograd_fits), the forward goes through S2, its stride-2 twin (25
#    multiplications for a 2x2 block, not 36), and the input gradient and conv_transpose2d through its
#    transpose S2T (nbops/cpu/_winograd_transforms.py).
# 6. A transposed convolution whose kernel is its stride (2x2 at stride 2) has phases that do not
#    overlap: one 1x1 convolution computes all of them, then _interleave_phases puts them in place.
# 7. Depthwise convolutions (one channel per group: depthwise_fits) go through nbops/cpu/_depthwise.py,
#    the channels in the lanes of a vector (the tiles need 12 or more output channels per group).
# ---------------------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _tap_sources(src, offsets, t, n):
    """The inputs of taps t..t+3: src(offsets(t + i) + q) for q < n, as slices indexed from 0 (no
    wraparound test per element, so the loops that read them vectorise)."""
    o0, o1, o2, o3 = offsets[t], offsets[t + 1], offsets[t + 2], offsets[t + 3]
    return src[o0 : o0 + n], src[o1 : o1 + n], src[o2 : o2 + n], src[o3 : o3 + n]


@njit(cache=True, inline="always")
def _taps4x4(d0, d1, d2, d3, src, offsets, t, w0, w1, w2, w3):
    """d_c(q) += sum_i w_c(t + i) * src(offsets(t + i) + q) for four channels c and taps i = 0..3: each
    input value loaded feeds four output channels (what matters when the taps read different planes)."""
    s0, s1, s2, s3 = _tap_sources(src, offsets, t, d0.size)
    a0, a1, a2, a3 = w0[t], w0[t + 1], w0[t + 2], w0[t + 3]
    b0, b1, b2, b3 = w1[t], w1[t + 1], w1[t + 2], w1[t + 3]
    c0, c1, c2, c3 = w2[t], w2[t + 1], w2[t + 2], w2[t + 3]
    e0, e1, e2, e3 = w3[t], w3[t + 1], w3[t + 2], w3[t + 3]
    for q in range(d0.size):
        v0, v1, v2, v3 = s0[q], s1[q], s2[q], s3[q]
        d0[q] += (a0 * v0 + a1 * v1) + (a2 * v2 + a3 * v3)
        d1[q] += (b0 * v0 + b1 * v1) + (b2 * v2 + b3 * v3)
        d2[q] += (c0 * v0 + c1 * v1) + (c2 * v2 + c3 * v3)
        d3[q] += (e0 * v0 + e1 * v1) + (e2 * v2 + e3 * v3)


@njit(cache=True, inline="always")
def _taps4(d0, src, offsets, t, w0):
    """_taps4x4 for one channel."""
    s0, s1, s2, s3 = _tap_sources(src, offsets, t, d0.size)
    a0, a1, a2, a3 = w0[t], w0[t + 1], w0[t + 2], w0[t + 3]
    for q in range(d0.size):
        d0[q] += (a0 * s0[q] + a1 * s1[q]) + (a2 * s2[q] + a3 * s3[q])


CHANNEL_CHUNK = 16  # output channels per task (with the row blocks and samples: enough tasks)


@parallel_kernel(cache=True, fastmath={"contract"}, error_model="numpy")
def _conv2d_planes(xs, taps, offsets, group_size, groups, bias, out, plane_w, rows):
    """conv2d: out(N_i, C_out_j) = bias(C_out_j) + sum_{k=0}^{C_in/groups - 1} weight(C_out_j, k) * input(N_i, g * C_in/groups + k)

    where * is the 2-D cross-correlation and g the group of C_out_j; written out per output pixel:
    out(n, j, h, w) = bias(j) + sum_k sum_m sum_l weight(j, k, m, l)
                                 * input(n, g*C_in/groups + k, stride[0]*h - padding[0] + dilation[0]*m,
                                                               stride[1]*w - padding[1] + dilation[1]*l)
    with zero padding. In the phase planes xs of _phase_planes, with t = (k, m, l) flattened:

        out(n, j, h, w) = bias(j) + sum_t taps(j, t) * xs(n, g * group_size + offsets(t) + h*Wq + w)

    taps(j, t) = weight(j, k, m, l), offsets(t) the tap's place in its group's planes.
    A task is one sample, `rows` output rows and up to CHANNEL_CHUNK output channels; channels of one
    group go four at a time through _taps4x4 (one at a time through _taps4 where fewer are left), taps
    four at a time.
    """
    batch, out_channels, out_h, out_w = out.shape
    count = taps.shape[1]
    group_out = out_channels // groups
    blocks = (out_h + rows - 1) // rows
    chunks = (out_channels + CHANNEL_CHUNK - 1) // CHANNEL_CHUNK
    for task in prange(batch * blocks * chunks):
        n, b, channel_chunk = unravel3(task, blocks, chunks)
        j0 = channel_chunk * CHANNEL_CHUNK
        j1 = min(out_channels, j0 + CHANNEL_CHUNK)
        h0 = b * rows
        h1 = min(out_h, h0 + rows)
        size = (h1 - h0) * plane_w
        acc = np.empty((4, size), dtype=out.dtype)
        j = j0
        while j < j1:
            g = j // group_out
            src = xs[n, g * group_size + h0 * plane_w :]
            # four channels of the same group together when there are four left, else one at a time
            # (one more width, 2, would add a third copy of the loop to compile)
            width = 4 if (j + 3 < j1 and (j + 3) // group_out == g) else 1
            for c in range(width):
                for q in range(size):
                    acc[c, q] = 0.0
            full = count - count % 4
            if width == 4:
                for t in range(0, full, 4):
                    _taps4x4(acc[0], acc[1], acc[2], acc[3], src, offsets, t, taps[j], taps[j + 1], taps[j + 2], taps[j + 3])
            else:
                for t in range(0, full, 4):
                    _taps4(acc[0], src, offsets, t, taps[j])
            for c in range(width):
                d = acc[c]
                weights = taps[j + c]
                for t in range(full, count):  # the last count % 4 taps, one at a time
                    s = src[offsets[t] : offsets[t] + size]
                    for q in range(size):
                        d[q] += weights[t] * s[q]
                for h in range(h0, h1):
                    row = out[n, j + c, h]
                    part = d[(h - h0) * plane_w :]
                    for w in range(out_w):
                        row[w] = part[w] + bias[j + c]
            j += width


@parallel_kernel(cache=True, fastmath={"contract", "reassoc"}, error_model="numpy")
def _conv2d_pixels(xs, taps, offsets, group_size, groups, bias, out, plane_w):
    """conv2d as _conv2d_planes computes it (same phase planes, taps and offsets), organised the other
    way round for small planes: per block of four output pixels p = (h, w), the inputs of all taps are
    gathered once,

        cols(i, t) = xs(n, g * group_size + offsets(t) + h_i * Wq + w_i),

    and each output is a dot product over the taps, out(n, j, h_i, w_i) = bias(j) + sum_t taps(j, t) *
    cols(i, t), computed for four pixels and two output channels at once (_dots4x2): the eight sums run
    in vector lanes along t (`reassoc`), so they stay in registers for the whole reduction.
    """
    batch, out_channels, out_h, out_w = out.shape
    count = taps.shape[1]
    group_out = out_channels // groups
    pixels = out_h * out_w
    blocks = (pixels + 3) // 4
    for task in prange(batch * groups * blocks):
        n, g, pixel_block = unravel3(task, groups, blocks)
        p0 = pixel_block * 4
        cols = np.empty((4, count), dtype=out.dtype)
        zero = out.dtype.type(0.0)
        for i in range(4):
            p = min(p0 + i, pixels - 1)  # past the last pixel: a repeat, computed and not written
            h = p // out_w
            src = xs[n, g * group_size + h * plane_w + (p - h * out_w) :]
            for t in range(count):
                cols[i, t] = src[offsets[t]]
        for j in range(g * group_out, (g + 1) * group_out, 2):
            k = min(j + 1, (g + 1) * group_out - 1)  # an odd last channel pairs with itself
            sums = _dots4x2(cols[0], cols[1], cols[2], cols[3], taps[j], taps[k], zero)
            for i in range(min(4, pixels - p0)):
                h = (p0 + i) // out_w
                w = p0 + i - h * out_w
                out[n, j, h, w] = sums[2 * i] + bias[j]
                out[n, k, h, w] = sums[2 * i + 1] + bias[k]


@njit(cache=True, inline="always")
def _dots4x2(x0, x1, x2, x3, w0, w1, zero):
    """(x_i . w_c) for the four pixels i and two channels c, as (x0.w0, x0.w1, x1.w0, ..., x3.w1);
    `zero` is 0 in the data's dtype."""
    a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = zero
    for t in range(w0.size):
        v0, v1 = w0[t], w1[t]
        a00 += x0[t] * v0
        a01 += x0[t] * v1
        a10 += x1[t] * v0
        a11 += x1[t] * v1
        a20 += x2[t] * v0
        a21 += x2[t] * v1
        a30 += x3[t] * v0
        a31 += x3[t] * v1
    return a00, a01, a10, a11, a20, a21, a30, a31



# ---------------------------------------------------------------------------------------------------
# Gradients. The input gradient of conv2d is a transposed convolution of grad_output with the same
# weight, and that of conv_transpose2d a convolution: the backward drivers below run them through the
# kernels above. The weight gradient correlates the input with grad_output, here, in the phase planes.
# ---------------------------------------------------------------------------------------------------


WEIGHT_GRAD_BLOCK = 8  # output channels per task of _conv2d_weight_grad (their grad_output rows stay in cache)


@parallel_kernel(cache=True, fastmath={"contract", "reassoc"})
def _conv2d_weight_grad(xs, grad_rows, offsets, group_size, groups, grad_taps):
    """grad_weight(C_out_j, k, m, l) = sum_n sum_h sum_w grad_output(n, j, h, w)
                      * input(n, g*C_in/groups + k, stride[0]*h - padding[0] + dilation[0]*m,
                                                    stride[1]*w - padding[1] + dilation[1]*l)

    (g the group of C_out_j, zero padding). In the phase planes xs of _phase_planes, with t = (k, m, l)
    flattened, offsets(t) the tap's place in its group's planes, and grad_output laid out on the same
    flat index q = h*Wq + w as the planes (grad_rows(n, j, q), zero in the columns w >= W_out):

        grad_taps(j, t) = sum_n sum_q grad_rows(n, j, q) * xs(n, g * group_size + offsets(t) + q)

    one long dot product per (n, j, t). A task is a block of WEIGHT_GRAD_BLOCK channels of one group;
    per sample, the inputs of four taps meet the rows of two channels at a time (_dots4x2: eight sums in
    vector lanes, in the data's dtype, added to float64 totals per sample).
    """
    batch, out_channels, length = grad_rows.shape
    count = offsets.size
    group_out = out_channels // groups
    per_group = (group_out + WEIGHT_GRAD_BLOCK - 1) // WEIGHT_GRAD_BLOCK
    zero = grad_rows.dtype.type(0.0)
    for task in prange(groups * per_group):
        g = task // per_group
        j0 = g * group_out + (task - g * per_group) * WEIGHT_GRAD_BLOCK
        j1 = min(j0 + WEIGHT_GRAD_BLOCK, (g + 1) * group_out)
        total = np.zeros((j1 - j0, count))
        for n in range(batch):
            src = xs[n, g * group_size :]
            for t in range(0, count, 4):
                # four taps (the last quad repeats its last tap: computed, not added)
                o0, o1 = offsets[t], offsets[min(t + 1, count - 1)]
                o2, o3 = offsets[min(t + 2, count - 1)], offsets[min(t + 3, count - 1)]
                s0, s1 = src[o0 : o0 + length], src[o1 : o1 + length]
                s2, s3 = src[o2 : o2 + length], src[o3 : o3 + length]
                taps = min(4, count - t)
                for j in range(j0, j1, 2):
                    k = min(j + 1, j1 - 1)  # an odd last channel pairs with itself
                    sums = _dots4x2(s0, s1, s2, s3, grad_rows[n, j], grad_rows[n, k], zero)
                    for i in range(taps):
                        total[j - j0, t + i] += sums[2 * i]
                        if k != j:
                            total[k - j0, t + i] += sums[2 * i + 1]
        for j in range(j0, j1):
            for t in range(count):
                grad_taps[j, t] = total[j - j0, t]


@parallel_kernel(cache=True, fastmath={"contract", "reassoc"})
def _conv2d_weight_grad_rows(xs, grad_out, offsets, group_size, groups, plane_w, grad_taps):
    """_conv2d_weight_grad's sum over the output rows only, never touching a thrown-away column:

        grad_taps(j, t) = sum_n sum_h sum_{w < W_out} grad_output(n, j, h, w) * xs(n, g * group_size + offsets(t) + h*Wq + w)

    Slower (a short dot product per row); used when _conv2d_weight_grad's result is not finite, where a
    thrown-away column may have multiplied an infinite input by 0 (NaN) that the sum never includes.
    A task is one output channel.
    """
    batch, out_channels, out_h, out_w = grad_out.shape
    count = offsets.size
    group_out = out_channels // groups
    zero = grad_out.dtype.type(0.0)
    for j in prange(out_channels):
        g = j // group_out
        total = np.zeros(count)
        for n in range(batch):
            src = xs[n, g * group_size :]
            for h in range(out_h):
                dy = grad_out[n, j, h]
                for t in range(count):
                    start = offsets[t] + h * plane_w
                    s = src[start : start + out_w]
                    row = zero
                    for w in range(out_w):
                        row += dy[w] * s[w]
                    total[t] += row
        for t in range(count):
            grad_taps[j, t] = total[t]


@parallel_kernel(cache=True)
def _channel_sums(grad_out, sums):
    """sums(j) = sum_n sum_l grad_output(n, j, l) over an (N, C, L) array, in float64: the gradient of
    a per-channel bias (one task per channel)."""
    batch, channels, length = grad_out.shape
    for j in prange(channels):
        total = 0.0
        for n in range(batch):
            row = grad_out[n, j]
            for l in range(length):
                total += row[l]
        sums[j] = total


# ------------------------------------------------------------------------------------------- drivers
# What the front calls: run_conv2d, run_conv_transpose2d and their backward passes, on checked 4-D
# NumPy arrays and normalised sizes. The input gradient of a convolution is a transposed convolution of
# grad_output with the same weight, and that of a transposed convolution a convolution, as the
# formulas say: both go through the same phase-plane kernels.


def run_conv2d(x4, w, b, strides, before, after, dilations, groups, out_hw):
    """out (N, C_out, H_out, W_out) = conv2d of x4 (N, C_in, H, W) with weight w (C_out, C_in / groups,
    kH, kW) and bias b (C_out, or None), zero padding `before` (top, left) and `after` (bottom, right)."""
    batch, _, height, width = x4.shape
    out = np.empty((batch, w.shape[0]) + tuple(out_hw), dtype=x4.dtype)
    if out.size:
        padded = (height + before[0] + after[0], width + before[1] + after[1])
        bias = np.zeros(w.shape[0], dtype=x4.dtype) if b is None else b
        _conv2d_fast(x4, w, bias, out, strides, before, padded, dilations, groups)
    return out


def _conv_work(outputs: int, taps: int) -> int:
    """A convolution's work in the units of the kernels' serial/parallel choice (elements of an
    element-wise op, see nbops/cpu/_parallel.py): outputs x taps multiply-adds, of which one core does
    about 32 in the time it takes to stream one element through memory."""
    return outputs * taps // 32


def _conv2d_fast(x4, w, b, out, strides, before, padded, dilations, groups):
    """Run conv2d through the phase planes (see the top of this file): lay out the input, list each tap's
    offset in its group's planes, and pick the kernel: register tiles (TILED), else by the size of an
    output plane. w: an array, or _Taps."""
    out_channels = w.shape[0]
    out_h = out.shape[2]
    if TILED and depthwise_fits(groups, w.shape[1], out_channels // groups, x4.shape, out.shape) and not isinstance(w, _Taps) and out.flags.c_contiguous:
        run_depthwise(contiguous(x4), contiguous(w), contiguous(b), out, strides, before, dilations)  # (nbops/cpu/_depthwise.py)
        return
    shape = (w.shape[2:], strides, dilations, groups, x4.shape[0], x4.shape[1], out_channels, out.shape[2:])
    if TILED and not isinstance(w, _Taps) and (winograd_fits(*shape) or strided_winograd_fits(*shape)):
        # (3x3 at stride 1 or 2: nbops/cpu/_winograd.py; where that met an infinity, the direct sum)
        if run_winograd(x4, w, b, out, before, stride=strides[0]):
            return
    pointwise = _pointwise(x4, w.shape, strides, before, out.shape[2:])
    if pointwise is not None:
        x4, strides, before, padded = pointwise
    stride, rows_read = 1, out_h
    if TILED and STRIDED_ROWS and tuple(strides) == (2, 2) and row_tiles_fit(out.shape[3], padded[1], out_channels // groups, out.itemsize):
        # stride 2 through the row tiles: planes without a stride (a padded copy), each output position
        # reading from twice its coordinates, where the four phase planes cost 1.2-1.5x a copy
        strides, stride, rows_read = (1, 1), 2, 2 * out_h
    # (the plain loops are laid out as for the 12 x 32 tiles)
    over_read = tiles_over_read(out.shape[3], -(-padded[1] // strides[1]), out_channels // groups, out.itemsize) if TILED else TILE_COLUMNS
    xs, offsets, group_size, plane_w, last = _phase_layout(x4, w.shape, rows_read, strides, before, padded, dilations, groups, over_read, tail=TILED)
    # taps in the order of their offsets: with a stride, the taps reading one phase plane come together,
    # so the four taps of an inner loop read neighbouring memory (the same sum, in another order)
    order = np.argsort(offsets, kind="stable")
    offsets = offsets[order]
    count = order.size
    work = _conv_work(out.size, count)
    if TILED and count:  # (tile12x32 needs a tap)
        if isinstance(w, _Taps):
            flat, channel_base, tap_index = w.flat, w.channel_base, w.tap_index[order]
        else:
            flat, channel_base, tap_index = w, np.arange(out_channels, dtype=np.int64) * count, order
        _run_tiles(xs, flat, channel_base, tap_index, offsets, group_size, groups, b, out, plane_w, work, last, stride)
        return
    if isinstance(w, _Taps):
        w = w.dense()
    taps = contiguous(w.reshape(out_channels, -1)[:, order])
    rows = max(1, -(-1024 // plane_w))  # about 1024 outputs per inner loop of _conv2d_planes
    if out_h * plane_w <= SMALL_PLANE:  # short loops for _conv2d_planes: gather and dot products instead
        _conv2d_pixels.pick(work)(xs, taps, offsets, group_size, groups, contiguous(b), out, plane_w)
    else:
        _conv2d_planes.pick(work)(xs, taps, offsets, group_size, groups, contiguous(b), out, plane_w, rows)


# convolutions go through the register tiles (False: through _conv2d_planes / _conv2d_pixels and
# _conv2d_weight_grad, the plain loops; the tests run both)
TILED = True
STRIDED_ROWS = True  # stride-2 convolutions through the row tiles where those fit (False: phase planes)


# Output planes of at most this many values (H_out x padded width) go through _conv2d_pixels: measured on
# 16x256x14x14 3x3 (224 values), 48 ms against 55-73 ms through _conv2d_planes; at 28x28 (840 values)
# and above _conv2d_planes is as fast or faster.
SMALL_PLANE = 512


def run_conv_transpose2d(x4, w, b, strides, pads, dilations, groups, out_hw):
    """out (N, C_out, H_out, W_out) = conv_transpose2d of x4 (N, C_in, H, W) with weight w (C_in,
    C_out / groups, kH, kW) and bias b (C_out, or None); out_hw includes output_padding."""
    out_channels = w.shape[1] * groups
    out = np.empty((x4.shape[0], out_channels) + tuple(out_hw), dtype=x4.dtype)
    if out.size:
        bias = np.zeros(out_channels, dtype=x4.dtype) if b is None else b
        _conv_transpose2d_fast(x4, w, bias, out, strides, pads, dilations, groups)
    return out


def _conv_transpose2d_fast(x4, w, b, out, strides, pads, dilations, groups):
    """conv_transpose2d as stride**2 small convolutions, one per output phase, through conv2d's phase
    planes.

    out(n, j, s*h - p + d*m, ...) += input(n, i, h, ...) * weight(i, j', m, ...): the output rows
    oh = s*h' + a of phase a receive tap m only when (a + p - d*m) is a multiple of s, and then from
    input row h' + (a + p - d*m) // s. So each phase (a, b) is a stride-1 correlation of the zero-padded
    input with its own taps at their own offsets, written to out[..., a::s, b::s].
    """
    sh, sw = strides
    out_channels = w.shape[1] * groups
    in_h, in_w = x4.shape[2:]
    if TILED and depthwise_fits(groups, w.shape[0] // groups, w.shape[1], x4.shape, out.shape) and out.flags.c_contiguous:
        run_depthwise_transposed(contiguous(x4), contiguous(w), contiguous(b), out, strides, pads, dilations)
        return
    if TILED and tuple(w.shape[2:]) == (sh, sw) > (1, 1) and tuple(pads) == (0, 0) and tuple(dilations) == (1, 1) and groups == 1 and out.shape[2] >= sh * in_h and out.shape[3] >= sw * in_w:
        # kernel = stride (2x2 at stride 2, a decoder's upsampling): the phases do not overlap and each
        # is a 1x1 convolution with its own taps, so all of them are one, with sh*sw*C_out outputs
        # (1.05-1.12x the four phases' tiles on 16x128x28x28 -> 64, 1.29-1.39x on 16x64x56x56 -> 32), then
        # put in their places
        # (into a buffer kept per thread: a fresh one and out together were page-faulted on every call)
        taps = contiguous(w.transpose(2, 3, 1, 0)).reshape(sh * sw * out_channels, w.shape[0], 1, 1)
        y = _reused("phases", (x4.shape[0], taps.shape[0], in_h, in_w), out.dtype)
        _conv2d_fast(x4, taps, np.zeros(taps.shape[0], dtype=out.dtype), y, (1, 1), (0, 0), (in_h, in_w), (1, 1), 1)
        _interleave_phases(y, contiguous(b), sh, sw, out)
        return
    fits = winograd_fits(w.shape[2:], strides, dilations, groups, x4.shape[0], x4.shape[1], out_channels, out.shape[2:])
    if TILED and fits and max(pads) <= 2:  # (a correlation with the kernel turned, padded by 2 - padding)
        if run_winograd(x4, w, b, out, (2 - pads[0], 2 - pads[1]), turned=True):
            return
    # 3x3 at stride 2 (conv2d's input gradient too): S2T, S2's transposed twin, where the padding has
    # one parity (measured against the phases below: 1.2-1.7x where the input is 14x14 or more, 0.8-0.9x
    # on 7x7, as S2)
    strided = strided_winograd_fits(w.shape[2:], strides, dilations, groups, x4.shape[0], x4.shape[1], out_channels, x4.shape[2:])
    if TILED and strided and pads[0] % 2 == pads[1] % 2 and run_winograd(x4, w, b, out, pads, turned=True, stride=2):
        return
    top, left, plane_h, plane_w, group_size, channel_base, phases, slack = _transpose_plan(
        tuple(strides), tuple(pads), tuple(dilations), groups, w.shape, x4.shape[2:], out.shape[2:]
    )
    xs = _phase_planes(contiguous(x4), top, left, 1, 1, plane_h, plane_w, slack)
    rows = max(1, -(-1024 // plane_w))
    bias = contiguous(b)
    for a, c, offsets, tap_index, sorted_offsets, sorted_index in phases:
        part = out[:, :, a::sh, c::sw]
        if part.size == 0:
            continue
        work = _conv_work(part.size, offsets.size)
        if TILED and offsets.size:  # (the tiles write the strided part in place; taps in offset order)
            _run_tiles(xs, w, channel_base, sorted_index, sorted_offsets, group_size, groups, bias, part, plane_w, work)
        elif TILED:  # no tap reaches this phase: the bias
            part[...] = bias.reshape(1, -1, 1, 1)
        else:
            taps = _Taps(w.reshape(-1), (out_channels, tap_index.size), channel_base, tap_index).dense()
            result = np.empty(part.shape, dtype=out.dtype)
            _conv2d_planes.pick(work)(xs, taps, offsets, group_size, groups, bias, result, plane_w, rows)
            part[...] = result


def _weight_grad(source4, grad4, weight_shape, rows, strides, before, padded, dilations, groups):
    """grad_weight(j, k, m, l) = sum_n sum_h sum_w grad4(n, j, h, w) * padded source4(n, g*K + k,
    stride*h + dilation*m - before, ...) for h < rows, through the phase planes (_conv2d_weight_grad)."""
    out_channels = grad4.shape[1]
    grad = np.empty((out_channels, math.prod(weight_shape[1:])), dtype=grad4.dtype)
    if grad4.shape[0] == 0 or grad4.shape[2] == 0 or grad4.shape[3] == 0:
        grad[...] = 0
    elif TILED and depthwise_fits(groups, weight_shape[1], out_channels // groups, source4.shape, grad4.shape):  # (nbops/cpu/_depthwise.py)
        return run_depthwise_weight_grad(contiguous(source4), contiguous(grad4), weight_shape, rows, strides, before, dilations)
    else:
        batch, channels, out_h, out_w = grad4.shape
        fits = winograd_weight_fits(weight_shape[2:], strides, dilations, groups, batch, source4.shape[1], out_channels, (out_h, out_w))
        if TILED and fits and rows == out_h:  # (3x3 at stride 1: F(2x2, 3x3), nbops/cpu/_winograd_grad.py)
            winograd = run_winograd_weight_grad(source4, grad4, before)
            if winograd is not None:  # (else an infinity met the transforms' differences: as below)
                return winograd.reshape(weight_shape)
        pointwise = _pointwise(source4, weight_shape, strides, before, (rows, out_w))
        if pointwise is not None:
            source4, strides, before, padded = pointwise
        in_place = weight_shape[2:] == (1, 1) and tuple(strides) == (1, 1) and tuple(before) == (0, 0) and tuple(padded) == (rows, out_w)
        if TILED and in_place and groups == 1 and out_channels > weight_shape[1] and rows * out_w >= 196:
            # a 1x1 kernel's gradient is a matrix product, grad (C_out, C_in) = grad_output (C_out, N*H*W)
            # x input^T, and the tiles lay out their vector operand in blocks of channels: here the input,
            # the smaller one (an expanding layer's), with grad_output read in place (64->256 on 56x56:
            # the blocks of grad_output took 1.5 ms of 5.3; 1.1-1.5x on ResNet-50's expanding layers
            # from 14x14 outputs up, 0.75x at 7x7)
            spread = contiguous(grad4[:, :, :rows]).reshape(batch, -1)
            offsets = np.arange(out_channels, dtype=np.int64) * (rows * out_w)
            _run_weight_tiles(spread, source4, offsets, spread.shape[1], 1, out_w, grad.T, True)  # (written turned)
            return grad.reshape(weight_shape)
        # (both kernels read the planes only where the rows reach: no slack)
        stride, rows_read = 1, rows
        if TILED and STRIDED_ROWS and tuple(strides) == (2, 2):
            # the tiles read a stride-2 convolution's input from planes without the stride, as the
            # forward's row tiles do
            strides, stride, rows_read = (1, 1), 2, 2 * rows
        xs, offsets, group_size, plane_w, _ = _phase_layout(source4, weight_shape, rows_read, strides, before, padded, dilations, groups, 0)
        if TILED:  # (over the output's own positions only: exact as it is)
            _run_weight_tiles(xs, contiguous(grad4[:, :, :rows]), offsets, group_size, groups, plane_w, grad, weight_shape[2:] == (1, 1), stride)
        else:
            # grad_output on the planes' flat index h * Wq + w (zeros in the columns past W_out): each
            # (sample, channel, tap) is then one long dot product
            grad_rows = np.zeros((batch, channels, rows, plane_w), dtype=grad4.dtype)
            grad_rows[:, :, :out_h, :out_w] = grad4[:, :, :rows]
            work = _conv_work(grad.size, batch * rows * plane_w)
            _conv2d_weight_grad.pick(work)(xs, grad_rows.reshape(batch, channels, -1), offsets, group_size, groups, grad)
            if not np.isfinite(grad).all():  # an inf input may have met a thrown-away column's 0: sum exactly
                _conv2d_weight_grad_rows(xs, contiguous(grad4[:, :, :rows]), offsets, group_size, groups, plane_w, grad)
    return grad.reshape(weight_shape)


def _bias_grad(grad4: np.ndarray) -> np.ndarray:
    """grad_bias(j) = sum_n sum_h sum_w grad_output(n, j, h, w)."""
    batch, channels = grad4.shape[:2]
    sums = np.zeros(channels)
    if grad4.size:
        _channel_sums(grad4.reshape(batch, channels, -1), sums)
    return sums.astype(grad4.dtype)


def run_conv2d_backward(grad_output, x4, w, strides, before, after, dilations, groups, needs=(True, True, True)):
    """(grad_input, grad_weight, grad_bias) of conv2d, each only where `needs` says so (None otherwise);
    grad_output (N, C_out, H_out, W_out), the other arguments run_conv2d's.

    grad_input(n, i) = sum_j weight(j, i') (*T) grad_output(n, j): the transposed convolution with the
    same stride, dilation and groups, computed over the padded input and cropped to it; with stride 1,
    the same sum as a convolution of the padded grad_output with the kernel turned round.
    """
    x4, gy, w = contiguous(x4), contiguous(grad_output), contiguous(w)
    batch, in_channels, height, width = x4.shape
    padded = (height + before[0] + after[0], width + before[1] + after[1])
    out_h, out_w = gy.shape[2], gy.shape[3]
    grad_input = grad_weight = grad_bias = None
    if needs[0]:
        kh, kw = w.shape[2], w.shape[3]
        extent = (dilations[0] * (kh - 1), dilations[1] * (kw - 1))
        zeros = np.zeros(in_channels, dtype=x4.dtype)
        if not gy.size:
            grad_input = np.zeros(x4.shape, dtype=x4.dtype)
        elif TILED and depthwise_fits(groups, w.shape[1], w.shape[0] // groups, x4.shape, gy.shape):  # (nbops/cpu/_depthwise.py)
            grad_input = np.empty(x4.shape, dtype=x4.dtype)
            run_depthwise_transposed(gy, w, zeros, grad_input, strides, before, dilations)
        elif strides == (1, 1) and max(before[0], after[0]) <= extent[0] and max(before[1], after[1]) <= extent[1]:
            # stride 1: a plain correlation of grad_output, padded by extent - padding, with the kernel
            # turned round and input and output channels swapped in each group
            grad_input = np.empty(x4.shape, dtype=x4.dtype)
            pads = (extent[0] - before[0], extent[1] - before[1])
            around = (out_h + 2 * extent[0] - before[0] - after[0], out_w + 2 * extent[1] - before[1] - after[1])
            fits = TILED and winograd_fits(w.shape[2:], strides, dilations, groups, batch, w.shape[0], in_channels, (height, width))
            if not (fits and run_winograd(gy, w, zeros, grad_input, pads, turned=True)):  # (a NaN: as below)
                _conv2d_fast(gy, _turned(w, groups), zeros, grad_input, (1, 1), pads, around, dilations, groups)
        elif _pointwise(x4, w.shape, strides, before, (out_h, out_w)) is not None:
            # a 1x1 kernel with a stride: the input positions it read get the stride-1 gradient (a 1x1
            # convolution of grad_output), the others none
            grad_input = np.empty(x4.shape, dtype=x4.dtype)
            read = _reused("read", (batch, in_channels, out_h, out_w), x4.dtype)
            _conv2d_fast(gy, _turned(w, groups), zeros, read, (1, 1), (0, 0), (out_h, out_w), dilations, groups)
            _strided_into(read, strides[0], strides[1], grad_input)
        else:  # the transposed convolution with the same stride, its padding `before` cropped off the
            # top and left (as conv_transpose2d's padding does) and its output the input's size
            grad_input = np.empty(x4.shape, dtype=x4.dtype)
            _conv_transpose2d_fast(gy, w, zeros, grad_input, strides, before, dilations, groups)
    if needs[1]:
        grad_weight = _weight_grad(x4, gy, w.shape, out_h, strides, before, padded, dilations, groups)
    if len(needs) > 2 and needs[2]:
        grad_bias = _bias_grad(gy)
    return grad_input, grad_weight, grad_bias


def run_conv_transpose2d_backward(grad_output, x4, w, strides, pads, dilations, groups, needs=(True, True, True)):
    """(grad_input, grad_weight, grad_bias) of conv_transpose2d, each only where `needs` says so (None
    otherwise); grad_output (N, C_out, H_out, W_out), the other arguments run_conv_transpose2d's.

    grad_input = conv2d(grad_output, weight, stride, padding, dilation, groups), its first H x W;
    grad_weight(i, j', m, l) = sum_n sum_h sum_w input(n, i, h, w)
                               * grad_output(n, g*C_out/groups + j', stride*h - padding + dilation*m, ...).
    """
    x4, gy, w = contiguous(x4), contiguous(grad_output), contiguous(w)
    batch, in_channels, height, width = x4.shape
    padded = (gy.shape[2] + 2 * pads[0], gy.shape[3] + 2 * pads[1])
    grad_input = grad_weight = grad_bias = None
    if needs[0]:
        grad_input = np.zeros(x4.shape, dtype=x4.dtype)
        if grad_input.size:
            _conv2d_fast(gy, w, np.zeros(in_channels, dtype=x4.dtype), grad_input, strides, pads, padded, dilations, groups)
    if needs[1]:
        grad_weight = _weight_grad(gy, x4, w.shape, height, strides, pads, padded, dilations, groups)
    if len(needs) > 2 and needs[2]:
        grad_bias = _bias_grad(gy)
    return grad_input, grad_weight, grad_bias
