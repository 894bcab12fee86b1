"""Depthwise convolutions (groups = C_in = C_out: MobileNet's, EfficientNet's and ConvNeXt's depthwise
layers), forward, input gradient, weight gradient and the transposed convolution, with the channels
in the lanes of a vector. conv.py's register tiles need 12 or 4L output channels per group: a
depthwise layer filled 1 of 4 rows of its smallest tile and ran at 0.2-0.6x torch, and rows of 7-28
positions were too short for vectors along them. Here a task takes L channels of one sample (L = 16
lanes of float32, 8 of float64), transposes their planes into a block whose every position holds the
L channels side by side (padded with zeros around, transpose_lanes), and each output position is one
vector, summed over the taps in a register:

    out(n, c, h, w) = bias(c) + sum_m sum_l weight(c, 0, m, l) * x(n, c, h*sh + m*dh - top, w*sw + l*dw - left)

    block X (rows x cols x L, zeros outside x):  X((r + top) * cols + (col + left), lane i) = x(n, c0 + i, r, col)
    dw_row: out(h, w, :) = bias(:) + sum_t weight(t, :) * X(h*sh*cols + w*sw + offset(t), :),
            offset(m, l) = m*dh*cols + l*dw,  four positions at a time (four chains of multiply-adds)
    dw_window (sw = dw): the same sums, four positions and a kernel row's taps reading a window of
            4 + kW - 1 vectors of X, each loaded once (the window slides a vector a tap)

then transposes the output block back. The input gradient is conv_transpose2d,

    grad_x(n, c, h*sh - top + m*dh, w*sw - left + l*dw) += weight(c, 0, m, l) * grad_out(n, c, h, w),

gathered output phase by output phase (rows a, a + sh, ... take tap m only where a + top - m*dh is a
multiple of sh, from grad_out's row i + (a + top - m*dh) / sh: the same dw_row, with that phase's taps,
writing every sw-th position); the weight gradient,

    grad_weight(c, 0, m, l) = sum_n sum_h sum_w grad_out(n, c, h, w) * x(n, c, h*sh + m*dh - top, w*sw + l*dw - left),

sums products of the two blocks (dw_dots), a task per L channels over every sample. Each output is
summed in the formula's order of taps; the tests compare these with torch and with conv.py's plain
loops.
"""

import functools

import numpy as np
from numba import get_thread_id, njit, prange, types
from numba.extending import intrinsic

from ._lanes import _Lanes, _thread_rows, float_arrays, intrinsic_arguments, transpose_lanes
from ._parallel import parallel_kernel
from ._planes import phase_taps

DEPTHWISE = True  # depthwise convolutions through these kernels (False: conv.py's tiles)
DEPTHWISE_AREA = 1 << 16  # largest plane (positions) for this module (its blocks: 64 bytes a position)
WINDOW = True  # the forward through dw_window where the stride along the rows equals the dilation
# (1.00-1.22x dw_row on 3x3 to 7x7 layers; conv_transpose2d's phases through it: 0.93-1.05x, not kept)
POSITIONS = 4  # output positions per step of dw_row, dw_window and dw_dots (independent chains of multiply-adds; 8: 0.7-1.0x)


def depthwise_fits(groups, group_in, group_out, in_shape, out_shape):
    """Whether a grouped convolution goes through this module: one input and one output channel per
    group, more than one group, and input and output planes (of the 4-D shapes) of at most
    DEPTHWISE_AREA positions, whose blocks stay in L2 (256x256 and less; larger ones go through
    conv.py's tiles, as correct and slower)."""
    area = max(in_shape[2] * in_shape[3], out_shape[2] * out_shape[3])
    return DEPTHWISE and groups > 1 and group_in == group_out == 1 and area <= DEPTHWISE_AREA


