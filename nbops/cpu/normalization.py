"""Batch normalisation on the CPU over (N, C, L) arrays (L = product of the spatial sizes, 1 for (N, C)
input): the drivers the front calls (run_batch_norm, run_batch_norm_backward, at the end) and their
kernels.

Kernels that divide use error_model="numpy": a zero variance with eps = 0 gives inf and NaN as in
torch, not ZeroDivisionError (and the divisions vectorise).

Work is split two ways, by the shape: with long rows (L >= ROW) a task is one (i, j) row; with short
rows (an (N, C) input, 7x7 maps) a task is a block of channels over all samples (training: statistics
and normalising in one pass over memory) or a block of samples over all channels (evaluation), so that
no task is a handful of elements.
"""

import numpy as np
from numba import njit, prange

from .._arrays import contiguous
from ._parallel import parallel_kernel

ROW = 256  # rows at least this long are worth a task each
BLOCK = 16  # samples per task when rows are short (the statistics); ROW * BLOCK: values per task (normalising)
SHORT = 16  # rows shorter than this are normalised as flat samples (per-element copies of scale and shift;
# from 16 on, runs of whole rows: 2x the flat samples at 14x14 and 7x7, where one task per 16 samples
# had run batch 8 on one thread, 0.34-0.54x torch)
SPAN = 512  # flat positions per task when rows are short (statistics)
GROUP = 16  # samples summed in the input's dtype before a float64 accumulation (statistics, short rows)


@njit(parallel=True, cache=True, fastmath={"reassoc"})
def _partial_sums(x, centre, squares):
    """partial(i, j) = sum_l (x(i, j, l) - centre(j))^p, p = 2 if squares else 1: a task per (i, j) row,
    summed in the data's dtype in vector lanes (reassoc); the caller adds the rows up in float64."""
    batch, channels, length = x.shape
    partial = np.empty((batch, channels))
    for task in prange(batch * channels):
        i = task // channels
        j = task % channels
        mu = x.dtype.type(centre[j])
        total = x.dtype.type(0.0)
        row = x[i, j]
        if squares:
            for l in range(length):
                d = row[l] - mu
                total += d * d
        else:
            for l in range(length):
                total += row[l]
        partial[i, j] = total
    return partial


@njit(cache=True, inline="always")
def _column_sums(flat, e0, e1, centre, squares, total, group):
    """total(e) = sum_i (flat(i, e0 + e) - centre(e))^p, p = 2 if squares else 1, for e < e1 - e0.

    Samples are summed GROUP at a time in the input's dtype (8 float32 lanes per vector instead of 4
    float64 ones), and each group's sums are added to the float64 totals.
    """
    batch = flat.shape[0]
    width = e1 - e0
    for e in range(width):
        total[e] = 0.0
    for g0 in range(0, batch, GROUP):
        for e in range(width):
            group[e] = 0.0
        for i in range(g0, min(batch, g0 + GROUP)):
            src = flat[i, e0:e1]
            if squares:
                for e in range(width):
                    d = src[e] - centre[e]
                    group[e] += d * d
            else:
                for e in range(width):
                    group[e] += src[e]
        for e in range(width):
            total[e] += group[e]


@njit(cache=True, inline="always")
def _update_running(running_mean, running_var, j, mean, var, momentum, n):
    """torch's update of channel j's running statistics, with the unbiased variance (n values):

        running_mean(j) = (1 - momentum) * running_mean(j) + momentum * mean(C_j)
        running_var(j)  = (1 - momentum) * running_var(j)  + momentum * var(C_j) * n / (n - 1)
    """
    running_mean[j] = (1.0 - momentum) * running_mean[j] + momentum * mean
    running_var[j] = (1.0 - momentum) * running_var[j] + momentum * var * (n / (n - 1))


