"""conv2d's weight gradient for 3x3 kernels at stride 1 by Winograd's F(2x2, 3x3) (the forward's
formula and transforms: nbops/cpu/_winograd.py). out = sum_c A^T [U * V_c] A per block, so

    dU(e, j, c) = sum_blocks Z(e, j, block) V(e, c, block),    Z = A dY A^T,
    grad_weight(j, c) = G^T dU(:, j, c) G

with dY the block's 2x2 of grad_output (zeros past its edges) and V the forward's input transform:
16 matrix products over the blocks (taps12x32: 12 input channels x 2L output channels in registers),
then the back-transform (the 4x4 back to 3x3).
"""

import numpy as np
from numba import get_thread_id, njit, prange

from .._arrays import contiguous
from ._lanes import _reused, _thread_rows, flat_view
from ._parallel import parallel_kernel, unravel3
from ._tile import TILE_ROWS
from ._weight_tiles import _channel_blocks, taps12x32
from ._winograd_transforms import winograd_dy
from ._winograd import (
    SKEW,
    _blocks,
    _panel_inputs,
    _transformed_inputs,
    winograd_fits,
)


@parallel_kernel(cache=True)
def _winograd_grads(grads, tiles_h, tiles_w, out_h, out_w, Z):
    """Z(e, (jb * width + tile) * 2L + s) = (A dY A^T)(k, l) (winograd_dy) for tile = (n * tiles_h + y) *
    tiles_w + x. A task is one sample, channel block and row of blocks."""
    batch, blocks, length, wide = grads.shape
    width = (Z.shape[1] - SKEW) // (blocks * wide)
    flat, source = Z.reshape(-1), grads.reshape(-1)
    for task in prange(batch * blocks * tiles_h):
        n, jb, y = unravel3(task, blocks, tiles_h)
        for x in range(tiles_w):
            start = ((n * blocks + jb) * length + 2 * y * out_w + 2 * x) * wide
            winograd_dy(source, start, 2 * x + 1 < out_w, 2 * y + 1 < out_h, out_w, flat, (jb * width + (n * tiles_h + y) * tiles_w + x) * wide, Z.shape[1])


@parallel_kernel(cache=True)
def _winograd_weight_products(V, Z, dU, in_channels, out_channels, width):
    """dU(e, c * J' + j) = sum_t V(e, c, t) Z(e, j, t) over the tiles t (V as _winograd_inputs lays it out,
    panels of 2L tiles; Z as _winograd_grads), J' = dU's row length (2L-blocks of output channels). A
    task is one entry, block of 2L output channels and block of 12 input channels: one taps12x32 call
    over every panel (input channels past the last repeat it: computed, not written)."""
    lanes = 128 // V.itemsize
    panels = width // lanes
    jblocks = (out_channels + lanes - 1) // lanes
    cblocks = (in_channels + TILE_ROWS - 1) // TILE_ROWS
    row = jblocks * lanes
    src = V.reshape(-1)
    grads = Z.reshape(-1)
    for task in prange(16 * jblocks * cblocks):
        e, jb, cb = unravel3(task, jblocks, cblocks)
        starts = np.empty(TILE_ROWS, dtype=np.int64)
        for r in range(TILE_ROWS):
            starts[r] = e * V.shape[1] + min(cb * TILE_ROWS + r, in_channels - 1) * lanes
        valid = min(TILE_ROWS, in_channels - cb * TILE_ROWS)
        sums = np.zeros((TILE_ROWS, lanes), dtype=V.dtype)
        taps12x32(grads, e * Z.shape[1] + jb * width * lanes, 0, lanes, src, starts, 0, 1, panels, lanes, in_channels * lanes, sums.reshape(-1), 0, lanes)
        for r in range(valid):
            dU[e, (cb * TILE_ROWS + r) * row + jb * lanes : (cb * TILE_ROWS + r) * row + (jb + 1) * lanes] = sums[r]


@njit(cache=True, inline="always")
def _back(d0, d1, d2, d3):
    """A row of G^T times G along it: (d0 + (d1 + d2) / 2, (d1 - d2) / 2, (d1 + d2) / 2 + d3)."""
    return d0 + 0.5 * (d1 + d2), 0.5 * (d1 - d2), 0.5 * (d1 + d2) + d3


