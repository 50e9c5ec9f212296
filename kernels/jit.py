"""The one way CPU kernels are compiled: serial, nogil, numpy error model, cached on disk.

Numba stamps a cached function with its own source file only, so an edit to a function it calls in
another file (elementwise.py, cpu_math.py, cpu.py under the engine) would leave it loading stale
machine code. Every function compiled here is stamped with the contents of every file that
compiled code of this package comes from (`stamped_files`) as well: editing any of them
invalidates every fastae cache entry.
"""
import functools
import glob
import importlib.util
import os
import tempfile
import warnings

import numba
from numba.core import caching

from . import native

_uncached = []


def _defer_numba_blas_probe():
    """Numba imports scipy.linalg when it first loads its NumPy support (at the first compile or
    cache load of a process) only to learn whether a BLAS is there: 0.15 s of every process start,
    most of it numpy.f2py, which SciPy's array-API shim imports. Here that probe is answered by
    whether SciPy is installed (no import); Numba's own check, with the import, still runs when
    code that calls BLAS is compiled, so an inference-only process never imports SciPy."""
    import sys
    if "numba.np.arraymath" in sys.modules:
        return
    from numba.np import linalg
    checked = getattr(linalg, "ensure_blas", None)
    if checked is None:  # another Numba: leave it alone
        return

    def scipy_installed():
        if importlib.util.find_spec("scipy") is None:
            raise ImportError("scipy is required for linear algebra")
    linalg.ensure_blas = scipy_installed
    try:
        from numba.np import arraymath
        arraymath.ensure_blas = checked
    finally:
        linalg.ensure_blas = checked


_defer_numba_blas_probe()


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
    compile or cache load, which is when the modules in memory were read). (The vector width
    the packed kernels were written for is in the cache files' names: `_TreeStampedImpl`.)"""
    return native.files_digest(stamped_files())


class _TreeStampedLocator:
    """Numba's chosen cache locator with the package-wide stamp added to its source stamp."""

    def __init__(self, locator):
        self._locator = locator

    def __getattr__(self, name):
        return getattr(self._locator, name)

    def get_source_stamp(self):
        return ("fastae", tree_stamp(), self._locator.get_source_stamp())


class _TempDirLocator(caching.UserProvidedCacheLocator):
    """The last resort before compiling in memory (a read-only install with an unwritable HOME):
    a private per-user folder under the system temp dir, so the machine compiles once, not every
    process."""

    def __init__(self, py_func, py_file):
        super().__init__(py_func, py_file)
        self._cache_path = os.path.join(temp_cache_root(), self.get_suitable_cache_subpath(py_file))

    @classmethod
    def from_function(cls, py_func, py_file):
        if not os.path.exists(py_file):
            return None
        self = cls(py_func, py_file)
        try:
            os.makedirs(temp_cache_root(), mode=0o700, exist_ok=True)
            self.ensure_cache_path()
        except OSError:
            return None
        if not native.private(temp_cache_root()):  # made by someone else under the shared temp dir
            return None
        if not _fallback_warned:
            _fallback_warned.append(self._cache_path)
            warnings.warn(f"fastae: no writable Numba cache directory beside the package or in HOME; compiled "
                          f"kernels are cached in {temp_cache_root()} (set NUMBA_CACHE_DIR to choose the folder)",
                          RuntimeWarning, stacklevel=_caller_stacklevel())
        return self


_fallback_warned = []


def temp_cache_root():
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"fastae-numba-cache-{uid}")


def _caller_stacklevel():
    """The stacklevel of the first frame outside fastae, numba and the standard library: the
    user's line. (warnings.warn does not count importlib's bootstrap frames.)"""
    import sys
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    skip = (here, os.path.dirname(numba.__file__), "<frozen importlib", os.path.dirname(warnings.__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame = frame.f_back
        name = frame.f_code.co_filename if frame is not None else ""
        level += 0 if ("importlib" in name and "_bootstrap" in name) else 1
    return level


class _TreeStampedImpl(caching.CompileResultCacheImpl):
    _locator_classes = list(caching.CompileResultCacheImpl._locator_classes) + [_TempDirLocator]

    def __init__(self, py_func):
        super().__init__(py_func)  # picks the locator as Numba would (RuntimeError: none usable)
        self._locator = _TreeStampedLocator(self._locator)
        # the vector width in the file names too: AVX2 and AVX-512 hosts sharing a cache folder
        # keep their own index and data files instead of evicting each other's at every switch
        from .packing import VECTOR_BYTES
        self._filename_base = f"{self._filename_base}.v{VECTOR_BYTES}"


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
            warnings.warn("fastae: no writable Numba cache directory, not even under the temp dir (set "
                          "NUMBA_CACHE_DIR); kernels are compiled in memory at each start", RuntimeWarning,
                          stacklevel=_caller_stacklevel())
        _uncached.append(fn.__name__)
    return dispatcher


def plain_argument_types(dispatcher):
    """Compile `dispatcher` for plain argument types when compiled code calls it: Numba would
    otherwise compile one more specialization per literal argument (f(..., 0) beside
    f(..., start)), each costing up to seconds of cold start."""
    from numba.core import types as nb_types
    typed = dispatcher.get_call_template

    def get_call_template(args, kws):
        return typed(tuple(nb_types.unliteral(a) for a in args),
                     {k: nb_types.unliteral(v) for k, v in kws.items()})
    dispatcher.get_call_template = get_call_template
    return dispatcher


def load_cached(dispatcher, args):
    """Add the disk-cached machine code of `dispatcher` for these arguments without compiling
    anything: True if the cache had it (or it is compiled already), False otherwise. (What
    `Dispatcher.compile` does before it compiles, without the compile.)"""
    from numba.core.compiler_lock import global_compiler_lock
    sig = tuple(numba.typeof(a) for a in args)
    if sig in dispatcher.overloads:
        return True
    cache = getattr(dispatcher, "_cache", None)
    if not isinstance(cache, TreeStampedCache):
        return False
    with global_compiler_lock:
        cres = cache.load_overload(sig, dispatcher.targetctx)
        if cres is None:
            return False
        dispatcher.targetctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
        dispatcher.add_overload(cres)
    return True


def caching_enabled(dispatcher):
    """Whether compiled code of `dispatcher` goes to (and comes from) a disk cache."""
    return isinstance(getattr(dispatcher, "_cache", None), TreeStampedCache)
