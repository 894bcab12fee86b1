"""RoI max pooling (torchvision.ops.roi_pool), one task per (box, channel); its gradient, one task per
channel."""

import numpy as np
from numba import prange

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
