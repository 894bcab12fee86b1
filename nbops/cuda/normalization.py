"""Batch normalisation on the GPU over (N, C, L) arrays: one block per channel for the batch statistics
(a tree reduction in shared memory, float64), one thread per element to normalise."""

import math

import numpy as np
from numba import cuda, float64

from ._device import Place, launch, launch_blocks, unravel3

BLOCK = 128  # threads of a statistics block (a power of two: the tree reduction halves it)


@cuda.jit(device=True)
def _block_sum(partial, t, value):
    """sum over the block's threads of `value` (each thread passes its own), in shared memory."""
    partial[t] = value
    cuda.syncthreads()
    step = BLOCK // 2
    while step > 0:
        if t < step:
            partial[t] += partial[t + step]
        cuda.syncthreads()
        step //= 2
    total = partial[0]
    cuda.syncthreads()
    return total


@cuda.jit(cache=True)
def _statistics(x, mean, var, running_mean, running_var, track, momentum):
    """Block j: mean(C_j) = 1/(N*L) sum_{i,l} x(i, j, l), var(C_j) = 1/(N*L) sum_{i,l} (x(i, j, l) - mean(C_j))^2
    in float64; with track, the running statistics too (unbiased variance, M = N*L values):
    running_mean(j) = (1 - momentum) * running_mean(j) + momentum * mean(C_j),
    running_var(j)  = (1 - momentum) * running_var(j)  + momentum * var(C_j) * M / (M - 1)."""
    batch, channels, length = x.shape
    j = cuda.blockIdx.x
    t = cuda.threadIdx.x
    count = batch * length
    partial = cuda.shared.array(BLOCK, float64)
    total = 0.0
    for e in range(t, count, BLOCK):
        i = e // length
        total += x[i, j, e - i * length]
    mu = _block_sum(partial, t, total) / count
    total = 0.0
    for e in range(t, count, BLOCK):
        i = e // length
        d = x[i, j, e - i * length] - mu
        total += d * d
    sigma2 = _block_sum(partial, t, total) / count
    if t == 0:
        mean[j] = mu
        var[j] = sigma2
        if track:
            running_mean[j] = (1.0 - momentum) * running_mean[j] + momentum * mu
            running_var[j] = (1.0 - momentum) * running_var[j] + momentum * sigma2 * (count / (count - 1.0))


@cuda.jit(cache=True)
def _normalize(x, mean, var, weight, has_weight, bias, has_bias, eps, out):
    """y(i, j, l) = (x(i, j, l) - mean(C_j)) / sqrt(var(C_j) + eps) * gamma(C_j) + beta(C_j)

    (gamma, beta = weight, bias, or 1 and 0), as y = x * scale + shift with scale = gamma / sqrt(var +
    eps) and shift = beta - mean * scale in float64, as on the CPU."""
    batch, channels, length = x.shape
    for e in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        i, j, l = unravel3(e, channels, length)
        scale = (float64(weight[j]) if has_weight else 1.0) / math.sqrt(float64(var[j]) + eps)
        shift = (float64(bias[j]) if has_bias else 0.0) - float64(mean[j]) * scale
        out[i, j, l] = x[i, j, l] * scale + shift


def run_batch_norm(x3, running_mean, running_var, weight, bias, training, momentum, eps):
    """batch_norm on the GPU: nbops/cpu/normalization.py's run_batch_norm, same arguments and results (the
    statistics as device arrays: gradients run on the CPU backend only)."""
    place = Place(x3)
    batch, channels, length = x3.shape
    x = place.array(x3)
    out, handle = place.empty(x3.shape, x.dtype)
    if x.size == 0:
        return place.give(handle), None, None
    placeholder = cuda.to_device(np.zeros(1, dtype=x.dtype), stream=place.stream)
    gamma = place.array(weight) if weight is not None else placeholder
    beta = place.array(bias) if bias is not None else placeholder
    if training:
        mean = cuda.device_array(channels, dtype=np.float64, stream=place.stream)
        var = cuda.device_array(channels, dtype=np.float64, stream=place.stream)
        track = running_mean is not None
        rm = place.array(running_mean) if track else placeholder
        rv = place.array(running_var) if track else placeholder
        launch_blocks(_statistics, channels, BLOCK, place, x, mean, var, rm, rv, track, float(momentum))
        if track:
            place.write_back(running_mean, rm)
            place.write_back(running_var, rv)
    else:
        mean, var = place.array(running_mean), place.array(running_var)
    launch(_normalize, x.size, place, x, mean, var, gamma, weight is not None, beta, bias is not None, float(eps), out)
    return place.give(handle), mean, var
