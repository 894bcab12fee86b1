"""Cross entropy and mean squared error on the GPU: one thread per position (cross entropy) or element
(mse), then a sum in float64 (each block's threads in shared memory, the blocks through an atomic add)."""

import math

import numpy as np
from numba import cuda, float64

from ._device import Place, launch, launch_blocks
from .normalization import BLOCK, _block_sum


@cuda.jit(device=True)
def _log_sum_exp(x, n, l, classes):
    """log(sum_c exp(x(n, c, l))), the max taken out first; NaN when the max is NaN or infinite."""
    top = x[n, 0, l]
    for c in range(1, classes):
        v = x[n, c, l]
        if v > top or v != v:
            top = v
    if math.isinf(top) or top != top:
        return top - top
    total = 0.0
    for c in range(classes):
        total += math.exp(float64(x[n, c, l] - top))
    return top + math.log(total)


@cuda.jit(cache=True)
def _cross_entropy_class(x, target, weight, weighted, ignore_index, smoothing, loss, target_weight, bad):
    """For class-index targets, per position p = (n, l) of x viewed as (N, C, L), t = target(p):

        loss(p) = (1 - eps) * w(t) * -(x(n, t, l) - lse) + eps / C * sum_c w(c) * -(x(n, c, l) - lse)
        target_weight(p) = w(t)

    lse = log(sum_c exp(x(n, c, l))), w = weight (1 when not weighted); both 0 where t == ignore_index.
    bad(0) becomes the smallest position whose target is neither in [0, C) nor ignore_index.
    """
    batch, classes, length = x.shape
    for p in range(cuda.grid(1), batch * length, cuda.gridsize(1)):
        n = p // length
        l = p - n * length
        t = target[p]
        if t == ignore_index or t < 0 or t >= classes:
            if t != ignore_index:
                cuda.atomic.min(bad, 0, p)
            loss[p] = 0.0
            target_weight[p] = 0.0
            continue
        lse = _log_sum_exp(x, n, l, classes)
        w_t = float64(weight[t]) if weighted else 1.0
        value = -w_t * (x[n, t, l] - lse)
        if smoothing > 0:
            total = 0.0
            for c in range(classes):
                total += (float64(weight[c]) if weighted else 1.0) * (x[n, c, l] - lse)
            value = (1.0 - smoothing) * value - smoothing / classes * total
        loss[p] = value
        target_weight[p] = w_t


@cuda.jit(cache=True)
def _cross_entropy_prob(x, target, weight, smoothing, loss):
    """For class-probability targets: loss(p) = -sum_c weight(c) * (x(n, c, l) - lse) * q_c,
    q_c = target(n, c, l) * (1 - eps) + eps / C."""
    batch, classes, length = x.shape
    for p in range(cuda.grid(1), batch * length, cuda.gridsize(1)):
        n = p // length
        l = p - n * length
        lse = _log_sum_exp(x, n, l, classes)
        total = 0.0
        for c in range(classes):
            q = target[n, c, l] * (1.0 - smoothing) + smoothing / classes
            total += weight[c] * (x[n, c, l] - lse) * q
        loss[p] = -total


@cuda.jit(cache=True)
def _sum_into(values, totals, slot):
    """totals(slot) += sum_i values(i): per block in shared memory, then one atomic add per block."""
    partial = cuda.shared.array(BLOCK, float64)
    t = cuda.threadIdx.x
    total = 0.0
    for i in range(cuda.grid(1), values.size, cuda.gridsize(1)):
        total += values[i]
    block_total = _block_sum(partial, t, total)
    if t == 0:
        cuda.atomic.add(totals, slot, block_total)


@cuda.jit(cache=True)
def _squared_error(x, y, weight, weighted, out):
    """l_n = w_n * (x_n - y_n)^2   (w_n = 1 when not weighted)"""
    for n in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        d = x[n] - y[n]
        out[n] = d * d * weight[n] if weighted else d * d


@cuda.jit(cache=True)
def _squared_error_sum(x, y, weight, weighted, totals):
    """totals(0) += sum_n w_n (x_n - y_n)^2 in float64 (per block in shared memory, then atomically)."""
    partial = cuda.shared.array(BLOCK, float64)
    t = cuda.threadIdx.x
    total = 0.0
    for n in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        d = float64(x[n]) - float64(y[n])
        total += d * d * weight[n] if weighted else d * d
    block_total = _block_sum(partial, t, total)
    if t == 0:
        cuda.atomic.add(totals, 0, block_total)


@cuda.jit(cache=True)
def _finish(totals, mean, out):
    """out(0) = totals(0) / totals(1) for a mean, else totals(0); in out's dtype (0/0 gives NaN)."""
    if cuda.grid(1) == 0:
        out[0] = totals[0] / totals[1] if mean else totals[0]


