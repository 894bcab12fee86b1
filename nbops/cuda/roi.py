"""RoI max pooling on the GPU: one thread per output element (box, channel, bin)."""

from numba import cuda

from ._device import Place, launch, unravel4


@cuda.jit(cache=True)
def _roi_pool(x, batch_index, h_start, h_end, w_start, w_end, out, argmax):
    """out(k, c, ph, pw) = max_{h_start(k, ph) <= h < h_end(k, ph), w_start(k, pw) <= w < w_end(k, pw)}
                               input(batch_index(k), c, h, w)

    0 for an empty bin; strict `>` from -FLT_MAX as in torchvision (NaN never wins, ties keep the
    first). argmax(k, c, ph, pw) = h * W + w of the max, -1 where none won. The bins are torchvision's,
    computed on the host by the front (nbops/roi.py).
    """
    boxes, channels, pooled_h, pooled_w = out.shape
    width = x.shape[3]
    lowest = -3.4028234663852886e38
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        k, c, ph, pw = unravel4(e, channels, pooled_h, pooled_w)
        h0, h1 = h_start[k, ph], h_end[k, ph]
        w0, w1 = w_start[k, pw], w_end[k, pw]
        where = -1
        if h1 <= h0 or w1 <= w0:
            out[k, c, ph, pw] = 0.0
            argmax[k, c, ph, pw] = where
            continue
        best = lowest
        n = batch_index[k]
        for h in range(h0, h1):
            for w in range(w0, w1):
                v = x[n, c, h, w]
                if v > best:
                    best = v
                    where = h * width + w
        out[k, c, ph, pw] = best
        argmax[k, c, ph, pw] = where


def run_roi_pool(x, batch_index, h_start, h_end, w_start, w_end):
    """roi_pool on the GPU: nbops/cpu/roi.py's run_roi_pool, same arguments (the bins as host arrays) and
    results (out, argmax)."""
    place = Place(x)
    shape = (batch_index.shape[0], x.shape[1], h_start.shape[1], w_start.shape[1])
    out, out_handle = place.empty(shape, x.dtype)
    argmax, argmax_handle = place.empty(shape, "int64")
    if out.size:
        bins = (place.array(b) for b in (batch_index, h_start, h_end, w_start, w_end))
        launch(_roi_pool, out.size, place, place.array(x), *bins, out, argmax)
    return place.give(out_handle), place.give(argmax_handle)