@intrinsic
def dw_row(typingctx, X, xbase, xstep, offsets, ntaps, weights, wbase, init, ibase, out, ostart, ostep, count):
    """out(ostart + p*ostep + i) = init(ibase + i) + sum_{t < ntaps} weights(wbase + t*L + i) *
    X(xbase + p*xstep + offsets(t) + i) for the L lanes i and p < count (>= 1): POSITIONS positions at a
    time, each sum in a register over the taps (the last group's positions past count repeat the last
    one)."""
    if not float_arrays((X, weights, init, out)) or not isinstance(offsets, types.Array) or offsets.dtype != types.int64:
        return None
    signature = types.void(X, xbase, xstep, offsets, ntaps, weights, wbase, init, ibase, out, ostart, ostep, count)

    def codegen(context, builder, signature, args):
        X_p, xbase, xstep, offsets_p, ntaps, w_p, wbase, init_p, ibase, out_p, ostart, ostep, count = intrinsic_arguments(context, builder, signature, args)
        v, b = _Lanes(builder, signature.args[0].dtype), builder
        start = b.load(v.at(init_p, ibase), align=v.size)
        last = b.sub(count, v.const(1))

        def group(p, _):
            spots = [b.select(b.icmp_signed("<", b.add(p, v.const(k)), count), b.add(p, v.const(k)), last) for k in range(POSITIONS)]
            bases = [b.add(xbase, b.mul(spot, xstep)) for spot in spots]

            def tap(t, sums):
                offset = b.load(b.gep(offsets_p, [t]))
                weight = b.load(v.at(w_p, b.add(wbase, b.mul(t, v.const(v.lanes)))), align=v.size)
                return [v.fma(weight, b.load(v.at(X_p, b.add(base, offset)), align=v.size), s) for base, s in zip(bases, sums)]

            sums = [start] * POSITIONS
            with b.if_else(b.icmp_signed(">", ntaps, v.const(0))) as (some, none):
                with some:
                    summed = v.loop(ntaps, 1, tap, sums, "dw_row.tap")
                    some_block = b.basic_block
                with none:
                    none_block = b.basic_block
            totals = []
            for k in range(POSITIONS):
                phi = b.phi(v.vector)
                phi.add_incoming(summed[k], some_block)
                phi.add_incoming(start, none_block)
                totals.append(phi)
            for spot, total in zip(spots, totals):
                b.store(total, v.at(out_p, b.add(ostart, b.mul(spot, ostep))), align=v.size)
            return []

        v.loop(count, POSITIONS, group, (), "dw_row.group")
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def dw_window(typingctx, X, xbase, xstep, rows_at, nrows, ncols, weights, wbase, init, ibase, out, ostart, ostep, count):
    """dw_row for taps in nrows rows of ncols (>= 1 each) whose inputs lie xstep apart along a row, as
    the positions do (a stride equal to the dilation: 1 and 1): tap (r, c) of position p reads
    X(xbase + rows_at(r) + (p + c)*xstep), so POSITIONS neighbouring positions and a row's taps read
    a window of POSITIONS + ncols - 1 vectors, each loaded once (the window slides a vector a tap):
    two loads a tap (the weight and the window's next vector) for POSITIONS multiply-adds, where dw_row
    loads POSITIONS + 1. Outputs out(ostart + p*ostep + i) for p < count (>= 1); the last group's positions
    past count are computed and not stored (their window reads up to POSITIONS vectors past the row:
    the caller leaves that slack)."""
    if not float_arrays((X, weights, init, out)) or not isinstance(rows_at, types.Array) or rows_at.dtype != types.int64:
        return None
    signature = types.void(X, xbase, xstep, rows_at, nrows, ncols, weights, wbase, init, ibase, out, ostart, ostep, count)

    def codegen(context, builder, signature, args):
        X_p, xbase, xstep, rows_p, nrows, ncols, w_p, wbase, init_p, ibase, out_p, ostart, ostep, count = intrinsic_arguments(context, builder, signature, args)
        v, b = _Lanes(builder, signature.args[0].dtype), builder
        start = b.load(v.at(init_p, ibase), align=v.size)
        load = lambda at: b.load(v.at(X_p, at), align=v.size)  # noqa: E731

        def group(p, _):
            first = b.add(xbase, b.mul(p, xstep))

            def row(r, sums):
                at = b.add(first, b.load(b.gep(rows_p, [r])))
                window = [load(b.add(at, b.mul(v.const(k), xstep))) for k in range(POSITIONS)]
                taps = b.add(wbase, b.mul(b.mul(r, ncols), v.const(v.lanes)))

                def column(c, carried):
                    sums, window = carried[:POSITIONS], carried[POSITIONS:]
                    weight = b.load(v.at(w_p, b.add(taps, b.mul(c, v.const(v.lanes)))), align=v.size)
                    updated = [v.fma(weight, window[k], sums[k]) for k in range(POSITIONS)]
                    following = load(b.add(at, b.mul(b.add(c, v.const(POSITIONS)), xstep)))
                    return updated + window[1:] + [following]

                return v.loop(ncols, 1, column, list(sums) + window, "dw_window.column")[:POSITIONS]

            sums = v.loop(nrows, 1, row, [start] * POSITIONS, "dw_window.row")
            for k in range(POSITIONS):
                with b.if_then(b.icmp_signed("<", b.add(p, v.const(k)), count)):
                    b.store(sums[k], v.at(out_p, b.add(ostart, b.mul(b.add(p, v.const(k)), ostep))), align=v.size)
            return []

        v.loop(count, POSITIONS, group, (), "dw_window.group")
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def dw_dots(typingctx, D, dstart, dstep, X, xbase, xstep, offsets, ntaps, count, acc):
    """acc(t*L + i) += sum_{p < count} D(dstart + p*dstep + i) * X(xbase + p*xstep + offsets(t) + i) for
    the L lanes i and taps t < ntaps (>= 1; count >= 1): for each tap, POSITIONS partial sums over the
    positions (masked past count), added together and to acc."""
    if not float_arrays((D, X, acc)) or not isinstance(offsets, types.Array) or offsets.dtype != types.int64:
        return None
    signature = types.void(D, dstart, dstep, X, xbase, xstep, offsets, ntaps, count, acc)

    def codegen(context, builder, signature, args):
        D_p, dstart, dstep, X_p, xbase, xstep, offsets_p, ntaps, count, acc_p = intrinsic_arguments(context, builder, signature, args)
        v, b = _Lanes(builder, signature.args[0].dtype), builder

        def tap(t, _):
            offset = b.load(b.gep(offsets_p, [t]))

            def group(p, sums):
                updated = []
                for k, s in enumerate(sums):
                    spot = b.add(p, v.const(k))
                    inside = b.icmp_signed("<", spot, count)
                    spot = b.select(inside, spot, v.const(0))
                    d = b.load(v.at(D_p, b.add(dstart, b.mul(spot, dstep))), align=v.size)
                    x = b.load(v.at(X_p, b.add(b.add(xbase, b.mul(spot, xstep)), offset)), align=v.size)
                    updated.append(b.select(inside, v.fma(d, x, s), s))
                return updated

            sums = v.loop(count, POSITIONS, group, [v.zero] * POSITIONS, "dw_dots.group")
            total = sums[0]
            for s in sums[1:]:
                total = b.fadd(total, s)
            v.add_to(acc_p, b.mul(t, v.const(v.lanes)), total)
            return []

        v.loop(ntaps, 1, tap, (), "dw_dots.tap")
        return context.get_dummy_value()

    return signature, codegen


