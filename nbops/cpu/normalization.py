"""Batch normalisation over (N, C, L) arrays (L = product of the spatial sizes, 1 for (N, C) input).

Work is split two ways, by the shape: with long rows (L >= ROW) a task is one (i, j) row; with short
rows (an (N, C) input, 7x7 maps) a task is a block of samples that sweeps every channel, so that no task
is a handful of elements.
"""

import numpy as np
from numba import njit, prange

ROW = 256  # rows at least this long are worth a task each
BLOCK = 16  # samples per task when rows are short


@njit(parallel=True, cache=True)
def _partial_sums(x, centre, squares):
    """Partial sums of (x(i, j, l) - centre(j))^p over l and a group of samples i, p = 2 if squares else 1.

    Returns an array (groups, C) whose column sums are the per-channel totals: one group per sample
    when rows are long (a task per (i, j) row), BLOCK samples per group otherwise.
    """
    batch, channels, length = x.shape
    if length >= ROW:
        partial = np.empty((batch, channels))
        for task in prange(batch * channels):
            i = task // channels
            j = task % channels
            mu = centre[j]
            total = 0.0
            for l in range(length):
                d = x[i, j, l] - mu
                total += d * d if squares else d
            partial[i, j] = total
        return partial
    # Short rows: each sample is one flat vector of C * L values, accumulated element-wise into a
    # per-block vector (a loop the compiler vectorises), folded into channels at the end.
    width = channels * length
    flat = x.reshape((batch, width))
    centre_flat = np.empty(width)
    for e in range(width):
        centre_flat[e] = centre[e // length]
    blocks = (batch + BLOCK - 1) // BLOCK
    acc = np.zeros((blocks, width))
    for block in prange(blocks):
        row = acc[block]
        for i in range(block * BLOCK, min(batch, (block + 1) * BLOCK)):
            src = flat[i]
            if squares:
                for e in range(width):
                    d = src[e] - centre_flat[e]
                    row[e] += d * d
            else:
                for e in range(width):
                    row[e] += src[e]
    partial = np.zeros((blocks, channels))
    for block in range(blocks):
        for e in range(width):
            partial[block, e // length] += acc[block, e]
    return partial


@njit(cache=True)
def _combine(partial, count, out):
    """out(j) = 1/count * sum_g partial(g, j), summed over the groups g in order."""
    groups, channels = partial.shape
    for j in range(channels):
        out[j] = 0.0
    for g in range(groups):
        for j in range(channels):
            out[j] += partial[g, j]
    for j in range(channels):
        out[j] /= count


@njit(cache=True)
def _batch_stats(x, mean, var):
    """mean(C_j) = 1/(N*L) sum_{i,l} input(i, j, l);   var(C_j) = 1/(N*L) sum_{i,l} (input(i, j, l) - mean(C_j))^2

    Two passes, accumulated in float64 (torch accumulates float32 statistics in double too): partial
    sums in parallel, then each channel's partial sums combined in order.
    """
    batch, channels, length = x.shape
    _combine(_partial_sums(x, np.zeros(channels), False), batch * length, mean)
    _combine(_partial_sums(x, mean, True), batch * length, var)


@njit(parallel=True, cache=True)
def _batch_norm_apply(x, mean, var, weight, bias, eps, out):
    """y(i, j, l) = (x(i, j, l) - mean(C_j)) / sqrt(var(C_j) + eps) * gamma(C_j) + beta(C_j)

    folded per channel into y = x * scale(j) + shift(j), scale = gamma / sqrt(var + eps), shift = beta -
    mean * scale (as torch does), computed in the input's dtype so the inner loop vectorises.
    """
    batch, channels, length = x.shape
    scale = np.empty(channels, dtype=x.dtype)
    shift = np.empty(channels, dtype=x.dtype)
    for j in range(channels):
        s = weight[j] / np.sqrt(var[j] + eps)
        scale[j] = s
        shift[j] = bias[j] - mean[j] * s
    if length >= ROW:
        for task in prange(batch * channels):
            i = task // channels
            j = task % channels
            s, t = scale[j], shift[j]
            src = x[i, j]
            dst = out[i, j]
            for l in range(length):
                dst[l] = src[l] * s + t
    else:  # short rows: a sample is one flat vector, scaled by per-element copies of scale and shift
        width = channels * length
        flat_in = x.reshape((batch, width))
        flat_out = out.reshape((batch, width))
        scale_flat = np.empty(width, dtype=x.dtype)
        shift_flat = np.empty(width, dtype=x.dtype)
        for e in range(width):
            scale_flat[e] = scale[e // length]
            shift_flat[e] = shift[e // length]
        for block in prange((batch + BLOCK - 1) // BLOCK):
            for i in range(block * BLOCK, min(batch, (block + 1) * BLOCK)):
                src = flat_in[i]
                dst = flat_out[i]
                for e in range(width):
                    dst[e] = src[e] * scale_flat[e] + shift_flat[e]
