"""Two LLVM operations that Numba has no spelling for, exposed to kernels as functions.

- `int32_bits_as_float32(i)`: reinterpret an int32's bits as a float32 (a bitcast: free, vectorisable).
- `maximum(a, b)`: IEEE 754-2019 maximum (llvm.maximum): the larger of a and b, NaN if either is NaN.
  Unlike `a if a > b else b` or Python's max, a loop reducing with it vectorises without fast-math
  flags, because its result is defined for every input.
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


@intrinsic
def maximum(typingctx, a, b):
    if not (isinstance(a, types.Float) and a == b):
        return None

    def codegen(context, builder, signature, args):
        float_type = context.get_value_type(signature.return_type)
        name = "llvm.maximum.f32" if signature.return_type == types.float32 else "llvm.maximum.f64"
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(float_type, [float_type] * 2), name)
        return builder.call(function, args)

    return a(a, b), codegen

