"""512-bit SIMD vectors inside Numba code: a register-blocked kernel's accumulators as values.

LLVM keeps local scalars in registers but not local arrays, and its loop vectorizer cannot hold
a tile of a matrix product in registers across the reduction loop. A value of type `Vector` is
one LLVM vector (16 float32 or 8 float64 lanes), so a kernel can name its accumulators
(`c0 = fma(a, w, c0)`) and LLVM gives each a register (AVX-512: one zmm; AVX2: two ymm).

`load(a, i)` / `store(a, i, v)` read and write lanes a[i:i + LANES] of a 1-D contiguous array
without bounds checks, unless Numba's NUMBA_BOUNDSCHECK is on, when they raise IndexError like
any other array access. Kernels that use them check their shapes at the boundary.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic, models, overload, register_model

BITS = 512


class Vector(types.Type):
    """A 512-bit vector of `dtype` (float32 or float64) lanes."""

    def __init__(self, dtype):
        self.dtype, self.lanes = dtype, BITS // dtype.bitwidth
        super().__init__(name=f"Vector({dtype} x {self.lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def lanes(dtype):
    """Lanes of a vector of this NumPy dtype (16 for float32, 8 for float64)."""
    return BITS // (8 * np.dtype(dtype).itemsize)


def lanes_of(a):
    """Lanes of a vector of a's dtype, a compile-time constant in compiled code."""


@overload(lanes_of, inline="always")
def _lanes_of(a):
    n = BITS // a.dtype.bitwidth
    return lambda a: n


def _lane_pointer(context, builder, array_type, array, index, vector_type):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), context.get_value_type(vector_type).as_pointer())


@intrinsic
def _load(typingctx, a, i):
    vt = Vector(a.dtype)

    def codegen(context, builder, sig, args):
        return builder.load(_lane_pointer(context, builder, sig.args[0], args[0], args[1], vt),
                            align=a.dtype.bitwidth // 8)
    return vt(a, types.intp), codegen


@intrinsic
def _store(typingctx, a, i, v):
    def codegen(context, builder, sig, args):
        builder.store(args[2], _lane_pointer(context, builder, sig.args[0], args[0], args[1], sig.args[2]),
                      align=a.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(a, types.intp, v), codegen


def load(a, i):
    """Lanes a[i:i + LANES] of a 1-D C-contiguous float array, as a Vector."""


def store(a, i, v):
    """a[i:i + LANES] = the lanes of v."""


def _checked(a, i):
    """Under NUMBA_BOUNDSCHECK: IndexError unless a[i:i + LANES] lies inside a; else nothing."""


@overload(load, inline="always")
def _load_impl(a, i):
    if isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype in (types.float32, types.float64):
        def impl(a, i):
            _checked(a, i)
            return _load(a, i)
        return impl


@overload(store, inline="always")
def _store_impl(a, i, v):
    if isinstance(a, types.Array) and isinstance(v, Vector) and a.ndim == 1 and a.layout == "C" and a.dtype == v.dtype:
        def impl(a, i, v):
            _checked(a, i)
            _store(a, i, v)
        return impl


@overload(_checked, inline="always")
def _checked_impl(a, i):
    if config.BOUNDSCHECK:
        n = BITS // a.dtype.bitwidth

        def impl(a, i):
            if i < 0 or i + n > a.size:
                raise IndexError("vector access out of bounds")
        return impl
    return lambda a, i: None


@intrinsic
def splat(typingctx, s, like):
    """A Vector of like's dtype with every lane s (`like`: an array of that dtype)."""
    vt = Vector(like.dtype)

    def codegen(context, builder, sig, args):
        ty = context.get_value_type(vt)
        value = context.cast(builder, args[0], sig.args[0], vt.dtype)
        one = builder.insert_element(ir.Constant(ty, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), [0] * vt.lanes)
        return builder.shuffle_vector(one, ir.Constant(ty, ir.Undefined), mask)
    return vt(s, like), codegen


@intrinsic
def zeros(typingctx, like):
    """A Vector of like's dtype (an array) with every lane 0."""
    vt = Vector(like.dtype)

    def codegen(context, builder, sig, args):
        return cgutils.get_null_value(context.get_value_type(vt))
    return vt(like), codegen


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
