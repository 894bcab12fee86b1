"""RoI max pooling (torchvision.ops.roi_pool) on the CPU: the drivers the front calls (run_roi_pool,
run_roi_pool_backward, at the end) and their kernels, one task per (box, channel) forward and one task
per channel backward."""

import numpy as np
from numba import prange

from .._arrays import contiguous

from ._parallel import parallel_kernel


@parallel_kernel(cache=True)
def _roi_pool(x, batch_index, h_start, h_end, w_start, w_end, out, argmax):
    """out(k, c, ph, pw) = max_{h_start(k, ph) <= h < h_end(k, ph), w_start(k, pw) <= w < w_end(k, pw)}
                               input(batch_index(k), c, h, w)

    and 0 for an empty bin. The bin edges are torchvision's (rounded box corners times spatial_scale,
    floor/ceil of the bin size, clipped to the feature map); the caller computes them once per box.
    Comparison is strict `>` from -FLT_MAX, as in torchvision: NaN never wins, ties keep the first.
    argmax(k, c, ph, pw) = h * W + w of the max, -1 where no value won (an empty bin, or only values
    <= -FLT_MAX): the route of the gradient.
    """
    boxes, channels = out.shape[0], out.shape[1]
    pooled_h, pooled_w = out.shape[2], out.shape[3]
    width = x.shape[3]
    lowest = -np.finfo(np.float32).max
    for task in prange(boxes * channels):
        k = task // channels
        c = task % channels
        plane = x[batch_index[k], c]
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                h0, h1 = h_start[k, ph], h_end[k, ph]
                w0, w1 = w_start[k, pw], w_end[k, pw]
                where = -1
                if h1 <= h0 or w1 <= w0:
                    out[k, c, ph, pw] = 0.0
                    argmax[k, c, ph, pw] = where
                    continue
                best = lowest
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        if plane[h, w] > best:
                            best = plane[h, w]
                            where = h * width + w
                out[k, c, ph, pw] = best
                argmax[k, c, ph, pw] = where


@parallel_kernel(cache=True)
def _roi_pool_backward(grad_out, argmax, batch_index, grad_in):
    """grad_input(n, c, h, w) = sum over (k, ph, pw) with batch_index(k) = n and argmax(k, c, ph, pw) =
    h * W + w of grad_output(k, c, ph, pw): each bin's gradient goes to the value that won it (none for
    a bin with argmax -1).

    A task is one channel c over every box, so no two tasks add to the same element.
    """
    batch, channels = grad_in.shape[0], grad_in.shape[1]
    boxes = grad_out.shape[0]
    for c in prange(channels):
        for n in range(batch):
            plane = grad_in[n, c]
            for e in range(plane.size):
                plane[e] = 0.0
        for k in range(boxes):
            plane = grad_in[batch_index[k], c]
            g = grad_out[k, c]
            at = argmax[k, c]
            for b in range(g.size):
                if at[b] >= 0:
                    plane[at[b]] += g[b]


# ------------------------------------------------------------------------------------------- drivers


def run_roi_pool(x, batch_index, h_start, h_end, w_start, w_end):
    """(out, argmax) of RoI max pooling of x (N, C, H, W) over the front's bins: batch_index (K,), the row
    edges h_start/h_end (K, pooled_h) and column edges w_start/w_end (K, pooled_w) of each box's bins.
    out (K, C, pooled_h, pooled_w); argmax, int64 of the same shape, the flat index h * W + w of each
    bin's max in its plane (-1 where none won): the backward pass's route."""
    shape = (batch_index.shape[0], x.shape[1], h_start.shape[1], w_start.shape[1])
    out = np.empty(shape, dtype=x.dtype)  # (the kernel writes every element of both)
    argmax = np.empty(shape, dtype=np.int64)
    if out.size:
        _roi_pool(contiguous(x), batch_index, h_start, h_end, w_start, w_end, out, argmax)
    return out, argmax


def run_roi_pool_backward(grad_output, argmax, batch_index, input_shape):
    """grad_input (input_shape): each bin's gradient added at the position of the value that won it."""
    batch, channels, height, width = input_shape
    make = np.empty if argmax.size else np.zeros  # (the kernel clears every plane before adding to it)
    grad_input = make(input_shape, dtype=grad_output.dtype)
    if grad_input.size and argmax.size:
        boxes = argmax.shape[0]
        _roi_pool_backward(
            contiguous(grad_output).reshape(boxes, channels, -1),
            contiguous(argmax).reshape(boxes, channels, -1),
            batch_index,
            grad_input.reshape(batch, channels, height * width),
        )
    return grad_input
