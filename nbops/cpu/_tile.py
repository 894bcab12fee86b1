"""The convolutions' register tiles (nbops/cpu/conv.py, step 4 at the top). conv2d's path: a tile over
phase planes, 12 output channels x 2L output positions (L = 16 lanes of float32, 8 of float64), summed
over a run of taps in registers and added to the output once (tile12x32), the kernel that runs it over
a whole convolution (_conv2d_tiles) and its weight packing (_pack_taps); for output rows 7 to 28
wide, row tiles of 7 positions x 4L output channels instead (row7x4, _conv2d_rows: see their section).
The weight gradient's tiles are in _weight_tiles.py.

    out(ostart + r * ostride + c) += sum_{t < ntaps} weights(wstart + 12 * t + r) * src(start + offsets(t) + c)

for r < 12 and c < 2L. In conv2d's terms (nbops/cpu/conv.py): r an output channel of a block of twelve,
c one of 2L consecutive positions q = h * Wq + w of an output plane, t a tap (k, m, l), offsets(t) its
place in the input's phase planes, weights the block's taps packed tap-major (twelve values per tap).
The caller runs the taps in blocks (so that their inputs and weights stay in L1) and starts the output
at the bias. The tile, one box per 512-bit register:

                        positions q .. q+L-1       q+L .. q+2L-1
                     +-----------------------+-----------------------+
      channel r = 0  |  sum_t w(0) x(t, 0..) |                       |   24 sums, in registers
                  1  |                       |                       |   over the whole run of
                 ..  |          ...          |          ...          |   taps t
                 11  |                       |                       |
                     +-----------------------+-----------------------+
      each tap t:      x(t, ..) = src(start + offsets(t) + q ..): two vector loads across,
                       w(r) = weights(wstart + 12 t + r): twelve broadcasts down,
                       box(r, v) += w(r) * x(t, v): 24 fused multiply-adds

The 12 x 2L sums live in 24 512-bit registers for the whole loop over the taps (AVX-512 has 32); a
tap step loads two vectors of input, broadcasts twelve weights, and issues 24 fused multiply-adds
(llvm.fma.v16f32 or v8f64), so each input value loaded feeds twelve channels and each sum is read and
written once per run of taps. (With 6 x 32, 12 registers, the loop ran at 50-65% of one core's sgemm
speed in L1, its two unaligned input loads weighing on only 12 FMAs; with 12 x 32 at 75-115%.) Numba
cannot keep such a tile in registers by itself (a small local array is heap memory, and its SLP
vectoriser is off), hence an intrinsic that writes the loop in LLVM IR (with _lanes.py's helpers).
ntaps must be at least 1. The plain loops of the same sum, _conv2d_planes and _conv2d_pixels in
conv.py, are what the tests also run both dtypes through (with torch as the reference).
"""

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from .._arrays import contiguous
from ._lanes import _aligned_empty, _empty_aligned, _Lanes, flat_view, float_arrays, gather_lanes, intrinsic_arguments, transpose_lanes, transpose_scatter
from ._parallel import parallel_kernel, unravel3

TILE_ROWS = 12  # output channels per tile
TILE_COLUMNS = 32  # output positions per tile: two vectors of 16 float32 (of 8 float64: 16 positions)


TILE_PREFETCH = 16  # taps ahead whose input lines a tile prefetches (0: none)


