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
    """Available backend names in preference order, e.g. ["cpu", "numpy"]."""
    if gpu_status()[0]:
        return ["cuda", "cpu", "numpy"]
    return ["cpu", "numpy", "cuda"] if simulated() else ["cpu", "numpy"]


def is_cupy(a):
    return type(a).__module__.split(".")[0] == "cupy"


def resolve(backend, like=None):
    """A concrete backend name for `backend` (None: by the array type of `like`)."""
    if backend is None:
        return "cuda" if is_cupy(like) else "cpu"
    if not isinstance(backend, str) or backend not in NAMES:
        raise ValueError(f"backend must be one of {', '.join(map(repr, NAMES))}, got {backend!r}")
    if backend == "auto":
        return "cuda" if gpu_status()[0] else "cpu"
    if backend == "cuda" and not cuda_usable():
        raise RuntimeError(f"backend 'cuda' is not available: {gpu_status()[1]}; use 'auto' or 'cpu'")
    return backend


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
