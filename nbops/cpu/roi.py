"""RoI max pooling (torchvision.ops.roi_pool), one task per (box, channel)."""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _roi_pool(x, batch_index, h_start, h_end, w_start, w_end, out):
    """out(k, c, ph, pw) = max_{h_start(k, ph) <= h < h_end(k, ph), w_start(k, pw) <= w < w_end(k, pw)}
                               input(batch_index(k), c, h, w)

    and 0 for an empty bin. The bin edges are torchvision's (rounded box corners times spatial_scale,
    floor/ceil of the bin size, clipped to the feature map); the caller computes them once per box.
    Comparison is strict `>` from -FLT_MAX, as in torchvision: NaN never wins, ties keep the first.
    """
    boxes, channels = out.shape[0], out.shape[1]
    pooled_h, pooled_w = out.shape[2], out.shape[3]
    lowest = -np.finfo(np.float32).max
    for task in prange(boxes * channels):
        k = task // channels
        c = task % channels
        plane = x[batch_index[k], c]
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                h0, h1 = h_start[k, ph], h_end[k, ph]
                w0, w1 = w_start[k, pw], w_end[k, pw]
                if h1 <= h0 or w1 <= w0:
                    out[k, c, ph, pw] = 0.0
                    continue
                best = lowest
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        if plane[h, w] > best:
                            best = plane[h, w]
                out[k, c, ph, pw] = best