@njit(cache=True, inline="always")
def _block_in(src, plane, size, width, rows, channels, X, start, cols):
    """X(start + (r * cols + col) * L + i) = src(plane + i * size + r * width + col) for rows r < `rows`,
    columns col < width and channels i < `channels` (<= L): L planes (`size` apart) into a block, L
    positions of a row at a time transposed in registers (lanes i >= channels are not written)."""
    lanes = 64 // X.itemsize
    for r in range(rows):
        for w0 in range(0, width, lanes):
            transpose_lanes(src, plane + r * width + w0, size, X, start + (r * cols + w0) * lanes, lanes, channels, min(lanes, width - w0))


@njit(cache=True, inline="always")
def _block_out(B, dst, plane, size, positions, channels):
    """dst(plane + i * size + p) = B(p * L + i) for positions p < `positions` and channels i < `channels`:
    a block back into L planes, L positions at a time."""
    lanes = 64 // B.itemsize
    for p0 in range(0, positions, lanes):
        transpose_lanes(B, p0 * lanes, lanes, dst, plane + p0, size, min(lanes, positions - p0), channels)


@njit(cache=True, inline="always")
def _task_block(x, task, scratch, span, top, left, cols):
    """(n, cb, valid, X, B) for task (sample n, block cb of L channels, `valid` of them in x): X, the
    first `span` values of this thread's row of scratch, takes x's planes (_block_in, padded by (top,
    left) into rows of `cols` positions); B is the rest of the row."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    lanes = 64 // x.itemsize
    blocks = (channels + lanes - 1) // lanes
    n = task // blocks
    cb = task - n * blocks
    valid = min(lanes, channels - cb * lanes)
    row = scratch[get_thread_id()]
    X, B = row[:span], row[span:]
    _block_in(x.reshape(-1), (n * channels + cb * lanes) * height * width, height * width, width, height, valid, X, (top * cols + left) * lanes, cols)
    return n, cb, valid, X, B


@parallel_kernel(cache=True)
def _depthwise_conv(x, taps, bias, out, offsets, sh, sw, top, left, rows, cols, scratch, rows_at, kw):
    """out = conv2d(x, weight) + bias (the formula at the top of this file), x and out (N, C, H, W)
    contiguous; taps(b, t * L + i) = weight(b*L + i, 0, m, l) and bias likewise in blocks of L channels,
    offsets(t) = (m*dh*cols + l*dw) * L for t = m * kW + l; scratch a row per thread whose block X (rows x
    cols positions) holds zeros where x does not reach. A task is one sample and block of L channels:
    x into X, each output row through dw_window (rows_at: each kernel row's first offset, where the
    stride along the rows equals the dilation; kw taps a row) or else dw_row into the output block,
    the block into out."""
    channels, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
    lanes = 64 // x.itemsize
    dst = out.reshape(-1)
    for task in prange(x.shape[0] * -(-channels // lanes)):
        n, cb, valid, X, B = _task_block(x, task, scratch, rows * cols * lanes, top, left, cols)
        for h in range(out_h):
            if rows_at.size:  # (stride = dilation along the rows)
                dw_window(X, h * sh * cols * lanes, sw * lanes, rows_at, rows_at.size, kw, taps[cb], 0, bias, cb * lanes, B, h * out_w * lanes, lanes, out_w)
            else:
                dw_row(X, h * sh * cols * lanes, sw * lanes, offsets, offsets.size, taps[cb], 0, bias, cb * lanes, B, h * out_w * lanes, lanes, out_w)
        _block_out(B, dst, (n * channels + cb * lanes) * out_h * out_w, out_h * out_w, out_h * out_w, valid)


@parallel_kernel(cache=True)
def _depthwise_transposed(x, taps, bias, out, phase_taps, offsets, sh, sw, top, left, rows, cols, scratch):
    """out = conv_transpose2d(x, weight) + bias (the formula at the top of this file: grad_out there is
    x here), taps(b, t * L + i) the weights of channel b*L + i with each output phase's taps together
    (_gather_plan's order); phase p = a * sw + b (output rows a, a + sh, ..., columns b, b + sw, ...)
    takes taps phase_taps(p) .. phase_taps(p + 1) - 1, their places offsets(same) relative to its
    position in the block X of x padded by (top, left) into rows x cols. A task is one sample and block
    of L channels, as _depthwise_conv's."""
    out_h, out_w = out.shape[2], out.shape[3]
    lanes = 64 // x.itemsize
    for task in prange(x.shape[0] * -(-x.shape[1] // lanes)):
        n, cb, valid, X, B = _task_block(x, task, scratch, rows * cols * lanes, top, left, cols)
        for h in range(out_h):
            i, a = h // sh, h % sh
            for b in range(min(sw, out_w)):
                p = a * sw + b
                first = phase_taps[p]
                dw_row(X, ((i + top) * cols + left) * lanes, lanes, offsets[first:], phase_taps[p + 1] - first, taps[cb], first * lanes, bias, cb * lanes, B, (h * out_w + b) * lanes, sw * lanes, (out_w - b + sw - 1) // sw)
        _block_out(B, out.reshape(-1), (n * x.shape[1] + cb * lanes) * out_h * out_w, out_h * out_w, out_h * out_w, valid)


@parallel_kernel(cache=True)
def _depthwise_weight_grad(source, grad, offsets, sh, sw, top, left, rows, cols, result, scratch):
    """result(c, t) = sum_n sum_h sum_w grad(n, c, h, w) * source(n, c, h*sh + m*dh - top, w*sw + l*dw -
    left) for t = m * kW + l (the weight gradient at the top of this file; source and grad contiguous,
    offsets and the block X of source as _depthwise_conv's). A task is one block of L channels over
    every sample: source into X, grad into its own block, and dw_dots row by row into each tap's L
    sums."""
    batch, channels, height, width = source.shape
    grad_h, out_w = grad.shape[2], grad.shape[3]
    lanes = 64 // source.itemsize
    blocks = (channels + lanes - 1) // lanes
    ntaps = offsets.size
    span = rows * cols * lanes
    src, dys = source.reshape(-1), grad.reshape(-1)
    for cb in prange(blocks):
        valid = min(lanes, channels - cb * lanes)
        row = scratch[get_thread_id()]
        X, D = row[:span], row[span:]
        sums = np.zeros(ntaps * lanes, dtype=source.dtype)
        for n in range(batch):
            _block_in(src, (n * channels + cb * lanes) * height * width, height * width, width, height, valid, X, (top * cols + left) * lanes, cols)
            _block_in(dys, (n * channels + cb * lanes) * grad_h * out_w, grad_h * out_w, grad_h * out_w, 1, valid, D, 0, 0)
            for h in range(grad_h):
                dw_dots(D, h * out_w * lanes, lanes, X, h * sh * cols * lanes, sw * lanes, offsets, ntaps, out_w, sums)
        for i in range(valid):
            for t in range(ntaps):
                result[cb * lanes + i, t] = sums[t * lanes + i]


def _blocked(values, lanes):
    """values (C, T) in blocks of L channels: (ceil(C / L), T * L), [b, t * L + i] = values[b*L + i, t]
    (zeros past C)."""
    channels, count = values.shape
    blocks = -(-channels // lanes)
    padded = np.zeros((blocks * lanes, count), dtype=values.dtype)
    padded[:channels] = values
    return np.ascontiguousarray(padded.reshape(blocks, lanes, count).transpose(0, 2, 1).reshape(blocks, count * lanes))


@functools.lru_cache(maxsize=256)
def _conv_plan(kernel, strides, dilations, before, in_hw, out_hw, lanes):
    """(offsets, rows, cols, rows_at): the block X of _depthwise_conv (the input padded by `before` and as
    far as the output's taps reach, L = lanes values a position), each tap's place in it and each
    kernel row's first tap's. Cached (a network calls each layer's sizes over and over; this took a
    third of a small layer's 0.1 ms of Python): callers only read them."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    rows = max(before[0] + in_hw[0], (out_hw[0] - 1) * sh + (kh - 1) * dh + 1)
    cols = max(before[1] + in_hw[1], (out_hw[1] - 1) * sw + (kw - 1) * dw + 1)
    m, l = np.meshgrid(np.arange(kh) * dh, np.arange(kw) * dw, indexing="ij")
    offsets = ((m * cols + l) * lanes).reshape(-1).astype(np.int64)
    return offsets, rows, cols, np.ascontiguousarray(offsets[::kw])


@functools.lru_cache(maxsize=256)
def _gather_plan(kernel, strides, pads, dilations, in_hw, out_hw, lanes):
    """(phase_taps, tap_ids, offsets, top, left, rows, cols) of _depthwise_transposed: per output phase
    (a, b) the taps (m, l) that reach it (_planes.py's phase_taps), and their places relative to the
    phase's position in the block of the input padded by (top, left) into rows x cols (L = lanes values
    a position). Cached like _conv_plan."""
    (sh, sw), kw = strides, kernel[1]
    shift_h, shift_w = phase_taps(kernel, strides, pads, dilations)
    top = max([0] + [-e for phase in shift_h for _, e in phase])
    left = max([0] + [-f for phase in shift_w for _, f in phase])
    phase_h, phase_w = -(-out_hw[0] // sh), -(-out_hw[1] // sw)
    rows = max([top + in_hw[0]] + [phase_h + e + top for phase in shift_h for _, e in phase])
    cols = max([left + in_hw[1]] + [phase_w + f + left for phase in shift_w for _, f in phase])
    firsts, tap_ids, offsets = [0], [], []
    for a in range(sh):
        for b in range(sw):
            for m, e in shift_h[a]:
                for l, f in shift_w[b]:
                    tap_ids.append(m * kw + l)
                    offsets.append((e * cols + f) * lanes)
            firsts.append(len(tap_ids))
    as_array = lambda values: np.array(values, dtype=np.int64)  # noqa: E731
    return as_array(firsts), as_array(tap_ids), as_array(offsets), top, left, rows, cols


def _scratch(block, rest, dtype):
    """_thread_rows of block + rest values for the kernels above, each row's first `block` values zero
    (the padding of the block X, which the tasks do not write)."""
    scratch = _thread_rows("D", block + rest, dtype)
    scratch[:, :block] = 0
    return scratch


def _work(outputs, taps):
    """The kernels' serial/parallel choice (nbops/cpu/_parallel.py): multiply-adds / 8 (these loops move
    about as much memory as they compute)."""
    return outputs * taps // 8


def run_depthwise(x4, w, bias, out, strides, before, dilations):
    """out = conv2d(x4, w (C, 1, kH, kW), groups=C) + bias, zero padding `before` (top, left) and
    whatever more out's size implies; x4 and out contiguous."""
    lanes = 64 // out.itemsize
    offsets, rows, cols, rows_at = _conv_plan(w.shape[2:], tuple(strides), tuple(dilations), tuple(before), x4.shape[2:], out.shape[2:], lanes)
    scratch = _scratch(rows * cols * lanes, (out.shape[2] * out.shape[3] + POSITIONS) * lanes, out.dtype)  # (dw_window's slack)
    taps, blocked_bias = _blocked(w.reshape(w.shape[0], -1), lanes), _blocked(bias.reshape(-1, 1), lanes).reshape(-1)
    rows_at = rows_at if WINDOW and strides[1] == dilations[1] else rows_at[:0]  # (dw_window, else dw_row)
    work = _work(out.size, offsets.size)
    _depthwise_conv.pick(work)(x4, taps, blocked_bias, out, offsets, strides[0], strides[1], before[0], before[1], rows, cols, scratch, rows_at, w.shape[3])


def run_depthwise_transposed(x4, w, bias, out, strides, before, dilations):
    """out = conv_transpose2d(x4, w (C, 1, kH, kW), groups=C) + bias with its padding `before` (top,
    left) cropped off and out's size (conv2d's input gradient: before its padding); contiguous."""
    lanes = 64 // out.itemsize
    plan = _gather_plan(w.shape[2:], tuple(strides), tuple(before), tuple(dilations), x4.shape[2:], out.shape[2:], lanes)
    phase_taps, tap_ids, offsets, top, left, rows, cols = plan
    scratch = _scratch(rows * cols * lanes, out.shape[2] * out.shape[3] * lanes, out.dtype)
    taps, blocked_bias = _blocked(w.reshape(w.shape[0], -1)[:, tap_ids], lanes), _blocked(bias.reshape(-1, 1), lanes).reshape(-1)
    _depthwise_transposed.pick(_work(out.size, w.shape[2] * w.shape[3]))(x4, taps, blocked_bias, out, phase_taps, offsets, strides[0], strides[1], top, left, rows, cols, scratch)


def run_depthwise_weight_grad(source4, grad4, weight_shape, rows, strides, before, dilations):
    """The weight gradient (weight_shape (C, 1, kH, kW)) of conv.py's _weight_grad for a depthwise
    convolution: source4 read by grad4's first `rows` rows."""
    grad4 = grad4 if rows == grad4.shape[2] else np.ascontiguousarray(grad4[:, :, :rows])
    lanes = 64 // grad4.itemsize
    offsets, plane_rows, cols, _ = _conv_plan(tuple(weight_shape[2:]), tuple(strides), tuple(dilations), tuple(before), source4.shape[2:], grad4.shape[2:], lanes)
    scratch = _scratch(plane_rows * cols * lanes, grad4.shape[2] * grad4.shape[3] * lanes, grad4.dtype)
    result = np.empty((weight_shape[0], weight_shape[2] * weight_shape[3]), dtype=grad4.dtype)
    work = _work(grad4.size, offsets.size)
    _depthwise_weight_grad.pick(work)(source4, grad4, offsets, strides[0], strides[1], before[0], before[1], plane_rows, cols, result, scratch)
    return result.reshape(weight_shape)
