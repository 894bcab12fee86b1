"""3x3 convolutions by Winograd's minimal filtering: at stride 1 F(2x2, 3x3), the sum of conv.py's
_conv2d_planes with 16 multiplications for each 2x2 block of outputs and pair of channels, not 36
(at stride 2: S2 and S2T, below).

For one output block (rows 2y, 2y+1, columns 2x, 2x+1), input channel c and output channel j, with d
the 4x4 patch of the padded input at (2y, 2x) and g = weight(j, c) (3x3):

    out(2y + a, 2x + b) = (A^T [ (G g G^T) * (B^T d B) ] A)(a, b)          (* element by element)

    B^T = [1  0 -1  0]      G = [ 1    0    0 ]      A^T = [1  1  1  0]
          [0  1  1  0]          [1/2  1/2  1/2]            [0  1 -1 -1]
          [0 -1  1  0]          [1/2 -1/2  1/2]
          [0  1  0 -1]          [ 0    0    1 ]

(in one dimension, y0 = g0 d0 + g1 d1 + g2 d2 and y1 = g0 d1 + g1 d2 + g2 d3 from four products; in
two, the products of the rows' and the columns'). A^T [.] A is linear, so the sum over the input
channels moves inside it: for each of the 16 entries e = 4k + l of the transformed blocks,

    M(e, j, tile) = sum_c U(e, j, c) * V(e, c, tile),     U = G g G^T,   V = B^T d B,

16 matrix products (C_out x C_in times C_in x tiles), and the output block is A^T M(:, j, tile) A.

The steps: _winograd_weights (U, packed in blocks of 12 output channels as the register tiles take
their weights), _winograd_inputs (V, the tiles of every sample side by side in panels of 2L: the
L = 16 lanes of float32, 8 of float64), _winograd_products (tile12x32 over each panel: 12 output
channels x 2L tiles summed over the input channels in registers) and _winograd_outputs (A^T M A and
the bias; where H_out or W_out is odd, the last blocks' second row or column is not written). Where
the transformed weights are small, _winograd_fused runs the three steps panel by panel instead, its V
and M in L2 and L1. The weight gradient turns it round (nbops/cpu/_winograd_grad.py): dU(e, j, c) =
sum_tiles Z(e, j, tile) V(e, c, tile) with Z = A dY A^T, and grad_weight(j, c) = G^T dU(:, j, c) G.
The rounding differs from the direct sum's by the transforms' additions (a few units in the last
place of the largest terms); the tests compare this path with torch and with the plain loops.

At stride 2 (S2), one output row reads three input rows 2y, 2y + 1, 2y + 2. In one dimension, two
outputs read a patch d0..d4: y0 = g0 d0 + g1 d1 + g2 d2, y1 = g0 d2 + g1 d3 + g2 d4. The even taps g0,
g2 on d0, d2, d4 are F(2, 2) (three products), the odd tap g1 on d1, d3 is two more: five, not six,

    B^T = [1  0 -1  0  0]      G = [1  0  0]      A^T = [1  1  0  1  0]
          [0  0  1  0  0]          [1  0  1]            [0  1  1  0  1]
          [0  0 -1  0  1]          [0  0  1]
          [0  1  0  0  0]          [0  1  0]
          [0  0  0  1  0]          [0  1  0]

(y0 = g0 (d0 - d2) + (g0 + g2) d2 + g1 d1, y1 = (g0 + g2) d2 + g2 (d4 - d2) + g1 d3), and in two
dimensions 25 products for a 2x2 block, not 36: the same steps with 5x5 patches at (4y, 4x), 25
entries, and G's last two rows equal, so that U has 16 distinct entries (_entry). Its transpose,
S2T, computes the input gradient of such a convolution (and conv_transpose2d at stride 2) with 25
products for each 4x4 block of grad_input, not 36. The algorithms' matrices, and the intrinsics
generated from them, are in nbops/cpu/_winograd_transforms.py; the steps here take the algorithm as
`kind` (0 F23, 1 S2, 2 and 3 S2T).
"""

import numpy as np
from numba import get_thread_id, njit, prange

from .._arrays import contiguous

from ._lanes import _reused, _thread_rows, transpose_lanes
from ._parallel import parallel_kernel, unravel3
from ._tile import TILE_ROWS, TILE_WEIGHT_BYTES, tile_block
from ._winograd_transforms import transform_in, transform_out, transform_weights

