"""The weight gradient's register tiles (nbops/cpu/conv.py, step 4 at the top): conv2d's tile of
nbops/cpu/_tile.py with the roles turned round. The sum runs over the output positions q; a tile is
twelve taps x 2L output channels (taps12x32), held in 24 512-bit registers over every sample and
position; grad_output is laid out in blocks of 2L channels (_channel_block: channels contiguous, each
block contiguous over q) so that one vector load reads 2L channels at one position, and the input value
of each tap at q is broadcast. _conv2d_weight_tiles runs it over a whole weight gradient. The plain
loops of the same sum, conv.py's _conv2d_weight_grad, are what the tests also run both dtypes through
(with torch as the reference).

                       output channels c ..         c+L .. c+2L-1
                   +-------------------------+-------------------------+
        tap r = 0  |  sum_q x(r, q) g(q, ..) |                         |   24 sums, in registers
                1  |                         |                         |   over every sample and
               ..  |           ...           |           ...           |   output position q
               11  |                         |                         |
                   +-------------------------+-------------------------+
        each q:      g(q, ..) = grad_output's 2L channels at q (laid out side by side): two loads across,
                     x(r, q) = the input that tap r reads for q: twelve broadcasts down,
                     box(r, v) += x(r, q) * g(q, v): 24 fused multiply-adds
"""

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from ._lanes import _empty_aligned, _Lanes, _reused, flat_view, float_arrays, intrinsic_arguments, transpose_lanes
from ._parallel import parallel_kernel, unravel3
from ._tile import TILE_ROWS, TILE_TASKS


