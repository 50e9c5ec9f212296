"""Calling a compiled kernel through its address, so that compiled code which calls it does not
carry a copy of its machine code.

Numba links every function a compiled function calls into that function's own module and
optimizes and emits the result again: a function that can call six vectorized kernels costs
seconds to compile, though each kernel is already compiled. Through an address, the caller is
compiled alone and runs the kernel's one compiled copy.

- `address_of(dispatcher, argtypes)`: the address of the dispatcher's machine code for exactly
  those Numba argument types (compiled, or loaded from the disk cache, if it is not yet);
- `call_at(address, args)`, in compiled code: the function at `address` (Numba's calling
  convention, a boolean result) applied to the tuple `args`: 1 or 0 as it returned, -1 if it
  raised. The argument types at the call must be those the address was taken for: nothing
  checks them at run time.
"""
from llvmlite import ir
from numba import types
from numba.extending import intrinsic


def address_of(dispatcher, argtypes):
    """The address of `dispatcher`'s compiled function for `argtypes` (a tuple of Numba types),
    which must return a boolean."""
    argtypes = tuple(argtypes)
    dispatcher.compile(argtypes)
    result = dispatcher.overloads[argtypes]
    if result.signature.return_type != types.boolean:
        raise TypeError(f"{dispatcher.__name__}{argtypes} returns {result.signature.return_type}, not a boolean")
    return result.library.get_pointer_to_function(result.fndesc.llvm_func_name)


@intrinsic
def call_at(typingctx, address, args):
    if not isinstance(address, types.Integer) or not isinstance(args, types.BaseTuple):
        return None
    argtypes = tuple(args)

    def codegen(context, builder, sig, llargs):
        fnty = context.call_conv.get_function_type(types.boolean, argtypes)
        callee = builder.inttoptr(llargs[0], fnty.as_pointer())
        values = [builder.extract_value(llargs[1], i) for i in range(len(argtypes))]
        status, result = context.call_conv.call_function(builder, callee, types.boolean, argtypes, values)
        i64 = ir.IntType(64)
        value = builder.select(result, ir.Constant(i64, 1), ir.Constant(i64, 0))
        return builder.select(status.is_error, ir.Constant(i64, -1), value)
    return types.int64(address, args), codegen