def _tile_typing(rows, src, start, offsets, ntaps, weights, wstart, out, ostart, ostride, valid_rows, valid_columns, bias, bstart, first, prefetch=TILE_PREFETCH):
    """The typing and codegen of a tile of `rows` (<= 12) output channels x 2L positions: tile12x32,
    and tile8x32 and tile4x32 for the last block of a group whose channels are not a multiple of 12
    (64 channels: 5 blocks of 12 and one of 4, not 72 rows). The weights keep their 12 values per tap.
    Only the first valid_rows x valid_columns sums are added to out (masked loads and stores: a tile
    that writes into the output itself stops at its last channel and at the end of its rows); where
    `first` is not 0 they are stored with bias(bstart + r) added instead, out not read (a first run of
    taps: the output need not be filled with the bias beforehand, 4-5% of a 1x1 layer's time; bias is
    read for every r < rows).
    Each tap step also prefetches the input lines of the tap `prefetch` taps ahead (the last tap's near
    the end): a 1x1 kernel's taps each read another channel's plane, which the hardware prefetchers do
    not foresee (256->64 1x1 on 56x56: 97-102 -> 132-140 GFLOP/s; 3x3 layers +0-10%)."""
    if not float_arrays((src, weights, out, bias)) or not isinstance(offsets, types.Array) or offsets.dtype != types.int64:
        return None
    signature = types.void(src, start, offsets, ntaps, weights, wstart, out, ostart, ostride, valid_rows, valid_columns, bias, bstart, first)

    def codegen(context, builder, signature, args):
        (src_p, start, offsets_p, ntaps, weights_p, wstart, out_p, ostart, ostride, valid_rows, valid_columns, bias_p, bstart,
         first) = intrinsic_arguments(context, builder, signature, args)
        v = _Lanes(builder, signature.args[0].dtype)

        def step(t, sums):
            base = builder.add(start, builder.load(builder.gep(offsets_p, [t])))
            inputs = [builder.load(v.at(src_p, builder.add(base, v.const(v.lanes * c))), align=v.size) for c in range(2)]
            if prefetch:
                v.prefetch_tap(src_p, start, offsets_p, t, ntaps, prefetch, 3)
            weight_base = builder.add(wstart, builder.mul(t, v.const(TILE_ROWS)))
            return v.outer(weights_p, [builder.add(weight_base, v.const(r)) for r in range(rows)], inputs, sums)

        totals = v.tap_loop(ntaps, rows, 2, step)
        columns = [v.lanes_below(builder.sub(valid_columns, v.const(v.lanes * c))) for c in range(2)]
        nothing = ir.Constant(columns[0].type, [0] * v.lanes)
        places = []  # (row r, column c, place in out, mask)
        for r in range(rows):
            row = builder.add(ostart, builder.mul(ostride, v.const(r)))
            inside = builder.icmp_signed("<", v.const(r), valid_rows)
            for c in range(2):
                places.append((r, c, builder.add(row, v.const(v.lanes * c)), builder.select(inside, columns[c], nothing)))
        with builder.if_else(builder.icmp_signed("!=", first, v.const(0))) as (store, add):
            with store:  # (a row past valid_rows reads bias(bstart + r) all the same: the caller's bias has 12 per block)
                biases = [v.broadcast(bias_p, builder.add(bstart, v.const(r))) for r in range(rows)]
                for r, c, at, mask in places:
                    v.masked_store(builder.fadd(totals[r][c], biases[r]), out_p, at, mask)
            with add:
                for r, c, at, mask in places:
                    v.masked_add_to(out_p, at, totals[r][c], mask)
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def tile12x32(typingctx, src, start, offsets, ntaps, weights, wstart, out, ostart, ostride, valid_rows, valid_columns, bias, bstart, first):
    return _tile_typing(12, src, start, offsets, ntaps, weights, wstart, out, ostart, ostride, valid_rows, valid_columns, bias, bstart, first)


@intrinsic
def tile8x32(typingctx, src, start, offsets, ntaps, weights, wstart, out, ostart, ostride, valid_rows, valid_columns, bias, bstart, first):
    return _tile_typing(8, src, start, offsets, ntaps, weights, wstart, out, ostart, ostride, valid_rows, valid_columns, bias, bstart, first)


@intrinsic
def tile4x32(typingctx, src, start, offsets, ntaps, weights, wstart, out, ostart, ostride, valid_rows, valid_columns, bias, bstart, first):
    return _tile_typing(4, src, start, offsets, ntaps, weights, wstart, out, ostart, ostride, valid_rows, valid_columns, bias, bstart, first)



@njit(cache=True, inline="always")
def tile_block(src, start, offsets, ntaps, weights, wstart, out, ostart, ostride, valid_rows, valid_columns, bias, bstart, first):
    """tile12x32, or tile8x32 and tile4x32 where at most 8 or 4 of the block's rows are valid (a group's
    last block): the same arguments."""
    if valid_rows > 8:
        tile12x32(src, start, offsets, ntaps, weights, wstart, out, ostart, ostride, valid_rows, valid_columns, bias, bstart, first)
    elif valid_rows > 4:
        tile8x32(src, start, offsets, ntaps, weights, wstart, out, ostart, ostride, valid_rows, valid_columns, bias, bstart, first)
    else:
        tile4x32(src, start, offsets, ntaps, weights, wstart, out, ostart, ostride, valid_rows, valid_columns, bias, bstart, first)


TILE_TARGET = 4096  # output positions (q) per task of _conv2d_tiles at most (more tiles per weight load)
TILE_WEIGHT_BYTES = 256 * 1024  # packed weights of the channel blocks of one task (kept hot in L2)
TILE_TASKS = 8  # _conv2d_tiles makes at least this many tasks where the output rows allow
TILE_TAPS = 256  # taps per run of tile12x32


