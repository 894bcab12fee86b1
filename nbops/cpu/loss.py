"""Cross entropy and mean squared error. Inputs are (N, C, L) logits (L = product of d1..dk, 1 without)."""

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _log_sum_exp(x, i, l, classes):
    """log(sum_c exp(x(i, c, l))), stable: the max is taken out before exponentiating."""
    top = -np.inf
    for c in range(classes):
        if x[i, c, l] > top:
            top = x[i, c, l]
    # An infinite max makes x - top NaN somewhere, and the loss NaN, exactly as torch's log_softmax does.
    total = 0.0
    for c in range(classes):
        total += np.exp(x[i, c, l] - top)
    return top + np.log(total)


@njit(parallel=True, cache=True)
def _cross_entropy_class(x, target, weight, ignore_index, nll, smooth, target_weight):
    """For class-index targets, per position (i, l) with t = target(i, l) != ignore_index:

        log p_c     = x(i, c, l) - log(sum_c' exp(x(i, c', l)))
        nll(i, l)    = -weight(t) * log p_t
        smooth(i, l) = -sum_c weight(c) * log p_c          (the label-smoothing term)
        target_weight(i, l) = weight(t)                     (the denominator of the weighted mean)

    and all three are 0 where t == ignore_index. Targets are checked to be in range by the caller.
    """
    batch, classes, length = x.shape
    for task in prange(batch * length):
        i = task // length
        l = task % length
        t = target[i, l]
        if t == ignore_index:
            nll[i, l] = 0.0
            smooth[i, l] = 0.0
            target_weight[i, l] = 0.0
            continue
        lse = _log_sum_exp(x, i, l, classes)
        total = 0.0
        for c in range(classes):
            total += weight[c] * (x[i, c, l] - lse)
        nll[i, l] = -weight[t] * (x[i, t, l] - lse)
        smooth[i, l] = -total
        target_weight[i, l] = weight[t]


@njit(parallel=True, cache=True)
def _cross_entropy_prob(x, target, weight, label_smoothing, loss):
    """For class-probability targets, per position (i, l):

        loss(i, l) = -sum_c weight(c) * log p_c * q_c,   q_c = target(i, c, l) * (1 - eps) + eps / C
    """
    batch, classes, length = x.shape
    for task in prange(batch * length):
        i = task // length
        l = task % length
        lse = _log_sum_exp(x, i, l, classes)
        total = 0.0
        for c in range(classes):
            q = target[i, c, l] * (1.0 - label_smoothing) + label_smoothing / classes
            total += weight[c] * (x[i, c, l] - lse) * q
        loss[i, l] = -total


@njit(parallel=True, cache=True)
def _sum(values):
    """sum_i values_i in float64, in fixed blocks so the result does not depend on the thread count."""
    block = 4096
    blocks = (values.size + block - 1) // block
    partial = np.zeros(blocks)
    for b in prange(blocks):
        total = 0.0
        for i in range(b * block, min(values.size, (b + 1) * block)):
            total += values[i]
        partial[b] = total
    total = 0.0
    for b in range(blocks):
        total += partial[b]
    return total


@njit(parallel=True, cache=True)
def _squared_error(x, y, weight, weighted, out):
    """l_n = w_n * (x_n - y_n)^2   (w_n = 1 when not weighted)"""
    for n in prange(x.size):
        d = x[n] - y[n]
        if weighted:
            out[n] = d * d * weight[n]
        else:
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