@parallel_kernel(cache=True)
def _winograd_weights_back(dU, in_channels, grad, nans):
    """grad(j, 9c + 3m + q) = (G^T dU(:, c, j) G)(m, q), dU(e, c * J' + j) (_winograd_weight_products).
    A task is BACK_CHANNELS output channels, whose dU values lie side by side (one output channel per
    task read a cache line per value: 12.5 ms on 512x512); nans(task) = 1 where the sum of the task's
    values is NaN: where one is NaN (also where infinities of both signs, or sums that overflow both
    ways, meet, which only costs the caller's fallback to the direct sum)."""
    out_channels = grad.shape[0]
    row = dU.shape[1] // in_channels
    for task in prange((out_channels + BACK_CHANNELS - 1) // BACK_CHANNELS):
        total = 0.0  # (of every value the task writes: NaN where one is)
        for c in range(in_channels):
            for j in range(task * BACK_CHANNELS, min(out_channels, (task + 1) * BACK_CHANNELS)):
                out = grad[j]
                at = c * row + j
                # G^T dU, column by column l: rows m = 0, 1, 2
                a0, b0, c0 = _back(dU[0, at], dU[4, at], dU[8, at], dU[12, at])
                a1, b1, c1 = _back(dU[1, at], dU[5, at], dU[9, at], dU[13, at])
                a2, b2, c2 = _back(dU[2, at], dU[6, at], dU[10, at], dU[14, at])
                a3, b3, c3 = _back(dU[3, at], dU[7, at], dU[11, at], dU[15, at])
                g0, g1, g2 = _back(a0, a1, a2, a3)  # (times G, along each row)
                g3, g4, g5 = _back(b0, b1, b2, b3)
                g6, g7, g8 = _back(c0, c1, c2, c3)
                out[9 * c], out[9 * c + 1], out[9 * c + 2] = g0, g1, g2
                out[9 * c + 3], out[9 * c + 4], out[9 * c + 5] = g3, g4, g5
                out[9 * c + 6], out[9 * c + 7], out[9 * c + 8] = g6, g7, g8
                total += ((g0 + g1) + (g2 + g3)) + ((g4 + g5) + (g6 + g7)) + g8
        if total != total:
            nans[task] = 1


BACK_CHANNELS = 16  # output channels per task of _winograd_weights_back


WEIGHT_CHANNELS = 64  # fewest input and output channels for the weight gradient through Winograd
SPLIT_CHANNELS = 128  # fewest for its step-by-step path (where the one-pass path does not apply)
FUSED_WEIGHT_CHANNELS = 128  # most input and output channels for its one-pass path (_winograd_weight_fused)
WEIGHT_BLOCKS = 384  # fewest 2x2 output blocks over the batch for it (fewer: the products' sums over
# the blocks are short, and the back-transform of 16 C_out x C_in matrices outweighs the saving)


def _fused(in_channels, out_channels):
    """Whether the weight gradient goes through _winograd_weight_fused (else step by step)."""
    return FUSED and max(in_channels, out_channels) <= FUSED_WEIGHT_CHANNELS


def winograd_weight_fits(kernel, strides, dilations, groups, batch, in_channels, out_channels, out_hw):
    """Whether conv2d's weight gradient goes through run_winograd_weight_grad. Measured at batch 8 and
    16, alternating: in one pass, 64->64 56x56 1.32-1.56x the weight-gradient tiles and 128->128 28x28
    0.96-1.29x the step-by-step path; step by step against the tiles, 128->128 28x28 1.16-1.26x,
    256->256 14x14 1.29-1.40x (64->64 56x56 0.80-0.96x); 512->512 7x7 (0.95-1.03x) stays with the
    tiles."""
    fewest = min(in_channels, out_channels)
    enough = fewest >= WEIGHT_CHANNELS and _blocks(batch, out_hw) >= WEIGHT_BLOCKS
    path = _fused(in_channels, out_channels) or fewest >= SPLIT_CHANNELS
    return winograd_fits(kernel, strides, dilations, groups, batch, in_channels, out_channels, out_hw) and enough and path


@parallel_kernel(cache=True)
def _winograd_weight_fused(x, top, left, grads, tiles_h, tiles_w, out_h, out_w, panel_chunk, group, partials, scratch):
    """The weight gradient's transforms and products a few panels at a time (for few channels, where V
    and Z of a whole batch went through L3): partials(q, e * P + c * J' + j) = sum_t V(e, c, t) Z(e, j, t)
    over the tiles t of the q-th run of `panel_chunk` panels (P = partials' row: 12-blocks of input
    channels x J'), for the caller to add in order of q (so the sums do not depend on the threads).
    A task is one run, in steps of `group` panels: V and Z of those panels into this thread's row of
    `scratch` (_panel_inputs, winograd_dy; the layouts of the step-by-step path's V and Z), then one
    taps12x32 call per entry, block of 12 input channels and block of 2L output channels, which adds
    the step's tiles to the run's sums."""
    batch, channels = x.shape[:2]
    jblocks, length, wide = grads.shape[1:]
    source = grads.reshape(-1)
    tiles = batch * tiles_h * tiles_w
    panels = (tiles + wide - 1) // wide
    row = jblocks * wide
    prow = partials.shape[1] // 16
    vrow, zrow = group * channels * wide + SKEW, jblocks * group * wide * wide + SKEW
    for q in prange(partials.shape[0]):
        sums = partials[q]
        sums[:] = 0.0
        buffer = scratch[get_thread_id()]
        V, Z = buffer[: 16 * vrow], buffer[16 * vrow : 16 * (vrow + zrow)]
        starts = np.empty(TILE_ROWS, dtype=np.int64)
        last = min(panels, (q + 1) * panel_chunk)
        for p0 in range(q * panel_chunk, last, group):
            count = min(group, last - p0)
            first, end = p0 * wide, min(tiles, (p0 + count) * wide)
            if end - first < count * wide:  # (zeros past the last tile in both: 0 * garbage need not be 0)
                V[:] = 0.0
                Z[:] = 0.0
            for i in range(count):
                runs, spans = _panel_inputs(x, top, left, tiles_h, tiles_w, p0 + i, V, i * channels * wide, wide, vrow, 0)
                for k in range(spans):  # (the same runs of tiles along rows of blocks for Z)
                    n, y, col, run, lane = runs[k, 0], runs[k, 1], runs[k, 2], runs[k, 3], runs[k, 4]
                    for s in range(run):
                        for jb in range(jblocks):
                            start = ((n * jblocks + jb) * length + 2 * y * out_w + 2 * (col + s)) * wide
                            at = (jb * group * wide + i * wide + lane + s) * wide
                            winograd_dy(source, start, 2 * (col + s) + 1 < out_w, 2 * y + 1 < out_h, out_w, Z, at, zrow)
            for e in range(16):
                for cb in range(0, channels, TILE_ROWS):
                    for r in range(TILE_ROWS):  # (input channels past the last repeat it: computed, not read)
                        starts[r] = e * vrow + min(cb + r, channels - 1) * wide
                    for jb in range(jblocks):
                        at = e * prow + cb * row + jb * wide
                        taps12x32(Z, e * zrow + jb * group * wide * wide, 0, wide, V, starts, 0, 1, count, wide, channels * wide, sums, at, row)


@parallel_kernel(cache=True)
def _sum_partials(partials, in_channels, dU):
    """dU(e, c * J' + j) = sum_q partials(q, e * P + c * J' + j), q in order (_winograd_weight_fused)."""
    length = dU.shape[1]
    prow = partials.shape[1] // 16
    for e in prange(16):
        dU[e] = partials[0, e * prow : e * prow + length]
        for q in range(1, partials.shape[0]):
            dU[e] += partials[q, e * prow : e * prow + length]


FUSED = True  # the weight gradient panel by panel where it has few channels (False: step by step)
WEIGHT_PARTIALS = 8  # runs of panels of _winograd_weight_fused (each its own sums: fixed, not per thread)
STEP_BYTES = 1 << 20  # V and Z of the panels of a step of _winograd_weight_fused (in L2)


def run_winograd_weight_grad(x4, grad4, before):
    """grad_weight (C_out, 9 C_in) of conv2d 3x3 at stride 1 (winograd_fits) from its input x4 and
    grad_output grad4 (N, C_out, H_out, W_out), padding `before` (see above); None where it holds a
    NaN (an infinite input met the transforms' differences, where the direct sum may be infinite: the
    caller then runs that)."""
    batch, in_channels = x4.shape[:2]
    out_channels, out_h, out_w = grad4.shape[1:]
    lanes = 128 // grad4.itemsize
    jblocks = -(-out_channels // lanes)
    grads = _reused("grads", (batch, jblocks, out_h * out_w, lanes), grad4.dtype)
    _channel_blocks(grad4, flat_view(grad4), 1, grads.reshape(-1))
    if _fused(in_channels, out_channels):
        tiles_h, tiles_w = -(-out_h // 2), -(-out_w // 2)
        panels = -(-batch * tiles_h * tiles_w // lanes)
        chunk = -(-panels // WEIGHT_PARTIALS)
        cpad = -(-in_channels // TILE_ROWS) * TILE_ROWS
        partials = _reused("P", (-(-panels // chunk), 16 * cpad * jblocks * lanes), grad4.dtype)
        group = max(1, STEP_BYTES // (16 * lanes * (in_channels + jblocks * lanes) * grad4.itemsize))
        size = 16 * (group * (in_channels * lanes + jblocks * lanes * lanes) + 2 * SKEW)
        scratch = _thread_rows("F", size, grad4.dtype)
        _winograd_weight_fused(contiguous(x4), before[0], before[1], grads, tiles_h, tiles_w, out_h, out_w, chunk, group, partials, scratch)
        dU = _reused("U", (16, in_channels * jblocks * lanes), grad4.dtype)
        _sum_partials(partials, in_channels, dU)
    else:
        V, tiles_h, tiles_w, width = _transformed_inputs(x4, before, (out_h, out_w), grad4.dtype)
        Z = _reused("M", (16, jblocks * width * lanes + SKEW), grad4.dtype)
        tiles = batch * tiles_h * tiles_w
        for jb in range(jblocks):  # (zeros past the last tile: V's are zero there too, but 0 * garbage need not be)
            Z[:, (jb * width + tiles) * lanes : (jb + 1) * width * lanes] = 0
        _winograd_grads(grads, tiles_h, tiles_w, out_h, out_w, Z)
        dU = _reused("U", (16, in_channels * jblocks * lanes), grad4.dtype)
        _winograd_weight_products(V, Z, dU, in_channels, out_channels, width)
    grad = np.empty((out_channels, 9 * in_channels), dtype=grad4.dtype)
    nans = np.zeros(-(-out_channels // BACK_CHANNELS), dtype=np.int64)
    _winograd_weights_back(dU, in_channels, grad, nans)
    return None if nans.any() else grad
