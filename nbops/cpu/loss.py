"""Cross entropy and mean squared error on the CPU: the kernels, then the drivers the front calls
(run_cross_entropy, run_mse_loss and their backward passes). Logits come as (P, C): one row per
position (sample, or pixel)."""

import math

import numpy as np
from numba import njit, prange

from .._arrays import contiguous
from ._exp import fast_exp
from ._intrinsics import maximum
from ._parallel import parallel_kernel
from .activation import CHUNK


@njit(cache=True, inline="always")
def _row_max(row):
    """max_c row(c), NaN if any row(c) is NaN (llvm.maximum: a reduction that vectorises)."""
    top = row[0]
    for c in range(1, row.size):
        top = maximum(top, row[c])
    return top


@njit(cache=True, inline="always")
def _log_sum_exp(row):
    """log(sum_c exp(row(c))), stable: the max is taken out before exponentiating.

    Computed in the row's dtype (torch's float32 log_softmax is float32 too), so float32 uses the
    vectorisable exp. A NaN or infinite max makes the result NaN, as in torch (where row - max is NaN
    for some c); otherwise every row(c) - max is <= 0 and not NaN (fast_exp's exp(-87) = 1.6e-38 for
    anything less cannot change a sum that holds exp(0) = 1).
    """
    top = _row_max(row)
    if not np.isfinite(top):
        return top - top  # NaN in the row's dtype
    total = top - top  # zero in the row's dtype
    for c in range(row.size):
        total += fast_exp(row[c] - top)
    return top + np.log(total)


