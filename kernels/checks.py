"""Input checks shared by every public op: clear errors that name the argument, never a silent
broadcast, and never a write to the caller's arrays (conversions copy; kernels write only to
arrays we allocate, `out=` and the optimizer state of `adam_step`)."""
import numbers
import os

import numpy as np

from . import backend as _backend
from .elementwise import ACTIVATIONS


def activation(name, arg="activation"):
    if not isinstance(name, str):
        raise TypeError(f"{arg} must be a string, one of {sorted(ACTIVATIONS)}, got {type(name).__name__}")
    if name not in ACTIVATIONS:
        raise ValueError(f"{arg} must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def real(value, name, minimum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def seed(value, name="seed"):
    """A 64-bit noise seed; None draws a fresh one from the OS."""
    if type(value) is int and 0 <= value < 1 << 64:  # the common case, without the ABC check below
        return value
    if value is None:
        return int.from_bytes(os.urandom(8), "little")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
    if not 0 <= int(value) < 2 ** 64:
        raise ValueError(f"{name} must be in [0, 2**64), got {value}")
    return int(value)


def _float_dtype(a, name):
    """The native-byte-order float dtype a converts to (None for integers and bools)."""
    kind = a.dtype.kind
    if kind == "f":
        return np.dtype(np.float32) if a.dtype.itemsize < 4 else native(a.dtype)
    if kind in "iub":
        return None
    if kind == "c":
        raise TypeError(f"{name} must hold real numbers, got complex dtype {a.dtype}")
    raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")


def native(dtype):
    """dtype in the machine's byte order: compiled kernels take nothing else (a big-endian array,
    e.g. from a file, is converted with the other conversions, by one copy)."""
    return dtype if dtype.isnative else dtype.newbyteorder("=")


def arrays(backend, specs, check_finite=True):
    """Validate and convert `specs`: a list of (name, array, ndim) for one call.

    `check_finite=False` is for kernels that detect NaN and inf themselves, in their own pass.

    Returns (arrays, dtype, host): C-contiguous arrays of the backend's array type in one float
    dtype of native byte order, and whether NumPy inputs were moved to a GPU (so results must come back to NumPy).
    """
    xp = _backend.array_module(backend)
    host = False
    raw = []
    for name, a, ndim in specs:
        if a is None:
            raise TypeError(f"{name} must be an array, got None")
        if _backend.is_cupy(a):
            if xp is np:
                raise TypeError(f"{name} is a CuPy array but backend {backend!r} takes NumPy arrays "
                                "(use backend='cuda' or cupy.asnumpy)")
        else:
            a = np.asarray(a)
            host = host or xp is not np
        if a.ndim != ndim:
            shape = "(rows, columns)" if ndim == 2 else "(columns,)"
            raise ValueError(f"{name} must be {ndim}-D {shape}, got shape {tuple(a.shape)}")
        if a.size == 0 and name != "b":
            raise ValueError(f"{name} must not be empty, got shape {tuple(a.shape)}")
        raw.append((name, a))
    floats = {}
    for name, a in raw:
        dt = _float_dtype(a, name)
        if dt is not None:
            floats.setdefault(dt, name)
    if len(floats) > 1:
        (d1, n1), (d2, n2) = list(floats.items())[:2]
        raise TypeError(f"{n1} is {d1} but {n2} is {d2}: pass every array in one float dtype")
    dtype = next(iter(floats), np.dtype(np.float64))
    finite = _backend.module(backend).all_finite if backend == "cpu" else _all_finite
    out = []
    for name, a in raw:
        a = kernel_array(a, dtype, xp)
        if backend == "cuda" and xp is np:
            # The simulator copies NumPy kernel arguments back after each launch; give it our own
            # copy, as the host-to-device transfer would on a real GPU.
            a = a.copy()
        if check_finite and not finite(a.reshape(-1)):
            raise ValueError(f"{name} contains NaN or infinity")
        out.append(a)
    return out, dtype, host


def kernel_array(a, dtype, xp=np):
    """`a` as the one array type the kernels are compiled for: a base-class, C-contiguous,
    aligned, native-order array of `dtype` that Numba types as writable. Converted only where it
    must be (another dtype, order, byte order or alignment); a read-only array (np.load with
    mmap_mode="r", a frozen array) is viewed, not copied: compiled code never writes to its
    inputs. So no input flavour makes Numba compile another specialization."""
    if xp is not np:
        return xp.ascontiguousarray(xp.asarray(a), dtype=dtype)
    a = np.require(a, dtype=dtype, requirements=("C", "A"))
    if type(a) is not np.ndarray:
        a = a.view(np.ndarray)
    if not a.flags.writeable:
        a = _writable_alias(a)
    return a


def _writable_alias(a):
    """A writable view of the memory of the read-only C-contiguous array `a` (kept alive by the
    view). Only for inputs that compiled code reads and never writes."""
    import ctypes
    if a.nbytes == 0:
        return a.copy()
    memory = (ctypes.c_char * a.nbytes).from_address(a.ctypes.data)
    memory.owner = a
    return np.frombuffer(memory, dtype=a.dtype).reshape(a.shape)


def _all_finite(a):
    if isinstance(a, np.ndarray):
        return bool(np.isfinite(a).all())
    import cupy
    return bool(cupy.isfinite(a).all())


def same_shape(ref_name, ref, **others):
    for name, a in others.items():
        if a is not None and a.shape != ref.shape:
            raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(a.shape)}")


def out_array(out, shape, dtype, backend, inputs):
    """The caller's `out=` after checking it, or a new array."""
    xp = _backend.array_module(backend)
    if out is None:
        return xp.empty(shape, dtype)
    if not isinstance(out, xp.ndarray):
        raise TypeError(f"out must be a {xp.__name__} array for backend {backend!r}, got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"out must have shape {tuple(shape)} and dtype {dtype}, got {out.shape} {out.dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writeable C-contiguous array")
    if any(xp.may_share_memory(out, a) for a in inputs if same_array_type(out, a)):
        raise ValueError("out must not overlap the inputs")
    return out


def same_array_type(a, b):
    """Whether a and b are both NumPy or both CuPy arrays (arrays of different types never share
    memory, and may_share_memory takes one type)."""
    return _backend.is_cupy(a) == _backend.is_cupy(b) and hasattr(a, "shape") and hasattr(b, "shape")


def disjoint(named):
    """Refuse arrays, given as (name, array) pairs, that may share memory with one another."""
    named = [(n, a) for n, a in named if a is not None]
    for i, (n1, a1) in enumerate(named):
        for n2, a2 in named[i + 1:]:
            if a1 is a2 or (same_array_type(a1, a2) and _backend.array_module_of(a1).may_share_memory(a1, a2)):
                raise ValueError(f"{n1} and {n2} must not overlap (they share memory)")
