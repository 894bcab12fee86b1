"""Element-wise activations over flat arrays."""

from numba import njit, prange

from ._exp import fast_exp


@njit(parallel=True, cache=True, fastmath={"contract"})
def _sigmoid(x, out, one):
    """out_i = 1 / (1 + exp(-input_i))

    With e = exp(-|input_i|) in (0, 1]: out_i = 1 / (1 + e) for input_i >= 0 and e / (1 + e) otherwise,
    so exp never overflows: the limits are exactly 0 and 1 and NaN stays NaN. `one` is 1 in the input's
    dtype, which keeps float32 arithmetic in float32 (as torch does) and picks the vectorisable float32
    exp, whose polynomial `contract` turns into fused multiply-adds (no effect on NaN or inf).
    """
    for i in prange(x.size):
        v = x[i]
        e = fast_exp(-abs(v))
        s = one / (one + e)
        out[i] = s if v >= 0 else e * s