# values added to the length of each row of V, M and the weights' buffer (16 or 25 of them): rows written or
# read side by side fell in one set of L1 where their length is a multiple of 4 KB
SKEW = 16


# per algorithm (KINDS in nbops/cpu/_winograd_transforms.py: F23, S2, S2T for P even and odd): the
# spacing of the blocks' patches in the input, the outputs of a block in each dimension, V's entries
STEP = (2, 4, 2, 2)
OUTPUTS = (2, 2, 4, 4)
ENTRIES = (16, 25, 25, 25)


WEIGHT_CHANNELS = 16  # input channels per round of _winograd_weights' transposes (9 KB of kernels)


@parallel_kernel(cache=True)
def _winograd_weights(w, in_channels, out_channels, turned, kind, packed):
    """packed(e * blocks + b, 12 c + r) = U(e, j, c) = (G g G^T)(k, l) for e = 4k + l, j = 12 b + r and
    g the 3x3 kernel of output channel j and input channel c: w(j, c) of conv2d weights (C_out, C_in,
    3, 3), or where `turned`, w(c, j) of conv_transpose2d weights (C_in, C_out, 3, 3) (an input
    gradient's kernel), turned by 180 degrees for F23 (kind 0; S2T's G takes the taps as they are);
    zeros in the rows past the last output channel. G's four distinct rows (S2 and S2T: the fifth is
    the fourth again, see _entry). A task is one block of twelve output channels, L at a time, and
    WEIGHT_CHANNELS input channels at a time: their kernels transposed into `side`, side(9 (c - c0) L +
    L t + i) = g_(j0 + i)(c, t) (L output channels side by side, tap t = 3m + l; transpose_lanes: a
    gather per tap took 1.5x as long on 2 threads), then transformed from there (transform_weights)."""
    lanes = 64 // packed.itemsize
    blocks = packed.shape[0] // 16
    flat = w.reshape(-1)
    dst = packed.reshape(-1)
    pstride = blocks * packed.shape[1]
    for b in prange(blocks):
        side = np.empty(9 * WEIGHT_CHANNELS * lanes, dtype=packed.dtype)
        for r0 in range(0, TILE_ROWS, lanes):
            j0 = b * TILE_ROWS + r0
            count = min(lanes, TILE_ROWS - r0, out_channels - j0)
            if count <= 0:
                continue
            for c0 in range(0, in_channels, WEIGHT_CHANNELS):
                cn = min(WEIGHT_CHANNELS, in_channels - c0)
                if turned:  # (w(c, j, t): for each input channel, `count` kernels one after another)
                    for c in range(c0, c0 + cn):
                        for q in range(0, 9, lanes):
                            transpose_lanes(flat, (c * out_channels + j0) * 9 + q, 9, side, (9 * (c - c0) + q) * lanes, lanes, count, min(lanes, 9 - q))
                else:  # (w(j, c, t): an output channel's kernels in a row, 9 cn values from c0's)
                    for q in range(0, 9 * cn, lanes):
                        transpose_lanes(flat, (j0 * in_channels + c0) * 9 + q, in_channels * 9, side, q * lanes, lanes, count, min(lanes, 9 * cn - q))
                for c in range(c0, c0 + cn):
                    at = b * packed.shape[1] + TILE_ROWS * c + r0
                    if turned and kind == 0:  # (g(m, l) = w(c, j, 2 - m, 2 - l): from the last tap back)
                        transform_weights(kind, side, (9 * (c - c0) + 8) * lanes, -lanes, count, dst, at, pstride)
                    else:
                        transform_weights(kind, side, 9 * (c - c0) * lanes, lanes, count, dst, at, pstride)
        for r in range(max(0, out_channels - b * TILE_ROWS), TILE_ROWS):
            for e in range(16):
                for c in range(in_channels):
                    packed[e * blocks + b, TILE_ROWS * c + r] = 0.0


