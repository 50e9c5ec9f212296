"""Inference chains as native code: a process that loads a fitted model and runs it never imports
Numba (see `kernels.native`: about 0.3 s less from process start to the first result).

The chain (`compiled.chain_rows`, with the finite check of its input) is compiled once per dtype
as one C entry point and saved as an object file beside Numba's cache: `build(dtype)`, run by the
background precompile and by `fastae.warmup()`. `run(chain, x, out)` calls it through ctypes
when the object is there for this code, this machine and this Numba, and returns None otherwise
(the caller runs the Numba chain). A call whose largest layer is worth splitting splits it
between fastae's own pool (`kernels.pool`: Python threads parked in the entry point's worker
loop, GIL released; Linux x86-64). Scratch is per Python thread, so any number of threads may
run chains at once; ctypes releases the GIL during the call.
"""
import atexit
import ctypes
import glob
import hashlib
import os
import platform
import struct
import sys
import tempfile
import threading

import numpy as np

from .chain import CHUNK, work_entries
from .kernels import packing
from .kernels.threads import requested as requested_threads

NOT_FINITE = 100  # the status of a call whose input holds NaN or inf (nothing written)
_NOT_RUN = -1
_DESCRIPTION = 9  # int64 entries describing a chain: layers, then the address and size of each buffer
CHAIN, WORKER, STOP, CHAIN_OF_ARRAYS = 0, 1, 2, 3  # what a call of the entry point does
# Where an ndarray object keeps its data pointer: right after the object header (NumPy's
# PyArray_DATA reads the same field). Handing the native code id(x) instead of x.ctypes.data saves
# ~2.5 us a call; checked on a probe array below, else the addresses are passed.
DATA_OFFSET = 16
# The entry point takes one argument, the address of its arguments packed in a block (mode, a1 ..
# a10 as int64, then l1 as a double): ctypes converts each argument of a call one by one, and a
# call with 12 of them cost 3.1 us against 0.7 for packing the block and passing its address.
_SIGNATURE = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)
_ARGUMENTS = struct.Struct("=11qd")

_functions = {}
POOL_OK = sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")  # kernels.atomics.supported
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


def _trusted(path):
    """kernels.native.private, and for the folder under the shared temp dir its parent too (who
    owns a folder's parent can replace the folder)."""
    from .kernels.native import private
    parent = os.path.dirname(path.rstrip(os.sep))
    if os.path.dirname(parent) == tempfile.gettempdir() and not private(parent):
        return False
    return private(path)


def _source_files():
    """The files whose code the native chain compiles: the kernels and the chain."""
    here = _package_dir()
    kernels = os.path.join(here, "kernels")
    if not os.path.isdir(kernels):  # a source checkout: kernels/ beside fastae/
        kernels = os.path.join(os.path.dirname(here), "kernels")
    return sorted(glob.glob(os.path.join(kernels, "*.py"))) + [
        os.path.join(here, name) for name in ("chain.py", "compiled.py", "native_chain.py")]


def _digest():
    """A hash of the source files as they are on disk now."""
    from .kernels.native import files_digest
    return files_digest(_source_files())


_loaded_digest = []  # the sources this process runs (taken at the first key: see build)


def key(dtype):
    """What an object file must have been built from: the source of the chain and its kernels
    as this process loaded them, the machine and the compilers (kernels.native.host_key), the
    dtype."""
    from .kernels import native
    if not _loaded_digest:
        _loaded_digest.append(_digest())
    return f"chain|{np.dtype(dtype).name}|{_loaded_digest[0]}|v{packing.VECTOR_BYTES}|{native.host_key()}"


def _file_name(k):
    return f"chain-{hashlib.sha256(k.encode()).hexdigest()[:24]}.o"


# ---- building (needs Numba) and loading (llvmlite alone)

