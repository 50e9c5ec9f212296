"""Edges of the packed cpu inference path: outputs a kernel must not silently drop, and a
child forked after its parent launched Numba's GNU OpenMP layer.

1. `packed.affine_forward` / `affine_forward_parallel` with an `out` that is not typed
   C-contiguous (F-ordered, a column slice of a wider buffer): Numba's ravel of such an array is
   a copy, so vector stores through it would be lost; the kernels refuse it or write it fully.
2. `pool_threads()` goes serial in a forked child whenever the parent had launched the omp
   layer, by any means (here `numba.set_num_threads`), since GNU OpenMP kills such a child
   ("fork() called from a process already using GNU OpenMP"), also where the parent never
   imported fastae (the child imports it after the fork: it finds the layer launched at import).
"""
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import fastae
from fastae import native_chain
from fastae.kernels import packed
from fastae.kernels.elementwise import RELU

REFUSED = (TypeError, ValueError, AssertionError, numba.core.errors.NumbaError)


@pytest.mark.parametrize("kind", ["F-ordered", "column slice"])
@pytest.mark.parametrize("threads", [0, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_packed_forward_never_silently_drops_results_in_a_non_c_out(rng, kind, threads, dtype):
    act = RELU
    n, k = 5, 7
    m = packed.panel_width(dtype)  # one whole panel: the vector epilogue
    x = rng.standard_normal((n, k)).astype(dtype)
    W = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal(m).astype(dtype)
    Wp = np.empty(packed.packed_size(m, k, dtype), dtype)
    packed.pack(W, Wp)
    want = np.empty((n, m), dtype)
    packed.affine_forward(x, Wp, b, act, want)
    if kind == "F-ordered":
        out = np.full((n, m), np.nan, dtype, order="F")
    else:
        out = np.full((n, m + 3), np.nan, dtype)[:, :m]
    try:
        if threads:
            packed.affine_forward_parallel(x, Wp, b, act, out, threads)
        else:
            packed.affine_forward(x, Wp, b, act, out)
    except REFUSED:
        return  # refusing the array is fine; returning with out unwritten is not
    np.testing.assert_array_equal(out, want)


# The parent launches Numba's threads (here by numba.set_num_threads, as any Numba code may) and
# forks; the child runs a transform large enough to split layers between threads. `IMPORT_FIRST`:
# the parent imported fastae (and loaded the model) before launching; else only the child does.
_FORK = textwrap.dedent("""
    import os, sys
    import numba
    import numpy as np
    if sys.argv[3] == "1":
        import fastae
        model = fastae.load(sys.argv[1])
    numba.set_num_threads(2)
    if numba.threading_layer() != "omp":
        sys.exit(77)
    pid = os.fork()
    if pid == 0:
        try:
            import fastae
            fastae.load(sys.argv[1]).transform(np.load(sys.argv[2]))
        except BaseException:
            os._exit(3)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        print("child killed by signal", os.WTERMSIG(status))
        sys.exit(1)
    sys.exit(os.WEXITSTATUS(status))
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("import_first", [True, False], ids=["parent-imported-fastae", "child-imports-fastae"])
def test_transform_in_a_child_forked_after_the_parent_launched_gnu_openmp(tmp_path, rng, import_first):
    run = _run_with_omp(_FORK, tmp_path, rng, "1" if import_first else "0")
    assert run.returncode == 0, run.stdout + run.stderr


def _run_with_omp(script, tmp_path, rng, *extra, native=False):
    """Run `script` (argv: a saved model, its data, *extra) in a new process with 2 Numba threads,
    inference on the Numba chain (or the native one: built first); skipped where Numba's threading
    layer is not omp (the script exits 77)."""
    if native:
        assert native_chain.build("float32") is not None
    X = rng.uniform(size=(2000, 80)).astype(np.float32)
    model = fastae.Autoencoder(hidden=(130,), code=64, epochs=1, batch_size=500, seed=0).fit(X)
    model.save(tmp_path / "model.npz")
    np.save(tmp_path / "X.npy", X)
    env = dict(os.environ, NUMBA_NUM_THREADS="2", FASTAE_BACKGROUND_COMPILE="0", FASTAE_NATIVE="1" if native else "0")
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "model.npz"), str(tmp_path / "X.npy"), *extra],
                         env=env, capture_output=True, text=True, timeout=600)
    if run.returncode == 77:
        pytest.skip("Numba's threading layer here is not omp")
    return run


def test_panels_into_refuses_short_scratch_and_panels_out_of_range(rng):
    dtype = np.float32
    nr = packed.panel_width(dtype)
    n, k, m = 3, 5, nr + 6  # two panels
    x = rng.standard_normal((n, k)).astype(dtype)
    Wp = np.zeros(packed.packed_size(m, k, dtype), dtype)
    b, out = np.zeros(m, dtype), np.zeros((n, m), dtype)
    good = packed.scratch(packed.BLOCK_ROWS * nr, Wp)
    packed.panels_into(x, Wp, b, True, out, good, 0, 2)
    for part, p0, p1 in [(good[:-1], 0, 2), (good, -1, 1), (good, 0, 3)]:
        with pytest.raises(ValueError, match="scratch|panels"):
            packed.panels_into(x, Wp, b, True, out, part, p0, p1)


BOUNDS_SCRIPT = textwrap.dedent("""
    import numba, numpy as np
    from fastae.kernels import packed

    @numba.njit
    def tile(xf, r0, K, Wp, base, part, at, k0, kn, resume):
        packed._tile(xf, r0, K, Wp, base, part, at, k0, kn, resume, 4, packed.VECTORS)  # 4 rows x a panel

    K, nr = 3, packed.panel_width(np.float32)
    xf, Wp, part = np.ones(4 * K, np.float32), np.ones(K * nr, np.float32), np.zeros(4 * nr, np.float32)
    tile(xf, 0, K, Wp, 0, part, 0, 0, K, False)
    assert (part == K).all()
    tile(xf, 0, K, Wp, 0, part, 0, 1, 2, True)  # k = 1, 2 on top of the sums: 3 + 2
    assert (part == K + 2).all()
    bad = [(1, K, Wp, 0, part, 0, 0, K), (0, K, Wp, 1, part, 0, 0, K), (0, K, Wp, 0, part, 1, 0, K),
           (-1, K, Wp, 0, part, 0, 0, K), (0, K, Wp, 0, part, 0, 1, K), (0, K, Wp, 0, part, 0, 0, K + 1)]
    for args in bad:
        try:
            tile(xf, *args, False)
        except IndexError:
            continue
        raise SystemExit(f"no IndexError for {args}")

    @numba.njit
    def wide(xf, Wp, part, kn):  # one row x GROUP panels
        packed._tile(xf, 0, K, Wp, 0, part, 0, 0, kn, False, 1, packed.WIDE)

    Wg, pg = np.ones(packed.GROUP * K * nr, np.float32), np.zeros(packed.GROUP * nr, np.float32)
    wide(xf, Wg, pg, K)
    assert (pg == K).all()
    for args in [(Wg[:-1], pg, K), (Wg, pg[:-1], K), (Wg, pg, K + 1)]:
        try:
            wide(xf[:K], *args)
        except IndexError:
            continue
        raise SystemExit("no IndexError for a wide tile")
    print("ok")
""")


def test_register_tile_is_bounds_checked_under_numba_boundscheck(tmp_path):
    """The tile is LLVM IR written by hand: under NUMBA_BOUNDSCHECK=1 it checks its spans as
    Numba checks a[i] (an access one entry past any of its three arrays is an IndexError)."""
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", BOUNDS_SCRIPT], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


# The parent launches the omp layer, forks, then replaces itself with another program (exec), which
# waits for the child: the child's parent no longer has Numba loaded, yet the child is still a fork
# of a process that launched GNU OpenMP (Numba sends it SIGTERM if it enters parallel code).
_FORK_THEN_EXEC = textwrap.dedent("""
    import os, sys, time
    import numba
    import numpy as np
    numba.set_num_threads(2)
    if numba.threading_layer() != "omp":
        sys.exit(77)
    pid = os.fork()
    if pid == 0:
        time.sleep(0.5)  # the parent execs first
        try:
            import fastae
            fastae.load(sys.argv[1]).transform(np.load(sys.argv[2]))
        except BaseException:
            os._exit(3)
        os._exit(0)
    wait = ("import os, sys; _, s = os.waitpid(int(sys.argv[1]), 0); "
            "sys.exit(os.WEXITSTATUS(s) if os.WIFEXITED(s) else 100 + os.WTERMSIG(s))")
    os.execv(sys.executable, [sys.executable, "-c", wait, str(pid)])
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("native", [False, True], ids=["numba", "native"])
def test_transform_in_a_forked_child_whose_parent_then_exec_d(tmp_path, rng, native):
    run = _run_with_omp(_FORK_THEN_EXEC, tmp_path, rng, native=native)
    assert run.returncode == 0, f"child exit status {run.returncode}: {run.stdout + run.stderr}"


_LAUNCH_FIRST = textwrap.dedent("""
    import warnings
    import numba
    import numpy as np
    numba.set_num_threads(2)  # launches the threading layer before fastae is imported
    import sys
    if numba.threading_layer() != "omp":
        sys.exit(77)
    import fastae
    model = fastae.load(sys.argv[1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.transform(np.load(sys.argv[2]))
        model.transform(np.load(sys.argv[2]))
    print(sum("Import fastae before numba.set_num_threads" in str(w.message) for w in caught))
""")


def test_threads_started_before_import_fastae_run_serial_with_one_warning(tmp_path, rng):
    """On the Numba chain, fastae cannot tell such a process from a child forked after its parent
    started the omp layer, so it stays serial, and says so once (not silently half the speed)."""
    run = _run_with_omp(_LAUNCH_FIRST, tmp_path, rng)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1"]


def test_threads_started_before_import_fastae_native_chain_splits_without_warning(tmp_path, rng):
    """The native chain splits layers on fastae's own pool, whoever started Numba's."""
    run = _run_with_omp(_LAUNCH_FIRST, tmp_path, rng, native=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0"]
