"""Cross entropy and mean squared error. Logits come as (P, C): one row per position (sample, or pixel)."""

import numpy as np
from numba import njit, prange

from ._exp import fast_exp


@njit(cache=True, inline="always")
def _row_max(row):
    """max_c row(c) (NaNs are skipped here; they make the caller's sum NaN anyway).

    Eight running maxima instead of one: a single one is a chain of dependent compares, one per
    element; eight independent ones let the compiler run them in one vector register.
    """
    n = row.size
    if n < 8:
        top = row[0]
        for c in range(1, n):
            top = row[c] if row[c] > top else top
        return top
    lanes = np.empty(8, dtype=row.dtype)
    for k in range(8):
        lanes[k] = row[k]
    full = n - n % 8
    for c in range(8, full, 8):
        for k in range(8):
            v = row[c + k]
            lanes[k] = v if v > lanes[k] else lanes[k]
    top = lanes[0]
    for k in range(1, 8):
        top = lanes[k] if lanes[k] > top else top
    for c in range(full, n):
        top = row[c] if row[c] > top else top
    return top


@njit(cache=True, inline="always")
def _log_sum_exp(row):
    """log(sum_c exp(row(c))), stable: the max is taken out before exponentiating.

    Computed in the row's dtype (torch's float32 log_softmax is float32 too), so float32 uses the
    vectorisable exp. An infinite max makes row - top NaN somewhere, and the loss NaN, as in torch.
    """
    top = _row_max(row)
    total = top - top  # zero in the row's dtype (NaN if top is infinite or NaN)
    for c in range(row.size):
        total += fast_exp(row[c] - top)
    return top + np.log(total)


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _cross_entropy_class(x, target, weight, ignore_index, label_smoothing, loss, target_weight):
    """For class-index targets, per position p (a row of x: one sample, or one pixel of one sample)
    with t = target(p) != ignore_index:

        log p_c   = x(p, c) - log(sum_c' exp(x(p, c')))
        nll       = -weight(t) * log p_t
        smooth    = -sum_c weight(c) * log p_c                     (only computed when eps > 0)
        loss(p)   = (1 - eps) * nll + eps / C * smooth              (eps = label_smoothing)
        target_weight(p) = weight(t)                                (the denominator of the weighted mean)

    and both are 0 where t == ignore_index. Targets are checked to be in range by the caller. torch
    divides its nll and smoothing sums by the same denominator, so the mean is sum(loss) / sum(target_weight).
    `reassoc` lets the sums over classes run in vector lanes (a different order of the same terms),
    `contract` lets a * b + c become one fused multiply-add; neither changes how NaN and inf behave.
    """
    for p in prange(x.shape[0]):
        t = target[p]
        if t == ignore_index:
            loss[p] = 0.0
            target_weight[p] = 0.0
            continue
        row = x[p]
        lse = _log_sum_exp(row)
        nll = -weight[t] * (row[t] - lse)
        target_weight[p] = weight[t]
        if label_smoothing > 0:
            total = 0.0
            for c in range(row.size):
                total += weight[c] * (row[c] - lse)
            loss[p] = (1.0 - label_smoothing) * nll - label_smoothing / row.size * total
        else:
            loss[p] = nll


@njit(parallel=True, cache=True, fastmath={"reassoc", "contract"})
def _cross_entropy_prob(x, target, weight, label_smoothing, loss):
    """For class-probability targets, per position p:

        loss(p) = -sum_c weight(c) * log p_c * q_c,   q_c = target(p, c) * (1 - eps) + eps / C
    """
    classes = x.shape[1]
    for p in prange(x.shape[0]):
        if classes == 0:
            loss[p] = 0.0
            continue
        row = x[p]
        lse = _log_sum_exp(row)
        total = 0.0
        for c in range(classes):
            q = target[p, c] * (1.0 - label_smoothing) + label_smoothing / classes
            total += weight[c] * (row[c] - lse) * q
        loss[p] = -total


@njit(cache=True)
def _block_sum(values, b, block):
    """sum of values[b * block : (b + 1) * block] in float64, in order."""
    total = 0.0
    for i in range(b * block, min(values.size, (b + 1) * block)):
        total += values[i]
    return total


@njit(parallel=True, cache=True)
def _sum_parallel(values):
    block = 4096
    blocks = (values.size + block - 1) // block
    partial = np.zeros(blocks)
    for b in prange(blocks):
        partial[b] = _block_sum(values, b, block)
    total = 0.0
    for b in range(blocks):
        total += partial[b]
    return total


@njit(cache=True)
def _sum(values):
    """sum_i values_i in float64, in fixed blocks of 4096 so the result does not depend on the thread
    count; blocks are summed in parallel only when there are several (a parallel launch costs more than
    summing a few thousand values)."""
    if values.size <= 4096:
        return _block_sum(values, 0, 4096)
    return _sum_parallel(values)


@njit(parallel=True, cache=True)
def _squared_error(x, y, weight, weighted, out):
    """l_n = w_n * (x_n - y_n)^2   (w_n = 1 when not weighted)"""
    if weighted:  # two loops rather than a test per element, so that each one vectorises
        for n in prange(x.size):
            d = x[n] - y[n]
            out[n] = d * d * weight[n]
    else:
        for n in prange(x.size):
            d = x[n] - y[n]
            out[n] = d * d


@njit(parallel=True, cache=True)
def _squared_error_sum(x, y, weight, weighted):
    """sum_n w_n (x_n - y_n)^2 in float64 (w_n = 1 when not weighted), blocked like _sum."""
    block = 4096
    blocks = (x.size + block - 1) // block
    partial = np.zeros(blocks)
    for b in prange(blocks):
        total = 0.0
        for n in range(b * block, min(x.size, (b + 1) * block)):
            d = np.float64(x[n]) - np.float64(y[n])
            if weighted:
                total += weight[n] * d * d
            else:
                total += d * d
        partial[b] = total
    total = 0.0
    for b in range(blocks):
        total += partial[b]
    return total
