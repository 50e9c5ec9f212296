"""How many threads a compiled kernel may split its work between.

Numba's parallel code (prange) runs on its threading layer. The workqueue layer aborts the
process when parallel code is entered from two Python threads at once, and GNU OpenMP aborts in a
child forked after the parent used it; fastae's kernels are called from any thread and in
forked workers, so they go parallel only where that is safe, and run on the calling thread
elsewhere (the same results: the split never changes what a thread computes).

Importing this module does not import Numba (`import fastae` imports it, so that the fork
handler is in place before anything launches Numba's threads).
"""
import os
import sys

_pool = {}


def pool_threads():
    """numba.get_num_threads() (NUMBA_NUM_THREADS, numba.set_num_threads; per calling thread)
    where the threading layer may be entered from several threads at once (omp, tbb), else 1;
    1 in a process forked after its parent had launched the omp layer."""
    count = _pool.get("count")
    if count is None:
        count = _pool["count"] = _threadsafe_count()
    if count is None:
        return 1
    if _pool.get("ok", True):
        return count()
    if "warned" not in _pool and count() > 1:  # asked for threads it cannot have: say so, once
        _pool["warned"] = True
        import warnings
        from .jit import _caller_stacklevel
        warnings.warn(f"fastae: inference runs on one thread in this process, not {count()}: Numba's omp threading "
                      "layer was started before fastae was imported (here, or in the process this one was forked "
                      "from, where GNU OpenMP would abort it). Import fastae before numba.set_num_threads or other "
                      "parallel Numba code; for worker processes use the 'spawn' start method; "
                      "numba.set_num_threads(1) silences this.", RuntimeWarning, stacklevel=_caller_stacklevel())
    return 1


def requested():
    """How many threads the caller asks inference to use: Numba's thread count for the calling
    thread where Numba is imported (numba.set_num_threads, whatever the threading layer: fastae's
    own pool, `kernels.pool`, runs anywhere); else, without importing Numba, the count Numba
    would start with (NUMBA_NUM_THREADS, or the cores this process may run on)."""
    if "numba" in sys.modules:
        count = _pool.get("requested")
        if count is None:
            try:
                from numba.np.ufunc import parallel
                parallel._launch_threads()
                count = parallel._get_num_threads
            except Exception:  # no threading layer at all: Numba's default count
                count = lambda: int(__import__("numba").config.NUMBA_NUM_THREADS)  # noqa: E731
            _pool["requested"] = count
        return max(1, count())
    try:
        return max(1, int(os.environ["NUMBA_NUM_THREADS"]))
    except (KeyError, ValueError):
        pass
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity here (macOS, Windows)
        return os.cpu_count() or 1


def _threadsafe_count():
    """numba.get_num_threads without its checks (0.07 us instead of 0.6: this is on the
    latency path), once the pool is launched; None where the layer is not thread-safe."""
    try:
        import numba
        from numba.np.ufunc import parallel
        parallel._launch_threads()
        return parallel._get_num_threads if numba.threading_layer() in ("omp", "tbb") else None
    except Exception:  # no threading layer at all: serial
        return None


def _launched_layer():
    """The threading layer this process launched (whoever launched it), or None."""
    if "numba.np.ufunc.parallel" not in sys.modules:
        return None
    import numba
    try:
        return numba.threading_layer()
    except ValueError:  # not launched
        return None


def _after_fork_in_child():
    if _launched_layer() == "omp":
        _pool["ok"] = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
# Already launched when fastae is first imported: this process may be a child forked after its
# parent launched the layer (no handler of ours ran then; the two cannot be told apart), so stay
# serial under omp. (Only where something launched Numba's threads before `import fastae`.)
if _launched_layer() == "omp":
    _pool["ok"] = False


def launch():
    """Start Numba's thread pool now (a no-op once started). Cached machine code that contains a
    parallel kernel expects the pool to be running (Numba does not start it when it loads such
    code from the disk cache), so every entry into that code launches first."""
    pool_threads()