@parallel_kernel(cache=True)
def _conv2d_tiles(xs, tail, packed, packed_bias, offsets, group_size, groups, out, flat_out, plane_w, rows, chunk, run):
    """conv2d (float32 or float64), the formula of conv.py's _conv2d_planes:

        out(n, j, h, w) = bias(j) + sum_t taps(j, t) * xs(n, g * group_size + offsets(t) + h*Wq + w)

    tiled for registers. The output channels of each group are padded to blocks of twelve; packed(b, 12*t + r)
    = taps(12*b' + r, t) for block b = g * blocks + b' (0 in the padding), packed_bias likewise.
    A task is one sample, one group, `chunk` of its channel blocks (their packed weights stay in L2
    while the task runs) and `rows` output rows, i.e. the flat positions q = h*Wq + w of those rows
    in tiles of 32. Its loops, outermost first: each run of `run` taps (their inputs and weights
    stay in L1); each tile of 32 positions; each block of the chunk: one tile12x32 call (tile8x32 or
    tile4x32 for a group's last block of at most 8 or 4 channels), which sums the run of taps in
    registers and adds them to the task's sums (the first run stores them with the bias added). Samples n >= len(xs) read
    tail(n - len(xs)) instead (conv.py's _phase_layout: the input in place but its last sample, which
    gets slack).

    Where the planes are as wide as the output (Wq = W_out: a 1x1 kernel without padding), flat_out
    is out itself, contiguous and flat, and the sums are out: the tiles add to it where it lies,
    stopping at the group's last channel and the task's last row. Otherwise (flat_out empty) the sums
    are a buffer rounded up to whole tiles, whose extra positions and columns w >= W_out read the
    planes' slack and are thrown away when its columns w < W_out are copied to out. (The copy cost
    1.1 ms of 4.8 on 8x64x56x56 -> 256 1x1, where each output takes only 64 taps.)
    """
    batch, out_channels, out_h, out_w = out.shape
    group_out = out_channels // groups
    blocks = packed.shape[0] // groups
    chunks = (blocks + chunk - 1) // chunk
    ntaps = offsets.size
    row_blocks = (out_h + rows - 1) // rows
    columns = 128 // out.itemsize  # positions per tile: two 512-bit vectors
    direct = flat_out.size > 0
    for task in prange(batch * groups * chunks * row_blocks):
        n = task // (groups * chunks * row_blocks)
        g, c, row_block = unravel3(task - n * groups * chunks * row_blocks, chunks, row_blocks)
        h0 = row_block * rows
        h1 = min(out_h, h0 + rows)
        b0 = c * chunk
        b1 = min(blocks, b0 + chunk)
        j0 = g * group_out + b0 * TILE_ROWS  # (the chunk's first output channel)
        j1 = g * group_out + min(group_out, b1 * TILE_ROWS)
        positions = (h1 - h0) * plane_w
        tiles = (positions + columns - 1) // columns
        if direct:  # the sums are out's rows h0..h1 of channels j0.., each channel's plane after the last
            sums = flat_out
            width = out_h * out_w
            first = (n * out_channels + j0) * width + h0 * out_w
        else:  # the sums are a buffer of whole tiles
            width = tiles * columns
            first = 0
            sums = _empty_aligned((b1 - b0) * TILE_ROWS * width, out)
        start = g * group_size + h0 * plane_w
        src = xs[n] if n < xs.shape[0] else tail[n - xs.shape[0]]
        for t0 in range(0, ntaps, run):
            t1 = min(ntaps, t0 + run)
            taps = offsets[t0:t1]
            for tile in range(tiles):
                q = tile * columns
                valid = min(columns, positions - q)
                for b in range(b0, b1):
                    weights = packed[g * blocks + b, t0 * TILE_ROWS :]
                    at = first + (b - b0) * TILE_ROWS * width + q
                    left = group_out - b * TILE_ROWS  # (the group's last block may hold fewer channels)
                    tile_block(src, start + q, taps, t1 - t0, weights, 0, sums, at, width, left, valid, packed_bias, (g * blocks + b) * TILE_ROWS, t0 == 0)
        if not direct:
            for j in range(j0, j1):
                for h in range(h0, h1):
                    row = sums[(j - j0) * width + (h - h0) * plane_w :]
                    dst = out[n, j, h]
                    for w in range(out_w):
                        dst[w] = row[w]


PACK_SPAN = 256  # taps per task of _pack_taps


