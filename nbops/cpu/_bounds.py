"""Index ranges shared by the row-at-a-time kernels (convolution, pooling).

A tap at column offset `offset` maps output column o to input column o * stride + offset; these give
the range of o for which that input column exists, so the inner loops need no bounds test.
"""

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _first_valid(offset, stride):
    """Smallest o >= 0 with o * stride + offset >= 0."""
    if offset >= 0:
        return 0
    return (-offset + stride - 1) // stride


@njit(cache=True, inline="always")
def _end_valid(offset, stride, size, limit):
    """One past the largest o < limit with o * stride + offset < size (never below 0)."""
    if offset >= size:
        return 0
    return min(limit, (size - 1 - offset) // stride + 1)


@njit(cache=True)
def _tap_columns(taps, dilation, padding, stride, size, limit):
    """For each tap n < taps (offset n * dilation - padding): the range [lo(n), hi(n)) of output columns
    whose input column exists. Computed once per call, before the parallel loop: the two integer
    divisions per tap cost more than a short row's additions when repeated for every row."""
    lo = np.empty(taps, dtype=np.int64)
    hi = np.empty(taps, dtype=np.int64)
    for n in range(taps):
        offset = n * dilation - padding
        lo[n] = _first_valid(offset, stride)
        hi[n] = _end_valid(offset, stride, size, limit)
    return lo, hi