def _make_cfunc(dtype):
    """The C entry point: entry(block) -> int64, block the address of its arguments (mode, a1 ..
    a10, l1: `_ARGUMENTS`, filled by `_invoke`).
    mode CHAIN: a1 description, a2 x, a3 n, a4 out, a5 work, a6 its size, a7 part, a8 its
    size, a9 status cell, a10 pool control block (WORKERS 0: serial); mode CHAIN_OF_ARRAYS:
    the same with a2 and a4 the addresses of the NumPy array objects x and out; mode WORKER: the worker
    loop of pool a1 as worker a2 with scratch a7 (size a8), until the pool stops; mode STOP:
    stop pool a1."""
    import numba
    from numba import types
    from . import compiled
    from .kernels import cpu, pool
    from .kernels.views import at_address, flat, matrix
    from .kernels.jit import cpu_jit
    T = np.dtype(dtype).type
    i64 = np.int64
    parts, control_size = _DESCRIPTION, pool.CONTROL
    # typed into the entry point: one library to optimize (a separately compiled chain would be
    # optimized once more inside it)
    chain_rows = cpu_jit(compiled.chain_rows.py_func, inline="always")

    def entry(block):
        a = at_address(block, 11, i64)
        mode, a1, a2, a3, a4, a5 = a[0], a[1], a[2], a[3], a[4], a[5]
        a6, a7, a8, a9, a10 = a[6], a[7], a[8], a[9], a[10]
        l1 = at_address(block + 88, 1, np.float64)[0]  # the 12th slot: a double
        if mode == WORKER:
            if a2 < 1 or a8 < 0:
                return 1
            pool.worker_loop(at_address(a1, control_size, i64), a2, at_address(a7, a8, T))
            return 0
        if mode == STOP:
            pool.stop(at_address(a1, control_size, i64))
            return 0
        description, x_at, n, out_at, work_at, work_size, part_at, part_size, status_at = (
            a1, a2, a3, a4, a5, a6, a7, a8, a9)
        if mode == CHAIN_OF_ARRAYS:  # x and out given as NumPy arrays: their data pointers
            x_at, out_at = at_address(a2 + DATA_OFFSET, 1, i64)[0], at_address(a4 + DATA_OFFSET, 1, i64)[0]
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
        chain_rows(params, layout, acts, prox, l1, packed_w, packed_at, None, at_address(a10, control_size, i64),
                   x, out, work, part)
        status[0] = 0
        return 0

    signature = types.int64(types.int64)
    return numba.cfunc(signature, nogil=True, error_model="numpy", boundscheck=False)(entry)


def build(dtype):
    """Compile the native chain for `dtype` and save it where `load` looks first (the first
    folder that takes it and that only this user may write). Returns the path, or None where
    there is no such folder, where the native path is off (`enabled`), where the sources on disk
    changed since this process loaded them (its code would be saved under their key), or where
    the compiled code calls something a process without Numba lacks."""
    from .kernels import native
    if not enabled():
        return None
    k = key(dtype)
    if _digest() != _loaded_digest[0]:
        return None
    for folder in _folders():  # built already
        path = os.path.join(folder, _file_name(k))
        if all(_trusted(p) for p in (folder, path, path + ".json")) and native.load(path, k, link=False):
            forget()
            return path
    cfunc = _make_cfunc(dtype)
    for folder in _folders():
        path = os.path.join(folder, _file_name(k))
        try:
            os.makedirs(folder, mode=0o755, exist_ok=True)
            if not _trusted(folder):
                continue
            native.save(cfunc, path, k)
        except OSError:
            continue
        except ValueError:  # e.g. Numba built with Intel's SVML: its vector math lives in Numba's process
            return None
        forget()
        return path
    return None


def _flag(name):
    """An environment flag read as Numba reads its own: an integer, non-zero is on."""
    try:
        return int(os.environ.get(name, "0").strip() or "0") != 0
    except ValueError:
        return False


def enabled():
    """False under FASTAE_NATIVE=0, and where Numba is told to check bounds or not to compile
    (NUMBA_BOUNDSCHECK, NUMBA_DISABLE_JIT): there the Numba code runs, as asked."""
    return not (os.environ.get("FASTAE_NATIVE", "1").strip() in ("0", "") or _flag("NUMBA_BOUNDSCHECK")
                or _flag("NUMBA_DISABLE_JIT"))


def function(dtype):
    """The native chain for `dtype` as a ctypes function, or None when no object file fits."""
    try:
        return _functions[dtype]
    except KeyError:
        pass
    with _load_lock:
        if dtype not in _functions:
            _functions[dtype] = _load(np.dtype(dtype).name) if enabled() else None
    return _functions[dtype]


def _load(dtype):
    from .kernels import native
    k = key(dtype)
    for folder in _folders():
        path = os.path.join(folder, _file_name(k))
        if not all(_trusted(p) for p in (folder, path, path + ".json")):
            continue
        address = native.load(path, k)
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