@parallel_kernel(cache=True)
def _pack_taps(weights, channel_base, tap_index, groups, packed):
    """_conv2d_tiles' weights: packed(g * blocks + b, B * t + r) = weights(channel_base(j) + tap_index(t))
    for output channel j = g * C_out/groups + B * b + r (taps(j, t) of the formula, read from the
    caller's flat weights wherever they lie), each group's output channels padded with zeros to blocks
    of B = packed.shape[1] // T channels (TILE_ROWS; the row tiles' blocks are 4L wide). A task is
    one block and PACK_SPAN of its taps, in the order of the blocks (so that each thread packs the
    blocks that it then computes, where the tiles take the blocks in turn); it reads L rows (channels)
    at a time, one gather per tap, all the span's taps of those rows before the next L. (Rows of a
    convolution's own weights lie a multiple of 4 KB apart on ResNet's layers, so that 4L rows read at
    once all fell in two sets of L1 and evicted each other: 1.2 ms on 512x512x3x3 against 0.55; the
    scalar loop before the gathers took 1.8 ms.)"""
    out_channels = channel_base.size
    count = tap_index.size
    group_out = out_channels // groups
    blocks = packed.shape[0] // groups
    spans = (count + PACK_SPAN - 1) // PACK_SPAN
    for task in prange(spans * packed.shape[0]):
        block = task // spans
        s = task - block * spans
        g = block // blocks
        width = packed.shape[1] // count
        first = g * group_out + (block - g * blocks) * width  # (channel_base's index of the block's first row)
        valid = min(width, group_out - (block - g * blocks) * width)  # (rows past it: padding)
        _pack_span(weights, channel_base, tap_index, first, valid, s * PACK_SPAN, min(count, (s + 1) * PACK_SPAN), packed[block], width)


@njit(cache=True, inline="always")
def _pack_span(weights, channel_base, tap_index, first, valid, t0, t1, dst, width):
    """dst(width * t + r) = weights(channel_base(first + r) + tap_index(t)) for taps t0 <= t < t1 and
    rows r < valid, zeros in rows valid <= r < width: L rows at a time, one gather per tap."""
    lanes = 64 // dst.itemsize
    for r0 in range(0, valid, lanes):
        for t in range(t0, t1):
            gather_lanes(weights, channel_base, first + r0, tap_index[t], dst, t * width + r0, min(lanes, valid - r0))
    for t in range(t0, t1):
        for r in range(valid, width):
            dst[t * width + r] = 0.0


# ---------------------------------------------------------------------------------------------------
# Narrow output planes (W_out 7 or 14: ResNet's last stages) in row tiles: ROW_TILE consecutive
# positions of one output row x 4 vectors of output channels (4L = 64 float32, 32 float64), 28
# registers. The positions are exactly the row's (no thrown-away columns: at 7x7 the 32-position tiles
# computed 64 values for 49), and a tap step broadcasts 7 inputs from one place and loads 4 aligned
# weight vectors for 28 multiply-adds (the 12 x 32 tile's two unaligned input loads split cache lines):
#
#                   channels c .. c+L-1    c+L ..   c+2L ..   c+3L ..
#                 +---------------------+---------+---------+---------+
#    position p=0 |  sum_t x(t, 0) w(t) |         |         |         |   28 sums, in registers
#               1 |                     |         |         |         |   over the run of taps t
#              .. |         ...         |   ...   |   ...   |   ...   |
#               6 |                     |         |         |         |
#                 +---------------------+---------+---------+---------+
#    each tap t:    w(t, ..) = weights(wstart + 4L t ..): four aligned vector loads across,
#                   x(t, p) = src(start + offsets(t) + p): seven broadcasts down,
#                   box(p, v) += x(t, p) * w(t, v): 28 fused multiply-adds
#
# (28 sums, 4 weight vectors and a broadcast are 33 registers, one more than AVX-512's 32: LLVM keeps one
# sum on the stack, a load and a store per step (in one core's L1 the tile runs at 175 GFLOP/s, a
# 6-position tile without the spill at 183-189, tile12x32 at 188-194; test_tiles_stay_in_registers).)