@parallel_kernel(cache=True)
def _winograd_inputs(x, top, left, tiles_h, tiles_w, panels, kind, V):
    """V(e, (p * C_in + c) * 2L + s) = (B^T d B)(k, l) for e = Ek + l and tile p * 2L + s = (n * tiles_h +
    y) * tiles_w + x (panels p of 2L tiles), d the P x P patch of channel c at (step y - top, step x -
    left) of the input x (N, C_in, H, W), contiguous, zero outside it (the padding); B, E, P and step
    those of `kind` (F23: 4, 4, 2). A task is one panel (so that it writes V's memory in order: sample
    by sample and channel by channel, 2.5x slower on 56x56): its tiles in runs along a row of blocks,
    up to L at a time (transform_in), for each channel."""
    channels = x.shape[1]
    lanes = 64 // V.itemsize
    flat = V.reshape(-1)
    for p in prange(panels):
        _panel_inputs(x, top, left, tiles_h, tiles_w, p, flat, p * channels * 2 * lanes, 2 * lanes, V.shape[1], kind)


@njit(cache=True)
def _entry(e, entries):
    """The row of U (16 of them) that entry e of V (16: F23, 25: S2, S2T) multiplies: their G g G^T has
    equal rows 3 and 4 and equal columns 3 and 4 (G's fourth and fifth rows are both (0, 1, 0))."""
    if entries == 16:
        return e
    return 4 * min(e // 5, 3) + min(e % 5, 3)


@njit(cache=True)
def _panel_inputs(x, top, left, tiles_h, tiles_w, p, V, vstart, vstep, vrow, kind):
    """V(vstart + e * vrow + c * vstep + s) = (B^T d B)(k, l) for the tiles p * 2L + s of panel p (those
    before the last tile) and every channel c of x (N, C_in, H, W), contiguous, padded by (top, left)
    (see _winograd_inputs). Returns (runs, count): the panel's runs of tiles along rows of blocks,
    (sample, block row, block column, tiles, first s), up to L at a time (transform_in's)."""
    batch, channels, height, width = x.shape
    lanes = 64 // x.itemsize
    cols, tiles = 2 * lanes, batch * tiles_h * tiles_w
    runs = np.empty((cols + 2, 5), dtype=np.int64)
    count, tile, end = 0, p * cols, min(tiles, (p + 1) * cols)
    while tile < end:
        n = tile // (tiles_h * tiles_w)
        y = (tile - n * tiles_h * tiles_w) // tiles_w
        col = tile - (n * tiles_h + y) * tiles_w
        lane = tile - p * cols
        run = min(tiles_w - col, end - tile, lanes - lane % lanes)
        runs[count, 0], runs[count, 1], runs[count, 2], runs[count, 3], runs[count, 4] = n, y, col, run, lane
        count += 1
        tile += run
    src = x.reshape(-1)
    step = STEP[kind]  # (here, not in the loop: a tuple indexed there made the loop 1.2x slower)
    for c in range(channels):
        for i in range(count):
            first = (runs[i, 0] * channels + c) * height * width
            transform_in(kind, src, first, width, step * runs[i, 1] - top, height, step * runs[i, 2] - left, runs[i, 3], V, vstart + c * vstep + runs[i, 4], vrow)
    return runs, count


PRODUCT_TAPS = 256  # input channels per tile12x32 call of _winograd_products (the panel's part in L1)
PRODUCT_PANELS = 4  # panels per task of _winograd_products (1.0-1.5x all of them on 2 threads)


@parallel_kernel(cache=True)
def _winograd_products(V, packed, M, in_channels, out_channels, width, panel_chunk, chunk):
    """M(e, j * width + t) = sum_c U(e, j, c) V(e, c, t) (V and M as _winograd_inputs and
    _winograd_outputs lay them out, 16 or 25 entries): for each entry e, the packed weights of a chunk of blocks of
    twelve output channels (kept in L2) against `panel_chunk` panels of 2L tiles. A task is one entry,
    chunk and group of panels; its loops are each run of PRODUCT_TAPS input channels, each panel (its
    run, 2L x PRODUCT_TAPS values, stays in L1), each block: one tile12x32 call (tile8x32, tile4x32 for
    a last block of at most 8 or 4 channels), which stores its sums on the first run and adds them on
    the others."""
    lanes = 128 // V.itemsize
    panels = width // lanes
    entries = V.shape[0]
    blocks = packed.shape[0] // 16
    chunks = (blocks + chunk - 1) // chunk
    groups = (panels + panel_chunk - 1) // panel_chunk
    offsets = np.arange(in_channels) * lanes
    zeros = np.zeros(TILE_ROWS, dtype=V.dtype)  # (the tiles' bias: their first run of taps stores M)
    src = V.reshape(-1)
    out = M.reshape(-1)
    for task in prange(entries * chunks * groups):
        e, ch, group = unravel3(task, chunks, groups)
        p0, p1 = group * panel_chunk, min(panels, (group + 1) * panel_chunk)
        b0, b1 = ch * chunk, min(blocks, (ch + 1) * chunk)
        for t0 in range(0, in_channels, PRODUCT_TAPS):
            t1 = min(in_channels, t0 + PRODUCT_TAPS)
            taps = offsets[t0:t1]
            for p in range(p0, p1):
                start = e * V.shape[1] + p * in_channels * lanes
                for b in range(b0, b1):
                    weights = packed[_entry(e, entries) * blocks + b]
                    at = e * M.shape[1] + b * TILE_ROWS * width + p * lanes
                    left = out_channels - b * TILE_ROWS
                    tile_block(src, start, taps, t1 - t0, weights, t0 * TILE_ROWS, out, at, width, left, lanes, zeros, 0, t0 == 0)


@parallel_kernel(cache=True)
def _winograd_outputs(M, bias, tiles_h, tiles_w, width, out, kind, nans):
    """out(n, j, ny + a, nx + b) = bias(j) + (A^T M(:, j * width + tile) A)(a, b), tile = (n * tiles_h + y)
    * tiles_w + x, where that lies inside out (contiguous); A and the n x n outputs of a block those
    of `kind`. A task is one sample and channel; each row of blocks goes L blocks at a time
    (transform_out); nans(task): how many of its calls stored a NaN."""
    batch, channels, out_h, out_w = out.shape
    lanes = 64 // out.itemsize
    flat = M.reshape(-1)
    dst = out.reshape(-1)
    for task in prange(batch * channels):
        n = task // channels
        j = task - n * channels
        size = OUTPUTS[kind]
        for y in range(tiles_h):
            base = j * width + (n * tiles_h + y) * tiles_w
            top = ((n * channels + j) * out_h + size * y) * out_w
            for x0 in range(0, tiles_w, lanes):
                valid = min(size * lanes, out_w - size * x0)
                count = min(lanes, tiles_w - x0)
                nans[task] += transform_out(kind, flat, base + x0, M.shape[1], count, bias, j, dst, top + size * x0, valid, out_h - size * y, out_w)


WINOGRAD = True  # 3x3 stride-1 convolutions through run_winograd where winograd_fits (False: the direct tiles)
WINOGRAD_CHANNELS = 64  # fewest input and output channels (fewer: the transforms may outweigh the saving)
FUSED = True  # run_winograd in one pass where the transformed weights are small (False: step by step)
WINOGRAD_BLOCKS = 128  # fewest 2x2 blocks of output over the batch (fewer: the weights' transform outweighs it)


def _blocks(batch, out_hw):
    """The 2x2 blocks of output over the batch."""
    return batch * -(-out_hw[0] // 2) * -(-out_hw[1] // 2)


def winograd_fits(kernel, strides, dilations, groups, batch, in_channels, out_channels, out_hw):
    """Whether a convolution goes through run_winograd: a 3x3 kernel at stride 1, without dilation or
    groups, with enough channels and output blocks that it pays (measured against the direct tiles on
    ResNet's 3x3 layers, forward and input gradient, batch 8 and 16: 64->64 56x56 1.08-1.18x, 128->128
    28x28 1.24-1.41x, 256->256 14x14 1.22-1.37x, 512->512 7x7 1.09x at batch 8 (128 blocks) and
    1.22-1.30x at 16)."""
    shape = tuple(kernel) == (3, 3) and tuple(strides) == (1, 1) and tuple(dilations) == (1, 1) and groups == 1
    # (at least one channel whatever the threshold: the register tiles need a tap, and the tests set it to 0)
    enough = min(in_channels, out_channels) >= max(1, WINOGRAD_CHANNELS) and _blocks(batch, out_hw) >= WINOGRAD_BLOCKS
    return WINOGRAD and shape and enough


STRIDED = True  # 3x3 stride-2 convolutions through run_winograd (S2, S2T) where strided_winograd_fits
STRIDED_SIZE = 14  # fewest rows and columns of output for S2 (7x7: 0.78-0.87x the direct tiles, 4x4
# blocks for 49 outputs)


def strided_winograd_fits(kernel, strides, dilations, groups, batch, in_channels, out_channels, out_hw):
    """Whether a convolution goes through run_winograd at stride 2 (S2; its input gradient, S2T, with
    the same arguments): a 3x3 kernel at stride 2, without dilation or groups, as winograd_fits for
    the channels and blocks, on outputs of at least STRIDED_SIZE rows and columns. Measured against
    the direct tiles on ResNet's stride-2 3x3 layers, batch 8 and 16, alternating: S2 64->128 56x56
    1.15-1.23x, 128->128 56x56 1.13-1.26x, 128->256 28x28 1.00-1.11x, 256->256 28x28 1.16-1.26x, and
    S2T 1.19-1.67x on those; on 7x7 outputs (256->512 and 512->512 14x14) 0.78-0.9x."""
    shape = tuple(kernel) == (3, 3) and tuple(strides) == (2, 2) and tuple(dilations) == (1, 1) and groups == 1
    enough = min(in_channels, out_channels) >= max(1, WINOGRAD_CHANNELS) and _blocks(batch, out_hw) >= WINOGRAD_BLOCKS
    return WINOGRAD and STRIDED and shape and enough and min(out_hw) >= STRIDED_SIZE


def _transformed_inputs(x4, before, out_hw, dtype, kind=0):
    """(V, tiles_h, tiles_w, width): _winograd_inputs of x4 for an output of out_hw, padding
    `before`, in a buffer kept per thread; its last panel's tiles past the last one are zeros."""
    lanes = 128 // np.dtype(dtype).itemsize  # (tiles per panel: the register tile's 2L columns)
    tiles_h, tiles_w = -(-out_hw[0] // OUTPUTS[kind]), -(-out_hw[1] // OUTPUTS[kind])
    panels = -(-x4.shape[0] * tiles_h * tiles_w // lanes)
    width = panels * lanes
    V = _reused("V", (ENTRIES[kind], width * x4.shape[1] + SKEW), dtype)
    V[:, (panels - 1) * lanes * x4.shape[1] :] = 0
    _winograd_inputs(contiguous(x4), before[0], before[1], tiles_h, tiles_w, panels, kind, V)
    return V, tiles_h, tiles_w, width


FUSED_WEIGHT_BYTES = 5 << 20  # largest transformed weights U for _winograd_fused (256->256: 4.3 MB, 1.05-1.16x
# the step-by-step path at 14x14; 512->512 at 7x7, 17 MB, 0.92-1.07x stays step by step)


@parallel_kernel(cache=True)
def _winograd_fused(x, top, left, tiles_h, tiles_w, packed, bias, out, kind, scratch, nans):
    """The three steps in one pass where the transformed weights are small (64-256 channels: V and M of
    a whole batch are 25-50 MB on 56x56 and 28x28, and went through L3 at 120-230 GFLOP/s of products):
    a task is one panel of 2L tiles, whose V (16 x C_in x 2L values, _winograd_inputs' layout for one
    panel) and M of one block of twelve output channels (16 x 12 x 2L) stay in this thread's row of
    `scratch` (numba.get_thread_id), in L2 and L1, with U = packed (in L2 up to 128 channels) read from
    the same place by every task:

        for each input channel: V(e, c, :) = B^T d B                    (transform_in)
        for each block b of 12 output channels:
            for each entry e: M(e, 12 rows, :) = U(e, block b, :) V(e)  (tile12x32 over every c)
            for each of its channels j: out(j) = A^T M(:, j) A + bias(j)  (transform_out)

    The same sums as the step-by-step path, in one run over the input channels (the algorithm `kind`);
    nans(p): how many output calls of panel p stored a NaN."""
    batch, channels = x.shape[:2]
    out_channels, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
    lanes = 64 // x.itemsize
    cols = 2 * lanes  # (tiles per panel)
    tiles = batch * tiles_h * tiles_w
    entries, size = ENTRIES[kind], OUTPUTS[kind]
    blocks = packed.shape[0] // 16
    vrow, mrow = channels * cols + SKEW, TILE_ROWS * cols
    offsets = np.arange(channels) * cols
    zeros = np.zeros(TILE_ROWS, dtype=x.dtype)  # (the tiles' bias: they store M)
    dst = out.reshape(-1)
    for p in prange((tiles + cols - 1) // cols):
        row = scratch[get_thread_id()]
        V, M = row[: entries * vrow], row[entries * vrow : entries * (vrow + mrow)]
        runs, count = _panel_inputs(x, top, left, tiles_h, tiles_w, p, V, 0, cols, vrow, kind)  # (a last panel's other columns: unused)
        for b in range(blocks):
            rows = min(TILE_ROWS, out_channels - b * TILE_ROWS)
            for e in range(entries):
                tile_block(V, e * vrow, offsets, channels, packed[_entry(e, entries) * blocks + b], 0, M, e * mrow, cols, rows, cols, zeros, 0, 1)
            for r in range(rows):
                j = b * TILE_ROWS + r
                for i in range(count):
                    n, y, col, run = runs[i, 0], runs[i, 1], runs[i, 2], runs[i, 3]
                    valid = min(size * run, out_w - size * col)
                    at = ((n * out_channels + j) * out_h + size * y) * out_w + size * col
                    nans[p] += transform_out(kind, M, r * cols + runs[i, 4], mrow, run, bias, j, dst, at, valid, out_h - size * y, out_w)


def run_winograd(x4, w, bias, out, before, turned=False, stride=1):
    """out = conv2d(x4, w (C_out, C_in, 3, 3)) + bias at `stride` (1: F23, 2: S2), zero padding `before`
    (top, left) and whatever more out's size implies (see the top of this file). `turned`: w is
    conv_transpose2d's (C_in, C_out, 3, 3) and out = conv_transpose2d(x4, w) + bias, at stride 1 the
    correlation with w turned, padded by `before` (2 - padding; F23), at stride 2 with padding `before`
    of the same parity in both dimensions (S2T; an input gradient of conv2d at stride 2 with that
    padding). In one pass (_winograd_fused) where the transformed weights fit FUSED_WEIGHT_BYTES, else
    step by step. Returns False where out has a NaN: an infinite input (or weight) met the transforms'
    differences, inf - inf, where the direct sum may be infinite; the caller then runs that."""
    in_channels, out_channels = x4.shape[1], out.shape[1]
    blocks = -(-out_channels // TILE_ROWS)
    kind = 0 if stride == 1 else 1 if not turned else 2 + before[0] % 2
    if kind >= 2:  # (dy's patch of 3 for a block of 4 grad_x positions starts at 2y + (P - 1) // 2)
        before = (-((before[0] - 1) // 2), -((before[1] - 1) // 2))
    entries, size = ENTRIES[kind], OUTPUTS[kind]
    packed = _reused("U", (16 * blocks, TILE_ROWS * in_channels + SKEW), out.dtype)
    _winograd_weights(contiguous(w), in_channels, out_channels, turned, kind, packed)
    target = out if out.flags.c_contiguous else np.empty(out.shape, dtype=out.dtype)
    if FUSED and packed[:, : TILE_ROWS * in_channels].nbytes <= FUSED_WEIGHT_BYTES:
        lanes = 64 // out.itemsize
        scratch = _thread_rows("F", entries * (in_channels * 2 * lanes + SKEW + TILE_ROWS * 2 * lanes), out.dtype)
        tiles_h, tiles_w = -(-out.shape[2] // size), -(-out.shape[3] // size)
        nans = np.zeros(-(-x4.shape[0] * tiles_h * tiles_w // (2 * lanes)), dtype=np.int64)
        _winograd_fused(contiguous(x4), before[0], before[1], tiles_h, tiles_w, packed, contiguous(bias), target, kind, scratch, nans)
    else:
        V, tiles_h, tiles_w, width = _transformed_inputs(x4, before, out.shape[2:], out.dtype, kind)
        M = _reused("M", (entries, out_channels * width + SKEW), out.dtype)
        chunks = -(-blocks // max(1, TILE_WEIGHT_BYTES // (4 * TILE_ROWS * max(1, in_channels))))  # (a chunk's weights in L2)
        _winograd_products(V, packed, M, in_channels, out_channels, width, PRODUCT_PANELS, -(-blocks // chunks))
        nans = np.zeros(out.shape[0] * out_channels, dtype=np.int64)
        _winograd_outputs(M, contiguous(bias), tiles_h, tiles_w, width, target, kind, nans)
    if target is not out:
        out[...] = target
    return not nans.any()
