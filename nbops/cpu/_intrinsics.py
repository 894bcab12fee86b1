"""LLVM operations that Numba has no spelling for, exposed to kernels as functions.

- `int32_bits_as_float32(i)`: reinterpret an int32's bits as a float32 (a bitcast: free, vectorisable).
- `maximum(a, b)`: IEEE 754-2019 maximum (llvm.maximum): the larger of a and b, NaN if either is NaN.
  Unlike `a if a > b else b` or Python's max, a loop reducing with it vectorises without fast-math
  flags, because its result is defined for every input.
- `minimum(a, b)`: IEEE 754-2019 minimum (llvm.minimum), the same for the smaller.
  Together they clamp without a branch or a select (a NaN stays NaN), which lets a loop inline a
  clamped function twice (Numba's IR inliner mis-scopes the phi nodes of an inlined conditional).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def int32_bits_as_float32(typingctx, bits):
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.int32)
        return builder.bitcast(value, context.get_value_type(types.float32))

    return types.float32(bits), codegen


def _ieee_extremum(which):
    """An intrinsic for llvm.<which>.f32/f64 (which: 'maximum' or 'minimum') on two floats of one type."""

    def typer(typingctx, a, b):
        if not (isinstance(a, types.Float) and a == b):
            return None

        def codegen(context, builder, signature, args):
            float_type = context.get_value_type(signature.return_type)
            suffix = "f32" if signature.return_type == types.float32 else "f64"
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(float_type, [float_type] * 2), f"llvm.{which}.{suffix}"
            )
            return builder.call(function, args)

        return a(a, b), codegen

    typer.__name__ = which
    return intrinsic(typer)


maximum = _ieee_extremum("maximum")
minimum = _ieee_extremum("minimum")