def _row_typing(src, start, offsets, ntaps, weights, wstart, out, ostart, bias, bstart, first, prefetch=TILE_PREFETCH, spacing=1, vectors=4):
    """out(ostart + 4L p + c) += sum_{t < ntaps} src(start + offsets(t) + spacing * p) * weights(wstart + 4L t + c)
    for p < ROW_TILE positions and c < `vectors` L channels, or where `first` is not 0, out(ostart + 4L p
    + c) = bias(bstart + c) + that sum, out not read (a first run of taps, as tile12x32's: no pass that
    fills the sums with the bias first; 0.99-1.03x) (the tile's sums in registers over the taps;
    `spacing` 2: the positions of a stride-2 convolution, read from planes laid out without a stride;
    `vectors` 2: a block's last 2L channels or fewer, where 4 vectors computed up to twice the sums
    needed: 96 and 160 channels, MobileNet's). Each tap
    step prefetches the input line of the tap `prefetch` ahead, as tile12x32 does (+0-6% on ResNet-50's
    7x7 and 14x14 layers, most on 1x1 kernels)."""
    if not float_arrays((src, weights, out, bias)) or not isinstance(offsets, types.Array) or offsets.dtype != types.int64:
        return None
    signature = types.void(src, start, offsets, ntaps, weights, wstart, out, ostart, bias, bstart, first)

    def codegen(context, builder, signature, args):
        src_p, start, offsets_p, ntaps, weights_p, wstart, out_p, ostart, bias_p, bstart, first = intrinsic_arguments(context, builder, signature, args)
        v = _Lanes(builder, signature.args[0].dtype)

        def step(t, sums):
            base = builder.add(start, builder.load(builder.gep(offsets_p, [t])))
            if prefetch:
                v.prefetch_tap(src_p, start, offsets_p, t, ntaps, prefetch, 1)
            wbase = builder.add(wstart, builder.mul(t, v.const(4 * v.lanes)))
            weights = [builder.load(v.at(weights_p, builder.add(wbase, v.const(v.lanes * c))), align=v.size) for c in range(vectors)]
            return v.outer(src_p, [builder.add(base, v.const(spacing * p)) for p in range(ROW_TILE)], weights, sums)

        totals = v.tap_loop(ntaps, ROW_TILE, vectors, step)
        places = [(p, c, builder.add(ostart, v.const(4 * v.lanes * p + v.lanes * c))) for p in range(ROW_TILE) for c in range(vectors)]
        with builder.if_else(builder.icmp_signed("!=", first, v.const(0))) as (store, add):
            with store:
                biases = [builder.load(v.at(bias_p, builder.add(bstart, v.const(v.lanes * c))), align=v.size) for c in range(vectors)]
                for p, c, at in places:
                    builder.store(builder.fadd(totals[p][c], biases[c]), v.at(out_p, at), align=v.size)
            with add:
                for p, c, at in places:
                    v.add_to(out_p, at, totals[p][c])
        return context.get_dummy_value()

    return signature, codegen


ROW_TILE = 7  # output positions per row tile (W_out a multiple of it)
ROWS = True  # narrow output planes through the row tiles (False: the 12 x 32 tiles everywhere)
FUSED = True  # row tiles pack their own block where it outweighs a sample (False: _pack_taps first)
ROW_RUN = 128  # taps per row-tile call (their packed weights, 32 KB in float32, stay in L1)


@intrinsic
def row7x4(typingctx, src, start, offsets, ntaps, weights, wstart, out, ostart, bias, bstart, first):
    return _row_typing(src, start, offsets, ntaps, weights, wstart, out, ostart, bias, bstart, first)


@intrinsic
def row7x4s2(typingctx, src, start, offsets, ntaps, weights, wstart, out, ostart, bias, bstart, first):
    return _row_typing(src, start, offsets, ntaps, weights, wstart, out, ostart, bias, bstart, first, spacing=2)


@intrinsic
def row7x2(typingctx, src, start, offsets, ntaps, weights, wstart, out, ostart, bias, bstart, first):
    return _row_typing(src, start, offsets, ntaps, weights, wstart, out, ostart, bias, bstart, first, vectors=2)


@intrinsic
def row7x2s2(typingctx, src, start, offsets, ntaps, weights, wstart, out, ostart, bias, bstart, first):
    return _row_typing(src, start, offsets, ntaps, weights, wstart, out, ostart, bias, bstart, first, spacing=2, vectors=2)


