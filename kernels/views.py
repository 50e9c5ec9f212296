"""Array views inside compiled code that need no helper from Numba's runtime library.

Numba's `ravel` and `reshape` call a C helper of Numba's own (`numba_attempt_nocopy_reshape`),
even for a C-contiguous array, and `numba.carray` needs a typed pointer. Code that is loaded
without Numba (`fastae.kernels.native`) can call none of Numba's helpers, so the kernels it runs
take their views from here: the same views, built inline.

- `flat(a)`: a C-contiguous array as 1-D (`a.reshape(-1)`; any other array: `a.ravel()`);
- `matrix(a, m, n)`: the first m * n entries of a 1-D C-contiguous array as (m, n)
  (`a[:m * n].reshape(m, n)`; ValueError when they are not there);
- `at_address(address, n, like)`: n entries of like's dtype (an array or a NumPy scalar type)
  at an integer address, as a 1-D array that owns nothing (compiled code only: the caller keeps the memory alive).

Called from Python, `flat` and `matrix` are the NumPy expressions above.
"""
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload
from numba.np.arrayobj import make_array, populate_array


def flat(a):
    """a (C-contiguous) as a 1-D view."""
    return a.reshape(-1)


def matrix(a, m, n):
    """The first m * n entries of the 1-D array a as an (m, n) view."""
    if m < 0 or n < 0 or m * n > a.size:
        raise ValueError("matrix: a has fewer than m * n entries")
    return a[:m * n].reshape(m, n)


def _view(context, builder, src_type, src, view_type, shape):
    """A view of array `src` with C strides over `shape` (intp values)."""
    ary = make_array(src_type)(context, builder, src)
    view = make_array(view_type)(context, builder)
    itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(view_type.dtype)))
    strides, step = [], itemsize
    for size in reversed(shape):
        strides.insert(0, step)
        step = builder.mul(step, size)
    populate_array(view, data=ary.data, shape=shape, strides=strides, itemsize=ary.itemsize,
                   meminfo=ary.meminfo, parent=ary.parent)
    return view._getvalue()


@intrinsic
def _flat(typingctx, a):
    view_type = a.copy(ndim=1, layout="C")

    def codegen(context, builder, sig, args):
        ary = make_array(sig.args[0])(context, builder, args[0])
        size = context.get_constant(types.intp, 1)
        for dim in cgutils.unpack_tuple(builder, ary.shape):
            size = builder.mul(size, dim)
        view = _view(context, builder, sig.args[0], args[0], view_type, [size])
        context.nrt.incref(builder, view_type, view)
        return view
    return view_type(a), codegen


@intrinsic
def _matrix(typingctx, a, m, n):
    view_type = a.copy(ndim=2, layout="C")

    def codegen(context, builder, sig, args):
        shape = [context.cast(builder, args[i], sig.args[i], types.intp) for i in (1, 2)]
        view = _view(context, builder, sig.args[0], args[0], view_type, shape)
        context.nrt.incref(builder, view_type, view)
        return view
    return view_type(a, m, n), codegen


@overload(flat, inline="always")
def _flat_overload(a):
    if isinstance(a, types.Array):
        if a.layout == "C":
            return lambda a: _flat(a)
        return lambda a: a.ravel()  # a copy unless contiguous at run time (Numba's helper decides)


@overload(matrix, inline="always")
def _matrix_overload(a, m, n):
    if isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and isinstance(m, types.Integer) \
            and isinstance(n, types.Integer):
        def impl(a, m, n):
            if m < 0 or n < 0 or m * n > a.size:
                raise ValueError("matrix: a has fewer than m * n entries")
            return _matrix(a, m, n)
        return impl


@intrinsic
def at_address(typingctx, address, n, like):
    """n entries of like's dtype (like: an array, or a NumPy scalar type such as np.float32) at
    `address`."""
    dtype = like.dtype if isinstance(like, types.Array) else getattr(like, "instance_type", None)
    if not (isinstance(address, types.Integer) and isinstance(n, types.Integer) and isinstance(dtype, types.Number)):
        return None
    view_type = types.Array(dtype, 1, "C")

    def codegen(context, builder, sig, args):
        view = make_array(view_type)(context, builder)
        data = builder.inttoptr(context.cast(builder, args[0], sig.args[0], types.intp),
                                context.get_data_type(dtype).as_pointer())
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(dtype)))
        populate_array(view, data=data, shape=[context.cast(builder, args[1], sig.args[1], types.intp)],
                       strides=[itemsize], itemsize=itemsize, meminfo=None)
        return view._getvalue()
    return view_type(address, n, like), codegen

