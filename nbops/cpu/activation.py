"""Element-wise activations over flat arrays."""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _sigmoid(x, out, one):
    """out_i = 1 / (1 + exp(-input_i))

    Evaluated as e / (1 + e) with e = exp(input_i) for negative inputs, so exp never overflows: the
    limits are exactly 0 and 1 and NaN stays NaN. `one` is 1 in the input's dtype, which keeps float32
    arithmetic in float32 as torch does.
    """
    for i in prange(x.size):
        v = x[i]
        if v >= 0:
            out[i] = one / (one + np.exp(-v))
        else:
            e = np.exp(v)
            out[i] = e / (one + e)
