"""Batch normalisation over (N, C, L) arrays (L = product of the spatial sizes, 1 for (N, C) input)."""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _batch_stats(x, mean, var):
    """mean(C_j) = 1/(N*L) sum_{i,l} input(i, j, l);   var(C_j) = 1/(N*L) sum_{i,l} (input(i, j, l) - mean(C_j))^2

    Two passes, accumulated in float64 (torch accumulates float32 statistics in double too). Each pass
    sums one (i, j) row per task, then combines the N partial sums of a channel in order.
    """
    batch, channels, length = x.shape
    partial = np.zeros((batch, channels))
    for task in prange(batch * channels):
        i = task // channels
        j = task % channels
        total = 0.0
        for l in range(length):
            total += x[i, j, l]
        partial[i, j] = total
    count = batch * length
    for j in range(channels):
        total = 0.0
        for i in range(batch):
            total += partial[i, j]
        mean[j] = total / count
    for task in prange(batch * channels):
        i = task // channels
        j = task % channels
        mu = mean[j]
        total = 0.0
        for l in range(length):
            d = x[i, j, l] - mu
            total += d * d
        partial[i, j] = total
    for j in range(channels):
        total = 0.0
        for i in range(batch):
            total += partial[i, j]
        var[j] = total / count


@njit(parallel=True, cache=True)
def _batch_norm_apply(x, mean, var, weight, bias, eps, out):
    """y(i, j, l) = (x(i, j, l) - mean(C_j)) / sqrt(var(C_j) + eps) * gamma(C_j) + beta(C_j)

    folded per channel into y = x * scale + shift, scale = gamma / sqrt(var + eps) (as torch does).
    """
    batch, channels, length = x.shape
    for task in prange(batch * channels):
        j = task % channels
        scale = weight[j] / np.sqrt(var[j] + eps)
        shift = bias[j] - mean[j] * scale
        xi = x[task // channels, j]
        yi = out[task // channels, j]
        for l in range(length):
            yi[l] = xi[l] * scale + shift
