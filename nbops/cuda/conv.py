"""2-D convolution and transposed convolution on the GPU.

float32 conv2d runs as an implicit matrix product (_conv2d_tiled): out(j, p) = sum_r weight(j, r) *
input(r, p) with r = (k, m, l) the taps and p = (n, h, w) the output pixels, the input's columns gathered
on the fly (im2col without the copy); a block computes 64 channels x 64 pixels through shared-memory
tiles of 16 taps, each thread 4 x 4 outputs in registers. float64 and the transposed convolution run one
thread per output element (_conv2d, _conv_transpose2d): the formula as written.
"""

import numpy as np
from numba import cuda, float32

from ._device import Place, launch, launch_grid, unravel3, unravel4

TILE_J, TILE_P, TILE_R = 64, 64, 16  # output channels, output pixels and taps per block of _conv2d_tiled


@cuda.jit(cache=True)
def _conv2d(x, weight, bias, has_bias, out, sh, sw, ph, pw, dh, dw, groups):
    """out(N_i, C_out_j) = bias(C_out_j) + sum_{k=0}^{C_in/groups - 1} weight(C_out_j, k) * input(N_i, g * C_in/groups + k)

    (* the 2-D cross-correlation, g the group of C_out_j), per output element:
    out(n, j, h, w) = bias(j) + sum_k sum_m sum_l weight(j, k, m, l)
                      * input(n, g*C_in/groups + k, stride[0]*h - padding[0] + dilation[0]*m,
                                                    stride[1]*w - padding[1] + dilation[1]*l)
    with zero padding (padding = the top/left padding: 'same' may pad one more at the bottom/right,
    which only the output size shows).
    """
    batch, out_channels, out_h, out_w = out.shape
    group_in, kh, kw = weight.shape[1], weight.shape[2], weight.shape[3]
    height, width = x.shape[2], x.shape[3]
    group_out = out_channels // groups
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        n, j, h, w = unravel4(e, out_channels, out_h, out_w)
        g = j // group_out
        total = bias[j] if has_bias else out.dtype.type(0.0)
        for k in range(group_in):
            c = g * group_in + k
            for m in range(kh):
                ih = h * sh - ph + m * dh
                if ih < 0 or ih >= height:
                    continue
                for l in range(kw):
                    iw = w * sw - pw + l * dw
                    if 0 <= iw < width:
                        total += weight[j, k, m, l] * x[n, c, ih, iw]
        out[n, j, h, w] = total