@parallel_kernel(cache=True, fastmath={"reassoc", "contract"})
def _cross_entropy_class(x, target, weight, ignore_index, label_smoothing, loss, target_weight):
    """For class-index targets, per position p (a row of x: one sample, or one pixel of one sample)
    with t = target(p) != ignore_index:

        log p_c   = x(p, c) - log(sum_c' exp(x(p, c')))
        nll       = -w(t) * log p_t
        smooth    = -sum_c w(c) * log p_c                          (only computed when eps > 0)
        loss(p)   = (1 - eps) * nll + eps / C * smooth              (eps = label_smoothing)
        target_weight(p) = w(t)                                     (the denominator of the weighted mean)

    with w = weight, or 1 when weight is empty; both are 0 where t == ignore_index. torch divides its
    nll and smoothing sums by the same denominator, so the mean is sum(loss) / sum(target_weight).

    Returns (the first position whose target is neither in [0, C) nor ignore_index, or P if none;
    sum_p loss(p); sum_p target_weight(p)), the sums in float64 over fixed blocks of positions, so
    that they do not depend on the thread count. Done here rather than in separate passes because at
    ImageNet sizes (256 x 1000) each extra pass or call costs about as much as a tenth of the work.
    `reassoc` lets the sums over classes run in vector lanes (a different order of the same terms),
    `contract` lets a * b + c become one fused multiply-add; neither changes how NaN and inf behave.
    """
    positions, classes = x.shape
    weighted = weight.size > 0
    rows = max(1, 4096 // max(classes, 1))  # positions per block: about 4096 logits
    blocks = (positions + rows - 1) // rows
    # np.empty, not np.zeros or np.full: under parallel=True those become parallel loops of their own,
    # each costing a thread launch (several microseconds)
    loss_sums = np.empty(blocks)
    weight_sums = np.empty(blocks)
    first_bad = np.empty(blocks, dtype=np.int64)
    for b in prange(blocks):
        loss_sum = 0.0
        weight_sum = 0.0
        first_bad[b] = positions
        for p in range(b * rows, min(positions, (b + 1) * rows)):
            t = target[p]
            if t == ignore_index or t < 0 or t >= classes:
                if t != ignore_index and first_bad[b] == positions:
                    first_bad[b] = p
                loss[p] = 0.0
                target_weight[p] = 0.0
                continue
            row = x[p]
            lse = _log_sum_exp(row)
            w = weight[t] if weighted else 1.0
            nll = -w * (row[t] - lse)
            if label_smoothing > 0:
                total = 0.0
                if weighted:
                    for c in range(classes):
                        total += weight[c] * (row[c] - lse)
                else:  # sum_c (x(p, c) - lse), summed in the row's dtype, like torch's float32 sum
                    row_sum = lse - lse
                    for c in range(classes):
                        row_sum += row[c]
                    total = row_sum - classes * lse
                nll = (1.0 - label_smoothing) * nll - label_smoothing / classes * total
            loss[p] = nll
            target_weight[p] = w
            loss_sum += nll
            weight_sum += w
        loss_sums[b] = loss_sum
        weight_sums[b] = weight_sum
    loss_total = 0.0
    weight_total = 0.0
    bad = positions
    for b in range(blocks):
        loss_total += loss_sums[b]
        weight_total += weight_sums[b]
        bad = min(bad, first_bad[b])
    return bad, loss_total, weight_total


@parallel_kernel(cache=True, fastmath={"reassoc", "contract"})
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


@njit(cache=True, fastmath={"reassoc"})
def _block_sum(values, b, block):
    """sum of values[b * block : (b + 1) * block] in float64 (`reassoc`: in vector lanes, a fixed order
    for a given block, so results stay reproducible)."""
    total = 0.0
    for i in range(b * block, min(values.size, (b + 1) * block)):
        total += values[i]
    return total


@njit(parallel=True, cache=True)
def _sum_parallel(values):
    block = 4096
    blocks = (values.size + block - 1) // block
    partial = np.empty(blocks)  # (np.zeros would be a parallel loop of its own)
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


@parallel_kernel(cache=True)
def _squared_error(x, y, weight, weighted, out):
    """l_n = w_n * (x_n - y_n)^2   (w_n = 1 when not weighted)"""
    for b in prange((x.size + CHUNK - 1) // CHUNK):  # fixed chunks: measured ~10% faster than a flat prange
        start, stop = b * CHUNK, min(x.size, (b + 1) * CHUNK)
        xs, ys, dst = x[start:stop], y[start:stop], out[start:stop]
        if weighted:  # two loops rather than a test per element, so that each one vectorises
            ws = weight[start:stop]
            for n in range(dst.size):
                d = xs[n] - ys[n]
                dst[n] = d * d * ws[n]
        else:
            for n in range(dst.size):
                d = xs[n] - ys[n]
                dst[n] = d * d


@parallel_kernel(cache=True, fastmath={"reassoc", "contract"})
def _squared_error_sum(x, y, weight, weighted):
    """sum_n w_n (x_n - y_n)^2 in float64 (w_n = 1 when not weighted), blocked like _sum; `reassoc` lets
    each block's sum run in vector lanes (without it a float64 sum is one long dependent chain)."""
    block = 4096
    blocks = (x.size + block - 1) // block
    partial = np.empty(blocks)  # (np.zeros would be a parallel loop of its own)
    for b in prange(blocks):
        start = b * block
        stop = min(x.size, start + block)
        total = 0.0
        if weighted:  # two loops rather than a test per element, so that each one vectorises
            for n in range(start, stop):
                d = np.float64(x[n]) - np.float64(y[n])
                total += weight[n] * d * d
        else:
            for n in range(start, stop):
                d = np.float64(x[n]) - np.float64(y[n])
                total += d * d
        partial[b] = total
    total = 0.0
    for b in range(blocks):
        total += partial[b]
    return total


# --------------------------------------------------------------------------------------------- gradients


@parallel_kernel(cache=True, fastmath={"reassoc", "contract"})
def _cross_entropy_class_backward(x, target, weight, ignore_index, label_smoothing, scale, grad):
    """The gradient of _cross_entropy_class's loss(p) with respect to the logits x(p, c), times scale(p)
    (the output's gradient, divided by the mean's denominator for reduction='mean'):

        d loss(p) / d x(p, c) = p_c * ((1 - eps) * w(t) + eps / C * sum_c' w(c'))
                                - (1 - eps) * w(t) * [c == t] - eps / C * w(c)

    p_c = exp(x(p, c) - log(sum_c' exp(x(p, c')))) the softmax, t = target(p), w = weight (in x's dtype;
    all ones when the loss has none); 0 for the whole row where t == ignore_index. (From
    d(-log p_j)/d x(p, c) = p_c - [c == j], summed over the loss's terms.) The per-class loop runs in
    x's dtype with the vectorisable exp, as the forward pass does.
    """
    positions, classes = x.shape
    weight_sum = 0.0
    for c in range(classes):
        weight_sum += weight[c]
    for p in prange(positions):
        t = target[p]
        dst = grad[p]
        if t == ignore_index:
            for c in range(classes):
                dst[c] = 0.0
            continue
        row = x[p]
        lse = _log_sum_exp(row)
        s = scale[p]
        w_t = np.float64(weight[t])
        share = row.dtype.type(s * ((1.0 - label_smoothing) * w_t + label_smoothing / classes * weight_sum))
        smooth = row.dtype.type(s * label_smoothing / classes)
        _softmax_terms(row, lse, share, smooth, weight, dst)
        dst[t] -= s * (1.0 - label_smoothing) * w_t


@njit(cache=True, fastmath={"reassoc", "contract"})
def _softmax_terms(row, lse, share, smooth, weight, dst):
    """dst(c) = share * exp(row(c) - lse) - smooth * weight(c), in the row's dtype. (A function of its
    own, as it was written when fast_exp could not be inlined twice in one loop; LLVM inlines the call.)"""
    for c in range(row.size):
        dst[c] = share * fast_exp(row[c] - lse) - smooth * weight[c]


@parallel_kernel(cache=True, fastmath={"reassoc", "contract"})
def _cross_entropy_prob_backward(x, target, weight, label_smoothing, scale, grad_x, want_target, grad_target):
    """The gradients of _cross_entropy_prob's loss(p) = -sum_c w(c) * q_c * log p_c, times scale(p):

        d loss(p) / d x(p, c)      = p_c * sum_c' w(c') * q_c' - w(c) * q_c
        d loss(p) / d target(p, c) = -(1 - eps) * w(c) * log p_c            (when want_target)

    q_c = target(p, c) * (1 - eps) + eps / C, p_c the softmax of row p.
    """
    classes = x.shape[1]
    for p in prange(x.shape[0]):
        row = x[p]
        lse = _log_sum_exp(row)
        s = scale[p]
        mass = 0.0
        for c in range(classes):
            mass += weight[c] * (target[p, c] * (1.0 - label_smoothing) + label_smoothing / classes)
        for c in range(classes):
            q = target[p, c] * (1.0 - label_smoothing) + label_smoothing / classes
            grad_x[p, c] = s * (np.exp(np.float64(row[c] - lse)) * mass - weight[c] * q)
            if want_target:
                grad_target[p, c] = -s * (1.0 - label_smoothing) * weight[c] * (row[c] - lse)


@parallel_kernel(cache=True)
def _squared_error_backward(x, y, weight, weighted, scale, per_element, grad_x, want_weight, grad_weight):
    """The gradients of l_n = w_n * (x_n - y_n)^2 (w_n = 1 when not weighted), times s_n = scale(n)
    (per_element) or scale(0):

        d l / d x_n = 2 * w_n * (x_n - y_n) * s_n          (and d l / d y_n = -d l / d x_n)
        d l / d w_n = (x_n - y_n)^2 * s_n                   (when want_weight)

    (The weighted mean sum(l) / sum(w) adds -mean / sum(w) to each weight's gradient: the caller does,
    once per weight element, after summing over broadcast copies.) In the data's dtype, one loop per
    case so that each vectorises.
    """
    two = x.dtype.type(2.0)
    for b in prange((x.size + CHUNK - 1) // CHUNK):
        start, stop = b * CHUNK, min(x.size, (b + 1) * CHUNK)
        xs, ys, gx = x[start:stop], y[start:stop], grad_x[start:stop]
        if per_element:
            ss = scale[start:stop]
            if weighted:
                ws = weight[start:stop]
                for n in range(gx.size):
                    gx[n] = two * ws[n] * (xs[n] - ys[n]) * ss[n]
            else:
                for n in range(gx.size):
                    gx[n] = two * (xs[n] - ys[n]) * ss[n]
        else:
            factor = x.dtype.type(2.0 * scale[0])
            if weighted:
                ws = weight[start:stop]
                for n in range(gx.size):
                    gx[n] = factor * ws[n] * (xs[n] - ys[n])
            else:
                for n in range(gx.size):
                    gx[n] = factor * (xs[n] - ys[n])
        if want_weight:
            gw = grad_weight[start:stop]
            for n in range(gw.size):
                d = xs[n] - ys[n]
                gw[n] = d * d * (scale[start + n] if per_element else scale[0])


# ------------------------------------------------------------------------------------------- drivers
# What the front calls: run_cross_entropy, run_mse_loss and their backward passes, on checked NumPy
# arrays. Losses are summed in float64 and returned in the data's dtype: a 0-d array for 'mean' and
# 'sum', the per-position losses for 'none'.

_NO_WEIGHT = np.empty(0)  # the kernels read an empty weight as "no weight" (every w(c) = 1)


def _scalar(value: float, dtype) -> np.ndarray:
    return np.asarray(value, dtype=dtype)


def _divide(numerator: float, denominator: float) -> float:
    """numerator / denominator with IEEE rules (x/0 = +-inf, 0/0 = nan) rather than ZeroDivisionError."""
    if denominator != 0:
        return numerator / denominator
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(numerator) / np.float64(denominator))


def _class_rows(array: np.ndarray, batch: int, classes: int, length: int) -> np.ndarray:
    """(N, C, d1, ..., dk) -> (N * L, C), C-contiguous: one row of class scores per position.

    Free for (N, C) and (C,) inputs; spatial inputs get one transposing copy, so that the kernels always
    read contiguous rows.
    """
    if length == 1:
        return contiguous(array).reshape(batch, classes)
    rows = contiguous(array).reshape(batch, classes, length)
    return contiguous(np.swapaxes(rows, 1, 2)).reshape(batch * length, classes)


def _from_class_rows(rows: np.ndarray, shape: tuple) -> np.ndarray:
    """The inverse of _class_rows: (N * L, C) rows -> an array of the input's shape (N = 0 included)."""
    if len(shape) <= 2:
        return rows.reshape(shape)
    batch, classes = shape[0], shape[1]
    length = math.prod(shape[2:])
    return contiguous(np.swapaxes(rows.reshape(batch, length, classes), 1, 2)).reshape(shape)


def _probability_rows(x, target, weight, shape3, dtype):
    """What the class-probability kernels read: logits and probabilities as (N * L, C) rows in `dtype`,
    and the class weights in float64 (ones when absent)."""
    batch, classes, length = shape3
    return (
        _class_rows(x.astype(dtype, copy=False), batch, classes, length),
        _class_rows(target.astype(dtype, copy=False), batch, classes, length),
        np.ones(classes) if weight is None else weight.astype(np.float64),
    )


def run_cross_entropy(x, target, weight, shape3, out_shape, reduction, smoothing, ignore_index, dtype):
    """cross_entropy of logits x (shape3 = (N, C, L) as N samples of C classes at L positions) against
    class-index targets (ignore_index an int) or class probabilities of x's shape (ignore_index None),
    computed in `dtype`; weight (C,) or None. A class index outside [0, C) is an IndexError."""
    batch, classes, length = shape3
    losses = np.empty(batch * length)
    if ignore_index is None:  # class probabilities: the mean is over positions
        if losses.size:
            _cross_entropy_prob(*_probability_rows(x, target, weight, shape3, dtype), smoothing, losses)
        if reduction == "none":
            return losses.astype(dtype).reshape(out_shape)
        total = _sum(losses) if losses.size else 0.0
        if reduction == "sum":
            return _scalar(total, dtype)
        return _scalar(total / losses.size if losses.size else math.nan, dtype)
    flat_target = target.astype(np.int64, copy=False).reshape(-1)
    target_weight = np.empty(losses.size)
    first_bad, total, denominator = losses.size, 0.0, 0.0
    if losses.size:
        first_bad, total, denominator = _cross_entropy_class(
            _class_rows(x, batch, classes, length),
            flat_target,
            _NO_WEIGHT if weight is None else weight.astype(np.float64),
            ignore_index,
            smoothing,
            losses,
            target_weight,
        )
    if first_bad < losses.size:
        raise IndexError(f"cross_entropy: target {int(flat_target[first_bad])} is out of bounds for {classes} classes")
    if reduction == "none":
        return losses.astype(dtype).reshape(out_shape)
    if reduction == "mean":
        total = _divide(total, denominator)  # every target ignored: 0/0 = nan, as in torch
    return _scalar(total, dtype)


def _loss_scale(grad_output: np.ndarray, reduction: str, denominator: float) -> tuple[np.ndarray, bool]:
    """What each position's loss gradient is multiplied by: grad_output per position ('none'), or one
    value for all, grad_output ('sum') or grad_output / denominator ('mean'); and whether it is per
    position."""
    if reduction == "none":
        return contiguous(grad_output).reshape(-1).astype(np.float64), True
    value = float(grad_output.reshape(()))
    if reduction == "mean":
        value = _divide(value, denominator)
    return np.full(1, value), False


def run_cross_entropy_backward(
    grad_output, x, target, weight, shape3, out_shape, reduction, smoothing, ignore_index, dtype, needs=(True, False)
):
    """(grad_input, grad_target) of cross_entropy, run_cross_entropy's arguments after grad_output (0-d,
    or out_shape for 'none'); grad_target only for class-probability targets (None otherwise, and where
    `needs` does not ask for it)."""
    batch, classes, length = shape3
    positions = batch * length
    if ignore_index is None:
        denominator = float(positions)
    elif reduction == "mean":  # the sum of the targets' weights, as the forward pass divided by
        flat_target = target.astype(np.int64, copy=False).reshape(-1)
        kept = flat_target[flat_target != ignore_index]
        denominator = float(kept.size if weight is None else weight.astype(np.float64)[kept].sum())
    else:
        denominator = 1.0
    scale, per_position = _loss_scale(np.asarray(grad_output), reduction, denominator)
    if not per_position:  # (the kernels read one value per position: rows, not elements)
        scale = np.full(positions, scale[0])
    if ignore_index is None:
        grad_x = np.zeros((positions, classes), dtype=dtype)
        grad_t = np.zeros((positions, classes) if needs[1] else (1, 1), dtype=dtype)
        if grad_x.size:
            _cross_entropy_prob_backward(
                *_probability_rows(x, target, weight, shape3, dtype), smoothing, scale, grad_x, bool(needs[1]), grad_t
            )
        grad_input = _from_class_rows(grad_x, x.shape).astype(x.dtype, copy=False) if needs[0] else None
        grad_target = _from_class_rows(grad_t, target.shape).astype(target.dtype, copy=False) if needs[1] else None
        return grad_input, grad_target
    grad_x = np.zeros((positions, classes), dtype=x.dtype)
    if grad_x.size:
        _cross_entropy_class_backward(
            _class_rows(x, batch, classes, length),
            contiguous(target.astype(np.int64, copy=False)).reshape(-1),
            np.ones(classes, dtype=x.dtype) if weight is None else contiguous(weight.astype(x.dtype, copy=False)),
            ignore_index,
            smoothing,
            scale,
            grad_x,
        )
    return (_from_class_rows(grad_x, x.shape) if needs[0] else None), None


def _flat(array, shape, dtype):
    """array in `dtype`, broadcast to `shape`, as a flat C-contiguous array (no copy when it already is
    one: the usual case, same dtype and shape, skips np.broadcast_to's cost)."""
    if array.dtype != dtype:
        array = array.astype(dtype)
    if array.shape != shape:
        array = np.broadcast_to(array, shape)
    return contiguous(array).reshape(-1)


def _mse_denominator(x, weight) -> float:
    """What a mean divides by: the element count, or sum(weight) over weight's own (input's) shape."""
    if weight is None:
        return float(x.size)
    return _sum(contiguous(weight).reshape(-1)) if weight.size else 0.0


def run_mse_loss(x, target, weight, shape, dtype, reduction):
    """mse_loss: x, target (and weight, x's shape, or None) broadcast to `shape` in `dtype`."""
    xf, yf = _flat(x, shape, dtype), _flat(target, shape, dtype)
    wf = _flat(weight, shape, dtype) if weight is not None else np.empty(0, dtype=dtype)
    if reduction == "none":
        out = np.empty(shape, dtype=dtype)
        if out.size:
            _squared_error(xf, yf, wf, weight is not None, out.reshape(-1))
        return out
    total = _squared_error_sum(xf, yf, wf, weight is not None) if xf.size else 0.0
    if reduction == "sum":
        return _scalar(total, dtype)
    return _scalar(_divide(total, _mse_denominator(xf, weight)), dtype)  # an empty input gives nan, as in torch


def _sum_to(array: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum a broadcast result back to one argument's shape (the gradient of broadcasting)."""
    lead = array.ndim - len(shape)
    if lead:
        array = array.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, size in enumerate(shape) if size == 1 and array.shape[i] != 1)
    if axes:
        array = array.sum(axis=axes, keepdims=True)
    return np.asarray(array).reshape(shape)


def run_mse_loss_backward(grad_output, x, target, weight, shape, dtype, reduction, needs=(True, True, True)):
    """(grad_input, grad_target, grad_weight) of mse_loss, run_mse_loss's arguments after grad_output,
    each only where `needs` says so (None otherwise); broadcast arguments get their gradients summed
    back to their own shapes, in their own dtypes."""
    size = math.prod(shape)
    xf, yf = _flat(x, shape, dtype), _flat(target, shape, dtype)
    wf = _flat(weight, shape, dtype) if weight is not None else np.empty(0, dtype=dtype)
    denominator = _mse_denominator(xf, weight) if reduction == "mean" else 1.0
    scale, per_element = _loss_scale(np.asarray(grad_output), reduction, denominator)
    grad = np.empty(size, dtype=dtype)  # (the kernel writes every element)
    want_weight = weight is not None and len(needs) > 2 and bool(needs[2])
    grad_w = np.empty(size if want_weight else 1, dtype=dtype)
    if size:
        _squared_error_backward(xf, yf, wf, weight is not None, scale, per_element, grad, want_weight, grad_w)
    grad = grad.reshape(shape)
    # (np.asarray: arithmetic on a 0-d array gives a NumPy scalar, and the caller wants arrays)
    grad_input = np.asarray(_sum_to(grad, x.shape).astype(x.dtype, copy=False)) if needs[0] else None
    grad_target = np.asarray((-_sum_to(grad, target.shape)).astype(target.dtype, copy=False)) if needs[1] else None
    grad_weight = None
    if want_weight:
        grad_weight = _sum_to(grad_w.reshape(shape), weight.shape)
        if reduction == "mean":  # d/dw_n of sum(l) / sum(w): the denominator's term, once per weight
            total = _squared_error_sum(xf, yf, wf, True) if size else 0.0
            grad_weight = grad_weight - _divide(total, denominator) * scale[0]
        grad_weight = np.asarray(grad_weight.astype(weight.dtype, copy=False))
    return grad_input, grad_target, grad_weight
