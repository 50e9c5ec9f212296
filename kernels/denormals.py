"""Subnormal floats flushed to zero while a model's training or scoring pass runs (x86-64).

Arithmetic on a subnormal number (below 1.2e-38 in float32, 2.2e-308 in float64) takes a
microcode assist on x86 CPUs: about a hundred cycles instead of one. Training makes them as a
matter of course: Adam's first moment of a unit whose gradient is exactly zero (a dead ReLU)
shrinks by beta_1 every step and spends ~150 steps among the subnormals on its way to zero, the
second moment (beta_2) thousands. Measured here: one Adam update of 5552 float32 parameters
2.5 us, 72 us with subnormal moments; a digits-size training step grows from 55 to 78 us as they
appear.

`flushed()` sets the CPU's flush-to-zero and denormals-are-zero modes (MXCSR bits FTZ, DAZ) for
the calling thread and restores the previous mode on the way out, so no other code on the thread
(NumPy, the caller's) runs with them. Inside, a result or input that would be subnormal is 0 on
this thread: results differ from IEEE arithmetic only there, and stay deterministic for a given
number of BLAS threads. (The part of a matrix product OpenBLAS hands to its worker threads keeps
IEEE arithmetic: they are other threads, started with the default mode.) (PyTorch offers the same
as `torch.set_flush_denormal`; ONNX Runtime as its "set denormal as zero" session option.)
Elsewhere than x86-64, and under NUMBA_DISABLE_JIT, it does nothing.
"""
import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic

from .jit import cpu_jit

FTZ_DAZ = 0x8040  # MXCSR bit 15 (flush to zero) and bit 6 (denormals are zero)
SUPPORTED = platform.machine().lower() in ("x86_64", "amd64") and not config.DISABLE_JIT


@intrinsic
def _swap(typingctx, bits, mask):
    """MXCSR = (MXCSR & ~mask) | (bits & mask); returns the previous MXCSR."""
    def codegen(context, builder, sig, args):
        i32, byte_ptr = ir.IntType(32), ir.IntType(8).as_pointer()
        slot = cgutils.alloca_once(builder, i32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr])
        store = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.stmxcsr")
        load = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.ldmxcsr")
        builder.call(store, [builder.bitcast(slot, byte_ptr)])
        old = builder.load(slot)
        new, keep = builder.trunc(args[0], i32), builder.not_(builder.trunc(args[1], i32))
        builder.store(builder.or_(builder.and_(old, keep), builder.and_(new, builder.not_(keep))), slot)
        builder.call(load, [builder.bitcast(slot, byte_ptr)])
        return builder.zext(old, ir.IntType(64))
    return types.int64(types.int64, types.int64), codegen


@cpu_jit
def swap_mxcsr(bits, mask):
    """Set the MXCSR bits in `mask` to those of `bits` on this thread; returns the old MXCSR."""
    return _swap(bits, mask)


class flushed:
    """Subnormals flushed to zero on this thread inside a `with` block (see the module
    docstring); a class, not a generator: it wraps every training step (a microsecond counts)."""
    __slots__ = ("_old",)

    def __enter__(self):
        self._old = None
        if SUPPORTED:
            _load_blas()
            old = swap_mxcsr(0, 0)  # read only
            self._old = old
            try:
                swap_mxcsr(FTZ_DAZ, FTZ_DAZ)
            except BaseException:  # KeyboardInterrupt between the call and here: __exit__ won't run
                swap_mxcsr(old, FTZ_DAZ)
                raise
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            swap_mxcsr(self._old, FTZ_DAZ)


_blas = []


def _load_blas():
    """Load SciPy's BLAS (the one Numba's compiled code calls) before the mode is first set: its
    OpenBLAS starts its worker threads when it loads, and a thread takes the float mode of the
    thread that starts it, so workers started inside the block would flush subnormals for the
    rest of the process, in the caller's own BLAS calls too. (fastae defers this import out of
    inference, see `jit._defer_numba_blas_probe`; training needs it anyway.)"""
    if not _blas:
        try:
            import scipy.linalg.cython_blas  # noqa: F401
        except ImportError:  # no SciPy: Numba's BLAS calls fail anyway, with their own message
            pass
        _blas.append(True)
