"""Atomic operations on an int64 array, a spin-wait hint and futex sleep/wake, inside Numba code:
what a thread pool of fastae's own (`kernels.pool`) is built from. LLVM IR written directly.

- `load(a, i)`, `store(a, i, v)`, `add(a, i, v)` (returns the old value), `swap_if(a, i,
  expected, v)` (a[i] = v if a[i] == expected, in one step; True if it did): sequentially
  consistent atomics on a[i] (a: 1-D C-contiguous int64 array);
- `pause()`: the CPU's spin-wait hint (x86 `pause`; nothing elsewhere);
- `futex_wait(a, i, expected)`: sleep while the low 32 bits of a[i] equal `expected` (or until
  woken; may return early, callers re-check); `futex_wake(a, i)`: wake every thread sleeping on
  a[i]. Linux only (`supported()`): the raw futex system call, through the C library's `syscall`;
- `wait_while(a, i, seen, stop, sleepers, spins)`: how a pool's worker waits for its next job.
"""
import platform
import sys

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import cpu_jit

SYS_FUTEX = 202  # x86-64 Linux
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129


def supported():
    """Whether this platform has what the pool needs (x86-64 Linux)."""
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


def _is_int64_array(a):
    return isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and a.dtype == types.int64


def _slot(context, builder, sig, args):
    ary = context.make_array(sig.args[0])(context, builder, args[0])
    index = context.cast(builder, args[1], sig.args[1], types.intp)
    return builder.gep(ary.data, [index])


@intrinsic
def load(typingctx, a, i):
    if not (_is_int64_array(a) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.load_atomic(_slot(context, builder, sig, args), "seq_cst", 8)
    return types.int64(a, i), codegen


@intrinsic
def store(typingctx, a, i, v):
    if not (_is_int64_array(a) and isinstance(i, types.Integer) and isinstance(v, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(value, _slot(context, builder, sig, args), "seq_cst", 8)
        return context.get_dummy_value()
    return types.none(a, i, v), codegen


@intrinsic
def add(typingctx, a, i, v):
    if not (_is_int64_array(a) and isinstance(i, types.Integer) and isinstance(v, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", _slot(context, builder, sig, args), value, "seq_cst")
    return types.int64(a, i, v), codegen


@intrinsic
def swap_if(typingctx, a, i, expected, v):
    if not (_is_int64_array(a) and isinstance(i, types.Integer) and isinstance(expected, types.Integer)
            and isinstance(v, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        old, new = (context.cast(builder, args[j], sig.args[j], types.int64) for j in (2, 3))
        pair = builder.cmpxchg(_slot(context, builder, sig, args), old, new, "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)
    return types.boolean(a, i, expected, v), codegen


@intrinsic
def pause(typingctx):
    def codegen(context, builder, sig, args):
        if platform.machine() in ("x86_64", "AMD64"):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.none(), codegen


def _futex(context, builder, address, op, value):
    """syscall(SYS_futex, address, op, value, NULL): every argument passed as a full 64-bit
    integer (the C library reads each as a long)."""
    i64 = ir.IntType(64)
    syscall = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64], var_arg=True), "syscall")
    return builder.call(syscall, [ir.Constant(i64, SYS_FUTEX), builder.ptrtoint(address, i64), ir.Constant(i64, op),
                                  builder.zext(value, i64), ir.Constant(i64, 0)])


@intrinsic
def futex_wait(typingctx, a, i, expected):
    if not (_is_int64_array(a) and isinstance(i, types.Integer) and isinstance(expected, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        value = builder.trunc(context.cast(builder, args[2], sig.args[2], types.int64), ir.IntType(32))
        _futex(context, builder, _slot(context, builder, sig, args), FUTEX_WAIT_PRIVATE, value)
        return context.get_dummy_value()
    return types.none(a, i, expected), codegen


@intrinsic
def futex_wake(typingctx, a, i):
    if not (_is_int64_array(a) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        _futex(context, builder, _slot(context, builder, sig, args), FUTEX_WAKE_PRIVATE,
               ir.Constant(ir.IntType(32), 2 ** 31 - 1))
        return context.get_dummy_value()
    return types.none(a, i), codegen


SPIN = 20000  # pause instructions a waiting worker spins before it sleeps (~0.5-1 ms)


@cpu_jit(inline="always")
def wait_while(a, i, seen, stop, sleepers, spins):
    """a[i] once it differs from `seen`, or once a[stop] is non-zero: spinning for SPIN - spins
    pauses, then asleep on a futex, counted in a[sleepers] (a caller that finds it non-zero
    wakes a[i]'s sleepers after moving a[i]; the futex re-checks a[i]: no lost wake-up)."""
    value = load(a, i)
    while value == seen and load(a, stop) == 0:
        if spins < SPIN:
            pause()
            spins += 1
        else:
            add(a, sleepers, 1)
            futex_wait(a, i, seen)
            add(a, sleepers, -1)
        value = load(a, i)
    return value
