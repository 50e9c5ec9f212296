"""Inference chains as native code: a process that loads a fitted model and runs it never imports
Numba (see `kernels.native`: about 0.3 s less from process start to the first result).

The serial chain (`compiled.chain_rows` on one thread, with the finite check of its input) is
compiled once per dtype as a C function and saved as an object file beside Numba's cache:
`build(dtype)`, run by the background precompile and by `fastae.warmup()`. `run(chain, x, out)`
calls it through ctypes when the object is there for this code, this machine and this Numba,
and returns None otherwise (the caller runs the Numba chain). Scratch is per Python thread, so
any number of threads may run chains at once; ctypes releases the GIL during the call.
"""
import ctypes
import glob
import hashlib
import os
import tempfile
import threading

import numpy as np

from .chain import CHUNK, chain_work
from .kernels import packing

NOT_FINITE = 100  # the status of a call whose input holds NaN or inf (nothing written)
_NOT_RUN = -1
_DESCRIPTION = 9  # int64 entries describing a chain: layers, then the address and size of each buffer
_ARGUMENTS = (ctypes.c_int64, ctypes.c_double) + (ctypes.c_int64,) * 8
_SIGNATURE = ctypes.CFUNCTYPE(ctypes.c_int64, *_ARGUMENTS)

_functions = {}
_load_lock = threading.Lock()
_local = threading.local()


# ---- where the object files live, and what they are valid for

def _package_dir():
    return os.path.dirname(os.path.abspath(__file__))


