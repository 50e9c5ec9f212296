"""The one way CPU kernels are compiled: serial, nogil, numpy error model, cached on disk.

Numba stamps a cached function with its own source file only, so an edit to a function it calls in
another file (elementwise.py, cpu_math.py, cpu.py under the engine) would leave it loading stale
machine code. Every function compiled here is stamped with the contents of every file that
compiled code of this package comes from (`stamped_files`) as well: editing any of them
invalidates every fastae cache entry.
"""
import functools
import glob
import hashlib
import importlib.util
import os
import warnings

import numba
from numba.core import caching

_uncached = []


def stamped_files():
    """Every source file whose code the cached functions may compile: kernels/*.py and the
    model engine (fastae/engine.py, wherever the package is installed)."""
    files = sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "*.py")))
    parent = __package__.rpartition(".")[0] if __package__ else ""
    if parent:
        try:
            spec = importlib.util.find_spec(f"{parent}.engine")
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and os.path.isfile(spec.origin):
            files.append(os.path.abspath(spec.origin))
    return files


@functools.lru_cache(maxsize=None)
def tree_stamp():
    """A hash of the contents of every stamped file, taken once per process (at the first
    compile or cache load, which is when the modules in memory were read)."""
    digest = hashlib.sha256()
    for path in stamped_files():
        digest.update(os.path.basename(path).encode() + b"\0")
        try:
            with open(path, "rb") as f:
                digest.update(f.read())
        except OSError:
            digest.update(b"<unreadable>")
        digest.update(b"\0")
    return digest.hexdigest()


class _TreeStampedLocator:
    """Numba's chosen cache locator with the package-wide stamp added to its source stamp."""

    def __init__(self, locator):
        self._locator = locator

    def __getattr__(self, name):
        return getattr(self._locator, name)

    def get_source_stamp(self):
        return ("fastae", tree_stamp(), self._locator.get_source_stamp())


class _TreeStampedImpl(caching.CompileResultCacheImpl):
    def __init__(self, py_func):
        super().__init__(py_func)  # picks the locator as Numba would (RuntimeError: none usable)
        self._locator = _TreeStampedLocator(self._locator)


class TreeStampedCache(caching.FunctionCache):
    """Numba's FunctionCache, with index entries stale when any stamped file changed."""
    _impl_class = _TreeStampedImpl


def cpu_jit(fn=None, **options):
    """numba.njit(nogil=True, cache=True, error_model="numpy", **options), falling back to an
    in-memory compile where Numba finds no writable cache directory (read-only install, HOME and
    NUMBA_CACHE_DIR), where Numba itself would raise "cannot cache function". The disk cache is
    `TreeStampedCache`: stale after an edit to any file of `stamped_files`.

    nogil and serial: any number of Python threads may call the kernels at once (Numba's workqueue
    layer aborts when parallel=True code is entered from several threads). The numpy error model
    lets a float division skip its ZeroDivisionError branch, so the loops vectorize.
    """
    if fn is None:
        return lambda f: cpu_jit(f, **options)
    options = dict(nogil=True, error_model="numpy", **options)
    dispatcher = numba.njit(**options)(fn)
    if not hasattr(dispatcher, "enable_caching"):  # NUMBA_DISABLE_JIT: a plain function
        return dispatcher
    try:
        # what njit(cache=True) does (Dispatcher.enable_caching), with our cache class
        dispatcher._cache = TreeStampedCache(dispatcher.py_func)
    except RuntimeError:
        if not _uncached:
            warnings.warn("fastae: no writable Numba cache directory (set NUMBA_CACHE_DIR); "
                          "kernels are compiled in memory at each start", RuntimeWarning, stacklevel=2)
        _uncached.append(fn.__name__)
    return dispatcher