@cuda.jit(cache=True)
def _conv_transpose2d(x, weight, bias, has_bias, out, sh, sw, ph, pw, dh, dw, groups):
    """out(n, j, h, w) = bias(j) + sum_k sum_m sum_l input(n, g*C_in/groups + k, ih, iw) * weight(g*C_in/groups + k, j', m, l)

    over the taps with h = stride[0]*ih - padding[0] + dilation[0]*m (and the same for w) for an input
    position (ih, iw) that exists: the transposed convolution gathered per output element (j' = j's
    place in its group g).
    """
    batch, out_channels, out_h, out_w = out.shape
    group_out, kh, kw = weight.shape[1], weight.shape[2], weight.shape[3]
    height, width = x.shape[2], x.shape[3]
    group_in = x.shape[1] // groups
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        n, j, h, w = unravel4(e, out_channels, out_h, out_w)
        g = j // group_out
        jj = j - g * group_out
        total = bias[j] if has_bias else out.dtype.type(0.0)
        for k in range(group_in):
            c = g * group_in + k
            for m in range(kh):
                rows = h + ph - m * dh
                if rows < 0 or rows % sh != 0 or rows // sh >= height:
                    continue
                ih = rows // sh
                for l in range(kw):
                    cols = w + pw - l * dw
                    if cols >= 0 and cols % sw == 0 and cols // sw < width:
                        total += x[n, c, ih, cols // sw] * weight[c, jj, m, l]
        out[n, j, h, w] = total


@cuda.jit(device=True)
def _store(out, bias, has_bias, j, p, value):
    """out(n, j, h, w) = value + bias(j) for pixel p = (n, h, w), when j and p are inside the output."""
    batch, channels, out_h, out_w = out.shape
    if j < channels and p < batch * out_h * out_w:
        n, h, w = unravel3(p, out_h, out_w)
        out[n, j, h, w] = value + bias[j] if has_bias else value


@cuda.jit(cache=True)
def _conv2d_tiled(x, weight, bias, has_bias, out, sh, sw, ph, pw, dh, dw, groups, kh, kw):
    """conv2d (float32) as the matrix product out(j, p) = bias(j) + sum_r weight(j, r) * cols(r, p) of
    each group, r = (k, m, l) over C_in/groups * kH * kW taps, p = (n, h, w) over the output pixels:

        cols((k, m, l), (n, h, w)) = input(n, g*C_in/groups + k, stride[0]*h - padding[0] + dilation[0]*m,
                                                                  stride[1]*w - padding[1] + dilation[1]*l)

    (0 in the padding). Block (x, y, z) computes pixels 64x.., channels 64y.. of group z; per step of
    16 taps the block loads the weight tile (64 x 16) and the gathered input tile (16 x 64) into shared
    memory, and thread (tx, ty) adds to its 4 x 4 outputs (channels ty + 16i, pixels tx + 16i: a warp
    reads and writes neighbouring pixels) held in registers.
    """
    batch, in_channels, height, width = x.shape
    out_channels, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
    group_out = out_channels // groups
    group_in = in_channels // groups
    taps = group_in * kh * kw
    pixels = batch * out_h * out_w
    g = cuda.blockIdx.z
    j0 = cuda.blockIdx.y * TILE_J
    p0 = cuda.blockIdx.x * TILE_P
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    t = ty * 16 + tx
    w_tile = cuda.shared.array((TILE_J, TILE_R), float32)
    x_tile = cuda.shared.array((TILE_R, TILE_P), float32)
    # the pixel whose column this thread gathers (rows t // 64 + 4s of the input tile)
    column = t % TILE_P
    lp = p0 + column
    ln, lh, lw = unravel3(lp, out_h, out_w)
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = float32(0.0)
    a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = float32(0.0)
    for r0 in range(0, taps, TILE_R):
        for s in range(4):  # weight tile: rows t // 16 + 16s, column t % 16
            j = j0 + t // TILE_R + 16 * s
            r = r0 + t % TILE_R
            value = float32(0.0)
            if j < group_out and r < taps:
                value = weight[g * group_out + j, r]
            w_tile[t // TILE_R + 16 * s, t % TILE_R] = value
        for s in range(4):  # input tile: rows t // 64 + 4s, column t % 64
            row = t // TILE_P + 4 * s
            r = r0 + row
            value = float32(0.0)
            if lp < pixels and r < taps:
                k = r // (kh * kw)
                ml = r - k * kh * kw
                m = ml // kw
                ih = lh * sh - ph + m * dh
                iw = lw * sw - pw + (ml - m * kw) * dw
                if 0 <= ih < height and 0 <= iw < width:
                    value = x[ln, g * group_in + k, ih, iw]
            x_tile[row, column] = value
        cuda.syncthreads()
        for q in range(TILE_R):
            w0, w1, w2, w3 = w_tile[ty, q], w_tile[ty + 16, q], w_tile[ty + 32, q], w_tile[ty + 48, q]
            v0, v1, v2, v3 = x_tile[q, tx], x_tile[q, tx + 16], x_tile[q, tx + 32], x_tile[q, tx + 48]
            a00 += w0 * v0
            a01 += w0 * v1
            a02 += w0 * v2
            a03 += w0 * v3
            a10 += w1 * v0
            a11 += w1 * v1
            a12 += w1 * v2
            a13 += w1 * v3
            a20 += w2 * v0
            a21 += w2 * v1
            a22 += w2 * v2
            a23 += w2 * v3
            a30 += w3 * v0
            a31 += w3 * v1
            a32 += w3 * v2
            a33 += w3 * v3
        cuda.syncthreads()
    base = g * group_out
    j = j0 + ty
    if j < group_out:
        _store(out, bias, has_bias, base + j, p0 + tx, a00)
        _store(out, bias, has_bias, base + j, p0 + tx + 16, a01)
        _store(out, bias, has_bias, base + j, p0 + tx + 32, a02)
        _store(out, bias, has_bias, base + j, p0 + tx + 48, a03)
    if j + 16 < group_out:
        _store(out, bias, has_bias, base + j + 16, p0 + tx, a10)
        _store(out, bias, has_bias, base + j + 16, p0 + tx + 16, a11)
        _store(out, bias, has_bias, base + j + 16, p0 + tx + 32, a12)
        _store(out, bias, has_bias, base + j + 16, p0 + tx + 48, a13)
    if j + 32 < group_out:
        _store(out, bias, has_bias, base + j + 32, p0 + tx, a20)
        _store(out, bias, has_bias, base + j + 32, p0 + tx + 16, a21)
        _store(out, bias, has_bias, base + j + 32, p0 + tx + 32, a22)
        _store(out, bias, has_bias, base + j + 32, p0 + tx + 48, a23)
    if j + 48 < group_out:
        _store(out, bias, has_bias, base + j + 48, p0 + tx, a30)
        _store(out, bias, has_bias, base + j + 48, p0 + tx + 16, a31)
        _store(out, bias, has_bias, base + j + 48, p0 + tx + 32, a32)
        _store(out, bias, has_bias, base + j + 48, p0 + tx + 48, a33)


def _run(kernel, x4, weight, bias, strides, pads, dilations, groups, out_channels, out_hw):
    place = Place(x4)
    x = place.array(x4)
    w = place.array(weight)
    b = place.array(bias) if bias is not None else w.reshape(-1)[:1]  # (a placeholder, never read)
    out4, handle = place.empty((x4.shape[0], out_channels) + tuple(out_hw), x.dtype)
    if kernel is _conv2d and x.dtype == np.float32 and out4.size and w.size:
        group_in, kh, kw = w.shape[1:]
        pixels = out4.shape[0] * out4.shape[2] * out4.shape[3]
        grid = (-(-pixels // TILE_P), -(-(out_channels // groups) // TILE_J), groups)
        launch_grid(
            _conv2d_tiled, grid, (16, 16), place, x, w.reshape((out_channels, group_in * kh * kw)), b,
            bias is not None, out4, *strides, *pads, *dilations, groups, kh, kw,
        )
    else:
        launch(kernel, out4.size, place, x, w, b, bias is not None, out4, *strides, *pads, *dilations, groups)
    return place.give(handle)


def run_conv2d(x4, w, b, strides, before, after, dilations, groups, out_hw):
    """conv2d on the GPU: nbops/cpu/conv.py's run_conv2d, same arguments and results (the bottom/right
    padding `after` only shapes the output, which out_hw gives)."""
    return _run(_conv2d, x4, w, b, strides, before, dilations, groups, w.shape[0], out_hw)


def run_conv_transpose2d(x4, w, b, strides, pads, dilations, groups, out_hw):
    """conv_transpose2d on the GPU: nbops/cpu/conv.py's run_conv_transpose2d, same arguments and results."""
    return _run(_conv_transpose2d, x4, w, b, strides, pads, dilations, groups, w.shape[1] * groups, out_hw)
