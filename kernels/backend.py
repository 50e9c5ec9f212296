"""Which backends exist here, and which one a call runs on.

Nothing here imports numba or cupy at import time; GPU detection runs once, lazily, and any failure
in it (no CuPy, no driver, no device) just means "no cuda".
"""
import functools
import importlib
import os
import threading

NAMES = ("numpy", "cpu", "cuda", "auto")
_MODULES = {"numpy": "reference", "cpu": "cpu", "cuda": "gpu", "numpy_out": "reference_out"}


def simulated():
    """True under Numba's CUDA simulator: the GPU kernels then run on NumPy arrays, slowly."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def jit_disabled():
    """True when NUMBA_DISABLE_JIT is set to a non-zero integer (as Numba reads it): Numba then
    runs every @njit function as plain Python, which the cpu kernels cannot do (their intrinsics
    and overloads exist only compiled). Read on every call (a later setting applies to the next
    call), parsed once per value: the failed int("") of an unset variable cost 2 us a call."""
    value = os.environ.get("NUMBA_DISABLE_JIT", "")
    disabled = _disabled_by_value.get(value)
    if disabled is None:
        try:
            disabled = int(value.strip()) != 0
        except ValueError:  # Numba ignores (with a warning) a value that is not an integer
            disabled = False
        _disabled_by_value[value] = disabled
    return disabled


_disabled_by_value = {}


@functools.lru_cache(maxsize=None)
def gpu_status():
    """(usable, reason): whether a real GPU with CuPy and numba.cuda can run our kernels."""
    if simulated():
        return False, "NUMBA_ENABLE_CUDASIM=1 is set (the simulator runs on NumPy arrays)"
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False, "CuPy sees no CUDA device"
        from numba import cuda
        if not cuda.is_available():
            return False, "numba.cuda finds no usable GPU driver"
        cupy.zeros(1).sum()  # a real round trip: catches broken drivers and missing libraries
        return True, ""
    except Exception as exc:  # any failure here means "no GPU", never a crash
        return False, f"CuPy/CUDA is not usable ({type(exc).__name__}: {exc})"


def cuda_usable():
    return gpu_status()[0] or simulated()


def backends():
    """Available backend names in preference order, e.g. ["cpu", "numpy"]; only ["numpy"] under
    NUMBA_DISABLE_JIT=1."""
    if jit_disabled():
        return ["numpy"]
    if gpu_status()[0]:
        return ["cuda", "cpu", "numpy"]
    return ["cpu", "numpy", "cuda"] if simulated() else ["cpu", "numpy"]


def is_cupy(a):
    return type(a).__module__.split(".")[0] == "cupy"


def resolve(backend, like=None):
    """A concrete backend name for `backend` (None: by the array type of `like`).

    Under NUMBA_DISABLE_JIT=1 the defaults (None, "auto") resolve to "numpy" and an explicit
    "cpu" is refused: Numba then runs no compiled code."""
    if backend is None:
        return "cuda" if is_cupy(like) else ("numpy" if jit_disabled() else "cpu")
    if not isinstance(backend, str) or backend not in NAMES:
        raise ValueError(f"backend must be one of {', '.join(map(repr, NAMES))}, got {backend!r}")
    if backend == "auto":
        if jit_disabled():
            return "numpy"
        return "cuda" if gpu_status()[0] else "cpu"
    if backend == "cpu" and jit_disabled():
        raise RuntimeError("backend 'cpu' cannot run: NUMBA_DISABLE_JIT=1 is set, so Numba compiles "
                           "nothing; use backend='numpy' or unset NUMBA_DISABLE_JIT")
    if backend == "cuda" and not cuda_usable():
        raise RuntimeError(f"backend 'cuda' is not available: {gpu_status()[1]}; use 'auto' or 'cpu'")
    return backend


@functools.lru_cache(maxsize=None)
def module(backend):
    """The implementation module of a concrete backend, imported on first use."""
    return importlib.import_module(f"{__package__}.{_MODULES[backend]}")


def array_module(backend):
    if backend == "cuda" and not simulated():
        import cupy
        return cupy
    import numpy
    return numpy


def array_module_of(a):
    """numpy or cupy, by the type of the array a."""
    if is_cupy(a):
        import cupy
        return cupy
    import numpy
    return numpy


_scratch = threading.local()


def scratch(backend, shape, dtype):
    """A per-thread scratch array, reused across calls: internal temporaries of this size would
    otherwise be mapped and page-faulted afresh on every call."""
    key = (backend, tuple(shape), str(dtype))
    cache = _scratch.__dict__.setdefault("arrays", {})
    if key not in cache:
        if len(cache) > 16:
            cache.clear()
        cache[key] = array_module(backend).empty(shape, dtype)
    return cache[key]