class _Call:
    """What a call of the native chain needs of one chain, worked out once: the address of its
    description (which the chain keeps alive, with the buffers it points at) and its sizes."""

    def __init__(self, chain):
        self.description = np.array([chain.layout.shape[0], _address(chain.params), chain.params.size,
                                     _address(chain.layout), _address(chain.acts), _address(chain.prox),
                                     _address(chain.packed), chain.packed.size, _address(chain.packed_at)], np.int64)
        self.at = _address(self.description)
        # the buffers the description points at, kept alive with it (and who they are: a chain
        # whose buffers were replaced gets a new description)
        self.buffers, self.arrays = (chain.params, chain.layout, chain.acts, chain.prox, chain.packed,
                                     chain.packed_at), _arrays(chain)
        self.dtype, self.l1, self.n_in, self.n_out = chain.params.dtype, chain.l1, chain.n_in, chain.n_out
        self.widest = int(max([1] + [int(w) for w in chain.layout[:-1, 1]]))
        self.part = packing.BLOCK_ROWS * packing.panel_width(self.dtype)

    def work(self, rows):
        """chain_work(layout, rows), without the loop over the layers."""
        return work_entries(self.widest, rows)


def _call_of(chain):
    call = getattr(chain, "_native_call", None)
    if call is None or call.arrays != _arrays(chain):
        call = chain._native_call = _Call(chain)
    return call


def _arrays(chain):
    return (id(chain.params), id(chain.layout), id(chain.acts), id(chain.prox), id(chain.packed), id(chain.packed_at))


def _data_field_ok():
    """Whether the data pointer of an ndarray object sits DATA_OFFSET bytes into it, here."""
    probe = np.arange(3.0)[1:]
    try:
        return ctypes.c_void_p.from_address(id(probe) + DATA_OFFSET).value == probe.ctypes.data
    except (ValueError, OSError):  # pragma: no cover
        return False


_DATA_FIELD = _data_field_ok()


