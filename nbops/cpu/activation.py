"""Element-wise activations over flat arrays."""

import numpy as np
from numba import njit, prange

from ._exp import exp_f32


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


@njit(parallel=True, cache=True)
def _sigmoid_f32(x, out):
    """out_i = 1 / (1 + exp(-input_i)) for float32, with a vectorisable exp.

    With e = exp(-|input_i|) in (0, 1]: out_i = 1 / (1 + e) for input_i >= 0 and e / (1 + e) otherwise,
    so exp never overflows. Below exp's float32 range (|input_i| > 87) e is taken as 0, which gives the
    exact limits 1 and 0 (torch's are 1 and a value under 1.2e-38); NaN stays NaN.
    """
    one = np.float32(1.0)
    low = np.float32(-87.0)
    for i in prange(x.size):
        v = x[i]
        a = -abs(v)
        e = exp_f32(a if a > low else low)
        if not a > low:
            e = np.float32(0.0)
        s = one / (one + e)
        r = s if v >= 0 else e * s
        out[i] = r if v == v else v