def _taps_typing(grads, gstart, gstride, gstep, xs, xstarts, xstride, samples, rows, width, xrow, out, ostart, ostride, spacing=1):
    """The typing and codegen of taps12x32 (below), the inputs of consecutive positions `spacing`
    apart in xs (2: taps12x32s2)."""
    if not float_arrays((grads, xs, out)) or not isinstance(xstarts, types.Array) or xstarts.dtype != types.int64:
        return None
    signature = types.void(grads, gstart, gstride, gstep, xs, xstarts, xstride, samples, rows, width, xrow, out, ostart, ostride)

    def codegen(context, builder, signature, args):
        (grads_p, gstart, gstride, gstep, xs_p, xstarts_p, xstride, samples, rows, width, xrow, out_p, ostart,
         ostride) = intrinsic_arguments(context, builder, signature, args)
        v = _Lanes(builder, signature.args[0].dtype)
        i64, lanes, size, vector, zero, const, vector_at = v.i64, v.lanes, v.size, v.vector, v.zero, v.const, v.at

        starts = [builder.load(builder.gep(xstarts_p, [const(r)])) for r in range(TILE_ROWS)]
        entry = builder.basic_block
        sample = builder.append_basic_block("taps.sample")
        row = builder.append_basic_block("taps.row")
        loop = builder.append_basic_block("taps.w")
        row_latch = builder.append_basic_block("taps.next_row")
        latch = builder.append_basic_block("taps.next")
        done = builder.append_basic_block("taps.store")
        work = builder.and_(builder.icmp_signed(">", samples, const(0)), builder.icmp_signed(">", rows, const(0)))
        work = builder.and_(work, builder.icmp_signed(">", width, const(0)))
        builder.cbranch(work, sample, done)

        def incoming(phis, values, block):  # the tile's values arriving from block
            for r in range(TILE_ROWS):
                for c in range(2):
                    phis[r][c].add_incoming(values[r][c], block)

        def tile_phis(first, block):
            phis = [[builder.phi(vector) for _ in range(2)] for _ in range(TILE_ROWS)]
            incoming(phis, first, block)
            return phis

        builder.position_at_end(sample)  # each sample n
        n, g_base, x_base = (builder.phi(i64) for _ in range(3))
        n.add_incoming(const(0), entry)
        g_base.add_incoming(gstart, entry)
        x_base.add_incoming(const(0), entry)
        outer = tile_phis([[zero] * 2 for _ in range(TILE_ROWS)], entry)
        builder.branch(row)
        builder.position_at_end(row)  # each row h
        h, g_row, x_row = (builder.phi(i64) for _ in range(3))
        h.add_incoming(const(0), sample)
        g_row.add_incoming(g_base, sample)
        x_row.add_incoming(x_base, sample)
        middle = tile_phis(outer, sample)
        windows = [builder.add(x_row, s) for s in starts]
        builder.branch(loop)
        builder.position_at_end(loop)  # each position w of the row
        w, g_at = builder.phi(i64), builder.phi(i64)
        w.add_incoming(const(0), row)
        g_at.add_incoming(g_row, row)
        sums = tile_phis(middle, row)
        grads = [builder.load(vector_at(grads_p, builder.add(g_at, const(lanes * c))), align=size) for c in range(2)]
        column = w if spacing == 1 else builder.mul(w, const(spacing))  # (stride 2: planes without a stride)
        updated = v.outer(xs_p, [builder.add(windows[r], column) for r in range(TILE_ROWS)], grads, sums)
        w_next = builder.add(w, const(1))
        g_next = builder.add(g_at, gstep)
        w.add_incoming(w_next, loop)
        g_at.add_incoming(g_next, loop)
        incoming(sums, updated, loop)
        builder.cbranch(builder.icmp_signed("<", w_next, width), loop, row_latch)
        builder.position_at_end(row_latch)
        h_next = builder.add(h, const(1))
        h.add_incoming(h_next, row_latch)
        g_row.add_incoming(g_next, row_latch)
        x_row.add_incoming(builder.add(x_row, xrow), row_latch)
        incoming(middle, updated, row_latch)
        builder.cbranch(builder.icmp_signed("<", h_next, rows), row, latch)
        builder.position_at_end(latch)
        n_next = builder.add(n, const(1))
        n.add_incoming(n_next, latch)
        g_base.add_incoming(builder.add(g_base, gstride), latch)
        x_base.add_incoming(builder.add(x_base, xstride), latch)
        incoming(outer, updated, latch)
        builder.cbranch(builder.icmp_signed("<", n_next, samples), sample, done)
        builder.position_at_end(done)
        totals = tile_phis([[zero] * 2 for _ in range(TILE_ROWS)], entry)
        incoming(totals, updated, latch)
        for r in range(TILE_ROWS):
            at = builder.add(ostart, builder.mul(ostride, const(r)))
            for c in range(2):
                v.add_to(out_p, builder.add(at, const(lanes * c)), totals[r][c])
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def taps12x32(typingctx, grads, gstart, gstride, gstep, xs, xstarts, xstride, samples, rows, width, xrow, out, ostart, ostride):
    """out(ostart + r * ostride + c) += sum_{n < samples} sum_{h < rows} sum_{w < width}
                      xs(xstarts(r) + n * xstride + h * xrow + w) * grads(gstart + n * gstride + (h * width + w) * gstep + c)

    for r < 12 windows of xs (twelve taps) and c < 2 L output channels (L = 16 lanes of float32, 8 of
    float64): the weight gradient's tile, held in 24 512-bit registers over every sample and position.
    The positions are the output's own, rows of `width` (W_out) in grads, each row xrow (Wq) further in
    the planes: no thrown-away columns. A step broadcasts one input value per tap, loads two vectors
    of grad_output (channels contiguous) and issues 24 fused multiply-adds."""
    return _taps_typing(grads, gstart, gstride, gstep, xs, xstarts, xstride, samples, rows, width, xrow, out, ostart, ostride)


@intrinsic
def taps12x32s2(typingctx, grads, gstart, gstride, gstep, xs, xstarts, xstride, samples, rows, width, xrow, out, ostart, ostride):
    """taps12x32 with xs(xstarts(r) + n * xstride + h * xrow + 2 w): a stride-2 convolution's inputs,
    from planes laid out without a stride."""
    return _taps_typing(grads, gstart, gstride, gstep, xs, xstarts, xstride, samples, rows, width, xrow, out, ostart, ostride, spacing=2)