@parallel_kernel(cache=True)
def _conv2d_rows(xs, tail, packed, weights, channel_base, tap_index, packed_bias, offsets, group_size, groups, out, flat_out, place, spots, plane_w, rows, fused, stride, by_block):
    """conv2d, the formula of _conv2d_tiles (and conv.py's _conv2d_planes), in row tiles: a block's
    weights packed(4L t + c) = taps(g * C_out/groups + 4L b + c, t) (blocks 4L wide), W_out a multiple
    of ROW_TILE. A task is one group, block of 4L channels and `rows` output rows, and one sample, or
    every sample where `fused`: then the task packs its block itself (_pack_span from the flat
    weights, channel_base and tap_index of _run_tiles, into L2, where the block outweighs a sample's
    planes: 512->512 3x3 at 7x7 wrote and read back 9.4 MB of packed weights, 8% of the layer), else
    its weights are packed(g * blocks + b) (_pack_taps, before the call). The tasks go block by block
    where `by_block` (the samples, or groups of rows, within), so that a thread's run of tasks reads
    one block's weights from L2 (256->256 3x3 at 14x14: 1.03-1.07x), else sample by sample (a
    sample's planes read from L2: 1x1 kernels at 14x14 ran 0.84-0.93x block by block). For each
    sample, its sums, position-major (4L channels per position), take each run of ROW_RUN taps tile by
    tile (the first run stores them, the bias added), then are written to out, L x L blocks
    transposed in registers, through its flat
    place (_flat_place: out(n, j, h, w) = flat_out(place(0) + n * place(1) + j * place(2) + h * W_out + w),
    or + spots(h * W_out + w) where spots is not empty: a transposed convolution's phase, every second
    row and column of its output). stride 2: a stride-2 convolution on planes laid out without a stride
    (output position (h, w) reads from (2h, 2w) on: row7x4s2), where the phase planes cost 1.2-1.5x a
    copy of the input."""
    batch, out_channels, out_h, out_w = out.shape
    group_out = out_channels // groups
    ntaps = offsets.size
    lanes = 64 // out.itemsize
    width = 4 * lanes
    blocks = (group_out + width - 1) // width
    row_blocks = (out_h + rows - 1) // rows
    samples = batch if fused else 1  # per task
    sample_tasks = batch // samples
    for task in prange(sample_tasks * groups * blocks * row_blocks):
        if by_block:
            g, b, rest = unravel3(task, blocks, sample_tasks * row_blocks)
            n0 = rest // row_blocks * samples
            row_block = rest - rest // row_blocks * row_blocks
        else:
            n0 = task // (groups * blocks * row_blocks) * samples
            g, b, row_block = unravel3(task % (groups * blocks * row_blocks), blocks, row_blocks)
        if fused:
            block = _empty_aligned(ntaps * width, out)
            for t0 in range(0, ntaps, PACK_SPAN):
                _pack_span(weights, channel_base, tap_index, g * group_out + b * width, min(width, group_out - b * width), t0, min(ntaps, t0 + PACK_SPAN), block, width)
        else:
            block = packed[g * blocks + b]
        h0 = row_block * rows
        h1 = min(out_h, h0 + rows)
        positions = (h1 - h0) * out_w
        half = group_out - b * width <= 2 * lanes  # (a group's last block of at most 2L channels: row7x2)
        sums = _empty_aligned(positions * width, out)
        bstart = (g * blocks + b) * width  # (the block's bias in packed_bias)
        for n in range(n0, n0 + samples):
            src = xs[n] if n < xs.shape[0] else tail[n - xs.shape[0]]
            for t0 in range(0, ntaps, ROW_RUN):
                t1 = min(ntaps, t0 + ROW_RUN)
                first = t0 == 0  # (the first run stores its sums with the bias added)
                for h in range(h0, h1):
                    for w0 in range(0, out_w, ROW_TILE):
                        at = ((h - h0) * out_w + w0) * width
                        start = g * group_size + stride * (h * plane_w + w0)
                        if half and stride == 1:
                            row7x2(src, start, offsets[t0:t1], t1 - t0, block, t0 * width, sums, at, packed_bias, bstart, first)
                        elif half:
                            row7x2s2(src, start, offsets[t0:t1], t1 - t0, block, t0 * width, sums, at, packed_bias, bstart, first)
                        elif stride == 1:
                            row7x4(src, start, offsets[t0:t1], t1 - t0, block, t0 * width, sums, at, packed_bias, bstart, first)
                        else:
                            row7x4s2(src, start, offsets[t0:t1], t1 - t0, block, t0 * width, sums, at, packed_bias, bstart, first)
            valid = min(width, group_out - b * width)
            for c0 in range(0, valid, lanes):  # L positions x L channels of the sums at a time, transposed
                at = place[0] + n * place[1] + (g * group_out + b * width + c0) * place[2]
                for p0 in range(0, positions, lanes):
                    count, columns = min(lanes, positions - p0), min(lanes, valid - c0)
                    if spots.size:  # (out a strided view)
                        transpose_scatter(sums, p0 * width + c0, width, flat_out, at, place[2], spots, h0 * out_w + p0, count, columns)
                    else:  # (rows h0..h1 of a channel contiguous in out)
                        transpose_lanes(sums, p0 * width + c0, width, flat_out, at + h0 * out_w + p0, place[2], count, columns)


