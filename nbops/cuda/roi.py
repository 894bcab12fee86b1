"""RoI max pooling on the GPU: one thread per output element (box, channel, bin)."""

from numba import cuda

from ._device import Place, launch, unravel4


@cuda.jit(cache=True)
def _roi_pool(x, batch_index, h_start, h_end, w_start, w_end, out):
    """out(k, c, ph, pw) = max_{h_start(k, ph) <= h < h_end(k, ph), w_start(k, pw) <= w < w_end(k, pw)}
                               input(batch_index(k), c, h, w)

    0 for an empty bin; strict `>` from -FLT_MAX as in torchvision (NaN never wins, ties keep the
    first). The bins are torchvision's, computed on the host by functional.roi_pool.
    """
    boxes, channels, pooled_h, pooled_w = out.shape
    lowest = -3.4028234663852886e38
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        k, c, ph, pw = unravel4(e, channels, pooled_h, pooled_w)
        h0, h1 = h_start[k, ph], h_end[k, ph]
        w0, w1 = w_start[k, pw], w_end[k, pw]
        if h1 <= h0 or w1 <= w0:
            out[k, c, ph, pw] = 0.0
            continue
        best = lowest
        n = batch_index[k]
        for h in range(h0, h1):
            for w in range(w0, w1):
                v = x[n, c, h, w]
                if v > best:
                    best = v
        out[k, c, ph, pw] = best


def run_roi_pool(input, dtype, out_shape, bins):
    """roi_pool on the GPU; bins = (batch_index, h_start, h_end, w_start, w_end) host arrays, None when
    the output is empty."""
    place = Place(input)
    out, handle = place.empty(out_shape, dtype)
    if bins is not None:
        x = place.array(input)
        launch(_roi_pool, out.size, place, x, *(place.array(b) for b in bins), out)
    return place.give(handle)
