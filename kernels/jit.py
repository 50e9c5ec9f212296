"""The one way CPU kernels are compiled: serial, nogil, numpy error model, cached on disk."""
import warnings

import numba

_uncached = []


def cpu_jit(fn=None, **options):
    """numba.njit(nogil=True, cache=True, error_model="numpy", **options), falling back to an
    in-memory compile where Numba finds no writable cache directory (read-only install, HOME and
    NUMBA_CACHE_DIR), where Numba itself would raise "cannot cache function".

    nogil and serial: any number of Python threads may call the kernels at once (Numba's workqueue
    layer aborts when parallel=True code is entered from several threads). The numpy error model
    lets a float division skip its ZeroDivisionError branch, so the loops vectorize.
    """
    if fn is None:
        return lambda f: cpu_jit(f, **options)
    options = dict(nogil=True, error_model="numpy", **options)
    try:
        return numba.njit(cache=True, **options)(fn)
    except RuntimeError:
        if not _uncached:
            warnings.warn("fastae: no writable Numba cache directory (set NUMBA_CACHE_DIR); "
                          "kernels are compiled in memory at each start", RuntimeWarning, stacklevel=2)
        _uncached.append(fn.__name__)
        return numba.njit(**options)(fn)
