"""A float32 exp that the compiler can vectorise (Numba's np.exp calls libm's expf one value at a time).

exp(x) = 2^n * exp(r) with n = round(x / ln 2) and r = x - n ln 2 in [-ln2/2, ln2/2]; exp(r) is Cephes'
degree-7 polynomial (about 1 ulp in float32) and 2^n is built from its IEEE-754 bits. Valid for
x in [-87, 88]: callers clamp, and handle NaN and the limits themselves.
"""

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload


@intrinsic
def _int32_bits_as_float32(typingctx, bits):
    """Reinterpret an int32's bits as a float32 (an LLVM bitcast: free, and vectorisable)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.int32)
        return builder.bitcast(value, context.get_value_type(types.float32))

    return types.float32(bits), codegen


@njit(cache=True, inline="always")
def exp_f32(x):
    """exp(x) for float32 x in [-87, 88]."""
    n = np.floor(x * np.float32(1.44269504) + np.float32(0.5))
    # r = x - n * ln2, with ln2 split in two so that n * ln2_hi is exact
    r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    return p * _int32_bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))


def fast_exp(x):
    """exp(x) for any float: the vectorisable polynomial for float32, np.exp for float64 (in kernels)."""
    return np.exp(x)


@overload(fast_exp, inline="always")
def _fast_exp_overload(x):
    if x == types.float32:

        def exp32(x):
            low = np.float32(-87.0)
            high = np.float32(88.0)
            inside = x > low and x < high  # False for NaN too
            y = exp_f32(x if inside else np.float32(0.0))
            if not inside:
                y = np.float32(0.0) if x <= low else (np.float32(np.inf) if x >= high else x)  # x: NaN
            return y

        return exp32
    return lambda x: np.exp(x)