# ------------------------------------------------------------------------------------------- drivers


def _run_tiles(xs, weights, channel_base, tap_index, offsets, group_size, groups, bias, out, plane_w, work, tail=None, stride=1):
    """out = the phase-plane convolution of xs through _conv2d_tiles, with T >= 1 taps at `offsets`
    (sorted) and taps(j, t) = weights.flat[channel_base(j) + tap_index(t)]; `tail`: the planes of the
    samples past len(xs). stride 2 (only where row_tiles_fit): xs laid out without a stride, each
    output position reading from twice its coordinates (the row tiles)."""
    out_channels, count = channel_base.size, tap_index.size
    group_out = out_channels // groups
    tail = xs[:0] if tail is None else tail
    weights = contiguous(weights).reshape(-1)  # (flat, for the packing)
    out_h, out_w = out.shape[2:]
    lanes4 = 256 // out.itemsize
    # out itself, flat, where the kernels can write it so (contiguous; else empty: they take a buffer)
    flat_out = flat_view(out)
    if row_tiles_fit(out_w, plane_w, group_out, out.itemsize):  # (see tiles_over_read)
        if min(out.strides) < 0:  # (_flat_place needs increasing addresses)
            result = np.empty(out.shape, dtype=out.dtype)
            _run_tiles(xs, weights, channel_base, tap_index, offsets, group_size, groups, bias, result, plane_w, work, tail, stride)
            out[...] = result
            return
        blocks = -(-group_out // lanes4)
        # (a block's weights against a sample's planes; 7-wide planes reuse a block's weights least)
        fused = FUSED and count * lanes4 > (1 if out_w == ROW_TILE else 4) * group_size
        if fused:  # each task packs its block (all samples)
            packed, packed_bias = np.empty((0, 0), dtype=out.dtype), _packed_bias(bias, groups, blocks * lanes4, out.dtype)
        else:
            packed, packed_bias = _packed(weights, channel_base, tap_index, groups, lanes4, out.dtype, bias)
        if fused:  # (each task packs its block: a split of the rows packs it again)
            split = _fused_split(groups * blocks, out.shape[0] * out_h * out_w, out_h)
        else:
            split = -(-TILE_TASKS // (out.shape[0] * groups * blocks))  # (as below)
        by_block = count * lanes4 > group_size  # (a block's weights against a sample's planes)
        flat, place, spots = _flat_place(out)
        _conv2d_rows.pick(work)(xs, tail, packed, weights, channel_base, tap_index, packed_bias, offsets, group_size, groups, out, flat, place, spots, plane_w, -(-out_h // split), fused, stride, by_block)
        return
    packed, packed_bias = _packed(weights, channel_base, tap_index, groups, TILE_ROWS, out.dtype, bias)
    blocks = packed.shape[0] // groups
    chunk = max(1, TILE_WEIGHT_BYTES // (4 * TILE_ROWS * count))
    rows = max(1, -(-TILE_TARGET // plane_w))
    # at least TILE_TASKS tasks (the row blocks split further when there are few samples, groups and
    # chunks)
    split = -(-TILE_TASKS // (out.shape[0] * groups * -(-blocks // chunk)))
    rows = min(rows, max(1, -(-out_h // split)))
    # runs of TILE_TAPS taps, 1x1 kernels too (their inputs, 256 channels' positions, outgrow L1, but
    # each run ends in the tiles' adds to the sums: with the sums in out itself, runs of 64 taps ran
    # 0-15% slower on ResNet-50's 1x1 layers)
    run = TILE_TAPS
    # (planes as wide as the output: the tiles add to out itself)
    flat_out = flat_out if plane_w == out_w else flat_out[:0]
    _conv2d_tiles.pick(work)(xs, tail, packed, packed_bias, offsets, group_size, groups, out, flat_out, plane_w, rows, chunk, run)


# packing a block of the row tiles' weights (_pack_span, in a task of _conv2d_rows) takes about as
# long as the block's sums over this many output positions: an estimate (the packing's gathers measured
# about 0.6 ns a weight, the sums 2 flops a weight and position at about 150 GFLOP/s a core) that picks
# the splits measured fastest in _fused_split's docstring
PACK_POSITIONS = 48


def _fused_split(blocks, positions, rows):
    """How many row blocks _conv2d_rows' fused tasks split the output into, for `blocks` blocks of
    channels over `positions` output positions (all samples) of `rows` rows: the split that finishes
    soonest on numba's threads, each thread taking whole tasks, a task costing its share of a block's
    sums plus the packing of the block (PACK_POSITIONS). Every split packs each block once more. Measured
    on 2 threads at batch 8: with 4 blocks, 8 tasks took 1.14x the time of 4 (the phases of ResNet-18's
    256->512 3x3 s2 input gradient); with 3 blocks, 9 tasks 1.25x and 3 tasks 1.13x the time of 6
    (MobileNetV2's 960->160 1x1 at 7x7); with 5 blocks, 10 tasks as 5 (within 4%)."""
    threads = numba.get_num_threads()
    pack = PACK_POSITIONS / max(1, positions)
    return min(range(1, max(1, min(rows, 4)) + 1), key=lambda split: -(-blocks * split // threads) * (1 / split + pack))


def _flat_place(out):
    """out (N, C, H, W) through one flat array: (flat, place, spots) with out(n, j, h, w) =
    flat(place(0) + n * place(1) + j * place(2) + spots(h * W + w)), spots empty where each plane of out
    is contiguous (then its own order, h * W + w). flat is out itself where out is contiguous, else a
    1-D view of the memory from out's first element to its last (strides >= 0)."""
    height, width = out.shape[2:]
    if out.flags.c_contiguous:
        return out.reshape(-1), np.array([0, out[0].size, height * width], dtype=np.int64), np.empty(0, dtype=np.int64)
    steps = [stride // out.itemsize for stride in out.strides]
    span = 1 + sum((size - 1) * step for size, step in zip(out.shape, steps))
    flat = np.lib.stride_tricks.as_strided(out, shape=(span,), strides=(out.itemsize,))
    spots = np.empty(0, dtype=np.int64)
    if steps[3] != 1 or steps[2] != width:
        spots = (np.arange(height)[:, None] * steps[2] + np.arange(width) * steps[3]).reshape(-1).astype(np.int64)
    return flat, np.array([0, steps[0], steps[1]], dtype=np.int64), spots


def row_tiles_fit(out_w, plane_w, group_out, itemsize):
    """Whether _run_tiles takes the row tiles: narrow planes (1x1 kernels included: 1.05-1.16x the
    12 x 32 tiles on ResNet-50's 7x7 and 14x14 layers), and 28-wide outputs on planes two or more
    columns wider (a 3x3 kernel at stride 1, where the 12 x 32 tiles threw away 2 columns of 30:
    1.03-1.13x); elsewhere the 12 x 32 tiles are faster (1x1 kernels on 28x28 planes 1.4x, 56x56
    planes 1.02-1.03x); a group needs 4L output channels."""
    wide = out_w <= 4 * ROW_TILE and plane_w >= out_w + 2
    return ROWS and out_w % ROW_TILE == 0 and (out_w <= 2 * ROW_TILE or wide) and group_out >= 256 // itemsize


def tiles_over_read(out_w, plane_w, group_out, itemsize):
    """How many positions past the last output row's _run_tiles' kernels read from the planes, the
    slack that _phase_layout leaves after them: none for the row tiles, which read each row's own
    positions (so a 1x1 convolution's input is read in place, where the slack made the layout copy its
    last sample: 0.99-1.11x on ResNet-50's 1x1 layers at 14x14 and 7x7), TILE_COLUMNS for the 12 x 32
    tiles, which read their last tile whole."""
    return 0 if row_tiles_fit(out_w, plane_w, group_out, itemsize) else TILE_COLUMNS


def _packed(weights, channel_base, tap_index, groups, width, dtype, bias):
    """The flat weights packed in blocks of `width` output channels (_pack_taps), on a cache line, and
    the bias in the same blocks (_packed_bias)."""
    group_out, count = channel_base.size // groups, tap_index.size
    blocks = -(-group_out // width)
    packed = _aligned_empty((groups * blocks, count * width), dtype)
    _pack_taps(weights, channel_base, tap_index, groups, packed)
    return packed, _packed_bias(bias, groups, blocks * width, dtype)


def _packed_bias(bias, groups, span, dtype):
    """The bias in each group's blocks of output channels, `span` channels per group (zeros in the
    padding channels), flat."""
    packed_bias = np.zeros((groups, span), dtype=dtype)
    packed_bias[:, : bias.size // groups] = bias.reshape(groups, -1)
    return packed_bias.reshape(-1)