@parallel_kernel(cache=True, error_model="numpy")
def _train_by_channel_block(x, running_mean, running_var, weight, bias, momentum, eps, out, mean, var):
    """Training with short rows (normalise with the batch statistics, update the running ones when
    given, i.e. non-empty): a task per block of channels, over all samples, computes

        mean(C_j) = 1/(N*L) sum_{i,l} x(i, j, l),   var(C_j) = 1/(N*L) sum_{i,l} (x(i, j, l) - mean(C_j))^2

    in float64 (into mean and var), updates the running statistics (_update_running), and then
    normalises its channels
    as _batch_norm_apply does. A block's values (all N samples of
    about SPAN flat positions) are read from memory once and twice more from cache: for the variance
    (centred on the mean, in the input's dtype) and for the output; per-position sums run across
    samples in vector lanes (_column_sums).
    """
    batch, channels, length = x.shape
    flat = x.reshape((batch, channels * length))
    flat_out = out.reshape((batch, channels * length))
    per_block = max(1, SPAN // length)
    count = batch * length
    for b in prange((channels + per_block - 1) // per_block):
        j0 = b * per_block
        j1 = min(channels, j0 + per_block)
        e0, e1 = j0 * length, j1 * length
        total = np.empty(e1 - e0)
        group = np.empty(e1 - e0, dtype=x.dtype)
        centre = np.empty(e1 - e0, dtype=x.dtype)
        _column_sums(flat, e0, e1, centre, False, total, group)
        for j in range(j0, j1):
            channel_total = 0.0
            for l in range(length):
                channel_total += total[(j - j0) * length + l]
            mean[j] = channel_total / count
            for l in range(length):
                centre[(j - j0) * length + l] = mean[j]
        _column_sums(flat, e0, e1, centre, True, total, group)
        scale = group  # (reused: per position, in the input's dtype)
        shift = centre
        for j in range(j0, j1):
            channel_total = 0.0
            for l in range(length):
                channel_total += total[(j - j0) * length + l]
            var[j] = channel_total / count
            if running_mean.size:
                _update_running(running_mean, running_var, j, mean[j], var[j], momentum, count)
            s = (np.float64(weight[j]) if weight.size else 1.0) / np.sqrt(var[j] + eps)
            t = (np.float64(bias[j]) if bias.size else 0.0) - mean[j] * s
            for l in range(length):
                scale[(j - j0) * length + l] = s
                shift[(j - j0) * length + l] = t
        for i in range(batch):
            src = flat[i, e0:e1]
            dst = flat_out[i, e0:e1]
            for e in range(e1 - e0):
                dst[e] = src[e] * scale[e] + shift[e]


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


@njit(cache=True, error_model="numpy")
def _train_long_rows(x, running_mean, running_var, momentum, mean, var):
    """Training with long rows, the statistics: the same results as _train_by_channel_block's, from
    partial sums per (i, j) row in parallel, combined per channel in order (float64); the caller then
    normalises with _batch_norm_apply (a Python-level kernel: it picks serial or parallel itself)."""
    batch, channels, length = x.shape
    _combine(_partial_sums(x, np.zeros(channels), False), batch * length, mean)
    _combine(_partial_sums(x, mean, True), batch * length, var)
    if running_mean.size:
        for j in range(channels):
            _update_running(running_mean, running_var, j, mean[j], var[j], momentum, batch * length)


@parallel_kernel(cache=True, error_model="numpy")
def _batch_norm_apply(x, mean, var, weight, bias, eps, out):
    """y(i, j, l) = (x(i, j, l) - mean(C_j)) / sqrt(var(C_j) + eps) * gamma(C_j) + beta(C_j)

    gamma = weight and beta = bias, or 1 and 0 where they are empty. Folded per channel into
    y = x * scale(j) + shift(j), scale = gamma / sqrt(var + eps), shift = beta - mean * scale (as torch
    does), computed in float64 and then held in the input's dtype so the inner loop vectorises.
    """
    batch, channels, length = x.shape
    scale = np.empty(channels, dtype=x.dtype)
    shift = np.empty(channels, dtype=x.dtype)
    for j in range(channels):
        s = (np.float64(weight[j]) if weight.size else 1.0) / np.sqrt(np.float64(var[j]) + eps)
        scale[j] = s
        shift[j] = (np.float64(bias[j]) if bias.size else 0.0) - np.float64(mean[j]) * s
    if length >= SHORT:  # a task is one sample and a run of channels, about ROW * BLOCK values
        per = max(1, ROW * BLOCK // length)
        runs = (channels + per - 1) // per
        for task in prange(batch * runs):
            i = task // runs
            j0 = (task - i * runs) * per
            for j in range(j0, min(channels, j0 + per)):
                s, t = scale[j], shift[j]
                src = x[i, j]
                dst = out[i, j]
                for l in range(length):
                    dst[l] = src[l] * s + t
    else:  # rows shorter still: a sample is one flat vector, scaled by per-element copies of scale and
        # shift, a task a span of ROW * BLOCK values of it
        width = channels * length
        flat_in = x.reshape((batch, width))
        flat_out = out.reshape((batch, width))
        scale_flat = np.empty(width, dtype=x.dtype)
        shift_flat = np.empty(width, dtype=x.dtype)
        for j in prange(channels):
            scale_flat[j * length : (j + 1) * length] = scale[j]
            shift_flat[j * length : (j + 1) * length] = shift[j]
        span = ROW * BLOCK
        spans = (width + span - 1) // span
        for task in prange(batch * spans):
            i = task // spans
            e0 = (task - i * spans) * span
            src = flat_in[i, e0 : min(width, e0 + span)]
            dst = flat_out[i, e0 : min(width, e0 + span)]
            factors = scale_flat[e0:]
            terms = shift_flat[e0:]
            for e in range(src.size):
                dst[e] = src[e] * factors[e] + terms[e]


@parallel_kernel(cache=True, fastmath={"reassoc"})
def _batch_norm_backward(x, grad_out, mean, invstd, weight, batch_stats, grad_in, grad_weight, grad_bias):
    """The gradients of y(i, j, l) = xhat(i, j, l) * gamma(C_j) + beta(C_j), xhat = (x - mean(C_j)) * invstd(C_j),
    invstd = 1 / sqrt(var + eps), over M = N * L values per channel:

        grad_bias(C_j)   = sum_{i,l} grad_output(i, j, l)
        grad_weight(C_j) = sum_{i,l} grad_output(i, j, l) * xhat(i, j, l)
        grad_input(i, j, l) = gamma(C_j) * invstd(C_j) * (grad_output(i, j, l)
                               - (grad_bias(C_j) + xhat(i, j, l) * grad_weight(C_j)) / M)

    with the batch statistics (training: mean and var depend on the input); with fixed statistics
    (evaluation: the running ones, batch_stats False) the bracket is grad_output alone. gamma is 1
    where weight is empty. A task per channel; each row's sums in the data's dtype, in vector
    lanes (reassoc), added up in float64.
    """
    batch, channels, length = x.shape
    count = batch * length
    zero = x.dtype.type(0.0)
    for j in prange(channels):
        mu = mean[j]
        inv = invstd[j]
        sum_dy = 0.0
        sum_dy_xc = 0.0
        centre = x.dtype.type(mu)
        for i in range(batch):  # (a row's sums in the data's dtype, in vector lanes; the rows' in float64)
            src = x[i, j]
            dy = grad_out[i, j]
            row_dy = zero
            row_dy_xc = zero
            for l in range(length):
                row_dy += dy[l]
                row_dy_xc += dy[l] * (src[l] - centre)
            sum_dy += row_dy
            sum_dy_xc += row_dy_xc
        grad_bias[j] = sum_dy
        grad_weight[j] = sum_dy_xc * inv
        k = (np.float64(weight[j]) if weight.size else 1.0) * inv
        if batch_stats:  # (per element in the data's dtype, so that the loop vectorises)
            a = x.dtype.type(sum_dy / count)
            b = x.dtype.type(sum_dy_xc * inv * inv / count)  # grad_weight / M, times invstd for xhat
            kk = x.dtype.type(k)
            for i in range(batch):
                src = x[i, j]
                dy = grad_out[i, j]
                dst = grad_in[i, j]
                for l in range(length):
                    dst[l] = kk * (dy[l] - a - (src[l] - centre) * b)
        else:
            scale = grad_out.dtype.type(k)
            for i in range(batch):
                dy = grad_out[i, j]
                dst = grad_in[i, j]
                for l in range(length):
                    dst[l] = dy[l] * scale


# ------------------------------------------------------------------------------------------- drivers


def run_batch_norm(x3, running_mean, running_var, weight, bias, training, momentum, eps):
    """(out, mean, var) of batch_norm over x3 (N, C, L): out of x3's shape, and the statistics it
    normalised with (training: the batch mean and biased variance, float64; evaluation: the running
    ones as given). In training the running statistics, when given, are updated in place (unbiased
    variance). weight, bias, running_mean, running_var: (C,) arrays or None."""
    batch, channels, length = x3.shape
    out = np.empty(x3.shape, dtype=x3.dtype)
    if out.size == 0:
        return out, np.zeros(channels), np.ones(channels)
    x3 = contiguous(x3)
    none = np.empty(0, dtype=x3.dtype)  # the kernels read an empty vector as "not given"
    gamma = none if weight is None else contiguous(weight)
    beta = none if bias is None else contiguous(bias)
    if not training:
        mean, var = contiguous(running_mean), contiguous(running_var)
        _batch_norm_apply(x3, mean, var, gamma, beta, eps, out)
        return out, mean, var
    # the kernel updates contiguous running statistics in place; strided views go through a copy
    rm_c = none if running_mean is None else contiguous(running_mean)
    rv_c = none if running_var is None else contiguous(running_var)
    mean, var = np.empty(channels), np.empty(channels)  # the batch statistics (float64)
    if length < ROW:  # (two paths: each kernel compiles only if used)
        _train_by_channel_block(x3, rm_c, rv_c, gamma, beta, momentum, eps, out, mean, var)
    else:
        _train_long_rows(x3, rm_c, rv_c, momentum, mean, var)
        _batch_norm_apply(x3, mean, var, gamma, beta, eps, out)
    for given, updated in ((running_mean, rm_c), (running_var, rv_c)):
        if given is not None and updated is not given:
            given[...] = updated
    return out, mean, var


def run_batch_norm_backward(grad_output, x3, weight, mean, var, eps, training, needs=(True, True, True)):
    """(grad_input, grad_weight, grad_bias) of batch_norm over x3 (N, C, L), each only where `needs` says
    so (None otherwise), from run_batch_norm's statistics: the batch ones in training (they depend on
    the input), the running ones in evaluation (constants)."""
    batch, channels, length = x3.shape
    dtype = x3.dtype
    grad_input = np.empty(x3.shape, dtype=dtype)  # (the kernel writes every element)
    grad_weight = np.zeros(channels)
    grad_bias = np.zeros(channels)
    if x3.size:
        invstd = 1.0 / np.sqrt(np.asarray(var, dtype=np.float64) + eps)
        gamma = np.empty(0, dtype=dtype) if weight is None else contiguous(weight)
        _batch_norm_backward(
            contiguous(x3), contiguous(grad_output).reshape(x3.shape), np.asarray(mean, dtype=np.float64),
            invstd, gamma, training, grad_input, grad_weight, grad_bias,
        )
    return (
        grad_input if needs[0] else None,
        grad_weight.astype(dtype) if needs[1] else None,
        grad_bias.astype(dtype) if needs[2] else None,
    )
