"""A float32 exp that the compiler can vectorise (Numba's np.exp calls libm's expf one value at a time).

exp(x) = 2^n * exp(r) with n = round(x / ln 2) and r = x - n ln 2 in [-ln2/2, ln2/2]; exp(r) is Cephes'
degree-7 polynomial 1 + r + r^2 p(r) (about 1 ulp in float32) and 2^n is built from its IEEE-754 bits.
Valid for x in [-87, 88.38]; `fast_exp` clamps.
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from ._intrinsics import int32_bits_as_float32, maximum, minimum


@njit(cache=True, inline="always")
def exp_f32(x):
    """exp(x) for float32 x in [-87, 88]."""
    n = np.floor(x * np.float32(1.44269504) + np.float32(0.5))
    # r = x - n * ln2, with ln2 split in two so that n * ln2_hi is exact
    r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    # p(r) = c5 + c4 r + ... + c0 r^5 in Estrin's form: three independent pairs joined by r^2 and r^4
    # (a shorter dependency chain than Horner's rule, which measured ~20% slower in sigmoid; same ~1 ulp)
    r2 = r * r
    p = (np.float32(5.0000001201e-1) + np.float32(1.6666665459e-1) * r) + r2 * (
        np.float32(4.1665795894e-2) + np.float32(8.3334519073e-3) * r
    ) + (r2 * r2) * (np.float32(1.3981999507e-3) + np.float32(1.9875691500e-4) * r)
    p = p * r2 + r + np.float32(1.0)
    return p * int32_bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))


def fast_exp(x):
    """exp(x) in kernels: np.exp for float64; for float32 the vectorisable polynomial on x clamped to
    [-87, 88.5], with no branch or blend per element:
    - x <= -87 gives exp(-87) = 1.6e-38 rather than exp(x) (which is below the smallest normal float32,
      1.2e-38; callers that need 0 there, or a sum that must not see it, take care);
    - x >= 88.4 gives inf (2^128 built from exponent bits is inf's bit pattern), as exp overflows there
      (to within the last 0.3 below float32's limit, 88.72, where exp(x) is finite but within a factor
      1.4 of the largest float32);
    - NaN stays NaN (the clamps are IEEE maximum/minimum, which keep it).
    """
    return np.exp(x)


@overload(fast_exp, inline="always")
def _fast_exp_overload(x):
    if x == types.float32:

        def exp32(x):
            return exp_f32(minimum(maximum(x, np.float32(-87.0)), np.float32(88.5)))

        return exp32
    return lambda x: np.exp(x)