@parallel_kernel(cache=True)
def _conv2d_weight_tiles(xs, grad_out, flat, blocked, offsets, group_size, groups, grad_taps, plane_w, tchunk, jchunk, run, stride, parts):
    """conv2d's weight gradient, the formula of conv.py's _conv2d_weight_grad,

        grad_taps(j, t) = sum_n sum_h sum_w grad_out(n, j, h, w) * xs(n, g * group_size + offsets(t) + h * Wq + w)

    (g the group of output channel j), tiled for registers: 12 taps
    x 2L output channels at a time (taps12x32), over every sample and a run of about `run` positions,
    whole rows, per call. Only the output's own positions are summed: the planes' columns w >= W_out
    are skipped, where a flat run over the planes computed them and threw them away (a 7-wide output
    on 9-wide planes: 29% more work). A task is one group, `jchunk` blocks of channels and `tchunk`
    blocks of twelve taps; for each run of positions it takes each block of channels in turn, so that
    the run's inputs (tchunk x 12 windows) are read from memory once for all jchunk blocks, not once
    per block. Each run's grad_output, block by block, is laid out by the task itself
    (_channel_block, 2L channels contiguous at each position, into a buffer that stays in L1/L2: a
    separate pass wrote and read back 26-51 MB for the stem), or read from `blocked` where that is
    given, laid out once by _channel_blocks before the call (see BLOCKED_BYTES; and where grad_out is
    a strided view, flat empty: each of several tasks reading it ran 0.92x). Blocks past the last tap
    repeat it (computed, not written). (No column is thrown away, so an infinite input never meets a 0 that the formula does not have: no exact second pass,
    as the plain loops need.) stride 2: a stride-2 convolution's planes laid out without a stride,
    output row h and column w reading row 2h and column 2w of them (taps12x32s2). `parts`: the samples
    split into that many runs, each a task of its own writing its sums to grad_taps(part) (for the
    caller to add in order), where there are few blocks of taps and channels (the stem's 3->64 7x7:
    2 tasks, one per thread, each waiting for the slower core).
    """
    batch, channels, rows_out, out_w = grad_out.shape
    length = rows_out * out_w
    columns = 128 // grad_out.itemsize  # (2L)
    group_out = channels // groups
    jblocks = (group_out + columns - 1) // columns
    per_call = max(1, min(batch, run // length))  # samples per call (where a sample is short)
    flat_rows = plane_w == out_w and stride == 1  # (planes as wide as the output: a run is any span of positions)
    # a run is whole units, positions (else rows): each `unit` long in grads, `plane_unit` in the planes
    xrow = stride * plane_w  # (an output row's step in the planes)
    unit, plane_unit = (1, 1) if flat_rows else (out_w, xrow)
    units = length // unit
    step = max(1, run // unit)
    runs = (units + step - 1) // step  # runs of equal length (no short last run)
    step = (units + runs - 1) // runs
    count = offsets.size
    tblocks = (count + TILE_ROWS - 1) // TILE_ROWS
    tchunks = (tblocks + tchunk - 1) // tchunk
    jchunks = (jblocks + jchunk - 1) // jchunk
    per_part = (batch + parts - 1) // parts
    for task in prange(parts * groups * jchunks * tchunks):
        part = task // (groups * jchunks * tchunks)
        g, jc, tc = unravel3(task - part * groups * jchunks * tchunks, jchunks, tchunks)
        jb0 = jc * jchunk
        nj = min(jblocks, jb0 + jchunk) - jb0
        tb0 = tc * tchunk
        nt = min(tblocks, tb0 + tchunk) - tb0
        starts = np.empty(nt * TILE_ROWS, dtype=np.int64)
        for i in range(starts.size):
            starts[i] = g * group_size + offsets[min(tb0 * TILE_ROWS + i, count - 1)]
        sums = np.zeros((nj, nt * TILE_ROWS, columns), dtype=grad_out.dtype)
        block = _empty_aligned(0 if blocked.size else per_call * step * unit * columns, grad_out)  # (a run's grad_output)
        last = min(batch, (part + 1) * per_part)
        for n0 in range(part * per_part, last, per_call):
            samples = min(per_call, last - n0)
            for u0 in range(0, units, step):
                span = min(units - u0, step)
                rows, width = (1, span) if flat_rows else (span, out_w)
                src = xs.reshape(-1)[n0 * xs.shape[1] + u0 * plane_unit :]
                for j in range(nj):
                    c0 = (jb0 + j) * columns
                    if blocked.size:  # (laid out before the call)
                        grads, at, gstride = blocked, ((n0 * groups + g) * jblocks + jb0 + j) * length * columns + u0 * unit * columns, groups * jblocks * length * columns
                    else:
                        _channel_block(grad_out, flat, n0, samples, g * group_out + c0, min(columns, group_out - c0), u0 * unit, span * unit, block)
                        grads, at, gstride = block, 0, span * unit * columns
                    for tb in range(nt):
                        xstarts, ostart = starts[tb * TILE_ROWS :], (j * nt + tb) * TILE_ROWS * columns
                        if stride == 1:
                            taps12x32(grads, at, gstride, columns, src, xstarts, xs.shape[1], samples, rows, width, xrow, sums.reshape(-1), ostart, columns)
                        else:
                            taps12x32s2(grads, at, gstride, columns, src, xstarts, xs.shape[1], samples, rows, width, xrow, sums.reshape(-1), ostart, columns)
        for j in range(nj):
            jb = jb0 + j
            for c in range(min(columns, group_out - jb * columns)):  # (along rows of grad_taps)
                dst = grad_taps[part, g * group_out + jb * columns + c]
                for i in range(min(nt * TILE_ROWS, count - tb0 * TILE_ROWS)):
                    dst[tb0 * TILE_ROWS + i] = sums[j, i, c]


@njit(cache=True)
def _channel_block(grad_out, flat, n0, samples, c0, valid, p0, count, into):
    """into((s * count + p) * 2L + c) = grad_output(n0 + s, c0 + c, position p0 + p) for s < samples,
    p < count and c < 2L, 0 where c >= valid: grad_output's positions p0..p0+count of 2L channels,
    channels contiguous (one vector load reads 2L channels at a position). `flat`: grad_output itself,
    flat, where it is contiguous (else empty): then L channels x L positions at a time transposed in
    registers (transpose_lanes), else value by value. (The padding channels' sums are thrown away,
    but left uninitialised they could hold denormals, which slow the multiply-adds.)"""
    channels, out_h, out_w = grad_out.shape[1:]
    length = out_h * out_w
    lanes = 64 // grad_out.itemsize
    columns = 2 * lanes
    for s in range(samples):
        base = s * count * columns
        if valid < columns:
            into[base : base + count * columns] = 0
        if flat.size:
            for cc in range(0, valid, lanes):
                at = ((n0 + s) * channels + c0 + cc) * length + p0
                for q in range(0, count, lanes):
                    transpose_lanes(flat, at + q, length, into, base + q * columns + cc, columns, min(lanes, valid - cc), min(lanes, count - q))
        else:  # (row by row)
            h = p0 // out_w
            w0, p = p0 - h * out_w, 0
            while p < count:
                along = min(out_w - w0, count - p)
                src = grad_out[n0 + s, c0 : c0 + valid, h]
                for w in range(along):
                    for c in range(valid):
                        into[base + (p + w) * columns + c] = src[c, w0 + w]
                h, w0, p = h + 1, 0, p + along


BLOCK_SPAN = 1024  # positions per task of _channel_blocks


@parallel_kernel(cache=True)
def _channel_blocks(grad_out, flat, groups, grads):
    """grads(n, g * J + b, h * W_out + w, c) = grad_output(n, g * C_out/groups + 2L b + c, h, w), grads
    flat: the whole of grad_output in blocks of 2L channels (_channel_block, each group's channels
    padded to J blocks). One task per sample, block and span of BLOCK_SPAN positions."""
    batch, channels, out_h, out_w = grad_out.shape
    length = out_h * out_w
    columns = 128 // grad_out.itemsize
    group_out = channels // groups
    jblocks = (group_out + columns - 1) // columns
    spans = (length + BLOCK_SPAN - 1) // BLOCK_SPAN
    for task in prange(batch * groups * jblocks * spans):
        n, block, span = unravel3(task, groups * jblocks, spans)
        g = block // jblocks
        c0 = (block - g * jblocks) * columns
        p0 = span * BLOCK_SPAN
        count = min(length, p0 + BLOCK_SPAN) - p0
        at = ((n * groups * jblocks + block) * length + p0) * columns
        _channel_block(grad_out, flat, n, 1, g * group_out + c0, min(columns, group_out - c0), p0, count, grads[at : at + count * columns])


# ------------------------------------------------------------------------------------------- drivers


# positions (of one sample or several) per taps12x32 call of _conv2d_weight_tiles (512 against 256:
# 1.00-1.24x on the ResNets' layers, most on 1x1 at 56x56; 768 no better)
WEIGHT_RUN = 512
WEIGHT_TCHUNK = 16  # blocks of twelve taps per task of _conv2d_weight_tiles at most (8: 0.93-1.04x, 32: 0.97-1.07x)
WEIGHT_JCHUNK = 4  # blocks of channels per task of _conv2d_weight_tiles for 1x1 kernels (else 1)
# grad_output in blocks of 2L channels up to this size is laid out before _conv2d_weight_tiles, once
# (above it, each task lays out its runs, in L1/L2: the stem 1.21-1.36x, 256->128 1x1 56x56 1.07-1.14x;
# below, the tasks of a layer with many taps each laid out the same runs: 512->512 3x3 7x7 0.93-0.97x)
BLOCKED_BYTES = 2 << 20


def _run_weight_tiles(xs, grad4, offsets, group_size, groups, plane_w, grad, pointwise=False, stride=1):
    """grad (C_out, T) = the weight gradient of conv.py's _conv2d_weight_grad through
    _conv2d_weight_tiles, from the phase planes xs and grad_output grad4 (N, C_out, rows, W_out).
    pointwise: a 1x1 kernel, whose taps each read a plane of their own: a task then takes up to
    WEIGHT_JCHUNK blocks of channels, reading each run's inputs once for all of them (1.08-1.19x on
    ResNet-50's 1x1 layers; with 3x3 kernels, whose taps share planes, 0.74-0.97x). stride 2: xs laid
    out without the stride (see _conv2d_weight_tiles)."""
    batch, channels, rows, out_w = grad4.shape
    jblocks = -(-channels // groups // (128 // grad4.itemsize))  # (blocks of 2L channels per group)
    work = grad.size * batch * rows * out_w // 32  # (multiply-adds / 32: conv.py's _conv_work)
    tblocks = -(-offsets.size // TILE_ROWS)
    tchunk = min(tblocks, WEIGHT_TCHUNK)
    tasks = groups * -(-tblocks // tchunk)
    # (at least TILE_TASKS tasks where the blocks allow)
    jchunk = min(WEIGHT_JCHUNK, max(1, jblocks // -(-TILE_TASKS // tasks))) if pointwise else 1
    # (fewer than TILE_TASKS tasks: runs of samples, each with its own sums)
    parts = min(batch, -(-TILE_TASKS // (tasks * -(-jblocks // jchunk))))
    parts = -(-batch // -(-batch // parts))  # (no empty run)
    into = grad[None] if parts == 1 else np.empty((parts,) + grad.shape, dtype=grad.dtype)
    flat = flat_view(grad4)
    blocked = flat[:0]
    size = batch * groups * jblocks * rows * out_w * (128 // grad4.itemsize)
    if not flat.size or size * grad4.itemsize <= BLOCKED_BYTES:  # (laid out once, not by each task)
        blocked = _reused("grads", (size,), grad4.dtype)
        _channel_blocks(grad4, flat, groups, blocked)
    _conv2d_weight_tiles.pick(work)(xs, grad4, flat, blocked, offsets, group_size, groups, into, plane_w, tchunk, jchunk, WEIGHT_RUN, stride, parts)
    if parts > 1:
        grad[...] = into[0]
        for part in range(1, parts):  # (in order: the sums do not depend on the threads)
            grad += into[part]
