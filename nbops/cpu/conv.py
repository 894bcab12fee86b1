"""2-D convolution and transposed convolution, one task per output row (n, c_out, h)."""

from numba import njit, prange

from ._bounds import _end_valid, _first_valid


@njit(parallel=True, cache=True)
def _conv2d(x, weight, bias, out, sh, sw, ph, pw, dh, dw, groups):
    """out(N_i, C_out_j) = bias(C_out_j) + sum_{k=0}^{C_in/groups - 1} weight(C_out_j, k) * input(N_i, g * C_in/groups + k)

    where * is the 2-D cross-correlation and g the group of C_out_j; written out per output pixel:
    out(n, j, h, w) = bias(j) + sum_k sum_m sum_l weight(j, k, m, l)
                                 * input(n, g*C_in/groups + k, stride[0]*h - padding[0] + dilation[0]*m,
                                                               stride[1]*w - padding[1] + dilation[1]*l)
    with zero padding. `bias` has C_out entries (zeros when the caller has none).

    Rather than test every tap for padding, each (m, l) tap works on the range of output columns
    whose input column is inside the image: same sum, no branch in the inner loop.
    """
    batch, in_channels, height, width = x.shape
    out_channels, group_in, kh, kw = weight.shape
    out_h, out_w = out.shape[2], out.shape[3]
    group_out = out_channels // groups
    for task in prange(batch * out_channels * out_h):
        n = task // (out_channels * out_h)
        j = (task // out_h) % out_channels
        h = task % out_h
        first_in = (j // group_out) * group_in
        row = out[n, j, h]
        for w in range(out_w):
            row[w] = bias[j]
        for m in range(kh):
            ih = h * sh - ph + m * dh
            if ih < 0 or ih >= height:
                continue
            for l in range(kw):
                offset = l * dw - pw
                w_lo = _first_valid(offset, sw)
                w_hi = _end_valid(offset, sw, width, out_w)
                if w_hi <= w_lo:  # no output column sees this tap (and slices below must not wrap)
                    continue
                for k in range(group_in):
                    tap = weight[j, k, m, l]
                    line = x[n, first_in + k, ih]
                    if sw == 1:
                        # Same sum on zero-based slices: indices the compiler knows are in range, so it
                        # vectorises the loop (with `line[w + offset]` it cannot).
                        dst = row[w_lo:w_hi]
                        src = line[w_lo + offset : w_hi + offset]
                        for w in range(dst.size):
                            dst[w] += tap * src[w]
                    else:
                        for w in range(w_lo, w_hi):
                            row[w] += tap * line[w * sw + offset]


@njit(parallel=True, cache=True)
def _conv_transpose2d(x, weight, bias, out, sh, sw, ph, pw, dh, dw, groups):
    """The adjoint of conv2d: every input pixel scatters weight-scaled copies of itself.

    out(n, j, stride[0]*h - padding[0] + dilation[0]*m, stride[1]*w - padding[1] + dilation[1]*l)
        += input(n, i, h, w) * weight(i, j - g*C_out/groups, m, l)      for i in group g of j
    plus bias(j). Output positions that fall outside [0, H_out) x [0, W_out) are dropped. Each task owns
    one output row and gathers the input rows h with stride[0]*h - padding[0] + dilation[0]*m equal to
    it, so no two tasks write the same element.
    """
    batch, in_channels, height, width = x.shape
    group_in, group_out, kh, kw = weight.shape[0] // groups, weight.shape[1], weight.shape[2], weight.shape[3]
    out_channels = group_out * groups
    out_h, out_w = out.shape[2], out.shape[3]
    for task in prange(batch * out_channels * out_h):
        n = task // (out_channels * out_h)
        j = (task // out_h) % out_channels
        oh = task % out_h
        g = j // group_out
        jj = j - g * group_out
        row = out[n, j, oh]
        for ow in range(out_w):
            row[ow] = bias[j]
        for m in range(kh):
            shifted = oh + ph - m * dh
            if shifted < 0 or shifted % sh != 0:
                continue
            h = shifted // sh
            if h >= height:
                continue
            for l in range(kw):
                offset = l * dw - pw
                w_lo = _first_valid(offset, sw)
                w_hi = _end_valid(offset, sw, out_w, width)
                if w_hi <= w_lo:  # this tap lands outside the output row (and slices below must not wrap)
                    continue
                for k in range(group_in):
                    i = g * group_in + k
                    tap = weight[i, jj, m, l]
                    line = x[n, i, h]
                    if sw == 1:  # zero-based slices, as in _conv2d, so that the loop vectorises
                        dst = row[w_lo + offset : w_hi + offset]
                        src = line[w_lo:w_hi]
                        for w in range(dst.size):
                            dst[w] += tap * src[w]
                    else:
                        for w in range(w_lo, w_hi):
                            row[w * sw + offset] += tap * line[w]
