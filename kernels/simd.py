"""The machine's SIMD vectors inside Numba code: a register-blocked kernel's accumulators as values.

LLVM keeps local scalars in registers but not local arrays, and its loop vectorizer cannot hold
a tile of a matrix product in registers across the reduction loop. A value of type `Vector` is
one LLVM vector of `BITS` (with AVX-512, 512 bits: 16 float32 or 8 float64 lanes; else 256), so a
kernel can name its accumulators (`c0 = fma(a, w, c0)`) and LLVM gives each a register.

`load(a, i)` / `store(a, i, v)` read and write lanes a[i:i + LANES] of a 1-D contiguous array
without bounds checks, unless Numba's NUMBA_BOUNDSCHECK is on, when they raise IndexError like
any other array access. Kernels that use them check their shapes at the boundary. Everything
here is an intrinsic (LLVM IR written directly): Numba compiles them in no time, where inlined
overloads cost seconds of cold start in a kernel that makes dozens of vector accesses.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic, models, register_model

from .packing import VECTOR_BYTES

BITS = 8 * VECTOR_BYTES  # the machine's vectors: 512 bits with AVX-512, else 256


class Vector(types.Type):
    """A machine vector (`BITS` wide) of `dtype` (float32 or float64) lanes."""

    def __init__(self, dtype):
        self.dtype, self.lanes = dtype, BITS // dtype.bitwidth
        super().__init__(name=f"Vector({dtype} x {self.lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def lanes(dtype):
    """Lanes of a vector of this NumPy dtype (with AVX-512 16 for float32, 8 for float64)."""
    return BITS // (8 * np.dtype(dtype).itemsize)


@intrinsic
def lanes_of(typingctx, a):
    """Lanes of a vector of a's dtype (an array), a compile-time constant."""
    n = BITS // a.dtype.bitwidth

    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, n)
    return types.intp(a), codegen


def _lane_pointer(context, builder, array_type, array, index, vector_type):
    """The address of array[index] as a vector pointer; under NUMBA_BOUNDSCHECK an IndexError
    unless the vector's lanes lie inside the array (the check Numba makes for a[i])."""
    ary = context.make_array(array_type)(context, builder, array)
    if config.BOUNDSCHECK:
        size = builder.extract_value(ary.shape, 0)
        last = builder.add(index, context.get_constant(types.intp, vector_type.lanes))
        outside = builder.or_(builder.icmp_signed("<", index, context.get_constant(types.intp, 0)),
                              builder.icmp_signed(">", last, size))
        with builder.if_then(outside, likely=False):
            context.call_conv.return_user_exc(builder, IndexError, ("vector access out of bounds",))
    return builder.bitcast(builder.gep(ary.data, [index]), context.get_value_type(vector_type).as_pointer())


def check_span(context, builder, ary, start, count):
    """Inside an intrinsic: raise IndexError unless ary[start:start + count] lies inside the
    1-D array `ary` (a Numba array struct; start and count intp values)."""
    size = builder.extract_value(ary.shape, 0)
    zero = context.get_constant(types.intp, 0)
    outside = builder.or_(builder.or_(builder.icmp_signed("<", start, zero), builder.icmp_signed("<", count, zero)),
                          builder.icmp_signed(">", builder.add(start, count), size))
    with builder.if_then(outside, likely=False):
        context.call_conv.return_user_exc(builder, IndexError, ("vector access out of bounds",))


def splat(builder, value, vector_type):
    """A vector of LLVM type vector_type with every lane `value`."""
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), vector_type.count), [0] * vector_type.count)
    return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined), mask)


def is_vector_array(a):
    """Whether Numba type a is a 1-D C-contiguous float32 or float64 array."""
    return (isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C"
            and a.dtype in (types.float32, types.float64))


@intrinsic
def load(typingctx, a, i):
    """Lanes a[i:i + LANES] of a 1-D C-contiguous float array, as a Vector."""
    if not (is_vector_array(a) and isinstance(i, types.Integer)):
        return None
    vt = Vector(a.dtype)

    def codegen(context, builder, sig, args):
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        return builder.load(_lane_pointer(context, builder, sig.args[0], args[0], index, vt),
                            align=a.dtype.bitwidth // 8)
    return vt(a, i), codegen


@intrinsic
def store(typingctx, a, i, v):
    """a[i:i + LANES] = the lanes of v."""
    if not (is_vector_array(a) and isinstance(i, types.Integer) and isinstance(v, Vector) and v.dtype == a.dtype):
        return None

    def codegen(context, builder, sig, args):
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        builder.store(args[2], _lane_pointer(context, builder, sig.args[0], args[0], index, sig.args[2]),
                      align=a.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(a, i, v), codegen


@intrinsic
def broadcast(typingctx, a, i):
    """A Vector with every lane a[i] (a 1-D C-contiguous float array; no negative-index
    wraparound, so the load folds into the multiply-add that uses it)."""
    if not (is_vector_array(a) and isinstance(i, types.Integer)):
        return None
    vt = Vector(a.dtype)

    def codegen(context, builder, sig, args):
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        if config.BOUNDSCHECK:
            size = builder.extract_value(ary.shape, 0)
            outside = builder.or_(builder.icmp_signed("<", index, context.get_constant(types.intp, 0)),
                                  builder.icmp_signed(">=", index, size))
            with builder.if_then(outside, likely=False):
                context.call_conv.return_user_exc(builder, IndexError, ("vector access out of bounds",))
        return splat(builder, builder.load(builder.gep(ary.data, [index])), context.get_value_type(vt))
    return vt(a, i), codegen


@intrinsic
def zeros(typingctx, like):
    """A Vector of like's dtype (an array) with every lane 0."""
    vt = Vector(like.dtype)

    def codegen(context, builder, sig, args):
        return cgutils.get_null_value(context.get_value_type(vt))
    return vt(like), codegen


@intrinsic
def add(typingctx, a, b):
    """a + b lane by lane."""
    if not (isinstance(a, Vector) and a == b):
        return None

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return a(a, b), codegen


@intrinsic
def relu(typingctx, a):
    """Lane by lane v if v > 0 else v - v (`elementwise.activate`'s ReLU, NaN kept)."""
    if not isinstance(a, Vector):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        return builder.select(builder.fcmp_ordered(">", v, cgutils.get_null_value(v.type)), v, builder.fsub(v, v))
    return a(a), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c lane by lane, one rounding (LLVM's llvm.fma: one instruction with FMA units)."""
    if not (isinstance(a, Vector) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        ty = args[0].type
        name = f"llvm.fma.v{ty.count}f{a.dtype.bitwidth}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty, ty, ty]), name)
        return builder.call(fn, args)
    return a(a, b, c), codegen


@intrinsic
def c_layout(typingctx, a):
    """Whether array a is typed C-contiguous, a compile-time constant (a non-C array's ravel()
    is a copy: vector stores through it would be lost)."""
    flag = isinstance(a, types.Array) and a.layout == "C"

    def codegen(context, builder, sig, args):
        return context.get_constant(types.boolean, flag)
    return types.boolean(a), codegen


@intrinsic
def prefer_wide_vectors(typingctx):
    """Ask LLVM to vectorize the loops of the calling function with 512-bit vectors. On AVX-512
    machines LLVM prefers 256 bits by default (older chips lowered their clock for 512-bit
    code); for compute-bound loops the wider vectors do twice the work per instruction.
    (A string function attribute, set as clang's -mprefer-vector-width=512 sets it; llvmlite only
    lists enum attributes, so the set is filled directly.)"""
    def codegen(context, builder, sig, args):
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()
    return types.none(), codegen
