"""Batch normalisation over (N, C, L) arrays (L = product of the spatial sizes, 1 for (N, C) input).

Work is split two ways, by the shape: with long rows (L >= ROW) a task is one (i, j) row; with short
rows (an (N, C) input, 7x7 maps) a task is a block of channels over all samples (statistics) or a block
of samples over all channels (normalising), so that no task is a handful of elements.
"""

import numpy as np
from numba import njit, prange

ROW = 256  # rows at least this long are worth a task each
BLOCK = 16  # samples per task when rows are short (normalising)
SPAN = 128  # flat positions per task when rows are short (statistics)


@njit(parallel=True, cache=True)
def _partial_sums(x, centre, squares):
    """partial(i, j) = sum_l (x(i, j, l) - centre(j))^p, p = 2 if squares else 1: a task per (i, j) row."""
    batch, channels, length = x.shape
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


@njit(parallel=True, cache=True)
def _stats_by_channel_block(x, mean, var):
    """mean and var of each channel for short rows: a task per block of channels, over all samples.

    A block's values (all N samples of about SPAN flat positions) are read once for the mean and again,
    from cache, for the variance; per-position float64 sums run across samples in vector lanes.
    """
    batch, channels, length = x.shape
    flat = x.reshape((batch, channels * length))
    per_block = max(1, SPAN // length)
    count = batch * length
    for b in prange((channels + per_block - 1) // per_block):
        j0 = b * per_block
        j1 = min(channels, j0 + per_block)
        e0, e1 = j0 * length, j1 * length
        acc = np.zeros(e1 - e0)
        for i in range(batch):
            src = flat[i, e0:e1]
            for e in range(acc.size):
                acc[e] += src[e]
        centre = np.empty(e1 - e0)
        for j in range(j0, j1):
            total = 0.0
            for l in range(length):
                total += acc[(j - j0) * length + l]
            mean[j] = total / count
            for l in range(length):
                centre[(j - j0) * length + l] = mean[j]
            for l in range(length):
                acc[(j - j0) * length + l] = 0.0
        for i in range(batch):
            src = flat[i, e0:e1]
            for e in range(acc.size):
                d = src[e] - centre[e]
                acc[e] += d * d
        for j in range(j0, j1):
            total = 0.0
            for l in range(length):
                total += acc[(j - j0) * length + l]
            var[j] = total / count


@njit(cache=True)
def _combine(partial, count, out):
    """out(j) = 1/count * sum_i partial(i, j), summed over the samples i in order."""
    batch, channels = partial.shape
    for j in range(channels):
        out[j] = 0.0
    for i in range(batch):
        for j in range(channels):
            out[j] += partial[i, j]
    for j in range(channels):
        out[j] /= count


@njit(cache=True)
def _batch_stats(x, mean, var):
    """mean(C_j) = 1/(N*L) sum_{i,l} input(i, j, l);   var(C_j) = 1/(N*L) sum_{i,l} (input(i, j, l) - mean(C_j))^2

    Two passes, accumulated in float64 (torch accumulates float32 statistics in double too): partial
    sums in parallel, then each channel's partial sums combined in order.
    """
    batch, channels, length = x.shape
    if length < ROW:
        _stats_by_channel_block(x, mean, var)
        return
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
        for j in range(channels):
            for l in range(length):
                scale_flat[j * length + l] = scale[j]
                shift_flat[j * length + l] = shift[j]
        for block in prange((batch + BLOCK - 1) // BLOCK):
            for i in range(block * BLOCK, min(batch, (block + 1) * BLOCK)):
                src = flat_in[i]
                dst = flat_out[i]
                for e in range(width):
                    dst[e] = src[e] * scale_flat[e] + shift_flat[e]