@cuda.jit(cache=True)
def _cast(values, out):
    for i in range(cuda.grid(1), values.size, cuda.gridsize(1)):
        out[i] = values[i]


def _reduce(place, values, weights, reduction, count, dtype, out_shape):
    """The 'none' / 'sum' / 'mean' result from per-position values (float64 device arrays); a mean
    divides by sum(weights) or, without weights, by count."""
    if reduction == "none":  # (a 0-d result, for a (C,) input, is computed in a 1-element array)
        out, handle = place.empty(out_shape or (1,), dtype)
        launch(_cast, values.size, place, values, out.reshape(-1))
        return place.give(handle, () if out_shape == () else None)
    totals = cuda.to_device(np.array([0.0, float(count)]), stream=place.stream)
    blocks = max(1, min(1024, (values.size + BLOCK - 1) // BLOCK))
    launch_blocks(_sum_into, blocks, BLOCK, place, values, totals, 0)
    if reduction == "mean" and weights is not None:
        totals[1:2].copy_to_device(np.zeros(1), stream=place.stream)
        launch_blocks(_sum_into, blocks, BLOCK, place, weights, totals, 1)
    out, handle = place.empty((1,), dtype)
    launch_blocks(_finish, 1, 1, place, totals, reduction == "mean", out)
    return place.give(handle, ())


def run_cross_entropy(x, target, weight, shape3, out_shape, reduction, smoothing, ignore_index, dtype):
    """cross_entropy on the GPU: nbops/cpu/loss.py's run_cross_entropy, same arguments (ignore_index None
    for class-probability targets) and results."""
    place = Place(x)
    batch, classes, length = shape3
    positions = batch * length
    x = place.array(x, dtype).reshape(shape3)
    losses = cuda.device_array(positions, dtype=np.float64, stream=place.stream)
    if ignore_index is None:  # class probabilities: the mean is over positions
        t = place.array(target, dtype).reshape(shape3)
        w = place.array(weight, np.float64) if weight is not None else cuda.to_device(np.ones(max(classes, 1)), stream=place.stream)
        launch(_cross_entropy_prob, positions, place, x, t, w, float(smoothing), losses)
        return _reduce(place, losses, None, reduction, positions, dtype, out_shape)
    t = place.array(target, np.int64).reshape(-1)
    w = place.array(weight, np.float64) if weight is not None else cuda.to_device(np.ones(1), stream=place.stream)
    target_weight = cuda.device_array(positions, dtype=np.float64, stream=place.stream)
    bad = cuda.to_device(np.array([positions], dtype=np.int64), stream=place.stream)
    launch(_cross_entropy_class, positions, place, x, t, w, weight is not None, int(ignore_index), float(smoothing), losses, target_weight, bad)
    first_bad = int(bad.copy_to_host(stream=place.stream)[0])  # (a synchronisation: bad targets raise here)
    if first_bad < positions:
        value = int(t[first_bad:first_bad + 1].copy_to_host()[0])
        raise IndexError(f"cross_entropy: target {value} is out of bounds for {classes} classes")
    return _reduce(place, losses, target_weight, reduction, positions, dtype, out_shape)


def run_mse_loss(x, target, weight, shape, dtype, reduction):
    """mse_loss on the GPU: nbops/cpu/loss.py's run_mse_loss, same arguments and results (input, target
    and weight broadcast to `shape` in `dtype` first)."""
    place = Place(x)
    weighted = weight is not None
    flat_x, flat_y = place.broadcast(x, shape, dtype), place.broadcast(target, shape, dtype)
    flat_w = place.broadcast(weight, shape, dtype) if weighted else flat_x[:1]
    size = int(np.prod(shape))
    if reduction == "none":
        out, handle = place.empty(shape, dtype)
        launch(_squared_error, size, place, flat_x, flat_y, flat_w, weighted, out.reshape(-1))
        return place.give(handle)
    totals = cuda.to_device(np.array([0.0, float(size)]), stream=place.stream)
    blocks = max(1, min(1024, (size + BLOCK - 1) // BLOCK))
    launch_blocks(_squared_error_sum, blocks, BLOCK, place, flat_x, flat_y, flat_w, weighted, totals)
    if reduction == "mean" and weighted:  # torch divides by sum(weight), over input's shape
        totals[1:2].copy_to_device(np.zeros(1), stream=place.stream)
        launch_blocks(_sum_into, blocks, BLOCK, place, place.array(weight, dtype).reshape(-1), totals, 1)
    out, handle = place.empty((1,), dtype)
    launch_blocks(_finish, 1, 1, place, totals, reduction == "mean", out)
    return place.give(handle, ())
