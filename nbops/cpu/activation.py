"""sigmoid on the CPU: the drivers the front calls (run_sigmoid, run_sigmoid_backward, at the end) and
their element-wise kernels over flat arrays."""

import numpy as np
from numba import prange

from .._arrays import contiguous

from ._exp import fast_exp
from ._parallel import parallel_kernel

CHUNK = 16384  # elements per task of the element-wise kernels


@parallel_kernel(cache=True, fastmath={"contract"}, error_model="numpy")
def _sigmoid(x, out, one):
    """out_i = 1 / (1 + exp(-input_i))

    Computed just so, as torch does: exp(-input_i) overflows to inf for input_i below about -88.4, and
    1 / inf = 0; it is at most 1.6e-38 for input_i above 87, and 1 / (1 + 1.6e-38) = 1; NaN stays NaN.
    `one` is 1 in the input's dtype, which keeps float32 arithmetic in float32 (as torch does) and picks
    the vectorisable float32 exp, whose polynomial `contract` turns into fused multiply-adds (no effect
    on NaN or inf).
    """
    for b in prange((x.size + CHUNK - 1) // CHUNK):  # fixed chunks: measured ~7% faster than a flat prange
        src = x[b * CHUNK : (b + 1) * CHUNK]
        dst = out[b * CHUNK : (b + 1) * CHUNK]
        # The two halves of a chunk side by side: two independent exp chains per step keep the core busy
        # (the loop is bound by the exp's latency, not by memory; ~25% faster than one element per step).
        half = src.size // 2
        for i in range(half):
            dst[i] = one / (one + fast_exp(-src[i]))
            dst[half + i] = one / (one + fast_exp(-src[half + i]))
        if src.size % 2:
            dst[-1] = one / (one + fast_exp(-src[-1]))


@parallel_kernel(cache=True, fastmath={"contract"})
def _sigmoid_backward(grad_out, out, grad_in, one):
    """grad_input_i = grad_output_i * (1 - out_i) * out_i, from the forward output out = sigmoid(input)
    (d sigmoid(x) / dx = sigmoid(x) * (1 - sigmoid(x))); `one` is 1 in the data's dtype."""
    for b in prange((out.size + CHUNK - 1) // CHUNK):
        dy = grad_out[b * CHUNK : (b + 1) * CHUNK]
        y = out[b * CHUNK : (b + 1) * CHUNK]
        dst = grad_in[b * CHUNK : (b + 1) * CHUNK]
        for i in range(dst.size):
            dst[i] = dy[i] * (one - y[i]) * y[i]


# ------------------------------------------------------------------------------------------- drivers


def run_sigmoid(x):
    """sigmoid(x), a new array of x's shape and dtype (any shape)."""
    out = np.empty(x.shape, dtype=x.dtype)
    if out.size:
        _sigmoid(contiguous(x).reshape(-1), out.reshape(-1), x.dtype.type(1))
    return out


def run_sigmoid_backward(grad_output, output):
    """grad_input = grad_output * (1 - output) * output, from the forward pass's output."""
    out = contiguous(output)
    grad_input = np.empty(out.shape, dtype=out.dtype)
    if out.size:
        _sigmoid_backward(contiguous(grad_output).reshape(-1), out.reshape(-1), grad_input.reshape(-1), out.dtype.type(1))
    return grad_input