def _block():
    """An argument block for one call of the entry point at a time (`_invoke`)."""
    return np.zeros(_ARGUMENTS.size // 8, np.int64)


def _invoke(fn, block, block_at, *arguments):
    """fn(mode, a1 .. a10, l1) with the arguments packed into `block` (at address block_at): no
    other thread may use the block until fn has read them."""
    _ARGUMENTS.pack_into(block, 0, *arguments)
    return fn(block_at)


def _aligned_empty(n, dtype):
    buf = np.empty(n + 64 // np.dtype(dtype).itemsize, dtype)
    skip = ((-_address(buf)) % 64) // buf.itemsize
    return buf[skip:skip + n]


_KEEP = 1 << 20  # entries of work a thread keeps between calls (4 MB of float32); more is per call


def _scratch(dtype, work_size, part_size):
    """This thread's work and part buffers, status cell and argument block, with their addresses:
    kept between calls up to _KEEP entries of work, a larger work buffer allocated for the call."""
    try:
        entry = _local.buffers[dtype]
    except AttributeError:
        _local.buffers = {}
        entry = None
    except KeyError:
        entry = None
    if entry is None or entry[1].size < part_size or (entry[0].size < work_size <= _KEEP):
        work = _aligned_empty(min(max(work_size, 16, 0 if entry is None else entry[0].size), _KEEP), dtype)
        part = _aligned_empty(max(part_size, 0 if entry is None else entry[1].size), dtype)
        status = np.zeros(1, np.int64)
        block = _block()
        entry = _local.buffers[dtype] = (work, part, status, _address(work), _address(part), _address(status),
                                         block, _address(block))
    if work_size > entry[0].size:
        work = _aligned_empty(work_size, dtype)
        return (work,) + entry[1:3] + (_address(work),) + entry[4:]
    return entry


# ---- fastae's own thread pool (kernels.pool), one per dtype: Python threads that wait inside
# the native worker loop with the GIL released

_CONTROL, _WORKERS = 56, 32  # kernels.pool.CONTROL and .WORKERS (not imported: that imports Numba)
_pools = {}
_pools_lock = threading.Lock()
_no_pool = np.zeros(_CONTROL, np.int64)  # the control block of a serial call: no workers
_NO_POOL_AT = _address(_no_pool)


def _worker(fn, name, block, args):
    """A pool thread: named for `top -H` and `ps -L` (Linux prctl), then the native worker loop
    (its arguments in a block of its own)."""
    try:
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (AttributeError, OSError):
        pass
    _invoke(fn, block, _address(block), *args)


class _Pool:
    def __init__(self, fn, dtype, workers, part_size):
        self.fn, self.workers = fn, workers
        self.control = _aligned_empty(_CONTROL, np.int64)
        self.control[:] = 0
        self.control[_WORKERS] = workers
        self.at = _address(self.control)
        self.lock = threading.Lock()  # one call at a time uses the workers; others run serially
        self.scratch = [_aligned_empty(part_size, dtype) for _ in range(workers)]
        self.threads = []
        for i, part in enumerate(self.scratch):
            thread = threading.Thread(target=_worker, name=f"fastae-pool-{i + 1}", daemon=True,
                                      args=(fn, f"fastae-pool-{i + 1}", _block(), (WORKER, self.at, i + 1, 0, 0, 0,
                                                                                    0, _address(part), part.size, 0,
                                                                                    0, 0.0)))
            try:
                thread.start()
            except RuntimeError:
                self.close()  # the workers started so far return
                raise
            self.threads.append(thread)

    def close(self):
        block = _block()
        _invoke(self.fn, block, _address(block), STOP, self.at, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.0)
        for thread in self.threads:
            thread.join(timeout=5)


def _pool(fn, dtype, workers, part_size):
    """The pool of `workers` workers for dtype, started on first use (or restarted with another
    count when Numba's thread count changed), or None while another call uses it or where no
    thread can be started (the call runs serially). Pools are stopped and started outside the
    lock: a fork meanwhile must not leave the child a lock held by a thread it does not have."""
    with _pools_lock:
        pool = _pools.get(dtype)
        if pool is not None and pool.workers == workers:
            return pool
        if pool is not None:
            if not pool.lock.acquire(blocking=False):
                return None
            del _pools[dtype]
    if pool is not None:
        pool.close()
    try:
        pool = _Pool(fn, dtype, workers, part_size)
    except RuntimeError:  # threads cannot be started (limits, interpreter shutdown)
        return None
    with _pools_lock:
        other = _pools.setdefault(dtype, pool)
    if other is not pool:  # another call started one meanwhile
        pool.close()
        return other if other.workers == workers else None
    return pool


def _close_pools():
    with _pools_lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()


def _after_fork_in_child():
    global _pools_lock, _load_lock
    _pools.clear()  # the workers did not come along: a child starts pools of its own
    _pools_lock, _load_lock = threading.Lock(), threading.Lock()  # another thread may have held them


atexit.register(_close_pools)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run(chain, x, out):
    """Run `chain` on the rows of x (C-contiguous, aligned, the chain's dtype) into out (the
    same, (n, n_out)) natively: True when done, False when x holds NaN or inf (nothing
    written), None when there is no native code here (nothing done). A call whose largest layer
    is worth splitting (chain.splits) splits it between the threads Numba's thread count asks for
    (kernels.threads.requested)."""
    call = _call_of(chain)
    dtype = call.dtype
    fn = function(dtype)
    if fn is None:
        return None
    xf, of = x.flags, out.flags
    if not (x.dtype == dtype and out.dtype == dtype and x.ndim == 2 and out.ndim == 2 and xf.c_contiguous
            and of.c_contiguous and xf.aligned and of.aligned):
        return None
    n = x.shape[0]
    threads = requested_threads()
    splits = chain.splits(n, threads)
    if splits and not POOL_OK:
        return None  # no pool of our own on this platform: Numba's threads split the layer
    # the native code sees addresses only: the shapes are checked here
    if x.shape[1] != call.n_in or out.shape != (n, call.n_out) or not of.writeable:
        raise ValueError("native chain: x or out does not have the shape of this chain")
    work, part, status, work_at, part_at, status_at, block, block_at = _scratch(
        dtype, call.work(min(max(n, 1), CHUNK)), call.part)
    pool = _pool(fn, dtype, threads - 1, call.part) if splits else None
    if pool is not None and not pool.lock.acquire(blocking=False):
        pool = None
    try:
        status[0] = _NOT_RUN
        if _DATA_FIELD:
            _invoke(fn, block, block_at, CHAIN_OF_ARRAYS, call.at, id(x), n, id(out), work_at, work.size, part_at,
                    part.size, status_at, _NO_POOL_AT if pool is None else pool.at, call.l1)
        else:
            _invoke(fn, block, block_at, CHAIN, call.at, x.ctypes.data, n, out.ctypes.data, work_at, work.size,
                    part_at, part.size, status_at, _NO_POOL_AT if pool is None else pool.at, call.l1)
    finally:
        if pool is not None:
            pool.lock.release()
    code = int(status[0])
    if code == 0:
        return True
    if code == NOT_FINITE:
        return False
    raise RuntimeError(f"fastae: the native inference chain failed (status {code}); "
                       "delete the fastae-native cache folder to rebuild it")