def _folders():
    """Where an object file may be, in order: NUMBA_CACHE_DIR when set (the object goes with
    Numba's cache), else beside the package as Numba caches, then the user's cache folder, then
    a private folder under the temp dir (fastae's last resort for Numba's cache too)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return [os.path.join(os.environ["NUMBA_CACHE_DIR"], "fastae-native")]
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    user_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [os.path.join(_package_dir(), "__pycache__", "native"), os.path.join(user_cache, "fastae", "native"),
            os.path.join(tempfile.gettempdir(), f"fastae-numba-cache-{uid}", "native")]


def _source_files():
    """The files whose code the native chain compiles: the kernels and the chain."""
    here = _package_dir()
    kernels = os.path.join(here, "kernels")
    if not os.path.isdir(kernels):  # a source checkout: kernels/ beside fastae/
        kernels = os.path.join(os.path.dirname(here), "kernels")
    return sorted(glob.glob(os.path.join(kernels, "*.py"))) + [
        os.path.join(here, name) for name in ("chain.py", "compiled.py", "native_chain.py")]


def key(dtype):
    """What an object file must have been built from: the source of the chain and its kernels,
    the machine and the compilers (kernels.native.host_key), the dtype."""
    from .kernels import native
    digest = hashlib.sha256()
    for path in _source_files():
        digest.update(os.path.basename(path).encode() + b"\0")
        try:
            with open(path, "rb") as f:
                digest.update(f.read())
        except OSError:
            digest.update(b"<unreadable>")
    return f"chain|{np.dtype(dtype).name}|{digest.hexdigest()}|{native.host_key()}"


def _file_name(k):
    return f"chain-{hashlib.sha256(k.encode()).hexdigest()[:24]}.o"


# ---- building (needs Numba) and loading (llvmlite alone)

def _make_cfunc(dtype):
    import numba
    from numba import types
    from . import compiled
    from .kernels import cpu
    from .kernels.views import at_address, flat, matrix
    T = np.dtype(dtype).type
    i64 = np.int64
    parts = _DESCRIPTION

    def chain_c(description, l1, x_at, n, out_at, work_at, work_size, part_at, part_size, status_at):
        status = at_address(status_at, 1, i64)
        d = at_address(description, parts, i64)
        L = d[0]
        if L < 1 or n < 0 or d[2] < 0 or d[7] < 0 or work_size < 0 or part_size < 0:
            status[0] = 1
            return 1
        layout = matrix(at_address(d[3], 4 * L, i64), L, 4)
        n_in, n_out = layout[0, 2], layout[L - 1, 1]
        if n_in < 0 or n_out < 0:
            status[0] = 1
            return 1
        params, acts, prox = at_address(d[1], d[2], T), at_address(d[4], L, i64), at_address(d[5], 2, i64)
        packed_w, packed_at = at_address(d[6], d[7], T), at_address(d[8], L + 1, i64)
        x = matrix(at_address(x_at, n * n_in, T), n, n_in)
        out = matrix(at_address(out_at, n * n_out, T), n, n_out)
        work, part = at_address(work_at, work_size, T), at_address(part_at, part_size, T)
        problem = compiled.chain_problem(params, layout, acts, prox, packed_w, packed_at, x, out, work, part)
        if problem != 0:
            status[0] = problem
            return problem
        if not cpu.all_finite(flat(x)):
            status[0] = NOT_FINITE
            return NOT_FINITE
        compiled.chain_rows(params, layout, acts, prox, l1, packed_w, packed_at, None, x, out, work, part)
        status[0] = 0
        return 0

    signature = types.int64(types.int64, types.float64, *([types.int64] * 8))
    return numba.cfunc(signature, nogil=True, error_model="numpy", boundscheck=False)(chain_c)


def build(dtype):
    """Compile the native chain for `dtype` and save it where `load` looks first (the first
    folder that takes it). Returns the path, or None where no folder is writable (or the native
    path is off: `enabled`)."""
    from .kernels import native
    if not enabled():
        return None
    k = key(dtype)
    for folder in _folders():  # built already
        if native.load(os.path.join(folder, _file_name(k)), k, link=False):
            return os.path.join(folder, _file_name(k))
    cfunc = _make_cfunc(dtype)
    for folder in _folders():
        path = os.path.join(folder, _file_name(k))
        try:
            native.save(cfunc, path, k)
        except OSError:
            continue
        forget()
        return path
    return None


def enabled():
    """False under FASTAE_NATIVE=0, and where Numba is told to check bounds or not to compile
    (NUMBA_BOUNDSCHECK=1, NUMBA_DISABLE_JIT=1): there the Numba chain runs, as asked."""
    return not (os.environ.get("FASTAE_NATIVE", "1") in ("0", "") or os.environ.get("NUMBA_BOUNDSCHECK") == "1"
                or os.environ.get("NUMBA_DISABLE_JIT") == "1")


def function(dtype):
    """The native chain for `dtype` as a ctypes function, or None when no object file fits."""
    if not enabled():
        return None
    name = np.dtype(dtype).name
    try:
        return _functions[name]
    except KeyError:
        pass
    with _load_lock:
        if name not in _functions:
            _functions[name] = _load(name)
    return _functions[name]


def _load(dtype):
    from .kernels import native
    k = key(dtype)
    for folder in _folders():
        address = native.load(os.path.join(folder, _file_name(k)), k)
        if address:
            return _SIGNATURE(address)
    return None


def forget():
    """Look for the object files again at the next call (after `build` in this process)."""
    with _load_lock:
        for name, fn in list(_functions.items()):
            if fn is None:
                del _functions[name]


# ---- running a chain

def _address(a):
    return a.__array_interface__["data"][0]


def description(chain):
    """The int64 description of a chain the native code reads (kept on the chain, which keeps
    the buffers it points at alive)."""
    d = getattr(chain, "_native", None)
    if d is None:
        d = np.array([chain.layout.shape[0], _address(chain.params), chain.params.size, _address(chain.layout),
                      _address(chain.acts), _address(chain.prox), _address(chain.packed), chain.packed.size,
                      _address(chain.packed_at)], np.int64)
        chain._native = (d, _address(d))
    return chain._native


def _aligned_empty(n, dtype):
    buf = np.empty(n + 64 // np.dtype(dtype).itemsize, dtype)
    skip = ((-_address(buf)) % 64) // buf.itemsize
    return buf[skip:skip + n]


def _scratch(dtype, work_size, part_size):
    """This thread's work and part buffers (grown, never shrunk) and status cell."""
    try:
        buffers = _local.buffers
    except AttributeError:
        buffers = _local.buffers = {}
    name = np.dtype(dtype).name
    entry = buffers.get(name)
    if entry is None or entry[0].size < work_size or entry[1].size < part_size:
        work = _aligned_empty(max(work_size, 16, 0 if entry is None else entry[0].size), dtype)
        part = _aligned_empty(max(part_size, 0 if entry is None else entry[1].size), dtype)
        status = np.zeros(1, np.int64)
        entry = buffers[name] = (work, part, status, _address(work), _address(part), _address(status))
    return entry


def run(chain, x, out):
    """Run `chain` on the rows of x (C-contiguous, aligned, the chain's dtype) into out (the
    same, (n, n_out)) natively: True when done, False when x holds NaN or inf (nothing
    written), None when there is no native code here (nothing done)."""
    fn = function(chain.params.dtype)
    if fn is None:
        return None
    dtype = chain.params.dtype
    for a in (x, out):
        if not (a.dtype == dtype and a.ndim == 2 and a.flags.c_contiguous and a.flags.aligned):
            return None
    n = x.shape[0]
    # the native code sees addresses only: the shapes are checked here
    if x.shape[1] != chain.n_in or out.shape != (n, chain.n_out) or not out.flags.writeable:
        raise ValueError("native chain: x or out does not have the shape of this chain")
    work_size = chain_work(chain.layout, min(max(n, 1), CHUNK))
    part_size = packing.BLOCK_ROWS * packing.panel_width(dtype)
    work, part, status, work_at, part_at, status_at = _scratch(dtype, work_size, part_size)
    _, desc_at = description(chain)
    status[0] = _NOT_RUN
    fn(desc_at, chain.l1, _address(x), n, _address(out), work_at, work.size, part_at, part.size, status_at)
    code = int(status[0])
    if code == 0:
        return True
    if code == NOT_FINITE:
        return False
    raise RuntimeError(f"fastae: the native inference chain failed (status {code}); "
                       "delete the fastae-native cache folder to rebuild it")
