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
import queue
import sys
import threading

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


# ---- a split of independent parts between Python threads (the nogil kernels release the GIL)

_helpers = {"pid": None, "queue": None, "count": 0}
_helpers_lock = threading.Lock()


def _new_helpers_lock():
    global _helpers_lock
    _helpers_lock = threading.Lock()  # a thread of the parent may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_helpers_lock)


def _helper(tasks):
    while True:
        fn, p, results, done = tasks.get()
        try:
            results[p] = (True, fn(p))
        except BaseException as exc:  # handed to the caller
            results[p] = (False, exc)
        done.release()


def run_parts(fn, parts):
    """[fn(0), ..., fn(parts - 1)]: fn(0) on the calling thread, the others at the same time on
    helper threads (started on first use, daemons, as many as the largest split asked for; a
    forked child starts its own). Any number of threads may call this at once. An exception in a
    part is raised here, after every part has finished."""
    if parts <= 1:
        return [fn(0)] if parts == 1 else []
    with _helpers_lock:
        if _helpers["pid"] != os.getpid():
            _helpers.update(pid=os.getpid(), queue=queue.SimpleQueue(), count=0)
        tasks = _helpers["queue"]
        while _helpers["count"] < parts - 1:
            _helpers["count"] += 1
            threading.Thread(target=_helper, args=(tasks,), daemon=True,
                             name=f"fastae-helper-{_helpers['count']}").start()
    results, done = [None] * parts, threading.Semaphore(0)
    for p in range(1, parts):
        tasks.put((fn, p, results, done))
    try:
        first = fn(0)
    finally:
        for _ in range(parts - 1):
            done.acquire()
    for ok, value in results[1:]:
        if not ok:
            raise value
    return [first] + [value for _, value in results[1:]]
